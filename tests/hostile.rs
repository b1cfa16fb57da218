//! A corpus of hostile layers. Each is written byte by byte (no tar library
//! in the way to sanitize it), stored in a layout, and unpacked; each case
//! asserts the exact outcome: the error names the layer digest and the
//! entry, nothing appears outside the root, and no half-unpacked tree is
//! left where the destination should be.

mod common;
use common::rawtar::*;
use common::*;
use shipyard::oci::digest::Digest;
use std::path::{Path, PathBuf};

struct Scene {
    _tmp: tempfile::TempDir,
    work: PathBuf,
    outside: PathBuf,
}

fn scene() -> Scene {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().to_path_buf();
    let outside = work.join("outside");
    write(&outside.join("target"), b"precious", 0o644);
    Scene {
        _tmp: tmp,
        work,
        outside,
    }
}

impl Scene {
    fn unpack(&self, layers: Vec<RawLayer>) -> (Result<String, String>, Vec<Digest>) {
        let (l, digests) = image(&self.work, layers);
        let dest = self.work.join("root");
        let out = shipyard()
            .args([
                "unpack",
                &format!("oci:{}:t", l.display()),
                dest.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        self.assert_outside_untouched();
        if out.status.success() {
            (Ok(stderr), digests)
        } else {
            assert!(!dest.exists(), "a failed unpack left {}", dest.display());
            let leftovers: Vec<_> = std::fs::read_dir(&self.work)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".shipyard-unpack-")
                })
                .collect();
            assert!(leftovers.is_empty(), "temp dirs left behind");
            (Err(stderr), digests)
        }
    }

    fn assert_outside_untouched(&self) {
        let names: Vec<String> = std::fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["target"], "something was written outside the root");
        assert_eq!(
            std::fs::read(self.outside.join("target")).unwrap(),
            b"precious"
        );
        assert!(!self.work.join("evil").exists());
    }

    fn abs_outside(&self) -> String {
        self.outside.display().to_string()
    }
}

/// Asserts a rejection naming the layer (by digest) and the phrase.
fn rejects(s: &Scene, layers: Vec<RawLayer>, which_layer: usize, phrase: &str) {
    let (res, digests) = s.unpack(layers);
    let err = res.expect_err("hostile layer was accepted");
    assert!(
        err.contains(&digests[which_layer].to_string()),
        "error does not name layer {}: {err}",
        digests[which_layer]
    );
    assert!(err.contains(phrase), "expected {phrase:?} in: {err}");
}

#[test]
fn h01_absolute_path() {
    let s = scene();
    rejects(&s, vec![layer(&[file("/evil", b"x")])], 0, "absolute path");
}

#[test]
fn h02_dotdot_path() {
    let s = scene();
    rejects(&s, vec![layer(&[file("../evil", b"x")])], 0, "'..'");
}

#[test]
fn h03_dotdot_inside_path() {
    let s = scene();
    rejects(
        &s,
        vec![layer(&[dir("a/"), file("a/../../outside/target", b"x")])],
        0,
        "'..'",
    );
}

#[test]
fn h04_pax_path_with_dotdot() {
    let s = scene();
    let mut f = file("innocent", b"x");
    f.pax
        .push(("path".into(), b"../../outside/target".to_vec()));
    rejects(&s, vec![layer(&[f])], 0, "'..'");
}

#[test]
fn h05_relative_symlink_escaping() {
    let s = scene();
    rejects(
        &s,
        vec![layer(&[dir("a/"), symlink("a/up", "../../outside")])],
        0,
        "climbs out of the root",
    );
}

#[test]
fn h06_write_through_symlink_in_same_layer() {
    let s = scene();
    let abs = s.abs_outside();
    rejects(
        &s,
        vec![layer(&[symlink("d", &abs), file("d/evil", b"x")])],
        0,
        "goes through a symlink",
    );
}

#[test]
fn h07_write_through_symlink_planted_by_earlier_layer() {
    let s = scene();
    let abs = s.abs_outside();
    rejects(
        &s,
        vec![layer(&[symlink("d", &abs)]), layer(&[file("d/evil", b"x")])],
        1,
        "goes through a symlink",
    );
}

#[test]
fn h08_write_through_dot_symlink() {
    let s = scene();
    rejects(
        &s,
        vec![layer(&[symlink("self", "."), file("self/x", b"x")])],
        0,
        "goes through a symlink",
    );
}

