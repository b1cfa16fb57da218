//! The local cache shared by every build and pull of one user:
//! `$XDG_CACHE_HOME/shipyard` (else `~/.cache/shipyard`).
//!
//! - `oci/` is an OCI layout holding every blob pulled from a registry or
//!   read from an archive, so a second pull fetches only the manifest and
//!   builds stack on bases without copying them.
//! - `refs/` remembers which manifest a registry tag named when it was last
//!   pulled (for `--pull=missing|never`).
//! - `homes/` remembers, per registry, one repository known to hold a blob,
//!   so a push to another repository can mount it instead of uploading.
//! - `rootfs/` holds unpacked builder bases (see `build::base`).
//!
//! Whoever opens the cache holds its layout's writer lock shared for as
//! long as the [`Cache`] (or a clone of its layout) lives: a pull checks
//! which blobs are there, fetches the others and then records the tag, and
//! `cache prune`, which takes the lock exclusively, must not remove blobs
//! or temp files in between.

use crate::fsutil::IfExists;
use crate::oci::digest::Digest;
use crate::oci::layout::{Layout, LayoutError};
use crate::reference::RegistryRef;
use oci_spec::image::Descriptor;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
/// Why the shared cache could not be used.
pub enum CacheError {
    #[error("no cache directory: set XDG_CACHE_HOME or HOME")]
    /// Neither XDG_CACHE_HOME nor HOME says where the cache lives.
    NoHome,
    #[error(transparent)]
    /// The cache's layout failed.
    Layout(#[from] LayoutError),
}

/// `$XDG_CACHE_HOME/shipyard`, else `~/.cache/shipyard`.
pub fn cache_dir() -> Result<PathBuf, CacheError> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("shipyard"));
    }
    let home = std::env::var_os("HOME")
        .filter(|x| !x.is_empty())
        .ok_or(CacheError::NoHome)?;
    Ok(PathBuf::from(home).join(".cache").join("shipyard"))
}

/// Where the cache's OCI layout lives under a cache root.
fn layout_path(root: &Path) -> PathBuf {
    root.join("oci")
}

/// Whether `layout` is the user's cache (whose blobs were verified on the
/// way in), without creating the cache to find out.
pub(crate) fn is_cache_layout(layout: &Layout) -> bool {
    cache_dir().is_ok_and(|d| layout_path(&d) == layout.root())
}

/// The shared blob cache and its records.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
    /// The layout holding the cached blobs, shared by every image pulled or imported.
    pub layout: Layout,
}

/// A file name for an arbitrary key (names and repositories contain `/`).
fn key_file(dir: &Path, key: &str) -> PathBuf {
    dir.join(Digest::of(key.as_bytes()).hex())
}

/// Writes a file of the cache atomically and durably (see
/// [`crate::fsutil::write_atomic`]); cache records stay private to
/// their user.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::fsutil::write_atomic(path, bytes, 0o600, IfExists::Replace)
}

/// Writes a small record atomically; records are hints, so a failure to
/// write one is logged, not fatal.
fn write_record(path: &Path, text: &str) {
    if let Err(e) = write_private(path, text.as_bytes()) {
        tracing::warn!("cache record {}: {e}", path.display());
    }
}

impl Cache {
    /// Opens the user's cache, creating it on first use.
    pub fn open() -> Result<Cache, CacheError> {
        Cache::at(cache_dir()?)
    }

    /// Opens the cache at `root` (shared: see the module documentation).
    pub fn at(root: PathBuf) -> Result<Cache, CacheError> {
        let cache = Self::unlocked(root)?;
        cache.layout.hold()?;
        Ok(cache)
    }

    /// Opens the cache at `root` for pruning: waits for every process
    /// using it and keeps new ones out while the returned lock is held.
    pub fn exclusive(root: PathBuf) -> Result<(Cache, std::fs::File), CacheError> {
        let cache = Self::unlocked(root)?;
        let lock = cache.layout.exclusive()?;
        Ok((cache, lock))
    }

    fn unlocked(root: PathBuf) -> Result<Cache, CacheError> {
        let layout = Layout::open_or_create(layout_path(&root))?;
        Ok(Cache { root, layout })
    }

    /// The cache directory (`$XDG_CACHE_HOME/shipyard`), for messages that tell the user where to look.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Remembers that `r` (a tag) named `desc`.
    pub(crate) fn record_ref(&self, r: &RegistryRef, desc: &Descriptor) {
        match serde_json::to_string(desc) {
            Ok(text) => write_record(&key_file(&self.root.join("refs"), &r.to_string()), &text),
            Err(e) => tracing::warn!("cache record for {r}: {e}"),
        }
    }

    /// What `r` named when last pulled, if its manifest is still cached.
    pub(crate) fn lookup_ref(&self, r: &RegistryRef) -> Option<Descriptor> {
        if let Some(d) = &r.digest {
            let digest: Digest = d.parse().ok()?;
            let bytes = self.layout.read_blob(&digest, None).ok()?;
            return Some(Descriptor::new(
                crate::oci::media::sniff_manifest_type(&bytes),
                bytes.len() as u64,
                crate::oci::media::to_spec_digest(&digest),
            ));
        }
        let text =
            std::fs::read_to_string(key_file(&self.root.join("refs"), &r.to_string())).ok()?;
        let desc: Descriptor = serde_json::from_str(&text).ok()?;
        let digest = crate::oci::media::digest_of(&desc).ok()?;
        self.layout.has_blob(&digest).then_some(desc)
    }

    /// Remembers that `repository` on `registry` holds `digest`.
    pub(crate) fn note_home(&self, registry: &str, repository: &str, digest: &Digest) {
        let dir = self
            .root
            .join("homes")
            .join(Digest::of(registry.as_bytes()).hex());
        write_record(&dir.join(digest.hex()), repository);
    }

    /// A repository on `registry` known to hold `digest`.
    pub(crate) fn home_of(&self, registry: &str, digest: &Digest) -> Option<String> {
        let dir = self
            .root
            .join("homes")
            .join(Digest::of(registry.as_bytes()).hex());
        std::fs::read_to_string(dir.join(digest.hex()))
            .ok()
            .filter(|s| !s.is_empty())
    }
}
