//! Isolation levels (see `sandbox::isolation`), as a user sees them: the
//! level named in one line, the fallbacks that keep a build working where
//! the machine refuses part of the sandbox, the same image at every level,
//! and the confinement each level keeps. scripts/test runs these as root,
//! as a user with a subuid range and as one without.
//!
//! Docker's default profile (no user namespaces, no CAP_SYS_ADMIN) is
//! reproduced here for root by dropping CAP_SYS_ADMIN from the bounding
//! set (`setpriv`): the chroot level then has no mounts, as in Docker. The
//! real containers are in the e2e binary (tests/e2e/containers.rs).

use crate::common::steps::*;
use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// shipyard as root without CAP_SYS_ADMIN, as in a Docker container.
fn without_sys_admin() -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--bounding-set", "-sys_admin"]).arg(bin());
    c
}

/// A rootfs builder with sh, sleep, ln and rm, and the libraries they
/// need (libc only).
fn builder_tree(root: &Path) {
    shell_rootfs(root);
    for tool in ["sleep", "ln", "rm"] {
        let from = std::fs::canonicalize(format!("/bin/{tool}")).unwrap();
        std::fs::copy(&from, root.join("bin").join(tool)).unwrap();
    }
}

/// A project whose rule uses a source, /tmp and /dev/null, and whose
/// tapeout takes the whole builder (so that anything a level leaves
/// behind shows in the image).
fn project(t: &Path) -> PathBuf {
    let base = t.join("base");
    builder_tree(&base);
    let dir = t.join("proj");
    write(&dir.join("src/in.txt"), b"from the source\n", 0o644);
    let spec = format!(
        r#"
[builder]
from = "rootfs:{}"
sources = {{ "/src" = "src" }}

[build.one]
run = "cat /src/in.txt > /made.txt; echo scratch > /tmp/junk; test -c /dev/null && echo null-ok >> /made.txt"

[tapeout.all]
after = ["build.one"]
include = ["/**"]

[image.app]
from = "scratch"
tapeouts = ["all"]
"#,
        base.display()
    );
    write(&dir.join("shipyard.toml"), spec.as_bytes(), 0o644);
    dir
}

fn build(mut c: Command, dir: &Path, out: &Path, extra: &[&str]) -> Output {
    c.args(["build", dir.to_str().unwrap(), "--no-cache", "--output"])
        .arg(format!("oci:{}", out.display()))
        .args(extra)
        .env("SOURCE_DATE_EPOCH", "1700000000");
    c.output().unwrap()
}

fn isolation_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .find(|l| l.starts_with("==> isolation: "))
        .unwrap_or_else(|| {
            panic!(
                "no isolation line:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_string()
}

#[test]
fn chroot_without_mounts_builds_the_image_a_user_namespace_builds() {
    let t = tempfile::tempdir().unwrap();
    let dir = project(t.path());
    let userns = build(shipyard(), &dir, &t.path().join("a"), &[]);
    assert_success(&userns, "build");
    assert!(
        isolation_line(&userns).starts_with("==> isolation: userns"),
        "{}",
        isolation_line(&userns)
    );
    if !is_root() {
        let out = build(
            shipyard(),
            &dir,
            &t.path().join("b"),
            &["--isolation", "chroot"],
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("isolation chroot does not work here"), "{err}");
        assert!(err.contains("needs real root"), "{err}");
        return;
    }
    let chroot = build(
        without_sys_admin(),
        &dir,
        &t.path().join("b"),
        &["--isolation", "chroot"],
    );
    assert_success(&chroot, "build at chroot without CAP_SYS_ADMIN");
    let line = isolation_line(&chroot);
    assert!(line.contains("chroot (no namespaces or mounts"), "{line}");
    let a = digest_of_tag(&t.path().join("a"), "app");
    let b = digest_of_tag(&t.path().join("b"), "app");
    let ma = ok([
        "manifest",
        &format!("oci:{}:app", t.path().join("a").display()),
    ]);
    let mb = ok([
        "manifest",
        &format!("oci:{}:app", t.path().join("b").display()),
    ]);
    assert_eq!(ma, mb, "the two levels saw different trees");
    assert_eq!(a, b);
    assert!(ma.contains("/made.txt"), "{ma}");
    // And with CAP_SYS_ADMIN, chroot has its namespaces and mounts.
    let full = build(
        shipyard(),
        &dir,
        &t.path().join("c"),
        &["--isolation", "chroot"],
    );
    assert_success(&full, "build at chroot");
    assert_eq!(isolation_line(&full), "==> isolation: chroot");
    assert_eq!(digest_of_tag(&t.path().join("c"), "app"), a);
}

/// A static program that tries the ways out of a chroot for root: chroot
/// into a subdirectory and climb, and ptrace of its parent (the sandbox
/// helper, outside the chroot, in the same pid namespace).
const ESCAPE_C: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    mkdir("/deeper", 0755);
    if (chroot("/deeper") == 0) {
        for (int i = 0; i < 64; i++) chdir("..");
        chroot(".");
        printf("chroot: ESCAPED %s\n", access("/proc/1", F_OK) == 0 ? "(host proc seen)" : "");
    } else {
        printf("chroot: %s\n", strerror(errno));
    }
    pid_t parent = getppid();
    if (ptrace(PTRACE_ATTACH, parent, 0, 0) == 0) {
        waitpid(parent, 0, 0);
        ptrace(PTRACE_DETACH, parent, 0, 0);
        printf("ptrace: ATTACHED\n");
    } else {
        printf("ptrace: %s\n", strerror(errno));
    }
    return 0;
}
"#;

#[test]
fn a_chroot_step_cannot_chroot_out_or_trace_shipyard() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    builder_tree(&base);
    let c = t.path().join("escape.c");
    write(&c, ESCAPE_C.as_bytes(), 0o644);
    let st = Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(base.join("escape"))
        .arg(&c)
        .status()
        .unwrap();
    assert!(st.success(), "compiling the escape program");
    let mut cmd = if is_root() {
        without_sys_admin()
    } else {
        shipyard()
    };
    let from = format!("rootfs:{}", base.display());
    cmd.args([
        "shell",
        "--from",
        &from,
        "--isolation",
        "chroot",
        "--",
        "/escape",
    ]);
    let out = cmd.output().unwrap();
    if !is_root() {
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("needs real root"));
        return;
    }
    assert_success(&out, "shell");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("chroot: Operation not permitted"),
        "the step could chroot: {text}"
    );
    assert!(
        text.contains("ptrace: Operation not permitted"),
        "the step could trace its parent: {text}"
    );
}

