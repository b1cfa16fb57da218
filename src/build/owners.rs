//! The base's owners, made real in a rootless builder.
//!
//! A user without privileges unpacks a base image with its own id, and
//! keeps each file's owner from the image in the `user.rootlesscontainers`
//! xattr (see `shipyard_image::rootfs::walk`): every layer and tapeout gets
//! the image's owners from it. Inside the build's user namespace, though,
//! the files are root's, so a step that runs as the image's `USER` could
//! not write its own home. With a subordinate id range those ids exist in
//! the namespace: this job, run there before the builder's first rule,
//! copies each base entry whose owner is not root's into the changes
//! directory with its real owner, as overlayfs would copy it up on a
//! `chown` (parents too, with their own owners, modes and mtimes). The
//! snapshot the next capture diffs against is taken after, so the copies
//! are in no rule's layer unless a rule changes them. Without a range the
//! ids cannot be mapped, and the job is not run.

use serde::{Deserialize, Serialize};
use shipyard_image::rootfs::entry::{Kind, RelPath};
use shipyard_image::rootfs::manifest::Manifest;
use shipyard_image::rootfs::walk::{ownership_record_path, walk, Hashing, ROOTLESS_XATTR};
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Gives the base's files their owners, in the builder's user namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OwnersJob {
    /// The base tree (the unpacked image), read-only.
    pub base: PathBuf,
    /// The builder's changes directory (the overlay upper dir), empty.
    pub changes: PathBuf,
    /// Where the snapshot of `changes` goes when anything was copied.
    pub snapshot: PathBuf,
}

type Res<T> = Result<T, String>;

fn io(what: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", what.display())
}

impl crate::sandbox::job::InNamespace for OwnersJob {
    const KIND: &'static str = "owners";

    fn run(&self) -> Res<()> {
        // The owners the image gives, against the ones on disk: from the
        // ownership record an unpack leaves beside the tree (read, not
        // walked: a walk reads every entry's xattrs, the bulk of this
        // job's time on a distro base), else from the xattrs of a tree
        // without one.
        let record = ownership_record_path(&self.base);
        let image = match std::fs::File::open(&record) {
            Ok(f) => Manifest::parse(std::io::BufReader::new(f), &record.display().to_string())
                .map_err(|e| e.to_string())?,
            Err(x) if x.kind() == std::io::ErrorKind::NotFound => {
                walk(&self.base, Hashing::None)
                    .map_err(|e| shipyard_image::error::chain_text(&e))?
                    .manifest
            }
            Err(x) => return Err(io(&record)(x)),
        };
        let mut copier = Copier {
            job: self,
            image: &image,
            made: Vec::new(),
            links: HashMap::new(),
        };
        let mut any = false;
        for e in image.entries.values() {
            let rel = e.path.to_path();
            let src = self.base.join(rel);
            let md = match src.symlink_metadata() {
                Ok(md) => md,
                // Recorded only (a device node the user could not make):
                // nothing on disk to give an owner.
                Err(x) if x.kind() == std::io::ErrorKind::NotFound => continue,
                Err(x) => return Err(io(&src)(x)),
            };
            let ft = md.file_type();
            let same_kind = match e.kind {
                Kind::Dir => ft.is_dir(),
                Kind::File | Kind::Hardlink => ft.is_file(),
                Kind::Symlink => ft.is_symlink(),
                _ => false,
            };
            let want = (e.uid as u32, e.gid as u32);
            if !same_kind || want == (md.uid(), md.gid()) {
                continue;
            }
            copier.parents(rel)?;
            copier.entry(rel, &md, want)?;
            any = true;
        }
        copier.finish()?;
        if any {
            let tree = walk(&self.changes, Hashing::None)
                .map_err(|e| shipyard_image::error::chain_text(&e))?;
            super::capture::write_snapshot(&self.snapshot, &tree.manifest)?;
        }
        Ok(())
    }
}

