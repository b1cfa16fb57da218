use super::transfer::RegistryArgs;
use anyhow::{bail, Context, Result};
use shipyard_image::registry::auth::{self, ExplicitCreds, Secret};
use shipyard_image::registry::client::{Client, Scope};
use std::io::Read;

/// Log in to a registry: check the credentials, then store them.
///
/// The credentials are verified against the registry (basic or token
/// auth) before they are written to the auth file podman uses:
/// REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json, else
/// ~/.config/containers/auth.json (mode 0600). Pass the password on stdin
/// with --password-stdin so it stays out of the process list and shell
/// history.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The registry: HOST[:PORT].
    pub registry: String,
    #[arg(short, long, value_name = "USER")]
    pub username: String,
    /// Read the password from stdin (one line).
    #[arg(long)]
    pub password_stdin: bool,
    /// The password (visible to other users of the machine; prefer
    /// --password-stdin).
    #[arg(
        short,
        long,
        value_name = "PASSWORD",
        conflicts_with = "password_stdin"
    )]
    pub password: Option<String>,
    #[command(flatten)]
    pub registry_args: RegistryArgs,
}

/// Log out of a registry: remove its credentials from the auth file.
#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    /// The registry: HOST[:PORT].
    pub registry: String,
    /// The auth file to remove the credentials from (default: the one
    /// `login` writes).
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<std::path::PathBuf>,
}

fn host_of(s: &str) -> Result<String> {
    let h = s
        .trim_start_matches("docker://")
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    if h.is_empty() || h.contains('/') {
        bail!("{s:?}: name a registry as HOST[:PORT], e.g. quay.io or 127.0.0.1:5000");
    }
    Ok(h.to_string())
}

pub fn run(a: Args, quiet: bool) -> Result<()> {
    let host = host_of(&a.registry)?;
    let password = match (&a.password, a.password_stdin) {
        (Some(p), _) => p.clone(),
        (None, true) => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the password from stdin")?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => bail!("give the password with --password-stdin (or --password)"),
    };
    let mut opts = a.registry_args.options(Some(&host))?;
    opts.creds = Some(ExplicitCreds {
        registry: host.clone(),
        secret: Secret::Basic {
            user: a.username.clone(),
            password: password.clone(),
        },
    });
    let api = if host == "docker.io" {
        "registry-1.docker.io"
    } else {
        &host
    };
    let client = Client::new(&host, api, &opts)?;
    let url = client.url("/v2/");
    let r = client.send("GET", &url, &Scope::pull(""), &|h| Ok(h.get(&url)))?;
    if !r.status().is_success() {
        return Err(client.status_error("GET", &url, r).into());
    }
    let path = auth::store(
        &host,
        &a.username,
        &password,
        a.registry_args.authfile.as_deref(),
    )?;
    if !quiet {
        eprintln!(
            "Login succeeded; credentials for {host} stored in {}",
            path.display()
        );
    }
    Ok(())
}

pub fn run_logout(a: LogoutArgs, quiet: bool) -> Result<()> {
    let host = host_of(&a.registry)?;
    let (path, removed) = auth::remove(&host, a.authfile.as_deref())?;
    if !removed {
        bail!("not logged in to {host} (no entry in {})", path.display());
    }
    if !quiet {
        eprintln!(
            "Removed login credentials for {host} from {}",
            path.display()
        );
    }
    Ok(())
}
