use anyhow::Result;
use shipyard_image::oci::layout::Layout;

/// Tag an image in its layout (moving the tag if it exists).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image: oci:DIR:TAG or oci:DIR@sha256:….
    pub image: String,
    /// New tags in the same layout.
    #[arg(required = true)]
    pub tags: Vec<String>,
}

pub fn run(a: Args) -> Result<()> {
    let (dir, tag) = super::oci_ref(&a.image)?;
    let layout = Layout::open(&dir)?;
    let desc = layout.resolve(tag.as_deref())?;
    // The tag annotation of the source entry is replaced by each new one.
    for t in &a.tags {
        layout.tag(t, &desc)?;
    }
    Ok(())
}
