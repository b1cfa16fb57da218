//! Reading tar headers from an untrusted layer: one place that turns a tar
//! member into an [`Entry`], a whiteout or an opaque marker, normalizing and
//! validating paths. Both the extractor and the image-manifest reader use
//! it, so they cannot disagree about what a layer means.

use super::EntryError;
use crate::rootfs::entry::{Entry, Kind, Mtime, RelPath};
use std::io::{self, Read};

/// The largest PAX record, GNU long name or GNU long link accepted. The
/// tar crate reads each of these whole into memory before the member they
/// describe, so without a bound one small compressed layer can claim
/// gigabytes. Real names and xattrs are far below this.
pub(crate) const MAX_EXTENSION: u64 = 1 << 20;

/// The longest symlink or hardlink target accepted: Linux cannot create a
/// longer one (PATH_MAX), so no real image holds one, and the bound keeps
/// resolving paths through symlinks cheap.
pub(crate) const MAX_LINK_TARGET: usize = 4095;

const BLOCK: usize = 512;

/// A reader between a tar stream and the tar crate that follows the
/// archive's structure header by header and refuses, before the crate
/// sees them, members that would make it hold unbounded data in memory:
/// PAX records (`x`, `g`) and GNU long names and links (`L`, `K`) above
/// [`MAX_EXTENSION`], and GNU sparse members (`S`), whose maps of
/// extension blocks the crate keeps in memory and whose sparse size can
/// claim terabytes of zeros from a few bytes.
///
/// It must find headers where the crate does: member data is the header's
/// size (or the `size` of a preceding PAX record, as the crate applies
/// it) rounded up to 512 bytes. After the end-of-archive block everything
/// passes through untouched.
pub(crate) struct HeaderGuard<R> {
    inner: R,
    state: GuardState,
    /// The `size` record of the PAX header that describes the next member.
    pax_size: Option<u64>,
}

enum GuardState {
    /// Collecting a 512-byte header block.
    Header(Box<[u8; BLOCK]>, usize),
    /// Inside a member: `left` bytes with padding, `data` without; a PAX
    /// record's bytes are kept to read its `size`.
    Data {
        left: u64,
        data: u64,
        pax: Option<Vec<u8>>,
    },
    End,
}

impl<R> HeaderGuard<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            state: GuardState::Header(Box::new([0; BLOCK]), 0),
            pax_size: None,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Reacts to one complete header block.
    fn header(&mut self, block: &[u8; BLOCK]) -> std::io::Result<()> {
        if block.iter().all(|b| *b == 0) {
            self.state = GuardState::End;
            return Ok(());
        }
        let mut h = tar::Header::new_old();
        h.as_mut_bytes().copy_from_slice(block);
        let Ok(size) = h.entry_size() else {
            // The crate fails on this header too.
            self.state = GuardState::End;
            return Ok(());
        };
        let et = h.entry_type();
        let what = match et {
            tar::EntryType::XHeader => Some("PAX extended header"),
            tar::EntryType::XGlobalHeader => Some("PAX global header"),
            tar::EntryType::GNULongName => Some("GNU long name"),
            tar::EntryType::GNULongLink => Some("GNU long link name"),
            _ => None,
        };
        if et.is_gnu_sparse() {
            return Err(bad(
                "sparse member (type 'S'): shipyard does not accept sparse files in layers",
            ));
        }
        if let Some(what) = what {
            if size > MAX_EXTENSION {
                return Err(bad(&format!(
                    "{what} of {size} bytes is larger than the {MAX_EXTENSION} bytes shipyard accepts"
                )));
            }
        }
        let recognized = h.as_ustar().is_some() || h.as_gnu().is_some();
        let consumed_as_extension = recognized
            && matches!(
                et,
                tar::EntryType::XHeader | tar::EntryType::GNULongName | tar::EntryType::GNULongLink
            );
        // As the crate does: a pending PAX `size` replaces the size of the
        // next member that is not itself an extension header, and the
        // pending record belongs to whichever member is returned next.
        let mut size = size;
        if !consumed_as_extension {
            let pending = self.pax_size.take();
            if what.is_none() {
                size = pending.unwrap_or(size);
            }
        }
        let Some(left) = size
            .checked_add(BLOCK as u64 - 1)
            .map(|s| s & !(BLOCK as u64 - 1))
        else {
            self.state = GuardState::End;
            return Ok(());
        };
        let pax = (consumed_as_extension && et == tar::EntryType::XHeader)
            .then(|| Vec::with_capacity(size as usize));
        self.state = GuardState::Data {
            left,
            data: size,
            pax,
        };
        if left == 0 {
            self.member_done();
        }
        Ok(())
    }

    /// The member's data and padding are all in; a PAX record's `size` is
    /// noted the way the crate reads it (the first `size` key; unparsable
    /// means none).
    fn member_done(&mut self) {
        if let GuardState::Data {
            pax: Some(record), ..
        } = &self.state
        {
            self.pax_size = None;
            for ext in tar::PaxExtensions::new(record) {
                let Ok(ext) = ext else { break };
                if ext.key() == Ok("size") {
                    self.pax_size = ext.value().ok().and_then(|v| v.parse::<u64>().ok());
                    break;
                }
            }
        }
        self.state = GuardState::Header(Box::new([0; BLOCK]), 0);
    }

    /// Follows the structure through `buf`, bytes just read.
    fn track(&mut self, mut buf: &[u8]) -> std::io::Result<()> {
        while !buf.is_empty() {
            match &mut self.state {
                GuardState::End => return Ok(()),
                GuardState::Header(block, got) => {
                    let n = (BLOCK - *got).min(buf.len());
                    block[*got..*got + n].copy_from_slice(&buf[..n]);
                    *got += n;
                    buf = &buf[n..];
                    if *got == BLOCK {
                        let block = std::mem::replace(block, Box::new([0; BLOCK]));
                        self.header(&block)?;
                    }
                }
                GuardState::Data { left, data, pax } => {
                    let n = (*left).min(buf.len() as u64) as usize;
                    let d = (*data).min(n as u64) as usize;
                    if let Some(p) = pax {
                        p.extend_from_slice(&buf[..d]);
                    }
                    *data -= d as u64;
                    *left -= n as u64;
                    buf = &buf[n..];
                    if *left == 0 {
                        self.member_done();
                    }
                }
            }
        }
        Ok(())
    }
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

