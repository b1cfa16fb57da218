//! The step cache: what a build step produced, by cache key, in the user's
//! shared cache (see [`shipyard_image::cache`]).
//!
//! - `steps/KEY.json` is a record: which step made it, and the layer that
//!   holds its result (a rule's changes to the builder, a tapeout's staged
//!   tree, or an image layer). The layer blob lives in the cache's OCI
//!   layout, so records are content-addressed all the way down; a record
//!   whose blob is gone or corrupt is a miss. Its mtime is when it was last
//!   used (for `cache prune --keep-duration`).
//! - `last/…json` remembers the parts of the key each step had the last
//!   time it was built from the same spec, so a miss can say what changed.
//! - `sources/` holds the content lists those parts refer to, and the stat
//!   caches that spare re-hashing unchanged source files.
//! - `lock`: builds hold it shared for their whole run, `cache prune`
//!   exclusively, so a prune never removes what a running build is
//!   writing. Prune then takes the cache layout's writer lock exclusively
//!   too, which waits for pulls that are not part of a build (see
//!   [`shipyard_image::cache`]); always in this order, so nothing deadlocks. Every file is written through a temp file and a rename: a
//!   crash leaves the old record or the new one, never half of one, and
//!   two builds writing the same key write the same thing.

use super::key::{KeyHasher, SourceContent, StepKey};
use oci_spec::image::Descriptor;
use serde::{Deserialize, Serialize};
use shipyard_image::cache::write_private;
use shipyard_image::cache::Cache;
use shipyard_image::fsutil::TMP_PREFIX;
use shipyard_image::oci::digest::Digest;
use shipyard_image::oci::layout::is_stale;
use shipyard_image::oci::media;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum StepCacheError {
    #[error(transparent)]
    Cache(#[from] shipyard_image::cache::CacheError),
    #[error("step cache {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Layout(#[from] shipyard_image::oci::layout::LayoutError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StepCacheError + '_ {
    move |error| StepCacheError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// What kind of result a record holds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// A build rule's changes to the builder (an upper-dir delta).
    Rule,
    /// A tapeout's staged tree.
    Tapeout,
    /// An image layer made of tapeouts.
    Layer,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Rule => "rule",
            RecordKind::Tapeout => "tapeout",
            RecordKind::Layer => "layer",
        }
    }
}

/// One cached result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub kind: RecordKind,
    /// The step that made it (`build.NAME`, `tapeout.NAME`, `image.NAME`).
    pub step: String,
    pub layer: Descriptor,
    pub diff_id: String,
    /// Seconds since the epoch when it was stored.
    pub created: u64,
    /// Tapeouts: why each path is there (image path → reason).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub explain: BTreeMap<String, String>,
}

impl Record {
    pub fn new(kind: RecordKind, step: &str, layer: Descriptor, diff_id: String) -> Record {
        Record {
            kind,
            step: step.to_string(),
            layer,
            diff_id,
            created: now_secs(),
            explain: BTreeMap::new(),
        }
    }

