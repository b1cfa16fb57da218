//! Pull: a manifest (or index) and its blobs from a registry into the
//! shared cache layout, every blob verified against its digest and size
//! while it streams.

use super::client::{Client, RegistryError, Result, Scope};
use super::progress::{Action, Outcome, Progress};
use super::{ACCEPT, MAX_MANIFEST};
use crate::cache::Cache;
use crate::oci::digest::Digest;
use crate::oci::image::{select_platform, Platform};
use crate::oci::media;
use crate::reference::RegistryRef;
use oci_spec::image::{Descriptor, ImageIndex, MediaType};
use reqwest::header::{ACCEPT as ACCEPT_H, CONTENT_TYPE};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

/// What to pull from an index.
#[derive(Debug, Clone)]
pub enum Selection {
    /// The manifest for one platform.
    Platform(Platform),
    /// The whole index and every manifest in it.
    All,
}

/// What a pull did.
#[derive(Debug, Default, serde::Serialize)]
pub struct PullStats {
    /// Blobs downloaded.
    pub blobs_fetched: u64,
    /// Blobs the cache already had.
    pub blobs_cached: u64,
    /// Bytes downloaded.
    pub bytes_fetched: u64,
}

fn protocol(s: String) -> RegistryError {
    RegistryError::Protocol(s)
}

/// Fetches a manifest by tag or digest and stores it in the cache;
/// returns its descriptor. A pinned digest, and `Docker-Content-Digest`
/// when the registry sends one, are checked against the bytes.
pub fn fetch_manifest(
    client: &Client,
    repo: &str,
    reference: &str,
    cache: &Cache,
) -> Result<Descriptor> {
    let url = client.url(&format!("/v2/{repo}/manifests/{reference}"));
    let scope = Scope::pull(repo);
    let resp = client.send("GET", &url, &scope, &|h| {
        Ok(h.get(&url).header(ACCEPT_H, ACCEPT))
    })?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Err(protocol(format!(
            "{}/{repo}: no manifest {reference} (404); check the name and tag",
            client.registry
        )));
    }
    if !resp.status().is_success() {
        return Err(client.status_error("GET", &url, resp));
    }
    let header_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
    let header_digest = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut bytes = Vec::new();
    resp.take(MAX_MANIFEST + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| RegistryError::Body {
            method: "GET",
            url: url.clone(),
            what: "reading the manifest".into(),
            source,
        })?;
    if bytes.len() as u64 > MAX_MANIFEST {
        return Err(protocol(format!(
            "GET {url}: manifest larger than {MAX_MANIFEST} bytes; refusing it"
        )));
    }
    let digest = Digest::of(&bytes);
    for (what, want) in [
        (
            "the reference pins",
            reference
                .starts_with("sha256:")
                .then(|| reference.to_string()),
        ),
        (
            "Docker-Content-Digest says",
            header_digest.filter(|d| d.starts_with("sha256:")),
        ),
    ] {
        if let Some(w) = want {
            if w != digest.to_string() {
                return Err(protocol(format!(
                    "GET {url}: manifest is corrupt: {what} {w} but its content hashes to {digest}"
                )));
            }
        }
    }
    let media_type = manifest_type(&bytes, header_type.as_deref()).map_err(|why| {
        let sep = if reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        protocol(format!(
            "{}/{repo}{sep}{reference}: the registry's answer is not a manifest: {why}",
            client.registry
        ))
    })?;
    cache
        .layout
        .put_bytes(&bytes)
        .map_err(RegistryError::from)?;
    Ok(Descriptor::new(
        media_type,
        bytes.len() as u64,
        media::to_spec_digest(&digest),
    ))
}

