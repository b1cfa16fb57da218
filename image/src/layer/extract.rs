//! Applying layers to a directory, safely and rootless.
//!
//! As containerd and umoci do, symlinks are created verbatim whatever
//! their target, and a member whose parent directories go through
//! symlinks lands where they point, resolved inside the root (see
//! [`super::resolve`]). Every directory is then opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)` (or,
//! before Linux 5.6, one `O_NOFOLLOW` component at a time) and acted on with
//! `*at` calls that never follow a final symlink. So a layer cannot write
//! outside the root, neither with `..` or absolute names (refused with the
//! layer digest and member path), nor through a symlink planted by an
//! earlier member or layer (followed, but clamped at the root).
//!
//! Rootless: directories are created `0700` and get their real mode at the
//! end (a `0555` directory must stay writable while it is filled); ownership,
//! device nodes and privileged xattrs that an unprivileged user cannot create
//! are recorded in the manifest the caller writes beside the tree.

use super::read::TarItem;
use super::resolve::Node;
use super::{EntryError, LayerError};
use crate::layer::from_image::Stacker;
use crate::oci::image::Image;
use crate::oci::layout::Layout;
use crate::oci::media;
use crate::rootfs::entry::{Entry, Kind, RelPath};
use crate::rootfs::manifest::Manifest;
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{
    fchmod, fchmodat, mkdirat, mknodat, utimensat, FchmodatFlags, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What an unpack could not represent on this host.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shortfalls {
    /// Entries whose owner this user could not give (recorded beside the tree).
    pub ownership: usize,
    /// Device nodes a rootless unpack could not create.
    pub devices: usize,
    /// Extended attributes the filesystem or this user refused.
    pub xattrs: usize,
}

impl Shortfalls {
    /// Whether anything was not represented, and so a record must be written beside the tree.
    pub fn any(&self) -> bool {
        self.ownership + self.devices + self.xattrs > 0
    }
}

/// Applies layers to one root directory.
pub struct Extractor {
    root: OwnedFd,
    privileged: bool,
    stacker: Stacker,
    /// Final (mode, mtime) of directories, applied deepest-first at the end.
    dirs: BTreeMap<RelPath, (u32, i64)>,
    /// What could not be represented so far.
    pub shortfalls: Shortfalls,
}

type Res<T> = Result<T, EntryError>;

/// A failed system call, errno kept.
fn sys_err(what: &str, e: Errno) -> EntryError {
    EntryError::sys(what, e)
}

impl Extractor {
    /// Opens `root` (an existing directory) for extraction.
    pub fn new(root: &Path) -> io::Result<Self> {
        let fd = nix::fcntl::open(
            root,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            root: fd,
            privileged: nix::unistd::geteuid().is_root(),
            stacker: Stacker::default(),
            dirs: BTreeMap::new(),
            shortfalls: Shortfalls::default(),
        })
    }

    /// Applies one layer from a layout (digest and diff_id verified).
    pub fn apply_layer(
        &mut self,
        layout: &Layout,
        desc: &oci_spec::image::Descriptor,
        diff_id: &str,
    ) -> Result<(), LayerError> {
        let digest = media::digest_of(desc).map_err(crate::oci::layout::LayoutError::from)?;
        self.stacker.start_layer();
        super::for_each_member(layout, desc, diff_id, |item, data| {
            self.apply_item(item, data)
                .map_err(|source| LayerError::Entry {
                    layer: digest.clone(),
                    path: item_path(item),
                    source,
                })
        })
    }

    /// Applies a tar archive that is not an image layer (a Containerfile's
    /// `ADD archive.tar`): plain, gzip or zstd, told by its first bytes.
    /// Its members are confined to the root exactly as a layer's are.
    pub fn apply_archive(&mut self, r: impl Read) -> Result<(), ArchiveError> {
        let dec =
            super::compress::decoder(r, media::LayerEncoding::Sniff).map_err(ArchiveError::Read)?;
        let mut archive = tar::Archive::new(super::read::HeaderGuard::new(dec));
        self.stacker.start_layer();
        for member in archive.entries().map_err(ArchiveError::Read)? {
            let mut member = member.map_err(ArchiveError::Read)?;
            let path = String::from_utf8_lossy(&member.path_bytes()).into_owned();
            let entry = |source| ArchiveError::Entry {
                path: path.clone(),
                source,
            };
            let mut item = super::read::classify(&mut member).map_err(entry)?;
            self.apply_item(&mut item, &mut member).map_err(entry)?;
        }
        Ok(())
    }

    /// Applies one member. Its parent directories are resolved inside the
    /// root (see [`super::resolve`]); on success the item holds the
    /// resolved paths, which is what the manifest records.
    pub(crate) fn apply_item(&mut self, item: &mut TarItem, data: &mut dyn Read) -> Res<()> {
        match item {
            TarItem::Skip => {}
            TarItem::Whiteout(p) => {
                if let Some((at, parent)) = self.open_dir(&p.parent(), false)? {
                    remove_at(&parent, p.name())
                        .map_err(|e| sys_err("removing whited-out path", e))?;
                    let real = at.join(p.name());
                    self.dirs.retain(|d, _| !d.starts_with(&real));
                    *p = real;
                }
            }
            TarItem::Opaque(dir) => {
                let (real, fd) = self
                    .open_dir(dir, true)?
                    .ok_or("opaque marker in a directory that cannot be created")?;
                let names = list_dir(&fd).map_err(|e| sys_err("listing opaque directory", e))?;
                for n in names {
                    let child = real.join(&n);
                    if !self.stacker.in_this_layer(&child) {
                        remove_at(&fd, &n).map_err(|e| sys_err("clearing opaque directory", e))?;
                        self.dirs.retain(|d, _| !d.starts_with(&child));
                    }
                }
                *dir = real;
            }
            TarItem::Entry(e) => {
                if e.path.is_root() {
                    return Ok(());
                }
                self.apply_entry(e, data)?;
            }
        }
        self.stacker.apply(item);
        Ok(())
    }

    /// Applies an entry where its resolved parent puts it. Errors name
    /// the member as the layer wrote it.
    fn apply_entry(&mut self, e: &mut Entry, data: &mut dyn Read) -> Res<()> {
        let (at, parent) = self
            .open_dir(&e.path.parent(), true)?
            .ok_or("parent directory could not be created")?;
        let real = at.join(e.path.name());
        let written = std::mem::replace(&mut e.path, real);
        let r = self.apply_entry_in(&parent, e, data);
        if r.is_err() {
            e.path = written;
        }
        r
    }

    fn apply_entry_in(&mut self, parent: &OwnedFd, e: &mut Entry, data: &mut dyn Read) -> Res<()> {
        let name = e.path.name().to_vec();
        let existing = nix::sys::stat::fstatat(
            parent,
            name.as_slice(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ok();
        let existing_is_dir = existing.is_some_and(|st| {
            SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
        });
        if e.kind == Kind::Dir && existing_is_dir {
            self.set_owner_at(parent, &name, e)?;
            self.dirs.insert(e.path.clone(), (e.mode, e.mtime.sec));
            return Ok(());
        }
        if existing.is_some() {
            remove_at(parent, &name).map_err(|x| sys_err("replacing existing path", x))?;
            self.dirs.retain(|d, _| !d.starts_with(&e.path));
        }
        let mode600 = Mode::from_bits_truncate(0o600);
        match e.kind {
            Kind::Dir => {
                mkdirat(parent, name.as_slice(), Mode::from_bits_truncate(0o700))
                    .map_err(|x| sys_err("mkdir", x))?;
                self.set_owner_at(parent, &name, e)?;
                self.set_xattrs_at(parent, &name, e)?;
                self.dirs.insert(e.path.clone(), (e.mode, e.mtime.sec));
            }
            Kind::File => {
                let fd = openat(
                    parent,
                    name.as_slice(),
                    OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_WRONLY
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    mode600,
                )
                .map_err(|x| sys_err("create", x))?;
                let mut file = File::from(fd);
                let mut hashing = crate::oci::digest::HashingWriter::new(&mut file);
                let n = io::copy(data, &mut hashing).map_err(|source| EntryError::Io {
                    what: "writing content".into(),
                    source,
                })?;
                let (_, d, _) = hashing.finish();
                if n != e.size {
                    return Err(EntryError::Refused(format!(
                        "content is {n} bytes, header says {}",
                        e.size
                    )));
                }
                e.sha256 = Some(d.to_bytes());
                if self.privileged {
                    if fchown(
                        file.as_fd(),
                        Some(Uid::from_raw(e.uid as u32)),
                        Some(Gid::from_raw(e.gid as u32)),
                    )
                    .is_err()
                    {
                        self.shortfalls.ownership += 1;
                    }
                } else if !self.is_mine(e) {
                    self.shortfalls.ownership += 1;
                }
                // After chown, which clears setuid/setgid.
                fchmod(file.as_fd(), Mode::from_bits_truncate(e.mode))
                    .map_err(|x| sys_err("chmod", x))?;
                for (k, v) in &e.xattrs {
                    use xattr::FileExt;
                    if let Err(err) = file.set_xattr(std::ffi::OsStr::from_bytes(k), v) {
                        self.xattr_failed(k, err)?;
                    }
                }
                let t = TimeSpec::new(e.mtime.sec, 0);
                nix::sys::stat::futimens(file.as_fd(), &t, &t)
                    .map_err(|x| sys_err("set mtime", x))?;
            }
            Kind::Symlink => {
                let target = e.link.clone().unwrap_or_default();
                symlinkat(target.as_slice(), parent, name.as_slice())
                    .map_err(|x| sys_err("symlink", x))?;
                self.set_owner_at(parent, &name, e)?;
                self.set_mtime_at(parent, &name, e)?;
            }
            Kind::Hardlink => {
                let target = RelPath::new(e.link.clone().unwrap_or_default());
                let (at, tparent) = self.open_dir(&target.parent(), false)?.ok_or_else(|| {
                    EntryError::Refused(format!("hardlink target {target} does not exist"))
                })?;
                let st = nix::sys::stat::fstatat(
                    &tparent,
                    target.name(),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| match e {
                    Errno::ENOENT => {
                        EntryError::Refused(format!("hardlink target {target} does not exist"))
                    }
                    e => sys_err(&format!("hardlink target {target}"), e),
                })?;
                if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
                    return Err(EntryError::Refused(format!(
                        "hardlink target {target} is a directory"
                    )));
                }
                linkat(
                    &tparent,
                    target.name(),
                    parent,
                    name.as_slice(),
                    nix::fcntl::AtFlags::empty(),
                )
                .map_err(|x| sys_err("link", x))?;
                e.link = Some(at.join(target.name()).as_bytes().to_vec());
            }
            Kind::Fifo | Kind::Char | Kind::Block => {
                let (kind, dev) = match e.kind {
                    Kind::Fifo => (SFlag::S_IFIFO, 0),
                    Kind::Char => (SFlag::S_IFCHR, rdev(e)),
                    _ => (SFlag::S_IFBLK, rdev(e)),
                };
                match mknodat(parent, name.as_slice(), kind, mode600, dev) {
                    Ok(()) => {}
                    Err(Errno::EPERM) if e.kind != Kind::Fifo => {
                        // Rootless: the record beside the tree keeps it.
                        self.shortfalls.devices += 1;
                        return Ok(());
                    }
                    Err(x) => return Err(sys_err("mknod", x)),
                }
                self.set_owner_at(parent, &name, e)?;
                fchmodat(
                    parent,
                    name.as_slice(),
                    Mode::from_bits_truncate(e.mode),
                    FchmodatFlags::FollowSymlink,
                )
                .map_err(|x| sys_err("chmod", x))?;
                self.set_mtime_at(parent, &name, e)?;
            }
        }
        Ok(())
    }

    fn is_mine(&self, e: &Entry) -> bool {
        e.uid == nix::unistd::geteuid().as_raw() as u64
            && e.gid == nix::unistd::getegid().as_raw() as u64
    }

    fn set_owner_at(&mut self, parent: &OwnedFd, name: &[u8], e: &Entry) -> Res<()> {
        if self.privileged {
            if fchownat(
                parent,
                name,
                Some(Uid::from_raw(e.uid as u32)),
                Some(Gid::from_raw(e.gid as u32)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .is_err()
            {
                self.shortfalls.ownership += 1;
            }
        } else if !self.is_mine(e) {
            self.shortfalls.ownership += 1;
        }
        Ok(())
    }

    fn set_mtime_at(&self, parent: &OwnedFd, name: &[u8], e: &Entry) -> Res<()> {
        let t = TimeSpec::new(e.mtime.sec, 0);
        utimensat(parent, name, &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(|x| sys_err("set mtime", x))
    }

    fn set_xattrs_at(&mut self, parent: &OwnedFd, name: &[u8], e: &Entry) -> Res<()> {
        if e.xattrs.is_empty() {
            return Ok(());
        }
        let fd = openat(
            parent,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|x| sys_err("open", x))?;
        let f = File::from(fd);
        for (k, v) in &e.xattrs {
            use xattr::FileExt;
            if let Err(err) = f.set_xattr(std::ffi::OsStr::from_bytes(k), v) {
                self.xattr_failed(k, err)?;
            }
        }
        Ok(())
    }

    fn xattr_failed(&mut self, name: &[u8], err: io::Error) -> Res<()> {
        let n = String::from_utf8_lossy(name);
        match err.raw_os_error().map(Errno::from_raw) {
            Some(Errno::EPERM | Errno::EACCES | Errno::EOPNOTSUPP | Errno::EINVAL) => {
                tracing::debug!("xattr {n} not applied ({err}); kept in the manifest");
                self.shortfalls.xattrs += 1;
                Ok(())
            }
            _ => Err(EntryError::Io {
                what: format!("setting xattr {n}"),
                source: err,
            }),
        }
    }

    /// Opens the directory `dir`, resolved inside the root (see
    /// [`super::resolve`]), and returns its resolved path with it. With
    /// `create`, missing directories are created (0700 until the end, like
    /// every directory); without, a missing one gives `None`. The common
    /// case, a path with no symlink in it, is one `openat2`.
    fn open_dir(&mut self, dir: &RelPath, create: bool) -> Res<Option<(RelPath, OwnedFd)>> {
        let path: &[u8] = if dir.is_root() { b"." } else { dir.as_bytes() };
        match open_beneath(&self.root, path, OFlag::O_PATH) {
            Ok(fd) => return Ok(Some((dir.clone(), fd))),
            Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => {}
            Err(e) => return Err(resolve_msg(dir, e)),
        }
        let mut tree = DiskTree {
            root: &self.root,
            created: &mut self.dirs,
        };
        super::resolve::resolve_dir(&mut tree, dir, create)
    }

    /// Applies the deferred directory modes and mtimes (deepest first) and
    /// returns the manifest of everything applied: what the image holds,
    /// including what this host could not represent.
    pub fn finish(mut self) -> Result<(Manifest, Shortfalls), EntryError> {
        let dirs = std::mem::take(&mut self.dirs);
        for (p, (mode, mtime)) in dirs.iter().rev() {
            let Ok(fd) = open_beneath(&self.root, p.as_bytes(), OFlag::O_RDONLY) else {
                continue;
            };
            let t = TimeSpec::new(*mtime, 0);
            fchmod(&fd, Mode::from_bits_truncate(*mode))
                .map_err(|e| sys_err(&format!("{p}: chmod"), e))?;
            nix::sys::stat::futimens(&fd, &t, &t)
                .map_err(|e| sys_err(&format!("{p}: set mtime"), e))?;
        }
        Ok((self.stacker.manifest, self.shortfalls))
    }
}

/// Opens the directory `path` beneath `dir` (`flags` plus `O_DIRECTORY`)
/// without following any symlink and without leaving `dir`: `openat2`
/// with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`, so the
/// kernel itself enforces it. Kernels before 5.6 have no `openat2`; there
/// the same is done one component at a time ([`open_beneath_walk`]).
fn open_beneath(dir: &OwnedFd, path: &[u8], flags: OFlag) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    match crate::inroot::openat2_retrying(dir, path, how) {
        Err(Errno::ENOSYS) => open_beneath_walk(dir, path, flags),
        r => r,
    }
}

/// [`open_beneath`] without `openat2`: each component opened with
/// `O_NOFOLLOW | O_DIRECTORY`, which fails on a symlink (ELOOP or
/// ENOTDIR). Paths here are normalized (no `..`); one is refused anyway.
/// Mount points are not detected: the trees shipyard extracts into are
/// its own fresh directories.
fn open_beneath_walk(dir: &OwnedFd, path: &[u8], flags: OFlag) -> Result<OwnedFd, Errno> {
    let comps: Vec<&[u8]> = path
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if comps.iter().any(|c| *c == b"..") {
        return Err(Errno::EXDEV);
    }
    let nofollow = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let Some((last, above)) = comps.split_last() else {
        return openat(dir, ".", flags | nofollow, Mode::empty());
    };
    let mut cur: Option<OwnedFd> = None;
    for c in above {
        let at = cur.as_ref().unwrap_or(dir);
        cur = Some(openat(at, *c, OFlag::O_PATH | nofollow, Mode::empty())?);
    }
    openat(
        cur.as_ref().unwrap_or(dir),
        *last,
        flags | nofollow,
        Mode::empty(),
    )
}

/// The tree being extracted, for [`super::resolve`]: each step looks at
/// or opens one name in an already-open directory.
struct DiskTree<'a> {
    root: &'a OwnedFd,
    /// Directories created on the way, for their final mode.
    created: &'a mut BTreeMap<RelPath, (u32, i64)>,
}

impl super::resolve::Tree for DiskTree<'_> {
    type Dir = OwnedFd;
    type Error = EntryError;

    fn root(&mut self) -> Res<OwnedFd> {
        open_beneath(self.root, b".", OFlag::O_PATH).map_err(|e| sys_err("opening the root", e))
    }

    fn lookup(&mut self, dir: &OwnedFd, at: &RelPath, name: &[u8]) -> Res<Node> {
        let st = match nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(Node::Missing),
            Err(e) => return Err(sys_err(&format!("looking at {}", at.join(name)), e)),
        };
        Ok(
            match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
                SFlag::S_IFDIR => Node::Dir,
                SFlag::S_IFLNK => {
                    let t = nix::fcntl::readlinkat(dir, name)
                        .map_err(|e| sys_err(&format!("reading symlink {}", at.join(name)), e))?;
                    Node::Symlink(t.as_bytes().to_vec())
                }
                _ => Node::Other,
            },
        )
    }

    fn enter(&mut self, dir: &OwnedFd, at: &RelPath, name: &[u8], create: bool) -> Res<OwnedFd> {
        let here = at.join(name);
        if create {
            match mkdirat(dir, name, Mode::from_bits_truncate(0o700)) {
                Ok(()) => {
                    self.created.insert(here.clone(), (0o755, 0));
                }
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(sys_err(&format!("creating {here}"), e)),
            }
        }
        open_beneath(dir, name, OFlag::O_PATH).map_err(|e| resolve_msg(&here, e))
    }
}

