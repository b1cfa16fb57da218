//! A real docker-registry (distribution v2) on a free 127.0.0.1 port for
//! the e2e tests, optionally with htpasswd auth and TLS (certificates made
//! at test time with openssl), that can be killed and restarted on the
//! same port and storage. And a fault-injecting HTTP proxy to put in front
//! of it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub fn require(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: run scripts/test as root once to install the e2e peers"
    );
}

/// Directories the whole test binary shares live in statics, which are
/// never dropped: they are removed when the process exits.
pub fn remove_at_exit(dir: &Path) {
    static DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    extern "C" fn remove_all() {
        if let Ok(dirs) = DIRS.lock() {
            for d in dirs.iter() {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
    static REGISTERED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    REGISTERED.get_or_init(|| {
        // SAFETY: registers a plain function with no arguments; it runs
        // once, at exit, and only reads the list above.
        assert_eq!(unsafe { libc::atexit(remove_all) }, 0);
    });
    DIRS.lock().unwrap().push(dir.to_path_buf());
}

/// A temporary directory whose path podman takes as an image name: podman
/// names an `oci:` image after its layout's path, which must be lowercase,
/// and tempfile's random suffixes are not. `shipyard-WHAT-PID-N`, unique in
/// this process (its tests share the pid).
pub fn lowercase_tempdir(what: &str) -> tempfile::TempDir {
    static N: AtomicUsize = AtomicUsize::new(0);
    tempfile::Builder::new()
        .prefix(&format!(
            "shipyard-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
        .rand_bytes(0)
        .tempdir()
        .unwrap()
}

/// podman as these machines need it: runc (crun fails on hybrid cgroups),
/// cgroupfs, file events, vfs storage (no fuse), and an XDG_RUNTIME_DIR
/// when the user has none.
pub fn podman(runtime_dir: &Path) -> Command {
    require("podman");
    let mut c = Command::new("podman");
    c.args([
        "--runtime",
        "runc",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "file",
        "--storage-driver",
        "vfs",
    ]);
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() && !nix::unistd::geteuid().is_root() {
        c.env("XDG_RUNTIME_DIR", runtime_dir);
    }
    c
}

/// `podman run` arguments for IMAGE and ARGV, with no network and modest
/// rlimits (root here lacks CAP_SYS_RESOURCE, which podman's defaults need).
pub fn podman_run(image: &str, argv: &[&str]) -> Vec<String> {
    podman_run_with::<&str>(&[], image, argv)
}

/// `podman_run` with more `podman run` options (`-v`, `--user`, `-e`…)
/// before the image.
pub fn podman_run_with<S: AsRef<str>>(options: &[S], image: &str, argv: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(options.iter().map(|s| s.as_ref().to_string()));
    v.push(image.to_string());
    v.extend(argv.iter().map(|s| s.to_string()));
    v
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Registry {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    cfg: PathBuf,
    tls: bool,
    /// With token auth: the token server.
    pub tokens: Option<TokenServer>,
}

/// Credentials of the protected registry.
pub const USER: &str = "shipper";
pub const PASSWORD: &str = "s3cret-pw";

fn sh(cmd: &str, cwd: &Path) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Registry {
    pub fn start() -> Registry {
        Registry::launch(false)
    }

    /// htpasswd auth and TLS; the CA is `certs/ca.crt` (see `cert_dir`).
    pub fn start_secure() -> Registry {
        Registry::launch(true)
    }

    fn launch(secure: bool) -> Registry {
        require("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cfg_text = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if secure {
            require("htpasswd");
            make_certs(dir.path());
            sh(
                &format!("htpasswd -Bbn {USER} {PASSWORD} > htpasswd"),
                dir.path(),
            );
            cfg_text.push_str(&format!(
                "  tls:\n    certificate: {s}/srv.crt\n    key: {s}/srv.key\nauth:\n  htpasswd:\n    realm: shipyard-test\n    path: {}\n",
                dir.path().join("htpasswd").display(),
                s = dir.path().join("server").display()
            ));
        }
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, cfg_text).unwrap();
        let mut reg = Registry {
            child: None,
            port,
            dir,
            cfg,
            tls: secure,
            tokens: None,
        };
        reg.restart();
        reg
    }

    /// Plain HTTP, with distribution's token auth: a bearer token from
    /// [`TokenServer`], which wants USER/PASSWORD as basic auth.
    pub fn start_token() -> Registry {
        require("docker-registry");
        require("openssl");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        sh(
            "openssl req -x509 -newkey rsa:2048 -nodes -keyout token.key -out token.crt -days 2 -subj /CN=shipyard-token-issuer 2>/dev/null \
             && openssl x509 -in token.crt -outform DER -out token.der",
            dir.path(),
        );
        let tokens = TokenServer::start(dir.path().to_path_buf());
        let cfg_text = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: shipyard-test-registry\n    issuer: shipyard-test-issuer\n    rootcertbundle: {}\n",
            dir.path().join("data").display(),
            tokens.port,
            dir.path().join("token.crt").display()
        );
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, cfg_text).unwrap();
        let mut reg = Registry {
            child: None,
            port,
            dir,
            cfg,
            tls: true, // /v2/ answers 401, so ping by connect only
            tokens: Some(tokens),
        };
        reg.restart();
        reg
    }

    /// The directory to pass as --cert-dir.
    pub fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `docker://127.0.0.1:PORT/REPO`.
    pub fn url(&self, repo: &str) -> String {
        format!("docker://127.0.0.1:{}/{repo}", self.port)
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (Re)starts the registry on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        super::wait::wait_until(
            &format!("docker-registry to answer on 127.0.0.1:{}", self.port),
            Duration::from_secs(20),
            Duration::from_millis(100),
            || self.ping(),
        );
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if self.tls {
            // Listening is enough: a TLS handshake here would need a client.
            return true;
        }
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!("GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", self.port);
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the proxy does to request number n (from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    /// Close the connection without an answer.
    Reset,
    /// Answer 500.
    Error500,
    /// Answer 429 with `Retry-After: 1`.
    TooMany,
    /// Wait, then pass.
    Slow(Duration),
    /// Pass, but flip the last byte of a blob download's body.
    CorruptBlob,
    /// Pass, but flip the last byte of a manifest download's body.
    CorruptManifest,
}

/// A one-request-per-connection HTTP proxy that injects faults by
/// request number, following `plan(n)`.
pub struct FaultProxy {
    pub port: u16,
    pub requests: Arc<AtomicUsize>,
    /// "METHOD PATH" of every request that reached the proxy.
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

fn read_head(c: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match c.read(&mut b) {
            // A TLS hello (the --tls-verify=false probe): refuse it at
            // once, as a plain-HTTP registry does.
            Ok(1) if head.is_empty() && b[0] == 0x16 => return None,
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
        if head.len() > 64 << 10 {
            return None;
        }
    }
    Some(head)
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

fn serve(mut c: TcpStream, upstream: u16, fault: Fault, log: Arc<std::sync::Mutex<Vec<String>>>) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
    let Some(head) = read_head(&mut c) else {
        return;
    };
    let head_s = String::from_utf8_lossy(&head).into_owned();
    if let Some(line) = head_s.lines().next() {
        let mut w = line.split_whitespace();
        if let (Some(m), Some(p)) = (w.next(), w.next()) {
            log.lock().unwrap().push(format!("{m} {p}"));
        }
    }
    let len = content_length(&head_s);
    let mut body = vec![0u8; len];
    if c.read_exact(&mut body).is_err() {
        return;
    }
    let answer = |c: &mut TcpStream, status: &str, extra: &str| {
        let _ = c.write_all(
            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n{extra}\r\n")
                .as_bytes(),
        );
    };
    match fault {
        Fault::Reset => return,
        Fault::Error500 => return answer(&mut c, "500 Internal Server Error", ""),
        Fault::TooMany => return answer(&mut c, "429 Too Many Requests", "Retry-After: 1\r\n"),
        Fault::Slow(d) => std::thread::sleep(d),
        Fault::Pass | Fault::CorruptBlob | Fault::CorruptManifest => {}
    }
    let path = head_s.split_whitespace().nth(1).unwrap_or("");
    let corrupt = head_s.starts_with("GET ")
        && match fault {
            Fault::CorruptBlob => path.contains("/blobs/sha256:"),
            Fault::CorruptManifest => path.contains("/manifests/"),
            _ => false,
        };
    // Forward with Connection: close, so one request is one connection.
    let mut lines: Vec<&str> = head_s
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    while lines.last() == Some(&"") {
        lines.pop();
    }
    let mut fwd = lines.join("\r\n");
    fwd.push_str("\r\nConnection: close\r\n\r\n");
    let Ok(mut u) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return answer(&mut c, "502 Bad Gateway", "");
    };
    if u.write_all(fwd.as_bytes()).is_err() || u.write_all(&body).is_err() {
        return;
    }
    if !corrupt {
        let _ = std::io::copy(&mut u, &mut c);
        return;
    }
    let mut resp = Vec::new();
    let _ = u.read_to_end(&mut resp);
    let body_start = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    if body_start.is_some_and(|s| s < resp.len()) {
        let last = resp.len() - 1;
        resp[last] ^= 0xff;
    }
    let _ = c.write_all(&resp);
}

impl FaultProxy {
    pub fn start(
        upstream: u16,
        plan: impl Fn(usize) -> Fault + Send + Sync + 'static,
    ) -> FaultProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let plan = Arc::new(plan);
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let f = plan(n);
                let log = log2.clone();
                std::thread::spawn(move || serve(c, upstream, f, log));
            }
        });
        FaultProxy {
            port,
            requests,
            log,
        }
    }

    pub fn url(&self, repo: &str) -> String {
        format!("docker://127.0.0.1:{}/{repo}", self.port)
    }
}

/// A token server for distribution's `auth: token`: checks basic auth,
/// then signs a JWT (RS256, with the issuer's certificate in `x5c`)
/// granting every scope asked for. Records the scopes it was asked.
pub struct TokenServer {
    pub port: u16,
    pub scopes: Arc<std::sync::Mutex<Vec<Vec<String>>>>,
}

fn b64url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn query_params(path: &str) -> Vec<(String, String)> {
    let q = path.split_once('?').map(|x| x.1).unwrap_or("");
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let mut out = Vec::new();
            let b = v.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' && i + 2 < b.len() {
                    out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap_or(b'?'));
                    i += 3;
                } else {
                    out.push(if b[i] == b'+' { b' ' } else { b[i] });
                    i += 1;
                }
            }
            (k.to_string(), String::from_utf8_lossy(&out).into_owned())
        })
        .collect()
}

