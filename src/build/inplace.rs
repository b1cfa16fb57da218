//! Isolation none (kaniko's model): the container shipyard runs in is the
//! builder (`from = "host"`). Rules run in place, in the container's own
//! `/`, as the caller; what they changed is `/` walked after them and
//! diffed against a manifest of `/` taken before the first rule: the
//! seeds' "diff the builder rootfs against a manifest". Tapeouts select
//! from those changes, and resolve everything else (literal includes, the
//! ELF closure) in `/`.
//!
//! Both walks leave out, so that neither shipyard's own writes nor what
//! no image should hold count as changes:
//! - `/proc`, `/sys` and `/dev`: the kernel's views;
//! - `/tmp`: a rule's scratch space, as at every other level (where it is
//!   a fresh tmpfs that goes with the step);
//! - every mount point but `/`, and what is under it: pseudo filesystems
//!   (`/run` or `/dev/shm` where they are tmpfs, cgroups) and what the
//!   container runtime bound in (volumes, the CI checkout, secrets,
//!   `/etc/hosts`, `/etc/resolv.conf`): they are not the container's
//!   tree. A rule that writes there is not taped out unless a tapeout
//!   names the path literally;
//! - the build's state directory, the output layout, the cache (with the
//!   cache mounts' directories), every source (its directory on the host
//!   and its target), every cache mount's target, and `/run/secrets`.
//!
//! Rules are not cached at this level: there is no overlay upper dir that
//! holds what a rule changed, and nothing could put it back into the
//! container if it did. Tapeouts and image layers still are.

use shipyard_image::rootfs::entry::{Entry, Kind, RelPath};
use shipyard_image::rootfs::manifest::Manifest;
use shipyard_image::rootfs::walk::{walk_with, Hashing, Tree, WalkError, WalkOptions};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InPlaceError {
    #[error("walking / (isolation none)")]
    Walk(#[from] WalkError),
    #[error("{path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The paths a build at isolation none leaves out of its walks of `/`
/// (see the module's documentation): the kernel's trees, `/tmp`, every
/// mount point but `/`, and the build's own directories and sources.
pub fn skipped(own: &[&Path]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = ["/proc", "/sys", "/dev", "/tmp"]
        .iter()
        .map(PathBuf::from)
        .collect();
    if let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") {
        out.extend(mount_points(&text));
    }
    for p in own {
        let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        out.push(crate::tapeout::view::normalize(&abs));
        out.push(real(&abs));
    }
    out.retain(|p| p != Path::new("/"));
    out.sort();
    out.dedup();
    out
}

/// `p` with the symlinks of its existing part resolved: the path a walk
/// of `/` meets it at (a directory that does not exist yet, such as the
/// output layout, is resolved through its nearest existing parent).
fn real(p: &Path) -> PathBuf {
    let mut rest: Vec<OsString> = Vec::new();
    let mut at = p;
    loop {
        if let Ok(mut r) = std::fs::canonicalize(at) {
            r.extend(rest.iter().rev());
            return r;
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                at = parent;
            }
            _ => return crate::tapeout::view::normalize(p),
        }
    }
}

/// The mount points in a `/proc/self/mountinfo` text, but `/` (the fifth
/// field, with its octal escapes for space, tab, newline and backslash).
fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|f| PathBuf::from(OsString::from_vec(unescape(f))))
        .filter(|p| p != Path::new("/"))
        .collect()
}

fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |a, c| a * 8 + (c - b'0') as u32);
                out.push(v as u8);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

/// `/` as the builder of a build at isolation none.
pub struct InPlace {
    skip: Vec<PathBuf>,
    /// `/` before the first rule.
    before: Option<Manifest>,
    /// The manifest of what changed, written since the last rule ran.
    current: Option<PathBuf>,
    written: usize,
}

impl InPlace {
    pub fn new(skip: Vec<PathBuf>) -> Self {
        Self {
            skip,
            before: None,
            current: None,
            written: 0,
        }
    }

