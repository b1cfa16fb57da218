//! The sandbox helper: runs in a freshly exec'd, single-threaded
//! `shipyard __sandbox` process (forking a multi-threaded program is not
//! safe), creates the namespaces, and becomes the parent of the step's
//! PID 1. Everything here reports errors as text on stderr and exit code
//! 125, the convention of podman and runc for "the container could not
//! start".

use super::confine;
use super::inroot::InRoot;
use super::isolation::{IdMap, Level, ProcMode};
use super::job::{Network, Root, StepSpec, SubIds};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Gid, Pid, Uid};
use std::ffi::CString;
use std::path::{Path, PathBuf};

/// Exit code when the sandbox itself failed (not the step).
pub const SETUP_FAILED: i32 = 125;

type Res<T> = Result<T, String>;

fn e<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> String {
    move |err| format!("{what}: {err}")
}

/// Runs an [`NsJob`](super::job::NsJob): the binary's edge knows the
/// kinds, the sandbox does not.
pub type Dispatch<'a> = &'a dyn Fn(&super::job::NsJob) -> Result<(), String>;

/// Entry point of `shipyard __sandbox`; `jobs` runs in-namespace work.
pub fn helper_main(spec: &StepSpec, jobs: Dispatch) -> i32 {
    // Steps run under umask 022 whatever the caller's, as with buildah and
    // docker: what a step creates must not depend on who ran the build.
    // Set here, before anything is made: the mount points the helper
    // creates in the builder end up in its captured changes too.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    match run(spec, jobs) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("shipyard sandbox: {msg}");
            SETUP_FAILED
        }
    }
}

/// Fails if the shipyard process that started this helper is gone: the
/// parent-death signal only covers a death after it was armed.
pub(super) fn check_parent() -> Res<()> {
    let ppid = nix::unistd::getppid().as_raw();
    let expected = std::env::var(super::PARENT_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok());
    // Shipyard itself may be pid 1 (the first process of a container):
    // then a parent of 1 is shipyard, not an orphaned helper's reaper.
    let gone = match expected {
        Some(p) => p != ppid,
        None => ppid == 1,
    };
    if gone {
        return Err("shipyard exited before the sandbox started".into());
    }
    Ok(())
}

