//! The executor: carries a [`Schedule`] out. It makes the builder, runs
//! the rules that must run, puts cached rules back into the builder,
//! captures what each rule changed into the step cache, runs the tapeouts
//! and stores their selections, and (in [`super::images`]) assembles the
//! images and pods.
//!
//! Storing what a step made overlaps with what comes next: a capture
//! (it reads the builder) with the tapeouts after it, a tapeout's storage
//! (it reads the stage) with everything; the builder is only written again
//! once its captures are done.

use super::error::{BuildError, Doing, RuleFailed};
use super::events::{Event, Events};
use super::inplace::InPlace;
use super::key::{self, SourceContent, StepKey};
use super::schedule::{BuilderFacts, Facts, Lookup, Schedule, Selection, StepPlan};
use super::stepcache::{Record, RecordKind, StepCache};
use super::{base, capture, mounts, remote, restore, BuildOptions, Built};
use crate::project::{BuildRule, Builder, Plan, Step, TapeoutRule};
use crate::sandbox::isolation::{Confinement, IdMap, Level};
use crate::sandbox::job::{Action, Bind, InNamespace, Network, NsJob, SubIds};
use crate::sandbox::job::{Root, StepSpec};
use crate::sandbox::{detect_subids, host_dirs, RunOptions};
use crate::tapeout::job::TapeoutJob;
use crate::tapeout::view::BuilderView;
use oci_spec::image::Descriptor;
use shipyard_image::oci::image::Image;
use shipyard_image::oci::layout::Layout;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Instant;

type Result<T, E = BuildError> = std::result::Result<T, E>;

/// A runtime base, opened.
pub(crate) type RuntimeBase = Option<(Layout, Image)>;

/// The step cache, with the shared cache (`--cache-from`) behind it.
pub(crate) struct Cache {
    pub sc: StepCache,
    remote: Option<remote::Remote>,
    /// The project's directory: what a step was last built with is
    /// remembered per project.
    spec_dir: PathBuf,
}

impl Lookup for Cache {
    /// Locally, then in the `--cache-from` registry.
    fn lookup(&self, key: &StepKey) -> Option<Record> {
        if let Some(r) = self.sc.lookup(&key.key) {
            return Some(r);
        }
        match self.remote.as_ref()?.fetch(&self.sc, &key.key) {
            Ok(found) => found,
            Err(e) => {
                let e = super::error::chain_text(&e);
                tracing::warn!("cache lookup in the registry failed: {e}");
                None
            }
        }
    }

    fn probe(&self, key: &StepKey) -> bool {
        self.sc.has(&key.key)
            || self
                .remote
                .as_ref()
                .is_some_and(|r| r.has(&key.key).unwrap_or(false))
    }

    fn last_parts(&self, step: &str) -> Option<BTreeMap<String, String>> {
        self.sc.last_parts(&self.spec_dir, step)
    }

    fn source(&self, digest: &str) -> Option<SourceContent> {
        self.sc.source(digest)
    }
}

/// Background jobs of the step loop: captures (they read the builder)
/// and storage (it reads stages).
#[derive(Default)]
struct Jobs<'s> {
    captures: Vec<ScopedJoinHandle<'s, Result<()>>>,
    background: Vec<ScopedJoinHandle<'s, Result<()>>>,
}

fn join_all(jobs: &mut Vec<ScopedJoinHandle<'_, Result<()>>>) -> Result<()> {
    for h in jobs.drain(..) {
        h.join().map_err(|_| BuildError::Panicked)??;
    }
    Ok(())
}

/// Where a builder's step loop stands: cached rules waiting to be
/// restored and the tapeouts' explanations so far.
#[derive(Default)]
pub(super) struct Progress {
    pending: Vec<(Descriptor, String)>,
    /// The base's owners were made real in the builder (`owners`).
    owned: bool,
    explain: BTreeMap<String, crate::tapeout::Explain>,
    /// `--sbom`: what each tapeout's paths come from.
    sboms: BTreeMap<String, crate::sbom::Attribution>,
}

/// A build in progress: its builders, its cache and how its steps are
/// confined.
pub(crate) struct Executor<'a> {
    pub(super) plan: &'a Plan,
    pub(super) opts: &'a BuildOptions,
    pub(super) events: &'a dyn Events,
    /// The build's state directory (builders, logs, stages).
    pub(super) state: &'a Path,
    pub(super) cache: Cache,
    confinement: Confinement,
    /// The subordinate ids steps are mapped with, if a range is mapped.
    subids: Option<SubIds>,
    /// A single id is mapped although a range was wanted.
    single_ids: bool,
    mounts: mounts::MountStore,
    logs: PathBuf,
    /// One per builder of the plan, in its order.
    chains: Vec<Chain>,
}

/// One builder, made ready: its filesystem and how its rules see it.
pub(crate) struct Chain {
    /// Its index in `plan.builders`.
    index: usize,
    /// Its state directory (overlay upper and work dirs, or its copy).
    dir: PathBuf,
    base: base::Base,
    /// How the builder's filesystem is made (a part of every key).
    mode: &'static str,
    /// Where a builder on a copy (no overlay) marks that the copy is made.
    copy_marker: Option<PathBuf>,
    /// The build runs on a copy on purpose, and caches it as such.
    copy_expected: bool,
    ca_bundle: Option<PathBuf>,
    binds: Vec<Bind>,
    /// The builder as tapeouts see it.
    view: BuilderView,
    /// The changes directory's manifest after the last capture or restore.
    snapshot: PathBuf,
}