impl TokenServer {
    fn start(keys: PathBuf) -> TokenServer {
        use base64::Engine;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let scopes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = scopes.clone();
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
        );
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                let Some(head) = read_head(&mut c) else {
                    continue;
                };
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let authorized = head.lines().any(|l| {
                    l.split_once(':').is_some_and(|(k, v)| {
                        k.eq_ignore_ascii_case("authorization") && v.trim() == want
                    })
                });
                if !authorized {
                    let _ = c.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                let params = query_params(&path);
                let asked: Vec<String> = params
                    .iter()
                    .filter(|(k, _)| k == "scope")
                    .map(|(_, v)| v.clone())
                    .collect();
                seen.lock().unwrap().push(asked.clone());
                let access: Vec<serde_json::Value> = asked
                    .iter()
                    .filter_map(|s| {
                        let mut it = s.splitn(3, ':');
                        let (t, n, a) = (it.next()?, it.next()?, it.next()?);
                        Some(serde_json::json!({"type": t, "name": n, "actions": a.split(',').collect::<Vec<_>>()}))
                    })
                    .collect();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let der = std::fs::read(keys.join("token.der")).unwrap();
                let header = serde_json::json!({"typ": "JWT", "alg": "RS256",
                    "x5c": [base64::engine::general_purpose::STANDARD.encode(&der)]});
                let claims = serde_json::json!({"iss": "shipyard-test-issuer", "sub": USER,
                    "aud": "shipyard-test-registry", "exp": now + 300, "nbf": now - 10,
                    "iat": now, "jti": format!("{now}-{}", seen.lock().unwrap().len()), "access": access});
                let input = format!(
                    "{}.{}",
                    b64url(header.to_string().as_bytes()),
                    b64url(claims.to_string().as_bytes())
                );
                let mut sign = Command::new("openssl")
                    .args(["dgst", "-sha256", "-sign"])
                    .arg(keys.join("token.key"))
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                sign.stdin
                    .take()
                    .unwrap()
                    .write_all(input.as_bytes())
                    .unwrap();
                let sig = sign.wait_with_output().unwrap().stdout;
                let jwt = format!("{input}.{}", b64url(&sig));
                let body =
                    serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 300})
                        .to_string();
                let _ = c.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        TokenServer { port, scopes }
    }
}

