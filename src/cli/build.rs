use super::transfer::RegistryArgs;
use super::values::{CompressionArg, PullArg};
use crate::build::{build, BuildOptions, Event, Events};
use anyhow::{bail, Context, Result};
use shipyard_image::reference::Reference;
use shipyard_image::transport;
use std::os::unix::fs::OpenOptionsExt;
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
    /// The directory holding shipyard.toml (default: .); for a
    /// Containerfile, the build context.
    pub dir: Option<PathBuf>,
    /// The spec file (default: DIR/shipyard.toml, else DIR/Containerfile
    /// or DIR/Dockerfile). A file named *Containerfile* or *Dockerfile* is
    /// built as one: its stages become builders, its target an image.
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// With a Containerfile: the stage to build (default: the last).
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// With a Containerfile: the network of every RUN that does not say
    /// --network (default: host), and whether ADD may download a URL
    /// (not with none).
    #[arg(long, value_enum, value_name = "MODE")]
    pub network: Option<super::shell::NetworkArg>,
    /// With a Containerfile: the image is its FROM base's layers and one
    /// layer of what the build changed (Docker's --squash: the base's
    /// layers are kept, the build's own squashed into one minimal layer).
    /// Without it, one layer per instruction that changes files.
    #[arg(long)]
    pub squash: bool,
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
    /// Attach to every image an SPDX 2.3 SBOM: the builder's packages
    /// (dpkg, apk or rpm database) whose files the image took, and the files
    /// from no package. Stored in the layout as an OCI referrer of the
    /// image (artifactType application/spdx+json) and pushed with it.
    #[arg(long)]
    pub sbom: bool,
    /// KEY=VALUE: a build argument (env of every rule), or label.NAME=V /
    /// annotation.NAME=V on every image.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// KEY=VALUE: a build argument, as --set KEY=VALUE (docker's name).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// KEY=VALUE: a label on every image, as --set label.KEY=VALUE.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// KEY=VALUE: a manifest annotation on every image, as --set
    /// annotation.KEY=VALUE.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Also give the built image this name: a registry reference
    /// (docker://HOST/REPO[:TAG] or HOST/REPO[:TAG]) pushes it there, a
    /// layout or archive (oci:DIR:TAG, oci-archive:FILE…) copies it there.
    /// With several images, NAME=REF. Repeatable.
    #[arg(short = 't', long = "tag", value_name = "[NAME=]REF")]
    pub tags: Vec<String>,
    /// The platform to build for: only this machine's (steps run natively,
    /// without emulation). For a multi-platform image, build on a runner
    /// of each architecture and combine them with `shipyard index`.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Write the built image's digest (the manifest's, as printed) here.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write a JSON summary of the build here: for each image and pod, its
    /// digest, tag, layout, size and the references it was pushed to (and
    /// with --sbom, its SBOM referrer's digest).
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// id=NAME,src=FILE or id=NAME,env=VARIABLE: a secret that rules naming
    /// it (`secrets = ["NAME"]`) see at /run/secrets/NAME, on a tmpfs. Never
    /// in a layer, a log, the step cache or a cache key (keys hold the name
    /// only: changing a secret's value does not rebuild). Repeatable.
    #[arg(long = "secret", value_name = "id=NAME,src=FILE|env=VAR")]
    pub secrets: Vec<String>,
    #[arg(long, value_enum, default_value_t = CompressionArg::Gzip)]
    pub compression: CompressionArg,
    #[arg(long)]
    pub level: Option<i32>,
    /// `created` and the mtime clamp (default: SOURCE_DATE_EPOCH, else 0).
    #[arg(long, value_name = "SECS")]
    pub timestamp: Option<i64>,
    /// Bases in registries: missing uses the cached image when the tag was
    /// pulled before; always asks the registry; never stays offline.
    #[arg(long, value_enum, default_value_t = PullArg::Missing)]
    pub pull: PullArg,
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
fn cache_repo(flag: &str, s: &str) -> Result<shipyard_image::reference::RegistryRef> {
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
    let file = spec_file(&a, &dir);
    let sets = sets(&a)?;
    check_platform(a.platform.as_deref())?;
    let pushes = destinations(&a)?;
    let topts = transport_options(&a, &pushes, quiet)?;
    let plan = if is_containerfile(&file) {
        containerfile_plan(&a, &file, &dir, &sets, &topts)?
    } else {
        if let Some(t) = &a.target {
            bail!("--target {t}: a shipyard.toml has no stages; name images with --image");
        }
        if a.network.is_some() {
            bail!("--network: a shipyard.toml says its builders' network (network = \"host\")");
        }
        if a.squash {
            bail!("--squash is for Containerfiles: a shipyard.toml image's layers are its tapeouts' (layer-per-tapeout = false gives one)");
        }
        crate::project::load(&file, &sets)?
    };
    let secrets = Secrets::parse(&a.secrets)?;
    let (out_dir, tag) = super::oci_ref(&a.output)?;
    if tag.is_some() {
        bail!(
            "--output {}: name a layout (oci:DIR); images are tagged with their names",
            a.output
        );
    }
    if a.iidfile.is_some() && a.images.len() != 1 && plan.images.len() != 1 {
        bail!("--iidfile holds one digest: build one image (--image NAME), or use --metadata-file");
    }
    let opts = build_options(&a, out_dir, secrets.secrets.clone(), topts.clone())?;
    let printer = Printer {
        quiet,
        explain: a.explain,
    };
    let built = build(&plan, &opts, &printer)?;
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
    let pushed = push_all(&built, &pushes, &opts.output, &topts, quiet)?;
    if let Some(f) = &a.iidfile {
        let Some(b) = built.iter().find(|b| !b.pod) else {
            bail!("--iidfile: the build made no image");
        };
        shipyard_image::fsutil::write_atomic(
            f,
            b.digest.as_bytes(),
            0o644,
            shipyard_image::fsutil::IfExists::Replace,
        )
        .with_context(|| format!("--iidfile {}", f.display()))?;
    }
    if let Some(f) = &a.metadata_file {
        let json = metadata(&opts.output, &built, &pushed)?;
        shipyard_image::fsutil::write_atomic(
            f,
            &serde_json::to_vec_pretty(&json)?,
            0o644,
            shipyard_image::fsutil::IfExists::Replace,
        )
        .with_context(|| format!("--metadata-file {}", f.display()))?;
    }
    Ok(())
}

