//! Paths resolved inside a root, the way containerd and umoci apply layers
//! (and `openat2(RESOLVE_IN_ROOT)` resolves): every symlink in a member's
//! parent directories is followed, an absolute target starts again at the
//! root and `..` stops at the root, so `bin/tool` with `bin -> usr/bin`
//! lands in `usr/bin/tool` and `lib/x.so` with `lib -> /usr/lib` in
//! `usr/lib/x.so`, however the link is spelled. The last component is
//! never followed: a member replaces whatever is at its own name.
//!
//! The walk is written once over a `Tree`, so the extractor (on disk) and
//! the image-manifest reader (on a manifest) cannot disagree about where
//! a member lands. It yields the resolved path, which is what the
//! manifest records. On disk, each step opens one component that the
//! kernel refuses to follow (`RESOLVE_NO_SYMLINKS`), so a tree changing
//! under the walk makes it fail, never step outside the root.

use crate::rootfs::entry::{Kind, RelPath};
use crate::rootfs::manifest::Manifest;

/// Symlinks followed in one resolution before giving up, as Linux does
/// (MAXSYMLINKS).
pub const MAX_LINKS: usize = 40;

/// What a name in a directory is, without following it.
pub(crate) enum Node {
    /// Nothing by that name.
    Missing,
    /// A directory, to enter.
    Dir,
    /// A symlink and its target, to follow.
    Symlink(Vec<u8>),
    /// Anything that cannot hold entries (a file, a device...).
    Other,
}

/// Why a path has no place inside the root: the walk's own refusals.
/// The tree walked adds its own failures (a system call on disk, see
/// [`super::EntryError`]).
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// More than [`MAX_LINKS`] symlinks on the way: a loop, most likely.
    #[error("{path}: too many levels of symlinks (more than {MAX_LINKS}; a symlink loop?)")]
    TooManyLinks {
        /// The path being resolved.
        path: RelPath,
    },
    /// A component on the way is neither a directory nor a symlink.
    #[error("{0} is not a directory")]
    NotADirectory(RelPath),
}

/// A tree a path can be resolved in.
pub(crate) trait Tree {
    /// A handle on a directory already reached.
    type Dir;
    /// What a step can fail with; the walk's own refusals convert into it.
    type Error: From<ResolveError>;
    /// A handle on the root, where the walk starts and absolute symlinks
    /// start again.
    fn root(&mut self) -> Result<Self::Dir, Self::Error>;
    /// What `name` in `dir` (which is at `at`) is.
    fn lookup(&mut self, dir: &Self::Dir, at: &RelPath, name: &[u8]) -> Result<Node, Self::Error>;
    /// Opens the directory `name` in `dir`, creating it first when
    /// `create` (it was found missing).
    fn enter(
        &mut self,
        dir: &Self::Dir,
        at: &RelPath,
        name: &[u8],
        create: bool,
    ) -> Result<Self::Dir, Self::Error>;
}

/// Resolves the directory `path` in `tree`, following every symlink on
/// the way, clamped at the root. Missing directories are created when
/// `create`, otherwise the answer is `None`. Returns the resolved path
/// (no symlink in it) and a handle on it.
pub(crate) fn resolve_dir<T: Tree>(
    tree: &mut T,
    path: &RelPath,
    create: bool,
) -> Result<Option<(RelPath, T::Dir)>, T::Error> {
    let root = tree.root()?;
    let mut dirs = vec![];
    let mut at = RelPath::default();
    // Components still to walk, the next one last.
    let mut todo: Vec<Vec<u8>> = path.components().map(<[u8]>::to_vec).collect();
    todo.reverse();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        match c.as_slice() {
            b"" | b"." => continue,
            b".." => {
                if dirs.pop().is_some() {
                    at = at.parent();
                }
                continue;
            }
            _ => {}
        }
        let dir = dirs.last().unwrap_or(&root);
        match tree.lookup(dir, &at, &c)? {
            Node::Symlink(target) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(ResolveError::TooManyLinks { path: path.clone() }.into());
                }
                if target.starts_with(b"/") {
                    dirs.clear();
                    at = RelPath::default();
                }
                todo.extend(target.split(|b| *b == b'/').rev().map(<[u8]>::to_vec));
            }
            Node::Dir => {
                let next = tree.enter(dir, &at, &c, false)?;
                dirs.push(next);
                at = at.join(&c);
            }
            Node::Missing if create => {
                let next = tree.enter(dir, &at, &c, true)?;
                dirs.push(next);
                at = at.join(&c);
            }
            Node::Missing => return Ok(None),
            Node::Other => return Err(ResolveError::NotADirectory(at.join(&c)).into()),
        }
    }
    Ok(Some((at, dirs.pop().unwrap_or(root))))
}

