//! `shipyard build --sbom` on a small builder with a dpkg database of its
//! own making: which packages the document lists, how it is attached to
//! the image, and that a cached rebuild gives the same document.

use crate::common::*;
use std::path::{Path, PathBuf};

const SPEC: &str = r#"
[builder]
from = "rootfs:base"

[build.install]
run = """
mkdir -p /opt /usr/bin
echo app > /opt/app
echo tool > /usr/bin/tool
echo /usr/bin/tool > /var/lib/dpkg/info/tool.list
printf 'Package: tool\nStatus: install ok installed\nArchitecture: all\nVersion: 2.0\n\n' >> /var/lib/dpkg/status
"""

[tapeout.app]
after = ["build.install"]
include = ["/opt/app", "/usr/bin/tool", "/usr/lib/fake/libfake.so", "/usr/lib/fake/unlisted.so"]

[image.app]
from = "scratch"
tapeouts = ["app"]
"#;

/// The example's small base, plus a dpkg database: `fakelib` lists its
/// library under `/fake`, a symlink to `usr/lib/fake` (usrmerge in
/// miniature); `other` is installed but nothing of it is taken.
fn project(t: &Path) -> PathBuf {
    let p = t.join("p");
    let mk = std::process::Command::new("bash")
        .arg(src_dir().join("examples/two-images/make-base.sh"))
        .arg(p.join("base"))
        .output()
        .unwrap();
    assert_success(&mk, "make-base.sh");
    let base = p.join("base");
    write(
        &base.join("var/lib/dpkg/status"),
        b"Package: fakelib\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:1.0-1\nMaintainer: Fake Team <fake@example.org>\n\nPackage: other\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3\n\n",
        0o644,
    );
    write(
        &base.join("var/lib/dpkg/info/fakelib:amd64.list"),
        b"/.\n/fake\n/fake/libfake.so\n",
        0o644,
    );
    write(
        &base.join("var/lib/dpkg/info/other:amd64.list"),
        b"/usr/bin/other\n",
        0o644,
    );
    write(&base.join("usr/lib/fake/libfake.so"), b"fake\n", 0o644);
    write(&base.join("usr/lib/fake/unlisted.so"), b"unlisted\n", 0o644);
    write(&base.join("usr/bin/other"), b"other\n", 0o755);
    std::os::unix::fs::symlink("usr/lib/fake", base.join("fake")).unwrap();
    write(&base.join("etc/os-release"), b"ID=debian\n", 0o644);
    write(&p.join("shipyard.toml"), SPEC.as_bytes(), 0o644);
    p
}

fn build(p: &Path, layout: &Path, extra: &[&str]) -> String {
    let out = shipyard()
        .env("XDG_CACHE_HOME", p.with_file_name("cache"))
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .arg("build")
        .arg(p)
        .arg("--output")
        .arg(format!("oci:{}", layout.display()))
        .args(extra)
        .output()
        .unwrap();
    assert_success(&out, "shipyard build");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap()
}

/// The referrer entries of a layout's index.json.
fn referrers(layout: &Path) -> Vec<serde_json::Value> {
    json(&layout.join("index.json"))["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m.get("artifactType").is_some())
        .cloned()
        .collect()
}

/// The SPDX document of the layout's one referrer, checked against its
/// subject.
fn document(layout: &Path, tag: &str) -> (String, serde_json::Value) {
    let r = referrers(layout);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["artifactType"], "application/spdx+json");
    let digest = r[0]["digest"].as_str().unwrap().to_string();
    let m: serde_json::Value = serde_json::from_slice(&blob(layout, &digest)).unwrap();
    assert_eq!(m["artifactType"], "application/spdx+json");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(m["subject"]["digest"], digest_of_tag(layout, tag));
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], "application/spdx+json");
    let doc = serde_json::from_slice(&blob(layout, layers[0]["digest"].as_str().unwrap())).unwrap();
    (digest, doc)
}

