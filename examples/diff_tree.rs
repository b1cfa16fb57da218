//! Using shipyard as a library: diff a directory against an empty base and
//! write the layer into an OCI layout, tagged.
//!
//! cargo run --example diff_tree -- TREE LAYOUT_DIR TAG

use shipyard_image::layer::compress::Compression;
use shipyard_image::layer::generate::TarOptions;
use shipyard_image::layer::write_layer;
use shipyard_image::oci::image::{append_layer, empty_config, rfc3339, write_image};
use shipyard_image::oci::layout::Layout;
use shipyard_image::rootfs::diff::diff;
use shipyard_image::rootfs::manifest::Manifest;
use shipyard_image::rootfs::walk::{walk, Hashing};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [tree, layout_dir, tag] = args.as_slice() else {
        anyhow::bail!("usage: diff_tree TREE LAYOUT_DIR TAG");
    };
    let epoch = shipyard_image::reproducible::epoch(None)?;
    let walked = walk(tree.as_ref(), Hashing::None)?;
    let d = diff(&walked, &Manifest::default())?;
    let layout = Layout::open_or_create(layout_dir)?;
    let opts = TarOptions {
        clamp_mtime: Some(epoch),
    };
    let layer = write_layer(
        &layout,
        &d.changes,
        tree.as_ref(),
        Compression::Gzip,
        None,
        &opts,
    )?;
    let mut config = empty_config();
    append_layer(
        &mut config,
        &layer.diff_id,
        &rfc3339(epoch),
        "examples/diff_tree",
    );
    let desc = write_image(&layout, &config, vec![layer.descriptor])?;
    layout.tag(tag, &desc)?;
    println!("{} entries -> {} ({})", d.changes.len(), desc.digest(), tag);
    Ok(())
}