/// Where builder `b` keeps its state: `builder/` for the single unnamed
/// one (as `--keep-builder` has always said), `builders/NAME/` otherwise.
/// Copies the context path `from` to `to`, leaving out `exclude` (paths
/// under `from`); symlinks are copied as links.
fn copy_context(from: &Path, to: &Path, exclude: &[PathBuf]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(p) = to.parent() {
        std::fs::create_dir_all(p)?;
    }
    let mut walk = walkdir::WalkDir::new(from).sort_by_file_name().into_iter();
    while let Some(e) = walk.next() {
        let e = e.map_err(std::io::Error::other)?;
        let rel = e.path().strip_prefix(from).unwrap_or(Path::new(""));
        if exclude.iter().any(|x| rel.starts_with(x)) && !rel.as_os_str().is_empty() {
            if e.file_type().is_dir() {
                walk.skip_current_dir();
            }
            continue;
        }
        let dst = if rel.as_os_str().is_empty() {
            to.to_path_buf()
        } else {
            to.join(rel)
        };
        let ft = e.file_type();
        if ft.is_dir() {
            std::fs::create_dir_all(&dst)?;
            let mode = e
                .metadata()
                .map_err(std::io::Error::other)?
                .permissions()
                .mode();
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode | 0o700))?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path())?, &dst)?;
        } else if ft.is_file() {
            std::fs::copy(e.path(), &dst)?;
        }
    }
    Ok(())
}

pub(super) fn builder_dir(state: &Path, plan: &Plan, b: usize) -> PathBuf {
    let name = &plan.builders[b].name;
    if name.is_empty() {
        state.join("builder")
    } else {
        state.join("builders").join(name)
    }
}

impl<'a> Executor<'a> {
    /// Chooses the isolation level, makes the builders ready and checks
    /// what every rule needs (its secrets) before anything runs.
    pub fn new(
        plan: &'a Plan,
        opts: &'a BuildOptions,
        state: &'a Path,
        events: &'a dyn Events,
    ) -> Result<Self> {
        // The cache first: holding it keeps `cache prune` off the base
        // this build unpacks there.
        let sc = StepCache::open().doing(|| "opening the step cache".into())?;
        // The level before the base: a builder this level cannot use is
        // refused before it is pulled or unpacked.
        let detected = detect_subids();
        let all_host = (0..plan.builders.len()).all(|b| plan.root_from(b) == "host");
        let confinement = crate::sandbox::choose_isolation(opts.isolation, detected, all_host)?;
        events.event(Event::Isolation(&confinement.summary()));
        for b in 0..plan.builders.len() {
            if let Some(why) = confinement.unusable_builder(plan.root_from(b)) {
                return Err(BuildError::UnusableBuilder(why));
            }
        }
        let in_place = confinement.level == Level::None;
        if in_place && plan.builders.len() > 1 {
            return Err(BuildError::SeveralInPlace);
        }
        let logs = state.join("logs");
        std::fs::create_dir_all(&logs).doing(|| format!("creating {}", logs.display()))?;
        let mounts = mounts::MountStore::open()?;
        for (_, step) in plan.all_steps() {
            if let Step::Build(b) = step {
                super::step_secrets(b, &opts.secrets)?;
            }
        }
        let remote = match &opts.cache.from {
            Some(r) => Some(
                remote::Remote::new(r, &opts.transport).doing(|| format!("--cache-from {r}"))?,
            ),
            None => None,
        };
        let cache = Cache {
            sc,
            remote,
            spec_dir: plan.dir.clone(),
        };
        // A single-id map cannot give files to other ids: don't ask it to
        // map a range in the tapeout's view either.
        let wanted = detected.is_some() || nix::unistd::geteuid().is_root();
        let subids = detected.filter(|_| confinement.map == IdMap::Range);
        let single_ids = confinement.map == IdMap::Single && wanted;
        let mut chains = Vec::new();
        for (index, builder) in plan.builders.iter().enumerate() {
            let dir = builder_dir(state, plan, index);
            let base = base::prepare(plan.root_from(index), &dir, &opts.transport)?;
            let (copy_marker, copy_expected, mode) = filesystem(&base.root, &confinement, in_place);
            let host = plan.root_from(index) == "host";
            let snapshot = state
                .join("snapshots")
                .join(format!("{}.manifest", builder.name));
            std::fs::create_dir_all(state.join("snapshots"))
                .doing(|| format!("creating {}", state.display()))?;
            chains.push(Chain {
                index,
                dir,
                view: view(host, &base, subids, in_place),
                base,
                mode,
                copy_marker,
                copy_expected,
                ca_bundle: ca_bundle(builder),
                binds: binds(builder),
                snapshot,
            });
        }
        Ok(Executor {
            plan,
            opts,
            events,
            state,
            cache,
            subids,
            single_ids,
            mounts,
            logs,
            chains,
            confinement,
        })
    }

    fn in_place(&self) -> bool {
        self.confinement.level == Level::None
    }