#[test]
fn h09_symlink_loop() {
    let s = scene();
    rejects(
        &s,
        vec![layer(&[
            symlink("a", "b"),
            symlink("b", "a"),
            file("a/x", b"x"),
        ])],
        0,
        "goes through a symlink",
    );
}

#[test]
fn h10_hardlink_escaping_with_dotdot() {
    let s = scene();
    rejects(
        &s,
        vec![layer(&[hardlink("h", "../outside/target")])],
        0,
        "hardlink target escapes",
    );
}

#[test]
fn h11_hardlink_to_absolute_host_path() {
    let s = scene();
    let t = format!("{}/target", s.abs_outside());
    rejects(
        &s,
        vec![layer(&[hardlink("h", &t)])],
        0,
        "hardlink target escapes",
    );
}

#[test]
fn h12_hardlink_through_symlink() {
    let s = scene();
    let abs = s.abs_outside();
    rejects(
        &s,
        vec![layer(&[symlink("d", &abs), hardlink("h", "d/target")])],
        0,
        "goes through a symlink",
    );
}

#[test]
fn h13_hardlink_to_missing_file() {
    let s = scene();
    rejects(
        &s,
        vec![layer(&[hardlink("h", "nothing")])],
        0,
        "does not exist",
    );
}

#[test]
fn h14_hardlink_to_directory() {
    let s = scene();
    rejects(
        &s,
        vec![layer(&[dir("d/"), hardlink("h", "d")])],
        0,
        "is a directory",
    );
}

#[test]
fn h15_bare_whiteout() {
    let s = scene();
    rejects(&s, vec![layer(&[file(".wh.", b"")])], 0, "bare whiteout");
}

#[test]
fn h16_whiteout_of_dotdot() {
    let s = scene();
    rejects(
        &s,
        vec![layer(&[dir("a/"), file("a/.wh...", b"")])],
        0,
        "whiteout of '.' or '..'",
    );
}

#[test]
fn h17_whiteout_through_symlink() {
    let s = scene();
    let abs = s.abs_outside();
    rejects(
        &s,
        vec![
            layer(&[symlink("d", &abs)]),
            layer(&[file("d/.wh.target", b"")]),
        ],
        1,
        "goes through a symlink",
    );
}

#[test]
fn h18_opaque_through_symlink() {
    let s = scene();
    let abs = s.abs_outside();
    rejects(
        &s,
        vec![
            layer(&[symlink("d", &abs)]),
            layer(&[file("d/.wh..wh..opq", b"")]),
        ],
        1,
        "goes through a symlink",
    );
}

#[test]
fn h19_parent_is_a_file() {
    let s = scene();
    rejects(
        &s,
        vec![layer(&[file("f", b"x"), file("f/x", b"y")])],
        0,
        "is not a directory",
    );
}

#[test]
fn h20_unsupported_member_type() {
    let s = scene();
    rejects(
        &s,
        vec![layer(&[m(b"weird", b'Z')])],
        0,
        "unsupported tar entry type 'Z'",
    );
}

#[test]
fn h32_sparse_member_without_gnu_header() {
    let s = scene();
    rejects(
        &s,
        vec![layer(&[m(b"sparse", b'S')])],
        0,
        "sparse entry type listed but not GNU header",
    );
}

#[test]
fn h21_root_replaced_by_file() {
    let s = scene();
    rejects(
        &s,
        vec![layer(&[file("./", b"x")])],
        0,
        "the root can only be a directory",
    );
}

#[test]
fn h22_blob_digest_mismatch() {
    let s = scene();
    let (l, digests) = image(&s.work, vec![layer(&[file("a", b"hello")])]);
    // Flip bytes in the stored blob: same name, other content.
    let p = l.join("blobs/sha256").join(digests[0].hex());
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len();
    b[n - 5] ^= 0xff;
    std::fs::write(&p, &b).unwrap();
    let e = fails([
        "unpack",
        &format!("oci:{}:t", l.display()),
        s.work.join("root").to_str().unwrap(),
    ]);
    assert!(
        e.contains(&format!("blob {} is corrupt", digests[0])),
        "{e}"
    );
    assert!(!s.work.join("root").exists());
}

