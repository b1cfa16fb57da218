//! The schedule: everything a build decides before it runs anything.
//!
//! From the plan, what the command line asked for and a few facts about
//! the builder, it computes every step's cache key, which steps are forced
//! (`--no-cache`, `--no-cache-rule`, a writable source), which images and
//! pods are made, which of their layers the cache holds, how far the
//! builder must go, and for each step what the build does with it (run it,
//! restore it, or leave it) and why. It reads the cache only through
//! [`Lookup`], so the rules below are tested without a disk or a sandbox;
//! [`super::executor`] carries the schedule out.
//!
//! The rules, in the order they apply:
//! - a step whose key the cache lacks runs, and every build rule after a
//!   rule that ran runs too (a cached change is only valid on the state it
//!   was captured on); a tapeout that hits after a rule ran is re-made;
//! - `--no-cache` and a writable source force every step; `--no-cache-rule
//!   R` forces R and every step after it;
//! - only the images asked for (`--image`, or those a `--pod` needs; all
//!   when neither is given) are made; a tapeout is needed only when a
//!   layer that holds it misses, or a selected pod takes a volume from it;
//! - the builder goes as far as the last rule the cache lacks (so a test
//!   rule still gates the build) and the last needed tapeout that misses;
//!   steps after that are left as the cache has them.

use super::key::{self, KeyError, SourceContent, StepKey};
use super::stepcache::Record;
use crate::project::{BuildRule, Builder, CopyFrom, ImageSpec, Plan, Step, VolumeSource};
use shipyard_image::layer::compress::Compression;
use std::collections::{BTreeMap, BTreeSet};

/// What the schedule asks of the step cache.
pub trait Lookup {
    /// The record of `key` when the cache has it (fetching it from a
    /// shared cache if need be).
    fn lookup(&self, key: &StepKey) -> Option<Record>;
    /// Whether `key` looks present, without fetching or verifying it.
    fn probe(&self, key: &StepKey) -> bool;
    /// The key parts `step` had when it was last built from this project.
    fn last_parts(&self, step: &str) -> Option<BTreeMap<String, String>>;
    /// A source tree's content, by the digest a key holds (to name the
    /// files that changed).
    fn source(&self, digest: &str) -> Option<SourceContent>;
}

/// What the command line asks of a build.
#[derive(Debug, Clone)]
pub struct Request {
    /// Only these images (all when both this and `pods` are empty).
    pub images: Vec<String>,
    /// Only these pods, and the images they need.
    pub pods: Vec<String>,
    /// Use cached results (false: `--no-cache`).
    pub read_cache: bool,
    /// Step ids to run whatever the cache holds, with every step after.
    pub no_cache_rules: Vec<String>,
    pub epoch: i64,
    pub compression: Compression,
    pub level: Option<i32>,
    /// `--sbom`: tapeouts keep what their paths come from (a part of
    /// their keys), and every selected image needs its tapeouts' results
    /// even when its layers are cached.
    pub sbom: bool,
}

/// What a builder's keys depend on besides the plan: the builder as it
/// was made.
#[derive(Debug, Clone, Default)]
pub struct BuilderFacts {
    /// The builder base's identity (see [`super::base::Base`]); for a
    /// builder made from another's state, that state's key replaces it.
    pub base: String,
    /// How the builder's filesystem is made: overlay, copy, dir, host or
    /// none (in place).
    pub mode: String,
    /// A single id is mapped where a range was wanted: files a step gives
    /// to other ids keep the caller's, which is another result.
    pub single_ids: bool,
    /// `source:TARGET` → the digest of the source's content.
    pub sources: BTreeMap<String, String>,
    /// Copying rule id → the digest of the host files it copies.
    pub copies: BTreeMap<String, String>,
    /// Rule id → the digest of the build context it mounts.
    pub binds: BTreeMap<String, String>,
}

/// What the keys depend on besides the plan.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Each builder's, in plan order.
    pub builders: Vec<BuilderFacts>,
    /// Image name → its runtime base's digest (`scratch` for none), for
    /// every selected image.
    pub runtime_bases: BTreeMap<String, String>,
}