/// Where a member named `path` lands: its parent resolved (missing
/// directories counted as created), its own name kept.
pub(crate) fn resolve_member<T: Tree>(tree: &mut T, path: &RelPath) -> Result<RelPath, T::Error> {
    let parent = path.parent();
    match resolve_dir(tree, &parent, true)? {
        Some((p, _)) => Ok(p.join(path.name())),
        None => Ok(path.clone()),
    }
}

/// A manifest as a tree: what an image holds, read without unpacking.
/// Missing directories are never created; the caller adds them.
pub(crate) struct ManifestTree<'a>(pub &'a Manifest);

impl Tree for ManifestTree<'_> {
    type Dir = ();
    type Error = ResolveError;
    fn root(&mut self) -> Result<(), ResolveError> {
        Ok(())
    }
    fn lookup(&mut self, _: &(), at: &RelPath, name: &[u8]) -> Result<Node, ResolveError> {
        Ok(match self.0.get(&at.join(name)) {
            None => Node::Missing,
            Some(e) => match e.kind {
                Kind::Dir => Node::Dir,
                Kind::Symlink => Node::Symlink(e.link.clone().unwrap_or_default()),
                _ => Node::Other,
            },
        })
    }
    fn enter(&mut self, _: &(), _: &RelPath, _: &[u8], _: bool) -> Result<(), ResolveError> {
        Ok(())
    }
}

/// [`resolve_member`] in a manifest, with the common case (the parent is
/// a directory the manifest holds, so no symlink is above it: a manifest
/// never holds entries beneath a symlink) answered by one lookup.
pub(crate) fn resolve_in_manifest(m: &Manifest, path: &RelPath) -> Result<RelPath, ResolveError> {
    let parent = path.parent();
    if parent.is_root() || m.get(&parent).is_some_and(|e| e.kind == Kind::Dir) {
        return Ok(path.clone());
    }
    resolve_member(&mut ManifestTree(m), path)
}

/// [`resolve_dir`] of a whole directory path in a manifest.
pub(crate) fn resolve_dir_in_manifest(
    m: &Manifest,
    dir: &RelPath,
) -> Result<RelPath, ResolveError> {
    if dir.is_root() || m.get(dir).is_some_and(|e| e.kind == Kind::Dir) {
        return Ok(dir.clone());
    }
    Ok(resolve_dir(&mut ManifestTree(m), dir, true)?
        .map(|(p, _)| p)
        .unwrap_or_else(|| dir.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::entry::Entry;

    fn m(items: &[(&str, Option<&str>)]) -> Manifest {
        let mut m = Manifest::default();
        for (p, link) in items {
            let mut e = Entry::new(
                RelPath::new(p.as_bytes().to_vec()),
                if link.is_some() {
                    Kind::Symlink
                } else {
                    Kind::Dir
                },
            );
            e.link = link.map(|l| l.as_bytes().to_vec());
            m.insert(e);
        }
        m
    }

    fn r(m: &Manifest, p: &str) -> Result<String, String> {
        resolve_in_manifest(m, &RelPath::new(p.as_bytes().to_vec()))
            .map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn parents_resolve_inside_the_root() {
        let t = m(&[
            ("usr", None),
            ("usr/bin", None),
            ("usr/lib", None),
            ("bin", Some("usr/bin")),
            ("lib", Some("/usr/lib")),
            ("up", Some("../../..")),
            ("abs", Some("/../../etc")),
            ("dangling", Some("nowhere/deep")),
            ("loop1", Some("loop2")),
            ("loop2", Some("loop1")),
        ]);
        assert_eq!(r(&t, "bin/tool").unwrap(), "usr/bin/tool");
        assert_eq!(r(&t, "lib/x.so").unwrap(), "usr/lib/x.so");
        assert_eq!(r(&t, "up/etc/passwd").unwrap(), "etc/passwd");
        assert_eq!(r(&t, "up/up/bin/sh").unwrap(), "usr/bin/sh");
        assert_eq!(r(&t, "abs/shadow").unwrap(), "etc/shadow");
        assert_eq!(r(&t, "dangling/f").unwrap(), "nowhere/deep/f");
        // The last component is never followed.
        assert_eq!(r(&t, "bin").unwrap(), "bin");
        assert!(r(&t, "loop1/x").unwrap_err().contains("too many levels"));
    }
}
