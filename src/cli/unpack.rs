use anyhow::{Context, Result};
use shipyard_image::layer::extract::unpack;
use std::path::PathBuf;

/// Unpack an image into a directory, safely and without root.
///
/// Applies the layers in order: whiteouts, opaque directories, hardlinks,
/// symlinks, modes and mtimes. Nothing is written outside ROOTFS: absolute
/// names, `..`, escaping links and writes through symlinks are rejected with
/// the layer digest and entry. Every blob is checked against its digest.
/// When not root, ownership, device nodes and privileged xattrs that cannot
/// be created are recorded in ROOTFS.shipyard-manifest beside the tree; a
/// later `shipyard manifest ROOTFS` or `shipyard diff ROOTFS` uses it.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image: oci:DIR[:TAG] (or docker://, oci-archive:, docker-archive:).
    pub image: String,
    /// Where to unpack (must not exist, or be empty).
    pub rootfs: PathBuf,
    #[command(flatten)]
    pub registry: super::transfer::RegistryArgs,
}

pub fn run(a: Args, quiet: bool) -> Result<()> {
    let (layout, image) = super::open_image_with(&a.image, &a.registry)?;
    let r = unpack(&layout, &image, &a.rootfs).with_context(|| format!("unpacking {}", a.image))?;
    if !quiet {
        eprintln!(
            "unpacked {} entries into {}",
            r.manifest.len(),
            a.rootfs.display()
        );
    }
    if let Some(rec) = r.record.filter(|_| !quiet) {
        eprintln!(
            "not representable here ({} ownerships, {} devices, {} xattrs): recorded in {}",
            r.shortfalls.ownership,
            r.shortfalls.devices,
            r.shortfalls.xattrs,
            rec.display()
        );
    }
    Ok(())
}