/// A request that names what the plan lacks.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("--pod {name}: no such pod in the spec (pods: {known})")]
    NoSuchPod { name: String, known: String },
    #[error("--image {name}: no such image in the spec (images: {known})")]
    NoSuchImage { name: String, known: String },
    #[error("--no-cache-rule {name}: no such rule in the spec (rules: {known})")]
    NoSuchRule { name: String, known: String },
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Why a rule run at isolation none is never a hit.
pub const NOT_CACHED_IN_PLACE: &str = "rules are not cached at isolation none";
/// Why a step runs after a rule before it ran.
const EARLIER_RAN: &str = "an earlier rule ran";

/// Found in the cache, or not and why.
#[derive(Debug, Clone)]
pub enum Status {
    Hit(Box<Record>),
    Miss(String),
}

/// What the build does with one step of the plan.
#[derive(Debug, Clone)]
pub enum StepPlan {
    /// The cache holds it and nothing after it runs: left alone.
    Cached,
    /// A cached rule whose changes are put back into the builder before
    /// the next step that runs.
    Restore(Box<Record>),
    /// A cached tapeout whose selection is put back where images read it.
    RestoreSelection(Box<Record>),
    /// Runs, for this reason.
    Run(String),
    /// A tapeout no layer or pod being made needs.
    NotNeeded,
}

impl StepPlan {
    /// The word the build log says for it (`==> STEP: WORD[: WHY]`).
    pub fn word(&self) -> &'static str {
        match self {
            StepPlan::Cached | StepPlan::Restore(_) | StepPlan::RestoreSelection(_) => "cached",
            StepPlan::Run(_) => "run",
            StepPlan::NotNeeded => "not needed",
        }
    }

    /// Why, as the build log says it (empty for a hit).
    pub fn why(&self) -> &str {
        match self {
            StepPlan::Run(why) => why,
            StepPlan::NotNeeded => "the images that use it are cached",
            _ => "",
        }
    }
}

/// One layer of an image: the tapeouts it holds, or what a rule of the
/// builder the image is made of changed.
#[derive(Debug, Clone)]
pub struct LayerPlan {
    pub tapeouts: Vec<String>,
    /// A rule's captured changes, as (builder, step index).
    pub rule: Option<(usize, usize)>,
    /// Rules' captured changes merged into this one layer (`--squash`),
    /// in order.
    pub squash: Vec<(usize, usize)>,
    pub key: StepKey,
    pub status: Status,
}

/// One image to make.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    /// Its index in `plan.images`.
    pub index: usize,
    pub layers: Vec<LayerPlan>,
}

/// The images and pods a request selects, by index into the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub images: Vec<usize>,
    pub pods: Vec<usize>,
}

impl Selection {
    /// The images and pods `req` asks for, once every name it gives is
    /// checked against the plan.
    pub fn new(plan: &Plan, req: &Request) -> Result<Selection, ScheduleError> {
        check(plan, req)?;
        let everything = req.images.is_empty() && req.pods.is_empty();
        let pods: Vec<usize> = (0..plan.pods.len())
            .filter(|&i| everything || req.pods.contains(&plan.pods[i].name))
            .collect();
        let images = (0..plan.images.len())
            .filter(|&i| {
                let name = &plan.images[i].name;
                let for_pod = pods.iter().any(|&p| {
                    plan.pods[p]
                        .containers
                        .iter()
                        .any(|c| c.built && &c.image == name)
                });
                everything || req.images.contains(name) || for_pod
            })
            .collect();
        Ok(Selection { images, pods })
    }
}