#[test]
fn build_sbom_lists_the_packages_of_the_taken_files() {
    let t = tempfile::tempdir().unwrap();
    let p = project(t.path());
    let l1 = t.path().join("l1");
    let meta = t.path().join("meta.json");
    build(
        &p,
        &l1,
        &["--sbom", "--metadata-file", meta.to_str().unwrap()],
    );
    let (referrer, doc) = document(&l1, "app");
    // --metadata-file names it.
    assert_eq!(json(&meta)["images"]["app"]["sbom"], referrer.as_str());
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");
    let packages: Vec<(String, String)> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["SPDXID"] != "SPDXRef-Image")
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["externalRefs"][0]["referenceLocator"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        packages,
        [
            (
                "fakelib".to_string(),
                "pkg:deb/debian/fakelib@1:1.0-1?arch=amd64".to_string()
            ),
            (
                "tool".to_string(),
                "pkg:deb/debian/tool@2.0?arch=all".to_string()
            ),
        ]
    );
    // Files: each with its owner, or said to be in none.
    let files = doc["files"].as_array().unwrap();
    let file = |name: &str| {
        files
            .iter()
            .find(|f| f["fileName"] == name)
            .unwrap_or_else(|| panic!("{name} not in {files:?}"))
            .clone()
    };
    let contains = |from: &str, to: &serde_json::Value| {
        doc["relationships"].as_array().unwrap().iter().any(|r| {
            r["spdxElementId"] == from
                && r["relationshipType"] == "CONTAINS"
                && r["relatedSpdxElement"] == to["SPDXID"]
        })
    };
    let fakelib = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "fakelib")
        .unwrap()["SPDXID"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(contains(&fakelib, &file("./usr/lib/fake/libfake.so")));
    for unowned in ["./opt/app", "./usr/lib/fake/unlisted.so"] {
        let f = file(unowned);
        assert!(contains("SPDXRef-Image", &f), "{unowned}");
        assert!(
            f["comment"].as_str().unwrap().contains("In no package"),
            "{f}"
        );
    }
    // `oci:DIR` still names the one image.
    ok(["inspect", &format!("oci:{}", l1.display())]);

    // Everything cached, a fresh layout: the same document, byte for byte.
    let l2 = t.path().join("l2");
    build(&p, &l2, &["--sbom"]);
    assert_eq!(document(&l2, "app").0, referrer);
    // Without --sbom: the same image, and no referrer.
    let l3 = t.path().join("l3");
    build(&p, &l3, &["--metadata-file", meta.to_str().unwrap()]);
    assert!(referrers(&l3).is_empty());
    assert!(json(&meta)["images"]["app"].get("sbom").is_none());
    assert_eq!(digest_of_tag(&l3, "app"), digest_of_tag(&l1, "app"));
    // A cached image built without --sbom gains its document later.
    build(&p, &l3, &["--sbom"]);
    assert_eq!(document(&l3, "app").0, referrer);
    // gc keeps it while the image is tagged.
    ok(["gc", &format!("oci:{}", l3.display())]);
    assert_eq!(document(&l3, "app").0, referrer);
}

#[test]
fn a_broken_rpm_database_is_refused_rather_than_ignored() {
    let t = tempfile::tempdir().unwrap();
    let p = project(t.path());
    std::fs::remove_dir_all(p.join("base/var/lib/dpkg")).unwrap();
    write(
        &p.join("base/var/lib/rpm/rpmdb.sqlite"),
        b"SQLite format 3\0",
        0o644,
    );
    write(
        &p.join("shipyard.toml"),
        b"[builder]\nfrom = \"rootfs:base\"\n\n[tapeout.app]\ninclude = [\"/usr/bin/other\"]\n\n[image.app]\nfrom = \"scratch\"\ntapeouts = [\"app\"]\n",
        0o644,
    );
    let out = shipyard()
        .env("XDG_CACHE_HOME", t.path().join("cache"))
        .arg("build")
        .arg(&p)
        .arg("--output")
        .arg(format!("oci:{}", t.path().join("l").display()))
        .arg("--sbom")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/var/lib/rpm/rpmdb.sqlite") && err.contains("not an SQLite 3 database"),
        "{err}"
    );
}
