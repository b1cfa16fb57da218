//! `docker-archive:` writer, the format `docker load` and `podman load`
//! read: `manifest.json`, the config as `<hex>.json`, each layer
//! uncompressed as `<diff_id hex>.tar`, and the legacy `repositories`.
//! Layers are uncompressed because that is what the format carries (its
//! config's diff_ids name them); each is checked against its diff_id.

use super::{append_blob, invalid, io_at, ArchiveError, Result, TarOut};
use crate::layer::compress::decoder;
use crate::oci::digest::HashingWriter;
use crate::oci::image::Image;
use crate::oci::layout::{Layout, LayoutError};
use crate::oci::media;
use std::io::{Seek, SeekFrom};
use std::path::Path;

/// Writes `image` to `file`, named `name` (`REPO:TAG`) when given.
pub fn export(layout: &Layout, image: &Image, name: Option<&str>, file: &Path) -> Result<()> {
    let mut out = TarOut::create(file)?;
    let config_name = format!("{}.json", image.config_digest.hex());
    append_blob(
        &mut out,
        layout,
        &config_name,
        &image.config_digest,
        image.manifest.config().size(),
    )?;
    let mut layer_names: Vec<String> = Vec::new();
    for (desc, diff_id) in image.layers() {
        let hex = diff_id.trim_start_matches("sha256:").to_string();
        let entry = format!("{hex}.tar");
        if layer_names.contains(&entry) {
            layer_names.push(entry);
            continue;
        }
        let digest = media::digest_of(&desc).map_err(LayoutError::from)?;
        let blob = layout.open_blob(&digest)?;
        let mut tmp = tempfile::tempfile_in(
            file.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
        .map_err(io_at(file))?;
        let mut dec = decoder(
            std::io::BufReader::with_capacity(1 << 20, blob),
            media::layer_encoding(desc.media_type()),
        )
        .map_err(io_at(file))?;
        let mut w = HashingWriter::new(&mut tmp);
        std::io::copy(&mut dec, &mut w).map_err(|source| ArchiveError::Layer {
            path: file.to_path_buf(),
            what: format!("decompressing layer {digest}"),
            source,
        })?;
        let (_, got, size) = w.finish();
        if got.to_string() != diff_id {
            return Err(invalid(
                file,
                format!("layer {digest} decompresses to {got}, but the config says its diff_id is {diff_id}"),
            ));
        }
        tmp.seek(SeekFrom::Start(0)).map_err(io_at(file))?;
        out.file(
            &entry,
            size,
            std::io::BufReader::with_capacity(1 << 20, tmp),
        )?;
        layer_names.push(entry);
    }
    let repo_tags: Vec<String> = name.map(|n| vec![n.to_string()]).unwrap_or_default();
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": repo_tags,
        "Layers": layer_names,
    }]);
    let manifest = serde_json::to_vec(&manifest).map_err(|e| invalid(file, e.to_string()))?;
    out.file("manifest.json", manifest.len() as u64, &manifest[..])?;
    if let (Some(n), Some(last)) = (name, layer_names.last()) {
        if let Some((repo, tag)) = n.rsplit_once(':') {
            let repos = serde_json::json!({ repo: { tag: last.trim_end_matches(".tar") } });
            let repos = serde_json::to_vec(&repos).map_err(|e| invalid(file, e.to_string()))?;
            out.file("repositories", repos.len() as u64, &repos[..])?;
        }
    }
    out.commit()
}
