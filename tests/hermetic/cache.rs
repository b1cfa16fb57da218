//! The step cache, as a user meets it: rebuilds that run nothing, misses
//! that name what changed, restored rules that give the same image as
//! running them, corrupt entries, `shipyard cache`, concurrent builds and
//! a build killed halfway. scripts/test runs these as root and as both
//! test users (with and without a subordinate id range).

use crate::common::project::Project;
use crate::common::*;

#[test]
fn a_rebuild_with_nothing_changed_runs_nothing_and_writes_the_same_digests() {
    let p = Project::new();
    let (_, err) = p.ok("l1", &[]);
    assert!(err.contains("prep-ran") && err.contains("two-ran"), "{err}");
    assert!(
        err.contains("==> build.prep: run: not in the cache (first build of this step here)"),
        "{err}"
    );
    let (out, err) = p.ok("l2", &["--explain"]);
    assert!(
        !err.contains("prep-ran") && !err.contains("two-ran"),
        "{err}"
    );
    assert!(out.contains("build.prep\tcached\t"), "{out}");
    assert!(out.contains("build.two\tcached\t"), "{out}");
    assert!(out.contains("image.i layer 1\tcached\t"), "{out}");
    // Cached, the image still explains its paths.
    assert!(out.contains("i\t/opt/b/b\tincluded by tapeout.t"), "{out}");
    assert_eq!(p.digest("l1"), p.digest("l2"));
    // Nothing the rules read changed: an ignored file is not an input.
    write(&p.dir().join("src/debug.log"), b"noise", 0o644);
    let (_, err) = p.ok("l3", &[]);
    assert!(!err.contains("prep-ran"), "{err}");
    assert_eq!(p.digest("l1"), p.digest("l3"));
    // The builder states went to the trash, and a detached cleanup empties
    // it (files a rule gave to other ids included).
    let trash = p.cache().join("shipyard/trash");
    wait_until(
        "the trash to be emptied",
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(50),
        || std::fs::read_dir(&trash).map_or(0, |d| d.count()) == 0,
    );
}

#[test]
fn a_changed_source_file_reruns_the_rules_and_the_miss_names_it() {
    let p = Project::new();
    p.ok("l1", &[]);
    write(&p.dir().join("src/input"), b"v2\n", 0o644);
    let (out, err) = p.ok("l2", &["--explain"]);
    assert!(err.contains("prep-ran") && err.contains("two-ran"), "{err}");
    assert!(
        out.contains("build.prep\trun\tsource /src changed: /input"),
        "{out}"
    );
    assert!(out.contains("build.two\trun\t"), "{out}");
    assert_ne!(p.digest("l1"), p.digest("l2"));
    // Back to v1: both versions are cached.
    write(&p.dir().join("src/input"), b"v1\n", 0o644);
    let (_, err) = p.ok("l3", &[]);
    assert!(!err.contains("prep-ran"), "{err}");
    assert_eq!(p.digest("l1"), p.digest("l3"));
    // A changed command is named as such.
    let spec = std::fs::read_to_string(p.dir().join("shipyard.toml")).unwrap();
    write(
        &p.dir().join("shipyard.toml"),
        spec.replace("echo two-ran", "echo two-ran again")
            .as_bytes(),
        0o644,
    );
    let (out, err) = p.ok("l4", &["--explain"]);
    assert!(
        !err.contains("prep-ran") && err.contains("two-ran again"),
        "{err}"
    );
    assert!(out.contains("build.prep\tcached"), "{out}");
    assert!(
        out.contains("build.two\trun\tits definition changed"),
        "{out}"
    );
}

#[test]
fn restored_rules_give_the_same_image_as_running_them() {
    let p = Project::new();
    p.ok("l1", &[]);
    // Only the tapeout changes: the rules are restored, not run, and what
    // they deleted (a base file, a directory), linked and chmodded comes
    // back as they left it.
    let spec = std::fs::read_to_string(p.dir().join("shipyard.toml")).unwrap();
    write(
        &p.dir().join("shipyard.toml"),
        spec.replace(
            r#"include = ["/opt/**", "/etc"]"#,
            r#"include = ["/opt/**", "/etc", "/bin"]"#,
        )
        .as_bytes(),
        0o644,
    );
    let (out, err) = p.ok("l2", &["--explain"]);
    assert!(
        !err.contains("prep-ran") && !err.contains("two-ran"),
        "{err}"
    );
    assert!(
        out.contains("tapeout.t\trun\tits definition changed"),
        "{out}"
    );
    let (_, err) = p.ok("l3", &["--no-cache"]);
    assert!(err.contains("prep-ran") && err.contains("two-ran"), "{err}");
    assert_eq!(p.digest("l2"), p.digest("l3"));
    let m = ok([
        "manifest".to_string(),
        format!("oci:{}:i", p.layout("l2").display()),
    ]);
    assert!(m.contains("/opt/a type=dir mode=0700"), "{m}");
    assert!(m.contains("/opt/a/sym type=symlink"), "{m}");
    assert!(m.contains("type=hardlink"), "{m}");
    assert!(m.contains("/bin/cat type=file"), "{m}");
    assert!(!m.contains("/etc/motd") && !m.contains("/opt/gone"), "{m}");
    // With an id range, a file a rule gave to another id comes back
    // owned by it.
    if is_root() || shipyard::sandbox::detect_subids().is_some() {
        assert!(
            m.contains("/opt/b/b type=file mode=0644 uid=1000 gid=1000"),
            "{m}"
        );
    }
}

