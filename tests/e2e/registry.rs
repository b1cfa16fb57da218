//! Registries and archives end to end: a real docker-registry on
//! 127.0.0.1 (plain, and with htpasswd + TLS), skopeo on the other side,
//! a fault-injecting proxy in between, and podman loading what we export.

use crate::common::registry::{
    podman, podman_run, require, AuthProxy, Fault, FaultProxy, ProxyAuth, Realm, Registry, Twist,
    PASSWORD, USER,
};
use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A private cache and auth file per test.
struct Env {
    t: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            t: tempfile::Builder::new()
                .prefix(&format!("shipyard-reg-{}", std::process::id()))
                .rand_bytes(4)
                .tempdir()
                .unwrap(),
        }
    }
    fn p(&self, s: &str) -> PathBuf {
        self.t.path().join(s)
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = shipyard();
        c.env("XDG_CACHE_HOME", self.p("cache"))
            .env("REGISTRY_AUTH_FILE", self.p("auth.json"))
            .env("HOME", self.t.path())
            .args(args);
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_success(&out, &format!("{args:?}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(self.ok(&a).trim()).unwrap()
    }
    fn err(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
    /// `oci:DIR:v1` holding `rich_tree` plus a `size`-byte random file,
    /// in two layers; returns (reference, digest).
    fn image(&self, size: usize) -> (String, String) {
        let a = self.p("tree");
        rich_tree(&a, false);
        let r = format!("oci:{}:v1", self.p("l").display());
        diff_scratch(&a, &format!("oci:{}:base", self.p("l").display()), &[]);
        let mut big = vec![0u8; size];
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for b in big.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        write(&a.join("big.bin"), &big, 0o644);
        let d = ok([
            "diff",
            a.to_str().unwrap(),
            "--against",
            &format!("oci:{}:base", self.p("l").display()),
            "--base",
            &format!("oci:{}:base", self.p("l").display()),
            "--output",
            &r,
        ]);
        (r, d.trim().to_string())
    }
}

fn skopeo(args: &[&str]) -> String {
    require("skopeo");
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert_success(&out, &format!("skopeo {args:?}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn skopeo_digest(remote: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", remote])).unwrap();
    v["Digest"].as_str().unwrap().to_string()
}

#[test]
fn push_then_pull_keeps_the_digest_and_the_second_time_moves_nothing() {
    let reg = Registry::start();
    let e = Env::new();
    let (src, digest) = e.image(3 << 20);
    let remote = reg.url("shipyard/app:v1");
    let df = e.p("digest");
    let first = e.json(&[
        "push",
        "--tls-verify=false",
        &src,
        &remote,
        "--tag",
        "also",
        "--digestfile",
        df.to_str().unwrap(),
    ]);
    assert_eq!(first["digest"], digest);
    assert_eq!(std::fs::read_to_string(&df).unwrap().trim(), digest);
    assert_eq!(first["pushed"]["blobs_uploaded"], 3, "{first}");
    // skopeo, the peer, sees the same digest under both tags.
    assert_eq!(skopeo_digest(&remote), digest);
    assert_eq!(skopeo_digest(&reg.url("shipyard/app:also")), digest);
    // A re-push sends no blob.
    let again = e.json(&["push", "--tls-verify=false", &src, &remote]);
    assert_eq!(again["pushed"]["blobs_present"], 3, "{again}");
    assert_eq!(again["pushed"]["bytes_uploaded"], 0);
    // Another repository of the same registry: mounted, not uploaded.
    let other = e.json(&["push", "--tls-verify=false", &src, &reg.url("other/app:v1")]);
    assert_eq!(other["pushed"]["blobs_mounted"], 3, "{other}");
    // Pull into a fresh cache: every blob comes over; the second pull
    // fetches nothing but the manifest.
    let e2 = Env::new();
    let back = format!("oci:{}", e2.p("back").display());
    let p1 = e2.json(&["pull", "--tls-verify=false", &remote, &back]);
    assert_eq!(p1["digest"], digest);
    assert_eq!(p1["pulled"]["blobs_fetched"], 3, "{p1}");
    let p2 = e2.json(&["pull", "--tls-verify=false", &remote, &back]);
    assert_eq!(p2["pulled"]["blobs_fetched"], 0, "{p2}");
    assert_eq!(p2["pulled"]["blobs_cached"], 3, "{p2}");
    assert_eq!(digest_of_tag(&e2.p("back"), "v1"), digest);
    // By digest, too, and offline once cached.
    let pinned = format!("docker://{}/shipyard/app@{digest}", reg.host());
    e2.ok(&[
        "pull",
        "--pull",
        "never",
        &pinned,
        &format!("oci:{}:pinned", e2.p("back").display()),
    ]);
    assert_eq!(
        strip_mtimes(&ok([
            "manifest",
            &format!("oci:{}:v1", e2.p("back").display())
        ])),
        strip_mtimes(&ok(["manifest", &src]))
    );
    // Chunked upload (PATCH) of the big layer to a fresh registry.
    let reg2 = Registry::start();
    let e3 = Env::new();
    let c = e3.json(&[
        "push",
        "--tls-verify=false",
        "--chunk-size",
        "512K",
        &src,
        &reg2.url("chunked/app:v1"),
    ]);
    assert_eq!(c["digest"], digest);
    assert_eq!(skopeo_digest(&reg2.url("chunked/app:v1")), digest);
}

#[test]
fn skopeo_and_shipyard_read_each_others_pushes_and_builds_stack_on_registry_bases() {
    let reg = Registry::start();
    let e = Env::new();
    // skopeo pushes a base with a shell; shipyard pulls it and builds on it.
    let root = e.p("root");
    shell_rootfs(&root);
    let base = format!("oci:{}:base", e.p("l").display());
    diff_scratch(&root, &base, &[]);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &base,
        &reg.url("base/sh:v1"),
    ]);
    let proj = e.p("proj");
    std::fs::create_dir_all(&proj).unwrap();
    std::fs::write(
        proj.join("shipyard.toml"),
        format!(
            "[builder]\nfrom = \"{b}\"\n[build.b]\nrun = \"echo built-on-registry > /msg\"\n\
             [tapeout.t]\nafter = [\"build.b\"]\ninclude = [\"/msg\"]\n\
             [image.app]\nfrom = \"{b}\"\ntapeouts = [\"t\"]\n",
            b = reg.url("base/sh:v1")
        ),
    )
    .unwrap();
    let out = e
        .cmd(&[
            "build",
            proj.to_str().unwrap(),
            "--tls-verify=false",
            "--output",
            &format!("oci:{}", e.p("out").display()),
            "--push",
            &reg.url("built/app:v2"),
        ])
        .output()
        .unwrap();
    assert_success(&out, "build on a registry base, with --push");
    let built = digest_of_tag(&e.p("out"), "app");
    let m = ok(["manifest", &format!("oci:{}:app", e.p("out").display())]);
    assert!(m.contains("/msg") && m.contains("/bin/sh"), "{m}");
    // shipyard pushed it; skopeo pulls it back with the same digest.
    assert_eq!(skopeo_digest(&reg.url("built/app:v2")), built);
    let sk = e.p("sk");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &reg.url("built/app:v2"),
        &format!("oci:{}:x", sk.display()),
    ]);
    assert_eq!(digest_of_tag(&sk, "x"), built);
    // --pull=never builds offline from the cache now.
    let out = e
        .cmd(&[
            "build",
            proj.to_str().unwrap(),
            "--pull",
            "never",
            "--output",
            &format!("oci:{}", e.p("out2").display()),
        ])
        .output()
        .unwrap();
    assert_success(&out, "offline rebuild");
    assert_eq!(digest_of_tag(&e.p("out2"), "app"), built, "reproducible");
}

