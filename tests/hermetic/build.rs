//! `shipyard build`: the examples, failures and spec errors, as a user
//! meets them. scripts/test runs these as root and as both test users.

use crate::common::*;
use std::path::{Path, PathBuf};

/// A private copy of an example (a fresh "checkout").
fn checkout(example: &str, into: &Path) -> PathBuf {
    let dest = into.join(example);
    std::fs::create_dir_all(&dest).unwrap();
    for e in walkdir::WalkDir::new(src_dir().join("examples").join(example)).min_depth(1) {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(src_dir().join("examples").join(example))
            .unwrap();
        if rel.starts_with("base") {
            continue;
        }
        if e.file_type().is_dir() {
            std::fs::create_dir_all(dest.join(rel)).unwrap();
        } else {
            std::fs::copy(e.path(), dest.join(rel)).unwrap();
        }
    }
    dest
}

/// Runs `shipyard build`, with a step cache of the test's own (beside the
/// layout), so no test sees what another cached.
fn build(dir: &Path, layout: &Path, extra: &[&str]) -> std::process::Output {
    let mut c = shipyard();
    c.env("XDG_CACHE_HOME", layout.with_extension("cache"))
        .arg("build")
        .arg(dir)
        .arg("--output")
        .arg(format!("oci:{}", layout.display()))
        .args(extra);
    c.output().unwrap()
}

#[test]
fn hello_is_small_runs_its_closure_and_is_reproducible() {
    let t = tempfile::tempdir().unwrap();
    let a = checkout("hello", &t.path().join("one"));
    let out = build(&a, &t.path().join("l1"), &["--explain"]);
    assert_success(&out, "build");
    let explain = String::from_utf8_lossy(&out.stdout);
    assert!(
        explain.contains("/usr/local/bin/hello\tincluded by tapeout.hello (/out/bin/hello)"),
        "{explain}"
    );
    assert!(
        explain.contains("libc.so.6\tneeded by /out/bin/hello (DT_NEEDED libc.so.6)"),
        "{explain}"
    );
    assert!(
        explain.contains("interpreter of /out/bin/hello"),
        "{explain}"
    );
    let info: serde_json::Value = serde_json::from_str(&ok([
        "inspect".to_string(),
        format!("oci:{}:hello", t.path().join("l1").display()),
        "--json".into(),
    ]))
    .unwrap();
    let size: u64 = info["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert!(size < 3 << 20, "hello image is {size} bytes");
    assert_eq!(
        info["config"]["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/hello"])
    );
    // Another checkout, another umask: the same digest.
    let b = checkout("hello", &t.path().join("two/deeper"));
    let mut c = shipyard();
    c.arg("build")
        .arg(&b)
        .arg("--output")
        .arg(format!("oci:{}", t.path().join("l2").display()));
    let out2 = with_umask(0o077, c);
    assert_success(&out2, "second build");
    assert_eq!(
        digest_of_tag(&t.path().join("l1"), "hello"),
        digest_of_tag(&t.path().join("l2"), "hello")
    );
}

