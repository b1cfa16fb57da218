//! Writes a pod: the member images (built in this pass or brought in from
//! any reference), one layer per volume (the config files are the
//! `config` volume), the definition, the artifact manifest and the index.
//! Deterministic like every layer shipyard writes: same inputs, same
//! index digest.

use super::{
    Container, Definition, EnvVar, Mount, Port, Volume, ARTIFACT_TYPE, CONTAINER_ANNOTATION,
    DEFINITION_TYPE, DIRTY_ANNOTATION, ROLE_ANNOTATION, VOLUME_ANNOTATION,
};
use crate::project::{PodSpec, VolumeSource, CONFIG_VOLUME};
use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use oci_spec::image::{Descriptor, MediaType};
use shipyard_image::inroot::{self, Follow};
use shipyard_image::layer::compress::Compression;
use shipyard_image::layer::generate::TarOptions;
use shipyard_image::oci::image::rfc3339;
use shipyard_image::oci::layout::Layout;
use shipyard_image::oci::media;
use shipyard_image::rootfs::changeset::{Change, ChangeSet};
use shipyard_image::rootfs::entry::{Kind, RelPath};
use shipyard_image::rootfs::manifest::Manifest;
use shipyard_image::rootfs::walk::{ownership_record_path, walk_with, Hashing, WalkOptions};
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What a pod is made from.
pub struct Input<'a> {
    pub spec: &'a PodSpec,
    /// The directory of shipyard.toml (for git metadata).
    pub spec_dir: &'a Path,
    /// Images built in this pass: name → manifest descriptor in the layout.
    pub built: &'a BTreeMap<String, Descriptor>,
    /// Where a tapeout's selection was staged.
    pub tapeout_stage: &'a dyn Fn(&str) -> PathBuf,
    pub epoch: i64,
    pub compression: Compression,
    pub level: Option<i32>,
}

/// Git facts for the standard annotations, when `dir` is in a checkout.
fn git_annotations(dir: &Path) -> BTreeMap<String, String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let mut a = BTreeMap::new();
    if let Some(rev) = git(&["rev-parse", "HEAD"]).filter(|r| !r.is_empty()) {
        a.insert("org.opencontainers.image.revision".to_string(), rev);
        let dirty =
            git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        a.insert(DIRTY_ANNOTATION.to_string(), dirty.to_string());
        if let Some(url) = git(&["config", "--get", "remote.origin.url"]).filter(|u| !u.is_empty())
        {
            a.insert("org.opencontainers.image.source".to_string(), url);
        }
    }
    a
}

/// Copies the project directory `rel` (opened beneath `project`, so no
/// symlink leads out of it, whatever was there when the spec was parsed)
/// into `dest`, keeping only paths matching `include` (relative globs;
/// empty means all). Symlinks inside are copied as symlinks.
fn copy_selected(project: &OwnedFd, rel: &Path, dest: &Path, include: &[String]) -> Result<()> {
    let set = if include.is_empty() {
        None
    } else {
        let mut b = globset::GlobSetBuilder::new();
        for g in include {
            b.add(
                globset::GlobBuilder::new(g)
                    .literal_separator(true)
                    .build()
                    .with_context(|| format!("volume include glob {g:?}"))?,
            );
            // A glob naming a directory takes its contents.
            b.add(globset::Glob::new(&format!(
                "{}/**",
                g.trim_end_matches('/')
            ))?);
        }
        Some(b.build()?)
    };
    std::fs::create_dir_all(dest)?;
    let top = inroot::open_in(
        project.as_fd(),
        rel,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Follow::Beneath,
    )
    .map_err(|e| outside_error(rel, e))?;
    // (directory, its path relative to the volume), depth first.
    let mut todo: Vec<(OwnedFd, PathBuf)> = vec![(top, PathBuf::new())];
    while let Some((dir, at)) = todo.pop() {
        for name in inroot::list_dir(dir.try_clone()?)? {
            let sub = at.join(&name);
            let shown = rel.join(&sub);
            let fd = inroot::open_in(
                dir.as_fd(),
                Path::new(&name),
                OFlag::O_PATH | OFlag::O_NOFOLLOW,
                Follow::Never,
            )
            .with_context(|| format!("reading {}", shown.display()))?;
            let md = inroot::metadata(&fd)?;
            if md.is_dir() {
                let d = inroot::open_in(
                    dir.as_fd(),
                    Path::new(&name),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY,
                    Follow::Never,
                )
                .with_context(|| format!("reading {}", shown.display()))?;
                todo.push((d, sub));
                continue;
            }
            if let Some(set) = &set {
                if !set.is_match(&sub) {
                    continue;
                }
            }
            let to = dest.join(&sub);
            if let Some(p) = to.parent() {
                std::fs::create_dir_all(p)?;
            }
            if md.file_type().is_symlink() {
                std::os::unix::fs::symlink(inroot::read_link(&fd)?, &to)?;
            } else if md.is_file() {
                let f = inroot::open_in(
                    dir.as_fd(),
                    Path::new(&name),
                    OFlag::O_RDONLY | OFlag::O_NONBLOCK,
                    Follow::Never,
                )
                .with_context(|| format!("reading {}", shown.display()))?;
                copy_fd(f, &to, md.permissions().mode() & 0o7777)
                    .with_context(|| format!("copying {}", shown.display()))?;
            }
        }
    }
    Ok(())
}

