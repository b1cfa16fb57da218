use super::transfer::RegistryArgs;
use crate::build::{build, BuildOptions};
use crate::layer::compress::Compression;
use crate::reference::Reference;
use crate::transport::{self, PullPolicy};
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
///
/// Every rule, tapeout and image layer is cached by a key of its inputs
/// (the builder base, its definition, the content of the sources it mounts
/// minus what .shipyardignore lists, the rules before it): a rule that hits
/// is not run, and a rebuild with nothing changed runs nothing and writes
/// the same digests. The log says, per step, cached or run and, for a run,
/// which input changed. See `shipyard cache --help`.
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
    /// Build only these pods (and the images they need).
    #[arg(long = "pod", value_name = "NAME")]
    pub pods: Vec<String>,
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
    /// Bases in registries: missing uses the cached image when the tag was
    /// pulled before; always asks the registry; never stays offline.
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
    pub pull: PullPolicy,
    /// Push the built image to REF (docker://HOST/REPO[:TAG]; the tag
    /// defaults to the image's). With several images, NAME=REF.
    #[arg(long = "push", value_name = "[NAME=]REF")]
    pub push: Vec<String>,
    /// Run every rule, whatever the step cache holds (results are still
    /// stored for the next build).
    #[arg(long)]
    pub no_cache: bool,
    /// Run this rule (build.NAME or tapeout.NAME) and every step after it,
    /// whatever the cache holds. Repeatable.
    #[arg(long = "no-cache-rule", value_name = "RULE")]
    pub no_cache_rules: Vec<String>,
    /// How steps are isolated: auto (the strongest level this machine
    /// allows), userns (rootless user namespaces), chroot (root without
    /// user namespaces, as in a Docker container), none (the disposable
    /// container is the builder: rules run in place). The build says
    /// which level it runs at, and why. See docs/ci.md.
    #[arg(long, value_name = "LEVEL", env = "SHIPYARD_ISOLATION", default_value = "auto",
          value_parser = |s: &str| s.parse::<crate::sandbox::isolation::Isolation>())]
    pub isolation: crate::sandbox::isolation::Isolation,
    /// Look cached steps up in this registry repository (docker://HOST/REPO)
    /// when the local cache misses, pulling only the layers needed.
    #[arg(long, value_name = "REF")]
    pub cache_from: Option<String>,
    /// Push this build's cached steps to this registry repository
    /// (docker://HOST/REPO), for other machines' --cache-from.
    #[arg(long, value_name = "REF")]
    pub cache_to: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// A `--cache-from`/`--cache-to` repository.
fn cache_repo(flag: &str, s: &str) -> Result<crate::reference::RegistryRef> {
    match Reference::parse_or_registry(s).with_context(|| format!("{flag} {s}"))? {
        Reference::Registry(r) if r.digest.is_none() && (r.implied_tag || r.tag.is_none()) => Ok(r),
        Reference::Registry(_) => {
            bail!("{flag} {s}: name a repository (docker://HOST/REPO), without a tag or digest: cache entries are tagged by their keys")
        }
        _ => bail!("{flag} {s}: the step cache is shared through a registry: docker://HOST/REPO"),
    }
}

pub fn run(a: Args, quiet: bool) -> Result<()> {
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
    // Where each image goes, checked before the build starts.
    let mut pushes: Vec<(Option<String>, Reference)> = Vec::new();
    for p in &a.push {
        let (name, r) = match p.split_once('=') {
            Some((n, r)) if !n.contains(':') => (Some(n.to_string()), r),
            _ => (None, p.as_str()),
        };
        pushes.push((
            name,
            Reference::parse_or_registry(r).with_context(|| format!("--push {p}"))?,
        ));
    }
    // --creds are for the registry the images are pushed to; bases and
    // a cache repository elsewhere use the auth files.
    let mut targets: Vec<&str> = pushes
        .iter()
        .filter_map(|(_, r)| super::transfer::registry_of(r))
        .collect();
    targets.sort_unstable();
    targets.dedup();
    if a.registry.creds.is_some() && targets.len() > 1 {
        bail!(
            "--creds name one registry, but --push names several ({}); log in to each with `shipyard login HOST` instead",
            targets.join(", ")
        );
    }
    let mut topts = transport::Options {
        registry: a.registry.options(targets.first().copied())?,
        pull: a.pull,
        verbosity: crate::registry::progress::Verbosity::detect(quiet),
        ..transport::Options::default()
    };
    topts.push.retries = a.registry.retry;
    transport::set_defaults(topts.clone());
    let opts = BuildOptions {
        output: out_dir,
        images: a.images.clone(),
        pods: a.pods.clone(),
        keep_builder: a.keep_builder,
        explain: a.explain,
        epoch: crate::reproducible::epoch(a.timestamp)?,
        compression: a.compression,
        level: a.level,
        isolation: a.isolation,
        quiet,
        cache: crate::build::CacheOptions {
            read: !a.no_cache,
            no_cache_rules: a
                .no_cache_rules
                .iter()
                .map(|r| {
                    if r.contains('.') {
                        r.clone()
                    } else {
                        format!("build.{r}")
                    }
                })
                .collect(),
            from: a
                .cache_from
                .as_deref()
                .map(|s| cache_repo("--cache-from", s))
                .transpose()?,
            to: a
                .cache_to
                .as_deref()
                .map(|s| cache_repo("--cache-to", s))
                .transpose()?,
        },
    };
    let built = build(&plan, &opts)?;
    for b in &built {
        let what = if b.pod { "pod " } else { "" };
        if !quiet {
            eprintln!(
                "{what}{} -> oci:{}:{}",
                b.name,
                opts.output.display(),
                b.tag
            );
        }
        println!("{}", b.digest);
    }
    for (name, dst) in &pushes {
        let b = match name {
            Some(n) => built
                .iter()
                .find(|b| &b.name == n)
                .with_context(|| format!("--push {n}=…: this build made no image {n}"))?,
            None if built.len() == 1 => &built[0],
            None => bail!(
                "--push {dst}: the build made {} images; write --push NAME=REF",
                built.len()
            ),
        };
        let src = Reference::Oci {
            dir: opts.output.clone(),
            // A pod's plain name tags it too (NAME:VERSION is not a
            // registry tag).
            tag: Some(if b.pod { b.name.clone() } else { b.tag.clone() }),
        };
        let report = transport::copy(&src, dst, &[], &topts)?;
        if !quiet {
            eprintln!("{} -> {}@{}", b.name, report.destination, report.digest);
        }
    }
    Ok(())
}
