//! Options shared by the commands that move images: registry access
//! (TLS, credentials, retries), platform selection and output.

use anyhow::{Context, Result};
use shipyard_image::oci::image::Platform;
use shipyard_image::reference::Reference;
use shipyard_image::registry::auth::{parse_creds, ExplicitCreds};
use shipyard_image::registry::pull::Selection;
use shipyard_image::transport::{self, Options, PullPolicy, Report};
use std::path::PathBuf;
use std::time::Duration;

/// How to reach registries.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Require HTTPS and verify certificates. With false, self-signed
    /// certificates are accepted and plain HTTP is used when the registry
    /// does not speak TLS (like skopeo's --tls-verify=false).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub tls_verify: bool,
    /// A certs.d directory: *.crt files are trusted CAs, a *.cert/*.key
    /// pair is a client certificate.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// USER[:PASSWORD] for the registry the command names (push's
    /// destination, pull's source, build's --push), instead of the auth
    /// files. Other registries it touches use the auth files.
    #[arg(
        long,
        value_name = "USER:PASS",
        env = "SHIPYARD_CREDS",
        hide_env_values = true
    )]
    pub creds: Option<String>,
    /// The auth file to read credentials from (podman's auth.json format),
    /// instead of REGISTRY_AUTH_FILE and podman's and docker's files.
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Retries for connection errors, 5xx and 429 (with backoff).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub retry: u32,
    /// Seconds a request may wait for the registry before it is retried.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
}

/// The registry a reference names, if it names one.
pub fn registry_of(r: &Reference) -> Option<&str> {
    match r {
        Reference::Registry(rr) => Some(&rr.registry),
        _ => None,
    }
}

impl RegistryArgs {
    /// The registry options. `--creds` are bound to `target`, the one
    /// registry the command line names; every other registry uses the
    /// auth files.
    pub fn options(&self, target: Option<&str>) -> Result<shipyard_image::registry::Options> {
        let creds = match (self.creds.as_deref(), target) {
            (None, _) => None,
            (Some(c), Some(t)) => Some(ExplicitCreds {
                registry: t.to_string(),
                secret: parse_creds(c)?,
            }),
            (Some(c), None) => {
                parse_creds(c)?;
                tracing::warn!(
                    "--creds ignored: they are sent only to the registry the command names (the destination of push, the source of pull), and it names none"
                );
                None
            }
        };
        Ok(shipyard_image::registry::Options {
            tls_verify: self.tls_verify,
            cert_dir: self.cert_dir.clone(),
            creds,
            authfile: self.authfile.clone(),
            retries: self.retry,
            timeout: Duration::from_secs(self.timeout.max(1)),
        })
    }
}

impl RegistryArgs {
    /// The transport options of a command that reads `source` (inspect,
    /// manifest, unpack, diff, pod): these registry options, `--creds`
    /// bound to `source`'s registry, cached images used when complete.
    pub fn read_options(&self, source: &Reference) -> Result<Options> {
        Ok(Options {
            registry: self.options(registry_of(source))?,
            pull: PullPolicy::Missing,
            ..Options::default()
        })
    }
}

/// Everything `pull`, `push`, `import` and `export` share.
#[derive(Debug, Clone, clap::Args)]
pub struct CopyArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// The platform to take from a multi-platform index (OS/ARCH[/VARIANT]).
    #[arg(long, value_name = "OS/ARCH", default_value_t = Platform::host().to_string())]
    pub platform: String,
    /// Blobs transferred at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub jobs: usize,
    /// Print a JSON summary (digest, blobs moved, bytes) on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write the resulting manifest digest to FILE.
    #[arg(long, value_name = "FILE")]
    pub digestfile: Option<PathBuf>,
}

/// Parses a size like 64M, 512k, 1G or a plain byte count.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_lowercase();
            let mul = match unit.trim_end_matches("ib").trim_end_matches('b') {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                _ => return Err(format!("{s:?}: unknown unit; use K, M or G")),
            };
            (&t[..i], mul)
        }
        None => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: not a size (e.g. 64M)"))?;
    let v = n
        .checked_mul(mul)
        .ok_or_else(|| format!("{s:?}: too large"))?;
    if v == 0 {
        return Err(format!("{s:?}: must be more than 0"));
    }
    Ok(v)
}

impl CopyArgs {
    /// The transport options; `whole_index` copies every platform.
    /// `--creds` go to `target`'s registry only.
    pub fn options(
        &self,
        target: &Reference,
        quiet: bool,
        pull: PullPolicy,
        whole_index: bool,
    ) -> Result<Options> {
        let mut o = Options {
            registry: self.registry.options(registry_of(target))?,
            pull,
            selection: if whole_index {
                Selection::All
            } else {
                Selection::Platform(Platform::parse(&self.platform).map_err(anyhow::Error::msg)?)
            },
            progress: super::progress::for_stderr(quiet || self.json),
            ..Options::default()
        };
        o.push.jobs = self.jobs.max(1);
        o.push.retries = self.registry.retry;
        Ok(o)
    }

    /// Copies and reports: the digest on stdout (or the JSON summary),
    /// and in --digestfile.
    pub fn run(
        &self,
        src: &Reference,
        dst: &Reference,
        extra_tags: &[String],
        o: &Options,
    ) -> Result<Report> {
        let report = transport::copy(src, dst, extra_tags, o)?;
        self.finish(&report)?;
        Ok(report)
    }

    pub fn finish(&self, report: &Report) -> Result<()> {
        if let Some(f) = &self.digestfile {
            std::fs::write(f, format!("{}\n", report.digest))
                .with_context(|| format!("writing --digestfile {}", f.display()))?;
        }
        if self.json {
            println!("{}", serde_json::to_string(report)?);
        } else {
            println!("{}", report.digest);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("64M"), Ok(64 << 20));
        assert_eq!(super::parse_size("512k"), Ok(512 << 10));
        assert_eq!(super::parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(super::parse_size("100"), Ok(100));
        assert!(super::parse_size("0").is_err());
        assert!(super::parse_size("5X").is_err());
    }
}
