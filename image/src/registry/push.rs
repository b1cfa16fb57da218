//! Push: blobs first, then manifests, so a registry never holds a manifest
//! that points at a missing blob.
//!
//! Each blob is HEADed and skipped when present; mounted from another
//! repository of the same registry when the cache knows one that holds
//! it (a 202 answer to the mount starts an ordinary upload instead);
//! otherwise uploaded monolithically (POST + PUT) when it is at most
//! `chunk_size`, else in PATCH chunks of that size. A chunked upload that
//! breaks asks the registry how much it has (GET on the upload URL) and
//! resumes from there. Manifests are pushed as the exact bytes in the
//! layout, so the pushed digest equals the local one.

use super::client::{Client, RegistryError, Result, Scope};
use super::progress::{Action, Outcome, Progress};
use crate::cache::Cache;
use crate::oci::digest::Digest;
use crate::oci::layout::Layout;
use crate::oci::media;
use oci_spec::image::Descriptor;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::StatusCode;
use std::io::{Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Blobs up to this size go in one PUT; bigger ones in PATCH chunks of
    /// this size.
    pub chunk_size: u64,
    /// Blobs in flight at once.
    pub jobs: usize,
    /// Attempts to resume or restart one blob's upload.
    pub retries: u32,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            chunk_size: 64 << 20,
            jobs: 4,
            retries: 5,
        }
    }
}

/// What a push did.
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) uploaded: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) mounted: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

#[derive(Debug, serde::Serialize)]
/// What a push did, for `--json`.
pub struct PushStats {
    /// Blobs uploaded.
    pub blobs_uploaded: u64,
    /// Blobs the registry already had.
    pub blobs_present: u64,
    /// Blobs mounted from another repository of the registry.
    pub blobs_mounted: u64,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
}

impl Counters {
    /// The totals so far.
    pub fn stats(&self) -> PushStats {
        PushStats {
            blobs_uploaded: self.uploaded.load(Ordering::Relaxed),
            blobs_present: self.skipped.load(Ordering::Relaxed),
            blobs_mounted: self.mounted.load(Ordering::Relaxed),
            bytes_uploaded: self.bytes.load(Ordering::Relaxed),
        }
    }
}

fn protocol(s: String) -> RegistryError {
    RegistryError::Protocol(s)
}

fn location(client: &Client, r: &reqwest::blocking::Response, what: &str) -> Result<String> {
    r.headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|l| client.url(l))
        .ok_or_else(|| protocol(format!("{what}: the registry sent no Location header")))
}

/// Adds `key=value` to a URL that may already have a query.
fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

/// A job: push the blob `desc` of `layout` to `repo`.
struct Upload<'a> {
    client: &'a Client,
    layout: &'a Layout,
    repo: &'a str,
    cache: Option<&'a Cache>,
    opts: &'a PushOptions,
    progress: &'a Progress,
    counters: &'a Counters,
}

