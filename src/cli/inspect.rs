use crate::pod::read::{self, Pod};
use anyhow::{bail, Context, Result};
use shipyard_image::oci::layout::{ref_name, Layout};
use shipyard_image::oci::media;
use shipyard_image::reference::Reference;
use shipyard_image::registry::progress::human;
use std::io::Write;

/// Writes bytes to stdout as they are (a manifest, a config), with
/// nothing added: `sha256sum` of the output is the digest.
fn print_bytes(b: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(b)?;
    out.flush()?;
    Ok(())
}

/// Show an image (digest, config, layers, tags) or a pod (members, their
/// digests and sizes, volumes).
///
/// An image in a registry is read without its layers: the manifest (and
/// index) and the config are fetched, nothing else. From an index, the
/// host platform's image is shown; --raw prints the index itself.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image or pod: oci:DIR[:TAG], docker://HOST/REPO[:TAG|@DIGEST],
    /// oci-archive:, docker-archive:.
    pub image: String,
    /// Print JSON instead of text.
    #[arg(long, conflicts_with_all = ["raw", "config"])]
    pub json: bool,
    /// Print the manifest (or index) exactly as stored: the bytes its
    /// digest is taken of.
    #[arg(long, conflicts_with = "config")]
    pub raw: bool,
    /// Print the image's config blob exactly as stored.
    #[arg(long)]
    pub config: bool,
    #[command(flatten)]
    pub registry: super::transfer::RegistryArgs,
}

/// An image's stored size: its config and layers.
fn image_size(layout: &Layout, d: &oci_spec::image::Descriptor) -> Result<u64> {
    let bytes = layout.read_blob(&media::digest_of(d)?, Some(d.size()))?;
    Ok(d.size()
        + media::children(&bytes)
            .iter()
            .map(|c| c.size())
            .sum::<u64>())
}