/// The spec a build reads: `-f`, else DIR's shipyard.toml, else its
/// Containerfile or Dockerfile.
fn spec_file(a: &Args, dir: &std::path::Path) -> PathBuf {
    if let Some(f) = &a.file {
        return f.clone();
    }
    let toml = dir.join("shipyard.toml");
    if toml.exists() {
        return toml;
    }
    ["Containerfile", "Dockerfile"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.exists())
        .unwrap_or(toml)
}

/// A Containerfile or Dockerfile, by its name (`Dockerfile.dev`,
/// `app.containerfile`).
fn is_containerfile(file: &std::path::Path) -> bool {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    name.contains("containerfile") || name.contains("dockerfile")
}

/// A Containerfile's plan: the context is DIR, build arguments are the
/// `--build-arg`s (and `--set`s that are not labels or annotations).
fn containerfile_plan(
    a: &Args,
    file: &std::path::Path,
    dir: &std::path::Path,
    sets: &[(String, String)],
    topts: &transport::Options,
) -> Result<crate::project::Plan> {
    // A base's ONBUILD triggers and Env are in its config: read where the
    // build reads the base (pulled as --pull says).
    let t = topts.clone();
    let read = move |r: &str| -> std::result::Result<crate::frontend::BaseConfig, String> {
        let (_, image) = crate::build::base::open_image(r, &t).map_err(|e| {
            let mut m = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                m.push_str(&format!(": {s}"));
                src = s.source();
            }
            m
        })?;
        let env = (image.config.config().as_ref())
            .and_then(|c| c.env().as_ref())
            .into_iter()
            .flatten()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.clone(), String::new()),
            })
            .collect();
        let c = image.config.config().as_ref();
        Ok(crate::frontend::BaseConfig {
            on_build: image.config.on_build.clone(),
            env,
            workdir: c.and_then(|c| c.working_dir().clone()).unwrap_or_default(),
            user: c.and_then(|c| c.user().clone()).unwrap_or_default(),
        })
    };
    let mut opts = crate::frontend::Options {
        file: file.to_path_buf(),
        context: dir.to_path_buf(),
        target: a.target.clone(),
        build_args: Default::default(),
        image: a.target.clone().unwrap_or_else(|| "image".into()),
        labels: Default::default(),
        annotations: Default::default(),
        network: a
            .network
            .map_or(crate::sandbox::job::Network::Host, Into::into),
        base_triggers: Some(crate::frontend::BaseTriggers(std::sync::Arc::new(read))),
        squash: a.squash,
    };
    for (k, v) in sets {
        if let Some(l) = k.strip_prefix("label.") {
            opts.labels.insert(l.to_string(), v.clone());
        } else if let Some(n) = k.strip_prefix("annotation.") {
            opts.annotations.insert(n.to_string(), v.clone());
        } else {
            opts.build_args.insert(k.clone(), v.clone());
        }
    }
    Ok(crate::frontend::load(&opts)?)
}

