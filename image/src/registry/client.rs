//! The distribution API over HTTP(S): authentication, retries and the
//! handful of endpoints pull and push need.
//!
//! Every request goes through [`Client::send`], which owns the policy:
//! a 401 triggers one authentication round (bearer token or basic), and
//! connection errors, resets, 5xx and 429 are retried with exponential
//! backoff, honouring `Retry-After`. Request bodies are rebuilt from a
//! closure on each attempt, so a retried upload re-reads its bytes from the
//! file rather than holding them in memory.

use super::auth::{Credentials, ExplicitCreds, Secret};
use base64::Engine;
use reqwest::blocking::{RequestBuilder, Response};
use reqwest::header::{
    HeaderMap, HeaderValue, AUTHORIZATION, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{StatusCode, Url};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
/// Why a registry request failed. Messages name the request (method and
/// URL) and say what to try where something can be tried.
pub enum RegistryError {
    #[error("{registry}/{repository}: {what} ({status}); {creds}")]
    /// The registry refused the credentials (or wanted some).
    Unauthorized {
        /// The registry.
        registry: String,
        /// The repository.
        repository: String,
        /// What was being done.
        what: &'static str,
        /// The HTTP status (401 or 403).
        status: u16,
        /// Which credentials were sent and where they came from, or where none
        /// were found.
        creds: String,
    },
    #[error("{method} {url}: gave up after {attempts} attempt(s)")]
    /// The connection failed, every retry included.
    Transport {
        /// The request method.
        method: String,
        /// Its URL.
        url: String,
        /// How many times it was tried.
        attempts: u32,
        #[source]
        /// The last failure.
        source: reqwest::Error,
    },
    /// A TLS failure no retry can fix (a plain-HTTP port, an untrusted
    /// certificate), with what to do about it.
    #[error("{method} {url}: {hint}")]
    Tls {
        /// The request method.
        method: String,
        /// Its URL.
        url: String,
        /// What to do about it (plain HTTP, an untrusted certificate).
        hint: &'static str,
        #[source]
        /// The handshake's failure.
        source: reqwest::Error,
    },
    #[error("{method} {url}: the registry answered {status}{retried}: {body}")]
    /// The registry answered with an error status.
    Status {
        /// The request method.
        method: String,
        /// Its URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// How often it was retried first, for the message.
        retried: String,
        /// The start of the body the registry sent, which often says why.
        body: String,
    },
    #[error("{0}")]
    /// The registry's answer breaks the distribution API (a missing header,
    /// an invalid manifest...).
    Protocol(String),
    #[error("{registry}: refusing the token realm {realm:?}: {reason}")]
    /// A token realm that is not safe to send credentials to.
    UnsafeRealm {
        /// The registry.
        registry: String,
        /// The realm it named.
        realm: String,
        /// Why it is refused.
        reason: &'static str,
    },
    #[error("{path}")]
    /// A local file (a certificate, a blob pushed) could not be read.
    Io {
        /// The file.
        path: PathBuf,
        #[source]
        /// The system's answer.
        source: std::io::Error,
    },
    /// Credentials could not be looked up (an unreadable auth file, a
    /// failing credential helper).
    #[error(transparent)]
    Auth(#[from] super::auth::AuthError),
    /// The local layout (the cache pulled into, or the layout pushed
    /// from) failed; a full disk shows here as its io::Error.
    #[error(transparent)]
    Layout(#[from] crate::oci::layout::LayoutError),
    /// A descriptor names a malformed digest.
    #[error(transparent)]
    Digest(#[from] crate::oci::digest::DigestParseError),
    /// A body could not be moved between the registry and the disk.
    #[error("{method} {url}: {what}")]
    Body {
        /// The request.
        method: &'static str,
        /// Its URL.
        url: String,
        /// What was being read or written.
        what: String,
        /// The failure (the connection's or the disk's).
        #[source]
        source: std::io::Error,
    },
    /// A fetched blob could not be stored: it does not match its digest,
    /// or the layout refused it.
    #[error("GET {url}")]
    Store {
        /// Where it came from.
        url: String,
        /// Why it was not stored.
        #[source]
        source: crate::oci::layout::LayoutError,
    },
    /// `--cert-dir` holds certificates that cannot be used.
    #[error("--cert-dir {path}: {reason}")]
    Cert {
        /// The `--cert-dir` directory.
        path: PathBuf,
        /// What is wrong with its contents.
        reason: String,
    },
    #[error("cannot build an HTTP client")]
    /// The HTTP client could not be built (its TLS setup).
    Setup(#[source] reqwest::Error),
}

/// Results of this module.
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
    /// `--creds`, which beat every auth file for the one registry they
    /// name.
    pub creds: Option<ExplicitCreds>,
    /// `--authfile`: read credentials from this file instead of podman's.
    pub authfile: Option<PathBuf>,
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
            authfile: None,
            retries: 5,
            timeout: Duration::from_secs(60),
        }
    }
}

/// The access a request needs, which selects the bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The repository the token is for.
    pub repository: String,
    /// Whether the token must allow pushing.
    pub push: bool,
    /// Another repository to read from (a cross-repository mount).
    pub from: Option<String>,
}

impl Scope {
    /// Read access to `repo`.
    pub fn pull(repo: &str) -> Scope {
        Scope {
            repository: repo.to_string(),
            push: false,
            from: None,
        }
    }
    /// Read and write access to `repo`.
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
    /// Whether the user asked for TLS; without it a plain-HTTP token
    /// realm is accepted too.
    tls_verify: bool,
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
        // Redirects are followed by `Client::send`, which decides per hop
        // whether credentials may go along.
        .redirect(reqwest::redirect::Policy::none())
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
            reason: format!(
                "its certificates were not accepted: {}",
                crate::error::chain_text(&e)
            ),
        },
        None => setup_err(e),
    })
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

