//! The distribution API over HTTP(S): authentication, retries and the
//! handful of endpoints pull and push need.
//!
//! Every request goes through [`Client::send`], which owns the policy:
//! a 401 triggers one authentication round (bearer token or basic), and
//! connection errors, resets, 5xx and 429 are retried with exponential
//! backoff, honouring `Retry-After`. Request bodies are rebuilt from a
//! closure on each attempt, so a retried upload re-reads its bytes from the
//! file rather than holding them in memory.

use super::auth::{Credentials, Secret};
use base64::Engine;
use reqwest::blocking::{RequestBuilder, Response};
use reqwest::header::{HeaderMap, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{registry}/{repository}: {what} ({status}); {creds}")]
    Unauthorized {
        registry: String,
        repository: String,
        what: &'static str,
        status: u16,
        creds: String,
    },
    #[error("{method} {url}: {source}; gave up after {attempts} attempt(s)")]
    Transport {
        method: String,
        url: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {url}: the registry answered {status}{retried}: {body}")]
    Status {
        method: String,
        url: String,
        status: u16,
        retried: String,
        body: String,
    },
    #[error("{0}")]
    Protocol(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--cert-dir {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("cannot build an HTTP client: {0}")]
    Setup(reqwest::Error),
}

pub type Result<T> = std::result::Result<T, RegistryError>;

/// How to reach a registry.
#[derive(Debug, Clone)]
pub struct Options {
    /// Verify TLS certificates and refuse plain HTTP (skopeo's default).
    /// When false, self-signed certificates are accepted and a registry
    /// that does not speak TLS is reached over plain HTTP.
    pub tls_verify: bool,
    /// podman's certs.d layout: `*.crt` are extra CAs, `*.cert` + `*.key`
    /// a client certificate.
    pub cert_dir: Option<PathBuf>,
    /// `--creds`, which beats every auth file.
    pub creds: Option<Secret>,
    /// Attempts after the first, for retriable failures.
    pub retries: u32,
    /// How long a request may wait for the registry before it is retried.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tls_verify: true,
            cert_dir: None,
            creds: None,
            retries: 5,
            timeout: Duration::from_secs(60),
        }
    }
}

/// The access a request needs, which selects the bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub repository: String,
    pub push: bool,
    /// Another repository to read from (a cross-repository mount).
    pub from: Option<String>,
}

impl Scope {
    pub fn pull(repo: &str) -> Scope {
        Scope {
            repository: repo.to_string(),
            push: false,
            from: None,
        }
    }
    pub fn push(repo: &str) -> Scope {
        Scope {
            repository: repo.to_string(),
            push: true,
            from: None,
        }
    }
    fn params(&self) -> Vec<String> {
        if self.repository.is_empty() {
            // Login checks the credentials alone.
            return Vec::new();
        }
        let mut v = vec![format!(
            "repository:{}:{}",
            self.repository,
            if self.push { "pull,push" } else { "pull" }
        )];
        if let Some(f) = &self.from {
            v.push(format!("repository:{f}:pull"));
        }
        v
    }
}

/// One registry, with its credentials and tokens.
#[derive(Debug)]
pub struct Client {
    http: reqwest::blocking::Client,
    /// The name the user wrote (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// `scheme://host[:port]`.
    pub base: String,
    creds: Credentials,
    /// `Authorization` header values by scope; basic auth is stored
    /// under `None` and applies to every scope.
    tokens: Mutex<HashMap<Option<Scope>, String>>,
    retries: u32,
}

fn setup_err(e: reqwest::Error) -> RegistryError {
    RegistryError::Setup(e)
}

fn http_client(opts: &Options, insecure: bool) -> Result<reqwest::blocking::Client> {
    // ring, not aws-lc: aws-lc seeds its RNG with CPU-jitter entropy on the
    // first handshake, ~100 ms of CPU that every push and pull paid
    // (measured with callgrind). Installing fails only if a provider is
    // already installed, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::blocking::Client::builder()
        .user_agent(concat!("shipyard/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15).min(opts.timeout))
        .timeout(opts.timeout)
        .pool_max_idle_per_host(8);
    if insecure {
        b = b
            .tls_danger_accept_invalid_certs(true)
            .tls_danger_accept_invalid_hostnames(true);
    }
    if let Some(dir) = &opts.cert_dir {
        let (cas, identity) = read_cert_dir(dir)?;
        for c in cas {
            b = b.add_root_certificate(c);
        }
        if let Some(i) = identity {
            b = b.identity(i);
        }
    }
    b.build().map_err(|e| match &opts.cert_dir {
        // The TLS set-up is where a bad certificate shows: name the
        // directory and say why.
        Some(dir) => RegistryError::Cert {
            path: dir.clone(),
            reason: format!("its certificates were not accepted: {}", error_chain(&e)),
        },
        None => setup_err(e),
    })
}

/// An error and its causes, joined: reqwest's own message is often just
/// "builder error".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Reads `*.crt` (CAs) and a `*.cert`/`*.key` pair from a certs.d
/// directory, the way podman and skopeo read `--cert-dir`.
fn read_cert_dir(dir: &Path) -> Result<(Vec<reqwest::Certificate>, Option<reqwest::Identity>)> {
    let io = |source| RegistryError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let mut cas = Vec::new();
    let mut identity = None;
    for p in &names {
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| RegistryError::Io {
                path: p.to_path_buf(),
                source,
            })
        };
        match ext {
            "crt" => {
                let pem = read(p)?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    RegistryError::Cert {
                        path: p.clone(),
                        reason: e.to_string(),
                    }
                })?;
                cas.extend(certs);
            }
            "cert" => {
                let key = p.with_extension("key");
                let mut pem = read(p)?;
                pem.extend(read(&key).map_err(|_| RegistryError::Cert {
                    path: p.clone(),
                    reason: format!("client certificate without its key {}", key.display()),
                })?);
                identity =
                    Some(
                        reqwest::Identity::from_pem(&pem).map_err(|e| RegistryError::Cert {
                            path: p.clone(),
                            reason: e.to_string(),
                        })?,
                    );
            }
            _ => {}
        }
    }
    if cas.is_empty() && identity.is_none() {
        return Err(RegistryError::Cert {
            path: dir.to_path_buf(),
            reason: "holds no *.crt CA certificate and no *.cert/*.key pair".into(),
        });
    }
    Ok((cas, identity))
}