#[test]
fn a_protected_tls_registry_needs_login_and_the_right_ca() {
    let reg = Registry::start_secure();
    let e = Env::new();
    let (src, digest) = e.image(1 << 20);
    let certs = reg.cert_dir();
    let certs = certs.to_str().unwrap();
    let remote = reg.url("secure/app:v1");
    // Without the CA, the certificate is refused, at once (no retry
    // changes it), and the error says how to trust it.
    let err = e.err(&["push", &src, &remote]);
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
    assert!(
        err.contains("--cert-dir") && !err.contains("retrying"),
        "{err}"
    );
    // Without credentials, the error names the registry, the repository
    // and where credentials were looked for.
    let err = e.err(&["push", "--cert-dir", certs, &src, &remote]);
    assert!(
        err.contains(&reg.host()) && err.contains("secure/app"),
        "{err}"
    );
    assert!(
        err.contains("authentication required") && err.contains("auth.json"),
        "{err}"
    );
    // A wrong password: login fails and stores nothing.
    let mut c = e.cmd(&[
        "login",
        "--cert-dir",
        certs,
        "-u",
        USER,
        "--password-stdin",
        &reg.host(),
    ]);
    let out = pipe(&mut c, "wrong\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rejected the credentials") && err.contains(&reg.host()),
        "{err}"
    );
    assert!(!e.p("auth.json").exists());
    // The right one is stored (0600) and used by push and pull.
    let mut c = e.cmd(&[
        "login",
        "--cert-dir",
        certs,
        "-u",
        USER,
        "--password-stdin",
        &reg.host(),
    ]);
    assert_success(&pipe(&mut c, &format!("{PASSWORD}\n")), "login");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(e.p("auth.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let pushed = e.json(&["push", "--cert-dir", certs, &src, &remote]);
    assert_eq!(pushed["digest"], digest);
    let e2 = Env::new();
    std::fs::copy(e.p("auth.json"), e2.p("auth.json")).unwrap();
    let pulled = e2.json(&[
        "pull",
        "--cert-dir",
        certs,
        &remote,
        &format!("oci:{}", e2.p("b").display()),
    ]);
    assert_eq!(pulled["digest"], digest);
    // --creds works without any auth file; a bad one is rejected clearly.
    let e3 = Env::new();
    let creds = format!("{USER}:{PASSWORD}");
    e3.ok(&[
        "pull",
        "--cert-dir",
        certs,
        "--creds",
        &creds,
        &remote,
        &format!("oci:{}", e3.p("b").display()),
    ]);
    let err = e3.err(&[
        "pull",
        "--pull",
        "always",
        "--cert-dir",
        certs,
        "--creds",
        "shipper:nope",
        &remote,
        &format!("oci:{}", e3.p("c").display()),
    ]);
    assert!(
        err.contains("rejected the credentials") && err.contains("--creds"),
        "{err}"
    );
    // Without REGISTRY_AUTH_FILE, login writes podman's default,
    // $XDG_RUNTIME_DIR/containers/auth.json, and push finds it there.
    let xdg = e.p("xdg");
    std::fs::create_dir_all(&xdg).unwrap();
    let mut c = e.cmd(&[
        "login",
        "--cert-dir",
        certs,
        "-u",
        USER,
        "--password-stdin",
        &reg.host(),
    ]);
    c.env_remove("REGISTRY_AUTH_FILE")
        .env("XDG_RUNTIME_DIR", &xdg);
    assert_success(
        &pipe(&mut c, &format!("{PASSWORD}\n")),
        "login to the XDG default",
    );
    assert!(xdg.join("containers/auth.json").is_file());
    let out = e
        .cmd(&["push", "--cert-dir", certs, &src, &reg.url("secure/xdg:v1")])
        .env_remove("REGISTRY_AUTH_FILE")
        .env("XDG_RUNTIME_DIR", &xdg)
        .output()
        .unwrap();
    assert_success(&out, "push with credentials from $XDG_RUNTIME_DIR");
    // Logout forgets.
    e.ok(&["logout", &reg.host()]);
    let err = e.err(&[
        "pull",
        "--pull",
        "always",
        "--cert-dir",
        certs,
        &remote,
        &format!("oci:{}", e.p("d").display()),
    ]);
    assert!(err.contains("authentication required"), "{err}");
}

fn pipe(c: &mut Command, input: &str) -> Output {
    use std::io::Write;
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Names of the blobs a registry's storage holds.
fn stored_blobs(data: &Path) -> usize {
    let d = data.join("docker/registry/v2/blobs/sha256");
    walkdir::WalkDir::new(d)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() == "data")
        .count()
}

/// Blobs the repository links to with a complete link file.
fn committed_links(data: &Path) -> usize {
    let d = data.join("docker/registry/v2/repositories/crash/app/_layers/sha256");
    walkdir::WalkDir::new(d)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() == "link")
        .filter(|e| {
            std::fs::read_to_string(e.path())
                .map(|s| s.len() == "sha256:".len() + 64)
                .unwrap_or(false)
        })
        .count()
}

#[test]
fn a_registry_killed_mid_push_is_finished_by_a_rerun_that_sends_only_what_is_missing() {
    let mut reg = Registry::start();
    let e = Env::new();
    let (src, digest) = e.image(64 << 20);
    let remote = reg.url("crash/app:v1");
    // Small chunks and one job: the big layer is in flight for a while.
    let child = e
        .cmd(&[
            "push",
            "--tls-verify=false",
            "--retry",
            "0",
            "--jobs",
            "1",
            "--chunk-size",
            "128K",
            &src,
            &remote,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the registry while the big layer is in flight, after another
    // blob was committed. Not while a commit is under way: the registry
    // writes its link files in place, and one cut short answers 500 for
    // ever after (a storage the registry itself broke, not a state a
    // client can repair).
    let uploads = reg
        .data()
        .join("docker/registry/v2/repositories/crash/app/_uploads");
    wait_until(
        "the push to start an upload",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || {
            let in_flight = std::fs::read_dir(&uploads)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok())
                .filter_map(|e| std::fs::metadata(e.path().join("data")).ok())
                .any(|m| m.len() >= 1 << 20);
            in_flight && committed_links(&reg.data()) >= 1
        },
    );
    reg.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "the push survived a dead registry without retries?"
    );
    reg.restart();
    // No manifest was pushed for a half-uploaded image.
    let st = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &remote])
        .output()
        .unwrap();
    assert!(!st.status.success(), "a manifest exists before its blobs");
    let before = stored_blobs(&reg.data());
    let again = e.json(&["push", "--tls-verify=false", &src, &remote]);
    assert_eq!(again["digest"], digest);
    let present = again["pushed"]["blobs_present"].as_u64().unwrap();
    let uploaded = again["pushed"]["blobs_uploaded"].as_u64().unwrap();
    assert_eq!(present as usize, before, "{again}");
    assert!(
        present >= 1 && uploaded >= 1 && present + uploaded == 3,
        "{again}"
    );
    assert_eq!(skopeo_digest(&remote), digest);
}