    pub fn digest(&self) -> Option<Digest> {
        media::digest_of(&self.layer).ok()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The step cache of one cache root, held shared while it lives.
pub struct StepCache {
    pub cache: Cache,
    _lock: File,
    /// Pruning only: the cache layout's writer lock, held exclusively.
    _writers: Option<File>,
}

impl StepCache {
    /// Opens the user's cache for a build (shared lock). A process opens
    /// it before any other [`Cache`] it holds: prune takes this lock, then
    /// the cache layout's, and a process holding them the other way round
    /// could wait for prune while prune waits for it.
    pub fn open() -> Result<StepCache, StepCacheError> {
        Self::open_at(shipyard_image::cache::cache_dir()?, false)
    }

    /// Opens a cache root; `exclusive` for pruning (waits for builds).
    pub fn open_at(root: PathBuf, exclusive: bool) -> Result<StepCache, StepCacheError> {
        Self::open_with(root, exclusive, || {})
    }

    /// Like [`StepCache::open_at`]; `waiting` is called when an exclusive
    /// open has to wait for running builds (to tell the user why).
    pub fn open_with(
        root: PathBuf,
        exclusive: bool,
        waiting: impl FnOnce(),
    ) -> Result<StepCache, StepCacheError> {
        std::fs::create_dir_all(&root).map_err(io_err(&root))?;
        let path = root.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        if exclusive {
            if lock.try_lock().is_err() {
                waiting();
                lock.lock().map_err(io_err(&path))?;
            }
        } else {
            lock.lock_shared().map_err(io_err(&path))?;
        }
        let (cache, writers) = if exclusive {
            let (c, w) = Cache::exclusive(root)?;
            (c, Some(w))
        } else {
            (Cache::at(root)?, None)
        };
        Ok(StepCache {
            cache,
            _lock: lock,
            _writers: writers,
        })
    }

    fn steps_dir(&self) -> PathBuf {
        self.cache.root().join("steps")
    }

    fn record_path(&self, key: &Digest) -> PathBuf {
        self.steps_dir().join(format!("{}.json", key.hex()))
    }

    /// The record for `key` if it and its blob exist, without reading the
    /// blob (for a probe, or to push what this build just verified).
    pub fn record(&self, key: &Digest) -> Option<Record> {
        let rec: Record =
            serde_json::from_slice(&std::fs::read(self.record_path(key)).ok()?).ok()?;
        let d = rec.digest()?;
        self.cache.layout.has_blob(&d).then_some(rec)
    }

    /// Whether a record for `key` exists with its blob (not verified).
    pub fn has(&self, key: &Digest) -> bool {
        self.record(key).is_some()
    }

    /// The record for `key`, if it and its blob are present and intact.
    /// A corrupt blob (checked by its digest) is removed with its record,
    /// so the step runs again instead of restoring garbage.
    pub fn lookup(&self, key: &Digest) -> Option<Record> {
        let path = self.record_path(key);
        let rec: Record = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
        let digest = rec.digest()?;
        match self
            .cache
            .layout
            .verify_blob(&digest, Some(rec.layer.size()))
        {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(
                    "cached {} ({}): {e}; it will be rebuilt",
                    rec.step,
                    key.short()
                );
                let _ = std::fs::remove_file(&path);
                if self.cache.layout.has_blob(&digest) {
                    let _ = std::fs::remove_file(self.cache.layout.blob_path(&digest));
                }
                return None;
            }
        }
        // Last used: now (for prune --keep-duration).
        if let Ok(f) = File::options().write(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Some(rec)
    }

    /// Stores a record (its blob must already be in the cache layout).
    pub fn store(&self, key: &Digest, rec: &Record) -> Result<(), StepCacheError> {
        let path = self.record_path(key);
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| StepCacheError::Io {
            path: path.clone(),
            error: e.into(),
        })?;
        write_private(&path, &bytes).map_err(io_err(&path))
    }

    /// Where the key parts of `step` of the spec in `spec_dir` were last
    /// recorded.
    fn last_path(&self, spec_dir: &Path, step: &str) -> PathBuf {
        let mut id = KeyHasher::new("last");
        id.field(spec_dir.as_os_str().as_bytes())
            .field(step.as_bytes());
        self.cache
            .root()
            .join("last")
            .join(format!("{}.json", id.finish().hex()))
    }

    /// The key parts `step` had when last built from this spec.
    pub fn last_parts(&self, spec_dir: &Path, step: &str) -> Option<BTreeMap<String, String>> {
        serde_json::from_slice(&std::fs::read(self.last_path(spec_dir, step)).ok()?).ok()
    }

    /// Remembers `key`'s parts as `step`'s latest (a hint: failures are
    /// logged).
    pub fn remember_parts(&self, spec_dir: &Path, step: &str, key: &StepKey) {
        let path = self.last_path(spec_dir, step);
        let res = serde_json::to_vec(&key.parts)
            .map_err(std::io::Error::other)
            .and_then(|b| write_private(&path, &b));
        if let Err(e) = res {
            tracing::warn!("remembering {step}'s cache key: {e}");
        }
    }

    /// Where a source's stat cache lives.
    pub fn stat_cache(&self, source: &Path) -> PathBuf {
        stat_cache_path(self.cache.root(), source)
    }

    /// Keeps a source content list, so a later miss can name what changed.
    pub fn keep_source(&self, c: &SourceContent) {
        let path = self.source_path(&c.digest);
        if !path.exists() {
            let _ = write_private(&path, c.to_text().as_bytes());
        }
    }

    pub fn source(&self, digest: &str) -> Option<SourceContent> {
        let d: Digest = digest.parse().ok()?;
        let text = std::fs::read_to_string(self.source_path(&d)).ok()?;
        SourceContent::parse(&text)
    }

    fn source_path(&self, d: &Digest) -> PathBuf {
        self.cache
            .root()
            .join("sources")
            .join(format!("content-{}", d.hex()))
    }

    /// Every record, with its key and when it was last used.
    pub fn list(&self) -> Vec<(Digest, Record, SystemTime)> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.steps_dir()) else {
            return out;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Some(key) = p
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| format!("sha256:{s}").parse::<Digest>().ok())
            else {
                continue;
            };
            let Ok(bytes) = std::fs::read(&p) else {
                continue;
            };
            let Ok(rec) = serde_json::from_slice::<Record>(&bytes) else {
                continue;
            };
            let used = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            out.push((key, rec, used));
        }
        out.sort_by(|a, b| b.2.cmp(&a.2).then(a.1.step.cmp(&b.1.step)));
        out
    }

    /// Removes what was not used within `keep`: step records, unpacked
    /// bases, source lists, pulled tags, and leftover builder states; then
    /// every blob of the cache that nothing left refers to. Returns
    /// (entries removed, bytes freed). Temp files go only once stale (a
    /// dead writer's): the locks keep live shipyard writers away, and this
    /// spares whatever else writes there.
    pub fn prune(&self, keep: Duration) -> Result<(usize, u64), StepCacheError> {
        let cutoff = SystemTime::now()
            .checked_sub(keep)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let old = |p: &Path| {
            let Ok(m) = std::fs::symlink_metadata(p) else {
                return false;
            };
            if is_tmp(p) {
                return is_stale(&m);
            }
            m.modified().is_ok_and(|t| t < cutoff || keep.is_zero())
        };
        let root = self.cache.root().to_path_buf();
        let mut removed = 0;
        let mut freed = 0;
        for sub in ["steps", "last", "sources", "refs", "logs"] {
            for p in list_files(&root.join(sub)) {
                if old(&p) {
                    freed += std::fs::symlink_metadata(&p).map_or(0, |m| m.len());
                    std::fs::remove_file(&p).map_err(io_err(&p))?;
                    removed += 1;
                }
            }
        }
        // Unpacked bases: the directory's mtime is when it was last used.
        // Builder states a killed cleanup left in the trash: all of them
        // (a running cleanup's is deleted twice, harmlessly).
        let dirs = |sub: &str| -> Vec<PathBuf> {
            std::fs::read_dir(root.join(sub))
                .map(|rd| {
                    rd.flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path())
                        .collect()
                })
                .unwrap_or_default()
        };
        let stale = dirs("rootfs").into_iter().filter(|p| old(p));
        for p in stale.chain(dirs("trash")) {
            freed += du(&p);
            crate::sandbox::remove_tree(&p).map_err(|e| StepCacheError::Io {
                path: p.clone(),
                error: std::io::Error::other(shipyard_image::error::chain_text(&e)),
            })?;
            let _ = std::fs::remove_file(shipyard_image::rootfs::walk::ownership_record_path(&p));
            removed += 1;
        }
        // Blobs nothing refers to any more.
        let live = self.live_blobs();
        let layout = &self.cache.layout;
        for p in list_files(&layout.root().join("blobs").join("sha256")) {
            let Some(hex) = p.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let garbage = if is_tmp(&p) {
                old(&p)
            } else {
                !live.contains(hex)
            };
            if garbage {
                freed += std::fs::symlink_metadata(&p).map_or(0, |m| m.len());
                std::fs::remove_file(&p).map_err(io_err(&p))?;
                removed += 1;
            }
        }
        Ok((removed, freed))
    }

    /// Hex digests of every blob a record or a remembered tag needs.
    fn live_blobs(&self) -> BTreeSet<String> {
        let mut live = BTreeSet::new();
        for (_, rec, _) in self.list() {
            if let Some(d) = rec.digest() {
                live.insert(d.hex().to_string());
            }
        }
        let layout = &self.cache.layout;
        let mut tops: Vec<Descriptor> = layout
            .index()
            .map(|i| i.manifests().clone())
            .unwrap_or_default();
        for p in list_files(&self.cache.root().join("refs")) {
            if let Ok(d) = std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Descriptor>(&b).map_err(|e| e.to_string()))
            {
                tops.push(d);
            }
        }
        for top in tops {
            if let Ok(all) = shipyard_image::archive::closure(layout, &top) {
                for d in all {
                    if let Ok(x) = media::digest_of(&d) {
                        live.insert(x.hex().to_string());
                    }
                }
            }
        }
        live
    }

    /// Bytes used, by part of the cache.
    pub fn usage(&self) -> Vec<(&'static str, u64)> {
        let root = self.cache.root();
        let mut rule = 0;
        let mut tapeout = 0;
        let mut layer = 0;
        let mut in_records = BTreeSet::new();
        for (_, rec, _) in self.list() {
            if let Some(d) = rec.digest() {
                if in_records.insert(d.hex().to_string()) {
                    let n = rec.layer.size();
                    match rec.kind {
                        RecordKind::Rule => rule += n,
                        RecordKind::Tapeout => tapeout += n,
                        RecordKind::Layer => layer += n,
                    }
                }
            }
        }
        let blobs = du(&self.cache.layout.root().join("blobs"));
        vec![
            ("rule layers", rule),
            ("tapeouts", tapeout),
            ("image layers", layer),
            (
                "pulled, other blobs",
                blobs.saturating_sub(rule + tapeout + layer),
            ),
            ("unpacked bases", du(&root.join("rootfs"))),
            (
                "records",
                ["steps", "last", "sources", "refs", "homes"]
                    .iter()
                    .map(|s| du(&root.join(s)))
                    .sum(),
            ),
        ]
    }
}

