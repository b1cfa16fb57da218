//! Steps without namespaces: isolation `chroot` where mounts are refused
//! (real root in a Docker container with its default profile), and `none`.
//!
//! At `chroot` the builder is a copy (see `helper::copied_root`), entered
//! with chroot. What a namespaced step gets from mounts is made by hand and
//! taken away again after the step, so that the rule's captured changes
//! hold only what the step made: device nodes by mknod, the sources and
//! cache mounts copied in (and, where writable, copied back after the
//! step), a `/tmp` whose new entries are removed as a tmpfs would lose
//! them. There is no `/proc`.
//! The step keeps the confinement of a root container (bounding set,
//! capabilities, seccomp) and loses CAP_SYS_CHROOT too, the classic way out
//! of a chroot; ptrace and friends are refused, since the step shares the
//! container's pid namespace with shipyard.
//!
//! At `none` the step runs in place, as the caller, in the container that
//! is the builder; sources appear at their targets as symlinks.
//!
//! Either way the helper is the subreaper of the step's processes and kills
//! them all when the step ends or is stopped (see `helper::supervise`).

use super::helper::{
    become_subreaper, check_parent, copied_root, exec, helper_gone, stop_signals, supervise,
};
use super::isolation::Level;
use super::job::{Root, StepSpec};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{fork, ForkResult, Gid, Uid};
use std::path::{Path, PathBuf};

type Res<T> = Result<T, String>;

/// Devices a step may use, as (name, major, minor).
const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// What was put into the root for the step, to take away after it, so
/// that the builder ends up as a namespaced step leaves it: the mount
/// points it would have created (empty directories, or empty files, mode
/// 0755) stay; what was mounted on them goes.
#[derive(Default)]
struct Placed {
    /// Device nodes made for the step.
    devices: Vec<PathBuf>,
    /// Mount points: the path, whether it is a directory, the names it
    /// held before the step (none if shipyard created it), and whether
    /// shipyard created it.
    points: Vec<(PathBuf, bool, Vec<std::ffi::OsString>, bool)>,
    /// Paths made by the level `none` (symlinks to sources).
    links: Vec<PathBuf>,
    /// Writable sources and cache mounts, copied in: what the step left
    /// there is copied back to the host (in root, host).
    copy_back: Vec<(PathBuf, PathBuf)>,
    /// The chroot'ed builder these paths are in (none at level `none`).
    root: Option<PathBuf>,
}

impl Placed {
    /// Whether `p` is still what shipyard put there: the step ran as root
    /// in the tree and may have replaced it, or a directory above it, with
    /// a symlink, which shipyard (outside the chroot, as root) would follow
    /// onto the container's own files.
    fn untouched(&self, p: &Path) -> bool {
        let own = std::fs::symlink_metadata(p).is_ok_and(|m| !m.file_type().is_symlink());
        own && self
            .root
            .as_ref()
            .is_none_or(|r| check_no_symlinks(r, p).is_ok())
    }

    fn remove(self) {
        use std::os::unix::fs::PermissionsExt;
        for (inside, host) in &self.copy_back {
            if !self.untouched(inside) {
                tracing::warn!(
                    "{} was replaced by the step; not copied back to {}",
                    inside.display(),
                    host.display()
                );
                continue;
            }
            if let Err(e) = copy_back(inside, host) {
                tracing::warn!("copying {} back: {e}", host.display());
            }
        }
        for p in self.devices.iter().chain(self.links.iter()) {
            if self
                .root
                .as_ref()
                .is_none_or(|r| p.parent().is_some_and(|d| check_no_symlinks(r, d).is_ok()))
            {
                let _ = std::fs::remove_file(p);
            }
        }
        for (p, is_dir, before, created) in self.points.iter().rev() {
            if !self.untouched(p) {
                tracing::warn!("{} was replaced by the step; left as it is", p.display());
                continue;
            }
            if !is_dir {
                if *created {
                    let _ = std::fs::write(p, b"");
                }
                continue;
            }
            if let Ok(rd) = std::fs::read_dir(p) {
                for ent in rd.filter_map(|e| e.ok()) {
                    if before.contains(&ent.file_name()) {
                        continue;
                    }
                    let q = ent.path();
                    let _ = match ent.file_type() {
                        Ok(t) if t.is_dir() => std::fs::remove_dir_all(&q),
                        _ => std::fs::remove_file(&q),
                    };
                }
            }
            if *created {
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
            }
        }
    }

