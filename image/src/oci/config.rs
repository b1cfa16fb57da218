//! An image config as shipyard reads and writes it: the OCI image spec's
//! fields, and the two of Docker's that the OCI spec lacks but Docker,
//! BuildKit, buildah and podman write into OCI configs too and read back
//! (`config.Healthcheck`, `config.OnBuild`).
//!
//! oci-spec's [`ImageConfiguration`] drops fields it does not know when it
//! parses, so an image built on a base with a health check would silently
//! lose it. [`ImageConfig`] keeps them beside the OCI fields and puts them
//! back where Docker has them when it is serialized. They are skipped when
//! absent, so a config without them has the bytes (and digest) it had.

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ops::{Deref, DerefMut};

/// An image config: the OCI fields (reached through `Deref`), Docker's
/// health check and its ONBUILD triggers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// The OCI image spec's fields.
    pub oci: ImageConfiguration,
    /// `config.Healthcheck`: how a runtime checks the container is well.
    pub healthcheck: Option<Healthcheck>,
    /// `config.OnBuild`: the ONBUILD triggers (instruction texts) an image
    /// built `FROM` this one runs first.
    pub on_build: Vec<String>,
}

/// Docker's `HealthConfig`. Durations are nanoseconds (Go's
/// `time.Duration` in JSON); zero means "the runtime's default" and, as
/// Docker writes it, is left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    /// `["NONE"]` (disabled), `["CMD", arg…]` or `["CMD-SHELL", command]`;
    /// empty: inherit (which an image config never needs to say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    /// Time between two checks.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    /// Time a check may take before it counts as failed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    /// Time the container gets to start before failures count.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    /// Time between two checks during the start period.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    /// Consecutive failures before the container is unhealthy.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl From<ImageConfiguration> for ImageConfig {
    fn from(oci: ImageConfiguration) -> Self {
        ImageConfig {
            oci,
            healthcheck: None,
            on_build: Vec::new(),
        }
    }
}

impl Deref for ImageConfig {
    type Target = ImageConfiguration;
    fn deref(&self) -> &ImageConfiguration {
        &self.oci
    }
}

impl DerefMut for ImageConfig {
    fn deref_mut(&mut self) -> &mut ImageConfiguration {
        &mut self.oci
    }
}

const HEALTHCHECK: &str = "Healthcheck";
const ON_BUILD: &str = "OnBuild";

impl Serialize for ImageConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let mut v = serde_json::to_value(&self.oci).map_err(S::Error::custom)?;
        if self.healthcheck.is_some() || !self.on_build.is_empty() {
            let Some(top) = v.as_object_mut() else {
                return Err(S::Error::custom("an image config is a JSON object"));
            };
            let config = top
                .entry("config")
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            let Some(config) = config.as_object_mut() else {
                return Err(S::Error::custom("an image config's config is an object"));
            };
            if let Some(h) = &self.healthcheck {
                let h = serde_json::to_value(h).map_err(S::Error::custom)?;
                config.insert(HEALTHCHECK.into(), h);
            }
            if !self.on_build.is_empty() {
                config.insert(ON_BUILD.into(), self.on_build.clone().into());
            }
        }
        v.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ImageConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut v = serde_json::Value::deserialize(d)?;
        let (mut healthcheck, mut on_build) = (None, Vec::new());
        if let Some(config) = v.get_mut("config").and_then(|c| c.as_object_mut()) {
            if let Some(h) = config.remove(HEALTHCHECK) {
                healthcheck = serde_json::from_value::<Option<Healthcheck>>(h)
                    .map_err(|e| D::Error::custom(format!("config.{HEALTHCHECK}: {e}")))?;
            }
            if let Some(o) = config.remove(ON_BUILD) {
                on_build = serde_json::from_value::<Option<Vec<String>>>(o)
                    .map_err(|e| D::Error::custom(format!("config.{ON_BUILD}: {e}")))?
                    .unwrap_or_default();
            }
        }
        let oci = serde_json::from_value(v).map_err(D::Error::custom)?;
        Ok(ImageConfig {
            oci,
            healthcheck,
            on_build,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER: &str = r#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],"Healthcheck":{"Test":["CMD-SHELL","curl -f localhost"],"Interval":30000000000,"Retries":3},"OnBuild":["RUN echo hi"]},"rootfs":{"type":"layers","diff_ids":[]}}"#;

    #[test]
    fn docker_fields_survive_a_round_trip_where_docker_has_them() {
        let c: ImageConfig = serde_json::from_str(DOCKER).unwrap();
        let h = c.healthcheck.clone().unwrap();
        assert_eq!(h.test, ["CMD-SHELL", "curl -f localhost"]);
        assert_eq!((h.interval, h.timeout, h.retries), (30_000_000_000, 0, 3));
        assert_eq!(c.on_build, ["RUN echo hi"]);
        assert_eq!(
            c.config().as_ref().unwrap().env().as_deref(),
            Some(&["A=1".to_string()][..])
        );
        let out = crate::oci::canonical::to_vec(&c).unwrap();
        let back: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let want: serde_json::Value = serde_json::from_str(DOCKER).unwrap();
        assert_eq!(back, want);
    }

    #[test]
    fn a_config_without_them_serializes_as_oci_spec_does() {
        let raw = r#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],"Healthcheck":null,"OnBuild":null},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c: ImageConfig = serde_json::from_str(raw).unwrap();
        assert_eq!((c.healthcheck.clone(), c.on_build.len()), (None, 0));
        assert_eq!(
            crate::oci::canonical::to_vec(&c).unwrap(),
            crate::oci::canonical::to_vec(&c.oci).unwrap()
        );
        // Without a `config` object, one is made for a health check.
        let mut c = ImageConfig::from(ImageConfiguration::default());
        c.set_config(None);
        c.healthcheck = Some(Healthcheck {
            test: vec!["NONE".into()],
            ..Default::default()
        });
        let v: serde_json::Value =
            serde_json::from_slice(&crate::oci::canonical::to_vec(&c).unwrap()).unwrap();
        assert_eq!(v["config"]["Healthcheck"]["Test"][0], "NONE");
    }

    #[test]
    fn a_malformed_healthcheck_is_an_error_naming_it() {
        let raw = r#"{"architecture":"amd64","os":"linux","config":{"Healthcheck":{"Interval":"30s"}},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let e = serde_json::from_str::<ImageConfig>(raw).unwrap_err();
        assert!(e.to_string().contains("config.Healthcheck"), "{e}");
    }
}