impl Upload<'_> {
    fn exists(&self, digest: &Digest) -> Result<bool> {
        let url = self
            .client
            .url(&format!("/v2/{}/blobs/{digest}", self.repo));
        let r = self
            .client
            .send("HEAD", &url, &Scope::push(self.repo), &|h| Ok(h.head(&url)))?;
        match r.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.client.status_error("HEAD", &url, r)),
        }
    }

    /// Starts an upload session, mounting from `from` when given. Returns
    /// `None` when the mount succeeded (nothing left to send).
    fn start(&self, digest: &Digest, from: Option<&str>) -> Result<Option<String>> {
        let mut url = self
            .client
            .url(&format!("/v2/{}/blobs/uploads/", self.repo));
        let mut scope = Scope::push(self.repo);
        if let Some(f) = from {
            url = format!("{url}?mount={digest}&from={f}");
            scope.from = Some(f.to_string());
        }
        let r = self.client.send("POST", &url, &scope, &|h| {
            Ok(h.post(&url).header(CONTENT_LENGTH, 0))
        })?;
        match r.status() {
            StatusCode::CREATED if from.is_some() => Ok(None),
            StatusCode::ACCEPTED => Ok(Some(location(self.client, &r, &url)?)),
            _ => Err(self.client.status_error("POST", &url, r)),
        }
    }

    fn open(&self, digest: &Digest, offset: u64, len: u64) -> Result<std::io::Take<std::fs::File>> {
        let mut f = self.layout.open_blob(digest).map_err(RegistryError::from)?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|source| RegistryError::Io {
                path: self.layout.blob_path(digest),
                source,
            })?;
        Ok(f.take(len))
    }

    fn finish(&self, loc: &str, digest: &Digest, body: Option<u64>) -> Result<()> {
        let url = with_query(loc, "digest", &digest.to_string());
        let size = body.unwrap_or(0);
        let r = self
            .client
            .send("PUT", &url, &Scope::push(self.repo), &|h| {
                let rb = h
                    .put(&url)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, size);
                Ok(if size > 0 {
                    rb.body(reqwest::blocking::Body::sized(
                        self.open(digest, 0, size)?,
                        size,
                    ))
                } else {
                    rb.body(Vec::new())
                })
            })?;
        if r.status() != StatusCode::CREATED {
            return Err(self.client.status_error("PUT", &url, r));
        }
        Ok(())
    }

    /// How many bytes the registry holds of an upload (its `Range`).
    fn uploaded_so_far(&self, loc: &str) -> Result<Option<(String, u64)>> {
        let r = self
            .client
            .send("GET", loc, &Scope::push(self.repo), &|h| Ok(h.get(loc)))?;
        if r.status() != StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let next = location(self.client, &r, loc).unwrap_or_else(|_| loc.to_string());
        let end = r
            .headers()
            .get(RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit_once('-'))
            .and_then(|(_, e)| e.parse::<u64>().ok())
            // distribution says "0-0" for an empty upload as well as for a
            // one-byte one; chunks are never one byte, so it means empty.
            .map(|e| if e == 0 { 0 } else { e + 1 })
            .unwrap_or(0);
        Ok(Some((next, end)))
    }

    /// Sends `size` bytes in PATCH chunks, resuming after a failure from
    /// where the registry says it is.
    fn chunked(&self, mut loc: String, digest: &Digest, size: u64) -> Result<()> {
        let mut offset = 0u64;
        let mut failures = 0u32;
        while offset < size {
            let len = self.opts.chunk_size.min(size - offset);
            let end = offset + len - 1;
            let body = self.open(digest, offset, len)?;
            let mut rb = self
                .client
                .http_once()
                .patch(&loc)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, len)
                .header(CONTENT_RANGE, format!("{offset}-{end}"));
            // Only to the registry's own origin: the upload URL is
            // whatever the registry's Location said.
            if let Some(h) = self.client.authorization_for(&loc, &Scope::push(self.repo)) {
                rb = rb.header(reqwest::header::AUTHORIZATION, h);
            }
            let sent = rb.body(reqwest::blocking::Body::sized(body, len)).send();
            match sent {
                Ok(r) if r.status() == StatusCode::ACCEPTED => {
                    loc = location(self.client, &r, &loc)?;
                    offset = end + 1;
                    self.counters.bytes.fetch_add(len, Ordering::Relaxed);
                    continue;
                }
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED => {
                    // Tokens expire during long uploads: the next request
                    // through `send` renews it; the resume below is one.
                    tracing::debug!("PATCH {loc}: 401; renewing the token");
                }
                Ok(r)
                    if r.status().is_client_error()
                        && r.status() != StatusCode::RANGE_NOT_SATISFIABLE
                        && r.status() != StatusCode::TOO_MANY_REQUESTS =>
                {
                    return Err(self.client.status_error("PATCH", &loc, r));
                }
                Ok(r) => tracing::warn!("PATCH {loc}: {}; resuming", r.status()),
                Err(e) => tracing::warn!("PATCH {loc}: {}; resuming", crate::error::chain_text(&e)),
            }
            failures += 1;
            if failures > self.opts.retries {
                return Err(protocol(format!(
                    "pushing blob {digest}: the chunked upload failed {failures} times; giving up"
                )));
            }
            std::thread::sleep(super::client::backoff(failures - 1));
            match self.uploaded_so_far(&loc)? {
                Some((next, have)) => {
                    tracing::info!("resuming {digest} at byte {have} of {size}");
                    loc = next;
                    offset = have;
                }
                None => {
                    tracing::info!("upload of {digest} is gone; starting over");
                    loc = self.start(digest, None)?.unwrap_or_default();
                    offset = 0;
                }
            }
        }
        self.finish(&loc, digest, None)
    }

    fn run(&self, desc: &Descriptor) -> Result<()> {
        let digest = media::digest_of(desc).map_err(RegistryError::from)?;
        let size = desc.size();
        let task = self.progress.task(Action::Push, &digest, size);
        if self.exists(&digest)? {
            self.counters.skipped.fetch_add(1, Ordering::Relaxed);
            task.done(Outcome::AlreadyPresent);
            return Ok(());
        }
        let home = self
            .cache
            .and_then(|c| c.home_of(&self.client.registry, &digest))
            .filter(|h| h != self.repo);
        let mut session = self.start(&digest, home.as_deref())?;
        if session.is_none() {
            self.counters.mounted.fetch_add(1, Ordering::Relaxed);
            task.done(Outcome::MountedFrom(home.unwrap_or_default()));
            self.note(&digest);
            return Ok(());
        }
        let mut attempt = 0;
        loop {
            let loc = session.take().unwrap_or_default();
            let res = if size <= self.opts.chunk_size {
                self.finish(&loc, &digest, Some(size)).map(|_| {
                    self.counters.bytes.fetch_add(size, Ordering::Relaxed);
                })
            } else {
                self.chunked(loc, &digest, size)
            };
            match res {
                Ok(()) => break,
                Err(e @ RegistryError::Unauthorized { .. }) => return Err(e),
                Err(e) if attempt < self.opts.retries => {
                    tracing::warn!(
                        "pushing blob {digest}: {}; starting it over",
                        crate::error::chain_text(&e)
                    );
                    std::thread::sleep(super::client::backoff(attempt));
                    attempt += 1;
                    task.reset();
                    session = self.start(&digest, None)?;
                }
                Err(e) => return Err(e),
            }
        }
        self.counters.uploaded.fetch_add(1, Ordering::Relaxed);
        task.done(Outcome::Done);
        self.note(&digest);
        Ok(())
    }

    fn note(&self, digest: &Digest) {
        if let Some(c) = self.cache {
            c.note_home(&self.client.registry, self.repo, digest);
        }
    }
}

