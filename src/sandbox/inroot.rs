//! Mounting inside the step's root without ever leaving it.
//!
//! The root is someone else's tree (a base image, or what earlier steps
//! left): any directory on the way to a mount point may be a symlink, and a
//! target may say `..`. Joined to the root as a host path, `/src/x` with
//! `/src -> /home/me` would create `/home/me/x` on the host and mount over
//! it. So every mount target is resolved the way the step will see it:
//! with `openat2(RESOLVE_IN_ROOT)`, where symlinks (absolute or relative)
//! and `..` never climb above the root, and missing directories are
//! created one at a time under the directory resolved so far. The mount
//! then goes onto the resolved file through its `/proc/self/fd` path. On
//! kernels without openat2 (before 5.6), symlinks on the way are refused
//! instead of followed.
//!
//! Read-only binds are read-only all the way down: a filesystem mounted
//! under the source is read-only inside too (`mount_setattr` with
//! `AT_RECURSIVE`, or a remount of each submount on kernels before 5.12).

use nix::mount::{mount, MsFlags};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

type Res<T> = Result<T, String>;

/// Symlinks followed to create a missing mount point, at most (the
/// kernel's own limit on a path).
const MAX_SYMLINKS: usize = 40;

/// What a mount target must be: its kind follows the mount's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Dir,
    File,
}

impl Kind {
    /// The kind of mount point a bind of `source` needs.
    pub(super) fn of(source: &Path) -> Kind {
        if source.is_dir() {
            Kind::Dir
        } else {
            Kind::File
        }
    }
}

/// The step's root, opened once.
pub(super) struct InRoot {
    fd: OwnedFd,
    /// For messages only.
    path: PathBuf,
}

fn errno() -> nix::errno::Errno {
    nix::errno::Errno::last()
}

/// `/proc/self/fd/N`: a path the kernel resolves to exactly that file.
fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn cstr(p: &Path) -> Res<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| format!("{} contains a NUL byte", p.display()))
}

