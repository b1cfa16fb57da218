//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod pod;
pub mod project;
pub mod rawtar;
pub mod registry;
pub mod steps;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The shipyard binary. `SHIPYARD_BIN` lets scripts/test run the tests as
/// another user from a copy of the binaries.
pub fn bin() -> PathBuf {
    std::env::var_os("SHIPYARD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_shipyard")))
}

/// The checkout's files the tests read (examples, fixtures, man pages):
/// `SHIPYARD_SRC_DIR` when scripts/test runs the tests from a copy.
pub fn src_dir() -> PathBuf {
    std::env::var_os("SHIPYARD_SRC_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub fn shipyard() -> Command {
    let mut c = Command::new(bin());
    c.env_remove("SOURCE_DATE_EPOCH");
    c.env_remove("RUST_LOG");
    c
}

/// Runs shipyard and asserts success; returns stdout.
pub fn ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = shipyard().args(args).output().expect("run shipyard");
    assert_success(&out, "shipyard");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs shipyard and asserts failure; returns stderr.
pub fn fails<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = shipyard().args(args).output().expect("run shipyard");
    assert!(
        !out.status.success(),
        "expected failure, got success; stdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub const MTIME: i64 = 1_600_000_000;

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether steps can give files to ids other than root's: as root, or as
/// a user with a subordinate range (scripts/test says which user it is).
pub fn ids_range_mapped() -> bool {
    is_root() || std::env::var("SHIPYARD_TEST_SUBUID").as_deref() == Ok("1")
}

pub fn set_mtime(p: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .expect("utimensat");
}

pub fn write(p: &Path, content: &[u8], mode: u32) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn mkdir(p: &Path, mode: u32) {
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Whether this filesystem takes user.* xattrs.
pub fn xattrs_supported(dir: &Path) -> bool {
    let p = dir.join(".xattr-probe");
    std::fs::write(&p, b"").unwrap();
    let ok = xattr::set(&p, "user.probe", b"1").is_ok();
    std::fs::remove_file(&p).unwrap();
    ok
}

type Step = Box<dyn Fn(&Path)>;

/// A tree with every kind of entry a layer can hold (devices only as root),
/// with explicit modes and mtimes so it is the same whatever the umask.
/// `reverse` creates the entries in the opposite order.
pub fn rich_tree(root: &Path, reverse: bool) {
    std::fs::create_dir_all(root).unwrap();
    let long_dir = format!("deep/{}/{}", "d".repeat(90), "e".repeat(90));
    let mut steps: Vec<Step> = vec![
        Box::new(|r| write(&r.join("bin/app"), b"#!/bin/sh\necho app\n", 0o755)),
        Box::new(|r| write(&r.join("bin/suid"), b"suid-binary", 0o4755)),
        Box::new(|r| write(&r.join("bin/sgid"), b"sgid-binary", 0o2711)),
        Box::new(|r| write(&r.join("etc/conf"), b"key=value\n", 0o644)),
        Box::new(|r| write(&r.join("etc/secret"), b"s3cret", 0o400)),
        Box::new(|r| write(&r.join("empty"), b"", 0o644)),
        Box::new(|r| mkdir(&r.join("tmp"), 0o1777)),
        Box::new(|r| mkdir(&r.join("private"), 0o700)),
        Box::new(|r| {
            std::fs::create_dir_all(r.join("bin")).unwrap();
            symlink("../etc/conf", r.join("bin/conf-link")).unwrap()
        }),
        Box::new(|r| {
            std::fs::create_dir_all(r.join("lib")).unwrap();
            symlink("/etc/conf", r.join("lib/abs-link")).unwrap()
        }),
        Box::new(move |r| {
            write(
                &r.join(&long_dir).join(format!("{}.txt", "f".repeat(120))),
                b"long",
                0o644,
            )
        }),
        Box::new(|r| {
            let name = OsStr::from_bytes(b"odd name \n\xff=\\#");
            write(&r.join("etc").join(name), b"odd", 0o644)
        }),
        Box::new(|r| {
            std::fs::create_dir_all(r.join("var")).unwrap();
            nix::unistd::mkfifo(
                &r.join("var/fifo"),
                nix::sys::stat::Mode::from_bits_truncate(0o600),
            )
            .unwrap();
            std::fs::set_permissions(r.join("var/fifo"), std::fs::Permissions::from_mode(0o640))
                .unwrap();
        }),
        Box::new(|r| {
            write(&r.join("data/big"), &vec![7u8; 300_000], 0o644);
        }),
    ];
    if reverse {
        steps.reverse();
    }
    for s in &steps {
        s(root);
    }
    // Hardlinks after their target exists.
    std::fs::hard_link(root.join("bin/app"), root.join("bin/app-hardlink")).unwrap();
    std::fs::hard_link(root.join("bin/app"), root.join("usr-app")).unwrap();
    if xattrs_supported(root) {
        xattr::set(root.join("etc/conf"), "user.shipyard.test", b"value").unwrap();
        xattr::set(root.join("bin/app"), "user.bin", b"\x00\x01binary").unwrap();
    }
    // Directories made implicitly by create_dir_all carry the umask.
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        if e.file_type().is_dir() {
            let rel = e.path().strip_prefix(root).unwrap();
            let mode = match rel.to_str() {
                Some("tmp") => 0o1777,
                Some("private") => 0o700,
                _ => 0o755,
            };
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
    fix_mtimes(root, MTIME);
}

/// Sets every mtime under `root` (deepest first, so directories keep it).
pub fn fix_mtimes(root: &Path, secs: i64) {
    let mut all: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap().path().to_path_buf())
        .collect();
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in all {
        set_mtime(&p, secs);
    }
}

/// Reads a layout's manifest digest for a tag.
pub fn digest_of_tag(layout: &Path, tag: &str) -> String {
    let l = shipyard_image::oci::layout::Layout::open(layout).unwrap();
    l.resolve(Some(tag)).unwrap().digest().to_string()
}

/// The entries of the single-layer image's layer: (tar path, type byte).
pub fn layer_members(layout: &Path, tag: &str) -> Vec<(String, char)> {
    let l = shipyard_image::oci::layout::Layout::open(layout).unwrap();
    let d = l.resolve(Some(tag)).unwrap();
    let img = shipyard_image::oci::image::Image::load(&l, &d).unwrap();
    let last = img.manifest.layers().last().unwrap().clone();
    let dg = shipyard_image::oci::media::digest_of(&last).unwrap();
    let f = l.open_blob(&dg).unwrap();
    let r = shipyard_image::layer::compress::decoder(
        f,
        shipyard_image::oci::media::layer_encoding(last.media_type()),
    )
    .unwrap();
    let mut a = tar::Archive::new(r);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                e.header().entry_type().as_byte() as char,
            )
        })
        .collect()
}

