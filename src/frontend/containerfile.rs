//! A Containerfile (Dockerfile) lowered to a [`Plan`]: see the module
//! above for the mapping. What shipyard cannot do yet is refused with the
//! file, line and instruction named, never skipped.

use crate::containerfile::{
    self as cf, ignore::Matcher, Base, Command, FromRef, Instruction, Invocation, MountKind, Source,
};
use crate::project::cache_mount::CacheMount;
use crate::project::{
    BuildRule, Builder, BuilderState, CopyFrom, CopySource, CopySpec, ImageSpec, Plan, Script,
    Step, TapeoutRule,
};
use crate::sandbox::job::Network;
use crate::tapeout::view::normalize;
use shipyard_image::oci::config::Healthcheck;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What `shipyard build -f Containerfile` was given.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Containerfile.
    pub file: PathBuf,
    /// The build context: what COPY and ADD read.
    pub context: PathBuf,
    /// `--target`: the stage to build (the last one by default).
    pub target: Option<String>,
    /// `--build-arg K=V`.
    pub build_args: BTreeMap<String, String>,
    /// The image's name in the output layout (its tag there).
    pub image: String,
    /// `--label`s and `--annotation`s for the image.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `build --network`: the builders' network (a RUN's `--network`
    /// wins), which also says whether ADD may download: with `none`, a
    /// URL is refused.
    pub network: Network,
    /// How a base image's config (ONBUILD triggers, Env) is read;
    /// without it, bases have neither.
    pub base_triggers: Option<BaseTriggers>,
    /// `--squash`: the image is its root base's layers and one layer of
    /// everything the stages changed (see [`Lowering::lower`]).
    pub squash: bool,
}

/// Reads what the frontend needs of a base image's config (its ONBUILD
/// triggers and its Env), given as shipyard names it (`oci:DIR:TAG`,
/// `docker://…`): the caller knows where images come from and how to
/// pull them, the frontend does not. The error is the reason the config
/// could not be read.
#[derive(Clone)]
#[allow(clippy::type_complexity)]
pub struct BaseTriggers(
    pub std::sync::Arc<dyn Fn(&str) -> Result<BaseConfig, String> + Send + Sync>,
);

/// What the frontend reads of a base image's config.
#[derive(Debug, Clone, Default)]
pub struct BaseConfig {
    /// Its ONBUILD triggers (`OnBuild`), run after the FROM.
    pub on_build: Vec<String>,
    /// Its `Env`, as (name, value): Docker substitutes instructions'
    /// `$VAR`s with the base's environment too (`WORKDIR $HOME`).
    pub env: Vec<(String, String)>,
    /// Its `WorkingDir` (empty: none): where the stage's steps start, as
    /// in Docker, until a WORKDIR says otherwise.
    pub workdir: String,
    /// Its `User` (empty: none): whom the stage's steps run as, until a
    /// USER says otherwise.
    pub user: String,
}

impl std::fmt::Debug for BaseTriggers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BaseTriggers")
    }
}

/// Why a Containerfile cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Parse(#[from] cf::Error),
    #[error("{0}")]
    Ignore(String),
    /// An instruction or flag shipyard does not build (yet), or input that
    /// cannot be built (a source outside the context, a missing file).
    #[error("{file}:{line}: {instruction}: {message}")]
    Instruction {
        file: String,
        line: usize,
        instruction: String,
        message: String,
    },
}

type Res<T> = Result<T, FrontendError>;

/// Reads, parses and lowers a Containerfile.
pub fn load(opts: &Options) -> Res<Plan> {
    let name = opts.file.display().to_string();
    let text = std::fs::read_to_string(&opts.file).map_err(|source| FrontendError::Read {
        file: name.clone(),
        source,
    })?;
    let file = cf::parse(&name, &text)?;
    let resolve_opts = cf::ResolveOptions {
        build_args: opts.build_args.clone(),
        target: opts.target.clone(),
        ..Default::default()
    };
    let (resolved, triggers) = with_triggers(file, resolve_opts, opts)?;
    let ignore = ignore_matcher(opts)?;
    let context = std::fs::canonicalize(&opts.context).map_err(|source| FrontendError::Read {
        file: opts.context.display().to_string(),
        source,
    })?;
    Lowering {
        file: name,
        context,
        ignore,
        network: opts.network,
        resolved: &resolved,
        triggers,
        builders: Vec::new(),
        index: BTreeMap::new(),
        states: BTreeMap::new(),
        images: BTreeMap::new(),
    }
    .lower(opts)
}

/// The ONBUILD triggers a stage runs right after its FROM: whose they
/// are (the base image, or the earlier stage) and their texts.
#[derive(Debug, Clone)]
struct Triggers {
    of: String,
    texts: Vec<String>,
    /// The base image's WorkingDir and User (empty when none, or when
    /// the base is a stage, whose state the lowering has).
    workdir: String,
    user: String,
}

/// Resolves the file with the ONBUILD triggers of each needed stage's
/// base put right after its FROM, as Docker runs them: a base image's
/// (its config's `OnBuild`), or an earlier stage's own ONBUILDs (BuildKit
/// runs those too). Triggers may use other stages (`COPY --from`), which
/// may have triggers of their own: resolved again until no needed stage
/// is left without its triggers. A base image's Env, read with its
/// triggers, is given to the resolutions after that (a stage's base is
/// read before its last resolution), so substitutions see it as Docker's.
fn with_triggers(
    mut file: cf::Containerfile,
    mut resolve_opts: cf::ResolveOptions,
    opts: &Options,
) -> Res<(cf::Resolved, BTreeMap<usize, Triggers>)> {
    let mut done: BTreeMap<usize, Triggers> = BTreeMap::new();
    loop {
        let resolved = match cf::resolve(&file, &resolve_opts) {
            Ok(r) => r,
            Err(e) => return Err(trigger_error(e, &resolved_froms(&file), &done)),
        };
        let todo: Vec<usize> = (resolved.needed.iter())
            .filter(|s| !done.contains_key(s))
            .copied()
            .collect();
        if todo.is_empty() {
            return Ok((resolved, done));
        }
        // Later stages first, so the FROM positions of earlier ones hold.
        for &s in todo.iter().rev() {
            let stage = &resolved.stages[s];
            let from_err = |message: String| FrontendError::Instruction {
                file: file.file.clone(),
                line: stage.line,
                instruction: "FROM".into(),
                message,
            };
            let t = match &stage.base {
                cf::Base::Scratch => Triggers {
                    of: "scratch".into(),
                    texts: Vec::new(),
                    workdir: String::new(),
                    user: String::new(),
                },
                cf::Base::Stage(p) => Triggers {
                    of: format!("stage {}", stage_label(&resolved, *p)),
                    texts: (resolved.stages[*p].steps.iter())
                        .filter_map(|st| match &st.instruction {
                            Instruction::Onbuild(t) => Some(t.original.clone()),
                            _ => None,
                        })
                        .collect(),
                    workdir: String::new(),
                    user: String::new(),
                },
                cf::Base::Image(written) => {
                    let r = image_ref(written);
                    let config = match &opts.base_triggers {
                        Some(BaseTriggers(read)) => read(&r).map_err(|m| {
                            from_err(format!("{r}: reading its config for ONBUILD triggers: {m}"))
                        })?,
                        None => BaseConfig::default(),
                    };
                    (resolve_opts.image_env).insert(written.clone(), config.env);
                    Triggers {
                        of: r,
                        texts: config.on_build,
                        workdir: config.workdir,
                        user: config.user,
                    }
                }
            };
            let mut parsed = Vec::new();
            for text in &t.texts {
                let mut l = cf::parse_trigger(text)
                    .map_err(|m| from_err(format!("ONBUILD trigger {text:?} of {}: {m}", t.of)))?;
                (l.line, l.end_line) = (stage.line, stage.line);
                parsed.push(l);
            }
            let at = (file.instructions.iter())
                .enumerate()
                .filter(|(_, l)| matches!(l.instruction, Instruction::From { .. }))
                .nth(s)
                .map(|(i, _)| i + 1)
                .ok_or_else(|| from_err("no such stage".into()))?;
            file.instructions.splice(at..at, parsed);
            done.insert(s, t);
        }
    }
}

