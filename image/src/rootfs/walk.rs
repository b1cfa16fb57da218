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
/// Why a tree could not be walked.
pub enum WalkError {
    #[error("{path}")]
    /// A path of the tree could not be read.
    Io {
        /// The path.
        path: PathBuf,
        #[source]
        /// The system's answer.
        source: io::Error,
    },
    #[error("{0}: not a directory")]
    /// The root is not a directory.
    NotADir(PathBuf),
    /// The ownership record beside the tree (see [`ownership_record_path`])
    /// is unreadable; its parse errors name the file and line.
    #[error("reading the ownership record")]
    Record(#[source] crate::rootfs::manifest::ManifestError),
}

/// What a walk computes besides metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hashing {
    /// sha256 of every regular file (for `shipyard manifest`).
    All,
    /// No content hashes; the diff hashes only the files it must.
    None,
}

/// How a walk reads ownership, and what it leaves out.
#[derive(Clone, Debug)]
pub struct WalkOptions {
    /// Which files are hashed as the walk goes.
    pub hashing: Hashing,
    /// Rootless mapping: files owned by the (unprivileged) caller are
    /// recorded as owned by root, the way the caller is root inside a user
    /// namespace, and as buildah and `umoci --rootless` record them. On by
    /// default when not running as root.
    pub caller_is_root: bool,
    /// Paths (as `root` joined with a relative path, so absolute when
    /// `root` is) that are neither listed nor entered.
    pub skip: Vec<PathBuf>,
    /// The tree is a running system (`/` at isolation none), not a tree
    /// of shipyard's: what cannot be read (another user's private
    /// directory) or vanishes while it is walked is left out instead of
    /// failing the walk, and no ownership record applies.
    pub live: bool,
}

impl WalkOptions {
    /// Options for walking a tree of shipyard's with `hashing`: the caller's
    /// files are owned by root when it is not root itself.
    pub fn new(hashing: Hashing) -> Self {
        Self {
            hashing,
            caller_is_root: !nix::unistd::geteuid().is_root(),
            skip: Vec::new(),
            live: false,
        }
    }
}

/// The xattr in which rootless tools (umoci, PRoot, …; see
/// rootlesscontainers.io) keep the ownership a file should have.
pub const ROOTLESS_XATTR: &[u8] = b"user.rootlesscontainers";

/// A walked tree: where it is and what it holds.
pub struct Tree {
    /// The walked directory.
    pub root: PathBuf,
    /// What it holds.
    pub manifest: Manifest,
}

/// The file where a rootless unpack records what the host could not
/// represent (ownership, device nodes, privileged xattrs), beside the tree.
pub fn ownership_record_path(root: &Path) -> PathBuf {
    let mut s = root.as_os_str().to_owned();
    s.push(".shipyard-manifest");
    PathBuf::from(s)
}

/// Walks `root` and returns its manifest, with default options for this
/// user (see [`WalkOptions::new`]).
pub fn walk(root: &Path, hashing: Hashing) -> Result<Tree, WalkError> {
    walk_with(root, &WalkOptions::new(hashing))
}