/// `target` as plain names under the root: `/`, `.` and empty parts go,
/// and `..` takes the previous name away but never goes above the root,
/// which is what `..` at `/` means.
pub(super) fn normalize(target: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in target.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

impl InRoot {
    pub(super) fn open(root: &Path) -> Res<InRoot> {
        let c = cstr(root)?;
        // SAFETY: a NUL-terminated path; the fd returned is ours.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(format!("opening the root {}: {}", root.display(), errno()));
        }
        Ok(InRoot {
            // SAFETY: a fresh fd nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: root.to_path_buf(),
        })
    }

    /// Opens `rel` (already normalized) as an O_PATH fd, resolved in the
    /// root.
    fn resolve(&self, rel: &Path) -> Result<OwnedFd, nix::errno::Errno> {
        let name = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let c = CString::new(name.as_os_str().as_bytes()).map_err(|_| nix::errno::Errno::EINVAL)?;
        let how = OpenHow {
            flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
        };
        let mut tries = 0;
        loop {
            // SAFETY: openat2 with a valid dirfd, a NUL-terminated path and
            // an open_how of the size given; the fd returned is ours.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.fd.as_raw_fd(),
                    c.as_ptr(),
                    &how as *const OpenHow,
                    std::mem::size_of::<OpenHow>(),
                )
            };
            if fd >= 0 {
                // SAFETY: a fresh fd nothing else owns.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
            }
            match errno() {
                nix::errno::Errno::ENOSYS => return self.resolve_without_symlinks(rel),
                // A rename or mount elsewhere raced with the resolution
                // (see `shipyard_image::inroot::RACE_RETRIES`).
                nix::errno::Errno::EAGAIN if tries < shipyard_image::inroot::RACE_RETRIES => {
                    tries += 1
                }
                other => return Err(other),
            }
        }
    }

    /// The fallback of [`InRoot::resolve`] where openat2 is missing: one
    /// name at a time, refusing symlinks (ELOOP).
    fn resolve_without_symlinks(&self, rel: &Path) -> Result<OwnedFd, nix::errno::Errno> {
        let mut cur = self.fd.try_clone().map_err(|_| errno())?;
        for c in rel.components() {
            let Component::Normal(n) = c else { continue };
            let name = CString::new(n.as_bytes()).map_err(|_| nix::errno::Errno::EINVAL)?;
            // SAFETY: openat on an fd we own with a NUL-terminated name.
            let fd = unsafe {
                libc::openat(
                    cur.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(errno());
            }
            // SAFETY: a fresh fd nothing else owns.
            let next = unsafe { OwnedFd::from_raw_fd(fd) };
            let st = nix::sys::stat::fstat(&next)?;
            if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                return Err(nix::errno::Errno::ELOOP);
            }
            cur = next;
        }
        Ok(cur)
    }

    /// The mount point `target` of the given kind inside the root, created
    /// (with its missing parents) if it does not exist.
    pub(super) fn prepare(&self, target: &Path, kind: Kind) -> Res<OwnedFd> {
        self.prepare_at_depth(target, kind, 0)
    }

    fn prepare_at_depth(&self, target: &Path, kind: Kind, depth: usize) -> Res<OwnedFd> {
        let rel = normalize(target);
        let shown = Path::new("/").join(&rel);
        let fail = |what: &str, err: nix::errno::Errno| {
            format!(
                "{what} {} in the step's root {}: {err}",
                shown.display(),
                self.path.display()
            )
        };
        match self.resolve(&rel) {
            Ok(fd) => return Ok(fd),
            Err(nix::errno::Errno::ENOENT) => {}
            Err(nix::errno::Errno::ELOOP) => {
                return Err(fail(
                    "a symlink on the way to (this kernel has no openat2)",
                    nix::errno::Errno::ELOOP,
                ))
            }
            Err(err) => return Err(fail("resolving", err)),
        }
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Err(fail("resolving", nix::errno::Errno::ENOENT));
        };
        let dir = self.prepare_at_depth(parent, Kind::Dir, depth)?;
        let name_os = name;
        let name =
            CString::new(name.as_bytes()).map_err(|_| fail("naming", nix::errno::Errno::EINVAL))?;
        // Created under the directory resolved inside the root; neither
        // call follows a symlink in the last name (an existing one, even
        // dangling, is EEXIST and is resolved again below).
        // SAFETY: *at calls on an fd we own with a NUL-terminated name.
        let r = unsafe {
            match kind {
                Kind::Dir => libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755),
                Kind::File => {
                    let fd = libc::openat(
                        dir.as_raw_fd(),
                        name.as_ptr(),
                        libc::O_CREAT
                            | libc::O_EXCL
                            | libc::O_WRONLY
                            | libc::O_NOFOLLOW
                            | libc::O_CLOEXEC,
                        0o644,
                    );
                    if fd >= 0 {
                        libc::close(fd);
                    }
                    fd
                }
            }
        };
        if r < 0 && errno() != nix::errno::Errno::EEXIST {
            return Err(fail("creating", errno()));
        }
        match self.resolve(&rel) {
            Err(nix::errno::Errno::ENOENT) => {}
            other => return other.map_err(|err| fail("resolving", err)),
        }
        // It exists but resolves to nothing: a symlink to a place that does
        // not exist yet. Make that place, inside the root, as following the
        // link from inside would find it.
        let link = nix::fcntl::readlinkat(&dir, name_os).map_err(|err| fail("resolving", err))?;
        if depth >= MAX_SYMLINKS {
            return Err(fail("resolving", nix::errno::Errno::ELOOP));
        }
        let link = Path::new(&link);
        let next = if link.is_absolute() {
            normalize(link)
        } else {
            normalize(&self.relative_path_of(&dir)?.join(link))
        };
        self.prepare_at_depth(&next, kind, depth + 1)?;
        self.resolve(&rel).map_err(|err| fail("resolving", err))
    }

    /// Where `fd`, a file inside the root, is, relative to the root.
    fn relative_path_of(&self, fd: &OwnedFd) -> Res<PathBuf> {
        let at = std::fs::read_link(fd_path(fd)).map_err(|e| e.to_string())?;
        let root = std::fs::read_link(fd_path(&self.fd)).map_err(|e| e.to_string())?;
        at.strip_prefix(&root)
            .map(Path::to_path_buf)
            .map_err(|_| format!("{} is not inside the step's root", at.display()))
    }

    /// Bind-mounts the host path `source` on `target` inside the root, with
    /// everything mounted under it; read-only unless `writable`.
    pub(super) fn bind(&self, source: &Path, target: &Path, writable: bool) -> Res<()> {
        let at = self.prepare(target, Kind::of(source))?;
        mount(
            Some(source),
            fd_path(&at).as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|err| {
            format!(
                "bind-mounting {} on {}: {err}",
                source.display(),
                target.display()
            )
        })?;
        if !writable {
            self.read_only(target)?;
        }
        Ok(())
    }

    /// Mounts a new filesystem (`fstype`, `data`) on the directory
    /// `target` inside the root.
    pub(super) fn mount_fs(
        &self,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Res<()> {
        let at = self.prepare(target, Kind::Dir)?;
        mount(
            Some(fstype),
            fd_path(&at).as_str(),
            Some(fstype),
            flags,
            data,
        )
        .map_err(|err| format!("mounting {} on {}: {err}", fstype, target.display()))
    }

    /// What is at `target` inside the root, if anything.
    pub(super) fn kind_of(&self, target: &Path) -> Option<Kind> {
        let fd = self.resolve(&normalize(target)).ok()?;
        let st = nix::sys::stat::fstat(&fd).ok()?;
        Some(if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            Kind::Dir
        } else {
            Kind::File
        })
    }

    pub(super) fn exists(&self, target: &Path) -> bool {
        self.kind_of(target).is_some()
    }

    /// Bind-mounts `target` (which exists inside the root) on itself and
    /// makes it read-only, with everything under it.
    pub(super) fn bind_onto_itself_read_only(&self, target: &Path) -> Res<()> {
        let at = self.dir(target)?;
        let p = fd_path(&at);
        mount(
            Some(p.as_str()),
            p.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|err| format!("bind-mounting {} on itself: {err}", target.display()))?;
        self.read_only(target)
    }

    /// Creates the symlink `target` -> `to` inside the root, unless
    /// something is already there.
    pub(super) fn symlink(&self, to: &Path, target: &Path) -> Res<()> {
        let rel = normalize(target);
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Err(format!("cannot make a symlink at {}", target.display()));
        };
        let dir = self.prepare(parent, Kind::Dir)?;
        match nix::unistd::symlinkat(to, &dir, name) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
            Err(err) => Err(format!("creating the symlink {}: {err}", target.display())),
        }
    }

    /// The directory `rel` inside the root, as it is now (after mounts).
    pub(super) fn dir(&self, rel: &Path) -> Res<OwnedFd> {
        self.resolve(&normalize(rel))
            .map_err(|err| format!("opening {} in the step's root: {err}", rel.display()))
    }

    /// Makes the mount on `target` and every mount under it read-only.
    pub(super) fn read_only(&self, target: &Path) -> Res<()> {
        // Resolved again: now the top of the mount stack there.
        let top = self.dir(target)?;
        read_only_recursive(&top)
            .map_err(|err| format!("making {} read-only: {err}", target.display()))
    }
}

