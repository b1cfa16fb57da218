//! The helper's `Probe` action: tries each rung of the isolation ladder
//! (see `isolation`) in a throw-away child, so that the build decides once
//! what its steps run with, and every step then runs the same way.
//!
//! Each try is the real thing: the same id mapping, the same namespaces and
//! the same proc mounts the steps would get, made by the same functions.

use super::helper::enter_userns;
use super::inroot::InRoot;
use super::isolation::{IdMap, ProbeReport, ProcMode};
use super::job::StepSpec;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};
use std::io::Read;
use std::path::Path;

type Res<T> = Result<T, String>;

/// Runs the probe and prints the report as JSON on stdout.
pub(super) fn run(spec: &StepSpec) -> i32 {
    let scratch = match tempfile::Builder::new().prefix("shipyard-probe-").tempdir() {
        Ok(d) => d,
        Err(err) => {
            eprintln!("shipyard sandbox: a directory for the probe: {err}");
            return super::helper::SETUP_FAILED;
        }
    };
    let real_root = nix::unistd::geteuid().is_root();
    let report = ProbeReport {
        userns: userns(spec, scratch.path(), real_root),
        chroot: real_root.then(|| chroot(scratch.path())),
    };
    match serde_json::to_string(&report) {
        Ok(json) => {
            println!("{json}");
            0
        }
        Err(err) => {
            eprintln!("shipyard sandbox: {err}");
            super::helper::SETUP_FAILED
        }
    }
}

/// The user namespace rung: the id range first (when there is one), then a
/// single id; within it, the best `/proc` the kernel allows.
fn userns(
    spec: &StepSpec,
    scratch: &Path,
    real_root: bool,
) -> Result<(IdMap, ProcMode, Vec<String>), String> {
    let mut notes = Vec::new();
    let mut maps = Vec::new();
    if spec.subids.is_some() || real_root {
        maps.push(IdMap::Range);
    }
    maps.push(IdMap::Single);
    let mut last = String::new();
    for map in maps {
        let target = scratch.join(format!("{map:?}"));
        match in_child(|| {
            enter_userns(spec, map)?;
            proc_rung(&target)
        }) {
            Ok((mode, mut more)) => {
                notes.append(&mut more);
                return Ok((map, mode, notes));
            }
            Err(why) => {
                if map == IdMap::Range {
                    notes.push(format!(
                        "single-id map, files steps give to other ids keep the caller's \
                         (the id range could not be mapped: {why})"
                    ));
                }
                last = why;
            }
        }
    }
    Err(last)
}

/// Inside the new user namespace: a mount namespace, then a pid namespace
/// whose first process mounts a fresh proc, or binds the existing one.
fn proc_rung(target: &Path) -> Res<(ProcMode, Vec<String>)> {
    let mut notes = Vec::new();
    let base = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    let pidns = match unshare(base | CloneFlags::CLONE_NEWPID) {
        Ok(()) => true,
        Err(err) => {
            unshare(base).map_err(|e| format!("creating a mount namespace: {e}"))?;
            notes.push(format!("no new pid namespace ({err})"));
            false
        }
    };
    if let Err(err) = nix::unistd::sethostname("shipyard") {
        notes.push(format!(
            "steps see this machine's hostname (sethostname was refused: {err})"
        ));
    }
    // The steps' network namespace, unless they ask for the host's.
    if let Err(err) = unshare(CloneFlags::CLONE_NEWNET) {
        return Err(format!("creating a network namespace: {err}"));
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making mounts private: {e}"))?;
    std::fs::create_dir_all(target).map_err(|e| format!("{}: {e}", target.display()))?;
    let try_mounts = |fresh_allowed: bool| -> Res<(ProcMode, Vec<String>)> {
        let inside = InRoot::open(target)?;
        let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        let fresh = if fresh_allowed {
            inside.mount_fs(Path::new("/proc"), "proc", nosuid, None)
        } else {
            Err("no pid namespace of its own".into())
        };
        match fresh {
            Ok(()) => Ok((ProcMode::Fresh, Vec::new())),
            Err(why) => {
                inside
                    .bind(Path::new("/proc"), Path::new("/hostproc"), false)
                    .map_err(|b| format!("mounting /proc: {why}; binding /proc: {b}"))?;
                let mode = if fresh_allowed {
                    ProcMode::HostBind
                } else {
                    ProcMode::NoPidNs
                };
                Ok((
                    mode,
                    vec![format!(
                        "/proc is the existing one bound read-only: steps see the processes \
                         around them (a fresh proc was refused: {why})"
                    )],
                ))
            }
        }
    };
    if !pidns {
        let (_, mut more) = try_mounts(false)?;
        notes.append(&mut more);
        return Ok((ProcMode::NoPidNs, notes));
    }
    // Only the first process of the new pid namespace may mount its proc.
    let (mode, mut more) = in_child(|| try_mounts(true))?;
    notes.append(&mut more);
    Ok((mode, notes))
}

/// The chroot rung, for real root: chroot itself (CAP_SYS_CHROOT), then
/// whether mounts and namespaces other than the user namespace work
/// (CAP_SYS_ADMIN, and a seccomp profile that allows them).
fn chroot(scratch: &Path) -> Result<(bool, Vec<String>), String> {
    in_child(|| {
        nix::unistd::chroot("/").map_err(|e| format!("chroot: {e}"))?;
        let flags = CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWNET;
        match unshare(flags) {
            Ok(()) => {
                let target = scratch.join("chroot");
                match in_child(|| proc_for_root(&target)) {
                    Ok(()) => Ok((true, Vec::new())),
                    Err(why) => Ok((false, vec![format!("no mounts ({why})")])),
                }
            }
            Err(err) => Ok((false, vec![format!("no namespaces or mounts ({err})")])),
        }
    })
}

/// As the first process of the new pid namespace: mounts a fresh proc
/// (what the namespaced chroot level does).
fn proc_for_root(target: &Path) -> Res<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making mounts private: {e}"))?;
    std::fs::create_dir_all(target).map_err(|e| format!("{}: {e}", target.display()))?;
    let inside = InRoot::open(target)?;
    inside.mount_fs(
        Path::new("/proc"),
        "proc",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )
}

/// Runs `f` in a forked child and returns what it returned. The child's
/// namespaces and mounts die with it.
fn in_child<T: serde::Serialize + serde::de::DeserializeOwned>(
    f: impl FnOnce() -> Res<T>,
) -> Res<T> {
    let (r, w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the helper is single-threaded (a fresh exec), and so is every
    // child it forks here.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(r);
            let out: Res<T> = f();
            let json = serde_json::to_vec(&out).unwrap_or_default();
            let _ = nix::unistd::write(&w, &json);
            drop(w);
            std::process::exit(0);
        }
        ForkResult::Parent { child } => {
            drop(w);
            let mut buf = Vec::new();
            let _ = std::fs::File::from(r).read_to_end(&mut buf);
            let status = waitpid(child, None);
            match serde_json::from_slice::<Res<T>>(&buf) {
                Ok(out) => out,
                Err(_) => Err(format!(
                    "the probe's child ended without an answer ({status:?})"
                )),
            }
        }
    }
}