/// What to do about a request that failed in its TLS handshake, if it did:
/// the same handshake fails the same way every time, so it is not retried.
/// The connector hands rustls's error over as text inside an io::Error,
/// so it is recognized by rustls's own wording.
fn tls_hint(e: &reqwest::Error) -> Option<&'static str> {
    const PLAIN: &str = "the registry does not answer TLS (a plain-HTTP registry?); reach it over HTTP with --tls-verify=false";
    const UNTRUSTED: &str = "its certificate is not trusted: trust its CA with --cert-dir DIR (a *.crt file), or skip verification with --tls-verify=false";
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(match t {
                rustls::Error::InvalidMessage(_) => PLAIN,
                _ => UNTRUSTED,
            });
        }
        let text = err.to_string();
        if text.starts_with("received corrupt message") {
            return Some(PLAIN);
        }
        if text.starts_with("invalid peer certificate") {
            return Some(UNTRUSTED);
        }
        cur = err.source();
    }
    None
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

/// RFC 7230's `tchar`: what an auth-param name is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Splits one challenge, `SCHEME name=value, name="quoted \" value"`,
/// into its scheme and parameters (names lowercased, values unquoted).
/// `None` when it is not of that form. Registries send one challenge per
/// header; a second one in the same header would fail to parse, which is
/// safe: the challenge is then ignored.
fn parse_auth_params(h: &str) -> Option<(&str, Vec<(String, String)>)> {
    let h = h.trim_matches([' ', '\t']);
    let (scheme, rest) = h.split_once([' ', '\t']).unwrap_or((h, ""));
    if scheme.is_empty() || !scheme.bytes().all(is_tchar) {
        return None;
    }
    let mut params = Vec::new();
    let mut s = rest;
    loop {
        s = s.trim_start_matches([' ', '\t', ',']);
        if s.is_empty() {
            return Some((scheme, params));
        }
        let (name, v) = s.split_once('=')?;
        let name = name.trim_end_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return None;
        }
        let v = v.trim_start_matches([' ', '\t']);
        let (value, next) = if let Some(q) = v.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => out.push(chars.next()?.1),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            (out, &q[end?..])
        } else {
            let end = v.find(',').unwrap_or(v.len());
            let token = v[..end].trim_end_matches([' ', '\t']);
            if token.is_empty() || token.contains([' ', '\t', '"']) {
                return None;
            }
            (token.to_string(), &v[end..])
        };
        let next = next.trim_start_matches([' ', '\t']);
        if !(next.is_empty() || next.starts_with(',')) {
            return None;
        }
        params.push((name.to_ascii_lowercase(), value));
        s = next;
    }
}

fn parse_challenge(h: &str) -> Option<Challenge> {
    let trimmed = h.trim_matches([' ', '\t']);
    let scheme = trimmed.split([' ', '\t']).next().unwrap_or("");
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let (_, params) = parse_auth_params(trimmed)?;
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    Some(Challenge::Bearer {
        realm: get("realm")?,
        service: get("service"),
    })
}

