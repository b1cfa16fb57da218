//! From a parsed file to stages with their values substituted, the way
//! BuildKit scopes build arguments:
//!
//! - `ARG`s before the first `FROM` (global) are visible in `FROM` lines
//!   only; a stage sees one after redeclaring it (`ARG NAME`), with the
//!   global value unless a build argument overrides it.
//! - A stage's own `ARG`s take the build argument if one is given, else
//!   their default; they are visible to the instructions after them.
//! - `ENV` wins over an `ARG` of the same name.
//! - The proxy variables (`HTTP_PROXY`… upper and lower case) may be given
//!   without being declared; they reach `RUN` steps (see
//!   [`Stage::proxy_args`]) and never the image.
//!
//! Substitution applies to what Docker substitutes: ADD, COPY, ENV,
//! EXPOSE, FROM, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR, ARG defaults,
//! the flags of COPY/ADD and RUN's mounts. RUN, CMD, ENTRYPOINT, SHELL,
//! HEALTHCHECK and ONBUILD triggers are left alone (the shell, or the
//! image built on this one, expands them).

use std::collections::{BTreeMap, BTreeSet};

use super::ast::*;
use super::lex;
use super::Error;

/// The build arguments BuildKit predefines: usable without an `ARG`.
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// What a build gives the file from outside.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolveOptions {
    /// `--build-arg K=V`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: a stage name; the last stage when `None`.
    pub target: Option<String>,
    /// The `Env` of base images, by the reference as substituted: Docker
    /// substitutes with the base's environment too (`WORKDIR $HOME`), so a
    /// caller that has pulled the configs passes them; missing ones count
    /// as empty.
    pub image_env: BTreeMap<String, Vec<(String, String)>>,
    /// Arguments defined in the global scope without an `ARG` (BuildKit's
    /// `TARGETPLATFORM`, `BUILDARCH`…): usable in `FROM`, and in a stage
    /// after `ARG NAME`.
    pub automatic_args: BTreeMap<String, String>,
}

/// A file resolved for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Every stage, by index. One the target does not need may stop
    /// short of its last instruction, where a substitution failed.
    pub stages: Vec<Stage>,
    /// The index of the target stage.
    pub target: usize,
    /// The stages the target needs (itself included), in an order where
    /// each comes after the stages it uses.
    pub needed: Vec<usize>,
    /// Build arguments no global `ARG` and no `ARG` of a needed stage
    /// consumed (Docker warns about them).
    pub unused_build_args: Vec<String>,
}

/// A build stage: a `FROM` and the instructions after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub index: usize,
    /// `AS name`, lowercased.
    pub name: Option<String>,
    /// The line of its `FROM`.
    pub line: usize,
    pub base: Base,
    /// `--platform`, substituted.
    pub platform: Option<String>,
    pub steps: Vec<Step>,
    /// The environment at the end of the stage (base image's, then ENV),
    /// which a stage built on this one starts from.
    pub env: Vec<(String, String)>,
    /// The proxy build arguments given, for RUN steps' environment.
    pub proxy_args: Vec<(String, String)>,
    /// Earlier stages this one uses (base, `COPY --from`, mounts' `from`).
    pub depends_on: Vec<usize>,
}

/// Where a stage starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    Scratch,
    /// An image reference, as substituted.
    Image(String),
    /// An earlier stage, by index.
    Stage(usize),
}

/// What a `--from` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromRef {
    Stage(usize),
    Image(String),
}

/// One instruction of a stage, substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub line: usize,
    pub end_line: usize,
    pub original: String,
    /// The instruction with its values substituted; an `ARG`'s default
    /// is the value in effect.
    pub instruction: Instruction,
    /// The stage's `ARG`s that have a value at this point, in declaration
    /// order: a RUN sees them as environment variables (an ENV of the same
    /// name wins) but they do not go into the image.
    pub args: Vec<(String, String)>,
    /// COPY/ADD `--from`, looked up.
    pub copy_from: Option<FromRef>,
    /// For each RUN mount, its `from=` looked up.
    pub mount_from: Vec<Option<FromRef>>,
}

