//! The command line as a user meets it: help on every command, man pages in
//! step with the CLI definition, and clear errors.

use crate::common::*;

#[test]
fn every_command_has_help() {
    let top = ok(["--help"]);
    for sub in [
        "build",
        "manifest",
        "diff",
        "unpack",
        "inspect",
        "tag",
        "gc",
        "shell",
        "pull",
        "push",
        "export",
        "import",
        "login",
        "logout",
        "pod",
        "cache",
        "completion",
    ] {
        assert!(top.contains(sub), "{sub} missing from --help");
        let h = ok([sub, "--help"]);
        assert!(h.contains("Usage: shipyard"), "{sub} --help: {h}");
        assert!(h.len() > 200, "{sub} --help is too thin: {h}");
    }
    for nested in ["unpack", "kube"] {
        let h = ok(["pod", nested, "--help"]);
        assert!(
            h.contains("Usage: shipyard pod"),
            "pod {nested} --help: {h}"
        );
        assert!(h.len() > 200, "pod {nested} --help is too thin: {h}");
    }
    assert!(ok(["--version"]).starts_with("shipyard "));
}

#[test]
fn man_pages_are_fresh() {
    let t = tempfile::tempdir().unwrap();
    ok(["generate-man".as_ref(), t.path().as_os_str()]);
    let man = src_dir().join("man");
    let mut generated: Vec<String> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    generated.sort();
    let mut committed: Vec<String> = std::fs::read_dir(&man)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    committed.sort();
    assert_eq!(
        generated, committed,
        "man/ is stale: run `cargo run -- generate-man man`"
    );
    for name in generated {
        assert_eq!(
            std::fs::read(t.path().join(&name)).unwrap(),
            std::fs::read(man.join(&name)).unwrap(),
            "man/{name} is stale: run `cargo run -- generate-man man`"
        );
    }
}

#[test]
fn usage_errors_are_clear() {
    let e = fails(["inspect", "not-a-ref"]);
    assert!(
        e.contains("not an image reference") && e.contains("oci:DIR[:TAG]"),
        "{e}"
    );
    let e = fails(["unpack", "oci:/nonexistent-layout:x", "/tmp/x"]);
    assert!(e.contains("not an OCI layout"), "{e}");
    let e = fails(["manifest", "/nonexistent/path"]);
    assert!(e.contains("/nonexistent/path"), "{e}");
    let e = fails(["frobnicate"]);
    assert!(e.contains("unrecognized subcommand"), "{e}");
}

#[test]
fn config_edits_make_a_new_manifest_and_leave_the_old_one() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    write(&root.join("f"), b"x", 0o644);
    let l = t.path().join("l");
    let r = format!("oci:{}:v1", l.display());
    let old = diff_scratch(&root, &r, &[]);
    let new = ok([
        "config",
        &r,
        "--entrypoint",
        "exec app --flag",
        "--env",
        "A=1",
        "--label",
        "team=ci",
        "--annotation",
        "org.example.note=edited",
        "--user",
        "1000:1000",
        "--workdir",
        "/srv",
        "--port",
        "8080",
        "--volume",
        "/data",
        "--stop-signal",
        "SIGINT",
        "--author",
        "ci",
        "--created",
        "@1700000000",
    ])
    .trim()
    .to_string();
    assert_ne!(new, old);
    // The tag moved; the old manifest is still there, unchanged.
    assert_eq!(digest_of_tag(&l, "v1"), new);
    let before: serde_json::Value = serde_json::from_str(&ok([
        "inspect",
        &format!("oci:{}@{old}", l.display()),
        "--json",
    ]))
    .unwrap();
    assert!(!before.to_string().contains("team"), "{before}");
    let after = ok(["inspect", &r, "--json"]);
    for want in [
        "\"/bin/sh\",\"-c\",\"exec app --flag\"",
        "A=1",
        "team",
        "1000:1000",
        "/srv",
        "8080/tcp",
        "/data",
        "SIGINT",
        "2023-11-14T22:13:20Z",
        "shipyard config",
    ] {
        let squeeze = |s: &str| s.split_whitespace().collect::<String>();
        assert!(
            squeeze(&after).contains(&squeeze(want)),
            "{want} not in {after}"
        );
    }
    let manifest = std::fs::read_to_string(
        l.join("blobs/sha256")
            .join(new.trim_start_matches("sha256:")),
    )
    .unwrap();
    assert!(manifest.contains("org.example.note"), "{manifest}");
    // --tag leaves the source tag; "" clears.
    let cleared = ok([
        "config",
        &r,
        "--tag",
        "v2",
        "--entrypoint",
        "",
        "--unset-env",
        "A",
    ]);
    assert_eq!(digest_of_tag(&l, "v1"), new);
    assert_eq!(digest_of_tag(&l, "v2"), cleared.trim());
    let v2: serde_json::Value = serde_json::from_str(&ok([
        "inspect",
        &format!("oci:{}:v2", l.display()),
        "--json",
    ]))
    .unwrap();
    let c = &v2["config"]["config"];
    assert!(c["Entrypoint"].is_null(), "{c}");
    assert!(!c["Env"].to_string().contains("A=1"), "{c}");
    // Mistakes are named.
    let err = fails(["config", &r, "--env", "NOEQUALS"]);
    assert!(err.contains("expected KEY=VALUE"), "{err}");
    let err = fails(["config", &r, "--cmd", "[not json"]);
    assert!(err.contains("not a JSON array"), "{err}");
    let err = fails(["config", &r, "--created", "yesterday"]);
    assert!(err.contains("RFC 3339"), "{err}");
}

