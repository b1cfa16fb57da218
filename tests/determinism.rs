//! The same tree gives the same digests whatever the umask, the order files
//! were created in, or the directory it lives in. One test per binary:
//! umask is process-wide.

mod common;
use common::*;
use nix::sys::stat::{umask, Mode};

#[test]
fn same_inputs_same_digests() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("x/a");
    let b = t.path().join("some/other/deeper/place/b");
    let old = umask(Mode::from_bits_truncate(0o022));
    rich_tree(&a, false);
    umask(Mode::from_bits_truncate(0o077));
    rich_tree(&b, true);
    umask(old);
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
