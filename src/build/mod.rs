//! The build orchestrator: runs a plan's rules in the builder sandbox,
//! tapes out, and assembles every image of the pass into one layout.
//!
//! Nothing is written to the output layout until every rule has succeeded,
//! so a failing build leaves the layout as it was.

pub mod base;
pub mod capture;
pub mod inplace;
pub mod key;
pub mod mounts;
pub mod remote;
pub mod restore;
pub mod stepcache;

use crate::project::{ImageSpec, Plan, Step};
use crate::sandbox::job::{Bind, StepSpec};
use crate::sandbox::{detect_subids, host_dirs, RunOptions};
use crate::tapeout::view::BuilderView;
use anyhow::{bail, Context, Result};
use key::StepKey;
use oci_spec::image::Config;
use oci_spec::image::Descriptor;
use shipyard_image::layer::compress::Compression;
use shipyard_image::layer::generate::TarOptions;
use shipyard_image::oci::digest::Digest;
use shipyard_image::oci::image::{append_layer, empty_config, rfc3339, write_image};
use shipyard_image::oci::layout::Layout;
use shipyard_image::rootfs::changeset::Change;
use shipyard_image::rootfs::entry::RelPath;
use shipyard_image::rootfs::manifest::Manifest;
use shipyard_image::rootfs::walk::{walk_with, Hashing, WalkOptions};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use stepcache::{Record, RecordKind, StepCache};

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
    pub cache: CacheOptions,
    /// The isolation level asked for (see `sandbox::isolation`).
    pub isolation: crate::sandbox::isolation::Isolation,
    /// The secrets given for this build (`--secret`): rules that name one
    /// see it at /run/secrets/NAME.
    pub secrets: Vec<crate::sandbox::job::Secret>,
    /// No progress lines (`==> …`) on stderr: `-q`.
    pub quiet: bool,
    /// Attach an SPDX document to every image (`--sbom`).
    pub sbom: bool,
}

/// How the cache's own layers (a rule's changes, a tapeout's selection)
/// are compressed: zstd at level 1 on every core, several times faster
/// than gzip, so caching a big rule costs little more than the rule.
/// Image layers keep the build's own compression.
pub const CACHE_COMPRESSION: Compression = Compression::Zstd;
pub const CACHE_LEVEL: i32 = 1;

/// How a build uses the step cache.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// Use cached results (false: `--no-cache`; results are still stored).
    pub read: bool,
    /// Step ids (`build.NAME`) to run whatever the cache holds.
    pub no_cache_rules: Vec<String>,
    /// A registry repository to look cached steps up in.
    pub from: Option<shipyard_image::reference::RegistryRef>,
    /// A registry repository to push this build's cached steps to.
    pub to: Option<shipyard_image::reference::RegistryRef>,
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
    for r in &opts.cache.no_cache_rules {
        if !plan.steps.iter().any(|s| &s.id() == r) {
            let names: Vec<String> = plan.steps.iter().map(|s| s.id()).collect();
            bail!(
                "--no-cache-rule {r}: no such rule in the spec (rules: {})",
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
    } else {
        dispose(&state);
    }
    result
}

/// Where one step stands in this build.
#[derive(Debug, Clone)]
enum Status {
    /// Found in the cache (restored, or not even needed).
    Hit(Box<Record>),
    /// Must run: why.
    Miss(String),
}

/// The cache side of a build: keys, lookups, and what each step decided.
struct Planner<'a> {
    plan: &'a Plan,
    opts: &'a BuildOptions,
    sc: StepCache,
    remote: Option<remote::Remote>,
}

impl Planner<'_> {
    /// Looks `key` up locally, then in the `--cache-from` registries.
    fn lookup(&self, key: &StepKey) -> Option<Record> {
        if let Some(r) = self.sc.lookup(&key.key) {
            return Some(r);
        }
        let remote = self.remote.as_ref()?;
        match remote.fetch(&self.sc, &key.key) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("cache lookup in the registry failed: {e:#}");
                None
            }
        }
    }

    /// Whether `key` looks present (locally or in the registry), without
    /// fetching or verifying anything.
    fn probe(&self, key: &StepKey) -> bool {
        self.sc.has(&key.key)
            || self
                .remote
                .as_ref()
                .is_some_and(|r| r.has(&key.key).unwrap_or(false))
    }

    /// Hit, or miss with the reason, for a step that is allowed to hit.
    fn status(&self, step: &str, key: &StepKey, forced: Option<&str>) -> Status {
        if let Some(why) = forced {
            return Status::Miss(why.to_string());
        }
        match self.lookup(key) {
            Some(r) => Status::Hit(Box::new(r)),
            None => Status::Miss(self.why_missed(step, key)),
        }
    }

    /// Which input of `key` changed since `step` was last built here.
    fn why_missed(&self, step: &str, key: &StepKey) -> String {
        let Some(last) = self.sc.last_parts(&self.plan.dir, step) else {
            return "not in the cache (first build of this step here)".into();
        };
        let mut why = Vec::new();
        for (name, now) in &key.parts {
            let before = last.get(name);
            if before == Some(now) {
                continue;
            }
            why.push(match name.as_str() {
                "base" => "the builder base changed".to_string(),
                "mode" => "the builder's filesystem mode changed (overlay or copy)".to_string(),
                "ids" => "the id mapping changed (a subordinate range or a single id)".to_string(),
                "definition" => "its definition changed".to_string(),
                "previous" => "an earlier rule changed".to_string(),
                "tapeouts" => "a tapeout it holds changed".to_string(),
                "runtime-base" => "the runtime base changed".to_string(),
                "format" => {
                    "the output format changed (compression, level or timestamp)".to_string()
                }
                n if n.starts_with("source:") => {
                    let target = &n["source:".len()..];
                    let now_c = self.sc.source(now);
                    let old_c = before.and_then(|b| self.sc.source(b));
                    match (now_c, old_c) {
                        (Some(a), Some(b)) => {
                            let files = a.changed_since(&b);
                            let shown: Vec<&str> =
                                files.iter().take(5).map(|s| s.as_str()).collect();
                            let more = files.len().saturating_sub(shown.len());
                            format!(
                                "source {target} changed: {}{}",
                                shown.join(", "),
                                if more > 0 {
                                    format!(" and {more} more")
                                } else {
                                    String::new()
                                }
                            )
                        }
                        _ => format!("source {target} changed"),
                    }
                }
                other => format!("{other} changed"),
            });
        }
        for name in last.keys() {
            if !key.parts.contains_key(name) {
                if let Some(t) = name.strip_prefix("source:") {
                    why.push(format!("source {t} was removed"));
                }
            }
        }
        if why.is_empty() {
            "not in the cache (pruned, or never stored)".into()
        } else {
            why.join("; ")
        }
    }

    fn say(&self, step: &str, status: &str, why: &str) {
        if self.opts.quiet {
            // -q: only errors on stderr.
        } else if why.is_empty() {
            eprintln!("==> {step}: {status}");
        } else {
            eprintln!("==> {step}: {status}: {why}");
        }
        if self.opts.explain {
            println!("{step}\t{status}\t{why}");
        }
    }
}

