//! A corpus of hostile layers. Each is written byte by byte (no tar library
//! in the way to sanitize it), stored in a layout, and unpacked; each case
//! asserts the exact outcome: the error names the layer digest and the
//! entry, nothing appears outside the root, and no half-unpacked tree is
//! left where the destination should be.

mod common;
use common::rawtar::*;
use common::*;
use shipyard_image::oci::digest::Digest;
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

/// A symlink climbing above the root is stored verbatim (as containerd
/// and umoci do): it is only a name until a runtime resolves it, inside
/// the container's root.
#[test]
fn h05_relative_symlink_climbing_out_is_kept_verbatim() {
    let s = scene();
    let (res, _) = s.unpack(vec![layer(&[
        dir("a/"),
        symlink("a/up", "../../outside"),
        file("a/up/evil", b"x"),
    ])]);
    res.unwrap();
    let root = s.work.join("root");
    assert_eq!(
        std::fs::read_link(root.join("a/up")).unwrap(),
        Path::new("../../outside")
    );
    // Written through the link, resolved inside the root.
    assert_eq!(std::fs::read(root.join("outside/evil")).unwrap(), b"x");
}

/// `d -> /host/path` then `d/evil`: resolved inside the root, as a
/// runtime would, never on the host.
#[test]
fn h06_write_through_absolute_symlink_in_same_layer_stays_inside() {
    let s = scene();
    let abs = s.abs_outside();
    let (res, _) = s.unpack(vec![layer(&[symlink("d", &abs), file("d/evil", b"x")])]);
    res.unwrap();
    let inside = s.work.join("root").join(abs.trim_start_matches('/'));
    assert_eq!(std::fs::read(inside.join("evil")).unwrap(), b"x");
}

#[test]
fn h07_write_through_symlink_planted_by_earlier_layer_stays_inside() {
    let s = scene();
    let abs = s.abs_outside();
    let (res, _) = s.unpack(vec![
        layer(&[symlink("d", &abs)]),
        layer(&[file("d/evil", b"x")]),
    ]);
    res.unwrap();
    let inside = s.work.join("root").join(abs.trim_start_matches('/'));
    assert_eq!(std::fs::read(inside.join("evil")).unwrap(), b"x");
}

