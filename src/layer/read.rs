//! Reading tar headers from an untrusted layer: one place that turns a tar
//! member into an [`Entry`], a whiteout or an opaque marker, normalizing and
//! validating paths. Both the extractor and the image-manifest reader use
//! it, so they cannot disagree about what a layer means.

use crate::rootfs::entry::{Entry, Kind, Mtime, RelPath};
use std::io::Read;

/// What one tar member says.
#[derive(Debug, Clone)]
pub enum TarItem {
    Entry(Entry),
    /// `.wh.NAME`: delete this path from lower layers.
    Whiteout(RelPath),
    /// `.wh..wh..opq`: hide the lower layers' contents of this directory.
    Opaque(RelPath),
    /// Metadata members with no effect on the tree (PAX global headers, aufs
    /// `.wh..wh.*` bookkeeping).
    Skip,
}

/// Turns an archive path into a [`RelPath`], rejecting anything that could
/// name a location outside the root: absolute paths and `..` components.
/// `./` prefixes, repeated and trailing slashes are dropped.
pub fn normalize_path(raw: &[u8]) -> Result<RelPath, String> {
    if raw.starts_with(b"/") {
        return Err("absolute path".into());
    }
    if raw.contains(&0) {
        return Err("path contains a NUL byte".into());
    }
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => continue,
            b".." => return Err("path contains '..'".into()),
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
pub fn classify<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<TarItem, String> {
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
            return Err(format!(
                "unsupported tar entry type {:?}",
                other.as_byte() as char
            ))
        }
    };
    if path.is_root() && kind != Kind::Dir {
        return Err("the root can only be a directory".into());
    }
    let mut e = Entry::new(path, kind);
    let h = entry.header();
    e.mode = h.mode().map_err(|x| x.to_string())? & 0o7777;
    e.uid = h.uid().map_err(|x| x.to_string())?;
    e.gid = h.gid().map_err(|x| x.to_string())?;
    e.mtime = Mtime {
        sec: h.mtime().map_err(|x| x.to_string())? as i64,
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
        e.link = Some(if kind == Kind::Hardlink {
            normalize_path(&target)
                .map_err(|m| format!("hardlink target escapes the root ({m})"))?
                .as_bytes()
                .to_vec()
        } else {
            target
        });
    }
    if let Some(exts) = entry.pax_extensions().map_err(|x| x.to_string())? {
        for ext in exts {
            let ext = ext.map_err(|x| x.to_string())?;
            let key = ext.key_bytes();
            let val = ext.value_bytes();
            let num = || {
                std::str::from_utf8(val)
                    .ok()
                    .and_then(|s| s.split('.').next()?.parse::<i64>().ok())
            };
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                e.xattrs.insert(name.to_vec(), val.to_vec());
            } else if key == b"uid" {
                e.uid = num().ok_or("bad PAX uid")? as u64;
            } else if key == b"gid" {
                e.gid = num().ok_or("bad PAX gid")? as u64;
            } else if key == b"mtime" {
                e.mtime.sec = num().ok_or("bad PAX mtime")?;
            }
        }
    }
    Ok(TarItem::Entry(e))
}

/// For a symlink at `link_path` pointing at the relative `target`, whether
/// resolving it lexically climbs above the root. Absolute targets are
/// resolved against the image root by every runtime, so they never escape.
pub fn symlink_escapes(link_path: &RelPath, target: &[u8]) -> bool {
    if target.starts_with(b"/") {
        return false;
    }
    let mut depth = link_path.parent().components().count() as i64;
    for c in target.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
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

    #[test]
    fn symlink_escape() {
        let p = RelPath::new(b"usr/lib/x".to_vec());
        assert!(!symlink_escapes(&p, b"../../bin/sh"));
        assert!(symlink_escapes(&p, b"../../../etc/passwd"));
        assert!(!symlink_escapes(&p, b"/etc/passwd"));
        assert!(symlink_escapes(&RelPath::new(b"x".to_vec()), b".."));
    }
}
