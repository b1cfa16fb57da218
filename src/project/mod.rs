//! `shipyard.toml` → a checked build plan.
//!
//! Every error names the file, line and column, and the key: unknown keys
//! (with a "did you mean"), wrong types, unknown rule names, dependency
//! cycles (the cycle printed), missing source paths. Rules keep the order
//! they are written in; they run as a DAG in that stable order.

mod builders;
pub mod cache_mount;
mod pod;
pub use pod::{ContainerSpec, PodSpec, Port, VolumeSource, VolumeSpec, CONFIG_VOLUME};

use indexmap::IndexMap;
use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{col}: {msg}")]
pub struct SpecError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

/// A source bind: host path (relative to the spec's directory) → builder path.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawSource {
    Path(String),
    Full {
        path: String,
        #[serde(default)]
        writable: bool,
    },
}

/// A cache mount: `"/target" = "ID"` or `"/target" = { id = "ID",
/// sharing = "locked" | "shared" | "private" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawCache {
    Id(String),
    Full {
        id: String,
        #[serde(default)]
        sharing: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuilder {
    #[serde(default = "default_from")]
    from: Spanned<String>,
    /// With `from = "builder:OTHER"`: the rule of OTHER after which this
    /// builder starts (default: OTHER's last rule).
    #[serde(default)]
    after: Option<Spanned<String>>,
    #[serde(default)]
    sources: IndexMap<String, Spanned<RawSource>>,
    #[serde(default)]
    network: Option<Spanned<String>>,
    #[serde(default)]
    env: IndexMap<String, String>,
    /// Bind the host's CA bundle where the builder's distro reads its own.
    #[serde(default, rename = "host-ca")]
    host_ca: bool,
    /// Cache mounts every rule gets.
    #[serde(default)]
    cache: IndexMap<String, Spanned<RawCache>>,
}

fn default_from() -> Spanned<String> {
    Spanned::new(0..0, "host".to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    /// The builder the rule runs in (`[builder.NAME]`).
    #[serde(default)]
    builder: Option<Spanned<String>>,
    #[serde(default)]
    after: Vec<Spanned<String>>,
    run: String,
    #[serde(default)]
    env: IndexMap<String, String>,
    #[serde(default)]
    workdir: Option<String>,
    #[serde(default)]
    user: Option<Spanned<String>>,
    /// Seconds.
    #[serde(default)]
    timeout: Option<u64>,
    /// Secrets (`--secret id=NAME,…`) the rule sees at /run/secrets/NAME.
    #[serde(default)]
    secrets: Vec<Spanned<String>>,
    /// Cache mounts of this rule (beside the builder's).
    #[serde(default)]
    cache: IndexMap<String, Spanned<RawCache>>,
    /// Tapeouts the rule reads, mounted read-only: `"/target" = "tapeout.NAME"`.
    #[serde(default)]
    mounts: IndexMap<String, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTapeout {
    /// The builder it selects from (default: that of its `after` rules).
    #[serde(default)]
    builder: Option<Spanned<String>>,
    #[serde(default)]
    after: Vec<Spanned<String>>,
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    elf_closure: bool,
    #[serde(default)]
    remap: IndexMap<String, String>,
    #[serde(default)]
    owner: Option<Spanned<String>>,
    #[serde(default)]
    mode: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawImage {
    #[serde(default)]
    from: Option<Spanned<String>>,
    /// The image is this builder's state (its base's layers and one layer
    /// per rule it ran), then its tapeouts.
    #[serde(default)]
    builder: Option<Spanned<String>>,
    /// With `builder`: the state after this rule (default: its last).
    #[serde(default)]
    after: Option<Spanned<String>>,
    #[serde(default)]
    tapeouts: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    layer_per_tapeout: bool,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: IndexMap<String, String>,
    #[serde(default)]
    workdir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    ports: Vec<String>,
    #[serde(default)]
    volumes: Vec<String>,
    #[serde(default)]
    labels: IndexMap<String, String>,
    #[serde(default)]
    annotations: IndexMap<String, String>,
    #[serde(default)]
    stop_signal: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "B: Deserialize<'de>"))]
struct RawSpec<B> {
    #[serde(default)]
    builder: Option<B>,
    #[serde(default)]
    build: IndexMap<String, Spanned<RawBuild>>,
    #[serde(default)]
    tapeout: IndexMap<String, Spanned<RawTapeout>>,
    #[serde(default)]
    image: IndexMap<String, Spanned<RawImage>>,
    #[serde(default)]
    pod: IndexMap<String, Spanned<pod::RawPod>>,
}

/// A bind of a host source into the builder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub host: PathBuf,
    pub target: PathBuf,
    pub writable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    Build,
    Tapeout,
}

impl TapeoutRule {
    /// How messages name its builder: ` (NAME)`, or nothing.
    pub fn builder_label(&self) -> String {
        if self.builder.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.builder)
        }
    }
}