/// Every name on the command line exists in the plan.
fn check(plan: &Plan, req: &Request) -> Result<(), ScheduleError> {
    let list = |names: Vec<String>, none: &str| {
        if names.is_empty() {
            none.to_string()
        } else {
            names.join(", ")
        }
    };
    if let Some(name) = req
        .pods
        .iter()
        .find(|w| !plan.pods.iter().any(|p| &p.name == *w))
    {
        let known = plan.pods.iter().map(|p| p.name.clone()).collect();
        let known = list(known, "none");
        return Err(ScheduleError::NoSuchPod {
            name: name.clone(),
            known,
        });
    }
    if let Some(name) = req
        .images
        .iter()
        .find(|w| !plan.images.iter().any(|i| &i.name == *w))
    {
        let known = list(plan.images.iter().map(|i| i.name.clone()).collect(), "");
        return Err(ScheduleError::NoSuchImage {
            name: name.clone(),
            known,
        });
    }
    let ids: Vec<String> = plan.all_steps().map(|(_, s)| s.id()).collect();
    if let Some(name) = req.no_cache_rules.iter().find(|r| !ids.contains(r)) {
        let known = list(ids, "");
        return Err(ScheduleError::NoSuchRule {
            name: name.clone(),
            known,
        });
    }
    Ok(())
}

/// The environment a rule runs with (part of its cache key).
pub fn rule_env(builder: &Builder, b: &BuildRule, epoch: i64) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![("HOME".into(), "/root".into())];
    env.extend(builder.env.iter().cloned());
    env.extend(b.env.iter().cloned());
    env.push(("SOURCE_DATE_EPOCH".into(), epoch.to_string()));
    env
}

/// Every step's key, per builder in plan order. A rule's key chains the
/// rule before it in its builder; a tapeout's names the last rule before
/// it. A builder made from another's state starts from that state's key;
/// a rule that mounts a tapeout holds that tapeout's key.
pub fn step_keys(plan: &Plan, req: &Request, facts: &Facts) -> Result<Vec<Vec<StepKey>>, KeyError> {
    let mut all: Vec<Vec<StepKey>> = Vec::new();
    let mut bases: Vec<String> = Vec::new();
    for (bi, builder) in plan.builders.iter().enumerate() {
        let f = facts.builders.get(bi).cloned().unwrap_or_default();
        let base = match builder.parent {
            Some(p) => (all[p.builder][..p.upto].iter())
                .zip(&plan.builders[p.builder].steps)
                .rfind(|(_, s)| matches!(s, Step::Build(_)))
                .map_or_else(|| bases[p.builder].clone(), |(k, _)| k.key.to_string()),
            None => f.base.clone(),
        };
        bases.push(base.clone());
        let mut keys: Vec<StepKey> = Vec::new();
        let mut previous = "none".to_string();
        for step in &builder.steps {
            let mut parts = BTreeMap::new();
            parts.insert("base".into(), base.clone());
            parts.insert("mode".into(), f.mode.clone());
            // Only then, so that entries made with a range keep their keys.
            if f.single_ids {
                parts.insert("ids".into(), "single".into());
            }
            parts.insert("previous".into(), previous.clone());
            let definition = match step {
                Step::Build(b) => {
                    parts.extend(f.sources.clone());
                    for (name, t) in b.tapeouts_read() {
                        parts.insert(name, tapeout_key(plan, &all, &keys, bi, &t));
                    }
                    if let Some(c) = f.copies.get(&step.id()) {
                        parts.insert("copy".into(), c.clone());
                    }
                    if let Some(c) = f.binds.get(&step.id()) {
                        parts.insert("context".into(), c.clone());
                    }
                    key::digest_json(&rule_definition(builder, b, req.epoch))?
                }
                Step::Tapeout(t) => {
                    if req.sbom {
                        parts.insert("sbom".into(), crate::sbom::build::KEY_PART.into());
                    }
                    key::digest_json(t)?
                }
            };
            parts.insert("definition".into(), definition);
            let k = StepKey::new(parts);
            if matches!(step, Step::Build(_)) {
                previous = k.key.to_string();
            }
            keys.push(k);
        }
        all.push(keys);
    }
    Ok(all)
}

