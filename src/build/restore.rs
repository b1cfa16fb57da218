//! Restore: cached rule layers put back into the builder's changes
//! directory instead of running their rules (the reverse of
//! [`super::capture`]). Runs as root of the build's user namespace, so
//! owners come back as the rules left them and overlay whiteouts (0/0
//! character devices, which the kernel lets a user namespace create) are
//! recreated.

use serde::{Deserialize, Serialize};
use shipyard_image::layer::extract::Extractor;
use shipyard_image::oci::layout::Layout;
use shipyard_image::rootfs::walk::{walk, Hashing};
use std::path::PathBuf;

/// A restore to run in the builder's user namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreJob {
    pub changes: PathBuf,
    /// Rewritten afterwards: the manifest of `changes` (see capture).
    pub snapshot: PathBuf,
    /// Copy mode: the base trees to copy in first (topmost first), and
    /// the marker that says the copy was made.
    pub copy_from: Vec<PathBuf>,
    pub copy_marker: Option<PathBuf>,
    pub cache_layout: PathBuf,
    /// (layer, diff_id), oldest first.
    pub layers: Vec<(oci_spec::image::Descriptor, String)>,
}

impl crate::sandbox::job::InNamespace for RestoreJob {
    const KIND: &'static str = "restore";

    fn run(&self) -> Result<(), String> {
        if let Some(marker) = &self.copy_marker {
            if !marker.exists() {
                for l in self.copy_from.iter().rev() {
                    shipyard_image::fsutil::copy_tree(l, &self.changes)
                        .map_err(|x| format!("{}: {}", x.path.display(), x.source))?;
                }
                std::fs::write(marker, b"").map_err(|e| format!("{}: {e}", marker.display()))?;
            }
        }
        let layout = Layout::open(&self.cache_layout).map_err(|e| e.to_string())?;
        let mut ex = Extractor::new(&self.changes).map_err(|e| e.to_string())?;
        for (desc, diff_id) in &self.layers {
            ex.apply_layer(&layout, desc, diff_id).map_err(|e| {
                format!(
                    "restoring a cached rule: {}",
                    shipyard_image::error::chain_text(&e)
                )
            })?;
        }
        ex.finish()
            .map_err(|e| shipyard_image::error::chain_text(&e))?;
        let tree = walk(&self.changes, Hashing::None)
            .map_err(|e| shipyard_image::error::chain_text(&e))?;
        super::capture::write_snapshot(&self.snapshot, &tree.manifest)
    }
}