    /// What the keys depend on besides the plan, and the selected
    /// images' runtime bases, opened.
    pub fn facts(&self, selection: &Selection) -> Result<(Facts, Vec<RuntimeBase>)> {
        let mut builders = Vec::new();
        for ch in &self.chains {
            let mut sources = BTreeMap::new();
            for s in &self.plan.builders[ch.index].sources {
                let stat = self.cache.sc.stat_cache(&s.host);
                let c = key::source_content(&s.host, Some(&stat))?;
                self.cache.sc.keep_source(&c);
                let name = format!("source:{}", s.target.display());
                sources.insert(name, c.digest.to_string());
            }
            builders.push(BuilderFacts {
                base: ch.base.identity.clone(),
                mode: ch.mode.to_string(),
                single_ids: self.single_ids,
                sources,
                copies: self.copied_content(ch)?,
                binds: self.bound_content(ch)?,
            });
        }
        let mut bases = Vec::new();
        let mut runtime_bases = BTreeMap::new();
        for &i in &selection.images {
            let img = &self.plan.images[i];
            let base = if img.from == "scratch" {
                None
            } else {
                Some(base::open_image(&img.from, &self.opts.transport)?)
            };
            let id = base
                .as_ref()
                .map_or("scratch".to_string(), |(_, b)| b.digest.to_string());
            runtime_bases.insert(img.name.clone(), id);
            bases.push(base);
        }
        let facts = Facts {
            builders,
            runtime_bases,
        };
        Ok((facts, bases))
    }

