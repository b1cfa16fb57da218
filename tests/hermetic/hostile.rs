//! A corpus of hostile layers, as one table ([`hostile_layers!`] below):
//! each row is a layer (or a stack of them) written byte by byte, no tar
//! library in the way to sanitize it, and the exact outcome, either the
//! refusal (naming the layer digest and the phrase the user reads) or what
//! lands on disk. Rows run in this process against the extractor
//! ([`unpack`], what `shipyard unpack` calls), each in a scene of its own
//! with a precious file beside the root; every row also asserts that
//! nothing outside the root changed and, when refused, that no
//! half-unpacked tree or temp directory is left where the destination
//! should be.
//!
//! A row names the attack. `@OUT` stands for the absolute path of the
//! directory outside the root: in a link target, a PAX value or an
//! expected link target as it is; in a member name or an expected path
//! without its leading `/`, that is, the same path inside the root.
//!
//! A few checks go through the `shipyard` binary (at the end): what the
//! user reads for an escaping member and for a corrupt blob, a destination
//! that is not empty, and a huge PAX header refused in bounded memory
//! (measured on the process).

use crate::common::rawtar::*;
use crate::common::*;
use shipyard_image::error::chain_text;
use shipyard_image::layer::extract::unpack;
use shipyard_image::oci::digest::Digest;
use shipyard_image::oci::image::Image;
use shipyard_image::oci::layout::Layout;
use std::path::{Path, PathBuf};