/// The key of tapeout `name`, from an earlier builder or earlier in
/// builder `bi` (the plan orders both so).
fn tapeout_key(
    plan: &Plan,
    all: &[Vec<StepKey>],
    own: &[StepKey],
    bi: usize,
    name: &str,
) -> String {
    match plan.tapeout(name) {
        Some((b, i)) if b == bi => own.get(i),
        Some((b, i)) => all.get(b).and_then(|k| k.get(i)),
        None => None,
    }
    .map_or_else(|| format!("missing:{name}"), |k| k.key.to_string())
}

/// What of a rule its key holds: how it runs, never what it sees through
/// its sources (their content is a part of its own) nor its secrets'
/// values (only their names).
fn rule_definition(builder: &Builder, b: &BuildRule, epoch: i64) -> serde_json::Value {
    let mut def = serde_json::json!({
        "run": b.run,
        "env": rule_env(builder, b, epoch),
        "workdir": b.workdir,
        "user": b.user,
        "network": builder.network,
        "mounts": builder.sources.iter().map(|s| (s.target.clone(), s.writable)).collect::<Vec<_>>(),
    });
    if !b.secrets.is_empty() {
        def["secrets"] = serde_json::json!(b.secrets);
    }
    if let Some(argv) = &b.argv {
        def["argv"] = serde_json::json!(argv);
    }
    if !b.mounts.is_empty() {
        // Where each is seen and which part of the tapeout (its files'
        // content is in the key through the tapeout's key).
        def["tapeout-mounts"] = serde_json::json!(b.mounts);
    }
    if let Some(n) = b.network {
        def["network"] = serde_json::json!(n);
    }
    // The name, not the ids: what it names is the builder's own files,
    // which the rules before this one (in `previous`) decide.
    if let Some(u) = &b.user_name {
        def["user_name"] = serde_json::json!(u);
    }
    if let Some(s) = &b.script {
        def["script"] = serde_json::json!([s.name, s.content]);
    }
    if !b.tmpfs.is_empty() {
        def["tmpfs"] = serde_json::json!(b.tmpfs);
    }
    if !b.binds.is_empty() {
        // Where and how, not the host path (the content is a part of its
        // own, `context`).
        let binds: Vec<_> = (b.binds.iter())
            .map(|c| serde_json::json!([c.target, c.writable, c.exclude]))
            .collect();
        def["context-binds"] = serde_json::json!(binds);
    }
    if let Some(c) = &b.copy {
        // Where each source goes and how; a host source's content is a
        // part of the key of its own (`copy`), never its path.
        let items: Vec<serde_json::Value> = (c.items.iter())
            .map(|i| match &i.from {
                // Only then, so that other copies keep their keys.
                CopyFrom::Host(_) if i.unpack => serde_json::json!(["unpack", i.to]),
                CopyFrom::Host(_) => serde_json::json!(["host", i.to, i.exclude]),
                CopyFrom::Tapeout { name, path } => {
                    serde_json::json!(["tapeout", name, path, i.to, i.exclude])
                }
                CopyFrom::Inline { name, content } => {
                    serde_json::json!(["inline", name, content, i.to])
                }
            })
            .collect();
        def["copy"] = serde_json::json!({
            "items": items, "owner": c.owner, "mode": c.mode, "dirs": c.dirs,
        });
        if let Some(n) = &c.owner_name {
            def["copy"]["owner_name"] = serde_json::json!(n);
        }
        if c.owner_name.is_some() || c.owner != (0, 0) {
            // The directories a copy makes are its owner's (they were
            // root's): what such a step stored before then is not reused.
            def["copy"]["made_dirs"] = serde_json::json!("owner");
        }
        // Hard links among the copied files are kept (they were copied
        // as separate files): what a copy stored before is not reused.
        def["copy"]["links"] = serde_json::json!("kept");
    }
    def
}

/// The files a rule's sandbox binds the host's over when the rule has
/// the host's network: where the builder has none, the empty files made
/// to bind onto are what the rule's changes hold there (the rule cannot
/// write through a read-only bind), and buildah and BuildKit leave them
/// out of the layer too. A builder rooted at the host is not given them.
pub(super) fn network_stubs(plan: &Plan, b: usize, rule: &BuildRule) -> &'static [&'static str] {
    let network = rule.network.unwrap_or(plan.builders[b].network);
    let host = network == crate::sandbox::job::Network::Host;
    if host && rule.copy.is_none() && plan.root_from(b) != "host" {
        &["/etc/hosts", "/etc/resolv.conf"]
    } else {
        &[]
    }
}

