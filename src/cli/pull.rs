use super::transfer::CopyArgs;
use super::values::PullArg;
use anyhow::Result;
use shipyard_image::reference::Reference;

/// Pull an image into an OCI layout.
///
/// SOURCE is docker://[HOST/]REPO[:TAG|@DIGEST] (a bare REPO[:TAG] means a
/// registry image, normalized like podman: busybox is
/// docker.io/library/busybox:latest; with unqualified-search-registries
/// in registries.conf, the first of them), or any other reference: oci:,
/// oci-archive:, docker-archive:. Blobs land in the shared cache
/// ($XDG_CACHE_HOME/shipyard), each verified against its digest and size
/// while it streams; a second pull of the same image fetches only the
/// manifest. From an index, the --platform manifest is taken (the host's
/// by default), or everything with --all. Prints the manifest digest.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to pull.
    pub source: String,
    /// Where: oci:DIR[:TAG] (the tag defaults to the source's).
    pub destination: String,
    /// Pull the whole index, every platform.
    #[arg(long)]
    pub all: bool,
    /// always: ask the registry for the manifest; missing: use the cache
    /// when the tag was pulled before; never: only the cache.
    #[arg(long, value_enum, default_value_t = PullArg::Always)]
    pub pull: PullArg,
    #[command(flatten)]
    pub copy: CopyArgs,
}

pub fn run(a: Args, quiet: bool) -> Result<()> {
    let src = Reference::parse_or_registry(&a.source)?;
    let dst = Reference::parse(&a.destination)?;
    let o = a.copy.options(&src, quiet, a.pull.into(), a.all)?;
    a.copy.run(&src, &dst, &[], &o)?;
    Ok(())
}
