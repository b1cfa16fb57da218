//! The OCI image layout (`oci:DIR`): `oci-layout`, `index.json` and
//! `blobs/sha256/<hex>`.
//!
//! Two rules keep a layout valid at every instant, whatever is interrupted:
//! blobs are written to a temp file and renamed into place only after their
//! digest is verified, and `index.json` is replaced atomically (write +
//! fsync + rename + fsync of the directory) while holding an exclusive
//! `flock` on `oci-layout`, so two shipyard processes tagging the same
//! layout never lose each other's tags. Blobs go in before the manifest
//! that names them, and manifests before the index entry, so a reader never
//! finds a dangling reference.
//!
//! A third rule keeps `gc` from breaking a writer: between a writer's first
//! blob and its `index.json` update, its blobs are referenced by nothing,
//! so a gc would see them as garbage. Writers therefore hold a shared
//! `flock` on [`WRITER_LOCK`] from their first blob (or first check that a
//! blob is already there) until the handle goes away, and gc takes it
//! exclusively: it waits for every writer, and no writer starts while it
//! runs. Lock order, to stay free of deadlocks: the writer lock before
//! the `oci-layout` (index) lock. Readers take no lock, and other OCI
//! tools ignore the extra file (the image-layout spec allows files beside
//! `index.json`).

use super::digest::{Digest, HashingWriter};
use super::{canonical, media};
use crate::fsutil::{fsync_dir, write_atomic, IfExists, TMP_PREFIX};
use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, MediaType};
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The annotation that carries a tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
const LAYOUT_VERSION: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
/// The file in a layout's root that writers lock shared and gc exclusively
/// (see the module documentation).
pub const WRITER_LOCK: &str = ".shipyard-lock";
/// How old a temp file must be before gc takes it for a dead writer's.
const STALE_TMP_SECS: u64 = 3600;

#[derive(Debug, thiserror::Error)]
/// Why a layout could not be read or written. Messages name the layout or
/// the blob, and say what to do where there is something to do.
pub enum LayoutError {
    // The cause is part of the message, not a `source()`: callers print
    // this error alone as often as with its chain.
    #[error("{path}: {error}")]
    /// A file of the layout could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// The system's answer, errno kept.
        error: io::Error,
    },
    #[error("{0} is not an OCI layout (no oci-layout file); create it with a command that writes one, e.g. `shipyard diff … --output oci:{0}:TAG`")]
    /// The directory has no `oci-layout` file.
    NotALayout(PathBuf),
    #[error("{path}: unsupported imageLayoutVersion in oci-layout: {found}")]
    /// The `oci-layout` file names a version shipyard does not know.
    BadVersion {
        /// The `oci-layout` file.
        path: PathBuf,
        /// The version it names.
        found: String,
    },
    #[error("{path}: invalid JSON: {error}")]
    /// `index.json` or a blob is not valid JSON.
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's complaint (no source of its own).
        error: serde_json::Error,
    },
    #[error("blob {expected} is corrupt: its content hashes to {actual} ({path})")]
    /// A blob's content does not hash to its name: it is corrupt, and
    /// nothing read from it is used.
    DigestMismatch {
        /// The digest it is stored under.
        expected: Digest,
        /// What its content hashes to.
        actual: Digest,
        /// The file.
        path: PathBuf,
    },
    #[error("blob {digest} has {actual} bytes but its descriptor says {expected}")]
    /// A blob's size differs from its descriptor's.
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// The size the descriptor says.
        expected: u64,
        /// The size on disk.
        actual: u64,
    },
    #[error("blob {digest} is missing from {layout} (blobs/sha256/{hex})", hex = digest.hex())]
    /// A descriptor names a blob the layout does not have.
    MissingBlob {
        /// The blob.
        digest: Digest,
        /// The layout.
        layout: PathBuf,
    },
    #[error("no image tagged {tag:?} in {layout}; tags present: {available}")]
    /// No image carries the tag asked for.
    NoSuchTag {
        /// The tag.
        tag: String,
        /// The layout.
        layout: PathBuf,
        /// The tags it has, for the message.
        available: String,
    },
    #[error("{layout} holds {count} images; name one with oci:{layout}:TAG (tags: {available})")]
    /// No tag was given and the layout holds several images.
    Ambiguous {
        /// The layout.
        layout: PathBuf,
        /// How many images it holds.
        count: usize,
        /// Their tags, for the message.
        available: String,
    },
    #[error("{layout} holds no image")]
    /// The layout holds no image to pick.
    Empty {
        /// The layout.
        layout: PathBuf,
    },
    #[error(
        "invalid tag {0:?}: tags are 1-128 chars of [A-Za-z0-9_.-:], not starting with '.', '-' or ':'"
    )]
    /// A tag that OCI does not allow (see [`validate_tag`]).
    BadTag(String),
    #[error("{0}: this process is writing to the layout and cannot also collect its garbage; run gc on its own")]
    /// gc was asked for while this process holds the writer lock: it would
    /// wait for itself.
    GcWhileWriting(PathBuf),
    #[error(transparent)]
    /// A descriptor names a malformed digest.
    Digest(#[from] super::digest::DigestParseError),
}

