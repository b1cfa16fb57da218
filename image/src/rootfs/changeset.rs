//! A ChangeSet: what one layer says. Produced by the diff, consumed by the
//! layer generator.

use super::entry::{Entry, RelPath};
use std::cmp::Ordering;

#[derive(Clone, Debug, PartialEq, Eq)]
/// One member of a layer.
pub enum Change {
    /// Add or replace this entry (content read from the tree).
    Put(Entry),
    /// Delete this path (and everything beneath it).
    Whiteout(RelPath),
    /// Hide everything the lower layers had in this directory.
    Opaque(RelPath),
}

impl Change {
    /// The member name in the layer tar.
    pub fn tar_path(&self) -> RelPath {
        match self {
            Change::Put(e) => e.path.clone(),
            Change::Whiteout(p) => {
                let mut n = b".wh.".to_vec();
                n.extend_from_slice(p.name());
                p.parent().join(&n)
            }
            Change::Opaque(d) => d.join(b".wh..wh..opq"),
        }
    }
}

#[derive(Clone, Debug, Default)]
/// The members of one layer, in layer order once sorted.
pub struct ChangeSet {
    /// The changes, sorted by [`ChangeSet::sort`] before a layer is written.
    pub changes: Vec<Change>,
}

/// Counts for the user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Paths the lower layers did not have.
    pub added: usize,
    /// Paths whose content or metadata changed.
    pub modified: usize,
    /// Paths removed (whiteouts).
    pub deleted: usize,
    /// Directories whose lower contents are hidden.
    pub opaque: usize,
}

impl ChangeSet {
    /// Sorts into layer order: tree order, except that within a directory
    /// the opaque marker comes first and whiteouts before other names, as
    /// the OCI spec recommends, so extractors see deletions before
    /// additions.
    pub fn sort(&mut self) {
        self.changes
            .sort_by_cached_key(|c| LayerKey(c.tar_path().as_bytes().to_vec()));
    }

    /// Whether the layer would be empty.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// How many members the layer holds.
    pub fn len(&self) -> usize {
        self.changes.len()
    }
}

#[derive(PartialEq, Eq)]
struct LayerKey(Vec<u8>);

fn class(c: &[u8]) -> u8 {
    if c == b".wh..wh..opq" {
        0
    } else if c.starts_with(b".wh.") {
        1
    } else {
        2
    }
}

impl Ord for LayerKey {
    fn cmp(&self, other: &Self) -> Ordering {
        let a = self.0.split(|b| *b == b'/').filter(|c| !c.is_empty());
        let b = other.0.split(|b| *b == b'/').filter(|c| !c.is_empty());
        a.map(|c| (class(c), c)).cmp(b.map(|c| (class(c), c)))
    }
}

impl PartialOrd for LayerKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
