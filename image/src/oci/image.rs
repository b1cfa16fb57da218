//! An image in a layout: its manifest and config, read verified, and the
//! writer that stores a new one.

use super::config::ImageConfig;
use super::digest::Digest;
use super::layout::{Layout, LayoutError};
use super::media;
use oci_spec::image::{
    Arch, Descriptor, History, ImageConfiguration, ImageIndex, ImageManifest, ImageManifestBuilder,
    MediaType, Os,
};

#[derive(Debug, thiserror::Error)]
/// Why an image could not be loaded, selected or written.
pub enum ImageError {
    #[error(transparent)]
    /// The layout holding it failed (a missing or corrupt blob...).
    Layout(#[from] LayoutError),
    #[error("{what} {digest}: invalid JSON")]
    /// A manifest, index or config blob is not valid JSON of its type.
    Json {
        /// Which document ("manifest", "config"...).
        what: &'static str,
        /// Its digest.
        digest: Digest,
        #[source]
        /// The parser's complaint.
        source: serde_json::Error,
    },
    #[error("index {digest} has no manifest for {platform}; available: {available}")]
    /// An index offers no manifest for the platform asked for.
    NoPlatform {
        /// The index's digest.
        digest: Digest,
        /// The platform asked for.
        platform: String,
        /// The platforms it offers, for the message.
        available: String,
    },
    #[error("{digest} has media type {media_type}, which is not an image manifest or index")]
    /// A descriptor names something else than an image (an artifact, a
    /// layer).
    NotAnImage {
        /// Its digest.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    #[error(
        "image {digest}: config lists {diff_ids} diff_ids but the manifest has {layers} layers"
    )]
    /// The config's diff_ids and the manifest's layers disagree: the image is
    /// broken, and applying it would pair layers with the wrong diff_ids.
    LayerCount {
        /// The manifest's digest.
        digest: Digest,
        /// How many diff_ids the config lists.
        diff_ids: usize,
        /// How many layers the manifest lists.
        layers: usize,
    },
    #[error("building {0}: {1}")]
    /// An oci-spec builder refused what shipyard assembled (a bug): what was
    /// being built and why.
    Build(&'static str, String),
}

/// A `--platform` that is not OS/ARCH[/VARIANT]; holds what was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: a platform is OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64/v8")]
pub struct PlatformParseError(pub String);

/// The platform this binary runs on, in OCI spelling.
pub(crate) fn host_platform() -> (String, String) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    ("linux".to_string(), arch.to_string())
}

/// A loaded image.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest's descriptor (as found in the index, tag included).
    pub descriptor: Descriptor,
    /// The manifest's digest, which names the image.
    pub digest: Digest,
    /// The manifest: config and layers.
    pub manifest: ImageManifest,
    /// The image config (entrypoint, env, diff_ids, history, Docker's
    /// health check and ONBUILD triggers).
    pub config: ImageConfig,
    /// The config blob's digest.
    pub config_digest: Digest,
}

impl Image {
    /// Loads the image a descriptor names. An index is resolved to the
    /// manifest for the host platform.
    pub fn load(layout: &Layout, desc: &Descriptor) -> Result<Image, ImageError> {
        let mut desc = desc.clone();
        for _ in 0..4 {
            let digest = media::digest_of(&desc).map_err(LayoutError::from)?;
            let bytes = layout.read_blob(&digest, Some(desc.size()))?;
            if media::is_index(desc.media_type()) {
                let index: ImageIndex =
                    serde_json::from_slice(&bytes).map_err(|source| ImageError::Json {
                        what: "index",
                        digest: digest.clone(),
                        source,
                    })?;
                desc = pick_platform(&index, &digest)?;
                continue;
            }
            if !media::is_image_manifest(desc.media_type()) {
                return Err(ImageError::NotAnImage {
                    digest,
                    media_type: desc.media_type().to_string(),
                });
            }
            let manifest: ImageManifest =
                serde_json::from_slice(&bytes).map_err(|source| ImageError::Json {
                    what: "manifest",
                    digest: digest.clone(),
                    source,
                })?;
            let config_digest = media::digest_of(manifest.config()).map_err(LayoutError::from)?;
            let cbytes = layout.read_blob(&config_digest, Some(manifest.config().size()))?;
            let config: ImageConfig =
                serde_json::from_slice(&cbytes).map_err(|source| ImageError::Json {
                    what: "config",
                    digest: config_digest.clone(),
                    source,
                })?;
            if config.rootfs().diff_ids().len() != manifest.layers().len() {
                return Err(ImageError::LayerCount {
                    digest,
                    diff_ids: config.rootfs().diff_ids().len(),
                    layers: manifest.layers().len(),
                });
            }
            return Ok(Image {
                descriptor: desc,
                digest,
                manifest,
                config,
                config_digest,
            });
        }
        Err(ImageError::Build(
            "image",
            "indexes nested too deeply".into(),
        ))
    }

