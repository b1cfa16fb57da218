//! End-to-end tests against the real peers: skopeo, umoci, podman and a real
//! docker-registry (distribution v2) on 127.0.0.1. Enabled by the `e2e`
//! feature; scripts/test runs them as unprivileged users. A missing tool
//! fails the test: nothing is skipped silently.

use crate::common::registry::{lowercase_tempdir, podman, podman_run, require, Registry};
use crate::common::*;
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert_success(&out, &format!("{cmd:?}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn skopeo_reads_every_layout_we_write() {
    require("skopeo");
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    rich_tree(&a, false);
    let l = t.path().join("l");
    for (tag, c) in [("gz", "gzip"), ("zst", "zstd"), ("plain", "none")] {
        let r = format!("oci:{}:{tag}", l.display());
        let ours = diff_scratch(&a, &r, &["--compression", c]);
        let info: serde_json::Value =
            serde_json::from_str(&run(Command::new("skopeo").args(["inspect", &r]))).unwrap();
        assert_eq!(info["Digest"], ours, "{c}");
        assert_eq!(info["Layers"].as_array().unwrap().len(), 1);
        // --raw gives back the exact bytes we stored.
        let raw = run(Command::new("skopeo").args(["inspect", "--raw", &r]));
        let layout = shipyard_image::oci::layout::Layout::open(&l).unwrap();
        let stored = layout.read_blob(&ours.parse().unwrap(), None).unwrap();
        assert_eq!(raw.as_bytes(), &stored[..]);
    }
    // A layer stacked on a base.
    write(&a.join("etc/conf"), b"v2", 0o644);
    let base = format!("oci:{}:gz", l.display());
    let v2 = format!("oci:{}:v2", l.display());
    ok([
        "diff",
        a.to_str().unwrap(),
        "--against",
        &base,
        "--base",
        &base,
        "--output",
        &v2,
    ]);
    let info: serde_json::Value =
        serde_json::from_str(&run(Command::new("skopeo").args(["inspect", &v2]))).unwrap();
    assert_eq!(info["Layers"].as_array().unwrap().len(), 2);
}

#[test]
fn umoci_rootless_unpack_gives_the_source_tree() {
    require("umoci");
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    rich_tree(&a, false);
    let l = t.path().join("l");
    diff_scratch(&a, &format!("oci:{}:v1", l.display()), &["--keep-mtimes"]);
    let bundle = t.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:v1", l.display()))
        .arg(&bundle));
    let theirs = ok(["manifest", bundle.join("rootfs").to_str().unwrap()]);
    let ours = ok(["manifest", a.to_str().unwrap()]);
    assert_eq!(theirs, ours, "umoci's unpack differs from the source tree");
    // And a second layer on top, applied by umoci, still matches.
    write(&a.join("etc/conf"), b"changed", 0o600);
    std::fs::remove_dir_all(a.join("data")).unwrap();
    fix_mtimes(&a, MTIME);
    let v1 = format!("oci:{}:v1", l.display());
    let v2 = format!("oci:{}:v2", l.display());
    ok([
        "diff",
        a.to_str().unwrap(),
        "--against",
        &v1,
        "--base",
        &v1,
        "--output",
        &v2,
        "--keep-mtimes",
    ]);
    let bundle2 = t.path().join("bundle2");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:v2", l.display()))
        .arg(&bundle2));
    assert_eq!(
        ok(["manifest", bundle2.join("rootfs").to_str().unwrap()]),
        ok(["manifest", a.to_str().unwrap()])
    );
}

#[test]
fn podman_runs_an_image_we_built() {
    require("podman");
    let t = lowercase_tempdir("podman");
    let root = t.path().join("root");
    shell_rootfs(&root);
    let l = t.path().join("l");
    let r = format!("oci:{}:run", l.display());
    diff_scratch(&root, &r, &[]);
    let rt = t.path().join("rt");
    std::fs::create_dir_all(&rt).unwrap();
    // Root podman raises rlimits, which needs CAP_SYS_RESOURCE, which the
    // root of these sandboxes lacks: ask for modest limits instead.
    let out = run(podman(&rt).args(podman_run(&r, &["/bin/sh", "-c", "echo ok"])));
    assert_eq!(out.trim_end().lines().last(), Some("ok"), "{out}");
}