/// The `--set`, `--build-arg`, `--label` and `--annotation` arguments, as
/// the spec's `--set KEY=VALUE` overrides.
fn sets(a: &Args) -> Result<Vec<(String, String)>> {
    let mut sets = Vec::new();
    for (flag, prefix, list) in [
        ("--set", "", &a.sets),
        ("--build-arg", "", &a.build_args),
        ("--label", "label.", &a.labels),
        ("--annotation", "annotation.", &a.annotations),
    ] {
        for s in list {
            let (k, v) = s
                .split_once('=')
                .with_context(|| format!("{flag} {s}: expected KEY=VALUE"))?;
            sets.push((format!("{prefix}{k}"), v.to_string()));
        }
    }
    Ok(sets)
}

/// Refuses a `--platform` other than this machine's: steps run natively.
fn check_platform(platform: Option<&str>) -> Result<()> {
    let Some(p) = platform else {
        return Ok(());
    };
    let want = shipyard_image::oci::image::Platform::parse(p)
        .map_err(|e| anyhow::anyhow!("--platform {e}"))?;
    let host = shipyard_image::oci::image::Platform::host();
    if want.os != host.os || want.arch != host.arch {
        bail!(
            "--platform {want}: this machine is {host}, and shipyard runs build steps natively \
             (no emulation); build on a {want} runner and combine the images with \
             `shipyard index IMAGE… --output oci:DIR:TAG`"
        );
    }
    Ok(())
}

/// Where each image goes (`--push`, `--tag`), checked before the build
/// starts: the image's name when given (NAME=REF), and the reference.
fn destinations(a: &Args) -> Result<Vec<(Option<String>, Reference)>> {
    let mut pushes = Vec::new();
    for (flag, p) in a
        .push
        .iter()
        .map(|p| ("--push", p))
        .chain(a.tags.iter().map(|t| ("--tag", t)))
    {
        let (name, r) = match p.split_once('=') {
            Some((n, r)) if !n.contains(':') => (Some(n.to_string()), r),
            _ => (None, p.as_str()),
        };
        if flag == "--tag" && !names_a_place(r) {
            bail!(
                "--tag {p}: name a registry (docker://HOST/REPO[:TAG] or HOST/REPO[:TAG]) or a \
                 layout (oci:DIR:TAG); in --output the images are tagged with their names"
            );
        }
        pushes.push((
            name,
            Reference::parse_or_registry(r).with_context(|| format!("{flag} {p}"))?,
        ));
    }
    Ok(pushes)
}

/// How bases are pulled and images pushed. --creds are for the registry
/// the images are pushed to; bases and a cache repository elsewhere use
/// the auth files.
fn transport_options(
    a: &Args,
    pushes: &[(Option<String>, Reference)],
    quiet: bool,
) -> Result<transport::Options> {
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
        pull: a.pull.into(),
        progress: super::progress::for_stderr(quiet),
        ..transport::Options::default()
    };
    topts.push.retries = a.registry.retry;
    Ok(topts)
}

/// The build's options from the command line.
fn build_options(
    a: &Args,
    output: PathBuf,
    secrets: Vec<crate::sandbox::job::Secret>,
    transport: transport::Options,
) -> Result<BuildOptions> {
    let no_cache_rules = a
        .no_cache_rules
        .iter()
        .map(|r| {
            if r.contains('.') {
                r.clone()
            } else {
                format!("build.{r}")
            }
        })
        .collect();
    Ok(BuildOptions {
        output,
        images: a.images.clone(),
        pods: a.pods.clone(),
        keep_builder: a.keep_builder,
        epoch: shipyard_image::reproducible::epoch(a.timestamp)?,
        compression: a.compression.into(),
        level: a.level,
        isolation: a.isolation,
        secrets,
        transport,
        sbom: a.sbom,
        cache: crate::build::CacheOptions {
            read: !a.no_cache,
            no_cache_rules,
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
    })
}

/// Copies each built image where `--push`/`--tag` say; returns (name,
/// destination) for the metadata file.
fn push_all(
    built: &[crate::build::Built],
    pushes: &[(Option<String>, Reference)],
    output: &std::path::Path,
    topts: &transport::Options,
    quiet: bool,
) -> Result<Vec<(String, String)>> {
    let mut pushed = Vec::new();
    for (name, dst) in pushes {
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
            dir: output.to_path_buf(),
            // A pod's plain name tags it too (NAME:VERSION is not a
            // registry tag).
            tag: Some(if b.pod { b.name.clone() } else { b.tag.clone() }),
        };
        let report = transport::copy(&src, dst, &[], topts)?;
        if !quiet {
            eprintln!("{} -> {}@{}", b.name, report.destination, report.digest);
        }
        pushed.push((b.name.clone(), report.destination.to_string()));
    }
    Ok(pushed)
}

