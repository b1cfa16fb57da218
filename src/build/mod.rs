//! The build orchestrator: runs a plan's rules in the builder sandbox,
//! tapes out, and assembles every image of the pass into one layout.
//!
//! Nothing is written to the output layout until every rule has succeeded,
//! so a failing build leaves the layout as it was.

pub mod base;

use crate::layer::compress::Compression;
use crate::layer::generate::TarOptions;
use crate::oci::image::{append_layer, empty_config, rfc3339, write_image};
use crate::oci::layout::Layout;
use crate::rootfs::changeset::Change;
use crate::rootfs::manifest::Manifest;
use crate::rootfs::walk::{walk_with, Hashing, WalkOptions};
use crate::sandbox::spec::{Bind, StepSpec};
use crate::sandbox::{detect_subids, host_dirs, RunOptions};
use crate::spec::{ImageSpec, Plan, Step};
use crate::tapeout::view::BuilderView;
use anyhow::{bail, Context, Result};
use oci_spec::image::Config;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// How to run a plan.
pub struct BuildOptions {
    pub output: PathBuf,
    /// Only these images (all when both this and `pods` are empty).
    pub images: Vec<String>,
    /// Only these pods, and the images they need.
    pub pods: Vec<String>,
    pub keep_builder: bool,
    pub explain: bool,
    pub epoch: i64,
    pub compression: Compression,
    pub level: Option<i32>,
}

/// A failed rule, as the user sees it.
#[derive(Debug, thiserror::Error)]
#[error("{rule} failed with exit code {code}{}; last lines of its log ({log}):\n{tail}", if *code == crate::sandbox::helper::SETUP_FAILED { " (the sandbox could not start it)" } else { "" })]
pub struct RuleFailed {
    pub rule: String,
    pub code: i32,
    pub log: String,
    pub tail: String,
}

/// One image or pod written.
pub struct Built {
    pub name: String,
    pub tag: String,
    pub digest: String,
    pub pod: bool,
}