#[test]
fn a_flaky_network_is_ridden_out_and_a_dead_one_fails_cleanly() {
    let reg = Registry::start();
    let e = Env::new();
    let (src, digest) = e.image(2 << 20);
    // Every fifth request passes; the others reset, 500, 429 or stall.
    let flaky = FaultProxy::start(reg.port, |n| match n % 5 {
        1 => Fault::Reset,
        2 => Fault::Error500,
        3 => Fault::TooMany,
        4 => Fault::Slow(Duration::from_millis(1500)),
        _ => Fault::Pass,
    });
    let remote = flaky.url("flaky/app:v1");
    let pushed = e.json(&[
        "push",
        "--tls-verify=false",
        "--chunk-size",
        "1M",
        &src,
        &remote,
    ]);
    assert_eq!(pushed["digest"], digest);
    assert_eq!(skopeo_digest(&reg.url("flaky/app:v1")), digest);
    let e2 = Env::new();
    let pulled = e2.json(&[
        "pull",
        "--tls-verify=false",
        &remote,
        &format!("oci:{}", e2.p("b").display()),
    ]);
    assert_eq!(pulled["digest"], digest);
    assert!(flaky.requests.load(std::sync::atomic::Ordering::SeqCst) > 20);
    // A registry that only ever answers 500 to uploads: a clear error in
    // bounded time, and no manifest pointing at missing blobs.
    let broken = FaultProxy::start(
        reg.port,
        |n| if n < 2 { Fault::Pass } else { Fault::Error500 },
    );
    let start = Instant::now();
    let err = e.err(&[
        "push",
        "--tls-verify=false",
        "--retry",
        "2",
        &src,
        &broken.url("broken/app:v1"),
    ]);
    assert!(start.elapsed() < Duration::from_secs(120));
    assert!(err.contains("500") && err.contains("broken/app"), "{err}");
    let st = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &reg.url("broken/app:v1")])
        .output()
        .unwrap();
    assert!(
        !st.status.success(),
        "a manifest was pushed despite failed blobs"
    );
}

#[test]
fn podman_loads_and_runs_both_archive_formats() {
    let e = Env::new();
    let root = e.p("root");
    shell_rootfs(&root);
    let img = format!("oci:{}:v1", e.p("l").display());
    diff_scratch(&root, &img, &[]);
    let rt = e.p("rt");
    std::fs::create_dir_all(&rt).unwrap();
    let tag = format!("localhost/shipyard-e2e/arch{}:v1", std::process::id());
    let d = e.p("d.tar");
    e.ok(&[
        "export",
        &img,
        &format!("docker-archive:{}:{tag}", d.display()),
    ]);
    let o = e.p("o.tar");
    e.ok(&["export", &img, &format!("oci-archive:{}:v1", o.display())]);
    let run_args = |image: &str| podman_run(image, &["/bin/sh", "-c", "echo ran"]);
    let out = podman(&rt)
        .args(["load", "-i", d.to_str().unwrap()])
        .output()
        .unwrap();
    assert_success(&out, "podman load docker-archive");
    let out = podman(&rt).args(run_args(&tag)).output().unwrap();
    assert_success(&out, "podman run (docker-archive)");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ran"));
    let out = podman(&rt)
        .args(["load", "-i", o.to_str().unwrap()])
        .output()
        .unwrap();
    assert_success(&out, "podman load oci-archive");
    let out = podman(&rt)
        .args(run_args(&format!("oci-archive:{}", o.display())))
        .output()
        .unwrap();
    assert_success(&out, "podman run oci-archive:");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ran"));
    let _ = podman(&rt).args(["rmi", "-f", &tag]).output();
}

#[test]
fn push_all_sends_every_tag_of_a_layout() {
    let reg = Registry::start();
    let e = Env::new();
    let (_, digest) = e.image(1 << 16);
    let l = format!("oci:{}", e.p("l").display());
    let out = e.ok(&[
        "push",
        "--all-tags",
        "--tls-verify=false",
        &l,
        &reg.url("every/app"),
    ]);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert_eq!(skopeo_digest(&reg.url("every/app:v1")), digest);
    let base = digest_of_tag(&e.p("l"), "base");
    assert_eq!(skopeo_digest(&reg.url("every/app:base")), base);
    let err = e.err(&[
        "push",
        "--all",
        "--tls-verify=false",
        &l,
        &reg.url("every/app:x"),
    ]);
    assert!(err.contains("without a tag"), "{err}");
    // The older spelling still works.
    let out = e.ok(&[
        "push",
        "--all",
        "--tls-verify=false",
        &l,
        &reg.url("older/app"),
    ]);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert_eq!(skopeo_digest(&reg.url("older/app:v1")), digest);
}

/// A `docker-credential-NAME` helper script in `dir` that answers with the
/// test registry's credentials.
fn credential_helper(dir: &Path, name: &str) {
    let p = dir.join(format!("docker-credential-{name}"));
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn bearer_tokens_credential_helpers_and_docker_config_all_authenticate() {
    let reg = Registry::start_token();
    let tokens = reg.tokens.as_ref().unwrap();
    let e = Env::new();
    let (src, digest) = e.image(1 << 16);
    let remote = reg.url("tok/app:v1");
    // Anonymous: the token server refuses, and the error says where
    // credentials were looked for.
    let err = e.err(&["push", "--tls-verify=false", &src, &remote]);
    assert!(
        err.contains("authentication required") && err.contains("tok/app"),
        "{err}"
    );
    assert!(
        err.contains("auth.json") && err.contains(".docker/config.json"),
        "{err}"
    );
    // A credential helper named by credHelpers in docker's config.
    let bin = e.p("bin");
    std::fs::create_dir_all(&bin).unwrap();
    credential_helper(&bin, "shipyardtest");
    let dc = e.p("dockercfg");
    std::fs::create_dir_all(&dc).unwrap();
    std::fs::write(
        dc.join("config.json"),
        format!(
            "{{\"credHelpers\": {{\"{}\": \"shipyardtest\"}}}}",
            reg.host()
        ),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = e
        .cmd(&["push", "--json", "--tls-verify=false", &src, &remote])
        .env("DOCKER_CONFIG", &dc)
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_success(&out, "push with a credential helper");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["digest"], digest);
    assert!(
        tokens
            .scopes
            .lock()
            .unwrap()
            .iter()
            .any(|s| s == &["repository:tok/app:pull,push"]),
        "{:?}",
        tokens.scopes.lock().unwrap()
    );
    // A mount into another repository asks for both scopes in one token.
    let out = e
        .cmd(&[
            "push",
            "--json",
            "--tls-verify=false",
            &src,
            &reg.url("tok/copy:v1"),
        ])
        .env("DOCKER_CONFIG", &dc)
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_success(&out, "push with mount");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pushed"]["blobs_mounted"], 3, "{v}");
    assert!(
        tokens.scopes.lock().unwrap().iter().any(|s| s.len() == 2
            && s[0] == "repository:tok/copy:pull,push"
            && s[1] == "repository:tok/app:pull"),
        "{:?}",
        tokens.scopes.lock().unwrap()
    );
    // Plain `auths` in docker's config.json, read with a fresh cache.
    use base64::Engine;
    let dc2 = e.p("dockercfg2");
    std::fs::create_dir_all(&dc2).unwrap();
    std::fs::write(
        dc2.join("config.json"),
        format!(
            "{{\"auths\": {{\"{}\": {{\"auth\": \"{}\"}}}}}}",
            reg.host(),
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
        ),
    )
    .unwrap();
    let e2 = Env::new();
    let out = e2
        .cmd(&[
            "pull",
            "--json",
            "--tls-verify=false",
            &remote,
            &format!("oci:{}", e2.p("b").display()),
        ])
        .env("DOCKER_CONFIG", &dc2)
        .output()
        .unwrap();
    assert_success(&out, "pull with docker config auths");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["digest"], digest);
    assert!(tokens
        .scopes
        .lock()
        .unwrap()
        .iter()
        .any(|s| s == &["repository:tok/app:pull"]));
}