/// Copies an open regular file to a new file `to` with `mode`.
fn copy_fd(from: OwnedFd, to: &Path, mode: u32) -> Result<()> {
    let mut from = std::fs::File::from(from);
    if !from.metadata()?.is_file() {
        bail!("not a regular file");
    }
    let mut out = std::fs::File::create(to)?;
    std::io::copy(&mut from, &mut out)?;
    out.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The error for a project path that cannot be opened beneath the
/// project directory.
fn outside_error(rel: &Path, e: std::io::Error) -> anyhow::Error {
    match e.raw_os_error() {
        Some(libc::EXDEV) | Some(libc::ELOOP) => anyhow::anyhow!(
            "{} leads out of the project directory (through a symlink); pod files and volumes are read only from inside it",
            rel.display()
        ),
        _ => anyhow::Error::new(e).context(format!("reading {}", rel.display())),
    }
}

/// A spec path (the project directory joined with a relative path) as the
/// relative path it was written as.
fn in_project<'a>(project: &Path, p: &'a Path) -> Result<&'a Path> {
    p.strip_prefix(project).with_context(|| {
        format!(
            "{} is not inside the project directory {}",
            p.display(),
            project.display()
        )
    })
}

fn prefixed(prefix: &str, p: &RelPath) -> RelPath {
    if p.is_root() {
        RelPath::new(prefix.as_bytes().to_vec())
    } else {
        let mut b = prefix.as_bytes().to_vec();
        b.push(b'/');
        b.extend_from_slice(p.as_bytes());
        RelPath::new(b)
    }
}

/// Hard-links a staged tapeout under `root/prefix` (as a build merges
/// stages), carrying its ownership record over with the paths moved.
fn graft(stage: &Path, root: &Path, prefix: &str, record: &mut Manifest) -> Result<()> {
    let dest = root.join(prefix);
    crate::tapeout::stage::merge_stages(&[stage.to_path_buf()], &dest)?;
    // merge_stages leaves the record beside `dest`, inside `root`: move
    // its entries into the root's record and the file out of the tree.
    let rec = ownership_record_path(&dest);
    let m = Manifest::parse(
        std::io::BufReader::new(std::fs::File::open(&rec)?),
        &rec.display().to_string(),
    )?;
    std::fs::remove_file(&rec)?;
    for (_, mut e) in m.entries {
        e.path = prefixed(prefix, &e.path);
        record.insert(e);
    }
    Ok(())
}

fn under(p: &RelPath, part: &str) -> bool {
    let b = p.as_bytes();
    b == part.as_bytes() || (b.starts_with(part.as_bytes()) && b.get(part.len()) == Some(&b'/'))
}

