//! The multi-stage examples, built as a user would build them and run
//! under podman: `examples/multistage` (Docker's multi-stage build: a
//! compiler stage, a final stage that installs a package on its base and
//! takes the artifact) and `examples/grocker` (a Python app with a C
//! extension: wheels built in a compiler builder with a pip cache mount,
//! installed into a runtime without a compiler).
//!
//! The examples name Debian's image on Docker Hub; the tests build a copy
//! whose base is the cached bookworm image (`SHIPYARD_DISTRO_BASES`, see
//! distro.rs). apt-get fetches from the Debian mirror (`network = "host"`);
//! pip never touches the network.

use crate::common::registry::{lowercase_tempdir, podman, podman_run, require};
use crate::common::*;
use crate::distro::bases;
use std::path::{Path, PathBuf};
use std::process::Output;

/// The base the examples name, which the tests replace.
const DEBIAN: &str = "docker://docker.io/library/debian:bookworm-slim";

/// A copy of `examples/NAME` in `into`, its base rewritten to the cached
/// bookworm image.
fn checkout(name: &str, into: &Path) -> PathBuf {
    let dest = into.join(name);
    let cp = std::process::Command::new("cp")
        .arg("-r")
        .arg(src_dir().join("examples").join(name))
        .arg(&dest)
        .output()
        .unwrap();
    assert_success(&cp, "cp -r example");
    let spec = dest.join("shipyard.toml");
    let text = std::fs::read_to_string(&spec).unwrap();
    assert!(
        text.contains(DEBIAN),
        "examples/{name} no longer names {DEBIAN}: the test would build something else"
    );
    let local = format!("oci:{}:bookworm-merged", bases().display());
    std::fs::write(&spec, text.replace(DEBIAN, &local)).unwrap();
    dest
}

/// `shipyard build DIR` into `layout` with the step cache and cache mounts
/// under `cache`; returns the build's log (stderr).
fn build(dir: &Path, layout: &Path, cache: &Path) -> String {
    let out = shipyard()
        .env("XDG_CACHE_HOME", cache)
        .arg("build")
        .arg(dir)
        .arg("--output")
        .arg(format!("oci:{}", layout.display()))
        .output()
        .unwrap();
    assert_success(&out, &format!("shipyard build {}", dir.display()));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What the build log says of STEP (`build.NAME`): `run` or `cached`,
/// whether or not the line names the step's builder
/// (`==> build.NAME (BUILDER): run: why`).
fn status(log: &str, step: &str) -> String {
    let prefix = format!("==> {step}");
    let found = log.lines().find_map(|l| {
        let rest = l.strip_prefix(&prefix)?;
        let rest = match rest.strip_prefix(" (") {
            Some(named) => &named[named.find(')')? + 1..],
            None => rest,
        };
        let word = rest.strip_prefix(": ")?.split(':').next()?.trim();
        (!word.starts_with("done")).then(|| word.to_string())
    });
    found.unwrap_or_else(|| panic!("no line for {step} in the build log:\n{log}"))
}

/// The layers of the image tagged TAG above the bookworm base's, bottom
/// first: their members' paths (a directory's with a trailing `/`). The
/// base's own layers (a minbase debootstrap: no compiler) are checked to
/// be its, not read: decompressing them in a debug build takes minutes.
fn layers(layout: &Path, tag: &str) -> Vec<Vec<String>> {
    let base = shipyard_image::oci::layout::Layout::open(bases()).unwrap();
    let bd = base.resolve(Some("bookworm-merged")).unwrap();
    let base = shipyard_image::oci::image::Image::load(&base, &bd).unwrap();
    let l = shipyard_image::oci::layout::Layout::open(layout).unwrap();
    let d = l.resolve(Some(tag)).unwrap();
    let img = shipyard_image::oci::image::Image::load(&l, &d).unwrap();
    let below = base.manifest.layers().len();
    let digests = |ls: &[oci_spec::image::Descriptor]| -> Vec<String> {
        ls.iter().map(|d| d.digest().to_string()).collect()
    };
    assert_eq!(
        digests(&img.manifest.layers()[..below]),
        digests(base.manifest.layers()),
        "the image does not start with the base's layers"
    );
    img.manifest.layers()[below..]
        .iter()
        .map(|desc| {
            let dg = shipyard_image::oci::media::digest_of(desc).unwrap();
            let f = l.open_blob(&dg).unwrap();
            let r = shipyard_image::layer::compress::decoder(
                f,
                shipyard_image::oci::media::layer_encoding(desc.media_type()),
            )
            .unwrap();
            tar::Archive::new(r)
                .entries()
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let mut p = String::from_utf8_lossy(&e.path_bytes()).into_owned();
                    if e.header().entry_type().is_dir() && !p.ends_with('/') {
                        p.push('/');
                    }
                    p
                })
                .collect()
        })
        .collect()
}

