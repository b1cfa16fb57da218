//! COPY into a builder: host files (a build context) or a tapeout's
//! staged tree, written into the builder's changes directory the way
//! overlayfs would hold them there. The rule capture that follows caches
//! them like any rule's changes, and an image of the builder gets a layer
//! of them: a Containerfile's `COPY` is a rule whose action is this job
//! instead of a command.
//!
//! Runs as root of the build's user namespace, so the owners it gives are
//! the builder's ids. Destination paths resolve through the builder's own
//! symlinks (a usrmerged base's `/lib -> usr/lib`), never the host's;
//! directories the builder has only in its base are copied up (mode,
//! owner and mtime kept), missing ones are made `0755` and given the
//! copy's owner (as buildah and BuildKit give `COPY --chown`'s parents,
//! and WORKDIR's to the USER); an existing directory is never chowned.

use crate::tapeout::view::{normalize, BuilderView, Layer};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One thing to copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyItem {
    /// A host path: a file, a symlink (copied as one), or a directory,
    /// whose contents are copied.
    pub from: PathBuf,
    /// The builder path: the file's own path, or the directory the
    /// contents go into. A file copied onto an existing directory goes
    /// into it, as Docker's COPY does.
    pub to: PathBuf,
    /// Under a directory source: paths (relative to it) left out.
    #[serde(default)]
    pub exclude: Vec<PathBuf>,
    /// A file given inline (`COPY <<EOF`): its content; `from` is then
    /// only its name. Mode 0644 unless `--chmod`, mtime the build's epoch.
    #[serde(default)]
    pub content: Option<String>,
    /// `from` is a tar archive to unpack into directory `to` (`ADD`):
    /// members keep their owners, modes and mtimes, and cannot land
    /// outside `to`.
    #[serde(default)]
    pub unpack: bool,
    /// A file may become one more name of `from`'s file instead of a
    /// copy, when that gives the same entry (owner, mode, mtime, no
    /// xattrs). Only for a tapeout's staged tree copied by the last rule
    /// of its builder: nothing writes either name while they share the
    /// file, and a link costs no data copy and no new inode.
    #[serde(default)]
    pub link: bool,
}

/// A copy to run in the builder's user namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyJob {
    /// The builder's changes directory (the overlay upper dir, or the copy).
    pub changes: PathBuf,
    /// Its base trees, topmost first.
    pub lowers: Vec<PathBuf>,
    /// The builder is a copy (no overlay): `changes` is the whole tree.
    pub copy_mode: bool,
    pub items: Vec<CopyItem>,
    /// Who owns what is copied (COPY's default is root).
    pub owner: (u32, u32),
    /// The mode of what is copied (`--chmod`), else the source's.
    pub mode: Option<u32>,
    /// Directories to make if missing (WORKDIR), with their missing
    /// parents, owned by `owner`; one that exists is left as it is.
    #[serde(default)]
    pub dirs: Vec<PathBuf>,
    /// The owner as `--chown` names it (user[:group]), looked up in the
    /// builder's own files before anything is copied; `owner` then unused.
    #[serde(default)]
    pub owner_name: Option<String>,
    /// The mtime of inline files (the build's epoch).
    #[serde(default)]
    pub mtime: i64,
}

type Res<T> = Result<T, String>;

fn io(what: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", what.display())
}

/// A chown's failure: EINVAL means the id has no mapping in the build's
/// user namespace, which without a subordinate id range holds one id.
fn chown_err(what: &Path, (u, g): (u32, u32), e: std::io::Error) -> String {
    if e.raw_os_error() == Some(libc::EINVAL) {
        format!(
            "{}: cannot give it the owner {u}:{g}: that id is not mapped in the build's user namespace \
             (this user has no subordinate id range: add one to /etc/subuid and /etc/subgid, or build as root)",
            what.display()
        )
    } else {
        format!("{}: {e}", what.display())
    }
}

impl crate::sandbox::job::InNamespace for CopyJob {
    const KIND: &'static str = "copy";

