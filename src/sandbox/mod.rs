//! Rootless sandboxes for build steps: user, mount, pid, uts, ipc and
//! (unless `network = "host"`) network namespaces; an overlay (or plain
//! directory) root; `/proc`, a minimal `/dev`, a tmpfs `/tmp`; bind-mounted
//! sources; and a process tree that dies with the step.
//!
//! The parent ([`run`]) re-executes the shipyard binary as `shipyard
//! __sandbox` (see [`helper`]) so that namespaces are made by a fresh,
//! single-threaded process. It streams the step's output line by line with
//! the step's name as prefix, saves it to a log, keeps its tail for error
//! messages, and enforces the timeout by sending the helper SIGTERM: the
//! helper then kills PID 1 of the step, and when PID 1 dies the kernel
//! kills every other process of its PID namespace. The helper does the
//! same on Ctrl-C and when shipyard dies (its parent-death signal), and
//! PID 1 dies with the helper. A step never gets the caller's terminal
//! (see `pty`), and is confined as a container is (see `confine`).

pub mod ca;
// Capability and no_new_privs prctls, capset: raw system calls.
#[allow(unsafe_code)]
mod confine;
// fork in the single-threaded helper, prctl, ioctl(TIOCSCTTY), poll.
#[allow(unsafe_code)]
pub mod helper;
// openat2 and the new mount API, which nix does not wrap.
#[allow(unsafe_code)]
mod inroot;
pub mod isolation;
pub mod job;
// fork and ioctl(TIOCSCTTY) for the steps run without namespaces.
#[allow(unsafe_code)]
mod plain;
// fork for a probe child.
#[allow(unsafe_code)]
mod probe;
// openpty, termios and the SIGWINCH handler.
#[allow(unsafe_code)]
mod pty;

use job::{StepSpec, SubIds};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Set (to anything) to make builders copy their base instead of mounting
/// an overlay, as they do where overlay is not allowed.
pub const NO_OVERLAY_ENV: &str = "SHIPYARD_NO_OVERLAY";
/// Left in an overlay builder's work dir when it runs on a copy.
pub const COPY_MARKER: &str = "shipyard-copied";

/// Environment variable carrying the step spec to the helper.
pub const SPEC_ENV: &str = "SHIPYARD_SANDBOX_SPEC";
/// Environment variable carrying shipyard's pid to the helper, which
/// refuses to start a step for a parent that is already gone.
pub const PARENT_ENV: &str = "SHIPYARD_SANDBOX_PARENT";
/// Set for the helper when its standard streams are a pseudo-terminal
/// made for the step, which PID 1 then makes its controlling terminal.
pub const TTY_ENV: &str = "SHIPYARD_SANDBOX_TTY";
/// How long the helper gets to take a step down before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// Lines of output kept for error messages.
pub const TAIL_LINES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot start the sandbox helper {path}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{name}: timed out after {secs}s; the step and all its processes were killed")]
    Timeout { name: String, secs: u64 },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("serializing the step")]
    Json(#[from] serde_json::Error),
}

/// How a step is run and reported.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Prefix of every output line (the rule's name).
    pub name: String,
    /// Also append the output here.
    pub log: Option<PathBuf>,
    pub timeout: Option<Duration>,
    /// For `shipyard shell`: stdin is passed on, the output is copied as
    /// is (no prefix, no log), and on a terminal the step gets a
    /// pseudo-terminal of its own.
    pub interactive: bool,
    /// Print the step's output (prefixed) on stderr while it runs.
    pub echo: bool,
}

/// How a step ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The command's exit code (128+N for signal N; 125: sandbox failed).
    pub code: i32,
    /// The last [`TAIL_LINES`] lines of output.
    pub tail: Vec<String>,
}

/// The binary to re-execute as the helper: this executable, unless
/// `SHIPYARD_BIN` names another (a library user's program is not shipyard).
pub fn helper_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SHIPYARD_BIN") {
        return PathBuf::from(p);
    }
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("shipyard"))
}

/// The caller's subordinate id ranges, if it has both and the setuid
/// helpers are installed. Root needs none.
pub fn detect_subids() -> Option<SubIds> {
    if nix::unistd::geteuid().is_root() {
        return None;
    }
    let have = |tool: &str| {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false)
    };
    if !have("newuidmap") || !have("newgidmap") {
        return None;
    }
    let uid = nix::unistd::getuid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name);
    let find = |file: &str| -> Option<(u32, u32)> {
        let text = std::fs::read_to_string(file).ok()?;
        text.lines().find_map(|l| {
            let mut f = l.split(':');
            let who = f.next()?;
            let start = f.next()?.trim().parse().ok()?;
            let count = f.next()?.trim().parse().ok()?;
            (Some(who) == name.as_deref() || who == uid.to_string()).then_some((start, count))
        })
    };
    let (us, uc) = find("/etc/subuid")?;
    let (gs, gc) = find("/etc/subgid")?;
    let count = uc.min(gc);
    (count > 0).then_some(SubIds {
        uid_start: us,
        gid_start: gs,
        count,
    })
}

