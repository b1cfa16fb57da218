//! Isolation none (kaniko's model), as a user sees it: the machine's own
//! `/` is the builder of a `from = "host"` spec, rules run in place, and
//! tapeout takes what they changed since a manifest of `/` taken before
//! the first rule. scripts/test runs these as root, as a user with a
//! subuid range and as one without.
//!
//! Rules here write into a directory of the test's own under /var/tmp:
//! at none they write the real filesystem, which must stay clean, and
//! /tmp would not do (at none it is a rule's scratch space, left out of
//! what changed; at the default level it is a fresh tmpfs).

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Output;

const EPOCH: &str = "1700000000";

/// A directory the rules may write at none, removed with the test.
fn machine_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("shipyard-none-")
        .tempdir_in("/var/tmp")
        .unwrap()
}

/// Writes a project (spec + `src/in.txt`) in `dir`.
fn project(dir: &Path, spec: &str) -> PathBuf {
    let p = dir.join("proj");
    write(&p.join("src/in.txt"), b"from the source\n", 0o644);
    write(&p.join("shipyard.toml"), spec.as_bytes(), 0o644);
    p
}

fn build(proj: &Path, out: &Path, cache: &Path, extra: &[&str]) -> Output {
    shipyard()
        .env_remove("SHIPYARD_ISOLATION")
        .env("XDG_CACHE_HOME", cache)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .arg("build")
        .arg(proj)
        .arg("--output")
        .arg(format!("oci:{}", out.display()))
        .args(extra)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn manifest_of(layout: &Path, tag: &str) -> String {
    ok(["manifest", &format!("oci:{}:{tag}", layout.display())])
}

#[test]
fn at_none_a_host_builder_gives_the_image_the_default_level_gives() {
    let m = machine_dir();
    let t = tempfile::tempdir().unwrap();
    let (tree, src) = (m.path().join("tree"), m.path().join("src"));
    let spec = format!(
        r#"
[builder]
from = "host"
sources = {{ "{src}" = "src" }}

[build.one]
run = "mkdir -p {tree}/bin && cp /bin/true {tree}/bin/true && cat {src}/in.txt > {tree}/from-src"

[tapeout.app]
after = ["build.one"]
include = ["{tree}/**"]
remap = {{ "{tree}" = "/app" }}
elf-closure = true

[image.app]
from = "scratch"
tapeouts = ["app"]
"#,
        src = src.display(),
        tree = tree.display()
    );
    let proj = project(t.path(), &spec);
    let default = build(&proj, &t.path().join("a"), &t.path().join("cache"), &[]);
    assert_success(&default, "build at the default level");
    assert!(
        !tree.exists(),
        "a sandboxed rule wrote the machine's filesystem"
    );
    let none = build(
        &proj,
        &t.path().join("b"),
        &t.path().join("cache"),
        &["--isolation", "none"],
    );
    assert_success(&none, "build at isolation none");
    assert!(
        stderr(&none).contains("==> isolation: none"),
        "{}",
        stderr(&none)
    );
    // In place: the rule wrote the machine's tree, reading its source at
    // the target, which is gone again.
    assert_eq!(
        std::fs::read(tree.join("from-src")).unwrap(),
        b"from the source\n"
    );
    assert!(std::fs::symlink_metadata(&src).is_err());
    let (a, b) = (
        manifest_of(&t.path().join("a"), "app"),
        manifest_of(&t.path().join("b"), "app"),
    );
    assert_eq!(a, b, "the two levels taped out different trees");
    for p in ["/app/bin/true", "/app/from-src", "libc.so.6"] {
        assert!(b.contains(p), "{p} is not in the image:\n{b}");
    }
    assert_eq!(
        digest_of_tag(&t.path().join("a"), "app"),
        digest_of_tag(&t.path().join("b"), "app")
    );
}

#[test]
fn at_none_a_tapeout_takes_only_what_the_rules_changed() {
    let m = machine_dir();
    let t = tempfile::tempdir().unwrap();
    let tree = m.path().join("tree");
    for name in ["keep", "gone", "edit"] {
        write(&tree.join(name), format!("{name}\n").as_bytes(), 0o644);
    }
    write(&tree.join("old/file"), b"old\n", 0o644);
    let spec = format!(
        r#"
[builder]
from = "host"

[build.one]
run = "rm {tree}/gone && echo more >> {tree}/edit && echo new > {tree}/new && mkdir {tree}/newdir && echo n > {tree}/newdir/f"

[tapeout.changed]
after = ["build.one"]
include = ["{tree}/**"]

[tapeout.named]
after = ["build.one"]
include = ["{tree}/keep"]

[image.changed]
from = "scratch"
tapeouts = ["changed"]

[image.named]
from = "scratch"
tapeouts = ["named"]
"#,
        tree = tree.display()
    );
    let proj = project(t.path(), &spec);
    let out = build(
        &proj,
        &t.path().join("out"),
        &t.path().join("cache"),
        &["--isolation", "none"],
    );
    assert_success(&out, "build at isolation none");
    let changed = manifest_of(&t.path().join("out"), "changed");
    let at = |name: &str| format!("{}/{name} ", tree.display());
    for name in ["edit", "new", "newdir", "newdir/f"] {
        assert!(
            changed.contains(&at(name)),
            "{name} is not in the image:\n{changed}"
        );
    }
    for name in ["keep", "gone", "old", "old/file"] {
        assert!(
            !changed.contains(&at(name)),
            "{name} did not change but is in the image:\n{changed}"
        );
    }
    // Named literally, what the rules left alone is taken from / itself.
    let named = manifest_of(&t.path().join("out"), "named");
    assert!(named.contains(&at("keep")), "{named}");
}

#[test]
fn at_none_rules_are_not_cached_and_run_again_on_every_build() {
    let m = machine_dir();
    let t = tempfile::tempdir().unwrap();
    let tree = m.path().join("tree");
    let count = m.path().join("count");
    let spec = format!(
        r#"
[builder]
from = "host"

[build.one]
run = "echo ran >> {count} && mkdir -p {tree} && echo x > {tree}/x"

[tapeout.app]
after = ["build.one"]
include = ["{tree}/**"]

[image.app]
from = "scratch"
tapeouts = ["app"]
"#,
        count = count.display(),
        tree = tree.display()
    );
    let proj = project(t.path(), &spec);
    let cache = t.path().join("cache");
    let first = build(&proj, &t.path().join("a"), &cache, &["--isolation", "none"]);
    assert_success(&first, "first build");
    let err = stderr(&first);
    assert!(
        err.contains("rules run in place") && err.contains("are not cached"),
        "{err}"
    );
    let second = build(&proj, &t.path().join("b"), &cache, &["--isolation", "none"]);
    assert_success(&second, "second build");
    let err = stderr(&second);
    assert!(
        err.contains("==> build.one: run: rules are not cached at isolation none"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "ran\nran\n");
    // The image layer is cached, and the same.
    assert!(err.contains("==> image.app layer 1: cached"), "{err}");
    assert_eq!(
        digest_of_tag(&t.path().join("a"), "app"),
        digest_of_tag(&t.path().join("b"), "app")
    );
    let listed = shipyard()
        .env("XDG_CACHE_HOME", &cache)
        .args(["cache", "ls", "--json"])
        .output()
        .unwrap();
    assert_success(&listed, "cache ls");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(!text.contains("build.one"), "a rule was cached:\n{text}");
    assert!(text.contains("tapeout.app"), "{text}");
}

#[test]
fn at_none_a_builder_image_is_refused_before_it_is_unpacked() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    write(&base.join("etc/hostname"), b"base\n", 0o644);
    let layout = t.path().join("layout");
    ok([
        "diff",
        base.to_str().unwrap(),
        "--against",
        "scratch",
        "--output",
        &format!("oci:{}:base", layout.display()),
    ]);
    let spec = format!(
        r#"
[builder]
from = "oci:{}:base"

[build.one]
run = "true"
"#,
        layout.display()
    );
    let proj = project(t.path(), &spec);
    let cache = t.path().join("cache");
    let out = build(
        &proj,
        &t.path().join("out"),
        &cache,
        &["--isolation", "none"],
    );
    assert!(!out.status.success(), "built at none from an image");
    let err = stderr(&out);
    assert!(err.contains("must be `from = \"host\"`"), "{err}");
    let unpacked = cache.join("shipyard/rootfs");
    assert!(
        std::fs::read_dir(&unpacked).map_or(true, |mut d| d.next().is_none()),
        "the builder image was unpacked before the level refused it"
    );
}
