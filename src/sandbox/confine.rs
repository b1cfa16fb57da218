//! What a container gets from runc and Docker's defaults, for a step:
//! kernel interfaces in /proc read-only or masked, the capability set cut
//! to Docker's default one, and a seccomp filter in the spirit of Docker's
//! default profile.
//!
//! This matters most when shipyard runs as real root: id 0 in the step is
//! then the host's root, and a writable `/proc/sys/kernel/core_pattern` is
//! code execution on the host. Unprivileged callers get the same where the
//! kernel lets a user namespace do it; what it refuses is logged (debug)
//! and the step still runs, since there the kernel already keeps the
//! step's root away from the host's settings.
//!
//! `no_new_privs` is deliberately not set: a step may run setuid programs
//! (`su`, `sudo`, `ping`) as on any system, and gains nothing beyond the
//! bounding set by doing so. The seccomp filter is installed by the
//! (namespace) root instead, which needs CAP_SYS_ADMIN in the user
//! namespace; so it comes before the capabilities are dropped, the last
//! step before switching to the rule's user and exec.

use super::inroot::{InRoot, Kind};
use nix::mount::MsFlags;
use std::path::Path;

type Res<T> = Result<T, String>;

/// Docker's default capabilities, by number (linux/capability.h): CHOWN,
/// DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP,
/// NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
const DEFAULT_CAPS: [u32; 14] = [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31];

/// Docker's default capabilities as a mask, as /proc/PID/status shows it:
/// 00000000a80425fb.
const DEFAULT_CAP_MASK: u64 = {
    let mut m = 0u64;
    let mut i = 0;
    while i < DEFAULT_CAPS.len() {
        m |= 1 << DEFAULT_CAPS[i];
        i += 1;
    }
    m
};

/// Kernel interfaces a step may read but not change.
const READ_ONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Kernel interfaces a step does not see at all: files read as empty
/// (/dev/null over them), directories as empty read-only tmpfs.
const MASKED: [&str; 9] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
];

/// Makes [`READ_ONLY`] read-only and hides [`MASKED`] in the step's /proc
/// (already mounted). `strict` (real root): any failure is an error.
pub(super) fn protect_proc(inside: &InRoot, strict: bool) -> Res<()> {
    for p in READ_ONLY {
        let p = Path::new(p);
        if !inside.exists(p) {
            continue;
        }
        give_up_or_fail(strict, p, inside.bind_onto_itself_read_only(p))?;
    }
    for p in MASKED {
        let p = Path::new(p);
        let r = match inside.kind_of(p) {
            None => continue,
            Some(Kind::Dir) => mask_dir(inside, p),
            Some(Kind::File) => inside.bind(Path::new("/dev/null"), p, false),
        };
        give_up_or_fail(strict, p, r)?;
    }
    Ok(())
}

fn give_up_or_fail(strict: bool, p: &Path, r: Res<()>) -> Res<()> {
    match r {
        Ok(()) => Ok(()),
        Err(msg) if strict => Err(format!("protecting {}: {msg}", p.display())),
        Err(msg) => {
            tracing::debug!("{} left as the kernel shows it: {msg}", p.display());
            Ok(())
        }
    }
}

fn mask_dir(inside: &InRoot, p: &Path) -> Res<()> {
    inside.mount_fs(
        p,
        "tmpfs",
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=0,mode=0555"),
    )
}

/// The `host` builder as real root: the step's root is the host's root,
/// and the host's /etc is in its tree, so what only root may read there
/// (shadow, gshadow, private keys, sudoers…) is masked. What is left is
/// what any user of the host can read.
pub(super) fn mask_private_etc(inside: &InRoot) -> Res<()> {
    use std::os::unix::fs::MetadataExt;
    let mut walk = walkdir::WalkDir::new("/etc")
        .same_file_system(true)
        .follow_links(false)
        .into_iter();
    while let Some(ent) = walk.next() {
        let Ok(ent) = ent else { continue };
        let Ok(md) = ent.path().symlink_metadata() else {
            continue;
        };
        let ft = md.file_type();
        if ft.is_dir() && md.mode() & 0o005 != 0o005 {
            mask_dir(inside, ent.path())?;
            walk.skip_current_dir();
        } else if ft.is_file() && md.mode() & 0o004 == 0 {
            inside.bind(Path::new("/dev/null"), ent.path(), false)?;
        }
    }
    Ok(())
}