/// Makes a CA (`certs/ca.crt`, what --cert-dir takes) and a server
/// certificate for 127.0.0.1 (`server/srv.crt`, `server/srv.key`) in
/// `dir`.
pub fn make_certs(dir: &Path) {
    require("openssl");
    let c = dir.join("certs");
    std::fs::create_dir_all(&c).unwrap();
    sh(
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=shipyard-test-ca 2>/dev/null \
         && openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=127.0.0.1 2>/dev/null \
         && printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > ext \
         && openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out srv.crt -days 2 -extfile ext 2>/dev/null \
         && rm -f ca.key srv.csr ext ca.srl && mkdir -p ../server && mv srv.crt srv.key ../server/",
        &c,
    );
}

/// How [`AuthProxy`] wants to be authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyAuth {
    /// `WWW-Authenticate: Basic`, USER/PASSWORD.
    Basic,
    /// `WWW-Authenticate: Bearer` naming the proxy's token realm, which
    /// wants USER/PASSWORD as basic auth and hands out [`TOKEN`].
    Bearer(Realm),
}

/// The token realm [`ProxyAuth::Bearer`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Realm {
    /// `http://127.0.0.1:PORT/token`.
    Http,
    /// `https://127.0.0.1:PORT/token` (another origin than the proxy:
    /// another port), with the proxy's CA.
    Https,
    /// `https://`, answering 200 with a body that does not end.
    HttpsEndless,
}