/// The line of each FROM, by stage index.
fn resolved_froms(file: &cf::Containerfile) -> Vec<usize> {
    (file.instructions.iter())
        .filter(|l| matches!(l.instruction, Instruction::From { .. }))
        .map(|l| l.line)
        .collect()
}

/// A resolution error in a trigger (on its stage's FROM line, and not
/// about FROM) names the trigger and whose it is.
fn trigger_error(e: cf::Error, froms: &[usize], done: &BTreeMap<usize, Triggers>) -> FrontendError {
    if let cf::Error::Instruction {
        file,
        line,
        instruction,
        message,
    } = &e
    {
        let stage = froms.iter().position(|l| l == line);
        if let Some(t) = stage.and_then(|s| done.get(&s)) {
            let text = (t.texts.iter()).find(|x| {
                x.split_whitespace()
                    .next()
                    .is_some_and(|k| k.eq_ignore_ascii_case(instruction))
            });
            if instruction != "FROM" {
                if let Some(text) = text {
                    return FrontendError::Instruction {
                        file: file.clone(),
                        line: *line,
                        instruction: "FROM".into(),
                        message: format!(
                            "ONBUILD trigger {text:?} of {}: {instruction}: {message}",
                            t.of
                        ),
                    };
                }
            }
        }
    }
    e.into()
}

/// A stage as a message names it: `AS` name, else its index.
fn stage_label(resolved: &cf::Resolved, s: usize) -> String {
    match &resolved.stages[s].name {
        Some(n) => n.clone(),
        None => s.to_string(),
    }
}

/// The first ignore file found (`NAME.containerignore`,
/// `NAME.dockerignore`, `.containerignore`, `.dockerignore`).
fn ignore_matcher(opts: &Options) -> Res<Option<Matcher>> {
    for c in cf::ignore::candidates(&opts.file, &opts.context) {
        if let Ok(text) = std::fs::read_to_string(&c) {
            let m = Matcher::parse(&c.display().to_string(), &text)
                .map_err(|e| FrontendError::Ignore(e.to_string()))?;
            return Ok(Some(m));
        }
    }
    Ok(None)
}

/// What a stage has set so far, which the next instruction (and a stage
/// built on it) starts from.
#[derive(Debug, Clone)]
struct StageState {
    env: Vec<(String, String)>,
    workdir: PathBuf,
    /// WORKDIR as the config says it: an absolute one as written (a
    /// trailing `/` kept), a relative one joined onto the last and
    /// cleaned, as buildah and BuildKit write it.
    workdir_text: String,
    workdir_set: bool,
    user: (u32, u32),
    /// A `USER` the builder's files resolve (a name, or a UID alone).
    user_name: Option<String>,
    user_text: Option<String>,
    shell: Vec<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    ports: Vec<String>,
    volumes: Vec<String>,
    labels: BTreeMap<String, String>,
    stop_signal: Option<String>,
    /// MAINTAINER: the config's author.
    author: Option<String>,
    healthcheck: Option<Healthcheck>,
    /// This stage's `ONBUILD` triggers, as their text.
    on_build: Vec<String>,
}

impl Default for StageState {
    fn default() -> Self {
        StageState {
            env: Vec::new(),
            workdir: PathBuf::from("/"),
            workdir_text: "/".into(),
            workdir_set: false,
            user: (0, 0),
            user_name: None,
            user_text: None,
            shell: vec!["/bin/sh".into(), "-c".into()],
            entrypoint: None,
            cmd: None,
            ports: Vec::new(),
            volumes: Vec::new(),
            labels: BTreeMap::new(),
            stop_signal: None,
            author: None,
            healthcheck: None,
            on_build: Vec::new(),
        }
    }
}

struct Lowering<'a> {
    file: String,
    context: PathBuf,
    ignore: Option<Matcher>,
    network: Network,
    resolved: &'a cf::Resolved,
    /// Each needed stage's base's ONBUILD triggers: the first steps of
    /// the stage.
    triggers: BTreeMap<usize, Triggers>,
    builders: Vec<Builder>,
    /// Stage index → builder index.
    index: BTreeMap<usize, usize>,
    /// Stage index → what it set, at its end.
    states: BTreeMap<usize, StageState>,
    /// An image a `--from` names (as shipyard names images) → the builder
    /// made from it, whose tapeouts hold its files.
    images: BTreeMap<String, usize>,
}