/// Prints a build's events: progress on stderr (none with `-q`), the
/// `--explain` table on stdout.
struct Printer {
    quiet: bool,
    explain: bool,
}

impl Printer {
    /// What an event prints: (stderr line, stdout line).
    fn lines(&self, e: Event<'_>) -> (Option<String>, Option<String>) {
        let progress = |s: String| (!self.quiet).then_some(s);
        match e {
            Event::Step { step, status, why } => (
                progress(if why.is_empty() {
                    format!("==> {step}: {status}")
                } else {
                    format!("==> {step}: {status}: {why}")
                }),
                self.explain.then(|| format!("{step}\t{status}\t{why}")),
            ),
            Event::Explain { image, path, why } => (
                None,
                self.explain.then(|| format!("{image}\t{path}\t{why}")),
            ),
            // Asked for: said even with -q.
            Event::BuilderKept {
                state,
                changes,
                logs,
            } => (
                Some(format!(
                    "builder kept in {} (changes: {}, logs: {})",
                    state.display(),
                    changes.display(),
                    logs.display()
                )),
                None,
            ),
            Event::Isolation(summary) => (progress(format!("==> isolation: {summary}")), None),
            Event::Done { step, seconds } => (
                progress(format!("==> {step}: done in {seconds:.2} s")),
                None,
            ),
            Event::Pod(name) => (progress(format!("==> pod.{name}")), None),
            Event::CacheExported { entries, to } => {
                (progress(format!("cache: {entries} entries in {to}")), None)
            }
        }
    }
}

impl Events for Printer {
    fn event(&self, e: Event<'_>) {
        let (err, out) = self.lines(e);
        if let Some(l) = err {
            eprintln!("{l}");
        }
        if let Some(l) = out {
            println!("{l}");
        }
    }
}

/// Whether `r` names where an image goes, beyond a bare `NAME[:TAG]`
/// (which docker would keep locally, and which here would mean Docker
/// Hub): a transport prefix, or a registry host (a dot, a port or
/// localhost) before the first slash.
fn names_a_place(r: &str) -> bool {
    if r.contains("://")
        || ["oci:", "oci-archive:", "docker-archive:"]
            .iter()
            .any(|p| r.starts_with(p))
    {
        return true;
    }
    match r.split_once('/') {
        Some((host, _)) => host.contains('.') || host.contains(':') || host == "localhost",
        None => false,
    }
}

/// The `--metadata-file` document: per image and pod, where it is and
/// where it went.
fn metadata(
    layout_dir: &std::path::Path,
    built: &[crate::build::Built],
    pushed: &[(String, String)],
) -> Result<serde_json::Value> {
    let layout = shipyard_image::oci::layout::Layout::open(layout_dir)?;
    let mut images = serde_json::Map::new();
    let mut pods = serde_json::Map::new();
    for b in built {
        let tag = if b.pod { b.name.clone() } else { b.tag.clone() };
        let desc = layout.resolve(Some(&tag))?;
        let size = match shipyard_image::oci::image::Image::load(&layout, &desc) {
            Ok(img) => {
                desc.size()
                    + img.manifest.config().size()
                    + img.manifest.layers().iter().map(|l| l.size()).sum::<u64>()
            }
            Err(_) => desc.size(),
        };
        let mut entry = serde_json::json!({
            "digest": b.digest,
            "tag": b.tag,
            "layout": format!("oci:{}:{}", layout_dir.display(), tag),
            "size": size,
            "pushed": pushed.iter().filter(|(n, _)| n == &b.name).map(|(_, r)| r).collect::<Vec<_>>(),
        });
        // --sbom: the digest of the image's SPDX referrer.
        let subject = shipyard_image::oci::media::digest_of(&desc)?;
        if let Some(r) = shipyard_image::oci::referrer::referrers(&layout, &subject)?
            .iter()
            .find(|r| {
                r.artifact_type().as_ref().map(|a| a.to_string()).as_deref()
                    == Some(crate::sbom::spdx::MEDIA_TYPE)
            })
        {
            entry["sbom"] = serde_json::json!(r.digest().to_string());
        }
        if b.pod {
            pods.insert(b.name.clone(), entry);
        } else {
            images.insert(b.name.clone(), entry);
        }
    }
    Ok(serde_json::json!({ "images": images, "pods": pods }))
}