/// What [`AuthProxy`] does besides demanding credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Twist {
    None,
    /// Upload `Location`s point at the foreign listener (another origin
    /// that proxies to the registry).
    ForeignUploads,
    /// Blob downloads are redirected (307) to the foreign listener.
    RedirectBlobs,
    /// Manifest GETs answer 200 with an HTML page.
    JunkManifest,
    /// Manifest GETs answer 400 with a body that does not end.
    EndlessError,
    /// Manifest GETs answer 200, as a manifest, with a body that does not
    /// end.
    EndlessManifest,
}

/// The bearer token the proxy's realm issues.
pub const TOKEN: &str = "proxy-token-7f3a";

/// How much an "endless" body sends before giving up: far more than any
/// bound shipyard keeps, small enough not to hurt the machine when the
/// bound is missing.
pub const ENDLESS: usize = 256 << 20;

/// A proxy in front of a plain registry that demands credentials and
/// records every `Authorization` header that reaches it, its token realm
/// and its "foreign" listener (another origin, standing for a storage
/// host), so tests can assert where credentials went.
pub struct AuthProxy {
    pub port: u16,
    /// `Authorization` of each request to the proxy itself.
    pub seen: Arc<std::sync::Mutex<Vec<Option<String>>>>,
    /// `Authorization` of each request to the foreign listener.
    pub foreign: Arc<std::sync::Mutex<Vec<Option<String>>>>,
    /// `Authorization` of each request to the token realm.
    pub realm: Arc<std::sync::Mutex<Vec<Option<String>>>>,
    /// The directory holding `certs/ca.crt`, when the proxy speaks TLS.
    pub tls: Option<tempfile::TempDir>,
}

type Log = Arc<std::sync::Mutex<Vec<Option<String>>>>;

fn basic_creds() -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    )
}

/// One parsed request: its head as text, and its body.
struct Req {
    head: String,
    body: Vec<u8>,
}