#[test]
fn without_a_pid_namespace_no_process_outlives_its_step_or_its_timeout() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    builder_tree(&base);
    let from = format!("rootfs:{}", base.display());
    if !is_root() {
        // The unprivileged users have no level without a pid namespace
        // here (the namespaced case is in the sandbox module): chroot is
        // refused up front, before anything runs.
        let out = shipyard()
            .args([
                "shell",
                "--from",
                &from,
                "--isolation",
                "chroot",
                "--",
                "/bin/sh",
                "-c",
                "echo RAN",
            ])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(!String::from_utf8_lossy(&out.stdout).contains("RAN"));
        assert!(String::from_utf8_lossy(&out.stderr).contains("needs real root"));
        return;
    }
    // Left behind by a step that exits.
    let sl = unique_sleep();
    let script = format!("{sl} & echo started");
    let out = without_sys_admin()
        .args([
            "shell",
            "--from",
            &from,
            "--isolation",
            "chroot",
            "--",
            "/bin/sh",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    assert_success(&out, "shell");
    assert!(String::from_utf8_lossy(&out.stderr).contains("chroot (no namespaces"));
    wait_for("the orphan to be gone", || !running(&sl));
    // Still running at the timeout.
    let sl = unique_sleep();
    let child = without_sys_admin()
        .args([
            "shell",
            "--from",
            &from,
            "--isolation",
            "chroot",
            "--timeout",
            "2",
        ])
        .args(["--", "/bin/sh", "-c"])
        .arg(format!("{sl} & /bin/sleep 300"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the step to start", || running(&sl));
    let out = output_within(
        child,
        std::time::Duration::from_secs(60),
        "shell --timeout 2",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("timed out after 2s"), "{err}");
    wait_for("the step's processes to die", || !running(&sl));
}

#[test]
fn an_id_range_that_cannot_be_mapped_falls_back_to_a_single_id_and_says_so() {
    let t = tempfile::tempdir().unwrap();
    let dir = project(t.path());
    // newuidmap and newgidmap that refuse, first on the PATH.
    let fake = t.path().join("fake");
    for tool in ["newuidmap", "newgidmap"] {
        write(
            &fake.join(tool),
            b"#!/bin/sh\necho \"$0: refused by the test\" >&2\nexit 1\n",
            0o755,
        );
    }
    let path = format!("{}:{}", fake.display(), std::env::var("PATH").unwrap());
    let mut c = shipyard();
    c.env("PATH", &path);
    let out = build(c, &dir, &t.path().join("a"), &[]);
    assert_success(&out, "build");
    let line = isolation_line(&out);
    let ranged = std::env::var("SHIPYARD_TEST_SUBUID").as_deref() == Ok("1") && !is_root();
    if ranged {
        assert!(line.contains("single-id map"), "{line}");
        assert!(
            line.contains("refused by the test") || line.contains("mapping the id range failed"),
            "{line}"
        );
    } else {
        // Root maps its range itself; a user without one maps a single id
        // from the start: nothing is given up.
        assert_eq!(line, "==> isolation: userns");
    }
    // The same image either way.
    let again = build(shipyard(), &dir, &t.path().join("b"), &[]);
    assert_success(&again, "build");
    assert_eq!(
        digest_of_tag(&t.path().join("a"), "app"),
        digest_of_tag(&t.path().join("b"), "app")
    );
}

#[test]
fn an_unknown_level_is_refused_with_the_choices() {
    let err = fails(["build", ".", "--isolation", "chrot"]);
    assert!(err.contains("auto, userns, chroot or none"), "{err}");
    let out = shipyard()
        .args(["build", "/nonexistent-dir"])
        .env("SHIPYARD_ISOLATION", "jail")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("auto, userns, chroot or none"));
}

#[test]
fn without_bind_mounts_a_cache_mount_is_copied_in_and_back() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    builder_tree(&base);
    let dir = t.path().join("proj");
    let spec = format!(
        r#"
[builder]
from = "rootfs:{}"

[build.count]
run = "n=0; read n < /c/count; echo $((n + 1)) > /c/count; echo $((n + 1)) > /made.txt"
cache = {{ "/c" = "counter" }}

[tapeout.t]
after = ["build.count"]
include = ["/made.txt", "/c/**"]

[image.app]
tapeouts = ["t"]
"#,
        base.display()
    );
    write(&dir.join("shipyard.toml"), spec.as_bytes(), 0o644);
    let cache = t.path().join("cache");
    let count = |layout: &str| {
        let mut c = if is_root() {
            without_sys_admin()
        } else {
            shipyard()
        };
        c.env("XDG_CACHE_HOME", &cache);
        let extra: &[&str] = if is_root() {
            &["--isolation", "chroot"]
        } else {
            &[]
        };
        let out = build(c, &dir, &t.path().join(layout), extra);
        assert_success(&out, "build");
        if is_root() {
            assert!(isolation_line(&out).contains("chroot (no namespaces"));
        }
        let m = ok([
            "manifest",
            &format!("oci:{}:app", t.path().join(layout).display()),
        ]);
        assert!(
            !m.contains("/c/count"),
            "the cache mount is in the image:\n{m}"
        );
        let u = t.path().join(format!("{layout}-u"));
        ok([
            "unpack",
            &format!("oci:{}:app", t.path().join(layout).display()),
            u.to_str().unwrap(),
        ]);
        std::fs::read_to_string(u.join("made.txt")).unwrap()
    };
    assert_eq!(count("a").trim(), "1");
    assert_eq!(count("b").trim(), "2", "what the step wrote was not kept");
    assert_eq!(
        std::fs::read_to_string(cache.join("shipyard/mounts/counter/count"))
            .unwrap()
            .trim(),
        "2"
    );
}

#[test]
fn a_step_that_swaps_what_shipyard_placed_for_symlinks_gets_nothing_outside() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    builder_tree(&base);
    // Host files a step must never reach through what it plants.
    let victim = t.path().join("victim");
    write(&victim.join("keep"), b"host file", 0o644);
    write(&victim.join("file"), b"host data", 0o644);
    let dir = t.path().join("proj");
    write(&dir.join("src/in.txt"), b"input", 0o644);
    // /tmp and /dev become links to the victim directory, the source's
    // mount point a link to a victim file: cleaning up after the step
    // (emptying /tmp, removing devices, truncating a created mount point)
    // must not follow them.
    let spec = format!(
        r#"
[builder]
from = "rootfs:{base}"
sources = {{ "/in.txt" = "src/in.txt" }}

[build.plant]
run = "/bin/rm -rf /tmp /dev /in.txt; /bin/ln -s {v} /tmp; /bin/ln -s {v} /dev; /bin/ln -s {v}/file /in.txt; echo planted > /made.txt"

[tapeout.t]
after = ["build.plant"]
include = ["/made.txt"]

[image.app]
tapeouts = ["t"]
"#,
        base = base.display(),
        v = victim.display()
    );
    write(&dir.join("shipyard.toml"), spec.as_bytes(), 0o644);
    let (cmd, extra): (Command, &[&str]) = if is_root() {
        (without_sys_admin(), &["--isolation", "chroot"])
    } else {
        (shipyard(), &[])
    };
    let out = build(cmd, &dir, &t.path().join("l"), extra);
    assert_success(&out, "build");
    if is_root() {
        assert!(isolation_line(&out).contains("chroot (no namespaces"));
    }
    assert_eq!(std::fs::read(victim.join("keep")).unwrap(), b"host file");
    assert_eq!(std::fs::read(victim.join("file")).unwrap(), b"host data");
    assert_eq!(
        std::fs::read_dir(&victim).unwrap().count(),
        2,
        "something was added to or removed from the host directory"
    );
}
