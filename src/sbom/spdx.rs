//! The SPDX 2.3 JSON document of one image.
//!
//! The document DESCRIBES the image (a package of purpose CONTAINER named
//! after the image, its version the manifest digest); the image CONTAINS
//! every package a file was taken from, each package CONTAINS its regular
//! files, and files from no package are CONTAINed by the image directly
//! with a comment saying so. Symlinks and directories are not SPDX files;
//! a package whose only taken path is a symlink is still listed.
//!
//! Nothing in it depends on when or where it is written: `created` is the
//! build's SOURCE_DATE_EPOCH, the namespace is derived from the image's
//! digest, and every list is sorted, so the same image gives the same
//! bytes.

use super::{Attribution, Package};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The SPDX media type, for the referrer artifact and its layer.
pub const MEDIA_TYPE: &str = "application/spdx+json";

/// The image a document is about.
pub struct Subject<'a> {
    /// The image's name in the spec (`image.NAME`).
    pub name: &'a str,
    /// Its manifest digest, `sha256:…`.
    pub digest: &'a str,
}

/// Builds the document. `created` is an RFC 3339 time.
pub fn document(subject: &Subject<'_>, a: &Attribution, created: &str) -> Value {
    let hex = subject
        .digest
        .strip_prefix("sha256:")
        .unwrap_or(subject.digest);
    let database = a.database.as_deref().unwrap_or("none");
    let mut packages = vec![json!({
        "SPDXID": "SPDXRef-Image",
        "name": subject.name,
        "versionInfo": subject.digest,
        "supplier": "NOASSERTION",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": format!("pkg:oci/{}@sha256%3A{hex}", purl_name(subject.name)),
        }],
    })];
    let mut relationships = vec![rel("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Image")];
    let ids: Vec<String> = a
        .packages
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "SPDXRef-Package-{}-{}-{}",
                p.manager.as_str(),
                i,
                id_safe(&p.name)
            )
        })
        .collect();
    let mut licenses = Licenses::default();
    for (p, id) in a.packages.iter().zip(&ids) {
        packages.push(package(p, id, database, &mut licenses));
        relationships.push(rel("SPDXRef-Image", "CONTAINS", id));
    }
    // A package that CONTAINS files says it analyzed them, with the
    // verification code of their SHA-1s (SPDX 2.3 §7.9).
    let mut sha1s: Vec<Vec<&str>> = vec![Vec::new(); packages.len()];
    let mut files = Vec::new();
    for (n, (path, f)) in a.files.iter().enumerate() {
        let (Some(sha1), Some(sha256)) = (&f.sha1, &f.sha256) else {
            continue;
        };
        let id = format!("SPDXRef-File-{n}");
        let mut file = json!({
            "SPDXID": id,
            "fileName": format!(".{path}"),
            "checksums": [
                {"algorithm": "SHA1", "checksumValue": sha1},
                {"algorithm": "SHA256", "checksumValue": sha256},
            ],
            "licenseConcluded": "NOASSERTION",
            "copyrightText": "NOASSERTION",
        });
        match f.package.filter(|i| *i < ids.len()) {
            Some(i) => {
                relationships.push(rel(&ids[i], "CONTAINS", &id));
                sha1s[i + 1].push(sha1);
            }
            None => {
                sha1s[0].push(sha1);
                file["comment"] = json!(format!(
                    "In no package: the builder's package database ({database}) does not list it."
                ));
                relationships.push(rel("SPDXRef-Image", "CONTAINS", &id));
            }
        }
        files.push(file);
    }
    for (p, mut codes) in packages.iter_mut().zip(sha1s) {
        if codes.is_empty() {
            continue;
        }
        codes.sort_unstable();
        p["filesAnalyzed"] = json!(true);
        p["packageVerificationCode"] = json!({
            "packageVerificationCodeValue": verification_code(&codes),
        });
    }
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}@{}", subject.name, subject.digest),
        "documentNamespace": format!(
            "https://shipyard.invalid/spdx/{}/sha256-{hex}",
            purl_name(subject.name)
        ),
        "creationInfo": {
            "created": created,
            "creators": [format!("Tool: shipyard-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "files": files,
        "relationships": relationships,
    });
    if !licenses.extracted.is_empty() {
        doc["hasExtractedLicensingInfos"] = licenses
            .extracted
            .iter()
            .map(|(id, text)| json!({"licenseId": id, "name": text, "extractedText": text}))
            .collect();
    }
    doc
}

/// The document's bytes: compact JSON, keys in a fixed order.
pub fn to_bytes(doc: &Value) -> Vec<u8> {
    // serde_json writes a Value's maps in their (deterministic) order and
    // cannot fail on one.
    serde_json::to_vec(doc).unwrap_or_default()
}

