//! Image references, spelled the way skopeo and podman users write them:
//! `oci:DIR[:TAG]`, `docker://[HOST/]REPO[:TAG|@DIGEST]`,
//! `oci-archive:FILE[:TAG]` and `docker-archive:FILE[:NAME:TAG]`.
//!
//! Registry names are normalized the way podman and docker do it (the
//! grammar is oci-spec's port of distribution's `reference` package): a
//! first component without a dot, a colon or `localhost` is a Docker Hub
//! repository, one-component names live under `library/`, and a name
//! without tag or digest means `:latest`.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
/// Why a string is not an image reference; each message shows the forms
/// that are.
pub enum ReferenceError {
    #[error("{0:?}: not an image reference; write oci:DIR[:TAG], docker://HOST/REPO[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG]")]
    /// No known transport prefix.
    NotAReference(String),
    #[error("{input:?}: the {transport} transport is not supported by shipyard; use oci:, docker://, oci-archive: or docker-archive:")]
    /// A transport skopeo knows but shipyard does not read.
    Unsupported {
        /// The reference.
        input: String,
        /// Its transport.
        transport: String,
    },
    #[error("{0:?}: empty path in reference")]
    /// A transport with nothing after it.
    EmptyPath(String),
    #[error(transparent)]
    /// A short name needed registries.conf, which could not be read.
    RegistriesConf(&'static crate::registries_conf::ConfError),
    #[error("{input:?}: malformed registry reference: {reason}; expected [HOST[:PORT]/]REPO[:TAG|@sha256:HEX], with a lowercase REPO")]
    /// A `docker://` reference that is not `[HOST[:PORT]/]REPO[:TAG|@DIGEST]`.
    BadRegistryRef {
        /// The reference.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// An image in a registry, normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// `HOST[:PORT]` as written (Docker Hub is `docker.io`).
    pub registry: String,
    /// `NAMESPACE/NAME`, lowercase.
    pub repository: String,
    /// The tag (`latest` when none is written; see `implied_tag`).
    pub tag: Option<String>,
    /// `sha256:…` when the reference pins a manifest.
    pub digest: Option<String>,
    /// The tag is the implied `latest`, not written: a copy named by this
    /// reference takes its source's tag instead.
    pub implied_tag: bool,
    /// A short name's other candidates: the same name in each further
    /// unqualified-search registry of registries.conf, which reads try in
    /// order when this one does not have it (as podman does). Writes go
    /// to this one.
    pub search: Vec<RegistryRef>,
}

impl RegistryRef {
    /// Parses and normalizes `[HOST[:PORT]/]REPO[:TAG][@DIGEST]`, with
    /// distribution's grammar and docker's normalization. Hand-written:
    /// oci-spec's parser compiles a large regex on first use, which cost
    /// 60 ms of every registry command.
    pub fn parse(s: &str) -> Result<RegistryRef, ReferenceError> {
        let bad = |reason: &str| ReferenceError::BadRegistryRef {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(bad("empty name"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d)),
            None => (s, None),
        };
        if let Some(d) = digest {
            let Some(hex) = d.strip_prefix("sha256:") else {
                return Err(bad(
                    "invalid reference format: only sha256 digests are supported",
                ));
            };
            if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(bad(
                    "invalid reference format: a sha256 digest is 64 lowercase hex digits",
                ));
            }
        }
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
                && !t.starts_with(['.', '-']);
            if !ok {
                return Err(bad(
                    "invalid tag format: 1-128 of [A-Za-z0-9_.-], not starting with . or -",
                ));
            }
        }
        if name.is_empty() {
            return Err(bad("empty name"));
        }
        // docker's splitDockerDomain: the first component is a registry when
        // it has a dot or a port, is localhost, or is not all lowercase.
        let (mut registry, mut repository) = match name.split_once('/') {
            Some((first, remainder)) if names_a_registry(first) => {
                (first.to_string(), remainder.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let (host, port) = match registry.rsplit_once(':') {
            Some((h, p)) if !registry.ends_with(']') => (h, Some(p)),
            _ => (registry.as_str(), None),
        };
        let host_ok = if host.starts_with('[') && host.ends_with(']') {
            host[1..host.len() - 1]
                .parse::<std::net::Ipv6Addr>()
                .is_ok()
        } else {
            !host.is_empty()
                && host.split('.').all(|c| {
                    !c.is_empty()
                        && !c.starts_with('-')
                        && !c.ends_with('-')
                        && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        };
        if !host_ok || port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(bad(&format!("invalid registry host {registry:?}")));
        }
        if registry == "index.docker.io" {
            registry = "docker.io".into();
        }
        if registry == "docker.io" && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        // The limit is on the normalized name (as docker's
        // ParseNormalizedNamed applies it): a short name that fits only
        // before `docker.io/library/` is added would print as a reference
        // that no longer parses.
        if registry.len() + 1 + repository.len() > 255 {
            return Err(bad(
                "name longer than 255 characters with its registry (and docker.io's library/)",
            ));
        }
        for c in repository.split('/') {
            if c.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(bad(&format!("repository {repository:?} must be lowercase")));
            }
            if !path_component_ok(c) {
                return Err(bad(&format!(
                    "invalid reference format: path component {c:?} must be lowercase letters and digits, separated by . _ __ or dashes"
                )));
            }
        }
        Ok(RegistryRef {
            registry,
            repository,
            tag: tag
                .map(str::to_string)
                .or_else(|| digest.is_none().then(|| "latest".to_string())),
            digest: digest.map(str::to_string),
            implied_tag: tag.is_none() && digest.is_none(),
            search: Vec::new(),
        })
    }

    /// This reference, then each of its [`RegistryRef::search`]
    /// candidates, each without candidates of its own.
    pub fn candidates(&self) -> Vec<RegistryRef> {
        std::iter::once(self)
            .chain(self.search.iter())
            .map(|r| RegistryRef {
                search: Vec::new(),
                ..r.clone()
            })
            .collect()
    }

    /// The host to talk to: Docker Hub's API lives elsewhere than its name.
    pub fn api_host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// What to ask the registry for: the digest if pinned, else the tag.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The same repository with another tag.
    pub fn with_tag(&self, tag: &str) -> RegistryRef {
        RegistryRef {
            tag: Some(tag.to_string()),
            digest: None,
            implied_tag: false,
            ..self.clone()
        }
    }
}

/// docker's splitDockerDomain: the first component of a name is a
/// registry when it has a dot or a port, is localhost, or is not all
/// lowercase.
fn names_a_registry(first: &str) -> bool {
    first.contains(['.', ':']) || first == "localhost" || first.to_lowercase() != first
}

/// A name without a registry host (`app:v1`, `team/app`), which podman
/// looks up in registries.conf's unqualified-search-registries.
fn is_short_name(s: &str) -> bool {
    let name = s.split_once('@').map_or(s, |(n, _)| n);
    match name.split_once('/') {
        Some((first, _)) => !names_a_registry(first),
        None => true,
    }
}

/// distribution's path-component: `[a-z0-9]+` runs joined by `.`, `_`,
/// `__` or any number of `-`.
fn path_component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_lowercase() || b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !(b[i].is_ascii_lowercase() || b[i].is_ascii_digit()) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Where an image lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// An OCI layout directory and an optional tag or `sha256:` digest.
    Oci {
        /// The layout directory.
        dir: PathBuf,
        /// The tag or digest; without one the layout must hold one image.
        tag: Option<String>,
    },
    /// A repository in a registry (`docker://`).
    Registry(RegistryRef),
    /// A tar of an OCI layout, and the tag that names the image inside.
    OciArchive {
        /// The archive.
        file: PathBuf,
        /// The tag inside; without one the archive must hold one image.
        tag: Option<String>,
    },
    /// A `docker save` archive, and the `NAME:TAG` it carries (`RepoTags`).
    DockerArchive {
        /// The archive.
        file: PathBuf,
        /// The `NAME:TAG`; without one the archive must hold one image.
        name: Option<String>,
    },
}

const UNSUPPORTED: [&str; 4] = ["docker-daemon:", "containers-storage:", "dir:", "ostree:"];

impl Reference {
    /// Whether `s` names an image rather than a filesystem path.
    pub fn looks_like_reference(s: &str) -> bool {
        ["oci:", "oci-archive:", "docker://", "docker-archive:"]
            .iter()
            .chain(UNSUPPORTED.iter())
            .any(|p| s.starts_with(p))
    }

    /// Parses `oci:DIR[:TAG]`, `docker://REF`, `oci-archive:FILE[:TAG]` or
    /// `docker-archive:FILE[:NAME:TAG]`, refusing other transports by name.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let nonempty = |p: &str| -> Result<PathBuf, ReferenceError> {
            if p.is_empty() {
                Err(ReferenceError::EmptyPath(s.to_string()))
            } else {
                Ok(PathBuf::from(p))
            }
        };
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = split_path_tag(rest);
            return Ok(Reference::Oci {
                dir: nonempty(dir)?,
                tag,
            });
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (file, tag) = split_path_tag(rest);
            return Ok(Reference::OciArchive {
                file: nonempty(file)?,
                tag,
            });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            // The name itself contains a colon (NAME:TAG), so split at the
            // first colon only.
            let (file, name) = match rest.split_once(':') {
                Some((f, n)) if !n.is_empty() => (f, Some(n.to_string())),
                Some((f, _)) => (f, None),
                None => (rest, None),
            };
            if let Some(n) = &name {
                RegistryRef::parse(n)?;
            }
            return Ok(Reference::DockerArchive {
                file: nonempty(file)?,
                name,
            });
        }
        if let Some(rest) = s.strip_prefix("docker://") {
            return Ok(Reference::Registry(RegistryRef::parse(rest)?));
        }
        for t in UNSUPPORTED {
            if s.starts_with(t) {
                return Err(ReferenceError::Unsupported {
                    input: s.to_string(),
                    transport: t.trim_end_matches(':').to_string(),
                });
            }
        }
        Err(ReferenceError::NotAReference(s.to_string()))
    }

    /// Like [`Reference::parse`], but a bare `REPO[:TAG]` (no transport) is
    /// a registry reference, as `podman pull` reads it: a name without a
    /// registry host goes to the first of registries.conf's
    /// unqualified-search-registries, docker.io when there are none
    /// (`docker://NAME` always means docker.io, as in skopeo).
    pub fn parse_or_registry(s: &str) -> Result<Reference, ReferenceError> {
        if Reference::looks_like_reference(s) || s.contains("://") {
            return Reference::parse(s);
        }
        if is_short_name(s) {
            let conf = crate::registries_conf::current().map_err(ReferenceError::RegistriesConf)?;
            return Reference::parse_searched(s, &conf.unqualified_search);
        }
        Ok(Reference::Registry(RegistryRef::parse(s)?))
    }

    /// A short name looked up in each of `registries` in order (docker.io
    /// when there are none): the first, with the others as its
    /// [`RegistryRef::search`] candidates.
    pub fn parse_searched(s: &str, registries: &[String]) -> Result<Reference, ReferenceError> {
        let mut all = Vec::new();
        for reg in registries {
            if let Reference::Registry(r) = Reference::parse_short(s, reg)? {
                all.push(r);
            }
        }
        if all.is_empty() {
            return Reference::parse_short(s, "docker.io");
        }
        let mut first = all.remove(0);
        first.search = all;
        Ok(Reference::Registry(first))
    }

    /// A short name looked up in `registry`.
    pub fn parse_short(s: &str, registry: &str) -> Result<Reference, ReferenceError> {
        let mut r = RegistryRef::parse(s)?;
        if registry != "docker.io" && is_short_name(s) {
            // Only Docker Hub puts one-component names under library/.
            if let Some(rest) = r.repository.strip_prefix("library/") {
                let written = s.split(['@', ':']).next().unwrap_or(s);
                if !written.contains('/') {
                    r.repository = rest.to_string();
                }
            }
            r.registry = registry.to_string();
        }
        Ok(Reference::Registry(r))
    }

    /// The tag the reference names, if any (for naming a copy).
    pub fn tag(&self) -> Option<&str> {
        match self {
            Reference::Oci { tag, .. } | Reference::OciArchive { tag, .. } => {
                tag.as_deref().filter(|t| !t.starts_with("sha256:"))
            }
            Reference::Registry(r) => r.tag.as_deref().filter(|_| !r.implied_tag),
            Reference::DockerArchive { name, .. } => name
                .as_deref()
                .and_then(|n| n.rsplit_once(':'))
                .map(|x| x.1),
        }
    }
}