#[test]
fn an_index_needs_one_image_per_platform_and_builds_are_native_only() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    write(&root.join("f"), b"x", 0o644);
    let l = t.path().join("l");
    let a = format!("oci:{}:a", l.display());
    diff_scratch(&root, &a, &[]);
    let b = format!("oci:{}:b", l.display());
    ok(["config", &a, "--tag", "b", "--label", "copy=1"]);
    let err = fails([
        "index",
        &a,
        &b,
        "--output",
        &format!("oci:{}:multi", t.path().join("o").display()),
    ]);
    assert!(err.contains("are both for linux/"), "{err}");
    let err = fails([
        "index",
        &a,
        "--output",
        &format!("oci:{}", t.path().join("o").display()),
    ]);
    assert!(err.contains("name the index's tag"), "{err}");
    let foreign = if cfg!(target_arch = "x86_64") {
        "linux/arm64"
    } else {
        "linux/amd64"
    };
    let err = fails(["build", ".", "--platform", foreign]);
    assert!(
        err.contains("no emulation") && err.contains("shipyard index"),
        "{err}"
    );
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    for i in 0..3000 {
        write(&tree.join(format!("d{}/file-{i}", i % 10)), b"x", 0o644);
    }
    let img = format!("oci:{}:t", t.path().join("img").display());
    diff_scratch(&tree, &img, &[]);
    let (first, status, err) = head_one(["manifest", &img]);
    assert!(!first.is_empty());
    assert_quiet_broken_pipe(status, &err);
}

