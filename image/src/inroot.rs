//! Opening paths inside a directory tree that someone else filled.
//!
//! A builder's root and a project's source tree may hold symlinks planted
//! to reach host files (`/lnk -> /home/user`, `data -> ../../etc`). Every
//! open below a root that shipyard does not trust goes through here: the
//! kernel's `openat2` resolves the path with `RESOLVE_BENEATH` or
//! `RESOLVE_NO_SYMLINKS` against a descriptor of the root, and on kernels
//! without it (before 5.6) the same rule is walked component by component
//! with `O_NOFOLLOW`.

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// How symlinks met on the way are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    /// No symlink in any component, the last one included (with `O_PATH |
    /// O_NOFOLLOW` a last-component symlink is opened itself). For callers
    /// that resolve symlinks themselves, over several trees.
    Never,
    /// Relative symlinks are followed while they stay beneath the root;
    /// absolute ones, and `..` above the root, are refused (`EXDEV`).
    Beneath,
}

/// Symlinks followed in one resolution at most (the kernel's own bound).
const MAX_LINKS: usize = 40;

/// Opens a directory shipyard chose itself (a layer root, the project
/// directory) as the anchor of later opens.
pub fn open_root(path: &Path) -> std::io::Result<OwnedFd> {
    Ok(nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens `rel` (relative; a leading `/` is ignored) below `root` with
/// `flags` (`O_CLOEXEC` is added, and `O_NOCTTY` unless `O_PATH`), resolving it as
/// `follow` says. Never reaches outside `root`.
pub fn open_in(
    root: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlag,
    follow: Follow,
) -> std::io::Result<OwnedFd> {
    // openat2 refuses O_PATH with flags it would ignore.
    let flags = if flags.contains(OFlag::O_PATH) {
        flags | OFlag::O_CLOEXEC
    } else {
        flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY
    };
    let rel = strip_root(rel);
    let resolve = match follow {
        Follow::Never => ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS,
        Follow::Beneath => ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    };
    let how = OpenHow::new().flags(flags).resolve(resolve);
    // EAGAIN: a rename or a mount anywhere on the system raced with the
    // resolution, and the kernel could not prove `..` stayed beneath the
    // root; it asks the caller to try again (openat2(2)).
    match openat2_retrying(root, rel, how) {
        Err(Errno::ENOSYS) => open_walk(root, rel, flags, follow),
        r => Ok(r?),
    }
}

/// `openat2`, retried while it fails with EAGAIN: a rename or a mount
/// anywhere on the system raced with the resolution, and the kernel could
/// not prove `..` stayed beneath the root, so it asks the caller to try
/// again (openat2(2)). After [`RACE_RETRIES`] tries the EAGAIN is returned.
pub(crate) fn openat2_retrying<Fd: std::os::fd::AsFd, P: ?Sized + nix::NixPath>(
    dir: Fd,
    path: &P,
    how: OpenHow,
) -> Result<OwnedFd, Errno> {
    let mut tries = 0;
    loop {
        match nix::fcntl::openat2(dir.as_fd(), path, how) {
            Err(Errno::EAGAIN) if tries < RACE_RETRIES => tries += 1,
            r => return r,
        }
    }
}

/// How often an openat2 that lost a race with a rename or a mount
/// elsewhere (EAGAIN) is retried.
pub const RACE_RETRIES: u32 = 64;

/// `rel` without its root and `.` components; `""` becomes `.`.
fn strip_root(rel: &Path) -> &Path {
    let r = rel.strip_prefix("/").unwrap_or(rel);
    if r.as_os_str().is_empty() {
        Path::new(".")
    } else {
        r
    }
}

/// The fallback: one component at a time, each opened `O_PATH |
/// O_NOFOLLOW` relative to the previous one, so no symlink is followed
/// by the kernel; the ones allowed are read and spliced in here.
fn open_walk(
    root: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlag,
    follow: Follow,
) -> std::io::Result<OwnedFd> {
    // Directories from the root down to where we are.
    let mut stack: Vec<OwnedFd> = vec![root.try_clone_to_owned()?];
    let mut todo: Vec<OsString> = components(rel)?;
    todo.reverse();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            if stack.len() == 1 {
                return Err(Errno::EXDEV.into());
            }
            stack.pop();
            continue;
        }
        let last = todo.is_empty();
        let cur = stack.last().ok_or(Errno::EINVAL)?;
        let fd = nix::fcntl::openat(
            cur,
            c.as_os_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let st = nix::sys::stat::fstat(&fd)?;
        let is_link = st.st_mode & libc::S_IFMT == libc::S_IFLNK;
        if is_link && !(last && flags.contains(OFlag::O_NOFOLLOW)) {
            if follow == Follow::Never {
                return Err(Errno::ELOOP.into());
            }
            links += 1;
            if links > MAX_LINKS {
                return Err(Errno::ELOOP.into());
            }
            let target = nix::fcntl::readlinkat(&fd, "")?;
            if Path::new(&target).is_absolute() {
                return Err(Errno::EXDEV.into());
            }
            let mut more = components(Path::new(&target))?;
            more.reverse();
            todo.extend(more);
            continue;
        }
        if last {
            // Reopen for real with the caller's flags, still not following.
            return Ok(nix::fcntl::openat(
                cur,
                c.as_os_str(),
                flags | OFlag::O_NOFOLLOW,
                Mode::empty(),
            )?);
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(Errno::ENOTDIR.into());
        }
        stack.push(fd);
    }
    // The root itself (or a path that walked back up to it).
    let cur = stack.last().ok_or(Errno::EINVAL)?;
    Ok(nix::fcntl::openat(cur, ".", flags, Mode::empty())?)
}

fn components(p: &Path) -> std::io::Result<Vec<OsString>> {
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::ParentDir => out.push("..".into()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(Errno::EXDEV.into()),
        }
    }
    Ok(out)
}

