//! Registry credentials, looked up where podman, skopeo and docker keep
//! them, and `login`/`logout` writing `auth.json` the way podman does.
//!
//! Search order (first hit wins): `--creds` (for the one registry the
//! command line names as its target, never any other), `--authfile`, else
//! `REGISTRY_AUTH_FILE`,
//! `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `$HOME/.config/containers/auth.json`, then docker's
//! `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`). Each
//! file may defer to a credential helper (`credHelpers`, `credsStore`);
//! docker_credential runs the helper.

use base64::Engine;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
/// Why credentials could not be read, found or stored.
pub enum AuthError {
    #[error("--creds must be USER:PASSWORD (or USER to be asked for nothing and send an empty password); got an empty user")]
    /// `--creds` with an empty user.
    BadCreds,
    #[error("{path}")]
    /// An auth file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        #[source]
        /// The system's answer.
        source: io::Error,
    },
    #[error("{path}: not a valid auth file")]
    /// An auth file is not the JSON podman and docker write.
    Json {
        /// The file.
        path: PathBuf,
        #[source]
        /// The parser's complaint.
        source: serde_json::Error,
    },
    #[error("{path}: credential lookup for {host} failed: {reason}")]
    /// A credential helper named by an auth file failed.
    Helper {
        /// The auth file naming the helper.
        path: PathBuf,
        /// The registry asked about.
        host: String,
        /// What the helper said.
        reason: String,
    },
    #[error("no auth file to write: set REGISTRY_AUTH_FILE, XDG_RUNTIME_DIR or HOME")]
    /// No place to write an auth file is known.
    NoAuthFile,
}

/// What is sent to a registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A user and password (HTTP basic, or exchanged for a token).
    Basic {
        /// The user.
        user: String,
        /// The password, never printed (see the `Debug` impl).
        password: String,
    },
    /// An OAuth2 refresh token (docker's `identitytoken`).
    IdentityToken(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Basic { user, .. } => write!(f, "Basic({user}, ***)"),
            Secret::IdentityToken(_) => write!(f, "IdentityToken(***)"),
        }
    }
}

/// `--creds`: a secret for the one registry the command line names as
/// its target (the destination of a push, the source of a pull). Every
/// other registry a command touches (a build's bases, its cache
/// repository on another host) uses the auth files, so one password is
/// never sent to a registry it was not meant for.
#[derive(Debug, Clone)]
pub struct ExplicitCreds {
    /// The registry as a reference names it (`HOST[:PORT]`, `docker.io`).
    pub registry: String,
    /// What to send.
    pub secret: Secret,
}

/// The credentials found for a registry, and where the search looked, so
/// that a 401 can tell the user which files were consulted.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// What to send, if anything was found.
    pub secret: Option<Secret>,
    /// Where it was found (a file, or `--creds`), for messages.
    pub source: Option<String>,
    /// Every place looked in, for the message a 401 gives.
    pub searched: Vec<String>,
}

impl Credentials {
    /// Explains the search for an error message.
    pub fn describe(&self) -> String {
        match (&self.source, self.searched.is_empty()) {
            (Some(s), _) => format!("credentials came from {s}"),
            (None, true) => "no credential sources exist".to_string(),
            (None, false) => format!(
                "no credentials found in {}; run `shipyard login HOST` or pass --creds USER:PASS",
                self.searched.join(", ")
            ),
        }
    }
}