/// Why each step of a builder must run whatever the cache holds, if it
/// must.
fn forced(builder: &Builder, req: &Request) -> Vec<Option<String>> {
    let writable = builder.sources.iter().find(|s| s.writable);
    let first = builder
        .steps
        .iter()
        .position(|s| req.no_cache_rules.contains(&s.id()));
    (0..builder.steps.len())
        .map(|i| {
            if !req.read_cache {
                Some("--no-cache".into())
            } else if let Some(w) = writable {
                // It takes writes the builder's layers do not hold, which
                // restoring could not redo.
                Some(format!(
                    "source {} is mounted writable, and what rules write there is not cached",
                    w.target.display()
                ))
            } else {
                match first {
                    Some(f) if i == f => Some("--no-cache-rule".into()),
                    Some(f) if i > f => Some(format!(
                        "{} is rebuilt (--no-cache-rule)",
                        builder.steps[f].id()
                    )),
                    _ => None,
                }
            }
        })
        .collect()
}

/// What a build does in one builder.
#[derive(Debug, Clone)]
pub struct BuilderSchedule {
    /// Every step's key, in the builder's order.
    pub keys: Vec<StepKey>,
    /// What is done with every step, in the builder's order.
    pub steps: Vec<StepPlan>,
    /// The last step the builder must reach; `None`: the builder is not
    /// needed at all.
    pub last_needed: Option<usize>,
}

/// Everything a build decides before it runs.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Each builder's, in plan order.
    pub builders: Vec<BuilderSchedule>,
    /// The images to make, in plan order.
    pub images: Vec<ImagePlan>,
    /// The pods to make (indices into `plan.pods`).
    pub pods: Vec<usize>,
}

/// The schedule's view of the plan while it is computed.
struct Planner<'a, L: Lookup> {
    plan: &'a Plan,
    req: &'a Request,
    facts: &'a Facts,
    lookup: &'a L,
    /// Per builder, per step.
    keys: Vec<Vec<StepKey>>,
    /// Per builder, per step.
    forced: Vec<Vec<Option<String>>>,
}

impl Schedule {
    /// Computes the schedule of `plan` for `req`. Lookups happen in the
    /// order a build needs them: image layers, needed tapeouts, then the
    /// rules up to the first that runs.
    pub fn new(
        plan: &Plan,
        req: &Request,
        facts: &Facts,
        selection: &Selection,
        lookup: &impl Lookup,
    ) -> Result<Schedule, ScheduleError> {
        let p = Planner {
            plan,
            req,
            facts,
            lookup,
            keys: step_keys(plan, req, facts)?,
            forced: plan.builders.iter().map(|b| forced(b, req)).collect(),
        };
        let images: Vec<ImagePlan> = selection.images.iter().map(|&i| p.image(i)).collect();
        let mut needed = p.needed_tapeouts(&images, &selection.pods);
        needed.extend(p.mounted_tapeouts());
        let builders = (0..plan.builders.len())
            .map(|b| {
                let (tapeouts, last_needed) = p.reach(b, &needed);
                BuilderSchedule {
                    keys: p.keys[b].clone(),
                    steps: p.step_plans(b, tapeouts, last_needed),
                    last_needed,
                }
            })
            .collect();
        Ok(Schedule {
            builders,
            images,
            pods: selection.pods.clone(),
        })
    }

    /// Whether any builder must be made and any step run or restored.
    pub fn needs_builder(&self) -> bool {
        self.builders.iter().any(|b| b.last_needed.is_some())
    }

