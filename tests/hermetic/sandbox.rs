//! The rootless sandbox, as its user sees it. scripts/test runs these as
//! root, as a user with a subuid range and as one without.

use crate::common::steps::*;
use crate::common::*;

fn shell(args: &[&str]) -> std::process::Output {
    let mut c = shipyard();
    c.arg("shell").args(args);
    c.output().expect("run shipyard shell")
}

fn stdout_of(args: &[&str]) -> String {
    let out = shell(args);
    assert_success(&out, "shipyard shell");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn exit_code_propagates() {
    let out = shell(&["--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn step_sees_no_host_process_and_is_pid_1() {
    let out = stdout_of(&["--", "sh", "-c", "echo $$; ls /proc | grep -c '^[0-9]'"]);
    let mut l = out.lines();
    assert_eq!(l.next(), Some("1"));
    let n: u32 = l.next().unwrap().parse().unwrap();
    assert!(n <= 4, "the step sees {n} processes");
}

#[test]
fn network_none_has_only_loopback_and_it_is_up() {
    let out = stdout_of(&[
        "--",
        "sh",
        "-c",
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
    ]);
    assert_eq!(out.trim(), "lo");
    // Loopback is up: a listener on 127.0.0.1 inside is reachable inside.
    let py = "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); \
              c=socket.create_connection(s.getsockname(), timeout=5); print('LO-OK')";
    assert_eq!(stdout_of(&["--", "python3", "-c", py]).trim(), "LO-OK");
    // And there is no route anywhere else (only the header line).
    assert_eq!(
        stdout_of(&["--", "sh", "-c", "wc -l < /proc/net/route"]).trim(),
        "1"
    );
}

#[test]
fn host_toolchain_is_read_only_and_writes_land_in_the_state() {
    let t = tempfile::tempdir().unwrap();
    let keep = t.path().join("state");
    let out = shell(&[
        "--keep",
        keep.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "touch /usr/shipyard-test 2>/dev/null && echo WROTE-USR; mkdir -p /out && echo built > /out/artifact",
    ]);
    assert_success(&out, "shell");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("WROTE-USR"));
    assert!(!std::path::Path::new("/usr/shipyard-test").exists());
    assert_eq!(
        std::fs::read(keep.join("root/out/artifact")).unwrap(),
        b"built\n"
    );
}

#[test]
fn rootfs_base_is_never_modified() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    write(&base.join("etc/keep"), b"original", 0o644);
    shell_rootfs(&base);
    let before = ok(["manifest", base.to_str().unwrap()]);
    let keep = t.path().join("state");
    let from = format!("rootfs:{}", base.display());
    let out = shell(&[
        "--from",
        &from,
        "--keep",
        keep.to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        "echo changed > /etc/keep; rm /etc/keep; echo new > /new",
    ]);
    assert_success(&out, "shell");
    assert_eq!(
        ok(["manifest", base.to_str().unwrap()]),
        before,
        "the base changed"
    );
    assert_eq!(std::fs::read(keep.join("upper/new")).unwrap(), b"new\n");
}

#[test]
fn binds_are_read_only_unless_rw() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    write(&src.join("in.txt"), b"input", 0o644);
    let out_dir = t.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::set_permissions(
        &out_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let ro = format!("{}:/src", src.display());
    let rw = format!("{}:/out:rw", out_dir.display());
    let out = stdout_of(&[
        "--bind",
        &ro,
        "--bind",
        &rw,
        "--",
        "sh",
        "-c",
        "cat /src/in.txt; echo; touch /src/x 2>/dev/null && echo WROTE-SRC; cp /src/in.txt /out/copy",
    ]);
    assert_eq!(out.trim(), "input");
    assert!(!src.join("x").exists());
    assert_eq!(std::fs::read(out_dir.join("copy")).unwrap(), b"input");
}

#[test]
fn no_process_outlives_the_step() {
    let sl = unique_sleep();
    // The background sleep is really started (the step waits until it
    // shows in /proc), then the step exits and leaves it behind.
    // Wait on the child itself: until it has exec'd, its cmdline is the
    // forked shell's (and grep over /proc/*/cmdline would match the shell,
    // since GNU grep may split binary input at NULs).
    let script = format!("{sl} & until tr '\\0' ' ' < /proc/$!/cmdline | grep -q '^{sl}'; do :; done; tr '\\0' ' ' < /proc/$!/cmdline; echo");
    let out = shell(&["--", "sh", "-c", &script]);
    assert_success(&out, "shell");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        sl,
        "the background process did not run"
    );
    wait_for("the orphan to be gone", || !running(&sl));
}

