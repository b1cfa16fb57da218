//! The builder as tapeout sees it after the steps have exited: the step's
//! changes on top of the base, resolved without mounting anything.

use crate::rootfs::manifest::Manifest;
use crate::sandbox::spec::SubIds;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// Where builder paths live on the host.
pub struct BuilderView {
    /// The step's changes (overlay upper dir, or the host builder's root).
    pub changes: PathBuf,
    /// Read-only trees under it (a base tree), topmost first.
    pub lowers: Vec<PathBuf>,
    /// For the `host` builder: these absolute paths are the host's own.
    pub host_dirs: Vec<PathBuf>,
    /// Ownership records of the lowers (rootless unpacks).
    records: Vec<Option<Manifest>>,
    subids: Option<SubIds>,
    me: (u32, u32),
    real_root: bool,
    /// The builder ran on a copy of its base (no overlay): the changes dir
    /// holds the whole tree, and `changed` what differs from the base.
    copy_mode: bool,
    changed: Option<std::collections::HashSet<PathBuf>>,
    /// Running inside the builder's user namespace (see the sandbox's
    /// tapeout action): ids on disk are already the builder's ids.
    inside_ns: bool,
}

impl BuilderView {
    pub fn new(
        changes: PathBuf,
        lowers: Vec<PathBuf>,
        host_dirs: Vec<PathBuf>,
        subids: Option<SubIds>,
    ) -> Self {
        let records = lowers
            .iter()
            .map(|l| {
                let rec = crate::rootfs::walk::ownership_record_path(l);
                std::fs::File::open(&rec).ok().and_then(|f| {
                    Manifest::parse(std::io::BufReader::new(f), &rec.display().to_string()).ok()
                })
            })
            .collect();
        Self {
            changes,
            lowers,
            host_dirs,
            records,
            subids,
            me: (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
            real_root: nix::unistd::geteuid().is_root(),
            copy_mode: false,
            changed: None,
            inside_ns: false,
        }
    }

    /// See [`BuilderView::inside_ns`].
    pub fn set_inside_namespace(&mut self) {
        self.inside_ns = true;
    }

    /// After the builder ran on a copy of its base (see the sandbox's copy
    /// fallback), what it changed is the builder tree diffed against the
    /// base: compute that, and stop looking into the base.
    pub fn use_copy(&mut self) -> Result<(), crate::rootfs::walk::WalkError> {
        use crate::rootfs::walk::{walk, Hashing};
        let tree = walk(&self.changes, Hashing::None)?;
        let mut base = crate::rootfs::manifest::Manifest::default();
        for l in self.lowers.iter().rev() {
            for (_, e) in walk(l, Hashing::None)?.manifest.entries {
                base.insert(e);
            }
        }
        let d = crate::rootfs::diff::diff(&tree, &base)?;
        let mut changed = std::collections::HashSet::new();
        for c in d.changes.changes {
            if let crate::rootfs::changeset::Change::Put(e) = c {
                changed.insert(Path::new("/").join(e.path.to_path()));
            }
        }
        self.changed = Some(changed);
        self.copy_mode = true;
        Ok(())
    }

    /// Whether a path of the changes dir is a change (always, with an
    /// overlay; in copy mode, if it differs from the base).
    pub fn is_change(&self, p: &Path) -> bool {
        self.changed.as_ref().is_none_or(|c| c.contains(p))
    }

    /// The host path of builder path `p` (absolute, normalized), or `None`
    /// if it does not exist or was deleted by a step. Symlinks are not
    /// followed.
    pub fn locate(&self, p: &Path) -> Option<Located> {
        let rel = p.strip_prefix("/").unwrap_or(p);
        let in_changes = self.changes.join(rel);
        if let Ok(m) = std::fs::symlink_metadata(&in_changes) {
            // An overlay whiteout: a 0/0 character device.
            if m.file_type().is_char_device() && m.rdev() == 0 {
                return None;
            }
            if !(m.is_dir() && self.is_mountpoint_only(rel, &m)) {
                return Some(Located {
                    host: in_changes,
                    layer: Layer::Changes,
                });
            }
        }
        // A whited-out ancestor, or an opaque one (a directory the step
        // replaced), hides the lowers.
        let mut anc = PathBuf::new();
        for c in rel.components() {
            anc.push(c);
            let here = self.changes.join(&anc);
            if let Ok(m) = std::fs::symlink_metadata(&here) {
                if m.file_type().is_char_device() && m.rdev() == 0 {
                    return None;
                }
                if anc != rel && m.is_dir() && is_opaque(&here) {
                    return None;
                }
            }
        }
        if self.copy_mode {
            return None;
        }
        for (i, l) in self.lowers.iter().enumerate() {
            let h = l.join(rel);
            if std::fs::symlink_metadata(&h).is_ok() {
                return Some(Located {
                    host: h,
                    layer: Layer::Lower(i),
                });
            }
        }
        if self.host_dirs.iter().any(|d| p.starts_with(d)) {
            let h = PathBuf::from(p);
            if std::fs::symlink_metadata(&h).is_ok() {
                return Some(Located {
                    host: h,
                    layer: Layer::Host,
                });
            }
        }
        None
    }

    /// Every path at or under directory `p` in the merged view, sorted.
    pub fn list_tree(&self, p: &Path) -> Vec<PathBuf> {
        let rel = p.strip_prefix("/").unwrap_or(p);
        let mut roots: Vec<PathBuf> = vec![self.changes.join(rel)];
        roots.extend(self.lowers.iter().map(|l| l.join(rel)));
        if self.host_dirs.iter().any(|d| p.starts_with(d)) {
            roots.push(p.to_path_buf());
        }
        let mut out = std::collections::BTreeSet::new();
        for r in roots {
            for e in walkdir::WalkDir::new(&r).into_iter().filter_map(|e| e.ok()) {
                let sub = p.join(e.path().strip_prefix(&r).unwrap_or(Path::new("")));
                let sub = normalize(&sub);
                if !out.contains(&sub) && self.locate(&sub).is_some() {
                    out.insert(sub);
                }
            }
        }
        out.into_iter().collect()
    }

    /// The host builder's mountpoints are empty dirs in the changes dir;
    /// the content is the host's.
    fn is_mountpoint_only(&self, rel: &Path, m: &std::fs::Metadata) -> bool {
        m.is_dir()
            && self
                .host_dirs
                .iter()
                .any(|d| d.strip_prefix("/").is_ok_and(|d| d == rel))
    }

    /// The owner a located entry has inside the builder (and so in the
    /// image): host ids mapped back through the step's user namespace.
    pub fn owner(&self, p: &Path, loc: &Located, md: &std::fs::Metadata) -> (u32, u32) {
        if let Layer::Lower(i) = loc.layer {
            if let Some(rec) = &self.records[i] {
                let rel = crate::rootfs::entry::RelPath::new(
                    p.strip_prefix("/")
                        .unwrap_or(p)
                        .as_os_str()
                        .as_encoded_bytes()
                        .to_vec(),
                );
                if let Some(e) = rec.get(&rel) {
                    if md.uid() == self.me.0 {
                        return (e.uid as u32, e.gid as u32);
                    }
                }
            }
        }
        (
            self.map_id(md.uid(), self.me.0, true),
            self.map_id(md.gid(), self.me.1, false),
        )
    }

    fn map_id(&self, host: u32, me: u32, is_uid: bool) -> u32 {
        if self.inside_ns {
            // Ids seen from inside are the image's; unmapped ones (the
            // host's own root files) show as the overflow id: root.
            return if host == 65534 { 0 } else { host };
        }
        if self.real_root {
            return host;
        }
        if host == me {
            return 0;
        }
        if let Some(s) = self.subids {
            let start = if is_uid { s.uid_start } else { s.gid_start };
            if host >= start && host < start + s.count {
                return host - start + 1;
            }
        }
        // Not mapped into the builder (the host's own root files): root.
        0
    }
}

#[derive(Debug, Clone)]
pub struct Located {
    pub host: PathBuf,
    pub layer: Layer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Changes,
    Lower(usize),
    Host,
}

/// Lexically normalizes an absolute builder path (`..` stops at `/`).
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// Whether overlayfs marked a directory of the upper dir opaque (unprivileged
/// overlay uses `user.overlay.opaque`, privileged `trusted.overlay.opaque`).
fn is_opaque(dir: &Path) -> bool {
    ["user.overlay.opaque", "trusted.overlay.opaque"]
        .iter()
        .any(|n| xattr::get(dir, n).ok().flatten().is_some_and(|v| v == b"y"))
}