fn item_path(item: &TarItem) -> String {
    match item {
        TarItem::Entry(e) => e.path.to_string(),
        TarItem::Whiteout(p) => format!("{p} (whiteout)"),
        TarItem::Opaque(p) => format!("{p} (opaque marker)"),
        TarItem::Skip => String::new(),
    }
}

/// What a failed `open_beneath` means for the walk: the refusals the
/// resolve flags cause are said as such; anything else keeps its errno.
fn resolve_msg(dir: &RelPath, e: Errno) -> EntryError {
    match e {
        Errno::ELOOP => EntryError::Refused(format!(
            "{dir} changed into a symlink while the layer was applied"
        )),
        Errno::EXDEV => EntryError::Refused(format!("{dir} resolves outside the root")),
        Errno::ENOTDIR => EntryError::Refused(format!("{dir} is not a directory")),
        e => sys_err(&format!("opening {dir}"), e),
    }
}

fn rdev(e: &Entry) -> u64 {
    let (ma, mi) = e.rdev.unwrap_or((0, 0));
    nix::sys::stat::makedev(ma as u64, mi as u64)
}

fn list_dir(fd: &OwnedFd) -> Result<Vec<Vec<u8>>, Errno> {
    let mut d = nix::dir::Dir::openat(
        fd,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = Vec::new();
    for ent in d.iter() {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(n.to_vec());
        }
    }
    Ok(out)
}