#[test]
fn podman_runs_an_image_with_the_entrypoint_and_env_config_set() {
    require("podman");
    let t = lowercase_tempdir("config");
    let root = t.path().join("root");
    shell_rootfs(&root);
    let l = t.path().join("l");
    let r = format!("oci:{}:run", l.display());
    diff_scratch(&root, &r, &[]);
    let edited = ok([
        "config",
        &r,
        "--tag",
        "edited",
        "--entrypoint",
        r#"["/bin/sh", "-c", "echo \"$GREETING\" \"$0\""]"#,
        "--cmd",
        r#"["from-cmd"]"#,
        "--env",
        "GREETING=hello from config",
    ]);
    assert!(edited.trim().starts_with("sha256:"), "{edited}");
    let rt = t.path().join("rt");
    std::fs::create_dir_all(&rt).unwrap();
    let edited_ref = format!("oci:{}:edited", l.display());
    let out = run(podman(&rt).args(podman_run(&edited_ref, &[])));
    assert_eq!(
        out.trim_end().lines().last(),
        Some("hello from config from-cmd"),
        "{out}"
    );
}

#[test]
fn an_index_of_two_platforms_is_read_by_skopeo_and_pushed_whole() {
    require("skopeo");
    let reg = Registry::start();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    write(&root.join("etc/data"), b"portable\n", 0o644);
    let l = t.path().join("l");
    let amd = format!("oci:{}:amd", l.display());
    diff_scratch(&root, &amd, &[]);
    let arm = format!("oci:{}:arm", l.display());
    ok([
        "config",
        &amd,
        "--tag",
        "arm",
        "--platform",
        "linux/arm64/v8",
    ]);
    let out = t.path().join("multi");
    let multi = format!("oci:{}:v1", out.display());
    let digest = ok(["index", &amd, &arm, "--output", &multi])
        .trim()
        .to_string();
    let raw = run(Command::new("skopeo").args(["inspect", "--raw", &multi]));
    let index: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            format!(
                "{}/{}{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap(),
                p["variant"]
                    .as_str()
                    .map(|v| format!("/{v}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    let host = if cfg!(target_arch = "x86_64") {
        "amd64"
    } else {
        "arm64"
    };
    assert!(
        platforms.contains(&format!("linux/{host}")),
        "{platforms:?}"
    );
    assert!(
        platforms.contains(&"linux/arm64/v8".to_string()),
        "{platforms:?}"
    );
    // Pushed whole: the registry serves the same index, and each platform.
    let remote = reg.url("multi/app:v1");
    ok(["push", "--tls-verify=false", &multi, &remote]);
    let pushed =
        run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &remote]));
    assert_eq!(
        shipyard_image::oci::digest::Digest::of(pushed.as_bytes()).to_string(),
        digest,
        "the registry holds another index"
    );
    let arm_config = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--override-arch",
        "arm64",
        "--override-variant",
        "v8",
        &remote,
    ]));
    assert!(
        arm_config.contains("\"Architecture\": \"arm64\""),
        "{arm_config}"
    );
}

#[test]
fn skopeo_copy_through_a_real_registry_keeps_the_digest() {
    require("skopeo");
    let reg = Registry::start();
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    rich_tree(&a, false);
    let l = t.path().join("l");
    let src = format!("oci:{}:v1", l.display());
    let ours = diff_scratch(&a, &src, &[]);
    let remote = format!("docker://127.0.0.1:{}/shipyard/test:v1", reg.port);
    run(Command::new("skopeo").args([
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &src,
        &remote,
    ]));
    let info: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &remote,
    ])))
    .unwrap();
    assert_eq!(info["Digest"], ours);
    let back = format!("oci:{}:back", t.path().join("l2").display());
    run(Command::new("skopeo").args([
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &remote,
        &back,
    ]));
    assert_eq!(digest_of_tag(&t.path().join("l2"), "back"), ours);
    // What came back unpacks to the source tree.
    let un = t.path().join("un");
    ok(["unpack", &back, un.to_str().unwrap()]);
    assert_eq!(
        strip_mtimes(&ok(["manifest", un.to_str().unwrap()])),
        strip_mtimes(&ok(["manifest", a.to_str().unwrap()]))
    );
}