#[test]
fn timeout_kills_the_whole_tree() {
    let sl = unique_sleep();
    let child = shipyard()
        .args(["shell", "--timeout", "2", "--", "sh", "-c"])
        .arg(format!("{sl} & sleep 300"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the step to start", || running(&sl));
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("timed out after 2s"), "{err}");
    wait_for("the step's processes to die", || !running(&sl));
}

#[test]
fn chown_inside_works_exactly_when_a_range_is_mapped() {
    let out = shell(&[
        "--",
        "sh",
        "-c",
        "mkdir -p /out && touch /out/f && chown 5:5 /out/f && echo CHOWN-OK",
    ]);
    let said = String::from_utf8_lossy(&out.stdout).contains("CHOWN-OK");
    let has_range = is_root() || shipyard::sandbox::detect_subids().is_some();
    assert_eq!(
        said, has_range,
        "chown inside: {said}, id range mapped: {has_range}"
    );
    if let Ok(v) = std::env::var("SHIPYARD_TEST_SUBUID") {
        assert_eq!(
            has_range,
            v == "1" || is_root(),
            "scripts/test said SHIPYARD_TEST_SUBUID={v}"
        );
    }
}

#[test]
fn bad_base_is_a_clear_error() {
    let out = shell(&["--from", "rootfs:/nonexistent-base", "--", "true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rootfs:/nonexistent-base"));
    let out = shell(&["--from", "docker-ish", "--", "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected host, rootfs:DIR"));
}

#[test]
fn killing_shipyard_kills_the_step_and_leaves_no_mount() {
    let sl = unique_sleep();
    let t = tempfile::tempdir().unwrap();
    let keep = t.path().join("state");
    let mut child = interruptible(&mut shipyard())
        .args(["shell", "--keep", keep.to_str().unwrap(), "--", "sh", "-c"])
        .arg(format!("{sl} & {sl}"))
        .spawn()
        .unwrap();
    wait_for("the step to start", || running(&sl));
    // Interrupt shipyard alone, as a supervisor would (Ctrl-C also reaches
    // the helper, through the process group).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let _ = child.wait();
    wait_for("the step's processes to die with shipyard", || {
        !running(&sl)
    });
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(keep.to_str().unwrap()),
        "a mount was left behind:\n{mounts}"
    );
}

#[test]
fn copy_fallback_never_modifies_the_base_either() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    write(&base.join("etc/keep"), b"original", 0o644);
    shell_rootfs(&base);
    let before = ok(["manifest", base.to_str().unwrap()]);
    let keep = t.path().join("state");
    let from = format!("rootfs:{}", base.display());
    let out = shipyard()
        .env("SHIPYARD_NO_OVERLAY", "1")
        .args([
            "shell",
            "--from",
            &from,
            "--keep",
            keep.to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            "echo changed > /etc/keep; echo new > /new",
        ])
        .output()
        .unwrap();
    assert_success(&out, "shell");
    assert_eq!(
        ok(["manifest", base.to_str().unwrap()]),
        before,
        "the base changed"
    );
    assert!(
        keep.join("work/shipyard-copied").exists(),
        "the copy fallback was not used"
    );
    assert_eq!(
        std::fs::read(keep.join("upper/etc/keep")).unwrap(),
        b"changed\n"
    );
}

#[test]
fn network_host_shares_the_hosts_interfaces_and_resolver() {
    let host_ifaces = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .count();
    let out = stdout_of(&[
        "--network",
        "host",
        "--",
        "sh",
        "-c",
        "grep -c . /proc/net/dev",
    ]);
    assert_eq!(out.trim().parse::<usize>().unwrap(), host_ifaces);
    if std::path::Path::new("/etc/resolv.conf").exists() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("base");
        shell_rootfs(&base);
        let from = format!("rootfs:{}", base.display());
        let inside = stdout_of(&[
            "--from",
            &from,
            "--network",
            "host",
            "--",
            "/bin/sh",
            "-c",
            "read l < /etc/resolv.conf; echo \"$l\"",
        ]);
        let host_first = std::fs::read_to_string("/etc/resolv.conf")
            .unwrap()
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        assert_eq!(inside.trim_end(), host_first.trim_end());
        let none = shell(&[
            "--from",
            &from,
            "--",
            "/bin/sh",
            "-c",
            "test -e /etc/resolv.conf && echo PRESENT",
        ]);
        assert!(
            !String::from_utf8_lossy(&none.stdout).contains("PRESENT"),
            "resolv.conf without network host"
        );
    }
}