/// The delay before retry number `attempt` (0-based): 250 ms doubling,
/// capped at 8 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(8))
}

/// `Retry-After` in seconds (the HTTP-date form is treated as "soon").
fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(RETRY_AFTER)?.to_str().ok()?;
    Some(match v.trim().parse::<u64>() {
        Ok(s) => Duration::from_secs(s.min(60)),
        Err(_) => Duration::from_secs(1),
    })
}

fn is_retriable_status(s: StatusCode) -> bool {
    s == StatusCode::TOO_MANY_REQUESTS
        || s == StatusCode::REQUEST_TIMEOUT
        || matches!(s.as_u16(), 500 | 502 | 503 | 504)
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

fn parse_challenge(h: &str) -> Option<Challenge> {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (k, v) = s.split_once('=')?;
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let v = v.trim_start();
        let (val, next) = if let Some(q) = v.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = v.find(',').unwrap_or(v.len());
            (&v[..end], &v[end..])
        };
        params.insert(k, val.to_string());
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
    })
}

impl Client {
    /// Connects to `registry` (the name as written; `api_host` is where
    /// its API lives). With `tls_verify` off, a registry that does not
    /// answer TLS is reached over plain HTTP.
    pub fn new(registry: &str, api_host: &str, opts: &Options) -> Result<Client> {
        let creds = super::auth::lookup(registry, opts.creds.clone())
            .map_err(|e| RegistryError::Protocol(e.to_string()))?;
        let mut client = Client {
            http: http_client(opts, !opts.tls_verify)?,
            registry: registry.to_string(),
            base: format!("https://{api_host}"),
            creds,
            tokens: Mutex::new(HashMap::new()),
            retries: opts.retries,
        };
        if !opts.tls_verify {
            // Probe once: a TLS handshake against a plain-HTTP port fails
            // at once, and then HTTP is what the user meant.
            let probe = client.http.get(format!("{}/v2/", client.base)).send();
            if let Err(e) = probe {
                tracing::info!("{api_host}: no TLS ({e}); using plain HTTP");
                client.base = format!("http://{api_host}");
            }
        }
        Ok(client)
    }

    /// A URL on this registry; `Location` headers may be relative.
    pub fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    /// The `Authorization` value for `scope`: its own token, else one
    /// that grants at least as much on the same repository, else basic.
    pub fn authorization(&self, scope: &Scope) -> Option<String> {
        let t = self.tokens.lock().ok()?;
        t.get(&Some(scope.clone()))
            .or_else(|| {
                t.iter()
                    .find(|(k, _)| {
                        k.as_ref().is_some_and(|k| {
                            k.repository == scope.repository && (k.push || !scope.push)
                        })
                    })
                    .map(|(_, v)| v)
            })
            .or_else(|| t.get(&None))
            .cloned()
    }

    /// The HTTP client itself, for a request that must not be retried
    /// blindly (a PATCH whose partial success the caller checks).
    pub fn http_once(&self) -> &reqwest::blocking::Client {
        &self.http
    }

    fn unauthorized(&self, scope: &Scope, status: u16) -> RegistryError {
        RegistryError::Unauthorized {
            registry: self.registry.clone(),
            repository: scope.repository.clone(),
            what: if status == 403 {
                "access denied"
            } else if self.creds.secret.is_some() {
                "authentication failed: the registry rejected the credentials"
            } else {
                "authentication required"
            },
            status,
            creds: self.creds.describe(),
        }
    }