    fn run(&self) -> Res<()> {
        let mut view = BuilderView::new(
            self.changes.clone(),
            if self.copy_mode {
                Vec::new()
            } else {
                self.lowers.clone()
            },
            Vec::new(),
            None,
        );
        view.set_inside_namespace();
        if let Some(name) = &self.owner_name {
            let owner = super::users::resolve(&view, name, super::users::Missing::SameAsUid)
                .map_err(|e| format!("--chown: {e}"))?;
            let job = CopyJob {
                owner,
                owner_name: None,
                ..self.clone()
            };
            return job.copy_all(&view);
        }
        self.copy_all(&view)
    }
}

impl CopyJob {
    /// Every directory and item, `owner` being the ids.
    fn copy_all(&self, view: &BuilderView) -> Res<()> {
        let mut links = Links::default();
        for d in &self.dirs {
            self.make_dir(view, d)?;
        }
        for item in &self.items {
            if let Some(content) = &item.content {
                let dest = self.file_dest(view, &item.from, &item.to)?;
                self.write_inline(content, &dest)?;
                continue;
            }
            if item.unpack {
                let dir = self.make_dir(view, &item.to)?;
                self.unpack(&item.from, &dir)?;
                continue;
            }
            let md = std::fs::symlink_metadata(&item.from).map_err(io(&item.from))?;
            if md.is_dir() {
                let dir = self.make_dir(view, &item.to)?;
                self.copy_tree(&item.from, &dir, &item.exclude, item.link, &mut links)?;
            } else {
                let dest = self.file_dest(view, &item.from, &item.to)?;
                self.copy_entry(&item.from, &md, &dest, item.link, &mut links)?;
            }
        }
        Ok(())
    }

    /// Unpacks archive `from` into `dir` (a changes-dir path), confined
    /// there by the layer extractor: a member's `..`, absolute path or
    /// symlinked parent never reaches outside it.
    fn unpack(&self, from: &Path, dir: &Path) -> Res<()> {
        let mut head = Vec::new();
        let f = std::fs::File::open(from).map_err(io(from))?;
        std::io::Read::read_to_end(&mut std::io::Read::take(&f, 6), &mut head).map_err(io(from))?;
        let f = std::fs::File::open(from).map_err(io(from))?;
        // gzip and zstd the extractor knows (as layers are); xz and bzip2
        // only ADD takes.
        let f = shipyard_image::layer::compress::archive_decoder(f, &head);
        let mut x = shipyard_image::layer::extract::Extractor::new(dir).map_err(io(dir))?;
        x.apply_archive(f).map_err(|e| {
            format!(
                "{}: {}",
                from.display(),
                shipyard_image::error::chain_text(&e)
            )
        })?;
        x.finish().map_err(|e| {
            format!(
                "{}: {}",
                from.display(),
                shipyard_image::error::chain_text(&e)
            )
        })?;
        Ok(())
    }