impl Lowering<'_> {
    fn lower(mut self, opts: &Options) -> Res<Plan> {
        // Images named by `--from` first: a builder's keys are computed
        // after those of the builders it reads tapeouts from.
        for &s in &self.resolved.needed {
            for step in &self.resolved.stages[s].steps {
                let froms = step
                    .copy_from
                    .iter()
                    .chain(step.mount_from.iter().flatten());
                for f in froms {
                    if let FromRef::Image(r) = f {
                        self.image_builder(r);
                    }
                }
            }
        }
        for &s in &self.resolved.needed {
            self.stage(s)?;
        }
        // Parents' states: after every step of the parent (tapeouts a
        // later stage added to it change nothing of its state).
        let lens: Vec<usize> = self.builders.iter().map(|b| b.steps.len()).collect();
        for b in &mut self.builders {
            if let Some(p) = b.parent.as_mut() {
                p.upto = lens[p.builder];
            }
        }
        let target = self.resolved.target;
        let tb = self.index[&target];
        let st = self.states.remove(&target).unwrap_or_default();
        let mut labels = st.labels.clone();
        labels.extend(opts.labels.clone());
        let mut plan = Plan {
            dir: self.context.clone(),
            builders: self.builders,
            images: Vec::new(),
            pods: Vec::new(),
        };
        // --squash, as Docker's: the base image's layers are kept and the
        // stage chain's per-rule layers are merged into one (deletions
        // of the base's files kept as whiteouts). buildah's --squash
        // would squash the base's layers too; Docker's keeps them
        // shareable.
        let upto = plan.builders[tb].steps.len();
        let image = ImageSpec {
            name: opts.image.clone(),
            tag: opts.image.clone(),
            from: plan.root_from(tb).to_string(),
            builder: Some(BuilderState { builder: tb, upto }),
            squash: opts.squash,
            default_path: true,
            tapeouts: Vec::new(),
            layer_per_tapeout: false,
            entrypoint: st.entrypoint,
            cmd: st.cmd,
            env: st.env,
            workdir: st.workdir_set.then(|| st.workdir_text.clone()),
            user: st.user_text,
            ports: st.ports,
            volumes: st.volumes,
            labels,
            annotations: opts.annotations.clone(),
            stop_signal: st.stop_signal,
            author: st.author,
            healthcheck: st.healthcheck,
            on_build: st.on_build,
        };
        plan.images.push(image);
        Ok(plan)
    }

    fn err(&self, step: &cf::Step, message: impl Into<String>) -> FrontendError {
        FrontendError::Instruction {
            file: self.file.clone(),
            line: step.line,
            instruction: step.instruction.keyword().to_string(),
            message: message.into(),
        }
    }

    /// The builder made from image `r` for `--from=r` (once per build,
    /// however many instructions name it): pulled and unpacked by the
    /// same code as a `FROM` base, under the same `--pull` policy, its
    /// digest in the keys of what reads it. Nothing runs in it; its
    /// tapeouts are what COPY and RUN mounts read.
    fn image_builder(&mut self, r: &str) -> usize {
        let from = image_ref(r);
        if let Some(&b) = self.images.get(&from) {
            return b;
        }
        let b = self.builders.len();
        self.builders.push(Builder {
            // `+` is in no stage name, so it never meets one.
            name: format!("image+{}", self.images.len()),
            from: from.clone(),
            parent: None,
            deps: Vec::new(),
            sources: Vec::new(),
            network: Network::None,
            env: Vec::new(),
            host_ca: false,
            steps: Vec::new(),
        });
        self.images.insert(from, b);
        b
    }

    fn builder_name(&self, stage: usize) -> String {
        match &self.resolved.stages[stage].name {
            Some(n) => n.clone(),
            None => format!("stage{stage}"),
        }
    }

    /// One stage: its builder and its rules.
    fn stage(&mut self, s: usize) -> Res<()> {
        let stage = &self.resolved.stages[s];
        let name = self.builder_name(s);
        if let Some(p) = &stage.platform {
            let host = shipyard_image::oci::image::Platform::host();
            let want = p.trim();
            let host_text = format!("{}/{}", host.os, host.arch);
            if want != host_text && !want.starts_with("$") {
                return Err(FrontendError::Instruction {
                    file: self.file.clone(),
                    line: stage.line,
                    instruction: "FROM".into(),
                    message: format!("--platform={want}: shipyard builds for this machine ({host_text}) only; build on a {want} machine"),
                });
            }
        }
        let (from, parent, mut st) = match &stage.base {
            Base::Scratch => ("scratch".to_string(), None, StageState::default()),
            Base::Image(r) => {
                let mut st = StageState::default();
                if let Some(t) = self.triggers.get(&s) {
                    // As Docker: the base's WorkingDir and User are where
                    // and whom the stage's steps run as (the image config
                    // keeps them by inheritance, so only the steps change).
                    if !t.workdir.is_empty() {
                        st.workdir = normalize(&Path::new("/").join(&t.workdir));
                        st.workdir_text = t.workdir.clone();
                    }
                    if !t.user.is_empty() {
                        set_user(&mut st, &t.user).map_err(|m| FrontendError::Instruction {
                            file: self.file.clone(),
                            line: stage.line,
                            instruction: "FROM".into(),
                            message: format!("{}: the base's User: {m}", image_ref(r)),
                        })?;
                    }
                }
                (image_ref(r), None, st)
            }
            Base::Stage(p) => (
                format!("builder:{}", self.builder_name(*p)),
                Some(BuilderState {
                    builder: self.index[p],
                    upto: 0,
                }),
                self.states.get(p).cloned().unwrap_or_default(),
            ),
        };
        let mut deps: Vec<usize> = stage
            .depends_on
            .iter()
            .filter_map(|d| self.index.get(d).copied())
            .collect();
        deps.sort();
        deps.dedup();
        let b = self.builders.len();
        self.builders.push(Builder {
            name: name.clone(),
            from,
            parent,
            deps,
            sources: Vec::new(),
            network: self.network,
            env: Vec::new(),
            host_ca: false,
            steps: Vec::new(),
        });
        self.index.insert(s, b);
        // Docker clears the base's triggers: they ran here, once.
        st.on_build.clear();
        let triggers = self.triggers.get(&s).cloned();
        for (i, step) in stage.steps.clone().iter().enumerate() {
            // Triggers share their FROM's line: their rules are told
            // apart by their place.
            let name = match &triggers {
                Some(t) if i < t.texts.len() => format!("{name}-onbuild{i}"),
                _ => name.clone(),
            };
            let r = self.instruction(b, &name, step, &mut st);
            if let (Err(e), Some(t)) = (&r, &triggers) {
                if let (Some(text), FrontendError::Instruction { message, .. }) =
                    (t.texts.get(i), e)
                {
                    return Err(FrontendError::Instruction {
                        file: self.file.clone(),
                        line: step.line,
                        instruction: "FROM".into(),
                        message: format!(
                            "ONBUILD trigger {text:?} of {}: {}: {message}",
                            t.of,
                            step.instruction.keyword()
                        ),
                    });
                }
            }
            r?;
        }
        self.states.insert(s, st);
        Ok(())
    }

    fn instruction(
        &mut self,
        b: usize,
        name: &str,
        step: &cf::Step,
        st: &mut StageState,
    ) -> Res<()> {
        let rule_name = format!("{name}-{}", step.line);
        let origin = format!(
            "{}:{}: {}",
            self.file,
            step.line,
            step.instruction.keyword()
        );
        match &step.instruction {
            Instruction::From { .. } | Instruction::Arg(_) => {}
            Instruction::Run(run) => {
                let mut rule = self.run_rule(b, &rule_name, step, run, st)?;
                rule.origin = Some(origin);
                self.builders[b].steps.push(Step::Build(rule));
            }
            Instruction::Copy(t) => {
                let mut rule = self.copy_rule(b, &rule_name, step, t, st, false)?;
                rule.origin = Some(origin);
                self.builders[b].steps.push(Step::Build(rule));
            }
            Instruction::Add(t) => {
                let mut rule = self.copy_rule(b, &rule_name, step, t, st, true)?;
                rule.origin = Some(origin);
                self.builders[b].steps.push(Step::Build(rule));
            }
            Instruction::Env(pairs) => {
                for (k, v) in pairs {
                    st.env.retain(|(ek, _)| ek != k);
                    st.env.push((k.clone(), v.clone()));
                }
            }
            Instruction::Workdir(w) => {
                let p = if w.starts_with('/') {
                    PathBuf::from(w)
                } else {
                    st.workdir.join(w)
                };
                st.workdir = normalize(&p);
                st.workdir_text = if w.starts_with('/') {
                    w.clone()
                } else {
                    st.workdir.display().to_string()
                };
                st.workdir_set = true;
                // Docker makes the directory, owned by the user in effect.
                let mut rule = plain_rule(&rule_name, st);
                rule.origin = Some(origin);
                rule.run = format!("WORKDIR {}", st.workdir.display());
                rule.copy = Some(CopySpec {
                    items: Vec::new(),
                    owner: st.user,
                    mode: None,
                    dirs: vec![st.workdir.clone()],
                    owner_name: st.user_name.clone(),
                });
                self.builders[b].steps.push(Step::Build(rule));
            }
            Instruction::User(u) => {
                set_user(st, u).map_err(|m| self.err(step, m))?;
            }
            Instruction::Shell(v) => st.shell = v.clone(),
            Instruction::Entrypoint(c) => {
                st.entrypoint = Some(self.argv(c, st));
                // As Docker: an ENTRYPOINT clears the CMD the stage had
                // (a CMD after it sets one again).
                st.cmd = None;
            }
            Instruction::Cmd(c) => st.cmd = Some(self.argv(c, st)),
            Instruction::Expose(ports) => {
                for p in ports {
                    if !st.ports.contains(p) {
                        st.ports.push(p.clone());
                    }
                }
            }
            Instruction::Volume(vs) => {
                for v in vs {
                    if !st.volumes.contains(v) {
                        st.volumes.push(v.clone());
                    }
                }
            }
            Instruction::Label(pairs) => st.labels.extend(pairs.iter().cloned()),
            Instruction::StopSignal(s) => st.stop_signal = Some(s.clone()),
            // The config's author, as buildah and BuildKit set it.
            Instruction::Maintainer(m) => st.author = Some(m.clone()),
            Instruction::Healthcheck(h) => st.healthcheck = Some(healthcheck(h)),
            Instruction::Onbuild(trigger) => st.on_build.push(trigger.original.clone()),
        }
        Ok(())
    }

    /// A command's argv: the exec form as is, the shell form under SHELL.
    fn argv(&self, c: &Command, st: &StageState) -> Vec<String> {
        match c {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => {
                let mut v = st.shell.clone();
                v.push(s.clone());
                v
            }
        }
    }

    fn run_rule(
        &mut self,
        b: usize,
        rule_name: &str,
        step: &cf::Step,
        run: &cf::Run,
        st: &StageState,
    ) -> Res<BuildRule> {
        let mut rule = plain_rule(rule_name, st);
        // A RUN sees the stage's ARGs as variables; ENV wins.
        let mut env: Vec<(String, String)> = (step.args.iter())
            .filter(|(k, _)| !st.env.iter().any(|(ek, _)| ek == k))
            .cloned()
            .collect();
        env.extend(st.env.iter().cloned());
        rule.env = env;
        match run.invocation() {
            Invocation::Exec(v) => {
                rule.run = v.join(" ");
                rule.argv = Some(v);
            }
            Invocation::Shell(s) => {
                rule.run = s.clone();
                if st.shell != ["/bin/sh", "-c"] {
                    let mut v = st.shell.clone();
                    v.push(s);
                    rule.argv = Some(v);
                }
            }
            Invocation::Script { name, content } => {
                // As BuildKit: the script is a file, executed, so its #!
                // line picks the interpreter (SHELL plays no part).
                if !is_plain_name(&name) {
                    return Err(self.err(
                        step,
                        format!("<<{name}: a script's delimiter must be a plain file name"),
                    ));
                }
                rule.run = content.clone();
                rule.argv = Some(vec![format!("{}/{name}", Script::DIR)]);
                rule.script = Some(Box::new(Script { name, content }));
            }
        }
        rule.network = match run.network {
            None | Some(cf::Network::Default) => None,
            Some(cf::Network::None) => Some(Network::None),
            Some(cf::Network::Host) => Some(Network::Host),
        };
        for (i, m) in run.mounts.iter().enumerate() {
            let target = m.effective_target().ok_or_else(|| {
                self.err(step, format!("--mount type={:?} needs a target", m.kind))
            })?;
            match m.kind {
                MountKind::Cache => {
                    let id = m.effective_id().unwrap_or_else(|| target.clone());
                    let id: String = id
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect();
                    let id = id.trim_matches('_').to_string();
                    let sharing = m.sharing.as_deref().unwrap_or("shared");
                    let sharing = sharing.parse().map_err(|e: String| self.err(step, e))?;
                    rule.cache.push(CacheMount {
                        target: PathBuf::from(&target),
                        id,
                        sharing,
                    });
                }
                MountKind::Secret => {
                    let id = m.effective_id().unwrap_or_default();
                    if target != format!("/run/secrets/{id}") {
                        return Err(self.err(step, format!("--mount=type=secret,target={target}: secrets are seen at /run/secrets/ID only")));
                    }
                    rule.secrets.push(id);
                }
                MountKind::Bind => {
                    let from = match step.mount_from.get(i) {
                        Some(Some(FromRef::Stage(s))) => self.index[s],
                        Some(Some(FromRef::Image(r))) => self.image_builder(r),
                        _ => {
                            let bind = self.context_bind(step, m, &target, st)?;
                            rule.binds.push(bind);
                            continue;
                        }
                    };
                    let source = m.source.clone().unwrap_or_else(|| "/".into());
                    let t = self.tapeout_of(from, b, rule_name, i, &source);
                    rule.mounts.push(crate::project::TapeoutMount {
                        target: PathBuf::from(&target),
                        tapeout: t,
                        path: normalize(&Path::new("/").join(&source)),
                    });
                }
                MountKind::Tmpfs => {
                    let size = match &m.size {
                        Some(s) => Some(parse_size(s).ok_or_else(|| {
                            self.err(step, format!("--mount=type=tmpfs,size={s}: expected a size in bytes (with k, m or g)"))
                        })?),
                        None => None,
                    };
                    // As BuildKit: a relative target is under the workdir.
                    rule.tmpfs.push(crate::sandbox::job::Tmpfs {
                        target: normalize(&st.workdir.join(&target)),
                        size,
                    });
                }
                MountKind::Ssh => {
                    return Err(self.err(
                        step,
                        format!("--mount=type={:?} is not supported yet", m.kind).to_lowercase(),
                    ))
                }
            }
        }
        Ok(rule)
    }

    /// A bind of the build context (or a path in it) for a RUN: it must
    /// exist and stay inside the context, symlinks included.
    fn context_bind(
        &self,
        step: &cf::Step,
        m: &cf::Mount,
        target: &str,
        st: &StageState,
    ) -> Res<crate::project::ContextBind> {
        let source = m.source.clone().unwrap_or_else(|| ".".into());
        let outside = || {
            self.err(
                step,
                format!(
                    "--mount=type=bind,source={source}: outside the build context {}",
                    self.context.display()
                ),
            )
        };
        let mut depth = 0usize;
        for c in Path::new(&source).components() {
            match c {
                std::path::Component::ParentDir => {
                    depth = depth.checked_sub(1).ok_or_else(outside)?;
                }
                std::path::Component::Normal(_) => depth += 1,
                _ => {}
            }
        }
        let rel = normalize(&Path::new("/").join(&source));
        let rel = rel.strip_prefix("/").unwrap_or(&rel).to_path_buf();
        let host = self.context.join(&rel);
        let real = std::fs::canonicalize(&host).map_err(|e| {
            self.err(
                step,
                format!("--mount=type=bind,source={source}: {e} in the build context"),
            )
        })?;
        if !real.starts_with(&self.context) {
            return Err(outside());
        }
        if !rel.as_os_str().is_empty() && self.is_ignored(&rel) {
            return Err(self.err(
                step,
                format!("--mount=type=bind,source={source}: the ignore file excludes it"),
            ));
        }
        let exclude = if real.is_dir() {
            self.excluded_under(&real)
        } else {
            Vec::new()
        };
        Ok(crate::project::ContextBind {
            host: real,
            // As BuildKit: a relative target is under the workdir.
            target: normalize(&st.workdir.join(target)),
            writable: !m.readonly,
            exclude,
        })
    }

    /// A tapeout of builder `sb`'s path `path` (made at the end of that
    /// stage, or of an image's tree), for builder `b`; returns its name.
    fn tapeout_of(&mut self, sb: usize, b: usize, rule: &str, i: usize, path: &str) -> String {
        let name = format!("{rule}-from{i}");
        let p = normalize(&Path::new("/").join(path));
        let builder = self.builders[sb].name.clone();
        self.builders[sb].steps.push(Step::Tapeout(TapeoutRule {
            name: name.clone(),
            builder,
            include: vec![p.display().to_string()],
            exclude: Vec::new(),
            elf_closure: false,
            remap: Vec::new(),
            owner: None,
            mode: None,
        }));
        if !self.builders[b].deps.contains(&sb) {
            self.builders[b].deps.push(sb);
        }
        name
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_rule(
        &mut self,
        b: usize,
        rule_name: &str,
        step: &cf::Step,
        t: &cf::Transfer,
        st: &StageState,
        add: bool,
    ) -> Res<BuildRule> {
        if t.parents || !t.exclude.is_empty() || t.keep_git_dir {
            return Err(self.err(
                step,
                "--parents, --exclude and --keep-git-dir are not supported yet",
            ));
        }
        let is_url = |p: &str| p.starts_with("http://") || p.starts_with("https://");
        if let Some(c) = &t.checksum {
            let urls = (t.sources.iter()).all(|s| matches!(s, Source::Path(p) if is_url(p)));
            if !add || !urls {
                return Err(self.err(
                    step,
                    format!("--checksum={c}: only for ADD of http(s) URLs"),
                ));
            }
        }
        let (owner, owner_name) = match &t.chown {
            Some(c) => {
                check_owner(c).map_err(|m| self.err(step, format!("--chown={m}")))?;
                match crate::project::parse_owner(c) {
                    Some(ids) => (ids, None),
                    // Looked up in the builder when the copy runs.
                    None => ((0, 0), Some(c.clone())),
                }
            }
            None => ((0, 0), None),
        };
        let mode = match &t.chmod {
            Some(m) => Some(
                u32::from_str_radix(m, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| {
                        self.err(step, format!("--chmod={m}: expected an octal mode"))
                    })?,
            ),
            None => None,
        };
        let dest_text = &t.dest;
        let dest = if dest_text.starts_with('/') {
            PathBuf::from(dest_text)
        } else {
            st.workdir.join(dest_text)
        };
        let dest = normalize(&dest);
        let mut items = Vec::new();
        // Indexes of the items that are archives ADD unpacks.
        let mut unpack: Vec<usize> = Vec::new();
        for (i, src) in t.sources.iter().enumerate() {
            let p = match src {
                Source::Path(p) => p,
                Source::Heredoc(h) => {
                    if !is_plain_name(&h.name) {
                        return Err(self.err(
                            step,
                            format!(
                                "<<{}: an inline file's delimiter must be a plain file name",
                                h.name
                            ),
                        ));
                    }
                    items.push((
                        CopyFrom::Inline {
                            name: h.name.clone(),
                            content: h.content.clone(),
                        },
                        None,
                    ));
                    continue;
                }
            };
            match &step.copy_from {
                Some(from) => {
                    let sb = match from {
                        FromRef::Stage(s) => self.index[s],
                        FromRef::Image(r) => self.image_builder(r),
                    };
                    let name = self.tapeout_of(sb, b, rule_name, i, p);
                    items.push((
                        CopyFrom::Tapeout {
                            name,
                            path: normalize(&Path::new("/").join(p)),
                        },
                        None,
                    ));
                }
                None => {
                    if add && is_url(p) && step.copy_from.is_none() {
                        let host = self.download(step, p, t.checksum.as_deref())?;
                        items.push((CopyFrom::Host(host), Some((false, Vec::new()))));
                        continue;
                    }
                    if add && p.starts_with("git@") {
                        return Err(self.err(step, format!("{p}: ADD of a git repository is not supported; clone it in a RUN step")));
                    }
                    for (host, is_dir) in self.context_sources(step, p)? {
                        if add && !is_dir {
                            let kind = add_kind(&host)
                                .map_err(|e| self.err(step, format!("{}: {e}", host.display())))?;
                            match kind {
                                AddKind::Copy => {}
                                AddKind::Unpack => {
                                    items.push((CopyFrom::Host(host), Some((false, Vec::new()))));
                                    unpack.push(items.len() - 1);
                                    continue;
                                }
                            }
                        }
                        let exclude = if is_dir {
                            self.excluded_under(&host)
                        } else {
                            Vec::new()
                        };
                        items.push((CopyFrom::Host(host), Some((is_dir, exclude))));
                    }
                }
            }
        }
        let many = items.len() > 1;
        let into_dir = dest_text.ends_with('/') || many;
        if many && !dest_text.ends_with('/') {
            return Err(self.err(step, format!("{dest_text}: with several sources the destination must be a directory ending in /")));
        }
        let mut sources = Vec::new();
        for (n, (from, how)) in items.into_iter().enumerate() {
            let (is_dir, exclude) = how.unwrap_or((false, Vec::new()));
            if unpack.contains(&n) {
                // An archive's members go into the destination, a
                // directory whatever its name ends with, as Docker does.
                sources.push(CopySource {
                    from,
                    to: dest.clone(),
                    exclude,
                    unpack: true,
                });
                continue;
            }
            let to = match &from {
                // A tapeout's tree decides at copy time: a directory's
                // contents go to dest, a file into or onto it.
                CopyFrom::Tapeout { path, .. } => match (into_dir, path.file_name()) {
                    (true, Some(n)) => dest.join(n),
                    _ => dest.clone(),
                },
                CopyFrom::Host(h) if !is_dir && into_dir => {
                    dest.join(h.file_name().unwrap_or_default())
                }
                CopyFrom::Host(_) => dest.clone(),
                CopyFrom::Inline { name, .. } if into_dir => dest.join(name),
                CopyFrom::Inline { .. } => dest.clone(),
            };
            sources.push(CopySource {
                from,
                to,
                exclude,
                unpack: false,
            });
        }
        let mut rule = plain_rule(rule_name, st);
        rule.run = step.original.clone();
        rule.copy = Some(CopySpec {
            items: sources,
            owner,
            mode,
            dirs: Vec::new(),
            owner_name,
        });
        Ok(rule)
    }

    /// ADD of a URL: downloaded now (at most [`MAX_DOWNLOAD`] bytes) into
    /// the cache's `downloads`, one file per URL, replaced by each build,
    /// so that its content is in the step's key as a context file's is.
    /// Mode 0600 and the server's `Last-Modified` as mtime, as Docker
    /// gives them (the layer clamps mtimes to SOURCE_DATE_EPOCH).
    fn download(&self, step: &cf::Step, url: &str, checksum: Option<&str>) -> Res<PathBuf> {
        use sha2::Digest;
        use std::os::unix::fs::PermissionsExt;
        if self.network == Network::None {
            return Err(self.err(step, format!("{url}: the build's network is none (--network none), so ADD downloads nothing; build with --network host, or put the file in the context")));
        }
        let want = match checksum {
            Some(c) => Some(
                c.strip_prefix("sha256:")
                    .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .map(str::to_ascii_lowercase)
                    .ok_or_else(|| {
                        self.err(
                            step,
                            format!("--checksum={c}: expected sha256:HEX (64 digits)"),
                        )
                    })?,
            ),
            None => None,
        };
        let path = url.split(['?', '#']).next().unwrap_or(url);
        let name = path
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('/'))
            .and_then(|(_, p)| p.rsplit('/').next())
            .filter(|n| is_plain_name(n))
            .unwrap_or("download");
        let dir = shipyard_image::cache::cache_dir()
            .map_err(|e| self.err(step, format!("{url}: {e}")))?
            .join("downloads")
            .join(hex::encode(sha2::Sha256::digest(url.as_bytes())));
        let to = dir.join(name);
        let got = shipyard_image::registry::fetch::fetch(
            url,
            &to,
            MAX_DOWNLOAD,
            std::time::Duration::from_secs(300),
        )
        .map_err(|e| self.err(step, shipyard_image::error::chain_text(&e)))?;
        if let Some(want) = want {
            if got.sha256 != want {
                let _ = std::fs::remove_file(&to);
                return Err(self.err(
                    step,
                    format!(
                        "{url}: its sha256 is {}, not the {want} --checksum names",
                        got.sha256
                    ),
                ));
            }
        }
        let io = |e: std::io::Error| self.err(step, format!("{}: {e}", to.display()));
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        if let Some(t) = got.last_modified {
            shipyard_image::fsutil::set_mtime_ns(&to, t, 0);
        }
        Ok(to)
    }

    /// The context paths a COPY source names (globs expanded), each with
    /// whether it is a directory. A path outside the context, missing, or
    /// excluded by the ignore file is an error, as with Docker.
    fn context_sources(&self, step: &cf::Step, p: &str) -> Res<Vec<(PathBuf, bool)>> {
        let rel = normalize(&Path::new("/").join(p));
        let rel = rel.strip_prefix("/").unwrap_or(&rel).to_path_buf();
        let is_glob = p.contains(['*', '?', '[']);
        let mut out = Vec::new();
        if is_glob {
            // As Docker's filepath.Match: `*` stays within one component.
            let g = globset::GlobBuilder::new(&rel.display().to_string())
                .literal_separator(true)
                .build()
                .map_err(|e| self.err(step, format!("{p}: {e}")))?
                .compile_matcher();
            for e in walkdir::WalkDir::new(&self.context)
                .min_depth(1)
                .sort_by_file_name()
            {
                let e = e.map_err(|e| self.err(step, e.to_string()))?;
                let r = e.path().strip_prefix(&self.context).unwrap_or(e.path());
                if g.is_match(r) && !self.is_ignored(r) {
                    out.push((e.path().to_path_buf(), e.file_type().is_dir()));
                }
            }
        } else {
            let host = self.context.join(&rel);
            let md = std::fs::symlink_metadata(&host).ok();
            if md.is_some() && (rel.as_os_str().is_empty() || !self.is_ignored(&rel)) {
                out.push((host, md.is_some_and(|m| m.is_dir())));
            }
        }
        if out.is_empty() {
            return Err(self.err(
                step,
                format!(
                    "{p}: no such file in the build context {} (or the ignore file excludes it)",
                    self.context.display()
                ),
            ));
        }
        Ok(out)
    }

    fn is_ignored(&self, rel: &Path) -> bool {
        self.ignore
            .as_ref()
            .is_some_and(|m| m.is_excluded(&rel.display().to_string()))
    }

    /// Paths under a context directory the ignore file excludes, relative
    /// to that directory.
    fn excluded_under(&self, dir: &Path) -> Vec<PathBuf> {
        if self.ignore.is_none() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut walk = walkdir::WalkDir::new(dir)
            .min_depth(1)
            .sort_by_file_name()
            .into_iter();
        while let Some(Ok(e)) = walk.next() {
            let r = e.path().strip_prefix(&self.context).unwrap_or(e.path());
            if self.is_ignored(r) {
                if let Ok(under) = e.path().strip_prefix(dir) {
                    out.push(under.to_path_buf());
                }
                if e.file_type().is_dir() {
                    walk.skip_current_dir();
                }
            }
        }
        out
    }
}