/// The members of any layer that belong to a C compiler.
fn compiler_files(layers: &[Vec<String>]) -> Vec<String> {
    layers
        .iter()
        .flatten()
        .filter(|p| {
            let p = p.trim_start_matches("./");
            let name = p.rsplit('/').next().unwrap_or(p);
            p.starts_with("usr/lib/gcc/")
                || p.starts_with("usr/libexec/gcc/")
                || name == "gcc"
                || name == "cc1"
                || name.ends_with("-gcc")
                || name.contains("-gcc-")
        })
        .cloned()
        .collect()
}

/// `podman run IMAGE ARGV…` on a copy of the layout (podman wants a
/// lowercase path). None when the user has no subordinate id range:
/// rootless podman cannot store a Debian base then (files of gid 42,
/// among others), and it must say so.
fn podman_in(layout: &Path, tag: &str, argv: &[&str]) -> Option<Output> {
    let t = lowercase_tempdir(&format!("example-{tag}"));
    let l = t.path().join("l");
    let cp = std::process::Command::new("cp")
        .arg("-r")
        .arg(layout)
        .arg(&l)
        .output()
        .unwrap();
    assert_success(&cp, "cp -r layout");
    let rt = t.path().join("rt");
    std::fs::create_dir_all(&rt).unwrap();
    let img = format!("oci:{}:{tag}", l.display());
    let out = podman(&rt).args(podman_run(&img, argv)).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if !ids_range_mapped() && err.contains("insufficient UIDs or GIDs") {
        return None;
    }
    // Otherwise podman itself must work: a failure of the command in the
    // container is the caller's to judge, one of podman's is not.
    assert!(
        !err.contains("Error: "),
        "podman run {tag} {argv:?} failed: {err}"
    );
    Some(out)
}

