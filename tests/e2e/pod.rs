//! Pods end to end: skopeo reads and copies them, a real registry stores
//! them, podman runs their images.

use crate::common::pod::*;
use crate::common::registry::{lowercase_tempdir, podman, podman_run, require, Registry};
use crate::common::*;
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert_success(&out, &format!("{cmd:?}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_pod_travels_whole_through_skopeo_and_a_registry_and_its_images_run() {
    require("skopeo");
    require("podman");
    let reg = Registry::start();
    let t = lowercase_tempdir("pod");
    let proj = project(t.path());
    let out = t.path().join("out");
    let digest = build_pod(&proj, &out);
    let src = format!("oci:{}:shop", out.display());
    // skopeo reads the index as we wrote it.
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", &src])
        .output()
        .unwrap();
    assert_success(&raw, "skopeo inspect --raw");
    let hex = digest.trim_start_matches("sha256:");
    assert_eq!(
        raw.stdout,
        std::fs::read(out.join("blobs/sha256").join(hex)).unwrap()
    );
    // skopeo copy --all there and back keeps the digest.
    let remote = reg.url("shop/pod:1.2.0");
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &src,
        &remote,
    ]));
    let back = t.path().join("back");
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        &remote,
        &format!("oci:{}:shop", back.display()),
    ]));
    assert_eq!(digest_of_tag(&back, "shop"), digest);
    // shipyard pushes it whole and pulls it back whole.
    let cache = t.path().join("cache");
    let sy = |args: &[&str]| {
        let o = shipyard()
            .env("XDG_CACHE_HOME", &cache)
            .args(args)
            .output()
            .unwrap();
        assert_success(&o, &format!("{args:?}"));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let pushed = sy(&["push", "--tls-verify=false", &src, &reg.url("shop/pod2")]);
    assert_eq!(pushed, digest);
    let info = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &reg.url("shop/pod2:shop"),
    ]));
    assert!(info.contains("application/vnd.shipyard.pod.v1"), "{info}");
    let cache2 = t.path().join("cache2");
    let pulled_dir = t.path().join("pulled");
    let o = shipyard()
        .env("XDG_CACHE_HOME", &cache2)
        .args([
            "pull",
            "--tls-verify=false",
            &reg.url("shop/pod2:shop"),
            &format!("oci:{}", pulled_dir.display()),
        ])
        .output()
        .unwrap();
    assert_success(&o, "pull the pod");
    assert_eq!(digest_of_tag(&pulled_dir, "shop"), digest);
    let dest = t.path().join("deploy");
    sy(&[
        "pod",
        "unpack",
        &format!("oci:{}:shop", pulled_dir.display()),
        dest.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(dest.join("volumes/gen/gen.txt")).unwrap(),
        "generated\n"
    );
    // Every member image runs.
    let rt = t.path().join("rt");
    std::fs::create_dir_all(&rt).unwrap();
    for (image, file, want) in [
        ("web", "/out/web/id", "web"),
        ("worker", "/out/web/wid", "worker"),
    ] {
        let script = format!("read l < {file}; echo $l");
        let image = format!("oci:{}:{image}", out.display());
        let o = run(podman(&rt).args(podman_run(&image, &["/bin/sh", "-c", &script])));
        assert_eq!(o.trim_end().lines().last(), Some(want), "{o}");
    }
}
