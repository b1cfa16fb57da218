//! Build steps written by an attacker: each tries to escape or outlive the
//! sandbox, and each test asserts what the user would notice if it could.
//! scripts/test runs these as root, as a user with a subuid range and as
//! one without; where a privilege level changes the outcome, the test says
//! which outcome belongs to which.

use crate::common::steps::*;
use crate::common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Whether ids other than 0 exist in the sandbox (root, or a subuid range).
fn has_range() -> bool {
    is_root() || shipyard::sandbox::detect_subids().is_some()
}

/// `shipyard build DIR` into a layout and cache of its own, not waited for.
fn spawn_build(dir: &Path) -> std::process::Child {
    shipyard()
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .arg("build")
        .arg(dir)
        .arg("--output")
        .arg(format!("oci:{}", dir.join("layout").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Without an id range there is no uid 1000 to become, and the step says
/// so instead of running as root.
fn assert_no_uid_1000(stderr: &str) {
    assert!(
        stderr.contains("switching to gid 1000"),
        "expected the sandbox to refuse uid 1000:\n{stderr}"
    );
}

#[test]
fn a_non_root_step_past_its_timeout_is_killed_with_all_its_processes() {
    let sl = unique_sleep();
    let t = tempfile::tempdir().unwrap();
    let spec = format!(
        "[build.slow]\nuser = \"1000\"\ntimeout = 2\nrun = \"echo step-started; {sl} & {sl}\"\n"
    );
    write(&t.path().join("shipyard.toml"), spec.as_bytes(), 0o644);
    let out = output_within(
        spawn_build(t.path()),
        Duration::from_secs(90),
        "a build whose only rule times out after 2 s",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    if !has_range() {
        return assert_no_uid_1000(&err);
    }
    assert!(err.contains("step-started"), "the step did not run:\n{err}");
    assert!(
        err.contains("build.slow: timed out after 2s"),
        "not reported as a timeout:\n{err}"
    );
    wait_for("the step's processes to die", || !running(&sl));
}

#[test]
fn sigkill_of_shipyard_kills_a_non_root_step() {
    let sl = unique_sleep();
    let mut child = shipyard()
        .args(["shell", "--user", "1000", "--", "sh", "-c"])
        .arg(format!("{sl} & {sl}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if !has_range() {
        let out = output_within(child, Duration::from_secs(60), "shipyard shell");
        return assert_no_uid_1000(&String::from_utf8_lossy(&out.stderr));
    }
    wait_for("the step to start", || running(&sl));
    child.kill().unwrap();
    let _ = child.wait();
    wait_for("the step's processes to die with shipyard", || {
        !running(&sl)
    });
}

#[test]
fn ctrl_c_kills_a_non_root_step_with_all_its_processes() {
    use std::os::unix::process::CommandExt;
    let sl = unique_sleep();
    let t = tempfile::tempdir().unwrap();
    let spec = format!("[build.slow]\nuser = \"1000\"\nrun = \"{sl} & {sl}\"\n");
    write(&t.path().join("shipyard.toml"), spec.as_bytes(), 0o644);
    // A process group of its own, as a shell gives a foreground job: the
    // terminal's Ctrl-C reaches every process of the group.
    let child = interruptible(&mut shipyard())
        .env("XDG_CACHE_HOME", t.path().join("cache"))
        .arg("build")
        .arg(t.path())
        .arg("--output")
        .arg(format!("oci:{}", t.path().join("layout").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    if !has_range() {
        let out = output_within(child, Duration::from_secs(60), "a build as uid 1000");
        return assert_no_uid_1000(&String::from_utf8_lossy(&out.stderr));
    }
    wait_for("the step to start", || running(&sl));
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = output_within(child, Duration::from_secs(60), "an interrupted build");
    assert!(!out.status.success(), "the interrupted build succeeded");
    wait_for("the step's processes to die with the build", || {
        !running(&sl)
    });
}

/// A step that tries TIOCSTI (typing into a terminal's input, as if the
/// user had) on /dev/tty and on each of its standard streams, and says
/// what happened to each.
const INJECT: &str = r#"
import fcntl, os, termios
for name in ["/dev/tty", 0, 1, 2]:
    try:
        fd = os.open(name, os.O_RDWR) if isinstance(name, str) else name
        for c in b"echo INJ" + b"ECTED\n":
            fcntl.ioctl(fd, termios.TIOCSTI, bytes([c]))
        print(f"tiocsti {name}: injected", flush=True)
    except OSError as e:
        print(f"tiocsti {name}: refused ({e.strerror})", flush=True)
"#;

/// Prints how many bytes wait to be read on its stdin, a terminal.
const PENDING: &str = r#"
import array, fcntl, termios
n = array.array("i", [0])
fcntl.ioctl(0, termios.FIONREAD, n)
print("PENDING", n[0])
"#;

/// Runs `command` with `sh` under `script`, so that it has a real
/// terminal (script's pseudo-terminal) as its controlling terminal, and
/// types `input` into that terminal. Returns the transcript and the exit
/// code of `command`.
fn under_a_terminal(command: &str, input: &[u8]) -> (String, Option<i32>) {
    use std::io::Write;
    let mut child = Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux");
    // Kept open until the end: script types an end-of-file into the
    // terminal when its input ends.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    let out = output_within(child, Duration::from_secs(120), command);
    drop(stdin);
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (text, out.status.code())
}

/// Single-quoted for sh.
fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

#[test]
fn a_build_step_cannot_type_into_the_callers_terminal() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    write(&d.join("x/inject.py"), INJECT.as_bytes(), 0o644);
    write(&d.join("pending.py"), PENDING.as_bytes(), 0o644);
    write(
        &d.join("shipyard.toml"),
        b"[builder]\nsources = { \"/x\" = \"x\" }\n[build.inject]\nrun = \"python3 /x/inject.py\"\n",
        0o644,
    );
    let cmd = format!(
        "XDG_CACHE_HOME={} {} build {} --output oci:{}; python3 {}",
        q(&d.join("cache")),
        q(&bin()),
        q(d),
        q(&d.join("layout")),
        q(&d.join("pending.py"))
    );
    let (text, _) = under_a_terminal(&cmd, b"");
    assert!(text.contains("tiocsti /dev/tty: refused"), "{text}");
    assert!(!text.contains(": injected"), "{text}");
    assert!(
        text.contains("PENDING 0"),
        "the step typed into the caller's terminal:\n{text}"
    );
}

#[test]
fn a_shell_command_without_a_terminal_cannot_reach_the_callers() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    write(&d.join("x/inject.py"), INJECT.as_bytes(), 0o644);
    write(&d.join("pending.py"), PENDING.as_bytes(), 0o644);
    // stdin is not a terminal, but stdout and stderr were the caller's.
    let cmd = format!(
        "{} shell --bind {}:/x -- python3 /x/inject.py < /dev/null; python3 {}",
        q(&bin()),
        d.join("x").display(),
        q(&d.join("pending.py"))
    );
    let (text, _) = under_a_terminal(&cmd, b"");
    assert!(text.contains("tiocsti /dev/tty: refused"), "{text}");
    assert!(!text.contains(": injected"), "{text}");
    assert!(
        text.contains("PENDING 0"),
        "the step typed into the caller's terminal:\n{text}"
    );
}

#[test]
fn shell_on_a_terminal_is_interactive_on_a_terminal_of_its_own() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    write(&d.join("x/inject.py"), INJECT.as_bytes(), 0o644);
    write(&d.join("pending.py"), PENDING.as_bytes(), 0o644);
    let cmd = format!(
        "stat -L -c OUTER=%t:%T /dev/stdin; {} shell --bind {}:/x; echo SHELL-EXIT=$?; python3 {}",
        q(&bin()),
        d.join("x").display(),
        q(&d.join("pending.py"))
    );
    // Typed at the interactive shell inside.
    let typed = b"test -t 0 && echo INNER-IS-A-TTY; stat -L -c INNER=%t:%T /dev/stdin; \
                  echo hello-$((40+2)); python3 /x/inject.py; exit 3\n";
    let (text, _) = under_a_terminal(&cmd, typed);
    let field = |key: &str| {
        text.lines()
            .filter_map(|l| l.trim_start_matches("# ").trim().strip_prefix(key))
            .next_back()
            .map(str::to_string)
    };
    assert!(
        text.contains("\nhello-42") || text.contains(" hello-42"),
        "{text}"
    );
    assert!(text.contains("INNER-IS-A-TTY"), "{text}");
    assert!(text.contains("SHELL-EXIT=3"), "{text}");
    let (outer, inner) = (field("OUTER="), field("INNER="));
    assert!(outer.is_some() && inner.is_some(), "{text}");
    assert_ne!(outer, inner, "the step got the caller's terminal:\n{text}");
    assert!(
        text.contains("PENDING 0"),
        "the step typed into the caller's terminal:\n{text}"
    );
}

/// Runs the sandbox helper directly on `spec`, as shipyard would, so that
/// the sandbox's own defences are tested without the checks shipyard
/// makes on a spec first.
fn run_helper(spec: &shipyard::sandbox::job::StepSpec) -> std::process::Output {
    shipyard()
        .arg("__sandbox")
        .env(
            shipyard::sandbox::SPEC_ENV,
            serde_json::to_string(spec).unwrap(),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A step on a copy of a minimal rootfs (`sh` and its libraries) that
/// runs `script` with `binds`.
fn step_on_rootfs(
    root: &Path,
    binds: Vec<shipyard::sandbox::job::Bind>,
    script: &str,
) -> shipyard::sandbox::job::StepSpec {
    use shipyard::sandbox::job::*;
    StepSpec {
        root: Root::Dir(root.to_path_buf()),
        binds,
        network: Network::None,
        env: Vec::new(),
        cwd: "/".into(),
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        hostname: "shipyard".into(),
        user: (0, 0),
        subids: shipyard::sandbox::detect_subids(),
        action: Action::Exec,
        confinement: Default::default(),
        secrets: Vec::new(),
        ca_bundle: None,
        tmpfs: Vec::new(),
    }
}

#[test]
fn a_bind_target_with_dotdot_stays_inside_the_root() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    shell_rootfs(&root);
    let src = t.path().join("src");
    write(&src.join("in.txt"), b"input", 0o644);
    // Far enough up from the root to reach the host's /, then down to a
    // directory next to the root.
    let outside = t.path().join("outside");
    mkdir(&outside, 0o755);
    let target = format!("{}{}/x", "/..".repeat(20), outside.display());
    let bind = shipyard::sandbox::job::Bind {
        source: src.clone(),
        target: target.clone().into(),
        writable: false,
    };
    // Inside the root, `/..` is `/`: the step finds its bind there.
    let script = format!("read l < {}/x/in.txt; echo \"$l\"", outside.display());
    let out = run_helper(&step_on_rootfs(&root, vec![bind], &script));
    assert_success(&out, "the step");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "input\n");
    assert!(
        !outside.join("x").exists(),
        "the sandbox created a directory outside the root"
    );
    // And shipyard refuses such a target up front, clearly.
    let out = shipyard()
        .args(["shell", "--bind"])
        .arg(format!("{}:{target}", src.display()))
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the target must not contain `..`"), "{err}");
}

#[test]
fn symlinks_planted_in_the_base_never_lead_a_bind_outside_the_root() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    shell_rootfs(&base);
    let src = t.path().join("src");
    write(&src.join("in.txt"), b"input", 0o644);
    let outside = t.path().join("outside");
    mkdir(&outside, 0o755);
    // Absolute, and relative climbing far above the root.
    std::os::unix::fs::symlink(&outside, base.join("abs")).unwrap();
    let up = format!(
        "{}{}",
        "../".repeat(20),
        outside.strip_prefix("/").unwrap().display()
    );
    std::os::unix::fs::symlink(&up, base.join("rel")).unwrap();
    let from = format!("rootfs:{}", base.display());
    for link in ["abs", "rel"] {
        let bind = format!("{}:/{link}/sub", src.display());
        let out = shipyard()
            .args(["shell", "--from", &from, "--bind", &bind, "--"])
            .args([
                "/bin/sh",
                "-c",
                &format!("read l < /{link}/sub/in.txt; echo \"$l\""),
            ])
            .output()
            .unwrap();
        assert_success(&out, "shell");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "input\n");
        assert!(
            std::fs::read_dir(&outside).unwrap().next().is_none(),
            "through /{link}, the sandbox created something outside the root"
        );
    }
}

#[test]
fn read_only_binds_are_read_only_all_the_way_down() {
    if !is_root() {
        // Mounting a filesystem under the source takes root on the host.
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let sub = src.join("sub");
    mkdir(&sub, 0o755);
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "shipyard-test", sub.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(mounted.success());
    let bind = format!("{}:/src", src.display());
    let out = shipyard()
        .args(["shell", "--bind", &bind, "--", "sh", "-c"])
        .arg("touch /src/sub/planted 2>&1 && echo WROTE-SUBMOUNT; touch /src/top 2>&1 && echo WROTE-TOP; true")
        .output()
        .unwrap();
    let wrote = sub.join("planted").exists();
    let _ = Command::new("umount").arg(&sub).status();
    assert_success(&out, "shell");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("WROTE-TOP"), "{text}");
    assert!(
        !text.contains("WROTE-SUBMOUNT") && !wrote,
        "a submount of a read-only bind was writable:\n{text}"
    );
}

/// The stdout of `sh -c script` in a `host` shell (maybe as `user`).
fn host_step(user: Option<&str>, script: &str) -> String {
    let mut c = shipyard();
    c.arg("shell");
    if let Some(u) = user {
        c.args(["--user", u]);
    }
    let out = c.args(["--", "sh", "-c", script]).output().unwrap();
    assert_success(&out, "shell");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kernel_settings_are_read_only_and_kernel_internals_hidden() {
    // As root the step's root is the host's: before, both writes worked.
    let out = host_step(
        None,
        "for f in /proc/sys/kernel/core_pattern /proc/sys/vm/drop_caches /proc/sysrq-trigger; do \
           if [ -e $f ] && (: > $f) 2>/dev/null; then echo WROTE $f; fi; done; \
         for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do \
           if [ -e $f ]; then echo \"$f $(cat $f 2>&1 | wc -c)\"; fi; done",
    );
    assert!(!out.contains("WROTE"), "{out}");
    for f in [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
    ] {
        if Path::new(f).exists() {
            assert!(
                out.contains(&format!("{f} 0\n")),
                "{f} is not empty:\n{out}"
            );
        }
    }
    // Reading the settings still works.
    let ostype = std::fs::read_to_string("/proc/sys/kernel/ostype").unwrap();
    assert_eq!(host_step(None, "cat /proc/sys/kernel/ostype"), ostype);
}

#[test]
fn every_kernel_interface_runc_protects_is_read_only_or_masked_and_sys_is_absent() {
    // The mount options of each /proc path a step sees (the topmost mount
    // on it), the entries of the masked directories, and /sys.
    let out = host_step(
        None,
        "awk '{print \"MOUNT\", $5, $6}' /proc/self/mountinfo; \
         for d in /proc/acpi /proc/asound /proc/scsi; do \
           [ -d $d ] && echo \"DIR $d $(ls -A $d | wc -l)\"; done; \
         [ -e /sys ] || echo NO-SYS",
    );
    let options = |p: &str| {
        out.lines()
            .filter_map(|l| l.strip_prefix("MOUNT "))
            .filter_map(|l| l.split_once(' '))
            .filter(|(at, _)| *at == p)
            .map(|(_, o)| o.to_string())
            .next_back()
    };
    for p in [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ] {
        if !Path::new(p).exists() {
            continue;
        }
        let o = options(p).unwrap_or_else(|| panic!("{p} is not a mount of its own:\n{out}"));
        assert!(
            o.split(',').any(|x| x == "ro"),
            "{p} is mounted {o}:\n{out}"
        );
    }
    for d in ["/proc/acpi", "/proc/asound", "/proc/scsi"] {
        if Path::new(d).is_dir() {
            assert!(
                out.contains(&format!("DIR {d} 0\n")),
                "{d} is not empty:\n{out}"
            );
        }
    }
    assert!(
        out.contains("NO-SYS"),
        "a step sees /sys (and /sys/firmware):\n{out}"
    );
}

#[test]
fn steps_hold_dockers_default_capabilities_and_no_more() {
    let caps = |status: &str, key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let st = host_step(None, "cat /proc/self/status");
    for key in ["CapBnd:", "CapEff:", "CapPrm:"] {
        assert_eq!(caps(&st, key), "00000000a80425fb", "{key}\n{st}");
    }
    for key in ["CapInh:", "CapAmb:"] {
        assert_eq!(caps(&st, key), "0000000000000000", "{key}\n{st}");
    }
    // No no_new_privs: setuid programs work, within the bounding set.
    assert_eq!(caps(&st, "NoNewPrivs:"), "0", "{st}");
    if has_range() {
        let st = host_step(Some("1000"), "cat /proc/self/status");
        assert_eq!(caps(&st, "CapBnd:"), "00000000a80425fb", "{st}");
        assert_eq!(caps(&st, "CapEff:"), "0000000000000000", "{st}");
    }
}

#[test]
fn dangerous_system_calls_fail_with_eperm() {
    // keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0), by
    // number, through python's ctypes.
    let keyctl = format!(
        "import ctypes; c = ctypes.CDLL(None, use_errno=True); \
         r = c.syscall({}, 0, -3, 0); print('keyctl', r, ctypes.get_errno())",
        libc::SYS_keyctl
    );
    let out = host_step(
        None,
        &format!(
            "python3 -c \"{keyctl}\"; unshare -U true 2>&1; \
             python3 -c \"import threading; t = threading.Thread(target=print, args=('thread-ok',)); t.start(); t.join()\"; \
             grep '^Seccomp:' /proc/self/status"
        ),
    );
    assert!(
        out.contains(&format!("keyctl -1 {}\n", libc::EPERM)),
        "{out}"
    );
    assert!(
        out.contains("unshare failed: Operation not permitted"),
        "{out}"
    );
    // clone3 fails with ENOSYS, and threads still start (through clone).
    assert!(out.contains("thread-ok"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
}

#[test]
fn the_host_builder_never_shows_what_only_root_may_read() {
    let out = host_step(
        None,
        "for f in /etc/shadow /etc/gshadow; do [ -e $f ] && echo \"$f $(cat $f 2>/dev/null | wc -c)\"; done; \
         test -r /etc/passwd && echo PASSWD-READABLE",
    );
    for f in ["/etc/shadow", "/etc/gshadow"] {
        if Path::new(f).exists() {
            assert!(
                out.contains(&format!("{f} 0\n")),
                "{f} was readable:\n{out}"
            );
        }
    }
    assert!(out.contains("PASSWD-READABLE"), "{out}");
}
