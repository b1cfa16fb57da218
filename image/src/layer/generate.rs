//! ChangeSet → deterministic tar stream.
//!
//! Headers are filled field by field rather than from `stat`, so nothing of
//! the machine leaks in: numeric uid/gid only (uname/gname empty), mtimes
//! clamped, no atime/ctime, no sparse files, PAX records (with a fixed
//! header name) for long names, large ids and xattrs.

use crate::rootfs::changeset::{Change, ChangeSet};
use crate::rootfs::entry::{Entry, Kind, RelPath};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
/// Why a tree could not be written as a layer.
pub enum GenerateError {
    #[error("{path}")]
    /// A file or directory of the tree could not be read.
    Io {
        /// The path on disk.
        path: PathBuf,
        #[source]
        /// The system's answer.
        source: io::Error,
    },
    #[error("{path}: file changed while it was being archived (expected {expected} bytes, read {actual}); re-run once nothing writes to the tree")]
    /// A file's size changed between the walk and the archiving: the layer
    /// would not match the manifest, so it is refused.
    Changed {
        /// The file.
        path: PathBuf,
        /// The size the walk saw.
        expected: u64,
        /// The bytes read.
        actual: u64,
    },
    #[error(
        "{0}: names starting with .wh. are whiteouts in a layer and cannot be stored as files"
    )]
    /// A file named `.wh.*`, which a layer reader would take for a whiteout.
    ReservedName(RelPath),
    #[error("writing layer")]
    /// The compressed output (the blob being written) failed.
    Write(#[source] io::Error),
}

/// Options that change the bytes of the tar.
#[derive(Clone, Copy, Debug, Default)]
pub struct TarOptions {
    /// Every mtime later than this is set to it (SOURCE_DATE_EPOCH).
    pub clamp_mtime: Option<i64>,
}

const USTAR_MAX_ID: u64 = 0o7777777;

/// Writes `changes` as a tar stream; file contents come from `root`.
pub fn write_tar<W: Write>(
    changes: &ChangeSet,
    root: &Path,
    opts: &TarOptions,
    out: W,
) -> Result<W, GenerateError> {
    let mut b = tar::Builder::new(out);
    for c in &changes.changes {
        match c {
            Change::Put(e) => {
                if e.path.name().starts_with(b".wh.") {
                    return Err(GenerateError::ReservedName(e.path.clone()));
                }
                put_entry(&mut b, e, Content::Root(root), opts)?
            }
            Change::Whiteout(_) | Change::Opaque(_) => {
                put_marker(&mut b, c.tar_path(), opts)?;
            }
        }
    }
    b.into_inner().map_err(GenerateError::Write)
}