/// An image layer to make from a group of tapeouts.
struct Group {
    tapeouts: Vec<String>,
    key: StepKey,
    status: Status,
}

/// An image to assemble, with its runtime base opened.
struct Planned {
    spec: ImageSpec,
    base: Option<(Layout, shipyard_image::oci::image::Image)>,
    groups: Vec<Group>,
}

fn run_plan(plan: &Plan, opts: &BuildOptions, state: &Path) -> Result<Vec<Built>> {
    // The cache first: holding it keeps `cache prune` off the base this
    // build unpacks there.
    let sc = StepCache::open().context("opening the step cache")?;
    // The level before the base: a builder this level cannot use is
    // refused before it is pulled or unpacked.
    let subids = detect_subids();
    let confinement =
        crate::sandbox::choose_isolation(opts.isolation, subids, plan.from == "host")?;
    if !opts.quiet {
        eprintln!("==> isolation: {}", confinement.summary());
    }
    if let Some(why) = confinement.unusable_builder(&plan.from) {
        bail!(why);
    }
    // At isolation none the container's own `/` is the builder.
    let in_place = confinement.level == crate::sandbox::isolation::Level::None;
    let base = base::prepare(&plan.from, &state.join("builder"))?;
    let root = base.root.clone();
    let logs = state.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mount_store = mounts::MountStore::open()?;
    // Every secret a rule names must be given, before anything runs.
    for step in &plan.steps {
        if let Step::Build(b) = step {
            step_secrets(b, &opts.secrets)?;
        }
    }
    let ca_bundle = if plan.host_ca {
        let b = crate::sandbox::ca::host_bundle();
        if b.is_none() {
            tracing::warn!(
                "builder.host-ca: this machine has no CA bundle at {}; the builder keeps its own",
                crate::sandbox::ca::BUNDLE_PATHS.join(", ")
            );
        }
        b
    } else {
        None
    };
    // A single-id map cannot give files to other ids: don't ask it to map
    // a range in the tapeout's view either.
    let subids_wanted = subids.is_some() || nix::unistd::geteuid().is_root();
    let subids = subids.filter(|_| confinement.map == crate::sandbox::isolation::IdMap::Range);
    let remote = match &opts.cache.from {
        Some(r) => Some(remote::Remote::new(r).with_context(|| format!("--cache-from {r}"))?),
        None => None,
    };
    let planner = Planner {
        plan,
        opts,
        sc,
        remote,
    };
    let binds: Vec<Bind> = plan
        .sources
        .iter()
        .map(|s| Bind {
            source: s.host.clone(),
            target: s.target.clone(),
            writable: s.writable,
        })
        .collect();
    let view = if in_place {
        BuilderView::new(PathBuf::from("/"), Vec::new(), Vec::new(), None)
    } else {
        BuilderView::new(
            base::changes_dir(&root),
            base.lower.clone().into_iter().collect(),
            if plan.from == "host" {
                host_dirs()
            } else {
                Vec::new()
            },
            subids,
        )
    };
    let mut inplace = in_place.then(|| {
        let cache_dir = shipyard_image::cache::cache_dir().ok();
        let mut own: Vec<&Path> = vec![state, &opts.output];
        own.extend(cache_dir.as_deref());
        for s in &plan.sources {
            own.push(&s.host);
            own.push(&s.target);
        }
        // Cache mounts (their directories are in the cache) and secrets
        // appear where the rules read them, and go again.
        for step in &plan.steps {
            if let Step::Build(b) = step {
                own.extend(b.cache.iter().map(|m| m.target.as_path()));
            }
        }
        own.push(Path::new(crate::sandbox::job::Secret::DIR));
        inplace::InPlace::new(inplace::skipped(&own))
    });
    let copy_marker = match &root {
        crate::sandbox::job::Root::Overlay { work, .. } => {
            Some(work.join(crate::sandbox::COPY_MARKER))
        }
        _ => None,
    };
    // Without mounts there is no overlay: every rule runs on the copy, and
    // is cached as such.
    let copy_expected = copy_marker.is_some()
        && (std::env::var_os(crate::sandbox::NO_OVERLAY_ENV).is_some() || !confinement.mounts);
    let mode = match &root {
        _ if in_place => "none",
        crate::sandbox::job::Root::Overlay { .. } if copy_expected => "copy",
        crate::sandbox::job::Root::Overlay { .. } => "overlay",
        crate::sandbox::job::Root::Dir(_) => "dir",
        crate::sandbox::job::Root::Host { .. } => "host",
    };

    // 1. Every step's key, before anything runs.
    let mut sources = BTreeMap::new();
    for s in &plan.sources {
        let c = key::source_content(&s.host, Some(&planner.sc.stat_cache(&s.host)))?;
        planner.sc.keep_source(&c);
        sources.insert(
            format!("source:{}", s.target.display()),
            c.digest.to_string(),
        );
    }
    let common = |parts: &mut BTreeMap<String, String>| {
        parts.insert("base".into(), base.identity.clone());
        parts.insert("mode".into(), mode.into());
        // With a single id mapped, files a step gives to other ids keep
        // the caller's: not the same result as with a range. (Only then,
        // so that entries made with a range keep their keys.)
        if confinement.map == crate::sandbox::isolation::IdMap::Single && subids_wanted {
            parts.insert("ids".into(), "single".into());
        }
    };
    let mut keys: Vec<StepKey> = Vec::new();
    let mut previous = "none".to_string();
    for step in &plan.steps {
        let mut parts = BTreeMap::new();
        common(&mut parts);
        parts.insert("previous".into(), previous.clone());
        match step {
            Step::Build(b) => {
                parts.extend(sources.clone());
                let def = serde_json::json!({
                    "run": b.run,
                    "env": rule_env(plan, b, opts.epoch),
                    "workdir": b.workdir,
                    "user": b.user,
                    "network": plan.network,
                    "mounts": plan.sources.iter().map(|s| (s.target.clone(), s.writable)).collect::<Vec<_>>(),
                });
                // The names of its secrets, never their values.
                let def = if b.secrets.is_empty() {
                    def
                } else {
                    let mut d = def;
                    d["secrets"] = serde_json::json!(b.secrets);
                    d
                };
                parts.insert("definition".into(), key::digest_json(&def)?);
            }
            Step::Tapeout(t) => {
                parts.insert("definition".into(), key::digest_json(t)?);
                if opts.sbom {
                    parts.insert("sbom".into(), crate::sbom::build::KEY_PART.into());
                }
            }
        }
        let k = StepKey::new(parts);
        if matches!(step, Step::Build(_)) {
            previous = k.key.to_string();
        }
        keys.push(k);
    }
    // Steps that must run whatever the cache holds: everything with
    // --no-cache, or when a source is writable (it takes writes the
    // builder's layers do not hold, which restoring could not redo); with
    // --no-cache-rule, that rule and every step after it (a cached change
    // is only valid on the state it was captured on).
    let writable = plan.sources.iter().find(|s| s.writable);
    let first_forced = if !opts.cache.read || writable.is_some() {
        Some(0)
    } else {
        plan.steps
            .iter()
            .position(|s| opts.cache.no_cache_rules.iter().any(|n| n == &s.id()))
    };
    let forced = |i: usize| -> Option<String> {
        match first_forced {
            Some(_) if !opts.cache.read => Some("--no-cache".into()),
            Some(_) if writable.is_some() => Some(format!(
                "source {} is mounted writable, and what rules write there is not cached",
                writable.map_or(String::new(), |w| w.target.display().to_string())
            )),
            Some(f) if i == f => Some("--no-cache-rule".into()),
            Some(f) if i > f => Some(format!(
                "{} is rebuilt (--no-cache-rule)",
                plan.steps[f].id()
            )),
            _ => None,
        }
    };
    let index_of = |name: &str| {
        plan.steps
            .iter()
            .position(|s| matches!(s, Step::Tapeout(t) if t.name == name))
    };

    // 2. The images (and pods) asked for, and which of their layers the
    //    cache already holds.
    let everything = opts.images.is_empty() && opts.pods.is_empty();
    let pods: Vec<&crate::project::PodSpec> = plan
        .pods
        .iter()
        .filter(|p| everything || opts.pods.contains(&p.name))
        .collect();
    let mut planned: Vec<Planned> = Vec::new();
    let mut needed: BTreeSet<String> = BTreeSet::new();
    for img in &plan.images {
        let for_pod = pods
            .iter()
            .any(|p| p.containers.iter().any(|c| c.built && c.image == img.name));
        if !everything && !opts.images.contains(&img.name) && !for_pod {
            continue;
        }
        let base = if img.from == "scratch" {
            None
        } else {
            Some(crate::cli::open_image(&img.from)?)
        };
        let base_id = base
            .as_ref()
            .map_or("scratch".to_string(), |(_, b)| b.digest.to_string());
        let grouped: Vec<Vec<String>> = if img.layer_per_tapeout {
            img.tapeouts.iter().map(|t| vec![t.clone()]).collect()
        } else {
            vec![img.tapeouts.clone()]
        };
        let mut groups = Vec::new();
        for (gi, g) in grouped.into_iter().enumerate() {
            let tkeys: Vec<String> = g
                .iter()
                .filter_map(|t| index_of(t))
                .map(|i| keys[i].key.to_string())
                .collect();
            let mut parts = BTreeMap::new();
            parts.insert("tapeouts".into(), tkeys.join(","));
            parts.insert("runtime-base".into(), base_id.clone());
            parts.insert(
                "format".into(),
                format!("{:?} {:?} {}", opts.compression, opts.level, opts.epoch),
            );
            let k = StepKey::new(parts);
            let forced_here = g.iter().filter_map(|t| index_of(t)).find_map(&forced);
            let step = format!("image.{}#{gi}", img.name);
            let status = planner.status(&step, &k, forced_here.as_deref());
            // --sbom: a cached image still needs what its tapeouts took.
            if matches!(status, Status::Miss(_)) || opts.sbom {
                needed.extend(g.iter().cloned());
            }
            groups.push(Group {
                tapeouts: g,
                key: k,
                status,
            });
        }
        planned.push(Planned {
            spec: img.clone(),
            base,
            groups,
        });
    }
    for p in &pods {
        for v in &p.volumes {
            if let crate::project::VolumeSource::Tapeout(t) = &v.source {
                needed.insert(t.clone());
            }
        }
    }

    // 3. How far the builder must go: to the last rule the cache lacks
    //    (every rule runs or is cached, so a test rule still gates the
    //    build), and to the last tapeout needed that the cache lacks.
    let mut statuses: Vec<Option<Status>> = vec![None; plan.steps.len()];
    let mut last_needed: Option<usize> = None;
    for (i, step) in plan.steps.iter().enumerate() {
        if let Step::Build(_) = step {
            if in_place || forced(i).is_some() || !planner.probe(&keys[i]) {
                last_needed = Some(i);
            }
        }
        if let Step::Tapeout(t) = step {
            if needed.contains(&t.name) {
                let s = planner.status(&step.id(), &keys[i], forced(i).as_deref());
                if matches!(s, Status::Miss(_)) {
                    last_needed = Some(i);
                }
                statuses[i] = Some(s);
            }
        }
    }

    // 4. The steps: cached rules are restored only when a later step must
    //    really run on top of them.
    let snapshot = state.join("changes.manifest");
    let cache_layout = planner.sc.cache.layout.root().to_path_buf();
    let mut pending: Vec<(Descriptor, String)> = Vec::new();
    let mut explain: BTreeMap<String, crate::tapeout::Explain> = BTreeMap::new();
    let mut sboms: BTreeMap<String, crate::sbom::Attribution> = BTreeMap::new();
    let mut ran_rule = false;
    let in_ns = |action: crate::sandbox::job::Action, name: &str| -> Result<()> {
        let spec = StepSpec {
            root: root.clone(),
            binds: Vec::new(),
            network: crate::sandbox::job::Network::None,
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            argv: Vec::new(),
            hostname: "shipyard".into(),
            user: (0, 0),
            subids,
            action,
            confinement: confinement.clone(),
            secrets: Vec::new(),
            ca_bundle: None,
        };
        let out = crate::sandbox::run(
            &spec,
            &RunOptions {
                name: name.to_string(),
                ..Default::default()
            },
        )?;
        if out.code != 0 {
            bail!("{name}: {}", out.tail.join("\n"));
        }
        Ok(())
    };
    let flush = |pending: &mut Vec<(Descriptor, String)>| -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        std::fs::create_dir_all(base::changes_dir(&root))?;
        let job = restore::RestoreJob {
            changes: base::changes_dir(&root),
            snapshot: snapshot.clone(),
            copy_from: base.lower.clone().into_iter().collect(),
            copy_marker: copy_marker.clone().filter(|_| copy_expected),
            cache_layout: cache_layout.clone(),
            layers: std::mem::take(pending),
        };
        in_ns(
            crate::sandbox::job::Action::Restore(Box::new(job)),
            "restore",
        )
        .context("restoring cached rules into the builder")
    };
    let last_build = plan.steps.iter().rposition(|s| matches!(s, Step::Build(_)));
    // Storing what a step made overlaps with what comes next: a capture
    // (it reads the builder) with the tapeouts after it, a tapeout's
    // storage (it reads the stage) with everything; the builder is only
    // written again once its captures are done.
    type Jobs<'s> = Vec<std::thread::ScopedJoinHandle<'s, Result<()>>>;
    fn join_all(jobs: &mut Jobs<'_>) -> Result<()> {
        for h in jobs.drain(..) {
            h.join()
                .map_err(|_| anyhow::anyhow!("a background job of the build panicked"))??;
        }
        Ok(())
    }
    const NOT_CACHED_IN_PLACE: &str = "rules are not cached at isolation none";
    if let Some(ip) = inplace.as_mut() {
        if plan.steps.iter().any(|s| matches!(s, Step::Build(_))) {
            tracing::warn!(
                "isolation none: rules run in place, in this container's own /, and are not \
                 cached (there is no overlay upper dir holding what they change); tapeouts \
                 and image layers still are"
            );
        }
        // Before the first rule: what the tapeouts diff `/` against.
        if last_needed.is_some() {
            ip.snapshot()?;
        }
    }
    std::thread::scope(|scope| -> Result<Vec<Built>> {
        let mut captures: Jobs<'_> = Vec::new();
        let mut background: Jobs<'_> = Vec::new();
        for (index, step) in plan.steps.iter().enumerate() {
            let id = step.id();
            let key = &keys[index];
            if last_needed.is_none_or(|l| index > l) {
                if let Step::Tapeout(t) = step {
                    if let Some(Some(Status::Hit(r))) = statuses.get(index) {
                        restore_stage(&planner.sc, r, &state.join("tapeout").join(&t.name))?;
                        explain.insert(t.name.clone(), explain_of(r));
                        sboms.extend(r.sbom.clone().map(|a| (t.name.clone(), a)));
                        planner.sc.remember_parts(&plan.dir, &id, key);
                        planner.say(&id, "cached", "");
                        continue;
                    }
                }
                planner.sc.remember_parts(&plan.dir, &id, key);
                match step {
                    // Every rule the cache lacks is run, so this one is cached;
                    // nothing after it runs, so it need not be restored.
                    Step::Build(_) => planner.say(&id, "cached", ""),
                    Step::Tapeout(_) => {
                        planner.say(&id, "not needed", "the images that use it are cached")
                    }
                }
                continue;
            }
            match step {
                Step::Build(b) => {
                    let status = if in_place {
                        Status::Miss(NOT_CACHED_IN_PLACE.into())
                    } else if ran_rule && first_forced.is_none() {
                        Status::Miss("an earlier rule ran".into())
                    } else {
                        planner.status(&id, key, forced(index).as_deref())
                    };
                    match status {
                        Status::Hit(r) => {
                            planner.say(&id, "cached", "");
                            planner.sc.remember_parts(&plan.dir, &id, key);
                            pending.push((r.layer.clone(), r.diff_id.clone()));
                            continue;
                        }
                        Status::Miss(why) => planner.say(&id, "run", &why),
                    }
                    join_all(&mut captures)?;
                    flush(&mut pending)?;
                    ran_rule = true;
                    // Cache mounts are held (locked) while the rule runs.
                    let held: Vec<(PathBuf, mounts::Held)> = b
                        .cache
                        .iter()
                        .map(|m| Ok((m.target.clone(), mount_store.acquire(m)?)))
                        .collect::<Result<_>>()?;
                    let mut step_binds = binds.clone();
                    step_binds.extend(held.iter().map(|(target, h)| Bind {
                        source: h.path.clone(),
                        target: target.clone(),
                        writable: true,
                    }));
                    let spec = StepSpec {
                        root: root.clone(),
                        binds: step_binds,
                        network: plan.network,
                        env: {
                            // The proxy settings are the machine's, not
                            // the build's: in the step, not in its key.
                            let mut env = rule_env(plan, b, opts.epoch);
                            crate::sandbox::ca::add_missing(
                                &mut env,
                                crate::sandbox::ca::proxy_env(),
                            );
                            env
                        },
                        cwd: b.workdir.clone(),
                        argv: vec!["/bin/sh".into(), "-c".into(), b.run.clone()],
                        hostname: "shipyard".into(),
                        user: b.user,
                        subids,
                        action: crate::sandbox::job::Action::Exec,
                        confinement: confinement.clone(),
                        secrets: step_secrets(b, &opts.secrets)?,
                        ca_bundle: ca_bundle.clone(),
                    };
                    let log = logs.join(format!("{id}.log"));
                    let started = std::time::Instant::now();
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
                    drop(held);
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
                    if !opts.quiet {
                        eprintln!("==> {id}: done in {:.2} s", started.elapsed().as_secs_f64());
                    }
                    if let Some(ip) = inplace.as_mut() {
                        // Nothing to capture (see `inplace`); `/` changed.
                        ip.rule_ran();
                        continue;
                    }
                    let copied = copy_marker.as_ref().is_some_and(|m| m.exists());
                    if copied != copy_expected {
                        tracing::warn!(
                        "{id}: overlay could not be mounted, so this build ran on a copy; its rules are not cached (set {} to cache copy builds)",
                        crate::sandbox::NO_OVERLAY_ENV
                    );
                        continue;
                    }
                    let out_json = state.join(format!("{id}.capture.json"));
                    let job = capture::CaptureJob {
                        changes: base::changes_dir(&root),
                        snapshot: snapshot.clone(),
                        lowers: base.lower.clone().into_iter().collect(),
                        copy_mode: copy_expected,
                        cache_layout: cache_layout.clone(),
                        out: out_json.clone(),
                    };
                    let (planner, in_ns) = (&planner, &in_ns);
                    captures.push(scope.spawn(move || -> Result<()> {
                        in_ns(crate::sandbox::job::Action::Capture(Box::new(job)), &id)
                            .with_context(|| format!("{id}: caching its changes"))?;
                        let c: capture::Captured =
                            serde_json::from_slice(&std::fs::read(&out_json)?)?;
                        let rec = Record::new(RecordKind::Rule, &id, c.descriptor, c.diff_id);
                        planner.sc.store(&key.key, &rec)?;
                        planner.sc.remember_parts(&plan.dir, &id, key);
                        Ok(())
                    }));
                }
                Step::Tapeout(t) => {
                    let stage = state.join("tapeout").join(&t.name);
                    std::fs::create_dir_all(state.join("tapeout"))?;
                    let status = statuses[index].clone();
                    match status {
                        None => {
                            planner.say(&id, "not needed", "the images that use it are cached");
                            continue;
                        }
                        Some(Status::Hit(r)) if !ran_rule => {
                            restore_stage(&planner.sc, &r, &stage)?;
                            explain.insert(t.name.clone(), explain_of(&r));
                            sboms.extend(r.sbom.clone().map(|a| (t.name.clone(), a)));
                            planner.sc.remember_parts(&plan.dir, &id, key);
                            planner.say(&id, "cached", "");
                            continue;
                        }
                        Some(Status::Hit(_)) => planner.say(&id, "run", "an earlier rule ran"),
                        Some(Status::Miss(why)) => planner.say(&id, "run", &why),
                    }
                    if !pending.is_empty() {
                        join_all(&mut captures)?;
                        flush(&mut pending)?;
                    }
                    let copy_mode = copy_marker.as_ref().is_some_and(|m| m.exists());
                    let final_step = last_build.is_none_or(|l| index > l);
                    // Inside the build's user namespace: what a step gave to
                    // other ids is readable there, and owners are the image's.
                    let explain_out = state
                        .join("tapeout")
                        .join(format!("{}.explain.json", t.name));
                    let in_place_changes = match inplace.as_mut() {
                        Some(ip) => Some(
                            ip.changes(state)
                                .with_context(|| format!("{id}: what the rules changed in /"))?,
                        ),
                        None => None,
                    };
                    let job = crate::sandbox::job::TapeoutJob {
                        rule: t.clone(),
                        changes: view.changes.clone(),
                        lowers: view.lowers.clone(),
                        host_dirs: view.host_dirs.clone(),
                        copy_mode,
                        stage: stage.clone(),
                        final_step,
                        explain_out: explain_out.clone(),
                        in_place: in_place_changes,
                    };
                    let started = std::time::Instant::now();
                    in_ns(crate::sandbox::job::Action::Tapeout(Box::new(job)), &id)?;
                    if !opts.quiet {
                        eprintln!("==> {id}: done in {:.2} s", started.elapsed().as_secs_f64());
                    }
                    let ex: BTreeMap<String, String> =
                        serde_json::from_slice(&std::fs::read(&explain_out)?)?;
                    // --sbom: the packages the paths come from, read from
                    // the builder while it holds what the rules installed.
                    let sbom = if opts.sbom {
                        let a = crate::sbom::build::of_tapeout(&view, t, &stage, ex.keys())
                            .with_context(|| format!("{id}: --sbom"))?;
                        sboms.insert(t.name.clone(), a.clone());
                        Some(a)
                    } else {
                        None
                    };
                    let (planner, ex2) = (&planner, ex.clone());
                    background.push(scope.spawn(move || -> Result<()> {
                        let mut rec = store_stage(&planner.sc, &id, &stage, ex2)
                            .with_context(|| format!("{id}: caching its selection"))?;
                        rec.sbom = sbom;
                        planner.sc.store(&key.key, &rec)?;
                        planner.sc.remember_parts(&plan.dir, &id, key);
                        Ok(())
                    }));
                    explain.insert(
                        t.name.clone(),
                        ex.into_iter().map(|(p, w)| (PathBuf::from(p), w)).collect(),
                    );
                }
            }
        }

        // The builder is done with: remove it while the images are made.
        join_all(&mut captures)?;
        if !opts.keep_builder {
            let builder = state.join("builder");
            background.push(
                scope.spawn(move || {
                    crate::sandbox::remove_tree(&builder).map_err(anyhow::Error::from)
                }),
            );
        }

        // 5. The images and pods.
        let layout = Layout::open_or_create(&opts.output)?;
        let mut built = Vec::new();
        let mut descriptors: BTreeMap<String, oci_spec::image::Descriptor> = BTreeMap::new();
        let mut used: Vec<Digest> = keys.iter().map(|k| k.key.clone()).collect();
        for img in planned {
            let name = img.spec.name.clone();
            let (digest, lines) = assemble(&img, &layout, state, opts, &planner, &explain)?;
            used.extend(img.groups.iter().map(|g| g.key.key.clone()));
            descriptors.insert(name.clone(), layout.resolve(Some(&img.spec.tag))?);
            if opts.sbom {
                let parts: Vec<&crate::sbom::Attribution> = img
                    .spec
                    .tapeouts
                    .iter()
                    .filter_map(|t| sboms.get(t))
                    .collect();
                crate::sbom::build::attach(
                    &layout,
                    &name,
                    &descriptors[&name],
                    &parts,
                    opts.epoch,
                )?;
            }
            if opts.explain {
                for (p, why) in lines {
                    println!("{name}\t{p}\t{why}");
                }
            }
            built.push(Built {
                name,
                tag: img.spec.tag.clone(),
                digest,
                pod: false,
            });
        }
        for p in pods {
            if !opts.quiet {
                eprintln!("==> pod.{}", p.name);
            }
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
            let d = crate::pod::bundle::write(
                &layout,
                &input,
                state,
                &shipyard_image::transport::defaults(),
            )
            .with_context(|| format!("writing pod {}", p.name))?;
            built.push(Built {
                name: p.name.clone(),
                tag: format!("{}:{}", p.name, p.version),
                digest: d.digest().to_string(),
                pod: true,
            });
        }
        join_all(&mut background)?;
        if let Some(to) = &opts.cache.to {
            let n = remote::export(&planner.sc, to, &used)
                .with_context(|| format!("--cache-to {to}"))?;
            if !opts.quiet {
                eprintln!("cache: {n} entries in {to}");
            }
        }
        Ok(built)
    })
}

