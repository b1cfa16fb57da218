//! The step cache shared through a registry: how a fleet of CI runners
//! shares work through the registry they already push to.
//!
//! Each cached step is one small OCI artifact in the cache repository,
//! tagged by its cache key (`sha256-HEX`): its config is the step's record
//! (media type [`RECORD_TYPE`]) and its one layer is the step's layer.
//! A lookup is one `HEAD` of that tag; a hit pulls the record and only the
//! layer it names, verified by digest, into the local cache. An export
//! pushes the records this build used that the repository lacks; blobs
//! already there are skipped, as in any push. Keys are content addresses
//! of the inputs, so an entry never needs updating: two runners that
//! race to push the same key push the same thing.

use super::stepcache::{Record, StepCache};
use anyhow::{bail, Context, Result};
use oci_spec::image::{Descriptor, MediaType};
use shipyard_image::oci::digest::Digest;
use shipyard_image::oci::media;
use shipyard_image::reference::RegistryRef;
use shipyard_image::registry::client::{Client, Scope};
use shipyard_image::registry::progress::{Progress, Verbosity};
use shipyard_image::registry::{pull, push};

/// The artifact type of a cache entry.
pub const ARTIFACT_TYPE: &str = "application/vnd.shipyard.cache.v1";
/// The media type of its config: the step's [`Record`].
pub const RECORD_TYPE: &str = "application/vnd.shipyard.cache.record.v1+json";

/// The tag of the entry for `key`.
pub fn tag_for(key: &Digest) -> String {
    format!("sha256-{}", key.hex())
}

/// A cache repository in a registry.
pub struct Remote {
    client: Client,
    repo: RegistryRef,
}

impl Remote {
    pub fn new(r: &RegistryRef) -> Result<Remote> {
        let o = shipyard_image::transport::defaults();
        let client = Client::new(&r.registry, r.api_host(), &o.registry)?;
        Ok(Remote {
            client,
            repo: r.clone(),
        })
    }

    /// Whether the repository has an entry for `key`.
    pub fn has(&self, key: &Digest) -> Result<bool> {
        let repo = &self.repo.repository;
        let url = self
            .client
            .url(&format!("/v2/{repo}/manifests/{}", tag_for(key)));
        let r = self.client.send("HEAD", &url, &Scope::pull(repo), &|h| {
            Ok(h.head(&url)
                .header(reqwest::header::ACCEPT, shipyard_image::registry::ACCEPT))
        })?;
        match r.status() {
            s if s.is_success() => Ok(true),
            reqwest::StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.client.status_error("HEAD", &url, r).into()),
        }
    }

    /// Looks `key` up; on a hit, brings its record and layer into the
    /// local cache and returns the record.
    pub fn fetch(&self, sc: &StepCache, key: &Digest) -> Result<Option<Record>> {
        if !self.has(key)? {
            return Ok(None);
        }
        let repo = &self.repo.repository;
        let desc = pull::fetch_manifest(&self.client, repo, &tag_for(key), &sc.cache)?;
        let bytes = sc
            .cache
            .layout
            .read_blob(&media::digest_of(&desc)?, Some(desc.size()))?;
        let m: oci_spec::image::ImageManifest =
            serde_json::from_slice(&bytes).context("reading a cache entry")?;
        if m.config().media_type() != &MediaType::Other(RECORD_TYPE.to_string()) {
            bail!(
                "{}/{repo}:{}: not a shipyard cache entry (config {})",
                self.repo.registry,
                tag_for(key),
                m.config().media_type()
            );
        }
        let progress = Progress::new(Verbosity::Quiet);
        let counters = pull::Counters::default();
        pull::fetch_blob(
            &self.client,
            repo,
            m.config(),
            &sc.cache,
            &progress,
            &counters,
        )?;
        let rec: Record = serde_json::from_slice(
            &sc.cache
                .layout
                .read_blob(&media::digest_of(m.config())?, Some(m.config().size()))?,
        )
        .context("reading a cache entry's record")?;
        match m.layers().as_slice() {
            [layer] if layer.digest() == rec.layer.digest() && layer.size() == rec.layer.size() => {
            }
            _ => bail!(
                "{}/{repo}:{}: the entry's layer does not match its record",
                self.repo.registry,
                tag_for(key)
            ),
        }
        pull::fetch_blob(
            &self.client,
            repo,
            &rec.layer,
            &sc.cache,
            &progress,
            &counters,
        )?;
        sc.store(key, &rec)?;
        tracing::info!("{}: from {}", rec.step, self.repo);
        Ok(Some(rec))
    }
}

/// Pushes the local records of `keys` that `to` lacks. Returns how many
/// entries were pushed.
pub fn export(sc: &StepCache, to: &RegistryRef, keys: &[Digest]) -> Result<usize> {
    let remote = Remote::new(to)?;
    let o = shipyard_image::transport::defaults();
    let progress = Progress::new(Verbosity::Quiet);
    let counters = push::Counters::default();
    let mut pushed = 0;
    let mut seen = std::collections::BTreeSet::new();
    for key in keys {
        if !seen.insert(key.clone()) {
            continue;
        }
        // Not re-hashed here: the registry checks every blob it is sent
        // against its digest, so a corrupt one fails the push.
        let Some(rec) = sc.record(key) else {
            continue;
        };
        if remote.has(key)? {
            continue;
        }
        let record = sc
            .cache
            .layout
            .put_json(&rec, MediaType::Other(RECORD_TYPE.to_string()))?;
        let entry = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": ARTIFACT_TYPE,
            "config": record,
            "layers": [rec.layer],
            "annotations": { "io.shipyard.cache.step": rec.step },
        });
        let desc: Descriptor = sc.cache.layout.put_json(&entry, MediaType::ImageManifest)?;
        push::push(
            &remote.client,
            &sc.cache.layout,
            &desc,
            &to.repository,
            &[tag_for(key)],
            Some(&sc.cache),
            &o.push,
            &progress,
            &counters,
        )
        .with_context(|| format!("pushing the cache entry of {}", rec.step))?;
        pushed += 1;
    }
    Ok(pushed)
}