    /// Every key this build uses (for `--cache-to`).
    pub fn used_keys(&self) -> Vec<shipyard_image::oci::digest::Digest> {
        let steps = (self.builders.iter()).flat_map(|b| b.keys.iter().map(|k| k.key.clone()));
        let layers = self
            .images
            .iter()
            .flat_map(|i| i.layers.iter().map(|l| l.key.key.clone()));
        steps.chain(layers).collect()
    }
}

impl<L: Lookup> Planner<'_, L> {
    /// Hit, or miss with the reason, for a step that is allowed to hit.
    fn status(&self, step: &str, key: &StepKey, forced: Option<&str>) -> Status {
        if let Some(why) = forced {
            return Status::Miss(why.to_string());
        }
        match self.lookup.lookup(key) {
            Some(r) => Status::Hit(Box::new(r)),
            None => Status::Miss(why_missed(self.lookup, step, key)),
        }
    }

    /// An image's layers: those of the builder state it is made of (one
    /// per rule), then one of all its tapeouts, or one per tapeout.
    fn image(&self, index: usize) -> ImagePlan {
        let img: &ImageSpec = &self.plan.images[index];
        let base = self.facts.runtime_bases.get(&img.name).cloned();
        let r = self.req;
        // "rewrite v3": a layer of a rule made before links to overlayfs's
        // shared whiteout became whiteouts (v2), or before the sandbox's
        // network stubs were left out (v3), was wrong; it is not reused.
        let format = format!("rewrite v3 {:?} {:?} {}", r.compression, r.level, r.epoch);
        let mut layers = Vec::new();
        let lineage = img
            .builder
            .map(|s| self.plan.lineage(s))
            .unwrap_or_default();
        if img.squash && !lineage.is_empty() {
            layers.push(self.squash_layer(img, &lineage, base.as_deref(), &format));
        }
        for (b, i) in lineage.into_iter().filter(|_| !img.squash) {
            let mut parts = BTreeMap::new();
            parts.insert("rule".into(), self.keys[b][i].key.to_string());
            parts.insert("format".into(), format.clone());
            let key = StepKey::new(parts);
            let step = format!("image.{}#{}", img.name, layers.len());
            let status = self.status(&step, &key, self.forced[b][i].as_deref());
            layers.push(LayerPlan {
                tapeouts: Vec::new(),
                rule: Some((b, i)),
                squash: Vec::new(),
                key,
                status,
            });
        }
        let groups: Vec<Vec<String>> = if img.layer_per_tapeout {
            img.tapeouts.iter().map(|t| vec![t.clone()]).collect()
        } else if img.tapeouts.is_empty() && img.builder.is_some() {
            Vec::new()
        } else {
            vec![img.tapeouts.clone()]
        };
        // What the tapeouts' layers are made against: the runtime base,
        // and the rules' layers under them.
        let under = match layers.last() {
            Some(l) => format!(
                "{} + {}",
                base.clone().unwrap_or("scratch".into()),
                l.key.key
            ),
            None => base.clone().unwrap_or("scratch".into()),
        };
        for tapeouts in groups {
            let at: Vec<(usize, usize)> = tapeouts
                .iter()
                .filter_map(|t| self.plan.tapeout(t))
                .collect();
            let tkeys: Vec<String> = at
                .iter()
                .map(|&(b, i)| self.keys[b][i].key.to_string())
                .collect();
            let mut parts = BTreeMap::new();
            parts.insert("tapeouts".into(), tkeys.join(","));
            parts.insert("runtime-base".into(), under.clone());
            parts.insert("format".into(), format.clone());
            let key = StepKey::new(parts);
            let forced = at.iter().find_map(|&(b, i)| self.forced[b][i].clone());
            let step = format!("image.{}#{}", img.name, layers.len());
            let status = self.status(&step, &key, forced.as_deref());
            layers.push(LayerPlan {
                tapeouts,
                rule: None,
                squash: Vec::new(),
                key,
                status,
            });
        }
        ImagePlan { index, layers }
    }

    /// The one layer of a squashed builder image: the rules' captured
    /// changes merged, keyed by all of them and the base (a deletion is
    /// kept only where the base has the path).
    fn squash_layer(
        &self,
        img: &ImageSpec,
        rules: &[(usize, usize)],
        base: Option<&str>,
        format: &str,
    ) -> LayerPlan {
        let keys: Vec<String> = (rules.iter())
            .map(|&(b, i)| self.keys[b][i].key.to_string())
            .collect();
        let mut parts = BTreeMap::new();
        parts.insert("rules".into(), keys.join(","));
        parts.insert("runtime-base".into(), base.unwrap_or("scratch").to_string());
        parts.insert("format".into(), format!("squash v2 {format}"));
        let key = StepKey::new(parts);
        let forced = (rules.iter()).find_map(|&(b, i)| self.forced[b][i].clone());
        let step = format!("image.{}#0", img.name);
        let status = self.status(&step, &key, forced.as_deref());
        LayerPlan {
            tapeouts: Vec::new(),
            rule: None,
            squash: rules.to_vec(),
            key,
            status,
        }
    }

    /// The tapeouts a layer that misses holds, and those a selected pod
    /// takes a volume from.
    fn needed_tapeouts(&self, images: &[ImagePlan], pods: &[usize]) -> BTreeSet<String> {
        let mut needed = BTreeSet::new();
        for l in images.iter().flat_map(|i| &i.layers) {
            // --sbom: a cached layer still needs what its tapeouts took.
            if matches!(l.status, Status::Miss(_)) || self.req.sbom {
                needed.extend(l.tapeouts.iter().cloned());
            }
        }
        for v in pods.iter().flat_map(|&p| &self.plan.pods[p].volumes) {
            if let VolumeSource::Tapeout(t) = &v.source {
                needed.insert(t.clone());
            }
        }
        needed
    }

    /// The tapeouts a rule that may run mounts: a rule may run once any
    /// rule of its builder at or before it is not in the cache.
    fn mounted_tapeouts(&self) -> BTreeSet<String> {
        let mut needed = BTreeSet::new();
        for (bi, builder) in self.plan.builders.iter().enumerate() {
            let mounts = |s: &Step| matches!(s, Step::Build(b) if !b.tapeouts_read().is_empty());
            if !builder.steps.iter().any(mounts) {
                continue;
            }
            let mut missed = false;
            for (i, step) in builder.steps.iter().enumerate() {
                if let Step::Build(b) = step {
                    missed = missed
                        || self
                            .facts
                            .builders
                            .get(bi)
                            .is_some_and(|f| f.mode == "none")
                        || self.forced[bi][i].is_some()
                        || !self.lookup.probe(&self.keys[bi][i]);
                    if missed {
                        needed.extend(b.tapeouts_read().into_iter().map(|(_, t)| t));
                    }
                }
            }
        }
        needed
    }

    /// The status of every needed tapeout of builder `bi`, and how far
    /// the builder must go: to the last rule the cache lacks and the last
    /// needed tapeout that misses.
    fn reach(&self, bi: usize, needed: &BTreeSet<String>) -> (Vec<Option<Status>>, Option<usize>) {
        let steps = &self.plan.builders[bi].steps;
        let in_place = self
            .facts
            .builders
            .get(bi)
            .is_some_and(|f| f.mode == "none");
        let mut statuses: Vec<Option<Status>> = vec![None; steps.len()];
        let mut last_needed = None;
        for (i, step) in steps.iter().enumerate() {
            let (key, forced) = (&self.keys[bi][i], self.forced[bi][i].as_deref());
            match step {
                Step::Build(_) => {
                    if in_place || forced.is_some() || !self.lookup.probe(key) {
                        last_needed = Some(i);
                    }
                }
                Step::Tapeout(t) if needed.contains(&t.name) => {
                    let s = self.status(&step.id(), key, forced);
                    if matches!(s, Status::Miss(_)) {
                        last_needed = Some(i);
                    }
                    statuses[i] = Some(s);
                }
                Step::Tapeout(_) => {}
            }
        }
        (statuses, last_needed)
    }

    /// What is done with each step of builder `bi`, given the needed
    /// tapeouts' statuses.
    fn step_plans(
        &self,
        bi: usize,
        tapeouts: Vec<Option<Status>>,
        last: Option<usize>,
    ) -> Vec<StepPlan> {
        let steps = &self.plan.builders[bi].steps;
        let in_place = self
            .facts
            .builders
            .get(bi)
            .is_some_and(|f| f.mode == "none");
        let any_forced = self.forced[bi].iter().any(Option::is_some);
        let mut ran_rule = false;
        let mut out = Vec::new();
        for (i, (step, tapeout)) in steps.iter().zip(tapeouts).enumerate() {
            let beyond = last.is_none_or(|l| i > l);
            out.push(match (step, tapeout) {
                (Step::Tapeout(_), Some(Status::Hit(r))) if beyond || !ran_rule => {
                    StepPlan::RestoreSelection(r)
                }
                (Step::Tapeout(_), Some(Status::Hit(_))) => StepPlan::Run(EARLIER_RAN.into()),
                (Step::Tapeout(_), Some(Status::Miss(why))) if !beyond => StepPlan::Run(why),
                (Step::Tapeout(_), _) => StepPlan::NotNeeded,
                (Step::Build(_), _) if beyond => StepPlan::Cached,
                (Step::Build(_), _) => {
                    let status = if in_place {
                        Status::Miss(NOT_CACHED_IN_PLACE.into())
                    } else if ran_rule && !any_forced {
                        Status::Miss(EARLIER_RAN.into())
                    } else {
                        let forced = self.forced[bi][i].as_deref();
                        self.status(&step.id(), &self.keys[bi][i], forced)
                    };
                    match status {
                        Status::Hit(r) => StepPlan::Restore(r),
                        Status::Miss(why) => {
                            ran_rule = true;
                            StepPlan::Run(why)
                        }
                    }
                }
            });
        }
        out
    }
}

