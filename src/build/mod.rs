//! The build: runs a plan's rules in the builder sandbox, tapes out, and
//! assembles every image of the pass into one layout.
//!
//! Deciding and doing are apart: [`schedule`] decides, from the plan, the
//! request and the cache, what every step and image layer needs (pure,
//! unit-tested); the executor (`executor`, `images`) carries it out; what
//! the user is told goes through the [`events::Events`] sink the caller
//! supplies.
//!
//! Nothing is written to the output layout until every rule has succeeded,
//! so a failing build leaves the layout as it was.

pub mod base;
pub mod capture;
pub mod copy;
pub mod error;
pub mod events;
mod executor;
mod images;
pub mod inplace;
pub mod key;
pub mod mounts;
pub mod owners;
pub mod remote;
pub mod restore;
pub mod schedule;
pub mod stepcache;
pub mod users;

pub use error::{BuildError, RuleFailed};
pub use events::{Event, Events};

use crate::project::Plan;
use error::Doing;
use shipyard_image::layer::compress::Compression;
use std::path::{Path, PathBuf};

/// How to run a plan.
pub struct BuildOptions {
    pub output: PathBuf,
    /// Only these images (all when both this and `pods` are empty).
    pub images: Vec<String>,
    /// Only these pods, and the images they need.
    pub pods: Vec<String>,
    pub keep_builder: bool,
    pub epoch: i64,
    pub compression: Compression,
    pub level: Option<i32>,
    pub cache: CacheOptions,
    /// The isolation level asked for (see `sandbox::isolation`).
    pub isolation: crate::sandbox::isolation::Isolation,
    /// The secrets given for this build (`--secret`): rules that name one
    /// see it at /run/secrets/NAME.
    pub secrets: Vec<crate::sandbox::job::Secret>,
    /// How images named in the spec (bases) are pulled, and how the
    /// shared cache's registry is reached.
    pub transport: shipyard_image::transport::Options,
    /// Attach an SPDX document to every image (`--sbom`).
    pub sbom: bool,
}

impl BuildOptions {
    /// What the schedule needs of these options.
    pub fn request(&self) -> schedule::Request {
        schedule::Request {
            images: self.images.clone(),
            pods: self.pods.clone(),
            read_cache: self.cache.read,
            no_cache_rules: self.cache.no_cache_rules.clone(),
            epoch: self.epoch,
            compression: self.compression,
            level: self.level,
            sbom: self.sbom,
        }
    }
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

/// One image or pod written.
pub struct Built {
    pub name: String,
    pub tag: String,
    pub digest: String,
    pub pod: bool,
}

/// Runs the plan and writes its images, telling `events` what it does.
pub fn build(
    plan: &Plan,
    opts: &BuildOptions,
    events: &dyn Events,
) -> Result<Vec<Built>, BuildError> {
    let selection = schedule::Selection::new(plan, &opts.request())?;
    let state = tempfile::Builder::new()
        .prefix("shipyard-builder-")
        .tempdir()
        .doing(|| "creating the builder state directory".into())?
        .keep();
    let result = run_plan(plan, opts, &selection, &state, events);
    if opts.keep_builder {
        let builder = executor::builder_dir(&state, plan, 0);
        let root = base::base_root(plan.root_from(0), &builder, &opts.transport)?.0;
        let changes = base::changes_dir(&root);
        let logs = state.join("logs");
        events.event(Event::BuilderKept {
            state: &state,
            changes: &changes,
            logs: &logs,
        });
    } else {
        dispose(&state);
    }
    result
}

/// Prepares the builder, decides the schedule and carries it out.
fn run_plan(
    plan: &Plan,
    opts: &BuildOptions,
    selection: &schedule::Selection,
    state: &Path,
    events: &dyn Events,
) -> Result<Vec<Built>, BuildError> {
    let ex = executor::Executor::new(plan, opts, state, events)?;
    let (facts, bases) = ex.facts(selection)?;
    let sched = schedule::Schedule::new(plan, &opts.request(), &facts, selection, &ex.cache)?;
    ex.run(&sched, bases)
}

/// The secrets a rule names, from those the build was given.
fn step_secrets(
    b: &crate::project::BuildRule,
    given: &[crate::sandbox::job::Secret],
) -> Result<Vec<crate::sandbox::job::Secret>, BuildError> {
    b.secrets
        .iter()
        .map(|name| {
            given
                .iter()
                .find(|s| &s.name == name)
                .cloned()
                .ok_or_else(|| BuildError::MissingSecret {
                    rule: b.name.clone(),
                    name: name.clone(),
                })
        })
        .collect()
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
        let e = shipyard_image::error::chain_text(&e);
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