/// Runs the plan and writes its images.
pub fn build(plan: &Plan, opts: &BuildOptions) -> Result<Vec<Built>> {
    for want in &opts.pods {
        if !plan.pods.iter().any(|p| &p.name == want) {
            let names: Vec<&str> = plan.pods.iter().map(|p| p.name.as_str()).collect();
            bail!(
                "--pod {want}: no such pod in the spec (pods: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            );
        }
    }
    for want in &opts.images {
        if !plan.images.iter().any(|i| &i.name == want) {
            let names: Vec<&str> = plan.images.iter().map(|i| i.name.as_str()).collect();
            bail!(
                "--image {want}: no such image in the spec (images: {})",
                names.join(", ")
            );
        }
    }
    let state = tempfile::Builder::new()
        .prefix("shipyard-builder-")
        .tempdir()
        .context("creating the builder state directory")?
        .keep();
    let result = run_plan(plan, opts, &state);
    if opts.keep_builder {
        let changes = base::changes_dir(&base::base_root(&plan.from, &state.join("builder"))?.0);
        eprintln!(
            "builder kept in {} (changes: {}, logs: {})",
            state.display(),
            changes.display(),
            state.join("logs").display()
        );
    } else if let Err(e) = crate::sandbox::remove_tree(&state) {
        tracing::warn!(
            "could not remove the builder state {}: {e}",
            state.display()
        );
    }
    result
}

fn run_plan(plan: &Plan, opts: &BuildOptions, state: &Path) -> Result<Vec<Built>> {
    let (root, lower) = base::base_root(&plan.from, &state.join("builder"))?;
    let logs = state.join("logs");
    std::fs::create_dir_all(&logs)?;
    let subids = detect_subids();
    let binds: Vec<Bind> = plan
        .sources
        .iter()
        .map(|s| Bind {
            source: s.host.clone(),
            target: s.target.clone(),
            writable: s.writable,
        })
        .collect();
    let view = BuilderView::new(
        base::changes_dir(&root),
        lower.into_iter().collect(),
        if plan.from == "host" {
            host_dirs()
        } else {
            Vec::new()
        },
        subids,
    );
    let mut explain: BTreeMap<String, crate::tapeout::Explain> = BTreeMap::new();
    let last_build = plan.steps.iter().rposition(|s| matches!(s, Step::Build(_)));
    for (index, step) in plan.steps.iter().enumerate() {
        let id = step.id();
        match step {
            Step::Build(b) => {
                let mut env: Vec<(String, String)> = vec![("HOME".into(), "/root".into())];
                env.extend(plan.env.iter().cloned());
                env.extend(b.env.iter().cloned());
                env.push(("SOURCE_DATE_EPOCH".into(), opts.epoch.to_string()));
                let spec = StepSpec {
                    root: root.clone(),
                    binds: binds.clone(),
                    network: plan.network,
                    env,
                    cwd: b.workdir.clone(),
                    argv: vec!["/bin/sh".into(), "-c".into(), b.run.clone()],
                    hostname: "shipyard".into(),
                    user: b.user,
                    subids,
                    action: crate::sandbox::spec::Action::Exec,
                };
                let log = logs.join(format!("{id}.log"));
                eprintln!("==> {id}");
                let out = crate::sandbox::run(
                    &spec,
                    &RunOptions {
                        name: id.clone(),
                        log: Some(log.clone()),
                        timeout: b.timeout.map(std::time::Duration::from_secs),
                        interactive: false,
                        echo: true,
                    },
                )?;
                if out.code != 0 {
                    // The builder state goes away; the failing rule's log
                    // must not, since the error points at it.
                    let log = keep_log(&log, &id).unwrap_or(log);
                    return Err(RuleFailed {
                        rule: id,
                        code: out.code,
                        log: log.display().to_string(),
                        tail: out.tail.join("\n"),
                    }
                    .into());
                }
            }
            Step::Tapeout(t) => {
                eprintln!("==> {id}");
                let stage = state.join("tapeout").join(&t.name);
                let copy_mode = matches!(&root, crate::sandbox::spec::Root::Overlay { work, .. }
                    if work.join(crate::sandbox::COPY_MARKER).exists());
                let final_step = last_build.is_none_or(|l| index > l);
                // Inside the build's user namespace: what a step gave to
                // other ids is readable there, and owners are the image's.
                let explain_out = state
                    .join("tapeout")
                    .join(format!("{}.explain.json", t.name));
                std::fs::create_dir_all(state.join("tapeout"))?;
                let job = crate::sandbox::spec::TapeoutJob {
                    rule: t.clone(),
                    changes: view.changes.clone(),
                    lowers: view.lowers.clone(),
                    host_dirs: view.host_dirs.clone(),
                    copy_mode,
                    stage: stage.clone(),
                    final_step,
                    explain_out: explain_out.clone(),
                };
                let spec = StepSpec {
                    root: root.clone(),
                    binds: Vec::new(),
                    network: crate::sandbox::spec::Network::None,
                    env: Vec::new(),
                    cwd: PathBuf::from("/"),
                    argv: Vec::new(),
                    hostname: "shipyard".into(),
                    user: (0, 0),
                    subids,
                    action: crate::sandbox::spec::Action::Tapeout(Box::new(job)),
                };
                let out = crate::sandbox::run(
                    &spec,
                    &RunOptions {
                        name: id.clone(),
                        ..Default::default()
                    },
                )?;
                if out.code != 0 {
                    bail!("{id}: {}", out.tail.join("\n"));
                }
                let ex: BTreeMap<String, String> =
                    serde_json::from_slice(&std::fs::read(&explain_out)?)?;
                explain.insert(
                    t.name.clone(),
                    ex.into_iter().map(|(p, w)| (PathBuf::from(p), w)).collect(),
                );
            }
        }
    }
    let layout = Layout::open_or_create(&opts.output)?;
    let everything = opts.images.is_empty() && opts.pods.is_empty();
    let pods: Vec<&crate::spec::PodSpec> = plan
        .pods
        .iter()
        .filter(|p| everything || opts.pods.contains(&p.name))
        .collect();
    let mut built = Vec::new();
    let mut descriptors: BTreeMap<String, oci_spec::image::Descriptor> = BTreeMap::new();
    for img in &plan.images {
        let for_pod = pods
            .iter()
            .any(|p| p.containers.iter().any(|c| c.built && c.image == img.name));
        if !everything && !opts.images.contains(&img.name) && !for_pod {
            continue;
        }
        let digest = assemble(img, &layout, state, opts)?;
        descriptors.insert(img.name.clone(), layout.resolve(Some(&img.tag))?);
        if opts.explain {
            for t in &img.tapeouts {
                for (p, why) in explain.get(t).into_iter().flatten() {
                    println!("{}\t{}\t{}", img.name, p.display(), why);
                }
            }
        }
        built.push(Built {
            name: img.name.clone(),
            tag: img.tag.clone(),
            digest,
            pod: false,
        });
    }
    for p in pods {
        eprintln!("==> pod.{}", p.name);
        let stage = |t: &str| state.join("tapeout").join(t);
        let input = crate::pod::bundle::Input {
            spec: p,
            spec_dir: &plan.dir,
            built: &descriptors,
            tapeout_stage: &stage,
            epoch: opts.epoch,
            compression: opts.compression,
            level: opts.level,
        };
        let d = crate::pod::bundle::write(&layout, &input, state, &crate::transport::defaults())
            .with_context(|| format!("writing pod {}", p.name))?;
        built.push(Built {
            name: p.name.clone(),
            tag: format!("{}:{}", p.name, p.version),
            digest: d.digest().to_string(),
            pod: true,
        });
    }
    Ok(built)
}

/// Runtime base + tapeout layer(s) + config, written and tagged.
fn assemble(img: &ImageSpec, layout: &Layout, state: &Path, opts: &BuildOptions) -> Result<String> {
    let (mut config, mut layers, base_manifest) = if img.from == "scratch" {
        (empty_config(), Vec::new(), Manifest::default())
    } else {
        let (blayout, bimage) = crate::cli::open_image(&img.from)?;
        bimage.copy_layers(&blayout, layout)?;
        let m = crate::rootfs::from_image::manifest_of_image(&blayout, &bimage)
            .with_context(|| format!("reading runtime base {}", img.from))?;
        (bimage.config.clone(), bimage.manifest.layers().clone(), m)
    };
    let groups: Vec<Vec<String>> = if img.layer_per_tapeout {
        img.tapeouts.iter().map(|t| vec![t.clone()]).collect()
    } else {
        vec![img.tapeouts.clone()]
    };
    for (i, group) in groups.iter().enumerate() {
        let tree = if group.len() == 1 {
            state.join("tapeout").join(&group[0])
        } else {
            let merged = state.join("image").join(format!("{}-{i}", img.name));
            merge_stages(
                group
                    .iter()
                    .map(|t| state.join("tapeout").join(t))
                    .collect(),
                &merged,
            )?;
            merged
        };
        std::fs::create_dir_all(&tree)?;
        let walked = walk_with(&tree, &WalkOptions::new(Hashing::None))?;
        let mut d = crate::rootfs::diff::diff(&walked, &base_manifest)?;
        // A tapeout only adds: what the runtime base has and the builder
        // did not select stays.
        d.changes.changes.retain(|c| matches!(c, Change::Put(_)));
        let out = crate::layer::write_layer(
            layout,
            &d.changes,
            &tree,
            opts.compression,
            opts.level,
            &TarOptions {
                clamp_mtime: Some(opts.epoch),
            },
        )?;
        let by: Vec<String> = group.iter().map(|t| format!("tapeout.{t}")).collect();
        append_layer(
            &mut config,
            &out.diff_id,
            &rfc3339(opts.epoch),
            &format!("shipyard build: {}", by.join(" ")),
        );
        layers.push(out.descriptor);
    }
    apply_config(&mut config, img);
    let mut desc = write_image(layout, &config, layers)?;
    if !img.annotations.is_empty() {
        desc = annotate(layout, &desc, &img.annotations)?;
    }
    layout.tag(&img.tag, &desc)?;
    Ok(desc.digest().to_string())
}

fn apply_config(config: &mut oci_spec::image::ImageConfiguration, img: &ImageSpec) {
    let mut c: Config = config.config().clone().unwrap_or_default();
    if img.entrypoint.is_some() {
        c.set_entrypoint(img.entrypoint.clone());
    }
    if img.cmd.is_some() {
        c.set_cmd(img.cmd.clone());
    }
    if !img.env.is_empty() {
        let mut env: Vec<String> = c.env().clone().unwrap_or_default();
        for (k, v) in &img.env {
            env.retain(|e| e.split('=').next() != Some(k));
            env.push(format!("{k}={v}"));
        }
        c.set_env(Some(env));
    }
    if img.workdir.is_some() {
        c.set_working_dir(img.workdir.clone());
    }
    if img.user.is_some() {
        c.set_user(img.user.clone());
    }
    if !img.ports.is_empty() {
        let ports = img
            .ports
            .iter()
            .map(|p| {
                if p.contains('/') {
                    p.clone()
                } else {
                    format!("{p}/tcp")
                }
            })
            .collect();
        c.set_exposed_ports(Some(ports));
    }
    if !img.volumes.is_empty() {
        c.set_volumes(Some(img.volumes.clone()));
    }
    if !img.labels.is_empty() {
        let mut l: HashMap<String, String> = c.labels().clone().unwrap_or_default();
        l.extend(img.labels.clone());
        c.set_labels(Some(l));
    }
    if img.stop_signal.is_some() {
        c.set_stop_signal(img.stop_signal.clone());
    }
    config.set_config(Some(c));
}

/// Rewrites a manifest with annotations; returns its new descriptor.
fn annotate(
    layout: &Layout,
    desc: &oci_spec::image::Descriptor,
    ann: &BTreeMap<String, String>,
) -> Result<oci_spec::image::Descriptor> {
    let d = crate::oci::media::digest_of(desc)?;
    let mut m: oci_spec::image::ImageManifest =
        serde_json::from_slice(&layout.read_blob(&d, None)?)?;
    m.set_annotations(Some(
        ann.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    ));
    Ok(layout.put_json(&m, oci_spec::image::MediaType::ImageManifest)?)
}

/// Merges staged tapeout trees (later ones win) with their ownership
/// records, using hard links (same filesystem).
pub(crate) fn merge_stages(stages: Vec<PathBuf>, into: &Path) -> Result<()> {
    std::fs::create_dir_all(into)?;
    let mut record = Manifest::default();
    for s in &stages {
        for e in walkdir::WalkDir::new(s).min_depth(1).sort_by_file_name() {
            let e = e?;
            let rel = e.path().strip_prefix(s)?;
            let dest = into.join(rel);
            let ft = e.file_type();
            if ft.is_dir() {
                std::fs::create_dir_all(&dest)?;
                std::fs::set_permissions(&dest, std::fs::metadata(e.path())?.permissions())?;
            } else {
                let _ = std::fs::remove_file(&dest);
                if ft.is_symlink() {
                    std::os::unix::fs::symlink(std::fs::read_link(e.path())?, &dest)?;
                } else {
                    std::fs::hard_link(e.path(), &dest)?;
                }
            }
        }
        let rec = crate::rootfs::walk::ownership_record_path(s);
        if let Ok(f) = std::fs::File::open(&rec) {
            let m = Manifest::parse(std::io::BufReader::new(f), &rec.display().to_string())?;
            for (_, e) in m.entries {
                record.insert(e);
            }
        }
    }
    let f = std::fs::File::create(crate::rootfs::walk::ownership_record_path(into))?;
    record.write_to(std::io::BufWriter::new(f))?;
    Ok(())
}

/// Copies a failed rule's log to `$XDG_CACHE_HOME/shipyard/logs/RULE.log`.
fn keep_log(log: &Path, rule: &str) -> Option<PathBuf> {
    let dir = base::cache_dir().ok()?.join("logs");
    std::fs::create_dir_all(&dir).ok()?;
    let dest = dir.join(format!("{rule}.log"));
    std::fs::copy(log, &dest).ok()?;
    Some(dest)
}