/// Removes `name` in `parent` and, for a directory, everything beneath it,
/// never following symlinks. A missing path is not an error.
fn remove_at(parent: &OwnedFd, name: &[u8]) -> Result<(), Errno> {
    match unlinkat(parent, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => return Ok(()),
        Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR) => {}
        Err(e) => return Err(e),
    }
    let fd = openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // A rootless tree may hold directories we cannot write; we own them.
    let _ = fchmod(&fd, Mode::from_bits_truncate(0o700));
    for n in list_dir(&fd)? {
        remove_at(&fd, &n)?;
    }
    unlinkat(parent, name, UnlinkatFlags::RemoveDir)
}

/// Why [`Extractor::apply_archive`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The archive could not be read or decoded.
    #[error("reading the archive")]
    Read(#[source] io::Error),
    /// One member was refused or could not be applied.
    #[error("{path}")]
    Entry {
        /// The member's name as the archive gives it.
        path: String,
        /// Why it was refused or failed.
        #[source]
        source: EntryError,
    },
}

/// Why [`unpack`] failed: a layer (which names its digest and member), or
/// the destination.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// A layer could not be read or applied.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// The destination holds files already; unpacking never merges.
    #[error("{0}: destination exists and is not empty; choose a new directory")]
    NotEmpty(PathBuf),
    /// Preparing, finishing or renaming the destination failed.
    #[error("{path}")]
    Dest {
        /// The destination directory.
        path: PathBuf,
        /// The system's answer (errno kept).
        #[source]
        source: io::Error,
    },
    /// The deferred directory modes and mtimes could not be applied.
    #[error("{path}: finishing the tree")]
    Finish {
        /// The destination directory.
        path: PathBuf,
        /// Which directory and why.
        #[source]
        source: EntryError,
    },
}

