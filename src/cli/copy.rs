use super::transfer::{registry_of, CopyArgs};
use anyhow::{bail, Result};
use shipyard_image::reference::Reference;
use shipyard_image::transport::{self, PullPolicy};

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
/// registry; --src-creds and --dest-creds name each side's, and
/// --src-tls-verify / --dest-tls-verify override --tls-verify for one
/// side (as skopeo spells them). Other registries use the auth files
/// (--authfile, `login`). Prints the digest.
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
    /// USER[:PASSWORD] for the source registry.
    #[arg(long, value_name = "USER:PASS")]
    pub src_creds: Option<String>,
    /// USER[:PASSWORD] for the destination registry (as --creds).
    #[arg(long, value_name = "USER:PASS")]
    pub dest_creds: Option<String>,
    /// --tls-verify for the source registry only.
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub src_tls_verify: Option<bool>,
    /// --tls-verify for the destination registry only.
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub dest_tls_verify: Option<bool>,
    #[command(flatten)]
    pub copy: CopyArgs,
}

pub fn run(a: Args, quiet: bool) -> Result<()> {
    let src = Reference::parse_or_registry(&a.source)?;
    let dst = Reference::parse_or_registry(&a.destination)?;
    for t in &a.tags {
        shipyard_image::oci::layout::validate_registry_tag(t)?;
    }
    let dst_is_registry = matches!(dst, Reference::Registry(_));
    if a.copy.registry.creds.is_some() && (a.src_creds.is_some() || a.dest_creds.is_some()) {
        bail!("--creds with --src-creds or --dest-creds: name each side's with those two");
    }
    for (flag, given, r) in [
        ("--src-creds", &a.src_creds, &src),
        ("--dest-creds", &a.dest_creds, &dst),
    ] {
        if given.is_some() && registry_of(r).is_none() {
            bail!("{flag}: {r} is not a registry");
        }
    }
    // --creds keep their meaning: the destination's, else the source's.
    let (src_creds, dst_creds) = match &a.copy.registry.creds {
        Some(c) if dst_is_registry => (None, Some(c.clone())),
        Some(c) => (Some(c.clone()), None),
        None => (a.src_creds.clone(), a.dest_creds.clone()),
    };
    let side = |creds: Option<String>, tls: Option<bool>, r: &Reference| {
        let mut c = a.copy.clone();
        c.registry.creds = creds;
        if let Some(t) = tls {
            c.registry.tls_verify = t;
        }
        c.options(r, quiet, PullPolicy::Always, a.all)
    };
    let src_o = side(src_creds, a.src_tls_verify, &src)?;
    let dst_o = side(dst_creds, a.dest_tls_verify, &dst)?;
    let report = transport::copy_between(&src, &src_o, &dst, &dst_o, &a.tags)?;
    a.copy.finish(&report)?;
    Ok(())
}