    fn walk(&self) -> Result<Tree, WalkError> {
        let mut o = WalkOptions::new(Hashing::None);
        o.skip = self.skip.clone();
        o.live = true;
        walk_with(Path::new("/"), &o)
    }

    /// Takes the manifest of `/` that later walks are diffed against:
    /// before the first rule runs.
    pub fn snapshot(&mut self) -> Result<(), InPlaceError> {
        let started = std::time::Instant::now();
        tracing::debug!(
            "isolation none: left out of the walks of /: {:?}",
            self.skip
        );
        let tree = self.walk()?;
        tracing::info!(
            "isolation none: manifest of / taken ({} entries, {:.2} s)",
            tree.manifest.len(),
            started.elapsed().as_secs_f64()
        );
        self.before = Some(tree.manifest);
        Ok(())
    }

    /// A rule ran: `/` must be walked again.
    pub fn rule_ran(&mut self) {
        self.current = None;
    }

    /// A manifest of what the rules changed in `/` so far (added or
    /// modified entries; what they deleted is not there), written under
    /// `dir` for the tapeout: walked again only after a rule ran.
    pub fn changes(&mut self, dir: &Path) -> Result<PathBuf, InPlaceError> {
        if let Some(p) = &self.current {
            return Ok(p.clone());
        }
        if self.before.is_none() {
            self.snapshot()?;
        }
        let started = std::time::Instant::now();
        let tree = self.walk()?;
        let walked = started.elapsed().as_secs_f64();
        let empty = Manifest::default();
        let changed = changed_since(&tree.manifest, self.before.as_ref().unwrap_or(&empty));
        tracing::info!(
            "isolation none: / walked again ({walked:.2} s), {} entries changed ({:.2} s)",
            changed.len(),
            started.elapsed().as_secs_f64()
        );
        self.written += 1;
        let path = dir.join(format!("in-place-changes.{}", self.written));
        let f = std::fs::File::create(&path).map_err(|source| InPlaceError::Write {
            path: path.clone(),
            source,
        })?;
        changed
            .write_to(std::io::BufWriter::new(f))
            .map_err(|source| InPlaceError::Write {
                path: path.clone(),
                source,
            })?;
        self.current = Some(path.clone());
        Ok(path)
    }
}

/// What is new or changed in `now` since `before`, by metadata alone
/// (`before` holds no content digests, and reading what a walk of a live
/// tree listed may fail): kind, mode, owner, link target, device, xattrs,
/// and a file's size and mtime. A directory's mtime moves with its
/// children: not a change. When one name of a hard-linked file changed,
/// every name is in (a tapeout taking one takes the file). Both manifests
/// are in tree order, so they are merged in one pass: `/` may hold
/// hundreds of thousands of entries.
fn changed_since(now: &Manifest, before: &Manifest) -> Manifest {
    let mut old = before.entries.iter().peekable();
    let mut changed: std::collections::BTreeSet<&RelPath> = Default::default();
    let mut groups: std::collections::BTreeMap<RelPath, Vec<&RelPath>> = Default::default();
    for (p, e) in &now.entries {
        while old.next_if(|(q, _)| *q < p).is_some() {}
        let differs = match old.peek() {
            Some((q, o)) if *q == p => entry_differs(e, o),
            _ => true,
        };
        if differs {
            changed.insert(p);
        }
        if e.kind == Kind::Hardlink {
            if let Some(t) = &e.link {
                groups.entry(RelPath::new(t.clone())).or_default().push(p);
            }
        }
    }
    let mut out = Manifest::default();
    for (first, others) in &groups {
        if changed.contains(first) || others.iter().any(|o| changed.contains(o)) {
            if let Some(e) = now.get(first) {
                out.insert(e.clone());
            }
            for o in others {
                changed.insert(o);
            }
        }
    }
    for p in changed {
        if let Some(e) = now.get(p) {
            out.insert(e.clone());
        }
    }
    out
}

