//! Media types and descriptor helpers shared by every transport.

use super::digest::{Digest, DigestParseError};
use oci_spec::image::{Descriptor, MediaType};

/// Docker's schema 2 manifest, which skopeo and registries still hand out.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker's manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker's image config type, which docker archives and schema 2 manifests use.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// On an index: the artifact type of the bundle it is. The image-spec 1.1
/// `artifactType` field would say the same, but tools built on image-spec
/// 1.0 (skopeo 1.9, Debian 12's) drop it when they copy an index, which
/// changes its digest; an annotation survives every copy.
pub const ARTIFACT_TYPE_ANNOTATION: &str = "io.shipyard.artifact-type";

/// Whether an index bundles an artifact (travels whole) rather than
/// offering one image per platform.
pub fn is_artifact_index(index: &oci_spec::image::ImageIndex) -> bool {
    index.artifact_type().is_some()
        || index
            .annotations()
            .as_ref()
            .is_some_and(|a| a.contains_key(ARTIFACT_TYPE_ANNOTATION))
}

/// Our digest type from an oci-spec descriptor (validated).
pub fn digest_of(d: &Descriptor) -> Result<Digest, DigestParseError> {
    d.digest().to_string().parse()
}

/// An oci-spec digest from ours.
pub fn to_spec_digest(d: &Digest) -> oci_spec::image::Digest {
    d.to_string()
        .parse()
        .expect("invariant: Digest always holds a valid sha256:<64 hex> string")
}

/// Whether a manifest of this type is one image (OCI or Docker schema 2).
pub fn is_image_manifest(mt: &MediaType) -> bool {
    matches!(mt, MediaType::ImageManifest) || mt.to_string() == DOCKER_MANIFEST
}

/// Whether a manifest of this type is an index (OCI) or a manifest list (Docker).
pub fn is_index(mt: &MediaType) -> bool {
    matches!(mt, MediaType::ImageIndex) || mt.to_string() == DOCKER_MANIFEST_LIST
}

/// Whether a blob of this type is a JSON document that may reference others.
pub(crate) fn is_json_document(mt: &MediaType) -> bool {
    is_image_manifest(mt) || is_index(mt) || mt.to_string().ends_with("+json")
}

/// Guesses a manifest's media type from its `mediaType` field or shape.
pub(crate) fn sniff_manifest_type(bytes: &[u8]) -> MediaType {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    match v.get("mediaType").and_then(|m| m.as_str()) {
        Some(mt) => MediaType::from(mt),
        None if v.get("manifests").is_some() => MediaType::ImageIndex,
        None => MediaType::ImageManifest,
    }
}

/// Every descriptor a JSON document references: config, layers, manifests,
/// blobs and subject. Generic, so artifacts of any kind are kept by gc.
pub fn children(bytes: &[u8]) -> Vec<Descriptor> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut push = |x: &serde_json::Value| {
        if let Ok(d) = serde_json::from_value::<Descriptor>(x.clone()) {
            out.push(d);
        }
    };
    for key in ["config", "subject"] {
        if let Some(x) = v.get(key) {
            push(x);
        }
    }
    for key in ["layers", "manifests", "blobs"] {
        if let Some(arr) = v.get(key).and_then(|a| a.as_array()) {
            arr.iter().for_each(&mut push);
        }
    }
    out
}

/// The `config` descriptor of a manifest's bytes, if it has one.
pub(crate) fn config_of(bytes: &[u8]) -> Option<Descriptor> {
    let v = serde_json::from_slice::<serde_json::Value>(bytes).ok()?;
    serde_json::from_value(v.get("config")?.clone()).ok()
}

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerEncoding {
    /// An uncompressed tar.
    Plain,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
    /// Unknown media type: decided by sniffing the magic bytes.
    Sniff,
}

/// How a layer of this media type is compressed; an unknown type is sniffed
/// rather than refused here (the layer reader decides what it accepts).
pub fn layer_encoding(mt: &MediaType) -> LayerEncoding {
    let s = mt.to_string();
    if s.ends_with("+gzip") || s.ends_with(".gzip") || s == DOCKER_LAYER_GZIP {
        LayerEncoding::Gzip
    } else if s.ends_with("+zstd") {
        LayerEncoding::Zstd
    } else if s.ends_with(".tar") {
        LayerEncoding::Plain
    } else {
        LayerEncoding::Sniff
    }
}
