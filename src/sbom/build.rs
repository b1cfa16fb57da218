//! Where the build meets the SBOM: after a tapeout (the builder still
//! there) its paths are attributed to packages; after an image is written
//! its document is attached to it as a referrer.

use super::{attribute, merge, spdx, Attribution, SbomError, Taken};
use crate::project::TapeoutRule;
use oci_spec::image::Descriptor;
use shipyard_image::oci::layout::Layout;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Part of a tapeout's cache key when `--sbom` is on: its cached result
/// then always carries its attribution. Bumped when the attribution's
/// meaning changes.
pub const KEY_PART: &str = "spdx-2.3/1";

/// Attributes the paths a tapeout staged in `stage` (`explain`: image
/// path → why) to the builder's packages, read from `builder` while it
/// still holds what the rules installed.
pub fn of_tapeout<S: AsRef<str>>(
    builder: &dyn super::Tree,
    rule: &TapeoutRule,
    stage: &Path,
    explain: impl IntoIterator<Item = S>,
) -> Result<Attribution, SbomError> {
    let mut taken = Vec::new();
    for p in explain {
        let image = PathBuf::from(p.as_ref());
        let staged = stage.join(image.strip_prefix("/").unwrap_or(&image));
        let Ok(md) = std::fs::symlink_metadata(&staged) else {
            continue;
        };
        if md.is_dir() {
            continue;
        }
        taken.push(Taken {
            builder: builder_path(rule, &image),
            staged: md.is_file().then_some(staged),
            image,
        });
    }
    attribute(builder, &taken)
}

/// The builder path an image path was taken from: `remap` undone.
fn builder_path(rule: &TapeoutRule, image: &Path) -> PathBuf {
    for (from, to) in &rule.remap {
        if let Ok(rest) = image.strip_prefix(to) {
            return if rest.as_os_str().is_empty() {
                from.clone()
            } else {
                from.join(rest)
            };
        }
    }
    image.to_path_buf()
}

/// The error of attaching a document.
#[derive(Debug, thiserror::Error)]
#[error("attaching the SBOM of image {image}")]
pub struct AttachError {
    image: String,
    #[source]
    source: shipyard_image::oci::layout::LayoutError,
}

/// Writes the SPDX document of image `name` (manifest `subject`), made of
/// the attributions of its tapeouts in layer order, into `layout` as a
/// referrer of the image. Returns the referrer's descriptor.
pub fn attach(
    layout: &Layout,
    name: &str,
    subject: &Descriptor,
    parts: &[&Attribution],
    epoch: i64,
) -> Result<Descriptor, AttachError> {
    let all: Vec<Attribution> = parts.iter().map(|a| (*a).clone()).collect();
    let merged = merge(&all);
    let digest = subject.digest().to_string();
    let doc = spdx::document(
        &spdx::Subject {
            name,
            digest: &digest,
        },
        &merged,
        &shipyard_image::oci::image::rfc3339(epoch),
    );
    let bytes = spdx::to_bytes(&doc);
    let annotations = BTreeMap::from([(
        "org.opencontainers.image.created".to_string(),
        shipyard_image::oci::image::rfc3339(epoch),
    )]);
    shipyard_image::oci::referrer::write_referrer(
        layout,
        subject,
        spdx::MEDIA_TYPE,
        spdx::MEDIA_TYPE,
        &bytes,
        annotations.into_iter().collect(),
    )
    .map_err(|source| AttachError {
        image: name.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testtree::Fixture;
    use super::*;

    fn rule(remap: Vec<(PathBuf, PathBuf)>) -> TapeoutRule {
        TapeoutRule {
            builder: String::new(),
            name: "app".into(),
            include: Vec::new(),
            exclude: Vec::new(),
            elf_closure: false,
            remap,
            owner: None,
            mode: None,
        }
    }

    #[test]
    fn remapped_paths_are_looked_up_where_the_builder_had_them() {
        let builder = Fixture::new();
        builder
            .file(
                "/var/lib/dpkg/status",
                "Package: tool\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n",
            )
            .file("/var/lib/dpkg/info/tool.list", "/usr/bin/tool\n")
            .file("/usr/bin/tool", "t");
        let stage = Fixture::new();
        stage.file("/opt/tool", "t").file("/opt/dir/x", "x");
        let r = rule(vec![(PathBuf::from("/usr/bin"), PathBuf::from("/opt"))]);
        let a = of_tapeout(
            &builder.view(),
            &r,
            stage.0.path(),
            ["/opt/tool", "/opt/dir"],
        )
        .unwrap();
        // The directory is not a file of the document.
        assert_eq!(a.files.keys().collect::<Vec<_>>(), ["/opt/tool"]);
        assert_eq!(a.files["/opt/tool"].package, Some(0));
        assert_eq!(a.packages[0].name, "tool");
        // Without the remap undone, nothing would own it.
        let a = of_tapeout(
            &builder.view(),
            &rule(Vec::new()),
            stage.0.path(),
            ["/opt/tool"],
        )
        .unwrap();
        assert_eq!(a.files["/opt/tool"].package, None);
    }

    #[test]
    fn attached_document_is_a_referrer_of_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::open_or_create(dir.path()).unwrap();
        let d = shipyard_image::oci::image::write_image(
            &layout,
            &shipyard_image::oci::image::empty_config(),
            Vec::new(),
        )
        .unwrap();
        let a = Attribution::default();
        let r1 = attach(&layout, "hello", &d, &[&a], 0).unwrap();
        let r2 = attach(&layout, "hello", &d, &[&a], 0).unwrap();
        assert_eq!(r1.digest(), r2.digest(), "same inputs, same bytes");
        let found = shipyard_image::oci::referrer::referrers(
            &layout,
            &shipyard_image::oci::media::digest_of(&d).unwrap(),
        )
        .unwrap();
        assert_eq!(found.len(), 1);
        let m: serde_json::Value = serde_json::from_slice(
            &layout
                .read_blob(&shipyard_image::oci::media::digest_of(&r1).unwrap(), None)
                .unwrap(),
        )
        .unwrap();
        let layer: shipyard_image::oci::digest::Digest =
            m["layers"][0]["digest"].as_str().unwrap().parse().unwrap();
        let doc: serde_json::Value =
            serde_json::from_slice(&layout.read_blob(&layer, None).unwrap()).unwrap();
        assert_eq!(doc["creationInfo"]["created"], "1970-01-01T00:00:00Z");
        assert_eq!(doc["packages"][0]["versionInfo"], d.digest().to_string());
    }
}