/// The environment a rule runs with (part of its cache key).
/// The secrets a rule names, from those the build was given.
fn step_secrets(
    b: &crate::project::BuildRule,
    given: &[crate::sandbox::job::Secret],
) -> Result<Vec<crate::sandbox::job::Secret>> {
    b.secrets
        .iter()
        .map(|name| {
            given
                .iter()
                .find(|s| &s.name == name)
                .cloned()
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "build.{} needs the secret {name:?}: pass --secret id={name},src=FILE \
                     (or id={name},env=VARIABLE)",
                        b.name
                    )
                })
        })
        .collect()
}

fn rule_env(plan: &Plan, b: &crate::project::BuildRule, epoch: i64) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![("HOME".into(), "/root".into())];
    env.extend(plan.env.iter().cloned());
    env.extend(b.env.iter().cloned());
    env.push(("SOURCE_DATE_EPOCH".into(), epoch.to_string()));
    env
}

fn explain_of(r: &Record) -> crate::tapeout::Explain {
    r.explain
        .iter()
        .map(|(p, w)| (PathBuf::from(p), w.clone()))
        .collect()
}

/// Stores a staged tapeout (with its ownership record) as a layer in the
/// cache.
fn store_stage(
    sc: &StepCache,
    step: &str,
    stage: &Path,
    explain: BTreeMap<String, String>,
) -> Result<Record> {
    std::fs::create_dir_all(stage)?;
    let walked = walk_with(stage, &WalkOptions::new(Hashing::None))?;
    let d = shipyard_image::rootfs::diff::diff(&walked, &Manifest::default())?;
    let out = shipyard_image::layer::write_layer(
        &sc.cache.layout,
        &d.changes,
        stage,
        CACHE_COMPRESSION,
        Some(CACHE_LEVEL),
        &TarOptions { clamp_mtime: None },
    )?;
    let mut rec = Record::new(
        RecordKind::Tapeout,
        step,
        out.descriptor,
        out.diff_id.to_string(),
    );
    rec.explain = explain;
    Ok(rec)
}

