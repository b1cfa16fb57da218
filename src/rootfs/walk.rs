//! Taking the manifest of a directory tree.
//!
//! The walk itself is sequential (walkdir, sorted, no symlink following, one
//! filesystem) because it is mostly `lstat` and already fast; xattrs and
//! content hashes, where the time goes, are computed in parallel with rayon.

use super::entry::{Entry, Kind, Mtime, RelPath};
use super::manifest::Manifest;
use rayon::prelude::*;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}: not a directory")]
    NotADir(PathBuf),
}

/// What a walk computes besides metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hashing {
    /// sha256 of every regular file (for `shipyard manifest`).
    All,
    /// No content hashes; the diff hashes only the files it must.
    None,
}

/// A walked tree: where it is and what it holds.
pub struct Tree {
    pub root: PathBuf,
    pub manifest: Manifest,
}

/// The file where a rootless unpack records what the host could not
/// represent (ownership, device nodes, privileged xattrs), beside the tree.
pub fn ownership_record_path(root: &Path) -> PathBuf {
    let mut s = root.as_os_str().to_owned();
    s.push(".shipyard-manifest");
    PathBuf::from(s)
}

/// Walks `root` and returns its manifest.
///
/// If an ownership record (see [`ownership_record_path`]) sits beside the
/// tree, entries still owned by the calling user take their uid and gid from
/// it, and device nodes and privileged xattrs the host refused are taken
/// from it too: that is how a rootless user's tree remembers that
/// `/etc/shadow` belongs to root and `/home/app` to uid 1000.
pub fn walk(root: &Path, hashing: Hashing) -> Result<Tree, WalkError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source: io::Error| WalkError::Io { path, source }
    };
    let meta = std::fs::symlink_metadata(root).map_err(io_err(root))?;
    if !meta.is_dir() {
        return Err(WalkError::NotADir(root.to_path_buf()));
    }
    let mut entries: Vec<Entry> = Vec::new();
    let mut first_link: HashMap<(u64, u64), RelPath> = HashMap::new();
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .same_file_system(true)
        .min_depth(1)
        .sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
    for item in walker {
        let item = item.map_err(|e| {
            let path = e
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| root.to_path_buf());
            WalkError::Io {
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| io::Error::other("walk error")),
                path,
            }
        })?;
        let rel = item
            .path()
            .strip_prefix(root)
            .map(|p| RelPath::new(p.as_os_str().as_bytes().to_vec()))
            .unwrap_or_default();
        let md = item.metadata().map_err(|e| WalkError::Io {
            path: item.path().to_path_buf(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| io::Error::other("stat failed")),
        })?;
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_char_device() {
            Kind::Char
        } else if ft.is_block_device() {
            Kind::Block
        } else if ft.is_fifo() {
            Kind::Fifo
        } else {
            tracing::warn!(
                "{}: skipping socket (a layer cannot hold one)",
                item.path().display()
            );
            continue;
        };
        let mut e = Entry::new(rel.clone(), kind);
        e.mode = md.mode() & 0o7777;
        e.uid = md.uid() as u64;
        e.gid = md.gid() as u64;
        e.mtime = Mtime {
            sec: md.mtime(),
            nsec: Some(md.mtime_nsec() as u32),
        };
        match kind {
            Kind::File => e.size = md.len(),
            Kind::Symlink => {
                let t = std::fs::read_link(item.path()).map_err(io_err(item.path()))?;
                e.link = Some(t.as_os_str().as_bytes().to_vec());
            }
            Kind::Char | Kind::Block => {
                let rdev = md.rdev();
                e.rdev = Some((
                    nix::sys::stat::major(rdev) as u32,
                    nix::sys::stat::minor(rdev) as u32,
                ));
            }
            _ => {}
        }
        if kind != Kind::Dir && md.nlink() > 1 {
            let key = (md.dev(), md.ino());
            match first_link.get(&key) {
                Some(first) => {
                    e.kind = Kind::Hardlink;
                    e.size = 0;
                    e.link = Some(first.as_bytes().to_vec());
                }
                None => {
                    first_link.insert(key, rel);
                }
            }
        }
        entries.push(e);
    }

    entries
        .par_iter_mut()
        .try_for_each(|e| -> Result<(), WalkError> {
            let full = root.join(e.path.to_path());
            if e.kind != Kind::Hardlink {
                e.xattrs = read_xattrs(&full).map_err(io_err(&full))?;
            }
            if hashing == Hashing::All && e.kind == Kind::File {
                e.sha256 = Some(hash_file(&full).map_err(io_err(&full))?);
            }
            Ok(())
        })?;

    let mut manifest = Manifest::default();
    for e in entries {
        manifest.insert(e);
    }
    let record = ownership_record_path(root);
    if record.is_file() {
        let f = File::open(&record).map_err(io_err(&record))?;
        let rec =
            Manifest::parse(io::BufReader::new(f), &record.display().to_string()).map_err(|e| {
                WalkError::Io {
                    path: record.clone(),
                    source: io::Error::other(e.to_string()),
                }
            })?;
        apply_ownership_record(&mut manifest, &rec);
    }
    Ok(Tree {
        root: root.to_path_buf(),
        manifest,
    })
}

/// See [`walk`]. Only entries still owned by the caller are overridden, so
/// a later `chown` by a privileged user is not undone.
fn apply_ownership_record(m: &mut Manifest, rec: &Manifest) {
    let me = (
        nix::unistd::geteuid().as_raw() as u64,
        nix::unistd::getegid().as_raw() as u64,
    );
    for (p, r) in &rec.entries {
        let parent_present = p.parent().is_root() || m.entries.contains_key(&p.parent());
        match m.entries.get_mut(p) {
            Some(e) if e.kind == r.kind || (e.kind == Kind::File && r.kind == Kind::Hardlink) => {
                if e.uid == me.0 {
                    e.uid = r.uid;
                }
                if e.gid == me.1 {
                    e.gid = r.gid;
                }
                for (k, v) in &r.xattrs {
                    if (k.starts_with(b"security.") || k.starts_with(b"trusted."))
                        && !e.xattrs.contains_key(k)
                    {
                        e.xattrs.insert(k.clone(), v.clone());
                    }
                }
            }
            None if matches!(r.kind, Kind::Char | Kind::Block) && parent_present => {
                m.insert(r.clone());
            }
            _ => {}
        }
    }
}

/// All extended attributes of a path, without following symlinks.
pub fn read_xattrs(path: &Path) -> io::Result<std::collections::BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = std::collections::BTreeMap::new();
    let names = match xattr::list(path) {
        Ok(n) => n,
        // Filesystems without xattr support simply have none.
        Err(e) if e.raw_os_error() == Some(libc_enotsup()) => return Ok(out),
        Err(e) => return Err(e),
    };
    for name in names {
        if let Some(v) = xattr::get(path, &name)? {
            out.insert(name.as_bytes().to_vec(), v);
        }
    }
    Ok(out)
}

fn libc_enotsup() -> i32 {
    nix::errno::Errno::EOPNOTSUPP as i32
}

/// sha256 of a regular file, opened without following a final symlink.
pub fn hash_file(path: &Path) -> io::Result<[u8; 32]> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)?;
    crate::oci::digest::sha256_reader(f)
}