#[test]
fn one_pass_two_images_with_owner_override_and_a_deleted_base_file() {
    let t = tempfile::tempdir().unwrap();
    let d = checkout("two-images", t.path());
    let mk = std::process::Command::new("bash")
        .arg(d.join("make-base.sh"))
        .arg(d.join("base"))
        .output()
        .unwrap();
    assert_success(&mk, "make-base.sh");
    let l = t.path().join("l");
    assert_success(&build(&d, &l, &[]), "build");
    let app = ok(["manifest".to_string(), format!("oci:{}:app", l.display())]);
    assert!(
        app.contains("/opt/app/VERSION type=file mode=0644 uid=1000 gid=1000 "),
        "{app}"
    );
    let tools = ok(["manifest".to_string(), format!("oci:{}:tools", l.display())]);
    assert!(tools.contains("/etc/passwd type=file"), "{tools}");
    assert!(
        !tools.contains("/etc/motd"),
        "the deleted base file came back:\n{tools}"
    );
    assert!(!tools.contains("/opt/app"), "{tools}");
    let info: serde_json::Value = serde_json::from_str(&ok([
        "inspect".to_string(),
        format!("oci:{}:app", l.display()),
        "--json".into(),
    ]))
    .unwrap();
    assert_eq!(info["config"]["config"]["User"], "1000");
    assert_eq!(info["config"]["config"]["WorkingDir"], "/opt/app");
    assert_eq!(
        info["config"]["history"][0]["created_by"],
        "shipyard build: tapeout.shell tapeout.app"
    );
    let tinfo: serde_json::Value = serde_json::from_str(&ok([
        "inspect".to_string(),
        format!("oci:{}:tools", l.display()),
        "--json".into(),
    ]))
    .unwrap();
    assert_eq!(
        tinfo["layers"].as_array().unwrap().len(),
        2,
        "layer-per-tapeout gives one layer per tapeout"
    );
    // Building only one image leaves the other alone.
    let l2 = t.path().join("l2");
    assert_success(&build(&d, &l2, &["--image", "tools"]), "build --image");
    assert_eq!(Layout::open(&l2).unwrap().tags().unwrap(), ["tools"]);
    // And the runtime base is subtracted: `tools` on top of `app` adds only
    // what `app` lacks.
    std::fs::write(
        d.join("layered.toml"),
        std::fs::read_to_string(d.join("shipyard.toml"))
            .unwrap()
            .replace(
                "[image.tools]\ntapeouts",
                &format!(
                    "[image.tools]\nfrom = \"oci:{}:app\"\ntapeouts",
                    l.display()
                ),
            ),
    )
    .unwrap();
    let out = shipyard()
        .args(["build", "-f"])
        .arg(d.join("layered.toml"))
        .arg("--output")
        .arg(format!("oci:{}", t.path().join("l3").display()))
        .output()
        .unwrap();
    assert_success(&out, "layered build");
    let layered = ok([
        "manifest".to_string(),
        format!("oci:{}:tools", t.path().join("l3").display()),
    ]);
    assert!(
        layered.contains("/opt/app/VERSION") && layered.contains("/opt/tools/hello"),
        "{layered}"
    );
}

use shipyard_image::oci::layout::Layout;

#[test]
fn a_failing_rule_names_itself_its_code_and_its_log_and_changes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    // A layout with an image already in it must come out untouched.
    write(&t.path().join("tree/f"), b"x", 0o644);
    ok([
        "diff".to_string(),
        t.path().join("tree").display().to_string(),
        "--against".into(),
        "scratch".into(),
        "--output".into(),
        format!("oci:{}:before", l.display()),
    ]);
    let index_before = std::fs::read(l.join("index.json")).unwrap();
    let d = t.path().join("spec");
    write(
        &d.join("shipyard.toml"),
        b"[build.ok]\nrun = \"echo fine\"\n[build.bad]\nafter = [\"build.ok\"]\nrun = \"for i in $(seq 1 30); do echo line $i; done; echo oops >&2; exit 3\"\n[tapeout.t]\nafter = [\"build.bad\"]\ninclude = [\"/out\"]\n[image.i]\ntapeouts = [\"t\"]\n",
        0o644,
    );
    let out = build(&d, &l, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("build.bad failed with exit code 3"), "{err}");
    assert!(err.contains("line 30") && err.contains("oops"), "{err}");
    let tail_start = err.find("last lines of its log").unwrap();
    assert!(
        !err[tail_start..].contains("line 10\n"),
        "more than the tail was printed: {err}"
    );
    assert!(
        err.contains("build.ok | fine"),
        "output is prefixed with the rule name: {err}"
    );
    // The log the error names is still there, whole.
    let path = err
        .split("last lines of its log (")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap();
    let log = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("log {path}: {e}"));
    assert!(log.contains("line 1\n") && log.contains("oops"), "{log}");
    assert_eq!(std::fs::read(l.join("index.json")).unwrap(), index_before);
}