/// Pushes one manifest's bytes under `reference` (a tag or its digest).
pub(crate) fn push_manifest(
    client: &Client,
    layout: &Layout,
    repo: &str,
    desc: &Descriptor,
    reference: &str,
) -> Result<Digest> {
    let digest = media::digest_of(desc).map_err(RegistryError::from)?;
    let bytes = layout
        .read_blob(&digest, Some(desc.size()))
        .map_err(RegistryError::from)?;
    put_manifest(
        client,
        repo,
        reference,
        desc.media_type().as_ref(),
        &bytes,
        &digest,
    )?;
    Ok(digest)
}

/// PUTs manifest bytes, checking the digest the registry stored them
/// under. Returns the response headers (`OCI-Subject` says whether the
/// registry indexed a referrer itself).
fn put_manifest(
    client: &Client,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
    digest: &Digest,
) -> Result<reqwest::header::HeaderMap> {
    let url = client.url(&format!("/v2/{repo}/manifests/{reference}"));
    let r = client.send("PUT", &url, &Scope::push(repo), &|h| {
        Ok(h.put(&url)
            .header(CONTENT_TYPE, media_type)
            .body(bytes.to_vec()))
    })?;
    if r.status() != StatusCode::CREATED {
        return Err(client.status_error("PUT", &url, r));
    }
    if let Some(got) = r
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
    {
        if got != digest.to_string() {
            return Err(protocol(format!(
                "PUT {url}: the registry stored the manifest as {got}, not {digest}"
            )));
        }
    }
    Ok(r.headers().clone())
}