    /// For each copying rule of a builder, the digest of the host files
    /// it copies (what its key holds instead of their paths).
    fn copied_content(&self, ch: &Chain) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for step in &self.plan.builders[ch.index].steps {
            let Step::Build(b) = step else { continue };
            let Some(c) = &b.copy else { continue };
            let mut parts = Vec::new();
            for item in &c.items {
                if let crate::project::CopyFrom::Host(p) = &item.from {
                    let stat = self.cache.sc.stat_cache(p);
                    let content = key::source_content(p, Some(&stat))?;
                    parts.push((item.to.clone(), content.digest.to_string()));
                }
            }
            out.insert(step.id(), key::digest_json(&parts)?);
        }
        Ok(out)
    }

    /// For each rule of a builder that mounts the build context, the
    /// digest of what it mounts (a change elsewhere in the context does
    /// not touch it).
    fn bound_content(&self, ch: &Chain) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for step in &self.plan.builders[ch.index].steps {
            let Step::Build(b) = step else { continue };
            if b.binds.is_empty() {
                continue;
            }
            let mut parts = Vec::new();
            for c in &b.binds {
                let stat = self.cache.sc.stat_cache(&c.host);
                let content = key::source_content(&c.host, Some(&stat))?;
                parts.push((c.target.clone(), content.digest.to_string()));
            }
            out.insert(step.id(), key::digest_json(&parts)?);
        }
        Ok(out)
    }

    /// Runs the schedule: the builders, then the images and pods, then
    /// the export to `--cache-to`.
    pub fn run(&self, schedule: &Schedule, bases: Vec<RuntimeBase>) -> Result<Vec<Built>> {
        let mut inplace = self.in_place_tracker(schedule)?;
        let (explain, sboms) = self.run_builders(schedule, &mut inplace)?;
        std::thread::scope(|scope| -> Result<Vec<Built>> {
            let mut background = Vec::new();
            // The builders are done with: remove them while the images
            // are made.
            if !self.opts.keep_builder {
                for ch in &self.chains {
                    let dir = ch.dir.clone();
                    background.push(scope.spawn(move || {
                        crate::sandbox::remove_tree(&dir).map_err(BuildError::from)
                    }));
                }
            }
            let out = &self.opts.output;
            let layout = Layout::open_or_create(out)
                .doing(|| format!("opening the output layout {}", out.display()))?;
            let (mut built, descriptors) =
                self.write_images(schedule, bases, &layout, &explain, &sboms)?;
            built.extend(self.write_pods(schedule, &layout, &descriptors)?);
            join_all(&mut background)?;
            self.export_cache(schedule)?;
            Ok(built)
        })
    }

    /// Runs every builder, each once those it depends on are done; those
    /// ready together run at the same time.
    #[allow(clippy::type_complexity)]
    fn run_builders(
        &self,
        schedule: &Schedule,
        inplace: &mut Option<InPlace>,
    ) -> Result<(
        BTreeMap<String, crate::tapeout::Explain>,
        BTreeMap<String, crate::sbom::Attribution>,
    )> {
        let n = self.chains.len();
        let mut done = vec![false; n];
        let mut explain = BTreeMap::new();
        let mut sboms = BTreeMap::new();
        while done.iter().any(|d| !d) {
            let ready: Vec<usize> = (0..n)
                .filter(|&b| !done[b] && self.plan.builders[b].deps.iter().all(|&d| done[d]))
                .collect();
            if ready.is_empty() {
                // The plan orders builders after their dependencies.
                return Err(BuildError::Panicked);
            }
            let results: Vec<Result<Progress>> = if ready.len() == 1 {
                vec![self.run_builder(&self.chains[ready[0]], schedule, inplace)]
            } else {
                std::thread::scope(|scope| {
                    let handles: Vec<_> = ready
                        .iter()
                        .map(|&b| {
                            let ch = &self.chains[b];
                            scope.spawn(move || self.run_builder(ch, schedule, &mut None))
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().map_err(|_| BuildError::Panicked)?)
                        .collect()
                })
            };
            for (b, r) in ready.iter().zip(results) {
                let p = r?;
                explain.extend(p.explain);
                sboms.extend(p.sboms);
                done[*b] = true;
            }
        }
        Ok((explain, sboms))
    }

    /// Runs one builder's steps, and waits for what they store: a builder
    /// that starts from its state, or an image made of it, reads its
    /// rules' captured changes from the cache.
    fn run_builder(
        &self,
        ch: &Chain,
        schedule: &Schedule,
        inplace: &mut Option<InPlace>,
    ) -> Result<Progress> {
        std::thread::scope(|scope| {
            let mut jobs = Jobs::default();
            let progress = self.run_steps(ch, scope, schedule, inplace, &mut jobs)?;
            join_all(&mut jobs.captures)?;
            join_all(&mut jobs.background)?;
            Ok(progress)
        })
    }

    /// At isolation none: what tells what the rules changed in `/`, with
    /// its first snapshot taken before the first rule.
    fn in_place_tracker(&self, schedule: &Schedule) -> Result<Option<InPlace>> {
        if !self.in_place() {
            return Ok(None);
        }
        let builder = &self.plan.builders[0];
        let mut ip = in_place_tracker(builder, self.state, &self.opts.output);
        if builder.steps.iter().any(|s| matches!(s, Step::Build(_))) {
            tracing::warn!(
                "isolation none: rules run in place, in this container's own /, and are not \
                 cached (there is no overlay upper dir holding what they change); tapeouts \
                 and image layers still are"
            );
        }
        if schedule.needs_builder() {
            ip.snapshot()?;
        }
        Ok(Some(ip))
    }

    pub(super) fn say(&self, step: &str, status: &str, why: &str) {
        self.events.event(Event::Step { step, status, why });
    }

    fn remember(&self, step: &str, key: &StepKey) {
        self.cache.sc.remember_parts(&self.plan.dir, step, key);
    }

    pub(super) fn stage(&self, tapeout: &str) -> PathBuf {
        self.state.join("tapeout").join(tapeout)
    }

    /// Every step of builder `ch`, as the schedule says; returns the
    /// tapeouts' explanations and (`--sbom`) what their paths come from.
    fn run_steps<'s>(
        &'s self,
        ch: &'s Chain,
        scope: &'s Scope<'s, '_>,
        schedule: &'s Schedule,
        inplace: &mut Option<InPlace>,
        jobs: &mut Jobs<'s>,
    ) -> Result<Progress> {
        let mut progress = Progress::default();
        let builder = &self.plan.builders[ch.index];
        let bs = &schedule.builders[ch.index];
        let label = builder.label();
        if let (Some(parent), Some(_)) = (builder.parent, bs.last_needed) {
            progress.pending = self.parent_state(schedule, &builder.name, parent)?;
        }
        for (index, step) in builder.steps.iter().enumerate() {
            let id = step.id();
            let shown = format!("{id}{label}");
            let key = &bs.keys[index];
            let todo = &bs.steps[index];
            match (step, todo) {
                (Step::Tapeout(t), StepPlan::RestoreSelection(r)) => {
                    self.restore_selection(r, &self.stage(&t.name))?;
                    progress.explain.insert(t.name.clone(), explain_of(r));
                    let sbom = r.sbom.clone().map(|a| (t.name.clone(), a));
                    progress.sboms.extend(sbom);
                    self.remember(&id, key);
                    self.say(&shown, todo.word(), todo.why());
                }
                (_, StepPlan::Cached) => {
                    self.remember(&id, key);
                    self.say(&shown, todo.word(), todo.why());
                }
                (_, StepPlan::NotNeeded) => {
                    if bs.last_needed.is_none_or(|l| index > l) {
                        self.remember(&id, key);
                    }
                    self.say(&shown, todo.word(), todo.why());
                }
                (_, StepPlan::Restore(r)) => {
                    self.say(&shown, todo.word(), todo.why());
                    self.remember(&id, key);
                    progress.pending.push((r.layer.clone(), r.diff_id.clone()));
                }
                (Step::Build(b), StepPlan::Run(why)) => {
                    self.say(&shown, todo.word(), why);
                    join_all(&mut jobs.captures)?;
                    if !progress.owned {
                        self.own_base_files(ch)?;
                        progress.owned = true;
                    }
                    self.restore(ch, &mut progress.pending)?;
                    self.run_rule(ch, &id, b)?;
                    if let Some(ip) = inplace.as_mut() {
                        // Nothing to capture (see `inplace`): `/` changed.
                        ip.rule_ran();
                    } else if let Some(job) = self.capture_job(ch, &id) {
                        jobs.captures
                            .push(scope.spawn(move || self.capture(ch, job, &id, key)));
                    }
                }
                (Step::Tapeout(t), StepPlan::Run(why)) => {
                    self.say(&shown, todo.word(), why);
                    if !progress.pending.is_empty() {
                        join_all(&mut jobs.captures)?;
                        self.restore(ch, &mut progress.pending)?;
                    }
                    let last_build =
                        (builder.steps.iter()).rposition(|s| matches!(s, Step::Build(_)));
                    let final_step = last_build.is_none_or(|l| index > l);
                    let ex = self.tapeout(ch, final_step, t, inplace)?;
                    // --sbom: the packages the paths come from, read from
                    // the builder while it holds what the rules installed.
                    let sbom = if self.opts.sbom {
                        let stage = self.stage(&t.name);
                        let a = crate::sbom::build::of_tapeout(&ch.view, t, &stage, ex.keys())
                            .doing(|| format!("{id}: --sbom"))?;
                        progress.sboms.insert(t.name.clone(), a.clone());
                        Some(a)
                    } else {
                        None
                    };
                    let stored = ex.clone();
                    let label = t.builder_label();
                    jobs.background.push(
                        scope.spawn(move || self.store_selection(&id, &label, stored, sbom, key)),
                    );
                    let ex = ex.into_iter().map(|(p, w)| (PathBuf::from(p), w));
                    progress.explain.insert(t.name.clone(), ex.collect());
                }
                (Step::Build(_), StepPlan::RestoreSelection(_)) => {
                    unreachable!("the schedule restores selections of tapeouts only")
                }
            }
        }
        Ok(progress)
    }

    /// The captured changes of the rules a builder's parent state is
    /// made of, oldest first, to be restored before its first step.
    fn parent_state(
        &self,
        schedule: &Schedule,
        name: &str,
        parent: crate::project::BuilderState,
    ) -> Result<Vec<(Descriptor, String)>> {
        self.plan
            .lineage(parent)
            .into_iter()
            .map(|(b, i)| {
                let key = &schedule.builders[b].keys[i];
                let rule = self.plan.builders[b].steps[i].id();
                match self.cache.lookup(key) {
                    Some(r) => Ok((r.layer, r.diff_id)),
                    None => Err(BuildError::NoState {
                        what: format!("builder {name}"),
                        rule,
                        why: self.no_state_why(),
                    }),
                }
            })
            .collect()
    }

    /// Why a rule's changes may be missing from the cache.
    pub(super) fn no_state_why(&self) -> String {
        if self.in_place() {
            super::schedule::NOT_CACHED_IN_PLACE.to_string()
        } else {
            "it ran on a copy the cache does not expect, or the cache was pruned".to_string()
        }
    }

    /// Runs shipyard's own `job` as root of the builder's user namespace.
    fn in_ns<J: InNamespace>(&self, ch: &Chain, job: &J, name: &str) -> Result<()> {
        let job = NsJob::new(job).map_err(|e| BuildError::Job {
            name: name.to_string(),
            tail: format!("cannot describe the job: {e}"),
        })?;
        let action = Action::InNamespace(job);
        let spec = StepSpec {
            root: ch.base.root.clone(),
            binds: Vec::new(),
            network: Network::None,
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            argv: Vec::new(),
            hostname: "shipyard".into(),
            user: (0, 0),
            subids: self.subids,
            action,
            confinement: self.confinement.clone(),
            secrets: Vec::new(),
            ca_bundle: None,
            tmpfs: Vec::new(),
        };
        let opts = RunOptions {
            name: name.to_string(),
            ..Default::default()
        };
        let out = crate::sandbox::run(&spec, &opts)?;
        if out.code != 0 {
            let (name, tail) = (name.to_string(), out.tail.join("\n"));
            return Err(BuildError::Job { name, tail });
        }
        Ok(())
    }

    /// Before the builder's first rule: with a subordinate id range, the
    /// base files a user owns in the image get that owner in the builder
    /// (see `owners`), so a step running as that user can write them.
    /// Not on a copy (its files are copied as the caller's) or in place.
    fn own_base_files(&self, ch: &Chain) -> Result<()> {
        let Some(base) = &ch.base.lower else {
            return Ok(());
        };
        if self.subids.is_none()
            || !matches!(ch.base.root, Root::Overlay { .. })
            || self.copy_mode(ch)
            || nix::unistd::geteuid().is_root()
        {
            return Ok(());
        }
        let changes = base::changes_dir(&ch.base.root);
        let job = super::owners::OwnersJob {
            base: base.clone(),
            changes,
            snapshot: ch.snapshot.clone(),
        };
        self.in_ns(ch, &job, "owners")
            .doing(|| "giving the base's files their owners in the builder".into())
    }

    /// Puts cached rules back into the builder, oldest first.
    fn restore(&self, ch: &Chain, pending: &mut Vec<(Descriptor, String)>) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let changes = base::changes_dir(&ch.base.root);
        std::fs::create_dir_all(&changes).doing(|| format!("creating {}", changes.display()))?;
        let job = restore::RestoreJob {
            changes,
            snapshot: ch.snapshot.clone(),
            copy_from: ch.base.lower.clone().into_iter().collect(),
            copy_marker: ch.copy_marker.clone().filter(|_| ch.copy_expected),
            cache_layout: self.cache.sc.cache.layout.root().to_path_buf(),
            layers: std::mem::take(pending),
        };
        self.in_ns(ch, &job, "restore")
            .doing(|| "restoring cached rules into the builder".into())
    }

    /// Runs one rule in the builder; a failure reports its exit code and
    /// the end of its log (kept in the cache, since the state goes away).
    fn run_rule(&self, ch: &Chain, id: &str, b: &BuildRule) -> Result<()> {
        // What a failure names: the rule, and where it was written.
        let named = match &b.origin {
            Some(o) => format!("{id} ({o})"),
            None => id.to_string(),
        };
        if let Some(c) = &b.copy {
            return self.run_copy(ch, id, &named, c);
        }
        // Cache mounts are held (locked) while the rule runs.
        let held: Vec<(PathBuf, mounts::Held)> = b
            .cache
            .iter()
            .map(|m| Ok((m.target.clone(), self.mounts.acquire(m)?)))
            .collect::<Result<_>>()?;
        let mut binds = ch.binds.clone();
        binds.extend(held.iter().map(|(target, h)| Bind {
            source: h.path.clone(),
            target: target.clone(),
            writable: true,
        }));
        // Tapeouts the rule reads, as staged, read-only.
        for m in &b.mounts {
            let rel = m.path.strip_prefix("/").unwrap_or(&m.path);
            let source = self.stage(&m.tapeout).join(rel);
            if !source.is_dir() {
                // The tapeout selected nothing there: fail as BuildKit
                // does for a missing mount source, saying which.
                return Err(BuildError::Failed {
                    what: format!(
                        "{id}: mounting tapeout.{}{} at {}",
                        m.tapeout,
                        m.path.display(),
                        m.target.display()
                    ),
                    source: format!(
                        "tapeout.{} selected no directory {}",
                        m.tapeout,
                        m.path.display()
                    )
                    .into(),
                });
            }
            binds.push(Bind {
                source,
                target: m.target.clone(),
                writable: false,
            });
        }
        // The build context, as it is or as a copy: without what the
        // ignore file excludes, or writable (its writes thrown away).
        let copies = self.state.join("binds").join(id);
        for (i, c) in b.binds.iter().enumerate() {
            let source = if c.writable || !c.exclude.is_empty() {
                let to = copies.join(i.to_string());
                copy_context(&c.host, &to, &c.exclude)
                    .doing(|| format!("{id}: copying {} for its mount", c.host.display()))?;
                to
            } else {
                c.host.clone()
            };
            binds.push(Bind {
                source,
                target: c.target.clone(),
                writable: c.writable,
            });
        }
        // A heredoc script, executed from where BuildKit puts it.
        if let Some(script) = &b.script {
            let dir = self.state.join("scripts").join(id);
            write_script(&dir, script).doing(|| format!("{id}: writing its script"))?;
            binds.push(Bind {
                source: dir,
                target: PathBuf::from(crate::project::Script::DIR),
                writable: false,
            });
        }
        let user = match &b.user_name {
            Some(name) => self.lookup_user(ch, id, name)?,
            None => b.user,
        };
        let builder = &self.plan.builders[ch.index];
        // The proxy settings are the machine's, not the build's: in the
        // step, not in its key.
        let mut env = super::schedule::rule_env(builder, b, self.opts.epoch);
        crate::sandbox::ca::add_missing(&mut env, crate::sandbox::ca::proxy_env());
        let spec = StepSpec {
            root: ch.base.root.clone(),
            binds,
            network: b.network.unwrap_or(builder.network),
            env,
            cwd: b.workdir.clone(),
            argv: (b.argv.clone())
                .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into(), b.run.clone()]),
            hostname: "shipyard".into(),
            user,
            subids: self.subids,
            action: Action::Exec,
            confinement: self.confinement.clone(),
            secrets: super::step_secrets(b, &self.opts.secrets)?,
            ca_bundle: ch.ca_bundle.clone(),
            tmpfs: b.tmpfs.clone(),
        };
        let log = self.logs.join(format!("{id}.log"));
        let opts = RunOptions {
            name: id.to_string(),
            log: Some(log.clone()),
            timeout: b.timeout.map(std::time::Duration::from_secs),
            interactive: false,
            echo: true,
        };
        let started = Instant::now();
        let out = crate::sandbox::run(&spec, &opts);
        drop(held);
        if copies.exists() {
            // What the step wrote there, as whichever ids, goes.
            crate::sandbox::remove_tree(&copies)?;
        }
        let out = out?;
        if out.code != 0 {
            let log = super::keep_log(&log, id).unwrap_or(log);
            return Err(RuleFailed {
                rule: named,
                code: out.code,
                log: log.display().to_string(),
                tail: out.tail.join("\n"),
            }
            .into());
        }
        let seconds = started.elapsed().as_secs_f64();
        let step = format!("{id}{}", builder.label());
        self.events.event(Event::Done {
            step: &step,
            seconds,
        });
        Ok(())
    }

    /// A `USER` given by name: the ids the builder's own files give it
    /// now (an earlier rule may have made the user).
    fn lookup_user(&self, ch: &Chain, id: &str, name: &str) -> Result<(u32, u32)> {
        let out = self.state.join(format!("{id}.user.json"));
        let job = super::users::LookupJob {
            changes: base::changes_dir(&ch.base.root),
            lowers: ch.base.lower.clone().into_iter().collect(),
            copy_mode: self.copy_mode(ch),
            spec: name.to_string(),
            out: out.clone(),
        };
        self.in_ns(ch, &job, &format!("{id}: USER {name}"))?;
        read_json(&out).doing(|| format!("{id}: reading {}", out.display()))
    }

    /// The builder's tree is a copy (its changes dir holds all of it).
    fn copy_mode(&self, ch: &Chain) -> bool {
        ch.copy_marker.as_ref().is_some_and(|m| m.exists()) || ch.copy_expected
    }

    /// A copying rule: its files written into the builder.
    fn run_copy(
        &self,
        ch: &Chain,
        id: &str,
        named: &str,
        c: &crate::project::CopySpec,
    ) -> Result<()> {
        let link = self.links_staged_files(ch, id);
        let items = c
            .items
            .iter()
            .map(|i| {
                let (from, content, link) = match &i.from {
                    crate::project::CopyFrom::Host(p) => (p.clone(), None, false),
                    crate::project::CopyFrom::Tapeout { name, path } => {
                        let rel = path.strip_prefix("/").unwrap_or(path);
                        (self.stage(name).join(rel), None, link)
                    }
                    crate::project::CopyFrom::Inline { name, content } => {
                        (PathBuf::from(name), Some(content.clone()), false)
                    }
                };
                super::copy::CopyItem {
                    from,
                    to: i.to.clone(),
                    exclude: i.exclude.clone(),
                    content,
                    unpack: i.unpack,
                    link,
                }
            })
            .collect();
        let job = super::copy::CopyJob {
            changes: base::changes_dir(&ch.base.root),
            lowers: ch.base.lower.clone().into_iter().collect(),
            copy_mode: self.copy_mode(ch),
            items,
            owner: c.owner,
            mode: c.mode,
            dirs: c.dirs.clone(),
            owner_name: c.owner_name.clone(),
            mtime: self.opts.epoch,
        };
        let started = Instant::now();
        self.in_ns(ch, &job, named)?;
        let seconds = started.elapsed().as_secs_f64();
        let step = format!("{id}{}", self.plan.builders[ch.index].label());
        self.events.event(Event::Done {
            step: &step,
            seconds,
        });
        Ok(())
    }

    /// Whether copying rule `id` may link a tapeout's staged files into
    /// the builder instead of copying them (`copy::CopyItem::link`): it
    /// is the builder's last rule, on an overlay that is not a copy, and
    /// the builder is not kept. No later step then writes the changes
    /// directory, and a staged file is written by nothing once staged,
    /// so no write reaches a file through its other name. Context files
    /// are always copied: the user may edit them.
    fn links_staged_files(&self, ch: &Chain, id: &str) -> bool {
        let steps = &self.plan.builders[ch.index].steps;
        let last_rule = steps
            .iter()
            .rev()
            .find(|s| matches!(s, Step::Build(_)))
            .is_some_and(|s| s.id() == id);
        last_rule
            && matches!(ch.base.root, Root::Overlay { .. })
            && !self.copy_mode(ch)
            && !self.opts.keep_builder
    }

    /// The capture of what rule `id` changed, unless the builder fell
    /// back to a copy the cache does not expect.
    fn capture_job(&self, ch: &Chain, id: &str) -> Option<capture::CaptureJob> {
        let copied = ch.copy_marker.as_ref().is_some_and(|m| m.exists());
        if copied != ch.copy_expected {
            tracing::warn!(
                "{id}: overlay could not be mounted, so this build ran on a copy; its rules are not cached (set {} to cache copy builds)",
                crate::sandbox::NO_OVERLAY_ENV
            );
            return None;
        }
        Some(capture::CaptureJob {
            changes: base::changes_dir(&ch.base.root),
            snapshot: ch.snapshot.clone(),
            lowers: ch.base.lower.clone().into_iter().collect(),
            copy_mode: ch.copy_expected,
            cache_layout: self.cache.sc.cache.layout.root().to_path_buf(),
            out: self.state.join(format!("{id}.capture.json")),
        })
    }

    /// Captures what a rule changed and stores it under its key.
    fn capture(&self, ch: &Chain, job: capture::CaptureJob, id: &str, key: &StepKey) -> Result<()> {
        let out = job.out.clone();
        self.in_ns(ch, &job, id)
            .doing(|| format!("{id}: caching its changes"))?;
        let c: capture::Captured =
            read_json(&out).doing(|| format!("{id}: reading {}", out.display()))?;
        // The cache names the builder too (`cache ls`).
        let step = format!("{id}{}", self.plan.builders[ch.index].label());
        let rec = Record::new(RecordKind::Rule, &step, c.descriptor, c.diff_id);
        self.cache.sc.store(&key.key, &rec)?;
        self.remember(id, key);
        Ok(())
    }

    /// Runs a tapeout inside the build's user namespace (what a step gave
    /// to other ids is readable there, and owners are the image's);
    /// returns why each path was selected.
    fn tapeout(
        &self,
        ch: &Chain,
        final_step: bool,
        t: &TapeoutRule,
        inplace: &mut Option<InPlace>,
    ) -> Result<BTreeMap<String, String>> {
        let id = format!("tapeout.{}", t.name);
        let dir = self.state.join("tapeout");
        std::fs::create_dir_all(&dir).doing(|| format!("creating {}", dir.display()))?;
        let explain_out = dir.join(format!("{}.explain.json", t.name));
        let in_place = match inplace.as_mut() {
            Some(ip) => Some(
                ip.changes(self.state)
                    .doing(|| format!("{id}: what the rules changed in /"))?,
            ),
            None => None,
        };
        let job = TapeoutJob {
            rule: t.clone(),
            changes: ch.view.changes.clone(),
            lowers: ch.view.lowers.clone(),
            host_dirs: ch.view.host_dirs.clone(),
            copy_mode: ch.copy_marker.as_ref().is_some_and(|m| m.exists()),
            stage: self.stage(&t.name),
            final_step,
            explain_out: explain_out.clone(),
            in_place,
        };
        let started = Instant::now();
        self.in_ns(ch, &job, &id)?;
        let seconds = started.elapsed().as_secs_f64();
        let step = format!("{id}{}", self.plan.builders[ch.index].label());
        self.events.event(Event::Done {
            step: &step,
            seconds,
        });
        read_json(&explain_out).doing(|| format!("{id}: reading {}", explain_out.display()))
    }

    /// Stores a tapeout's staged selection under its key.
    fn store_selection(
        &self,
        id: &str,
        label: &str,
        explain: BTreeMap<String, String>,
        sbom: Option<crate::sbom::Attribution>,
        key: &StepKey,
    ) -> Result<()> {
        let name = id.trim_start_matches("tapeout.");
        let step = format!("{id}{label}");
        let stage = self.stage(name);
        let mut rec = super::images::store_stage(&self.cache.sc, &step, &stage, explain)
            .doing(|| format!("{id}: caching its selection"))?;
        rec.sbom = sbom;
        self.cache.sc.store(&key.key, &rec)?;
        self.remember(id, key);
        Ok(())
    }

    /// Puts a cached tapeout back where the images and pods read it.
    fn restore_selection(&self, r: &Record, stage: &Path) -> Result<()> {
        if stage.exists() {
            crate::sandbox::remove_tree(stage)?;
        }
        let layers = [(r.layer.clone(), r.diff_id.clone())];
        shipyard_image::layer::extract::unpack_layers(&self.cache.sc.cache.layout, &layers, stage)
            .doing(|| format!("restoring cached {}", r.step))?;
        Ok(())
    }

    /// Pushes the keys this build used to `--cache-to`.
    fn export_cache(&self, schedule: &Schedule) -> Result<()> {
        let Some(to) = &self.opts.cache.to else {
            return Ok(());
        };
        let keys = schedule.used_keys();
        let n = remote::export(&self.cache.sc, to, &keys, &self.opts.transport)
            .doing(|| format!("--cache-to {to}"))?;
        let to = to.to_string();
        self.events.event(Event::CacheExported {
            entries: n,
            to: &to,
        });
        Ok(())
    }
}

