use super::values::CompressionArg;
use anyhow::{bail, Context, Result};
use shipyard_image::layer::generate::TarOptions;
use shipyard_image::layer::write_layer;
use shipyard_image::oci::image::{append_layer, empty_config, rfc3339, write_image};
use shipyard_image::oci::layout::Layout;
use shipyard_image::oci::media;
use shipyard_image::rootfs::diff::diff;
use shipyard_image::rootfs::walk::{walk_with, Hashing};
use std::path::PathBuf;

/// Diff a tree against a manifest and write one minimal layer.
///
/// Walks PATH, compares it with the manifest given by --against (a manifest
/// file, a directory, or an image oci:DIR[:TAG]), and writes ONE layer with
/// the added and changed entries, `.wh.NAME` whiteouts for deletions and
/// `.wh..wh..opq` where a directory was replaced. The layer is written into
/// the --output layout as a new image: alone, or on top of --base (umoci
/// repack semantics: diff_ids and history appended, tag written).
///
/// Output is reproducible: entries sorted, numeric owners, mtimes clamped to
/// SOURCE_DATE_EPOCH (or 0), no atime/ctime.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory tree to diff.
    pub path: PathBuf,
    /// What the tree is compared with: a manifest file, a directory,
    /// oci:DIR[:TAG], or `scratch` (nothing: every entry is added).
    #[arg(long, value_name = "MANIFEST|oci:DIR:TAG")]
    pub against: String,
    /// Where to write the image: oci:DIR:TAG.
    #[arg(long, value_name = "oci:DIR:TAG")]
    pub output: String,
    /// Put the layer on top of this image (oci:DIR[:TAG]).
    #[arg(long, value_name = "oci:DIR:TAG")]
    pub base: Option<String>,
    /// Layer compression. gzip is compressed in parallel, one member per
    /// MiB, byte-identical whatever the number of cores.
    #[arg(long, value_enum, default_value_t = CompressionArg::Gzip)]
    pub compression: CompressionArg,
    /// Compression level (gzip 1-12, default 3: smaller layers than
    /// buildah's default gzip at half its time; zstd 1-19, default 3).
    #[arg(long)]
    pub level: Option<i32>,
    /// Timestamp for `created` and the mtime clamp, in seconds since the
    /// epoch. Default: SOURCE_DATE_EPOCH, else 0.
    #[arg(long, value_name = "SECS")]
    pub timestamp: Option<i64>,
    /// Keep file mtimes as they are instead of clamping them.
    #[arg(long)]
    pub keep_mtimes: bool,
    /// The history entry's created_by text.
    #[arg(long, default_value = "shipyard diff")]
    pub created_by: String,
    #[command(flatten)]
    pub owners: super::manifest::Owners,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// For --against and --base images in a registry.
    #[command(flatten)]
    pub registry: super::transfer::RegistryArgs,
}

pub fn run(a: Args, quiet: bool) -> Result<()> {
    let (out_dir, out_tag) = super::oci_ref(&a.output)?;
    let Some(out_tag) = out_tag else {
        bail!("--output {} names no tag; write oci:DIR:TAG", a.output);
    };
    shipyard_image::oci::layout::validate_tag(&out_tag)?;
    let epoch = shipyard_image::reproducible::epoch(a.timestamp)?;
    let opts = a.owners.walk_options(Hashing::None);
    let against = super::manifest::load(&a.against, &opts, &a.registry)
        .with_context(|| format!("reading --against {}", a.against))?;
    let tree =
        walk_with(&a.path, &opts).with_context(|| format!("walking {}", a.path.display()))?;
    let d = diff(&tree, &against)?;
    tracing::info!(
        added = d.stats.added,
        modified = d.stats.modified,
        deleted = d.stats.deleted,
        hashed = d.hashed,
        "diff done"
    );
    let layout = Layout::open_or_create(&out_dir)?;
    let (mut config, mut layers) = match &a.base {
        Some(b) => {
            let (blayout, bimage) = super::open_image_with(b, &a.registry)?;
            bimage.copy_layers(&blayout, &layout)?;
            (bimage.config.clone(), bimage.manifest.layers().clone())
        }
        None => (empty_config(), Vec::new()),
    };
    let opts = TarOptions {
        clamp_mtime: if a.keep_mtimes { None } else { Some(epoch) },
    };
    let out = write_layer(
        &layout,
        &d.changes,
        &a.path,
        a.compression.into(),
        a.level,
        &opts,
    )?;
    append_layer(&mut config, &out.diff_id, &rfc3339(epoch), &a.created_by);
    layers.push(out.descriptor.clone());
    let desc = write_image(&layout, &config, layers)?;
    layout.tag(&out_tag, &desc)?;
    let digest = media::digest_of(&desc)?;
    if a.json {
        let v = serde_json::json!({
            "image": a.output,
            "manifestDigest": digest.to_string(),
            "layer": {
                "digest": out.descriptor.digest().to_string(),
                "size": out.descriptor.size(),
                "diffId": out.diff_id.to_string(),
                "uncompressedSize": out.tar_size,
            },
            "stats": d.stats,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if !quiet {
            eprintln!(
                "{} added, {} modified, {} deleted; layer {} ({} bytes)",
                d.stats.added,
                d.stats.modified,
                d.stats.deleted,
                out.descriptor.digest(),
                out.descriptor.size()
            );
        }
        println!("{digest}");
    }
    Ok(())
}