/// Puts a cached tapeout back where the images and pods read it.
fn restore_stage(sc: &StepCache, r: &Record, stage: &Path) -> Result<()> {
    if stage.exists() {
        crate::sandbox::remove_tree(stage)?;
    }
    shipyard_image::layer::extract::unpack_layers(
        &sc.cache.layout,
        &[(r.layer.clone(), r.diff_id.clone())],
        stage,
    )
    .with_context(|| format!("restoring cached {}", r.step))?;
    Ok(())
}

/// Runtime base + tapeout layer(s) + config, written and tagged. Layers
/// the cache holds are linked from it; the others are made from the
/// staged tapeouts and stored. Returns the digest and the explanation.
fn assemble(
    img: &Planned,
    layout: &Layout,
    state: &Path,
    opts: &BuildOptions,
    planner: &Planner,
    explain: &BTreeMap<String, crate::tapeout::Explain>,
) -> Result<(String, Vec<(String, String)>)> {
    let spec = &img.spec;
    let (mut config, mut layers) = match &img.base {
        None => (empty_config(), Vec::new()),
        Some((blayout, bimage)) => {
            bimage.copy_layers(blayout, layout)?;
            (bimage.config.clone(), bimage.manifest.layers().clone())
        }
    };
    let mut base_manifest: Option<Manifest> = None;
    let mut lines = Vec::new();
    for (i, group) in img.groups.iter().enumerate() {
        let step = format!("image.{}#{i}", spec.name);
        let rec = match &group.status {
            Status::Hit(r) => {
                let d = shipyard_image::oci::media::digest_of(&r.layer)?;
                layout.link_blob_from(&planner.sc.cache.layout, &d)?;
                planner.say(
                    &format!("image.{} layer {}", spec.name, i + 1),
                    "cached",
                    "",
                );
                (**r).clone()
            }
            Status::Miss(why) => {
                planner.say(&format!("image.{} layer {}", spec.name, i + 1), "make", why);
                if base_manifest.is_none() {
                    base_manifest = Some(match &img.base {
                        None => Manifest::default(),
                        Some((blayout, bimage)) => {
                            shipyard_image::layer::from_image::manifest_of_image(blayout, bimage)
                                .with_context(|| format!("reading runtime base {}", spec.from))?
                        }
                    });
                }
                let rec = make_layer(
                    &group.tapeouts,
                    &format!("{}-{i}", spec.name),
                    base_manifest.as_ref().unwrap_or(&Manifest::default()),
                    layout,
                    state,
                    opts,
                    explain,
                )?;
                let d = shipyard_image::oci::media::digest_of(&rec.layer)?;
                planner.sc.cache.layout.link_blob_from(layout, &d)?;
                planner.sc.store(
                    &group.key.key,
                    &Record {
                        step: step.clone(),
                        ..rec.clone()
                    },
                )?;
                rec
            }
        };
        planner
            .sc
            .remember_parts(&planner.plan.dir, &step, &group.key);
        lines.extend(rec.explain.clone());
        let by: Vec<String> = group
            .tapeouts
            .iter()
            .map(|t| format!("tapeout.{t}"))
            .collect();
        let diff_id: Digest = rec.diff_id.parse()?;
        append_layer(
            &mut config,
            &diff_id,
            &rfc3339(opts.epoch),
            &format!("shipyard build: {}", by.join(" ")),
        );
        layers.push(rec.layer.clone());
    }
    apply_config(&mut config, spec);
    let mut desc = write_image(layout, &config, layers)?;
    if !spec.annotations.is_empty() {
        desc = annotate(layout, &desc, &spec.annotations)?;
    }
    layout.tag(&spec.tag, &desc)?;
    Ok((desc.digest().to_string(), lines))
}