/// Writes the pod into `layout`, tags it `NAME:VERSION` and `NAME`, and
/// returns the index descriptor.
pub fn write(
    layout: &Layout,
    input: &Input,
    work: &Path,
    o: &shipyard_image::transport::Options,
) -> Result<Descriptor> {
    let members = member_images(layout, input, o)?;
    let root = work.join(format!("pod-{}", input.spec.name));
    let parts = stage_volumes(input, &root)?;
    let mut tree = walk_with(&root, &WalkOptions::new(Hashing::None))?;
    apply_overrides(input.spec, &mut tree.manifest);
    let all = shipyard_image::rootfs::diff::diff(&tree, &Manifest::default())?;
    let (layers, volumes) = volume_layers(layout, input, &root, &all.changes, &parts)?;
    let definition = definition(input.spec, &members, volumes);
    let desc = write_index(layout, input, &definition, layers, &members)?;
    std::fs::remove_dir_all(&root).ok();
    Ok(desc)
}

/// A container of the pod: its name, its image's manifest in the layout,
/// and the reference it was written as when it was not built here.
type Member = (String, Descriptor, Option<String>);

/// The member images: built in this pass, or brought into the layout from
/// any reference.
fn member_images(
    layout: &Layout,
    input: &Input,
    o: &shipyard_image::transport::Options,
) -> Result<Vec<Member>> {
    let spec = input.spec;
    let mut members: Vec<(String, Descriptor, Option<String>)> = Vec::new();
    for c in &spec.containers {
        let (d, source) = if c.built {
            let d = input
                .built
                .get(&c.image)
                .with_context(|| format!("pod {}: image {} was not built", spec.name, c.image))?;
            (d.clone(), None)
        } else {
            let r = shipyard_image::reference::Reference::parse(&c.image)?;
            let d = shipyard_image::transport::import_into(&r, layout, o).with_context(|| {
                format!("pod {}: container {}: image {}", spec.name, c.name, c.image)
            })?;
            (d, Some(c.written.clone()))
        };
        if !media::is_image_manifest(d.media_type()) {
            bail!(
                "pod {}: container {}: {} is not an image",
                spec.name,
                c.name,
                c.image
            );
        }
        members.push((c.name.clone(), d, source));
    }
    Ok(members)
}

/// Stages the volumes under `root`, `config` (the files) first, with the
/// ownership record of what came from tapeouts; returns the volume names
/// in layer order.
fn stage_volumes(input: &Input, root: &Path) -> Result<Vec<String>> {
    let spec = input.spec;
    if root.exists() {
        std::fs::remove_dir_all(root)?;
    }
    std::fs::create_dir_all(root)?;
    let mut record = Manifest::default();
    let mut parts: Vec<String> = Vec::new();
    // Files and source volumes are opened beneath the project directory
    // now, when they are read: a symlink leading out of it is refused even
    // if it appeared after the spec was checked.
    let project = inroot::open_root(input.spec_dir)
        .with_context(|| format!("opening {}", input.spec_dir.display()))?;
    if !spec.files.is_empty() {
        for (dest, src) in &spec.files {
            let to = root.join(CONFIG_VOLUME).join(dest);
            std::fs::create_dir_all(to.parent().unwrap_or(root))?;
            let what = || format!("pod {}: file {}", spec.name, src.display());
            let rel = in_project(input.spec_dir, src).with_context(what)?;
            let fd = inroot::open_in(
                project.as_fd(),
                rel,
                OFlag::O_RDONLY | OFlag::O_NONBLOCK,
                Follow::Beneath,
            )
            .map_err(|e| outside_error(rel, e))
            .with_context(what)?;
            let mode = inroot::metadata(&fd)
                .with_context(what)?
                .permissions()
                .mode();
            copy_fd(fd, &to, mode & 0o7777).with_context(what)?;
        }
        parts.push(CONFIG_VOLUME.to_string());
    }
    for v in &spec.volumes {
        match &v.source {
            VolumeSource::Source { dir, include } => {
                let rel = in_project(input.spec_dir, dir)?;
                copy_selected(&project, rel, &root.join(&v.name), include)
                    .with_context(|| format!("pod {}: volume {}", spec.name, v.name))?
            }
            VolumeSource::Tapeout(t) => {
                let stage = (input.tapeout_stage)(t);
                if !stage.is_dir() {
                    bail!(
                        "pod {}: volume {}: tapeout {t} selected nothing (was it run?)",
                        spec.name,
                        v.name
                    );
                }
                graft(&stage, root, &v.name, &mut record)?;
            }
        }
        std::fs::create_dir_all(root.join(&v.name))?;
        parts.push(v.name.clone());
    }
    let f = std::fs::File::create(ownership_record_path(root))?;
    record.write_to(std::io::BufWriter::new(f))?;
    Ok(parts)
}