/// Resolves `file` for a build: substitutes variables stage by stage and
/// finds the stages the target needs.
pub fn resolve(file: &Containerfile, opts: &ResolveOptions) -> Result<Resolved, Error> {
    let mut consumed = BTreeSet::new();
    let first_from = file
        .instructions
        .iter()
        .position(|l| matches!(l.instruction, Instruction::From { .. }))
        .ok_or_else(|| Error::File {
            file: file.file.clone(),
            message: "no build stage: the file has no FROM".to_string(),
        })?;
    let meta = global_args(file, &file.instructions[..first_from], opts, &mut consumed)?;
    let mut stages: Vec<Stage> = Vec::new();
    let mut failed: Vec<(usize, Error)> = Vec::new();
    // What each stage consumed: only the needed stages' count as used.
    let mut consumed_by: Vec<BTreeSet<String>> = Vec::new();
    for group in stage_groups(&file.instructions[first_from..]) {
        let mut own = BTreeSet::new();
        let (stage, error) = Resolver {
            file,
            opts,
            meta: &meta,
            stages: &stages,
            consumed: &mut own,
        }
        .stage(group)?;
        failed.extend(error.map(|e| (stage.index, e)));
        stages.push(stage);
        consumed_by.push(own);
    }
    let target = target_index(file, &stages, opts.target.as_deref())?;
    let needed = needed(&stages, target);
    // Like BuildKit, a stage the target does not need may fail to
    // substitute (`${VERSION:?}` in a release stage, building `--target
    // test`); one it needs may not.
    if let Some((_, e)) = failed.into_iter().find(|(i, _)| needed.contains(i)) {
        return Err(e);
    }
    for i in &needed {
        consumed.append(&mut consumed_by[*i]);
    }
    let unused_build_args = opts
        .build_args
        .keys()
        .filter(|k| !consumed.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
        .cloned()
        .collect();
    Ok(Resolved {
        stages,
        target,
        needed,
        unused_build_args,
    })
}

/// The instructions split at each FROM (the slice starts with one).
fn stage_groups(instructions: &[Located]) -> Vec<&[Located]> {
    let mut starts: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, l)| matches!(l.instruction, Instruction::From { .. }))
        .map(|(i, _)| i)
        .collect();
    starts.push(instructions.len());
    starts
        .windows(2)
        .map(|w| &instructions[w[0]..w[1]])
        .collect()
}

/// The global ARGs (before the first FROM), with their values: a build
/// argument, else the default substituted with the earlier ones. Anything
/// but ARG there is an error, as in Docker.
fn global_args(
    file: &Containerfile,
    before: &[Located],
    opts: &ResolveOptions,
    consumed: &mut BTreeSet<String>,
) -> Result<Vec<(String, Option<String>)>, Error> {
    let mut meta: Vec<(String, Option<String>)> = opts
        .automatic_args
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    for l in before {
        let Instruction::Arg(decls) = &l.instruction else {
            return Err(instruction_error(
                file,
                l,
                "no build stage in current context: only ARG may come before the first FROM"
                    .to_string(),
            ));
        };
        for d in decls {
            let value = match (opts.build_args.get(&d.name), &d.default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(def)) => Some(
                    lex::word(def, file.escape, &|n| find(&meta, n))
                        .map_err(|m| instruction_error(file, l, m))?,
                ),
                // `ARG TARGETARCH` keeps the automatic value.
                (None, None) => find(&meta, &d.name),
            };
            if opts.build_args.contains_key(&d.name) {
                consumed.insert(d.name.clone());
            }
            meta.push((d.name.clone(), value));
        }
    }
    Ok(meta)
}

/// The last value given to `name` in a list of (name, value).
fn find(vars: &[(String, Option<String>)], name: &str) -> Option<String> {
    vars.iter()
        .rev()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.clone())
}

fn instruction_error(file: &Containerfile, l: &Located, message: String) -> Error {
    Error::Instruction {
        file: file.file.clone(),
        line: l.line,
        instruction: l.instruction.keyword().to_string(),
        message,
    }
}

/// Resolves one stage at a time, given the stages before it.
struct Resolver<'a> {
    file: &'a Containerfile,
    opts: &'a ResolveOptions,
    meta: &'a [(String, Option<String>)],
    stages: &'a [Stage],
    consumed: &'a mut BTreeSet<String>,
}

/// What a stage's instructions see while it is being resolved.
#[derive(Default)]
struct Scope {
    args: Vec<(String, Option<String>)>,
    env: Vec<(String, String)>,
}

impl Scope {
    /// ENV first (it wins over ARG), then the stage's ARGs.
    fn lookup(&self, name: &str) -> Option<String> {
        self.env
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .or_else(|| find(&self.args, name))
    }

