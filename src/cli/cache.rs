use crate::build::stepcache::{parse_duration, StepCache};
use anyhow::{Context, Result};
use shipyard_image::registry::progress::human;

/// Inspect and prune the local cache (`$XDG_CACHE_HOME/shipyard`).
///
/// The cache holds the step cache (each build rule's changes, each
/// tapeout's selection and each image layer, by cache key), unpacked
/// builder bases, the blobs of pulled images, and the cache mounts rules
/// name (`cache = { "/root/.cache/pip" = "pip" }`). Builds share it safely;
/// `prune` waits for running builds, pulls and imports.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CacheCommand {
    Ls(LsArgs),
    Du(DuArgs),
    Prune(PruneArgs),
}

/// List cached steps, then cache mounts, most recently used first.
///
/// Columns: cache key (short), kind (rule, tapeout, layer, or mount), the
/// step that made it (a mount's id), its size, and how long ago it was
/// last used.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Print JSON lines instead (full keys and records).
    #[arg(long)]
    pub json: bool,
}

/// Show how much space each part of the cache takes.
#[derive(Debug, clap::Args)]
pub struct DuArgs {}

/// Remove cached steps, unpacked bases, pulled images and cache mounts not
/// used lately, then every blob nothing left refers to. A cache mount in
/// use by a running build is kept.
#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Keep what was used within this long (e.g. 36h, 7d; default: keep
    /// nothing).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub keep_duration: Option<std::time::Duration>,
}

fn ago(t: std::time::SystemTime) -> String {
    let s = t.elapsed().map_or(0, |d| d.as_secs());
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

pub fn run(a: Args, quiet: bool) -> Result<()> {
    let root = shipyard_image::cache::cache_dir()?;
    let mounts = crate::build::mounts::MountStore::at(root.join("mounts"));
    match a.command {
        CacheCommand::Ls(l) => {
            let sc = StepCache::open_at(root, false).context("opening the cache")?;
            let list = sc.list();
            if l.json {
                let secs = |t: std::time::SystemTime| {
                    t.duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                };
                for (key, rec, used) in list {
                    println!(
                        "{}",
                        serde_json::json!({"key": key.to_string(), "last_used": secs(used), "record": rec})
                    );
                }
                for m in mounts.list() {
                    println!(
                        "{}",
                        serde_json::json!({"mount": m.id, "size": m.size, "last_used": secs(m.last_used)})
                    );
                }
            } else {
                println!(
                    "{:<14} {:<8} {:<32} {:>10} {:>6}",
                    "KEY", "KIND", "STEP", "SIZE", "USED"
                );
                for (key, rec, used) in list {
                    println!(
                        "{:<14} {:<8} {:<32} {:>10} {:>6}",
                        &key.hex()[..12],
                        rec.kind.as_str(),
                        rec.step,
                        human(rec.layer.size()),
                        ago(used)
                    );
                }
                for m in mounts.list() {
                    println!(
                        "{:<14} {:<8} {:<32} {:>10} {:>6}",
                        "-",
                        "mount",
                        m.id,
                        human(m.size),
                        ago(m.last_used)
                    );
                }
            }
        }
        CacheCommand::Du(_) => {
            let sc = StepCache::open_at(root.clone(), false).context("opening the cache")?;
            let mut total = 0;
            let mut usage = sc.usage();
            usage.push(("cache mounts", mounts.list().iter().map(|m| m.size).sum()));
            for (what, n) in usage {
                println!("{:<16} {:>10}", what, human(n));
                total += n;
            }
            println!("{:<16} {:>10}  ({})", "total", human(total), root.display());
        }
        CacheCommand::Prune(p) => {
            let sc = StepCache::open_with(root, true, || {
                eprintln!("waiting for running builds to finish with the cache…")
            })
            .context("opening the cache")?;
            let keep = p.keep_duration.unwrap_or_default();
            let (n, freed) = sc.prune(keep)?;
            let (m, mfreed) = mounts.prune(keep)?;
            if !quiet {
                eprintln!(
                    "removed {n} entries and {m} cache mounts, freed {}",
                    human(freed + mfreed)
                );
            }
        }
    }
    Ok(())
}
