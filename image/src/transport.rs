//! One image abstraction over every transport, as go-containerregistry's
//! `layout`/`remote`/`tarball` do: a *source* resolves to a layout holding
//! the image (the user's own `oci:` layout, or the shared cache for
//! registries and archives) plus its descriptor, and a *destination* takes
//! an image from any layout. `pull`, `push`, `import`, `export` and
//! `build`'s bases are all "source, then destination".

use crate::archive::{self, ArchiveError};
use crate::cache::{Cache, CacheError};
use crate::oci::digest::{Digest, DigestParseError};
use crate::oci::image::{select_platform, Image, ImageError, Platform};
use crate::oci::layout::{Layout, LayoutError};
use crate::oci::media;
use crate::reference::{Reference, ReferenceError, RegistryRef};
use crate::registries_conf::ConfError;
use crate::registry::progress::Progress;
use crate::registry::pull::{self, Selection};
use crate::registry::push::{self, PushOptions};
use crate::registry::{self as reg, Client, RegistryError};
use oci_spec::image::{Descriptor, ImageIndex};
use std::path::PathBuf;

/// Why an image could not be moved. The variants that wrap a cause name
/// the step (which reference, which direction) and leave the cause's own
/// text to the chain, so each is printed once.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A layout (the user's or the cache's) could not be read or written.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The shared cache could not be opened.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A manifest, index or config did not make an image.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A registry could not be reached or refused the request.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// registries.conf could not be read; it is read once per process.
    #[error(transparent)]
    Conf(&'static ConfError),
    /// A mirror in registries.conf is not a registry reference.
    #[error("registries.conf: {name} maps to {there}")]
    Mirror {
        /// The repository being resolved.
        name: String,
        /// What registries.conf maps it to.
        there: String,
        /// Why that is not a reference.
        #[source]
        source: ReferenceError,
    },
    /// registries.conf lists no place to read the repository from.
    #[error("{reference}: registries.conf gives it no source")]
    NoSource {
        /// The registry reference.
        reference: String,
    },
    /// `--pull=never` and the image is not cached.
    #[error("{reference} is not in the cache ({}) and --pull=never forbids fetching it", cache.display())]
    NotCached {
        /// The registry reference.
        reference: String,
        /// The cache that was looked in.
        cache: PathBuf,
    },
    /// A registry destination names a digest, which cannot be pushed to.
    #[error("{reference}: cannot push to a digest; name a tag (or none for the source's)")]
    PushToDigest {
        /// The destination.
        reference: String,
    },
    /// An index blob is not valid JSON.
    #[error("index {digest}: invalid JSON")]
    IndexJson {
        /// The index's digest.
        digest: Digest,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// Reading from or writing to `reference` failed; the source says why.
    #[error("{action} {reference}")]
    At {
        /// What was being done: "pulling", "reading", "pushing to",
        /// "writing", "reading image".
        action: &'static str,
        /// The reference it was done with.
        reference: String,
        /// Why it failed.
        #[source]
        source: Box<TransportError>,
    },
    /// An archive could not be read or written.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// A short name is in none of registries.conf's
    /// unqualified-search-registries.
    #[error("{reference} is a short name and no registry of registries.conf's unqualified-search-registries has it:\n  {}", failures.join("\n  "))]
    NotInSearch {
        /// The reference, in the first search registry.
        reference: String,
        /// What each registry answered, one line each.
        failures: Vec<String>,
    },
}

impl From<DigestParseError> for TransportError {
    fn from(e: DigestParseError) -> Self {
        TransportError::Layout(e.into())
    }
}

impl TransportError {
    /// Wraps `e` with the step and reference it failed at.
    fn at(action: &'static str, reference: impl ToString) -> impl FnOnce(Self) -> Self {
        let reference = reference.to_string();
        move |e| TransportError::At {
            action,
            reference,
            source: Box::new(e),
        }
    }
}

type Result<T, E = TransportError> = std::result::Result<T, E>;

/// When to contact a registry for an image the cache may already hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Use the cached image when the tag was pulled before.
    Missing,
    /// Always ask the registry for the manifest (blobs already cached are
    /// not fetched again).
    Always,
    /// Never contact a registry; fail if the image is not cached.
    Never,
}

/// Everything that decides how images move.
#[derive(Debug, Clone)]
pub struct Options {
    /// How registries are reached (TLS, credentials, retries).
    pub registry: reg::Options,
    /// When the cache may answer for a registry.
    pub pull: PullPolicy,
    /// Which platform of an index is taken (or all of them).
    pub selection: Selection,
    /// How images are pushed (parallelism, retries).
    pub push: PushOptions,
    /// Where pulls and pushes report their progress (nowhere by
    /// default): the caller decides what a person sees.
    pub progress: Progress,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            registry: reg::Options::default(),
            pull: PullPolicy::Missing,
            selection: Selection::Platform(Platform::host()),
            push: PushOptions::default(),
            progress: Progress::default(),
        }
    }
}