/// One image layer from staged tapeouts, diffed against the runtime base.
fn make_layer(
    group: &[String],
    merged_name: &str,
    base_manifest: &Manifest,
    layout: &Layout,
    state: &Path,
    opts: &BuildOptions,
    explain: &BTreeMap<String, crate::tapeout::Explain>,
) -> Result<Record> {
    let tree = if group.len() == 1 {
        state.join("tapeout").join(&group[0])
    } else {
        let merged = state.join("image").join(merged_name);
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
    let mut tree = tree;
    let mut walked = walk_with(&tree, &WalkOptions::new(Hashing::None))?;
    // Onto a base with symlinks (usrmerge), each path goes where the base
    // resolves it, so the layer never replaces the base's /lib -> usr/lib.
    let mut moves: BTreeMap<RelPath, crate::tapeout::onto::Move> = BTreeMap::new();
    if crate::tapeout::onto::needed(base_manifest) {
        let plan = crate::tapeout::onto::plan(&walked.manifest, base_manifest);
        let placed = state.join("image").join(format!("{merged_name}.onto"));
        if placed.exists() {
            crate::sandbox::remove_tree(&placed)?;
        }
        crate::tapeout::onto::materialize(&tree, &walked.manifest, base_manifest, &plan, &placed)
            .with_context(|| format!("placing {} onto the runtime base", tree.display()))?;
        walked = walk_with(&placed, &WalkOptions::new(Hashing::None))?;
        tree = placed;
        moves = plan.into_iter().map(|m| (m.from.clone(), m)).collect();
    }
    let mut d = shipyard_image::rootfs::diff::diff(&walked, base_manifest)?;
    // A tapeout only adds: what the runtime base has and the builder
    // did not select stays.
    d.changes.changes.retain(|c| matches!(c, Change::Put(_)));
    let out = shipyard_image::layer::write_layer(
        layout,
        &d.changes,
        &tree,
        opts.compression,
        opts.level,
        &TarOptions {
            clamp_mtime: Some(opts.epoch),
        },
    )?;
    let mut rec = Record::new(
        RecordKind::Layer,
        merged_name,
        out.descriptor,
        out.diff_id.to_string(),
    );
    let in_layer: std::collections::HashSet<&RelPath> = d
        .changes
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Put(e) => Some(&e.path),
            _ => None,
        })
        .collect();
    for t in group {
        for (p, why) in explain.get(t).into_iter().flatten() {
            let from = RelPath::new(
                p.strip_prefix("/")
                    .unwrap_or(p)
                    .as_os_str()
                    .as_encoded_bytes()
                    .to_vec(),
            );
            let mv = moves.get(&from);
            let Some(to) = mv.map_or(Some(&from), |m| m.to.as_ref()) else {
                let note = mv.and_then(|m| m.note.clone()).unwrap_or_default();
                rec.explain
                    .insert(p.display().to_string(), format!("{why}; {note}"));
                continue;
            };
            let base_has = base_manifest.get(to).map(|e| e.kind);
            let mut line = why.clone();
            if let Some(note) = mv.and_then(|m| m.note.as_ref()) {
                line = format!("{line}; {note}");
            }
            match (in_layer.contains(to), base_has) {
                (false, Some(_)) => {
                    line = format!("{line}; left out: the runtime base has the same")
                }
                (true, Some(k)) if k != shipyard_image::rootfs::entry::Kind::Dir => {
                    line = format!("{line}; shadows the runtime base's {to}")
                }
                _ => {}
            }
            rec.explain.insert(to.to_string(), line);
        }
    }
    Ok(rec)
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
    let d = shipyard_image::oci::media::digest_of(desc)?;
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
        let rec = shipyard_image::rootfs::walk::ownership_record_path(s);
        if let Ok(f) = std::fs::File::open(&rec) {
            let m = Manifest::parse(std::io::BufReader::new(f), &rec.display().to_string())?;
            for (_, e) in m.entries {
                record.insert(e);
            }
        }
    }
    let f = std::fs::File::create(shipyard_image::rootfs::walk::ownership_record_path(into))?;
    record.write_to(std::io::BufWriter::new(f))?;
    Ok(())
}

