//! Image references, spelled the way skopeo and podman users write them.
//!
//! Only `oci:DIR[:TAG|@DIGEST]` is implemented so far; the other transports
//! of the design (`oci-archive:`, `docker://`, `docker-archive:`) parse to a
//! clear "not supported yet" error rather than being mistaken for paths.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("{0:?}: not an image reference; write oci:DIR[:TAG] (e.g. oci:./out:latest)")]
    NotAReference(String),
    #[error("{input:?}: the {transport} transport is not supported by this version of shipyard yet; use oci:DIR[:TAG]")]
    Unsupported { input: String, transport: String },
    #[error("{0:?}: empty directory in oci: reference")]
    EmptyDir(String),
}

/// Where an image lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// An OCI layout directory and an optional tag or `sha256:` digest.
    Oci { dir: PathBuf, tag: Option<String> },
}

impl Reference {
    /// Whether `s` looks like a reference rather than a filesystem path.
    pub fn looks_like_reference(s: &str) -> bool {
        [
            "oci:",
            "oci-archive:",
            "docker://",
            "docker-archive:",
            "docker-daemon:",
            "containers-storage:",
        ]
        .iter()
        .any(|p| s.starts_with(p))
    }

    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = if let Some((d, dg)) = rest.split_once('@') {
                (d, Some(dg.to_string()))
            } else if let Some((d, t)) = rest.split_once(':') {
                (d, Some(t.to_string()))
            } else {
                (rest, None)
            };
            if dir.is_empty() {
                return Err(ReferenceError::EmptyDir(s.to_string()));
            }
            let tag = tag.filter(|t| !t.is_empty());
            return Ok(Reference::Oci {
                dir: PathBuf::from(dir),
                tag,
            });
        }
        for t in [
            "oci-archive:",
            "docker://",
            "docker-archive:",
            "docker-daemon:",
            "containers-storage:",
        ] {
            if s.starts_with(t) {
                return Err(ReferenceError::Unsupported {
                    input: s.to_string(),
                    transport: t.trim_end_matches([':', '/']).to_string(),
                });
            }
        }
        Err(ReferenceError::NotAReference(s.to_string()))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Oci { dir, tag: Some(t) } if t.starts_with("sha256:") => {
                write!(f, "oci:{}@{t}", dir.display())
            }
            Reference::Oci { dir, tag: Some(t) } => write!(f, "oci:{}:{t}", dir.display()),
            Reference::Oci { dir, tag: None } => write!(f, "oci:{}", dir.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_oci() {
        assert_eq!(
            Reference::parse("oci:out:v1").unwrap(),
            Reference::Oci {
                dir: "out".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            Reference::parse("oci:/a/b").unwrap(),
            Reference::Oci {
                dir: "/a/b".into(),
                tag: None
            }
        );
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            Reference::parse(&format!("oci:x@{d}")).unwrap(),
            Reference::Oci {
                dir: "x".into(),
                tag: Some(d.into())
            }
        );
        assert!(Reference::parse("docker://x/y")
            .unwrap_err()
            .to_string()
            .contains("not supported"));
        assert!(Reference::parse("oci:").is_err());
        assert!(Reference::parse("foo").is_err());
    }
}