#[test]
fn spec_errors_point_at_the_file_line_and_key() {
    let t = tempfile::tempdir().unwrap();
    write(
        &t.path().join("shipyard.toml"),
        b"[builder]\nfrom = \"host\"\n\n[build.x]\nrun = \"true\"\nafterr = []\n",
        0o644,
    );
    let out = build(t.path(), &t.path().join("l"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("shipyard.toml:6:1: unknown key `afterr`; did you mean `after`?"),
        "{err}"
    );
    let out = shipyard()
        .args(["build", "/nonexistent-project"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-project/shipyard.toml"));
}

#[test]
fn nothing_is_left_behind_even_files_given_to_other_ids() {
    let t = tempfile::tempdir().unwrap();
    let tmp = t.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let d = t.path().join("spec");
    write(
        &d.join("shipyard.toml"),
        // Owned by id 5 (when a range is mapped): the caller cannot delete
        // inside /out/d, only a user namespace can. (Tapeout reads changes
        // as the caller, so they stay readable: 0755.)
        b"[build.b]\nrun = \"mkdir -p /out/d && touch /out/d/f && (chown -R 5:5 /out || true)\"\n[tapeout.t]\nafter = [\"build.b\"]\ninclude = [\"/out/**\"]\n[image.i]\ntapeouts = [\"t\"]\n",
        0o644,
    );
    let out = shipyard()
        .env("TMPDIR", &tmp)
        .arg("build")
        .arg(&d)
        .arg("--output")
        .arg(format!("oci:{}", t.path().join("l").display()))
        .output()
        .unwrap();
    assert_success(&out, "build");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // And the same with a shell.
    let out = shipyard()
        .env("TMPDIR", &tmp)
        .args([
            "shell",
            "--",
            "sh",
            "-c",
            "mkdir -p /x/y && chmod 000 /x/y && (chown 7:7 /x || true)",
        ])
        .output()
        .unwrap();
    assert_success(&out, "shell");
    assert!(std::fs::read_dir(&tmp).unwrap().next().is_none());
}

#[test]
fn shell_opens_the_builder_of_a_spec() {
    let t = tempfile::tempdir().unwrap();
    let d = checkout("hello", t.path());
    let out = shipyard()
        .arg("shell")
        .arg(&d)
        .args([
            "--",
            "sh",
            "-c",
            "test -r /src/hello.c && echo SOURCES-MOUNTED",
        ])
        .output()
        .unwrap();
    assert_success(&out, "shell SPEC");
    assert!(String::from_utf8_lossy(&out.stdout).contains("SOURCES-MOUNTED"));
}

#[test]
fn the_copy_fallback_gives_the_same_images_as_overlay() {
    let t = tempfile::tempdir().unwrap();
    let d = checkout("two-images", t.path());
    let mk = std::process::Command::new("bash")
        .arg(d.join("make-base.sh"))
        .arg(d.join("base"))
        .output()
        .unwrap();
    assert_success(&mk, "make-base.sh");
    let (ov, cp) = (t.path().join("ov"), t.path().join("cp"));
    assert_success(&build(&d, &ov, &[]), "overlay build");
    let out = shipyard()
        .env("SHIPYARD_NO_OVERLAY", "1")
        .arg("build")
        .arg(&d)
        .arg("--output")
        .arg(format!("oci:{}", cp.display()))
        .output()
        .unwrap();
    assert_success(&out, "copy build");
    for img in ["app", "tools"] {
        assert_eq!(
            digest_of_tag(&ov, img),
            digest_of_tag(&cp, img),
            "{img} differs between overlay and copy mode"
        );
    }
    // The deleted base file stays deleted in copy mode too.
    assert!(!ok([
        "manifest".to_string(),
        format!("oci:{}:tools", cp.display())
    ])
    .contains("/etc/motd"));
}

#[test]
fn tapeout_reads_what_a_step_made_private_to_another_id() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("spec");
    write(
        &d.join("shipyard.toml"),
        b"[build.b]\nrun = \"mkdir -p /out/d && echo s > /out/d/secret && chmod 0600 /out/d/secret && chmod 0700 /out/d && (chown -R 5:5 /out/d || true)\"\n[tapeout.t]\nafter = [\"build.b\"]\ninclude = [\"/out/**\"]\n[image.i]\ntapeouts = [\"t\"]\n",
        0o644,
    );
    let l = t.path().join("l");
    assert_success(&build(&d, &l, &[]), "build");
    let m = ok(["manifest".to_string(), format!("oci:{}:i", l.display())]);
    let id = if is_root() || shipyard::sandbox::detect_subids().is_some() {
        5
    } else {
        0
    };
    assert!(
        m.contains(&format!("/out/d type=dir mode=0700 uid={id} gid={id} ")),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "/out/d/secret type=file mode=0600 uid={id} gid={id} size=2 "
        )),
        "{m}"
    );
}