/// Pushes the referrers the layout holds for `subject` (an image's SBOM),
/// after the subject itself. A registry with the referrers API says so
/// with an `OCI-Subject` header on the PUT and indexes them itself; for
/// any other (distribution 2.8, Debian's docker-registry) the referrers
/// index under the fallback tag `sha256-<hex>` is read, the referrer
/// added, and written back, as the distribution spec's fallback asks.
/// Returns how many referrers were pushed.
fn push_referrers(job: &Upload<'_>, subject: &Digest) -> Result<usize> {
    use crate::oci::referrer;
    let (client, layout, repo) = (job.client, job.layout, job.repo);
    let found = referrer::referrers(layout, subject).map_err(RegistryError::from)?;
    for r in &found {
        let digest = media::digest_of(r).map_err(RegistryError::from)?;
        let bytes = layout
            .read_blob(&digest, Some(r.size()))
            .map_err(RegistryError::from)?;
        // Its own blobs (config, layers); the subject is there already.
        let blobs: Vec<Descriptor> = media::children(&bytes)
            .into_iter()
            .filter(|c| {
                !media::is_image_manifest(c.media_type()) && !media::is_index(c.media_type())
            })
            .collect();
        for b in &blobs {
            job.progress.expect(b.size());
        }
        super::parallel(&blobs, job.opts.jobs, |b| job.run(b))?;
        let headers = put_manifest(
            client,
            repo,
            &digest.to_string(),
            r.media_type().as_ref(),
            &bytes,
            &digest,
        )?;
        if headers.contains_key("oci-subject") {
            continue;
        }
        let tag = referrer::fallback_tag(subject);
        let url = client.url(&format!("/v2/{repo}/manifests/{tag}"));
        let resp = client.send("GET", &url, &Scope::push(repo), &|h| {
            Ok(h.get(&url).header(
                reqwest::header::ACCEPT,
                "application/vnd.oci.image.index.v1+json",
            ))
        })?;
        let existing = match resp.status() {
            StatusCode::NOT_FOUND => None,
            s if s.is_success() => {
                let (body, _) = super::client::read_bounded(resp, super::MAX_MANIFEST)
                    .map_err(|e| protocol(format!("GET {url}: {e}")))?;
                Some(serde_json::from_slice(&body).map_err(|e| {
                    protocol(format!(
                        "GET {url}: the referrers fallback tag holds no image index: {e}"
                    ))
                })?)
            }
            _ => return Err(client.status_error("GET", &url, resp)),
        };
        if let Some(index) = referrer::add_to_referrers_index(existing, r) {
            let bytes = crate::oci::canonical::to_vec(&index)
                .map_err(|e| protocol(format!("the referrers index: {e}")))?;
            let d = Digest::of(&bytes);
            put_manifest(
                client,
                repo,
                &tag,
                "application/vnd.oci.image.index.v1+json",
                &bytes,
                &d,
            )?;
        }
    }
    Ok(found.len())
}

/// Pushes the image or index `desc` of `layout` to `repo`, tagged with
/// each of `tags` (by digest only when `tags` is empty). Returns the
/// manifest digest, which equals the local one.
#[allow(clippy::too_many_arguments)]
pub fn push(
    client: &Client,
    layout: &Layout,
    desc: &Descriptor,
    repo: &str,
    tags: &[String],
    cache: Option<&Cache>,
    opts: &PushOptions,
    progress: &Progress,
    counters: &Counters,
) -> Result<Digest> {
    // Manifests children-first, and the blobs they name.
    let mut manifests: Vec<Descriptor> = Vec::new();
    let mut blobs: Vec<Descriptor> = Vec::new();
    let mut stack = vec![(desc.clone(), false)];
    while let Some((d, expanded)) = stack.pop() {
        if expanded {
            if !manifests.iter().any(|m| m.digest() == d.digest()) {
                manifests.push(d);
            }
            continue;
        }
        let digest = media::digest_of(&d).map_err(RegistryError::from)?;
        let bytes = layout
            .read_blob(&digest, Some(d.size()))
            .map_err(RegistryError::from)?;
        stack.push((d, true));
        for c in media::children(&bytes) {
            if media::is_image_manifest(c.media_type()) || media::is_index(c.media_type()) {
                stack.push((c, false));
            } else if !blobs.iter().any(|b| b.digest() == c.digest()) {
                blobs.push(c);
            }
        }
    }
    for b in &blobs {
        progress.expect(b.size());
    }
    let job = Upload {
        client,
        layout,
        repo,
        cache,
        opts,
        progress,
        counters,
    };
    super::parallel(&blobs, opts.jobs, |b| job.run(b))?;
    let (top, children) = manifests
        .split_last()
        .ok_or_else(|| protocol("nothing to push".into()))?;
    for m in children {
        let d = media::digest_of(m).map_err(RegistryError::from)?;
        push_manifest(client, layout, repo, m, &d.to_string())?;
    }
    let digest = media::digest_of(top).map_err(RegistryError::from)?;
    if tags.is_empty() {
        push_manifest(client, layout, repo, top, &digest.to_string())?;
    }
    for t in tags {
        push_manifest(client, layout, repo, top, t)?;
    }
    // What the layout says about what was pushed (an image's SBOM) goes
    // with it.
    for m in &manifests {
        let d = media::digest_of(m).map_err(RegistryError::from)?;
        push_referrers(&job, &d)?;
    }
    Ok(digest)
}