    /// Makes `p` a mount point (a directory, or an empty file) unless it is
    /// one, and remembers what it held.
    fn point(&mut self, p: &Path, dir: bool) -> Res<()> {
        use std::os::unix::fs::PermissionsExt;
        let err = |e: std::io::Error| format!("{}: {e}", p.display());
        let created = std::fs::symlink_metadata(p).is_err();
        if created {
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(err)?;
            }
            if dir {
                std::fs::create_dir(p).map_err(err)?;
            } else {
                std::fs::write(p, b"").map_err(err)?;
            }
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).map_err(err)?;
        }
        let before = if dir {
            std::fs::read_dir(p)
                .map_err(err)?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .collect()
        } else {
            Vec::new()
        };
        self.points.push((p.to_path_buf(), dir, before, created));
        Ok(())
    }
}

/// Replaces what is in the host directory `host` by what the step left in
/// its copy `inside` (a writable source or a cache mount at a level
/// without bind mounts). Symlinks are copied as links, never followed.
fn copy_back(inside: &Path, host: &Path) -> Res<()> {
    let md = std::fs::symlink_metadata(inside).map_err(|e| format!("{}: {e}", inside.display()))?;
    if !md.is_dir() {
        if md.is_file() {
            std::fs::copy(inside, host).map_err(|e| format!("{}: {e}", host.display()))?;
        }
        return Ok(());
    }
    for ent in std::fs::read_dir(host).map_err(|e| format!("{}: {e}", host.display()))? {
        let ent = ent.map_err(|e| format!("{}: {e}", host.display()))?;
        let p = ent.path();
        match ent.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
            _ => std::fs::remove_file(&p),
        }
        .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    super::helper::copy_tree(inside, host)
}

/// Runs the step without namespaces; returns its exit code.
pub(super) fn run(spec: &StepSpec, real_root: bool) -> Res<i32> {
    let level = spec.confinement.level;
    let (root, placed) = match level {
        Level::Chroot => {
            if !real_root {
                return Err("isolation chroot needs real root".into());
            }
            let root = match &spec.root {
                Root::Overlay {
                    lowers,
                    upper,
                    work,
                    ..
                } => copied_root(lowers, upper, work)?,
                Root::Dir(d) => d.clone(),
                Root::Host { .. } => {
                    return Err("the host builder needs bind mounts, which this machine \
                                refuses (no CAP_SYS_ADMIN): inside a container, use \
                                --isolation none"
                        .into())
                }
            };
            let placed = furnish(&root, spec)?;
            (Some(root), placed)
        }
        Level::None | Level::Userns => (None, link_sources(spec)?),
    };
    let mut placed = placed;
    let mut env = spec.env.clone();
    let result = extras(spec, root.as_deref(), &mut placed, &mut env)
        .and_then(|()| run_in(spec, &env, root.as_deref(), real_root));
    placed.remove();
    result
}

