//! `registries.conf` (containers-registries.conf(5), version 2), read the
//! way podman and skopeo read it: `$CONTAINERS_REGISTRIES_CONF` when set,
//! else `$XDG_CONFIG_HOME/containers/registries.conf` (or
//! `~/.config/…`) when it exists, else `/etc/containers/registries.conf`.
//!
//! shipyard takes `unqualified-search-registries` from it: a bare name
//! such as `app:v1` (no registry host) is looked up in the first of them,
//! and in docker.io when the list is empty or there is no file. Version 1
//! files (`[registries.search]`) are read too. And `[[registry]]`
//! entries' mirrors: an image whose name starts with the entry's `prefix`
//! (or `location`) is pulled from each `[[registry.mirror]]` in turn
//! (`insecure = true`: without TLS verification), then from the
//! registry itself. Wildcard prefixes, drop-in directories
//! (`registries.conf.d`) and short-name aliases are not read.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
/// Why registries.conf could not be used.
pub enum ConfError {
    #[error("reading {path}")]
    /// The file could not be read.
    Io {
        /// The file.
        path: String,
        /// The system's answer.
        source: std::io::Error,
    },
    #[error("{path}: not a valid registries.conf: {message}")]
    /// The file is not valid TOML of the registries.conf shape.
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// What shipyard uses of a registries.conf.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RegistriesConf {
    /// The file it was read from (none: no file, the defaults).
    pub path: Option<PathBuf>,
    /// Where bare names are looked up, in order.
    pub unqualified_search: Vec<String>,
    /// `[[registry]]` entries that have mirrors.
    pub mirrored: Vec<Mirrored>,
}

/// A namespace (`HOST[/PATH]`) and the mirrors to pull it from first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrored {
    /// The namespace the entry is for (`prefix`, else `location`).
    pub prefix: String,
    /// Where the namespace really is (`location`, else the prefix).
    pub location: String,
    /// Mirrors to try first, in order.
    pub mirrors: Vec<Mirror>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
/// One mirror of a namespace.
pub struct Mirror {
    /// Where the mirror is (`HOST[/PATH]`).
    pub location: String,
    #[serde(default)]
    /// Whether it may be reached without verified TLS.
    pub insecure: bool,
}

#[derive(Debug, Default, Deserialize)]
struct RegistryEntry {
    prefix: Option<String>,
    location: Option<String>,
    #[serde(default)]
    mirror: Vec<Mirror>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct File {
    #[serde(default)]
    unqualified_search_registries: Vec<String>,
    /// Version 1: `[registries.search] registries = [...]`.
    registries: Option<V1>,
    #[serde(default)]
    registry: Vec<RegistryEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct V1 {
    search: Option<V1List>,
}

#[derive(Debug, Default, Deserialize)]
struct V1List {
    #[serde(default)]
    registries: Vec<String>,
}

impl RegistriesConf {
    /// Parses the text of a registries.conf read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<RegistriesConf, ConfError> {
        let f: File = toml::from_str(text).map_err(|e| ConfError::Parse {
            path: path.display().to_string(),
            message: e.message().to_string(),
        })?;
        let mut search = f.unqualified_search_registries;
        if search.is_empty() {
            if let Some(l) = f.registries.and_then(|r| r.search) {
                search = l.registries;
            }
        }
        for r in &search {
            if r.is_empty() || r.contains(char::is_whitespace) || r.contains("://") {
                return Err(ConfError::Parse {
                    path: path.display().to_string(),
                    message: format!("unqualified-search-registries: {r:?} is not a registry host"),
                });
            }
        }
        let mut mirrored = Vec::new();
        for r in f.registry {
            let Some(prefix) = r.prefix.clone().or_else(|| r.location.clone()) else {
                return Err(ConfError::Parse {
                    path: path.display().to_string(),
                    message: "a [[registry]] has neither prefix nor location".into(),
                });
            };
            if r.mirror.is_empty() || prefix.starts_with("*.") {
                continue;
            }
            mirrored.push(Mirrored {
                location: r.location.unwrap_or_else(|| prefix.clone()),
                prefix,
                mirrors: r.mirror,
            });
        }
        Ok(RegistriesConf {
            path: Some(path.to_path_buf()),
            unqualified_search: search,
            mirrored,
        })
    }

    /// The file podman would read, if any.
    pub fn locate() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("CONTAINERS_REGISTRIES_CONF") {
            return Some(PathBuf::from(p));
        }
        let user = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .map(|d| d.join("containers/registries.conf"));
        if let Some(u) = user.filter(|u| u.exists()) {
            return Some(u);
        }
        let system = PathBuf::from("/etc/containers/registries.conf");
        system.exists().then_some(system)
    }

