//! Pods: member images, configuration files and data volumes bundled as
//! one OCI image index, which any registry stores and any OCI tool copies
//! (`docs/pod-format.md`).
//!
//! `bundle` writes a pod from a build; `read` loads one back; `unpack`
//! makes a deployable directory of it; `kube` a Kubernetes manifest.

pub mod bundle;
pub use crate::project::CONFIG_VOLUME;
pub mod kube;
pub mod read;
pub mod unpack;

use serde::{Deserialize, Serialize};

/// The index's `artifactType`, and the artifact manifest's.
pub const ARTIFACT_TYPE: &str = "application/vnd.shipyard.pod.v1";
/// The media type of the pod definition (the artifact's config blob).
pub const DEFINITION_TYPE: &str = "application/vnd.shipyard.pod.definition.v1+json";
/// On each member image's descriptor in the index: its container name.
pub const CONTAINER_ANNOTATION: &str = "io.shipyard.pod.container";
/// On the artifact manifest's descriptor in the index.
pub const ROLE_ANNOTATION: &str = "io.shipyard.pod.role";
/// On each artifact layer: `config` or the volume's name.
pub const VOLUME_ANNOTATION: &str = "io.shipyard.pod.volume";
/// On the index when the checkout had uncommitted changes.
pub const DIRTY_ANNOTATION: &str = "io.shipyard.pod.dirty";

/// The pod definition, stored as the artifact's config blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    pub name: String,
    pub version: String,
    pub containers: Vec<Container>,
    pub volumes: Vec<Volume>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub name: String,
    /// The member image's manifest digest.
    pub image: String,
    /// Where the image came from, when it was not built with the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub port: u16,
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub path: String,
    pub volume: String,
}

/// A volume: `config` (the files) or a data volume. Its files are the
/// artifact layer annotated with its name, stored under `NAME/` in that
/// layer, so all layers stacked give one tree with a directory per volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    /// The layer's digest.
    pub layer: String,
    /// The digest of the layer's uncompressed tar, checked on unpack.
    pub diff_id: String,
    /// Paths inside the volume (files only), sorted.
    pub files: Vec<String>,
}