/// What a manifest answer is: JSON of one of the manifest types shipyard
/// asks for ([`ACCEPT`]), named by its `mediaType` field, else by its
/// `Content-Type`, else by its shape. Anything else (an HTML page, a
/// truncated body, schema 1) is refused rather than cached as an image.
fn manifest_type(bytes: &[u8], header: Option<&str>) -> std::result::Result<MediaType, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON ({e})"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    match obj.get("schemaVersion").and_then(|x| x.as_u64()) {
        Some(2) => {}
        Some(n) => return Err(format!("schemaVersion {n}; only version 2 is supported")),
        None => return Err("no schemaVersion".into()),
    }
    let known = |t: &str| {
        let mt = MediaType::from(t);
        (media::is_image_manifest(&mt) || media::is_index(&mt)).then_some(mt)
    };
    let field = obj.get("mediaType").map(|m| m.as_str().unwrap_or(""));
    let mt = match (field, header.and_then(known)) {
        (Some(f), from_header) => {
            let mt = known(f).ok_or_else(|| format!("unknown mediaType {f:?}"))?;
            if let Some(h) = from_header.filter(|h| h != &mt) {
                return Err(format!(
                    "its mediaType {f:?} contradicts its Content-Type {h}"
                ));
            }
            mt
        }
        (None, Some(h)) => h,
        (None, None) if obj.contains_key("manifests") => MediaType::ImageIndex,
        (None, None) if obj.contains_key("config") => MediaType::ImageManifest,
        (None, None) => {
            return Err(format!(
                "no mediaType, and Content-Type {} is not a manifest type",
                header.unwrap_or("(none)")
            ))
        }
    };
    let shaped = if media::is_index(&mt) {
        obj.get("manifests").is_some_and(|m| m.is_array())
    } else {
        obj.get("config").is_some_and(|c| c.is_object())
            && obj.get("layers").is_some_and(|l| l.is_array())
    };
    if !shaped {
        return Err(format!("a {mt} without its required fields"));
    }
    Ok(mt)
}

/// Streams one blob into the cache, verifying digest and size. Retries
/// the whole blob when the connection breaks mid-stream.
pub fn fetch_blob(
    client: &Client,
    repo: &str,
    desc: &Descriptor,
    cache: &Cache,
    progress: &Progress,
    stats: &Counters,
) -> Result<()> {
    let digest = media::digest_of(desc).map_err(RegistryError::from)?;
    if cache.layout.has_blob(&digest) {
        stats.cached.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    let url = client.url(&format!("/v2/{repo}/blobs/{digest}"));
    let task = progress.task(Action::Pull, &digest, desc.size());
    let mut attempt = 0;
    loop {
        let resp = client.send("GET", &url, &Scope::pull(repo), &|h| Ok(h.get(&url)))?;
        if !resp.status().is_success() {
            return Err(client.status_error("GET", &url, resp));
        }
        let mut w = cache.layout.blob_writer().map_err(RegistryError::from)?;
        // One more byte than promised is enough to know it is too long.
        let mut r = task.reader(resp.take(desc.size() + 1));
        let copied = std::io::copy(&mut r, &mut w);
        match copied {
            Ok(_) => {
                if w.written() != desc.size() {
                    return Err(protocol(format!(
                        "GET {url}: blob {digest} has {} bytes but its descriptor says {}",
                        w.written(),
                        desc.size()
                    )));
                }
                w.commit(Some(&digest))
                    .map_err(|source| RegistryError::Store {
                        url: url.clone(),
                        source,
                    })?;
                stats.fetched.fetch_add(1, Ordering::Relaxed);
                stats.bytes.fetch_add(desc.size(), Ordering::Relaxed);
                cache.note_home(&client.registry, repo, &digest);
                task.done(Outcome::Done);
                return Ok(());
            }
            Err(e) if attempt < 5 => {
                tracing::warn!("GET {url}: {e}; retrying the blob");
                task.reset();
                std::thread::sleep(super::client::backoff(attempt));
                attempt += 1;
            }
            Err(e) => {
                return Err(RegistryError::Body {
                    method: "GET",
                    url,
                    what: format!("reading blob {digest}"),
                    source: e,
                });
            }
        }
    }
}

/// Shared counters for parallel blob transfers.
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) fetched: AtomicU64,
    pub(crate) cached: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