/// Cuts the capability bounding set to [`DEFAULT_CAP_MASK`]: nothing the
/// step runs, setuid programs included, can ever hold another.
pub(super) fn drop_bounding_set() -> Res<()> {
    drop_bounding_set_to(DEFAULT_CAP_MASK)
}

fn drop_bounding_set_to(mask: u64) -> Res<()> {
    for cap in 0..64u32 {
        if mask & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
            match nix::errno::Errno::last() {
                // Past the kernel's last capability.
                nix::errno::Errno::EINVAL => break,
                err => return Err(format!("dropping capability {cap}: {err}")),
            }
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Leaves the process with Docker's default capabilities (effective and
/// permitted), none inheritable and none ambient: what a root step runs
/// with. A step with another user loses them all when it switches.
pub(super) fn limit_capabilities() -> Res<()> {
    limit_capabilities_to(DEFAULT_CAP_MASK)
}

fn limit_capabilities_to(mask: u64) -> Res<()> {
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let word = |shift: u32| {
        let v = (mask >> shift) as u32;
        CapData {
            effective: v,
            permitted: v,
            inheritable: 0,
        }
    };
    let data = [word(0), word(32)];
    // SAFETY: capset with a version 3 header and the two data words it
    // reads.
    if unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) } != 0 {
        return Err(format!(
            "setting capabilities: {}",
            nix::errno::Errno::last()
        ));
    }
    // SAFETY: prctl with integer arguments.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if r != 0 {
        return Err(format!(
            "clearing ambient capabilities: {}",
            nix::errno::Errno::last()
        ));
    }
    Ok(())
}

/// CAP_SYS_CHROOT (linux/capability.h).
const CAP_SYS_CHROOT: u32 = 18;

/// A step chroot'ed without namespaces (see `plain`): the confinement of a
/// root container, less CAP_SYS_CHROOT (with it, root leaves a chroot by
/// chrooting into a subdirectory and climbing out), with the calls that
/// reach other processes of the shared pid namespace (ptrace and its
/// kin) refused. `no_new_privs` is set: without CAP_SYS_ADMIN it is the
/// only way to install a filter, and a root step gains nothing from
/// setuid programs anyway.
pub(super) fn confine_chroot() -> Res<()> {
    let mask = DEFAULT_CAP_MASK & !(1 << CAP_SYS_CHROOT);
    drop_bounding_set_to(mask)?;
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "setting no_new_privs: {}",
            nix::errno::Errno::last()
        ));
    }
    install_filters(true)?;
    limit_capabilities_to(mask)
}

/// Installs the step's seccomp filter (see [`filters`]).
pub(super) fn install_seccomp() -> Res<()> {
    install_filters(false)
}

fn install_filters(shared_pids: bool) -> Res<()> {
    let Some(programs) = filters(shared_pids)? else {
        tracing::debug!(
            "no seccomp filter on {}: only x86_64 and aarch64 have one",
            std::env::consts::ARCH
        );
        return Ok(());
    };
    for prog in programs {
        #[repr(C)]
        struct SockFprog {
            len: u16,
            filter: *const std::ffi::c_void,
        }
        let fprog = SockFprog {
            len: prog.len() as u16,
            filter: prog.as_ptr().cast(),
        };
        // SAFETY: the kernel copies the program; `prog` outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &fprog as *const SockFprog,
            )
        };
        if r != 0 {
            return Err(format!(
                "installing the seccomp filter: {}",
                nix::errno::Errno::last()
            ));
        }
    }
    Ok(())
}

/// The x32 ABI's syscall numbers are the x86_64 ones with this bit set,
/// and pass the same architecture check: a filter must name both.
#[cfg(target_arch = "x86_64")]
const X32: i64 = 0x4000_0000;

