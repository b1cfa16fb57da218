//! Referrers (image-spec 1.1): artifacts about an image, such as its SBOM,
//! stored as manifests whose `subject` is the image's manifest.
//!
//! In a layout a referrer is listed in `index.json`, untagged, with its
//! `artifactType` on the entry: that keeps it from gc (see
//! [`Layout::gc`]: a referrer lives as long as its subject does) and lets
//! readers tell it from an image (`oci:DIR` without a tag still names the
//! one image of a layout that also holds its SBOM). In a registry it is
//! found through the referrers API or, on registries without it, through
//! the fallback tag `sha256-<hex>` of its subject (see
//! `registry::push`).

use super::digest::Digest;
use super::layout::{Layout, LayoutError, Result};
use super::media;
use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, ImageManifestBuilder, MediaType};
use std::collections::HashMap;

/// The empty config of an artifact without one (image-spec 1.1: the
/// two bytes `{}`, media type `application/vnd.oci.empty.v1+json`).
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The empty config's bytes.
pub const EMPTY_BYTES: &[u8] = b"{}";

/// Whether an index entry may be a referrer (an artifact about another
/// manifest) rather than an image of its own: untagged, with an
/// `artifactType`. (A tagged artifact is one of the layout's own.)
pub fn is_referrer_entry(d: &Descriptor) -> bool {
    d.artifact_type().is_some() && super::layout::ref_name(d).is_none()
}

/// The tag under which a registry without the referrers API keeps the
/// referrers of `subject`: `sha256-<hex>`.
pub fn fallback_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

/// A subject descriptor as a referrer names it: media type, digest and
/// size only (a layout's tag annotation is no part of the image).
fn bare(d: &Descriptor) -> Descriptor {
    Descriptor::new(d.media_type().clone(), d.size(), d.digest().clone())
}

/// Stores an artifact about `subject` (a manifest in this layout): one
/// layer holding `bytes` of `media_type`, the empty config, and
/// `artifactType` = `artifact_type`. Lists it in `index.json` in place of
/// any earlier artifact of that type about the same subject (an image has
/// one SBOM: the one its last build wrote). Returns its descriptor.
pub fn write_referrer(
    layout: &Layout,
    subject: &Descriptor,
    artifact_type: &str,
    media_type: &str,
    bytes: &[u8],
    annotations: HashMap<String, String>,
) -> Result<Descriptor> {
    let build = |what: &str, e: String| LayoutError::Io {
        path: layout.root().to_path_buf(),
        error: std::io::Error::other(format!("building the referrer's {what}: {e}")),
    };
    let (cdigest, csize) = layout.put_bytes(EMPTY_BYTES)?;
    let (ldigest, lsize) = layout.put_bytes(bytes)?;
    let config = Descriptor::new(
        MediaType::from(EMPTY_MEDIA_TYPE),
        csize,
        media::to_spec_digest(&cdigest),
    );
    let layer = Descriptor::new(
        MediaType::from(media_type),
        lsize,
        media::to_spec_digest(&ldigest),
    );
    let mut b = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::from(artifact_type))
        .config(config)
        .layers(vec![layer])
        .subject(bare(subject));
    if !annotations.is_empty() {
        b = b.annotations(annotations);
    }
    let manifest = b.build().map_err(|e| build("manifest", e.to_string()))?;
    let mut desc = layout.put_json(&manifest, MediaType::ImageManifest)?;
    desc.set_artifact_type(Some(MediaType::from(artifact_type)));
    let subject_digest = media::digest_of(subject)?;
    layout.update_index(|index| {
        let mut manifests = Vec::new();
        for m in index.manifests() {
            let replaced = m.artifact_type() == desc.artifact_type()
                && subject_of(&layout.read_blob(&media::digest_of(m)?, Some(m.size()))?).as_ref()
                    == Some(&subject_digest);
            if !replaced {
                manifests.push(m.clone());
            }
        }
        manifests.push(desc.clone());
        index.set_manifests(manifests);
        Ok(())
    })?;
    Ok(desc)
}

