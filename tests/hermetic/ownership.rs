//! Every id in a layer is the id the builder saw: files a step leaves with
//! any mix of root and non-root owner and group (root:root, root:adm,
//! app:root, app:app, setgid), in a tapeout, in a builder image made with
//! `include = ["/**"]`, and in a rule restored from the step cache.
//!
//! The step records what `stat` says inside the builder; the test compares
//! the image's manifest with that record. Without a subordinate id range
//! the chowns fail inside (one id is mapped) and everything is root's; with
//! one (or as root) the matrix is real and is asserted to be.

use crate::common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A builder rootfs with sh and the tools the step needs, copied from the
/// host with their libraries.
fn tool_rootfs(root: &Path) {
    shell_rootfs(root);
    for tool in [
        "mkdir", "touch", "chown", "chgrp", "chmod", "stat", "cat", "ls",
    ] {
        let host = ["/bin", "/usr/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} not found on the host"));
        let real = std::fs::canonicalize(&host).unwrap();
        let dest = root.join("bin").join(tool);
        std::fs::copy(&real, &dest).unwrap();
        let ldd = std::process::Command::new("ldd")
            .arg(&real)
            .output()
            .unwrap();
        for lib in String::from_utf8_lossy(&ldd.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
        {
            let to = root.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            if !to.exists() {
                std::fs::copy(lib, &to).unwrap();
            }
        }
    }
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nadm:x:4:\napp:x:1000:\n").unwrap();
}

/// The step: one file per owner:group pair, a setgid file and a setgid
/// directory, then `stat` of each into /out/ids (numeric, as seen inside).
const STEP: &str = r#"
mkdir -p /out/d
for p in root:root:0:0 rootadm:0:4 approot:1000:0 appapp:1000:1000 appadm:1000:4; do
  n=${p%%:*}; ids=${p#*:}
  touch /out/$n && chown $ids /out/$n 2>/dev/null || true
done
touch /out/sg && chgrp 4 /out/sg 2>/dev/null; chmod 2755 /out/sg
chgrp 4 /out/d 2>/dev/null; chmod 2775 /out/d
touch /out/d/inherits
cd /out && stat -c '%n %u %g' root rootadm approot appapp appadm sg d d/inherits > /out/ids
"#;

fn spec(image_from: &str, include: &str) -> String {
    format!(
        r#"
[builder]
from = "rootfs:base"

[build.own]
run = '''{STEP}'''

[tapeout.t]
after = ["build.own"]
include = ["{include}"]

[image.i]
from = "{image_from}"
tapeouts = ["t"]
"#
    )
}

/// `(path, uid, gid)` of every entry of an image, from `shipyard manifest`.
fn image_ids(image: &str) -> BTreeMap<String, (u64, u64)> {
    let text = ok(["manifest", image]);
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        // `/path key=value...` (docs/manifest-format.md)
        let mut f = line.split(' ');
        let path = f.next().unwrap().trim_start_matches('/').to_string();
        let field = |k: &str| {
            line.split(' ')
                .find_map(|kv| kv.strip_prefix(k))
                .map(|v| v.parse::<u64>().unwrap())
        };
        if let (Some(u), Some(g)) = (field("uid="), field("gid=")) {
            out.insert(path, (u, g));
        }
    }
    out
}

/// What the step saw: `name uid gid` lines of /out/ids, read from the
/// unpacked image.
fn seen_ids(layout: &Path, tag: &str, prefix: &str) -> BTreeMap<String, (u64, u64)> {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("r");
    ok([
        "unpack",
        &format!("oci:{}:{tag}", layout.display()),
        root.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(root.join(prefix).join("ids")).unwrap();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                format!("{prefix}/{}", f[0]),
                (f[1].parse().unwrap(), f[2].parse().unwrap()),
            )
        })
        .collect()
}

struct Build {
    _t: tempfile::TempDir,
    dir: PathBuf,
    cache: PathBuf,
}

impl Build {
    fn new(spec_text: &str) -> Build {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("p");
        tool_rootfs(&dir.join("base"));
        write(&dir.join("shipyard.toml"), spec_text.as_bytes(), 0o644);
        let cache = t.path().join("cache");
        Build { _t: t, dir, cache }
    }

    /// Builds into `out`; returns stdout.
    fn run(&self, out: &Path, extra: &[&str]) -> String {
        let o = shipyard()
            .arg("build")
            .arg(&self.dir)
            .arg("--output")
            .arg(format!("oci:{}", out.display()))
            .args(extra)
            .env("XDG_CACHE_HOME", &self.cache)
            .output()
            .unwrap();
        assert_success(&o, "shipyard build");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

fn assert_matrix(seen: &BTreeMap<String, (u64, u64)>, got: &BTreeMap<String, (u64, u64)>) {
    assert_eq!(seen.len(), 8, "the step recorded every file: {seen:?}");
    for (path, ids) in seen {
        assert_eq!(
            got.get(path),
            Some(ids),
            "{path}: the layer's ids differ from the builder's (all: {got:?})"
        );
    }
    if ids_range_mapped() {
        assert_eq!(seen["out/rootadm"], (0, 4), "{seen:?}");
        assert_eq!(seen["out/approot"], (1000, 0), "{seen:?}");
        assert_eq!(seen["out/appadm"], (1000, 4), "{seen:?}");
        assert_eq!(seen["out/d/inherits"].1, 4, "setgid dir: {seen:?}");
    }
}

/// Builds the step with a tapeout of `include` onto scratch and checks
/// the image's ids against what the step saw.
fn check_tapeout_of(include: &str) {
    let b = Build::new(&spec("scratch", include));
    let out = b.dir.join("layout");
    b.run(&out, &[]);
    let seen = seen_ids(&out, "i", "out");
    let got = image_ids(&format!("oci:{}:i", out.display()));
    assert_matrix(&seen, &got);
}

#[test]
fn tapeout_keeps_every_owner_and_group_the_builder_saw() {
    check_tapeout_of("/out/**");
}

#[test]
fn builder_image_of_the_whole_tree_keeps_every_owner_and_group() {
    check_tapeout_of("/**");
}

#[test]
fn a_rule_restored_from_the_cache_keeps_every_owner_and_group() {
    let b = Build::new(&spec("scratch", "/out/**"));
    let first = b.dir.join("first");
    b.run(&first, &[]);
    // A new tapeout over the same rule: the rule is restored from its
    // captured layer, the tapeout runs again on the restored tree.
    let text = spec("scratch", "/out/**").replace(
        "include = [\"/out/**\"]",
        "include = [\"/out/**\", \"/etc/group\"]",
    );
    write(&b.dir.join("shipyard.toml"), text.as_bytes(), 0o644);
    let second = b.dir.join("second");
    let out = b.run(&second, &["--explain"]);
    assert!(
        out.contains("build.own\tcached\t"),
        "the rule was restored: {out}"
    );
    assert!(
        !out.contains("tapeout.t\tcached\t"),
        "the tapeout ran: {out}"
    );
    let seen = seen_ids(&first, "i", "out");
    let got = image_ids(&format!("oci:{}:i", second.display()));
    assert_matrix(&seen, &got);
}