/// Walks `root` and returns its manifest.
///
/// Ownership is decided per entry, first rule that applies:
/// 1. a `user.rootlesscontainers` xattr (written by `umoci --rootless` and
///    other rootless tools) gives the intended uid/gid; the xattr itself is
///    metadata, not content, and is dropped;
/// 2. an ownership record beside the tree (see [`ownership_record_path`],
///    written by a rootless `shipyard unpack`) gives them, for entries still
///    owned by the caller, so a later `chown` by a privileged user wins;
/// 3. with [`WalkOptions::caller_is_root`], the caller's own uid/gid become
///    0: what the caller owns, root owns inside the image;
/// 4. otherwise the ids on disk.
///
/// The record also restores device nodes and `security.*`/`trusted.*`
/// xattrs the host refused: that is how a rootless user's tree remembers
/// that `/dev/null` exists and `/bin/ping` has `cap_net_raw`.
pub fn walk_with(root: &Path, opts: &WalkOptions) -> Result<Tree, WalkError> {
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
    let root_dev = meta.dev();
    // Compared as bytes: a `Path` comparison parses components, and this
    // runs for every entry.
    let skip: std::collections::HashSet<&std::ffi::OsStr> =
        opts.skip.iter().map(|p| p.as_os_str()).collect();
    let mut walker = walker.into_iter();
    while let Some(item) = walker.next() {
        let item = match item {
            Ok(item) => item,
            Err(e) if opts.live => {
                tracing::debug!("walk: left out: {e}");
                continue;
            }
            Err(e) => {
                let path = e
                    .path()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| root.to_path_buf());
                return Err(WalkError::Io {
                    source: e
                        .into_io_error()
                        .unwrap_or_else(|| io::Error::other("walk error")),
                    path,
                });
            }
        };
        if !skip.is_empty() && skip.contains(item.path().as_os_str()) {
            // Not `filter_entry`: on a directory it rejects, it skips the
            // directory last entered, and a directory on another
            // filesystem never was (walkdir 2.5): the walk would stop in
            // its parent. So the directory is left here only if entered.
            let entered = item.file_type().is_dir()
                && std::fs::symlink_metadata(item.path()).is_ok_and(|m| m.dev() == root_dev);
            if entered {
                walker.skip_current_dir();
            }
            continue;
        }
        let rel = item
            .path()
            .strip_prefix(root)
            .map(|p| RelPath::new(p.as_os_str().as_bytes().to_vec()))
            .unwrap_or_default();
        let md = match item.metadata() {
            Ok(md) => md,
            Err(e) if opts.live => {
                tracing::debug!("walk: left out: {e}");
                continue;
            }
            Err(e) => {
                return Err(WalkError::Io {
                    path: item.path().to_path_buf(),
                    source: e
                        .into_io_error()
                        .unwrap_or_else(|| io::Error::other("stat failed")),
                })
            }
        };
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
            if !opts.live {
                tracing::warn!(
                    "{}: skipping socket (a layer cannot hold one)",
                    item.path().display()
                );
            }
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
                let t = match std::fs::read_link(item.path()) {
                    Ok(t) => t,
                    Err(_) if opts.live => continue,
                    Err(err) => return Err(io_err(item.path())(err)),
                };
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

    // xattrs and hashes, where the time goes, on all cores. The intended
    // owner from a rootless xattr is set aside for the ownership pass.
    let hashing = opts.hashing;
    let mut intended: Vec<Option<(Option<u32>, Option<u32>)>> = vec![None; entries.len()];
    entries
        .par_iter_mut()
        .zip(intended.par_iter_mut())
        .try_for_each(|(e, intent)| -> Result<(), WalkError> {
            let full = root.join(e.path.to_path());
            if e.kind != Kind::Hardlink {
                e.xattrs = match read_xattrs(&full) {
                    Ok(x) => x,
                    // Gone since it was listed, or not ours to read.
                    Err(_) if opts.live => Default::default(),
                    Err(err) => return Err(io_err(&full)(err)),
                };
                if let Some(v) = e.xattrs.remove(ROOTLESS_XATTR) {
                    *intent = Some(decode_rootless_xattr(&v));
                }
            }
            if hashing == Hashing::All && e.kind == Kind::File {
                e.sha256 = Some(hash_file(&full).map_err(io_err(&full))?);
            }
            Ok(())
        })?;

    let record_path = ownership_record_path(root);
    let record = if record_path.is_file() && !opts.live {
        let f = File::open(&record_path).map_err(io_err(&record_path))?;
        Some(
            Manifest::parse(io::BufReader::new(f), &record_path.display().to_string())
                .map_err(WalkError::Record)?,
        )
    } else {
        None
    };
    let me = (
        nix::unistd::geteuid().as_raw() as u64,
        nix::unistd::getegid().as_raw() as u64,
    );
    let mut walked: Vec<(RelPath, Entry)> = Vec::with_capacity(entries.len());
    for (mut e, intent) in entries.into_iter().zip(intended) {
        let rec = record
            .as_ref()
            .and_then(|r| r.get(&e.path))
            .filter(|r| r.kind == e.kind || (e.kind == Kind::File && r.kind == Kind::Hardlink));
        let (host_uid, host_gid) = (e.uid, e.gid);
        // The record speaks for an entry the caller still owns, both of
        // its ids: a staged file the caller owns may keep the builder's
        // group on disk (a subordinate gid, such as `root:adm` from apt),
        // which only the record can map back.
        let owned = rec.filter(|_| host_uid == me.0);
        e.uid = resolve_id(
            host_uid,
            me.0,
            intent.and_then(|i| i.0),
            owned.map(|r| r.uid),
            opts.caller_is_root,
        );
        e.gid = resolve_id(
            host_gid,
            me.1,
            intent.and_then(|i| i.1),
            owned.map(|r| r.gid),
            opts.caller_is_root,
        );
        if let Some(r) = rec {
            for (k, v) in &r.xattrs {
                if (k.starts_with(b"security.") || k.starts_with(b"trusted."))
                    && !e.xattrs.contains_key(k)
                {
                    e.xattrs.insert(k.clone(), v.clone());
                }
            }
        }
        walked.push((e.path.clone(), e));
    }
    // In tree order already (sorted siblings, depth first): built in one
    // pass rather than by a search per entry.
    let mut manifest = Manifest {
        entries: walked.into_iter().collect(),
    };
    // Device nodes a rootless unpack could not create.
    if let Some(rec) = &record {
        for (p, r) in &rec.entries {
            let parent_present = p.parent().is_root() || manifest.entries.contains_key(&p.parent());
            if matches!(r.kind, Kind::Char | Kind::Block)
                && parent_present
                && manifest.get(p).is_none()
            {
                manifest.insert(r.clone());
            }
        }
    }
    Ok(Tree {
        root: root.to_path_buf(),
        manifest,
    })
}

