//! Several builders in one spec: a build stage, a runtime stage that runs
//! a rule on its base with the build stage's tapeout mounted, a test
//! stage started from the build stage's state, and an image of the
//! runtime stage. On a small base image made from the two-images
//! example's tree, with a step cache of the test's own.

use crate::common::*;
use std::path::{Path, PathBuf};

const SPEC: &str = r#"
[builder.build]
from = "oci:img:base"
sources = { "/src" = "src" }
[builder.final]
from = "oci:img:base"
[builder.test]
from = "builder:build"
after = "build.compile"

[build.compile]
builder = "build"
run = "mkdir -p /out && cat /src/input > /out/app && chmod 755 /out/app && echo junk > /junk"

[tapeout.app]
after = ["build.compile"]
include = ["/out/**"]

[build.install]
builder = "final"
mounts = { "/in" = "tapeout.app" }
run = "mkdir -p /opt && cat /in/out/app > /opt/copied && rm /etc/motd && echo install-ran"

[build.check]
builder = "test"
run = "test -f /out/app && test -f /junk && echo check-ran"

[image.final]
builder = "final"
tapeouts = ["app"]
cmd = ["/bin/cat", "/opt/copied"]
"#;

struct Multi {
    t: tempfile::TempDir,
}

impl Multi {
    fn new(spec: &str) -> Multi {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("p");
        let mk = std::process::Command::new("bash")
            .arg(src_dir().join("examples/two-images/make-base.sh"))
            .arg(t.path().join("base"))
            .output()
            .unwrap();
        assert_success(&mk, "make-base.sh");
        std::fs::create_dir_all(p.join("src")).unwrap();
        diff_scratch(
            &t.path().join("base"),
            &format!("oci:{}:base", p.join("img").display()),
            &[],
        );
        write(&p.join("shipyard.toml"), spec.as_bytes(), 0o644);
        write(&p.join("src/input"), b"v1\n", 0o644);
        Multi { t }
    }

    fn dir(&self) -> PathBuf {
        self.t.path().join("p")
    }

    fn build(&self, cache: &str, out: &str, extra: &[&str]) -> (String, String) {
        let o = shipyard()
            .env("XDG_CACHE_HOME", self.t.path().join(cache))
            .arg("build")
            .arg(self.dir())
            .arg("--output")
            .arg(format!("oci:{}", self.t.path().join(out).display()))
            .args(extra)
            .output()
            .unwrap();
        assert_success(&o, &format!("build {out}"));
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    fn layout(&self, out: &str) -> PathBuf {
        self.t.path().join(out)
    }

    fn edit(&self, from: &str, to: &str) {
        let path = self.dir().join("shipyard.toml");
        let spec = std::fs::read_to_string(&path).unwrap();
        assert!(spec.contains(from), "{from:?} is not in the spec");
        write(&path, spec.replace(from, to).as_bytes(), 0o644);
    }
}

/// `==> STEP (BUILDER): WORD` lines, as `STEP WORD`.
fn said(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("==> "))
        .filter(|l| l.starts_with("build.") || l.starts_with("tapeout."))
        .filter(|l| !l.contains(": done in"))
        .map(|l| {
            let (step, rest) = l.split_once(": ").unwrap_or((l, ""));
            let word = rest.split(':').next().unwrap_or("");
            format!("{step} {word}")
        })
        .collect()
}

fn manifest(layout: &Path, tag: &str) -> String {
    ok([
        "manifest".to_string(),
        format!("oci:{}:{tag}", layout.display()),
    ])
}

