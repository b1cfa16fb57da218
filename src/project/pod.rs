//! `[pod.NAME]`: member containers, configuration files and data volumes,
//! checked with the same file:line:col errors as the rest of the spec.

use super::{did_you_mean, parse_owner, relative_to, Ctx, SpecError};
use indexmap::IndexMap;
use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPod {
    version: Spanned<String>,
    #[serde(default)]
    annotations: IndexMap<String, String>,
    /// Path in the pod's config volume → file in the source tree.
    #[serde(default)]
    files: IndexMap<String, Spanned<String>>,
    containers: IndexMap<String, Spanned<RawContainer>>,
    #[serde(default)]
    volumes: IndexMap<String, Spanned<RawVolume>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContainer {
    image: Spanned<String>,
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    args: Option<Vec<String>>,
    #[serde(default)]
    env: IndexMap<String, String>,
    #[serde(default)]
    ports: Vec<Spanned<String>>,
    /// Container path → volume name (`config` is the files).
    #[serde(default)]
    mounts: IndexMap<String, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVolume {
    /// A directory of the source tree (relative to the spec).
    #[serde(default)]
    source: Option<Spanned<String>>,
    /// Globs inside `source` (default: everything).
    #[serde(default)]
    include: Vec<String>,
    /// A tapeout whose selection is the volume (paths from the builder).
    #[serde(default)]
    tapeout: Option<Spanned<String>>,
    #[serde(default)]
    owner: Option<Spanned<String>>,
    #[serde(default)]
    mode: Option<Spanned<String>>,
}

/// Where a data volume's files come from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum VolumeSource {
    /// A source directory and the globs selected in it.
    Source { dir: PathBuf, include: Vec<String> },
    /// A tapeout's staged selection.
    Tapeout(String),
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VolumeSpec {
    pub name: String,
    pub source: VolumeSource,
    pub owner: Option<(u32, u32)>,
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Port {
    pub port: u16,
    pub protocol: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ContainerSpec {
    pub name: String,
    /// An image of this build (its name) or a reference.
    pub image: String,
    /// True when `image` names an image of this build.
    pub built: bool,
    /// The image as the spec wrote it (relative paths stay relative, so
    /// the pod's digest does not depend on where the checkout is).
    pub written: String,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub ports: Vec<Port>,
    /// Container path → volume name.
    pub mounts: Vec<(String, String)>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PodSpec {
    pub name: String,
    pub version: String,
    pub annotations: BTreeMap<String, String>,
    /// Path in the config volume → source file.
    pub files: Vec<(String, PathBuf)>,
    pub containers: Vec<ContainerSpec>,
    pub volumes: Vec<VolumeSpec>,
}

/// The volume name config files are mounted by.
pub const CONFIG_VOLUME: &str = "config";

/// A DNS-label-like name (Kubernetes wants them for containers/volumes).
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A relative path that stays inside the directory it is relative to.
fn inside(p: &str) -> bool {
    let p = Path::new(p);
    !p.as_os_str().is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fn parse_port(s: &str) -> Option<Port> {
    let (n, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let port: u16 = n.parse().ok().filter(|p| *p > 0)?;
    let proto = proto.to_ascii_lowercase();
    matches!(proto.as_str(), "tcp" | "udp" | "sctp").then_some(Port {
        port,
        protocol: proto,
    })
}

pub(super) fn parse_pods(
    cx: &Ctx,
    raw: &IndexMap<String, Spanned<RawPod>>,
    dir: &Path,
    image_names: &[&str],
    tapeout_names: &[&str],
) -> Result<Vec<PodSpec>, SpecError> {
    let names = Names {
        images: image_names,
        tapeouts: tapeout_names,
    };
    raw.iter()
        .map(|(name, p)| parse_pod(cx, name, p, dir, &names))
        .collect()
}

/// What a pod may name: the spec's images and tapeouts.
struct Names<'a> {
    images: &'a [&'a str],
    tapeouts: &'a [&'a str],
}

fn parse_pod(
    cx: &Ctx,
    name: &str,
    p: &Spanned<RawPod>,
    dir: &Path,
    names: &Names,
) -> Result<PodSpec, SpecError> {
    let span = p.span();
    let p = p.get_ref();
    if !dns_label(name) {
        return Err(cx.err(
            span,
            format!("pod.{name}: a pod name is lowercase letters, digits and '-' (a DNS label)"),
        ));
    }
    let version = p.version.get_ref();
    if shipyard_image::oci::layout::validate_registry_tag(version).is_err() {
        return Err(cx.err(
            p.version.span(),
            format!("pod.{name}.version = {version:?}: 1-128 of [A-Za-z0-9_.-], not starting with . or -"),
        ));
    }
    let files = pod_files(cx, name, p, dir)?;
    let mut volumes = Vec::new();
    for (vname, v) in &p.volumes {
        volumes.push(pod_volume(cx, name, vname, v, dir, names.tapeouts)?);
    }
    if p.containers.is_empty() {
        return Err(cx.err(
            span,
            format!("pod.{name}: a pod needs at least one container"),
        ));
    }
    let mut containers = Vec::new();
    for (cname, c) in &p.containers {
        containers.push(pod_container(cx, name, p, cname, c, dir, names.images)?);
    }
    Ok(PodSpec {
        name: name.to_string(),
        version: version.clone(),
        annotations: p
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        files,
        containers,
        volumes,
    })
}

/// `files`: config files from the source tree, for the config volume.
fn pod_files(
    cx: &Ctx,
    name: &str,
    p: &RawPod,
    dir: &Path,
) -> Result<Vec<(String, std::path::PathBuf)>, SpecError> {
    let mut files = Vec::new();
    for (dest, src) in &p.files {
        let d = dest.trim_start_matches('/');
        if !inside(d) {
            return Err(cx.err(
                src.span(),
                format!(
                    "pod.{name}.files: {dest:?} must be a path inside the config volume (no ..)"
                ),
            ));
        }
        if !inside(src.get_ref()) {
            return Err(cx.err(
                src.span(),
                format!("pod.{name}.files.{dest:?} = {:?}: must be a relative path inside the source tree (no .., not absolute)", src.get_ref()),
            ));
        }
        let host = dir.join(src.get_ref());
        if !host.is_file() {
            return Err(cx.err(
                src.span(),
                format!(
                    "pod.{name}.files.{dest:?}: {} is not a file",
                    host.display()
                ),
            ));
        }
        files.push((d.to_string(), host));
    }
    Ok(files)
}

fn pod_volume(
    cx: &Ctx,
    name: &str,
    vname: &str,
    v: &Spanned<RawVolume>,
    dir: &Path,
    tapeout_names: &[&str],
) -> Result<VolumeSpec, SpecError> {
    let vspan = v.span();
    let v = v.get_ref();
    if !dns_label(vname) || vname == CONFIG_VOLUME {
        return Err(cx.err(
            vspan,
            format!("pod.{name}.volumes.{vname}: a volume name is a DNS label and not `{CONFIG_VOLUME}` (the files' volume)"),
        ));
    }
    let source = volume_source(cx, name, vname, v, vspan, dir, tapeout_names)?;
    let owner = match &v.owner {
        Some(o) => Some(parse_owner(o.get_ref()).ok_or_else(|| {
            cx.err(
                o.span(),
                format!("pod.{name}.volumes.{vname}.owner: expected UID or UID:GID"),
            )
        })?),
        None => None,
    };
    let mode = match &v.mode {
        Some(m) => Some(
            u32::from_str_radix(m.get_ref().trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| {
                    cx.err(
                        m.span(),
                        format!(
                            "pod.{name}.volumes.{vname}.mode: expected an octal mode like \"0644\""
                        ),
                    )
                })?,
        ),
        None => None,
    };
    Ok(VolumeSpec {
        name: vname.to_string(),
        source,
        owner,
        mode,
    })
}

/// A volume's content: a source directory, or a tapeout's files.
fn volume_source(
    cx: &Ctx,
    name: &str,
    vname: &str,
    v: &RawVolume,
    vspan: std::ops::Range<usize>,
    dir: &Path,
    tapeout_names: &[&str],
) -> Result<VolumeSource, SpecError> {
    Ok(match (&v.source, &v.tapeout) {
        (Some(s), None) => {
            if !inside(s.get_ref()) {
                return Err(cx.err(
                    s.span(),
                    format!("pod.{name}.volumes.{vname}.source = {:?}: a volume path must stay inside the source tree (relative, no ..)", s.get_ref()),
                ));
            }
            let d = dir.join(s.get_ref());
            let real = d.canonicalize().ok();
            let root = dir.canonicalize().ok();
            match (real, root) {
                (Some(r), Some(root)) if r.starts_with(&root) && r.is_dir() => {}
                _ => {
                    return Err(cx.err(
                        s.span(),
                        format!("pod.{name}.volumes.{vname}.source: {} is not a directory inside the source tree", d.display()),
                    ))
                }
            }
            for g in &v.include {
                if g.starts_with('/') || g.split('/').any(|c| c == "..") {
                    return Err(cx.err(
                        s.span(),
                        format!("pod.{name}.volumes.{vname}.include: {g:?} must be relative to the volume's source"),
                    ));
                }
            }
            VolumeSource::Source {
                dir: d,
                include: v.include.clone(),
            }
        }
        (None, Some(t)) => {
            let tn = t.get_ref().trim_start_matches("tapeout.");
            if !tapeout_names.contains(&tn) {
                let hint = did_you_mean(tn, tapeout_names.iter().copied())
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                return Err(cx.err(
                    t.span(),
                    format!("pod.{name}.volumes.{vname}.tapeout: unknown tapeout `{tn}`{hint}"),
                ));
            }
            VolumeSource::Tapeout(tn.to_string())
        }
        _ => {
            return Err(cx.err(
                vspan,
                format!("pod.{name}.volumes.{vname}: give exactly one of `source` (a source directory) or `tapeout` (files from the builder)"),
            ))
        }
    })
}

fn pod_container(
    cx: &Ctx,
    name: &str,
    p: &RawPod,
    cname: &str,
    c: &Spanned<RawContainer>,
    dir: &Path,
    image_names: &[&str],
) -> Result<ContainerSpec, SpecError> {
    let cspan = c.span();
    let c = c.get_ref();
    if !dns_label(cname) {
        return Err(cx.err(
            cspan,
            format!("pod.{name}.containers.{cname}: a container name is lowercase letters, digits and '-'"),
        ));
    }
    let img = c.image.get_ref();
    let built = image_names.contains(&img.as_str());
    let image = if built {
        img.clone()
    } else if shipyard_image::reference::Reference::looks_like_reference(img) {
        let r = relative_to(img, dir);
        shipyard_image::reference::Reference::parse(&r).map_err(|e| {
            cx.err(
                c.image.span(),
                format!("pod.{name}.containers.{cname}.image: {e}"),
            )
        })?;
        r
    } else {
        let hint = did_you_mean(img, image_names.iter().copied())
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return Err(cx.err(
            c.image.span(),
            format!("pod.{name}.containers.{cname}.image: no image `{img}` in this spec and not a reference (oci:, docker://, …){hint}"),
        ));
    };
    let mut ports = Vec::new();
    for pt in &c.ports {
        ports.push(parse_port(pt.get_ref()).ok_or_else(|| {
            cx.err(
                pt.span(),
                format!(
                    "pod.{name}.containers.{cname}.ports: {:?} is not PORT[/tcp|udp|sctp]",
                    pt.get_ref()
                ),
            )
        })?);
    }
    let mut mounts = Vec::new();
    for (path, vol) in &c.mounts {
        if !path.starts_with('/') {
            return Err(cx.err(
                vol.span(),
                format!("pod.{name}.containers.{cname}.mounts: {path:?} must be an absolute path in the container"),
            ));
        }
        let v = vol.get_ref();
        if v != CONFIG_VOLUME && !p.volumes.contains_key(v) {
            let names = p.volumes.keys().map(String::as_str).chain([CONFIG_VOLUME]);
            let hint = did_you_mean(v, names)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            return Err(cx.err(
                vol.span(),
                format!(
                    "pod.{name}.containers.{cname}.mounts.{path:?}: unknown volume `{v}`{hint}"
                ),
            ));
        }
        mounts.push((path.clone(), v.clone()));
    }
    Ok(ContainerSpec {
        name: cname.to_string(),
        image,
        built,
        written: img.clone(),
        command: c.command.clone(),
        args: c.args.clone(),
        env: c.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ports,
        mounts,
    })
}