#[test]
fn h23_truncated_gzip_stream() {
    let s = scene();
    let full = tar(&[file("a", &vec![b'z'; 100_000])]);
    let gz = gzip(&full);
    let cut = gz[..gz.len() / 2].to_vec();
    rejects(
        &s,
        vec![RawLayer {
            blob: cut,
            size: None,
            diff_id: Some(Digest::of(&full)),
        }],
        0,
        "incomplete deflate stream",
    );
}

#[test]
fn h24_garbage_with_gzip_magic() {
    let s = scene();
    let mut junk = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    junk.extend(std::iter::repeat_n(0xAB, 4000));
    rejects(
        &s,
        vec![RawLayer {
            blob: junk,
            size: None,
            diff_id: None,
        }],
        0,
        "cannot read the layer stream",
    );
}

#[test]
fn h25_diff_id_mismatch() {
    let s = scene();
    let t = tar(&[file("a", b"x")]);
    rejects(
        &s,
        vec![RawLayer {
            blob: gzip(&t),
            size: None,
            diff_id: Some(Digest::of(b"something else")),
        }],
        0,
        "(diff_id)",
    );
}

#[test]
fn h26_descriptor_size_mismatch() {
    let s = scene();
    let mut l = layer(&[file("a", b"x")]);
    l.size = Some(l.blob.len() as u64 + 10);
    let (res, digests) = s.unpack(vec![l]);
    let e = res.unwrap_err();
    assert!(
        e.contains(&format!("blob {} has", digests[0])) && e.contains("descriptor says"),
        "{e}"
    );
}

#[test]
fn h27_file_replaces_planted_symlink_without_following_it() {
    let s = scene();
    let target = format!("{}/target", s.abs_outside());
    let (res, _) = s.unpack(vec![
        layer(&[symlink("x", &target)]),
        layer(&[file("x", b"mine")]),
    ]);
    res.unwrap();
    let x = s.work.join("root/x");
    assert!(std::fs::symlink_metadata(&x).unwrap().is_file());
    assert_eq!(std::fs::read(&x).unwrap(), b"mine");
}

#[test]
fn h28_directory_replaces_planted_symlink() {
    let s = scene();
    let abs = s.abs_outside();
    let (res, _) = s.unpack(vec![
        layer(&[symlink("d", &abs)]),
        layer(&[dir("d/"), file("d/inside", b"ok")]),
    ]);
    res.unwrap();
    assert!(std::fs::symlink_metadata(s.work.join("root/d"))
        .unwrap()
        .is_dir());
    assert_eq!(std::fs::read(s.work.join("root/d/inside")).unwrap(), b"ok");
}

#[test]
fn h29_absolute_symlinks_are_kept_but_never_followed() {
    let s = scene();
    let (res, _) = s.unpack(vec![layer(&[
        dir("etc/"),
        symlink("etc/passwd-link", "/etc/passwd"),
        file("etc/other", b"x"),
    ])]);
    res.unwrap();
    let l = std::fs::read_link(s.work.join("root/etc/passwd-link")).unwrap();
    assert_eq!(l, Path::new("/etc/passwd"));
}

#[test]
fn h30_whiteouts_and_opaque_apply_to_lower_layers_only() {
    let s = scene();
    let (res, _) = s.unpack(vec![
        layer(&[
            dir("d/"),
            file("d/old1", b"1"),
            file("d/old2", b"2"),
            file("gone", b"g"),
        ]),
        layer(&[
            file(".wh.gone", b""),
            dir("d/"),
            file("d/new", b"n"),
            file("d/.wh..wh..opq", b""),
        ]),
    ]);
    res.unwrap();
    let root = s.work.join("root");
    assert!(!root.join("gone").exists());
    let mut names: Vec<String> = std::fs::read_dir(root.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["new"]);
}

#[test]
fn h31_destination_must_be_empty() {
    let s = scene();
    std::fs::create_dir_all(s.work.join("root")).unwrap();
    std::fs::write(s.work.join("root/keep"), b"mine").unwrap();
    let (l, _) = image(&s.work, vec![layer(&[file("a", b"x")])]);
    let e = fails([
        "unpack",
        &format!("oci:{}:t", l.display()),
        s.work.join("root").to_str().unwrap(),
    ]);
    assert!(e.contains("not empty"), "{e}");
    assert_eq!(std::fs::read(s.work.join("root/keep")).unwrap(), b"mine");
}