fn run(spec: &StepSpec, jobs: Dispatch) -> Res<i32> {
    // If shipyard dies (Ctrl-C, kill) while the namespaces are being made,
    // so does the helper; once the step runs, see `supervise`.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(e("set_pdeathsig"))?;
    check_parent()?;
    if let super::job::Action::Probe = spec.action {
        return Ok(super::probe::run(spec));
    }
    let uid = Uid::current().as_raw();
    // Real root: id 0 inside is the host's root, so the step gets the
    // confinement of a root container (see `pid1`).
    let real_root = uid == 0;
    let c = &spec.confinement;
    if c.level == Level::Userns {
        enter_userns(spec, c.map)?;
    }
    match &spec.action {
        super::job::Action::InNamespace(job) => return Ok(report(jobs(job))),
        super::job::Action::Exec | super::job::Action::Probe => {}
    }
    if !c.namespaced() {
        return super::plain::run(spec, real_root);
    }
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if c.proc_mode != ProcMode::NoPidNs {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    if spec.network == Network::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).map_err(e("creating namespaces"))?;
    // From here on the helper only waits for PID 1, and takes the step's
    // whole PID namespace down when told to stop: a timeout (SIGTERM from
    // shipyard), Ctrl-C (SIGINT to the terminal's process group), a hangup,
    // or shipyard's death (the parent-death signal, now SIGTERM so that it
    // is handled here rather than killing the helper outright). They are
    // blocked, so none is lost between here and `supervise`.
    let signals = stop_signals();
    signals.thread_block().map_err(e("blocking signals"))?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(e("set_pdeathsig"))?;
    check_parent()?;
    if c.proc_mode == ProcMode::NoPidNs {
        become_subreaper()?;
    }
    // PID 1 watches this pipe to learn whether the helper is still there
    // after it re-arms its own parent-death signal (see `pid1`).
    let (alive_r, alive_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(e("pipe"))?;
    // SAFETY: still single-threaded.
    match unsafe { fork() }.map_err(e("fork"))? {
        ForkResult::Child => {
            drop(alive_w);
            let msg = match pid1(spec, real_root, alive_r) {
                Ok(never) => match never {},
                Err(m) => m,
            };
            eprintln!("shipyard sandbox: {msg}");
            std::process::exit(SETUP_FAILED);
        }
        ForkResult::Parent { child } => {
            drop(alive_r);
            let code = supervise(child, &signals, c.proc_mode == ProcMode::NoPidNs);
            drop(alive_w);
            code
        }
    }
}

/// Creates the user namespace and maps ids into it (`map`: the caller's
/// subordinate range, or root's first 65536 ids, when there is one; else
/// the caller alone), then becomes its root.
pub(super) fn enter_userns(spec: &StepSpec, map: IdMap) -> Res<()> {
    let (uid, gid) = (Uid::current().as_raw(), Gid::current().as_raw());
    // A mapping wider than one id must be written from outside the new
    // namespace (the kernel checks the opener's capabilities in the parent
    // namespace): by the setuid helpers for a subordinate range, or by
    // ourselves when we are real root. So fork a mapper first, which stays
    // in the parent namespace, and let it act once we have unshared.
    let root_range = (uid == 0).then_some(SubIds {
        uid_start: 0,
        gid_start: 0,
        count: 65536,
    });
    let range = match map {
        IdMap::Range => spec.subids.or(root_range),
        IdMap::Single => None,
    };
    let (mapper, go) = match range {
        Some(sub) => {
            let (r, w) = nix::unistd::pipe().map_err(e("pipe"))?;
            let me = nix::unistd::getpid();
            // SAFETY: this process is single-threaded (fresh exec).
            match unsafe { fork() }.map_err(e("fork"))? {
                ForkResult::Child => {
                    drop(w);
                    let mut b = [0u8; 1];
                    let _ = nix::unistd::read(&r, &mut b);
                    if uid == 0 {
                        let w = |f: &str, v: String| std::fs::write(format!("/proc/{me}/{f}"), v);
                        let ok = w("uid_map", format!("0 0 {}", sub.count))
                            .and_then(|_| w("gid_map", format!("0 0 {}", sub.count)));
                        if let Err(err) = ok {
                            eprintln!("shipyard sandbox: writing id maps as root: {err}");
                            std::process::exit(SETUP_FAILED);
                        }
                        std::process::exit(0);
                    }
                    let script = format!(
                        "newuidmap {me} 0 {uid} 1 1 {} {} && newgidmap {me} 0 {gid} 1 1 {} {}",
                        sub.uid_start, sub.count, sub.gid_start, sub.count
                    );
                    // The setuid helpers are found on the caller's PATH,
                    // where `detect_subids` found them.
                    let path: Vec<(String, String)> = std::env::var("PATH")
                        .map(|p| vec![("PATH".to_string(), p)])
                        .unwrap_or_default();
                    let err = exec(&["/bin/sh".into(), "-c".into(), script], &path);
                    eprintln!("shipyard sandbox: {err}");
                    std::process::exit(SETUP_FAILED);
                }
                ForkResult::Parent { child } => {
                    drop(r);
                    (Some(child), Some(w))
                }
            }
        }
        None => (None, None),
    };
    unshare(CloneFlags::CLONE_NEWUSER).map_err(e("creating the user namespace"))?;
    match (mapper, go) {
        (Some(child), Some(w)) => {
            nix::unistd::write(&w, b"x").map_err(e("signalling the id mapper"))?;
            drop(w);
            match waitpid(child, None).map_err(e("waiting for the id mapper"))? {
                WaitStatus::Exited(_, 0) => {}
                other => {
                    return Err(format!(
                        "mapping the id range failed ({other:?}); as a user, check /etc/subuid, \
                         /etc/subgid and newuidmap/newgidmap"
                    ))
                }
            }
        }
        _ => {
            // One id, written by ourselves: the caller becomes root inside.
            std::fs::write("/proc/self/setgroups", "deny").map_err(e("writing setgroups"))?;
            std::fs::write("/proc/self/uid_map", format!("0 {uid} 1"))
                .map_err(e("writing uid_map"))?;
            std::fs::write("/proc/self/gid_map", format!("0 {gid} 1"))
                .map_err(e("writing gid_map"))?;
        }
    }
    nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .map_err(e("setresgid"))?;
    nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .map_err(e("setresuid"))?;
    Ok(())
}

/// The signals that make the helper stop the step, plus SIGCHLD.
pub(super) fn stop_signals() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGCHLD,
    ] {
        s.add(sig);
    }
    s
}