    /// Writes an inline file at `dest` (a changes-dir path), replacing
    /// what is there.
    fn write_inline(&self, content: &str, dest: &Path) -> Res<()> {
        if let Ok(old) = std::fs::symlink_metadata(dest) {
            if old.is_dir() {
                return Err(format!(
                    "{}: a directory is in the way of an inline file",
                    dest.display()
                ));
            }
            std::fs::remove_file(dest).map_err(io(dest))?;
        }
        std::fs::write(dest, content).map_err(io(dest))?;
        let (u, g) = self.owner;
        std::os::unix::fs::lchown(dest, Some(u), Some(g))
            .map_err(|e| chown_err(dest, (u, g), e))?;
        let mode = self.mode.unwrap_or(0o644);
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode)).map_err(io(dest))?;
        shipyard_image::fsutil::set_mtime_ns(dest, self.mtime, 0);
        Ok(())
    }

    /// The changes-dir path of builder directory `to`, made (with its
    /// parents) where it does not exist; an existing one is kept as it is.
    fn make_dir(&self, view: &BuilderView, to: &Path) -> Res<PathBuf> {
        let to = normalize(to);
        let mut done = PathBuf::from("/");
        let mut comps: Vec<_> = to.components().skip(1).collect();
        comps.reverse();
        while let Some(c) = comps.pop() {
            let cand = done.join(c);
            match view.resolve(&cand, true) {
                Some(r) => {
                    self.copy_up(view, &r.path)?;
                    let host = self
                        .changes
                        .join(r.path.strip_prefix("/").unwrap_or(&r.path));
                    let md = std::fs::symlink_metadata(&host).map_err(io(&host))?;
                    if !md.is_dir() {
                        return Err(format!(
                            "{}: not a directory in the builder",
                            cand.display()
                        ));
                    }
                    done = r.path;
                }
                None => {
                    self.new_dir(&cand)?;
                    done = cand;
                }
            }
        }
        Ok(self.changes.join(done.strip_prefix("/").unwrap_or(&done)))
    }

    /// Makes builder directory `dir` (which the builder lacks: absent, or
    /// deleted by a step) in the changes directory, `0755`, owned by the
    /// copy's owner; where a
    /// step's deletion is marked, the new directory hides the old one's
    /// contents (opaque), as overlayfs does.
    fn new_dir(&self, dir: &Path) -> Res<()> {
        let host = self.changes.join(dir.strip_prefix("/").unwrap_or(dir));
        let whiteout = std::fs::symlink_metadata(&host).is_ok();
        if whiteout {
            std::fs::remove_file(&host).map_err(io(&host))?;
        }
        std::fs::create_dir(&host).map_err(io(&host))?;
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755))
            .map_err(io(&host))?;
        let (u, g) = self.owner;
        nix::unistd::chown(&host, Some(u.into()), Some(g.into()))
            .map_err(|e| chown_err(&host, (u, g), e.into()))?;
        if whiteout && !self.copy_mode {
            xattr_set(&host, "user.overlay.opaque", b"y")?;
        }
        Ok(())
    }

    /// Builder directory `dir` (resolved, existing) present in the
    /// changes directory: a base's directory is made there with its mode,
    /// owner and mtime (its parents first), as overlayfs copies it up.
    fn copy_up(&self, view: &BuilderView, dir: &Path) -> Res<()> {
        let mut at = PathBuf::from("/");
        for c in dir.components().skip(1) {
            at.push(c);
            let host = self.changes.join(at.strip_prefix("/").unwrap_or(&at));
            if std::fs::symlink_metadata(&host).is_ok() {
                continue;
            }
            let loc = view
                .locate(&at)
                .ok_or_else(|| format!("{}: not in the builder", at.display()))?;
            if loc.layer == Layer::Changes {
                continue;
            }
            let md = view.metadata(&loc).map_err(io(&at))?;
            std::fs::create_dir(&host).map_err(io(&host))?;
            std::fs::set_permissions(&host, std::fs::Permissions::from_mode(md.mode() & 0o7777))
                .map_err(io(&host))?;
            nix::unistd::chown(&host, Some(md.uid().into()), Some(md.gid().into()))
                .map_err(|e| format!("{}: {e}", host.display()))?;
            shipyard_image::fsutil::set_mtime_ns(&host, md.mtime(), md.mtime_nsec());
        }
        Ok(())
    }

    /// Where a file copied to builder path `to` goes in the changes
    /// directory: `to` itself, or inside it when it is a directory.
    fn file_dest(&self, view: &BuilderView, from: &Path, to: &Path) -> Res<PathBuf> {
        let to = normalize(to);
        if let Some(r) = view.resolve(&to, true) {
            if let Some(loc) = view.locate(&r.path) {
                if view.metadata(&loc).map(|m| m.is_dir()).unwrap_or(false) {
                    let dir = self.make_dir(view, &to)?;
                    let name = from.file_name().ok_or("a source without a name")?;
                    return Ok(dir.join(name));
                }
            }
        }
        let parent = to.parent().unwrap_or(Path::new("/"));
        let name = to
            .file_name()
            .ok_or_else(|| format!("{}: not a file path", to.display()))?;
        Ok(self.make_dir(view, parent)?.join(name))
    }

    /// Copies a directory's contents into `dest` (a changes-dir path).
    fn copy_tree(
        &self,
        from: &Path,
        dest: &Path,
        exclude: &[PathBuf],
        link: bool,
        links: &mut Links,
    ) -> Res<()> {
        let mut dirs = Vec::new();
        let mut walk = walkdir::WalkDir::new(from)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter();
        while let Some(e) = walk.next() {
            let e = e.map_err(|e| e.to_string())?;
            let rel = e.path().strip_prefix(from).map_err(|e| e.to_string())?;
            if exclude.iter().any(|x| x == rel) {
                if e.file_type().is_dir() {
                    walk.skip_current_dir();
                }
                continue;
            }
            let target = dest.join(rel);
            let md = e.path().symlink_metadata().map_err(io(e.path()))?;
            if md.is_dir() {
                match std::fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        std::fs::remove_file(&target).map_err(io(&target))?;
                        std::fs::create_dir(&target).map_err(io(&target))?;
                    }
                    Err(_) => std::fs::create_dir(&target).map_err(io(&target))?,
                }
                dirs.push((target, md));
            } else {
                self.copy_entry(e.path(), &md, &target, link, links)?;
            }
        }
        // Directories last, deepest first: writing into one changes its mtime.
        for (target, md) in dirs.into_iter().rev() {
            self.set_meta(&target, &md, false)?;
        }
        Ok(())
    }

    /// Copies one file or symlink to `dest` (a changes-dir path),
    /// replacing what is there.
    fn copy_entry(
        &self,
        from: &Path,
        md: &std::fs::Metadata,
        dest: &Path,
        link: bool,
        links: &mut Links,
    ) -> Res<()> {
        if let Ok(old) = std::fs::symlink_metadata(dest) {
            if old.is_dir() {
                return Err(format!(
                    "{}: a directory is in the way of the file {}",
                    dest.display(),
                    from.display()
                ));
            }
            std::fs::remove_file(dest).map_err(io(dest))?;
        }
        let ft = md.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(from).map_err(io(from))?;
            std::os::unix::fs::symlink(&target, dest).map_err(io(dest))?;
            return self.set_meta(dest, md, true);
        }
        if !ft.is_file() {
            // Devices, fifos and sockets of a context are not copied, as
            // with Docker.
            return Ok(());
        }
        // A file with other names copied by this same COPY becomes one
        // more name of the first copy, as BuildKit and buildah keep them.
        if md.nlink() > 1 {
            if let Some(first) = links.get(&(md.dev(), md.ino())) {
                return std::fs::hard_link(first, dest).map_err(io(dest));
            }
            links.insert((md.dev(), md.ino()), dest.to_path_buf());
        }
        // Another file system (EXDEV) or a link count at its limit: copy.
        if link && self.same_entry(from, md) && std::fs::hard_link(from, dest).is_ok() {
            return Ok(());
        }
        std::fs::copy(from, dest).map_err(io(from))?;
        self.set_meta(dest, md, false)
    }

    /// Whether source file `from` is already the entry a copy would make:
    /// this copy's owner, its mode, and no xattrs (a copy has none; a
    /// rootless owner record among them would give the file another
    /// owner in the layer). The mtime is the source's either way.
    fn same_entry(&self, from: &Path, md: &std::fs::Metadata) -> bool {
        let mode = md.mode() & 0o7777;
        (md.uid(), md.gid()) == self.owner
            && self.mode.is_none_or(|m| m == mode)
            && xattr::list(from).is_ok_and(|mut l| l.next().is_none())
    }

    /// Owner, mode and mtime of a copied entry.
    fn set_meta(&self, p: &Path, md: &std::fs::Metadata, link: bool) -> Res<()> {
        let (u, g) = self.owner;
        std::os::unix::fs::lchown(p, Some(u), Some(g)).map_err(|e| chown_err(p, (u, g), e))?;
        if !link {
            let mode = self.mode.unwrap_or(md.mode() & 0o7777);
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(io(p))?;
        }
        shipyard_image::fsutil::try_set_mtime_ns(p, md.mtime(), md.mtime_nsec()).map_err(io(p))
    }
}

/// The first copy of each source file with several names, by (device,
/// inode): the later names are linked to it.
type Links = std::collections::HashMap<(u64, u64), PathBuf>;

/// Sets an xattr on a directory.
fn xattr_set(p: &Path, name: &str, value: &[u8]) -> Res<()> {
    xattr::set(p, name, value).map_err(|e| format!("{}: setting {name}: {e}", p.display()))
}