/// Secrets at /run/secrets and the host's CA bundle, where a namespaced
/// step would have them mounted. Without mounts the bundle cannot cover
/// the builder's own: a copy in /tmp, and the variables TLS clients read,
/// point at it (at `none` the container's own bundle is the host's).
fn extras(
    spec: &StepSpec,
    root: Option<&Path>,
    placed: &mut Placed,
    env: &mut Vec<(String, String)>,
) -> Res<()> {
    let inside = |p: &str| match root {
        Some(r) => r.join(super::inroot::normalize(Path::new(p))),
        None => PathBuf::from(p),
    };
    if let Some(bundle) = &spec.ca_bundle {
        let at = match root {
            Some(r) => {
                let name = "/tmp/shipyard-ca-certificates.crt";
                let copy = inside(name);
                check_no_symlinks(r, &copy)?;
                let _ = std::fs::remove_file(&copy);
                std::fs::copy(bundle, &copy).map_err(|e| format!("{}: {e}", copy.display()))?;
                PathBuf::from(name)
            }
            None => bundle.clone(),
        };
        super::ca::add_missing(env, super::ca::bundle_env(&at));
    }
    if !spec.secrets.is_empty() {
        let dir = inside(super::job::Secret::DIR);
        if let Some(r) = root {
            check_no_symlinks(r, &dir)?;
        }
        placed.point(&dir, true)?;
        let fd = nix::fcntl::open(
            &dir,
            nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| format!("{}: {e}", dir.display()))?;
        super::helper::place_secrets(&fd, &spec.secrets, spec.user)?;
    }
    Ok(())
}

/// Devices, sources and `/tmp` inside a chroot'ed builder.
fn furnish(root: &Path, spec: &StepSpec) -> Res<Placed> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    use std::os::unix::fs::PermissionsExt;
    let mut placed = Placed {
        root: Some(root.to_path_buf()),
        ..Placed::default()
    };
    let inside = |p: &Path| root.join(super::inroot::normalize(p));
    for d in ["/proc", "/dev", "/tmp"] {
        let p = inside(Path::new(d));
        check_no_symlinks(root, &p)?;
        placed.point(&p, true)?;
    }
    // A tmpfs /tmp is world-writable with the sticky bit.
    let tmp = inside(Path::new("/tmp"));
    if placed
        .points
        .last()
        .is_some_and(|(_, _, _, created)| *created)
    {
        let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777));
    }
    let dev = inside(Path::new("/dev"));
    for (name, major, minor) in DEVICES {
        let p = dev.join(name);
        if std::fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        mknod(
            &p,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(|e| format!("making {}: {e}", p.display()))?;
        // mknod obeys the umask.
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666));
        placed.devices.push(p);
    }
    for b in &spec.binds {
        let to = inside(&b.target);
        check_no_symlinks(root, &to)?;
        let md =
            std::fs::metadata(&b.source).map_err(|e| format!("{}: {e}", b.source.display()))?;
        placed.point(&to, md.is_dir())?;
        let (_, _, before, _) = placed.points.last().cloned().unwrap_or_default();
        if !before.is_empty() {
            return Err(format!(
                "{}: the builder already has files there; at this isolation level a source \
                 is copied in and cannot cover them",
                b.target.display()
            ));
        }
        if md.is_dir() {
            super::helper::copy_tree(&b.source, &to)?;
        } else {
            std::fs::copy(&b.source, &to).map_err(|e| format!("{}: {e}", to.display()))?;
        }
        if b.writable {
            placed.copy_back.push((to.clone(), b.source.clone()));
        }
    }
    // A tmpfs is an empty directory here, whose new entries go after the
    // step as a tmpfs's would (its size is not enforced).
    for t in &spec.tmpfs {
        let to = inside(&t.target);
        check_no_symlinks(root, &to)?;
        placed.point(&to, true)?;
        let (_, _, before, _) = placed.points.last().cloned().unwrap_or_default();
        if !before.is_empty() {
            return Err(format!(
                "{}: the builder already has files there; at this isolation level a tmpfs \
                 is an empty directory and cannot cover them",
                t.target.display()
            ));
        }
    }
    Ok(placed)
}

/// Refuses a path under the root that goes through a symlink: the step
/// made the tree, and a link there would send what shipyard writes (as
/// root) elsewhere.
fn check_no_symlinks(root: &Path, path: &Path) -> Res<()> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let mut at = root.to_path_buf();
    for c in rel.components() {
        at.push(c);
        if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(format!(
                "{} is a symlink in the builder; at this isolation level shipyard cannot \
                 put anything there",
                at.display()
            ));
        }
    }
    Ok(())
}

