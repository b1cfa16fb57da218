//! Loads a pod back from a layout: the index, its definition and its
//! member images, each checked against the digests the index names.

use super::{Cause, Definition, Doing, PodError, ARTIFACT_TYPE, CONTAINER_ANNOTATION};
use oci_spec::image::Descriptor;
use shipyard_image::oci::digest::Digest;
use shipyard_image::oci::layout::Layout;
use shipyard_image::oci::media;
use std::collections::BTreeMap;

/// A pod as stored.
#[derive(Debug, Clone)]
pub struct Pod {
    pub digest: Digest,
    pub definition: Definition,
    /// Container name → member image manifest.
    pub members: Vec<(String, Descriptor)>,
    /// The artifact manifest (definition + volume layers).
    pub artifact: Descriptor,
    /// The artifact's layers, by volume name.
    pub layers: BTreeMap<String, Descriptor>,
    pub annotations: BTreeMap<String, String>,
}

/// The artifact type of a JSON document: its `artifactType`, else the
/// annotation an index carries it in (see media::ARTIFACT_TYPE_ANNOTATION).
fn artifact_type(bytes: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    v.get("artifactType")
        .or_else(|| v.get("annotations")?.get(media::ARTIFACT_TYPE_ANNOTATION))?
        .as_str()
        .map(str::to_string)
}

/// The bytes of the blob `d` names, checked against its digest and size.
fn blob(layout: &Layout, d: &Descriptor) -> Result<Vec<u8>, Cause> {
    Ok(layout.read_blob(&media::digest_of(d)?, Some(d.size()))?)
}

/// Whether `desc` in `layout` is a pod index.
pub fn is_pod(layout: &Layout, desc: &Descriptor) -> bool {
    media::is_index(desc.media_type())
        && media::digest_of(desc)
            .ok()
            .and_then(|d| layout.read_blob(&d, Some(desc.size())).ok())
            .and_then(|b| artifact_type(&b))
            .is_some_and(|t| t == ARTIFACT_TYPE)
}

/// Loads the pod `desc` names, checking that the index holds every
/// member image its definition names.
pub fn load(layout: &Layout, desc: &Descriptor) -> Result<Pod, PodError> {
    let digest = media::digest_of(desc).doing(|| "reading the pod's descriptor".into())?;
    let bytes = layout
        .read_blob(&digest, Some(desc.size()))
        .doing(|| format!("reading pod index {digest}"))?;
    if artifact_type(&bytes).as_deref() != Some(ARTIFACT_TYPE) {
        return Err(PodError::NotAPod(digest));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).doing(|| format!("pod {digest}: invalid index"))?;
    let annotations: BTreeMap<String, String> = v
        .get("annotations")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .doing(|| format!("pod {digest}: invalid annotations"))?
        .unwrap_or_default();
    let mut members = Vec::new();
    let mut artifact = None;
    for d in media::children(&bytes) {
        let container = d
            .annotations()
            .as_ref()
            .and_then(|a| a.get(CONTAINER_ANNOTATION).cloned());
        let child =
            blob(layout, &d).doing(|| format!("pod {digest}: reading manifest {}", d.digest()))?;
        if artifact_type(&child).as_deref() == Some(ARTIFACT_TYPE) {
            artifact = Some((d, child));
        } else if let Some(name) = container {
            members.push((name, d));
        }
    }
    let Some((artifact, art_bytes)) = artifact else {
        return Err(PodError::NoDefinition(digest));
    };
    let art: serde_json::Value = serde_json::from_slice(&art_bytes)
        .doing(|| format!("pod {digest}: invalid definition manifest"))?;
    let config: Descriptor = serde_json::from_value(art["config"].clone())
        .doing(|| format!("pod {digest}: definition manifest has no config"))?;
    let def_bytes =
        blob(layout, &config).doing(|| format!("pod {digest}: reading its definition"))?;
    let definition: Definition =
        serde_json::from_slice(&def_bytes).doing(|| format!("pod {digest}: invalid definition"))?;
    let mut layers = BTreeMap::new();
    for l in media::children(&art_bytes).into_iter().skip(1) {
        if let Some(vol) = definition
            .volumes
            .iter()
            .find(|v| v.layer == l.digest().to_string())
        {
            layers.insert(vol.name.clone(), l);
        }
    }
    for c in &definition.containers {
        if !members
            .iter()
            .any(|(n, d)| n == &c.name && d.digest().to_string() == c.image)
        {
            return Err(PodError::MissingMember {
                pod: digest,
                container: c.name.clone(),
                image: c.image.clone(),
            });
        }
    }
    Ok(Pod {
        digest,
        definition,
        members,
        artifact,
        layers,
        annotations,
    })
}
