use crate::build::{build, BuildOptions};
use crate::layer::compress::Compression;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// Build the images of a shipyard.toml, rootless.
///
/// Runs the build rules in a rootless sandbox on the builder base (see
/// `shipyard shell --help`), in dependency order; tapes out what each
/// image needs (globs, ELF closure, remap, owner/mode overrides) minus what
/// its runtime base already has; and writes every image of the pass into
/// the --output layout, tagged. A failing rule stops the build with its
/// exit code and the last lines of its log; the layout is then unchanged.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory holding shipyard.toml (default: .).
    pub dir: Option<PathBuf>,
    /// The spec file (default: DIR/shipyard.toml).
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Build only these images.
    #[arg(long = "image", value_name = "NAME")]
    pub images: Vec<String>,
    /// The layout to write: oci:DIR.
    #[arg(long, default_value = "oci:shipyard-out")]
    pub output: String,
    /// Keep the builder's state (its changes and logs) and print where.
    #[arg(long)]
    pub keep_builder: bool,
    /// Print, for every path of every image, why it is there.
    #[arg(long)]
    pub explain: bool,
    /// KEY=VALUE: a build argument (env of every rule), or label.NAME=V /
    /// annotation.NAME=V on every image.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    #[arg(long, value_enum, default_value_t = Compression::Gzip)]
    pub compression: Compression,
    #[arg(long)]
    pub level: Option<i32>,
    /// `created` and the mtime clamp (default: SOURCE_DATE_EPOCH, else 0).
    #[arg(long, value_name = "SECS")]
    pub timestamp: Option<i64>,
}

pub fn run(a: Args) -> Result<()> {
    let dir = a.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let file = a.file.clone().unwrap_or_else(|| dir.join("shipyard.toml"));
    let mut sets = Vec::new();
    for s in &a.sets {
        let (k, v) = s
            .split_once('=')
            .with_context(|| format!("--set {s}: expected KEY=VALUE"))?;
        sets.push((k.to_string(), v.to_string()));
    }
    let plan = crate::spec::load(&file, &sets)?;
    let (out_dir, tag) = super::oci_ref(&a.output)?;
    if tag.is_some() {
        bail!(
            "--output {}: name a layout (oci:DIR); images are tagged with their names",
            a.output
        );
    }
    let opts = BuildOptions {
        output: out_dir,
        images: a.images.clone(),
        keep_builder: a.keep_builder,
        explain: a.explain,
        epoch: crate::reproducible::epoch(a.timestamp)?,
        compression: a.compression,
        level: a.level,
    };
    for b in build(&plan, &opts)? {
        eprintln!("{} -> oci:{}:{}", b.name, opts.output.display(), b.tag);
        println!("{}", b.digest);
    }
    Ok(())
}