/// Which input of `key` changed since `step` was last built here.
pub fn why_missed(lookup: &impl Lookup, step: &str, key: &StepKey) -> String {
    let Some(last) = lookup.last_parts(step) else {
        return "not in the cache (first build of this step here)".into();
    };
    let mut why = Vec::new();
    for (name, now) in &key.parts {
        let before = last.get(name);
        if before != Some(now) {
            why.push(part_changed(lookup, name, now, before));
        }
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

/// How the log says that one part of a key changed.
fn part_changed(lookup: &impl Lookup, name: &str, now: &str, before: Option<&String>) -> String {
    match name {
        "base" => "the builder base changed".to_string(),
        "mode" => "the builder's filesystem mode changed (overlay or copy)".to_string(),
        "ids" => "the id mapping changed (a subordinate range or a single id)".to_string(),
        "definition" => "its definition changed".to_string(),
        "previous" => "an earlier rule changed".to_string(),
        "tapeouts" => "a tapeout it holds changed".to_string(),
        "rule" => "the rule whose changes it holds changed".to_string(),
        n if n.starts_with("tapeout:copy") => "a tapeout it copies from changed".to_string(),
        n if n.starts_with("tapeout:") => {
            format!("the tapeout mounted at {} changed", &n["tapeout:".len()..])
        }
        "copy" => "the files it copies changed".to_string(),
        "context" => "the part of the build context it mounts changed".to_string(),
        "runtime-base" => "the runtime base changed".to_string(),
        "format" => "the output format changed (compression, level, timestamp or shipyard's way of writing it)".to_string(),
        n if n.starts_with("source:") => {
            let target = &n["source:".len()..];
            let now_c = lookup.source(now);
            let old_c = before.and_then(|b| lookup.source(b));
            match (now_c, old_c) {
                (Some(a), Some(b)) => {
                    let files = a.changed_since(&b);
                    let shown: Vec<&str> = files.iter().take(5).map(|s| s.as_str()).collect();
                    let more = files.len().saturating_sub(shown.len());
                    let more = if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    };
                    format!("source {target} changed: {}{more}", shown.join(", "))
                }
                _ => format!("source {target} changed"),
            }
        }
        other => format!("{other} changed"),
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