#[test]
fn rules_get_their_env_workdir_user_and_timeout() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("spec");
    let has_range = is_root() || shipyard::sandbox::detect_subids().is_some();
    write(
        &d.join("shipyard.toml"),
        b"[builder]\nenv = { GREETING = \"hi\" }\n\
          [build.prep]\nrun = \"mkdir -p /out /work && chmod 1777 /out\"\n\
          [build.b]\nafter = [\"build.prep\"]\nworkdir = \"/work\"\nuser = \"1000:1000\"\nenv = { RULE = \"b\" }\n\
          run = \"echo $GREETING-$RULE-$VERSION > /out/env; pwd > /out/pwd; id -u > /out/uid\"\n\
          [tapeout.t]\nafter = [\"build.b\"]\ninclude = [\"/out/**\"]\n[image.i]\ntapeouts = [\"t\"]\n",
        0o644,
    );
    let l = t.path().join("l");
    let out = build(&d, &l, &["--set", "VERSION=1.2"]);
    if !has_range {
        // One mapped id: there is no uid 1000 to become. Said clearly.
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("switching to gid 1000"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    assert_success(&out, "build");
    let un = t.path().join("un");
    ok([
        "unpack".to_string(),
        format!("oci:{}:i", l.display()),
        un.display().to_string(),
    ]);
    assert_eq!(
        std::fs::read_to_string(un.join("out/env")).unwrap(),
        "hi-b-1.2\n"
    );
    assert_eq!(
        std::fs::read_to_string(un.join("out/pwd")).unwrap(),
        "/work\n"
    );
    assert_eq!(
        std::fs::read_to_string(un.join("out/uid")).unwrap(),
        "1000\n"
    );
    let m = ok(["manifest".to_string(), format!("oci:{}:i", l.display())]);
    assert!(
        m.contains("/out/uid type=file mode=0644 uid=1000 gid=1000"),
        "{m}"
    );
    // A rule over its timeout is killed and named.
    let d2 = t.path().join("slow");
    write(
        &d2.join("shipyard.toml"),
        b"[build.slow]\nrun = \"sleep 300\"\ntimeout = 1\n",
        0o644,
    );
    let out = build(&d2, &t.path().join("l2"), &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("build.slow: timed out after 1s"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn build_option_errors_are_clear_and_write_nothing() {
    let t = tempfile::tempdir().unwrap();
    let d = checkout("hello", t.path());
    let l = t.path().join("l");
    let out = build(&d, &l, &["--image", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--image nope: no such image in the spec (images: hello)"),
        "{err}"
    );
    let out = shipyard()
        .arg("build")
        .arg(&d)
        .arg("--output")
        .arg(format!("oci:{}:tagged", l.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("name a layout (oci:DIR)"),
        "{err}"
    );
    let out = build(&d, &l, &["--set", "NOEQUALS"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--set NOEQUALS: expected KEY=VALUE"));
    assert!(!l.exists(), "a failed build created the layout");
}

/// A project on the host builder whose rule reads the secret `tok` and
/// leaves only its hash, its listing and the proxy and CA it saw.
fn secret_project(t: &Path) -> PathBuf {
    let dir = t.join("proj");
    write(
        &dir.join("shipyard.toml"),
        br#"
[builder]
from = "host"
host-ca = true

[build.use]
run = """
mkdir -p /out
stat -c '%a %U %s' /run/secrets/tok > /out/secret-stat
sha256sum < /run/secrets/tok > /out/hash
echo "$HTTPS_PROXY" > /out/proxy
cmp "$SSL_CERT_FILE" /etc/ssl/certs/ca-certificates.crt && echo same > /out/ca
"""
secrets = ["tok"]

[tapeout.t]
after = ["build.use"]
include = ["/out/**"]

[image.app]
tapeouts = ["t"]
"#,
        0o644,
    );
    dir
}

/// Every file under `dirs` (blobs, records, logs, states), searched for
/// `needle` in plain, gzip and zstd form.
fn files_holding(dirs: &[&Path], needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for d in dirs {
        for e in walkdir::WalkDir::new(d).into_iter().filter_map(|e| e.ok()) {
            if !e.file_type().is_file() {
                continue;
            }
            let Ok(raw) = std::fs::read(e.path()) else {
                continue;
            };
            let mut forms = vec![raw.clone()];
            let mut g = Vec::new();
            if std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&raw[..]), &mut g)
                .is_ok()
            {
                forms.push(g);
            }
            if let Ok(z) = zstd::decode_all(&raw[..]) {
                forms.push(z);
            }
            if forms
                .iter()
                .any(|f| f.windows(needle.len()).any(|w| w == needle))
            {
                hits.push(e.path().to_path_buf());
            }
        }
    }
    hits
}

#[test]
fn a_secret_reaches_its_rule_and_nothing_else() {
    let t = tempfile::tempdir().unwrap();
    let dir = secret_project(t.path());
    let value = format!("s3cret-{}-value", std::process::id());
    let layout = t.path().join("l");
    let keep = t.path().join("kept");
    let mut c = shipyard();
    c.env("XDG_CACHE_HOME", t.path().join("cache"))
        .env("TOKEN_VALUE", &value)
        .args([
            "build",
            dir.to_str().unwrap(),
            "--keep-builder",
            "--explain",
        ])
        .args(["--secret", "id=tok,env=TOKEN_VALUE", "--output"])
        .arg(format!("oci:{}", layout.display()))
        .env("TMPDIR", &keep);
    std::fs::create_dir_all(&keep).unwrap();
    let out = c.output().unwrap();
    assert_success(&out, "build with a secret");
    let unpacked = t.path().join("u");
    ok([
        "unpack",
        &format!("oci:{}:app", layout.display()),
        unpacked.to_str().unwrap(),
    ]);
    // The rule saw it: read-only, its user's, the whole value.
    let stat = std::fs::read_to_string(unpacked.join("out/secret-stat")).unwrap();
    assert_eq!(stat.trim(), format!("400 root {}", value.len()));
    // Nowhere else: not in a blob of the image or the cache, not in a
    // cache record, not in the logs or the kept builder, not in the output.
    let hits = files_holding(&[&layout, &t.path().join("cache"), &keep], value.as_bytes());
    assert!(hits.is_empty(), "the secret leaked into {hits:?}");
    for stream in [&out.stdout, &out.stderr] {
        assert!(!String::from_utf8_lossy(stream).contains(&value));
    }
    // The key holds the name only: another value is a cache hit (as
    // documented), and a missing secret is refused before anything runs.
    let mut c = shipyard();
    c.env("XDG_CACHE_HOME", t.path().join("cache"))
        .env("TOKEN_VALUE", "another value")
        .args([
            "build",
            dir.to_str().unwrap(),
            "--secret",
            "id=tok,env=TOKEN_VALUE",
        ])
        .arg("--output")
        .arg(format!("oci:{}", t.path().join("l2").display()));
    let again = c.output().unwrap();
    assert_success(&again, "rebuild");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("==> build.use: cached"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let err = fails([
        "build",
        dir.to_str().unwrap(),
        "--output",
        "oci:/nonexistent/x",
    ]);
    assert!(
        err.contains("build.use needs the secret \"tok\": pass --secret id=tok,src=FILE"),
        "{err}"
    );
}

#[test]
fn bad_secret_arguments_are_refused_with_the_form_to_use() {
    let t = tempfile::tempdir().unwrap();
    let dir = secret_project(t.path());
    let d = dir.to_str().unwrap();
    for (arg, want) in [
        ("src=/etc/hostname", "no id=NAME"),
        ("id=../x,src=/etc/hostname", "may hold only letters"),
        ("id=tok", "exactly one of src=FILE and env=VARIABLE"),
        (
            "id=tok,src=/nonexistent-secret",
            "reading /nonexistent-secret",
        ),
        ("id=tok,env=SHIPYARD_TEST_UNSET_VARIABLE", "is not set"),
        ("id=tok,path=/etc/hostname", "unknown field"),
    ] {
        let err = fails(["build", d, "--secret", arg]);
        assert!(err.contains(want), "--secret {arg}: {err}");
    }
    let bad = t.path().join("bad");
    write(
        &bad.join("shipyard.toml"),
        b"[build.a]\nrun = \"true\"\nsecrets = [\"a/b\"]\n",
        0o644,
    );
    let err = fails(["build", bad.to_str().unwrap()]);
    assert!(err.contains("shipyard.toml:3:"), "{err}");
    assert!(err.contains("build.a.secrets"), "{err}");
}

#[test]
fn proxies_and_the_host_ca_reach_steps_but_not_keys_or_images() {
    let t = tempfile::tempdir().unwrap();
    let dir = secret_project(t.path());
    let secret = t.path().join("tok");
    write(&secret, b"x", 0o600);
    let run = |proxy: Option<&str>, layout: &str| {
        let mut c = shipyard();
        c.env("XDG_CACHE_HOME", t.path().join("cache"))
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .args(["build", dir.to_str().unwrap(), "--secret"])
            .arg(format!("id=tok,src={}", secret.display()))
            .arg("--output")
            .arg(format!("oci:{}", t.path().join(layout).display()));
        if let Some(p) = proxy {
            c.env("HTTPS_PROXY", p);
        }
        let out = c.output().unwrap();
        assert_success(&out, "build");
        out
    };
    run(Some("http://proxy.test:3128"), "a");
    let u = t.path().join("u");
    ok([
        "unpack",
        &format!("oci:{}:app", t.path().join("a").display()),
        u.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(u.join("out/proxy")).unwrap().trim(),
        "http://proxy.test:3128"
    );
    // The host's bundle is where the builder's distro reads it, and the
    // variables TLS clients read point at it.
    assert_eq!(
        std::fs::read_to_string(u.join("out/ca")).unwrap().trim(),
        "same"
    );
    // Without the proxy, the same key: cached.
    let again = run(None, "b");
    assert!(String::from_utf8_lossy(&again.stderr).contains("==> build.use: cached"));
    // The image config carries neither.
    let config = ok([
        "inspect",
        &format!("oci:{}:app", t.path().join("a").display()),
    ]);
    assert!(!config.contains("proxy.test"), "{config}");
    assert!(!config.contains("SSL_CERT_FILE"), "{config}");
}

#[test]
fn a_cache_mount_persists_between_builds_and_stays_out_of_layers_and_keys() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("proj");
    let marker = format!("cache-mount-content-{}", std::process::id());
    write(
        &dir.join("shipyard.toml"),
        format!(
            r#"
[builder]
from = "host"
cache = {{ "/var/cache/tool" = "tool" }}

[build.count]
run = """
n=$(cat /var/cache/tool/count 2>/dev/null || echo 0)
echo $((n + 1)) > /var/cache/tool/count
echo {marker} > /var/cache/tool/blob
mkdir -p /out && cp /var/cache/tool/count /out/count
"""

[tapeout.t]
after = ["build.count"]
include = ["/out/**"]

[image.app]
tapeouts = ["t"]
"#
        )
        .as_bytes(),
        0o644,
    );
    let cache = t.path().join("cache");
    let run = |layout: &str, extra: &[&str]| {
        let mut c = shipyard();
        c.env("XDG_CACHE_HOME", &cache)
            .args(["build", dir.to_str().unwrap(), "--output"])
            .arg(format!("oci:{}", t.path().join(layout).display()))
            .args(extra);
        let out = c.output().unwrap();
        assert_success(&out, "build");
        let u = t.path().join(format!("{layout}-u"));
        ok([
            "unpack",
            &format!("oci:{}:app", t.path().join(layout).display()),
            u.to_str().unwrap(),
        ]);
        (
            std::fs::read_to_string(u.join("out/count")).unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(run("a", &[]).0.trim(), "1");
    // Kept between builds.
    assert_eq!(run("b", &["--no-cache"]).0.trim(), "2");
    // Not in the key: the mount's new content is no reason to run again.
    let (_, log) = run("c", &[]);
    assert!(log.contains("==> build.count: cached"), "{log}");
    // Not in a layer: the rule's captured changes, the tapeouts and the
    // images hold nothing of it.
    let shipyard_cache = cache.join("shipyard");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&shipyard_cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "mounts")
        .collect();
    dirs.push(t.path().join("a"));
    let dirs: Vec<&Path> = dirs.iter().map(|p| p.as_path()).collect();
    let hits = files_holding(&dirs, marker.as_bytes());
    assert!(hits.is_empty(), "the cache mount's content is in {hits:?}");
    // The cache commands know it.
    let env_cache = |args: &[&str]| {
        let out = shipyard()
            .env("XDG_CACHE_HOME", &cache)
            .args(args)
            .output()
            .unwrap();
        assert_success(&out, "cache");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let ls = env_cache(&["cache", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.contains(" mount ") && l.contains(" tool ")),
        "{ls}"
    );
    assert!(env_cache(&["cache", "du"]).contains("cache mounts"));
    let pruned = env_cache(&["cache", "prune"]);
    assert!(pruned.contains("1 cache mounts"), "{pruned}");
    assert!(!env_cache(&["cache", "ls"]).contains(" mount "));
    assert_eq!(run("d", &["--no-cache"]).0.trim(), "1", "prune emptied it");
}

#[test]
fn cache_mount_mistakes_name_the_key() {
    let t = tempfile::tempdir().unwrap();
    for (table, want) in [
        (
            r#"cache = { "relative/dir" = "x" }"#,
            "must be an absolute path",
        ),
        (r#"cache = { "/c" = "a/b" }"#, "id \"a/b\""),
        (
            r#"cache = { "/c" = { id = "x", sharing = "lockd" } }"#,
            "locked, shared or private",
        ),
    ] {
        let dir = t.path().join(format!("p{}", want.len()));
        write(
            &dir.join("shipyard.toml"),
            format!("[build.a]\nrun = \"true\"\n{table}\n").as_bytes(),
            0o644,
        );
        let err = fails(["build", dir.to_str().unwrap()]);
        assert!(err.contains("shipyard.toml:3:"), "{err}");
        assert!(err.contains("build.a.cache"), "{err}");
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn build_metadata_for_ci_iidfile_metadata_file_tags_and_docker_flag_names() {
    let t = tempfile::tempdir().unwrap();
    let a = checkout("hello", &t.path().join("one"));
    let layout = t.path().join("l");
    let copy = t.path().join("copy");
    let iid = t.path().join("iid");
    let meta = t.path().join("meta.json");
    let out = build(
        &a,
        &layout,
        &[
            "--build-arg",
            "CFLAGS=-O1",
            "--label",
            "org.example.team=ci",
            "--annotation",
            "org.example.run=42",
            "-t",
            &format!("oci:{}:v1", copy.display()),
            "--iidfile",
            iid.to_str().unwrap(),
            "--metadata-file",
            meta.to_str().unwrap(),
        ],
    );
    assert_success(&out, "build");
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), digest);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let hello = &m["images"]["hello"];
    assert_eq!(hello["digest"], digest.as_str());
    assert_eq!(hello["tag"], "hello");
    assert!(hello["size"].as_u64().unwrap() > 1000, "{m}");
    assert!(hello["pushed"][0].as_str().unwrap().contains("copy"), "{m}");
    // -t copied it, digest and all.
    assert_eq!(digest_of_tag(&copy, "v1"), digest);
    // --label and --annotation reached the image (--build-arg goes the
    // way of --set, as they do).
    let inspect = ok([
        "inspect",
        &format!("oci:{}:hello", layout.display()),
        "--json",
    ]);
    assert!(inspect.contains("org.example.team"), "{inspect}");
    let raw_index = std::fs::read_to_string(layout.join("index.json")).unwrap();
    let manifest_digest = digest.trim_start_matches("sha256:");
    let manifest =
        std::fs::read_to_string(layout.join("blobs/sha256").join(manifest_digest)).unwrap();
    assert!(
        manifest.contains("org.example.run"),
        "{manifest}\n{raw_index}"
    );
    // A bare name is not a place to put an image.
    let err = fails([
        "build",
        a.to_str().unwrap(),
        "-t",
        "myapp:1.0",
        "--output",
        &format!("oci:{}", t.path().join("l2").display()),
    ]);
    assert!(err.contains("name a registry"), "{err}");
}

#[test]
fn quiet_build_prints_only_the_digests() {
    let t = tempfile::tempdir().unwrap();
    let a = checkout("hello", &t.path().join("one"));
    let out = build(&a, &t.path().join("l1"), &["-q"]);
    assert_success(&out, "build -q");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("==>") && !err.contains(" -> "),
        "no progress lines with -q: {err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.is_empty() && stdout.lines().all(|l| l.starts_with("sha256:")),
        "{stdout}"
    );
    // Without -q, the same build says what it does.
    let out = build(&a, &t.path().join("l2"), &[]);
    assert_success(&out, "build");
    assert!(String::from_utf8_lossy(&out.stderr).contains("==> "));
}