/// Manifest text with the mtime fields removed (for trees whose mtimes a
/// layer clamps).
pub fn strip_mtimes(text: &str) -> String {
    text.lines()
        .map(|l| {
            l.split(' ')
                .filter(|f| !f.starts_with("mtime="))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A rootfs holding the host's /bin/sh and the libraries it needs.
pub fn shell_rootfs(root: &Path) {
    let sh = std::fs::canonicalize("/bin/sh").unwrap();
    let out = std::process::Command::new("ldd").arg(&sh).output().unwrap();
    let ldd = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut files: Vec<PathBuf> = ldd
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    files.push(sh.clone());
    for f in files {
        let dest = root.join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap();
    }
    std::fs::create_dir_all(root.join("bin")).unwrap();
    if !root.join("bin/sh").exists() {
        std::os::unix::fs::symlink(&sh, root.join("bin/sh")).unwrap();
    }
}

/// `shipyard diff TREE --against scratch --output OUT EXTRA…`; returns the
/// image digest.
pub fn diff_scratch(tree: &Path, out: &str, extra: &[&str]) -> String {
    let mut a = vec![
        "diff",
        tree.to_str().unwrap(),
        "--against",
        "scratch",
        "--output",
        out,
    ];
    a.extend_from_slice(extra);
    ok(a).trim().to_string()
}

/// Runs shipyard with its stdout read by something that stops after the
/// first line (`shipyard … | head -1`); returns that line, the exit status
/// and stderr. The output must be larger than a pipe's buffer, so that
/// shipyard is still writing when the reader goes away.
pub fn head_one<I, S>(args: I) -> (String, std::process::ExitStatus, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    use std::io::{BufRead, Read};
    let mut c = shipyard()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run shipyard");
    let mut first = String::new();
    {
        let mut r = std::io::BufReader::new(c.stdout.take().unwrap());
        r.read_line(&mut first).unwrap();
    }
    let mut err = String::new();
    c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (first, c.wait().unwrap(), err)
}

/// The exit of `cat` when its reader goes away: SIGPIPE, silently.
pub fn assert_quiet_broken_pipe(status: std::process::ExitStatus, stderr: &str) {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(13), "killed by SIGPIPE: {status:?}");
    assert!(stderr.is_empty(), "nothing on stderr: {stderr}");
}
