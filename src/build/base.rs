//! Builder bases: how a step's root is made from `host`, `rootfs:DIR`,
//! `oci:DIR[:TAG]` or `scratch`, and the cache of unpacked bases.

use crate::sandbox::host_dirs;
use crate::sandbox::job::Root;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// A builder base made ready: its root, its read-only tree and what it
/// is, for cache keys.
pub struct Base {
    pub root: Root,
    /// The read-only base tree (for tapeout lookups), if any.
    pub lower: Option<PathBuf>,
    /// What identifies this base's content: an image's manifest digest, a
    /// tree's manifest digest, the host's identity (see
    /// [`super::key::host_identity`]) or `scratch`.
    pub identity: String,
}

/// Prepares a builder base with the state dirs it needs under `state`.
pub fn prepare(from: &str, state: &Path) -> Result<Base> {
    let (root, lower) = base_root(from, state)?;
    let identity = if from == "host" {
        super::key::host_identity(&host_dirs())
    } else if from == "scratch" {
        "scratch".to_string()
    } else if from.starts_with("rootfs:") {
        let dir = lower.as_deref().unwrap_or(Path::new("."));
        let stat = shipyard_image::cache::cache_dir()
            .ok()
            .map(|c| super::stepcache::stat_cache_path(&c, dir));
        super::key::tree_identity(dir, stat.as_deref())?
    } else {
        let (_, image) = crate::cli::open_image(from)?;
        image.digest.to_string()
    };
    Ok(Base {
        root,
        lower,
        identity,
    })
}

/// The root of a builder base, with the state dirs it needs under `state`.
/// Also returns the read-only base tree (for tapeout lookups), if any.
pub fn base_root(from: &str, state: &Path) -> Result<(Root, Option<PathBuf>)> {
    let overlay = |lower: PathBuf| -> Result<(Root, Option<PathBuf>)> {
        let (upper, work, merged) = (
            state.join("upper"),
            state.join("work"),
            state.join("merged"),
        );
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d)?;
        }
        Ok((
            Root::Overlay {
                lowers: vec![lower.clone()],
                upper,
                work,
                merged,
            },
            Some(lower),
        ))
    };
    if from == "host" {
        return Ok((
            Root::Host {
                dirs: host_dirs(),
                state: state.to_path_buf(),
            },
            None,
        ));
    }
    if from == "scratch" {
        let r = state.join("upper");
        std::fs::create_dir_all(&r)?;
        return Ok((Root::Dir(r), None));
    }
    if let Some(dir) = from.strip_prefix("rootfs:") {
        let p = std::fs::canonicalize(dir)
            .with_context(|| format!("builder base {from}: no such directory"))?;
        if !p.is_dir() {
            bail!("builder base {from}: not a directory");
        }
        return overlay(p);
    }
    if shipyard_image::reference::Reference::looks_like_reference(from) {
        return overlay(cached_unpack(from)?);
    }
    bail!("builder base {from:?}: expected host, rootfs:DIR, scratch or an image reference")
}

/// The directory a step's changes land in.
pub fn changes_dir(root: &Root) -> PathBuf {
    match root {
        Root::Overlay { upper, .. } => upper.clone(),
        Root::Dir(d) => d.clone(),
        Root::Host { state, .. } => state.join("root"),
    }
}

/// Unpacks an image once into the cache, keyed by its layer chain (the
/// diff_ids), and returns the tree. Later builds reuse it read-only.
pub fn cached_unpack(reference: &str) -> Result<PathBuf> {
    let (layout, image) = crate::cli::open_image(reference)?;
    let chain: Vec<String> = image.config.rootfs().diff_ids().clone();
    let key = shipyard_image::oci::digest::Digest::of(chain.join("\n").as_bytes());
    let dir = cache_dir()?.join("rootfs").join(key.hex());
    if !dir.is_dir() {
        std::fs::create_dir_all(dir.parent().unwrap_or(Path::new(".")))?;
        match shipyard_image::layer::extract::unpack(&layout, &image, &dir) {
            Ok(_) => {}
            // Another build unpacked it meanwhile: use theirs.
            Err(_) if dir.is_dir() => {}
            Err(e) => return Err(e).with_context(|| format!("unpacking builder base {reference}")),
        }
    } else if let Ok(d) = std::fs::File::open(&dir) {
        // Last used: now (for `cache prune --keep-duration`).
        let _ = d.set_modified(std::time::SystemTime::now());
    }
    Ok(dir)
}

/// The user's cache directory (see [`shipyard_image::cache`]).
pub fn cache_dir() -> Result<PathBuf> {
    Ok(shipyard_image::cache::cache_dir()?)
}