    /// Reads the file podman would read; the defaults when there is none.
    pub fn load() -> Result<RegistriesConf, ConfError> {
        let Some(path) = Self::locate() else {
            return Ok(RegistriesConf::default());
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path)
    }

    /// The registry a bare name resolves to: the first search registry,
    /// else docker.io.
    pub(crate) fn default_registry(&self) -> &str {
        self.unqualified_search
            .first()
            .map_or("docker.io", String::as_str)
    }
}

impl RegistriesConf {
    /// Where to pull `name` (`HOST/REPO`) from, in order: each mirror of
    /// the longest matching prefix, as `(name there, insecure)`. The
    /// registry itself (the entry's location) comes last, with `false`.
    pub(crate) fn pull_sources(&self, name: &str) -> Vec<(String, bool)> {
        let matches = |p: &str| {
            name == p
                || name
                    .strip_prefix(p)
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        let Some(m) = self
            .mirrored
            .iter()
            .filter(|m| matches(&m.prefix))
            .max_by_key(|m| m.prefix.len())
        else {
            return vec![(name.to_string(), false)];
        };
        let rest = &name[m.prefix.len()..];
        let mut v: Vec<(String, bool)> = m
            .mirrors
            .iter()
            .map(|x| {
                (
                    format!("{}{rest}", x.location.trim_end_matches('/')),
                    x.insecure,
                )
            })
            .collect();
        v.push((format!("{}{rest}", m.location.trim_end_matches('/')), false));
        v
    }
}

/// The process's registries.conf, read once.
pub fn current() -> Result<&'static RegistriesConf, &'static ConfError> {
    static CONF: OnceLock<Result<RegistriesConf, ConfError>> = OnceLock::new();
    let c = CONF.get_or_init(|| {
        let c = RegistriesConf::load();
        if let Ok(c) = &c {
            if c.unqualified_search.len() > 1 {
                tracing::info!(
                    "{}: bare names resolve to {}, the first of the unqualified-search-registries",
                    c.path.as_deref().unwrap_or(Path::new("")).display(),
                    c.default_registry()
                );
            }
        }
        c
    });
    c.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_v1_and_none() {
        let p = Path::new("r.conf");
        let c = RegistriesConf::parse(
            "unqualified-search-registries = [\"quay.io\", \"docker.io\"]\n[[registry]]\nlocation = \"x.example\"\n",
            p,
        )
        .unwrap();
        assert_eq!(c.default_registry(), "quay.io");
        let c = RegistriesConf::parse("[registries.search]\nregistries = ['r.example:5000']\n", p)
            .unwrap();
        assert_eq!(c.default_registry(), "r.example:5000");
        assert_eq!(
            RegistriesConf::parse("", p).unwrap().default_registry(),
            "docker.io"
        );
        let e = RegistriesConf::parse("unqualified-search-registries = 3", p).unwrap_err();
        assert!(e.to_string().contains("r.conf"), "{e}");
        let e = RegistriesConf::parse("unqualified-search-registries = ['']", p).unwrap_err();
        assert!(e.to_string().contains("not a registry host"), "{e}");
    }

    #[test]
    fn mirrors_by_longest_prefix() {
        let c = RegistriesConf::parse(
            r#"
[[registry]]
location = "docker.io"
[[registry.mirror]]
location = "m.example:5000"
insecure = true
[[registry.mirror]]
location = "m2.example/hub"

[[registry]]
prefix = "docker.io/team"
location = "quay.io/team"
[[registry.mirror]]
location = "t.example"
"#,
            Path::new("r.conf"),
        )
        .unwrap();
        assert_eq!(
            c.pull_sources("docker.io/library/busybox"),
            [
                ("m.example:5000/library/busybox".to_string(), true),
                ("m2.example/hub/library/busybox".to_string(), false),
                ("docker.io/library/busybox".to_string(), false)
            ]
        );
        assert_eq!(
            c.pull_sources("docker.io/team/app"),
            [
                ("t.example/app".to_string(), false),
                ("quay.io/team/app".to_string(), false)
            ]
        );
        assert_eq!(
            c.pull_sources("docker.io.evil/x"),
            [("docker.io.evil/x".to_string(), false)]
        );
    }
}