#[test]
fn quiet_diff_prints_only_the_digest() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    write(&tree.join("a"), b"x", 0o644);
    let img = format!("oci:{}:t", t.path().join("img").display());
    let o = shipyard()
        .args([
            "-q",
            "diff",
            tree.to_str().unwrap(),
            "--against",
            "scratch",
            "--output",
            &img,
        ])
        .output()
        .unwrap();
    assert_success(&o, "diff -q");
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.trim().starts_with("sha256:") && out.lines().count() == 1,
        "{out}"
    );
    // unpack and gc say nothing either, and gc still lists what it removed.
    for args in [
        vec![
            "-q",
            "unpack",
            &img,
            t.path().join("root").to_str().unwrap(),
        ],
        vec!["-q", "gc", &img],
    ] {
        let o = shipyard().args(&args).output().unwrap();
        assert_success(&o, &format!("{args:?}"));
        assert!(
            o.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // Without -q the statistics are there.
    let o = shipyard()
        .args([
            "diff",
            tree.to_str().unwrap(),
            "--against",
            "scratch",
            "--output",
            &img,
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 added"));
}

#[test]
fn bare_names_follow_registries_conf() {
    let t = tempfile::tempdir().unwrap();
    let conf = t.path().join("registries.conf");
    let out = format!("oci:{}", t.path().join("o").display());
    // --pull=never names the resolved image without touching the network.
    let pull = |name: &str, conf: &std::path::Path| {
        let o = shipyard()
            .env("XDG_CACHE_HOME", t.path().join("cache"))
            .env("CONTAINERS_REGISTRIES_CONF", conf)
            .args(["pull", "--pull", "never", name, &out])
            .output()
            .unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    std::fs::write(
        &conf,
        "unqualified-search-registries = [\"registry.example:5000\", \"docker.io\"]\n",
    )
    .unwrap();
    let e = pull("app:v1", &conf);
    assert!(
        e.contains("registry.example:5000/app:v1 is not in the cache"),
        "{e}"
    );
    // A qualified name, and docker:// (skopeo's meaning), are left alone.
    let e = pull("other.example/app:v1", &conf);
    assert!(
        e.contains("other.example/app:v1 is not in the cache"),
        "{e}"
    );
    let e = pull("docker://app:v1", &conf);
    assert!(
        e.contains("docker.io/library/app:v1 is not in the cache"),
        "{e}"
    );
    // No search registries: docker.io.
    std::fs::write(&conf, "").unwrap();
    let e = pull("app:v1", &conf);
    assert!(
        e.contains("docker.io/library/app:v1 is not in the cache"),
        "{e}"
    );
    // A broken file is named.
    std::fs::write(&conf, "unqualified-search-registries = 3\n").unwrap();
    let e = pull("app:v1", &conf);
    assert!(
        e.contains("registries.conf") && e.contains("not a valid"),
        "{e}"
    );
}

#[test]
fn completions_offer_the_commands_and_options_but_not_internal_ones() {
    let t = tempfile::tempdir().unwrap();
    let script = t.path().join("shipyard.bash");
    std::fs::write(&script, ok(["completion", "bash"])).unwrap();
    // What bash offers after `shipyard pu<TAB>` and `shipyard push --all<TAB>`.
    let complete = |words: &str| {
        let n = words.split(' ').count() - 1;
        let prog = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={n}; COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; \
             _shipyard shipyard \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; echo \"${{COMPREPLY[*]}}\"",
            script.display()
        );
        let o = std::process::Command::new("bash")
            .args(["-c", &prog])
            .output()
            .unwrap();
        assert_success(&o, "bash completion");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(complete("shipyard pu"), "pull push");
    assert_eq!(complete("shipyard push --all"), "--all-tags");
    assert_eq!(
        complete("shipyard __"),
        "",
        "internal commands are not offered"
    );
    for shell in ["bash", "zsh", "fish"] {
        let s = ok(["completion", shell]);
        assert!(
            s.contains("completion") && s.contains("--tls-verify"),
            "{shell}"
        );
        assert!(
            !s.contains("__sandbox") && !s.contains("generate-man"),
            "{shell}"
        );
    }
    let e = fails(["completion", "tcsh"]);
    assert!(
        e.contains("bash") && e.contains("zsh") && e.contains("fish"),
        "{e}"
    );
}

#[test]
fn each_cause_of_an_error_is_said_once() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("missing-tree");
    let err = fails([
        "diff",
        missing.to_str().unwrap(),
        "--against",
        "scratch",
        "--output",
        &format!("oci:{}:t", t.path().join("l").display()),
    ]);
    assert_eq!(
        err.matches("No such file or directory").count(),
        1,
        "a cause is repeated: {err}"
    );
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
}

/// Each link of `e`'s chain says its own step and leaves its cause to
/// the next link, and `error_text` (what `main` prints) holds every
/// link exactly once. Returns that text.
fn said_once(e: &anyhow::Error) -> String {
    let links: Vec<String> = e
        .chain()
        .map(|c| c.to_string())
        .filter(|s| !s.is_empty())
        .collect();
    for w in links.windows(2) {
        assert!(
            !w[0].contains(&w[1]),
            "{:?} prints its cause {:?} and returns it as source() too",
            w[0],
            w[1]
        );
    }
    let text = shipyard::cli::error_text(e);
    for l in &links {
        assert_eq!(text.matches(l.as_str()).count(), 1, "{l:?} in: {text}");
    }
    text
}

#[test]
fn a_registry_error_says_each_cause_once_down_to_the_refused_connection() {
    use shipyard_image::registry::{pull, Client, Options};
    let t = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: the connection is refused at once.
    let o = Options {
        retries: 0,
        ..Options::default()
    };
    let client = Client::new("127.0.0.1:1", "127.0.0.1:1", &o).unwrap();
    let cache = shipyard_image::cache::Cache::at(t.path().join("cache")).unwrap();
    let err = pull::fetch_manifest(&client, "nothing", "here", &cache).unwrap_err();
    let err = anyhow::Error::from(err).context("pulling docker://127.0.0.1:1/nothing:here");
    let text = said_once(&err);
    assert!(text.starts_with("pulling docker://127.0.0.1:1/nothing:here: GET https://127.0.0.1:1/v2/nothing/manifests/here: gave up after 1 attempt(s): "), "{text}");
    assert_eq!(text.matches("Connection refused").count(), 1, "{text}");
}

#[test]
fn a_corrupt_blob_in_a_layout_read_says_each_cause_once() {
    use shipyard_image::oci::{image, layout::Layout};
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("l");
    let layout = Layout::open_or_create(&dir).unwrap();
    let d = image::write_image(&layout, &image::empty_config(), Vec::new()).unwrap();
    layout.tag("t", &d).unwrap();
    let img = image::Image::load(&layout, &d).unwrap();
    let config = layout.blob_path(&img.config_digest);
    std::fs::write(&config, b"{}").unwrap();
    let r =
        shipyard_image::reference::Reference::parse(&format!("oci:{}:t", dir.display())).unwrap();
    let err = shipyard_image::transport::open_image(&r, &Default::default()).unwrap_err();
    let text = said_once(&anyhow::Error::from(err));
    assert!(
        text.starts_with(&format!(
            "reading image {r}: blob {} is corrupt",
            img.config_digest
        )),
        "{text}"
    );
}

/// A pod written by hand into `layout`: an index over one artifact
/// manifest whose config is `definition`, as `shipyard build` writes it.
fn hand_made_pod(
    layout: &shipyard_image::oci::layout::Layout,
    definition: &serde_json::Value,
) -> oci_spec::image::Descriptor {
    use oci_spec::image::MediaType;
    use shipyard::pod::{ARTIFACT_TYPE, DEFINITION_TYPE};
    let def = layout
        .put_json(definition, MediaType::Other(DEFINITION_TYPE.into()))
        .unwrap();
    let art = layout
        .put_json(
            &serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": ARTIFACT_TYPE,
                "config": def,
                "layers": [],
            }),
            MediaType::ImageManifest,
        )
        .unwrap();
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        shipyard_image::oci::media::ARTIFACT_TYPE_ANNOTATION.into(),
        ARTIFACT_TYPE.into(),
    );
    layout
        .put_json(
            &serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [art],
                "annotations": annotations,
            }),
            MediaType::ImageIndex,
        )
        .unwrap()
}