    /// Answers a 401: fetch a token for `scope`, or use basic auth.
    fn authenticate(&self, scope: &Scope, headers: &HeaderMap) -> Result<()> {
        let challenge = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(parse_challenge)
            .next();
        let basic = |user: &str, password: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )
        };
        match challenge {
            Some(Challenge::Basic) | None => match &self.creds.secret {
                Some(Secret::Basic { user, password }) => {
                    if let Ok(mut t) = self.tokens.lock() {
                        t.insert(None, basic(user, password));
                    }
                    Ok(())
                }
                _ => Err(self.unauthorized(scope, 401)),
            },
            Some(Challenge::Bearer { realm, service }) => {
                let mut query: Vec<(&str, String)> = Vec::new();
                if let Some(s) = &service {
                    query.push(("service", s.clone()));
                }
                for p in scope.params() {
                    query.push(("scope", p));
                }
                let mut attempt = 0;
                let resp = loop {
                    let mut rb = match &self.creds.secret {
                        Some(Secret::IdentityToken(t)) => {
                            let mut form = query.clone();
                            form.push(("grant_type", "refresh_token".into()));
                            form.push(("refresh_token", t.clone()));
                            form.push(("client_id", "shipyard".into()));
                            self.http.post(&realm).form(&form)
                        }
                        _ => self.http.get(&realm).query(&query),
                    };
                    if let Some(Secret::Basic { user, password }) = &self.creds.secret {
                        rb = rb.header(AUTHORIZATION, basic(user, password));
                    }
                    match rb.send() {
                        Ok(r) if is_retriable_status(r.status()) && attempt < self.retries => {}
                        Ok(r) => break r,
                        Err(e) if attempt < self.retries => {
                            tracing::debug!("token request failed: {e}");
                        }
                        Err(source) => {
                            return Err(RegistryError::Transport {
                                method: "GET".into(),
                                url: realm.clone(),
                                attempts: attempt + 1,
                                source,
                            })
                        }
                    }
                    std::thread::sleep(backoff(attempt));
                    attempt += 1;
                };
                let status = resp.status();
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    return Err(self.unauthorized(scope, status.as_u16()));
                }
                if !status.is_success() {
                    return Err(RegistryError::Status {
                        method: "GET".into(),
                        url: realm,
                        status: status.as_u16(),
                        retried: String::new(),
                        body: resp.text().unwrap_or_default(),
                    });
                }
                let v: serde_json::Value = resp.json().map_err(|e| {
                    RegistryError::Protocol(format!("token from {realm}: invalid JSON: {e}"))
                })?;
                let token = v
                    .get("token")
                    .or_else(|| v.get("access_token"))
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| {
                        RegistryError::Protocol(format!("token response from {realm} has no token"))
                    })?;
                if let Ok(mut t) = self.tokens.lock() {
                    t.insert(Some(scope.clone()), format!("Bearer {token}"));
                }
                Ok(())
            }
        }
    }

    /// Sends a request built by `mk`, authenticating and retrying as the
    /// module documentation describes. Returns any response that is not a
    /// retriable failure; the caller judges its status.
    pub fn send(
        &self,
        method: &str,
        url: &str,
        scope: &Scope,
        mk: &dyn Fn(&reqwest::blocking::Client) -> Result<RequestBuilder>,
    ) -> Result<Response> {
        let mut attempt = 0u32;
        let mut authenticated = false;
        loop {
            let mut rb = mk(&self.http)?;
            if let Some(h) = self.authorization(scope) {
                rb = rb.header(AUTHORIZATION, h);
            }
            let wait = match rb.send() {
                Err(source) => {
                    if attempt >= self.retries || source.is_builder() || source.is_redirect() {
                        return Err(RegistryError::Transport {
                            method: method.into(),
                            url: url.into(),
                            attempts: attempt + 1,
                            source,
                        });
                    }
                    tracing::warn!("{method} {url}: {source}; retrying");
                    backoff(attempt)
                }
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED && !authenticated => {
                    authenticated = true;
                    self.authenticate(scope, r.headers())?;
                    continue;
                }
                Ok(r)
                    if r.status() == StatusCode::UNAUTHORIZED
                        || r.status() == StatusCode::FORBIDDEN =>
                {
                    return Err(self.unauthorized(scope, r.status().as_u16()));
                }
                Ok(r) if is_retriable_status(r.status()) && attempt < self.retries => {
                    let w = retry_after(r.headers()).unwrap_or_else(|| backoff(attempt));
                    tracing::warn!(
                        "{method} {url}: {}; retrying in {:.1}s",
                        r.status(),
                        w.as_secs_f64()
                    );
                    w
                }
                Ok(r) => return Ok(r),
            };
            std::thread::sleep(wait);
            attempt += 1;
        }
    }

    /// An error for a response the caller did not expect.
    pub fn status_error(&self, method: &str, url: &str, r: Response) -> RegistryError {
        let status = r.status();
        let body = r.text().unwrap_or_default();
        let body: String = body.chars().take(400).collect();
        RegistryError::Status {
            method: method.into(),
            url: url.into(),
            status: status.as_u16(),
            retried: if is_retriable_status(status) {
                format!(" after {} retries", self.retries)
            } else {
                String::new()
            },
            body: body.trim().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into())
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(30), Duration::from_secs(8));
    }

    #[test]
    fn scopes() {
        let mut s = Scope::push("a/b");
        s.from = Some("c/d".into());
        assert_eq!(
            s.params(),
            ["repository:a/b:pull,push", "repository:c/d:pull"]
        );
    }
}
