//! `docker-archive:` reader. `manifest.json` may come anywhere in the tar,
//! so the archive's regular files are first copied into a private temp
//! directory (by entry index, never by their names), then the chosen
//! image's config and layers are verified and stored as an OCI image:
//! the config unchanged (its digest is the image ID), each layer as found
//! (plain, gzip or zstd, detected by magic) and checked against its
//! diff_id, and a new OCI manifest naming them.

use super::{entry_name, invalid, io_at, read_small, ArchiveError, Result};
use crate::layer::compress::decoder;
use crate::oci::config::ImageConfig;
use crate::oci::digest::HashingWriter;
use crate::oci::image::write_image_raw;
use crate::oci::layout::Layout;
use crate::oci::media::LayerEncoding;
use oci_spec::image::{Descriptor, MediaType};
use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// The member a link named `name` points to: a symlink's target is
/// relative to its directory, a hard link's to the archive's root; `None`
/// where it leaves the archive.
fn link_target(name: &str, target: &str, symlink: bool) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    if symlink {
        parts.extend(name.split('/'));
        parts.pop();
    }
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Reads the image named `name` (or the only one) from `file` into `dest`.
pub fn import(file: &Path, name: Option<&str>, dest: &Layout) -> Result<Descriptor> {
    let f = std::fs::File::open(file).map_err(io_at(file))?;
    let mut ar = tar::Archive::new(crate::layer::read::HeaderGuard::new(
        BufReader::with_capacity(1 << 20, f),
    ));
    let tmp = tempfile::Builder::new()
        .prefix(".shipyard-import-")
        .tempdir_in(dest.root())
        .map_err(io_at(dest.root()))?;
    let mut files: HashMap<String, PathBuf> = HashMap::new();
    // Links between members (name → the member it names).
    let mut links: HashMap<String, String> = HashMap::new();
    let mut manifest = None;
    for (i, entry) in ar.entries().map_err(io_at(file))?.enumerate() {
        let mut e = entry.map_err(io_at(file))?;
        let name = entry_name(file, &e.path_bytes())?;
        match e.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Directory => continue,
            // docker save stores a layer two places of the manifest name
            // once and links the other to it (`ID/layer.tar ->
            // ../ID2/layer.tar`); the manifest may name the link. A link
            // that leaves the archive names nothing.
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let symlink = e.header().entry_type() == tar::EntryType::Symlink;
                if let Some(t) = e.link_name_bytes() {
                    let t = String::from_utf8_lossy(&t).into_owned();
                    if let Some(to) = link_target(&name, &t, symlink) {
                        links.insert(name, to);
                    }
                }
                continue;
            }
            other => {
                return Err(invalid(file, format!("entry {name:?} is a {other:?}")));
            }
        }
        if name == "manifest.json" {
            manifest = Some(read_small(file, &name, &mut e, 16 << 20)?);
            continue;
        }
        let p = tmp.path().join(i.to_string());
        let mut out = std::fs::File::create(&p).map_err(io_at(&p))?;
        std::io::copy(&mut e, &mut out).map_err(io_at(&p))?;
        files.insert(name, p);
    }
    let manifest = manifest.ok_or_else(|| {
        invalid(
            file,
            "no manifest.json: not a docker archive (an OCI archive? use oci-archive:)",
        )
    })?;
    let entries: Vec<Entry> = serde_json::from_slice(&manifest)
        .map_err(|e| invalid(file, format!("manifest.json: {e}")))?;
    let names: Vec<String> = entries
        .iter()
        .flat_map(|e| e.repo_tags.clone().unwrap_or_default())
        .collect();
    let entry = match name {
        Some(n) => entries
            .iter()
            .find(|e| {
                e.repo_tags
                    .as_ref()
                    .is_some_and(|t| t.iter().any(|x| x == n))
            })
            .ok_or_else(|| {
                invalid(
                    file,
                    format!("no image named {n:?}; names: {}", names.join(", ")),
                )
            })?,
        None if entries.len() == 1 => &entries[0],
        None => {
            return Err(invalid(
                file,
                format!(
                    "holds {} images; name one with docker-archive:FILE:NAME:TAG ({})",
                    entries.len(),
                    names.join(", ")
                ),
            ))
        }
    };
    let member = |n: &str| -> Result<&PathBuf> {
        let mut at = n.trim_start_matches("./");
        // A few hops at most: a loop of links names nothing.
        for _ in 0..8 {
            match links.get(at) {
                Some(to) if !files.contains_key(at) => at = to,
                _ => break,
            }
        }
        files.get(at).ok_or_else(|| {
            invalid(
                file,
                format!("manifest.json names {n:?}, which is not in the archive"),
            )
        })
    };
    let config_bytes = read_small(
        file,
        &entry.config,
        std::fs::File::open(member(&entry.config)?).map_err(io_at(file))?,
        16 << 20,
    )?;
    let config: ImageConfig = serde_json::from_slice(&config_bytes)
        .map_err(|e| invalid(file, format!("{}: invalid image config: {e}", entry.config)))?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != entry.layers.len() {
        return Err(invalid(
            file,
            format!(
                "config lists {} diff_ids but manifest.json {} layers",
                diff_ids.len(),
                entry.layers.len()
            ),
        ));
    }
    let mut layers = Vec::new();
    for (lname, diff_id) in entry.layers.iter().zip(diff_ids) {
        let p = member(lname)?;
        let open = || std::fs::File::open(p).map_err(io_at(p));
        let mut head = [0u8; 4];
        let n = open()?.read(&mut head).map_err(io_at(p))?;
        let media_type = if head[..n].starts_with(&[0x1f, 0x8b]) {
            MediaType::ImageLayerGzip
        } else if head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            MediaType::ImageLayerZstd
        } else {
            MediaType::ImageLayer
        };
        let mut dec = decoder(open()?, LayerEncoding::Sniff).map_err(io_at(p))?;
        let mut w = HashingWriter::new(std::io::sink());
        std::io::copy(&mut dec, &mut w).map_err(|source| ArchiveError::Layer {
            path: file.to_path_buf(),
            what: format!("layer {lname}"),
            source,
        })?;
        let (_, got, _) = w.finish();
        if got.to_string() != *diff_id {
            return Err(invalid(
                file,
                format!("layer {lname} is corrupt: its content hashes to {got}, but the config says {diff_id}"),
            ));
        }
        let (digest, size) = dest.put_reader(BufReader::with_capacity(1 << 20, open()?), None)?;
        layers.push(Descriptor::new(
            media_type,
            size,
            crate::oci::media::to_spec_digest(&digest),
        ));
    }
    let (cdigest, csize) = dest.put_bytes(&config_bytes)?;
    let config_desc = Descriptor::new(
        MediaType::ImageConfig,
        csize,
        crate::oci::media::to_spec_digest(&cdigest),
    );
    Ok(write_image_raw(dest, config_desc, layers)?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn links_resolve_within_the_archive_only() {
        let t = |n, to, sym| super::link_target(n, to, sym);
        assert_eq!(
            t("a/layer.tar", "../b/layer.tar", true).as_deref(),
            Some("b/layer.tar")
        );
        assert_eq!(
            t("a/layer.tar", "./b/layer.tar", false).as_deref(),
            Some("b/layer.tar")
        );
        assert_eq!(t("a/layer.tar", "../../x", true), None);
        assert_eq!(t("a/layer.tar", "/etc/passwd", true), None);
    }
}
