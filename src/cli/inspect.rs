use crate::oci::layout::ref_name;
use anyhow::Result;

/// Show an image: digest, config, layers and tags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image: oci:DIR[:TAG].
    pub image: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let (layout, image) = super::open_image(&a.image)?;
    let index = layout.index()?;
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

/// Bytes as B/KiB/MiB/GiB.
pub(crate) fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}