/// The owner and mode overrides of source volumes, applied to the walk's
/// manifest (tapeout volumes keep what the builder had).
fn apply_overrides(spec: &PodSpec, manifest: &mut Manifest) {
    for v in &spec.volumes {
        if !matches!(v.source, VolumeSource::Source { .. }) {
            continue;
        }
        let paths: Vec<RelPath> = manifest
            .entries
            .keys()
            .filter(|p| under(p, &v.name) && p.as_bytes() != v.name.as_bytes())
            .cloned()
            .collect();
        for p in paths {
            if let Some(e) = manifest.entries.get_mut(&p) {
                if let Some((u, g)) = v.owner {
                    e.uid = u.into();
                    e.gid = g.into();
                }
                if let Some(m) = v.mode {
                    e.mode = match e.kind {
                        Kind::Dir => m | ((m & 0o444) >> 2),
                        Kind::File => m,
                        _ => e.mode,
                    };
                }
            }
        }
    }
}

/// A layer per volume, with the volume's name and file list.
fn volume_layers(
    layout: &Layout,
    input: &Input,
    root: &Path,
    all: &ChangeSet,
    parts: &[String],
) -> Result<(Vec<Descriptor>, Vec<Volume>)> {
    let mut layers = Vec::new();
    let mut volumes = Vec::new();
    for part in parts {
        let changes = ChangeSet {
            changes: all
                .changes
                .iter()
                .filter(|c| matches!(c, Change::Put(e) if under(&e.path, part)))
                .cloned()
                .collect(),
        };
        let files: Vec<String> = changes
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Put(e) if e.kind != Kind::Dir => {
                    Some(String::from_utf8_lossy(&e.path.as_bytes()[part.len() + 1..]).into_owned())
                }
                _ => None,
            })
            .collect();
        let out = shipyard_image::layer::write_layer(
            layout,
            &changes,
            root,
            input.compression,
            input.level,
            &TarOptions {
                clamp_mtime: Some(input.epoch),
            },
        )?;
        let mut d = out.descriptor;
        d.set_annotations(Some(HashMap::from([
            (VOLUME_ANNOTATION.to_string(), part.clone()),
            ("org.opencontainers.image.title".to_string(), part.clone()),
        ])));
        volumes.push(Volume {
            name: part.clone(),
            layer: d.digest().to_string(),
            diff_id: out.diff_id.to_string(),
            files,
        });
        layers.push(d);
    }
    Ok((layers, volumes))
}

/// The pod definition: containers by image digest, and the volumes.
fn definition(spec: &PodSpec, members: &[Member], volumes: Vec<Volume>) -> Definition {
    Definition {
        name: spec.name.clone(),
        version: spec.version.clone(),
        containers: spec
            .containers
            .iter()
            .zip(members)
            .map(|(c, (_, d, source))| Container {
                name: c.name.clone(),
                image: d.digest().to_string(),
                source: source.clone(),
                command: c.command.clone(),
                args: c.args.clone(),
                env: c
                    .env
                    .iter()
                    .map(|(k, v)| EnvVar {
                        name: k.clone(),
                        value: v.clone(),
                    })
                    .collect(),
                ports: c
                    .ports
                    .iter()
                    .map(|p| Port {
                        port: p.port,
                        protocol: p.protocol.clone(),
                    })
                    .collect(),
                mounts: c
                    .mounts
                    .iter()
                    .map(|(p, v)| Mount {
                        path: p.clone(),
                        volume: v.clone(),
                    })
                    .collect(),
            })
            .collect(),
        volumes,
    }
}