#[test]
fn a_mount_the_registry_declines_falls_back_to_an_upload() {
    let reg = Registry::start();
    let e = Env::new();
    let (src, digest) = e.image(1 << 16);
    e.ok(&["push", "--tls-verify=false", &src, &reg.url("home/app:v1")]);
    // The registry forgets that home/app holds the blobs; the cache still
    // names it as their home, so the next push asks for a mount, gets 202,
    // and uploads instead.
    std::fs::remove_dir_all(reg.data().join("docker/registry/v2/repositories/home")).unwrap();
    let v = e.json(&["push", "--tls-verify=false", &src, &reg.url("away/app:v1")]);
    assert_eq!(v["digest"], digest);
    assert_eq!(v["pushed"]["blobs_mounted"], 0, "{v}");
    assert_eq!(v["pushed"]["blobs_uploaded"], 3, "{v}");
    assert_eq!(skopeo_digest(&reg.url("away/app:v1")), digest);
}

#[test]
fn progress_bars_on_a_terminal_and_lines_otherwise() {
    require("script");
    let reg = Registry::start();
    let e = Env::new();
    let (src, _) = e.image(1 << 20);
    // Not a terminal: one line per blob.
    let out = e.run(&["push", "--tls-verify=false", &src, &reg.url("prog/app:v1")]);
    assert_success(&out, "push");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("Pushing blob").count(), 3, "{err}");
    assert!(err.contains(": done"), "{err}");
    // A terminal (script(1) gives it a pty): bars with the overall total.
    let cmd = format!(
        "{} pull --tls-verify=false {} oci:{}",
        bin().display(),
        reg.url("prog/app:v1"),
        e.p("back").display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("XDG_CACHE_HOME", e.p("cache2"))
        .env("TERM", "xterm")
        .output()
        .unwrap();
    assert_success(&out, "pull on a pty");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(tty.contains("total") && tty.contains("ETA"), "{tty}");
    assert!(
        !tty.contains("Copying blob"),
        "plain lines on a terminal: {tty}"
    );
    // --quiet: nothing on stderr.
    let out = e.run(&[
        "-q",
        "push",
        "--tls-verify=false",
        &src,
        &reg.url("prog/app:v2"),
    ]);
    assert_success(&out, "quiet push");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two images, declared as linux/amd64 and linux/arm64 in one index,
/// tagged `multi` in `e`'s layout `l`; returns the index digest and its
/// manifest descriptors.
fn multi_platform_index(e: &Env) -> (shipyard_image::oci::digest::Digest, Vec<serde_json::Value>) {
    use shipyard_image::oci::layout::Layout;
    let mut descs = Vec::new();
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let tree = e.p(&format!("t{i}"));
        write(&tree.join("arch"), arch.as_bytes(), 0o644);
        let d = diff_scratch(&tree, &format!("oci:{}:{arch}", e.p("l").display()), &[]);
        let size = std::fs::metadata(
            e.p("l/blobs/sha256")
                .join(d.trim().trim_start_matches("sha256:")),
        )
        .unwrap()
        .len();
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": d.trim(), "size": size,
            "platform": {"os": "linux", "architecture": arch},
        }));
    }
    let layout = Layout::open(e.p("l")).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": descs});
    let bytes = serde_json::to_vec(&index).unwrap();
    let (idx, size) = layout.put_bytes(&bytes).unwrap();
    let desc = oci_spec::image::Descriptor::new(
        oci_spec::image::MediaType::ImageIndex,
        size,
        shipyard_image::oci::media::to_spec_digest(&idx),
    );
    layout.tag("multi", &desc).unwrap();
    (idx, descs)
}

#[test]
fn a_multi_platform_index_gives_the_host_platform_or_the_one_asked_or_all() {
    let reg = Registry::start();
    let e = Env::new();
    let (idx, descs) = multi_platform_index(&e);
    let remote = reg.url("multi/app:v1");
    let pushed = e.json(&[
        "push",
        "--tls-verify=false",
        &format!("oci:{}:multi", e.p("l").display()),
        &remote,
    ]);
    assert_eq!(
        pushed["digest"],
        idx.to_string(),
        "the index goes up as it is"
    );
    let host = descs[0]["digest"].as_str().unwrap();
    let arm = descs[1]["digest"].as_str().unwrap();
    let pull = |extra: &[&str], tag: &str| -> serde_json::Value {
        let mut a = vec!["pull", "--tls-verify=false"];
        a.extend_from_slice(extra);
        let dst = format!("oci:{}:{tag}", e.p("back").display());
        a.extend_from_slice(&[remote.as_str(), dst.as_str()]);
        e.json(&a)
    };
    assert_eq!(
        pull(&[], "host")["digest"],
        host,
        "the host's platform by default"
    );
    assert_eq!(pull(&["--platform", "linux/arm64"], "arm")["digest"], arm);
    assert_eq!(pull(&["--all"], "all")["digest"], idx.to_string());
    let got = ok(["manifest", &format!("oci:{}:arm", e.p("back").display())]);
    assert!(got.contains("/arch"), "{got}");
    let err = e.err(&[
        "pull",
        "--tls-verify=false",
        "--platform",
        "linux/s390x",
        &remote,
        &format!("oci:{}", e.p("x").display()),
    ]);
    assert!(
        err.contains("linux/s390x") && err.contains("linux/amd64, linux/arm64"),
        "{err}"
    );
}

#[test]
fn a_blob_corrupted_in_transit_is_caught_by_its_digest_and_nothing_is_kept() {
    let reg = Registry::start();
    let e = Env::new();
    let (src, digest) = e.image(1 << 16);
    e.ok(&["push", "--tls-verify=false", &src, &reg.url("bad/app:v1")]);
    let liar = FaultProxy::start(reg.port, |_| Fault::CorruptBlob);
    let e2 = Env::new();
    let dest = e2.p("got");
    let err = e2.err(&[
        "pull",
        "--tls-verify=false",
        &liar.url("bad/app:v1"),
        &format!("oci:{}", dest.display()),
    ]);
    assert!(
        err.contains("is corrupt") && err.contains("hashes to"),
        "{err}"
    );
    assert!(!dest.exists(), "a failed pull writes no layout");
    // A manifest that does not match its digest is refused, by tag
    // (Docker-Content-Digest) and by digest (the reference pins it).
    let liar = FaultProxy::start(reg.port, |_| Fault::CorruptManifest);
    for r in [
        liar.url("bad/app:v1"),
        format!("{}@{digest}", liar.url("bad/app")),
    ] {
        let err = e2.err(&[
            "pull",
            "--tls-verify=false",
            &r,
            &format!("oci:{}", dest.display()),
        ]);
        assert!(
            err.contains("manifest is corrupt") && err.contains("hashes to"),
            "{err}"
        );
    }
    assert!(!dest.exists());
    // The cache holds only verified blobs: the manifest, nothing corrupt.
    let blobs = e2.p("cache/shipyard/oci/blobs/sha256");
    for f in std::fs::read_dir(&blobs).unwrap() {
        let f = f.unwrap();
        let name = f.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "a temp file was left: {name}");
        let bytes = std::fs::read(f.path()).unwrap();
        assert_eq!(shipyard_image::oci::digest::Digest::of(&bytes).hex(), name);
    }
}

