//! Builder bases: how a step's root is made from `host`, `rootfs:DIR`,
//! `oci:DIR[:TAG]` or `scratch`, and the cache of unpacked bases.

use super::error::{BuildError, Doing};
use crate::sandbox::host_dirs;
use crate::sandbox::job::Root;
use shipyard_image::oci::image::Image;
use shipyard_image::oci::layout::Layout;
use shipyard_image::reference::Reference;
use shipyard_image::transport;
use std::path::{Path, PathBuf};

type Result<T, E = BuildError> = std::result::Result<T, E>;

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

/// Prepares a builder base with the state dirs it needs under `state`;
/// images are read as `o` says.
pub fn prepare(from: &str, state: &Path, o: &transport::Options) -> Result<Base> {
    let (root, lower) = base_root(from, state, o)?;
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
        let (_, image) = open_image(from, o)?;
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
pub fn base_root(
    from: &str,
    state: &Path,
    o: &transport::Options,
) -> Result<(Root, Option<PathBuf>)> {
    let overlay = |lower: PathBuf| -> Result<(Root, Option<PathBuf>)> {
        let (upper, work, merged) = (
            state.join("upper"),
            state.join("work"),
            state.join("merged"),
        );
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d).doing(|| format!("creating {}", d.display()))?;
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
        std::fs::create_dir_all(&r).doing(|| format!("creating {}", r.display()))?;
        return Ok((Root::Dir(r), None));
    }
    if let Some(dir) = from.strip_prefix("rootfs:") {
        let p = std::fs::canonicalize(dir).map_err(|source| BuildError::NoBaseDir {
            from: from.to_string(),
            source,
        })?;
        if !p.is_dir() {
            return Err(BuildError::BaseNotADir(from.to_string()));
        }
        return overlay(p);
    }
    if shipyard_image::reference::Reference::looks_like_reference(from) {
        return overlay(cached_unpack(from, o)?);
    }
    Err(BuildError::UnknownBase(from.to_string()))
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
pub fn cached_unpack(reference: &str, o: &transport::Options) -> Result<PathBuf> {
    let (layout, image) = open_image(reference, o)?;
    let chain: Vec<String> = image.config.rootfs().diff_ids().clone();
    let key = shipyard_image::oci::digest::Digest::of(chain.join("\n").as_bytes());
    let dir = cache_dir()?.join("rootfs").join(key.hex());
    if !dir.is_dir() {
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).doing(|| format!("creating {}", parent.display()))?;
        match shipyard_image::layer::extract::unpack(&layout, &image, &dir) {
            Ok(_) => {}
            // Another build unpacked it meanwhile: use theirs.
            Err(_) if dir.is_dir() => {}
            Err(e) => return Err(e).doing(|| format!("unpacking builder base {reference}")),
        }
    } else if let Ok(d) = std::fs::File::open(&dir) {
        // Last used: now (for `cache prune --keep-duration`).
        let _ = d.set_modified(std::time::SystemTime::now());
    }
    Ok(dir)
}

/// The user's cache directory (see [`shipyard_image::cache`]).
pub fn cache_dir() -> Result<PathBuf> {
    shipyard_image::cache::cache_dir().doing(|| "finding the cache directory".into())
}

/// Opens the image a spec names (a builder or runtime base): `oci:`
/// directly, registries and archives through the shared cache, as the
/// build's transport options say.
pub fn open_image(reference: &str, o: &transport::Options) -> Result<(Layout, Image)> {
    let r = Reference::parse(reference).doing(|| format!("image {reference}"))?;
    transport::open_image(&r, o).doing(|| format!("opening {reference}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rootfs_base_must_be_a_directory() {
        let t = tempfile::tempdir().unwrap();
        let o = transport::Options::default();
        let missing = format!("rootfs:{}", t.path().join("nope").display());
        let e = base_root(&missing, t.path(), &o).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("builder base {missing}: no such directory")
        );
        assert!(std::error::Error::source(&e).is_some());
        let file = t.path().join("f");
        std::fs::write(&file, "").unwrap();
        let file = format!("rootfs:{}", file.display());
        let e = base_root(&file, t.path(), &o).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("builder base {file}: not a directory")
        );
    }
}