/// Stands for the absolute path of the directory outside the root.
const OUT: &str = "@OUT";

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
    fn root(&self) -> PathBuf {
        self.work.join("root")
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

    /// After a refused unpack: no destination, no temp directory.
    fn assert_nothing_left(&self) {
        assert!(
            !self.root().exists(),
            "a failed unpack left {}",
            self.root().display()
        );
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
    }

    /// The outside directory's absolute path.
    fn out(&self) -> String {
        self.outside.display().to_string()
    }

    /// `OUT` in a member replaced (see the module's doc).
    fn place(&self, mut m: M) -> M {
        let abs = self.out();
        let sub = |b: &[u8], to: &str| replace(b, OUT.as_bytes(), to.as_bytes());
        m.name = sub(&m.name, abs.trim_start_matches('/'));
        m.link = sub(&m.link, &abs);
        for (_, v) in &mut m.pax {
            *v = sub(v, &abs);
        }
        m
    }

    /// An expected path (relative to the root), `OUT` standing for the
    /// outside directory's path inside the root.
    fn inside(&self, p: &str) -> PathBuf {
        self.root()
            .join(p.replace(OUT, self.out().trim_start_matches('/')))
    }
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// One layer of a row.
enum L {
    /// Members, `OUT` replaced, as a gzip tar with true digests.
    Members(Vec<M>),
    /// Bytes as given: a broken stream, a wrong size or diff_id.
    Raw(RawLayer),
}

fn l(members: &[M]) -> L {
    L::Members(members.to_vec())
}

/// What a row expects.
enum Expect {
    /// Refused; the error names layer `layer` (by digest) and says
    /// `phrase`.
    Refused { layer: usize, phrase: &'static str },
    /// Unpacked, with these paths (relative to the root) as given.
    Unpacked(Vec<(&'static str, Want)>),
}

/// What a path holds after an unpack.
enum Want {
    /// A regular file (not a link to one) with this content.
    File(&'static [u8]),
    /// A symlink with this target, stored verbatim.
    Link(&'static str),
    /// A real directory (not a link to one).
    Dir,
    /// Nothing: not even a dangling symlink.
    Absent,
    /// A directory with exactly these names.
    Only(&'static [&'static str]),
}
use Want::*;

struct Case {
    layers: Vec<L>,
    media_type: oci_spec::image::MediaType,
    /// Flip bytes in the stored blob of the first layer after writing it.
    corrupt: bool,
    expect: Expect,
}

fn refused(layers: Vec<L>, layer: usize, phrase: &'static str) -> Case {
    Case {
        layers,
        media_type: oci_spec::image::MediaType::ImageLayerGzip,
        corrupt: false,
        expect: Expect::Refused { layer, phrase },
    }
}

fn unpacked(layers: Vec<L>, want: Vec<(&'static str, Want)>) -> Case {
    Case {
        layers,
        media_type: oci_spec::image::MediaType::ImageLayerGzip,
        corrupt: false,
        expect: Expect::Unpacked(want),
    }
}

impl Case {
    fn typed(mut self, media_type: &str) -> Case {
        self.media_type = oci_spec::image::MediaType::Other(media_type.into());
        self
    }

    fn corrupted(mut self) -> Case {
        self.corrupt = true;
        self
    }
}

/// Runs one row: writes its image, unpacks it in this process and checks
/// the outcome.
fn run(case: Case) {
    let s = scene();
    let layers = case
        .layers
        .into_iter()
        .map(|l| match l {
            L::Members(ms) => layer(&ms.into_iter().map(|m| s.place(m)).collect::<Vec<_>>()),
            L::Raw(r) => r,
        })
        .collect();
    let (dir, digests) = image_typed(&s.work, layers, case.media_type);
    if case.corrupt {
        // Same name, other content.
        let p = dir.join("blobs/sha256").join(digests[0].hex());
        let mut b = std::fs::read(&p).unwrap();
        let n = b.len();
        b[n - 5] ^= 0xff;
        std::fs::write(&p, &b).unwrap();
    }
    let layout = Layout::open(&dir).unwrap();
    let desc = layout.resolve(Some("t")).unwrap();
    let image = Image::load(&layout, &desc).unwrap();
    // The error with its causes, on one line as `shipyard` says them.
    let res = unpack(&layout, &image, &s.root()).map_err(|e| chain_text(&e));
    s.assert_outside_untouched();
    match case.expect {
        Expect::Refused { layer, phrase } => {
            let err = match res {
                Ok(_) => panic!("hostile layer was accepted"),
                Err(e) => e,
            };
            s.assert_nothing_left();
            assert!(
                err.contains(&digests[layer].to_string()),
                "error does not name layer {}: {err}",
                digests[layer]
            );
            assert!(err.contains(phrase), "expected {phrase:?} in: {err}");
        }
        Expect::Unpacked(want) => {
            if let Err(e) = res {
                panic!("refused: {e}");
            }
            for (p, w) in want {
                let path = s.inside(p);
                let meta = std::fs::symlink_metadata(&path);
                match w {
                    File(content) => {
                        assert!(meta.unwrap().is_file(), "{p} is not a regular file");
                        assert_eq!(std::fs::read(&path).unwrap(), content, "{p}");
                    }
                    Link(target) => {
                        assert!(meta.unwrap().is_symlink(), "{p} is not a symlink");
                        let target = target.replace(OUT, &s.out());
                        assert_eq!(std::fs::read_link(&path).unwrap(), Path::new(&target));
                    }
                    Dir => assert!(meta.unwrap().is_dir(), "{p} is not a directory"),
                    Absent => assert!(meta.is_err(), "{p} exists"),
                    Only(names) => {
                        assert!(meta.unwrap().is_dir(), "{p} is not a directory");
                        let mut got: Vec<String> = std::fs::read_dir(&path)
                            .unwrap()
                            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                            .collect();
                        got.sort();
                        assert_eq!(got, names, "{p}");
                    }
                }
            }
        }
    }
}

/// A PAX (or GNU long name, or global) header of `len` bytes
/// (`comment=aaa…`), written as a stream.
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

/// A 2 MiB header of type `typ` before an ordinary member.
fn oversized_header(typ: u8) -> L {
    L::Raw(streamed_layer(|out| {
        pax_stream(out, typ, 2 << 20);
        out.write_all(&tar(&[file("a", b"x")])).unwrap();
    }))
}

/// The member's ustar size says 0 while its PAX size says 600: the guard
/// must skip 1024 bytes of data, as the tar reader does, to find the
/// oversized header after it.
fn huge_header_behind_a_pax_size() -> L {
    let mut f = file("a", &[b'q'; 600]);
    f.pax.push(("size".into(), b"600".to_vec()));
    f.patch.push((124, b"00000000000\0".to_vec()));
    L::Raw(streamed_layer(|out| {
        let t = tar(&[f]);
        out.write_all(&t[..t.len() - 1024]).unwrap();
        pax_stream(out, b'x', 2 << 20);
        out.write_all(&tar(&[file("b", b"x")])).unwrap();
    }))
}

/// `f` with one PAX record.
fn with_pax(mut f: M, k: &str, v: &str) -> M {
    f.pax.push((k.into(), v.as_bytes().to_vec()));
    f
}

/// `f` with `bytes` written over its header at `at`.
fn patched(mut f: M, at: usize, bytes: &[u8]) -> M {
    f.patch.push((at, bytes.to_vec()));
    f
}

fn truncated_gzip() -> L {
    let full = tar(&[file("a", &vec![b'z'; 100_000])]);
    let gz = gzip(&full);
    L::Raw(RawLayer {
        blob: gz[..gz.len() / 2].to_vec(),
        size: None,
        diff_id: Some(Digest::of(&full)),
    })
}

fn gzip_magic_then_garbage() -> L {
    let mut junk = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    junk.extend(std::iter::repeat_n(0xAB, 4000));
    L::Raw(RawLayer {
        blob: junk,
        size: None,
        diff_id: None,
    })
}

fn wrong_diff_id() -> L {
    L::Raw(RawLayer {
        blob: gzip(&tar(&[file("a", b"x")])),
        size: None,
        diff_id: Some(Digest::of(b"something else")),
    })
}

fn wrong_descriptor_size() -> L {
    let mut l = layer(&[file("a", b"x")]);
    l.size = Some(l.blob.len() as u64 + 10);
    L::Raw(l)
}

/// One `#[test]` per row, named after it.
macro_rules! hostile_layers {
    ($($name:ident: $case:expr;)*) => {
        $(
            #[test]
            fn $name() {
                run($case);
            }
        )*
    };
}

hostile_layers! {
    // Names that leave the root.
    absolute_path: refused(vec![l(&[file("/evil", b"x")])], 0, "absolute path");
    dotdot_path: refused(vec![l(&[file("../evil", b"x")])], 0, "'..'");
    dotdot_inside_path: refused(
        vec![l(&[dir("a/"), file("a/../../outside/target", b"x")])], 0, "'..'");
    pax_path_with_dotdot: refused(
        vec![l(&[with_pax(file("innocent", b"x"), "path", "../../outside/target")])],
        0, "'..'");

    // Symlinks are stored verbatim (as containerd and umoci do) and the
    // paths that go through them resolve inside the root.
    relative_symlink_climbing_out_is_kept_verbatim: unpacked(
        vec![l(&[dir("a/"), symlink("a/up", "../../outside"), file("a/up/evil", b"x")])],
        vec![("a/up", Link("../../outside")), ("outside/evil", File(b"x"))]);
    write_through_absolute_symlink_in_same_layer_stays_inside: unpacked(
        vec![l(&[symlink("d", OUT), file("d/evil", b"x")])],
        vec![("d", Link(OUT)), ("@OUT/evil", File(b"x"))]);
    write_through_symlink_planted_by_earlier_layer_stays_inside: unpacked(
        vec![l(&[symlink("d", OUT)]), l(&[file("d/evil", b"x")])],
        vec![("@OUT/evil", File(b"x"))]);
    write_through_dot_symlink: unpacked(
        vec![l(&[symlink("self", "."), file("self/x", b"x")])],
        vec![("self", Link(".")), ("x", File(b"x"))]);
    symlink_loop: refused(
        vec![l(&[symlink("a", "b"), symlink("b", "a"), file("a/x", b"x")])],
        0, "too many levels of symlinks");
    absolute_symlinks_are_kept_but_never_followed: unpacked(
        vec![l(&[dir("etc/"), symlink("etc/passwd-link", "/etc/passwd"), file("etc/other", b"x")])],
        vec![("etc/passwd-link", Link("/etc/passwd")), ("etc/other", File(b"x"))]);
    file_replaces_planted_symlink_without_following_it: unpacked(
        vec![l(&[symlink("x", "@OUT/target")]), l(&[file("x", b"mine")])],
        vec![("x", File(b"mine"))]);
    directory_replaces_planted_symlink: unpacked(
        vec![l(&[symlink("d", OUT)]), l(&[dir("d/"), file("d/inside", b"ok")])],
        vec![("d", Dir), ("d/inside", File(b"ok"))]);
    symlinked_parents_resolve_inside_the_root: unpacked(
        vec![
            l(&[
                dir("usr/"),
                dir("usr/bin/"),
                dir("usr/lib/"),
                symlink("bin", "usr/bin"),
                symlink("lib", "/usr/lib"),
                symlink("up", "../../.."),
                symlink("usr/lib/libclang-cpp.so.14", "../llvm-14/lib/libclang-cpp.so.14"),
                symlink("dangling", "/no/such/dir"),
            ]),
            l(&[
                file("bin/tool", b"tool"),
                file("lib/x.so", b"x"),
                file("up/etc/conf", b"conf"),
                file("dangling/f", b"f"),
                hardlink("bin/tool2", "bin/tool"),
            ]),
        ],
        vec![
            ("bin", Link("usr/bin")),
            ("lib", Link("/usr/lib")),
            ("up", Link("../../..")),
            ("dangling", Link("/no/such/dir")),
            ("usr/lib/libclang-cpp.so.14", Link("../llvm-14/lib/libclang-cpp.so.14")),
            ("usr/bin/tool", File(b"tool")),
            ("usr/bin/tool2", File(b"tool")),
            ("usr/lib/x.so", File(b"x")),
            ("etc/conf", File(b"conf")),
            ("no/such/dir/f", File(b"f")),
        ]);

    // Hardlinks.
    hardlink_escaping_with_dotdot: refused(
        vec![l(&[hardlink("h", "../outside/target")])], 0, "hardlink target escapes");
    hardlink_to_absolute_host_path: refused(
        vec![l(&[hardlink("h", "@OUT/target")])], 0, "hardlink target escapes");
    // The target's parent resolves inside the root, where there is no
    // `target`: the host file is never linked.
    hardlink_through_symlink: refused(
        vec![l(&[symlink("d", OUT), hardlink("h", "d/target")])], 0, "does not exist");
    hardlink_to_missing_file: refused(
        vec![l(&[hardlink("h", "nothing")])], 0, "does not exist");
    hardlink_to_directory: refused(
        vec![l(&[dir("d/"), hardlink("h", "d")])], 0, "is a directory");

    // Whiteouts and opaque markers.
    bare_whiteout: refused(vec![l(&[file(".wh.", b"")])], 0, "bare whiteout");
    whiteout_of_dotdot: refused(
        vec![l(&[dir("a/"), file("a/.wh...", b"")])], 0, "whiteout of '.' or '..'");
    whiteout_through_symlink: unpacked(
        vec![
            l(&[symlink("d", OUT), file("@OUT/target", b"mine")]),
            l(&[file("d/.wh.target", b"")]),
        ],
        vec![("@OUT/target", Absent)]);
    opaque_through_symlink: unpacked(
        vec![
            l(&[symlink("d", OUT), file("@OUT/target", b"mine")]),
            l(&[file("d/.wh..wh..opq", b"")]),
        ],
        vec![("@OUT/target", Absent), ("@OUT", Only(&[]))]);
    whiteouts_and_opaque_apply_to_lower_layers_only: unpacked(
        vec![
            l(&[dir("d/"), file("d/old1", b"1"), file("d/old2", b"2"), file("gone", b"g")]),
            l(&[file(".wh.gone", b""), dir("d/"), file("d/new", b"n"), file("d/.wh..wh..opq", b"")]),
        ],
        vec![("gone", Absent), ("d", Only(&["new"]))]);

    // Member types and shapes.
    parent_is_a_file: refused(
        vec![l(&[file("f", b"x"), file("f/x", b"y")])], 0, "is not a directory");
    unsupported_member_type: refused(
        vec![l(&[m(b"weird", b'Z')])], 0, "unsupported tar entry type 'Z'");
    sparse_member_without_gnu_header: refused(
        vec![l(&[m(b"sparse", b'S')])], 0, "sparse member");
    // A real GNU header ("ustar  \0"), sparse type, claiming 1 TiB.
    gnu_sparse_member: refused(
        vec![l(&[patched(patched(m(b"sparse", b'S'), 257, b"ustar  \0"), 483, b"17777777777\0")])],
        0, "sparse member");
    pax_sparse_member: refused(
        vec![l(&[with_pax(
            with_pax(file("GNUSparseFile.0/f", b"x"), "GNU.sparse.major", "1"),
            "GNU.sparse.minor", "0")])],
        0, "sparse member");
    root_replaced_by_file: refused(
        vec![l(&[file("./", b"x")])], 0, "the root can only be a directory");
    // Header says 3 bytes, 500 follow in the block; a PAX size of 5
    // overrides the header's 500.
    members_write_no_more_than_their_size: unpacked(
        vec![l(&[
            patched(file("a", &[b'z'; 500]), 124, b"00000000003\0"),
            with_pax(file("b", &[b'y'; 500]), "size", "5"),
            file("c", b"after"),
        ])],
        vec![("a", File(b"zzz")), ("b", File(b"yyyyy")), ("c", File(b"after"))]);

    // Headers larger than any real one.
    oversized_gnu_long_name: refused(vec![oversized_header(b'L')], 0, "GNU long name of");
    oversized_gnu_long_link_name: refused(
        vec![oversized_header(b'K')], 0, "GNU long link name of");
    oversized_pax_global_header: refused(vec![oversized_header(b'g')], 0, "PAX global header of");
    pax_size_record_does_not_hide_a_later_huge_header: refused(
        vec![huge_header_behind_a_pax_size()], 0, "PAX extended header of 2097152 bytes");

    // Ids out of range.
    pax_uid_above_32_bits: refused(
        vec![l(&[with_pax(file("f", b"x"), "uid", "4294967296")])],
        0, "uid 4294967296 is out of range");
    pax_gid_above_32_bits: refused(
        vec![l(&[with_pax(file("f", b"x"), "gid", "4294967296")])],
        0, "gid 4294967296 is out of range");
    pax_uid_minus_one_as_unsigned: refused(
        vec![l(&[with_pax(file("f", b"x"), "uid", "4294967295")])],
        0, "uid 4294967295 is out of range");
    pax_uid_negative: refused(
        vec![l(&[with_pax(file("f", b"x"), "uid", "-1")])], 0, "PAX uid \"-1\" is not a number");
    pax_gid_not_a_number: refused(
        vec![l(&[with_pax(file("f", b"x"), "gid", "1e3")])], 0, "PAX gid \"1e3\" is not a number");
    base256_uid_above_32_bits: refused(
        vec![l(&[patched(file("f", b"x"), 108, &[0x80, 0, 0, 1, 0, 0, 0, 0])])],
        0, "uid 4294967296 is out of range");
    base256_gid_all_ones: refused(
        vec![l(&[patched(file("f", b"x"), 116, &[0xff; 8])])], 0, "is out of range");

    // The blob and its descriptors.
    blob_digest_mismatch: refused(vec![l(&[file("a", b"hello")])], 0, "is corrupt").corrupted();
    truncated_gzip_stream: refused(vec![truncated_gzip()], 0, "incomplete deflate stream");
    garbage_with_gzip_magic: refused(
        vec![gzip_magic_then_garbage()], 0, "cannot read the layer stream");
    diff_id_mismatch: refused(vec![wrong_diff_id()], 0, "(diff_id)");
    descriptor_size_mismatch: refused(vec![wrong_descriptor_size()], 0, "descriptor says");
    unknown_layer_media_type: refused(
        vec![l(&[file("a", b"x")])], 0,
        "media type \"application/vnd.example.not-a-layer\"")
        .typed("application/vnd.example.not-a-layer");
    // The nondistributable and Docker types are layers.
    nondistributable_media_type_is_a_layer: unpacked(
        vec![l(&[file("a", b"x")])], vec![("a", File(b"x"))])
        .typed("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip");
    docker_media_type_is_a_layer: unpacked(
        vec![l(&[file("a", b"x")])], vec![("a", File(b"x"))])
        .typed("application/vnd.docker.image.rootfs.diff.tar.gzip");
    docker_foreign_media_type_is_a_layer: unpacked(
        vec![l(&[file("a", b"x")])], vec![("a", File(b"x"))])
        .typed("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip");
}

// ---------------------------------------------------------------------
// Through the binary: what the user reads.

/// Runs `shipyard unpack` of `layers`; returns its result (stderr either
/// way) and the layer digests. Checks what every run must leave.
fn unpack_with_cli(s: &Scene, layers: Vec<RawLayer>) -> (Result<String, String>, Vec<Digest>) {
    let (l, digests) = image(&s.work, layers);
    let out = shipyard()
        .args([
            "unpack",
            &format!("oci:{}:t", l.display()),
            s.root().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    s.assert_outside_untouched();
    if out.status.success() {
        (Ok(stderr), digests)
    } else {
        s.assert_nothing_left();
        (Err(stderr), digests)
    }
}

#[test]
fn cli_names_the_layer_and_entry_of_an_escaping_member() {
    let s = scene();
    let (res, digests) = unpack_with_cli(
        &s,
        vec![
            layer(&[file("a", b"x")]),
            layer(&[dir("a2/"), file("a2/../../outside/target", b"x")]),
        ],
    );
    let err = res.expect_err("hostile layer was accepted");
    assert!(err.contains(&digests[1].to_string()), "{err}");
    assert!(err.contains("a2/../../outside/target"), "{err}");
    assert!(err.contains("'..'"), "{err}");
}

#[test]
fn cli_reports_a_corrupt_blob() {
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
        s.root().to_str().unwrap(),
    ]);
    assert!(
        e.contains(&format!("blob {} is corrupt", digests[0])),
        "{e}"
    );
    assert!(!s.root().exists());
}

#[test]
fn cli_destination_must_be_empty() {
    let s = scene();
    std::fs::create_dir_all(s.root()).unwrap();
    std::fs::write(s.root().join("keep"), b"mine").unwrap();
    let (l, _) = image(&s.work, vec![layer(&[file("a", b"x")])]);
    let e = fails([
        "unpack",
        &format!("oci:{}:t", l.display()),
        s.root().to_str().unwrap(),
    ]);
    assert!(e.contains("not empty"), "{e}");
    assert_eq!(std::fs::read(s.root().join("keep")).unwrap(), b"mine");
}

const MEASURE_HELPER: &str = concat!(module_path!(), "::measure_helper");

/// Runs `shipyard unpack` of `layers` and returns (stderr, success, peak
/// resident memory of that process in KiB, from wait4's rusage).
///
/// Linux counts in a child's peak the memory of the process it was
/// forked from (its copied or shared address space before exec), and
/// this test process is large. So shipyard is started from a fresh copy
/// of this binary running only [`measure_helper`], which is small.
fn unpack_measured(s: &Scene, layers: Vec<RawLayer>) -> (String, bool, i64, Vec<Digest>) {
    let (l, digests) = image(&s.work, layers);
    let stderr_path = s.work.join("stderr");
    let spec = [
        stderr_path.display().to_string(),
        "unpack".into(),
        format!("oci:{}:t", l.display()),
        s.root().display().to_string(),
    ]
    .join("\u{1f}");
    let out = rerun(MEASURE_HELPER, &spec).output().unwrap();
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
    let Some(spec) = helper_arg(MEASURE_HELPER) else {
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

#[test]
fn cli_refuses_a_huge_pax_record_in_bounded_memory() {
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
