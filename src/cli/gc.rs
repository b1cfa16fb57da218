use anyhow::Result;
use shipyard_image::oci::layout::Layout;

/// Remove blobs that nothing in a layout references.
///
/// Everything reachable from index.json (manifests, indexes, configs,
/// layers, subjects, artifact blobs) is kept; everything else in
/// blobs/sha256, and temp files older than an hour, is deleted. It first
/// waits for the shipyard processes writing to the layout, so it never
/// removes blobs a writer is about to tag.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The layout: oci:DIR.
    pub layout: String,
}

pub fn run(a: Args, quiet: bool) -> Result<()> {
    let (dir, _) = super::oci_ref(&a.layout)?;
    let layout = Layout::open(&dir)?;
    let (removed, freed) = layout.gc()?;
    for d in &removed {
        println!("{d}");
    }
    if !quiet {
        eprintln!(
            "removed {} blobs, freed {}",
            removed.len(),
            shipyard_image::registry::progress::human(freed)
        );
    }
    Ok(())
}
