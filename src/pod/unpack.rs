//! `shipyard pod unpack`: a deployable directory.
//!
//! ```text
//! DEST/pod.json          the definition (containers, image digests, mounts)
//! DEST/images/           one OCI layout, each member tagged by container name
//! DEST/volumes/NAME/     each volume's files (`config` holds the files)
//! ```
//!
//! Volumes are extracted with the same safe extractor as images (openat2,
//! nothing outside DEST), into a temp directory renamed onto DEST at the end.

use super::read::Pod;
use anyhow::{bail, Context, Result};
use shipyard_image::layer::extract::Extractor;
use shipyard_image::oci::layout::Layout;
use std::path::{Path, PathBuf};

pub fn unpack(layout: &Layout, pod: &Pod, dest: &Path) -> Result<()> {
    if std::fs::read_dir(dest).is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "{}: exists and is not empty; choose a new directory",
            dest.display()
        );
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)?;
    let tmp = tempfile::Builder::new()
        .prefix(".shipyard-pod-")
        .tempdir_in(&parent)?;
    std::fs::write(
        tmp.path().join("pod.json"),
        serde_json::to_vec_pretty(&pod.definition)?,
    )?;
    let images = Layout::open_or_create(tmp.path().join("images"))?;
    for (name, d) in &pod.members {
        shipyard_image::transport::copy_closure(layout, d, &images)?;
        images.tag(name, d)?;
    }
    let vdir = tmp.path().join("volumes");
    std::fs::create_dir_all(&vdir)?;
    let mut ex = Extractor::new(&vdir)?;
    for v in &pod.definition.volumes {
        let l = pod
            .layers
            .get(&v.name)
            .with_context(|| format!("pod: volume {} has no layer", v.name))?;
        ex.apply_layer(layout, l, &v.diff_id)
            .with_context(|| format!("unpacking volume {}", v.name))?;
    }
    let (manifest, shortfalls) = ex.finish()?;
    if shortfalls.any() {
        // Owners this user cannot give: recorded beside the tree, as
        // `shipyard unpack` does.
        let f = std::fs::File::create(shipyard_image::rootfs::walk::ownership_record_path(&vdir))?;
        manifest.write_to(std::io::BufWriter::new(f))?;
    }
    let _ = std::fs::remove_dir(dest);
    let kept = tmp.keep();
    std::fs::rename(&kept, dest).map_err(|e| {
        let _ = std::fs::remove_dir_all(&kept);
        anyhow::anyhow!("{}: {e}", dest.display())
    })?;
    Ok(())
}
