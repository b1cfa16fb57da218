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
use super::{Doing, PodError};
use shipyard_image::layer::extract::Extractor;
use shipyard_image::oci::layout::Layout;
use std::path::{Path, PathBuf};

/// Unpacks `pod` (read from `layout`) into the new or empty directory
/// `dest`, which appears whole or not at all.
pub fn unpack(layout: &Layout, pod: &Pod, dest: &Path) -> Result<(), PodError> {
    if std::fs::read_dir(dest).is_ok_and(|mut d| d.next().is_some()) {
        return Err(PodError::DestNotEmpty(dest.to_path_buf()));
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).doing(|| format!("creating {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".shipyard-pod-")
        .tempdir_in(&parent)
        .doing(|| format!("creating a directory in {}", parent.display()))?;
    let json = serde_json::to_vec_pretty(&pod.definition).doing(|| "encoding pod.json".into())?;
    std::fs::write(tmp.path().join("pod.json"), json).doing(|| "writing pod.json".into())?;
    let images = Layout::open_or_create(tmp.path().join("images"))
        .doing(|| "creating the images layout".into())?;
    for (name, d) in &pod.members {
        shipyard_image::transport::copy_closure(layout, d, &images)
            .doing(|| format!("copying the image of container {name}"))?;
        images
            .tag(name, d)
            .doing(|| format!("tagging the image of container {name}"))?;
    }
    let vdir = tmp.path().join("volumes");
    std::fs::create_dir_all(&vdir).doing(|| "creating volumes/".into())?;
    let mut ex = Extractor::new(&vdir).doing(|| "opening volumes/".into())?;
    for v in &pod.definition.volumes {
        let l = pod
            .layers
            .get(&v.name)
            .ok_or_else(|| PodError::NoLayer(v.name.clone()))?;
        ex.apply_layer(layout, l, &v.diff_id)
            .doing(|| format!("unpacking volume {}", v.name))?;
    }
    let (manifest, shortfalls) = ex.finish().doing(|| "finishing the volumes".into())?;
    if shortfalls.any() {
        // Owners this user cannot give: recorded beside the tree, as
        // `shipyard unpack` does.
        let path = shipyard_image::rootfs::walk::ownership_record_path(&vdir);
        let what = || format!("writing {}", path.display());
        let f = std::fs::File::create(&path).doing(what)?;
        manifest.write_to(std::io::BufWriter::new(f)).doing(what)?;
    }
    let _ = std::fs::remove_dir(dest);
    let kept = tmp.keep();
    std::fs::rename(&kept, dest)
        .inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&kept);
        })
        .doing(|| format!("moving the unpacked pod to {}", dest.display()))?;
    Ok(())
}