    fn arg_values(&self) -> Vec<(String, String)> {
        self.args
            .iter()
            .filter_map(|(n, v)| v.clone().map(|v| (n.clone(), v)))
            .collect()
    }
}

impl Resolver<'_> {
    /// One stage: its FROM, then each instruction in order. A FROM that
    /// does not resolve fails the build (BuildKit resolves every base); an
    /// instruction that does not is returned beside the stage resolved up
    /// to it, to fail the build only if the target needs the stage.
    fn stage(&mut self, group: &[Located]) -> Result<(Stage, Option<Error>), Error> {
        let (from, rest) = group.split_first().ok_or_else(|| Error::File {
            file: self.file.file.clone(),
            message: "empty stage".to_string(),
        })?;
        let mut stage = self.from(from)?;
        let mut scope = Scope {
            args: Vec::new(),
            env: match &stage.base {
                Base::Stage(i) => self.stages[*i].env.clone(),
                Base::Image(r) => self.opts.image_env.get(r).cloned().unwrap_or_default(),
                Base::Scratch => Vec::new(),
            },
        };
        let mut deps: BTreeSet<usize> = match stage.base {
            Base::Stage(i) => BTreeSet::from([i]),
            _ => BTreeSet::new(),
        };
        let mut error = None;
        for l in rest {
            let step = match self.step(l, &mut scope, stage.index) {
                Ok(step) => step,
                Err(m) => {
                    error = Some(instruction_error(self.file, l, m));
                    break;
                }
            };
            deps.extend(
                step.copy_from
                    .iter()
                    .chain(step.mount_from.iter().flatten())
                    .filter_map(|r| match r {
                        FromRef::Stage(i) => Some(*i),
                        FromRef::Image(_) => None,
                    }),
            );
            stage.steps.push(step);
        }
        stage.env = scope.env;
        stage.depends_on = deps.into_iter().collect();
        stage.proxy_args = self.proxy_args();
        Ok((stage, error))
    }

    /// The proxy variables among the build arguments.
    fn proxy_args(&self) -> Vec<(String, String)> {
        PROXY_ARGS
            .iter()
            .filter_map(|k| {
                self.opts
                    .build_args
                    .get(*k)
                    .map(|v| (k.to_string(), v.clone()))
            })
            .collect()
    }

    /// A FROM line, substituted with the global arguments only.
    fn from(&self, l: &Located) -> Result<Stage, Error> {
        let Instruction::From {
            image,
            name,
            platform,
        } = &l.instruction
        else {
            return Err(instruction_error(
                self.file,
                l,
                "a stage starts with FROM".into(),
            ));
        };
        let err = |m: String| instruction_error(self.file, l, m);
        let meta = |n: &str| find(self.meta, n);
        let base = lex::word(image, self.file.escape, &meta).map_err(err)?;
        if base.is_empty() {
            return Err(err(format!("base name ({image}) should not be blank")));
        }
        if let Some(n) = name {
            if self.stages.iter().any(|s| s.name.as_ref() == Some(n)) {
                return Err(err(format!("duplicate stage name {n:?}")));
            }
        }
        let platform = platform
            .as_ref()
            .map(|p| lex::word(p, self.file.escape, &meta))
            .transpose()
            .map_err(err)?;
        Ok(Stage {
            index: self.stages.len(),
            name: name.clone(),
            line: l.line,
            base: self.base(&base),
            platform,
            steps: Vec::new(),
            env: Vec::new(),
            proxy_args: Vec::new(),
            depends_on: Vec::new(),
        })
    }

    /// `scratch`, an earlier stage by name, or an image.
    fn base(&self, base: &str) -> Base {
        let lower = base.to_ascii_lowercase();
        if lower == "scratch" {
            return Base::Scratch;
        }
        match self
            .stages
            .iter()
            .find(|s| s.name.as_deref() == Some(&lower))
        {
            Some(s) => Base::Stage(s.index),
            None => Base::Image(base.to_string()),
        }
    }

    /// One instruction of a stage: substituted, and the scope updated by
    /// ARG and ENV.
    fn step(&mut self, l: &Located, scope: &mut Scope, current: usize) -> Result<Step, String> {
        let mut step = Step {
            line: l.line,
            end_line: l.end_line,
            original: l.original.clone(),
            instruction: l.instruction.clone(),
            args: Vec::new(),
            copy_from: None,
            mount_from: Vec::new(),
        };
        step.instruction = self.substitute(&l.instruction, scope)?;
        match &step.instruction {
            Instruction::Copy(t) | Instruction::Add(t) => {
                step.copy_from = t
                    .from
                    .as_deref()
                    .map(|f| self.lookup_from(f, current))
                    .transpose()?;
            }
            Instruction::Run(r) => {
                step.mount_from = r
                    .mounts
                    .iter()
                    .map(|m| {
                        m.from
                            .as_deref()
                            .map(|f| self.lookup_from(f, current))
                            .transpose()
                    })
                    .collect::<Result<_, _>>()?;
            }
            _ => {}
        }
        step.args = scope.arg_values();
        Ok(step)
    }

    /// A `--from` value: an earlier stage by name or index, else an image.
    fn lookup_from(&self, from: &str, current: usize) -> Result<FromRef, String> {
        let lower = from.to_ascii_lowercase();
        if let Ok(i) = from.parse::<usize>() {
            return if i < current {
                Ok(FromRef::Stage(i))
            } else {
                Err(format!("--from={i}: no earlier stage has index {i}"))
            };
        }
        if let Some(s) = self
            .stages
            .iter()
            .find(|s| s.name.as_deref() == Some(&lower))
        {
            return Ok(FromRef::Stage(s.index));
        }
        Ok(FromRef::Image(from.to_string()))
    }

    /// The instruction with its values substituted (see the module doc
    /// for which), updating the scope for ARG and ENV.
    fn substitute(&mut self, ins: &Instruction, scope: &mut Scope) -> Result<Instruction, String> {
        let esc = self.file.escape;
        let w = |s: &String, scope: &Scope| lex::word(s, esc, &|n| scope.lookup(n));
        Ok(match ins {
            Instruction::Arg(decls) => Instruction::Arg(self.args(decls, scope)?),
            Instruction::Env(pairs) => {
                let pairs = substitute_pairs(pairs, esc, scope)?;
                scope.env.extend(pairs.iter().cloned());
                Instruction::Env(pairs)
            }
            Instruction::Label(pairs) => Instruction::Label(substitute_pairs(pairs, esc, scope)?),
            Instruction::Workdir(s) => Instruction::Workdir(w(s, scope)?),
            Instruction::User(s) => Instruction::User(w(s, scope)?),
            Instruction::StopSignal(s) => Instruction::StopSignal(w(s, scope)?),
            Instruction::Expose(ports) => Instruction::Expose(expose(ports, esc, scope)?),
            Instruction::Volume(v) => Instruction::Volume(volumes(v, esc, scope)?),
            Instruction::Copy(t) => Instruction::Copy(transfer(t, esc, scope)?),
            Instruction::Add(t) => Instruction::Add(transfer(t, esc, scope)?),
            Instruction::Run(r) => Instruction::Run(run(r, esc, scope)?),
            Instruction::From { .. } => return Err("FROM inside a stage".to_string()),
            other => other.clone(),
        })
    }

    /// A stage's ARGs: the build argument, else the default substituted,
    /// else the global value of that name.
    fn args(&mut self, decls: &[ArgDecl], scope: &mut Scope) -> Result<Vec<ArgDecl>, String> {
        let mut out = Vec::new();
        for d in decls {
            let value = match (self.opts.build_args.get(&d.name), &d.default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(def)) => Some(lex::word(def, self.file.escape, &|n| scope.lookup(n))?),
                (None, None) => find(self.meta, &d.name),
            };
            if self.opts.build_args.contains_key(&d.name) {
                self.consumed.insert(d.name.clone());
            }
            scope.args.push((d.name.clone(), value.clone()));
            out.push(ArgDecl {
                name: d.name.clone(),
                default: value,
            });
        }
        Ok(out)
    }
}

