//! `shipyard diff`: what goes into the layer, and round trips through unpack.

use crate::common::rawtar;
use crate::common::*;
use std::path::Path;

fn manifest_file(tree: &Path, out: &Path) {
    ok([
        "manifest".as_ref(),
        tree.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
}

fn diff_to(tree: &Path, against: &str, output: &str, extra: &[&str]) -> String {
    let mut args: Vec<String> = vec![
        "diff".into(),
        tree.display().to_string(),
        "--against".into(),
        against.into(),
        "--output".into(),
        output.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    ok(args)
}

#[test]
fn identical_tree_built_elsewhere_gives_an_empty_layer() {
    let t = tempfile::tempdir().unwrap();
    rich_tree(&t.path().join("a"), false);
    rich_tree(&t.path().join("other/b"), true);
    let mf = t.path().join("a.mf");
    manifest_file(&t.path().join("a"), &mf);
    let out = format!("oci:{}:v1", t.path().join("l").display());
    diff_to(
        &t.path().join("other/b"),
        mf.to_str().unwrap(),
        &out,
        &["--json"],
    );
    assert_eq!(layer_members(&t.path().join("l"), "v1"), vec![]);
}

#[test]
fn layer_holds_exactly_the_changes() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    let b = t.path().join("b");
    rich_tree(&a, false);
    rich_tree(&b, false);
    let mf = t.path().join("a.mf");
    manifest_file(&a, &mf);
    // Same size, new content, new mtime: found by hashing.
    write(&b.join("etc/conf"), b"key=VALUE\n", 0o644);
    // Only the mtime moved: not a change worth a layer entry.
    set_mtime(&b.join("empty"), MTIME + 100);
    // Mode change.
    std::fs::set_permissions(
        b.join("bin/sgid"),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    // New file, deleted file, deleted directory.
    write(&b.join("etc/new"), b"new", 0o600);
    std::fs::remove_file(b.join("etc/secret")).unwrap();
    std::fs::remove_dir_all(b.join("deep")).unwrap();
    // A directory replaced: all old children gone, new ones in.
    std::fs::remove_file(b.join("data/big")).unwrap();
    write(&b.join("data/fresh"), b"fresh", 0o644);
    // Type change: a symlink becomes a file.
    std::fs::remove_file(b.join("lib/abs-link")).unwrap();
    write(&b.join("lib/abs-link"), b"now a file", 0o644);
    fix_mtimes_except(&b, &["empty", "etc/conf"]);
    let out = format!("oci:{}:v1", t.path().join("l").display());
    let json = diff_to(&b, mf.to_str().unwrap(), &out, &["--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["stats"]["added"], 2, "{json}");
    let mut members = layer_members(&t.path().join("l"), "v1");
    members.sort();
    let want: Vec<(String, char)> = vec![
        ("bin/sgid".into(), '0'),
        ("data/".into(), '5'),
        ("data/.wh..wh..opq".into(), '0'),
        ("data/fresh".into(), '0'),
        ("etc/.wh.secret".into(), '0'),
        ("etc/conf".into(), '0'),
        ("etc/new".into(), '0'),
        ("lib/abs-link".into(), '0'),
        (".wh.deep".into(), '0'),
    ];
    let mut want = want;
    want.sort();
    assert_eq!(members, want);
}

fn fix_mtimes_except(root: &Path, keep: &[&str]) {
    for e in walkdir::WalkDir::new(root)
        .min_depth(1)
        .contents_first(true)
    {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_str()
            .unwrap_or("")
            .to_string();
        if !keep.contains(&rel.as_str())
            && (e.file_type().is_dir()
                || rel.starts_with("data")
                || rel.starts_with("lib")
                || rel == "etc/new")
        {
            set_mtime(e.path(), MTIME);
        }
    }
}

#[test]
fn hardlink_groups_travel_whole() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    rich_tree(&a, false);
    let mf = t.path().join("a.mf");
    manifest_file(&a, &mf);
    // Rewrite the shared inode in place: every name now has new content.
    std::fs::write(a.join("bin/app"), b"#!/bin/sh\necho v2\n").unwrap();
    let out = format!("oci:{}:v1", t.path().join("l").display());
    diff_to(&a, mf.to_str().unwrap(), &out, &[]);
    let members = layer_members(&t.path().join("l"), "v1");
    assert_eq!(
        members,
        vec![
            ("bin/app".to_string(), '0'),
            ("bin/app-hardlink".to_string(), '1'),
            ("usr-app".to_string(), '1')
        ]
    );
}

#[test]
fn base_plus_layer_unpacks_to_the_tree() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    rich_tree(&a, false);
    let l = t.path().join("l");
    let base = format!("oci:{}:base", l.display());
    diff_to(&a, "scratch", &base, &["--keep-mtimes"]);
    // Change the tree and stack the difference on top of base.
    write(&a.join("etc/conf"), b"changed content\n", 0o640);
    std::fs::remove_dir_all(a.join("deep")).unwrap();
    write(&a.join("srv/www/index.html"), b"<h1>hi</h1>", 0o644);
    fix_mtimes(&a, MTIME);
    let v2 = format!("oci:{}:v2", l.display());
    diff_to(
        &a,
        &base,
        &v2,
        &[
            "--base",
            &base,
            "--keep-mtimes",
            "--created-by",
            "test step",
        ],
    );
    let info: serde_json::Value = serde_json::from_str(&ok(["inspect", &v2, "--json"])).unwrap();
    assert_eq!(info["layers"].as_array().unwrap().len(), 2);
    assert_eq!(
        info["config"]["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let hist = info["config"]["history"].as_array().unwrap();
    assert_eq!(hist.len(), 2);
    assert_eq!(hist[1]["created_by"], "test step");
    assert_eq!(info["tags"], serde_json::json!(["v2"]));
    // Unpack and compare: the tree, the unpacked tree and the image's own
    // manifest (read from tar headers) all agree, byte for byte.
    let un = t.path().join("un");
    ok(["unpack", &v2, un.to_str().unwrap()]);
    let tree_m = ok(["manifest", a.to_str().unwrap()]);
    let un_m = ok(["manifest", un.to_str().unwrap()]);
    let img_m = ok(["manifest", &v2]);
    assert_eq!(un_m, tree_m);
    assert_eq!(img_m, tree_m);
    // And the top layer alone is small: it holds the three changes.
    let members: Vec<String> = layer_members(&l, "v2").into_iter().map(|m| m.0).collect();
    assert_eq!(
        members,
        [
            ".wh.deep",
            "etc/conf",
            "srv/",
            "srv/www/",
            "srv/www/index.html"
        ]
    );
}

#[test]
fn mtimes_are_clamped_by_default_and_to_source_date_epoch() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    write(&a.join("f"), b"x", 0o644);
    set_mtime(&a.join("f"), MTIME);
    let l = t.path().join("l");
    diff_to(&a, "scratch", &format!("oci:{}:zero", l.display()), &[]);
    let out = shipyard()
        .env("SOURCE_DATE_EPOCH", "1500000000")
        .args([
            "diff",
            a.to_str().unwrap(),
            "--against",
            "scratch",
            "--output",
        ])
        .arg(format!("oci:{}:sde", l.display()))
        .output()
        .unwrap();
    assert_success(&out, "diff");
    let z = ok(["manifest".to_string(), format!("oci:{}:zero", l.display())]);
    let s = ok(["manifest".to_string(), format!("oci:{}:sde", l.display())]);
    assert!(
        z.contains("/f type=file mode=0644 uid=") && z.contains(" mtime=0 "),
        "{z}"
    );
    assert!(s.contains(" mtime=1500000000 "), "{s}");
    let info: serde_json::Value = serde_json::from_str(&ok([
        "inspect".to_string(),
        format!("oci:{}:sde", l.display()),
        "--json".into(),
    ]))
    .unwrap();
    assert_eq!(info["config"]["created"], "2017-07-14T02:40:00Z");
    let bad = shipyard()
        .env("SOURCE_DATE_EPOCH", "yesterday")
        .args([
            "diff",
            a.to_str().unwrap(),
            "--against",
            "scratch",
            "--output",
        ])
        .arg(format!("oci:{}:bad", l.display()))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("SOURCE_DATE_EPOCH=\"yesterday\""));
}

#[test]
fn all_compressions_round_trip() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    rich_tree(&a, false);
    let want = strip_mtimes(&ok(["manifest", a.to_str().unwrap()]));
    for (c, mt) in [
        ("gzip", "application/vnd.oci.image.layer.v1.tar+gzip"),
        ("zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
        ("none", "application/vnd.oci.image.layer.v1.tar"),
    ] {
        let r = format!("oci:{}:{c}", t.path().join("l").display());
        diff_to(&a, "scratch", &r, &["--compression", c, "--level", "1"]);
        let info: serde_json::Value = serde_json::from_str(&ok(["inspect", &r, "--json"])).unwrap();
        assert_eq!(info["layers"][0]["mediaType"], mt);
        let un = t.path().join(format!("un-{c}"));
        ok(["unpack", &r, un.to_str().unwrap()]);
        assert_eq!(
            strip_mtimes(&ok(["manifest", un.to_str().unwrap()])),
            want,
            "{c}"
        );
    }
}

#[test]
fn diff_errors_are_clear() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    write(&a.join("f"), b"x", 0o644);
    let l = format!("oci:{}", t.path().join("l").display());
    let e = fails([
        "diff",
        a.to_str().unwrap(),
        "--against",
        "scratch",
        "--output",
        &l,
    ]);
    assert!(e.contains("names no tag"), "{e}");
    let e = fails([
        "diff",
        a.to_str().unwrap(),
        "--against",
        "/nonexistent.mf",
        "--output",
        &format!("{l}:x"),
    ]);
    assert!(e.contains("/nonexistent.mf"), "{e}");
    let bad = t.path().join("bad.mf");
    std::fs::write(
        &bad,
        "#shipyard-manifest v1\n/a type=file mode=0644\n/b type=blob\n",
    )
    .unwrap();
    let e = fails([
        "diff",
        a.to_str().unwrap(),
        "--against",
        bad.to_str().unwrap(),
        "--output",
        &format!("{l}:x"),
    ]);
    assert!(e.contains("bad.mf:3: unknown type \"blob\""), "{e}");
    let e = fails([
        "diff",
        a.to_str().unwrap(),
        "--against",
        "containers-storage:x",
        "--output",
        &format!("{l}:x"),
    ]);
    assert!(e.contains("not supported"), "{e}");
    let e = fails([
        "diff",
        "/nonexistent-tree",
        "--against",
        "scratch",
        "--output",
        &format!("{l}:x"),
    ]);
    assert!(e.contains("/nonexistent-tree"), "{e}");
    let e = fails([
        "diff",
        a.to_str().unwrap(),
        "--against",
        "scratch",
        "--output",
        &format!("{l}:-bad"),
    ]);
    assert!(e.contains("invalid tag"), "{e}");
}

/// What `shipyard manifest` says an image holds (read from its layers,
/// without unpacking) is where unpack put things.
#[test]
fn image_manifest_follows_the_resolution_of_unpack() {
    let t = tempfile::tempdir().unwrap();
    let (l, _) = rawtar::image(
        t.path(),
        vec![
            rawtar::layer(&[
                rawtar::dir("usr/"),
                rawtar::dir("usr/bin/"),
                rawtar::symlink("bin", "usr/bin"),
            ]),
            rawtar::layer(&[rawtar::file("bin/tool", b"tool")]),
        ],
    );
    let m = ok(["manifest", &format!("oci:{}:t", l.display())]);
    assert!(m.contains("\n/usr/bin/tool "), "{m}");
    assert!(!m.contains("\n/bin/tool "), "{m}");
}
/// The layer `shipyard diff` writes from a tree of libraries with links
/// that climb above it (as a copy of /usr/lib/x86_64-linux-gnu has)
/// unpacks to the same tree.
#[test]
fn diff_of_a_tree_with_climbing_links_unpacks() {
    let t = tempfile::tempdir().unwrap();
    let work = t.path();
    write(&work.join("outside/target"), b"precious", 0o644);
    let tree = work.join("tree");
    write(&tree.join("libz.so.1.2.13"), b"\x7fELF", 0o755);
    std::os::unix::fs::symlink("libz.so.1.2.13", tree.join("libz.so.1")).unwrap();
    std::os::unix::fs::symlink(
        "../llvm-14/lib/libclang-cpp.so.14",
        tree.join("libclang-cpp.so.14"),
    )
    .unwrap();
    std::os::unix::fs::symlink("../../..", tree.join("up")).unwrap();
    std::os::unix::fs::symlink("/usr/lib", tree.join("abs")).unwrap();
    let out = format!("oci:{}:t", work.join("l").display());
    ok([
        "diff",
        tree.to_str().unwrap(),
        "--against",
        "scratch",
        "--output",
        &out,
    ]);
    let root = work.join("root");
    ok(["unpack", &out, root.to_str().unwrap()]);
    // Mtimes are clamped in layers (SOURCE_DATE_EPOCH); all else is equal.
    let m = |p: &Path| {
        ok(["manifest", p.to_str().unwrap()])
            .lines()
            .map(|l| {
                l.split(' ')
                    .filter(|f| !f.starts_with("mtime="))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(m(&tree), m(&root));
    // Nothing went through the climbing links.
    let beside: Vec<_> = std::fs::read_dir(work.join("outside"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, ["target"]);
    assert_eq!(
        std::fs::read(work.join("outside/target")).unwrap(),
        b"precious"
    );
}
