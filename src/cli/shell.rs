use crate::sandbox::job::{Bind, Network, StepSpec};
use crate::sandbox::{detect_subids, run, RunOptions};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::Duration;

/// Run a command, or an interactive shell, in a rootless sandbox.
///
/// The sandbox has its own user, mount, pid, uts, ipc and (with --network
/// none, the default) network namespaces, with only loopback. Its root is
/// the builder base with a writable overlay on top: `host` (this machine's
/// /usr, /bin, /sbin, /lib*, /etc, read-only underneath), `rootfs:DIR`,
/// `oci:DIR[:TAG]` (unpacked once into the cache and shared), or `scratch`.
/// /proc, a minimal /dev and a tmpfs /tmp are mounted. The command never
/// gets your terminal: on a terminal it runs on a pseudo-terminal of its
/// own that shipyard relays (yours is in raw mode meanwhile), otherwise its
/// output is relayed through pipes. When the command
/// exits, every process it started dies and every mount goes away; without
/// --keep, so do its changes. The exit code is the command's.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A shipyard.toml (or the directory holding it): open its builder,
    /// with its base, sources, network and env, for debugging a build.
    pub spec: Option<PathBuf>,
    /// The builder base: host (default), rootfs:DIR, oci:DIR[:TAG] or
    /// scratch. Overrides the spec's.
    #[arg(long)]
    pub from: Option<String>,
    /// With a spec of several builders: the one to open (default: the
    /// first). Its base, sources, network and CA setting are the shell's
    /// (a builder made from another's state opens at its first base).
    #[arg(long, value_name = "NAME")]
    pub builder: Option<String>,
    /// Bind-mount a host path: SRC:DST, read-only unless DST ends in :rw.
    #[arg(long, value_name = "SRC:DST[:rw]")]
    pub bind: Vec<String>,
    /// id=NAME,src=FILE or id=NAME,env=VARIABLE: a secret the shell sees
    /// at /run/secrets/NAME (see `shipyard build --help`). Repeatable.
    #[arg(long = "secret", value_name = "id=NAME,src=FILE|env=VAR")]
    pub secrets: Vec<String>,
    /// How the shell is isolated: auto, userns, chroot or none (see
    /// `shipyard build --help`).
    #[arg(long, value_name = "LEVEL", env = "SHIPYARD_ISOLATION", default_value = "auto",
          value_parser = |s: &str| s.parse::<crate::sandbox::isolation::Isolation>())]
    pub isolation: crate::sandbox::isolation::Isolation,
    /// Network: none (loopback only; the default) or host.
    #[arg(long, value_enum)]
    pub network: Option<NetworkArg>,
    /// Working directory inside.
    #[arg(long, default_value = "/")]
    pub workdir: PathBuf,
    /// Environment variables, KEY=VALUE.
    #[arg(long, short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Run the command as this user and group inside (numbers; default 0,
    /// the sandbox's root), as a rule's `user` does.
    #[arg(long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Kill the command and everything it started after SECS seconds.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Keep the changes the command made in DIR (its overlay upper dir is
    /// DIR/upper; for `host`, DIR/root).
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// The command (default: /bin/sh).
    #[arg(last = true)]
    pub command: Vec<String>,
}