fn show_pod(a: &Args, layout: &Layout, pod: &Pod) -> Result<()> {
    let def = &pod.definition;
    let mut containers = Vec::new();
    for c in &def.containers {
        let d = pod
            .members
            .iter()
            .find(|(n, _)| n == &c.name)
            .map(|(_, d)| d.clone())
            .ok_or_else(|| anyhow::anyhow!("container {} has no image", c.name))?;
        containers.push((c, image_size(layout, &d)?));
    }
    let volumes: Vec<(&crate::pod::Volume, u64)> = def
        .volumes
        .iter()
        .map(|v| (v, pod.layers.get(&v.name).map_or(0, |l| l.size())))
        .collect();
    if a.json {
        let v = serde_json::json!({
            "pod": def.name,
            "version": def.version,
            "digest": pod.digest.to_string(),
            "annotations": pod.annotations,
            "containers": containers.iter().map(|(c, size)| serde_json::json!({
                "name": c.name, "image": c.image, "size": size, "source": c.source,
            })).collect::<Vec<_>>(),
            "volumes": volumes.iter().map(|(v, size)| serde_json::json!({
                "name": v.name, "layer": v.layer, "size": size, "files": v.files,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("Pod:          {} {}", def.name, def.version);
    println!("Digest:       {}", pod.digest);
    for (k, v) in &pod.annotations {
        println!("Annotation:   {k}={v}");
    }
    println!("Containers:");
    for (c, size) in &containers {
        let from = c.source.as_deref().unwrap_or("built");
        println!("  {:<16} {}  {:>10}  {from}", c.name, c.image, human(*size));
    }
    println!("Volumes:");
    for (v, size) in &volumes {
        println!(
            "  {:<16} {:>4} files  {:>10}  {}",
            v.name,
            v.files.len(),
            human(*size),
            v.layer
        );
    }
    let total: u64 = containers
        .iter()
        .map(|(_, s)| s)
        .chain(volumes.iter().map(|(_, s)| s))
        .sum();
    println!(
        "Total:        {} (shared layers counted per container)",
        human(total)
    );
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    let r = Reference::parse(&a.image)?;
    let (layout, top, chosen) =
        shipyard_image::transport::metadata(&r, &a.registry.read_options(&r)?)?;
    if a.raw {
        return print_bytes(&layout.read_blob(&media::digest_of(&top)?, Some(top.size()))?);
    }
    if read::is_pod(&layout, &top) {
        if a.config {
            bail!(
                "{}: a pod has no image config; inspect one of its images",
                a.image
            );
        }
        let pod = read::load(&layout, &top)?;
        return show_pod(&a, &layout, &pod);
    }
    let image = shipyard_image::oci::image::Image::load(&layout, &chosen)
        .with_context(|| format!("reading image {}", a.image))?;
    if a.config {
        return print_bytes(&layout.read_blob(&image.config_digest, None)?);
    }
    // Tags are a layout's; the cache's own names are not the user's.
    let index = match r {
        Reference::Oci { .. } => layout.index()?,
        _ => oci_spec::image::ImageIndex::default(),
    };
    let mut tags: Vec<String> = index
        .manifests()
        .iter()
        .filter(|m| {
            m.digest().to_string() == image.digest.to_string()
                || m.digest() == image.descriptor.digest()
        })
        .filter_map(|m| ref_name(m).map(str::to_string))
        .collect();
    tags.sort();
    tags.dedup();
    let layers: Vec<serde_json::Value> = image
        .layers()
        .iter()
        .map(|(d, diff_id)| {
            serde_json::json!({
                "digest": d.digest().to_string(),
                "size": d.size(),
                "mediaType": d.media_type().to_string(),
                "diffId": diff_id,
            })
        })
        .collect();
    if a.json {
        let v = serde_json::json!({
            "digest": image.digest.to_string(),
            "mediaType": image.descriptor.media_type().to_string(),
            "tags": tags,
            "configDigest": image.config_digest.to_string(),
            "config": serde_json::to_value(&image.config)?,
            "layers": layers,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let c = &image.config;
    println!("Image:        {}", a.image);
    println!("Digest:       {}", image.digest);
    println!("MediaType:    {}", image.descriptor.media_type());
    println!(
        "Tags:         {}",
        if tags.is_empty() {
            "-".into()
        } else {
            tags.join(", ")
        }
    );
    println!("Platform:     {}/{}", c.os(), c.architecture());
    println!("Created:      {}", c.created().as_deref().unwrap_or("-"));
    if let Some(cfg) = c.config() {
        let list =
            |v: &Option<Vec<String>>| v.as_ref().map(|x| format!("{x:?}")).unwrap_or("-".into());
        println!("Entrypoint:   {}", list(cfg.entrypoint()));
        println!("Cmd:          {}", list(cfg.cmd()));
        println!(
            "WorkingDir:   {}",
            cfg.working_dir().as_deref().unwrap_or("-")
        );
        println!("User:         {}", cfg.user().as_deref().unwrap_or("-"));
        for e in cfg.env().iter().flatten() {
            println!("Env:          {e}");
        }
        let mut labels: Vec<_> = cfg.labels().iter().flatten().collect();
        labels.sort();
        for (k, v) in labels {
            println!("Label:        {k}={v}");
        }
    }
    if let Some(h) = &c.healthcheck {
        println!("Healthcheck:  {}", healthcheck_text(h));
    }
    for t in &c.on_build {
        println!("OnBuild:      {t}");
    }
    println!("Layers:");
    let total: u64 = image.layers().iter().map(|(d, _)| d.size()).sum();
    for (d, _) in image.layers() {
        println!(
            "  {}  {:>12}  {}",
            d.digest(),
            human(d.size()),
            d.media_type()
        );
    }
    println!(
        "Total:        {} in {} layers",
        human(total),
        image.layers().len()
    );
    Ok(())
}

/// A health check on one line: its test, then the options it sets
/// (durations as Docker's flags write them).
fn healthcheck_text(h: &shipyard_image::oci::config::Healthcheck) -> String {
    let mut out = format!("{:?}", h.test);
    let secs = |ns: i64| format!("{}s", ns as f64 / 1e9);
    for (name, ns) in [
        ("interval", h.interval),
        ("timeout", h.timeout),
        ("start-period", h.start_period),
        ("start-interval", h.start_interval),
    ] {
        if ns != 0 {
            out.push_str(&format!(" --{name}={}", secs(ns)));
        }
    }
    if h.retries != 0 {
        out.push_str(&format!(" --retries={}", h.retries));
    }
    out
}