/// Waits for PID 1 of the step; on a stop signal, SIGKILLs it. In a pid
/// namespace the kernel then kills every other process of the namespace,
/// whatever their user, and PID 1 is only reported exited once they all
/// are. Without one (`tree`), the helper is the subreaper of the step's
/// processes and kills what is left of them itself, on a stop and when the
/// step's first process exits. Either way, when this returns nothing of
/// the step runs any more.
pub(super) fn supervise(pid1: Pid, signals: &SigSet, tree: bool) -> Res<i32> {
    let code = loop {
        // Reap first: the SIGCHLD may have come before we waited for it.
        match waitpid(pid1, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => break code,
            Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(err) => return Err(format!("waiting for the step: {err}")),
        }
        match signals.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(_) => {
                let _ = nix::sys::signal::kill(pid1, Signal::SIGKILL);
                if tree {
                    kill_descendants();
                }
            }
            Err(err) => return Err(format!("waiting for signals: {err}")),
        }
    };
    if tree {
        kill_descendants();
    }
    Ok(code)
}

/// Makes orphans of the step's processes this helper's children (instead
/// of the container's or machine's init), so that [`kill_descendants`]
/// finds them.
pub(super) fn become_subreaper() -> Res<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "becoming the subreaper of the step: {}",
            nix::errno::Errno::last()
        ));
    }
    Ok(())
}

