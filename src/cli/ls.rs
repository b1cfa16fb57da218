use super::transfer::{registry_of, RegistryArgs};
use anyhow::{bail, Context, Result};
use shipyard_image::oci::layout::Layout;
use shipyard_image::reference::Reference;
use std::io::Write;

/// List the tags of a layout or of a registry repository.
///
/// oci:DIR prints the layout's tags; docker://HOST/REPO asks the registry
/// for the repository's tags, following its pages (`?n=`, `Link`), one
/// per line, in the registry's order.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// oci:DIR or docker://HOST/REPO (no tag).
    pub repository: String,
    /// Tags asked for per page from a registry.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub page_size: usize,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub fn run(a: Args) -> Result<()> {
    let r = Reference::parse_or_registry(&a.repository)?;
    let tags = match &r {
        Reference::Oci { dir, tag: None } => Layout::open(dir)?.tags()?,
        Reference::Registry(rr) => {
            if !rr.implied_tag {
                bail!(
                    "{}: name the repository without a tag or digest",
                    a.repository
                );
            }
            let o = a.registry.options(registry_of(&r))?;
            let c = shipyard_image::registry::Client::new(&rr.registry, rr.api_host(), &o)?;
            shipyard_image::registry::tags::list(&c, &rr.repository, a.page_size)
                .with_context(|| format!("listing the tags of {}/{}", rr.registry, rr.repository))?
        }
        other => bail!(
            "{other}: ls lists a layout (oci:DIR) or a registry repository (docker://HOST/REPO)"
        ),
    };
    let mut out = std::io::stdout().lock();
    for t in tags {
        writeln!(out, "{t}")?;
    }
    out.flush()?;
    Ok(())
}