// ---- Where credentials go ----

/// The maximum resident size a shipyard run may reach while a registry
/// streams an endless body at it: far below what reading the body whole
/// would take ([`registry::ENDLESS`]).
const BOUNDED_RSS_KIB: u64 = 128 << 10;

/// Runs `c` to the end; returns its output and its peak resident size in
/// KiB (from wait4, so other children of this test process do not count).
// wait4 reaps the child, which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run_measured(mut c: Command) -> (Output, u64) {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t2 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: plain syscall on our own child, with valid out-pointers.
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(got, pid, "wait4: {}", std::io::Error::last_os_error());
    let out = Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout: t1.join().unwrap(),
        stderr: t2.join().unwrap(),
    };
    (out, ru.ru_maxrss as u64)
}

#[test]
fn an_upload_location_on_another_origin_gets_no_credentials() {
    let reg = Registry::start();
    let proxy = AuthProxy::start(reg.port, ProxyAuth::Basic, Twist::ForeignUploads);
    let e = Env::new();
    // Big enough for PATCH chunks as well as monolithic PUTs.
    let (src, digest) = e.image(300 << 10);
    let creds = format!("{USER}:{PASSWORD}");
    let pushed = e.json(&[
        "push",
        "--tls-verify=false",
        "--creds",
        &creds,
        "--chunk-size",
        "64K",
        &src,
        &proxy.url("up/app:v1"),
    ]);
    assert_eq!(pushed["digest"], digest);
    let (to_registry, with_creds) = AuthProxy::count(&proxy.seen);
    assert!(
        to_registry > 0 && with_creds > 0,
        "the registry was asked with credentials"
    );
    let (to_foreign, leaked) = AuthProxy::count(&proxy.foreign);
    assert!(
        to_foreign > 0,
        "the uploads went to the Location the registry named"
    );
    assert_eq!(
        leaked,
        0,
        "credentials reached another origin: {:?}",
        proxy.foreign.lock().unwrap()
    );
    // And the blobs arrived: the registry serves the image.
    assert_eq!(skopeo_digest(&reg.url("up/app:v1")), digest);
}

#[test]
fn a_blob_download_redirected_elsewhere_works_without_credentials() {
    let reg = Registry::start();
    let e = Env::new();
    let (src, digest) = e.image(64 << 10);
    e.ok(&["push", "--tls-verify=false", &src, &reg.url("dl/app:v1")]);
    let proxy = AuthProxy::start(reg.port, ProxyAuth::Basic, Twist::RedirectBlobs);
    let creds = format!("{USER}:{PASSWORD}");
    let e2 = Env::new();
    let pulled = e2.json(&[
        "pull",
        "--tls-verify=false",
        "--creds",
        &creds,
        &proxy.url("dl/app:v1"),
        &format!("oci:{}", e2.p("out").display()),
    ]);
    assert_eq!(pulled["digest"], digest);
    let (to_storage, leaked) = AuthProxy::count(&proxy.foreign);
    assert!(
        to_storage > 0,
        "blobs were fetched from the redirect target"
    );
    assert_eq!(
        leaked, 0,
        "credentials followed a redirect to another origin"
    );
    // A TLS registry redirecting to plain HTTP is not followed.
    let proxy = AuthProxy::start_tls(reg.port, ProxyAuth::Basic, Twist::RedirectBlobs);
    let certs = proxy.cert_dir();
    let e3 = Env::new();
    let err = e3.err(&[
        "pull",
        "--cert-dir",
        certs.to_str().unwrap(),
        "--creds",
        &creds,
        &proxy.url("dl/app:v1"),
        &format!("oci:{}", e3.p("out").display()),
    ]);
    assert!(err.contains("not HTTPS; refusing to follow"), "{err}");
    assert_eq!(AuthProxy::count(&proxy.foreign), (0, 0));
}

#[test]
fn a_token_realm_must_be_https_unless_the_registry_is_reached_without_tls() {
    let reg = Registry::start();
    let e = Env::new();
    let (src, digest) = e.image(16 << 10);
    let creds = format!("{USER}:{PASSWORD}");
    // A TLS registry naming a plain-HTTP realm: nothing is sent there.
    let proxy = AuthProxy::start_tls(reg.port, ProxyAuth::Bearer(Realm::Http), Twist::None);
    let certs = proxy.cert_dir();
    let err = e.err(&[
        "push",
        "--cert-dir",
        certs.to_str().unwrap(),
        "--creds",
        &creds,
        &src,
        &proxy.url("realm/app:v1"),
    ]);
    assert!(
        err.contains("refusing the token realm") && err.contains("plain HTTP"),
        "{err}"
    );
    assert!(
        err.contains(&proxy.host()),
        "the error names the registry: {err}"
    );
    assert_eq!(
        AuthProxy::count(&proxy.realm),
        (0, 0),
        "the plain-HTTP realm was contacted"
    );
    // An https realm on another origin (as auth.docker.io is to Docker
    // Hub) gets the credentials and the push works.
    let proxy = AuthProxy::start_tls(reg.port, ProxyAuth::Bearer(Realm::Https), Twist::None);
    let certs = proxy.cert_dir();
    let pushed = e.json(&[
        "push",
        "--cert-dir",
        certs.to_str().unwrap(),
        "--creds",
        &creds,
        &src,
        &proxy.url("realm/app:v1"),
    ]);
    assert_eq!(pushed["digest"], digest);
    let (asked, with_creds) = AuthProxy::count(&proxy.realm);
    assert!(asked > 0 && with_creds == asked, "{asked} {with_creds}");
    // A registry reached with --tls-verify=false may name a plain realm.
    let proxy = AuthProxy::start(reg.port, ProxyAuth::Bearer(Realm::Http), Twist::None);
    let pushed = e.json(&[
        "push",
        "--tls-verify=false",
        "--creds",
        &creds,
        &src,
        &proxy.url("realm/plain:v1"),
    ]);
    assert_eq!(pushed["digest"], digest);
}

#[test]
fn creds_go_only_to_the_registry_the_command_names() {
    let reg = Registry::start();
    let e = Env::new();
    let (src, digest) = e.image(16 << 10);
    e.ok(&["push", "--tls-verify=false", &src, &reg.url("src/app:v1")]);
    // Two protected registries: copy from one to the other, with --creds
    // for the destination only.
    let from = AuthProxy::start(reg.port, ProxyAuth::Basic, Twist::None);
    let to = AuthProxy::start(reg.port, ProxyAuth::Basic, Twist::None);
    let creds = format!("{USER}:{PASSWORD}");
    let err = e.err(&[
        "push",
        "--tls-verify=false",
        "--creds",
        &creds,
        &from.url("src/app:v1"),
        &to.url("dst/app:v1"),
    ]);
    assert!(
        err.contains("authentication required") && err.contains(&from.host()),
        "{err}"
    );
    let (asked, leaked) = AuthProxy::count(&from.seen);
    assert!(asked > 0);
    assert_eq!(
        leaked,
        0,
        "--creds for {} reached {}",
        to.host(),
        from.host()
    );
    // The source's credentials come from the auth file.
    let mut c = e.cmd(&[
        "login",
        "--tls-verify=false",
        "-u",
        USER,
        "--password-stdin",
        &from.host(),
    ]);
    assert_success(&pipe(&mut c, &format!("{PASSWORD}\n")), "login");
    let wrong = format!("{USER}:not-for-the-source");
    // --creds for the destination do not displace the source's login...
    let err = e.err(&[
        "push",
        "--tls-verify=false",
        "--creds",
        &wrong,
        &from.url("src/app:v1"),
        &to.url("dst/app:v1"),
    ]);
    assert!(
        err.contains(&to.host()) && err.contains("rejected the credentials"),
        "{err}"
    );
    // ...and with the right ones both ends work.
    let pushed = e.json(&[
        "push",
        "--tls-verify=false",
        "--creds",
        &creds,
        &from.url("src/app:v1"),
        &to.url("dst/app:v1"),
    ]);
    assert_eq!(pushed["digest"], digest);
}

