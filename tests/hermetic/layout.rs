//! The layout store: tags, concurrent writers, gc, digests.

use crate::common::*;
use shipyard_image::oci::digest::Digest;
use shipyard_image::oci::layout::Layout;
use std::path::Path;

fn build(tree: &Path, out: &str, content: &[u8]) {
    write(&tree.join("f"), content, 0o644);
    ok([
        "diff",
        tree.to_str().unwrap(),
        "--against",
        "scratch",
        "--output",
        out,
    ]);
}

#[test]
fn concurrent_writers_never_lose_tags() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    build(
        &t.path().join("a"),
        &format!("oci:{}:base", l.display()),
        b"a",
    );
    // 16 processes at once, each adding its own tag.
    let children: Vec<_> = (0..16)
        .map(|i| {
            shipyard()
                .args([
                    "tag",
                    &format!("oci:{}:base", l.display()),
                    &format!("t{i}"),
                ])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let tags = Layout::open(&l).unwrap().tags().unwrap();
    assert_eq!(tags.len(), 17, "{tags:?}");
    // And no temp file is left in the layout.
    let stray: Vec<_> = std::fs::read_dir(&l)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(stray.is_empty());
}

#[test]
fn concurrent_diffs_into_one_layout_keep_every_image() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    for i in 0..6 {
        write(
            &t.path().join(format!("src{i}/f")),
            format!("content {i}").as_bytes(),
            0o644,
        );
    }
    let children: Vec<_> = (0..6)
        .map(|i| {
            shipyard()
                .args([
                    "diff",
                    t.path().join(format!("src{i}")).to_str().unwrap(),
                    "--against",
                    "scratch",
                    "--output",
                ])
                .arg(format!("oci:{}:img{i}", l.display()))
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    for i in 0..6 {
        let un = t.path().join(format!("un{i}"));
        ok([
            "unpack".to_string(),
            format!("oci:{}:img{i}", l.display()),
            un.display().to_string(),
        ]);
        assert_eq!(
            std::fs::read(un.join("f")).unwrap(),
            format!("content {i}").as_bytes()
        );
    }
}

#[test]
fn retag_moves_and_gc_collects_what_nothing_references() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    let r = |tag: &str| format!("oci:{}:{tag}", l.display());
    build(&t.path().join("a"), &r("v1"), b"first");
    let first = digest_of_tag(&l, "v1");
    build(&t.path().join("a"), &r("v1"), b"second");
    let second = digest_of_tag(&l, "v1");
    assert_ne!(first, second);
    let layout = Layout::open(&l).unwrap();
    assert_eq!(layout.tags().unwrap(), ["v1"]);
    // The first image is unreferenced now: gc removes its manifest, config
    // and layer, keeps everything of the second.
    let out = ok(["gc".to_string(), format!("oci:{}", l.display())]);
    assert!(out.contains(&first), "{out}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(!layout.has_blob(&first.parse().unwrap()));
    ok([
        "unpack".to_string(),
        r("v1"),
        t.path().join("un").display().to_string(),
    ]);
    // A second gc finds nothing.
    assert_eq!(ok(["gc".to_string(), format!("oci:{}", l.display())]), "");
}

#[test]
fn images_are_found_by_tag_or_digest() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    build(
        &t.path().join("a"),
        &format!("oci:{}:one", l.display()),
        b"1",
    );
    let d = digest_of_tag(&l, "one");
    let by_digest = ok([
        "inspect".to_string(),
        format!("oci:{}@{d}", l.display()),
        "--json".into(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&by_digest).unwrap();
    assert_eq!(v["digest"], d);
    assert_eq!(v["tags"], serde_json::json!(["one"]));
    // The only image is found without a tag.
    ok(["inspect".to_string(), format!("oci:{}", l.display())]);
    build(
        &t.path().join("b"),
        &format!("oci:{}:two", l.display()),
        b"2",
    );
    let e = fails(["inspect".to_string(), format!("oci:{}", l.display())]);
    assert!(
        e.contains("holds 2 images") && e.contains("one, two"),
        "{e}"
    );
    let e = fails(["inspect".to_string(), format!("oci:{}:three", l.display())]);
    assert!(
        e.contains("no image tagged \"three\"") && e.contains("one, two"),
        "{e}"
    );
    let e = fails([
        "inspect".to_string(),
        format!("oci:{}", t.path().join("nope").display()),
    ]);
    assert!(e.contains("is not an OCI layout"), "{e}");
}

#[test]
fn corrupt_config_is_detected_by_digest() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    build(&t.path().join("a"), &format!("oci:{}:x", l.display()), b"1");
    let layout = Layout::open(&l).unwrap();
    let desc = layout.resolve(Some("x")).unwrap();
    let img = shipyard_image::oci::image::Image::load(&layout, &desc).unwrap();
    let p = layout.blob_path(&img.config_digest);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[5] = b'X';
    std::fs::write(&p, bytes).unwrap();
    let e = fails(["inspect".to_string(), format!("oci:{}:x", l.display())]);
    assert!(
        e.contains(&format!("blob {} is corrupt", img.config_digest)),
        "{e}"
    );
    let e = fails(["manifest".to_string(), format!("oci:{}:x", l.display())]);
    assert!(e.contains("is corrupt"), "{e}");
}

#[test]
fn a_blob_that_fails_verification_is_never_stored() {
    let t = tempfile::tempdir().unwrap();
    let layout = Layout::open_or_create(t.path().join("l")).unwrap();
    let claimed = Digest::of(b"what the sender promised");
    let err = layout
        .put_reader(&b"what arrived"[..], Some(&claimed))
        .unwrap_err();
    assert!(err.to_string().contains("hashes to"), "{err}");
    assert!(!layout.has_blob(&claimed));
    assert!(!layout.has_blob(&Digest::of(b"what arrived")));
    let files: Vec<_> = std::fs::read_dir(t.path().join("l/blobs/sha256"))
        .unwrap()
        .collect();
    assert!(files.is_empty(), "temp file left: {files:?}");
}

#[test]
fn layout_files_are_canonical_and_valid() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    build(&t.path().join("a"), &format!("oci:{}:x", l.display()), b"1");
    assert_eq!(
        std::fs::read_to_string(l.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(l.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "x"
    );
    // Every blob's name is its digest.
    for e in std::fs::read_dir(l.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let bytes = std::fs::read(e.path()).unwrap();
        assert_eq!(Digest::of(&bytes).hex(), e.file_name().to_str().unwrap());
    }
}

/// A reader's view after a writer died at any point: the layout opens, every
/// blob is what its name says, every tag leads to a complete image.
fn assert_layout_consistent(l: &Path) {
    let layout = Layout::open(l).unwrap();
    for e in std::fs::read_dir(l.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".tmp-") {
            continue; // invisible to readers; gc removes stale ones
        }
        let bytes = std::fs::read(e.path()).unwrap();
        assert_eq!(
            Digest::of(&bytes).hex(),
            name,
            "blob content does not match its name"
        );
    }
    for tag in layout.tags().unwrap() {
        let d = layout.resolve(Some(&tag)).unwrap();
        let img = shipyard_image::oci::image::Image::load(&layout, &d).unwrap();
        for (desc, _) in img.layers() {
            let dg = shipyard_image::oci::media::digest_of(&desc).unwrap();
            layout.verify_blob(&dg, Some(desc.size())).unwrap();
        }
    }
}

#[test]
fn a_writer_killed_at_any_moment_leaves_a_valid_layout() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    // Incompressible content so the write takes a while.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut noise = vec![0u8; 24 << 20];
    for b in noise.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *b = seed as u8;
    }
    write(&a.join("noise"), &noise, 0o644);
    let l = t.path().join("l");
    build(
        &t.path().join("seed"),
        &format!("oci:{}:keep", l.display()),
        b"kept",
    );
    for delay_ms in [5u64, 40, 120, 300, 800] {
        let mut child = shipyard()
            .args([
                "diff",
                a.to_str().unwrap(),
                "--against",
                "scratch",
                "--output",
            ])
            .arg(format!("oci:{}:victim", l.display()))
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        assert_layout_consistent(&l);
        // What was there before is untouched.
        let un = t.path().join(format!("un{delay_ms}"));
        ok([
            "unpack".to_string(),
            format!("oci:{}:keep", l.display()),
            un.display().to_string(),
        ]);
        assert_eq!(std::fs::read(un.join("f")).unwrap(), b"kept");
    }
}

