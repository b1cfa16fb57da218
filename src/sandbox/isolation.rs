//! Isolation levels: how much of a sandbox the machine shipyard runs on
//! allows, chosen once per build and named in one log line.
//!
//! CI jobs mostly run inside containers, and containers take away what a
//! rootless sandbox is built from: Docker's default seccomp profile refuses
//! new user namespaces outright, a rootless podman container has a partial
//! id map (so newuidmap and a root's own map writes fail) and a `/proc`
//! with masked paths (so the kernel refuses a fresh proc mount). Rather
//! than failing there, shipyard steps down a ladder and says what it gave
//! up:
//!
//! 1. [`Level::Userns`]: a user namespace with a subordinate id range, or
//!    a single id when the range cannot be mapped; a fresh `/proc` in a new
//!    pid namespace, or a read-only recursive bind of the existing `/proc`
//!    when a fresh one is refused, or no new pid namespace at all.
//! 2. [`Level::Chroot`]: real root without user namespaces. With
//!    `CAP_SYS_ADMIN` the step gets the same mount, pid, uts, ipc and
//!    network namespaces as at level 1, only without a user namespace;
//!    without it (Docker's default capabilities) the builder is a copy,
//!    entered with chroot, with devices made by mknod and no `/proc`.
//!    Either way the step gets the masks, the capability cut and the
//!    seccomp filter of a root container.
//! 3. [`Level::None`] (kaniko's model): the disposable CI container is the
//!    builder; rules run in place. Only chosen automatically inside a
//!    container.
//!
//! Which rungs work is found by a probe (see the helper's `Probe` action)
//! that tries each one in a throw-away child; the decision from what the
//! probe found is [`decide`], a pure function.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Environment variable that picks the isolation level, as `--isolation`.
pub const ISOLATION_ENV: &str = "SHIPYARD_ISOLATION";

/// The isolation a user asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// The strongest level that works here.
    #[default]
    Auto,
    Userns,
    Chroot,
    None,
}

impl std::str::FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "userns" => Ok(Self::Userns),
            "chroot" => Ok(Self::Chroot),
            "none" => Ok(Self::None),
            _ => Err(format!(
                "unknown isolation level {s:?}: use auto, userns, chroot or none"
            )),
        }
    }
}

impl Isolation {
    /// The level `SHIPYARD_ISOLATION` asks for, if set.
    pub fn from_env() -> Result<Option<Self>, String> {
        match std::env::var(ISOLATION_ENV) {
            Ok(v) if !v.is_empty() => v
                .parse()
                .map(Some)
                .map_err(|e| format!("{ISOLATION_ENV}: {e}")),
            _ => Ok(None),
        }
    }
}

/// A level a build runs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Userns,
    Chroot,
    None,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Userns => "userns",
            Level::Chroot => "chroot",
            Level::None => "none",
        })
    }
}

/// How ids are mapped into a user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdMap {
    /// The caller's id and its subordinate range (or root's first 65536
    /// ids): steps may own files as any id.
    #[default]
    Range,
    /// The caller's id alone, as root inside: files a step gives to
    /// another id keep the caller's.
    Single,
}

/// How a step gets its `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcMode {
    /// A new pid namespace and a proc mounted for it.
    #[default]
    Fresh,
    /// A new pid namespace, and the existing `/proc` bound read-only (its
    /// masks included): the step sees the processes around it.
    HostBind,
    /// No new pid namespace (the kernel refused one): the step's processes
    /// are found and killed through the helper as their subreaper.
    NoPidNs,
}

/// What a build's steps run with: the level and, within it, what the
/// machine allowed. Carried in every step's spec, so that every step of a
/// build runs the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confinement {
    pub level: Level,
    pub map: IdMap,
    pub proc_mode: ProcMode,
    /// Mounts and namespaces other than the user namespace are available
    /// (always at level userns; at chroot, with CAP_SYS_ADMIN).
    pub mounts: bool,
    /// What was given up, and why: for the log line.
    pub notes: Vec<String>,
}