pub fn run_cmd(a: Args) -> Result<()> {
    let state: PathBuf = match &a.keep {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => tempfile::Builder::new()
            .prefix("shipyard-shell-")
            .tempdir()?
            .keep(),
    };
    let plan = match &a.spec {
        Some(p) => {
            let file = if p.is_dir() {
                p.join("shipyard.toml")
            } else {
                p.clone()
            };
            Some(crate::project::load(&file, &[])?)
        }
        None => None,
    };
    let which = match (&plan, &a.builder) {
        (Some(p), Some(name)) => p
            .builders
            .iter()
            .position(|b| &b.name == name)
            .with_context(|| {
                let names: Vec<&str> = p.builders.iter().map(|b| b.name.as_str()).collect();
                format!(
                    "--builder {name}: no such builder in the spec (builders: {})",
                    names.join(", ")
                )
            })?,
        (None, Some(name)) => anyhow::bail!("--builder {name}: give the spec it is in"),
        _ => 0,
    };
    let from = a
        .from
        .clone()
        .or_else(|| plan.as_ref().map(|p| p.root_from(which).to_string()))
        .unwrap_or_else(|| "host".into());
    let network = a
        .network
        .map(Network::from)
        .or(plan.as_ref().map(|p| p.builders[which].network))
        .unwrap_or_default();
    // Held for the session, like a build: `cache prune` waits instead of
    // removing the unpacked base under the shell.
    let _cache = crate::build::stepcache::StepCache::open().ok();
    let topts = shipyard_image::transport::Options::default();
    let (root, _) = crate::build::base::base_root(&from, &state, &topts)?;
    let mut binds: Vec<Bind> = plan
        .as_ref()
        .map(|p| {
            p.builders[which]
                .sources
                .iter()
                .map(|s| Bind {
                    source: s.host.clone(),
                    target: s.target.clone(),
                    writable: s.writable,
                })
                .collect()
        })
        .unwrap_or_default();
    for b in &a.bind {
        binds.push(parse_bind(b)?);
    }
    let mut env = vec![
        ("HOME".to_string(), "/root".to_string()),
        (
            "TERM".to_string(),
            std::env::var("TERM").unwrap_or("xterm".into()),
        ),
    ];
    for kv in &a.env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--env {kv}: expected KEY=VALUE"))?;
        env.push((k.to_string(), v.to_string()));
    }
    crate::sandbox::ca::add_missing(&mut env, crate::sandbox::ca::proxy_env());
    let user = match &a.user {
        Some(u) => crate::project::parse_owner(u)
            .with_context(|| format!("--user {u}: expected UID or UID:GID (numbers)"))?,
        None => (0, 0),
    };
    let argv = if a.command.is_empty() {
        vec!["/bin/sh".to_string()]
    } else {
        a.command.clone()
    };
    let secrets = super::build::Secrets::parse(&a.secrets)?;
    let subids = detect_subids();
    let confinement = crate::sandbox::choose_isolation(a.isolation, subids, from == "host")?;
    eprintln!("==> isolation: {}", confinement.summary());
    if let Some(why) = confinement.unusable_builder(&from) {
        anyhow::bail!(why);
    }
    let subids = subids.filter(|_| confinement.map == crate::sandbox::isolation::IdMap::Range);
    let spec = StepSpec {
        root,
        binds,
        network,
        env,
        cwd: a.workdir.clone(),
        argv,
        hostname: "shipyard".into(),
        user,
        subids,
        action: crate::sandbox::job::Action::Exec,
        confinement,
        secrets: secrets.secrets.clone(),
        ca_bundle: plan
            .as_ref()
            .filter(|p| p.builders[which].host_ca)
            .and_then(|_| crate::sandbox::ca::host_bundle()),
        tmpfs: Vec::new(),
    };
    let opts = RunOptions {
        name: "shell".into(),
        timeout: a.timeout.map(Duration::from_secs),
        interactive: true,
        ..Default::default()
    };
    let out = run(&spec, &opts);
    match &a.keep {
        Some(d) => eprintln!("changes kept in {}", d.display()),
        None => {
            if let Err(e) = crate::sandbox::remove_tree(&state) {
                tracing::warn!(
                    "could not remove {}: {}",
                    state.display(),
                    shipyard_image::error::chain_text(&e)
                );
            }
        }
    }
    let out = out?;
    if out.code != 0 {
        std::process::exit(out.code);
    }
    Ok(())
}

fn parse_bind(s: &str) -> Result<Bind> {
    let (rest, writable) = match s.strip_suffix(":rw") {
        Some(r) => (r, true),
        None => (s.strip_suffix(":ro").unwrap_or(s), false),
    };
    let (src, dst) = rest
        .split_once(':')
        .with_context(|| format!("--bind {s}: expected SRC:DST[:rw]"))?;
    let source =
        std::fs::canonicalize(src).with_context(|| format!("--bind {s}: {src} does not exist"))?;
    if let Err(why) = Bind::check_target(dst) {
        bail!("--bind {s}: {why}");
    }
    Ok(Bind {
        source,
        target: PathBuf::from(dst),
        writable,
    })
}

/// `--network`'s values (the sandbox's type stays free of clap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkArg {
    /// A new network namespace with only loopback.
    None,
    /// The host's network (and its /etc/resolv.conf and /etc/hosts).
    Host,
}

impl From<NetworkArg> for Network {
    fn from(a: NetworkArg) -> Network {
        match a {
            NetworkArg::None => Network::None,
            NetworkArg::Host => Network::Host,
        }
    }
}
