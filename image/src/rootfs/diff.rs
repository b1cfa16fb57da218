//! Tree vs manifest → ChangeSet: the entries of a minimal layer.
//!
//! What counts as a change: type, mode, uid, gid, link target, device
//! numbers, xattrs and file content. Content is hashed only when metadata
//! cannot decide: a regular file of the same size whose mtime differs (or
//! whose manifest carries no mtime to compare). A file whose content and
//! metadata match but whose mtime moved is *not* in the layer: the layer
//! would only repeat bytes the image already has. Directory mtimes are
//! ignored for the same reason (they move whenever a child does).

use super::changeset::{Change, ChangeSet, Stats};
use super::entry::{Entry, Kind, RelPath};
use super::manifest::Manifest;
use super::walk::{hash_file, Tree, WalkError};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Diff result with counts for the user.
pub struct Diff {
    /// What the layer must hold to turn `against` into the tree.
    pub changes: ChangeSet,
    /// Counts of the changes.
    pub stats: Stats,
    /// How many files had to be hashed to decide.
    pub hashed: usize,
}

/// Compares `tree` against `against`.
pub fn diff(tree: &Tree, against: &Manifest) -> Result<Diff, WalkError> {
    let cur = &tree.manifest;
    // Decide which same-metadata files need hashing, then hash them in
    // parallel.
    let to_hash: Vec<&Entry> = cur
        .entries
        .values()
        .filter(|e| e.kind == Kind::File && e.sha256.is_none())
        .filter(|e| match against.get(&e.path) {
            Some(old) => {
                old.kind == Kind::File
                    && e.same_metadata(old)
                    && e.size == old.size
                    && !e.mtime.same(&old.mtime)
            }
            None => false,
        })
        .collect();
    let hashes: BTreeMap<RelPath, [u8; 32]> = to_hash
        .par_iter()
        .map(|e| {
            let full = tree.root.join(e.path.to_path());
            hash_file(&full)
                .map(|h| (e.path.clone(), h))
                .map_err(|source| WalkError::Io { path: full, source })
        })
        .collect::<Result<_, _>>()?;

    let mut stats = Stats::default();
    let mut changed: BTreeSet<RelPath> = BTreeSet::new();
    for e in cur.entries.values() {
        match against.get(&e.path) {
            None => {
                stats.added += 1;
                changed.insert(e.path.clone());
            }
            Some(old) => {
                if entry_changed(e, old, hashes.get(&e.path)) {
                    stats.modified += 1;
                    changed.insert(e.path.clone());
                }
            }
        }
    }

    // Hardlink groups travel whole: if any name of a file changed, the
    // layer must carry the file and every name of it, or a lower layer's
    // stale copy would stay behind under the other names.
    let mut groups: BTreeMap<RelPath, Vec<RelPath>> = BTreeMap::new();
    for e in cur.entries.values().filter(|e| e.kind == Kind::Hardlink) {
        if let Some(t) = &e.link {
            groups
                .entry(RelPath::new(t.clone()))
                .or_default()
                .push(e.path.clone());
        }
    }
    for (first, others) in &groups {
        if changed.contains(first) || others.iter().any(|o| changed.contains(o)) {
            changed.insert(first.clone());
            changed.extend(others.iter().cloned());
        }
    }

    // Deletions: whiteout only the topmost deleted path; a directory whose
    // old children are all gone (and that has new ones, or lost several)
    // gets one opaque marker instead of a whiteout per child.
    let deleted: Vec<&RelPath> = against
        .entries
        .keys()
        .filter(|p| cur.get(p).is_none())
        .collect();
    let deleted_set: HashSet<&RelPath> = deleted.iter().copied().collect();
    let mut opaque: BTreeSet<RelPath> = BTreeSet::new();
    // Only a directory that lost a child can become opaque: looking at
    // the others would walk every subtree once per directory above it.
    let lost_a_child: BTreeSet<RelPath> = deleted.iter().map(|p| p.parent()).collect();
    for p in &lost_a_child {
        let Some(old) = against.get(p) else { continue };
        let Some(now) = cur.get(p) else { continue };
        if old.kind != Kind::Dir || now.kind != Kind::Dir {
            continue;
        }
        let mut old_children = 0;
        let mut gone = 0;
        for c in against.children_of(p).filter(|c| c.path.parent() == *p) {
            old_children += 1;
            if deleted_set.contains(&c.path) {
                gone += 1;
            }
        }
        let new_children = cur.children_of(p).filter(|c| c.path.parent() == *p).count();
        if gone > 0 && gone == old_children && (new_children > 0 || gone > 1) {
            opaque.insert(p.clone());
        }
    }
    let mut changes = ChangeSet::default();
    for p in &deleted {
        let parent = p.parent();
        let parent_gone = !parent.is_root() && deleted_set.contains(&parent);
        let parent_replaced =
            !parent.is_root() && cur.get(&parent).is_some_and(|e| e.kind != Kind::Dir);
        let under_replaced = ancestors(p).any(|a| {
            cur.get(&a).is_some_and(|e| {
                e.kind != Kind::Dir && against.get(&a).is_some_and(|o| o.kind == Kind::Dir)
            })
        });
        if parent_gone || parent_replaced || under_replaced || opaque.contains(&parent) {
            continue;
        }
        stats.deleted += 1;
        changes.changes.push(Change::Whiteout((*p).clone()));
    }
    for d in &opaque {
        stats.opaque += 1;
        stats.deleted += against
            .children_of(d)
            .filter(|c| c.path.parent() == *d)
            .count();
        changes.changes.push(Change::Opaque(d.clone()));
        // The marker hides lower contents; the directory itself must be in
        // the layer so the marker has a parent with the right metadata.
        changed.insert(d.clone());
        // Everything now in it must be in the layer too.
        changed.extend(cur.children_of(d).map(|c| c.path.clone()));
    }
    for p in &changed {
        if let Some(e) = cur.get(p) {
            changes.changes.push(Change::Put(e.clone()));
        }
    }
    // A hardlink whose first name is not in the layer would dangle: the
    // first name is always emitted with its group above, so check.
    changes.sort();
    Ok(Diff {
        changes,
        stats,
        hashed: hashes.len(),
    })
}

fn ancestors(p: &RelPath) -> impl Iterator<Item = RelPath> {
    let mut cur = p.parent();
    std::iter::from_fn(move || {
        if cur.is_root() {
            None
        } else {
            let out = cur.clone();
            cur = cur.parent();
            Some(out)
        }
    })
}

fn entry_changed(e: &Entry, old: &Entry, hash: Option<&[u8; 32]>) -> bool {
    if !e.same_metadata(old) {
        return true;
    }
    match e.kind {
        Kind::File => {
            if e.size != old.size {
                return true;
            }
            let h = e.sha256.as_ref().or(hash);
            match (h, &old.sha256) {
                (Some(a), Some(b)) => a != b,
                // Same size, same mtime, metadata equal: unchanged (the
                // rsync/umoci rule). No hash on the manifest side: we cannot
                // prove equality, so keep it unless mtimes agree.
                (Some(_), None) => !e.mtime.same(&old.mtime),
                (None, _) => !e.mtime.same(&old.mtime),
            }
        }
        _ => false,
    }
}
