//! The syntax tree of a Containerfile. Values are kept as written (quotes
//! and `$VAR`s included) until [`super::resolve`] substitutes them, because
//! which variables are visible depends on the stage and on the build
//! arguments, which the parser does not know.

use std::time::Duration;

/// A parsed Containerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Containerfile {
    /// The name errors give (a path as the user wrote it).
    pub file: String,
    /// The escape character: `\` unless `# escape=` said `` ` ``.
    pub escape: char,
    /// `# syntax=`: recorded so a caller can warn that it picks no frontend
    /// here; it changes nothing in parsing.
    pub syntax: Option<String>,
    /// `# check=`: BuildKit's lint settings, recorded and not acted on.
    pub check: Option<String>,
    pub instructions: Vec<Located>,
}

/// One instruction and where it is in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The 1-based line the instruction starts on.
    pub line: usize,
    /// The last line it covers (continuations and heredoc bodies included).
    pub end_line: usize,
    /// The source lines it covers, as written, joined by `\n` (what a build
    /// log shows; `ONBUILD` stores the trigger's text).
    pub original: String,
    pub instruction: Instruction,
}

/// The instructions BuildKit's frontend knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    From {
        /// The base as written: an image reference, `scratch` or an
        /// earlier stage's name.
        image: String,
        /// `AS name`, lowercased as BuildKit compares stage names.
        name: Option<String>,
        /// `--platform`.
        platform: Option<String>,
    },
    Run(Run),
    Copy(Transfer),
    Add(Transfer),
    /// `ENV k=v …` or the old `ENV k v`: pairs in order.
    Env(Vec<(String, String)>),
    Arg(Vec<ArgDecl>),
    Workdir(String),
    User(String),
    Entrypoint(Command),
    Cmd(Command),
    /// Always the exec form: BuildKit refuses a shell form.
    Shell(Vec<String>),
    Expose(Vec<String>),
    Volume(Vec<String>),
    Label(Vec<(String, String)>),
    StopSignal(String),
    Healthcheck(Healthcheck),
    /// The trigger, parsed (so a bad one fails here) and kept with its
    /// text, which is what goes into the image config.
    Onbuild(Box<Located>),
    /// Deprecated; Docker and buildah set the config's `author` from it.
    Maintainer(String),
}

impl Instruction {
    /// The keyword, upper case, as errors and logs name it.
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::From { .. } => "FROM",
            Instruction::Run(_) => "RUN",
            Instruction::Copy(_) => "COPY",
            Instruction::Add(_) => "ADD",
            Instruction::Env(_) => "ENV",
            Instruction::Arg(_) => "ARG",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::User(_) => "USER",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Cmd(_) => "CMD",
            Instruction::Shell(_) => "SHELL",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Volume(_) => "VOLUME",
            Instruction::Label(_) => "LABEL",
            Instruction::StopSignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// A command in either form. The difference matters at run time: the
/// shell form runs under `SHELL` (default `/bin/sh -c`), the exec form
/// does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A JSON array of strings.
    Exec(Vec<String>),
    /// Anything else, as written (an array that is not valid JSON lands
    /// here, as in Docker).
    Shell(String),
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub command: Command,
    /// The heredocs the command line opens, in order (shell form only).
    pub heredocs: Vec<Heredoc>,
    pub mounts: Vec<Mount>,
    pub network: Option<Network>,
}

/// A heredoc body (`<<EOF … EOF`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word, unquoted.
    pub name: String,
    /// The body, each line ending in `\n`.
    pub content: String,
    /// False when the delimiter was quoted (`<<"EOF"`, `<<'EOF'`): the
    /// body is then taken literally.
    pub expand: bool,
    /// `<<-`: leading tabs were stripped from the body and delimiter.
    pub chomp: bool,
    /// A file descriptor before `<<` (`3<<EOF`), for RUN.
    pub fd: Option<u32>,
}

/// `--network=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Default,
    None,
    Host,
}

