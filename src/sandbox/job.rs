//! What a sandboxed step is: serialized from the parent to the helper
//! process that builds the namespaces.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How the step's root filesystem is made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Root {
    /// Overlay: read-only lower trees (first is topmost), the step's own
    /// upper and work dirs. `merged` is where it is mounted.
    Overlay {
        lowers: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
        merged: PathBuf,
    },
    /// A writable directory used as the root directly (copy mode, scratch).
    Dir(PathBuf),
    /// The host's own toolchain: `dirs` (e.g. /usr, /etc, /lib*) bound
    /// read-only into the writable `state/root`, where writes land.
    Host { dirs: Vec<PathBuf>, state: PathBuf },
}

/// The network a step sees.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// A new network namespace with only loopback.
    #[default]
    None,
    /// The host's network (and its /etc/resolv.conf and /etc/hosts).
    Host,
}

/// A bind mount of a host path into the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub writable: bool,
}

impl Bind {
    /// Why `target`, as a user wrote it, is no bind target: it must be
    /// absolute and free of `..`. (The sandbox resolves any target inside
    /// the step's root anyway; this is for a clear error up front.)
    pub fn check_target(target: &str) -> Result<(), &'static str> {
        if !target.starts_with('/') {
            return Err("the target must be an absolute path");
        }
        if std::path::Path::new(target)
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err("the target must not contain `..`");
        }
        Ok(())
    }
}

/// An empty tmpfs a step sees at `target` (BuildKit's
/// `RUN --mount=type=tmpfs`): in memory, gone when the step ends, so
/// nothing written there reaches the builder or a layer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tmpfs {
    pub target: PathBuf,
    /// Its size limit in bytes (the kernel's default, half the memory,
    /// when none).
    pub size: Option<u64>,
}

impl Tmpfs {
    /// The mount's options: world-writable with the sticky bit, as
    /// BuildKit mounts it, and the size when one is given.
    pub fn options(&self) -> String {
        match self.size {
            Some(n) => format!("mode=1777,size={n}"),
            None => "mode=1777".to_string(),
        }
    }
}

/// A secret a step sees at `/run/secrets/NAME` (on a tmpfs, mode 0400,
/// owned by the step's user), read from `source` when the step starts.
/// Only the name and the path travel to the helper, never the value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Secret {
    pub name: String,
    pub source: PathBuf,
}

impl Secret {
    /// Where secrets are, inside a step.
    pub const DIR: &'static str = "/run/secrets";
    /// The largest secret, in bytes (the tmpfs holding them is this big).
    pub const MAX: u64 = 1 << 20;

    /// Why `name` is no secret name: one path component of letters,
    /// digits, `.`, `_` and `-`, not `.` or `..`.
    pub fn check_name(name: &str) -> Result<(), &'static str> {
        if name.is_empty() || name == "." || name == ".." {
            return Err("a secret needs a name");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err("a secret's name may hold only letters, digits, '.', '_' and '-'");
        }
        Ok(())
    }
}

/// Subordinate id ranges to map through newuidmap/newgidmap.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubIds {
    pub uid_start: u32,
    pub gid_start: u32,
    pub count: u32,
}

/// Everything the helper needs to run one step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepSpec {
    pub root: Root,
    pub binds: Vec<Bind>,
    pub network: Network,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub argv: Vec<String>,
    pub hostname: String,
    /// uid and gid the command runs as inside (0 unless the rule says).
    pub user: (u32, u32),
    /// Full id range via the setuid helpers; `None`: one id mapped to root.
    pub subids: Option<SubIds>,
    /// What the helper does once the user namespace exists.
    #[serde(default)]
    pub action: Action,
    /// The isolation level and what it gave up (see `isolation`).
    #[serde(default)]
    pub confinement: super::isolation::Confinement,
    /// Secrets the step sees at `/run/secrets`.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// The host's CA bundle, to put where the builder's distro reads its
    /// own (see `sandbox::ca`).
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// Empty tmpfs mounts, made after the binds.
    #[serde(default)]
    pub tmpfs: Vec<Tmpfs>,
}

/// What a sandbox helper does.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub enum Action {
    /// Build the root and run `argv` in it.
    #[default]
    Exec,
    /// Run shipyard's own work (a tapeout, a capture, a restore) as root of
    /// the build's user namespace, where the files a step gave to other ids
    /// are readable; no step runs. The sandbox carries it without knowing
    /// what it is: the binary's edge hands `helper_main` the dispatcher.
    InNamespace(NsJob),
    /// Try each isolation level in a throw-away child and print what works
    /// (a `ProbeReport` as JSON) on stdout.
    Probe,
}

/// Work run inside the namespaces, opaque to the sandbox: a kind, which
/// picks the handler, and its serialized description.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NsJob {
    /// Which [`InNamespace`] type this is (its `KIND`).
    pub kind: String,
    /// The job itself, as JSON.
    pub payload: serde_json::Value,
}

/// A kind of work that runs as root of the build's user namespace. Its
/// errors are messages for the helper's stderr, which the parent shows.
pub trait InNamespace: Serialize + serde::de::DeserializeOwned {
    /// The name the helper dispatches on; unique among the kinds.
    const KIND: &'static str;
    /// Does the work.
    fn run(&self) -> Result<(), String>;
}

impl NsJob {
    /// Wraps `job` for the helper.
    pub fn new<J: InNamespace>(job: &J) -> Result<NsJob, serde_json::Error> {
        Ok(NsJob {
            kind: J::KIND.to_string(),
            payload: serde_json::to_value(job)?,
        })
    }

    /// Runs the job if it is a `J`; `None` if it is another kind.
    pub fn run_as<J: InNamespace>(&self) -> Option<Result<(), String>> {
        if self.kind != J::KIND {
            return None;
        }
        Some(
            J::deserialize(&self.payload)
                .map_err(|e| format!("{} job: {e}", J::KIND))
                .and_then(|j| j.run()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Bind;

    #[test]
    fn secret_names_are_one_plain_component() {
        use super::Secret;
        assert!(Secret::check_name("pip-token_2.txt").is_ok());
        for bad in ["", ".", "..", "a/b", "../x", "a b", "x\n"] {
            assert!(Secret::check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bind_targets_are_absolute_and_never_climb() {
        assert!(Bind::check_target("/src").is_ok());
        assert!(Bind::check_target("/a/b.c/..d").is_ok());
        assert!(Bind::check_target("src").is_err());
        assert!(Bind::check_target("/../etc").is_err());
        assert!(Bind::check_target("/a/../../b").is_err());
    }
}