/// The most an `ADD URL` downloads: bigger is an error, not a full disk.
const MAX_DOWNLOAD: u64 = 4 << 30;

/// A HEALTHCHECK as Docker writes it into the config: the command as
/// `CMD` (exec form) or `CMD-SHELL` (shell form, run by the container's
/// `/bin/sh -c`, whatever SHELL says), durations in nanoseconds, unset
/// options zero (the runtime's defaults).
fn healthcheck(h: &cf::Healthcheck) -> Healthcheck {
    let c = match h {
        cf::Healthcheck::None => {
            return Healthcheck {
                test: vec!["NONE".into()],
                ..Default::default()
            }
        }
        cf::Healthcheck::Cmd(c) => c,
    };
    let test = match &c.command {
        Command::Exec(v) => std::iter::once("CMD".to_string())
            .chain(v.iter().cloned())
            .collect(),
        Command::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
    };
    let ns = |d: Option<std::time::Duration>| {
        d.map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    };
    Healthcheck {
        test,
        interval: ns(c.interval),
        timeout: ns(c.timeout),
        start_period: ns(c.start_period),
        start_interval: ns(c.start_interval),
        retries: c.retries.map_or(0, i64::from),
    }
}

/// A rule with the stage's settings and nothing to do yet.
fn plain_rule(name: &str, st: &StageState) -> BuildRule {
    BuildRule {
        name: name.to_string(),
        run: String::new(),
        env: st.env.clone(),
        workdir: st.workdir.clone(),
        user: st.user,
        user_name: st.user_name.clone(),
        script: None,
        timeout: None,
        secrets: Vec::new(),
        cache: Vec::new(),
        mounts: Vec::new(),
        copy: None,
        argv: None,
        network: None,
        origin: None,
        tmpfs: Vec::new(),
        binds: Vec::new(),
    }
}

