//! Real distro bases: a `debootstrap --variant=minbase bookworm` tree,
//! usrmerged and not, made once by scripts/test and imported as images
//! (`SHIPYARD_DISTRO_BASES`, an OCI layout with the tags `bookworm-merged`
//! and `bookworm-nomerge`).
//!
//! apt installs a toolchain in the builder; a C program linked with zlib is
//! tapped out with its ELF closure onto scratch and onto a bookworm image.
//! The base's `/lib`, `/bin`, `/sbin`, `/lib64` symlinks must survive
//! (shipyard unpack and umoci unpack), the layer must not carry a library
//! the base already has, and both images run under podman.

use crate::common::registry::{lowercase_tempdir, podman, podman_run, require};
use crate::common::*;
use std::path::{Path, PathBuf};

/// The OCI layout of the bookworm bases (the examples' tests use it too).
pub(crate) fn bases() -> PathBuf {
    let p = std::env::var_os("SHIPYARD_DISTRO_BASES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/shipyard-tests/images"));
    assert!(
        p.join("index.json").is_file(),
        "no distro base images at {} (scripts/test makes them as root)",
        p.display()
    );
    p
}

const ZVER_C: &str = r#"#include <stdio.h>
#include <zlib.h>
int main(void) { printf("zlib %s\n", zlibVersion()); return 0; }
"#;

/// apt as root of a user namespace: its download sandbox user (_apt)
/// exists only with a subordinate id range, so downloads run as root.
const APT: &str = "apt-get -q -o APT::Sandbox::User=root -o Dpkg::Use-Pty=0";

fn spec(builder: &str, runtime: &str) -> String {
    let b = bases();
    format!(
        r#"
[builder]
from = "oci:{b}:{builder}"
network = "host"
sources = {{ "/src" = "src" }}

[build.toolchain]
run = "{APT} update && DEBIAN_FRONTEND=noninteractive {APT} install -y --no-install-recommends gcc libc6-dev zlib1g-dev"
timeout = 900

[build.app]
after = ["build.toolchain"]
run = "gcc -O2 -o /usr/local/bin/zver /src/zver.c -lz"

[tapeout.app]
after = ["build.app"]
include = ["/usr/local/bin/zver"]
elf-closure = true

[image.onscratch]
from = "scratch"
tapeouts = ["app"]
entrypoint = ["/usr/local/bin/zver"]

[image.onbase]
from = "oci:{b}:{runtime}"
tapeouts = ["app"]
entrypoint = ["/usr/local/bin/zver"]
"#,
        b = b.display()
    )
}

/// One step cache for the whole test binary: the apt rule of a builder
/// runs once and is restored for the other builds on that builder. A
/// static is never dropped: it is removed when the binary exits.
fn shared_cache() -> &'static Path {
    static CACHE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| {
        let d = tempfile::tempdir().unwrap().keep();
        crate::common::registry::remove_at_exit(&d);
        d
    })
}

struct Built {
    _t: tempfile::TempDir,
    layout: PathBuf,
}

fn build(builder: &str, runtime: &str) -> Built {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("p");
    write(
        &p.join("shipyard.toml"),
        spec(builder, runtime).as_bytes(),
        0o644,
    );
    write(&p.join("src/zver.c"), ZVER_C.as_bytes(), 0o644);
    let layout = t.path().join("out");
    let out = shipyard()
        .env("XDG_CACHE_HOME", shared_cache())
        .arg("build")
        .arg(&p)
        .arg("--output")
        .arg(format!("oci:{}", layout.display()))
        .output()
        .unwrap();
    assert_success(&out, "shipyard build on a bookworm builder");
    Built { _t: t, layout }
}