/// A build rule (runs a command in the builder).
#[derive(Debug, Clone)]
pub struct BuildRule {
    pub name: String,
    pub run: String,
    pub env: Vec<(String, String)>,
    pub workdir: PathBuf,
    pub user: (u32, u32),
    pub timeout: Option<u64>,
    /// Names of the secrets the rule sees (only the names are in its key).
    pub secrets: Vec<String>,
    /// Cache mounts (the builder's, then the rule's; never in its key).
    pub cache: Vec<cache_mount::CacheMount>,
    /// Tapeouts mounted read-only.
    pub mounts: Vec<TapeoutMount>,
    /// A rule that copies instead of running `run` (a Containerfile's
    /// COPY and ADD).
    pub copy: Option<CopySpec>,
    /// What runs, when not `/bin/sh -c RUN` (a Containerfile's exec form,
    /// or its SHELL).
    pub argv: Option<Vec<String>>,
    /// The rule's own network (a Containerfile's `RUN --network`), else
    /// its builder's.
    pub network: Option<crate::sandbox::job::Network>,
    /// A Containerfile's `USER` that names a user or group (or a UID
    /// whose primary group the image says): looked up in the builder's
    /// own `/etc/passwd` and `/etc/group` when the rule runs, since an
    /// earlier rule may have made the user; `user` is then unused. The
    /// key holds the text, not the ids.
    pub user_name: Option<String>,
    /// A heredoc script with `#!` (a Containerfile's `RUN <<EOF`): written
    /// to a file and executed, so its own interpreter runs it.
    pub script: Option<Box<Script>>,
    /// Where the rule was written, when that is not its name
    /// (`Containerfile:7: RUN`): a failure names it. Not in its key.
    pub origin: Option<String>,
    /// Empty tmpfs mounts for this run only (a Containerfile's
    /// `RUN --mount=type=tmpfs`): in the key, never in a layer.
    pub tmpfs: Vec<crate::sandbox::job::Tmpfs>,
    /// Host paths mounted for this run only (a Containerfile's
    /// `RUN --mount=type=bind` of the build context).
    pub binds: Vec<ContextBind>,
}

/// A directory or file of the build context mounted into one rule:
/// read-only, or (`writable`) a copy whose writes are thrown away after
/// the rule. Its content is in the rule's key, its host path is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextBind {
    pub host: PathBuf,
    pub target: PathBuf,
    pub writable: bool,
    /// Paths under `host` the ignore file excludes: the rule does not see
    /// them.
    pub exclude: Vec<PathBuf>,
}

/// A script a rule executes: it is mounted read-only at
/// [`Script::DIR`]`/NAME`, mode 0755, where BuildKit puts it too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub name: String,
    pub content: String,
}

impl Script {
    pub const DIR: &'static str = "/dev/pipes";
}

impl BuildRule {
    /// The tapeouts the rule reads (mounted, or copied from), with the
    /// name its key gives each.
    pub fn tapeouts_read(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = (self.mounts.iter())
            .map(|m| (format!("tapeout:{}", m.target.display()), m.tapeout.clone()))
            .collect();
        for (i, item) in self.copy.iter().flat_map(|c| c.items.iter()).enumerate() {
            if let CopyFrom::Tapeout { name, .. } = &item.from {
                out.push((format!("tapeout:copy{i}"), name.clone()));
            }
        }
        out
    }
}

/// A tapeout's staged files mounted read-only into a rule:
/// `"/target" = "tapeout.NAME"` (the whole tree) or
/// `"tapeout.NAME/PATH"` (that directory of it, as BuildKit's
/// `RUN --mount=from=STAGE,source=PATH`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TapeoutMount {
    pub target: PathBuf,
    pub tapeout: String,
    /// Absolute, in the tapeout's tree.
    pub path: PathBuf,
}

/// What a copying rule copies, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySpec {
    pub items: Vec<CopySource>,
    /// The owner of what is copied (`--chown`; root by default).
    pub owner: (u32, u32),
    /// Its mode (`--chmod`), else the source's.
    pub mode: Option<u32>,
    /// Directories to make if missing (a Containerfile's WORKDIR), owned
    /// by `owner`.
    pub dirs: Vec<PathBuf>,
    /// `--chown` (or the WORKDIR's user) as names, looked up in the
    /// builder's own `/etc/passwd` and `/etc/group` when the copy runs;
    /// `owner` is then unused.
    pub owner_name: Option<String>,
}

/// One source of a copy, and where it goes in the builder (a file's
/// path, or the directory a directory's contents go into).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySource {
    pub from: CopyFrom,
    pub to: PathBuf,
    /// Paths under a directory source left out (`.dockerignore`), as
    /// paths relative to it.
    pub exclude: Vec<PathBuf>,
    /// A tar archive (plain, gzip or zstd) unpacked into `to`, as `ADD`
    /// does with a local one.
    pub unpack: bool,
}

/// Where a copy's source is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyFrom {
    /// A host path (the build context's): its content is in the key, not
    /// the path.
    Host(PathBuf),
    /// A path in a tapeout's staged tree (another stage's files).
    Tapeout { name: String, path: PathBuf },
    /// A file given inline (`COPY <<EOF`): its name (used when copied into
    /// a directory) and content, which is in the key.
    Inline { name: String, content: String },
}

