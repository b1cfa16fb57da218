//! `oci-archive:` writer: the image's blobs, an `index.json` naming it and
//! `oci-layout`, in a tar that podman, skopeo and containerd load.

use super::{append_blob, closure, invalid, Result, TarOut};
use crate::oci::layout::{Layout, LayoutError, REF_NAME};
use crate::oci::{canonical, media};
use oci_spec::image::Descriptor;
use std::collections::HashMap;
use std::path::Path;

/// Writes the image or index `desc` of `layout` to `file`, tagged `tag`.
pub fn export(layout: &Layout, desc: &Descriptor, tag: Option<&str>, file: &Path) -> Result<()> {
    let mut top = desc.clone();
    let mut ann = HashMap::new();
    if let Some(t) = tag {
        crate::oci::layout::validate_tag(t)?;
        ann.insert(REF_NAME.to_string(), t.to_string());
    }
    top.set_annotations((!ann.is_empty()).then_some(ann));
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [top],
    });
    let index = canonical::to_vec(&index).map_err(|e| invalid(file, e.to_string()))?;
    let mut blobs = closure(layout, desc)?;
    blobs.sort_by_key(|b| b.digest().to_string());
    let mut out = TarOut::create(file)?;
    let layout_marker = br#"{"imageLayoutVersion":"1.0.0"}"#;
    out.file("oci-layout", layout_marker.len() as u64, &layout_marker[..])?;
    out.file("index.json", index.len() as u64, &index[..])?;
    out.dir("blobs/")?;
    out.dir("blobs/sha256/")?;
    for b in &blobs {
        let d = media::digest_of(b).map_err(LayoutError::from)?;
        append_blob(
            &mut out,
            layout,
            &format!("blobs/sha256/{}", d.hex()),
            &d,
            b.size(),
        )?;
    }
    out.commit()
}