impl<R: Read> Read for HeaderGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.track(&buf[..n])?;
        Ok(n)
    }
}

/// What one tar member says.
#[derive(Debug, Clone)]
pub enum TarItem {
    /// A file, directory, link or device to create (its path normalized).
    Entry(Entry),
    /// `.wh.NAME`: delete this path from lower layers.
    Whiteout(RelPath),
    /// `.wh..wh..opq`: hide the lower layers' contents of this directory.
    Opaque(RelPath),
    /// Metadata members with no effect on the tree (PAX global headers, aufs
    /// `.wh..wh.*` bookkeeping).
    Skip,
}

/// Why an archive path cannot name a place inside the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// It starts with `/`.
    #[error("absolute path")]
    Absolute,
    /// No Linux path holds a NUL.
    #[error("path contains a NUL byte")]
    Nul,
    /// A `..` component could climb out.
    #[error("path contains '..'")]
    DotDot,
}

/// Turns an archive path into a [`RelPath`], rejecting anything that could
/// name a location outside the root: absolute paths and `..` components.
/// `./` prefixes, repeated and trailing slashes are dropped.
pub fn normalize_path(raw: &[u8]) -> Result<RelPath, PathError> {
    if raw.starts_with(b"/") {
        return Err(PathError::Absolute);
    }
    if raw.contains(&0) {
        return Err(PathError::Nul);
    }
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => continue,
            b".." => return Err(PathError::DotDot),
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(RelPath::new(out))
}