/// The definition as an artifact manifest, and the pod's index over the
/// member images and that manifest, tagged NAME:VERSION and NAME.
fn write_index(
    layout: &Layout,
    input: &Input,
    definition: &Definition,
    layers: Vec<Descriptor>,
    members: &[Member],
) -> Result<Descriptor> {
    let spec = input.spec;
    let def_desc = layout.put_json(definition, MediaType::Other(DEFINITION_TYPE.to_string()))?;
    let created = rfc3339(input.epoch);
    let artifact = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": ARTIFACT_TYPE,
        "config": def_desc,
        "layers": layers,
        "annotations": { "org.opencontainers.image.created": created },
    });
    // No artifactType on the index or its descriptors: see
    // media::ARTIFACT_TYPE_ANNOTATION. The manifest itself carries it.
    let mut art_desc = layout.put_json(&artifact, MediaType::ImageManifest)?;
    art_desc.set_annotations(Some(HashMap::from([(
        ROLE_ANNOTATION.to_string(),
        "definition".to_string(),
    )])));
    let mut manifests: Vec<Descriptor> = members
        .iter()
        .map(|(name, d, _)| {
            let mut d = d.clone();
            d.set_annotations(Some(HashMap::from([(
                CONTAINER_ANNOTATION.to_string(),
                name.clone(),
            )])));
            d
        })
        .collect();
    manifests.push(art_desc);
    let mut annotations: BTreeMap<String, String> = BTreeMap::new();
    annotations.insert(
        "org.opencontainers.image.version".into(),
        spec.version.clone(),
    );
    annotations.insert("org.opencontainers.image.created".into(), created);
    annotations.insert("org.opencontainers.image.title".into(), spec.name.clone());
    annotations.insert(media::ARTIFACT_TYPE_ANNOTATION.into(), ARTIFACT_TYPE.into());
    annotations.extend(git_annotations(input.spec_dir));
    annotations.extend(spec.annotations.clone());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
        "annotations": annotations,
    });
    let desc = layout.put_json(&index, MediaType::ImageIndex)?;
    layout.tag(&format!("{}:{}", spec.name, spec.version), &desc)?;
    layout.tag(&spec.name, &desc)?;
    Ok(desc)
}

#[cfg(test)]
mod read_tests {
    use super::*;

    /// A volume directory swapped for a symlink after the spec was
    /// checked: reading it refuses to leave the project.
    #[test]
    fn a_volume_directory_that_became_a_symlink_out_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let project = t.path().join("proj");
        std::fs::create_dir_all(project.join("static")).unwrap();
        std::fs::create_dir_all(t.path().join("outside")).unwrap();
        std::fs::write(t.path().join("outside/key"), b"secret").unwrap();
        std::fs::remove_dir(project.join("static")).unwrap();
        std::os::unix::fs::symlink(t.path().join("outside"), project.join("static")).unwrap();
        let fd = inroot::open_root(&project).unwrap();
        let dest = t.path().join("stage");
        let err = copy_selected(&fd, Path::new("static"), &dest, &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("leads out of the project directory"),
            "{err}"
        );
        assert!(!dest.join("key").exists());
        // A relative symlink that stays inside is followed.
        std::fs::create_dir_all(project.join("real")).unwrap();
        std::fs::write(project.join("real/index.html"), b"hi").unwrap();
        std::os::unix::fs::symlink("real", project.join("alias")).unwrap();
        copy_selected(&fd, Path::new("alias"), &dest, &[]).unwrap();
        assert_eq!(std::fs::read(dest.join("index.html")).unwrap(), b"hi");
    }
}
