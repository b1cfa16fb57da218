use anyhow::{bail, Context, Result};
use oci_spec::image::{ImageIndexBuilder, MediaType, PlatformBuilder};
use shipyard_image::oci::layout::Layout;

/// Make a multi-platform image index from single-platform images.
///
/// Each IMAGE (any transport shipyard reads: oci:, docker://, archives) is
/// typically built on a runner of its own architecture. Their manifests,
/// configs and layers are copied into the output layout, and an index
/// naming each manifest with the platform its config declares (os,
/// architecture, variant, os.version) is written and tagged; its digest is
/// printed. `shipyard push --all` sends the index with every platform;
/// `pull --all` brings one back.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The images, one per platform.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Where the index goes: oci:DIR:TAG.
    #[arg(long, value_name = "oci:DIR:TAG")]
    pub output: String,
}

pub fn run(a: Args) -> Result<()> {
    let (dir, tag) = super::oci_ref(&a.output)?;
    let Some(tag) = tag else {
        bail!("--output {}: name the index's tag (oci:DIR:TAG)", a.output);
    };
    shipyard_image::oci::layout::validate_tag(&tag)?;
    let out = Layout::open_or_create(&dir)?;
    let mut manifests = Vec::new();
    let mut seen: Vec<(String, String)> = Vec::new();
    for src in &a.images {
        let (from, img) = super::open_image(src).with_context(|| format!("reading {src}"))?;
        let c = &img.config;
        let platform = PlatformBuilder::default()
            .os(c.os().clone())
            .architecture(c.architecture().clone())
            .variant(c.variant().clone().unwrap_or_default())
            .os_version(c.os_version().clone().unwrap_or_default())
            .build()
            .with_context(|| format!("{src}: the platform of its config"))?;
        let name = format!(
            "{}/{}{}",
            platform.os(),
            platform.architecture(),
            c.variant()
                .as_ref()
                .map(|v| format!("/{v}"))
                .unwrap_or_default()
        );
        if let Some((_, other)) = seen.iter().find(|(n, _)| *n == name) {
            bail!(
                "{src} and {other} are both for {name}: an index holds one image per platform \
                 (set an image's platform with `shipyard config --platform` if it is wrong)"
            );
        }
        seen.push((name, src.clone()));
        img.copy_layers(&from, &out)?;
        out.copy_blob_from(&from, &img.config_digest)?;
        out.copy_blob_from(&from, &img.digest)?;
        let mut d = img.descriptor.clone();
        // The source's tag annotation is its own, not the index's.
        d.set_annotations(None);
        // Empty variant and os.version are left out, as the spec wants.
        let mut p = platform;
        if p.variant().as_deref() == Some("") {
            p.set_variant(None);
        }
        if p.os_version().as_deref() == Some("") {
            p.set_os_version(None);
        }
        d.set_platform(Some(p));
        manifests.push(d);
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .context("building the index")?;
    let desc = out.put_json(&index, MediaType::ImageIndex)?;
    out.tag(&tag, &desc)?;
    println!("{}", desc.digest());
    Ok(())
}