/// See [`walk_with`] for the order of the rules.
fn resolve_id(
    host: u64,
    me: u64,
    intended: Option<u32>,
    recorded: Option<u64>,
    caller_is_root: bool,
) -> u64 {
    if let Some(i) = intended {
        return i as u64;
    }
    if let Some(r) = recorded {
        return r;
    }
    if host == me && caller_is_root {
        return 0;
    }
    host
}

/// Decodes the `user.rootlesscontainers` protobuf (`uint32 uid = 1; uint32
/// gid = 2;`). A missing field is 0 (proto3); `u32::MAX` means "no change",
/// returned as `None`.
pub(crate) fn decode_rootless_xattr(v: &[u8]) -> (Option<u32>, Option<u32>) {
    let (mut uid, mut gid) = (0u64, 0u64);
    let mut i = 0;
    let varint = |i: &mut usize| -> Option<u64> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *v.get(*i)?;
            *i += 1;
            out |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Some(out);
            }
        }
        None
    };
    while i < v.len() {
        let Some(tag) = varint(&mut i) else { break };
        if tag & 7 != 0 {
            break; // not a varint field: nothing we understand follows
        }
        let Some(val) = varint(&mut i) else { break };
        match tag >> 3 {
            1 => uid = val,
            2 => gid = val,
            _ => {}
        }
    }
    let keep = |x: u64| (x != u32::MAX as u64).then_some(x as u32);
    (keep(uid), keep(gid))
}

/// All extended attributes of a path, without following symlinks.
pub(crate) fn read_xattrs(path: &Path) -> io::Result<std::collections::BTreeMap<Vec<u8>, Vec<u8>>> {
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

#[cfg(test)]
mod tests {
    /// A broken ownership record fails the walk (its owners would be
    /// wrong), naming the record's file and line once.
    #[test]
    fn a_broken_ownership_record_names_its_file_and_line() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("tree");
        std::fs::create_dir(&root).unwrap();
        let record = super::ownership_record_path(&root);
        std::fs::write(
            &record,
            format!("{}\n/x nonsense\n", crate::rootfs::manifest::HEADER),
        )
        .unwrap();
        let Err(err) = super::walk(&root, super::Hashing::None) else {
            panic!("a broken ownership record was accepted");
        };
        assert!(matches!(err, super::WalkError::Record(_)), "{err:?}");
        let text = crate::error::chain_text(&err);
        let at = format!("{}:2:", record.display());
        assert!(
            text.starts_with(&format!("reading the ownership record: {at}")),
            "{text}"
        );
        assert_eq!(text.matches(&at).count(), 1, "{text}");
    }

    #[test]
    fn rootless_xattr_decodes() {
        // uid 1001, gid 1001 as umoci writes it.
        assert_eq!(
            super::decode_rootless_xattr(&[0x08, 0xe9, 0x07, 0x10, 0xe9, 0x07]),
            (Some(1001), Some(1001))
        );
        // Empty message: root.
        assert_eq!(super::decode_rootless_xattr(&[]), (Some(0), Some(0)));
        // NoopID for gid.
        assert_eq!(
            super::decode_rootless_xattr(&[0x08, 0x05, 0x10, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            (Some(5), None)
        );
    }
}