/// At level none: each source appears at its target as a symlink to it
/// (unless it is there already).
fn link_sources(spec: &StepSpec) -> Res<Placed> {
    if let Some(t) = spec.tmpfs.first() {
        return Err(format!(
            "a tmpfs mount at {}: at isolation {} the step runs in this container's own \
             tree, where shipyard mounts nothing; use another isolation level",
            t.target.display(),
            spec.confinement.level
        ));
    }
    let mut placed = Placed::default();
    for b in &spec.binds {
        if b.target == b.source {
            continue;
        }
        if std::fs::symlink_metadata(&b.target).is_ok() {
            let same =
                std::fs::canonicalize(&b.target).ok() == std::fs::canonicalize(&b.source).ok();
            if same {
                continue;
            }
            return Err(format!(
                "{}: something is already there; at isolation none a source is linked to \
                 its target, so choose a target that does not exist in the container",
                b.target.display()
            ));
        }
        if let Some(parent) = b.target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::os::unix::fs::symlink(&b.source, &b.target)
            .map_err(|e| format!("linking {}: {e}", b.target.display()))?;
        placed.links.push(b.target.clone());
    }
    Ok(placed)
}

/// Forks the step, chroot'ed into `root` if given, and supervises it.
fn run_in(
    spec: &StepSpec,
    env: &[(String, String)],
    root: Option<&Path>,
    real_root: bool,
) -> Res<i32> {
    let signals = stop_signals();
    signals
        .thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(|e| format!("set_pdeathsig: {e}"))?;
    check_parent()?;
    become_subreaper()?;
    let (alive_r, alive_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the helper is single-threaded (a fresh exec).
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(alive_w);
            let msg = match step(spec, env, root, real_root, alive_r) {
                Ok(never) => match never {},
                Err(m) => m,
            };
            eprintln!("shipyard sandbox: {msg}");
            std::process::exit(super::helper::SETUP_FAILED);
        }
        ForkResult::Parent { child } => {
            drop(alive_r);
            let code = supervise(child, &signals, true);
            drop(alive_w);
            code
        }
    }
}

/// The step's first process.
fn step(
    spec: &StepSpec,
    env: &[(String, String)],
    root: Option<&Path>,
    real_root: bool,
    helper_alive: std::os::fd::OwnedFd,
) -> Res<std::convert::Infallible> {
    SigSet::empty()
        .thread_set_mask()
        .map_err(|e| format!("unblocking signals: {e}"))?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("set_pdeathsig: {e}"))?;
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    if std::env::var_os(super::TTY_ENV).is_some() {
        // SAFETY: an ioctl on fd 0 with an integer argument.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
            return Err(format!(
                "taking the step's terminal: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    if let Some(root) = root {
        nix::unistd::chroot(root).map_err(|e| format!("chroot {}: {e}", root.display()))?;
        nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
        super::confine::confine_chroot()?;
    }
    let (u, g) = spec.user;
    let me = (Uid::current().as_raw(), Gid::current().as_raw());
    if (u, g) != (0, 0) && (u, g) != me {
        if !real_root {
            return Err(format!(
                "the rule runs as {u}:{g}, but at isolation none shipyard runs as {}:{} \
                 and cannot switch",
                me.0, me.1
            ));
        }
        let _ = nix::unistd::setgroups(&[]);
        nix::unistd::setresgid(Gid::from_raw(g), Gid::from_raw(g), Gid::from_raw(g))
            .map_err(|e| format!("switching to gid {g}: {e}"))?;
        nix::unistd::setresuid(Uid::from_raw(u), Uid::from_raw(u), Uid::from_raw(u))
            .map_err(|e| format!("switching to uid {u}: {e}"))?;
    }
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("set_pdeathsig: {e}"))?;
    if helper_gone(&helper_alive) {
        return Err("shipyard exited before the step started".into());
    }
    drop(helper_alive);
    nix::unistd::chdir(&spec.cwd)
        .map_err(|e| format!("working directory {}: {e}", spec.cwd.display()))?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    Err(exec(&spec.argv, env))
}