/// Whether `USER` text needs the builder's files: a name, or a UID alone
/// (its primary group is the image's to say, as runc gives it).
/// USER (or a base's `User`): names (and a UID's primary group) are the
/// builder's to say when each rule runs; numbers alone are taken as is.
fn set_user(st: &mut StageState, u: &str) -> Result<(), String> {
    check_owner(u)?;
    if user_needs_lookup(u) {
        st.user = (0, 0);
        st.user_name = Some(u.to_string());
    } else {
        st.user = crate::project::parse_owner(u)
            .ok_or_else(|| format!("{u:?}: expected USER[:GROUP]"))?;
        st.user_name = None;
    }
    st.user_text = Some(u.to_string());
    Ok(())
}

fn user_needs_lookup(text: &str) -> bool {
    match text.split_once(':') {
        None => true,
        Some((u, g)) => u.parse::<u32>().is_err() || g.parse::<u32>().is_err(),
    }
}

/// Why USER or `--chown` text is malformed (`user[:group]`, each part
/// non-empty).
fn check_owner(text: &str) -> Result<(), String> {
    let ok = match text.split_once(':') {
        Some((u, g)) => !u.is_empty() && !g.is_empty() && !g.contains(':'),
        None => !text.is_empty(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{text:?}: expected USER[:GROUP] (names or numbers)"
        ))
    }
}