/// Where a file member's bytes come from: the tree being archived, or
/// the member of another layer being rewritten.
pub(crate) enum Content<'a> {
    /// `root` joined with the entry's path.
    Root(&'a Path),
    /// Exactly the entry's size bytes.
    Reader(&'a mut dyn Read),
}

/// A whiteout or opaque marker member (`tar_path` is its `.wh.` name).
pub(crate) fn put_marker<W: Write>(
    b: &mut tar::Builder<W>,
    tar_path: RelPath,
    opts: &TarOptions,
) -> Result<(), GenerateError> {
    let mut marker = Entry::new(tar_path, Kind::File);
    marker.mode = 0o644;
    put_entry(b, &marker, Content::Root(Path::new("/")), opts)
}

/// One member: its header filled field by field, then its bytes.
pub(crate) fn put_entry<W: Write>(
    b: &mut tar::Builder<W>,
    e: &Entry,
    content: Content<'_>,
    opts: &TarOptions,
) -> Result<(), GenerateError> {
    let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut h = tar::Header::new_ustar();
    let mut name = e.path.as_bytes().to_vec();
    if e.kind == Kind::Dir {
        name.push(b'/');
    }
    if !set_ustar_name(&mut h, &name) {
        pax.push((b"path".to_vec(), name.clone()));
    }
    let mtime = match opts.clamp_mtime {
        Some(c) => e.mtime.sec.min(c),
        None => e.mtime.sec,
    }
    .max(0) as u64;
    h.set_mtime(mtime);
    h.set_mode(e.mode);
    for (key, id, set) in [
        (
            "uid",
            e.uid,
            tar::Header::set_uid as fn(&mut tar::Header, u64),
        ),
        ("gid", e.gid, tar::Header::set_gid),
    ] {
        if id > USTAR_MAX_ID {
            pax.push((key.as_bytes().to_vec(), id.to_string().into_bytes()));
            set(&mut h, 0);
        } else {
            set(&mut h, id);
        }
    }
    let (etype, size) = match e.kind {
        Kind::File => (tar::EntryType::Regular, e.size),
        Kind::Dir => (tar::EntryType::Directory, 0),
        Kind::Symlink => (tar::EntryType::Symlink, 0),
        Kind::Hardlink => (tar::EntryType::Link, 0),
        Kind::Char => (tar::EntryType::Char, 0),
        Kind::Block => (tar::EntryType::Block, 0),
        Kind::Fifo => (tar::EntryType::Fifo, 0),
    };
    h.set_entry_type(etype);
    h.set_size(size);
    if let Some(link) = &e.link {
        if !set_ustar_link(&mut h, link) {
            pax.push((b"linkpath".to_vec(), link.clone()));
        }
    }
    if let Some((ma, mi)) = e.rdev {
        // ustar device fields hold 7 octal digits; larger numbers are rare
        // enough (and unrepresentable in ustar) that we report them.
        h.set_device_major(ma).map_err(GenerateError::Write)?;
        h.set_device_minor(mi).map_err(GenerateError::Write)?;
    }
    for (k, v) in &e.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(k);
        pax.push((key, v.clone()));
    }
    if !pax.is_empty() {
        write_pax(b, &pax)?;
    }
    h.set_cksum();
    if e.kind == Kind::File && size > 0 {
        let (full, f): (PathBuf, Box<dyn Read + '_>) = match content {
            Content::Root(root) => {
                let full = root.join(e.path.to_path());
                let f = open_nofollow(&full).map_err(|source| GenerateError::Io {
                    path: full.clone(),
                    source,
                })?;
                (full, Box::new(f))
            }
            Content::Reader(r) => (e.path.to_path().to_path_buf(), Box::new(r)),
        };
        let mut counted = CountingReader {
            inner: f.take(size),
            n: 0,
        };
        b.append(&h, &mut counted).map_err(GenerateError::Write)?;
        if counted.n != size {
            return Err(GenerateError::Changed {
                path: full,
                expected: size,
                actual: counted.n,
            });
        }
    } else {
        b.append(&h, io::empty()).map_err(GenerateError::Write)?;
    }
    Ok(())
}

struct CountingReader<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

fn open_nofollow(p: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(p)
}

/// Puts `name` in the ustar name (and prefix) fields if it fits.
fn set_ustar_name(h: &mut tar::Header, name: &[u8]) -> bool {
    let Some(u) = h.as_ustar_mut() else {
        return false;
    };
    if name.len() <= 100 {
        u.name[..name.len()].copy_from_slice(name);
        return true;
    }
    // Split at a '/' so the prefix fits in 155 bytes and the rest in 100.
    let lo = name.len().saturating_sub(101);
    for i in (lo..name.len().min(156)).rev() {
        if name[i] == b'/' && i <= 155 && name.len() - i - 1 <= 100 && name.len() - i - 1 > 0 {
            u.prefix[..i].copy_from_slice(&name[..i]);
            u.name[..name.len() - i - 1].copy_from_slice(&name[i + 1..]);
            return true;
        }
    }
    // Does not fit: the PAX path record carries it; keep a truncated name
    // for readers that ignore PAX.
    u.name.copy_from_slice(&name[..100]);
    false
}

fn set_ustar_link(h: &mut tar::Header, link: &[u8]) -> bool {
    let Some(u) = h.as_ustar_mut() else {
        return false;
    };
    let n = link.len().min(100);
    u.linkname[..n].copy_from_slice(&link[..n]);
    link.len() <= 100
}

fn write_pax<W: Write>(
    b: &mut tar::Builder<W>,
    records: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), GenerateError> {
    let mut data = Vec::new();
    for (k, v) in records {
        // "%d %s=%s\n", where the length counts its own digits.
        let body = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        data.extend_from_slice(len.to_string().as_bytes());
        data.push(b' ');
        data.extend_from_slice(k);
        data.push(b'=');
        data.extend_from_slice(v);
        data.push(b'\n');
    }
    let mut h = tar::Header::new_ustar();
    set_ustar_name(&mut h, b"././@PaxHeader");
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, &data[..]).map_err(GenerateError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_split_or_pax() {
        let mut h = tar::Header::new_ustar();
        let name = format!("{}/{}", "d".repeat(120), "f".repeat(50));
        assert!(set_ustar_name(&mut h, name.as_bytes()));
        assert_eq!(h.path_bytes().as_ref(), name.as_bytes());
        let mut h = tar::Header::new_ustar();
        assert!(!set_ustar_name(&mut h, "x".repeat(300).as_bytes()));
    }
}