#[test]
fn a_pod_with_a_broken_definition_says_each_cause_once() {
    use shipyard::pod::read;
    let t = tempfile::tempdir().unwrap();
    let layout = shipyard_image::oci::layout::Layout::open_or_create(t.path()).unwrap();
    let d = hand_made_pod(&layout, &serde_json::json!({"name": 7}));
    assert!(read::is_pod(&layout, &d));
    let err = read::load(&layout, &d).unwrap_err();
    // As `shipyard pod unpack` and `pod kube` wrap it.
    let text = said_once(&anyhow::Error::from(err).context("reading pod oci:x:shop"));
    assert!(
        text.starts_with(&format!(
            "reading pod oci:x:shop: pod {}: invalid definition: invalid type",
            d.digest()
        )),
        "{text}"
    );
}

#[test]
fn a_pod_unpacked_under_a_file_says_what_it_was_creating_and_why_once() {
    use shipyard::pod::{read, unpack};
    let t = tempfile::tempdir().unwrap();
    let layout = shipyard_image::oci::layout::Layout::open_or_create(t.path().join("l")).unwrap();
    let def = serde_json::json!({"name": "shop", "version": "1", "containers": [], "volumes": []});
    let pod = read::load(&layout, &hand_made_pod(&layout, &def)).unwrap();
    let file = t.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let err = unpack::unpack(&layout, &pod, &file.join("dest")).unwrap_err();
    let text = said_once(&anyhow::Error::from(err));
    assert_eq!(
        text,
        format!(
            "creating {}: File exists (os error {})",
            file.display(),
            libc::EEXIST
        )
    );
    // A pod naming a member the index lacks: no cause, said once.
    let def = serde_json::json!({"name": "shop", "version": "1", "volumes": [],
        "containers": [{"name": "web", "image": "sha256:00"}]});
    let d = hand_made_pod(&layout, &def);
    let err = read::load(&layout, &d).unwrap_err();
    assert!(std::error::Error::source(&err).is_none());
    let text = said_once(&anyhow::Error::from(err).context("reading pod oci:x:shop"));
    assert_eq!(
        text,
        format!(
            "reading pod oci:x:shop: pod {}: container web names image sha256:00 but the index does not hold it",
            d.digest()
        )
    );
}