/// A result a job in the builder wrote as JSON.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, super::error::Cause> {
    Ok(serde_json::from_slice(&std::fs::read(path)?)?)
}

/// Why each path of a cached tapeout is there, as it was stored.
fn explain_of(r: &Record) -> crate::tapeout::Explain {
    r.explain
        .iter()
        .map(|(p, w)| (PathBuf::from(p), w.clone()))
        .collect()
}

/// Writes a rule's script as `dir/NAME`, mode 0755 (readable and
/// executable by whichever user the rule runs as).
fn write_script(dir: &Path, script: &crate::project::Script) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let file = dir.join(&script.name);
    std::fs::write(&file, &script.content)?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))
}

/// The sources every rule of a builder sees.
fn binds(builder: &Builder) -> Vec<Bind> {
    builder
        .sources
        .iter()
        .map(|s| Bind {
            source: s.host.clone(),
            target: s.target.clone(),
            writable: s.writable,
        })
        .collect()
}

/// The host's CA bundle, when the builder asks for it and there is one.
fn ca_bundle(builder: &Builder) -> Option<PathBuf> {
    if !builder.host_ca {
        return None;
    }
    let b = crate::sandbox::ca::host_bundle();
    if b.is_none() {
        tracing::warn!(
            "builder.host-ca: this machine has no CA bundle at {}; the builder keeps its own",
            crate::sandbox::ca::BUNDLE_PATHS.join(", ")
        );
    }
    b
}

