use super::transfer::CopyArgs;
use anyhow::Result;
use shipyard_image::reference::Reference;
use shipyard_image::transport::PullPolicy;

/// Copy an image between any two transports, as `skopeo copy` does.
///
/// SOURCE and DESTINATION are oci:DIR[:TAG], docker://HOST/REPO[:TAG],
/// oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG] (a bare
/// REPO[:TAG] is a registry image, as in `pull`). Manifests and indexes
/// are copied as their exact bytes, so the digest is preserved (except
/// into docker-archive:, whose format has no manifest digest). From a
/// multi-platform index the --platform image is copied (the host's by
/// default), or the whole index with --all. --creds go to the
/// destination registry, or to the source when the destination is not a
/// registry; other registries use the auth files (--authfile, `login`).
/// Prints the digest.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to copy.
    pub source: String,
    /// Where to.
    pub destination: String,
    /// Copy the whole index, every platform.
    #[arg(long)]
    pub all: bool,
    /// More tags for the copy (in a layout or the destination repository).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    #[command(flatten)]
    pub copy: CopyArgs,
}

pub fn run(a: Args, quiet: bool) -> Result<()> {
    let src = Reference::parse_or_registry(&a.source)?;
    let dst = Reference::parse_or_registry(&a.destination)?;
    for t in &a.tags {
        shipyard_image::oci::layout::validate_registry_tag(t)?;
    }
    let creds_for = if matches!(dst, Reference::Registry(_)) {
        &dst
    } else {
        &src
    };
    let o = a
        .copy
        .options(creds_for, quiet, PullPolicy::Always, a.all)?;
    a.copy.run(&src, &dst, &a.tags, &o)?;
    Ok(())
}
