//! The host's CA bundle and proxy settings in a step: behind a
//! TLS-inspecting proxy (common on corporate CI runners) a builder's own
//! CA bundle does not know the proxy's CA, so pip, cargo, npm, curl and apt
//! over https fail until the host's bundle, which does, is where they look.
//!
//! The bundle is bound read-only over every bundle path the builder's
//! distro has, and the variables TLS clients honour point at it. Neither
//! the bundle nor the proxy variables are part of a step's cache key or of
//! an image: they describe the machine, not the build.

use std::path::{Path, PathBuf};

/// Where distros keep their CA bundle: Debian, Ubuntu and Alpine's
/// ca-certificates; Fedora and RHEL; openSUSE; Alpine's libressl/openssl.
pub const BUNDLE_PATHS: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The proxy variables passed into steps, as BuildKit's predefined build
/// arguments (both cases).
pub const PROXY_VARS: [&str; 10] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "FTP_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "ftp_proxy",
    "all_proxy",
];

/// The first CA bundle of this machine, if it has one.
pub fn host_bundle() -> Option<PathBuf> {
    BUNDLE_PATHS
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(Path::to_path_buf)
}

/// The caller's proxy settings.
pub fn proxy_env() -> Vec<(String, String)> {
    PROXY_VARS
        .iter()
        .filter_map(|k| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| (k.to_string(), v))
        })
        .collect()
}

/// The variables that point TLS clients at `bundle` (a path in the step):
/// OpenSSL and what reads its defaults (Python, Go, Ruby), requests and
/// pip (which otherwise use certifi's own bundle), curl, git, cargo, and
/// Node.js (which adds it to its built-in list).
pub fn bundle_env(bundle: &Path) -> Vec<(String, String)> {
    let b = bundle.display().to_string();
    [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "PIP_CERT",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
        "CARGO_HTTP_CAINFO",
        "NODE_EXTRA_CA_CERTS",
    ]
    .iter()
    .map(|k| (k.to_string(), b.clone()))
    .collect()
}

/// `env` plus `more`, where `env` does not set the variable already (a
/// rule's own setting wins).
pub fn add_missing(env: &mut Vec<(String, String)>, more: Vec<(String, String)>) {
    for (k, v) in more {
        if !env.iter().any(|(e, _)| *e == k) {
            env.push((k, v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rules_own_setting_wins() {
        let mut env = vec![("PIP_CERT".to_string(), "/mine.pem".to_string())];
        add_missing(&mut env, bundle_env(Path::new("/etc/ssl/cert.pem")));
        assert_eq!(
            env.iter().filter(|(k, _)| k == "PIP_CERT").count(),
            1,
            "{env:?}"
        );
        assert!(env.contains(&("PIP_CERT".into(), "/mine.pem".into())));
        assert!(env.contains(&("SSL_CERT_FILE".into(), "/etc/ssl/cert.pem".into())));
    }
}