#[test]
fn a_manifest_that_is_not_json_is_refused() {
    let reg = Registry::start();
    let e = Env::new();
    let (src, _) = e.image(16 << 10);
    e.ok(&["push", "--tls-verify=false", &src, &reg.url("junk/app:v1")]);
    let proxy = AuthProxy::start(reg.port, ProxyAuth::Basic, Twist::JunkManifest);
    let creds = format!("{USER}:{PASSWORD}");
    let out = e.p("out");
    let err = e.err(&[
        "pull",
        "--tls-verify=false",
        "--creds",
        &creds,
        &proxy.url("junk/app:v1"),
        &format!("oci:{}", out.display()),
    ]);
    assert!(
        err.contains("not a manifest")
            && err.contains("not valid JSON")
            && err.contains(&format!("{}/junk/app:v1", proxy.host())),
        "{err}"
    );
    assert!(!out.join("index.json").exists(), "something was written");
}

#[test]
fn endless_error_token_and_manifest_bodies_are_cut_off_with_bounded_memory() {
    let reg = Registry::start();
    let e = Env::new();
    let (src, _) = e.image(16 << 10);
    e.ok(&["push", "--tls-verify=false", &src, &reg.url("big/app:v1")]);
    let creds = format!("{USER}:{PASSWORD}");
    // An error answer that does not end: its start is shown.
    let proxy = AuthProxy::start(reg.port, ProxyAuth::Basic, Twist::EndlessError);
    let (out, rss) = run_measured(e.cmd(&[
        "pull",
        "--tls-verify=false",
        "--creds",
        &creds,
        &proxy.url("big/app:v1"),
        &format!("oci:{}", e.p("a").display()),
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("400") && err.contains("endless-error-body"),
        "{err}"
    );
    assert!(rss < BOUNDED_RSS_KIB, "peak RSS {rss} KiB");
    // A token answer that does not end.
    let proxy = AuthProxy::start_tls(
        reg.port,
        ProxyAuth::Bearer(Realm::HttpsEndless),
        Twist::None,
    );
    let certs = proxy.cert_dir();
    let (out, rss) = run_measured(e.cmd(&[
        "pull",
        "--cert-dir",
        certs.to_str().unwrap(),
        "--creds",
        &creds,
        &proxy.url("big/app:v1"),
        &format!("oci:{}", e.p("b").display()),
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("token") && err.contains("larger than"),
        "{err}"
    );
    assert!(rss < BOUNDED_RSS_KIB, "peak RSS {rss} KiB");
    // A manifest that does not end: refused once past the bound, and
    // nothing is written.
    let proxy = AuthProxy::start(reg.port, ProxyAuth::Basic, Twist::EndlessManifest);
    let (out, rss) = run_measured(e.cmd(&[
        "pull",
        "--tls-verify=false",
        "--creds",
        &creds,
        &proxy.url("big/app:v1"),
        &format!("oci:{}", e.p("c").display()),
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("manifest larger than") && err.contains("refusing it"),
        "{err}"
    );
    assert!(rss < BOUNDED_RSS_KIB, "peak RSS {rss} KiB");
    assert!(
        !e.p("c").join("index.json").exists(),
        "something was written"
    );
}

#[test]
fn a_build_sends_creds_to_the_registry_it_pushes_to_and_nowhere_else() {
    use crate::common::project::Project;
    let reg = Registry::start();
    let cache = AuthProxy::start(reg.port, ProxyAuth::Basic, Twist::None);
    let dest = AuthProxy::start(reg.port, ProxyAuth::Basic, Twist::None);
    let p = Project::new();
    let creds = format!("{USER}:{PASSWORD}");
    let (_, err) = p.ok(
        "l",
        &[
            "--tls-verify=false",
            "--creds",
            &creds,
            "--cache-from",
            &cache.url("ci/cache"),
            "--push",
            &dest.url("app/i:v1"),
        ],
    );
    // The cache repository, on another registry, was asked (and, with no
    // login for it, missed) without the push registry's password.
    assert!(err.contains("cache lookup in the registry failed"), "{err}");
    let (asked, leaked) = AuthProxy::count(&cache.seen);
    assert!(asked > 0);
    assert_eq!(
        leaked,
        0,
        "--creds for {} reached {}",
        dest.host(),
        cache.host()
    );
    let (_, used) = AuthProxy::count(&dest.seen);
    assert!(used > 0, "the push registry got its credentials");
    assert_eq!(skopeo_digest(&reg.url("app/i:v1")), p.digest("l"));
    // One password for pushes to two registries is refused up front.
    let out = p.build(
        "l2",
        &[
            "--tls-verify=false",
            "--creds",
            &creds,
            "--push",
            &format!("i={}", dest.url("app/i:v2")),
            "--push",
            &format!("i={}", cache.url("app/i:v2")),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--creds name one registry"), "{err}");
}

fn sha256_of(b: &[u8]) -> String {
    shipyard_image::oci::digest::Digest::of(b).to_string()
}

#[test]
fn remote_inspect_reads_the_manifest_and_config_but_no_layer() {
    let reg = Registry::start();
    let e = Env::new();
    let (src, digest) = e.image(1 << 20);
    e.ok(&["push", "--tls-verify=false", &src, &reg.url("look/app:v1")]);
    let proxy = FaultProxy::start(reg.port, |_| Fault::Pass);
    let remote = proxy.url("look/app:v1");
    let j = e.json(&["inspect", "--tls-verify=false", &remote]);
    assert_eq!(j["digest"], digest);
    let layers: Vec<String> = j["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(layers.len(), 2);
    let log = proxy.log.lock().unwrap().clone();
    assert!(
        log.iter().any(|r| r.contains("/manifests/v1")),
        "the manifest was asked for: {log:?}"
    );
    for l in &layers {
        assert!(
            !log.iter()
                .any(|r| r.starts_with("GET") && r.contains(l.as_str())),
            "layer {l} was fetched: {log:?}"
        );
    }
    // --raw: the manifest's exact bytes, as skopeo sees them; --config:
    // the config blob's.
    let raw = e
        .cmd(&["inspect", "--tls-verify=false", "--raw", &remote])
        .output()
        .unwrap();
    assert_success(&raw, "inspect --raw");
    assert_eq!(sha256_of(&raw.stdout), digest);
    assert_eq!(
        raw.stdout,
        skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &reg.url("look/app:v1")
        ])
        .as_bytes()
    );
    let config = e
        .cmd(&["inspect", "--tls-verify=false", "--config", &remote])
        .output()
        .unwrap();
    assert_success(&config, "inspect --config");
    assert_eq!(
        sha256_of(&config.stdout),
        j["configDigest"].as_str().unwrap()
    );
    // The same from the layout.
    let local = e.cmd(&["inspect", "--raw", &src]).output().unwrap();
    assert_eq!(local.stdout, raw.stdout);
    let still = proxy.log.lock().unwrap().clone();
    for l in &layers {
        assert!(!still
            .iter()
            .any(|r| r.starts_with("GET") && r.contains(l.as_str())));
    }
}

#[test]
fn reading_commands_take_the_registry_options() {
    let reg = Registry::start();
    let e = Env::new();
    let (src, digest) = e.image(1 << 16);
    let remote = reg.url("read/app:v1");
    e.ok(&["push", "--tls-verify=false", &src, &remote]);
    let local = e.ok(&["manifest", &src]);
    assert_eq!(e.ok(&["manifest", "--tls-verify=false", &remote]), local);
    let root = e.p("root");
    e.ok(&[
        "unpack",
        "--tls-verify=false",
        &remote,
        root.to_str().unwrap(),
    ]);
    assert!(root.join("big.bin").exists());
    let out = format!("oci:{}:d", e.p("d").display());
    let d = e.ok(&[
        "diff",
        root.to_str().unwrap(),
        "--tls-verify=false",
        "--against",
        &remote,
        "--base",
        &remote,
        "--output",
        &out,
    ]);
    assert!(d.trim().starts_with("sha256:"), "{d}");
    let j = e.json(&["inspect", &out]);
    assert_eq!(
        j["layers"].as_array().unwrap().len(),
        3,
        "the base's two and an empty diff"
    );
    let _ = digest;
}

#[test]
fn tls_against_plain_http_fails_at_once_and_names_the_fix() {
    // The registry speaks plain HTTP: it answers a TLS hello with an HTTP
    // error, which no retry changes.
    let reg = Registry::start();
    let e = Env::new();
    let remote = reg.url("none/app:v1");
    let dest = format!("oci:{}", e.p("x").display());
    for args in [
        vec!["inspect", "--retry", "5", &remote],
        vec!["manifest", &remote],
        vec!["pull", &remote, &dest],
    ] {
        let err = e.err(&args);
        assert!(err.contains("--tls-verify=false"), "{args:?}: {err}");
        assert!(!err.contains("retrying"), "{args:?} retried: {err}");
    }
    // A 4xx other than 408/429 is not retried either.
    let err = e.err(&["inspect", "--tls-verify=false", &remote]);
    assert!(
        err.contains("no manifest") && !err.contains("retrying"),
        "{err}"
    );
}

#[test]
fn authfile_is_read_by_every_registry_command() {
    let reg = Registry::start_secure();
    let e = Env::new();
    let (src, digest) = e.image(1 << 16);
    let certs = reg.cert_dir();
    let certs = certs.to_str().unwrap();
    let remote = reg.url("auth/app:v1");
    let authfile = e.p("elsewhere.json");
    let af = authfile.to_str().unwrap();
    // login writes --authfile, and only there.
    let mut c = e.cmd(&[
        "login",
        &reg.host(),
        "-u",
        USER,
        "--password-stdin",
        "--cert-dir",
        certs,
        "--authfile",
        af,
    ]);
    let mut child = c.stdin(Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(authfile.exists() && !e.p("auth.json").exists());
    let err = e.err(&["push", "--cert-dir", certs, &src, &remote]);
    assert!(err.contains("authentication required"), "{err}");
    e.ok(&["push", "--cert-dir", certs, "--authfile", af, &src, &remote]);
    let j = e.json(&["inspect", "--cert-dir", certs, "--authfile", af, &remote]);
    assert_eq!(j["digest"], digest);
    e.ok(&["manifest", "--cert-dir", certs, "--authfile", af, &remote]);
    e.ok(&["logout", &reg.host(), "--authfile", af]);
    let err = e.err(&["inspect", "--cert-dir", certs, "--authfile", af, &remote]);
    assert!(err.contains("authentication required"), "{err}");
}

/// A registry that only lists tags, `v1`..`v5`, in pages as the
/// distribution spec describes (`n`, `last`, `Link: <…>; rel="next"`).
/// distribution 2.8 (Debian's docker-registry) ignores `n`, so the paging
/// is checked against this. Returns its port and the paths asked for.
fn paging_registry() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut first = String::new();
            // A TLS hello (the --tls-verify=false probe) is not HTTP.
            if r.read_line(&mut first).is_err() || !first.starts_with("GET ") {
                continue;
            }
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
            }
            let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
            log2.lock().unwrap().push(path.clone());
            let all = ["v1", "v2", "v3", "v4", "v5"];
            let (body, link) = match path.split_once('?') {
                Some((p, q)) if p.ends_with("/tags/list") => {
                    let arg = |k: &str| {
                        q.split('&')
                            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                            .map(str::to_string)
                    };
                    let n: usize = arg("n").and_then(|n| n.parse().ok()).unwrap_or(100);
                    let start = arg("last")
                        .and_then(|l| all.iter().position(|t| *t == l))
                        .map_or(0, |i| i + 1);
                    let page: Vec<&str> = all.iter().skip(start).take(n).copied().collect();
                    let link = (start + n < all.len()).then(|| {
                        format!(
                            "Link: <{p}?n={n}&last={}>; rel=\"next\"\r\n",
                            page.last().unwrap()
                        )
                    });
                    (
                        serde_json::json!({"name": "many/app", "tags": page}).to_string(),
                        link.unwrap_or_default(),
                    )
                }
                _ => ("{}".to_string(), String::new()),
            };
            let _ = c.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{link}Connection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    (port, log)
}

#[test]
fn ls_lists_every_tag_of_a_repository_page_by_page() {
    let reg = Registry::start();
    let e = Env::new();
    let (src, _) = e.image(1 << 10);
    e.ok(&[
        "push",
        "--tls-verify=false",
        &src,
        &reg.url("many/app:v1"),
        "--tag",
        "v2",
        "--tag",
        "v3",
        "--tag",
        "v4",
        "--tag",
        "v5",
    ]);
    let (port, log) = paging_registry();
    let out = e.ok(&[
        "ls",
        "--tls-verify=false",
        "--page-size",
        "2",
        &format!("docker://127.0.0.1:{port}/many/app"),
    ]);
    assert_eq!(out, "v1\nv2\nv3\nv4\nv5\n");
    let pages: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.contains("/tags/list"))
        .cloned()
        .collect();
    assert_eq!(
        pages,
        [
            "/v2/many/app/tags/list?n=2",
            "/v2/many/app/tags/list?n=2&last=v2",
            "/v2/many/app/tags/list?n=2&last=v4"
        ]
    );
    // One page when it is big enough; the layout's own tags.
    let all = e.ok(&["ls", "--tls-verify=false", &reg.url("many/app")]);
    assert_eq!(all.lines().count(), 5);
    let local = e.ok(&["ls", &format!("oci:{}", e.p("l").display())]);
    assert_eq!(local, "base\nv1\n");
    let err = e.err(&["ls", "--tls-verify=false", &reg.url("many/app:v1")]);
    assert!(err.contains("without a tag"), "{err}");
    let err = e.err(&["ls", "--tls-verify=false", &reg.url("nothing/here")]);
    assert!(err.contains("nothing/here"), "{err}");
}

#[test]
fn copy_between_any_two_transports_keeps_the_digests() {
    let reg = Registry::start();
    let e = Env::new();
    let (src, digest) = e.image(1 << 18);
    e.ok(&["push", "--tls-verify=false", &src, &reg.url("copy/a:v1")]);
    // registry → registry, read back by skopeo.
    let out = e.ok(&[
        "copy",
        "--tls-verify=false",
        &reg.url("copy/a:v1"),
        &reg.url("copy/b:v1"),
    ]);
    assert_eq!(out.trim(), digest);
    assert_eq!(skopeo_digest(&reg.url("copy/b:v1")), digest);
    // registry → oci-archive → layout.
    let archive = format!("oci-archive:{}:v1", e.p("a.tar").display());
    assert_eq!(
        e.ok(&[
            "copy",
            "--tls-verify=false",
            &reg.url("copy/a:v1"),
            &archive
        ])
        .trim(),
        digest
    );
    let v: serde_json::Value = serde_json::from_str(&skopeo(&["inspect", &archive])).unwrap();
    assert_eq!(v["Digest"], digest);
    let back = format!("oci:{}:back", e.p("back").display());
    assert_eq!(e.ok(&["copy", &archive, &back]).trim(), digest);
    // A multi-platform index: one platform without --all, all of it,
    // byte for byte, with it.
    let (idx, descs) = multi_platform_index(&e);
    e.ok(&[
        "push",
        "--tls-verify=false",
        &format!("oci:{}:multi", e.p("l").display()),
        &reg.url("copy/multi:v1"),
    ]);
    let one = e.ok(&[
        "copy",
        "--tls-verify=false",
        "--platform",
        "linux/arm64",
        &reg.url("copy/multi:v1"),
        &reg.url("copy/one:v1"),
    ]);
    assert_eq!(one.trim(), descs[1]["digest"]);
    let all = e.ok(&[
        "copy",
        "--all",
        "--tls-verify=false",
        &reg.url("copy/multi:v1"),
        &reg.url("copy/all:v1"),
    ]);
    assert_eq!(all.trim(), idx.to_string());
    assert_eq!(
        skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &reg.url("copy/all:v1")
        ]),
        skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &reg.url("copy/multi:v1")
        ])
    );
    let v: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--override-arch",
        "arm64",
        &reg.url("copy/all:v1"),
    ]))
    .unwrap();
    assert_eq!(v["Digest"], idx.to_string());
}