/// SIGKILLs and reaps every child of this process until none is left: as
/// the subreaper, a killed child's orphans become children in turn. Gives
/// up after a few seconds on processes the kernel cannot kill (stuck in
/// uninterruptible sleep).
fn kill_descendants() {
    let me = nix::unistd::getpid().as_raw();
    for _ in 0..500 {
        let kids = children_of(me);
        for k in &kids {
            let _ = nix::sys::signal::kill(Pid::from_raw(*k), Signal::SIGKILL);
        }
        while let Ok(status) = waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
        if kids.is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The pids whose parent is `parent`, from /proc.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            // `pid (comm) state ppid …`: comm may hold spaces and parens.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|st| {
                    let rest = &st[st.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// PID 1 of the step: builds the root, pivots into it, execs the command.
/// When it exits the kernel kills everything else in the PID namespace,
/// and the mount namespace (with every mount) goes with the last process.
fn pid1(
    spec: &StepSpec,
    real_root: bool,
    helper_alive: std::os::fd::OwnedFd,
) -> Res<std::convert::Infallible> {
    SigSet::empty()
        .thread_set_mask()
        .map_err(e("unblocking signals"))?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(e("set_pdeathsig"))?;
    // A session of its own, without a controlling terminal: whatever
    // terminal shipyard runs on is out of the step's reach (no TIOCSTI,
    // /dev/tty cannot be opened), and so are its job-control signals. An
    // interactive step's terminal is a pseudo-terminal shipyard made for it.
    nix::unistd::setsid().map_err(e("setsid"))?;
    let tty = std::env::var_os(super::TTY_ENV).is_some();
    if tty {
        // SAFETY: an ioctl on fd 0 with an integer argument.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
            return Err(format!(
                "taking the step's terminal: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(e("making mounts private"))?;
    let root = match &spec.root {
        Root::Overlay {
            lowers,
            upper,
            work,
            merged,
        } => {
            let lower: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
            let opts = format!(
                "lowerdir={},upperdir={},workdir={},userxattr",
                lower.join(":"),
                upper.display(),
                work.display()
            );
            let mounted = !work.join(super::COPY_MARKER).exists()
                && std::env::var_os(super::NO_OVERLAY_ENV).is_none()
                && mount(
                    Some("overlay"),
                    merged,
                    Some("overlay"),
                    MsFlags::empty(),
                    Some(opts.as_str()),
                )
                .is_ok();
            if mounted {
                merged.clone()
            } else {
                let copy = copied_root(lowers, upper, work)?;
                bind_onto_itself(&copy)?;
                copy
            }
        }
        Root::Dir(d) => {
            bind_onto_itself(d)?;
            d.clone()
        }
        Root::Host { dirs, state } => host_root(dirs, state, real_root)?,
    };
    // From here every mount point is resolved inside the root (see
    // `inroot`): the root is untrusted, and so are its symlinks.
    let inside = InRoot::open(&root)?;
    if spec.network == Network::Host && !matches!(spec.root, Root::Host { .. }) {
        for f in ["/etc/resolv.conf", "/etc/hosts"] {
            let host = Path::new(f);
            if host.exists() {
                inside.bind(host, host, false)?;
            }
        }
    }
    mount_proc_dev_tmp(&inside, tty, spec.confinement.proc_mode)?;
    confine::protect_proc(&inside, real_root)?;
    for b in &spec.binds {
        inside.bind(&b.source, &b.target, b.writable)?;
    }
    for t in &spec.tmpfs {
        inside.mount_fs(
            &t.target,
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(&t.options()),
        )?;
    }
    let mut env = spec.env.clone();
    if let Some(bundle) = &spec.ca_bundle {
        let at = bind_ca_bundle(&inside, bundle)?;
        super::ca::add_missing(&mut env, super::ca::bundle_env(&at));
    }
    if !spec.secrets.is_empty() {
        inside.mount_fs(
            Path::new(super::job::Secret::DIR),
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(&format!("mode=0755,size={}", super::job::Secret::MAX * 2)),
        )?;
        let dir = inside.dir(Path::new(super::job::Secret::DIR))?;
        place_secrets(&dir, &spec.secrets, spec.user)?;
    }
    if spec.network == Network::None {
        loopback_up()?;
    }
    // A container's seccomp profile may refuse sethostname even in a uts
    // namespace of our own (Docker's and podman's tie it to CAP_SYS_ADMIN
    // of the container): the step then sees the container's hostname, as
    // the probe's note says.
    if let Err(err) = nix::unistd::sethostname(&spec.hostname) {
        tracing::debug!("hostname left as it is: sethostname: {err}");
    }
    nix::unistd::chdir(&root).map_err(e("chdir to root"))?;
    nix::unistd::pivot_root(".", ".").map_err(e("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(e("detaching the old root"))?;
    nix::unistd::chdir("/").map_err(e("chdir /"))?;
    confine::drop_bounding_set()?;
    confine::install_seccomp()?;
    confine::limit_capabilities()?;
    let (u, g) = spec.user;
    if (u, g) != (0, 0) {
        let _ = nix::unistd::setgroups(&[]);
        nix::unistd::setresgid(Gid::from_raw(g), Gid::from_raw(g), Gid::from_raw(g))
            .map_err(e(format!("switching to gid {g}")))?;
        nix::unistd::setresuid(Uid::from_raw(u), Uid::from_raw(u), Uid::from_raw(u))
            .map_err(e(format!("switching to uid {u}")))?;
    }
    // Changing ids cleared the parent-death signal: arm it again, then make
    // sure the helper did not die in between (its end of the pipe is then
    // closed), or this step would run on with nobody to stop it.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(e("set_pdeathsig"))?;
    if helper_gone(&helper_alive) {
        return Err("shipyard exited before the step started".into());
    }
    drop(helper_alive);
    nix::unistd::chdir(&spec.cwd)
        .map_err(e(format!("working directory {}", spec.cwd.display())))?;
    Err(exec(&spec.argv, &env))
}

/// Binds the host's CA bundle read-only over each bundle path the step's
/// root has (or the first one, when it has none); returns where.
fn bind_ca_bundle(inside: &InRoot, bundle: &Path) -> Res<PathBuf> {
    let present: Vec<&str> = super::ca::BUNDLE_PATHS
        .iter()
        .copied()
        .filter(|p| inside.exists(Path::new(p)))
        .collect();
    let targets = if present.is_empty() {
        vec![super::ca::BUNDLE_PATHS[0]]
    } else {
        present
    };
    for t in &targets {
        inside.bind(bundle, Path::new(t), false)?;
    }
    Ok(PathBuf::from(targets[0]))
}

/// Writes each secret into `dir` (a fresh directory of the step's), mode
/// 0400, owned by the step's user. Read as the caller: a secret's file is
/// whatever the caller may read, and no more than [`Secret::MAX`] bytes.
///
/// [`Secret::MAX`]: super::job::Secret::MAX
pub(super) fn place_secrets(
    dir: &std::os::fd::OwnedFd,
    secrets: &[super::job::Secret],
    user: (u32, u32),
) -> Res<()> {
    use std::io::{Read, Write};
    for s in secrets {
        super::job::Secret::check_name(&s.name).map_err(|m| format!("secret {:?}: {m}", s.name))?;
        let mut value = Vec::new();
        std::fs::File::open(&s.source)
            .and_then(|f| f.take(super::job::Secret::MAX + 1).read_to_end(&mut value))
            .map_err(e(format!("reading secret {}", s.name)))?;
        if value.len() as u64 > super::job::Secret::MAX {
            return Err(format!(
                "secret {} is larger than {} bytes",
                s.name,
                super::job::Secret::MAX
            ));
        }
        let fd = nix::fcntl::openat(
            dir,
            s.name.as_str(),
            nix::fcntl::OFlag::O_CREAT
                | nix::fcntl::OFlag::O_EXCL
                | nix::fcntl::OFlag::O_WRONLY
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(0o400),
        )
        .map_err(e(format!("creating secret {}", s.name)))?;
        let mut f = std::fs::File::from(fd);
        f.write_all(&value)
            .map_err(e(format!("writing secret {}", s.name)))?;
        nix::unistd::fchown(&f, Some(Uid::from_raw(user.0)), Some(Gid::from_raw(user.1))).map_err(
            e(format!("giving secret {} to {}:{}", s.name, user.0, user.1)),
        )?;
    }
    Ok(())
}

/// Whether the write end of the helper's pipe is closed (the helper died).
pub(super) fn helper_gone(fd: &std::os::fd::OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n < 0 || p.revents & (libc::POLLHUP | libc::POLLERR) != 0
}

/// The host's toolchain directories, bind-mounted read-only (symlinks such
/// as a merged-/usr `/bin` are recreated) on the writable `state/root`,
/// where everything the step writes lands. For real root, what only root
/// may read in /etc is masked (see `confine::mask_private_etc`).
fn host_root(dirs: &[PathBuf], state: &Path, real_root: bool) -> Res<PathBuf> {
    let root = state.join("root");
    std::fs::create_dir_all(&root).map_err(e(root.display()))?;
    bind_onto_itself(&root)?;
    let inside = InRoot::open(&root)?;
    for d in dirs {
        let Ok(meta) = std::fs::symlink_metadata(d) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            let to = std::fs::read_link(d).map_err(e(d.display()))?;
            inside.symlink(&to, d)?;
            continue;
        }
        inside.bind(d, d, false)?;
        if real_root && d == Path::new("/etc") {
            confine::mask_private_etc(&inside)?;
        }
    }
    Ok(root)
}

fn mount_proc_dev_tmp(inside: &InRoot, tty: bool, proc_mode: ProcMode) -> Res<()> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    match proc_mode {
        ProcMode::Fresh => inside.mount_fs(Path::new("/proc"), "proc", nosuid, None)?,
        // Where the kernel refuses a fresh proc (the existing one has
        // masked paths, as in a container), the existing one, masks and
        // all, read-only.
        ProcMode::HostBind | ProcMode::NoPidNs => {
            inside.bind(Path::new("/proc"), Path::new("/proc"), false)?
        }
    }
    inside.mount_fs(
        Path::new("/dev"),
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=65536k"),
    )?;
    // /dev/tty is the device that stands for the opener's controlling
    // terminal: a step has none (ENXIO), or its own pseudo-terminal.
    for n in ["null", "zero", "full", "random", "urandom", "tty"] {
        let host = Path::new("/dev").join(n);
        inside.bind(&host, &host, true)?;
    }
    if tty {
        // The step's terminal lives in shipyard's /dev/pts, not in the
        // step's own: shown as /dev/console (as runc does), ttyname() and
        // the programs that ask for their terminal's name find it. By
        // path: a bind source must be in this mount namespace, and fd 0
        // was opened in shipyard's.
        let name = std::fs::read_link("/proc/self/fd/0").map_err(e("naming the terminal"))?;
        inside.bind(&name, Path::new("/dev/console"), true)?;
    }
    inside.mount_fs(
        Path::new("/dev/pts"),
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    inside.symlink(Path::new("pts/ptmx"), Path::new("/dev/ptmx"))?;
    inside.mount_fs(
        Path::new("/dev/shm"),
        "tmpfs",
        nosuid,
        Some("mode=1777,size=65536k"),
    )?;
    for (name, to) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        inside.symlink(Path::new(to), Path::new(name))?;
    }
    inside.mount_fs(
        Path::new("/tmp"),
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    Ok(())
}

/// The copy fallback: where overlay cannot be mounted (or
/// SHIPYARD_NO_OVERLAY is set, or there are no mounts at all), the base is
/// copied into the upper dir once, marked as such, and the build runs on
/// that copy.
pub(super) fn copied_root(lowers: &[PathBuf], upper: &Path, work: &Path) -> Res<PathBuf> {
    let marker = work.join(super::COPY_MARKER);
    if !marker.exists() {
        for l in lowers.iter().rev() {
            copy_tree(l, upper)?;
        }
        std::fs::write(&marker, b"").map_err(e(marker.display()))?;
    }
    Ok(upper.to_path_buf())
}

/// Bind-mounts a directory of shipyard's own on itself, writable: the new
/// root must be a mount point for pivot_root.
fn bind_onto_itself(dir: &Path) -> Res<()> {
    mount(
        Some(dir),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(e(format!("bind-mounting {} on itself", dir.display())))
}

/// Brings up `lo` in the new network namespace.
fn loopback_up() -> Res<()> {
    // SAFETY: plain ioctls on a socket we own, with a zeroed ifreq whose
    // name is "lo"; no memory is shared with the kernel beyond the call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err("socket for loopback".into());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let ok = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) >= 0 && {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) >= 0
        };
        libc::close(fd);
        if !ok {
            return Err("bringing up the loopback interface".into());
        }
    }
    Ok(())
}

/// execvpe; returns only on failure, with the reason.
pub(super) fn exec(argv: &[String], env: &[(String, String)]) -> String {
    let Some(prog) = argv.first() else {
        return "no command to run".into();
    };
    let c = |s: &str| CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"));
    let args: Result<Vec<CString>, String> = argv.iter().map(|a| c(a)).collect();
    let mut envs: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        envs.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    let envs: Result<Vec<CString>, String> = envs.iter().map(|a| c(a)).collect();
    match (c(prog), args, envs) {
        (Ok(p), Ok(a), Ok(en)) => match nix::unistd::execvpe(&p, &a, &en) {
            Ok(never) => match never {},
            Err(err) => format!("cannot run {prog}: {err}"),
        },
        (Err(m), _, _) | (_, Err(m), _) | (_, _, Err(m)) => m,
    }
}

/// [`shipyard_image::fsutil::copy_tree`] as the namespace's root, its
/// error as the helper's message (the path and what the kernel said).
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Res<()> {
    shipyard_image::fsutil::copy_tree(src, dst)
        .map_err(|x| format!("{}: {}", x.path.display(), x.source))
}

/// A job's exit code: 0, or 1 with the error on stderr.
fn report(r: Result<(), String>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(msg) => {
            eprintln!("{msg}");
            1
        }
    }
}
