use super::transfer::CopyArgs;
use anyhow::{bail, Result};
use shipyard_image::reference::Reference;
use shipyard_image::transport::PullPolicy;

/// Read an image from an archive into an OCI layout.
///
/// SOURCE is oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG].
/// Only regular files and directories are accepted from the tar; every
/// blob is checked against its digest, every docker layer against the
/// diff_id its config names. A docker archive becomes an OCI image with
/// the same config (the same image ID) and its layers as they were.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The archive.
    pub source: String,
    /// Where: oci:DIR[:TAG].
    pub destination: String,
    #[command(flatten)]
    pub copy: CopyArgs,
}

pub fn run(a: Args, quiet: bool) -> Result<()> {
    let src = Reference::parse(&a.source)?;
    if !matches!(
        src,
        Reference::OciArchive { .. } | Reference::DockerArchive { .. }
    ) {
        bail!(
            "import reads oci-archive:FILE or docker-archive:FILE; for {src} use `shipyard pull`"
        );
    }
    let dst = Reference::parse(&a.destination)?;
    let o = a.copy.options(&dst, quiet, PullPolicy::Missing, false)?;
    a.copy.run(&src, &dst, &[], &o)?;
    Ok(())
}