fn entry_differs(e: &Entry, old: &Entry) -> bool {
    !e.same_metadata(old)
        || (e.kind == Kind::File && (e.size != old.size || !e.mtime.same(&old.mtime)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_read_with_their_escapes_and_root_is_not_one() {
        let text = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:5 / /proc rw,nosuid - proc proc rw
24 22 0:21 / /run/my\\040volume rw - tmpfs tmpfs rw
25 22 8:1 /var/lib/docker/containers/x/hosts /etc/hosts rw - ext4 /dev/sda1 rw
26 22 8:1 / /odd\\134name\\011tab rw - ext4 /dev/sda1 rw
";
        assert_eq!(
            mount_points(text),
            vec![
                PathBuf::from("/proc"),
                PathBuf::from("/run/my volume"),
                PathBuf::from("/etc/hosts"),
                PathBuf::from("/odd\\name\ttab"),
            ]
        );
    }

    #[test]
    fn own_paths_are_skipped_as_the_walk_meets_them() {
        let t = tempfile::tempdir().unwrap();
        let real_dir = t.path().join("real");
        std::fs::create_dir(&real_dir).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&real_dir, &link).unwrap();
        // Not there yet (an output layout made at the end of the build).
        let later = link.join("out/layout");
        let s = skipped(&[&later]);
        let real_t = std::fs::canonicalize(t.path()).unwrap();
        assert!(s.contains(&real_t.join("real/out/layout")), "{s:?}");
        assert!(s.contains(&PathBuf::from("/proc")));
        assert!(s.contains(&PathBuf::from("/tmp")));
        assert!(!s.contains(&PathBuf::from("/")));
    }

    fn entry(path: &str, kind: Kind, size: u64, mtime: i64, mode: u32) -> Entry {
        let mut e = Entry::new(RelPath::new(path.as_bytes().to_vec()), kind);
        e.size = size;
        e.mode = mode;
        e.mtime = shipyard_image::rootfs::entry::Mtime {
            sec: mtime,
            nsec: Some(0),
        };
        e
    }

    #[test]
    fn what_changed_is_what_is_new_or_modified_by_metadata() {
        let mut before = Manifest::default();
        let mut now = Manifest::default();
        for m in [&mut before, &mut now] {
            m.insert(entry("keep", Kind::File, 3, 100, 0o644));
        }
        before.insert(entry("d", Kind::Dir, 0, 100, 0o755));
        now.insert(entry("d", Kind::Dir, 0, 200, 0o755));
        before.insert(entry("d/gone", Kind::File, 1, 100, 0o644));
        before.insert(entry("d/grown", Kind::File, 1, 100, 0o644));
        now.insert(entry("d/grown", Kind::File, 2, 100, 0o644));
        before.insert(entry("d/touched", Kind::File, 1, 100, 0o644));
        now.insert(entry("d/touched", Kind::File, 1, 150, 0o644));
        before.insert(entry("d/chmod", Kind::File, 1, 100, 0o644));
        now.insert(entry("d/chmod", Kind::File, 1, 100, 0o600));
        now.insert(entry("d/new", Kind::File, 1, 100, 0o644));
        // A hard link: the second name changed (it is new), so the first
        // comes too.
        before.insert(entry("a-first", Kind::File, 5, 100, 0o644));
        now.insert(entry("a-first", Kind::File, 5, 100, 0o644));
        let mut link = entry("z-second", Kind::Hardlink, 0, 100, 0o644);
        link.link = Some(b"a-first".to_vec());
        now.insert(link);
        let got: Vec<String> = changed_since(&now, &before)
            .entries
            .keys()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            got,
            [
                "/a-first",
                "/d/chmod",
                "/d/grown",
                "/d/new",
                "/d/touched",
                "/z-second"
            ]
        );
    }
}