/// The `--secret` arguments, resolved to files: a variable's value goes
/// into a private temporary file (0600 in a 0700 directory), removed when
/// the command ends, so that only a path ever travels to a step's helper.
pub(super) struct Secrets {
    pub secrets: Vec<crate::sandbox::job::Secret>,
    _values: Option<tempfile::TempDir>,
}

impl Secrets {
    pub(super) fn parse(args: &[String]) -> Result<Self> {
        use crate::sandbox::job::Secret;
        let mut secrets: Vec<Secret> = Vec::new();
        let mut values: Option<tempfile::TempDir> = None;
        for arg in args {
            let (mut id, mut src, mut env) = (None, None, None);
            for field in arg.split(',') {
                match field.split_once('=') {
                    Some(("id", v)) => id = Some(v.to_string()),
                    Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
                    Some(("env", v)) => env = Some(v.to_string()),
                    Some(("type", "file" | "env")) => {}
                    _ => bail!(
                        "--secret {arg:?}: unknown field {field:?}; expected id=NAME,src=FILE or id=NAME,env=VARIABLE"
                    ),
                }
            }
            let Some(id) = id else {
                bail!("--secret {arg:?}: no id=NAME");
            };
            Secret::check_name(&id).map_err(|m| anyhow::anyhow!("--secret {arg:?}: {m}"))?;
            if secrets.iter().any(|s| s.name == id) {
                bail!("--secret: {id} is given twice");
            }
            let source = match (src, env) {
                (Some(p), None) => {
                    std::fs::File::open(&p)
                        .with_context(|| format!("--secret id={id}: reading {}", p.display()))?;
                    std::path::absolute(&p)?
                }
                (None, Some(var)) => {
                    let value = std::env::var_os(&var).with_context(|| {
                        format!("--secret id={id},env={var}: the variable {var} is not set")
                    })?;
                    let dir = match &values {
                        Some(d) => d.path().to_path_buf(),
                        None => {
                            let d = tempfile::Builder::new()
                                .prefix("shipyard-secrets-")
                                .tempdir()?;
                            let p = d.path().to_path_buf();
                            values = Some(d);
                            p
                        }
                    };
                    let file = dir.join(&id);
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&file)?;
                    std::io::Write::write_all(
                        &mut f,
                        std::os::unix::ffi::OsStrExt::as_bytes(value.as_os_str()),
                    )?;
                    file
                }
                _ => bail!("--secret {arg:?}: give exactly one of src=FILE and env=VARIABLE"),
            };
            secrets.push(Secret { name: id, source });
        }
        Ok(Self {
            secrets,
            _values: values,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(quiet: bool, explain: bool, e: Event<'_>) -> (Option<String>, Option<String>) {
        Printer { quiet, explain }.lines(e)
    }

    #[test]
    fn progress_goes_to_stderr_unless_quiet_and_explain_to_stdout() {
        let run = Event::Step {
            step: "build.a",
            status: "run",
            why: "--no-cache",
        };
        assert_eq!(
            lines(false, false, run),
            (Some("==> build.a: run: --no-cache".into()), None)
        );
        assert_eq!(
            lines(true, true, run),
            (None, Some("build.a\trun\t--no-cache".into()))
        );
        let hit = Event::Step {
            step: "build.a",
            status: "cached",
            why: "",
        };
        assert_eq!(
            lines(false, true, hit),
            (
                Some("==> build.a: cached".into()),
                Some("build.a\tcached\t".into())
            )
        );
        let done = Event::Done {
            step: "build.a",
            seconds: 1.234,
        };
        assert_eq!(
            lines(false, false, done).0.unwrap(),
            "==> build.a: done in 1.23 s"
        );
        assert_eq!(lines(true, false, done), (None, None));
        let ex = Event::Explain {
            image: "i",
            path: "/p",
            why: "w",
        };
        assert_eq!(lines(false, false, ex), (None, None));
        assert_eq!(lines(true, true, ex), (None, Some("i\t/p\tw".into())));
    }

    #[test]
    fn a_kept_builder_is_said_even_when_quiet() {
        let (state, changes, logs) = (
            std::path::Path::new("/s"),
            std::path::Path::new("/s/c"),
            std::path::Path::new("/s/l"),
        );
        let e = Event::BuilderKept {
            state,
            changes,
            logs,
        };
        assert_eq!(
            lines(true, false, e).0.unwrap(),
            "builder kept in /s (changes: /s/c, logs: /s/l)"
        );
        let iso = Event::Isolation("userns");
        assert_eq!(lines(false, false, iso).0.unwrap(), "==> isolation: userns");
        assert_eq!(lines(true, false, iso), (None, None));
    }
}