/// Classifies one tar member. Errors are short phrases; the caller adds the
/// layer digest and the member's path.
pub(crate) fn classify<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<TarItem, EntryError> {
    let header = entry.header();
    let et = header.entry_type();
    if et == tar::EntryType::XGlobalHeader {
        return Ok(TarItem::Skip);
    }
    let raw_path = entry.path_bytes().into_owned();
    let path = normalize_path(&raw_path)?;
    let name = path.name();
    if let Some(rest) = name.strip_prefix(b".wh.") {
        let dir = path.parent();
        if rest == b".wh..opq" {
            return Ok(TarItem::Opaque(dir));
        }
        if rest.starts_with(b".wh.") {
            return Ok(TarItem::Skip);
        }
        if rest.is_empty() {
            return Err("bare whiteout '.wh.' names no file".into());
        }
        if rest == b"." || rest == b".." {
            return Err("whiteout of '.' or '..'".into());
        }
        return Ok(TarItem::Whiteout(dir.join(rest)));
    }
    let kind = match et {
        tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
        tar::EntryType::Directory => Kind::Dir,
        tar::EntryType::Symlink => Kind::Symlink,
        tar::EntryType::Link => Kind::Hardlink,
        tar::EntryType::Char => Kind::Char,
        tar::EntryType::Block => Kind::Block,
        tar::EntryType::Fifo => Kind::Fifo,
        other => {
            return Err(EntryError::Refused(format!(
                "unsupported tar entry type {:?}",
                other.as_byte() as char
            )))
        }
    };
    if path.is_root() && kind != Kind::Dir {
        return Err("the root can only be a directory".into());
    }
    let mut e = Entry::new(path, kind);
    let h = entry.header();
    e.mode = h.mode().map_err(bad_header("mode"))? & 0o7777;
    e.uid = id_in_range("uid", h.uid().map_err(bad_header("uid"))?)?;
    e.gid = id_in_range("gid", h.gid().map_err(bad_header("gid"))?)?;
    let mtime = h.mtime().map_err(bad_header("mtime"))?;
    e.mtime = Mtime {
        sec: i64::try_from(mtime)
            .map_err(|_| EntryError::Refused(format!("mtime {mtime} is out of range")))?,
        nsec: None,
    };
    if kind == Kind::File {
        e.size = entry.size();
    }
    if matches!(kind, Kind::Char | Kind::Block) {
        let ma = h.device_major().ok().flatten().unwrap_or(0);
        let mi = h.device_minor().ok().flatten().unwrap_or(0);
        e.rdev = Some((ma, mi));
    }
    if matches!(kind, Kind::Symlink | Kind::Hardlink) {
        let target = entry
            .link_name_bytes()
            .ok_or("link without a target")?
            .into_owned();
        if target.is_empty() {
            return Err("link with an empty target".into());
        }
        if target.len() > MAX_LINK_TARGET {
            return Err(EntryError::Refused(format!(
                "link target of {} bytes is longer than the {MAX_LINK_TARGET} a Linux path can hold",
                target.len()
            )));
        }
        e.link = Some(if kind == Kind::Hardlink {
            normalize_path(&target)
                .map_err(EntryError::HardlinkTarget)?
                .as_bytes()
                .to_vec()
        } else {
            target
        });
    }
    if let Some(exts) = entry
        .pax_extensions()
        .map_err(bad_header("PAX extensions"))?
    {
        for ext in exts {
            let ext = ext.map_err(bad_header("a PAX record"))?;
            let key = ext.key_bytes();
            let val = ext.value_bytes();
            let text = || String::from_utf8_lossy(val).into_owned();
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                e.xattrs.insert(name.to_vec(), val.to_vec());
            } else if key == b"uid" || key == b"gid" {
                let what = if key == b"uid" { "uid" } else { "gid" };
                // Digits only: no sign, no fraction, no spaces.
                let id = Some(val)
                    .filter(|v| !v.is_empty() && v.iter().all(u8::is_ascii_digit))
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
                    .ok_or_else(|| {
                        EntryError::Refused(format!("PAX {what} {:?} is not a number", text()))
                    })?;
                let id = id_in_range(what, id)?;
                if what == "uid" {
                    e.uid = id;
                } else {
                    e.gid = id;
                }
            } else if key == b"mtime" {
                // Seconds, possibly negative, possibly with a fraction.
                e.mtime.sec = std::str::from_utf8(val)
                    .ok()
                    .and_then(|s| s.split('.').next()?.parse::<i64>().ok())
                    .ok_or_else(|| {
                        EntryError::Refused(format!("PAX mtime {:?} is not a time", text()))
                    })?;
            } else if key.starts_with(b"GNU.sparse.") {
                return Err(EntryError::Refused(
                    "sparse member (PAX GNU.sparse records): shipyard does not accept sparse files in layers"
                        .into(),
                ));
            }
        }
    }
    Ok(TarItem::Entry(e))
}

/// A header field tar could not parse, with tar's own complaint kept.
fn bad_header(field: &'static str) -> impl Fn(io::Error) -> EntryError {
    move |source| EntryError::Io {
        what: format!("reading the header's {field}"),
        source,
    }
}

/// Refuses ids Linux cannot represent: uid_t is 32 bits and
/// 4294967295 is `(uid_t)-1`, which chown reads as "leave unchanged".
/// Truncating instead would turn 4294967296 into root.
fn id_in_range(what: &str, id: u64) -> Result<u64, EntryError> {
    if id >= u32::MAX as u64 {
        return Err(EntryError::Refused(format!(
            "{what} {id} is out of range (a Linux id is below {})",
            u32::MAX
        )));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize() {
        assert_eq!(normalize_path(b"./a//b/./c/").unwrap().as_bytes(), b"a/b/c");
        assert_eq!(normalize_path(b"./").unwrap().as_bytes(), b"");
        assert!(normalize_path(b"/etc/passwd").is_err());
        assert!(normalize_path(b"a/../../b").is_err());
        assert!(normalize_path(b"..").is_err());
    }
}