#[test]
fn the_hello_example_passes_skopeo_umoci_and_podman() {
    require("podman");
    require("umoci");
    let t = lowercase_tempdir("hello");
    let src = src_dir();
    let l = t.path().join("l");
    let out = shipyard()
        .arg("build")
        .arg(src.join("examples/hello"))
        .arg("--output")
        .arg(format!("oci:{}", l.display()))
        .output()
        .unwrap();
    assert_success(&out, "build hello");
    let r = format!("oci:{}:hello", l.display());
    run(Command::new("skopeo").args(["inspect", &r]));
    let bundle = t.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:hello", l.display()))
        .arg(&bundle));
    assert!(bundle.join("rootfs/usr/local/bin/hello").is_file());
    let rt = t.path().join("rt");
    std::fs::create_dir_all(&rt).unwrap();
    let out = run(podman(&rt).args(podman_run(&r, &["e2e"])));
    assert_eq!(
        out.trim_end().lines().last(),
        Some("hello from shipyard, e2e")
    );
}

#[test]
fn both_images_of_the_second_example_pass_skopeo_umoci_and_podman() {
    require("podman");
    require("umoci");
    let t = lowercase_tempdir("two");
    let src = src_dir();
    let d = t.path().join("two");
    std::fs::create_dir_all(&d).unwrap();
    for f in ["shipyard.toml", "make-base.sh"] {
        std::fs::copy(src.join("examples/two-images").join(f), d.join(f)).unwrap();
    }
    run(Command::new("bash")
        .arg(d.join("make-base.sh"))
        .arg(d.join("base")));
    let l = t.path().join("l");
    let out = shipyard()
        .arg("build")
        .arg(&d)
        .arg("--output")
        .arg(format!("oci:{}", l.display()))
        .output()
        .unwrap();
    assert_success(&out, "build two-images");
    let rt = t.path().join("rt");
    std::fs::create_dir_all(&rt).unwrap();
    let has_range = is_root() || shipyard::sandbox::detect_subids().is_some();
    for (img, says) in [("tools", "tools ok"), ("app", "app v1")] {
        let r = format!("oci:{}:{img}", l.display());
        run(Command::new("skopeo").args(["inspect", &r]));
        run(Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:{img}", l.display()))
            .arg(t.path().join(format!("bundle-{img}"))));
        let out = podman(&rt).args(podman_run(&r, &[])).output().unwrap();
        if img == "app" && !has_range {
            // Rootless podman without a subuid range can only hold files
            // owned by root; `app` has uid 1000 files. Its error says so.
            assert!(!out.status.success());
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("insufficient UIDs or GIDs"),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!("note: podman run of `app` needs a subuid range (checked: podman says so)");
            continue;
        }
        assert_success(&out, &format!("podman run {img}"));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout)
                .trim_end()
                .lines()
                .last(),
            Some(says)
        );
    }
}

#[test]
fn the_writer_lock_file_in_a_layout_does_not_bother_skopeo_or_umoci() {
    require("skopeo");
    require("umoci");
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    write(&a.join("f"), b"locked", 0o644);
    let l = t.path().join("l");
    let ours = diff_scratch(&a, &format!("oci:{}:v1", l.display()), &[]);
    assert!(l.join(shipyard_image::oci::layout::WRITER_LOCK).is_file());
    let ls = run(Command::new("umoci").args(["ls", "--layout", l.to_str().unwrap()]));
    assert_eq!(ls.trim(), "v1");
    run(Command::new("umoci").args(["gc", "--layout", l.to_str().unwrap()]));
    let copy = format!("oci:{}:v1", t.path().join("copy").display());
    run(Command::new("skopeo").args(["copy", &format!("oci:{}:v1", l.display()), &copy]));
    let info: serde_json::Value =
        serde_json::from_str(&run(Command::new("skopeo").args(["inspect", &copy]))).unwrap();
    assert_eq!(info["Digest"], ours);
    // And ours still works on the layout the others touched.
    ok(["gc", &format!("oci:{}", l.display())]);
    assert_eq!(digest_of_tag(&l, "v1"), ours);
}