#[test]
fn h08_write_through_dot_symlink() {
    let s = scene();
    let (res, _) = s.unpack(vec![layer(&[symlink("self", "."), file("self/x", b"x")])]);
    res.unwrap();
    assert_eq!(std::fs::read(s.work.join("root/x")).unwrap(), b"x");
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
        "too many levels of symlinks",
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

/// The target's parent resolves inside the root, where there is no
/// `target`: the host file is never linked.
#[test]
fn h12_hardlink_through_symlink() {
    let s = scene();
    let abs = s.abs_outside();
    rejects(
        &s,
        vec![layer(&[symlink("d", &abs), hardlink("h", "d/target")])],
        0,
        "does not exist",
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

/// Whiteouts and opaque markers resolve inside the root too: the host's
/// file is untouched (checked by every unpack in this file).
#[test]
fn h17_whiteout_through_symlink() {
    let s = scene();
    let abs = s.abs_outside();
    let inside = format!("{}/target", abs.trim_start_matches('/'));
    let (res, _) = s.unpack(vec![
        layer(&[symlink("d", &abs), file(&inside, b"mine")]),
        layer(&[file("d/.wh.target", b"")]),
    ]);
    res.unwrap();
    assert!(!s.work.join("root").join(&inside).exists());
}

#[test]
fn h18_opaque_through_symlink() {
    let s = scene();
    let abs = s.abs_outside();
    let inside = format!("{}/target", abs.trim_start_matches('/'));
    let (res, _) = s.unpack(vec![
        layer(&[symlink("d", &abs), file(&inside, b"mine")]),
        layer(&[file("d/.wh..wh..opq", b"")]),
    ]);
    res.unwrap();
    assert!(!s.work.join("root").join(&inside).exists());
    assert!(s
        .work
        .join("root")
        .join(abs.trim_start_matches('/'))
        .is_dir());
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
    rejects(&s, vec![layer(&[m(b"sparse", b'S')])], 0, "sparse member");
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

/// Runs `shipyard unpack` of `layers` and returns (stderr, success, peak
/// resident memory of that process in KiB, from wait4's rusage).
///
/// Linux counts in a child's peak the memory of the process it was
/// forked from (its copied or shared address space before exec), and
/// this test process is large. So shipyard is started from a fresh copy
/// of this binary running only [`measure_helper`], which is small.
fn unpack_measured(s: &Scene, layers: Vec<RawLayer>) -> (String, bool, i64, Vec<Digest>) {
    let (l, digests) = image(&s.work, layers);
    let dest = s.work.join("root");
    let stderr_path = s.work.join("stderr");
    let spec = [
        stderr_path.display().to_string(),
        "unpack".into(),
        format!("oci:{}:t", l.display()),
        dest.display().to_string(),
    ]
    .join("\u{1f}");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "measure_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SHIPYARD_TEST_MEASURE", spec)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("MEASURED ").map(|(_, m)| m))
        .unwrap_or_else(|| panic!("the measuring helper said: {stdout}"));
    let (ok, rss) = line.split_once(' ').unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    s.assert_outside_untouched();
    (stderr, ok == "true", rss.parse().unwrap(), digests)
}

/// Not a test of its own: the small process [`unpack_measured`] starts
/// shipyard from (does nothing unless asked to).
#[test]
fn measure_helper() {
    use std::os::unix::process::ExitStatusExt;
    let Ok(spec) = std::env::var("SHIPYARD_TEST_MEASURE") else {
        return;
    };
    let mut parts = spec.split('\u{1f}');
    let stderr_path = parts.next().unwrap();
    let child = shipyard()
        .args(parts)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: waits for our own child; the pointers are to live locals.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    // Reaped by wait4 above; dropping a Child never waits.
    drop(child);
    let ok = std::process::ExitStatus::from_raw(status).success();
    println!("MEASURED {ok} {}", ru.ru_maxrss);
}

/// A PAX record of `len` bytes (`comment=aaa…`), written as a stream.
fn pax_stream(out: &mut dyn std::io::Write, typ: u8, len: u64) {
    let mut h = m(b"pax", typ);
    h.name = b"PaxHeaders/x".to_vec();
    out.write_all(&header_block(&h, len)).unwrap();
    let prefix = format!("{len} comment=");
    out.write_all(prefix.as_bytes()).unwrap();
    let mut left = len - prefix.len() as u64 - 1;
    let chunk = vec![b'a'; 1 << 20];
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        out.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    out.write_all(b"\n").unwrap();
    let pad = (512 - len % 512) % 512;
    out.write_all(&vec![0; pad as usize]).unwrap();
}

#[test]
fn h33_huge_pax_record_is_refused_in_bounded_memory() {
    let s = scene();
    let len = 64 << 20;
    let l = streamed_layer(|out| {
        pax_stream(out, b'x', len);
        let tail = tar(&[file("a", b"x")]);
        out.write_all(&tail).unwrap();
    });
    let (err, ok, maxrss_kib, digests) = unpack_measured(&s, vec![l]);
    assert!(!ok, "a 64 MiB PAX record was accepted");
    assert!(err.contains(&digests[0].to_string()), "{err}");
    assert!(
        err.contains("PAX extended header of 67108864 bytes is larger than the 1048576 bytes"),
        "{err}"
    );
    assert!(
        maxrss_kib < 64 * 1024,
        "unpacking a layer with a 64 MiB PAX record peaked at {maxrss_kib} KiB"
    );
}

#[test]
fn h34_oversized_long_names_and_global_headers_are_refused() {
    for (typ, what) in [
        (b'L', "GNU long name of"),
        (b'K', "GNU long link name of"),
        (b'g', "PAX global header of"),
    ] {
        let s = scene();
        let l = streamed_layer(|out| {
            pax_stream(out, typ, 2 << 20);
            out.write_all(&tar(&[file("a", b"x")])).unwrap();
        });
        rejects(&s, vec![l], 0, what);
    }
}

#[test]
fn h35_a_pax_size_record_does_not_hide_a_later_huge_header() {
    // The member's ustar size says 0 while its PAX size says 600: the
    // guard must skip 1024 bytes of data, as the tar reader does, to find
    // the oversized header after it.
    let s = scene();
    let mut f = file("a", &[b'q'; 600]);
    f.pax.push(("size".into(), b"600".to_vec()));
    f.patch.push((124, b"00000000000\0".to_vec()));
    let l = streamed_layer(|out| {
        let t = tar(&[f]);
        out.write_all(&t[..t.len() - 1024]).unwrap();
        pax_stream(out, b'x', 2 << 20);
        out.write_all(&tar(&[file("b", b"x")])).unwrap();
    });
    rejects(&s, vec![l], 0, "PAX extended header of 2097152 bytes");
}

#[test]
fn h36_members_write_no_more_than_their_size() {
    let s = scene();
    // Header says 3 bytes; 500 follow in the block.
    let mut a = file("a", &[b'z'; 500]);
    a.patch.push((124, b"00000000003\0".to_vec()));
    // PAX size 5 overrides the header's 500.
    let mut b = file("b", &[b'y'; 500]);
    b.pax.push(("size".into(), b"5".to_vec()));
    let (res, _) = s.unpack(vec![layer(&[a, b, file("c", b"after")])]);
    res.unwrap();
    let root = s.work.join("root");
    assert_eq!(std::fs::read(root.join("a")).unwrap(), b"zzz");
    assert_eq!(std::fs::read(root.join("b")).unwrap(), b"yyyyy");
    assert_eq!(std::fs::read(root.join("c")).unwrap(), b"after");
}

#[test]
fn h37_gnu_sparse_members_are_refused() {
    let s = scene();
    // A real GNU header ("ustar  \0"), sparse type, claiming 1 TiB.
    let mut sp = m(b"sparse", b'S');
    sp.patch.push((257, b"ustar  \0".to_vec()));
    sp.patch.push((483, b"17777777777\0".to_vec()));
    rejects(&s, vec![layer(&[sp])], 0, "sparse member");
    let s = scene();
    let mut f = file("GNUSparseFile.0/f", b"x");
    f.pax.push(("GNU.sparse.major".into(), b"1".to_vec()));
    f.pax.push(("GNU.sparse.minor".into(), b"0".to_vec()));
    rejects(&s, vec![layer(&[f])], 0, "sparse member");
}

#[test]
fn h38_ids_out_of_range_are_refused() {
    let pax = |k: &str, v: &str| {
        let mut f = file("f", b"x");
        f.pax.push((k.into(), v.as_bytes().to_vec()));
        f
    };
    let base256 = |at: usize, bytes: [u8; 8]| {
        let mut f = file("f", b"x");
        f.patch.push((at, bytes.to_vec()));
        f
    };
    let cases = [
        (pax("uid", "4294967296"), "uid 4294967296 is out of range"),
        (pax("gid", "4294967296"), "gid 4294967296 is out of range"),
        (pax("uid", "4294967295"), "uid 4294967295 is out of range"),
        (pax("uid", "-1"), "PAX uid \"-1\" is not a number"),
        (pax("gid", "1e3"), "PAX gid \"1e3\" is not a number"),
        (
            base256(108, [0x80, 0, 0, 1, 0, 0, 0, 0]),
            "uid 4294967296 is out of range",
        ),
        (base256(116, [0xff; 8]), "is out of range"),
    ];
    for (member, phrase) in cases {
        let s = scene();
        rejects(&s, vec![layer(&[member])], 0, phrase);
    }
}

/// Symlinks whatever their target, and members whose parents go through
/// them, land as containerd and umoci put them: links verbatim, paths
/// resolved inside the root.
#[test]
fn h39_symlinked_parents_resolve_inside_the_root() {
    let s = scene();
    let (res, _) = s.unpack(vec![
        layer(&[
            dir("usr/"),
            dir("usr/bin/"),
            dir("usr/lib/"),
            symlink("bin", "usr/bin"),
            symlink("lib", "/usr/lib"),
            symlink("up", "../../.."),
            symlink(
                "usr/lib/libclang-cpp.so.14",
                "../llvm-14/lib/libclang-cpp.so.14",
            ),
            symlink("dangling", "/no/such/dir"),
        ]),
        layer(&[
            file("bin/tool", b"tool"),
            file("lib/x.so", b"x"),
            file("up/etc/conf", b"conf"),
            file("dangling/f", b"f"),
            hardlink("bin/tool2", "bin/tool"),
        ]),
    ]);
    res.unwrap();
    let root = s.work.join("root");
    let link = |p: &str| std::fs::read_link(root.join(p)).unwrap();
    assert_eq!(link("bin"), Path::new("usr/bin"));
    assert_eq!(link("lib"), Path::new("/usr/lib"));
    assert_eq!(link("up"), Path::new("../../.."));
    assert_eq!(
        link("usr/lib/libclang-cpp.so.14"),
        Path::new("../llvm-14/lib/libclang-cpp.so.14")
    );
    let read = |p: &str| std::fs::read(root.join(p)).unwrap();
    assert_eq!(read("usr/bin/tool"), b"tool");
    assert_eq!(read("usr/bin/tool2"), b"tool");
    assert_eq!(read("usr/lib/x.so"), b"x");
    assert_eq!(read("etc/conf"), b"conf");
    assert_eq!(read("no/such/dir/f"), b"f");
    // The symlinks are still symlinks.
    for l in ["bin", "lib", "up", "dangling"] {
        assert!(std::fs::symlink_metadata(root.join(l))
            .unwrap()
            .file_type()
            .is_symlink());
    }
}

/// What `shipyard manifest` says an image holds (read from its layers,
/// without unpacking) is where unpack put things.
#[test]
fn h40_image_manifest_follows_the_same_resolution() {
    let s = scene();
    let (l, _) = image(
        &s.work,
        vec![
            layer(&[dir("usr/"), dir("usr/bin/"), symlink("bin", "usr/bin")]),
            layer(&[file("bin/tool", b"tool")]),
        ],
    );
    let m = ok(["manifest", &format!("oci:{}:t", l.display())]);
    assert!(m.contains("\n/usr/bin/tool "), "{m}");
    assert!(!m.contains("\n/bin/tool "), "{m}");
}

#[test]
fn h41_unknown_layer_media_types_are_refused_by_name() {
    let s = scene();
    let mt = "application/vnd.example.not-a-layer";
    let (l, _) = image_typed(
        &s.work,
        vec![layer(&[file("a", b"x")])],
        oci_spec::image::MediaType::Other(mt.into()),
    );
    let e = fails([
        "unpack",
        &format!("oci:{}:t", l.display()),
        s.work.join("root").to_str().unwrap(),
    ]);
    assert!(e.contains(&format!("media type {mt:?}")), "{e}");
    assert!(!s.work.join("root").exists());
    // The nondistributable and Docker types are layers.
    for mt in [
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    ] {
        let s = scene();
        let (l, _) = image_typed(
            &s.work,
            vec![layer(&[file("a", b"x")])],
            oci_spec::image::MediaType::Other(mt.into()),
        );
        ok([
            "unpack",
            &format!("oci:{}:t", l.display()),
            s.work.join("root").to_str().unwrap(),
        ]);
        assert_eq!(std::fs::read(s.work.join("root/a")).unwrap(), b"x");
    }
}

/// The layer `shipyard diff` writes from a tree of libraries with links
/// that climb above it (as a copy of /usr/lib/x86_64-linux-gnu has)
/// unpacks to the same tree.
#[test]
fn h42_diff_of_a_tree_with_climbing_links_unpacks() {
    let s = scene();
    let tree = s.work.join("tree");
    write(&tree.join("libz.so.1.2.13"), b"\x7fELF", 0o755);
    std::os::unix::fs::symlink("libz.so.1.2.13", tree.join("libz.so.1")).unwrap();
    std::os::unix::fs::symlink(
        "../llvm-14/lib/libclang-cpp.so.14",
        tree.join("libclang-cpp.so.14"),
    )
    .unwrap();
    std::os::unix::fs::symlink("../../..", tree.join("up")).unwrap();
    std::os::unix::fs::symlink("/usr/lib", tree.join("abs")).unwrap();
    let out = format!("oci:{}:t", s.work.join("l").display());
    ok([
        "diff",
        tree.to_str().unwrap(),
        "--against",
        "scratch",
        "--output",
        &out,
    ]);
    let root = s.work.join("root");
    ok(["unpack", &out, root.to_str().unwrap()]);
    // Mtimes are clamped in layers (SOURCE_DATE_EPOCH); all else is equal.
    let m = |p: &Path| {
        ok(["manifest", p.to_str().unwrap()])
            .lines()
            .map(|l| {
                l.split(' ')
                    .filter(|f| !f.starts_with("mtime="))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(m(&tree), m(&root));
    s.assert_outside_untouched();
}