/// A tapeout rule (selects what images keep).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TapeoutRule {
    pub name: String,
    /// The builder it selects from, when builders are named (not in the
    /// key of a spec with one unnamed builder, whose keys stay as they
    /// were).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub builder: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub elf_closure: bool,
    /// Builder path prefix → image path prefix, longest first.
    pub remap: Vec<(PathBuf, PathBuf)>,
    pub owner: Option<(u32, u32)>,
    pub mode: Option<u32>,
}

/// An image to assemble.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub name: String,
    pub tag: String,
    /// The runtime base (with `builder`: that builder's first base).
    pub from: String,
    /// The builder state the image is (`builder = "NAME"`): its rules'
    /// layers come after the base's, before the tapeouts'.
    pub builder: Option<BuilderState>,
    /// The builder's rules' layers merged into one (a Containerfile's
    /// `--squash`): the base's layers kept, the build's own changes one
    /// layer, deletions of the base's files kept as whiteouts.
    pub squash: bool,
    /// Give the config the usual `PATH` when neither the base nor `env`
    /// has one, as Docker and BuildKit do for a Containerfile.
    pub default_path: bool,
    pub tapeouts: Vec<String>,
    pub layer_per_tapeout: bool,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub ports: Vec<String>,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    /// The config's `author` (a Containerfile's MAINTAINER).
    pub author: Option<String>,
    /// Replaces the base's health check (a Containerfile's HEALTHCHECK).
    pub healthcheck: Option<shipyard_image::oci::config::Healthcheck>,
    /// The image's ONBUILD triggers. The base's are never kept: an image
    /// built on a base does not pass its triggers on, as with Docker.
    pub on_build: Vec<String>,
}

/// One step of the plan, in run order. A plan holds one step per rule or
/// instruction, so a rule's size beside a tapeout's costs nothing worth a
/// box at every use.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Step {
    Build(BuildRule),
    Tapeout(TapeoutRule),
}

impl Step {
    pub fn id(&self) -> String {
        match self {
            Step::Build(b) => format!("build.{}", b.name),
            Step::Tapeout(t) => format!("tapeout.{}", t.name),
        }
    }
}

/// A builder's state after some of its steps: what `from =
/// "builder:NAME"` starts from and what an image's `builder` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuilderState {
    /// Index into `plan.builders`.
    pub builder: usize,
    /// How many of its steps the state follows (`steps[..upto]`).
    pub upto: usize,
}

/// One builder: a base and the steps that run in it, in order.
#[derive(Debug, Clone)]
pub struct Builder {
    /// `[builder.NAME]`; empty for the single `[builder]` table.
    pub name: String,
    /// host, scratch, rootfs:DIR, an image, or `builder:NAME`.
    pub from: String,
    /// `from = "builder:NAME"`: the state it starts from.
    pub parent: Option<BuilderState>,
    /// The builders that must be done before it runs (indices into
    /// `plan.builders`, all before it): its parent, those whose
    /// tapeouts its rules mount, those of rules its rules are `after`.
    pub deps: Vec<usize>,
    pub sources: Vec<Source>,
    pub network: crate::sandbox::job::Network,
    pub env: Vec<(String, String)>,
    /// Bind the host's CA bundle into the builder (`host-ca = true`).
    pub host_ca: bool,
    /// Build and tapeout rules in a stable topological order.
    pub steps: Vec<Step>,
}

impl Builder {
    /// How the build log names it: `(NAME)` after a step, nothing for
    /// the single unnamed builder.
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.name)
        }
    }
}

/// A checked `shipyard.toml`.
#[derive(Debug, Clone)]
pub struct Plan {
    pub dir: PathBuf,
    /// Every builder, each after those it depends on.
    pub builders: Vec<Builder>,
    pub images: Vec<ImageSpec>,
    pub pods: Vec<PodSpec>,
}

impl Plan {
    /// The builder a tapeout is taken from, and its step index there.
    pub fn tapeout(&self, name: &str) -> Option<(usize, usize)> {
        self.builders.iter().enumerate().find_map(|(b, bl)| {
            let i = bl
                .steps
                .iter()
                .position(|s| matches!(s, Step::Tapeout(t) if t.name == name))?;
            Some((b, i))
        })
    }

    /// The build rules a state is made of, oldest first, as (builder,
    /// step index): its ancestors' then its own.
    pub fn lineage(&self, state: BuilderState) -> Vec<(usize, usize)> {
        let b = &self.builders[state.builder];
        let mut out = b.parent.map(|p| self.lineage(p)).unwrap_or_default();
        for (i, s) in b.steps[..state.upto].iter().enumerate() {
            if matches!(s, Step::Build(_)) {
                out.push((state.builder, i));
            }
        }
        out
    }