/// Whether `a` and `b` share scheme, host and port: the origin that
/// credentials are scoped to, as browsers scope cookies.
pub(crate) fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Checks a token realm before credentials are sent to it. Any host may
/// issue tokens (Docker Hub's is auth.docker.io), but only over HTTPS,
/// unless the user reached the registry itself without TLS
/// (`allow_http`).
fn check_realm(realm: &str, allow_http: bool) -> std::result::Result<Url, &'static str> {
    let url = Url::parse(realm).map_err(|_| "not an absolute URL")?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("it carries a user name or password");
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if allow_http => Ok(url),
        "http" => Err("plain HTTP would send the credentials in clear text; the registry must name an https:// realm (or be reached with --tls-verify=false)"),
        _ => Err("only https:// realms are accepted"),
    }
}

/// Token answers are a few KiB; anything past this is not a token.
pub(crate) const MAX_TOKEN_BODY: u64 = 1 << 20;
/// How much of an error answer is read to show the user.
pub(crate) const MAX_ERROR_BODY: u64 = 64 << 10;

/// Reads at most `limit` bytes of `r`; the flag says there was more.
pub fn read_bounded(r: impl Read, limit: u64) -> std::io::Result<(Vec<u8>, bool)> {
    let mut buf = Vec::new();
    r.take(limit.saturating_add(1)).read_to_end(&mut buf)?;
    let more = buf.len() as u64 > limit;
    buf.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok((buf, more))
}

/// The part of an error answer worth showing: its first 400 characters,
/// from at most [`MAX_ERROR_BODY`] bytes read.
fn error_body(r: Response) -> String {
    let (bytes, _) = read_bounded(r, MAX_ERROR_BODY).unwrap_or_default();
    let body: String = String::from_utf8_lossy(&bytes).chars().take(400).collect();
    body.trim().to_string()
}

/// How many redirects one request may follow.
const MAX_REDIRECTS: usize = 10;

