//! Tapeout onto usrmerged and non-merged runtime bases, from usrmerged
//! and non-merged builders, every combination: the base's `/lib ->
//! usr/lib` symlinks survive unpacking, what the base has with the same
//! content is left out, what differs shadows it (and `--explain` says so),
//! and on scratch the image has the builder's own layout.

use crate::common::*;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// Moves `root/name` to `root/usr/name` and leaves `name -> usr/name`.
fn merge_dir(root: &Path, name: &str) {
    let from = root.join(name);
    let to = root.join("usr").join(name);
    std::fs::create_dir_all(root.join("usr")).unwrap();
    if from.exists() {
        std::fs::rename(&from, &to).unwrap();
    } else {
        std::fs::create_dir_all(&to).unwrap();
    }
    symlink(format!("usr/{name}"), &from).unwrap();
}

/// A builder: the two-images example's shell base (libc and the loader
/// where the host keeps them: /lib/x86_64-linux-gnu, /lib64) plus
/// `libfoo.so.1 -> libfoo.so.1.0` beside libc; usrmerged if asked.
fn builder(root: &Path, merged: bool) {
    let mk = std::process::Command::new("bash")
        .arg(src_dir().join("examples/two-images/make-base.sh"))
        .arg(root)
        .output()
        .unwrap();
    assert_success(&mk, "make-base.sh");
    let libdir = root.join("lib/x86_64-linux-gnu");
    write(&libdir.join("libfoo.so.1.0"), b"builder-foo", 0o644);
    symlink("libfoo.so.1.0", libdir.join("libfoo.so.1")).unwrap();
    if merged {
        for d in ["bin", "lib", "lib64", "sbin"] {
            merge_dir(root, d);
        }
    }
}

/// A runtime base image: the builder's libc and loader (same bytes), its
/// own libfoo.so.1.0 (other bytes) and a file of its own, laid out merged
/// or not. Returns the `oci:` reference.
fn base(t: &Path, builder_root: &Path, merged: bool) -> String {
    let root = t.join(if merged { "base-merged" } else { "base-split" });
    let libdir = root.join("lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&libdir).unwrap();
    std::fs::create_dir_all(root.join("lib64")).unwrap();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("usr/share")).unwrap();
    // Through the builder's own layout, whichever it is.
    let b_lib = std::fs::canonicalize(builder_root.join("lib/x86_64-linux-gnu")).unwrap();
    let b_ld = std::fs::canonicalize(builder_root.join("lib64/ld-linux-x86-64.so.2")).unwrap();
    std::fs::copy(b_lib.join("libc.so.6"), libdir.join("libc.so.6")).unwrap();
    std::fs::copy(&b_ld, root.join("lib64/ld-linux-x86-64.so.2")).unwrap();
    write(&libdir.join("libfoo.so.1.0"), b"base-foo", 0o644);
    symlink("libfoo.so.1.0", libdir.join("libfoo.so.1")).unwrap();
    write(&libdir.join("base-only"), b"keep me", 0o644);
    if merged {
        for d in ["bin", "lib", "lib64", "sbin"] {
            merge_dir(&root, d);
        }
    }
    // Directories as a distribution has them, whatever the umask.
    for e in walkdir::WalkDir::new(&root).min_depth(1) {
        let e = e.unwrap();
        if e.file_type().is_dir() {
            mkdir(e.path(), 0o755);
        }
    }
    let r = format!("oci:{}:base", t.join("baselayout").display());
    diff_scratch(&root, &r, &[]);
    r
}

const SPEC: &str = r#"
[builder]
from = "rootfs:builder"

[build.noop]
run = ":"

[tapeout.t]
after = ["build.noop"]
include = ["/bin/sh", "/lib/x86_64-linux-gnu/libfoo.so.1"]
elf-closure = true

[image.i]
from = "FROM"
tapeouts = ["t"]
"#;

struct Outcome {
    /// The unpacked image.
    tree: PathBuf,
    /// Paths in the tapeout's layer.
    layer: Vec<String>,
    explain: String,
}

fn run(builder_merged: bool, base_merged: Option<bool>) -> (tempfile::TempDir, Outcome) {
    let t = tempfile::tempdir().unwrap();
    let proj = t.path().join("p");
    builder(&proj.join("builder"), builder_merged);
    let from = match base_merged {
        Some(m) => base(t.path(), &proj.join("builder"), m),
        None => "scratch".to_string(),
    };
    write(
        &proj.join("shipyard.toml"),
        SPEC.replace("FROM", &from).as_bytes(),
        0o644,
    );
    let out = t.path().join("out");
    let o = shipyard()
        .env("XDG_CACHE_HOME", t.path().join("cache"))
        .arg("build")
        .arg(&proj)
        .arg("--output")
        .arg(format!("oci:{}", out.display()))
        .arg("--explain")
        .output()
        .unwrap();
    assert_success(&o, "build");
    let tree = t.path().join("unpacked");
    ok([
        "unpack".to_string(),
        format!("oci:{}:i", out.display()),
        tree.display().to_string(),
    ]);
    let layer = layer_members(&out, "i")
        .into_iter()
        .map(|(p, _)| p.trim_end_matches('/').to_string())
        .collect();
    let explain = String::from_utf8_lossy(&o.stdout).into_owned();
    (
        t,
        Outcome {
            tree,
            layer,
            explain,
        },
    )
}

