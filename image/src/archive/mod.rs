//! Image archives: `oci-archive:` (a tar of an OCI layout) and
//! `docker-archive:` (the `docker save` / `docker load` format).
//!
//! Each format has a writer and a reader in separate files, one direction
//! each. Writers produce byte-stable tars (sorted, owner 0, mtime from
//! SOURCE_DATE_EPOCH) into a temp file renamed into place at the end, so an
//! interrupted export never leaves a file that looks complete. Readers
//! accept only regular files and directories, verify every blob against
//! its digest (and every docker layer against its diff_id) and land them
//! in a layout.

pub mod docker_read;
pub mod docker_write;
pub mod oci_read;
pub mod oci_write;

use crate::oci::digest::Digest;
use crate::oci::layout::{Layout, LayoutError};
use crate::oci::media;
use oci_spec::image::Descriptor;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
/// Why an archive could not be read or written. Each variant names the archive file.
pub enum ArchiveError {
    #[error("{path}")]
    /// The archive (or a temporary file beside it) could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        #[source]
        /// The system's answer.
        source: io::Error,
    },
    #[error(transparent)]
    /// The layout imported into or exported from failed.
    Layout(#[from] LayoutError),
    #[error("{path}: {reason}")]
    /// The archive is not what its format says (a missing or malformed
    /// entry, a layer that does not match its diff_id).
    Invalid {
        /// The archive.
        path: PathBuf,
        /// What is wrong, for the user.
        reason: String,
    },
    /// A layer in the archive could not be decompressed or copied; the
    /// io::Error says whether the data or the disk failed.
    #[error("{path}: {what}")]
    Layer {
        /// The archive.
        path: PathBuf,
        /// Which layer and what was being done.
        what: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    /// The image in the archive is not a valid image.
    Image(#[from] crate::oci::image::ImageError),
}

/// Results of this module.
pub type Result<T> = std::result::Result<T, ArchiveError>;

pub(crate) fn invalid(path: &Path, reason: impl Into<String>) -> ArchiveError {
    ArchiveError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

pub(crate) fn io_at(path: &Path) -> impl Fn(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Every blob an image or index references, itself included, each once.
pub fn closure(layout: &Layout, top: &Descriptor) -> Result<Vec<Descriptor>> {
    let mut out: Vec<Descriptor> = Vec::new();
    let mut todo = vec![top.clone()];
    while let Some(d) = todo.pop() {
        if out.iter().any(|o| o.digest() == d.digest()) {
            continue;
        }
        if media::is_json_document(d.media_type()) {
            let digest = media::digest_of(&d).map_err(LayoutError::from)?;
            let bytes = layout.read_blob(&digest, Some(d.size()))?;
            todo.extend(media::children(&bytes));
        }
        out.push(d);
    }
    Ok(out)
}

/// A deterministic tar written to a temp file beside `dest`, renamed onto
/// it by [`TarOut::commit`].
pub(crate) struct TarOut {
    builder: tar::Builder<io::BufWriter<tempfile::NamedTempFile>>,
    dest: PathBuf,
    mtime: u64,
}

impl TarOut {
    pub fn create(dest: &Path) -> Result<TarOut> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".shipyard-archive-")
            .tempfile_in(&dir)
            .map_err(io_at(&dir))?;
        Ok(TarOut {
            builder: tar::Builder::new(io::BufWriter::with_capacity(1 << 20, tmp)),
            dest: dest.to_path_buf(),
            mtime: crate::reproducible::epoch(None)
                .map_err(|e| invalid(dest, e.to_string()))?
                .max(0) as u64,
        })
    }

    fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(self.mtime);
        h.set_size(size);
        h
    }

    pub fn dir(&mut self, name: &str) -> Result<()> {
        let mut h = self.header(tar::EntryType::Directory, 0o755, 0);
        let dest = self.dest.clone();
        self.builder
            .append_data(&mut h, name, io::empty())
            .map_err(io_at(&dest))
    }

    pub fn file(&mut self, name: &str, size: u64, r: impl Read) -> Result<()> {
        let mut h = self.header(tar::EntryType::Regular, 0o644, size);
        let dest = self.dest.clone();
        self.builder
            .append_data(&mut h, name, r)
            .map_err(io_at(&dest))
    }

    pub fn commit(self) -> Result<()> {
        let dest = self.dest;
        let buf = self.builder.into_inner().map_err(io_at(&dest))?;
        let tmp = buf.into_inner().map_err(|e| io_at(&dest)(e.into_error()))?;
        tmp.as_file().sync_all().map_err(io_at(&dest))?;
        tmp.persist(&dest).map_err(|e| io_at(&dest)(e.error))?;
        Ok(())
    }
}

/// Accepts only plain relative names: no `..`, no absolute paths.
pub(crate) fn entry_name(path: &Path, raw: &[u8]) -> Result<String> {
    let s = std::str::from_utf8(raw).map_err(|_| invalid(path, "entry name is not UTF-8"))?;
    let s = s.trim_start_matches("./").trim_end_matches('/');
    if s.starts_with('/') || s.split('/').any(|c| c == "..") {
        return Err(invalid(path, format!("entry {s:?} escapes the archive")));
    }
    Ok(s.to_string())
}

/// Reads at most `limit` bytes of a small document, or fails.
pub(crate) fn read_small(path: &Path, name: &str, r: impl Read, limit: u64) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    r.take(limit + 1).read_to_end(&mut v).map_err(io_at(path))?;
    if v.len() as u64 > limit {
        return Err(invalid(
            path,
            format!("{name} is larger than {limit} bytes"),
        ));
    }
    Ok(v)
}

/// Copies a blob into a tar from a layout.
pub(crate) fn append_blob(
    out: &mut TarOut,
    layout: &Layout,
    name: &str,
    d: &Digest,
    size: u64,
) -> Result<()> {
    let f = layout.open_blob(d)?;
    out.file(name, size, io::BufReader::with_capacity(1 << 20, f))
}