/// Parses `--creds USER[:PASSWORD]`.
pub fn parse_creds(s: &str) -> Result<Secret, AuthError> {
    let (user, password) = s.split_once(':').unwrap_or((s, ""));
    if user.is_empty() {
        return Err(AuthError::BadCreds);
    }
    Ok(Secret::Basic {
        user: user.to_string(),
        password: password.to_string(),
    })
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The auth files podman reads, in order; `--authfile` replaces them all.
fn podman_auth_files(authfile: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = authfile {
        return vec![p.to_path_buf()];
    }
    if let Some(p) = env_path("REGISTRY_AUTH_FILE") {
        return vec![p];
    }
    let mut v = Vec::new();
    if let Some(x) = env_path("XDG_RUNTIME_DIR") {
        v.push(x.join("containers/auth.json"));
    }
    if let Some(h) = env_path("HOME") {
        v.push(h.join(".config/containers/auth.json"));
    }
    v
}

fn docker_config_file() -> Option<PathBuf> {
    env_path("DOCKER_CONFIG")
        .or_else(|| env_path("HOME").map(|h| h.join(".docker")))
        .map(|d| d.join("config.json"))
}

/// The keys a registry may be stored under.
fn keys_for(host: &str) -> Vec<String> {
    let mut v = vec![
        host.to_string(),
        format!("https://{host}"),
        format!("http://{host}"),
    ];
    if host == "docker.io" {
        v.push("https://index.docker.io/v1/".into());
        v.push("index.docker.io".into());
    }
    v
}

/// Finds credentials for `host`: `explicit` (from `--creds`) when they
/// are for this host, else the auth files (`authfile` from `--authfile`
/// in place of podman's).
pub fn lookup(
    host: &str,
    explicit: Option<&ExplicitCreds>,
    authfile: Option<&Path>,
) -> Result<Credentials, AuthError> {
    let mut c = Credentials::default();
    if let Some(e) = explicit.filter(|e| e.registry.eq_ignore_ascii_case(host)) {
        c.secret = Some(e.secret.clone());
        c.source = Some("--creds".into());
        return Ok(c);
    }
    let files: Vec<PathBuf> = podman_auth_files(authfile)
        .into_iter()
        .chain(docker_config_file())
        .collect();
    for path in files {
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                c.searched.push(path.display().to_string());
                continue;
            }
            Err(source) => return Err(AuthError::Io { path, source }),
        };
        c.searched.push(path.display().to_string());
        for key in keys_for(host) {
            use docker_credential::{CredentialRetrievalError as E, DockerCredential as D};
            match docker_credential::get_credential_from_reader(&text[..], &key) {
                Ok(D::UsernamePassword(user, password)) => {
                    c.secret = Some(Secret::Basic { user, password });
                }
                Ok(D::IdentityToken(t)) => c.secret = Some(Secret::IdentityToken(t)),
                Err(E::NoCredentialConfigured) => continue,
                Err(E::ConfigReadError) => {
                    return Err(AuthError::Json {
                        path,
                        source: serde_json::from_slice::<serde_json::Value>(&text)
                            .err()
                            .unwrap_or_else(|| serde::de::Error::custom("unreadable")),
                    })
                }
                Err(e) => {
                    return Err(AuthError::Helper {
                        path,
                        host: host.into(),
                        reason: format!("{e:?}"),
                    })
                }
            }
            c.source = Some(format!("{} (key {key:?})", path.display()));
            return Ok(c);
        }
    }
    Ok(c)
}

/// The file `login` writes: `--authfile`, else `REGISTRY_AUTH_FILE`, else
/// `$XDG_RUNTIME_DIR/containers/auth.json` (podman's default), else
/// `~/.config/containers/auth.json`.
pub fn login_file(authfile: Option<&Path>) -> Result<PathBuf, AuthError> {
    podman_auth_files(authfile)
        .into_iter()
        .next()
        .ok_or(AuthError::NoAuthFile)
}

fn read_auth_json(path: &Path) -> Result<serde_json::Value, AuthError> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|source| AuthError::Json {
            path: path.into(),
            source,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(serde_json::json!({"auths": {}})),
        Err(source) => Err(AuthError::Io {
            path: path.into(),
            source,
        }),
    }
}

/// Replaces the file atomically, mode 0600: it holds passwords.
fn write_auth_json(path: &Path, v: &serde_json::Value) -> Result<(), AuthError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| AuthError::Io {
        path: path.into(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("auth.json"),
        std::process::id()
    ));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    let text = serde_json::to_vec_pretty(v).map_err(|e| AuthError::Json {
        path: path.into(),
        source: e,
    })?;
    f.write_all(&text).and_then(|_| f.sync_all()).map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

/// Stores `user:password` for `host` in [`login_file`].
pub fn store(
    host: &str,
    user: &str,
    password: &str,
    authfile: Option<&Path>,
) -> Result<PathBuf, AuthError> {
    let path = login_file(authfile)?;
    let mut v = read_auth_json(&path)?;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    if !v.get("auths").is_some_and(|a| a.is_object()) {
        v["auths"] = serde_json::json!({});
    }
    v["auths"][host] = serde_json::json!({ "auth": token });
    write_auth_json(&path, &v)?;
    Ok(path)
}

/// Removes `host` from [`login_file`]; returns whether it was there.
pub fn remove(host: &str, authfile: Option<&Path>) -> Result<(PathBuf, bool), AuthError> {
    let path = login_file(authfile)?;
    let mut v = read_auth_json(&path)?;
    let removed = v
        .get_mut("auths")
        .and_then(|a| a.as_object_mut())
        .map(|a| keys_for(host).iter().any(|k| a.remove(k).is_some()))
        .unwrap_or(false);
    if removed {
        write_auth_json(&path, &v)?;
    }
    Ok((path, removed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creds_flag() {
        assert_eq!(
            parse_creds("u:p:q").unwrap(),
            Secret::Basic {
                user: "u".into(),
                password: "p:q".into()
            }
        );
        assert!(parse_creds(":x").is_err());
    }
}