/// Results of this module.
pub type Result<T> = std::result::Result<T, LayoutError>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LayoutError + '_ {
    move |error| LayoutError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Checks a tag the way the distribution spec spells them, plus `:`
/// inside (the image-layout spec's `ref.name` allows it), so a pod can be
/// tagged `NAME:VERSION`.
pub fn validate_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':'))
        && !tag.starts_with(['.', '-', ':'])
        && !tag.ends_with(':');
    if ok {
        Ok(())
    } else {
        Err(LayoutError::BadTag(tag.to_string()))
    }
}

/// A tag a registry accepts: [`validate_tag`] without `:`.
pub fn validate_registry_tag(tag: &str) -> Result<()> {
    if tag.contains(':') {
        return Err(LayoutError::BadTag(tag.to_string()));
    }
    validate_tag(tag)
}

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
    /// The shared writer lock once this handle (or a clone) wrote: held
    /// until the last clone is dropped, so a process keeps gc away for as
    /// long as it may still tag what it wrote.
    writing: Arc<Mutex<Option<File>>>,
}

impl Layout {
    /// Opens an existing layout, checking its `oci-layout` marker.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let marker = root.join("oci-layout");
        let text = match fs::read_to_string(&marker) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LayoutError::NotALayout(root))
            }
            Err(e) => return Err(io_err(&marker)(e)),
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|error| LayoutError::Json {
                path: marker.clone(),
                error,
            })?;
        let version = v
            .get("imageLayoutVersion")
            .and_then(|x| x.as_str())
            .unwrap_or("");
        if !version.starts_with("1.") {
            return Err(LayoutError::BadVersion {
                path: marker,
                found: version.to_string(),
            });
        }
        Ok(Self::at(root))
    }

    fn at(root: PathBuf) -> Self {
        Self {
            root,
            writing: Arc::default(),
        }
    }

    /// Opens the layout at `root`, creating an empty one if nothing is there.
    pub fn open_or_create(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        if root.join("oci-layout").exists() {
            return Self::open(root);
        }
        let blobs = root.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
        let layout = Self::at(root.to_path_buf());
        // index.json first, oci-layout last: the marker only appears once
        // the layout is complete. Both are created no-clobber, so a
        // concurrent creator can neither wipe tags already written nor
        // replace the oci-layout inode others hold their lock on.
        let index = root.join("index.json");
        let empty = empty_index();
        write_atomic(
            &index,
            &canonical_bytes(&empty, &index)?,
            PUBLIC,
            IfExists::Keep,
        )
        .map_err(io_err(&index))?;
        let marker = root.join("oci-layout");
        write_atomic(&marker, LAYOUT_VERSION.as_bytes(), PUBLIC, IfExists::Keep)
            .map_err(io_err(&marker))?;
        Ok(layout)
    }

    /// The layout's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.hex())
    }

    /// Whether the blob is present (not verified; reading it verifies it).
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Starts a streaming blob write. Nothing is visible until
    /// [`BlobWriter::commit`] has verified the digest.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        self.hold()?;
        let dir = self.root.join("blobs").join("sha256");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempfile_in(&dir)
            .map_err(io_err(&dir))?;
        Ok(BlobWriter {
            dir,
            inner: HashingWriter::new(BufWriter::with_capacity(1 << 20, tmp)),
        })
    }

    /// Stores a small blob held in memory.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<(Digest, u64)> {
        let mut w = self.blob_writer()?;
        w.write_all(bytes).map_err(io_err(&self.root))?;
        w.commit(None)
    }

    /// Stores a blob from a reader, failing (and storing nothing) if it does
    /// not hash to `expected`.
    pub fn put_reader(&self, mut r: impl Read, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let mut w = self.blob_writer()?;
        io::copy(&mut r, &mut w).map_err(io_err(&self.root))?;
        w.commit(expected)
    }

    /// Opens a blob for streaming. The caller verifies what it reads
    /// (hashing it as it goes, as [`crate::layer::for_each_member`] does);
    /// small JSON blobs should use [`Layout::read_blob`], which does.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                LayoutError::MissingBlob {
                    digest: digest.clone(),
                    layout: self.root.clone(),
                }
            } else {
                io_err(&path)(e)
            }
        })
    }

    /// Reads a whole blob, verifying its digest (and size, when known).
    pub fn read_blob(&self, digest: &Digest, size: Option<u64>) -> Result<Vec<u8>> {
        let mut f = self.open_blob(digest)?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(io_err(&self.blob_path(digest)))?;
        let actual = Digest::of(&buf);
        if &actual != digest {
            return Err(LayoutError::DigestMismatch {
                expected: digest.clone(),
                actual,
                path: self.blob_path(digest),
            });
        }
        if let Some(s) = size {
            if s != buf.len() as u64 {
                return Err(LayoutError::SizeMismatch {
                    digest: digest.clone(),
                    expected: s,
                    actual: buf.len() as u64,
                });
            }
        }
        Ok(buf)
    }

    /// Re-hashes a blob on disk and checks it against its name.
    pub fn verify_blob(&self, digest: &Digest, size: Option<u64>) -> Result<()> {
        let f = self.open_blob(digest)?;
        let path = self.blob_path(digest);
        let r = super::digest::HashingReader::new(io::BufReader::with_capacity(1 << 20, f));
        let (actual, n) = r.drain_and_finish().map_err(io_err(&path))?;
        if &actual != digest {
            return Err(LayoutError::DigestMismatch {
                expected: digest.clone(),
                actual,
                path,
            });
        }
        if let Some(s) = size {
            if s != n {
                return Err(LayoutError::SizeMismatch {
                    digest: digest.clone(),
                    expected: s,
                    actual: n,
                });
            }
        }
        Ok(())
    }

    /// Stores a JSON document canonically and returns its descriptor.
    pub fn put_json<T: serde::Serialize>(
        &self,
        value: &T,
        media_type: MediaType,
    ) -> Result<Descriptor> {
        let bytes = canonical_bytes(value, &self.root)?;
        let (d, size) = self.put_bytes(&bytes)?;
        Ok(Descriptor::new(media_type, size, media::to_spec_digest(&d)))
    }

    /// Copies a blob from another layout, verifying it, unless present.
    pub fn copy_blob_from(&self, other: &Layout, digest: &Digest) -> Result<()> {
        // Before the check: a blob found here must survive until it is
        // referenced.
        self.hold()?;
        if self.has_blob(digest) {
            return Ok(());
        }
        let f = other.open_blob(digest)?;
        self.put_reader(io::BufReader::with_capacity(1 << 20, f), Some(digest))?;
        Ok(())
    }

    /// Like [`Layout::copy_blob_from`], but hard-links when both layouts
    /// share a filesystem. Only for a trusted source whose blobs were
    /// verified on the way in (the shared cache): the link is not re-hashed.
    pub fn link_blob_from(&self, other: &Layout, digest: &Digest) -> Result<()> {
        self.hold()?;
        if self.has_blob(digest) {
            return Ok(());
        }
        let dir = self.root.join("blobs").join("sha256");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        match fs::hard_link(other.blob_path(digest), self.blob_path(digest)) {
            Ok(()) => fsync_dir(&dir).map_err(io_err(&dir)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(_) => self.copy_blob_from(other, digest),
        }
    }

    /// Reads `index.json`.
    pub fn index(&self) -> Result<ImageIndex> {
        let path = self.root.join("index.json");
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        serde_json::from_slice(&bytes).map_err(|error| LayoutError::Json { path, error })
    }

    /// Read-modify-write of `index.json` under the layout lock.
    /// Holds the writer lock too: what the new index names must not be
    /// collected by a gc that read the old one.
    pub(crate) fn update_index<T>(
        &self,
        f: impl FnOnce(&mut ImageIndex) -> Result<T>,
    ) -> Result<T> {
        self.hold()?;
        let _lock = self.lock()?;
        let mut index = self.index()?;
        let out = f(&mut index)?;
        let path = self.root.join("index.json");
        write_atomic(
            &path,
            &canonical_bytes(&index, &path)?,
            PUBLIC,
            IfExists::Replace,
        )
        .map_err(io_err(&path))?;
        Ok(out)
    }

    /// Points `tag` at `desc`, moving it off whatever it named before.
    pub fn tag(&self, tag: &str, desc: &Descriptor) -> Result<()> {
        validate_tag(tag)?;
        self.update_index(|index| {
            let mut manifests = index.manifests().clone();
            manifests.retain(|m| ref_name(m) != Some(tag));
            let mut d = desc.clone();
            let mut ann = d.annotations().clone().unwrap_or_default();
            ann.insert(REF_NAME.to_string(), tag.to_string());
            d.set_annotations(Some(ann));
            manifests.push(d);
            manifests.sort_by(|a, b| ref_name(a).cmp(&ref_name(b)));
            index.set_manifests(manifests);
            Ok(())
        })
    }

    /// Removes a tag. Returns whether it existed.
    pub fn untag(&self, tag: &str) -> Result<bool> {
        self.update_index(|index| {
            let mut manifests = index.manifests().clone();
            let before = manifests.len();
            manifests.retain(|m| ref_name(m) != Some(tag));
            let removed = manifests.len() != before;
            index.set_manifests(manifests);
            Ok(removed)
        })
    }

    /// All tags, sorted.
    pub fn tags(&self) -> Result<Vec<String>> {
        let mut t: Vec<String> = self
            .index()?
            .manifests()
            .iter()
            .filter_map(|m| ref_name(m).map(str::to_string))
            .collect();
        t.sort();
        Ok(t)
    }

    /// Finds the descriptor a reference names: a tag, a `sha256:` digest, or
    /// (with `None`) the only entry of the index.
    pub fn resolve(&self, tag_or_digest: Option<&str>) -> Result<Descriptor> {
        let index = self.index()?;
        // Referrers (an image's SBOM) are about an image, not one of the
        // layout's images: `oci:DIR` still names the only image.
        let entries: Vec<&Descriptor> = index
            .manifests()
            .iter()
            .filter(|m| !super::referrer::is_referrer_entry(m))
            .collect();
        let available = || {
            let t: Vec<&str> = entries.iter().filter_map(|m| ref_name(m)).collect();
            if t.is_empty() {
                "none".to_string()
            } else {
                t.join(", ")
            }
        };
        match tag_or_digest {
            Some(s) if s.starts_with("sha256:") => {
                let d: Digest = s.parse()?;
                if let Some(m) = index
                    .manifests()
                    .iter()
                    .find(|m| media::digest_of(m).ok().as_ref() == Some(&d))
                {
                    return Ok(m.clone());
                }
                // Not in the index: any manifest blob in the store will do.
                let bytes = self.read_blob(&d, None)?;
                let mt = media::sniff_manifest_type(&bytes);
                Ok(Descriptor::new(
                    mt,
                    bytes.len() as u64,
                    media::to_spec_digest(&d),
                ))
            }
            Some(tag) => entries
                .iter()
                .find(|m| ref_name(m) == Some(tag))
                .map(|m| (*m).clone())
                .ok_or_else(|| LayoutError::NoSuchTag {
                    tag: tag.to_string(),
                    layout: self.root.clone(),
                    available: available(),
                }),
            None => match entries.len() {
                0 => Err(LayoutError::Empty {
                    layout: self.root.clone(),
                }),
                1 => Ok(entries[0].clone()),
                n => Err(LayoutError::Ambiguous {
                    layout: self.root.clone(),
                    count: n,
                    available: available(),
                }),
            },
        }
    }

    /// Removes every blob that no index entry reaches (through manifests,
    /// indexes, configs, layers and subjects) and stale temp files. Returns
    /// the removed digests and the bytes freed. Waits for the writers of
    /// the layout to finish first (see the module documentation).
    ///
    /// A referrer (an untagged index entry with an `artifactType`, such as
    /// an image's SBOM) lives as long as its subject: once nothing else
    /// reaches the subject, the referrer's index entry is dropped and its
    /// blobs go with the subject's.
    pub fn gc(&self) -> Result<(Vec<String>, u64)> {
        let _writers = self.exclusive()?;
        let _lock = self.lock()?;
        let index = self.index()?;
        let mut live: BTreeSet<String> = BTreeSet::new();
        let (mut referrers, mut queue): (Vec<Descriptor>, Vec<Descriptor>) = index
            .manifests()
            .iter()
            .cloned()
            .partition(super::referrer::is_referrer_entry);
        loop {
            while let Some(d) = queue.pop() {
                let digest = media::digest_of(&d)?;
                if !live.insert(digest.hex().to_string()) {
                    continue;
                }
                if media::is_json_document(d.media_type()) && self.has_blob(&digest) {
                    let bytes = self.read_blob(&digest, None)?;
                    queue.extend(media::children(&bytes));
                }
            }
            // Referrers of what is live become live (and may be the
            // subjects of further referrers).
            let mut waiting = Vec::new();
            for r in referrers.drain(..) {
                let digest = media::digest_of(&r)?;
                let subject = if self.has_blob(&digest) {
                    super::referrer::subject_of(&self.read_blob(&digest, None)?)
                } else {
                    None
                };
                match subject {
                    Some(s) if !live.contains(s.hex()) => waiting.push(r),
                    // About something live, or about nothing (an
                    // artifact of its own): kept.
                    _ => queue.push(r),
                }
            }
            referrers = waiting;
            if queue.is_empty() {
                break;
            }
        }
        if !referrers.is_empty() {
            let mut index = index;
            let mut manifests = index.manifests().clone();
            manifests.retain(|m| !referrers.iter().any(|r| r.digest() == m.digest()));
            index.set_manifests(manifests);
            let path = self.root.join("index.json");
            write_atomic(
                &path,
                &canonical_bytes(&index, &path)?,
                PUBLIC,
                IfExists::Replace,
            )
            .map_err(io_err(&path))?;
        }
        let dir = self.root.join("blobs").join("sha256");
        let mut removed = Vec::new();
        let mut freed = 0;
        for ent in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let ent = ent.map_err(io_err(&dir))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            // A temp file renamed or removed meanwhile (by a writer that
            // does not lock) is simply gone.
            let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
            let meta = match ent.metadata() {
                Ok(m) => m,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(io_err(&ent.path())(e)),
            };
            let stale_tmp = name.starts_with(TMP_PREFIX) && is_stale(&meta);
            if stale_tmp || (!name.starts_with(TMP_PREFIX) && !live.contains(&name)) {
                match fs::remove_file(ent.path()) {
                    Ok(()) => {}
                    Err(e) if gone(&e) => continue,
                    Err(e) => return Err(io_err(&ent.path())(e)),
                }
                freed += meta.len();
                if !name.starts_with(TMP_PREFIX) {
                    removed.push(format!("sha256:{name}"));
                }
            }
        }
        removed.sort();
        Ok((removed, freed))
    }

    /// Takes the writer lock shared for this handle and its clones, unless
    /// they hold it already. Every write path calls it before it writes or
    /// finds a blob it will reference; a caller that is about to reference
    /// blobs it did not write here (a retag) may call it first too.
    pub fn hold(&self) -> Result<()> {
        let mut held = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        if held.is_none() {
            let (f, path) = self.writer_lock_file()?;
            f.lock_shared().map_err(io_err(&path))?;
            *held = Some(f);
        }
        Ok(())
    }

    /// Takes the writer lock exclusively (for gc and prune), saying so when
    /// it has to wait. Fails, rather than deadlock, when this very handle
    /// holds it shared.
    pub fn exclusive(&self) -> Result<File> {
        if self
            .writing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return Err(LayoutError::GcWhileWriting(self.root.clone()));
        }
        let (f, path) = self.writer_lock_file()?;
        match f.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                // A warning, so a person sees why nothing happens (the
                // CLI shows warnings unless --quiet) without the library
                // writing to stderr itself.
                tracing::warn!(
                    "waiting for other shipyard processes writing to {}…",
                    self.root.display()
                );
                f.lock().map_err(io_err(&path))?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
        }
        Ok(f)
    }

    /// Opens (creating if need be) the writer lock file. Read-only when
    /// another user's file cannot be opened for writing: `flock` works on
    /// any open file.
    fn writer_lock_file(&self) -> Result<(File, PathBuf)> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.root.join(WRITER_LOCK);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .or_else(|e| {
                if e.kind() == io::ErrorKind::PermissionDenied {
                    File::open(&path)
                } else {
                    Err(e)
                }
            })
            .map_err(io_err(&path))?;
        Ok((f, path))
    }

    /// Holds the layout's index lock (an `flock` on `oci-layout`, a file
    /// every layout already has).
    fn lock(&self) -> Result<Flock<File>> {
        let path = self.root.join("oci-layout");
        let f = OpenOptions::new()
            .read(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| io_err(&path)(e.into()))
    }
}

