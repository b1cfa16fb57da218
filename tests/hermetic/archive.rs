//! Archives and the registry transport's error paths, hermetically: no
//! registry needed (a refused 127.0.0.1 port stands in for a dead one).

use crate::common::*;
use std::path::Path;
use std::process::Output;

/// shipyard with a private cache and auth file.
fn sy(home: &Path, args: &[&str]) -> Output {
    shipyard()
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("REGISTRY_AUTH_FILE", home.join("auth.json"))
        .args(args)
        .output()
        .unwrap()
}

fn sy_ok(home: &Path, args: &[&str]) -> String {
    let out = sy(home, args);
    assert_success(&out, &format!("{args:?}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sy_err(home: &Path, args: &[&str]) -> String {
    let out = sy(home, args);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A layout `l` holding `rich_tree` as `oci:l:v1`; returns its digest.
fn image(t: &Path) -> String {
    let a = t.join("a");
    rich_tree(&a, false);
    let r = format!("oci:{}:v1", t.join("l").display());
    diff_scratch(&a, &r, &[])
}

fn src(t: &Path) -> String {
    format!("oci:{}:v1", t.join("l").display())
}

#[test]
fn oci_archive_round_trip_is_byte_stable_and_keeps_the_digest() {
    let t = tempfile::tempdir().unwrap();
    let h = t.path();
    let digest = image(h);
    let x1 = h.join("x1.tar");
    let x2 = h.join("x2.tar");
    let out = sy_ok(
        h,
        &[
            "export",
            &src(h),
            &format!("oci-archive:{}:v9", x1.display()),
        ],
    );
    assert_eq!(out.trim(), digest);
    sy_ok(
        h,
        &[
            "export",
            &src(h),
            &format!("oci-archive:{}:v9", x2.display()),
        ],
    );
    assert_eq!(std::fs::read(&x1).unwrap(), std::fs::read(&x2).unwrap());
    // Import takes the tag the archive carries.
    let back = h.join("back");
    let out = sy_ok(
        h,
        &[
            "import",
            &format!("oci-archive:{}", x1.display()),
            &format!("oci:{}", back.display()),
        ],
    );
    assert_eq!(out.trim(), digest);
    assert_eq!(digest_of_tag(&back, "v9"), digest);
    // A tag the archive lacks is named in the error with what it has.
    let e = sy_err(
        h,
        &[
            "import",
            &format!("oci-archive:{}:nope", x1.display()),
            &format!("oci:{}", back.display()),
        ],
    );
    assert!(
        e.contains("no image tagged \"nope\"") && e.contains("v9"),
        "{e}"
    );
}

#[test]
fn docker_archive_round_trip_keeps_the_image_id_and_the_tree() {
    let t = tempfile::tempdir().unwrap();
    let h = t.path();
    image(h);
    let d = h.join("d.tar");
    sy_ok(
        h,
        &[
            "export",
            &src(h),
            &format!("docker-archive:{}:localhost/sy/app:v1", d.display()),
        ],
    );
    let listing = String::from_utf8(
        std::process::Command::new("tar")
            .arg("tf")
            .arg(&d)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        listing.contains("manifest.json") && listing.contains("repositories"),
        "{listing}"
    );
    let back = h.join("back");
    sy_ok(
        h,
        &[
            "import",
            &format!("docker-archive:{}:localhost/sy/app:v1", d.display()),
            &format!("oci:{}:got", back.display()),
        ],
    );
    let a = ok(["manifest", &src(h)]);
    let b = ok(["manifest", &format!("oci:{}:got", back.display())]);
    assert_eq!(a, b, "the imported image holds the same tree");
    let cfg = |r: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(&ok(["inspect", "--json", r])).unwrap();
        v["configDigest"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(
        cfg(&src(h)),
        cfg(&format!("oci:{}:got", back.display())),
        "same image ID"
    );
}

#[test]
fn a_docker_archive_layer_named_through_a_link_is_read() {
    // docker save stores a layer the manifest lists twice once, and
    // links the second name to it: here the only layer is named so.
    let t = tempfile::tempdir().unwrap();
    let h = t.path();
    image(h);
    let d = h.join("d.tar");
    sy_ok(
        h,
        &[
            "export",
            &src(h),
            &format!("docker-archive:{}", d.display()),
        ],
    );
    let data = std::fs::read(&d).unwrap();
    let mut out = tar::Builder::new(Vec::new());
    let mut layer = String::new();
    for e in tar::Archive::new(&data[..]).entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut body).unwrap();
        let mut hd = e.header().clone();
        if name == "manifest.json" {
            let mut m: serde_json::Value = serde_json::from_slice(&body).unwrap();
            layer = m[0]["Layers"][0].as_str().unwrap().to_string();
            m[0]["Layers"][0] = "dup/layer.tar".into();
            body = serde_json::to_vec(&m).unwrap();
            hd.set_size(body.len() as u64);
            hd.set_cksum();
        }
        out.append(&hd, &body[..]).unwrap();
    }
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    out.append_link(&mut link, "dup/layer.tar", format!("../{layer}"))
        .unwrap();
    std::fs::write(&d, out.into_inner().unwrap()).unwrap();
    let back = h.join("back");
    sy_ok(
        h,
        &[
            "import",
            &format!("docker-archive:{}", d.display()),
            &format!("oci:{}:got", back.display()),
        ],
    );
    assert_eq!(
        ok(["manifest", &src(h)]),
        ok(["manifest", &format!("oci:{}:got", back.display())])
    );
}

/// Rewrites a tar, changing one member's content with `f`.
fn tamper(tar_path: &Path, pick: &dyn Fn(&str) -> bool, f: &dyn Fn(&mut Vec<u8>)) {
    let data = std::fs::read(tar_path).unwrap();
    let mut ar = tar::Archive::new(&data[..]);
    let mut out = tar::Builder::new(Vec::new());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut body).unwrap();
        let mut h = e.header().clone();
        if pick(&name) {
            f(&mut body);
            h.set_size(body.len() as u64);
            h.set_cksum();
        }
        out.append(&h, &body[..]).unwrap();
    }
    std::fs::write(tar_path, out.into_inner().unwrap()).unwrap();
}

