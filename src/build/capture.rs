//! Capture: what one build rule changed in the builder, as a layer in the
//! cache. Runs as root of the build's user namespace (see the sandbox's
//! `Capture` action), where every file a rule wrote is readable and its
//! owner is the builder's.
//!
//! The layer is the delta of the builder's changes directory (the overlay
//! upper dir, or the copy) since the last capture or restore: added and
//! changed entries as they are on disk, overlay whiteouts and opaque
//! markers included, and entries that vanished as `.wh.` whiteouts. Put
//! back by [`super::restore`] on the same kind of builder, it recreates the
//! changes directory exactly (mtimes to the second).

use serde::{Deserialize, Serialize};
use shipyard_image::layer::generate::TarOptions;
use shipyard_image::oci::layout::Layout;
use shipyard_image::rootfs::manifest::Manifest;
use shipyard_image::rootfs::walk::{walk, Hashing};
use std::io::BufReader;
use std::path::{Path, PathBuf};

/// A capture to run in the builder's user namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaptureJob {
    /// The builder's changes directory.
    pub changes: PathBuf,
    /// The manifest of `changes` after the last capture or restore
    /// (replaced by this capture's).
    pub snapshot: PathBuf,
    /// Copy mode: the base trees the copy was made from (topmost first),
    /// which are what the first rule changed.
    pub lowers: Vec<PathBuf>,
    pub copy_mode: bool,
    /// The cache's OCI layout, where the layer blob goes.
    pub cache_layout: PathBuf,
    /// Where the result ([`Captured`]) is written as JSON.
    pub out: PathBuf,
}

/// A captured layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Captured {
    pub descriptor: oci_spec::image::Descriptor,
    pub diff_id: String,
}

/// The changes directory's state before the first rule.
fn initial(job: &CaptureJob) -> Result<Manifest, String> {
    let mut base = Manifest::default();
    if job.copy_mode {
        for l in job.lowers.iter().rev() {
            for (_, e) in walk(l, Hashing::None)
                .map_err(|e| shipyard_image::error::chain_text(&e))?
                .manifest
                .entries
            {
                base.insert(e);
            }
        }
    }
    Ok(base)
}

/// Reads a snapshot written by a capture or a restore.
pub fn read_snapshot(path: &Path) -> Option<Result<Manifest, String>> {
    let f = std::fs::File::open(path).ok()?;
    Some(Manifest::parse(BufReader::new(f), &path.display().to_string()).map_err(|e| e.to_string()))
}

/// Writes the snapshot of the changes directory as it is now.
pub fn write_snapshot(path: &Path, m: &Manifest) -> Result<(), String> {
    shipyard_image::cache::write_private(path, &m.to_text())
        .map_err(|e| format!("{}: {e}", path.display()))
}

impl crate::sandbox::job::InNamespace for CaptureJob {
    const KIND: &'static str = "capture";

    fn run(&self) -> Result<(), String> {
        let before = match read_snapshot(&self.snapshot) {
            Some(m) => m?,
            None => initial(self)?,
        };
        let tree = walk(&self.changes, Hashing::None)
            .map_err(|e| shipyard_image::error::chain_text(&e))?;
        let d = shipyard_image::rootfs::diff::diff(&tree, &before)
            .map_err(|e| shipyard_image::error::chain_text(&e))?;
        let layout = Layout::open(&self.cache_layout).map_err(|e| e.to_string())?;
        let out = shipyard_image::layer::write_layer(
            &layout,
            &d.changes,
            &self.changes,
            super::CACHE_COMPRESSION,
            Some(super::CACHE_LEVEL),
            &TarOptions { clamp_mtime: None },
        )
        .map_err(|e| {
            format!(
                "writing the rule's layer: {}",
                shipyard_image::error::chain_text(&e)
            )
        })?;
        write_snapshot(&self.snapshot, &tree.manifest)?;
        let res = Captured {
            descriptor: out.descriptor,
            diff_id: out.diff_id.to_string(),
        };
        let json = serde_json::to_vec(&res).map_err(|e| e.to_string())?;
        std::fs::write(&self.out, json).map_err(|e| format!("{}: {e}", self.out.display()))
    }
}