/// A tmpfs size as BuildKit reads it: bytes, or a number with `k`, `m`
/// or `g` (powers of 1024; a trailing `b` allowed, any case).
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mul) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mul).filter(|n| *n > 0)
}

/// A name that is one file name: no `/`, not `.` or `..`, not empty.
fn is_plain_name(n: &str) -> bool {
    !n.is_empty() && n != "." && n != ".." && !n.contains('/') && !n.contains('\0')
}

/// A Containerfile's image name as shipyard names images: a name without
/// a transport is a registry image (`debian:bookworm` is
/// `docker://debian:bookworm`); shipyard's own (`oci:DIR:TAG`,
/// `oci-archive:`, `docker-archive:`) are kept.
fn image_ref(r: &str) -> String {
    for scheme in ["oci:", "docker://", "oci-archive:", "docker-archive:"] {
        if r.starts_with(scheme) {
            return r.to_string();
        }
    }
    format!("docker://{r}")
}

/// What `ADD` does with a local file: Docker decides by its content (a
/// tar archive, plain or compressed, is unpacked), not by its name.
#[derive(Debug, PartialEq, Eq)]
enum AddKind {
    Copy,
    Unpack,
}

fn add_kind(p: &Path) -> std::io::Result<AddKind> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(p)?.take(6).read_to_end(&mut head)?;
    let f = std::fs::File::open(p)?;
    let r: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        match zstd::stream::read::Decoder::new(f) {
            Ok(d) => Box::new(d),
            Err(_) => return Ok(AddKind::Copy),
        }
    } else if head.starts_with(b"BZh")
        || head.starts_with(shipyard_image::layer::compress::XZ_MAGIC)
    {
        shipyard_image::layer::compress::archive_decoder(f, &head)
    } else {
        Box::new(f)
    };
    let mut block = Vec::new();
    // A corrupt stream is not an archive: copied as it is, as Docker does.
    if r.take(512).read_to_end(&mut block).is_err() || block.len() < 512 {
        return Ok(AddKind::Copy);
    }
    Ok(if is_tar_header(&block) {
        AddKind::Unpack
    } else {
        AddKind::Copy
    })
}