/// Runs `shipyard gc` on `l` over and over until `done`; returns how many
/// times it ran.
fn gc_until(l: &Path, done: &std::sync::atomic::AtomicBool) -> usize {
    let mut runs = 0;
    while !done.load(std::sync::atomic::Ordering::SeqCst) || runs == 0 {
        let out = shipyard()
            .args(["gc", &format!("oci:{}", l.display())])
            .output()
            .unwrap();
        assert_success(&out, "gc");
        runs += 1;
    }
    runs
}

#[test]
fn gc_racing_concurrent_writers_leaves_no_dangling_tag() {
    const WRITERS: usize = 40;
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    build(
        &t.path().join("seed"),
        &format!("oci:{}:seed", l.display()),
        b"seed",
    );
    // Some incompressible bytes per writer, so each spends a while between
    // its first blob and its tag.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..WRITERS {
        let mut noise = vec![0u8; 256 << 10];
        for b in noise.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        write(&t.path().join(format!("src{i}/noise")), &noise, 0o644);
        write(
            &t.path().join(format!("src{i}/id")),
            format!("writer {i}").as_bytes(),
            0o644,
        );
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    let gcs = std::thread::scope(|s| {
        let gc = s.spawn(|| gc_until(&l, &done));
        let children: Vec<_> = (0..WRITERS)
            .map(|i| {
                shipyard()
                    .args([
                        "diff",
                        t.path().join(format!("src{i}")).to_str().unwrap(),
                        "--against",
                        "scratch",
                        "--output",
                    ])
                    .arg(format!("oci:{}:tag{i}", l.display()))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success(), "a writer failed");
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        gc.join().unwrap()
    });
    assert!(gcs > 0);
    // Every tag is there and leads to a whole image: manifest, config and
    // layers present and intact.
    let tags = Layout::open(&l).unwrap().tags().unwrap();
    let mut want: Vec<String> = (0..WRITERS).map(|i| format!("tag{i}")).collect();
    want.push("seed".into());
    want.sort();
    assert_eq!(tags, want);
    let layout = Layout::open(&l).unwrap();
    let mut dangling = Vec::new();
    for tag in &tags {
        let d = layout.resolve(Some(tag)).unwrap();
        let ok = shipyard_image::oci::image::Image::load(&layout, &d).is_ok_and(|img| {
            let cfg = img.manifest.config();
            let cd = shipyard_image::oci::media::digest_of(cfg).unwrap();
            layout.verify_blob(&cd, Some(cfg.size())).is_ok()
                && img.layers().iter().all(|(desc, _)| {
                    let dg = shipyard_image::oci::media::digest_of(desc).unwrap();
                    layout.verify_blob(&dg, Some(desc.size())).is_ok()
                })
        });
        if !ok {
            dangling.push(tag.clone());
        }
    }
    assert!(dangling.is_empty(), "tags with missing blobs: {dangling:?}");
    assert_layout_consistent(&l);
    // And each image holds what its writer wrote.
    for i in [0, WRITERS / 2, WRITERS - 1] {
        let un = t.path().join(format!("un{i}"));
        ok([
            "unpack".to_string(),
            format!("oci:{}:tag{i}", l.display()),
            un.display().to_string(),
        ]);
        assert_eq!(
            std::fs::read(un.join("id")).unwrap(),
            format!("writer {i}").as_bytes()
        );
    }
}

#[test]
fn gc_through_a_handle_that_is_writing_is_refused_instead_of_deadlocking() {
    let t = tempfile::tempdir().unwrap();
    let layout = Layout::open_or_create(t.path().join("l")).unwrap();
    let (d, _) = layout.put_bytes(b"not tagged yet").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let l2 = layout.clone();
    std::thread::spawn(move || {
        let _ = tx.send(l2.gc().map_err(|e| e.to_string()));
    });
    // A generous bound: only a deadlock takes this long.
    let res = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("gc deadlocked on its own writer lock");
    let err = res.unwrap_err();
    assert!(err.contains("run gc on its own"), "{err}");
    assert!(layout.has_blob(&d));
}