/// The kernel's `struct open_how` (linux/openat2.h).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// The kernel's `struct mount_attr` (linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// Makes the mount `top` is the root of, and every mount below it,
/// read-only.
pub(super) fn read_only_recursive(top: &OwnedFd) -> Result<(), String> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let empty = c"";
    // SAFETY: mount_setattr on an fd we own, with an empty path and a
    // mount_attr of the size given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            top.as_raw_fd(),
            empty.as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        return Ok(());
    }
    match errno() {
        nix::errno::Errno::ENOSYS => remount_each_read_only(top),
        err => Err(err.to_string()),
    }
}

/// Before mount_setattr (Linux 5.12): remounts the mount at `top`'s path
/// and each one under it read-only, one by one, keeping the flags the
/// kernel locks in a user namespace (nosuid, nodev, noexec, atime).
fn remount_each_read_only(top: &OwnedFd) -> Result<(), String> {
    let at = std::fs::read_link(fd_path(top)).map_err(|e| e.to_string())?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(&at))
        .collect();
    points.sort();
    points.dedup();
    for p in points {
        remount_read_only(&p)?;
    }
    Ok(())
}

/// A mountinfo field with its `\NNN` octal escapes (space, tab, newline,
/// backslash) decoded.
fn unescape_mountinfo(s: &str) -> std::ffi::OsString {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    std::ffi::OsString::from(std::ffi::OsStr::from_bytes(&out))
}

/// Remounts the bind mount at `dst` read-only, keeping its locked flags.
pub(super) fn remount_read_only(dst: &Path) -> Res<()> {
    use nix::sys::statvfs::FsFlags;
    let st =
        nix::sys::statvfs::statvfs(dst).map_err(|e| format!("statvfs {}: {e}", dst.display()))?;
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    for (f, m) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if st.flags().contains(f) {
            flags |= m;
        }
    }
    mount(None::<&str>, dst, None::<&str>, flags, None::<&str>)
        .map_err(|e| format!("making {} read-only: {e}", dst.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_never_climbs_above_the_root() {
        for (t, want) in [
            ("/", ""),
            ("/src", "src"),
            ("/../../tmp/x", "tmp/x"),
            ("/a/../../b/./c/", "b/c"),
            ("relative/../../x", "x"),
        ] {
            assert_eq!(normalize(Path::new(t)), PathBuf::from(want), "{t}");
        }
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(
            unescape_mountinfo(r"/tmp/a\040b\134c"),
            std::ffi::OsString::from("/tmp/a b\\c")
        );
        assert_eq!(
            unescape_mountinfo(r"/x\04"),
            std::ffi::OsString::from(r"/x\04")
        );
    }
}
