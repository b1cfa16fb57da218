//! The builder as tapeout sees it after the steps have exited: the step's
//! changes on top of the base, resolved without mounting anything.

use crate::sandbox::job::SubIds;
use nix::fcntl::OFlag;
use shipyard_image::inroot::{self, Follow};
use shipyard_image::rootfs::manifest::Manifest;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
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
    /// At isolation none the builder is `/` itself (see
    /// [`BuilderView::in_place`]): no overlay, so no whiteouts or opaque
    /// directories to interpret.
    in_place: bool,
    /// Descriptors of `changes` then of each lower (`None` where one
    /// could not be opened: nothing is found there).
    fds: Vec<Option<OwnedFd>>,
    /// The host's `/`, for the `host` builder's own directories.
    host_fd: Option<OwnedFd>,
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
                let rec = shipyard_image::rootfs::walk::ownership_record_path(l);
                std::fs::File::open(&rec).ok().and_then(|f| {
                    Manifest::parse(std::io::BufReader::new(f), &rec.display().to_string()).ok()
                })
            })
            .collect();
        let fds = std::iter::once(&changes)
            .chain(lowers.iter())
            .map(|d| inroot::open_root(d).ok())
            .collect();
        let host_fd = if host_dirs.is_empty() {
            None
        } else {
            inroot::open_root(Path::new("/")).ok()
        };
        Self {
            fds,
            host_fd,
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
            in_place: false,
        }
    }

    /// At isolation none: the builder is the machine's (the container's)
    /// own `/`, as the rules left it, and `changed` is what they changed
    /// since the manifest taken before the first rule (see
    /// `build::inplace`). Everything else in `/` is there to be resolved
    /// (literal includes, ELF closure) but is not a change. Ids on disk
    /// are the real ones: the caller's own files are root's in the image,
    /// as in a user namespace with a single id mapped.
    pub fn in_place(changed: &Manifest) -> Self {
        let mut v = Self::new(PathBuf::from("/"), Vec::new(), Vec::new(), None);
        v.changed = Some(
            changed
                .entries
                .keys()
                .map(|p| Path::new("/").join(p.to_path()))
                .collect(),
        );
        v.copy_mode = true;
        v.in_place = true;
        v
    }

    /// What changed, sorted, when that is known without walking the
    /// changes dir (on a copy, and in place); `None` with an overlay,
    /// whose upper dir holds only changes.
    pub fn changed_paths(&self) -> Option<Vec<PathBuf>> {
        self.changed.as_ref().map(|c| {
            let mut v: Vec<PathBuf> = c.iter().cloned().collect();
            v.sort();
            v
        })
    }

    /// See [`BuilderView::inside_ns`].
    pub fn set_inside_namespace(&mut self) {
        self.inside_ns = true;
    }

    /// After the builder ran on a copy of its base (see the sandbox's copy
    /// fallback), what it changed is the builder tree diffed against the
    /// base: compute that, and stop looking into the base.
    pub fn use_copy(&mut self) -> Result<(), shipyard_image::rootfs::walk::WalkError> {
        use shipyard_image::rootfs::walk::{walk, Hashing};
        let tree = walk(&self.changes, Hashing::None)?;
        let mut base = shipyard_image::rootfs::manifest::Manifest::default();
        for l in self.lowers.iter().rev() {
            for (_, e) in walk(l, Hashing::None)?.manifest.entries {
                base.insert(e);
            }
        }
        let d = shipyard_image::rootfs::diff::diff(&tree, &base)?;
        let mut changed = std::collections::HashSet::new();
        for c in d.changes.changes {
            if let shipyard_image::rootfs::changeset::Change::Put(e) = c {
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

    /// The descriptor of a tree of the view.
    fn root_fd(&self, layer: Layer) -> Option<BorrowedFd<'_>> {
        match layer {
            Layer::Changes => self.fds.first()?.as_ref().map(|f| f.as_fd()),
            Layer::Lower(i) => self.fds.get(i + 1)?.as_ref().map(|f| f.as_fd()),
            Layer::Host => self.host_fd.as_ref().map(|f| f.as_fd()),
        }
    }

    /// Opens `rel` in one tree of the view without following any symlink
    /// (in the last component either: with `O_PATH | O_NOFOLLOW`, a
    /// symlink opens itself).
    fn open_in(&self, layer: Layer, rel: &Path, flags: OFlag) -> std::io::Result<OwnedFd> {
        let fd = self
            .root_fd(layer)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        inroot::open_in(fd, rel, flags, Follow::Never)
    }

    fn lstat_in(&self, layer: Layer, rel: &Path) -> Option<std::fs::Metadata> {
        let fd = self
            .open_in(layer, rel, OFlag::O_PATH | OFlag::O_NOFOLLOW)
            .ok()?;
        inroot::metadata(&fd).ok()
    }

    /// Builder path `p` (absolute, normalized, its parents already
    /// resolved: see [`BuilderView::resolve`]) in the merged view, or
    /// `None` if it does not exist, was deleted by a step, or a directory
    /// above it is a symlink. No symlink is ever followed, on the host
    /// or in the builder.
    pub fn locate(&self, p: &Path) -> Option<Located> {
        let rel = p.strip_prefix("/").unwrap_or(p);
        let found = |layer: Layer, host: PathBuf| Located {
            host,
            layer,
            rel: rel.to_path_buf(),
        };
        if self.in_place {
            // The real tree: what is there is there. (A symlink above the
            // path makes the lookup fail: nothing is followed.)
            return self
                .lstat_in(Layer::Changes, rel)
                .map(|_| found(Layer::Changes, self.changes.join(rel)));
        }
        if let Some(m) = self.lstat_in(Layer::Changes, rel) {
            // An overlay whiteout: a 0/0 character device.
            if m.file_type().is_char_device() && m.rdev() == 0 {
                return None;
            }
            if !(m.is_dir() && self.is_mountpoint_only(rel, &m)) {
                return Some(found(Layer::Changes, self.changes.join(rel)));
            }
        }
        // A whited-out ancestor, an opaque one (a directory the step
        // replaced) or one the step made a non-directory hides the lowers.
        let mut anc = PathBuf::new();
        for c in rel.components() {
            anc.push(c);
            if let Some(m) = self.lstat_in(Layer::Changes, &anc) {
                if m.file_type().is_char_device() && m.rdev() == 0 {
                    return None;
                }
                if anc != rel && !m.is_dir() {
                    return None;
                }
                if anc != rel && self.is_opaque(&anc) {
                    return None;
                }
            }
        }
        if self.copy_mode {
            return None;
        }
        for (i, l) in self.lowers.iter().enumerate() {
            if self.lstat_in(Layer::Lower(i), rel).is_some() {
                return Some(found(Layer::Lower(i), l.join(rel)));
            }
        }
        if self.host_dirs.iter().any(|d| p.starts_with(d))
            && self.lstat_in(Layer::Host, rel).is_some()
        {
            return Some(found(Layer::Host, PathBuf::from(p)));
        }
        None
    }

    /// Resolves builder path `p` the way the builder's kernel would, with
    /// the builder's root as `/`: symlinks in every directory above the
    /// last component (and in the last one too if `follow_last`) are
    /// followed through the merged view, absolute targets from the
    /// builder's root, `..` clamped at it. `None` if the path does not
    /// exist there (or loops). The result is a path [`BuilderView::locate`]
    /// finds; `links` are the symlinks passed on the way, which an image
    /// needs too for the path to work the same.
    pub fn resolve(&self, p: &Path, follow_last: bool) -> Option<Resolved> {
        let mut done = PathBuf::from("/");
        let mut todo: Vec<std::ffi::OsString> = Vec::new();
        push_components(&mut todo, p);
        let mut links = Vec::new();
        let mut followed = 0;
        while let Some(c) = todo.pop() {
            if c == ".." {
                done.pop();
                continue;
            }
            let cand = done.join(&c);
            let loc = self.locate(&cand)?;
            let md = self.metadata(&loc).ok()?;
            let last = todo.is_empty();
            if md.file_type().is_symlink() && (!last || follow_last) {
                followed += 1;
                if followed > MAX_LINKS {
                    return None;
                }
                let t = self.read_link(&loc).ok()?;
                if !links.contains(&cand) {
                    links.push(cand);
                }
                if t.is_absolute() {
                    done = PathBuf::from("/");
                }
                push_components(&mut todo, &t);
                continue;
            }
            if !last && !md.is_dir() {
                return None;
            }
            done = cand;
        }
        self.locate(&done)?;
        Some(Resolved { path: done, links })
    }

    /// Metadata of a located entry (a symlink's own).
    pub fn metadata(&self, loc: &Located) -> std::io::Result<std::fs::Metadata> {
        let fd = self.open_in(loc.layer, &loc.rel, OFlag::O_PATH | OFlag::O_NOFOLLOW)?;
        inroot::metadata(&fd)
    }

    /// The target of a located symlink, as stored.
    pub fn read_link(&self, loc: &Located) -> std::io::Result<PathBuf> {
        let fd = self.open_in(loc.layer, &loc.rel, OFlag::O_PATH | OFlag::O_NOFOLLOW)?;
        inroot::read_link(&fd)
    }

    /// Opens a located regular file for reading.
    pub fn open_file(&self, loc: &Located) -> std::io::Result<std::fs::File> {
        let fd = self.open_in(
            loc.layer,
            &loc.rel,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK,
        )?;
        let f = std::fs::File::from(fd);
        if !f.metadata()?.is_file() {
            return Err(std::io::Error::other(format!(
                "{} is not a regular file",
                loc.host.display()
            )));
        }
        Ok(f)
    }

    /// Hard-links a located file at host path `to` (the name is linked
    /// from its own directory, opened inside the tree: nothing followed).
    pub fn hard_link(&self, loc: &Located, to: &Path) -> std::io::Result<()> {
        let name = loc
            .rel
            .file_name()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let parent = loc.rel.parent().unwrap_or(Path::new(""));
        let dir = self.open_in(loc.layer, parent, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
        nix::unistd::linkat(
            &dir,
            name,
            nix::fcntl::AT_FDCWD,
            to,
            nix::fcntl::AtFlags::empty(),
        )?;
        Ok(())
    }

    /// The names in directory `p` of the merged view (what the builder's
    /// `ls` shows), sorted.
    pub fn read_dir(&self, p: &Path) -> Vec<std::ffi::OsString> {
        let rel = p.strip_prefix("/").unwrap_or(p);
        let list = |layer: Layer| -> Vec<std::ffi::OsString> {
            self.open_in(layer, rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                .and_then(inroot::list_dir)
                .unwrap_or_default()
        };
        let mut names: std::collections::BTreeSet<std::ffi::OsString> =
            list(Layer::Changes).into_iter().collect();
        let hides = self.copy_mode
            || self
                .lstat_in(Layer::Changes, rel)
                .is_some_and(|m| m.is_dir() && self.is_opaque(rel));
        if !hides {
            for i in 0..self.lowers.len() {
                names.extend(list(Layer::Lower(i)));
            }
            if self.host_dirs.iter().any(|d| p.starts_with(d)) {
                names.extend(list(Layer::Host));
            }
        }
        names
            .into_iter()
            .filter(|n| self.locate(&p.join(n)).is_some())
            .collect()
    }

    /// Every path at or under `p` in the merged view, sorted; a symlink is
    /// listed, not entered.
    pub fn list_tree(&self, p: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut todo = vec![p.to_path_buf()];
        while let Some(d) = todo.pop() {
            let is_dir = self
                .locate(&d)
                .and_then(|l| self.metadata(&l).ok())
                .is_some_and(|m| m.is_dir());
            if is_dir {
                todo.extend(self.read_dir(&d).into_iter().map(|n| d.join(n)));
            }
            out.push(d);
        }
        out.sort();
        out
    }

    /// Whether overlayfs marked a directory of the changes opaque
    /// (unprivileged overlay uses `user.overlay.opaque`, privileged
    /// `trusted.overlay.opaque`).
    fn is_opaque(&self, rel: &Path) -> bool {
        use xattr::FileExt;
        let Ok(fd) = self.open_in(
            Layer::Changes,
            rel,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
        ) else {
            return false;
        };
        let f = std::fs::File::from(fd);
        ["user.overlay.opaque", "trusted.overlay.opaque"]
            .iter()
            .any(|n| f.get_xattr(n).ok().flatten().is_some_and(|v| v == b"y"))
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
                let rel = shipyard_image::rootfs::entry::RelPath::new(
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

/// Where a builder path was found.
#[derive(Debug, Clone)]
pub struct Located {
    /// For messages only: every access goes through the view, which
    /// opens the path inside its tree.
    pub host: PathBuf,
    pub layer: Layer,
    /// The path relative to its tree.
    rel: PathBuf,
}

/// A builder path with its symlinks resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub path: PathBuf,
    /// The symlinks followed on the way, in order.
    pub links: Vec<PathBuf>,
}

/// Symlinks followed in one resolution at most (the kernel's bound).
const MAX_LINKS: usize = 40;

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

/// Pushes the components of `p` onto a stack of what is left to resolve
/// (so the first component is popped first).
fn push_components(todo: &mut Vec<std::ffi::OsString>, p: &Path) {
    let mut comps: Vec<std::ffi::OsString> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    comps.reverse();
    todo.extend(comps);
}