    /// The first base of a builder (through `builder:` parents).
    pub fn root_from(&self, builder: usize) -> &str {
        let b = &self.builders[builder];
        match b.parent {
            Some(p) => self.root_from(p.builder),
            None => &b.from,
        }
    }

    /// Every step of every builder, with its builder's index.
    pub fn all_steps(&self) -> impl Iterator<Item = (usize, &Step)> {
        self.builders
            .iter()
            .enumerate()
            .flat_map(|(b, bl)| bl.steps.iter().map(move |s| (b, s)))
    }
}

/// The cache mounts of a `cache` table, checked: absolute targets
/// without `..`, plain ids, a known sharing mode.
fn cache_mounts(
    cx: &Ctx<'_>,
    key: &str,
    raw: &IndexMap<String, Spanned<RawCache>>,
) -> Result<Vec<cache_mount::CacheMount>, SpecError> {
    let mut out = Vec::new();
    for (target, m) in raw {
        crate::sandbox::job::Bind::check_target(target)
            .map_err(|why| cx.err(m.span(), format!("{key}: {target:?}: {why}")))?;
        let (id, sharing) = match m.get_ref() {
            RawCache::Id(id) => (id.clone(), None),
            RawCache::Full { id, sharing } => (id.clone(), sharing.clone()),
        };
        crate::sandbox::job::Secret::check_name(&id).map_err(|why| {
            cx.err(
                m.span(),
                format!(
                    "{key}.{target:?}: id {id:?}: {}",
                    why.replace("secret", "cache")
                ),
            )
        })?;
        let sharing = match sharing {
            Some(s) => s
                .parse()
                .map_err(|why| cx.err(m.span(), format!("{key}.{target:?}: {why}")))?,
            None => Default::default(),
        };
        out.push(cache_mount::CacheMount {
            target: PathBuf::from(target),
            id,
            sharing,
        });
    }
    Ok(out)
}

/// Edit distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| c)
}

pub(crate) struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    pub(crate) fn err(&self, span: std::ops::Range<usize>, msg: impl Into<String>) -> SpecError {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        SpecError {
            file: self.file.to_string(),
            line,
            col,
            msg: msg.into(),
        }
    }
}

/// Reads and checks a spec file. `sets` are `--set KEY=VALUE` overrides:
/// `label.NAME=V` and `annotation.NAME=V` apply to every image; any other
/// KEY becomes a build argument, available to every rule as `$KEY`.
pub fn load(path: &Path, sets: &[(String, String)]) -> Result<Plan, SpecError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SpecError {
        file: file.clone(),
        line: 0,
        col: 0,
        msg: format!("cannot read: {e}"),
    })?;
    parse(&text, &file, path.parent().unwrap_or(Path::new(".")), sets)
}

