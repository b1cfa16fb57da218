//! `registries.conf` (containers-registries.conf(5), version 2), read the
//! way podman and skopeo read it: `$CONTAINERS_REGISTRIES_CONF` when set,
//! else `$XDG_CONFIG_HOME/containers/registries.conf` (or
//! `~/.config/…`) when it exists, else `/etc/containers/registries.conf`.
//!
//! shipyard takes `unqualified-search-registries` from it: a bare name
//! such as `app:v1` (no registry host) is looked up in the first of them,
//! and in docker.io when the list is empty or there is no file. Version 1
//! files (`[registries.search]`) are read too. Drop-in directories
//! (`registries.conf.d`) and short-name aliases are not read.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a valid registries.conf: {message}")]
    Parse { path: String, message: String },
}

/// What shipyard uses of a registries.conf.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RegistriesConf {
    /// The file it was read from (none: no file, the defaults).
    pub path: Option<PathBuf>,
    /// Where bare names are looked up, in order.
    pub unqualified_search: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct File {
    #[serde(default)]
    unqualified_search_registries: Vec<String>,
    /// Version 1: `[registries.search] registries = [...]`.
    registries: Option<V1>,
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
        Ok(RegistriesConf {
            path: Some(path.to_path_buf()),
            unqualified_search: search,
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
    pub fn default_registry(&self) -> &str {
        self.unqualified_search
            .first()
            .map_or("docker.io", String::as_str)
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
}