/// `PATH[:TAG]` or `PATH[@DIGEST]`; an empty tag is none.
fn split_path_tag(rest: &str) -> (&str, Option<String>) {
    let (p, t) = if let Some((d, dg)) = rest.split_once('@') {
        (d, Some(dg))
    } else if let Some((d, t)) = rest.split_once(':') {
        (d, Some(t))
    } else {
        (rest, None)
    };
    (p, t.filter(|t| !t.is_empty()).map(str::to_string))
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A path holds ':' only when it was written before an '@'
        // (`oci:a:b@TAG`), and a tag holds '@' only after one; printed
        // with ':' either would split elsewhere when read back, so they
        // keep the '@' (empty when there is no tag).
        let with_tag =
            |f: &mut fmt::Formatter<'_>, scheme: &str, p: &PathBuf, t: &Option<String>| {
                let colon = p.to_string_lossy().contains(':');
                match t {
                    Some(t) if colon || t.contains('@') || t.starts_with("sha256:") => {
                        write!(f, "{scheme}:{}@{t}", p.display())
                    }
                    Some(t) => write!(f, "{scheme}:{}:{t}", p.display()),
                    None if colon => write!(f, "{scheme}:{}@", p.display()),
                    None => write!(f, "{scheme}:{}", p.display()),
                }
            };
        match self {
            Reference::Oci { dir, tag } => with_tag(f, "oci", dir, tag),
            Reference::OciArchive { file, tag } => with_tag(f, "oci-archive", file, tag),
            // The file ends at the first ':', whatever the name is.
            Reference::DockerArchive {
                file,
                name: Some(n),
            } => {
                write!(f, "docker-archive:{}:{n}", file.display())
            }
            Reference::DockerArchive { file, name: None } => {
                write!(f, "docker-archive:{}", file.display())
            }
            Reference::Registry(r) => write!(f, "docker://{r}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_go_to_the_search_registry() {
        let reg = |s: &str, r: &str| match Reference::parse_short(s, r).unwrap() {
            Reference::Registry(r) => r.to_string(),
            other => panic!("{other}"),
        };
        assert_eq!(reg("app:v1", "r.example:5000"), "r.example:5000/app:v1");
        assert_eq!(reg("team/app", "quay.io"), "quay.io/team/app:latest");
        assert_eq!(reg("library/app", "quay.io"), "quay.io/library/app:latest");
        assert_eq!(reg("app", "docker.io"), "docker.io/library/app:latest");
        assert_eq!(
            reg("localhost:5000/app:v1", "quay.io"),
            "localhost:5000/app:v1"
        );
        assert_eq!(reg("ghcr.io/o/app", "quay.io"), "ghcr.io/o/app:latest");
    }

    #[test]
    fn short_names_are_searched_in_every_listed_registry_in_order() {
        let list = ["r.example:5000".to_string(), "docker.io".to_string()];
        let Reference::Registry(r) = Reference::parse_searched("app:v1", &list).unwrap() else {
            panic!()
        };
        let names: Vec<String> = r.candidates().iter().map(|c| c.to_string()).collect();
        assert_eq!(names, ["r.example:5000/app:v1", "docker.io/library/app:v1"]);
        assert!(r.candidates().iter().all(|c| c.search.is_empty()));
        // Writes and messages name the first.
        assert_eq!(r.to_string(), "r.example:5000/app:v1");
        let Reference::Registry(r) = Reference::parse_searched("app", &[]).unwrap() else {
            panic!()
        };
        assert_eq!(r.to_string(), "docker.io/library/app:latest");
        assert!(r.search.is_empty());
    }

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
        assert!(Reference::parse("oci:").is_err());
        assert!(Reference::parse("foo").is_err());
        assert!(Reference::parse("containers-storage:x")
            .unwrap_err()
            .to_string()
            .contains("not supported"));
    }

    #[test]
    fn normalizes_registry_names_like_podman() {
        let r = |s: &str| match Reference::parse(s).unwrap() {
            Reference::Registry(r) => r.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(r("docker://busybox"), "docker.io/library/busybox:latest");
        assert_eq!(r("docker://alpine:3.20"), "docker.io/library/alpine:3.20");
        assert_eq!(r("docker://me/app"), "docker.io/me/app:latest");
        assert_eq!(r("docker://127.0.0.1:5000/a/b:v1"), "127.0.0.1:5000/a/b:v1");
        assert_eq!(r("docker://localhost/x"), "localhost/x:latest");
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let pinned = match Reference::parse(&format!("docker://quay.io/a/b@{d}")).unwrap() {
            Reference::Registry(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(pinned.reference(), d);
        assert_eq!(pinned.tag, None);
        assert_eq!(
            Reference::parse_or_registry("busybox:1")
                .unwrap()
                .to_string(),
            "docker://docker.io/library/busybox:1"
        );
    }

    #[test]
    fn malformed_registry_refs_say_why() {
        for (input, why) in [
            ("docker://a/UPPER/case", "lowercase"),
            ("docker://a/b__-c", "path component"),
            ("docker://a b.io/c", "invalid registry host"),
            ("docker://a b/c", "path component"),
            ("docker://", "empty"),
            ("docker://a/b:bad tag", "invalid"),
            ("docker://a/b@sha256:abc", "invalid reference format"),
        ] {
            let e = Reference::parse(input).unwrap_err().to_string();
            assert!(e.contains(why), "{input}: {e}");
            assert!(e.contains("malformed registry reference"), "{input}: {e}");
        }
    }

    /// The 255-character limit is on the name as normalized: what is
    /// accepted prints as a reference that parses back.
    #[test]
    fn the_name_limit_counts_the_registry_and_library_prefix() {
        // docker.io/library/ is 18 characters.
        let fits = "a".repeat(255 - 18);
        let r = Reference::parse(&format!("docker://{fits}")).unwrap();
        assert_eq!(
            Reference::parse(&r.to_string()).unwrap().to_string(),
            r.to_string()
        );
        let e = Reference::parse(&format!("docker://{fits}a"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("longer than 255 characters"), "{e}");
        let host = format!("docker://reg.example/{}", "b".repeat(255 - 12));
        assert!(Reference::parse(&host).is_ok());
        assert!(Reference::parse(&format!("{host}b")).is_err());
    }

    #[test]
    fn parses_archives() {
        assert_eq!(
            Reference::parse("oci-archive:/t/x.tar:v2").unwrap(),
            Reference::OciArchive {
                file: "/t/x.tar".into(),
                tag: Some("v2".into())
            }
        );
        let d = Reference::parse("docker-archive:x.tar:localhost/app:v1").unwrap();
        assert_eq!(
            d,
            Reference::DockerArchive {
                file: "x.tar".into(),
                name: Some("localhost/app:v1".into())
            }
        );
        assert_eq!(d.tag(), Some("v1"));
        assert!(Reference::parse("docker-archive:").is_err());
        assert!(Reference::parse("docker-archive:x.tar:BAD/Name").is_err());
    }
}