/// A number no other call in this test binary gets: names of directories
/// made for one image, unique across tests running at once.
fn unique() -> usize {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn unpack_both(layout: &Path, tag: &str, t: &Path) -> (PathBuf, PathBuf) {
    require("umoci");
    let n = unique();
    let mine = t.join(format!("{tag}-{n}-shipyard"));
    ok([
        "unpack",
        &format!("oci:{}:{tag}", layout.display()),
        mine.to_str().unwrap(),
    ]);
    let bundle = t.join(format!("{tag}-{n}-umoci"));
    let out = std::process::Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert_success(&out, "umoci unpack --rootless");
    (mine, bundle.join("rootfs"))
}

fn assert_usrmerge_links(root: &Path) {
    for (link, to) in [
        ("lib", "usr/lib"),
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib64", "usr/lib64"),
    ] {
        let p = root.join(link);
        let md = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(
            md.file_type().is_symlink(),
            "{} is no longer a symlink after unpack",
            p.display()
        );
        assert_eq!(std::fs::read_link(&p).unwrap(), Path::new(to));
    }
}

/// Runs the image under rootless (or root) podman; it must print zlib's
/// version.
fn podman_runs(layout: &Path, tag: &str) {
    let t = lowercase_tempdir(&format!("distro-{tag}"));
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
    let out = podman(&rt).args(podman_run(&img, &[])).output().unwrap();
    if !out.status.success() && !ids_range_mapped() {
        // Rootless podman without a subordinate range cannot store a
        // Debian base (its files belong to gid 42, shadow, among others):
        // the limit is podman's, and it must say so.
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("insufficient UIDs or GIDs"), "{err}");
        return;
    }
    assert_success(&out, &format!("podman run {tag}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("zlib 1.2.13"), "{text}");
}

#[test]
fn zlib_program_on_scratch_and_on_merged_bookworm() {
    let b = build("bookworm-merged", "bookworm-merged");
    let t = tempfile::tempdir().unwrap();
    // On the base: only the program; libc, ld.so and libz are the base's.
    let top = layer_members(&b.layout, "onbase");
    let files: Vec<&String> = top
        .iter()
        .filter(|(_, k)| *k != '5')
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        files,
        vec!["usr/local/bin/zver"],
        "the layer carries only the program: {top:?}"
    );
    for (name, kind) in &top {
        assert!(
            !["lib/", "lib64/", "bin/", "sbin/", "lib", "lib64"].contains(&name.as_str()),
            "the layer replaces the base's usrmerge symlink {name} ({kind})"
        );
    }
    let (mine, umoci) = unpack_both(&b.layout, "onbase", t.path());
    assert_usrmerge_links(&mine);
    assert_usrmerge_links(&umoci);
    // What the base had under /lib is still there.
    assert!(umoci.join("lib/x86_64-linux-gnu/libc.so.6").exists());
    assert!(umoci.join("usr/lib/x86_64-linux-gnu/libz.so.1").exists());
    podman_runs(&b.layout, "onbase");
    // On scratch: the program, its closure, and the builder's layout.
    let (mine, umoci) = unpack_both(&b.layout, "onscratch", t.path());
    for root in [&mine, &umoci] {
        assert!(std::fs::symlink_metadata(root.join("lib"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(root.join("lib/x86_64-linux-gnu/libz.so.1").exists());
    }
    podman_runs(&b.layout, "onscratch");
}

#[test]
fn nonmerged_builder_and_base_in_every_combination() {
    let t = tempfile::tempdir().unwrap();
    // A non-merged builder onto the merged base: the base's links stay.
    let b = build("bookworm-nomerge", "bookworm-merged");
    let (mine, umoci) = unpack_both(&b.layout, "onbase", t.path());
    assert_usrmerge_links(&mine);
    assert_usrmerge_links(&umoci);
    let top = layer_members(&b.layout, "onbase");
    assert!(
        top.iter()
            .all(|(n, _)| !n.contains("libz") && !n.contains("libc.so")),
        "the base's libraries are not carried again: {top:?}"
    );
    podman_runs(&b.layout, "onbase");
    // A non-merged builder onto a non-merged base.
    let b = build("bookworm-nomerge", "bookworm-nomerge");
    let top = layer_members(&b.layout, "onbase");
    assert!(
        top.iter()
            .all(|(n, _)| !n.contains("libz") && !n.contains("libc.so")),
        "{top:?}"
    );
    podman_runs(&b.layout, "onbase");
    // A merged builder onto a non-merged base.
    let b = build("bookworm-merged", "bookworm-nomerge");
    let (mine, _) = unpack_both(&b.layout, "onbase", t.path());
    assert!(std::fs::symlink_metadata(mine.join("lib"))
        .unwrap()
        .is_dir());
    // The builder's /usr/lib/… is its /lib/… too: what the base has there
    // (libc, libz) is compared there, and left out.
    let top = layer_members(&b.layout, "onbase");
    assert!(
        top.iter()
            .all(|(n, _)| !n.contains("libz") && !n.contains("libc.so")),
        "{top:?}"
    );
    podman_runs(&b.layout, "onbase");
}