impl Client {
    /// Connects to `registry` (the name as written; `api_host` is where
    /// its API lives). With `tls_verify` off, a registry that does not
    /// answer TLS is reached over plain HTTP.
    pub fn new(registry: &str, api_host: &str, opts: &Options) -> Result<Client> {
        let creds = super::auth::lookup(registry, opts.creds.as_ref(), opts.authfile.as_deref())?;
        let mut client = Client {
            http: http_client(opts, !opts.tls_verify)?,
            registry: registry.to_string(),
            base: format!("https://{api_host}"),
            creds,
            tokens: Mutex::new(HashMap::new()),
            retries: opts.retries,
            tls_verify: opts.tls_verify,
        };
        if !opts.tls_verify {
            // Probe once: a TLS handshake against a plain-HTTP port fails
            // at once, and then HTTP is what the user meant.
            let probe = client.http.get(format!("{}/v2/", client.base)).send();
            if let Err(e) = probe {
                tracing::info!(
                    "{api_host}: no TLS ({}); using plain HTTP",
                    crate::error::chain_text(&e)
                );
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

    /// Whether `url` is on the registry's own origin, the only place its
    /// credentials and tokens are sent.
    pub(crate) fn is_own(&self, url: &Url) -> bool {
        Url::parse(&self.base).is_ok_and(|b| same_origin(&b, url))
    }

    /// The `Authorization` value for `scope`: its own token, else one
    /// that grants at least as much on the same repository, else basic.
    fn authorization(&self, scope: &Scope) -> Option<String> {
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

    /// The `Authorization` value for a request to `url`: none unless
    /// `url` is on the registry's own origin (an upload `Location` may
    /// point at a storage host that must not see the token).
    pub(crate) fn authorization_for(&self, url: &str, scope: &Scope) -> Option<String> {
        let u = Url::parse(url).ok()?;
        if !self.is_own(&u) {
            return None;
        }
        self.authorization(scope)
    }

    /// The HTTP client itself, for a request that must not be retried
    /// blindly (a PATCH whose partial success the caller checks). It
    /// follows no redirects and adds no credentials.
    pub(crate) fn http_once(&self) -> &reqwest::blocking::Client {
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
                let realm_url = check_realm(&realm, !self.tls_verify).map_err(|reason| {
                    RegistryError::UnsafeRealm {
                        registry: self.registry.clone(),
                        realm: realm.clone(),
                        reason,
                    }
                })?;
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
                            self.http.post(realm_url.clone()).form(&form)
                        }
                        _ => self.http.get(realm_url.clone()).query(&query),
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
                        body: error_body(resp),
                    });
                }
                let (body, more) = read_bounded(resp, MAX_TOKEN_BODY).map_err(|e| {
                    RegistryError::Protocol(format!("token from {realm}: reading it: {e}"))
                })?;
                if more {
                    return Err(RegistryError::Protocol(format!(
                        "token from {realm}: the answer is larger than {MAX_TOKEN_BODY} bytes; refusing it"
                    )));
                }
                let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
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

    /// Sends one request built by `mk`, following redirects by hand:
    /// `Authorization` goes along only while the target is the registry's
    /// own origin (blob downloads are commonly redirected to a storage
    /// host, which gets the request without it). Returns the final
    /// response and whether it came from the registry's origin.
    fn execute(
        &self,
        method: &str,
        scope: &Scope,
        mk: &dyn Fn(&reqwest::blocking::Client) -> Result<RequestBuilder>,
    ) -> Result<std::result::Result<(Response, bool), reqwest::Error>> {
        let mut target: Option<Url> = None;
        let mut hop = 0;
        loop {
            let mut req = match mk(&self.http)?.build() {
                Ok(r) => r,
                Err(e) => return Ok(Err(e)),
            };
            if let Some(t) = &target {
                *req.url_mut() = t.clone();
            }
            let own = self.is_own(req.url());
            req.headers_mut().remove(AUTHORIZATION);
            if own {
                if let Some(h) = self
                    .authorization(scope)
                    .and_then(|h| HeaderValue::from_str(&h).ok())
                {
                    req.headers_mut().insert(AUTHORIZATION, h);
                }
            }
            let from = req.url().clone();
            let resp = match self.http.execute(req) {
                Ok(r) => r,
                Err(e) => return Ok(Err(e)),
            };
            let status = resp.status().as_u16();
            // 301/302/303 turn anything but GET and HEAD into a GET
            // without its body: not something a registry asks for, so
            // the caller sees the answer instead.
            let follows = matches!(status, 307 | 308)
                || (matches!(status, 301..=303) && matches!(method, "GET" | "HEAD"));
            let next = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| from.join(l).ok());
            let next = match next {
                Some(n) if follows && hop < MAX_REDIRECTS => n,
                _ => return Ok(Ok((resp, own))),
            };
            match next.scheme() {
                "https" => {}
                "http" if !self.tls_verify || from.scheme() == "http" => {}
                _ => {
                    return Err(RegistryError::Protocol(format!(
                        "{method} {from}: the registry redirected to {next}, which is not HTTPS; refusing to follow (--tls-verify=false allows plain HTTP)"
                    )))
                }
            }
            tracing::debug!("{method} {from}: {status}, following to {next}");
            target = Some(next);
            hop += 1;
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
            let wait = match self.execute(method, scope, mk)? {
                Err(source) => {
                    if let Some(hint) = tls_hint(&source) {
                        return Err(RegistryError::Tls {
                            method: method.into(),
                            url: url.into(),
                            hint,
                            source,
                        });
                    }
                    if attempt >= self.retries || source.is_builder() || source.is_redirect() {
                        return Err(RegistryError::Transport {
                            method: method.into(),
                            url: url.into(),
                            attempts: attempt + 1,
                            source,
                        });
                    }
                    tracing::warn!(
                        "{method} {url}: {}; retrying",
                        crate::error::chain_text(&source)
                    );
                    backoff(attempt)
                }
                // A 401 from elsewhere (a storage host) is not the
                // registry asking for credentials: it gets none.
                Ok((r, true)) if r.status() == StatusCode::UNAUTHORIZED && !authenticated => {
                    authenticated = true;
                    self.authenticate(scope, r.headers())?;
                    continue;
                }
                Ok((r, true))
                    if r.status() == StatusCode::UNAUTHORIZED
                        || r.status() == StatusCode::FORBIDDEN =>
                {
                    return Err(self.unauthorized(scope, r.status().as_u16()));
                }
                Ok((r, _)) if is_retriable_status(r.status()) && attempt < self.retries => {
                    let w = retry_after(r.headers()).unwrap_or_else(|| backoff(attempt));
                    tracing::warn!(
                        "{method} {url}: {}; retrying in {:.1}s",
                        r.status(),
                        w.as_secs_f64()
                    );
                    w
                }
                Ok((r, _)) => return Ok(r),
            };
            std::thread::sleep(wait);
            attempt += 1;
        }
    }