#[test]
fn a_corrupt_docker_layer_is_caught_by_its_diff_id() {
    let t = tempfile::tempdir().unwrap();
    let h = t.path();
    image(h);
    let d = h.join("d.tar");
    sy_ok(
        h,
        &[
            "export",
            &src(h),
            &format!("docker-archive:{}", d.display()),
        ],
    );
    tamper(&d, &|n| n.ends_with(".tar"), &|b| {
        let i = b.len() / 2;
        b[i] ^= 0xff;
    });
    let back = h.join("back");
    let e = sy_err(
        h,
        &[
            "import",
            &format!("docker-archive:{}", d.display()),
            &format!("oci:{}", back.display()),
        ],
    );
    assert!(
        e.contains("is corrupt") && e.contains("the config says sha256:"),
        "{e}"
    );
    assert!(!back.join("index.json").exists(), "nothing is tagged");
}

#[test]
fn a_corrupt_or_missing_oci_archive_blob_and_links_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let h = t.path();
    image(h);
    let x = h.join("x.tar");
    let back = format!("oci:{}", h.join("back").display());
    let fresh = || {
        sy_ok(
            h,
            &["export", &src(h), &format!("oci-archive:{}", x.display())],
        );
    };
    // A flipped byte in the layer blob.
    fresh();
    let biggest = {
        let data = std::fs::read(&x).unwrap();
        let mut ar = tar::Archive::new(&data[..]);
        ar.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.size(), e.path().unwrap().to_string_lossy().into_owned())
            })
            .max()
            .unwrap()
            .1
    };
    tamper(&x, &|n| n == biggest, &|b| b[10] ^= 1);
    let e = sy_err(
        h,
        &["import", &format!("oci-archive:{}", x.display()), &back],
    );
    assert!(e.contains("is corrupt") && e.contains("hashes to"), "{e}");
    // The blob gone altogether.
    fresh();
    tamper(&x, &|n| n == biggest, &|b| b.clear());
    let e = sy_err(
        h,
        &["import", &format!("oci-archive:{}", x.display()), &back],
    );
    assert!(
        e.contains("corrupt") || e.contains("not in the archive"),
        "{e}"
    );
    // A symlink member, which could point anywhere.
    fresh();
    let data = std::fs::read(&x).unwrap();
    let mut b = tar::Builder::new(data[..data.len() - 1024].to_vec());
    let mut hd = tar::Header::new_ustar();
    hd.set_entry_type(tar::EntryType::Symlink);
    hd.set_size(0);
    hd.set_link_name("/etc/passwd").unwrap();
    hd.set_cksum();
    b.append_data(&mut hd, "blobs/sha256/evil", &[][..])
        .unwrap();
    std::fs::write(&x, b.into_inner().unwrap()).unwrap();
    let e = sy_err(
        h,
        &["import", &format!("oci-archive:{}", x.display()), &back],
    );
    assert!(
        e.contains("Symlink") && e.contains("only files and directories"),
        "{e}"
    );
    // A docker archive is not an OCI archive, and the error says so.
    let d = h.join("d.tar");
    sy_ok(
        h,
        &[
            "export",
            &src(h),
            &format!("docker-archive:{}", d.display()),
        ],
    );
    let e = sy_err(
        h,
        &["import", &format!("oci-archive:{}", d.display()), &back],
    );
    assert!(e.contains("use docker-archive:"), "{e}");
}

