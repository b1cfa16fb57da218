//! `build --sbom` on the real Debian base: a zlib program tapped out with
//! its ELF closure from the CI image (bookworm minbase with gcc,
//! `SHIPYARD_CI_IMAGE`) gets a document listing libc6 and zlib1g and no
//! other package, which the SPDX project's own validator (spdx-tools,
//! installed from PyPI by scripts/setup-users) accepts as SPDX 2.3; pushed
//! to Debian's docker-registry, which has no referrers API, it is found by
//! skopeo under the fallback tag `sha256-<hex>`.
use crate::common::registry::{require, Registry};
use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn ci_image() -> String {
    let r = std::env::var("SHIPYARD_CI_IMAGE")
        .unwrap_or_else(|_| "oci:/var/cache/shipyard-tests/ci:bookworm-ci".to_string());
    let dir = r
        .strip_prefix("oci:")
        .and_then(|d| d.rsplit_once(':'))
        .map(|(d, _)| d.to_string())
        .unwrap_or_else(|| panic!("SHIPYARD_CI_IMAGE={r} is not oci:DIR:TAG"));
    assert!(
        Path::new(&dir).join("index.json").is_file(),
        "no CI image at {r} (scripts/test makes it as root)"
    );
    r
}

/// zlib's headers are not in the CI image (zlib1g-dev): the program
/// declares what it calls and links the runtime library by its soname.
const ZVER_C: &str = r#"#include <stdio.h>
const char *zlibVersion(void);
int main(void) { printf("zlib %s\n", zlibVersion()); return 0; }
"#;

fn spec() -> String {
    format!(
        r#"
[builder]
from = "{}"
sources = {{ "/src" = "src" }}

[build.app]
run = "gcc -O2 -o /usr/local/bin/zver /src/zver.c -l:libz.so.1"

[tapeout.app]
after = ["build.app"]
include = ["/usr/local/bin/zver"]
elf-closure = true

[image.zver]
from = "scratch"
tapeouts = ["app"]
entrypoint = ["/usr/local/bin/zver"]
"#,
        ci_image()
    )
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap()
}

/// The layout's SBOM referrer: (its digest, the SPDX document's bytes).
fn sbom_of(layout: &Path) -> (String, Vec<u8>) {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let refs: Vec<&serde_json::Value> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["artifactType"] == "application/spdx+json")
        .collect();
    assert_eq!(refs.len(), 1, "{index}");
    let digest = refs[0]["digest"].as_str().unwrap().to_string();
    let m: serde_json::Value = serde_json::from_slice(&blob(layout, &digest)).unwrap();
    let doc = blob(layout, m["layers"][0]["digest"].as_str().unwrap());
    (digest, doc)
}

/// Runs the SPDX 2.3 validator of spdx-tools on a document; its messages
/// when it finds the document invalid.
fn validate(doc: &Path) {
    let path = std::env::var("SHIPYARD_SPDX_PYTHONPATH")
        .unwrap_or_else(|_| "/opt/shipyard-tests/python".to_string());
    let script = r#"
import sys
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
messages = validate_full_spdx_document(parse_file(sys.argv[1]), "SPDX-2.3")
for m in messages:
    print(m.validation_message, file=sys.stderr)
sys.exit(1 if messages else 0)
"#;
    let out = Command::new("python3")
        .env("PYTHONPATH", &path)
        .arg("-c")
        .arg(script)
        .arg(doc)
        .output()
        .unwrap();
    assert_success(
        &out,
        "the spdx-tools validator (scripts/setup-users installs it)",
    );
}

fn skopeo_raw(reference: &str) -> serde_json::Value {
    require("skopeo");
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", reference])
        .output()
        .unwrap();
    assert_success(&out, &format!("skopeo inspect --raw {reference}"));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn zlib_program_sbom_lists_libc6_and_zlib1g_and_is_pushed_as_a_referrer() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("p");
    write(&p.join("shipyard.toml"), spec().as_bytes(), 0o644);
    write(&p.join("src/zver.c"), ZVER_C.as_bytes(), 0o644);
    let layout: PathBuf = t.path().join("out");
    let out = shipyard()
        .env("XDG_CACHE_HOME", t.path().join("cache"))
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .arg("build")
        .arg(&p)
        .arg("--output")
        .arg(format!("oci:{}", layout.display()))
        .arg("--sbom")
        .output()
        .unwrap();
    assert_success(&out, "shipyard build --sbom on the CI image");
    let image = digest_of_tag(&layout, "zver");
    let (referrer, bytes) = sbom_of(&layout);
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();

    // The packages: libc6 and zlib1g, nothing else (the other package is
    // the image itself, which the document describes).
    let packages: Vec<&serde_json::Value> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["SPDXID"] != "SPDXRef-Image")
        .collect();
    let names: Vec<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["libc6", "zlib1g"], "{doc:#}");
    for p in &packages {
        let purl = p["externalRefs"][0]["referenceLocator"].as_str().unwrap();
        let want = format!(
            "pkg:deb/debian/{}@{}?arch=amd64",
            p["name"].as_str().unwrap(),
            p["versionInfo"].as_str().unwrap()
        );
        assert_eq!(purl, want);
    }
    let describes = doc["relationships"].as_array().unwrap().iter().any(|r| {
        r["spdxElementId"] == "SPDXRef-DOCUMENT"
            && r["relationshipType"] == "DESCRIBES"
            && r["relatedSpdxElement"] == "SPDXRef-Image"
    });
    assert!(describes);
    assert_eq!(doc["packages"][0]["versionInfo"], image.as_str());
    // The program is in no package; the libraries are in theirs.
    let files = doc["files"].as_array().unwrap();
    let zver = files
        .iter()
        .find(|f| f["fileName"] == "./usr/local/bin/zver")
        .unwrap();
    assert!(zver["comment"].as_str().unwrap().contains("In no package"));
    assert!(
        files
            .iter()
            .any(|f| f["fileName"].as_str().unwrap().contains("libz.so.1.")),
        "{files:?}"
    );
    assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");

    // Valid SPDX 2.3.
    let doc_path = t.path().join("zver.spdx.json");
    std::fs::write(&doc_path, &bytes).unwrap();
    validate(&doc_path);

    // Pushed with the image; Debian's docker-registry has no referrers
    // API, so the fallback tag holds an index listing it.
    let reg = Registry::start();
    let remote = reg.url("sbom/zver:v1");
    let push = |what: &str| {
        let out = shipyard()
            .env("XDG_CACHE_HOME", t.path().join("cache"))
            .env("HOME", t.path())
            .args(["push", "--tls-verify=false"])
            .arg(format!("oci:{}:zver", layout.display()))
            .arg(&remote)
            .output()
            .unwrap();
        assert_success(&out, what);
    };
    push("shipyard push");
    let fallback = format!(
        "docker://{}/sbom/zver:sha256-{}",
        reg.host(),
        image.trim_start_matches("sha256:")
    );
    let index = skopeo_raw(&fallback);
    let listed = index["manifests"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{index}");
    assert_eq!(listed[0]["digest"], referrer.as_str());
    assert_eq!(listed[0]["artifactType"], "application/spdx+json");
    // The referrer itself names the image as its subject.
    let m = skopeo_raw(&format!("docker://{}/sbom/zver@{referrer}", reg.host()));
    assert_eq!(m["subject"]["digest"], image.as_str());
    // Pushed again: still listed once.
    push("shipyard push again");
    assert_eq!(
        skopeo_raw(&fallback)["manifests"].as_array().unwrap().len(),
        1
    );
}