/// Reads at most `limit` bytes of an open file; more is an error that
/// names `what`, so a hostile file cannot make shipyard hold gigabytes.
pub fn read_bounded(fd: OwnedFd, limit: u64, what: &Path) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::from(fd)
        .take(limit + 1)
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "{} is larger than {limit} bytes; not read",
            what.display()
        )));
    }
    Ok(buf)
}

/// The names in an open directory, without `.` and `..`, sorted.
pub fn list_dir(dir: OwnedFd) -> std::io::Result<Vec<OsString>> {
    let mut d = nix::dir::Dir::from_fd(dir)?;
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(std::ffi::OsStr::from_bytes(n).to_os_string());
        }
    }
    names.sort();
    Ok(names)
}

/// `fstat` as std metadata (works on `O_PATH` descriptors too).
pub fn metadata(fd: &OwnedFd) -> std::io::Result<std::fs::Metadata> {
    std::fs::File::from(fd.try_clone()?).metadata()
}

/// The target of a symlink opened with `O_PATH | O_NOFOLLOW`.
pub fn read_link(fd: &OwnedFd) -> std::io::Result<std::path::PathBuf> {
    Ok(nix::fcntl::readlinkat(fd.as_fd(), "")?.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, OwnedFd) {
        let t = tempfile::tempdir().unwrap();
        let r = t.path().join("root");
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::write(r.join("a/b/f"), b"in").unwrap();
        std::fs::write(t.path().join("secret"), b"out").unwrap();
        symlink(t.path().join("secret"), r.join("abs")).unwrap();
        symlink("../../secret", r.join("a/up")).unwrap();
        symlink("b", r.join("a/rel")).unwrap();
        symlink(t.path(), r.join("hostdir")).unwrap();
        let fd = open_root(&r).unwrap();
        (t, fd)
    }

    fn read(root: &OwnedFd, p: &str, follow: Follow, walk: bool) -> std::io::Result<Vec<u8>> {
        let fd = if walk {
            open_walk(
                root.as_fd(),
                strip_root(Path::new(p)),
                OFlag::O_RDONLY,
                follow,
            )?
        } else {
            open_in(root.as_fd(), Path::new(p), OFlag::O_RDONLY, follow)?
        };
        read_bounded(fd, 1 << 20, Path::new(p))
    }

    #[test]
    fn symlinks_out_of_the_root_are_refused_by_both_paths() {
        let (_t, root) = tree();
        for walk in [false, true] {
            assert_eq!(read(&root, "a/b/f", Follow::Never, walk).unwrap(), b"in");
            assert_eq!(
                read(&root, "/a/rel/f", Follow::Beneath, walk).unwrap(),
                b"in"
            );
            for p in [
                "abs",
                "a/up",
                "hostdir/secret",
                "../secret",
                "a/../../secret",
            ] {
                for f in [Follow::Never, Follow::Beneath] {
                    assert!(read(&root, p, f, walk).is_err(), "{p} {f:?} walk={walk}");
                }
            }
            assert!(read(&root, "a/rel/f", Follow::Never, walk).is_err());
        }
    }

    #[test]
    fn a_last_symlink_opens_itself_with_o_path_nofollow() {
        let (_t, root) = tree();
        for walk in [false, true] {
            let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW;
            let fd = if walk {
                open_walk(root.as_fd(), Path::new("abs"), flags, Follow::Never).unwrap()
            } else {
                open_in(root.as_fd(), Path::new("abs"), flags, Follow::Never).unwrap()
            };
            assert!(metadata(&fd).unwrap().file_type().is_symlink());
            assert!(read_link(&fd).unwrap().ends_with("secret"));
        }
    }

    #[test]
    fn bounded_reads_refuse_what_is_larger() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("big"), vec![0u8; 2000]).unwrap();
        let root = open_root(t.path()).unwrap();
        let fd = open_in(
            root.as_fd(),
            Path::new("big"),
            OFlag::O_RDONLY,
            Follow::Never,
        )
        .unwrap();
        assert!(read_bounded(fd, 1000, Path::new("big")).is_err());
    }
}
