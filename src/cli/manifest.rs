use anyhow::{Context, Result};
use shipyard_image::rootfs::manifest::Manifest;
use shipyard_image::rootfs::walk::{walk_with, Hashing, WalkOptions};
use std::io::Write;
use std::path::PathBuf;

/// Print the rootfs manifest of a directory tree or an image.
///
/// For a directory: every entry, sorted, with type, mode, owner, size,
/// mtime, link target, xattrs and the sha256 of file content. For an image
/// (oci:DIR[:TAG]): the same, read from the layers' tar headers without
/// unpacking, whiteouts applied. The format is documented in
/// docs/manifest-format.md and diffs well with `diff -u`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A directory, or an image as oci:DIR[:TAG].
    pub source: String,
    /// Write to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub owners: Owners,
    #[command(flatten)]
    pub registry: super::transfer::RegistryArgs,
}

/// How ownership is read from a directory tree.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Owners {
    /// Record files owned by the calling user with their real uid/gid.
    /// By default an unprivileged caller's own files are recorded as owned
    /// by root, as they are inside a rootless container (buildah and
    /// `umoci --rootless` do the same).
    #[arg(long)]
    pub keep_owners: bool,
}

impl Owners {
    pub fn walk_options(self, hashing: Hashing) -> WalkOptions {
        let mut o = WalkOptions::new(hashing);
        if self.keep_owners {
            o.caller_is_root = false;
        }
        o
    }
}

pub fn run(a: Args) -> Result<()> {
    let m = load(&a.source, &a.owners.walk_options(Hashing::All), &a.registry)?;
    match &a.output {
        Some(p) => {
            use shipyard_image::fsutil::{write_atomic, IfExists};
            write_atomic(p, &m.to_text(), 0o644, IfExists::Replace)
                .with_context(|| format!("writing {}", p.display()))?;
        }
        None => {
            let out = std::io::stdout().lock();
            let mut w = std::io::BufWriter::new(out);
            m.write_to(&mut w)?;
            w.flush()?;
        }
    }
    Ok(())
}

/// A manifest from a directory, an `oci:` image, or a manifest file.
pub(crate) fn load(
    source: &str,
    opts: &WalkOptions,
    registry: &super::transfer::RegistryArgs,
) -> Result<Manifest> {
    if source == "scratch" {
        return Ok(Manifest::default());
    }
    if shipyard_image::reference::Reference::looks_like_reference(source) {
        let (layout, image) = super::open_image_with(source, registry)?;
        return shipyard_image::layer::from_image::manifest_of_image(&layout, &image)
            .with_context(|| format!("reading layers of {source}"));
    }
    let p = PathBuf::from(source);
    if p.is_dir() {
        return Ok(walk_with(&p, opts)
            .with_context(|| format!("walking {source}"))?
            .manifest);
    }
    let f = std::fs::File::open(&p).with_context(|| {
        format!("opening {source} (expected a directory, a manifest file or oci:DIR[:TAG])")
    })?;
    Ok(Manifest::parse(std::io::BufReader::new(f), source)?)
}