/// What moving an image did, for `--json`.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    /// The source reference, as written.
    pub source: String,
    /// The destination reference, as written.
    pub destination: String,
    /// The digest the destination names.
    pub digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// What pulling fetched (registry sources only).
    pub pulled: Option<pull::PullStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// What pushing sent (registry destinations only).
    pub pushed: Option<push::PushStats>,
}

fn client(r: &RegistryRef, o: &Options) -> Result<Client> {
    Ok(Client::new(&r.registry, r.api_host(), &o.registry)?)
}

/// Runs a read of `rr` against its mirrors from registries.conf in turn,
/// then against the registry itself (see [`crate::registries_conf`]). A
/// mirror that fails is skipped with a warning; the registry's own error
/// is the one reported.
fn from_mirrors<T>(
    rr: &RegistryRef,
    o: &Options,
    read: impl Fn(&RegistryRef, &Client) -> Result<T>,
) -> Result<T> {
    let conf = crate::registries_conf::current().map_err(TransportError::Conf)?;
    let name = format!("{}/{}", rr.registry, rr.repository);
    let sources = conf.pull_sources(&name);
    let last = sources.len().saturating_sub(1);
    for (i, (there, insecure)) in sources.into_iter().enumerate() {
        let mut at = match RegistryRef::parse(&there) {
            Ok(at) => at,
            Err(source) => {
                return Err(TransportError::Mirror {
                    name,
                    there,
                    source,
                })
            }
        };
        at.tag.clone_from(&rr.tag);
        at.digest.clone_from(&rr.digest);
        at.implied_tag = rr.implied_tag;
        if i == last {
            return read(&at, &client(&at, o)?);
        }
        let mut mo = o.clone();
        if insecure {
            mo.registry.tls_verify = false;
        }
        match client(&at, &mo).and_then(|c| read(&at, &c)) {
            Ok(v) => {
                tracing::info!("{rr}: read from the mirror {at}");
                return Ok(v);
            }
            Err(e) => tracing::warn!(
                "{rr}: mirror {at} failed ({}); trying the next source",
                crate::error::chain_text(&e)
            ),
        }
    }
    Err(TransportError::NoSource {
        reference: rr.to_string(),
    })
}

fn read_index(layout: &Layout, d: &Descriptor) -> Result<ImageIndex> {
    let digest = media::digest_of(d)?;
    serde_json::from_slice(&layout.read_blob(&digest, Some(d.size()))?)
        .map_err(|source| TransportError::IndexJson { digest, source })
}

/// Whether every blob under `d` is in `layout`.
fn complete(layout: &Layout, d: &Descriptor) -> bool {
    archive::closure(layout, d).is_ok_and(|all| {
        all.iter()
            .all(|b| media::digest_of(b).is_ok_and(|x| layout.has_blob(&x)))
    })
}

/// Applies the platform selection to a cached top-level descriptor.
fn select(layout: &Layout, top: Descriptor, sel: &Selection) -> Result<Descriptor> {
    match sel {
        Selection::Platform(p) if media::is_index(top.media_type()) => {
            let index = read_index(layout, &top)?;
            if media::is_artifact_index(&index) {
                // An artifact bundle (a pod) is taken whole.
                return Ok(top);
            }
            let mut d = select_platform(&index, &media::digest_of(&top)?, p)?;
            d.set_annotations(None);
            Ok(d)
        }
        _ => Ok(top),
    }
}

/// Reads a short name from each registry it may be in (registries.conf's
/// unqualified-search-registries, in order), as podman does: the first
/// that has it wins; when none does, the error says what each answered.
/// A qualified name is read from its registry alone.
fn each_candidate<T>(
    rr: &RegistryRef,
    mut read: impl FnMut(&RegistryRef) -> Result<T>,
) -> Result<T> {
    if rr.search.is_empty() {
        return read(rr);
    }
    let mut failures = Vec::new();
    for c in rr.candidates() {
        match read(&c) {
            Ok(v) => return Ok(v),
            Err(e) => {
                let why = crate::error::chain_text(&e);
                tracing::info!("{c}: {why}; trying the next unqualified-search registry");
                failures.push(format!("{c}: {why}"));
            }
        }
    }
    Err(TransportError::NotInSearch {
        reference: rr.to_string(),
        failures,
    })
}

