use crate::sandbox::spec::{Bind, Network, Root, StepSpec};
use crate::sandbox::{detect_subids, host_dirs, run, RunOptions};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Run a command, or an interactive shell, in a rootless sandbox.
///
/// The sandbox has its own user, mount, pid, uts, ipc and (with --network
/// none, the default) network namespaces, with only loopback. Its root is
/// the builder base with a writable overlay on top: `host` (this machine's
/// /usr, /bin, /sbin, /lib*, /etc, read-only underneath), `rootfs:DIR`,
/// `oci:DIR[:TAG]` (unpacked once into the cache and shared), or `scratch`.
/// /proc, a minimal /dev and a tmpfs /tmp are mounted. When the command
/// exits, every process it started dies and every mount goes away; without
/// --keep, so do its changes. The exit code is the command's.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The builder base: host, rootfs:DIR, oci:DIR[:TAG] or scratch.
    #[arg(long, default_value = "host")]
    pub from: String,
    /// Bind-mount a host path: SRC:DST, read-only unless DST ends in :rw.
    #[arg(long, value_name = "SRC:DST[:rw]")]
    pub bind: Vec<String>,
    /// Network: none (loopback only) or host.
    #[arg(long, value_enum, default_value_t = Network::None)]
    pub network: Network,
    /// Working directory inside.
    #[arg(long, default_value = "/")]
    pub workdir: PathBuf,
    /// Environment variables, KEY=VALUE.
    #[arg(long, short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
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
    let state_tmp;
    let state: PathBuf = match &a.keep {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            state_tmp = tempfile::Builder::new()
                .prefix("shipyard-shell-")
                .tempdir()?;
            state_tmp.path().to_path_buf()
        }
    };
    let root = base_root(&a.from, &state)?;
    let mut binds = Vec::new();
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
    let argv = if a.command.is_empty() {
        vec!["/bin/sh".to_string()]
    } else {
        a.command.clone()
    };
    let spec = StepSpec {
        root,
        binds,
        network: a.network,
        env,
        cwd: a.workdir.clone(),
        argv,
        hostname: "shipyard".into(),
        user: (0, 0),
        subids: detect_subids(),
    };
    let opts = RunOptions {
        name: "shell".into(),
        timeout: a.timeout.map(Duration::from_secs),
        interactive: true,
        ..Default::default()
    };
    let out = run(&spec, &opts)?;
    if let Some(d) = &a.keep {
        eprintln!("changes kept in {}", d.display());
    }
    if out.code != 0 {
        // Let the state dir be cleaned before exiting with the code.
        drop(state);
        std::process::exit(out.code);
    }
    Ok(())
}

/// The root of a builder base, with the state dirs it needs.
pub(crate) fn base_root(from: &str, state: &Path) -> Result<Root> {
    let overlay = |lower: PathBuf| -> Result<Root> {
        let (upper, work, merged) = (
            state.join("upper"),
            state.join("work"),
            state.join("merged"),
        );
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d)?;
        }
        Ok(Root::Overlay {
            lowers: vec![lower],
            upper,
            work,
            merged,
        })
    };
    if from == "host" {
        return Ok(Root::Host {
            dirs: host_dirs(),
            state: state.to_path_buf(),
        });
    }
    if from == "scratch" {
        let r = state.join("upper");
        std::fs::create_dir_all(&r)?;
        return Ok(Root::Dir(r));
    }
    if let Some(dir) = from.strip_prefix("rootfs:") {
        let p = std::fs::canonicalize(dir)
            .with_context(|| format!("builder base {from}: no such directory"))?;
        if !p.is_dir() {
            bail!("builder base {from}: not a directory");
        }
        return overlay(p);
    }
    if from.starts_with("oci:") {
        return overlay(cached_unpack(from)?);
    }
    bail!("builder base {from:?}: expected host, rootfs:DIR, oci:DIR[:TAG] or scratch")
}

/// Unpacks an image once into the cache, keyed by its layer chain (the
/// diff_ids), and returns the tree. Later builds reuse it read-only.
pub(crate) fn cached_unpack(reference: &str) -> Result<PathBuf> {
    let (layout, image) = super::open_image(reference)?;
    let chain: Vec<String> = image.config.rootfs().diff_ids().clone();
    let key = crate::oci::digest::Digest::of(chain.join("\n").as_bytes());
    let dir = cache_dir()?.join("rootfs").join(key.hex());
    if !dir.is_dir() {
        std::fs::create_dir_all(dir.parent().unwrap_or(Path::new(".")))?;
        match crate::layer::extract::unpack(&layout, &image, &dir) {
            Ok(_) => {}
            // Another build unpacked it meanwhile: use theirs.
            Err(_) if dir.is_dir() => {}
            Err(e) => return Err(e).with_context(|| format!("unpacking builder base {reference}")),
        }
    }
    Ok(dir)
}

/// `$XDG_CACHE_HOME/shipyard`, else `~/.cache/shipyard`.
pub(crate) fn cache_dir() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("shipyard"));
    }
    let home = std::env::var_os("HOME").context("neither XDG_CACHE_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache").join("shipyard"))
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
    if !dst.starts_with('/') {
        bail!("--bind {s}: the target must be an absolute path");
    }
    Ok(Bind {
        source,
        target: PathBuf::from(dst),
        writable,
    })
}