/// The SHA-1 of the sorted SHA-1s of a package's files, concatenated.
fn verification_code(sorted_sha1s: &[&str]) -> String {
    use sha1::Digest as _;
    let mut h = sha1::Sha1::new();
    for c in sorted_sha1s {
        h.update(c.as_bytes());
    }
    hex::encode(h.finalize())
}

fn rel(from: &str, kind: &str, to: &str) -> Value {
    json!({
        "spdxElementId": from,
        "relationshipType": kind,
        "relatedSpdxElement": to,
    })
}

fn package(p: &Package, id: &str, database: &str, licenses: &mut Licenses) -> Value {
    let mut v = json!({
        "SPDXID": id,
        "name": p.name,
        "versionInfo": p.version,
        "supplier": p.supplier.as_deref().map_or("NOASSERTION".to_string(), supplier),
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "sourceInfo": format!("installed in the builder, per its {database} database"),
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": p.purl(),
        }],
    });
    if let Some(l) = p.license.as_deref().filter(|l| !l.trim().is_empty()) {
        let declared = licenses.declared(l);
        if declared != l {
            v["licenseComments"] = json!(format!("The package database says: {l}"));
        }
        v["licenseDeclared"] = json!(declared);
    }
    v
}

/// SPDX license ids common in distribution packages. A database's
/// license names only these (and the exceptions below) to be declared as
/// it is; any other name becomes a `LicenseRef-` whose text the document
/// carries, so the document stays valid SPDX whatever the database says.
const KNOWN_LICENSES: &[&str] = &[
    "0BSD",
    "AGPL-3.0-only",
    "AGPL-3.0-or-later",
    "Apache-2.0",
    "Artistic-1.0-Perl",
    "Artistic-2.0",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "BSD-4-Clause",
    "BSL-1.0",
    "bzip2-1.0.6",
    "CC0-1.0",
    "CC-BY-4.0",
    "CC-BY-SA-4.0",
    "curl",
    "EPL-2.0",
    "GFDL-1.3-only",
    "GFDL-1.3-or-later",
    "GPL-1.0-or-later",
    "GPL-2.0",
    "GPL-2.0+",
    "GPL-2.0-only",
    "GPL-2.0-or-later",
    "GPL-3.0",
    "GPL-3.0+",
    "GPL-3.0-only",
    "GPL-3.0-or-later",
    "ISC",
    "LGPL-2.0-only",
    "LGPL-2.0-or-later",
    "LGPL-2.1",
    "LGPL-2.1+",
    "LGPL-2.1-only",
    "LGPL-2.1-or-later",
    "LGPL-3.0",
    "LGPL-3.0-only",
    "LGPL-3.0-or-later",
    "Libpng",
    "MIT",
    "MIT-0",
    "MPL-1.1",
    "MPL-2.0",
    "OpenSSL",
    "PSF-2.0",
    "Python-2.0",
    "Ruby",
    "Unlicense",
    "Vim",
    "X11",
    "Zlib",
    "ZPL-2.1",
];

/// License exceptions (after `WITH`) taken as they are.
const KNOWN_EXCEPTIONS: &[&str] = &[
    "Autoconf-exception-3.0",
    "Bison-exception-2.2",
    "Classpath-exception-2.0",
    "GCC-exception-3.1",
    "Linux-syscall-note",
    "LLVM-exception",
    "OpenSSL-exception",
];

/// The licenses a document declares: what the databases say, with what
/// is not a known SPDX id kept as `LicenseRef-` text.
#[derive(Default)]
struct Licenses {
    /// `LicenseRef-…` → the text it stands for.
    extracted: BTreeMap<String, String>,
}

impl Licenses {
    /// The `licenseDeclared` of a database's license string.
    fn declared(&mut self, raw: &str) -> String {
        if !is_license_expression(raw) {
            return self.reference(raw);
        }
        let spaced = raw.replace('(', " ( ").replace(')', " ) ");
        let tokens: Vec<&str> = spaced.split_whitespace().collect();
        let mut out: Vec<String> = Vec::new();
        for (i, t) in tokens.iter().enumerate() {
            let known = |list: &'static [&'static str]| {
                list.iter().find(|k| k.eq_ignore_ascii_case(t)).copied()
            };
            let after_with = i > 0 && tokens[i - 1] == "WITH";
            out.push(match *t {
                "AND" | "OR" | "WITH" | "(" | ")" => t.to_string(),
                _ if after_with => match known(KNOWN_EXCEPTIONS) {
                    Some(k) => k.to_string(),
                    // An exception cannot be a LicenseRef: the whole
                    // string is kept as one.
                    None => return self.reference(raw),
                },
                _ => match known(KNOWN_LICENSES) {
                    Some(k) => k.to_string(),
                    None => self.reference(t),
                },
            });
        }
        out.join(" ").replace("( ", "(").replace(" )", ")")
    }

    /// A `LicenseRef-` for `text`, the same one each time it appears.
    fn reference(&mut self, text: &str) -> String {
        if let Some((id, _)) = self.extracted.iter().find(|(_, t)| *t == text) {
            return id.clone();
        }
        let base: String = format!("LicenseRef-{}", id_safe(text.trim()))
            .chars()
            .take(64)
            .collect();
        let mut id = base.clone();
        let mut n = 1;
        while self.extracted.contains_key(&id) {
            n += 1;
            id = format!("{base}-{n}");
        }
        self.extracted.insert(id.clone(), text.to_string());
        id
    }
}