/// ENV and LABEL pairs: keys and values substituted with the scope as it
/// was before the instruction (`ENV a=1 b=$a` gives b the old a, as Docker
/// does).
fn substitute_pairs(
    pairs: &[(String, String)],
    esc: char,
    scope: &Scope,
) -> Result<Vec<(String, String)>, String> {
    let look = |n: &str| scope.lookup(n);
    pairs
        .iter()
        .map(|(k, v)| Ok((lex::word(k, esc, &look)?, lex::word(v, esc, &look)?)))
        .collect()
}

/// EXPOSE: each word substituted and split; each must be a port, a range,
/// with an optional protocol.
fn expose(ports: &[String], esc: char, scope: &Scope) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for p in ports {
        for port in lex::words(p, esc, &|n| scope.lookup(n))? {
            check_port(&port)?;
            out.push(port);
        }
    }
    Ok(out)
}

/// `80`, `80/tcp`, `8000-8010/udp`: what Docker accepts in EXPOSE.
fn check_port(port: &str) -> Result<(), String> {
    let (range, proto) = port.split_once('/').unwrap_or((port, "tcp"));
    let proto_ok = ["tcp", "udp", "sctp"].contains(&proto.to_ascii_lowercase().as_str());
    let (lo, hi) = range.split_once('-').unwrap_or((range, range));
    let num = |s: &str| s.parse::<u16>().ok();
    match (num(lo), num(hi)) {
        (Some(a), Some(b)) if proto_ok && a <= b => Ok(()),
        _ => Err(format!(
            "invalid port {port:?}: expected PORT[-PORT][/tcp|udp|sctp]"
        )),
    }
}

