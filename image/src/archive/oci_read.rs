//! `oci-archive:` reader: streams a tar of an OCI layout into a layout,
//! verifying every blob by its name, and picks the image by tag.

use super::{entry_name, invalid, io_at, read_small, Result};
use crate::oci::digest::Digest;
use crate::oci::image::Image;
use crate::oci::layout::{ref_name, Layout};
use oci_spec::image::{Descriptor, ImageIndex};
use std::io::BufReader;
use std::path::Path;

/// Reads `file` into `dest`; returns the descriptor of the image tagged
/// `tag` (or the only image when `tag` is `None`), without annotations.
pub fn import(file: &Path, tag: Option<&str>, dest: &Layout) -> Result<Descriptor> {
    let f = std::fs::File::open(file).map_err(io_at(file))?;
    let mut ar = tar::Archive::new(crate::layer::read::HeaderGuard::new(
        BufReader::with_capacity(1 << 20, f),
    ));
    let mut index_bytes = None;
    let mut saw_layout = false;
    for entry in ar.entries().map_err(io_at(file))? {
        let mut e = entry.map_err(io_at(file))?;
        let name = entry_name(file, &e.path_bytes())?;
        match e.header().entry_type() {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            other => {
                return Err(invalid(
                    file,
                    format!("entry {name:?} is a {other:?}; an OCI archive holds only files and directories"),
                ))
            }
        }
        if name == "index.json" {
            index_bytes = Some(read_small(file, &name, &mut e, 16 << 20)?);
        } else if name == "oci-layout" {
            let v = read_small(file, &name, &mut e, 4096)?;
            let v: serde_json::Value = serde_json::from_slice(&v)
                .map_err(|err| invalid(file, format!("oci-layout: {err}")))?;
            if v.get("imageLayoutVersion").and_then(|x| x.as_str()) != Some("1.0.0") {
                return Err(invalid(
                    file,
                    format!("oci-layout: unsupported version {v}"),
                ));
            }
            saw_layout = true;
        } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            let digest: Digest = format!("sha256:{hex}").parse().map_err(|_| {
                invalid(
                    file,
                    format!("entry {name:?} is not named by a sha256 digest"),
                )
            })?;
            if !dest.has_blob(&digest) {
                // put_reader verifies the content against the name.
                dest.put_reader(&mut e, Some(&digest))?;
            }
        } else {
            tracing::warn!("{}: ignoring {name:?}", file.display());
        }
    }
    if !saw_layout {
        return Err(invalid(
            file,
            "no oci-layout file: not an OCI archive (a docker archive? use docker-archive:)",
        ));
    }
    let index_bytes = index_bytes.ok_or_else(|| invalid(file, "no index.json"))?;
    let index: ImageIndex = serde_json::from_slice(&index_bytes)
        .map_err(|e| invalid(file, format!("index.json: {e}")))?;
    let tags: Vec<&str> = index.manifests().iter().filter_map(ref_name).collect();
    let chosen = match tag {
        Some(t) => index
            .manifests()
            .iter()
            .find(|m| ref_name(m) == Some(t))
            .ok_or_else(|| {
                invalid(
                    file,
                    format!("no image tagged {t:?}; tags: {}", tags.join(", ")),
                )
            })?,
        None if index.manifests().len() == 1 => &index.manifests()[0],
        None => {
            return Err(invalid(
                file,
                format!(
                    "holds {} images; name one with oci-archive:{}:TAG (tags: {})",
                    index.manifests().len(),
                    file.display(),
                    tags.join(", ")
                ),
            ))
        }
    };
    // Keep only the tag, which names the copy when the user gives none.
    let mut desc = chosen.clone();
    desc.set_annotations(ref_name(chosen).map(|t| {
        std::collections::HashMap::from([(crate::oci::layout::REF_NAME.to_string(), t.to_string())])
    }));
    // Every blob the image needs must have been in the archive.
    for b in super::closure(dest, &desc)? {
        let d = crate::oci::media::digest_of(&b).map_err(crate::oci::layout::LayoutError::from)?;
        if !dest.has_blob(&d) {
            return Err(invalid(
                file,
                format!("blob {d} that the image needs is not in the archive"),
            ));
        }
    }
    if crate::oci::media::is_image_manifest(desc.media_type()) {
        Image::load(dest, &desc)?;
    }
    Ok(desc)
}