/// Removes a builder state directory without making the user wait for
/// the filesystem: it is renamed into the cache's `trash/` and a detached
/// `shipyard __cleanup` deletes it (freeing a big rule's output can take
/// longer than the rest of a cached build). Where that cannot be done
/// (another filesystem, no cache), it is removed here. `cache prune`
/// empties what a killed cleanup left.
fn dispose(state: &Path) {
    let detached = (|| -> Option<()> {
        let trash = base::cache_dir().ok()?.join("trash");
        std::fs::create_dir_all(&trash).ok()?;
        let dest = trash.join(state.file_name()?);
        std::fs::rename(state, &dest).ok()?;
        let spawned = spawn_cleanup(&dest);
        if spawned.is_err() {
            remove_or_warn(&dest);
        }
        Some(())
    })();
    if detached.is_none() {
        remove_or_warn(state);
    }
}

fn spawn_cleanup(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(crate::sandbox::helper_binary())
        .arg("__cleanup")
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map(|_| ())
}

/// Removes a directory a build left (see [`dispose`]), logging failures.
pub fn remove_or_warn(dir: &Path) {
    if let Err(e) = crate::sandbox::remove_tree(dir) {
        tracing::warn!("could not remove the builder state {}: {e}", dir.display());
    }
}

/// Copies a failed rule's log to `$XDG_CACHE_HOME/shipyard/logs/RULE.log`.
fn keep_log(log: &Path, rule: &str) -> Option<PathBuf> {
    let dir = base::cache_dir().ok()?.join("logs");
    std::fs::create_dir_all(&dir).ok()?;
    let dest = dir.join(format!("{rule}.log"));
    std::fs::copy(log, &dest).ok()?;
    Some(dest)
}