impl Req {
    fn method(&self) -> &str {
        self.head.split_whitespace().next().unwrap_or("")
    }
    fn path(&self) -> &str {
        self.head.split_whitespace().nth(1).unwrap_or("")
    }
    fn header(&self, name: &str) -> Option<String> {
        self.head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

fn read_req(c: &mut dyn Read) -> Option<Req> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match c.read(&mut b) {
            // A TLS hello on a plain listener (the --tls-verify=false
            // probe): refuse it, as a plain-HTTP registry does.
            Ok(1) if head.is_empty() && b[0] == 0x16 => return None,
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
        if head.len() > 64 << 10 {
            return None;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut body = vec![0u8; content_length(&head)];
    c.read_exact(&mut body).ok()?;
    Some(Req { head, body })
}

/// Forwards `r` to the registry, one connection per request; returns
/// the raw answer.
fn forward(r: &Req, upstream: u16, https: bool) -> Vec<u8> {
    let mut lines: Vec<&str> = r
        .head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    while lines.last() == Some(&"") {
        lines.pop();
    }
    let mut fwd = lines.join("\r\n");
    if https {
        // So that the registry's absolute Locations say https.
        fwd.push_str("\r\nX-Forwarded-Proto: https");
    }
    fwd.push_str("\r\nConnection: close\r\n\r\n");
    let Ok(mut u) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            .to_vec();
    };
    let _ = u.write_all(fwd.as_bytes());
    let _ = u.write_all(&r.body);
    let mut resp = Vec::new();
    let _ = u.read_to_end(&mut resp);
    resp
}

/// Rewrites the `Location` header of a raw answer with `f`.
fn rewrite_location(resp: Vec<u8>, f: impl Fn(&str) -> String) -> Vec<u8> {
    let Some(end) = resp.windows(4).position(|w| w == b"\r\n\r\n") else {
        return resp;
    };
    let head = String::from_utf8_lossy(&resp[..end]).into_owned();
    let head: Vec<String> = head
        .split("\r\n")
        .map(|l| match l.split_once(':') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case("location") => {
                format!("{k}: {}", f(v.trim()))
            }
            _ => l.to_string(),
        })
        .collect();
    let mut out = head.join("\r\n").into_bytes();
    out.extend_from_slice(&resp[end..]);
    out
}

fn reply(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

/// Writes an answer that starts with `head` and `start` and then streams
/// filler up to [`ENDLESS`] bytes, or until the reader goes away.
fn endless(c: &mut dyn Write, head: &str, start: &[u8]) {
    if c.write_all(head.as_bytes()).is_err() || c.write_all(start).is_err() {
        return;
    }
    let chunk = vec![b'a'; 64 << 10];
    let mut sent = 0;
    while sent < ENDLESS {
        if c.write_all(&chunk).is_err() {
            return;
        }
        sent += chunk.len();
    }
}

fn tls_config(dir: &Path) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("server/srv.crt"))
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server/srv.key")).unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    )
}

/// Serves `handle` on a new 127.0.0.1 port, over TLS with `tls`; one
/// thread and one request per connection. Returns the port.
fn listen(
    tls: Option<Arc<rustls::ServerConfig>>,
    handle: impl Fn(&mut dyn ReadWrite) + Send + Sync + 'static,
) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
            let handle = handle.clone();
            let tls = tls.clone();
            std::thread::spawn(move || match tls {
                None => {
                    let mut c = c;
                    handle(&mut c);
                }
                Some(cfg) => {
                    let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                        return;
                    };
                    let mut s = rustls::StreamOwned::new(conn, c);
                    handle(&mut s);
                    s.conn.send_close_notify();
                    let _ = s.flush();
                }
            });
        }
    });
    port
}

pub trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

impl AuthProxy {
    pub fn start(upstream: u16, auth: ProxyAuth, twist: Twist) -> AuthProxy {
        AuthProxy::launch(upstream, auth, twist, false)
    }

    /// The same, speaking TLS with a CA of its own ([`AuthProxy::cert_dir`]).
    pub fn start_tls(upstream: u16, auth: ProxyAuth, twist: Twist) -> AuthProxy {
        AuthProxy::launch(upstream, auth, twist, true)
    }