#[test]
fn a_failed_export_leaves_no_file_behind() {
    let t = tempfile::tempdir().unwrap();
    let h = t.path();
    image(h);
    // Remove the layer blob from the layout: the export must fail.
    let blobs = h.join("l/blobs/sha256");
    let biggest = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| p.metadata().unwrap().len())
        .unwrap();
    std::fs::remove_file(&biggest).unwrap();
    for dst in ["oci-archive", "docker-archive"] {
        let x = h.join(format!("{dst}.tar"));
        let e = sy_err(h, &["export", &src(h), &format!("{dst}:{}", x.display())]);
        assert!(e.contains("missing"), "{e}");
        assert!(!x.exists(), "{dst}: a partial archive was left");
    }
    let leftovers: Vec<_> = std::fs::read_dir(h)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".shipyard-archive")
        })
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn malformed_references_are_named_with_what_is_wrong() {
    let t = tempfile::tempdir().unwrap();
    let h = t.path();
    let l = format!("oci:{}", h.join("l").display());
    let e = sy_err(h, &["pull", "docker://reg.io/Upper/Case", &l]);
    assert!(
        e.contains("malformed registry reference") && e.contains("lowercase"),
        "{e}"
    );
    let e = sy_err(h, &["pull", "containers-storage:x", &l]);
    assert!(e.contains("not supported"), "{e}");
    let e = sy_err(h, &["push", "oci:/nonexistent-layout:v1", "docker://127.0.0.1:1/a/b@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]);
    assert!(
        e.contains("nonexistent-layout") || e.contains("digest"),
        "{e}"
    );
    let e = sy_err(h, &["export", "oci:x:v1", "docker://a/b"]);
    assert!(e.contains("shipyard push"), "{e}");
}

#[test]
fn pull_never_is_offline_and_a_dead_registry_fails_in_bounded_time() {
    let t = tempfile::tempdir().unwrap();
    let h = t.path();
    let l = format!("oci:{}", h.join("l").display());
    let e = sy_err(
        h,
        &["pull", "--pull", "never", "docker://127.0.0.1:1/a/b:v1", &l],
    );
    assert!(
        e.contains("not in the cache") && e.contains("--pull=never"),
        "{e}"
    );
    let start = std::time::Instant::now();
    let e = sy_err(
        h,
        &[
            "pull",
            "--retry",
            "2",
            "--tls-verify=false",
            "docker://127.0.0.1:1/a/b:v1",
            &l,
        ],
    );
    assert!(
        e.contains("127.0.0.1:1") && e.contains("gave up after 3 attempt(s)"),
        "{e}"
    );
    // 3 attempts with 250 ms and 500 ms backoff; generous for a busy box.
    assert!(start.elapsed().as_secs() < 60);
    assert!(!h.join("l").exists(), "a failed pull creates no layout");
}

#[test]
fn logout_and_login_errors() {
    let t = tempfile::tempdir().unwrap();
    let h = t.path();
    let e = sy_err(h, &["logout", "127.0.0.1:1"]);
    assert!(
        e.contains("not logged in to 127.0.0.1:1") && e.contains("auth.json"),
        "{e}"
    );
    let e = sy_err(h, &["login", "127.0.0.1:1/repo", "-u", "x", "-p", "y"]);
    assert!(e.contains("HOST[:PORT]"), "{e}");
    let e = sy_err(h, &["login", "127.0.0.1:1", "-u", "x"]);
    assert!(e.contains("--password-stdin"), "{e}");
    let e = sy_err(
        h,
        &[
            "login",
            "--retry",
            "0",
            "--tls-verify=false",
            "127.0.0.1:1",
            "-u",
            "x",
            "-p",
            "y",
        ],
    );
    assert!(e.contains("127.0.0.1:1"), "{e}");
    assert!(
        !h.join("auth.json").exists(),
        "a failed login stores nothing"
    );
    let e = sy_err(
        h,
        &[
            "pull",
            "--creds",
            ":pw",
            "docker://127.0.0.1:1/a/b",
            &format!("oci:{}", h.join("l").display()),
        ],
    );
    assert!(e.contains("--creds"), "{e}");
}

#[test]
fn transfer_option_errors_are_clear_and_early() {
    let t = tempfile::tempdir().unwrap();
    let h = t.path();
    image(h);
    let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let e = sy_err(
        h,
        &["push", &src(h), &format!("docker://127.0.0.1:1/a/b@{d}")],
    );
    assert!(e.contains("cannot push to a digest"), "{e}");
    let e = sy_err(
        h,
        &["import", &src(h), &format!("oci:{}", h.join("x").display())],
    );
    assert!(e.contains("use `shipyard pull`"), "{e}");
    let e = sy_err(
        h,
        &[
            "pull",
            "--platform",
            "amd64",
            "docker://127.0.0.1:1/a/b",
            &format!("oci:{}", h.join("x").display()),
        ],
    );
    assert!(e.contains("OS/ARCH"), "{e}");
    // --cert-dir is checked before any connection.
    let certs = h.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let e = sy_err(
        h,
        &[
            "push",
            "--cert-dir",
            certs.to_str().unwrap(),
            &src(h),
            "docker://127.0.0.1:1/a/b",
        ],
    );
    assert!(e.contains("--cert-dir") && e.contains("no *.crt"), "{e}");
    std::fs::write(certs.join("client.cert"), "not a pem").unwrap();
    let e = sy_err(
        h,
        &[
            "push",
            "--cert-dir",
            certs.to_str().unwrap(),
            &src(h),
            "docker://127.0.0.1:1/a/b",
        ],
    );
    assert!(e.contains("without its key"), "{e}");
    std::fs::remove_file(certs.join("client.cert")).unwrap();
    std::fs::write(
        certs.join("ca.crt"),
        "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let e = sy_err(
        h,
        &[
            "push",
            "--cert-dir",
            certs.to_str().unwrap(),
            &src(h),
            "docker://127.0.0.1:1/a/b",
        ],
    );
    assert!(
        e.contains("--cert-dir") && e.contains("not accepted") && e.contains("BadEncoding"),
        "{e}"
    );
    // An image is not a pod, and kube wants a registry repository.
    let e = sy_err(
        h,
        &["pod", "unpack", &src(h), h.join("dest").to_str().unwrap()],
    );
    assert!(e.contains("is not a pod"), "{e}");
    assert!(!h.join("dest").exists());
    let e = sy_err(h, &["pod", "kube", &src(h)]);
    assert!(e.contains("is not a pod"), "{e}");
    let e = sy_err(
        h,
        &["push", "--tag", "a:b", &src(h), "docker://127.0.0.1:1/a/b"],
    );
    assert!(e.contains("invalid tag \"a:b\""), "{e}");
}