#[test]
fn no_cache_and_no_cache_rule_force_what_they_name() {
    let p = Project::new();
    p.ok("l1", &[]);
    let (_, err) = p.ok("l2", &["--no-cache-rule", "two"]);
    assert!(
        !err.contains("prep-ran") && err.contains("two-ran"),
        "{err}"
    );
    assert!(err.contains("==> build.two: run: --no-cache-rule"), "{err}");
    assert!(
        err.contains("==> tapeout.t: run: build.two is rebuilt (--no-cache-rule)"),
        "{err}"
    );
    let (_, err) = p.ok("l3", &["--no-cache"]);
    assert!(err.contains("prep-ran") && err.contains("two-ran"), "{err}");
    assert_eq!(p.digest("l1"), p.digest("l3"));
    let out = p.build("l4", &["--no-cache-rule", "build.nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--no-cache-rule build.nope: no such rule in the spec (rules: build.prep, build.two, tapeout.t)"),
        "{err}"
    );
    assert!(!p.layout("l4").exists());
}

#[test]
fn a_corrupt_cached_layer_is_caught_by_its_digest_and_rebuilt() {
    let p = Project::new();
    p.ok("l1", &[]);
    let blobs = p.cache().join("shipyard/oci/blobs/sha256");
    let mut corrupted = 0;
    for line in p.cache_cmd(&["ls", "--json"]).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let d = v["record"]["layer"]["digest"].as_str().unwrap();
        let path = blobs.join(d.trim_start_matches("sha256:"));
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&path, bytes).unwrap();
        corrupted += 1;
    }
    assert_eq!(corrupted, 4, "two rules, a tapeout and an image layer");
    let (_, err) = p.ok("l2", &[]);
    assert!(err.contains("it will be rebuilt"), "{err}");
    assert!(err.contains("is corrupt: its content hashes to"), "{err}");
    assert!(err.contains("prep-ran") && err.contains("two-ran"), "{err}");
    assert_eq!(p.digest("l1"), p.digest("l2"));
    // And the cache holds good entries again.
    let (_, err) = p.ok("l3", &[]);
    assert!(
        !err.contains("prep-ran") && !err.contains("rebuilt"),
        "{err}"
    );
}

#[test]
fn cache_ls_du_and_prune() {
    let p = Project::new();
    p.ok("l1", &[]);
    let ls = p.cache_cmd(&["ls"]);
    for step in ["build.prep", "build.two", "tapeout.t", "image.i#0"] {
        assert!(ls.contains(step), "{step} missing:\n{ls}");
    }
    assert!(ls.starts_with("KEY"), "{ls}");
    let du = p.cache_cmd(&["du"]);
    assert!(du.contains("rule layers") && du.contains("total"), "{du}");
    // Used just now: kept.
    let out = shipyard()
        .env("XDG_CACHE_HOME", p.cache())
        .args(["cache", "prune", "--keep-duration", "1h"])
        .output()
        .unwrap();
    assert_success(&out, "prune --keep-duration 1h");
    // The same entries (the USED column may have ticked meanwhile).
    let entries = |ls: &str| -> Vec<String> {
        ls.lines()
            .map(|l| l.rsplit_once(' ').map_or(l, |(rest, _)| rest).to_string())
            .collect()
    };
    assert_eq!(entries(&p.cache_cmd(&["ls"])), entries(&ls));
    let (_, err) = p.ok("l2", &[]);
    assert!(!err.contains("prep-ran"), "{err}");
    // What a killed cleanup left in the trash goes too.
    write(
        &p.cache().join("shipyard/trash/shipyard-builder-x/f"),
        b"left",
        0o644,
    );
    // Everything: the next build runs its rules again.
    let out = shipyard()
        .env("XDG_CACHE_HOME", p.cache())
        .args(["cache", "prune"])
        .output()
        .unwrap();
    assert_success(&out, "prune");
    assert!(String::from_utf8_lossy(&out.stderr).contains("freed"));
    assert_eq!(p.cache_cmd(&["ls"]).lines().count(), 1, "only the header");
    assert!(!p.cache().join("shipyard/trash/shipyard-builder-x").exists());
    let (_, err) = p.ok("l3", &["--explain"]);
    assert!(err.contains("prep-ran"), "{err}");
    assert!(
        err.contains("==> build.prep: run: not in the cache"),
        "{err}"
    );
    assert_eq!(p.digest("l1"), p.digest("l3"));
    let out = shipyard()
        .env("XDG_CACHE_HOME", p.cache())
        .args(["cache", "prune", "--keep-duration", "3y"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown unit \"y\""));
}