/// The mode of published layout files: world-readable like those of every
/// other OCI tool, so podman or a CI cache can read them (temp files are
/// created 0600).
pub const PUBLIC: u32 = 0o644;

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode));
}

/// Whether a temp file is old enough to be a dead writer's.
pub fn is_stale(meta: &fs::Metadata) -> bool {
    meta.modified()
        .ok()
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|age| age.as_secs() > STALE_TMP_SECS)
}

fn canonical_bytes<T: serde::Serialize>(value: &T, path: &Path) -> Result<Vec<u8>> {
    canonical::to_vec(value).map_err(|error| LayoutError::Json {
        path: path.to_path_buf(),
        error,
    })
}

fn empty_index() -> ImageIndex {
    // The builder only fails on missing required fields, all set here.
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::new())
        .build()
        .unwrap_or_default()
}

/// The tag of an index entry, if it has one.
pub fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a: &HashMap<String, String>| a.get(REF_NAME))
        .map(String::as_str)
}

/// A blob being written; see [`Layout::blob_writer`].
pub struct BlobWriter {
    dir: PathBuf,
    inner: HashingWriter<BufWriter<tempfile::NamedTempFile>>,
}

impl BlobWriter {
    /// Flushes, fsyncs and renames the blob into place. With `expected`, a
    /// mismatch discards the data and fails.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let (buf, digest, size) = self.inner.finish();
        let tmp = buf
            .into_inner()
            .map_err(|e| io_err(&self.dir)(e.into_error()))?;
        if let Some(exp) = expected {
            if exp != &digest {
                return Err(LayoutError::DigestMismatch {
                    expected: exp.clone(),
                    actual: digest,
                    path: tmp.path().to_path_buf(),
                });
            }
        }
        let dest = self.dir.join(digest.hex());
        if dest.exists() {
            // Same name, same content: the temp file simply goes away.
            return Ok((digest, size));
        }
        tmp.as_file().sync_all().map_err(io_err(&dest))?;
        set_mode(tmp.path(), PUBLIC);
        tmp.persist(&dest).map_err(|e| io_err(&dest)(e.error))?;
        fsync_dir(&self.dir).map_err(io_err(&self.dir))?;
        Ok((digest, size))
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.inner.count()
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