/// The subject digest of a referrer manifest's bytes, if it has one.
pub fn subject_of(bytes: &[u8]) -> Option<Digest> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    v.get("subject")?.get("digest")?.as_str()?.parse().ok()
}

/// The referrers of `subject` listed in the layout's `index.json`, as
/// index entries (with their `artifactType`), in index order.
pub fn referrers(layout: &Layout, subject: &Digest) -> Result<Vec<Descriptor>> {
    let mut out = Vec::new();
    for d in layout.index()?.manifests() {
        if !is_referrer_entry(d) {
            continue;
        }
        let digest = media::digest_of(d)?;
        let bytes = layout.read_blob(&digest, Some(d.size()))?;
        if subject_of(&bytes).as_ref() == Some(subject) {
            out.push(bare_with_type(d));
        }
    }
    Ok(out)
}

/// An index entry as a referrers index lists it: media type, digest,
/// size, `artifactType` (no layout annotations).
fn bare_with_type(d: &Descriptor) -> Descriptor {
    let mut b = bare(d);
    b.set_artifact_type(d.artifact_type().clone());
    b
}

/// Adds `referrer` to a referrers index (the fallback tag's), making an
/// empty one when there is none. Returns `None` when it is listed already.
pub fn add_to_referrers_index(
    index: Option<ImageIndex>,
    referrer: &Descriptor,
) -> Option<ImageIndex> {
    let mut index = match index {
        Some(i) => i,
        None => ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(Vec::<Descriptor>::new())
            .build()
            .ok()?,
    };
    if index
        .manifests()
        .iter()
        .any(|m| m.digest() == referrer.digest())
    {
        return None;
    }
    let mut m = index.manifests().clone();
    m.push(bare_with_type(referrer));
    index.set_manifests(m);
    Some(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::image::{empty_config, write_image};

    fn image(layout: &Layout) -> Descriptor {
        let d = write_image(layout, &empty_config(), Vec::new()).unwrap();
        layout.tag("app", &d).unwrap();
        layout.resolve(Some("app")).unwrap()
    }

    #[test]
    fn a_referrer_names_its_subject_and_is_listed_untagged() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::open_or_create(dir.path()).unwrap();
        let subject = image(&layout);
        let r = write_referrer(
            &layout,
            &subject,
            "application/spdx+json",
            "application/spdx+json",
            b"{\"spdxVersion\":\"SPDX-2.3\"}",
            HashMap::new(),
        )
        .unwrap();
        let bytes = layout
            .read_blob(&media::digest_of(&r).unwrap(), None)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["artifactType"], "application/spdx+json");
        assert_eq!(v["config"]["mediaType"], EMPTY_MEDIA_TYPE);
        assert_eq!(v["config"]["size"], 2);
        assert_eq!(
            v["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(v["layers"][0]["mediaType"], "application/spdx+json");
        assert_eq!(v["subject"]["digest"], subject.digest().to_string());
        // The subject carries no layout annotation.
        assert!(v["subject"].get("annotations").is_none());
        // Written twice: listed once.
        write_referrer(
            &layout,
            &subject,
            "application/spdx+json",
            "application/spdx+json",
            b"{\"spdxVersion\":\"SPDX-2.3\"}",
            HashMap::new(),
        )
        .unwrap();
        let found = referrers(&layout, &media::digest_of(&subject).unwrap()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].digest(), r.digest());
        // Another document about the same image replaces it.
        let r2 = write_referrer(
            &layout,
            &subject,
            "application/spdx+json",
            "application/spdx+json",
            b"{\"spdxVersion\":\"SPDX-2.3\",\"name\":\"new\"}",
            HashMap::new(),
        )
        .unwrap();
        let found = referrers(&layout, &media::digest_of(&subject).unwrap()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].digest(), r2.digest());
        assert_eq!(
            found[0]
                .artifact_type()
                .as_ref()
                .map(|a| a.to_string())
                .as_deref(),
            Some("application/spdx+json")
        );
        // The layout's only image is still named without a tag, and its
        // tags are unchanged.
        assert_eq!(layout.resolve(None).unwrap().digest(), subject.digest());
        assert_eq!(layout.tags().unwrap(), ["app"]);
    }

    #[test]
    fn gc_keeps_a_referrer_while_its_subject_lives() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::open_or_create(dir.path()).unwrap();
        let subject = image(&layout);
        let r = write_referrer(
            &layout,
            &subject,
            "application/spdx+json",
            "application/spdx+json",
            b"{\"sbom\":1}",
            HashMap::new(),
        )
        .unwrap();
        drop(layout);
        let layout = Layout::open(dir.path()).unwrap();
        let (removed, _) = layout.gc().unwrap();
        assert!(removed.is_empty(), "{removed:?}");
        let rd = media::digest_of(&r).unwrap();
        assert!(layout.has_blob(&rd));
        // The subject untagged: the referrer and its blobs go with it, and
        // so does its index entry.
        layout.untag("app").unwrap();
        drop(layout);
        let layout = Layout::open(dir.path()).unwrap();
        let (removed, _) = layout.gc().unwrap();
        assert!(removed.contains(&rd.to_string()), "{removed:?}");
        assert!(!layout.has_blob(&rd));
        assert!(layout.index().unwrap().manifests().is_empty());
    }

    /// An untagged artifact that is about nothing, and a tagged one, are
    /// the layout's own: gc keeps them and `oci:DIR` counts them.
    #[test]
    fn artifacts_without_subject_or_with_a_tag_are_not_referrers() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::open_or_create(dir.path()).unwrap();
        let (cd, cs) = layout.put_bytes(EMPTY_BYTES).unwrap();
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .artifact_type(MediaType::from("application/x-thing"))
            .config(Descriptor::new(
                MediaType::from(EMPTY_MEDIA_TYPE),
                cs,
                media::to_spec_digest(&cd),
            ))
            .layers(Vec::new())
            .build()
            .unwrap();
        let mut d = layout
            .put_json(&manifest, MediaType::ImageManifest)
            .unwrap();
        d.set_artifact_type(Some(MediaType::from("application/x-thing")));
        layout
            .update_index(|i| {
                i.set_manifests(vec![d.clone()]);
                Ok(())
            })
            .unwrap();
        drop(layout);
        let layout = Layout::open(dir.path()).unwrap();
        let (removed, _) = layout.gc().unwrap();
        assert!(removed.is_empty(), "{removed:?}");
        assert_eq!(layout.index().unwrap().manifests().len(), 1);
        assert!(layout.has_blob(&media::digest_of(&d).unwrap()));
        layout.tag("thing", &d).unwrap();
        let tagged = layout.resolve(Some("thing")).unwrap();
        assert!(!is_referrer_entry(&tagged));
        assert_eq!(layout.resolve(None).unwrap().digest(), d.digest());
    }

    #[test]
    fn the_referrers_index_lists_each_referrer_once() {
        let d = Descriptor::new(
            MediaType::ImageManifest,
            3,
            media::to_spec_digest(&Digest::of(b"abc")),
        );
        let mut typed = d.clone();
        typed.set_artifact_type(Some(MediaType::from("application/spdx+json")));
        let i = add_to_referrers_index(None, &typed).unwrap();
        assert_eq!(i.manifests().len(), 1);
        assert_eq!(
            i.manifests()[0]
                .artifact_type()
                .as_ref()
                .map(|a| a.to_string())
                .as_deref(),
            Some("application/spdx+json")
        );
        assert!(add_to_referrers_index(Some(i), &typed).is_none());
        assert_eq!(
            fallback_tag(&Digest::of(b"abc")),
            format!("sha256-{}", Digest::of(b"abc").hex())
        );
    }
}