fn volumes(v: &[String], esc: char, scope: &Scope) -> Result<Vec<String>, String> {
    v.iter()
        .map(|p| {
            let s = lex::word(p, esc, &|n| scope.lookup(n))?;
            if s.trim().is_empty() {
                return Err("VOLUME specified can not be an empty string".to_string());
            }
            Ok(s)
        })
        .collect()
}

/// COPY/ADD: sources, destination, flags; heredoc bodies whose delimiter
/// was not quoted.
fn transfer(t: &Transfer, esc: char, scope: &Scope) -> Result<Transfer, String> {
    let look = |n: &str| scope.lookup(n);
    let w = |s: &String| lex::word(s, esc, &look);
    let opt = |s: &Option<String>| s.as_ref().map(w).transpose();
    let sources = t
        .sources
        .iter()
        .map(|s| match s {
            Source::Path(p) => Ok(Source::Path(w(p)?)),
            Source::Heredoc(h) if h.expand => Ok(Source::Heredoc(Heredoc {
                content: lex::heredoc(&h.content, esc, &look)?,
                ..h.clone()
            })),
            Source::Heredoc(h) => Ok(Source::Heredoc(h.clone())),
        })
        .collect::<Result<_, String>>()?;
    Ok(Transfer {
        sources,
        dest: w(&t.dest)?,
        from: opt(&t.from)?,
        chown: opt(&t.chown)?,
        chmod: opt(&t.chmod)?,
        exclude: t.exclude.iter().map(w).collect::<Result<_, _>>()?,
        checksum: opt(&t.checksum)?,
        ..t.clone()
    })
}

/// RUN: only the mounts' values; the command is the shell's business.
fn run(r: &Run, esc: char, scope: &Scope) -> Result<Run, String> {
    let look = |n: &str| scope.lookup(n);
    let opt = |s: &Option<String>| s.as_ref().map(|s| lex::word(s, esc, &look)).transpose();
    let mounts = r
        .mounts
        .iter()
        .map(|m| {
            Ok(Mount {
                target: opt(&m.target)?,
                source: opt(&m.source)?,
                from: opt(&m.from)?,
                id: opt(&m.id)?,
                sharing: opt(&m.sharing)?,
                mode: opt(&m.mode)?,
                uid: opt(&m.uid)?,
                gid: opt(&m.gid)?,
                size: opt(&m.size)?,
                env: opt(&m.env)?,
                ..m.clone()
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Run {
        mounts,
        ..r.clone()
    })
}

/// The target's index: the named stage, or the last one.
fn target_index(
    file: &Containerfile,
    stages: &[Stage],
    target: Option<&str>,
) -> Result<usize, Error> {
    let Some(t) = target else {
        return Ok(stages.len().saturating_sub(1));
    };
    let lower = t.to_ascii_lowercase();
    stages
        .iter()
        .find(|s| s.name.as_deref() == Some(&lower))
        .map(|s| s.index)
        .ok_or_else(|| Error::File {
            file: file.file.clone(),
            message: format!("target stage {t:?} could not be found"),
        })
}

/// The stages `target` needs, itself included. Stages only use earlier
/// ones, so ascending index order is a dependency order.
fn needed(stages: &[Stage], target: usize) -> Vec<usize> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if seen.insert(i) {
            todo.extend(stages[i].depends_on.iter().copied());
        }
    }
    seen.into_iter().collect()
}
