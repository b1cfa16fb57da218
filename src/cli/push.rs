use super::transfer::{parse_size, CopyArgs};
use anyhow::{bail, Result};
use shipyard_image::oci::layout::Layout;
use shipyard_image::reference::Reference;
use shipyard_image::transport::{self, PullPolicy};

/// Push an image to a registry (or any other destination).
///
/// SOURCE is oci:DIR[:TAG] (or any reference); DESTINATION is
/// docker://HOST/REPO[:TAG] (the tag defaults to the source's), or
/// oci:, oci-archive:, docker-archive:. Blobs the registry has are
/// skipped after a HEAD; blobs the cache knows in another repository of
/// the same registry are mounted; the rest are uploaded, up to --jobs at a
/// time, in one PUT up to --chunk-size and in PATCH chunks above it,
/// resuming a broken chunked upload where the registry allows. Connection
/// resets, 5xx and 429 are retried with backoff (honouring Retry-After).
/// Manifests go last, as the exact bytes of the layout, so the pushed
/// digest equals the local one; it is printed (and written to
/// --digestfile).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to push: oci:DIR[:TAG].
    pub source: String,
    /// Where: docker://HOST/REPO[:TAG]. With --all-tags, the repository
    /// each tag of the layout is pushed to, under its own tag.
    pub destination: String,
    /// More tags to give the pushed image in the same repository.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Push every tag of the layout (docker push's spelling). `--all`, the
    /// older spelling, still works.
    #[arg(long = "all-tags", alias = "all")]
    pub all_tags: bool,
    /// Blobs larger than this are uploaded in PATCH chunks of this size.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    pub chunk_size: u64,
    #[command(flatten)]
    pub copy: CopyArgs,
}

pub fn run(a: Args, quiet: bool) -> Result<()> {
    let dst = Reference::parse_or_registry(&a.destination)?;
    for t in &a.tags {
        shipyard_image::oci::layout::validate_registry_tag(t)?;
    }
    let mut o = a.copy.options(&dst, quiet, PullPolicy::Missing, false)?;
    o.push.chunk_size = a.chunk_size;
    if !a.all_tags {
        let src = Reference::parse(&a.source)?;
        a.copy.run(&src, &dst, &a.tags, &o)?;
        return Ok(());
    }
    let Reference::Oci { dir, tag: None } = Reference::parse(&a.source)? else {
        bail!("--all-tags pushes every tag of a layout: name it as oci:DIR, without a tag");
    };
    let explicit_tag = a
        .destination
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':') || last.contains('@'));
    if explicit_tag {
        bail!("--all-tags: the destination takes each tag from the layout; name it without a tag");
    }
    let layout = Layout::open(&dir)?;
    let tags = layout.tags()?;
    if tags.is_empty() {
        bail!("{} has no tags to push", dir.display());
    }
    for t in tags {
        let src = Reference::Oci {
            dir: dir.clone(),
            tag: Some(t.clone()),
        };
        let dst_t = match &dst {
            Reference::Registry(r) => Reference::Registry(r.with_tag(&t)),
            other => bail!("--all-tags pushes to a registry; {other} is not one"),
        };
        let report = transport::copy(&src, &dst_t, &a.tags, &o)?;
        a.copy.finish(&report)?;
    }
    Ok(())
}