#[test]
fn a_runtime_stage_takes_the_build_stage_tapeout_and_caches_per_builder() {
    let m = Multi::new(SPEC);
    let (explain, err) = m.build("cache", "l1", &["--explain"]);
    // --explain and the step cache name each step's builder.
    assert!(
        explain.contains("final\t/out/app\tincluded by tapeout.app (build) (/out/**)"),
        "{explain}"
    );
    let ls = shipyard()
        .env("XDG_CACHE_HOME", m.layout("cache"))
        .args(["cache", "ls"])
        .output()
        .unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.contains("build.install (final)") && ls.contains("tapeout.app (build)"),
        "{ls}"
    );
    let mut lines = said(&err);
    lines.sort();
    assert_eq!(
        lines,
        [
            "build.check (test) run",
            "build.compile (build) run",
            "build.install (final) run",
            "tapeout.app (build) run",
        ],
        "{err}"
    );
    assert!(
        err.contains("check-ran") && err.contains("install-ran"),
        "{err}"
    );
    let text = manifest(&m.layout("l1"), "final");
    // The runtime stage's rule: what it wrote, what it deleted.
    assert!(text.contains("/opt/copied type=file"), "{text}");
    assert!(!text.contains("/etc/motd"), "{text}");
    // The base is still there, under the rule's layer.
    assert!(text.contains("/bin/sh type=file"), "{text}");
    // The build stage's tapeout, not the rest of the build stage.
    assert!(text.contains("/out/app type=file mode=0755"), "{text}");
    assert!(!text.contains("/junk"), "{text}");
    // The mount point made for the rule's tapeout is not a change of it.
    assert!(!text.contains("\n/in type"), "{text}");
    // Three layers: the base's, the rule's (its deletion an OCI
    // whiteout), the tapeout's.
    let info: serde_json::Value = serde_json::from_str(&ok([
        "inspect".to_string(),
        format!("oci:{}:final", m.layout("l1").display()),
        "--json".into(),
    ]))
    .unwrap();
    assert_eq!(info["layers"].as_array().unwrap().len(), 3, "{info}");
    let history = info["config"]["history"].to_string();
    assert!(
        history.contains("shipyard build: build.install"),
        "{history}"
    );

    // Nothing changed: every builder cached, the same image.
    let (_, err) = m.build("cache", "l2", &[]);
    assert!(
        said(&err)
            .iter()
            .all(|l| l.ends_with(" cached") || l.ends_with(" not needed")),
        "{err}"
    );
    assert_eq!(
        digest_of_tag(&m.layout("l1"), "final"),
        digest_of_tag(&m.layout("l2"), "final")
    );

    // The runtime stage changes: the build stage stays cached; the
    // tapeout it mounts is put back for it to read.
    m.edit("echo install-ran", "echo install-ran-2");
    let (_, err) = m.build("cache", "l3", &[]);
    let lines = said(&err);
    assert!(
        lines.contains(&"build.install (final) run".to_string()),
        "{err}"
    );
    assert!(
        lines.contains(&"build.compile (build) cached".to_string()),
        "{err}"
    );
    assert!(
        lines.contains(&"build.check (test) cached".to_string()),
        "{err}"
    );
    assert!(
        lines.contains(&"tapeout.app (build) cached".to_string()),
        "{err}"
    );

    // A source the build stage reads changes: everything downstream of
    // it runs again, the test stage (started after it) too.
    write(&m.dir().join("src/input"), b"v2\n", 0o644);
    let (_, err) = m.build("cache", "l4", &[]);
    let mut lines = said(&err);
    lines.sort();
    assert_eq!(
        lines,
        [
            "build.check (test) run",
            "build.compile (build) run",
            "build.install (final) run",
            "tapeout.app (build) run",
        ],
        "{err}"
    );
    let text = manifest(&m.layout("l4"), "final");
    assert!(
        text.contains("/opt/copied type=file mode=0644 uid=0 gid=0 size=3"),
        "{text}"
    );
}

#[test]
fn an_image_of_a_builder_is_the_same_from_another_cache_and_umask() {
    let m = Multi::new(SPEC);
    m.build("c1", "l1", &[]);
    let mut c = shipyard();
    c.env("XDG_CACHE_HOME", m.layout("c2"))
        .args(["build", "--output"])
        .arg(format!("oci:{}", m.layout("l2").display()))
        .arg(m.dir());
    let out = with_umask(0o077, c);
    assert_success(&out, "build with umask 077");
    assert_eq!(
        digest_of_tag(&m.layout("l1"), "final"),
        digest_of_tag(&m.layout("l2"), "final")
    );
}

#[test]
fn builders_that_do_not_depend_on_each_other_run_at_the_same_time() {
    // Each rule waits for the other's mark: run one after the other, the
    // first would wait until its timeout.
    let spec = r#"
[builder.a]
from = "oci:img:base"
sources = { "/s" = { path = "shared", writable = true } }
[builder.b]
from = "oci:img:base"
sources = { "/s" = { path = "shared", writable = true } }
[build.a]
builder = "a"
timeout = 60
run = "echo > /s/a; while [ ! -e /s/b ]; do :; done"
[build.b]
builder = "b"
timeout = 60
run = "echo > /s/b; while [ ! -e /s/a ]; do :; done"
"#;
    let m = Multi::new(spec);
    std::fs::create_dir_all(m.dir().join("shared")).unwrap();
    let (_, err) = m.build("cache", "l1", &[]);
    let mut lines = said(&err);
    lines.sort();
    assert_eq!(lines, ["build.a (a) run", "build.b (b) run"], "{err}");
}

#[test]
fn several_builders_are_refused_at_isolation_none() {
    let spec = "[builder.a]\nfrom = \"host\"\n[builder.b]\nfrom = \"host\"\n[build.x]\nbuilder = \"a\"\nrun = \"true\"\n";
    let m = Multi::new(spec);
    let out = shipyard()
        .env("XDG_CACHE_HOME", m.layout("cache"))
        .args(["build", "--isolation", "none", "--output"])
        .arg(format!("oci:{}", m.layout("l").display()))
        .arg(m.dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a spec with several builders cannot use it"),
        "{err}"
    );
}

#[test]
fn shell_opens_the_builder_named() {
    let m = Multi::new(SPEC);
    let shell = |builder: &str| {
        shipyard()
            .env("XDG_CACHE_HOME", m.layout("cache"))
            .args(["shell"])
            .arg(m.dir())
            .args(["--builder", builder, "--", "/bin/cat", "/src/input"])
            .output()
            .unwrap()
    };
    // build has the sources; final has none.
    let out = shell("build");
    assert_success(&out, "shell --builder build");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v1\n");
    assert!(!shell("final").status.success());
    let out = shell("nope");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--builder nope: no such builder in the spec (builders: build, final, test)"),
        "{err}"
    );
}