/// The builder as tapeouts see it: its changes over its base trees, or
/// at isolation none the container's own `/`.
fn view(host: bool, base: &base::Base, subids: Option<SubIds>, in_place: bool) -> BuilderView {
    if in_place {
        return BuilderView::new(PathBuf::from("/"), Vec::new(), Vec::new(), None);
    }
    let host = if host { host_dirs() } else { Vec::new() };
    let lowers = base.lower.clone().into_iter().collect();
    BuilderView::new(base::changes_dir(&base.root), lowers, host, subids)
}

/// How the builder's filesystem is made: the copy marker (overlay
/// builders), whether the build runs on a copy on purpose (without
/// mounts there is no overlay: every rule runs on the copy, and is cached
/// as such), and the mode a key records.
fn filesystem(
    root: &Root,
    confinement: &Confinement,
    in_place: bool,
) -> (Option<PathBuf>, bool, &'static str) {
    let marker = match root {
        Root::Overlay { work, .. } => Some(work.join(crate::sandbox::COPY_MARKER)),
        _ => None,
    };
    let copy = marker.is_some()
        && (std::env::var_os(crate::sandbox::NO_OVERLAY_ENV).is_some() || !confinement.mounts);
    let mode = match root {
        _ if in_place => "none",
        Root::Overlay { .. } if copy => "copy",
        Root::Overlay { .. } => "overlay",
        Root::Dir(_) => "dir",
        Root::Host { .. } => "host",
    };
    (marker, copy, mode)
}

/// At isolation none, what the walks of `/` leave out: the build's own
/// state, output, cache and sources, and where cache mounts and secrets
/// appear (they come and go with the rules).
fn in_place_tracker(builder: &Builder, state: &Path, output: &Path) -> InPlace {
    let cache_dir = shipyard_image::cache::cache_dir().ok();
    let mut own: Vec<&Path> = vec![state, output];
    own.extend(cache_dir.as_deref());
    for s in &builder.sources {
        own.push(&s.host);
        own.push(&s.target);
    }
    for step in &builder.steps {
        if let Step::Build(b) = step {
            own.extend(b.cache.iter().map(|m| m.target.as_path()));
        }
    }
    own.push(Path::new(crate::sandbox::job::Secret::DIR));
    InPlace::new(super::inplace::skipped(&own))
}