/// The program podman runs: its stdout, after asserting it succeeded.
fn runs(layout: &Path, tag: &str) -> Option<String> {
    let out = podman_in(layout, tag, &[])?;
    assert_success(&out, &format!("podman run {tag}"));
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn multistage_final_stage_has_the_package_and_the_artifact_but_no_compiler() {
    require("podman");
    let t = tempfile::tempdir().unwrap();
    let dir = checkout("multistage", t.path());
    let layout = t.path().join("out");
    let cache = t.path().join("cache");
    let log = build(&dir, &layout, &cache);
    for step in ["build.toolchain", "build.app", "build.certs"] {
        assert_eq!(status(&log, step), "run", "{log}");
    }

    let layers = layers(&layout, "app");
    assert_eq!(
        compiler_files(&layers),
        Vec::<String>::new(),
        "the final image carries the build stage's compiler"
    );
    // The artifact is the top layer, alone; the package is below it.
    let top: Vec<&String> = layers
        .last()
        .unwrap()
        .iter()
        .filter(|p| !p.ends_with('/'))
        .collect();
    assert_eq!(top, vec!["usr/local/bin/app"], "{layers:?}");
    assert!(
        layers[..layers.len() - 1]
            .iter()
            .flatten()
            .any(|p| p.ends_with("etc/ssl/certs/ca-certificates.crt")),
        "no layer below the artifact installs ca-certificates"
    );
    // The final stage's apt lists were removed by its rule: not in a layer.
    assert!(
        !layers
            .iter()
            .flatten()
            // (a whiteout of the base's own lists is a deletion, not a list)
            .any(|p| p.contains("var/lib/apt/lists/")
                && p.ends_with("_Packages")
                && !p.contains("/.wh.")),
        "apt's lists are in the image"
    );

    if let Some(text) = runs(&layout, "app") {
        let n: usize = text
            .strip_prefix("app: ")
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected output: {text}"));
        assert!(
            n > 100,
            "the final stage's CA bundle is nearly empty: {text}"
        );
    }

    // Nothing changed: nothing runs, the same image.
    let before = digest_of_tag(&layout, "app");
    let again = build(&dir, &layout, &cache);
    for step in ["build.toolchain", "build.app", "build.certs"] {
        assert_eq!(status(&again, step), "cached", "{again}");
    }
    assert_eq!(digest_of_tag(&layout, "app"), before);
}

const GREETING: &str = "hello from a C extension";

#[test]
fn grocker_wheels_from_the_compiler_install_into_a_runtime_without_one() {
    require("podman");
    let t = tempfile::tempdir().unwrap();
    let dir = checkout("grocker", t.path());
    let layout = t.path().join("out");
    let cache = t.path().join("cache");
    let log = build(&dir, &layout, &cache);
    for step in [
        "build.build-deps",
        "build.wheels",
        "build.python",
        "build.install",
    ] {
        assert_eq!(status(&log, step), "run", "{log}");
    }

    let first = layers(&layout, "app");
    assert_eq!(
        compiler_files(&first),
        Vec::<String>::new(),
        "the runtime image carries the compiler"
    );
    let all: Vec<&String> = first.iter().flatten().collect();
    assert!(
        all.iter()
            .any(|p| p.contains("dist-packages/greet/_native.cpython-")),
        "the extension is not installed in the image"
    );
    for absent in ["usr/include/python3", "wheels/", "root/.cache/", "src/"] {
        assert!(
            !all.iter()
                .any(|p| p.trim_start_matches("./").starts_with(absent)),
            "{absent} is in the runtime image"
        );
    }
    // pip's cache is a directory of the user's cache, outside every layer.
    let mount = cache.join("shipyard/mounts/pip");
    assert!(mount.is_dir(), "no cache mount at {}", mount.display());

    if let Some(text) = runs(&layout, "app") {
        assert!(text.starts_with(GREETING), "{text}");
        let gcc = podman_in(
            &layout,
            "app",
            &["sh", "-c", "command -v gcc || command -v cc"],
        )
        .unwrap();
        assert!(
            !gcc.status.success(),
            "the runtime has a compiler: {}",
            String::from_utf8_lossy(&gcc.stdout)
        );
    }

    // One source file of the app changes: only the wheel is rebuilt and
    // installed again; the toolchain and the runtime's python stay cached.
    let c = dir.join("app/greet/_native.c");
    let source = std::fs::read_to_string(&c).unwrap();
    assert!(source.contains(GREETING));
    std::fs::write(
        &c,
        source.replace(GREETING, "hello again from a C extension"),
    )
    .unwrap();
    let before = digest_of_tag(&layout, "app");
    let again = build(&dir, &layout, &cache);
    assert_eq!(status(&again, "build.build-deps"), "cached", "{again}");
    assert_eq!(status(&again, "build.wheels"), "run", "{again}");
    assert_eq!(status(&again, "build.python"), "cached", "{again}");
    assert_eq!(status(&again, "build.install"), "run", "{again}");
    assert_ne!(digest_of_tag(&layout, "app"), before);
    // Below the install, the runtime's layers are the first build's.
    let second = layers(&layout, "app");
    assert_eq!(second.len(), first.len());
    assert_eq!(second[..second.len() - 1], first[..first.len() - 1]);
    assert!(mount.is_dir());

    if let Some(text) = runs(&layout, "app") {
        assert!(text.starts_with("hello again from a C extension"), "{text}");
    }
}