/// What [`unpack`] did.
#[derive(Debug)]
pub struct UnpackReport {
    /// Everything the image holds, including what the tree could not represent.
    pub manifest: Manifest,
    /// What the tree could not represent.
    pub shortfalls: Shortfalls,
    /// Where the record of unrepresentable metadata was written, if needed.
    pub record: Option<PathBuf>,
}

/// Unpacks an image into `dest`, which must not exist or be empty. Works in
/// a temp directory beside it and renames at the end, so `dest` is never a
/// half-unpacked tree.
pub fn unpack(layout: &Layout, image: &Image, dest: &Path) -> Result<UnpackReport, UnpackError> {
    unpack_layers(layout, &image.layers(), dest)
}

/// [`unpack`] for a list of (layer, diff_id), bottom first.
pub fn unpack_layers(
    layout: &Layout,
    layers: &[(oci_spec::image::Descriptor, String)],
    dest: &Path,
) -> Result<UnpackReport, UnpackError> {
    let derr = |source: io::Error| UnpackError::Dest {
        path: dest.to_path_buf(),
        source,
    };
    if let Ok(mut rd) = std::fs::read_dir(dest) {
        if rd.next().is_some() {
            return Err(UnpackError::NotEmpty(dest.to_path_buf()));
        }
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(derr)?;
    let tmp = tempfile::Builder::new()
        .prefix(".shipyard-unpack-")
        .tempdir_in(&parent)
        .map_err(derr)?;
    let mut ex = Extractor::new(tmp.path()).map_err(derr)?;
    for (desc, diff_id) in layers {
        ex.apply_layer(layout, desc, diff_id)?;
    }
    let (manifest, shortfalls) = ex.finish().map_err(|source| UnpackError::Finish {
        path: dest.to_path_buf(),
        source,
    })?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).map_err(derr)?;
    let _ = std::fs::remove_dir(dest);
    let record_path = crate::rootfs::walk::ownership_record_path(dest);
    let record = if shortfalls.any() {
        let mut f = std::fs::File::create(&record_path).map_err(derr)?;
        manifest.write_to(&mut f).map_err(derr)?;
        Some(record_path)
    } else {
        let _ = std::fs::remove_file(&record_path);
        None
    };
    let kept = tmp.keep();
    std::fs::rename(&kept, dest).map_err(|e| {
        let _ = std::fs::remove_dir_all(&kept);
        derr(e)
    })?;
    Ok(UnpackReport {
        manifest,
        shortfalls,
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller deciding what to tell the user (a full disk, a permission
    /// problem, a name too long for this filesystem) gets the errno, and
    /// the chain says the operation and the system's answer once each.
    #[test]
    fn a_failed_system_call_keeps_its_errno() {
        let t = tempfile::tempdir().unwrap();
        let mut ex = Extractor::new(t.path()).unwrap();
        let mut e = Entry::new(RelPath::new(vec![b'a'; 300]), Kind::File);
        e.mode = 0o644;
        let mut item = TarItem::Entry(e);
        let err = ex.apply_item(&mut item, &mut io::empty()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG), "{err:?}");
        let text = crate::error::chain_text(&err);
        assert!(text.starts_with("create: "), "{text}");
        assert_eq!(text.matches("too long").count(), 1, "{text}");
    }

    #[test]
    fn component_walk_never_follows_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("root/a/b")).unwrap();
        std::fs::create_dir_all(t.path().join("outside")).unwrap();
        std::os::unix::fs::symlink("../outside", t.path().join("root/a/up")).unwrap();
        std::os::unix::fs::symlink("b", t.path().join("root/a/lnk")).unwrap();
        let root = nix::fcntl::open(
            &t.path().join("root"),
            OFlag::O_DIRECTORY | OFlag::O_RDONLY,
            Mode::empty(),
        )
        .unwrap();
        for flags in [OFlag::O_PATH, OFlag::O_RDONLY] {
            assert!(open_beneath_walk(&root, b"a/b", flags).is_ok());
            assert!(open_beneath_walk(&root, b".", flags).is_ok());
            for bad in [
                &b"a/up"[..],
                b"a/lnk",
                b"a/lnk/x",
                b"a/../..",
                b"a/b/../../..",
            ] {
                assert!(
                    open_beneath_walk(&root, bad, flags).is_err(),
                    "{}",
                    String::from_utf8_lossy(bad)
                );
            }
        }
    }
}
