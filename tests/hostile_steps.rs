//! Build steps written by an attacker: each tries to escape or outlive the
//! sandbox, and each test asserts what the user would notice if it could.
//! scripts/test runs these as root, as a user with a subuid range and as
//! one without; where a privilege level changes the outcome, the test says
//! which outcome belongs to which.

mod common;
use common::steps::*;
use common::*;
use std::path::Path;
use std::process::Stdio;
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
    let sl = unique_sleep(11);
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
    let sl = unique_sleep(12);
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
