//! Trees on disk for the tests to diff, build from and compare: files
//! with explicit modes and mtimes (whatever the umask), a tree with every
//! kind of entry, a rootfs with a shell.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

pub const MTIME: i64 = 1_600_000_000;

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
