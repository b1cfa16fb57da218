//! Pods: bundle format, reproducibility, unpack, kube and bad input.

use crate::common::pod::*;
use crate::common::*;
use std::process::Command;

fn json(path: &std::path::Path, digest: &str) -> serde_json::Value {
    let hex = digest.trim_start_matches("sha256:");
    serde_json::from_slice(&std::fs::read(path.join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

#[test]
fn a_pod_is_an_index_of_its_images_and_a_definition_and_is_reproducible() {
    let t = tempfile::tempdir().unwrap();
    let proj = project(t.path());
    let out = t.path().join("out");
    let digest = build_pod(&proj, &out);
    assert_eq!(
        digest_of_tag(&out, "shop"),
        digest,
        "tagged NAME and NAME:VERSION"
    );
    let index = json(&out, &digest);
    assert_eq!(
        index["annotations"]["io.shipyard.artifact-type"],
        "application/vnd.shipyard.pod.v1"
    );
    assert!(
        index.get("artifactType").is_none(),
        "skopeo 1.9 would drop it and change the digest"
    );
    let ann = &index["annotations"];
    assert_eq!(ann["org.opencontainers.image.version"], "1.2.0");
    assert_eq!(
        ann["org.opencontainers.image.created"],
        "1970-01-01T00:00:00Z"
    );
    assert_eq!(ann["org.example.team"], "infra");
    let m = index["manifests"].as_array().unwrap();
    assert_eq!(m.len(), 4);
    assert_eq!(m[2]["annotations"]["io.shipyard.pod.container"], "shell");
    assert_eq!(
        m[2]["digest"],
        digest_of_tag(&proj.join("base"), "v1"),
        "a referenced image is taken as is"
    );
    assert_eq!(m[0]["annotations"]["io.shipyard.pod.container"], "web");
    assert_eq!(m[0]["digest"], digest_of_tag(&out, "web"));
    assert_eq!(m[1]["annotations"]["io.shipyard.pod.container"], "worker");
    assert_eq!(m[3]["annotations"]["io.shipyard.pod.role"], "definition");
    let art = json(&out, m[3]["digest"].as_str().unwrap());
    assert_eq!(art["artifactType"], "application/vnd.shipyard.pod.v1");
    let def = json(&out, art["config"]["digest"].as_str().unwrap());
    assert_eq!(def["containers"][0]["image"], m[0]["digest"]);
    assert_eq!(def["containers"][0]["ports"][1]["protocol"], "udp");
    assert!(
        def["containers"][2]["source"]
            .as_str()
            .unwrap()
            .ends_with("base:v1"),
        "{def}"
    );
    let vols: Vec<&str> = def["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vols, ["config", "static", "gen"]);
    assert_eq!(art["layers"].as_array().unwrap().len(), 3);
    // Same inputs, another checkout and umask: the same index digest.
    let t2 = tempfile::tempdir().unwrap();
    let proj2 = project(t2.path());
    let again = build_pod(&proj2, &t2.path().join("out"));
    assert_eq!(again, digest);
    // inspect shows members and volumes.
    let text = ok(["inspect".to_string(), format!("oci:{}:shop", out.display())]);
    assert!(
        text.contains("Pod:          shop 1.2.0")
            && text.contains("worker")
            && text.contains("gen"),
        "{text}"
    );
    let j: serde_json::Value = serde_json::from_str(&ok([
        "inspect".to_string(),
        "--json".into(),
        format!("oci:{}:shop", out.display()),
    ]))
    .unwrap();
    assert_eq!(j["containers"].as_array().unwrap().len(), 3);
    assert!(j["containers"][0]["size"].as_u64().unwrap() > 0);
    // --pod builds the pod and the images it needs; --image alone no pod.
    let only = t.path().join("only");
    let o = shipyard()
        .arg("build")
        .arg(&proj)
        .args(["--image", "web", "--output"])
        .arg(format!("oci:{}", only.display()))
        .output()
        .unwrap();
    assert_success(&o, "build --image web");
    assert_eq!(
        shipyard_image::oci::layout::Layout::open(&only)
            .unwrap()
            .tags()
            .unwrap(),
        ["web"]
    );
}

#[test]
fn git_metadata_becomes_annotations_with_a_dirty_flag() {
    let t = tempfile::tempdir().unwrap();
    let proj = project(t.path());
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .arg("-C")
            .arg(&proj)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .output()
            .unwrap();
        assert_success(&o, &format!("git {args:?}"));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&[
        "remote",
        "add",
        "origin",
        "https://example.invalid/shop.git",
    ]);
    git(&["add", "shipyard.toml", "conf", "static"]);
    git(&["commit", "-qm", "one"]);
    let head = git(&["rev-parse", "HEAD"]);
    let out = t.path().join("out");
    let d = build_pod(&proj, &out);
    let ann = json(&out, &d)["annotations"].clone();
    assert_eq!(ann["org.opencontainers.image.revision"], head);
    assert_eq!(
        ann["org.opencontainers.image.source"],
        "https://example.invalid/shop.git"
    );
    assert_eq!(ann["io.shipyard.pod.dirty"], "false");
    std::fs::write(proj.join("conf/app.conf"), "greeting=changed\n").unwrap();
    let d2 = build_pod(&proj, &t.path().join("out2"));
    assert_eq!(
        json(&t.path().join("out2"), &d2)["annotations"]["io.shipyard.pod.dirty"],
        "true"
    );
}

#[test]
fn unpack_gives_a_deployable_directory_and_kube_a_pinned_manifest() {
    let t = tempfile::tempdir().unwrap();
    let proj = project(t.path());
    let out = t.path().join("out");
    let digest = build_pod(&proj, &out);
    let dest = t.path().join("deploy");
    let r = format!("oci:{}:shop", out.display());
    assert_eq!(
        ok(["pod", "unpack", &r, dest.to_str().unwrap()]).trim(),
        digest
    );
    let rd = |p: &str| std::fs::read_to_string(dest.join(p)).unwrap();
    assert_eq!(rd("volumes/config/app.conf"), "greeting=hi\n");
    assert_eq!(rd("volumes/static/css/site.css"), "body{}\n");
    assert!(
        !dest.join("volumes/static/draft.txt").exists(),
        "include globs select"
    );
    assert_eq!(rd("volumes/gen/gen.txt"), "generated\n");
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dest.join("volumes/static/index.html")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o640, "the volume's mode");
    let def: serde_json::Value = serde_json::from_str(&rd("pod.json")).unwrap();
    assert_eq!(def["name"], "shop");
    let images = shipyard_image::oci::layout::Layout::open(dest.join("images")).unwrap();
    assert_eq!(images.tags().unwrap(), ["shell", "web", "worker"]);
    // A second unpack into the same place is refused, not merged.
    let e = fails(["pod", "unpack", &r, dest.to_str().unwrap()]);
    assert!(e.contains("not empty"), "{e}");
    // kube: needs to know where the pod lives…
    let e = fails(["pod", "kube", &r]);
    assert!(e.contains("--registry"), "{e}");
    // …and then pins every image by digest; the YAML parses.
    let y = ok([
        "pod",
        "kube",
        &r,
        "--registry",
        "docker://registry.example/team/shop",
    ]);
    let docs = pyyaml(&y);
    assert_eq!(docs[0]["kind"], "ConfigMap");
    assert_eq!(docs[0]["data"]["app.conf"], "greeting=hi\n");
    let pod = &docs[1];
    assert_eq!(pod["kind"], "Pod");
    let web = &pod["spec"]["containers"][0];
    assert_eq!(
        web["image"],
        format!("registry.example/team/shop@{}", digest_of_tag(&out, "web"))
    );
    assert_eq!(web["ports"][1]["protocol"], "UDP");
    assert_eq!(web["volumeMounts"][1]["subPath"], "static");
    let vols = pod["spec"]["volumes"].as_array().unwrap();
    assert!(vols.iter().any(|v| v["image"]["reference"]
        .as_str()
        .is_some_and(|r| r.starts_with("registry.example/team/shop@sha256:"))));
}

#[test]
fn kube_config_files_named_like_yaml_keywords_stay_distinct_strings() {
    let t = tempfile::tempdir().unwrap();
    let proj = project(t.path());
    let names = ["true", "on", "null", "1.0", "~", "No"];
    let mut files = String::from("files = { \"app.conf\" = \"conf/app.conf\"");
    for (i, n) in names.iter().enumerate() {
        write(
            &proj.join(format!("conf/f{i}")),
            format!("file {i}\n").as_bytes(),
            0o644,
        );
        files.push_str(&format!(", \"{n}\" = \"conf/f{i}\""));
    }
    files.push_str(" }");
    let spec = SPEC.replace("files = { \"app.conf\" = \"conf/app.conf\" }", &files);
    assert_ne!(spec, SPEC);
    std::fs::write(proj.join("shipyard.toml"), spec).unwrap();
    let out = t.path().join("out");
    build_pod(&proj, &out);
    let y = ok([
        "pod".to_string(),
        "kube".into(),
        format!("oci:{}:shop", out.display()),
        "--registry".into(),
        "docker://registry.example/team/shop".into(),
    ]);
    let docs = pyyaml(&y);
    let data = docs[0]["data"].as_object().unwrap();
    // `~` is not a ConfigMap key character: it becomes `_`.
    for (i, key) in ["true", "on", "null", "1.0", "_", "No"].iter().enumerate() {
        assert_eq!(
            data.get(*key),
            Some(&serde_json::json!(format!("file {i}\n"))),
            "{key} in {y}"
        );
    }
    assert_eq!(data.len(), names.len() + 1, "no two keys collide: {y}");
    let items = docs[1]["spec"]["volumes"][0]["configMap"]["items"]
        .as_array()
        .unwrap();
    let paths: Vec<&str> = items.iter().map(|i| i["path"].as_str().unwrap()).collect();
    for n in names {
        assert!(paths.contains(&n), "{n} in {paths:?}");
    }
}

#[test]
fn kube_into_a_closed_pipe_ends_quietly() {
    let t = tempfile::tempdir().unwrap();
    let proj = project(t.path());
    // A config file larger than a pipe's buffer, printed in one piece.
    write(&proj.join("conf/app.conf"), &vec![b'x'; 300 << 10], 0o644);
    let out = t.path().join("out");
    build_pod(&proj, &out);
    let (first, status, err) = head_one([
        "pod".to_string(),
        "kube".into(),
        format!("oci:{}:shop", out.display()),
        "--registry".into(),
        "docker://registry.example/team/shop".into(),
    ]);
    assert_eq!(first, "---\n");
    assert_quiet_broken_pipe(status, &err);
}

fn spec_err(extra: &str, make: &dyn Fn(&std::path::Path)) -> String {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("p");
    std::fs::create_dir_all(p.join("static")).unwrap();
    make(t.path());
    std::fs::write(
        p.join("shipyard.toml"),
        format!("[image.app]\ntapeouts = []\n{extra}"),
    )
    .unwrap();
    let o = shipyard()
        .arg("build")
        .arg(&p)
        .arg("--output")
        .arg(format!("oci:{}", t.path().join("o").display()))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(!t.path().join("o").exists(), "nothing written");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_pods_are_named_with_file_line_and_column() {
    let none = |_: &std::path::Path| {};
    let e = spec_err(
        "[pod.p]\nversion = \"1\"\n[pod.p.containers.c]\nimage = \"ap\"\n",
        &none,
    );
    assert!(
        e.contains("shipyard.toml:6:9")
            && e.contains("no image `ap`")
            && e.contains("did you mean `app`"),
        "{e}"
    );
    let e = spec_err("[pod.p]\nversion = \"1\"\n[pod.p.containers.c]\nimage = \"app\"\n[pod.p.volumes.v]\nsource = \"../outside\"\n", &|d| {
        std::fs::create_dir_all(d.join("outside")).unwrap()
    });
    assert!(
        e.contains("shipyard.toml:8:10") && e.contains("must stay inside the source tree"),
        "{e}"
    );
    // A symlink that leads out of the tree is outside too.
    let e = spec_err("[pod.p]\nversion = \"1\"\n[pod.p.containers.c]\nimage = \"app\"\n[pod.p.volumes.v]\nsource = \"link\"\n", &|d| {
        std::fs::create_dir_all(d.join("outside")).unwrap();
        std::os::unix::fs::symlink(d.join("outside"), d.join("p/link")).unwrap();
    });
    assert!(e.contains("not a directory inside the source tree"), "{e}");
    let e = spec_err("[pod.p]\nversion = \"1\"\n[pod.p.containers.c]\nimage = \"app\"\n[pod.p.containers.c]\nimage = \"app\"\n", &none);
    assert!(
        e.contains("shipyard.toml:7") && e.contains("duplicate"),
        "{e}"
    );
    let e = spec_err("[pod.p]\nversion = \"1\"\n[pod.p.containers.c]\nimage = \"app\"\nmounts = { \"/x\" = \"nope\" }\n", &none);
    assert!(e.contains("unknown volume `nope`"), "{e}");
    let e = spec_err(
        "[pod.p]\nversion = \"1:2\"\n[pod.p.containers.c]\nimage = \"app\"\n",
        &none,
    );
    assert!(e.contains("pod.p.version"), "{e}");
    let e = spec_err("[pod.p]\nversion = \"1\"\nfiles = { \"a\" = \"../../etc/passwd\" }\n[pod.p.containers.c]\nimage = \"app\"\n", &none);
    assert!(e.contains("inside the source tree"), "{e}");
    let e = spec_err("[pod.p]\nversion = \"1\"\n", &none);
    assert!(e.contains("containers"), "{e}");
}

#[test]
fn build_pod_and_push_selection_errors() {
    let t = tempfile::tempdir().unwrap();
    let proj = project(t.path());
    let out = t.path().join("out");
    let run = |args: &[&str]| {
        shipyard()
            .arg("build")
            .arg(&proj)
            .arg("--output")
            .arg(format!("oci:{}", out.display()))
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&["--pod", "shp"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("--pod shp: no such pod") && e.contains("shop"),
        "{e}"
    );
    assert!(!out.exists(), "nothing built");
    let o = run(&["--push", "docker://127.0.0.1:1/x"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("write --push NAME=REF"), "{e}");
    let o = run(&["--push", "nope=docker://127.0.0.1:1/x"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("made no image nope"), "{e}");
    // kube of a pod with a --registry that is not one.
    let r = format!("oci:{}:shop", out.display());
    let e = fails(["pod", "kube", &r, "--registry", "oci:/x"]);
    assert!(e.contains("name a registry repository"), "{e}");
}

#[test]
fn a_pod_file_that_is_a_symlink_out_of_the_project_is_refused_when_read() {
    let t = tempfile::tempdir().unwrap();
    let proj = project(t.path());
    // The spec names conf/app.conf, a file inside the project when the
    // spec is checked; it is a symlink to a file of the caller's outside.
    let secret = format!("SHIPYARD-POD-SECRET-{}", std::process::id());
    write(&t.path().join("private/passwd"), secret.as_bytes(), 0o600);
    std::fs::remove_file(proj.join("conf/app.conf")).unwrap();
    std::os::unix::fs::symlink(t.path().join("private/passwd"), proj.join("conf/app.conf"))
        .unwrap();
    let out = t.path().join("out");
    let o = shipyard()
        .arg("build")
        .arg(&proj)
        .arg("--output")
        .arg(format!("oci:{}", out.display()))
        .output()
        .unwrap();
    assert!(!o.status.success(), "the pod took a file from outside");
    let err = String::from_utf8_lossy(&o.stderr);
    // Said once each: which pod, which file, and why.
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap();
    for once in [
        "pod shop",
        "app.conf:",
        "leads out of the project directory",
    ] {
        assert_eq!(line.matches(once).count(), 1, "{once:?} in {line}");
    }
    assert!(
        err.contains("conf/app.conf leads out of the project directory"),
        "{err}"
    );
    for e in walkdir::WalkDir::new(&out)
        .into_iter()
        .filter_map(|e| e.ok())
    {
        if e.file_type().is_file() {
            let raw = std::fs::read(e.path()).unwrap();
            let mut plain = Vec::new();
            let _ = std::io::Read::read_to_end(
                &mut flate2::read::MultiGzDecoder::new(&raw[..]),
                &mut plain,
            );
            for b in [&raw, &plain] {
                assert!(
                    !b.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "the secret is in {}",
                    e.path().display()
                );
            }
        }
    }
}
