//! The step cache shared through a registry: two CI runners (two project
//! checkouts, two cache directories) and one docker-registry on 127.0.0.1.
//! What the first runner built and pushed with --cache-to, the second
//! finds with --cache-from and does not rebuild.

use crate::common::project::Project;
use crate::common::registry::Registry;
use crate::common::*;

#[test]
fn a_second_runner_rebuilds_nothing_the_first_pushed_to_the_cache() {
    let reg = Registry::start();
    let cache = reg.url("ci/cache");
    let (a, b) = (Project::new(), Project::new());
    let flags = |to: bool| {
        vec![
            "--tls-verify=false".to_string(),
            if to { "--cache-to" } else { "--cache-from" }.to_string(),
            cache.clone(),
        ]
    };
    let args = |v: &Vec<String>| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let run = |p: &Project, l: &str, extra: Vec<String>| {
        let e: Vec<&str> = extra.iter().map(|s| s.as_str()).collect();
        p.ok(l, &e)
    };
    // Runner A builds from nothing and shares what it built.
    let (_, err) = run(&a, "l", args(&flags(true)));
    assert!(err.contains("prep-ran") && err.contains("two-ran"), "{err}");
    assert!(err.contains("cache: 4 entries in"), "{err}");
    // The entries are OCI artifacts any client can inspect.
    let listed = std::process::Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false", &cache])
        .output()
        .unwrap();
    assert_success(&listed, "skopeo list-tags");
    let tags: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let tags: Vec<&str> = tags["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tags.len(), 4, "{tags:?}");
    assert!(tags.iter().all(|t| t.starts_with("sha256-")), "{tags:?}");
    let raw = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("{cache}:{}", tags[0]),
        ])
        .output()
        .unwrap();
    assert_success(&raw, "skopeo inspect --raw");
    let m: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(m["artifactType"], "application/vnd.shipyard.cache.v1");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.shipyard.cache.record.v1+json"
    );
    // Pushing again sends nothing new.
    let (_, err) = run(&a, "l-again", args(&flags(true)));
    assert!(err.contains("cache: 0 entries in"), "{err}");

    // Runner B: another checkout, an empty cache of its own. Nothing runs,
    // and the image is the same.
    let (_, err) = run(&b, "l", args(&flags(false)));
    assert!(
        !err.contains("prep-ran") && !err.contains("two-ran"),
        "{err}"
    );
    assert_eq!(a.digest("l"), b.digest("l"));
    // Only the image layer was needed: the rule layers stayed remote.
    let ls = b.cache_cmd(&["ls"]);
    assert!(ls.contains("image.i#0"), "{ls}");
    assert!(!ls.contains("build.prep"), "{ls}");

    // B changes the tapeout: the rules come from the registry and are
    // restored, not run.
    b.edit_spec(
        r#"include = ["/opt/**", "/etc"]"#,
        r#"include = ["/opt/**", "/etc", "/bin/cat"]"#,
    );
    let mut both = flags(false);
    both.extend(["--cache-to".to_string(), cache.clone()]);
    let (_, err) = run(&b, "l2", args(&both));
    assert!(
        !err.contains("prep-ran") && !err.contains("two-ran"),
        "{err}"
    );
    assert!(
        err.contains("==> tapeout.t: run: its definition changed"),
        "{err}"
    );
    let ls = b.cache_cmd(&["ls"]);
    assert!(
        ls.contains("build.prep") && ls.contains("build.two"),
        "{ls}"
    );
    let m = ok([
        "manifest".to_string(),
        format!("oci:{}:i", b.layout("l2").display()),
    ]);
    assert!(m.contains("/bin/cat type=file"), "{m}");
    assert!(
        !m.contains("/etc/motd"),
        "a deleted base file came back: {m}"
    );

    // And A, given the same change, now finds B's work.
    a.edit_spec(
        r#"include = ["/opt/**", "/etc"]"#,
        r#"include = ["/opt/**", "/etc", "/bin/cat"]"#,
    );
    let (_, err) = run(&a, "l2", args(&flags(false)));
    assert!(!err.contains("two-ran"), "{err}");
    assert!(err.contains("==> image.i layer 1: cached"), "{err}");
    assert_eq!(a.digest("l2"), b.digest("l2"));

    // A source change still runs the rules, on both.
    write(&b.dir().join("src/input"), b"v2\n", 0o644);
    let (_, err) = run(&b, "l3", args(&flags(false)));
    assert!(err.contains("prep-ran") && err.contains("two-ran"), "{err}");
}

#[test]
fn cache_flags_take_a_registry_repository_and_a_dead_registry_is_only_a_miss() {
    let p = Project::new();
    let out = p.build("l", &["--cache-to", "oci:/tmp/x"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("shared through a registry"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = p.build("l", &["--cache-from", "docker://127.0.0.1:1/c:tag"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("without a tag or digest"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A cache registry that is down costs a miss, not the build.
    let (_, err) = p.ok(
        "l",
        &[
            "--tls-verify=false",
            "--retry",
            "0",
            "--cache-from",
            "docker://127.0.0.1:1/cache",
        ],
    );
    assert!(err.contains("prep-ran"), "{err}");
}

#[test]
fn a_foreign_manifest_under_a_cache_tag_is_a_miss_not_a_wrong_image() {
    let reg = Registry::start();
    let cache = reg.url("ci/cache");
    let (a, b) = (Project::new(), Project::new());
    a.ok("l", &["--tls-verify=false", "--cache-to", &cache]);
    // Overwrite the image layer's entry with an ordinary image.
    let key = a
        .cache_cmd(&["ls", "--json"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["record"]["step"] == "image.i#0")
        .map(|v| {
            v["key"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:")
                .to_string()
        })
        .unwrap();
    let out = shipyard()
        .env("XDG_CACHE_HOME", a.cache())
        .args([
            "push",
            "--tls-verify=false",
            &format!("oci:{}:i", a.layout("l").display()),
            &format!("{cache}:sha256-{key}"),
        ])
        .output()
        .unwrap();
    assert_success(&out, "push over the cache tag");
    // Runner B refuses it, says why, and makes the layer itself from the
    // rules the cache still holds.
    let (_, err) = b.ok("l", &["--tls-verify=false", "--cache-from", &cache]);
    assert!(err.contains("not a shipyard cache entry"), "{err}");
    assert!(
        !err.contains("prep-ran") && !err.contains("two-ran"),
        "{err}"
    );
    assert!(err.contains("==> image.i layer 1: make:"), "{err}");
    assert_eq!(a.digest("l"), b.digest("l"));
}
