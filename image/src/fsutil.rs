//! File-system primitives every part of shipyard shares: atomic writes,
//! tree copies and mtimes.
//!
//! One place for each, because each has a subtle contract that a second
//! copy tends to lose: an atomic write that skips the directory fsync loses
//! the rename after a crash; a tree copy that rounds mtimes to the second
//! makes a diff against the original see every file as changed.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Prefix of the temp files [`write_atomic`] leaves while it writes; a
/// garbage collector may remove old ones (see `oci::layout::is_stale`).
pub const TMP_PREFIX: &str = ".tmp-";

/// What [`write_atomic`] does when the destination already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    /// The new content replaces the old (atomically).
    Replace,
    /// The existing file wins (a concurrent creator got there first).
    Keep,
}

/// Writes a file atomically and durably: temp file beside it, fsync,
/// rename, fsync of the directory. Readers see the old file or the new
/// one, never a part, and after a crash the rename is not lost. Creates
/// the parent directory if need be; the file gets `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, if_exists: IfExists) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode))?;
    let done = match if_exists {
        IfExists::Replace => tmp.persist(path),
        IfExists::Keep => tmp.persist_noclobber(path),
    };
    match done {
        Ok(_) => fsync_dir(dir),
        Err(e) if if_exists == IfExists::Keep && e.error.kind() == io::ErrorKind::AlreadyExists => {
            Ok(())
        }
        Err(e) => Err(e.error),
    }
}

/// Makes a rename or link in `dir` durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Sets a path's atime and mtime without following a final symlink (best
/// effort: a copy with a wrong mtime is still the right content).
pub fn set_mtime(p: &Path, secs: i64) {
    set_mtime_ns(p, secs, 0)
}

/// [`set_mtime`] to the nanosecond: a copy that must compare unchanged
/// against its original (the copy fallback) keeps the exact mtime.
pub fn set_mtime_ns(p: &Path, secs: i64, nsecs: i64) {
    let _ = try_set_mtime_ns(p, secs, nsecs);
}

/// [`set_mtime_ns`] for a caller that must know it failed: an entry whose
/// mtime is wrong would be a change to whoever diffs it.
pub fn try_set_mtime_ns(p: &Path, secs: i64, nsecs: i64) -> io::Result<()> {
    let t = nix::sys::time::TimeSpec::new(secs, nsecs);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// A file-system operation that failed on a path.
#[derive(Debug, thiserror::Error)]
#[error("{}", path.display())]
pub struct PathError {
    /// The path the operation failed on.
    pub path: PathBuf,
    /// What the kernel said (the errno is kept).
    #[source]
    pub source: io::Error,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> PathError + '_ {
    move |source| PathError {
        path: path.to_path_buf(),
        source,
    }
}

/// Copies the tree `src` into `dst` (which may exist), keeping modes,
/// owners where the caller may set them, mtimes to the nanosecond and
/// symlinks as symlinks; hard links become copies and devices, fifos and
/// sockets are skipped. Directory modes and mtimes are set last, so a
/// read-only directory can still be filled and its mtime is not disturbed
/// by the files written into it.
///
/// Nothing is followed: `src` is walked without following symlinks, so a
/// link in the tree is copied, never its target.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), PathError> {
    let mut dirs = Vec::new();
    for ent in walkdir::WalkDir::new(src).min_depth(1).sort_by_file_name() {
        let ent = ent.map_err(|e| PathError {
            path: e.path().unwrap_or(src).to_path_buf(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| io::Error::other("a file system loop")),
        })?;
        let Ok(rel) = ent.path().strip_prefix(src) else {
            continue; // walkdir yields only paths under `src`
        };
        let to = dst.join(rel);
        let md = ent.path().symlink_metadata().map_err(at(ent.path()))?;
        let ft = md.file_type();
        if ft.is_dir() {
            fs::create_dir_all(&to).map_err(at(&to))?;
            dirs.push((to.clone(), md.mode() & 0o7777, md.mtime(), md.mtime_nsec()));
        } else if ft.is_symlink() {
            let t = fs::read_link(ent.path()).map_err(at(ent.path()))?;
            let _ = fs::remove_file(&to);
            symlink(t, &to).map_err(at(&to))?;
        } else if ft.is_file() {
            fs::copy(ent.path(), &to).map_err(at(ent.path()))?;
            fs::set_permissions(&to, fs::Permissions::from_mode(md.mode() & 0o7777))
                .map_err(at(&to))?;
            set_mtime_ns(&to, md.mtime(), md.mtime_nsec());
        } else {
            continue;
        }
        // Ids the caller cannot give stay the caller's.
        let _ = std::os::unix::fs::lchown(&to, Some(md.uid()), Some(md.gid()));
        if ft.is_file() && md.mode() & 0o6000 != 0 {
            // chown clears set-id bits: put them back.
            let _ = fs::set_permissions(&to, fs::Permissions::from_mode(md.mode() & 0o7777));
        }
    }
    for (d, mode, mtime, nsec) in dirs.into_iter().rev() {
        fs::set_permissions(&d, fs::Permissions::from_mode(mode)).map_err(at(&d))?;
        set_mtime_ns(&d, mtime, nsec);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_keep_leaves_the_first_writer_content() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/f");
        write_atomic(&p, b"one", 0o640, IfExists::Keep).unwrap();
        write_atomic(&p, b"two", 0o640, IfExists::Keep).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        write_atomic(&p, b"three", 0o600, IfExists::Replace).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"three");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let left: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temp file is left behind");
    }

    #[test]
    fn copy_tree_keeps_nanosecond_mtimes_modes_and_symlinks_without_following_them() {
        let d = tempfile::tempdir().unwrap();
        let (src, dst) = (d.path().join("src"), d.path().join("dst"));
        fs::create_dir_all(src.join("dir")).unwrap();
        fs::write(src.join("dir/f"), b"x").unwrap();
        fs::set_permissions(src.join("dir/f"), fs::Permissions::from_mode(0o751)).unwrap();
        set_mtime_ns(&src.join("dir/f"), 1_000_000, 123_456_789);
        symlink("/etc/passwd", src.join("dir/l")).unwrap();
        fs::set_permissions(src.join("dir"), fs::Permissions::from_mode(0o555)).unwrap();
        set_mtime_ns(&src.join("dir"), 2_000_000, 5);
        copy_tree(&src, &dst).unwrap();
        let f = fs::symlink_metadata(dst.join("dir/f")).unwrap();
        assert_eq!(
            (f.mode() & 0o7777, f.mtime(), f.mtime_nsec()),
            (0o751, 1_000_000, 123_456_789)
        );
        assert_eq!(
            fs::read_link(dst.join("dir/l")).unwrap(),
            Path::new("/etc/passwd")
        );
        let dm = fs::symlink_metadata(dst.join("dir")).unwrap();
        assert_eq!(
            (dm.mode() & 0o7777, dm.mtime(), dm.mtime_nsec()),
            (0o555, 2_000_000, 5)
        );
        fs::set_permissions(src.join("dir"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(dst.join("dir"), fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn copy_tree_names_the_path_and_keeps_the_errno() {
        let d = tempfile::tempdir().unwrap();
        let err = copy_tree(&d.path().join("missing"), &d.path().join("dst")).unwrap_err();
        assert!(err.path.ends_with("missing"), "{err}");
        assert_eq!(err.source.raw_os_error(), Some(libc::ENOENT));
    }
}
