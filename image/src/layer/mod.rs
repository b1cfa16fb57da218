//! Layers: generating them from a ChangeSet (`generate`), reading their
//! members safely (`read`), applying them to a directory (`extract`),
//! merging several into one (`merge`), and compression (`compress`). Generation and extraction are separate files,
//! each one direction.

pub mod compress;
pub mod extract;
pub mod from_image;
pub mod generate;
pub mod merge;
pub(crate) mod pgzip;
pub mod read;
pub mod resolve;

use crate::oci::digest::{Digest, HashingReader, HashingWriter};
use crate::oci::layout::{Layout, LayoutError};
use crate::oci::media;
use crate::rootfs::changeset::ChangeSet;
use compress::{Compression, Encoder};
use generate::{GenerateError, TarOptions};
use oci_spec::image::Descriptor;
use read::TarItem;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

/// Why a layer could not be written, read or applied. Each variant that
/// is about one layer names its digest, so a user can find the blob.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The layout holding the layer failed (a missing or corrupt blob...).
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The tree being archived could not be read.
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// The stream does not decompress or is not a tar.
    #[error("layer {layer}: cannot read the layer stream")]
    Corrupt {
        /// The layer's digest.
        layer: Digest,
        /// What the decoder or tar reader said.
        #[source]
        source: io::Error,
    },
    /// One member was refused or could not be applied.
    #[error("layer {layer}: entry {path:?}")]
    Entry {
        /// The layer's digest.
        layer: Digest,
        /// The member as the layer names it.
        path: String,
        /// Why; an [`EntryError::Io`] keeps the errno.
        #[source]
        source: EntryError,
    },
    #[error("layer {layer}: uncompressed content hashes to {actual}, but the image config says {expected} (diff_id)")]
    /// The uncompressed stream does not hash to the diff_id the config
    /// gives: the layer is not the one the image was built with.
    DiffId {
        /// The layer's digest.
        layer: Digest,
        /// The diff_id the config gives.
        expected: String,
        /// What the uncompressed stream hashes to.
        actual: Digest,
    },
    #[error("layer {layer} has media type {media_type:?}, which is not a layer shipyard can apply (an OCI or Docker tar, tar+gzip or tar+zstd layer); the image needs a tool that knows this type")]
    /// A media type that is not a layer shipyard can read; refused rather
    /// than guessed at.
    MediaType {
        /// The layer's digest.
        layer: Digest,
        /// Its media type.
        media_type: String,
    },
    /// Reading or writing a blob failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Why one member of a layer was refused or could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// The member is malformed or unsafe (an absolute path, `..`, an id
    /// Linux cannot hold, an unsupported type...): the layer is at fault,
    /// and the message says how.
    #[error("{0}")]
    Refused(String),
    /// Its path cannot name a place inside the root.
    #[error(transparent)]
    Path(#[from] read::PathError),
    /// A hardlink's target cannot name a place inside the root.
    #[error("hardlink target escapes the root")]
    HardlinkTarget(#[source] read::PathError),
    /// Its parent path has no place inside the root.
    #[error(transparent)]
    Resolve(#[from] resolve::ResolveError),
    /// An operation on the tree failed. The source is the `io::Error` with
    /// the errno (`raw_os_error`), so a caller can tell a full disk from a
    /// permission problem.
    #[error("{what}")]
    Io {
        /// What was being done ("mkdir", "writing content"...).
        what: String,
        /// The system's answer.
        #[source]
        source: io::Error,
    },
}

impl EntryError {
    /// An [`EntryError::Io`] for a failed system call.
    pub(crate) fn sys(what: impl Into<String>, e: nix::errno::Errno) -> Self {
        EntryError::Io {
            what: what.into(),
            source: e.into(),
        }
    }

    /// The errno of a failed operation, if that is what this is.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            EntryError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

impl From<String> for EntryError {
    fn from(msg: String) -> Self {
        EntryError::Refused(msg)
    }
}

impl From<&str> for EntryError {
    fn from(msg: &str) -> Self {
        EntryError::Refused(msg.to_string())
    }
}

/// The layer media types of OCI and Docker (distributable or not), and
/// how each is compressed. Anything else (an artifact, a foreign format)
/// is refused rather than guessed at: read as a tar, it could mean
/// something else than its author meant.
pub fn layer_encoding(
    desc: &Descriptor,
    digest: &Digest,
) -> Result<media::LayerEncoding, LayerError> {
    use media::LayerEncoding::{Gzip, Plain, Zstd};
    let mt = desc.media_type().to_string();
    Ok(match mt.as_str() {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar" => Plain,
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Gzip,
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Zstd,
        _ => {
            return Err(LayerError::MediaType {
                layer: digest.clone(),
                media_type: mt,
            })
        }
    })
}

/// A layer written into a layout.
#[derive(Debug, Clone)]
pub struct LayerOutput {
    /// The blob: media type (from the compression), digest and size.
    pub descriptor: Descriptor,
    /// The digest of the uncompressed tar, for the config's `rootfs.diff_ids`.
    pub diff_id: Digest,
    /// Uncompressed size.
    pub tar_size: u64,
}

/// Writes `changes` as one compressed layer blob, in one streaming pass that
/// hashes the tar (diff_id) and the compressed bytes (digest) together.
/// Memory stays flat: nothing but I/O buffers is held.
pub fn write_layer(
    layout: &Layout,
    changes: &ChangeSet,
    root: &Path,
    compression: Compression,
    level: Option<i32>,
    opts: &TarOptions,
) -> Result<LayerOutput, LayerError> {
    let blob = layout.blob_writer()?;
    let enc = Encoder::new(blob, compression, level)?;
    let tar_hash = HashingWriter::new(enc);
    let buffered = BufWriter::with_capacity(256 * 1024, tar_hash);
    let buffered = generate::write_tar(changes, root, opts, buffered)?;
    let tar_hash = buffered
        .into_inner()
        .map_err(|e| LayerError::Io(e.into_error()))?;
    let (enc, diff_id, tar_size) = tar_hash.finish();
    let mut blob = enc.finish()?;
    blob.flush()?;
    let (digest, size) = blob.commit(None)?;
    Ok(LayerOutput {
        descriptor: Descriptor::new(
            compression.media_type(),
            size,
            media::to_spec_digest(&digest),
        ),
        diff_id,
        tar_size,
    })
}

/// Copies a layer from one layout into another as a new blob: its
/// members re-written (mtimes clamped as `opts` says, every header filled
/// the deterministic way [`generate`] fills them) and compressed as asked.
/// The source is checked against its digest and `diff_id` as it is read;
/// the output is committed only if it was whole. A builder's captured
/// changes become an image layer this way, without walking a tree again.
///
pub fn rewrite_layer(
    from: &Layout,
    desc: &Descriptor,
    diff_id: &str,
    to: &Layout,
    how: &Rewrite<'_>,
) -> Result<LayerOutput, LayerError> {
    let (opts, overlay_upper) = (&how.tar, how.overlay_upper);
    let mut b = start_layer_tar(to, how.compression, how.level)?;
    // Members that did not become files of the new layer: the whiteouts
    // turned into `.wh.` markers and the skipped mount points. overlayfs
    // makes every whiteout of a mount a hard link to one shared 0:0
    // device (kernels since 5.8), so the archive of an upper directory
    // holds one device and, for each further deletion, a hard link to it.
    // A link to a whiteout is a whiteout of its own name; a link to a
    // skipped member has nothing to link to and is skipped as well.
    let mut whiteouts = std::collections::HashSet::new();
    let mut skipped = std::collections::HashSet::new();
    for_each_member(from, desc, diff_id, |item, data| {
        let link_target = |e: &crate::rootfs::entry::Entry| match (&e.kind, &e.link) {
            (crate::rootfs::entry::Kind::Hardlink, Some(l)) => {
                Some(crate::rootfs::entry::RelPath::new(l.clone()))
            }
            _ => None,
        };
        match item {
            TarItem::Entry(e)
                if how.skip.contains(&e.path)
                    || link_target(e).is_some_and(|t| skipped.contains(&t)) =>
            {
                skipped.insert(e.path.clone());
            }
            TarItem::Entry(e)
                if overlay_upper
                    && (is_overlay_whiteout(e)
                        || link_target(e).is_some_and(|t| whiteouts.contains(&t))) =>
            {
                whiteouts.insert(e.path.clone());
                let c = crate::rootfs::changeset::Change::Whiteout(e.path.clone());
                generate::put_marker(&mut b, c.tar_path(), opts)?
            }
            TarItem::Entry(e) => {
                let opaque = overlay_upper && take_overlay_opaque(e);
                let content = generate::Content::Reader(data);
                generate::put_entry(&mut b, e, content, opts)?;
                if opaque {
                    let c = crate::rootfs::changeset::Change::Opaque(e.path.clone());
                    generate::put_marker(&mut b, c.tar_path(), opts)?
                }
            }
            TarItem::Whiteout(p) => {
                let c = crate::rootfs::changeset::Change::Whiteout(p.clone());
                generate::put_marker(&mut b, c.tar_path(), opts)?
            }
            TarItem::Opaque(d) => {
                let c = crate::rootfs::changeset::Change::Opaque(d.clone());
                generate::put_marker(&mut b, c.tar_path(), opts)?
            }
            TarItem::Skip => {}
        }
        Ok(())
    })?;
    finish_layer_tar(b, how.compression)
}

/// A layer's tar stream being written: compressed into a new blob of
/// `to`, the uncompressed bytes hashed (the diff_id) on the way.
pub(crate) type LayerTar =
    tar::Builder<BufWriter<HashingWriter<Encoder<crate::oci::layout::BlobWriter>>>>;

/// Starts a layer's tar stream (see [`finish_layer_tar`]).
pub(crate) fn start_layer_tar(
    to: &Layout,
    compression: Compression,
    level: Option<i32>,
) -> Result<LayerTar, LayerError> {
    let enc = Encoder::new(to.blob_writer()?, compression, level)?;
    Ok(tar::Builder::new(BufWriter::with_capacity(
        256 * 1024,
        HashingWriter::new(enc),
    )))
}

/// Ends a layer's tar stream and commits its blob, whole or not at all.
pub(crate) fn finish_layer_tar(
    b: LayerTar,
    compression: Compression,
) -> Result<LayerOutput, LayerError> {
    let buffered = b.into_inner().map_err(LayerError::Io)?;
    let tar_hash = buffered
        .into_inner()
        .map_err(|e| LayerError::Io(e.into_error()))?;
    let (enc, diff_id, tar_size) = tar_hash.finish();
    let mut blob = enc.finish()?;
    blob.flush()?;
    let (digest, size) = blob.commit(None)?;
    Ok(LayerOutput {
        descriptor: Descriptor::new(
            compression.media_type(),
            size,
            media::to_spec_digest(&digest),
        ),
        diff_id,
        tar_size,
    })
}

/// How [`rewrite_layer`] rewrites a layer.
#[derive(Debug, Clone)]
pub struct Rewrite<'a> {
    /// The new blob's compression.
    pub compression: Compression,
    /// Its level (else the compression's default).
    pub level: Option<i32>,
    /// Header options (mtimes clamped to the epoch).
    pub tar: TarOptions,
    /// The source is an overlayfs upper directory as archived (what a
    /// capture holds): its whiteouts (character devices 0:0) and opaque
    /// directories (the `overlay.opaque` xattr) become the `.wh.`
    /// members an image layer uses, as containerd's overlay differ makes
    /// them, and overlayfs's own xattrs are dropped.
    pub overlay_upper: bool,
    /// Entries left out: the mount points a step's sandbox made, which
    /// are not what the step changed.
    pub skip: &'a [crate::rootfs::entry::RelPath],
}

/// overlayfs marks a deleted lower file with a 0:0 character device.
fn is_overlay_whiteout(e: &crate::rootfs::entry::Entry) -> bool {
    e.kind == crate::rootfs::entry::Kind::Char && e.rdev == Some((0, 0))
}

/// Removes overlayfs's own xattrs (unprivileged overlay writes
/// `user.overlay.*`, privileged `trusted.overlay.*`: opaque, origin,
/// impure, redirect...), which mean nothing outside that mount; returns
/// whether the directory was opaque.
fn take_overlay_opaque(e: &mut crate::rootfs::entry::Entry) -> bool {
    let opaque = [&b"user.overlay.opaque"[..], b"trusted.overlay.opaque"]
        .iter()
        .any(|n| e.xattrs.get(*n).is_some_and(|v| v == b"y"));
    e.xattrs
        .retain(|k, _| !(k.starts_with(b"user.overlay.") || k.starts_with(b"trusted.overlay.")));
    opaque && e.kind == crate::rootfs::entry::Kind::Dir
}

/// Streams the members of a layer blob to `f`, in one pass: the
/// compressed bytes are hashed while they are decoded, and at the end the
/// blob's digest and size are checked first (a corrupt blob is reported as
/// corrupt, whatever the decoder made of it), then the uncompressed stream
/// against `diff_id`. Callers that write (the extractor) write into a
/// directory that is discarded on any error.
pub fn for_each_member(
    layout: &Layout,
    desc: &Descriptor,
    diff_id: &str,
    mut f: impl FnMut(&mut TarItem, &mut dyn Read) -> Result<(), LayerError>,
) -> Result<(), LayerError> {
    let digest = media::digest_of(desc).map_err(LayoutError::from)?;
    let encoding = layer_encoding(desc, &digest)?;
    let mut blob = HashingReader::new(layout.open_blob(&digest)?);
    let streamed = stream_members(&mut blob, encoding, &digest, &mut f);
    let (actual, size) = blob.drain_and_finish().map_err(LayerError::Io)?;
    if actual != digest {
        return Err(LayoutError::DigestMismatch {
            path: layout.blob_path(&digest),
            expected: digest,
            actual,
        }
        .into());
    }
    if size != desc.size() {
        return Err(LayoutError::SizeMismatch {
            digest,
            expected: desc.size(),
            actual: size,
        }
        .into());
    }
    let uncompressed = streamed?;
    if uncompressed.to_string() != diff_id {
        return Err(LayerError::DiffId {
            layer: digest,
            expected: diff_id.to_string(),
            actual: uncompressed,
        });
    }
    Ok(())
}

/// Decodes and walks one layer stream; returns the digest of the
/// uncompressed tar.
fn stream_members(
    blob: impl Read,
    encoding: media::LayerEncoding,
    digest: &Digest,
    f: &mut impl FnMut(&mut TarItem, &mut dyn Read) -> Result<(), LayerError>,
) -> Result<Digest, LayerError> {
    let corrupt = |source: io::Error| LayerError::Corrupt {
        layer: digest.clone(),
        source,
    };
    let dec = compress::decoder(blob, encoding).map_err(corrupt)?;
    let mut archive = tar::Archive::new(read::HeaderGuard::new(HashingReader::new(dec)));
    for member in archive.entries().map_err(corrupt)? {
        let mut member = member.map_err(corrupt)?;
        let path = String::from_utf8_lossy(&member.path_bytes()).into_owned();
        let mut item = read::classify(&mut member).map_err(|source| LayerError::Entry {
            layer: digest.clone(),
            path: path.clone(),
            source,
        })?;
        f(&mut item, &mut member).map_err(|e| match e {
            LayerError::Io(source) => LayerError::Entry {
                layer: digest.clone(),
                path: path.clone(),
                source: EntryError::Io {
                    what: "reading its content".into(),
                    source,
                },
            },
            other => other,
        })?;
    }
    let (uncompressed, _) = archive
        .into_inner()
        .into_inner()
        .drain_and_finish()
        .map_err(corrupt)?;
    Ok(uncompressed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::entry::RelPath;

    /// An uncompressed layer blob in `layout` made of `members`
    /// (path, tar type, link target, device numbers).
    fn layer_of(layout: &Layout, members: &[(&str, tar::EntryType, &str, u32)]) -> Descriptor {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, link, dev) in members {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            if kind.is_character_special() {
                h.set_device_major(*dev).unwrap();
                h.set_device_minor(*dev).unwrap();
            }
            if kind.is_hard_link() {
                b.append_link(&mut h, path, link).unwrap();
            } else {
                b.append_data(&mut h, path, io::empty()).unwrap();
            }
        }
        let bytes = b.into_inner().unwrap();
        let mut w = layout.blob_writer().unwrap();
        w.write_all(&bytes).unwrap();
        let (digest, size) = w.commit(None).unwrap();
        Descriptor::new(
            Compression::None.media_type(),
            size,
            media::to_spec_digest(&digest),
        )
    }

    /// What a reader of the rewritten layer sees, one line per member.
    fn members_of(layout: &Layout, desc: &Descriptor, diff_id: &str) -> Vec<String> {
        let mut seen = Vec::new();
        for_each_member(layout, desc, diff_id, |item, _| {
            seen.push(match item {
                TarItem::Entry(e) => format!(
                    "{:?} {}{}",
                    e.kind,
                    String::from_utf8_lossy(e.path.as_bytes()),
                    e.link
                        .as_ref()
                        .map(|l| format!(" -> {}", String::from_utf8_lossy(l)))
                        .unwrap_or_default()
                ),
                TarItem::Whiteout(p) => {
                    format!("whiteout {}", String::from_utf8_lossy(p.as_bytes()))
                }
                TarItem::Opaque(p) => format!("opaque {}", String::from_utf8_lossy(p.as_bytes())),
                TarItem::Skip => "skip".into(),
            });
            Ok(())
        })
        .unwrap();
        seen
    }

    /// overlayfs (5.8 and later) makes each further whiteout of a mount a
    /// hard link to the first one, so the archive of an upper directory
    /// holds one 0:0 device and links to it. Every one of those names is a
    /// deletion: a link left as a link names a member the rewritten layer
    /// does not have (podman refuses to apply it) and, read as a file,
    /// brings back the name the step deleted. Links to a real file stay
    /// links; a link to a skipped mount point goes with it.
    #[test]
    fn links_to_an_overlay_whiteout_are_whiteouts() {
        let t = tempfile::tempdir().unwrap();
        let layout = Layout::open_or_create(t.path().join("l")).unwrap();
        use tar::EntryType as T;
        let desc = layer_of(
            &layout,
            &[
                ("lists/", T::Directory, "", 0),
                ("lists/InRelease", T::Char, "", 0),
                ("lists/Packages", T::Link, "lists/InRelease", 0),
                ("lists/Release", T::Link, "lists/InRelease", 0),
                ("f", T::Regular, "", 0),
                ("g", T::Link, "f", 0),
                ("etc/hosts", T::Regular, "", 0),
                ("hosts2", T::Link, "etc/hosts", 0),
            ],
        );
        let diff_id = desc.digest().to_string();
        let skip = [RelPath::new(b"etc/hosts".to_vec())];
        let out = rewrite_layer(
            &layout,
            &desc,
            &diff_id,
            &layout,
            &Rewrite {
                compression: Compression::None,
                level: None,
                tar: TarOptions::default(),
                overlay_upper: true,
                skip: &skip,
            },
        )
        .unwrap();
        assert_eq!(
            members_of(&layout, &out.descriptor, &out.diff_id.to_string()),
            [
                "Dir lists",
                "whiteout lists/InRelease",
                "whiteout lists/Packages",
                "whiteout lists/Release",
                "File f",
                "Hardlink g -> f",
            ]
        );
    }
}