/// Resolves a source to the layout that holds it and its descriptor.
pub fn source(
    r: &Reference,
    o: &Options,
    progress: &Progress,
    report: &mut Report,
) -> Result<(Layout, Descriptor)> {
    if let Reference::Registry(rr) = r {
        if !rr.search.is_empty() {
            let found = each_candidate(rr, |c| {
                source(&Reference::Registry(c.clone()), o, progress, report)
            })?;
            report.source = r.to_string();
            return Ok(found);
        }
    }
    report.source = r.to_string();
    match r {
        Reference::Oci { dir, tag } => {
            let layout = Layout::open(dir)?;
            let d = layout.resolve(tag.as_deref())?;
            Ok((layout, d))
        }
        Reference::Registry(rr) => {
            let cache = Cache::open()?;
            if o.pull != PullPolicy::Always {
                if let Some(top) = cache.lookup_ref(rr) {
                    if let Ok(d) = select(&cache.layout, top, &o.selection) {
                        if complete(&cache.layout, &d) {
                            tracing::info!("{rr}: using the cached {}", d.digest());
                            return Ok((cache.layout.clone(), d));
                        }
                    }
                }
            }
            if o.pull == PullPolicy::Never {
                return Err(TransportError::NotCached {
                    reference: rr.to_string(),
                    cache: cache.root().to_path_buf(),
                });
            }
            let counters = pull::Counters::default();
            let d = from_mirrors(rr, o, |at, c| {
                let d = pull::pull(
                    c,
                    at,
                    &cache,
                    &o.selection,
                    o.push.jobs,
                    progress,
                    &counters,
                )?;
                if at != rr && rr.digest.is_none() && !matches!(o.selection, Selection::Platform(_))
                {
                    cache.record_ref(rr, &d);
                }
                Ok(d)
            })
            .map_err(TransportError::at("pulling", rr))?;
            report.pulled = Some(counters.stats());
            Ok((cache.layout.clone(), d))
        }
        Reference::OciArchive { file, tag } => {
            let cache = Cache::open()?;
            let d = archive::oci_read::import(file, tag.as_deref(), &cache.layout)
                .map_err(|e| TransportError::at("reading", r)(e.into()))?;
            Ok((cache.layout.clone(), d))
        }
        Reference::DockerArchive { file, name } => {
            let cache = Cache::open()?;
            let d = archive::docker_read::import(file, name.as_deref(), &cache.layout)
                .map_err(|e| TransportError::at("reading", r)(e.into()))?;
            Ok((cache.layout.clone(), d))
        }
    }
}

/// What `inspect` reads: the layout holding the image's metadata, the
/// descriptor the reference names (an index, or a manifest) and the one
/// the selection picks. A registry is asked for the manifests and config
/// blobs only, never a layer; other transports resolve as [`source`] does.
pub fn metadata(r: &Reference, o: &Options) -> Result<(Layout, Descriptor, Descriptor)> {
    match r {
        Reference::Registry(rr) if !rr.search.is_empty() => {
            each_candidate(rr, |c| metadata(&Reference::Registry(c.clone()), o))
        }
        Reference::Registry(rr) => {
            let cache = Cache::open()?;
            let f = from_mirrors(rr, o, |at, c| {
                Ok(pull::fetch_metadata(c, at, &cache, &o.selection)?)
            })
            .map_err(TransportError::at("reading", rr))?;
            Ok((cache.layout.clone(), f.top, f.chosen))
        }
        _ => {
            let progress = Progress::default();
            let (layout, top) = source(r, o, &progress, &mut Report::default())?;
            let chosen = select(&layout, top.clone(), &o.selection)?;
            Ok((layout, top, chosen))
        }
    }
}

