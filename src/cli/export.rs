use super::transfer::CopyArgs;
use anyhow::{bail, Result};
use shipyard_image::reference::Reference;
use shipyard_image::transport::PullPolicy;

/// Write an image to an archive for podman, docker or containerd.
///
/// DESTINATION is oci-archive:FILE[:TAG] (a tar of an OCI layout, for
/// `podman load`, `skopeo copy oci-archive:` and containerd) or
/// docker-archive:FILE[:NAME:TAG] (the `docker load` format, layers
/// uncompressed). The tar is byte-for-byte reproducible and appears only
/// when complete.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image: oci:DIR[:TAG] (or any reference).
    pub source: String,
    /// The archive to write.
    pub destination: String,
    #[command(flatten)]
    pub copy: CopyArgs,
}

pub fn run(a: Args, quiet: bool) -> Result<()> {
    let src = Reference::parse(&a.source)?;
    let dst = Reference::parse(&a.destination)?;
    if !matches!(
        dst,
        Reference::OciArchive { .. } | Reference::DockerArchive { .. }
    ) {
        bail!("export writes oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG]; for {dst} use `shipyard push`");
    }
    let o = a.copy.options(&src, quiet, PullPolicy::Missing, false)?;
    a.copy.run(&src, &dst, &[], &o)?;
    Ok(())
}
