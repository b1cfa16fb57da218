//! Reading what shipyard wrote: digests by tag, a layer's members, and
//! the one-line `shipyard diff` that makes an image of a tree.

use super::cli::ok;
use std::path::Path;

/// Reads a layout's manifest digest for a tag.
pub fn digest_of_tag(layout: &Path, tag: &str) -> String {
    let l = shipyard_image::oci::layout::Layout::open(layout).unwrap();
    l.resolve(Some(tag)).unwrap().digest().to_string()
}

/// The entries of the single-layer image's layer: (tar path, type byte).
pub fn layer_members(layout: &Path, tag: &str) -> Vec<(String, char)> {
    let l = shipyard_image::oci::layout::Layout::open(layout).unwrap();
    let d = l.resolve(Some(tag)).unwrap();
    let img = shipyard_image::oci::image::Image::load(&l, &d).unwrap();
    let last = img.manifest.layers().last().unwrap().clone();
    let dg = shipyard_image::oci::media::digest_of(&last).unwrap();
    let f = l.open_blob(&dg).unwrap();
    let r = shipyard_image::layer::compress::decoder(
        f,
        shipyard_image::oci::media::layer_encoding(last.media_type()),
    )
    .unwrap();
    let mut a = tar::Archive::new(r);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                e.header().entry_type().as_byte() as char,
            )
        })
        .collect()
}

/// `shipyard diff TREE --against scratch --output OUT EXTRA…`; returns the
/// image digest.
pub fn diff_scratch(tree: &Path, out: &str, extra: &[&str]) -> String {
    let mut a = vec![
        "diff",
        tree.to_str().unwrap(),
        "--against",
        "scratch",
        "--output",
        out,
    ];
    a.extend_from_slice(extra);
    ok(a).trim().to_string()
}