    /// An error for a response the caller did not expect.
    pub fn status_error(&self, method: &str, url: &str, r: Response) -> RegistryError {
        let status = r.status();
        RegistryError::Status {
            method: method.into(),
            url: url.into(),
            status: status.as_u16(),
            retried: if is_retriable_status(status) {
                format!(" after {} retries", self.retries)
            } else {
                String::new()
            },
            body: error_body(r),
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
    fn challenge_params_unquote_and_reject_garbage() {
        assert_eq!(
            parse_auth_params(r#"Bearer realm="https://a/t?x=\"1\"", service=reg , scope=x"#),
            Some((
                "Bearer",
                vec![
                    ("realm".into(), r#"https://a/t?x="1""#.into()),
                    ("service".into(), "reg".into()),
                    ("scope".into(), "x".into())
                ]
            ))
        );
        assert_eq!(parse_challenge(r#"Bearer realm="unterminated"#), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None);
        assert_eq!(parse_challenge(r#"Bearer realm="a" junk"#), None);
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn origins_are_scheme_host_and_port() {
        let reg = url("https://reg.example/v2/");
        assert!(same_origin(
            &reg,
            &url("https://REG.example:443/v2/a/blobs/uploads/x")
        ));
        assert!(!same_origin(&reg, &url("http://reg.example/v2/")));
        assert!(!same_origin(&reg, &url("https://reg.example:5000/v2/")));
        assert!(!same_origin(&reg, &url("https://storage.example/v2/")));
        assert!(!same_origin(&reg, &url("https://reg.example.evil/v2/")));
        let local = url("http://127.0.0.1:5000/v2/");
        assert!(same_origin(&local, &url("http://127.0.0.1:5000/x")));
        assert!(!same_origin(&local, &url("http://127.0.0.1:5001/x")));
    }

    #[test]
    fn realms_must_be_https_without_userinfo() {
        assert!(check_realm("https://auth.example/token", false).is_ok());
        assert!(check_realm("http://auth.example/token", false).is_err());
        assert!(check_realm("http://auth.example/token", true).is_ok());
        assert!(check_realm("https://user:pw@auth.example/token", true).is_err());
        assert!(check_realm("https://user@auth.example/token", true).is_err());
        assert!(check_realm("ftp://auth.example/token", true).is_err());
        assert!(check_realm("file:///etc/passwd", true).is_err());
        assert!(check_realm("/token", true).is_err());
    }

    #[test]
    fn bounded_reads_stop_at_the_limit() {
        let endless = std::io::repeat(b'x');
        let (got, more) = read_bounded(endless, 1000).unwrap();
        assert_eq!((got.len(), more), (1000, true));
        let (got, more) = read_bounded(&b"short"[..], 1000).unwrap();
        assert_eq!((got, more), (b"short".to_vec(), false));
    }

    /// Quotes `v` as an RFC 7230 quoted-string.
    fn quote(v: &str) -> String {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn challenge_parser_never_panics(h in "\\PC{0,80}") {
            let _ = parse_challenge(&h);
            let _ = parse_auth_params(&h);
        }

        #[test]
        fn challenge_parser_never_panics_on_near_misses(
            h in "(Bearer|Basic|bearer) ?[a-z=\",\\\\ ]{0,40}"
        ) {
            let _ = parse_challenge(&h);
        }

        #[test]
        fn challenge_params_round_trip(
            params in proptest::collection::vec(
                ("[a-z][a-z0-9_-]{0,8}", "[^\\p{Cc}]{0,24}", proptest::bool::ANY),
                1..6,
            ),
            sep in "(,|, |,\t| ,  )",
        ) {
            let text: Vec<String> = params
                .iter()
                .map(|(k, v, quoted)| {
                    let plain = !v.is_empty() && v.bytes().all(is_tchar);
                    if *quoted || !plain { format!("{k}={}", quote(v)) } else { format!("{k}={v}") }
                })
                .collect();
            let header = format!("Bearer {}", text.join(&sep));
            let (scheme, got) = parse_auth_params(&header).expect("a well-formed challenge");
            proptest::prop_assert_eq!(scheme, "Bearer");
            let want: Vec<(String, String)> =
                params.iter().map(|(k, v, _)| (k.clone(), v.clone())).collect();
            proptest::prop_assert_eq!(got, want);
        }
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