fn is_link(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false)
}

fn check_onto_base(builder_merged: bool, base_merged: bool) {
    let (_t, o) = run(builder_merged, Some(base_merged));
    let what = format!(
        "builder merged={builder_merged} base merged={base_merged}\nlayer: {:?}\nexplain:\n{}",
        o.layer, o.explain
    );
    let libdir = if base_merged {
        "usr/lib/x86_64-linux-gnu"
    } else {
        "lib/x86_64-linux-gnu"
    };
    for d in ["bin", "lib", "lib64", "sbin"] {
        if base_merged {
            assert!(is_link(&o.tree.join(d)), "/{d} is not a symlink: {what}");
        }
        assert!(
            !o.layer.iter().any(|p| p == d),
            "the layer has /{d}: {what}"
        );
    }
    if !base_merged {
        assert!(o.tree.join("lib").is_dir() && !is_link(&o.tree.join("lib")));
    }
    // The base's own file is still there.
    assert_eq!(
        std::fs::read(o.tree.join(libdir).join("base-only")).unwrap(),
        b"keep me",
        "{what}"
    );
    // Where the builder's libraries land: where the base has them. A
    // merged builder's /usr/lib/x/libfoo.so.1.0 is also its /lib/x/…, and
    // a split base has its libfoo under /lib: compared, and placed, there.
    let placed = libdir;
    assert_eq!(
        std::fs::read(o.tree.join(placed).join("libfoo.so.1")).unwrap(),
        b"builder-foo",
        "{what}"
    );
    assert!(
        o.layer.contains(&format!("{placed}/libfoo.so.1.0")),
        "{what}"
    );
    if placed == libdir {
        // libfoo differs: the builder's shadows the base's, and says so.
        assert!(
            o.explain.contains(&format!(
                "shadows the runtime base's /{libdir}/libfoo.so.1.0"
            )),
            "{what}"
        );
        // The same symlink and the same libc: left out.
        assert!(
            !o.layer.contains(&format!("{libdir}/libfoo.so.1")),
            "{what}"
        );
        assert!(
            !o.layer.iter().any(|p| p.ends_with("/libc.so.6")),
            "libc is in the layer though the base has it: {what}"
        );
        assert!(
            o.explain
                .contains("left out: the runtime base has the same"),
            "{what}"
        );
    } else {
        assert_eq!(
            std::fs::read(o.tree.join(libdir).join("libfoo.so.1")).unwrap(),
            b"base-foo",
            "{what}"
        );
    }
    // Nothing the layer holds goes through a symlink of the base.
    for p in &o.layer {
        let mut acc = o.tree.clone();
        let comps: Vec<&str> = p.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            acc.push(c);
            assert!(!is_link(&acc), "{p} goes through a symlink: {what}");
        }
    }
}

#[test]
fn a_merged_builder_onto_a_merged_base() {
    check_onto_base(true, true);
}

#[test]
fn a_split_builder_onto_a_merged_base() {
    check_onto_base(false, true);
}

#[test]
fn a_merged_builder_onto_a_split_base() {
    check_onto_base(true, false);
}

#[test]
fn a_split_builder_onto_a_split_base() {
    check_onto_base(false, false);
}

#[test]
fn on_scratch_a_merged_builder_gives_its_own_layout_and_loader_chain() {
    let (_t, o) = run(true, None);
    let what = format!("layer: {:?}\nexplain:\n{}", o.layer, o.explain);
    for d in ["bin", "lib", "lib64"] {
        assert!(is_link(&o.tree.join(d)), "/{d} is not a symlink: {what}");
    }
    assert!(
        is_link(&o.tree.join("usr/lib/x86_64-linux-gnu/libfoo.so.1")),
        "{what}"
    );
    assert_eq!(
        std::fs::read(o.tree.join("lib/x86_64-linux-gnu/libfoo.so.1")).unwrap(),
        b"builder-foo"
    );
    assert!(
        o.tree.join("lib64/ld-linux-x86-64.so.2").is_file(),
        "{what}"
    );
    assert!(
        o.tree.join("lib/x86_64-linux-gnu/libc.so.6").is_file(),
        "{what}"
    );
    assert!(o.tree.join("bin/sh").is_file(), "{what}");
}