impl Counters {
    /// The totals so far.
    pub fn stats(&self) -> PullStats {
        PullStats {
            blobs_fetched: self.fetched.load(Ordering::Relaxed),
            blobs_cached: self.cached.load(Ordering::Relaxed),
            bytes_fetched: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// The manifests of a pull, fetched into the cache.
pub struct Fetched {
    /// What the reference names (a manifest or an index), as fetched.
    pub top: Descriptor,
    /// What the selection chose: a platform's manifest, or `top`.
    pub chosen: Descriptor,
    /// Every image or artifact manifest under `chosen`.
    pub manifests: Vec<Descriptor>,
}

/// Fetches the manifest `r` names and, for an index, the selected
/// manifests (every one with `All` or for an artifact index), into the
/// cache; no blob.
pub fn fetch_manifests(
    client: &Client,
    r: &RegistryRef,
    cache: &Cache,
    selection: &Selection,
) -> Result<Fetched> {
    let repo = &r.repository;
    let top = fetch_manifest(client, repo, r.reference(), cache)?;
    if r.digest.is_none() {
        cache.record_ref(r, &top);
    }
    let mut manifests = Vec::new();
    let chosen = if media::is_index(top.media_type()) {
        let index: ImageIndex = serde_json::from_slice(&read_cached(cache, &top)?)
            .map_err(|e| protocol(format!("{r}: invalid index: {e}")))?;
        let digest = media::digest_of(&top).map_err(RegistryError::from)?;
        // An index with an artifactType bundles an artifact (a pod): it
        // is not a choice of platforms and travels whole.
        let whole = matches!(selection, Selection::All) || media::is_artifact_index(&index);
        let children: Vec<Descriptor> =
            match selection {
                Selection::Platform(p) if !whole => vec![select_platform(&index, &digest, p)
                    .map_err(|e| protocol(format!("{r}: {e}")))?],
                _ => index.manifests().to_vec(),
            };
        for c in &children {
            let cd = media::digest_of(c).map_err(RegistryError::from)?;
            let got = fetch_manifest(client, repo, &cd.to_string(), cache)?;
            manifests.push(got);
        }
        if whole {
            top.clone()
        } else {
            let mut c = children[0].clone();
            c.set_annotations(None);
            c
        }
    } else {
        manifests.push(top.clone());
        top.clone()
    };
    Ok(Fetched {
        top,
        chosen,
        manifests,
    })
}

fn read_cached(cache: &Cache, d: &Descriptor) -> Result<Vec<u8>> {
    let digest = media::digest_of(d).map_err(RegistryError::from)?;
    cache
        .layout
        .read_blob(&digest, Some(d.size()))
        .map_err(RegistryError::from)
}

/// What `inspect` needs of a registry image: its manifests (see
/// [`fetch_manifests`]) and their config blobs, never a layer.
pub fn fetch_metadata(
    client: &Client,
    r: &RegistryRef,
    cache: &Cache,
    selection: &Selection,
) -> Result<Fetched> {
    let f = fetch_manifests(client, r, cache, selection)?;
    let progress = Progress::default();
    for m in &f.manifests {
        if let Some(config) = media::config_of(&read_cached(cache, m)?) {
            fetch_blob(
                client,
                &r.repository,
                &config,
                cache,
                &progress,
                &Counters::default(),
            )?;
        }
    }
    Ok(f)
}

/// Pulls `r` into the cache and returns the descriptor of what was
/// selected: a platform's manifest, or the whole index with `All`.
pub fn pull(
    client: &Client,
    r: &RegistryRef,
    cache: &Cache,
    selection: &Selection,
    jobs: usize,
    progress: &Progress,
    counters: &Counters,
) -> Result<Descriptor> {
    let Fetched {
        chosen, manifests, ..
    } = fetch_manifests(client, r, cache, selection)?;
    let read = |d: &Descriptor| read_cached(cache, d);
    let mut blobs: Vec<Descriptor> = Vec::new();
    for m in &manifests {
        if !media::is_image_manifest(m.media_type()) {
            // An artifact or nested index: copy what it references, too.
            tracing::debug!("{r}: {} is not an image manifest", m.digest());
        }
        for c in media::children(&read(m)?) {
            if !blobs.iter().any(|b| b.digest() == c.digest()) {
                blobs.push(c);
            }
        }
    }
    for b in &blobs {
        progress.expect(b.size());
    }
    super::parallel(&blobs, jobs, |b| {
        fetch_blob(client, &r.repository, b, cache, progress, counters)
    })?;
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

    #[test]
    fn manifests_of_known_types_are_accepted() {
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#;
        assert_eq!(
            manifest_type(m, Some(OCI_MANIFEST)),
            Ok(MediaType::ImageManifest)
        );
        assert_eq!(
            manifest_type(m, Some("application/json")),
            Ok(MediaType::ImageManifest)
        );
        let bare = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(manifest_type(bare, None), Ok(MediaType::ImageIndex));
        let docker = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        assert_eq!(
            manifest_type(docker, Some(media::DOCKER_MANIFEST)),
            Ok(MediaType::from(media::DOCKER_MANIFEST))
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for (body, header) in [
            (&b"<html>hello</html>"[..], Some(OCI_MANIFEST)),
            (b"[1,2]", Some(OCI_MANIFEST)),
            (br#"{"schemaVersion":1,"fsLayers":[]}"#, None),
            (br#"{"schemaVersion":2,"mediaType":"text/plain","layers":[]}"#, None),
            (br#"{"schemaVersion":2,"hello":1}"#, Some("text/html")),
            (br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#, None),
            (
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
                Some(OCI_MANIFEST),
            ),
        ] {
            assert!(
                manifest_type(body, header).is_err(),
                "{} was accepted",
                String::from_utf8_lossy(body)
            );
        }
    }
}