/// Syscalls that Docker's default profile refuses to a container without
/// extra capabilities, and that a build has no business making: kernel
/// modules and kexec, reboot, swap, accounting, the clocks, the kernel
/// keyring, BPF, perf, userfaultfd, file handles, quotas, the kernel log,
/// io_uring, and x86 port I/O and legacy calls. (mount, pivot_root, setns
/// and the like stay allowed: without CAP_SYS_ADMIN the kernel refuses
/// them anyway.)
fn denied(shared_pids: bool) -> Vec<i64> {
    let mut v: Vec<i64> = vec![
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_lookup_dcookie,
        libc::SYS_quotactl,
        libc::SYS_syslog,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ];
    if shared_pids {
        v.extend([
            libc::SYS_ptrace,
            libc::SYS_process_vm_readv,
            libc::SYS_process_vm_writev,
            libc::SYS_pidfd_getfd,
            libc::SYS_kcmp,
        ]);
    }
    #[cfg(target_arch = "x86_64")]
    {
        v.extend([
            libc::SYS_iopl,
            libc::SYS_ioperm,
            libc::SYS_uselib,
            libc::SYS_nfsservctl,
            libc::SYS__sysctl,
            libc::SYS_ustat,
            libc::SYS_sysfs,
        ]);
        let x32: Vec<i64> = v.iter().map(|n| n | X32).collect();
        v.extend(x32);
        // x32's own kexec_load.
        v.push(528 | X32);
    }
    v
}

/// The filters, compiled for this architecture (None where seccompiler
/// has none): calls from [`denied`], and unshare or clone asking for a new
/// user namespace (as Docker), fail with EPERM; clone3, whose flags a
/// filter cannot read, fails with ENOSYS so that the C library falls back
/// to clone (as Docker). Everything else is allowed.
///
/// seccompiler filters the native ABI only: a 32-bit (i386) program in a
/// step is killed at its first system call.
/// `shared_pids`: the step shares its pid namespace with shipyard (see
/// [`confine_chroot`]).
fn filters(shared_pids: bool) -> Res<Option<Vec<seccompiler::BpfProgram>>> {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        use seccompiler::{
            SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
            SeccompRule,
        };
        use std::collections::BTreeMap;
        let arch = seccompiler::TargetArch::try_from(std::env::consts::ARCH)
            .map_err(|e| format!("seccomp: {e}"))?;
        let err = |e: seccompiler::BackendError| format!("seccomp: {e}");
        let new_user = SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(libc::CLONE_NEWUSER as u64),
            libc::CLONE_NEWUSER as u64,
        )
        .map_err(err)?])
        .map_err(err)?;
        let mut eperm: BTreeMap<i64, Vec<SeccompRule>> = denied(shared_pids)
            .into_iter()
            .map(|n| (n, Vec::new()))
            .collect();
        let mut enosys: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        #[allow(unused_mut)]
        let mut clones = vec![(libc::SYS_clone, libc::SYS_unshare, libc::SYS_clone3)];
        #[cfg(target_arch = "x86_64")]
        clones.push((
            libc::SYS_clone | X32,
            libc::SYS_unshare | X32,
            libc::SYS_clone3 | X32,
        ));
        for (clone, unshare, clone3) in clones {
            eperm.insert(clone, vec![new_user.clone()]);
            eperm.insert(unshare, vec![new_user.clone()]);
            enosys.insert(clone3, Vec::new());
        }
        let mut out = Vec::new();
        for (rules, action) in [
            (eperm, SeccompAction::Errno(libc::EPERM as u32)),
            (enosys, SeccompAction::Errno(libc::ENOSYS as u32)),
        ] {
            let f = SeccompFilter::new(rules, SeccompAction::Allow, action, arch).map_err(err)?;
            out.push(seccompiler::BpfProgram::try_from(f).map_err(|e| format!("seccomp: {e}"))?);
        }
        Ok(Some(out))
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_capabilities_are_dockers() {
        assert_eq!(DEFAULT_CAP_MASK, 0xa804_25fb);
    }

    #[test]
    fn the_filters_compile_for_this_architecture() {
        let f = filters(true).unwrap();
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            assert_eq!(f.map(|v| v.len()), Some(2));
        }
    }
}