impl Default for Confinement {
    fn default() -> Self {
        Self::full()
    }
}

impl Confinement {
    /// The full sandbox, for callers that probe nothing (tests).
    pub fn full() -> Self {
        Self {
            level: Level::Userns,
            map: IdMap::Range,
            proc_mode: ProcMode::Fresh,
            mounts: true,
            notes: Vec::new(),
        }
    }

    /// Whether steps run inside a new mount namespace (and can therefore
    /// have an overlay, bind mounts and a private `/tmp`).
    pub fn namespaced(&self) -> bool {
        match self.level {
            Level::Userns => true,
            Level::Chroot => self.mounts,
            Level::None => false,
        }
    }

    /// Why a builder cannot be used at this level: at `none` the container
    /// shipyard runs in is the builder, so only `from = "host"` can be.
    pub fn unusable_builder(&self, from: &str) -> Option<String> {
        (self.level == Level::None && from != "host").then(|| {
            format!(
                "at isolation none the container shipyard runs in is the builder, so the \
                 builder must be `from = \"host\"` (this one is {from:?}); run shipyard in a \
                 container made from that image instead"
            )
        })
    }

    /// The log line: the level, then what was given up.
    pub fn summary(&self) -> String {
        if self.notes.is_empty() {
            self.level.to_string()
        } else {
            format!("{} ({})", self.level, self.notes.join("; "))
        }
    }
}

/// What the probe found, rung by rung (`Err`: why the rung is out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// The user namespace rung: the best map and proc that worked, with
    /// notes on what did not.
    pub userns: Result<(IdMap, ProcMode, Vec<String>), String>,
    /// The chroot rung (only probed for real root): whether mounts work,
    /// with notes.
    pub chroot: Option<Result<(bool, Vec<String>), String>>,
}

/// What the machine is, for [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    pub in_container: bool,
    /// The builder is `host` (the CI runner's toolchain).
    pub host_builder: bool,
}

/// No level could be used: what was tried, and what would fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NoIsolation {
    pub requested: Isolation,
    pub tried: Vec<(Level, String)>,
}

impl fmt::Display for NoIsolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.requested {
            Isolation::Auto => writeln!(f, "no isolation level works here; tried:")?,
            r => writeln!(f, "isolation {} does not work here; tried:", level_of(r))?,
        }
        for (level, why) in &self.tried {
            writeln!(f, "  {level}: {why}")?;
        }
        write!(
            f,
            "to fix it, one of:\n\
             \x20 - allow unprivileged user namespaces: sysctl kernel.unprivileged_userns_clone=1 \
             and user.max_user_namespaces>0; on Ubuntu 24.04 either \
             sysctl kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for \
             shipyard with `userns,` (see docs/ci.md)\n\
             \x20 - in Docker, run the job's container with --security-opt seccomp=unconfined \
             (or a profile that allows unshare/clone with CLONE_NEWUSER), or as root for \
             --isolation chroot\n\
             \x20 - in Kubernetes, see docs/ci.md for the securityContext each level needs\n\
             \x20 - in a disposable CI container, --isolation none (the container is the builder)"
        )
    }
}

fn level_of(i: Isolation) -> Level {
    match i {
        Isolation::Chroot => Level::Chroot,
        Isolation::None => Level::None,
        Isolation::Auto | Isolation::Userns => Level::Userns,
    }
}