    /// Makes every layer blob of this image present in `to` (verified
    /// copies), so a new image can stack on it there.
    pub fn copy_layers(&self, from: &Layout, to: &Layout) -> Result<(), ImageError> {
        if from.root() == to.root() {
            return Ok(());
        }
        for l in self.manifest.layers() {
            to.copy_blob_from(from, &media::digest_of(l).map_err(LayoutError::from)?)?;
        }
        Ok(())
    }

    /// The layers with their diff_ids, bottom first.
    pub fn layers(&self) -> Vec<(Descriptor, String)> {
        self.manifest
            .layers()
            .iter()
            .cloned()
            .zip(self.config.rootfs().diff_ids().iter().cloned())
            .collect()
    }
}

/// An `OS/ARCH[/VARIANT]` to pick from an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// The operating system, as OCI spells it (`linux`).
    pub os: String,
    /// The architecture, as OCI spells it (`amd64`, `arm64`).
    pub arch: String,
    /// The variant, when the architecture has several (`v8` for arm64).
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary runs on.
    pub fn host() -> Platform {
        let (os, arch) = host_platform();
        Platform {
            os,
            arch,
            variant: None,
        }
    }

    /// Parses `--platform linux/arm64/v8`.
    pub fn parse(s: &str) -> Result<Platform, PlatformParseError> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: parts
                    .get(2)
                    .filter(|v| !v.is_empty())
                    .map(|v| v.to_string()),
            }),
            _ => Err(PlatformParseError(s.to_string())),
        }
    }

    fn matches(&self, p: &oci_spec::image::Platform) -> bool {
        p.os().to_string() == self.os
            && p.architecture().to_string() == self.arch
            && (self.variant.is_none() || p.variant().as_deref() == self.variant.as_deref())
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn pick_platform(index: &ImageIndex, digest: &Digest) -> Result<Descriptor, ImageError> {
    select_platform(index, digest, &Platform::host())
}

/// The manifest of `index` for `want`; an index with a single manifest
/// that names no platform is taken as that manifest.
pub fn select_platform(
    index: &ImageIndex,
    digest: &Digest,
    want: &Platform,
) -> Result<Descriptor, ImageError> {
    let found = index
        .manifests()
        .iter()
        .find(|m| m.platform().as_ref().is_some_and(|p| want.matches(p)));
    if let Some(m) = found {
        return Ok(m.clone());
    }
    let unplatformed: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|m| m.platform().is_none() && media::is_image_manifest(m.media_type()))
        .collect();
    if unplatformed.len() == 1 {
        return Ok(unplatformed[0].clone());
    }
    let available: Vec<String> = index
        .manifests()
        .iter()
        .filter_map(|m| m.platform().as_ref())
        .map(|p| format!("{}/{}", p.os(), p.architecture()))
        .collect();
    Err(ImageError::NoPlatform {
        digest: digest.clone(),
        platform: want.to_string(),
        available: if available.is_empty() {
            "none".into()
        } else {
            available.join(", ")
        },
    })
}

/// RFC 3339 for a Unix time, as image configs spell `created`.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// An empty config for the host platform (the base of `scratch` images).
pub fn empty_config() -> ImageConfig {
    let (_, arch) = host_platform();
    let mut c = ImageConfig::default();
    c.set_os(Os::Linux);
    c.set_architecture(Arch::from(arch.as_str()));
    c.set_config(None);
    c.set_history(Some(Vec::new()));
    c.set_created(None);
    c
}

/// Appends a layer to a config: its diff_id and a history entry.
pub fn append_layer(
    config: &mut ImageConfiguration,
    diff_id: &Digest,
    created: &str,
    created_by: &str,
) {
    config.rootfs_mut().diff_ids_mut().push(diff_id.to_string());
    let mut h = History::default();
    h.set_created(Some(created.to_string()));
    h.set_created_by(Some(created_by.to_string()));
    config.history_mut().get_or_insert_with(Vec::new).push(h);
    config.set_created(Some(created.to_string()));
}

/// Stores a config and a manifest naming `layers`; returns the manifest's
/// descriptor. The caller tags it.
pub fn write_image(
    layout: &Layout,
    config: &ImageConfig,
    layers: Vec<Descriptor>,
) -> Result<Descriptor, ImageError> {
    let config_desc = layout.put_json(config, MediaType::ImageConfig)?;
    write_image_raw(layout, config_desc, layers)
}

/// Stores a manifest naming a config blob already in the layout, as its
/// bytes are (an imported image keeps its image ID).
pub(crate) fn write_image_raw(
    layout: &Layout,
    config_desc: Descriptor,
    layers: Vec<Descriptor>,
) -> Result<Descriptor, ImageError> {
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_desc)
        .layers(layers)
        .build()
        .map_err(|e| ImageError::Build("manifest", e.to_string()))?;
    Ok(layout.put_json(&manifest, MediaType::ImageManifest)?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