/// Where the stat cache of a tree (a source, a rootfs base) lives under a
/// cache root (see [`super::key::source_content`]). Named by the tree's
/// path as raw bytes: two trees whose names differ only in bytes that are
/// not UTF-8 must not share one, or a file of one could lend its digest to
/// the other's file of the same size and mtime.
pub fn stat_cache_path(root: &Path, tree: &Path) -> PathBuf {
    let id = Digest::of(tree.as_os_str().as_bytes());
    root.join("sources").join(format!("stat-{}", id.hex()))
}

/// Whether `p` is a temp file of an atomic write.
fn is_tmp(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.as_encoded_bytes().starts_with(TMP_PREFIX.as_bytes()))
}

fn list_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Bytes of regular files under `p` (hard links counted once per name).
fn du(p: &Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Parses a duration like `36h`, `7d`, `90m`, `45s` or `1w`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit, like 36h or 7d"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use s, m, h, d or w)"
            ))
        }
    };
    Ok(Duration::from_secs(n * secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("36h").unwrap(),
            Duration::from_secs(36 * 3600)
        );
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("h")
            .unwrap_err()
            .contains("expected a number"));
        assert!(parse_duration("3y").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn a_record_with_a_corrupt_blob_is_a_miss_and_is_removed() {
        let t = tempfile::tempdir().unwrap();
        let sc = StepCache::open_at(t.path().to_path_buf(), false).unwrap();
        let (d, size) = sc.cache.layout.put_bytes(b"layer bytes").unwrap();
        let desc = Descriptor::new(
            oci_spec::image::MediaType::ImageLayerGzip,
            size,
            media::to_spec_digest(&d),
        );
        let key = Digest::of(b"key");
        sc.store(
            &key,
            &Record::new(RecordKind::Rule, "build.x", desc, d.to_string()),
        )
        .unwrap();
        assert!(sc.lookup(&key).is_some());
        use std::os::unix::fs::PermissionsExt;
        let blob = sc.cache.layout.blob_path(&d);
        std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&blob, b"layer bytez").unwrap();
        assert!(sc.lookup(&key).is_none());
        assert!(!blob.exists());
        assert!(sc.list().is_empty());
    }

    #[test]
    fn prune_keeps_what_was_used_recently_and_the_blobs_it_needs() {
        let t = tempfile::tempdir().unwrap();
        let sc = StepCache::open_at(t.path().to_path_buf(), false).unwrap();
        let mut keep = None;
        for (i, name) in ["old", "new"].iter().enumerate() {
            let (d, size) = sc.cache.layout.put_bytes(name.as_bytes()).unwrap();
            let desc = Descriptor::new(
                oci_spec::image::MediaType::ImageLayerGzip,
                size,
                media::to_spec_digest(&d),
            );
            let key = Digest::of(name.as_bytes());
            sc.store(
                &key,
                &Record::new(RecordKind::Rule, name, desc, d.to_string()),
            )
            .unwrap();
            if i == 0 {
                let f = File::options()
                    .write(true)
                    .open(sc.record_path(&key))
                    .unwrap();
                f.set_modified(SystemTime::now() - Duration::from_secs(7200))
                    .unwrap();
            } else {
                keep = Some((key, d));
            }
        }
        let (stray, _) = sc.cache.layout.put_bytes(b"stray").unwrap();
        let (removed, _) = sc.prune(Duration::from_secs(3600)).unwrap();
        assert_eq!(removed, 3, "old record, its blob and the stray blob");
        let (key, d) = keep.unwrap();
        assert!(sc.lookup(&key).is_some());
        assert!(sc.cache.layout.has_blob(&d));
        assert!(!sc.cache.layout.has_blob(&stray));
        sc.prune(Duration::ZERO).unwrap();
        assert!(sc.list().is_empty());
    }
}