/// Why no isolation level could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    #[error(transparent)]
    NoLevel(#[from] isolation::NoIsolation),
    #[error("probing the isolation levels: {0}")]
    Probe(String),
}

/// Finds what this machine allows (the helper's probe), and chooses the
/// level a build's steps run at (see [`isolation::decide`]).
pub fn choose_isolation(
    requested: isolation::Isolation,
    subids: Option<SubIds>,
    host_builder: bool,
) -> Result<isolation::Confinement, IsolationError> {
    let report = if requested == isolation::Isolation::None {
        // Nothing to probe: the container is the builder.
        isolation::ProbeReport {
            userns: Err("not tried".into()),
            chroot: None,
        }
    } else {
        let bin = helper_binary();
        let spec = StepSpec {
            root: job::Root::Dir(PathBuf::from("/")),
            binds: Vec::new(),
            network: job::Network::None,
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            argv: Vec::new(),
            hostname: "shipyard".into(),
            user: (0, 0),
            subids,
            action: job::Action::Probe,
            confinement: isolation::Confinement::full(),
            secrets: Vec::new(),
            ca_bundle: None,
            tmpfs: Vec::new(),
        };
        let json =
            serde_json::to_string(&spec).map_err(|e| IsolationError::Probe(e.to_string()))?;
        let out = Command::new(&bin)
            .arg("__sandbox")
            .env(SPEC_ENV, json)
            .env(PARENT_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| IsolationError::Probe(format!("{}: {e}", bin.display())))?;
        serde_json::from_slice(&out.stdout).map_err(|_| {
            IsolationError::Probe(format!(
                "the probe failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        })?
    };
    let host = isolation::Host {
        in_container: isolation::in_container(),
        host_builder,
    };
    let c = isolation::decide(requested, &report, host)?;
    tracing::debug!("isolation probe: {report:?}");
    Ok(c)
}

/// Runs one step in a sandbox and waits for it.
pub fn run(spec: &StepSpec, opts: &RunOptions) -> Result<Outcome, SandboxError> {
    let bin = helper_binary();
    let mut cmd = Command::new(&bin);
    cmd.arg("__sandbox")
        .env(SPEC_ENV, serde_json::to_string(spec)?)
        .env(PARENT_ENV, std::process::id().to_string());
    // A step never gets the caller's terminal (see `pty`): an interactive
    // one on a terminal gets a pseudo-terminal of its own, otherwise its
    // output goes through pipes.
    let tty = if opts.interactive && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        Some(pty::Pty::open()?)
    } else {
        None
    };
    match &tty {
        Some(t) => {
            cmd.stdin(t.slave()?)
                .stdout(t.slave()?)
                .stderr(t.slave()?)
                .env(TTY_ENV, "1");
        }
        None => {
            let stdin = if opts.interactive {
                Stdio::inherit()
            } else {
                Stdio::null()
            };
            cmd.stdin(stdin)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
    }
    let mut child = cmd.spawn().map_err(|source| SandboxError::Spawn {
        path: bin.clone(),
        source,
    })?;
    // The command holds our copies of the slave end: only the step's may
    // stay open, or the copy would never see the step's end.
    drop(cmd);
    let proxy = match tty {
        Some(t) => Some(t.start()?),
        None => None,
    };
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let log = match &opts.log {
        Some(p) => Some(Arc::new(Mutex::new(std::fs::File::create(p)?))),
        None => None,
    };
    let mut readers = Vec::new();
    for (index, stream) in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .enumerate()
    {
        let Some(stream) = stream else { continue };
        if opts.interactive {
            readers.push(std::thread::spawn(move || pass_through(stream, index == 0)));
            continue;
        }
        let tail = Arc::clone(&tail);
        let log = log.clone();
        let name = opts.name.clone();
        let echo = opts.echo;
        readers.push(std::thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut buf = Vec::new();
            while let Ok(n) = r.read_until(b'\n', &mut buf) {
                if n == 0 {
                    break;
                }
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches('\n')
                    .to_string();
                buf.clear();
                if echo {
                    eprintln!("{name} | {line}");
                }
                if let Some(l) = &log {
                    if let Ok(mut f) = l.lock() {
                        let _ = writeln!(f, "{line}");
                    }
                }
                if let Ok(mut t) = tail.lock() {
                    if t.len() == TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            }
        }));
    }
    let deadline = opts.timeout.map(|t| Instant::now() + t);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            stop(&mut child);
            for r in readers {
                let _ = r.join();
            }
            if let Some(p) = proxy {
                p.finish();
            }
            return Err(SandboxError::Timeout {
                name: opts.name.clone(),
                secs: opts.timeout.map_or(0, |t| t.as_secs()),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for r in readers {
        let _ = r.join();
    }
    if let Some(p) = proxy {
        p.finish();
    }
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    let tail = tail
        .lock()
        .map(|t| t.iter().cloned().collect())
        .unwrap_or_default();
    Ok(Outcome { code, tail })
}

/// Copies an interactive step's output, as it comes, to ours.
fn pass_through(mut from: Box<dyn std::io::Read + Send>, stdout: bool) {
    let mut buf = [0u8; 8192];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let written = if stdout {
            let mut o = std::io::stdout().lock();
            o.write_all(&buf[..n]).and_then(|_| o.flush())
        } else {
            std::io::stderr().write_all(&buf[..n])
        };
        if written.is_err() {
            return;
        }
    }
}

/// Stops a running helper: SIGTERM makes it kill PID 1 of the step, which
/// takes every process of the step's PID namespace with it, and exit once
/// they are all gone. Should it not (it is stuck or was tampered with), it
/// is killed, and PID 1 follows it through its parent-death signal.
fn stop(child: &mut std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let give_up = Instant::now() + STOP_GRACE;
    while Instant::now() < give_up {
        match child.try_wait() {
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            _ => return,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The host directories a `host` builder sees: the CI runner's toolchain.
pub fn host_dirs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = ["/usr", "/bin", "/sbin", "/etc"]
        .iter()
        .map(PathBuf::from)
        .collect();
    if let Ok(rd) = std::fs::read_dir("/") {
        let mut libs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("lib"))
            })
            .collect();
        libs.sort();
        v.extend(libs);
    }
    v.retain(|p| Path::new(p).exists());
    v
}

/// Removes a builder state directory. Directories of our own that a step
/// or overlayfs left unreadable (overlay's `work/work` is mode 000) are
/// opened up first. Files a step gave to other ids (through a subordinate
/// range) are not the caller's to delete: if a plain removal still fails,
/// they are deleted from inside a user namespace where those ids are
/// mapped, from a sandbox whose own state lives elsewhere (never inside the
/// tree being deleted).
pub fn remove_tree(path: &Path) -> Result<(), SandboxError> {
    open_up_own_dirs(path);
    if std::fs::remove_dir_all(path).is_ok() || !path.exists() {
        return Ok(());
    }
    let elsewhere = tempfile::Builder::new()
        .prefix("shipyard-cleanup-")
        .tempdir()?;
    let spec = StepSpec {
        root: job::Root::Host { dirs: host_dirs(), state: elsewhere.path().to_path_buf() },
        binds: vec![job::Bind { source: path.to_path_buf(), target: PathBuf::from("/cleanup"), writable: true }],
        network: job::Network::None,
        env: Vec::new(),
        cwd: PathBuf::from("/"),
        argv: vec![
            "sh".into(),
            "-c".into(),
            "find /cleanup -xdev -type d -exec chmod u+rwx {} + 2>/dev/null; find /cleanup -xdev -mindepth 1 -delete 2>/dev/null; true".into(),
        ],
        hostname: "shipyard".into(),
        user: (0, 0),
        subids: detect_subids(),
        action: job::Action::Exec,
        confinement: isolation::Confinement::full(),
        secrets: Vec::new(),
        ca_bundle: None,
        tmpfs: Vec::new(),
    };
    run(
        &spec,
        &RunOptions {
            name: "cleanup".into(),
            ..Default::default()
        },
    )?;
    std::fs::remove_dir_all(path).or_else(|e| if path.exists() { Err(e) } else { Ok(()) })?;
    Ok(())
}

/// Gives the caller rwx on every directory under `path` it owns (best
/// effort, never following symlinks).
fn open_up_own_dirs(path: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let me = nix::unistd::geteuid().as_raw();
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&d) else {
            continue;
        };
        if !md.is_dir() || md.uid() != me {
            continue;
        }
        if md.mode() & 0o700 != 0o700 {
            let _ = std::fs::set_permissions(
                &d,
                std::fs::Permissions::from_mode((md.mode() & 0o7777) | 0o700),
            );
        }
        if let Ok(rd) = std::fs::read_dir(&d) {
            stack.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
        }
    }
}