/// Writes the image `d` of `from` to `dst`, tagged with `dst`'s tag, else
/// `default_tag`, plus `extra_tags` (registries and layouts). Returns the
/// digest of what the destination names.
/// `d` carries no annotations ([`copy`] drops them; its tag is
/// `default_tag`).
#[allow(clippy::too_many_arguments)]
fn write(
    from: &Layout,
    d: &Descriptor,
    dst: &Reference,
    default_tag: Option<&str>,
    extra_tags: &[String],
    o: &Options,
    progress: &Progress,
    report: &mut Report,
) -> Result<Digest> {
    report.destination = dst.to_string();
    let digest = media::digest_of(d)?;
    let tag = dst.tag().or(default_tag).map(str::to_string);
    match dst {
        Reference::Oci { dir, .. } => {
            let layout = Layout::open_or_create(dir)?;
            copy_closure(from, d, &layout)?;
            let mut tags: Vec<String> = tag.into_iter().collect();
            tags.extend(extra_tags.iter().cloned());
            if tags.is_empty() {
                tags.push("latest".into());
            }
            for t in &tags {
                layout.tag(t, d)?;
            }
        }
        Reference::Registry(rr) => {
            if rr.digest.is_some() {
                return Err(TransportError::PushToDigest {
                    reference: dst.to_string(),
                });
            }
            let c = client(rr, o)?;
            // A layout tag may hold ':' (a pod's NAME:VERSION); a
            // registry tag may not.
            let mut tags: Vec<String> = tag.map(|t| t.replace(':', "-")).into_iter().collect();
            tags.extend(extra_tags.iter().cloned());
            let counters = push::Counters::default();
            let cache = Cache::open().ok();
            push::push(
                &c,
                from,
                d,
                &rr.repository,
                &tags,
                cache.as_ref(),
                &o.push,
                progress,
                &counters,
            )
            .map_err(|e| TransportError::at("pushing to", dst)(e.into()))?;
            report.pushed = Some(counters.stats());
        }
        Reference::OciArchive { file, .. } => {
            archive::oci_write::export(from, d, tag.as_deref(), file)
                .map_err(|e| TransportError::at("writing", dst)(e.into()))?;
        }
        Reference::DockerArchive { file, name } => {
            let image = Image::load(from, d)?;
            archive::docker_write::export(from, &image, name.as_deref(), file)
                .map_err(|e| TransportError::at("writing", dst)(e.into()))?;
            report.digest = image.digest.to_string();
            return Ok(image.digest);
        }
    }
    report.digest = digest.to_string();
    Ok(digest)
}

/// Makes every blob under `d` present in `to`: hard links from the shared
/// cache (verified when it was filled), verified copies otherwise.
pub fn copy_closure(from: &Layout, d: &Descriptor, to: &Layout) -> Result<()> {
    if from.root() == to.root() {
        return Ok(());
    }
    let trusted = crate::cache::is_cache_layout(from);
    for b in archive::closure(from, d)? {
        let bd = media::digest_of(&b)?;
        if trusted {
            to.link_blob_from(from, &bd)?;
        } else {
            to.copy_blob_from(from, &bd)?;
        }
    }
    Ok(())
}

/// Brings the image `r` names into `to` (an index resolved to the host
/// platform's manifest) without tagging it; returns its descriptor.
pub fn import_into(r: &Reference, to: &Layout, o: &Options) -> Result<Descriptor> {
    let progress = o.progress.clone();
    let (from, d) = source(r, o, &progress, &mut Report::default())?;
    progress.finish();
    let mut d = select(&from, d, &Selection::Platform(Platform::host()))?;
    d.set_annotations(None);
    copy_closure(&from, &d, to)?;
    Ok(d)
}

/// Copies one image from `src` to `dst`.
pub fn copy(
    src: &Reference,
    dst: &Reference,
    extra_tags: &[String],
    o: &Options,
) -> Result<Report> {
    copy_between(src, o, dst, o, extra_tags)
}

/// Copies one image from `src`, read with `src_o`, to `dst`, written
/// with `dst_o`: each side its own registry options (skopeo's
/// `--src-creds`, `--dest-tls-verify`, …). Progress, selection and push
/// options are `dst_o`'s.
pub fn copy_between(
    src: &Reference,
    src_o: &Options,
    dst: &Reference,
    dst_o: &Options,
    extra_tags: &[String],
) -> Result<Report> {
    let o = dst_o;
    let progress = o.progress.clone();
    let mut report = Report::default();
    let read = Options {
        registry: src_o.registry.clone(),
        ..o.clone()
    };
    let (layout, d) = source(src, &read, &progress, &mut report)?;
    let found_tag = crate::oci::layout::ref_name(&d).map(str::to_string);
    let default_tag = src.tag().map(str::to_string).or(found_tag);
    let mut d = d;
    d.set_annotations(None);
    write(
        &layout,
        &d,
        dst,
        default_tag.as_deref(),
        extra_tags,
        o,
        &progress,
        &mut report,
    )?;
    progress.finish();
    Ok(report)
}

/// Opens the image any reference names (registries and archives through
/// the cache), resolving an index to the selected platform.
pub fn open_image(r: &Reference, o: &Options) -> Result<(Layout, Image)> {
    let progress = o.progress.clone();
    let (layout, d) = source(r, o, &progress, &mut Report::default())?;
    progress.finish();
    let image =
        Image::load(&layout, &d).map_err(|e| TransportError::at("reading image", r)(e.into()))?;
    Ok((layout, image))
}
