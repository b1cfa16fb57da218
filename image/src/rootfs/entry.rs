//! One filesystem object, as shipyard compares and archives it.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

/// A path relative to the root of a tree or image, without a leading or
/// trailing `/`, as raw bytes (any byte string but NUL is a valid name).
///
/// Ordered component by component, which is the order of a depth-first walk
/// with sorted children: every directory comes before its contents, so a tar
/// written in this order can be extracted in one pass.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// Wraps bytes that are already normalized (see
    /// [`crate::layer::read::normalize_path`] for untrusted input).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The path's bytes (no leading `/`; Linux paths need not be UTF-8).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether this is the root itself (the empty path).
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path's components, in order.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|b| *b == b'/').filter(|c| !c.is_empty())
    }

    /// The parent directory (the root's parent is the root).
    pub fn parent(&self) -> RelPath {
        match self.0.iter().rposition(|b| *b == b'/') {
            Some(i) => RelPath(self.0[..i].to_vec()),
            None => RelPath::default(),
        }
    }

    /// The last component.
    pub fn name(&self) -> &[u8] {
        match self.0.iter().rposition(|b| *b == b'/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// `name` beneath this path.
    pub fn join(&self, name: &[u8]) -> RelPath {
        if self.0.is_empty() {
            RelPath(name.to_vec())
        } else {
            let mut v = self.0.clone();
            v.push(b'/');
            v.extend_from_slice(name);
            RelPath(v)
        }
    }

    /// Whether `self` is `other` or lies beneath it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        other.0.is_empty()
            || (self.0.starts_with(&other.0)
                && (self.0.len() == other.0.len() || self.0[other.0.len()] == b'/'))
    }

    /// As an OS path relative to a root directory.
    pub fn to_path(&self) -> &std::path::Path {
        use std::os::unix::ffi::OsStrExt;
        std::path::Path::new(std::ffi::OsStr::from_bytes(&self.0))
    }
}

impl Ord for RelPath {
    fn cmp(&self, other: &Self) -> Ordering {
        self.components().cmp(other.components())
    }
}

impl PartialOrd for RelPath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", format!("/{}", String::from_utf8_lossy(&self.0)))
    }
}

/// The kind of a filesystem object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link; `link` holds its target.
    Symlink,
    /// A second name of a file that appears earlier; `link` names it.
    Hardlink,
    /// A character device; `rdev` holds its numbers.
    Char,
    /// A block device; `rdev` holds its numbers.
    Block,
    /// A named pipe.
    Fifo,
}

impl Kind {
    /// The manifest's word for the kind (`file`, `dir`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Hardlink => "hardlink",
            Kind::Char => "char",
            Kind::Block => "block",
            Kind::Fifo => "fifo",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "file" => Kind::File,
            "dir" => Kind::Dir,
            "symlink" => Kind::Symlink,
            "hardlink" => Kind::Hardlink,
            "char" => Kind::Char,
            "block" => Kind::Block,
            "fifo" => Kind::Fifo,
            _ => return None,
        })
    }
}

/// Modification time: seconds, plus nanoseconds when the source had them
/// (a directory walk does, a tar header usually does not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Mtime {
    /// Seconds since the epoch (negative before it).
    pub sec: i64,
    /// Nanoseconds, when the source recorded them.
    pub nsec: Option<u32>,
}

impl Mtime {
    /// Equal as far as both sides know: nanoseconds count only when both
    /// sides recorded them.
    pub fn same(&self, other: &Mtime) -> bool {
        self.sec == other.sec
            && match (self.nsec, other.nsec) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// One filesystem object: what a manifest line says and a tar header holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Where the object is, relative to the root.
    pub path: RelPath,
    /// What it is.
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    /// The owner, as stored in the image (not mapped to this host).
    pub uid: u64,
    /// The group, as stored in the image.
    pub gid: u64,
    /// Content size for regular files, 0 otherwise.
    pub size: u64,
    /// The modification time.
    pub mtime: Mtime,
    /// Symlink target (as stored), or for hardlinks the path they link to.
    pub link: Option<Vec<u8>>,
    /// Device numbers (major, minor) of char and block devices.
    pub rdev: Option<(u32, u32)>,
    /// Extended attributes by name, including `security.capability`.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// sha256 of a regular file's content, when known.
    pub sha256: Option<[u8; 32]>,
}

impl Entry {
    /// An entry with mode 0, owner root and no content: the caller fills in
    /// what its source says.
    pub fn new(path: RelPath, kind: Kind) -> Self {
        Self {
            path,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: Mtime::default(),
            link: None,
            rdev: None,
            xattrs: BTreeMap::new(),
            sha256: None,
        }
    }

    /// Metadata equality that ignores content and mtime: what must match for
    /// two entries to be the same object, before looking at the bytes.
    pub fn same_metadata(&self, other: &Entry) -> bool {
        self.kind == other.kind
            && self.mode == other.mode
            && self.uid == other.uid
            && self.gid == other.gid
            && self.link == other.link
            && self.rdev == other.rdev
            && self.xattrs == other.xattrs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_order_puts_directories_before_their_contents() {
        let mut v: Vec<RelPath> = ["a.b", "a/z", "a", "a-b", "b"]
            .iter()
            .map(|s| RelPath::new(s.as_bytes()))
            .collect();
        v.sort();
        let s: Vec<String> = v.iter().map(|p| p.to_string()).collect();
        assert_eq!(s, ["/a", "/a/z", "/a-b", "/a.b", "/b"]);
    }

    #[test]
    fn parent_name_and_prefix() {
        let p = RelPath::new(b"usr/lib/x".to_vec());
        assert_eq!(p.parent(), RelPath::new(b"usr/lib".to_vec()));
        assert_eq!(p.name(), b"x");
        assert!(p.starts_with(&RelPath::new(b"usr".to_vec())));
        assert!(!p.starts_with(&RelPath::new(b"us".to_vec())));
        assert!(p.starts_with(&RelPath::default()));
    }
}