/// Chooses the level from what the probe found: pure, so the policy is
/// tested without the machines it describes.
pub fn decide(
    requested: Isolation,
    report: &ProbeReport,
    host: Host,
) -> Result<Confinement, NoIsolation> {
    let mut tried = Vec::new();
    let userns = || match &report.userns {
        Ok((map, proc_mode, notes)) => Ok(Confinement {
            level: Level::Userns,
            map: *map,
            proc_mode: *proc_mode,
            mounts: true,
            notes: notes.clone(),
        }),
        Err(why) => Err((Level::Userns, why.clone())),
    };
    let chroot = || match &report.chroot {
        None => Err((
            Level::Chroot,
            "needs real root (shipyard runs as another user)".to_string(),
        )),
        Some(Err(why)) => Err((Level::Chroot, why.clone())),
        Some(Ok((mounts, notes))) => {
            let mut notes = notes.clone();
            if !mounts {
                notes.push(
                    "the builder is a copy entered with chroot, without /proc, and steps \
                     share the container's network"
                        .into(),
                );
            }
            Ok(Confinement {
                level: Level::Chroot,
                map: IdMap::Range,
                proc_mode: if *mounts {
                    ProcMode::Fresh
                } else {
                    ProcMode::NoPidNs
                },
                mounts: *mounts,
                notes,
            })
        }
    };
    let none = |why: &str| Confinement {
        level: Level::None,
        map: IdMap::Single,
        proc_mode: ProcMode::NoPidNs,
        mounts: false,
        notes: vec![why.to_string()],
    };
    match requested {
        Isolation::Userns => userns().map_err(|t| {
            tried.push(t);
            NoIsolation { requested, tried }
        }),
        Isolation::Chroot => chroot().map_err(|t| {
            tried.push(t);
            NoIsolation { requested, tried }
        }),
        Isolation::None => Ok(none("asked for: steps run unconfined, in place")),
        Isolation::Auto => {
            match userns() {
                Ok(c) => return Ok(c),
                Err(t) => tried.push(t),
            }
            match chroot() {
                // The `host` builder is the machine's own tree: without
                // mounts it cannot be put together under a chroot, and in
                // a container the container is that tree already.
                Ok(c) if !c.mounts && host.host_builder && host.in_container => {
                    tried.push((
                        Level::Chroot,
                        "the host builder needs bind mounts (no CAP_SYS_ADMIN)".into(),
                    ));
                }
                Ok(c) => return Ok(c),
                Err(t) => tried.push(t),
            }
            if host.in_container && !host.host_builder {
                tried.push((
                    Level::None,
                    "the container can be the builder only for `from = \"host\"` (run \
                     shipyard in a container made from the builder image instead)"
                        .into(),
                ));
                return Err(NoIsolation { requested, tried });
            }
            if host.in_container {
                let why = format!(
                    "inside a container where {}: the container is the builder",
                    tried
                        .iter()
                        .map(|(l, w)| format!("{l} does not work ({w})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return Ok(none(&why));
            }
            tried.push((
                Level::None,
                "not inside a container: steps would run unconfined on this machine \
                 (ask for it with --isolation none if that is what you want)"
                    .into(),
            ));
            Err(NoIsolation { requested, tried })
        }
    }
}

/// Whether this process runs inside a container: the marker files Docker
/// and podman leave, the `container` variable systemd-nspawn and podman
/// set, or a pid 1 that is not an init of a booted system's cgroup.
pub fn in_container() -> bool {
    if std::path::Path::new("/.dockerenv").exists()
        || std::path::Path::new("/run/.containerenv").exists()
        || std::env::var_os("container").is_some()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
    {
        return true;
    }
    std::fs::read_to_string("/proc/1/cgroup").is_ok_and(|c| {
        c.lines().any(|l| {
            ["docker", "kubepods", "containerd", "libpod", "lxc"]
                .iter()
                .any(|k| l.contains(k))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(_real_root: bool, in_container: bool) -> Host {
        Host {
            in_container,
            host_builder: false,
        }
    }

    fn report_userns_ok() -> ProbeReport {
        ProbeReport {
            userns: Ok((IdMap::Range, ProcMode::Fresh, vec![])),
            chroot: Some(Ok((true, vec![]))),
        }
    }

    /// Docker with its default profile, as root: no user namespaces, no
    /// CAP_SYS_ADMIN.
    fn report_docker_root() -> ProbeReport {
        ProbeReport {
            userns: Err("creating the user namespace: EPERM".into()),
            chroot: Some(Ok((false, vec![]))),
        }
    }

    #[test]
    fn auto_takes_the_strongest_level_that_works() {
        let c = decide(Isolation::Auto, &report_userns_ok(), host(false, false)).unwrap();
        assert_eq!(c, Confinement::full());
        let c = decide(Isolation::Auto, &report_docker_root(), host(true, true)).unwrap();
        assert_eq!((c.level, c.mounts), (Level::Chroot, false));
        assert!(c.summary().starts_with("chroot ("), "{}", c.summary());
    }

    #[test]
    fn userns_fallbacks_are_named_in_the_summary() {
        let r = ProbeReport {
            userns: Ok((
                IdMap::Single,
                ProcMode::HostBind,
                vec!["single-id map: newuidmap failed".into()],
            )),
            chroot: None,
        };
        let c = decide(Isolation::Auto, &r, host(false, true)).unwrap();
        assert_eq!(c.level, Level::Userns);
        assert_eq!(c.summary(), "userns (single-id map: newuidmap failed)");
    }

    #[test]
    fn none_is_chosen_only_inside_a_container_for_the_host_builder() {
        let r = ProbeReport {
            userns: Err("EPERM".into()),
            chroot: None,
        };
        let mut h = host(false, true);
        h.host_builder = true;
        let c = decide(Isolation::Auto, &r, h).unwrap();
        assert_eq!(c.level, Level::None);
        assert!(c.summary().contains("userns does not work (EPERM)"));
        let err = decide(Isolation::Auto, &r, host(false, false)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("userns: EPERM"), "{text}");
        assert!(text.contains("chroot: needs real root"), "{text}");
        assert!(text.contains("none: not inside a container"), "{text}");
        assert!(
            text.contains("apparmor_restrict_unprivileged_userns"),
            "{text}"
        );
        assert!(text.contains("--security-opt seccomp"), "{text}");
        assert!(text.contains("--isolation none"), "{text}");
        // An image builder cannot be the container: the error says so.
        let err = decide(Isolation::Auto, &r, host(false, true)).unwrap_err();
        assert!(
            err.to_string().contains("only for `from = \"host\"`"),
            "{err}"
        );
        // Asked for, none works anywhere.
        let c = decide(Isolation::None, &r, host(false, false)).unwrap();
        assert_eq!(c.level, Level::None);
    }

    #[test]
    fn a_forced_level_that_does_not_work_is_an_error_not_a_fallback() {
        let err = decide(Isolation::Userns, &report_docker_root(), host(true, true)).unwrap_err();
        assert_eq!(err.tried.len(), 1);
        assert!(err
            .to_string()
            .starts_with("isolation userns does not work here"));
        let r = ProbeReport {
            userns: Ok((IdMap::Single, ProcMode::Fresh, vec![])),
            chroot: None,
        };
        let err = decide(Isolation::Chroot, &r, host(false, false)).unwrap_err();
        assert!(err.to_string().contains("needs real root"), "{err}");
    }

    #[test]
    fn a_host_builder_in_a_container_without_mounts_runs_in_place() {
        let mut h = host(true, true);
        h.host_builder = true;
        let c = decide(Isolation::Auto, &report_docker_root(), h).unwrap();
        assert_eq!(c.level, Level::None);
        assert!(c.summary().contains("bind mounts"), "{}", c.summary());
    }

    #[test]
    fn at_none_only_the_host_builder_can_be_used() {
        let r = ProbeReport {
            userns: Err("EPERM".into()),
            chroot: None,
        };
        let none = decide(Isolation::None, &r, host(false, true)).unwrap();
        assert_eq!(none.unusable_builder("host"), None);
        let why = none.unusable_builder("oci:/img:tag").unwrap();
        assert!(why.contains("must be `from = \"host\"`"), "{why}");
        assert_eq!(Confinement::full().unusable_builder("oci:/img:tag"), None);
    }

    #[test]
    fn levels_parse_and_reject_typos() {
        assert_eq!("chroot".parse::<Isolation>(), Ok(Isolation::Chroot));
        let e = "chrot".parse::<Isolation>().unwrap_err();
        assert!(e.contains("auto, userns, chroot or none"), "{e}");
    }
}