/// `--mount=` on RUN. Strings are as written until resolution substitutes
/// them (BuildKit expands mount options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: MountKind,
    pub target: Option<String>,
    pub source: Option<String>,
    /// A stage or image the mount's files come from (bind, cache).
    pub from: Option<String>,
    /// Read-only: the default for bind mounts, writable otherwise.
    pub readonly: bool,
    /// Cache and secret id (a cache defaults to its target, a secret to its
    /// target's base name; left to the caller).
    pub id: Option<String>,
    /// Cache sharing: `shared` (default), `private`, `locked`.
    pub sharing: Option<String>,
    pub mode: Option<String>,
    pub uid: Option<String>,
    pub gid: Option<String>,
    /// Secret and ssh: fail when the secret is not provided.
    pub required: bool,
    /// tmpfs size.
    pub size: Option<String>,
    /// Secret: the environment variable it is exposed as.
    pub env: Option<String>,
}

/// Mount types BuildKit knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

/// `COPY` and `ADD`: what to copy where, and how.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transfer {
    pub sources: Vec<Source>,
    pub dest: String,
    /// `--from=stage|image`.
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    /// `--parents` (COPY).
    pub parents: bool,
    /// `--exclude=` patterns, in order.
    pub exclude: Vec<String>,
    /// `--checksum=` (ADD).
    pub checksum: Option<String>,
    /// `--keep-git-dir` (ADD).
    pub keep_git_dir: bool,
}

/// One source of a COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A path (or URL for ADD) as written.
    Path(String),
    /// An inline file (`COPY <<EOF /dest`): its name is the delimiter.
    Heredoc(Heredoc),
}

/// One name of an `ARG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub name: String,
    /// The default, as written; `None` for `ARG NAME`.
    pub default: Option<String>,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disables the base image's check.
    None,
    Cmd(HealthcheckCmd),
}

/// `HEALTHCHECK [options] CMD command`. Unset options inherit the base
/// image's, as in Docker, so they stay `None` here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthcheckCmd {
    pub command: Command,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u32>,
}

/// What a RUN executes, heredocs folded in the way BuildKit does it, so
/// the build runs the same thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// The exec form: these arguments, no shell.
    Exec(Vec<String>),
    /// One string for the stage's SHELL (`/bin/sh -c` by default).
    Shell(String),
    /// A lone heredoc starting with `#!`: written to a file named `name`
    /// (mode 0755) and that file executed, so its interpreter runs it.
    Script { name: String, content: String },
}

impl Run {
    /// How to run this: a command that is just one heredoc runs the body
    /// (as a script when it starts with `#!`, else with the shell); a
    /// command line with heredocs is given to the shell with their bodies
    /// and delimiters after it, so the shell reads them.
    pub fn invocation(&self) -> Invocation {
        let cmd = match &self.command {
            Command::Exec(v) => return Invocation::Exec(v.clone()),
            Command::Shell(cmd) => cmd,
        };
        let Some(first) = self.heredocs.first() else {
            return Invocation::Shell(cmd.clone());
        };
        let markers = super::words::heredoc_markers(cmd, '\\');
        let lone = self.heredocs.len() == 1
            && markers.len() == 1
            && markers[0].word == cmd.trim()
            && markers[0].fd.is_none();
        if lone && first.content.starts_with("#!") {
            return Invocation::Script {
                name: first.name.clone(),
                content: first.content.clone(),
            };
        }
        if lone {
            return Invocation::Shell(first.content.clone());
        }
        let mut full = cmd.clone();
        for h in &self.heredocs {
            full.push('\n');
            full.push_str(&h.content);
            full.push_str(&h.name);
        }
        Invocation::Shell(full)
    }
}

impl Mount {
    /// Where the step sees the mount: `target`, or for a secret without
    /// one `/run/secrets/ID` (BuildKit's default).
    pub fn effective_target(&self) -> Option<String> {
        match (&self.target, self.kind) {
            (Some(t), _) => Some(t.clone()),
            (None, MountKind::Secret) => self.id.as_ref().map(|id| format!("/run/secrets/{id}")),
            (None, _) => None,
        }
    }

    /// Which cache or secret this is: `id`, else for a cache its target
    /// and for a secret its target's base name, as BuildKit defaults them.
    pub fn effective_id(&self) -> Option<String> {
        if let Some(id) = &self.id {
            return Some(id.clone());
        }
        let target = self.target.as_deref()?;
        match self.kind {
            MountKind::Cache => Some(target.to_string()),
            MountKind::Secret => target.rsplit('/').next().map(str::to_string),
            _ => None,
        }
    }
}