struct Copier<'a> {
    job: &'a OwnersJob,
    /// The base as the image has it (owners included).
    image: &'a Manifest,
    /// Directories made, with their base metadata, for the mtimes last.
    made: Vec<(PathBuf, std::fs::Metadata)>,
    /// The first copy of each base file with several names.
    links: HashMap<(u64, u64), PathBuf>,
}

impl Copier<'_> {
    /// Makes the parents of `rel` in the changes directory, as in the base.
    fn parents(&mut self, rel: &Path) -> Res<()> {
        let mut at = PathBuf::new();
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        for c in parent.components() {
            at.push(c);
            let dest = self.job.changes.join(&at);
            if dest.symlink_metadata().is_ok() {
                continue;
            }
            let src = self.job.base.join(&at);
            let md = src.symlink_metadata().map_err(io(&src))?;
            if !md.is_dir() {
                return Err(format!("{}: not a directory in the base", src.display()));
            }
            let owner = match self.image.get(&RelPath::new(at.as_os_str().as_bytes())) {
                Some(e) => (e.uid as u32, e.gid as u32),
                None => (md.uid(), md.gid()),
            };
            self.dir(&dest, &md, owner)?;
        }
        Ok(())
    }

    fn dir(&mut self, dest: &Path, md: &std::fs::Metadata, (u, g): (u32, u32)) -> Res<()> {
        std::fs::create_dir(dest).map_err(io(dest))?;
        std::os::unix::fs::lchown(dest, Some(u), Some(g)).map_err(io(dest))?;
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(io(dest))?;
        self.made.push((dest.to_path_buf(), md.clone()));
        Ok(())
    }

    /// Copies base entry `rel` with owner `owner`.
    fn entry(&mut self, rel: &Path, md: &std::fs::Metadata, owner: (u32, u32)) -> Res<()> {
        let src = self.job.base.join(rel);
        let dest = self.job.changes.join(rel);
        let ft = md.file_type();
        if ft.is_dir() {
            if dest.symlink_metadata().is_ok() {
                // Made already as a parent, with this owner.
                return Ok(());
            }
            return self.dir(&dest, md, owner);
        }
        if ft.is_symlink() {
            let target = std::fs::read_link(&src).map_err(io(&src))?;
            std::os::unix::fs::symlink(&target, &dest).map_err(io(&dest))?;
            std::os::unix::fs::lchown(&dest, Some(owner.0), Some(owner.1)).map_err(io(&dest))?;
            return mtime(&dest, md);
        }
        if !ft.is_file() {
            // Devices, fifos and sockets owned by a user: left as they
            // are (root's inside the builder).
            return Ok(());
        }
        if md.nlink() > 1 {
            if let Some(first) = self.links.get(&(md.dev(), md.ino())) {
                return std::fs::hard_link(first, &dest).map_err(io(&dest));
            }
            self.links.insert((md.dev(), md.ino()), dest.clone());
        }
        std::fs::copy(&src, &dest).map_err(io(&src))?;
        std::os::unix::fs::lchown(&dest, Some(owner.0), Some(owner.1)).map_err(io(&dest))?;
        // After the chown, which clears set-id bits.
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(io(&dest))?;
        for name in xattr::list(&src).map_err(io(&src))? {
            if name.as_encoded_bytes() == ROOTLESS_XATTR {
                continue;
            }
            if let Some(v) = xattr::get(&src, &name).map_err(io(&src))? {
                xattr::set(&dest, &name, &v).map_err(io(&dest))?;
            }
        }
        mtime(&dest, md)
    }

    /// The directories' mtimes, deepest first (writing into one changes
    /// its mtime).
    fn finish(&mut self) -> Res<()> {
        self.made.sort_by(|a, b| b.0.cmp(&a.0));
        for (d, md) in &self.made {
            mtime(d, md)?;
        }
        Ok(())
    }
}

fn mtime(p: &Path, md: &std::fs::Metadata) -> Res<()> {
    shipyard_image::fsutil::try_set_mtime_ns(p, md.mtime(), md.mtime_nsec()).map_err(io(p))
}