/// `Name <mail>` → `Organization: Name (mail)`, the SPDX spelling.
fn supplier(s: &str) -> String {
    match s.split_once('<') {
        Some((name, rest)) => format!(
            "Organization: {} ({})",
            name.trim(),
            rest.trim_end().trim_end_matches('>').trim()
        ),
        None => format!("Organization: {}", s.trim()),
    }
}

/// Whether a license string has the shape of an SPDX expression (ids,
/// `AND`/`OR`/`WITH`, parentheses). Older rpm spellings such as
/// `GPLv2+ and BSD` are not, and go to a comment instead.
fn is_license_expression(s: &str) -> bool {
    let spaced = s.replace('(', " ( ").replace(')', " ) ");
    let mut any = false;
    for t in spaced.split_whitespace() {
        match t {
            "AND" | "OR" | "WITH" | "(" | ")" => {}
            _ if t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.+:".contains(&b)) =>
            {
                any = true
            }
            _ => return false,
        }
        if t.chars().any(|c| c.is_ascii_lowercase()) && matches!(t, "and" | "or" | "with") {
            return false;
        }
    }
    any && !spaced
        .split_whitespace()
        .any(|t| matches!(t, "and" | "or" | "with"))
}

/// SPDX ids hold letters, digits, `.` and `-` only.
fn id_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn purl_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{Attribution, Manager, Package, TakenFile};
    use super::*;

    fn sample() -> Attribution {
        let pkg = |name: &str, license: Option<&str>| Package {
            manager: Manager::Deb,
            distro: "debian".into(),
            name: name.into(),
            version: "1.0-1".into(),
            arch: Some("amd64".into()),
            license: license.map(str::to_string),
            supplier: Some("Team <team@example.org>".into()),
        };
        let file = |p: Option<usize>, c: &str| TakenFile {
            package: p,
            sha1: Some(c.repeat(40)),
            sha256: Some(c.repeat(64)),
        };
        Attribution {
            database: Some("dpkg".into()),
            packages: vec![
                pkg("libc6", None),
                pkg("libstdc++6", Some("GPLv2+ and BSD")),
            ],
            files: [
                ("/usr/lib/libc.so.6".to_string(), file(Some(0), "a")),
                ("/usr/lib/libstdc++.so.6".to_string(), file(Some(1), "b")),
                ("/usr/local/bin/app".to_string(), file(None, "c")),
                (
                    "/usr/lib/libc.so".to_string(),
                    TakenFile {
                        package: Some(0),
                        sha1: None,
                        sha256: None,
                    },
                ),
            ]
            .into(),
        }
    }

    fn subject() -> Subject<'static> {
        Subject {
            name: "hello",
            digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        }
    }

    #[test]
    fn describes_the_image_which_contains_packages_which_contain_files() {
        let d = document(&subject(), &sample(), "2023-11-14T22:13:20Z");
        assert_eq!(d["spdxVersion"], "SPDX-2.3");
        assert_eq!(d["creationInfo"]["created"], "2023-11-14T22:13:20Z");
        assert_eq!(
            d["documentNamespace"],
            "https://shipyard.invalid/spdx/hello/sha256-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        );
        let pk = d["packages"].as_array().unwrap();
        assert_eq!(pk.len(), 3);
        assert_eq!(pk[1]["name"], "libc6");
        assert_eq!(pk[1]["SPDXID"], "SPDXRef-Package-deb-0-libc6");
        assert_eq!(pk[2]["SPDXID"], "SPDXRef-Package-deb-1-libstdc--6");
        assert_eq!(
            pk[1]["externalRefs"][0]["referenceLocator"],
            "pkg:deb/debian/libc6@1.0-1?arch=amd64"
        );
        assert_eq!(pk[1]["supplier"], "Organization: Team (team@example.org)");
        // Not an SPDX expression: a LicenseRef whose text the document
        // holds, and a comment saying what the database said.
        assert_eq!(pk[2]["licenseDeclared"], "LicenseRef-GPLv2--and-BSD");
        assert_eq!(
            d["hasExtractedLicensingInfos"][0],
            json!({
                "licenseId": "LicenseRef-GPLv2--and-BSD",
                "name": "GPLv2+ and BSD",
                "extractedText": "GPLv2+ and BSD"
            })
        );
        assert!(pk[2]["licenseComments"]
            .as_str()
            .unwrap()
            .contains("GPLv2+ and BSD"));
        // No license in the database: no assertion, no comment.
        assert_eq!(pk[1]["licenseDeclared"], "NOASSERTION");
        assert!(pk[1].get("licenseComments").is_none());
        // Three regular files; the symlink is not a file entry.
        let files = d["files"].as_array().unwrap();
        assert_eq!(files.len(), 3);
        let rels: Vec<(String, String, String)> = d["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["spdxElementId"].as_str().unwrap().to_string(),
                    r["relationshipType"].as_str().unwrap().to_string(),
                    r["relatedSpdxElement"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let id_of = |name: &str| {
            files.iter().find(|f| f["fileName"] == name).unwrap()["SPDXID"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let has = |a: &str, k: &str, b: &str| {
            rels.contains(&(a.to_string(), k.to_string(), b.to_string()))
        };
        assert!(has("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Image"));
        assert!(has(
            "SPDXRef-Image",
            "CONTAINS",
            "SPDXRef-Package-deb-0-libc6"
        ));
        assert!(has(
            "SPDXRef-Package-deb-0-libc6",
            "CONTAINS",
            &id_of("./usr/lib/libc.so.6")
        ));
        let app = id_of("./usr/local/bin/app");
        assert!(has("SPDXRef-Image", "CONTAINS", &app));
        // Packages that contain files analyzed them: the verification
        // code is the SHA-1 of their files' sorted SHA-1s.
        assert_eq!(pk[0]["filesAnalyzed"], true);
        assert_eq!(
            pk[0]["packageVerificationCode"]["packageVerificationCodeValue"],
            verification_code(&["c".repeat(40).as_str()])
        );
        assert_eq!(
            verification_code(&["a", "b"]),
            "da23614e02469a0d7c7bd1bdab5c9c474b1904dc",
            "sha1(\"ab\")"
        );
        assert_eq!(pk[1]["filesAnalyzed"], true);
        let app_entry = files.iter().find(|f| f["SPDXID"] == app.as_str()).unwrap();
        assert!(app_entry["comment"]
            .as_str()
            .unwrap()
            .contains("In no package"));
    }

    #[test]
    fn same_input_same_bytes() {
        let a = to_bytes(&document(&subject(), &sample(), "1970-01-01T00:00:00Z"));
        let b = to_bytes(&document(&subject(), &sample(), "1970-01-01T00:00:00Z"));
        assert_eq!(a, b);
    }

    #[test]
    fn licenses_outside_the_known_ids_become_references() {
        let mut l = Licenses::default();
        assert_eq!(l.declared("MIT"), "MIT");
        assert_eq!(l.declared("mit OR zlib"), "MIT OR Zlib");
        assert_eq!(
            l.declared("(MIT OR custom) AND GPL-2.0-only WITH GCC-exception-3.1"),
            "(MIT OR LicenseRef-custom) AND GPL-2.0-only WITH GCC-exception-3.1"
        );
        assert_eq!(
            l.declared("GPL-2.0-only WITH Odd-exception"),
            "LicenseRef-GPL-2.0-only-WITH-Odd-exception"
        );
        // The same text, the same reference; another text with the same
        // spelling once made safe, another one.
        assert_eq!(l.declared("custom"), "LicenseRef-custom");
        assert_eq!(l.reference("custom!"), "LicenseRef-custom-");
        assert_eq!(l.reference("custom?"), "LicenseRef-custom--2");
        assert_eq!(l.extracted["LicenseRef-custom"], "custom");
        assert!(l.extracted.keys().all(|k| k
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')));
    }

    #[test]
    fn license_expressions() {
        assert!(is_license_expression("MIT"));
        assert!(is_license_expression(
            "GPL-2.0-or-later AND (MIT OR BSD-3-Clause)"
        ));
        assert!(is_license_expression(
            "GPL-2.0-only WITH Classpath-exception-2.0"
        ));
        assert!(!is_license_expression("GPLv2+ and BSD"));
        assert!(!is_license_expression("Public Domain, see COPYING"));
        assert!(!is_license_expression(""));
    }
}