/// Whether a 512-byte block is a tar header: its checksum (the bytes
/// summed, the checksum field counted as spaces) matches.
fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 || block.iter().all(|b| *b == 0) {
        return false;
    }
    let field = String::from_utf8_lossy(&block[148..156]);
    let Ok(want) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
    else {
        return false;
    };
    let sum: u32 = (block.iter().enumerate())
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    sum == want
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lowers `text` as `DIR/Containerfile` with `files` in the context.
    fn lower(text: &str, files: &[(&str, &str)]) -> Res<Plan> {
        let t = tempfile::tempdir().unwrap();
        for (p, c) in files {
            let path = t.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, c).unwrap();
        }
        let file = t.path().join("Containerfile");
        std::fs::write(&file, text).unwrap();
        load(&Options {
            file,
            context: t.path().to_path_buf(),
            target: None,
            build_args: BTreeMap::new(),
            image: "img".into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            network: Network::Host,
            base_triggers: None,
            squash: false,
        })
    }

    /// Lowers `text` with every image base having `triggers`.
    fn lower_on(text: &str, triggers: &'static [&'static str]) -> Res<Plan> {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("Containerfile");
        std::fs::write(&file, text).unwrap();
        let read = |_: &str| {
            Ok(BaseConfig {
                on_build: triggers.iter().map(|s| s.to_string()).collect(),
                ..BaseConfig::default()
            })
        };
        load(&Options {
            file,
            context: t.path().to_path_buf(),
            target: None,
            build_args: BTreeMap::new(),
            image: "img".into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            base_triggers: Some(BaseTriggers(std::sync::Arc::new(read))),
            squash: false,
            network: Network::Host,
        })
    }

    #[test]
    fn a_bases_triggers_are_the_stages_first_rules_and_a_bad_one_is_named() {
        let plan = lower_on("FROM img\nRUN own\n", &["RUN one", "WORKDIR /w"]).unwrap();
        let r = rules(&plan);
        let names: Vec<&str> = r.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["stage0-onbuild0-1", "stage0-onbuild1-1", "stage0-2"]
        );
        // The trigger's WORKDIR applies to the stage's own rules.
        assert_eq!(r[2].workdir, PathBuf::from("/w"));
        assert!(plan.images[0].on_build.is_empty());
        // A trigger that does not substitute: named with its base.
        let e = lower_on("FROM img\nRUN own\n", &["WORKDIR ${NOPE:?}"])
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("Containerfile:1: FROM: ONBUILD trigger \"WORKDIR ${NOPE:?}\" of docker://img: WORKDIR: NOPE: is not allowed to be unset"),
            "{e}"
        );
        let e = lower_on("FROM img\n", &["EXPOSE x"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ONBUILD trigger \"EXPOSE x\" of docker://img: EXPOSE: invalid port"),
            "{e}"
        );
    }

    fn rules(plan: &Plan) -> Vec<&BuildRule> {
        plan.builders[0]
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Build(b) => Some(b),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_glob_star_stays_within_one_directory_as_dockers() {
        let files = [
            ("src/a.txt", "a"),
            ("src/b.txt", "b"),
            ("src/sub/c.txt", "c"),
        ];
        let plan = lower("FROM scratch\nCOPY src/*.txt /app/\n", &files).unwrap();
        let copy = rules(&plan)[0].copy.clone().unwrap();
        let to: Vec<String> = (copy.items.iter())
            .map(|i| i.to.display().to_string())
            .collect();
        assert_eq!(to, ["/app/a.txt", "/app/b.txt"]);
    }

    #[test]
    fn workdir_goes_into_the_config_as_buildah_and_buildkit_write_it() {
        let wd = |text: &str| lower(text, &[]).unwrap().images[0].workdir.clone();
        // An absolute one as written, trailing slash and all.
        assert_eq!(
            wd("FROM scratch\nWORKDIR /root/\n").as_deref(),
            Some("/root/")
        );
        assert_eq!(
            wd("FROM scratch\nWORKDIR /x//y/.\n").as_deref(),
            Some("/x//y/.")
        );
        // A relative one joined onto the last, cleaned.
        assert_eq!(
            wd("FROM scratch\nWORKDIR /a/b/../c/\nWORKDIR d/\n").as_deref(),
            Some("/a/c/d")
        );
        // The directory a rule runs in is the cleaned path.
        let plan = lower("FROM scratch\nWORKDIR /srv/\nRUN pwd\n", &[]).unwrap();
        assert_eq!(rules(&plan)[1].workdir, PathBuf::from("/srv"));
    }

    #[test]
    fn maintainer_is_the_configs_author_not_a_label() {
        let plan = lower("FROM scratch\nMAINTAINER Jo <jo@example.org>\n", &[]).unwrap();
        let img = &plan.images[0];
        assert_eq!(img.author.as_deref(), Some("Jo <jo@example.org>"));
        assert!(img.labels.is_empty(), "{:?}", img.labels);
    }

    #[test]
    fn rules_say_where_they_were_written() {
        let plan = lower(
            "FROM scratch\n\nCOPY f /f\nWORKDIR /w\nRUN true\n",
            &[("f", "")],
        )
        .unwrap();
        let origins: Vec<String> = (rules(&plan).iter())
            .map(|r| r.origin.clone().unwrap())
            .map(|o| o.rsplit('/').next().unwrap().to_string())
            .collect();
        assert_eq!(
            origins,
            [
                "Containerfile:3: COPY",
                "Containerfile:4: WORKDIR",
                "Containerfile:5: RUN"
            ]
        );
    }

    #[test]
    fn user_names_are_left_for_the_builder_and_numbers_taken_as_they_are() {
        let plan = lower(
            "FROM scratch\nUSER app:staff\nRUN id\nUSER 7:8\nRUN id\nUSER 1000\nRUN id\nWORKDIR /w\nCOPY --chown=app f /f\nCOPY --chown=5 f /g\n",
            &[("f", "x")],
        )
        .unwrap();
        let r = rules(&plan);
        assert_eq!(r[0].user_name.as_deref(), Some("app:staff"));
        assert_eq!((r[1].user_name.as_deref(), r[1].user), (None, (7, 8)));
        // A UID alone: its primary group is the image's to say.
        assert_eq!(r[2].user_name.as_deref(), Some("1000"));
        // WORKDIR makes its directory as the USER in effect.
        let w = r[3].copy.as_ref().unwrap();
        assert_eq!(w.owner_name.as_deref(), Some("1000"));
        let c = r[4].copy.as_ref().unwrap();
        assert_eq!(c.owner_name.as_deref(), Some("app"));
        let c = r[5].copy.as_ref().unwrap();
        assert_eq!((c.owner_name.as_deref(), c.owner), (None, (5, 5)));
        // The image config's User stays as written.
        assert_eq!(plan.images[0].user.as_deref(), Some("1000"));
    }

    #[test]
    fn a_malformed_user_is_refused_with_its_line() {
        let e = lower("FROM scratch\nUSER app:\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(
                "Containerfile:2: USER: \"app:\": expected USER[:GROUP] (names or numbers)"
            ),
            "{e}"
        );
        let e = lower("FROM scratch\nCOPY --chown=:g f /f\n", &[("f", "")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("Containerfile:2: COPY: --chown=\":g\""), "{e}");
    }

    #[test]
    fn inline_files_are_copied_with_their_content() {
        let plan = lower(
            "FROM scratch\nARG who=world\nCOPY <<EOF <<'RAW' /etc/\nhello $who\nEOF\nkeep $who\nRAW\nCOPY --chmod=755 <<EOF /bin/hi\necho hi\nEOF\n",
            &[],
        )
        .unwrap();
        let r = rules(&plan);
        let c = r[0].copy.as_ref().unwrap();
        let items: Vec<_> = c.items.iter().map(|i| (&i.from, i.to.clone())).collect();
        assert_eq!(
            items,
            [
                (
                    &CopyFrom::Inline {
                        name: "EOF".into(),
                        content: "hello world\n".into()
                    },
                    PathBuf::from("/etc/EOF")
                ),
                (
                    &CopyFrom::Inline {
                        name: "RAW".into(),
                        content: "keep $who\n".into()
                    },
                    PathBuf::from("/etc/RAW")
                ),
            ]
        );
        let c = r[1].copy.as_ref().unwrap();
        assert_eq!(c.items[0].to, PathBuf::from("/bin/hi"));
        assert_eq!(c.mode, Some(0o755));
    }

    #[test]
    fn a_shebang_heredoc_is_a_script_executed_from_dev_pipes() {
        let plan = lower(
            "FROM scratch\nSHELL [\"/bin/bash\", \"-c\"]\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n",
            &[],
        )
        .unwrap();
        let r = rules(&plan);
        let s = r[0].script.as_ref().unwrap();
        assert_eq!(s.name, "EOF");
        assert_eq!(s.content, "#!/usr/bin/env python3\nprint(1)\n");
        assert_eq!(
            r[0].argv.as_deref(),
            Some(&["/dev/pipes/EOF".to_string()][..])
        );
    }

    /// A tar archive of one file, `name` with `data`.
    fn tar_of(name: &str, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn add_unpacks_what_is_a_tar_archive_by_its_content_not_its_name() {
        let tar = tar_of("a/b", b"x");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        let t = tempfile::tempdir().unwrap();
        let kind = |name: &str, data: &[u8]| {
            let p = t.path().join(name);
            std::fs::write(&p, data).unwrap();
            add_kind(&p).unwrap()
        };
        assert_eq!(kind("plain.bin", &tar), AddKind::Unpack);
        assert_eq!(kind("x.gz", &gz), AddKind::Unpack);
        assert_eq!(kind("x.zst", &zst), AddKind::Unpack);
        // Named like an archive, but not one: copied as it is.
        assert_eq!(kind("notes.tar", b"just text"), AddKind::Copy);
        assert_eq!(kind("big.tar", &[b'a'; 2048]), AddKind::Copy);
        let mut text_gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut text_gz, &[b'z'; 1024]).unwrap();
        assert_eq!(kind("t.gz", &text_gz.finish().unwrap()), AddKind::Copy);
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        std::io::Write::write_all(&mut bz, &tar).unwrap();
        assert_eq!(kind("x.tbz", &bz.finish().unwrap()), AddKind::Unpack);
        let xz = std::process::Command::new("xz")
            .args(["-c", &t.path().join("plain.bin").display().to_string()])
            .output()
            .unwrap();
        assert!(xz.status.success());
        assert_eq!(kind("x.txz", &xz.stdout), AddKind::Unpack);
        // A broken stream is no archive: copied as it is, as Docker does.
        assert_eq!(kind("x.tar.bz2", b"BZh91AY"), AddKind::Copy);
        assert_eq!(kind("x.tar.xz", &xz.stdout[..12]), AddKind::Copy);
    }

    #[test]
    fn add_of_an_archive_unpacks_into_the_destination_and_copy_does_not() {
        let tar = tar_of("a/b", b"x");
        let t = tempfile::tempdir().unwrap();
        let plan = {
            let file = t.path().join("Containerfile");
            std::fs::write(t.path().join("r.tar"), &tar).unwrap();
            std::fs::write(
                &file,
                "FROM scratch\nADD r.tar /opt\nCOPY r.tar /opt/\nADD r.tar /x/\n",
            )
            .unwrap();
            load(&Options {
                file,
                context: t.path().to_path_buf(),
                target: None,
                build_args: BTreeMap::new(),
                image: "img".into(),
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
                network: Network::Host,
                base_triggers: None,
                squash: false,
            })
            .unwrap()
        };
        let r = rules(&plan);
        let item = |i: usize| r[i].copy.as_ref().unwrap().items[0].clone();
        assert!(item(0).unpack);
        assert_eq!(item(0).to, PathBuf::from("/opt"));
        assert!(!item(1).unpack);
        assert_eq!(item(1).to, PathBuf::from("/opt/r.tar"));
        assert_eq!(item(2).to, PathBuf::from("/x"));
    }

    #[test]
    fn tmpfs_sizes_read_as_buildkit_reads_them_and_a_bad_one_names_its_line() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("2kb"), Some(2048));
        for bad in ["", "m", "-1", "1t", "0", "1.5m"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
        let plan = lower(
            "FROM scratch\nWORKDIR /t\nRUN --mount=type=tmpfs,target=../x,size=1k true\n",
            &[],
        )
        .unwrap();
        let t = &rules(&plan)[1].tmpfs;
        assert_eq!(
            (t[0].target.clone(), t[0].size),
            (PathBuf::from("/x"), Some(1024))
        );
        let e = lower(
            "FROM scratch\nRUN --mount=type=tmpfs,target=/x,size=lots true\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("Containerfile:2: RUN: --mount=type=tmpfs,size=lots"),
            "{e}"
        );
    }

    #[test]
    fn a_checksum_is_for_urls_only_and_must_be_sha256_hex() {
        let e = lower(
            "FROM scratch\nADD --checksum=sha256:00 f /f\n",
            &[("f", "x")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("Containerfile:2: ADD: --checksum=sha256:00: only for ADD of http(s) URLs"),
            "{e}"
        );
        let e = lower(
            "FROM scratch\nADD --checksum=md5:00 http://127.0.0.1:9/f /f\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("Containerfile:2: ADD: --checksum=md5:00: expected sha256:HEX"),
            "{e}"
        );
    }
}