    fn launch(upstream: u16, auth: ProxyAuth, twist: Twist, tls: bool) -> AuthProxy {
        let dir = tls.then(|| {
            let d = tempfile::tempdir().unwrap();
            make_certs(d.path());
            d
        });
        let cfg = dir.as_ref().map(|d| tls_config(d.path()));
        let (seen, foreign, realm): (Log, Log, Log) = Default::default();

        // The foreign origin: records, then passes everything on.
        let log = foreign.clone();
        let foreign_port = listen(None, move |c| {
            let Some(r) = read_req(c) else { return };
            log.lock().unwrap().push(r.header("authorization"));
            let _ = c.write_all(&forward(&r, upstream, false));
        });

        // The token realm: basic auth in, TOKEN out.
        let kind = match auth {
            ProxyAuth::Bearer(k) => k,
            // Unused: nothing points at it.
            ProxyAuth::Basic => Realm::Http,
        };
        let realm_tls = match kind {
            Realm::Http => None,
            _ => Some(
                cfg.clone()
                    .unwrap_or_else(|| panic!("an https realm needs AuthProxy::start_tls")),
            ),
        };
        let log = realm.clone();
        let realm_port = listen(realm_tls, move |c| {
            let Some(r) = read_req(c) else { return };
            let got = r.header("authorization");
            log.lock().unwrap().push(got.clone());
            if got.as_deref() != Some(basic_creds().as_str()) {
                let _ = c.write_all(&reply("401 Unauthorized", "", b""));
                return;
            }
            let json =
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
            if kind == Realm::HttpsEndless {
                return endless(c, json, b"{\"token\":\"");
            }
            let body = format!("{{\"token\":\"{TOKEN}\"}}");
            let _ = c.write_all(&reply(
                "200 OK",
                "Content-Type: application/json\r\n",
                body.as_bytes(),
            ));
        });
        let realm_url = format!(
            "{}://127.0.0.1:{realm_port}/token",
            if kind == Realm::Http { "http" } else { "https" }
        );

        // The registry's face.
        let log = seen.clone();
        let front = listen(cfg, move |c| {
            let Some(r) = read_req(c) else { return };
            let got = r.header("authorization");
            log.lock().unwrap().push(got.clone());
            let (want, challenge) = match auth {
                ProxyAuth::Basic => (basic_creds(), "Basic realm=\"proxy\"".to_string()),
                ProxyAuth::Bearer(_) => (
                    format!("Bearer {TOKEN}"),
                    format!("Bearer realm=\"{realm_url}\",service=\"proxy\""),
                ),
            };
            if got.as_deref() != Some(want.as_str()) {
                let _ = c.write_all(&reply(
                    "401 Unauthorized",
                    &format!("WWW-Authenticate: {challenge}\r\n"),
                    b"",
                ));
                return;
            }
            let path = r.path().to_string();
            let foreign_url = |p: &str| format!("http://127.0.0.1:{foreign_port}{p}");
            let answer = match twist {
                Twist::JunkManifest if path.contains("/manifests/") && r.method() == "GET" => {
                    reply(
                        "200 OK",
                        "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n",
                        b"<html><body>Welcome to our portal</body></html>",
                    )
                }
                Twist::EndlessError if path.contains("/manifests/") && r.method() == "GET" => {
                    return endless(
                        c,
                        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n",
                        b"endless-error-body ",
                    );
                }
                Twist::EndlessManifest if path.contains("/manifests/") && r.method() == "GET" => {
                    return endless(
                        c,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n",
                        b"{\"schemaVersion\": 2, \"annotations\": {\"a\": \"",
                    );
                }
                Twist::RedirectBlobs if path.contains("/blobs/sha256:") && r.method() == "GET" => {
                    reply(
                        "307 Temporary Redirect",
                        &format!("Location: {}\r\n", foreign_url(&path)),
                        b"",
                    )
                }
                Twist::ForeignUploads
                    if r.method() == "POST" && path.contains("/blobs/uploads/") =>
                {
                    rewrite_location(forward(&r, upstream, tls), |l| {
                        foreign_url(l.find("/v2/").map_or(l, |i| &l[i..]))
                    })
                }
                _ => forward(&r, upstream, tls),
            };
            let _ = c.write_all(&answer);
        });
        AuthProxy {
            port: front,
            seen,
            foreign,
            realm,
            tls: dir,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self, repo: &str) -> String {
        format!("docker://127.0.0.1:{}/{repo}", self.port)
    }

    /// The directory to pass as --cert-dir (TLS proxies only).
    pub fn cert_dir(&self) -> PathBuf {
        self.tls.as_ref().unwrap().path().join("certs")
    }

    /// How many requests `log` holds, and how many carried credentials.
    pub fn count(log: &Log) -> (usize, usize) {
        let l = log.lock().unwrap();
        (l.len(), l.iter().filter(|a| a.is_some()).count())
    }
}