#[test]
fn pulls_go_to_registries_conf_mirrors_first() {
    let reg = Registry::start();
    let e = Env::new();
    let (src, digest) = e.image(1 << 12);
    e.ok(&[
        "push",
        "--tls-verify=false",
        &src,
        &reg.url("mirrored/team/app:v1"),
    ]);
    // The first mirror is down, the second has the image; the registry
    // itself does not exist.
    let dead = crate::common::registry::free_port();
    let conf = e.p("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nlocation = \"origin.invalid\"\n\
             [[registry.mirror]]\nlocation = \"127.0.0.1:{dead}\"\ninsecure = true\n\
             [[registry.mirror]]\nlocation = \"{}/mirrored\"\ninsecure = true\n",
            reg.host()
        ),
    )
    .unwrap();
    let with_conf = |args: &[&str]| {
        let o = e
            .cmd(args)
            .env("CONTAINERS_REGISTRIES_CONF", &conf)
            .output()
            .unwrap();
        assert_success(&o, &format!("{args:?}"));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let dest = format!("oci:{}:m", e.p("m").display());
    let out = with_conf(&["pull", "--retry", "0", "origin.invalid/team/app:v1", &dest]);
    assert_eq!(out.trim(), digest);
    let j: serde_json::Value = serde_json::from_str(&with_conf(&[
        "inspect",
        "--retry",
        "0",
        "--json",
        "docker://origin.invalid/team/app:v1",
    ]))
    .unwrap();
    assert_eq!(j["digest"], digest);
    // Without the mirrors there is nothing to pull from.
    let empty = e.p("empty.conf");
    std::fs::write(&empty, "").unwrap();
    let o = e
        .cmd(&["pull", "--retry", "0", "origin.invalid/team/app:v1", &dest])
        .env("CONTAINERS_REGISTRIES_CONF", &empty)
        .output()
        .unwrap();
    assert!(!o.status.success());
}

