//! The same tree gives the same digests whatever the umask, the order files
//! were created in, or the directory it lives in. umask is process-wide:
//! each tree is made in a process of its own ([`tree_helper`]).

use crate::common::*;
use nix::sys::stat::{umask, Mode};
use std::path::Path;

const TREE_HELPER: &str = concat!(module_path!(), "::tree_helper");

/// Makes [`rich_tree`] at `root` in a child process whose umask is `mask`.
fn rich_tree_under_umask(root: &Path, reverse: bool, mask: u32) {
    let arg = format!("{}\u{1f}{reverse}\u{1f}{mask:o}", root.display());
    let out = rerun(TREE_HELPER, &arg).output().unwrap();
    assert_success(&out, "the tree helper");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("TREE MADE"),
        "the tree helper did not run: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Not a test of its own: the process [`rich_tree_under_umask`] starts
/// (does nothing unless asked to).
#[test]
fn tree_helper() {
    let Some(arg) = helper_arg(TREE_HELPER) else {
        return;
    };
    let mut parts = arg.split('\u{1f}');
    let (root, reverse, mask) = (
        parts.next().unwrap(),
        parts.next().unwrap() == "true",
        u32::from_str_radix(parts.next().unwrap(), 8).unwrap(),
    );
    umask(Mode::from_bits_truncate(mask));
    rich_tree(Path::new(root), reverse);
    println!("TREE MADE");
}

#[test]
fn same_inputs_same_digests() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("x/a");
    let b = t.path().join("some/other/deeper/place/b");
    rich_tree_under_umask(&a, false, 0o022);
    rich_tree_under_umask(&b, true, 0o077);
    assert_eq!(
        ok(["manifest", a.to_str().unwrap()]),
        ok(["manifest", b.to_str().unwrap()])
    );
    for c in ["gzip", "zstd", "none"] {
        let mut digests = Vec::new();
        for (tree, layout) in [(&a, "la"), (&b, "lb")] {
            let r = format!("oci:{}:{c}", t.path().join(layout).display());
            let out = ok([
                "diff",
                tree.to_str().unwrap(),
                "--against",
                "scratch",
                "--output",
                &r,
                "--compression",
                c,
            ]);
            digests.push(out.trim().to_string());
        }
        assert_eq!(digests[0], digests[1], "{c}: digests differ");
        assert!(digests[0].starts_with("sha256:"));
    }
    // SOURCE_DATE_EPOCH is part of the input: a different one, a different
    // digest; the same one, the same digest.
    let mut with_epoch = Vec::new();
    for (tree, layout) in [(&a, "ea"), (&b, "eb")] {
        let out = shipyard()
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args([
                "diff",
                tree.to_str().unwrap(),
                "--against",
                "scratch",
                "--output",
            ])
            .arg(format!("oci:{}:e", t.path().join(layout).display()))
            .output()
            .unwrap();
        assert_success(&out, "diff");
        with_epoch.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    assert_eq!(with_epoch[0], with_epoch[1]);
    assert_ne!(with_epoch[0], digest_of_tag(&t.path().join("la"), "gzip"));
}
