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

use super::error::{BuildError, Doing};
use super::stepcache::{Record, StepCache};
use oci_spec::image::{Descriptor, MediaType};
use shipyard_image::oci::digest::Digest;
use shipyard_image::oci::media;
use shipyard_image::reference::RegistryRef;
use shipyard_image::registry::client::{Client, Scope};
use shipyard_image::registry::progress::Progress;
use shipyard_image::registry::{pull, push};
use shipyard_image::transport;

type Result<T, E = BuildError> = std::result::Result<T, E>;

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
    /// A client of `r`, with the registry settings of `o`.
    pub fn new(r: &RegistryRef, o: &transport::Options) -> Result<Remote> {
        let client = Client::new(&r.registry, r.api_host(), &o.registry).doing(|| r.to_string())?;
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
        let r = self
            .client
            .send("HEAD", &url, &Scope::pull(repo), &|h| {
                Ok(h.head(&url)
                    .header(reqwest::header::ACCEPT, shipyard_image::registry::ACCEPT))
            })
            .doing(|| format!("looking up {}", tag_for(key)))?;
        match r.status() {
            s if s.is_success() => Ok(true),
            reqwest::StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.client.status_error("HEAD", &url, r))
                .doing(|| format!("looking up {}", tag_for(key))),
        }
    }

    /// Looks `key` up; on a hit, brings its record and layer into the
    /// local cache and returns the record.
    pub fn fetch(&self, sc: &StepCache, key: &Digest) -> Result<Option<Record>> {
        if !self.has(key)? {
            return Ok(None);
        }
        let repo = &self.repo.repository;
        let entry = || format!("{}/{repo}:{}", self.repo.registry, tag_for(key));
        let desc = pull::fetch_manifest(&self.client, repo, &tag_for(key), &sc.cache)
            .doing(|| format!("fetching {}", entry()))?;
        let m: oci_spec::image::ImageManifest =
            read_json(sc, &desc).doing(|| "reading a cache entry".into())?;
        if m.config().media_type() != &MediaType::Other(RECORD_TYPE.to_string()) {
            let config = m.config().media_type().to_string();
            return Err(BuildError::NotACacheEntry(entry(), config));
        }
        let progress = Progress::default();
        let counters = pull::Counters::default();
        pull::fetch_blob(
            &self.client,
            repo,
            m.config(),
            &sc.cache,
            &progress,
            &counters,
        )
        .doing(|| format!("fetching the record of {}", entry()))?;
        let rec: Record =
            read_json(sc, m.config()).doing(|| "reading a cache entry's record".into())?;
        match m.layers().as_slice() {
            [layer] if layer.digest() == rec.layer.digest() && layer.size() == rec.layer.size() => {
            }
            _ => return Err(BuildError::EntryMismatch(entry())),
        }
        pull::fetch_blob(
            &self.client,
            repo,
            &rec.layer,
            &sc.cache,
            &progress,
            &counters,
        )
        .doing(|| format!("fetching the layer of {}", entry()))?;
        sc.store(key, &rec)?;
        tracing::info!("{}: from {}", rec.step, self.repo);
        Ok(Some(rec))
    }
}

/// A JSON blob of the cache layout, read back.
fn read_json<T: serde::de::DeserializeOwned>(
    sc: &StepCache,
    desc: &Descriptor,
) -> Result<T, Box<dyn std::error::Error + Send + Sync>> {
    let bytes = sc
        .cache
        .layout
        .read_blob(&media::digest_of(desc)?, Some(desc.size()))?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// Pushes the local records of `keys` that `to` lacks, with the registry
/// and push settings of `o`. Returns how many entries were pushed.
pub fn export(
    sc: &StepCache,
    to: &RegistryRef,
    keys: &[Digest],
    o: &transport::Options,
) -> Result<usize> {
    let remote = Remote::new(to, o)?;
    let progress = Progress::default();
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
        let stored = || format!("storing the cache entry of {}", rec.step);
        let record = sc
            .cache
            .layout
            .put_json(&rec, MediaType::Other(RECORD_TYPE.to_string()))
            .doing(stored)?;
        let entry = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": ARTIFACT_TYPE,
            "config": record,
            "layers": [rec.layer],
            "annotations": { "io.shipyard.cache.step": rec.step },
        });
        let desc: Descriptor = sc
            .cache
            .layout
            .put_json(&entry, MediaType::ImageManifest)
            .doing(stored)?;
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
        .doing(|| format!("pushing the cache entry of {}", rec.step))?;
        pushed += 1;
    }
    Ok(pushed)
}