/// Parses spec text; `dir` is what relative source paths are relative to.
pub fn parse(
    text: &str,
    file: &str,
    dir: &Path,
    sets: &[(String, String)],
) -> Result<Plan, SpecError> {
    let cx = Ctx { file, text };
    let raw = builders::parse_raw(&cx)?;
    let sets_all = Sets::split(Vec::new(), sets);

    // Every rule, with the builder it runs in.
    let mut rules = Rules::default();
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    let no_builders = IndexMap::new();
    let bmap = raw.builder.as_ref().unwrap_or(&no_builders);
    let names: Vec<&str> = bmap.keys().map(String::as_str).collect();
    let caches = bmap
        .iter()
        .map(|(n, b)| {
            cache_mounts(
                &cx,
                &format!("{}.cache", builders::key(n)),
                &b.get_ref().cache,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (name, b) in &raw.build {
        let r = b.get_ref();
        let which = builders::which(
            &cx,
            &format!("build.{name}"),
            r.builder.as_ref(),
            &names,
            b.span(),
        )?;
        let rule = build_rule(&cx, name, r, &caches[which])?;
        for (m, (_, spanned)) in rule.mounts.iter().zip(&r.mounts) {
            let (target, t) = (&m.target, &m.tapeout);
            if !raw.tapeout.contains_key(t) {
                let hint = did_you_mean(t, raw.tapeout.keys().map(String::as_str))
                    .map(|s| format!("; did you mean `tapeout.{s}`?"))
                    .unwrap_or_default();
                return Err(cx.err(
                    spanned.span(),
                    format!("build.{name}.mounts.{target:?}: unknown tapeout `{t}`{hint}"),
                ));
            }
        }
        let mut after = r.after.clone();
        // A mounted tapeout of the same builder comes before the rule.
        after.extend(
            rule.mounts
                .iter()
                .map(|m| Spanned::new(b.span(), format!("tapeout.{}", m.tapeout))),
        );
        rules.add(format!("build.{name}"), b.span(), &after, Step::Build(rule));
        owner.insert(format!("build.{name}"), which);
    }
    for (name, t) in &raw.tapeout {
        let rule = tapeout_rule(&cx, name, t)?;
        rules.add(
            format!("tapeout.{name}"),
            t.span(),
            &t.get_ref().after,
            Step::Tapeout(rule),
        );
    }
    rules.check_known(&cx)?;
    builders::tapeout_owners(&cx, &raw, &names, &mut owner)?;
    rules.name_builders(&owner, &names);
    let (steps, edges) = rules.per_builder(&cx, &owner, names.len())?;

    let mut built: Vec<Builder> = Vec::new();
    for (i, (name, b)) in bmap.iter().enumerate() {
        let rb = b.get_ref();
        let bkey = builders::key(name);
        let env = Sets::split(rb.env.clone().into_iter().collect(), sets).env;
        built.push(Builder {
            name: name.clone(),
            from: builder_from(&cx, &bkey, rb, dir)?,
            parent: None,
            deps: Vec::new(),
            sources: builder_sources(&cx, &bkey, rb, dir)?,
            network: builder_network(&cx, &bkey, rb)?,
            env,
            host_ca: rb.host_ca,
            steps: steps[i].clone(),
        });
    }
    let order = builders::order(&cx, &raw, &mut built, edges)?;
    let built = builders::reorder(built, &order);
    let mut plan = Plan {
        dir: dir.to_path_buf(),
        builders: built,
        images: Vec::new(),
        pods: Vec::new(),
    };
    let tapeout_names: Vec<&str> = raw.tapeout.keys().map(String::as_str).collect();
    for (name, img) in &raw.image {
        let spec = image_spec(&cx, name, img, &raw, &plan, dir, &sets_all)?;
        plan.images.push(spec);
    }
    let image_names: Vec<&str> = raw.image.keys().map(String::as_str).collect();
    plan.pods = pod::parse_pods(&cx, &raw.pod, dir, &image_names, &tapeout_names)?;
    Ok(plan)
}

/// The TOML itself, with its errors made readable: an unknown key gets a
/// "did you mean", any other error names the key it is at.
fn parse_toml<B: serde::de::DeserializeOwned>(cx: &Ctx) -> Result<RawSpec<B>, SpecError> {
    let text = cx.text;
    toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let mut msg = e.message().trim().to_string();
        if let Some(rest) = msg.strip_prefix("unknown field `") {
            if let Some((word, tail)) = rest.split_once('`') {
                let cands: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
                if let Some(s) = did_you_mean(word, cands) {
                    msg = format!("unknown key `{word}`; did you mean `{s}`?");
                } else {
                    msg = format!("unknown key `{word}`{tail}");
                }
            }
        } else if let Some(key) = key_at(text, span.start) {
            msg = format!("`{key}`: {msg}");
        }
        cx.err(span, msg)
    })
}

fn builder_from(
    cx: &Ctx,
    bkey: &str,
    builder: &RawBuilder,
    dir: &Path,
) -> Result<String, SpecError> {
    let from = relative_to(builder.from.get_ref(), dir);
    if let Some(after) = &builder.after {
        if !from.starts_with("builder:") {
            return Err(cx.err(
                after.span(),
                format!(
                    "{bkey}.after: only a builder with from = \"builder:NAME\" starts after a rule"
                ),
            ));
        }
    }
    if !(from == "host"
        || from == "scratch"
        || from.starts_with("rootfs:")
        || from.starts_with("builder:"))
    {
        if let Err(e) = shipyard_image::reference::Reference::parse(&from) {
            return Err(cx.err(
                builder.from.span(),
                format!("{bkey}.from = {from:?}: expected host, scratch, rootfs:DIR, builder:NAME or an image (oci:DIR[:TAG], docker://REPO[:TAG], oci-archive:FILE, docker-archive:FILE): {e}"),
            ));
        }
    }
    Ok(from)
}

fn builder_network(
    cx: &Ctx,
    bkey: &str,
    builder: &RawBuilder,
) -> Result<crate::sandbox::job::Network, SpecError> {
    Ok(
        match builder
            .network
            .as_ref()
            .map(|n| (n.get_ref().as_str(), n.span()))
        {
            None | Some(("none", _)) => crate::sandbox::job::Network::None,
            Some(("host", _)) => crate::sandbox::job::Network::Host,
            Some((other, span)) => {
                return Err(cx.err(
                    span,
                    format!("{bkey}.network = {other:?}: expected \"none\" or \"host\""),
                ))
            }
        },
    )
}

fn builder_sources(
    cx: &Ctx,
    bkey: &str,
    builder: &RawBuilder,
    dir: &Path,
) -> Result<Vec<Source>, SpecError> {
    let mut sources = Vec::new();
    for (target, src) in &builder.sources {
        let (p, writable) = match src.get_ref() {
            RawSource::Path(p) => (p.clone(), false),
            RawSource::Full { path, writable } => (path.clone(), *writable),
        };
        let host = dir.join(&p);
        let host = std::fs::canonicalize(&host).map_err(|_| {
            cx.err(
                src.span(),
                format!(
                    "{bkey}.sources.\"{target}\": {} does not exist",
                    host.display()
                ),
            )
        })?;
        if let Err(why) = crate::sandbox::job::Bind::check_target(target) {
            return Err(cx.err(src.span(), format!("{bkey}.sources.\"{target}\": {why}")));
        }
        sources.push(Source {
            host,
            target: PathBuf::from(target),
            writable,
        });
    }
    Ok(sources)
}

/// `--set KEY=VALUE` split by what it sets: labels and annotations of
/// every image, or a build argument (an environment variable of every
/// rule, replacing the builder's own of that name).
struct Sets {
    env: Vec<(String, String)>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

impl Sets {
    fn split(mut env: Vec<(String, String)>, sets: &[(String, String)]) -> Sets {
        let mut labels = BTreeMap::new();
        let mut annotations = BTreeMap::new();
        for (k, v) in sets {
            if let Some(l) = k.strip_prefix("label.") {
                labels.insert(l.to_string(), v.clone());
            } else if let Some(a) = k.strip_prefix("annotation.") {
                annotations.insert(a.to_string(), v.clone());
            } else {
                env.retain(|(ek, _)| ek != k);
                env.push((k.clone(), v.clone()));
            }
        }
        Sets {
            env,
            labels,
            annotations,
        }
    }
}

type Span = std::ops::Range<usize>;

/// The rules as written, with their `after` dependencies and spans, to be
/// put in order.
#[derive(Default)]
struct Rules {
    ids: Vec<(String, Span)>,
    deps: BTreeMap<String, Vec<(String, Span)>>,
    steps: BTreeMap<String, Step>,
}

impl Rules {
    fn add(&mut self, id: String, span: Span, after: &[Spanned<String>], step: Step) {
        let deps = after
            .iter()
            .map(|a| (a.get_ref().clone(), a.span()))
            .collect();
        self.deps.insert(id.clone(), deps);
        self.ids.push((id.clone(), span));
        self.steps.insert(id, step);
    }

    /// Tells each tapeout its builder's name, for its messages.
    fn name_builders(&mut self, owner: &BTreeMap<String, usize>, names: &[&str]) {
        for (id, step) in self.steps.iter_mut() {
            if let (Step::Tapeout(t), Some(&b)) = (step, owner.get(id)) {
                t.builder = names[b].to_string();
            }
        }
    }

    /// Every `after` names a rule that exists.
    fn check_known(&self, cx: &Ctx) -> Result<(), SpecError> {
        let known: Vec<&str> = self.ids.iter().map(|(i, _)| i.as_str()).collect();
        for (id, ds) in &self.deps {
            for (d, span) in ds {
                if !self.steps.contains_key(d) {
                    let hint = did_you_mean(d, known.iter().copied())
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    return Err(cx.err(span.clone(), format!("{id}.after: unknown rule `{d}` (rules are named build.NAME or tapeout.NAME){hint}")));
                }
            }
        }
        Ok(())
    }

    /// Each builder's steps in a stable topological order: always the
    /// first ready rule, builds before tapeouts (the seeds' phases), each
    /// group in the order written. An `after` naming another builder's
    /// rule orders the builders instead: the returned edges are
    /// (dependency, dependent) builder pairs.
    #[allow(clippy::type_complexity)]
    fn per_builder(
        mut self,
        cx: &Ctx,
        owner: &BTreeMap<String, usize>,
        builders: usize,
    ) -> Result<(Vec<Vec<Step>>, BTreeSet<(usize, usize)>), SpecError> {
        let mut edges = BTreeSet::new();
        let mut out = Vec::new();
        for b in 0..builders {
            let ids: Vec<(String, Span)> = (self.ids.iter())
                .filter(|(i, _)| owner.get(i) == Some(&b))
                .cloned()
                .collect();
            let mut deps = BTreeMap::new();
            for (id, _) in &ids {
                let mut own = Vec::new();
                for (d, span) in &self.deps[id] {
                    match owner.get(d) {
                        Some(&o) if o == b => own.push((d.clone(), span.clone())),
                        Some(&o) => {
                            edges.insert((o, b));
                        }
                        None => {}
                    }
                }
                deps.insert(id.clone(), own);
            }
            let order = order_ids(cx, &ids, &deps)?;
            out.push(
                order
                    .into_iter()
                    .filter_map(|id| self.steps.remove(&id))
                    .collect(),
            );
        }
        Ok((out, edges))
    }
}

/// `ids` in a stable topological order of `deps`; a cycle is an error
/// that prints it.
fn order_ids(
    cx: &Ctx,
    ids: &[(String, Span)],
    deps: &BTreeMap<String, Vec<(String, Span)>>,
) -> Result<Vec<String>, SpecError> {
    let mut order: Vec<String> = Vec::new();
    let mut done: std::collections::HashSet<String> = Default::default();
    while order.len() < ids.len() {
        let next = ids
            .iter()
            .find(|(id, _)| !done.contains(id) && deps[id].iter().all(|(d, _)| done.contains(d)));
        match next {
            Some((id, _)) => {
                done.insert(id.clone());
                order.push(id.clone());
            }
            None => {
                let cycle = find_cycle(ids, deps, &done);
                let span = ids
                    .iter()
                    .find(|(i, _)| Some(i) == cycle.first())
                    .map(|(_, s)| s.clone())
                    .unwrap_or(0..0);
                return Err(cx.err(span, format!("dependency cycle: {}", cycle.join(" -> "))));
            }
        }
    }
    Ok(order)
}

fn build_rule(
    cx: &Ctx,
    name: &str,
    r: &RawBuild,
    builder_cache: &[cache_mount::CacheMount],
) -> Result<BuildRule, SpecError> {
    let user = match &r.user {
        Some(u) => parse_owner(u.get_ref()).ok_or_else(|| {
            cx.err(
                u.span(),
                format!(
                    "build.{name}.user = {:?}: expected UID or UID:GID (numbers)",
                    u.get_ref()
                ),
            )
        })?,
        None => (0, 0),
    };
    let mut cache = builder_cache.to_vec();
    for m in cache_mounts(cx, &format!("build.{name}.cache"), &r.cache)? {
        cache.retain(|c: &cache_mount::CacheMount| c.target != m.target);
        cache.push(m);
    }
    let mut mounts = Vec::new();
    for (target, t) in &r.mounts {
        crate::sandbox::job::Bind::check_target(target)
            .map_err(|why| cx.err(t.span(), format!("build.{name}.mounts: {target:?}: {why}")))?;
        let Some(rest) = t.get_ref().strip_prefix("tapeout.") else {
            return Err(cx.err(
                t.span(),
                format!(
                    "build.{name}.mounts.{target:?} = {:?}: expected a tapeout, tapeout.NAME or tapeout.NAME/PATH",
                    t.get_ref()
                ),
            ));
        };
        let (tn, path) = match rest.split_once('/') {
            Some((n, p)) => (n, format!("/{p}")),
            None => (rest, "/".to_string()),
        };
        if Path::new(&path)
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(cx.err(
                t.span(),
                format!("build.{name}.mounts.{target:?}: {path:?} must not contain '..'"),
            ));
        }
        mounts.push(TapeoutMount {
            target: PathBuf::from(target),
            tapeout: tn.to_string(),
            path: PathBuf::from(path),
        });
    }
    let mut secrets = Vec::new();
    for sec in &r.secrets {
        crate::sandbox::job::Secret::check_name(sec.get_ref()).map_err(|m| {
            cx.err(
                sec.span(),
                format!("build.{name}.secrets: {:?}: {m}", sec.get_ref()),
            )
        })?;
        secrets.push(sec.get_ref().clone());
    }
    Ok(BuildRule {
        name: name.to_string(),
        run: r.run.clone(),
        env: r.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        workdir: PathBuf::from(r.workdir.clone().unwrap_or("/".into())),
        user,
        timeout: r.timeout,
        secrets,
        cache,
        mounts,
        copy: None,
        argv: None,
        network: None,
        user_name: None,
        script: None,
        origin: None,
        tmpfs: Vec::new(),
        binds: Vec::new(),
    })
}

fn tapeout_rule(cx: &Ctx, name: &str, t: &Spanned<RawTapeout>) -> Result<TapeoutRule, SpecError> {
    let r = t.get_ref();
    for g in r.include.iter().chain(&r.exclude) {
        if !g.starts_with('/') {
            return Err(cx.err(
                t.span(),
                format!("tapeout.{name}: pattern {g:?} must be an absolute path"),
            ));
        }
        globset::Glob::new(g)
            .map_err(|e| cx.err(t.span(), format!("tapeout.{name}: bad pattern {g:?}: {e}")))?;
    }
    let owner = match &r.owner {
        Some(o) => Some(parse_owner(o.get_ref()).ok_or_else(|| {
            cx.err(
                o.span(),
                format!(
                    "tapeout.{name}.owner = {:?}: expected UID or UID:GID (numbers)",
                    o.get_ref()
                ),
            )
        })?),
        None => None,
    };
    let mode = match &r.mode {
        Some(m) => Some(
            u32::from_str_radix(m.get_ref().trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| {
                    cx.err(
                        m.span(),
                        format!(
                            "tapeout.{name}.mode = {:?}: expected an octal mode like \"0755\"",
                            m.get_ref()
                        ),
                    )
                })?,
        ),
        None => None,
    };
    let mut remap: Vec<(PathBuf, PathBuf)> = r
        .remap
        .iter()
        .map(|(a, b)| (PathBuf::from(a), PathBuf::from(b)))
        .collect();
    remap.sort_by_key(|(a, _)| std::cmp::Reverse(a.components().count()));
    Ok(TapeoutRule {
        name: name.to_string(),
        builder: String::new(),
        include: r.include.clone(),
        exclude: r.exclude.clone(),
        elf_closure: r.elf_closure,
        remap,
        owner,
        mode,
    })
}

fn image_spec(
    cx: &Ctx,
    name: &str,
    img: &Spanned<RawImage>,
    raw: &builders::Raw,
    plan: &Plan,
    dir: &Path,
    sets: &Sets,
) -> Result<ImageSpec, SpecError> {
    let r = img.get_ref();
    let tapeout_names: Vec<&str> = raw.tapeout.keys().map(String::as_str).collect();
    let tapeouts = match (&r.tapeouts, &r.builder) {
        (Some(t), _) => t.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => {
            return Err(cx.err(
                img.span(),
                format!("image.{name}: missing key `tapeouts` (or `builder`: an image of a builder's state)"),
            ))
        }
    };
    for t in &tapeouts {
        let tn = t.get_ref().strip_prefix("tapeout.").unwrap_or(t.get_ref());
        if !raw.tapeout.contains_key(tn) {
            let hint = did_you_mean(tn, tapeout_names.iter().copied())
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            return Err(cx.err(
                t.span(),
                format!("image.{name}.tapeouts: unknown tapeout `{tn}`{hint}"),
            ));
        }
    }
    let state = builders::image_state(cx, name, r, plan)?;
    let from = match (&r.from, state) {
        (Some(f), Some(_)) => {
            return Err(cx.err(
                f.span(),
                format!("image.{name}: `from` and `builder` both given; an image of a builder starts from that builder's base"),
            ))
        }
        (Some(f), None) => relative_to(f.get_ref(), dir),
        (None, Some(st)) => plan.root_from(st.builder).to_string(),
        (None, None) => "scratch".to_string(),
    };
    if from != "scratch" {
        if let Err(e) = shipyard_image::reference::Reference::parse(&from) {
            let span = r
                .from
                .as_ref()
                .or(r.builder.as_ref())
                .map_or(0..0, |f| f.span());
            return Err(cx.err(
                    span,
                    format!("image.{name}.from = {from:?}: expected scratch or an image (oci:DIR[:TAG], docker://REPO[:TAG], oci-archive:FILE, docker-archive:FILE): {e}"),
                ));
        }
    }
    let mut labels: BTreeMap<String, String> = r
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.extend(sets.labels.clone());
    let mut annotations: BTreeMap<String, String> = r
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.extend(sets.annotations.clone());
    Ok(ImageSpec {
        name: name.to_string(),
        tag: r.tag.clone().unwrap_or_else(|| name.to_string()),
        from,
        builder: state,
        squash: false,
        default_path: false,
        tapeouts: tapeouts
            .iter()
            .map(|t| t.get_ref().trim_start_matches("tapeout.").to_string())
            .collect(),
        layer_per_tapeout: r.layer_per_tapeout,
        entrypoint: r.entrypoint.clone(),
        cmd: r.cmd.clone(),
        env: r.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        workdir: r.workdir.clone(),
        user: r.user.clone(),
        ports: r.ports.clone(),
        volumes: r.volumes.clone(),
        labels,
        annotations,
        stop_signal: r.stop_signal.clone(),
        author: None,
        healthcheck: None,
        on_build: Vec::new(),
    })
}

/// `rootfs:DIR`, `oci:DIR[:TAG]` and the archives with a relative path
/// are relative to the spec's directory, like sources.
pub(crate) fn relative_to(reference: &str, dir: &Path) -> String {
    for scheme in ["rootfs:", "oci:", "oci-archive:", "docker-archive:"] {
        if let Some(rest) = reference.strip_prefix(scheme) {
            if !rest.starts_with('/') && !rest.is_empty() {
                return format!("{scheme}{}", dir.join(rest).display());
            }
        }
    }
    reference.to_string()
}

/// The key a span points into: the `key =` at the start of its line.
fn key_at(text: &str, pos: usize) -> Option<String> {
    let start = text[..pos.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line = &text[start..];
    let line = line.split('\n').next()?;
    let (k, _) = line.split_once('=')?;
    let k = k.trim().trim_matches('"');
    (!k.is_empty() && !k.starts_with('[')).then(|| k.to_string())
}

fn find_cycle(
    ids: &[(String, std::ops::Range<usize>)],
    deps: &BTreeMap<String, Vec<(String, std::ops::Range<usize>)>>,
    done: &std::collections::HashSet<String>,
) -> Vec<String> {
    // Walk unfinished dependencies from the first stuck rule until a rule
    // repeats: that stretch is a cycle.
    let Some((start, _)) = ids.iter().find(|(i, _)| !done.contains(i)) else {
        return Vec::new();
    };
    let mut path = vec![start.clone()];
    loop {
        let cur = path.last().cloned().unwrap_or_default();
        let Some((next, _)) = deps[&cur].iter().find(|(d, _)| !done.contains(d)) else {
            return path;
        };
        if let Some(i) = path.iter().position(|p| p == next) {
            let mut c = path[i..].to_vec();
            c.push(next.clone());
            return c;
        }
        path.push(next.clone());
    }
}

/// `UID` or `UID:GID`.
pub fn parse_owner(s: &str) -> Option<(u32, u32)> {
    match s.split_once(':') {
        Some((u, g)) => Some((u.parse().ok()?, g.parse().ok()?)),
        None => {
            let u = s.parse().ok()?;
            Some((u, u))
        }
    }
}

#[cfg(test)]
mod tests;