#[test]
fn copy_takes_each_sides_creds_and_tls_verify() {
    let reg = Registry::start();
    let e = Env::new();
    let (src, digest) = e.image(16 << 10);
    e.ok(&["push", "--tls-verify=false", &src, &reg.url("src/app:v1")]);
    // A protected plain-HTTP source and a protected TLS destination.
    let from = AuthProxy::start(reg.port, ProxyAuth::Basic, Twist::None);
    let to = AuthProxy::start_tls(reg.port, ProxyAuth::Basic, Twist::None);
    let certs = to.cert_dir();
    let certs = certs.to_str().unwrap();
    let creds = format!("{USER}:{PASSWORD}");
    let (src_ref, dst_ref) = (from.url("src/app:v1"), to.url("dst/app:v1"));
    // --src-tls-verify=false reaches the plain source; the destination
    // still verifies its certificate: without the CA it is refused.
    let err = e.err(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        "--dest-creds",
        &creds,
        &src_ref,
        &dst_ref,
    ]);
    assert!(
        err.contains("--cert-dir") && err.contains(&to.host()),
        "{err}"
    );
    // Without the source's credentials, the source refuses.
    let err = e.err(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-creds",
        &creds,
        "--cert-dir",
        certs,
        &src_ref,
        &dst_ref,
    ]);
    assert!(
        err.contains("authentication required") && err.contains(&from.host()),
        "{err}"
    );
    // Each side's: the copy goes through, digest kept.
    let out = e.json(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        "--dest-creds",
        &creds,
        "--cert-dir",
        certs,
        &src_ref,
        &dst_ref,
    ]);
    assert_eq!(out["digest"], digest);
    // --creds is one side's; with the per-side flags it is ambiguous.
    let err = e.err(&[
        "copy",
        "--creds",
        &creds,
        "--src-creds",
        &creds,
        &src_ref,
        &dst_ref,
    ]);
    assert!(err.contains("--src-creds or --dest-creds"), "{err}");
    let err = e.err(&["copy", "--dest-creds", &creds, &src_ref, &src]);
    assert!(
        err.contains("--dest-creds") && err.contains("not a registry"),
        "{err}"
    );
}

#[test]
fn short_names_are_read_from_each_unqualified_search_registry_in_turn() {
    let (first, second) = (Registry::start(), Registry::start());
    let e = Env::new();
    let (src, digest) = e.image(1 << 12);
    // Only the second registry has it.
    e.ok(&[
        "push",
        "--tls-verify=false",
        &src,
        &second.url("team/app:v1"),
    ]);
    let conf = e.p("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "unqualified-search-registries = [\"{}\", \"{}\"]\n",
            first.host(),
            second.host()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        e.cmd(args)
            .env("CONTAINERS_REGISTRIES_CONF", &conf)
            .output()
            .unwrap()
    };
    let dest = format!("oci:{}:s", e.p("s").display());
    let out = run(&[
        "pull",
        "--tls-verify=false",
        "--retry",
        "0",
        "team/app:v1",
        &dest,
    ]);
    assert_success(&out, "pull of a short name");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), digest);
    // In neither: the error names what each registry answered.
    let out = run(&[
        "pull",
        "--tls-verify=false",
        "--retry",
        "0",
        "team/none:v1",
        &dest,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unqualified-search-registries")
            && err.contains(&format!("{}/team/none:v1", first.host()))
            && err.contains(&format!("{}/team/none:v1", second.host())),
        "{err}"
    );
}
