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

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, clap::ValueEnum)]
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
}

/// What a sandbox helper does.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub enum Action {
    /// Build the root and run `argv` in it.
    #[default]
    Exec,
    /// Run a tapeout inside the build's user namespace, where the files a
    /// step gave to other ids are readable, and nothing else.
    Tapeout(Box<TapeoutJob>),
    /// Store what the last rule changed in the builder as a cached layer.
    Capture(Box<crate::build::capture::CaptureJob>),
    /// Put cached rule layers back into the builder instead of running
    /// their rules.
    Restore(Box<crate::build::restore::RestoreJob>),
    /// Try each isolation level in a throw-away child and print what works
    /// (a `ProbeReport` as JSON) on stdout.
    Probe,
}

/// A tapeout to run in the builder's user namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TapeoutJob {
    pub rule: crate::project::TapeoutRule,
    pub changes: PathBuf,
    pub lowers: Vec<PathBuf>,
    pub host_dirs: Vec<PathBuf>,
    pub copy_mode: bool,
    pub stage: PathBuf,
    pub final_step: bool,
    /// Where the explanation is written (JSON: image path → reason).
    pub explain_out: PathBuf,
    /// At isolation none: a manifest of what the rules changed in `/`
    /// (the builder is `/` itself; see `build::inplace`).
    #[serde(default)]
    pub in_place: Option<PathBuf>,
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