#[test]
fn two_builds_sharing_a_cache_at_once_both_succeed_with_the_same_digest() {
    let p = Project::new();
    // Started together, on an empty cache: both run, both store.
    let (a, b) = std::thread::scope(|s| {
        let ha = s.spawn(|| p.build("la", &[]));
        let hb = s.spawn(|| p.build("lb", &[]));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    assert_success(&a, "first concurrent build");
    assert_success(&b, "second concurrent build");
    assert_eq!(p.digest("la"), p.digest("lb"));
    let (_, err) = p.ok("lc", &[]);
    assert!(!err.contains("prep-ran"), "{err}");
    assert_eq!(p.digest("la"), p.digest("lc"));
}

#[test]
fn a_build_killed_halfway_leaves_a_cache_the_next_build_uses() {
    let p = Project::new();
    // `slow` is ignored (.shipyardignore), so it does not change the keys:
    // build.two waits while it exists.
    write(&p.dir().join("src/slow"), b"", 0o644);
    use std::os::unix::process::CommandExt;
    let mut child = p
        .cmd("l1", &[])
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until build.prep is cached (build.two is then running).
    let steps = p.cache().join("shipyard/steps");
    wait_until(
        "build.prep to be cached",
        std::time::Duration::from_secs(120),
        std::time::Duration::from_millis(50),
        || std::fs::read_dir(&steps).map_or(0, |d| d.count()) > 0,
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    assert!(
        !p.layout("l1").join("index.json").exists() || {
            // The layout may exist, but holds no image.
            !std::fs::read_to_string(p.layout("l1").join("index.json"))
                .unwrap()
                .contains("\"i\"")
        }
    );
    std::fs::remove_file(p.dir().join("src/slow")).unwrap();
    let (_, err) = p.ok("l2", &[]);
    assert!(err.contains("==> build.prep: cached"), "{err}");
    assert!(
        !err.contains("prep-ran") && err.contains("two-ran"),
        "{err}"
    );
    p.ok("l3", &["--no-cache"]);
    assert_eq!(p.digest("l2"), p.digest("l3"));
}

#[test]
fn the_copy_fallback_caches_and_restores_too() {
    let p = Project::new();
    let copy = |layout: &str, extra: &[&str]| {
        let out = p
            .cmd(layout, extra)
            .env("SHIPYARD_NO_OVERLAY", "1")
            .output()
            .unwrap();
        assert_success(&out, &format!("copy build {layout}"));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    copy("l1", &[]);
    p.edit_spec(
        r#"include = ["/opt/**", "/etc"]"#,
        r#"include = ["/opt/**", "/etc", "/bin/cat"]"#,
    );
    let err = copy("l2", &[]);
    assert!(
        !err.contains("prep-ran") && !err.contains("two-ran"),
        "{err}"
    );
    copy("l3", &["--no-cache"]);
    assert_eq!(p.digest("l2"), p.digest("l3"));
    // And the same image as an overlay build.
    p.ok("l4", &["--no-cache"]);
    assert_eq!(p.digest("l2"), p.digest("l4"));
}

#[test]
fn the_host_builder_restores_its_rules() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("hello");
    write(
        &d.join("src/hello.c"),
        b"#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }\n",
        0o644,
    );
    write(
        &d.join("shipyard.toml"),
        b"[builder]\nfrom = \"host\"\nsources = { \"/src\" = \"src\" }\n\
          [build.hello]\nrun = \"mkdir -p /out/bin && cc -O2 -o /out/bin/hello /src/hello.c && echo compiled\"\n\
          [tapeout.hello]\nafter = [\"build.hello\"]\ninclude = [\"/out/bin/hello\"]\nelf-closure = true\n\
          [image.hello]\nfrom = \"scratch\"\ntapeouts = [\"hello\"]\n",
        0o644,
    );
    let build = |l: &str, extra: &[&str]| {
        let out = shipyard()
            .env("XDG_CACHE_HOME", t.path().join("cache"))
            .arg("build")
            .arg(&d)
            .arg("--output")
            .arg(format!("oci:{}", t.path().join(l).display()))
            .args(extra)
            .output()
            .unwrap();
        assert_success(&out, l);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    build("l1", &[]);
    let spec = std::fs::read_to_string(d.join("shipyard.toml")).unwrap();
    write(
        &d.join("shipyard.toml"),
        spec.replace(
            "elf-closure = true",
            "elf-closure = true\nremap = { \"/out/bin\" = \"/usr/local/bin\" }",
        )
        .as_bytes(),
        0o644,
    );
    let err = build("l2", &[]);
    assert!(!err.contains("compiled"), "{err}");
    assert!(err.contains("==> build.hello: cached"), "{err}");
    build("l3", &["--no-cache"]);
    assert_eq!(
        digest_of_tag(&t.path().join("l2"), "hello"),
        digest_of_tag(&t.path().join("l3"), "hello")
    );
}

#[test]
fn a_writable_source_turns_the_rule_cache_off_and_says_why() {
    let p = Project::new();
    p.edit_spec(
        r#"sources = { "/src" = "src" }"#,
        r#"sources = { "/src" = { path = "src", writable = true } }"#,
    );
    p.ok("l1", &[]);
    let (_, err) = p.ok("l2", &[]);
    assert!(err.contains("prep-ran"), "{err}");
    assert!(
        err.contains("source /src is mounted writable, and what rules write there is not cached"),
        "{err}"
    );
    assert_eq!(p.digest("l1"), p.digest("l2"));
}

#[test]
fn an_image_base_is_unpacked_once_and_shared_by_concurrent_builds() {
    let p = Project::new();
    // The same base as an image in a layout.
    let base = p.layout("base-image");
    ok([
        "diff".to_string(),
        p.dir().join("base").display().to_string(),
        "--against".into(),
        "scratch".into(),
        "--output".into(),
        format!("oci:{}:v1", base.display()),
    ]);
    p.edit_spec(
        r#"from = "rootfs:base""#,
        &format!(r#"from = "oci:{}:v1""#, base.display()),
    );
    let (a, b) = std::thread::scope(|s| {
        let ha = s.spawn(|| p.build("la", &[]));
        let hb = s.spawn(|| p.build("lb", &[]));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    assert_success(&a, "first concurrent build");
    assert_success(&b, "second concurrent build");
    assert_eq!(p.digest("la"), p.digest("lb"));
    let unpacked: Vec<_> = std::fs::read_dir(p.cache().join("shipyard/rootfs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|e| e.is_dir())
        .collect();
    assert_eq!(unpacked.len(), 1, "{unpacked:?}");
    // Leftover temp dirs of the losing unpack are gone too.
    assert!(
        !unpacked[0].parent().unwrap().read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".shipyard-unpack")),
        "a temp unpack was left behind"
    );
}

#[test]
fn cache_prune_racing_builds_and_imports_never_breaks_them() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let p = Project::new();
    // An image base (builds unpack it into the cache) and an archive of
    // it (imports read it through the cache).
    let base = p.layout("base-image");
    ok([
        "diff".to_string(),
        p.dir().join("base").display().to_string(),
        "--against".into(),
        "scratch".into(),
        "--output".into(),
        format!("oci:{}:v1", base.display()),
    ]);
    let archive = &p.layout("base.tar");
    ok([
        "export".to_string(),
        format!("oci:{}:v1", base.display()),
        format!("oci-archive:{}", archive.display()),
    ]);
    p.edit_spec(
        r#"from = "rootfs:base""#,
        &format!(r#"from = "oci:{}:v1""#, base.display()),
    );
    let done = AtomicBool::new(false);
    let prunes = AtomicUsize::new(0);
    let (p, done, prunes) = (&p, &done, &prunes);
    let (builds, imports) = std::thread::scope(|s| {
        let pruner = s.spawn(|| {
            while !done.load(Ordering::SeqCst) || prunes.load(Ordering::SeqCst) == 0 {
                let out = shipyard()
                    .env("XDG_CACHE_HOME", p.cache())
                    .args(["cache", "prune"])
                    .output()
                    .unwrap();
                assert_success(&out, "cache prune");
                prunes.fetch_add(1, Ordering::SeqCst);
            }
        });
        let mut builds = Vec::new();
        let mut imports = Vec::new();
        for round in 0..2 {
            let b: Vec<_> = (0..2)
                .map(|i| {
                    let l = format!("l{round}-{i}");
                    (l.clone(), s.spawn(move || p.build(&l, &[])))
                })
                .collect();
            let im: Vec<_> = (0..3)
                .map(|i| {
                    let dst = p.layout(&format!("imp{round}-{i}"));
                    let cache = p.cache();
                    s.spawn(move || {
                        shipyard()
                            .env("XDG_CACHE_HOME", cache)
                            .arg("import")
                            .arg(format!("oci-archive:{}", archive.display()))
                            .arg(format!("oci:{}:v1", dst.display()))
                            .output()
                            .unwrap()
                    })
                })
                .collect();
            builds.extend(b.into_iter().map(|(l, h)| (l, h.join().unwrap())));
            imports.extend(im.into_iter().map(|h| h.join().unwrap()));
        }
        done.store(true, Ordering::SeqCst);
        pruner.join().unwrap();
        (builds, imports)
    });
    for (l, out) in &builds {
        assert_success(out, &format!("build {l} beside cache prune"));
    }
    for out in &imports {
        assert_success(out, "import beside cache prune");
    }
    // Every build gave the same image, every import the base.
    let want = p.digest(&builds[0].0);
    for (l, _) in &builds {
        assert_eq!(p.digest(l), want, "{l}");
    }
    let base_digest = digest_of_tag(&base, "v1");
    for round in 0..2 {
        for i in 0..3 {
            let l = p.layout(&format!("imp{round}-{i}"));
            assert_eq!(digest_of_tag(&l, "v1"), base_digest);
        }
    }
    // The cache is consistent: every blob is what its name says, every
    // record's blob is there, and it serves the next builds.
    let blobs = p.cache().join("shipyard/oci/blobs/sha256");
    for e in std::fs::read_dir(&blobs).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let bytes = std::fs::read(e.path()).unwrap();
        assert_eq!(shipyard_image::oci::digest::Digest::of(&bytes).hex(), name);
    }
    for line in p.cache_cmd(&["ls", "--json"]).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let d = v["record"]["layer"]["digest"].as_str().unwrap();
        assert!(blobs.join(d.trim_start_matches("sha256:")).is_file(), "{v}");
    }
    p.ok("after1", &[]);
    let (_, err) = p.ok("after2", &[]);
    assert!(
        !err.contains("prep-ran") && !err.contains("two-ran"),
        "{err}"
    );
    assert_eq!(p.digest("after2"), want);
}

#[test]
fn a_source_renamed_to_a_name_that_differs_only_in_non_utf8_bytes_is_rebuilt() {
    use std::os::unix::ffi::OsStrExt;
    let p = Project::new();
    p.edit_spec(
        "echo prep-ran",
        "for f in /src/a*; do echo \"$f\"; done > /opt/a/names\necho prep-ran",
    );
    let src = p.dir().join("src");
    let old = src.join(std::ffi::OsStr::from_bytes(b"a\xfe"));
    write(&old, b"same bytes", 0o644);
    let names = |layout: &str| {
        let un = p.layout(&format!("un-{layout}"));
        ok([
            "unpack".to_string(),
            format!("oci:{}:i", p.layout(layout).display()),
            un.display().to_string(),
        ]);
        std::fs::read(un.join("opt/a/names")).unwrap()
    };
    p.ok("l1", &[]);
    assert_eq!(names("l1"), b"/src/a\xfe\n");
    // Same bytes, same size and mtime, a name that differs from the old
    // one only where neither is UTF-8.
    std::fs::rename(&old, src.join(std::ffi::OsStr::from_bytes(b"a\xff"))).unwrap();
    let (out, err) = p.ok("l2", &["--explain"]);
    assert!(err.contains("prep-ran"), "the rename hit the cache:\n{err}");
    assert!(
        out.contains("build.prep\trun\tsource /src changed: /a\\xfe, /a\\xff"),
        "{out}"
    );
    assert_eq!(names("l2"), b"/src/a\xff\n");
    assert_ne!(p.digest("l1"), p.digest("l2"));
    // Back: the first build's image, from the cache.
    std::fs::rename(src.join(std::ffi::OsStr::from_bytes(b"a\xff")), &old).unwrap();
    let (_, err) = p.ok("l3", &[]);
    assert!(!err.contains("prep-ran"), "{err}");
    assert_eq!(p.digest("l1"), p.digest("l3"));
}
