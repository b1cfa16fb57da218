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
use shipyard_image::oci::digest::Digest;
use std::path::PathBuf;

/// A boxed cause from a layer below (the image library, the filesystem,
/// the tapeout stager), whose own type a pod error does not need to name.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why writing, reading, unpacking or rendering a pod failed. Each message
/// says what went wrong or what was being done; the cause, when there is
/// one, is returned by `source()` and not repeated.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("{0} is not a pod (no artifactType {ARTIFACT_TYPE})")]
    NotAPod(Digest),
    #[error("pod {0}: no definition manifest")]
    NoDefinition(Digest),
    #[error("pod {pod}: container {container} names image {image} but the index does not hold it")]
    MissingMember {
        pod: Digest,
        container: String,
        image: String,
    },
    #[error("pod: volume {0} has no layer")]
    NoLayer(String),
    #[error("{}: exists and is not empty; choose a new directory", .0.display())]
    DestNotEmpty(PathBuf),
    /// `kube` cannot name a member image without knowing its registry.
    #[error("container {0}: its image was built here or read from a file; pass --registry docker://HOST/REPO (where the pod was pushed) to name it")]
    UnnamedImage(String),
    /// `kube` mounts data volumes from the pod's artifact in a registry.
    #[error("the pod has data volumes, mounted from its artifact in a registry; pass --registry docker://HOST/REPO (where the pod was pushed)")]
    DataNeedsRegistry,
    #[error("image {0} was not built")]
    NotBuilt(String),
    #[error("container {container}: {image} is not an image")]
    NotAnImage { container: String, image: String },
    #[error("volume {volume}: tapeout {tapeout} selected nothing (was it run?)")]
    NothingSelected { volume: String, tapeout: String },
    /// A project path that resolves outside the project directory, found
    /// when it was opened (it may have changed since the spec was checked).
    #[error("{} leads out of the project directory (through a symlink); pod files and volumes are read only from inside it", .0.display())]
    OutsideProject(PathBuf),
    #[error("{} is not inside the project directory {}", .path.display(), .project.display())]
    NotInProject { path: PathBuf, project: PathBuf },
    #[error("not a regular file")]
    NotAFile,
    /// Any other step: what it was doing, and why it failed.
    #[error("{what}")]
    Failed {
        what: String,
        #[source]
        source: Cause,
    },
}

/// Says what pod code was doing when a lower layer failed.
pub(crate) trait Doing<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, PodError>;
}

impl<T, E: Into<Cause>> Doing<T> for Result<T, E> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, PodError> {
        self.map_err(|e| PodError::Failed {
            what: what(),
            source: e.into(),
        })
    }
}

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
