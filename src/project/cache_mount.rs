//! The cache mounts a spec asks for (`cache = { "/root/.cache/pip" = "pip" }`):
//! what a rule names. Where they live and how they are locked is
//! `build::mounts`.

use std::path::PathBuf;

/// How concurrent rules share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    #[default]
    Locked,
    Shared,
    Private,
}

impl std::str::FromStr for Sharing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "locked" => Ok(Self::Locked),
            "shared" => Ok(Self::Shared),
            "private" => Ok(Self::Private),
            _ => Err(format!(
                "sharing = {s:?}: expected locked, shared or private"
            )),
        }
    }
}

/// A cache mount a rule asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheMount {
    /// Where the rule sees it.
    pub target: PathBuf,
    /// Which cache: rules and specs that name the same id share it.
    pub id: String,
    pub sharing: Sharing,
}
