//! Randomized tests (proptest, bounded case counts so CI stays quick):
//! hostile layers never write outside the root; layers shipyard writes
//! unpack to the tree they came from; manifests round-trip through their
//! text form; the archive readers and the ELF reader never panic on
//! arbitrary bytes.

use crate::common::rawtar::{self, M};
use proptest::prelude::*;
use shipyard_image::layer::extract::{unpack_layers, Extractor};
use shipyard_image::oci::digest::Digest;
use shipyard_image::oci::layout::Layout;
use shipyard_image::oci::media;
use shipyard_image::rootfs::entry::{Entry, Kind, Mtime, RelPath};
use shipyard_image::rootfs::manifest::Manifest;
use shipyard_image::rootfs::walk::{walk, Hashing};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

// ---------------------------------------------------------------------
// Random members: nothing outside the root changes, nothing panics.

/// Stands for the absolute path of the directory outside the root.
const OUT: &str = "@OUT";

fn name() -> impl Strategy<Value = String> {
    let comp = prop::sample::select(vec!["a", "b", "c", "..", ".", "d", ".wh.a", ".wh..wh..opq"]);
    (
        prop::sample::select(vec!["", "", "", "/", "./"]),
        prop::collection::vec(comp, 1..4),
    )
        .prop_map(|(pre, cs)| format!("{pre}{}", cs.join("/")))
}

fn link_target() -> impl Strategy<Value = String> {
    prop_oneof![
        name(),
        prop::sample::select(vec![
            "/",
            "..",
            "../..",
            "../../..",
            "../../outside",
            "../outside/target",
            OUT,
            "@OUT/target",
            "/etc",
            "a/b",
        ])
        .prop_map(String::from),
    ]
}

fn member() -> impl Strategy<Value = M> {
    prop_oneof![
        (name(), prop::collection::vec(any::<u8>(), 0..40)).prop_map(|(n, d)| rawtar::file(&n, &d)),
        name().prop_map(|n| rawtar::dir(&format!("{n}/"))),
        (name(), link_target()).prop_map(|(n, t)| rawtar::symlink(&n, &t)),
        (name(), link_target()).prop_map(|(n, t)| rawtar::hardlink(&n, &t)),
    ]
}

/// Puts `tar` in `layout` as a gzip layer; returns (descriptor, diff_id).
fn store(layout: &Layout, tar: &[u8]) -> (oci_spec::image::Descriptor, String) {
    let blob = rawtar::gzip(tar);
    let (d, size) = layout.put_bytes(&blob).unwrap();
    (
        oci_spec::image::Descriptor::new(
            oci_spec::image::MediaType::ImageLayerGzip,
            size,
            media::to_spec_digest(&d),
        ),
        Digest::of(tar).to_string(),
    )
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    #[test]
    fn random_members_never_write_outside_the_root(
        layers in prop::collection::vec(prop::collection::vec(member(), 1..12), 1..3)
    ) {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        crate::common::write(&outside.join("target"), b"precious", 0o644);
        let root = t.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let layout = Layout::open_or_create(t.path().join("layout")).unwrap();
        let abs = outside.display().to_string();
        let mut ex = Extractor::new(&root).unwrap();
        for members in layers {
            let members: Vec<M> = members
                .into_iter()
                .map(|mut m| {
                    let sub = |b: &[u8]| String::from_utf8_lossy(b).replace(OUT, &abs).into_bytes();
                    m.name = sub(&m.name);
                    m.link = sub(&m.link);
                    m
                })
                .collect();
            let (desc, diff_id) = store(&layout, &rawtar::tar(&members));
            // Refusing a layer is fine; writing outside the root is not.
            if ex.apply_layer(&layout, &desc, &diff_id).is_err() {
                break;
            }
        }
        let _ = ex.finish();
        prop_assert_eq!(names_in(t.path()), ["layout", "outside", "root"]);
        prop_assert_eq!(names_in(&outside), ["target"]);
        let target = outside.join("target");
        prop_assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        // Not even a hard link to it.
        prop_assert_eq!(std::fs::metadata(&target).unwrap().nlink(), 1);
        prop_assert!(std::fs::symlink_metadata(&root).unwrap().is_dir());
    }
}

// ---------------------------------------------------------------------
// Layers shipyard writes from a random tree unpack to that tree.

#[derive(Debug, Clone)]
enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    /// A hard link to the n-th file made so far (modulo their count).
    Hardlink(usize),
}

fn tree_ops() -> impl Strategy<Value = Vec<(String, Node)>> {
    let path = prop::collection::vec(
        prop::sample::select(vec!["a", "b", "c", "lib", "bin"]),
        1..4,
    )
    .prop_map(|cs| cs.join("/"));
    let node = prop_oneof![
        Just(Node::Dir),
        prop::collection::vec(any::<u8>(), 0..20).prop_map(Node::File),
        prop::sample::select(vec![
            "a",
            "../../..",
            "..",
            "/usr/lib",
            "../llvm-14/lib/libclang-cpp.so.14",
            "/",
            "nowhere",
            "b/c",
            ".",
        ])
        .prop_map(|t| Node::Symlink(t.to_string())),
        any::<usize>().prop_map(Node::Hardlink),
    ];
    prop::collection::vec((path, node), 0..16)
}

/// Makes a tree from `ops`, skipping what cannot be made (a parent that
/// is not a real directory, a name already taken).
fn make_tree(root: &Path, ops: &[(String, Node)]) {
    std::fs::create_dir_all(root).unwrap();
    let mut files = Vec::new();
    'ops: for (p, node) in ops {
        let full = root.join(p);
        let mut cur = root.to_path_buf();
        let comps: Vec<&str> = p.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            cur.push(c);
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => continue 'ops,
                Err(_) => std::fs::create_dir(&cur).unwrap(),
            }
        }
        if std::fs::symlink_metadata(&full).is_ok() {
            continue;
        }
        match node {
            Node::Dir => std::fs::create_dir(&full).unwrap(),
            Node::File(d) => {
                std::fs::write(&full, d).unwrap();
                files.push(full);
            }
            Node::Symlink(t) => std::os::unix::fs::symlink(t, &full).unwrap(),
            Node::Hardlink(i) if !files.is_empty() => {
                std::fs::hard_link(&files[i % files.len()], &full).unwrap();
            }
            Node::Hardlink(_) => {}
        }
    }
}

/// A tree's manifest without what a layer does not carry exactly: the
/// root itself and mtimes.
fn comparable(m: &Manifest) -> Vec<String> {
    let mut m = m.clone();
    m.entries.remove(&RelPath::default());
    for e in m.entries.values_mut() {
        e.mtime = Mtime { sec: 0, nsec: None };
    }
    String::from_utf8(m.to_text())
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn layer_of(
    layout: &Layout,
    tree: &Path,
    against: &Manifest,
) -> (oci_spec::image::Descriptor, String) {
    let t = walk(tree, Hashing::None).unwrap();
    let d = shipyard_image::rootfs::diff::diff(&t, against).unwrap();
    let out = shipyard_image::layer::write_layer(
        layout,
        &d.changes,
        tree,
        shipyard_image::layer::compress::Compression::Gzip,
        None,
        &Default::default(),
    )
    .unwrap();
    (out.descriptor, out.diff_id.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn layers_shipyard_writes_unpack_to_the_same_tree(a in tree_ops(), b in tree_ops()) {
        let t = tempfile::tempdir().unwrap();
        let (ta, tb) = (t.path().join("a"), t.path().join("b"));
        make_tree(&ta, &a);
        make_tree(&tb, &b);
        let layout = Layout::open_or_create(t.path().join("layout")).unwrap();
        let ma = walk(&ta, Hashing::All).unwrap().manifest;
        let mb = walk(&tb, Hashing::All).unwrap().manifest;
        // One layer: tree a from scratch.
        let l1 = layer_of(&layout, &ta, &Manifest::default());
        let dest = t.path().join("one");
        let report = unpack_layers(&layout, std::slice::from_ref(&l1), &dest).unwrap();
        let got = walk(&dest, Hashing::All).unwrap().manifest;
        prop_assert_eq!(comparable(&got), comparable(&ma));
        prop_assert_eq!(comparable(&report.manifest), comparable(&ma));
        // Two layers: a, then what turns a into b (whiteouts, opaque
        // directories, types replaced).
        let l2 = layer_of(&layout, &tb, &ma);
        let dest = t.path().join("two");
        let report = unpack_layers(&layout, &[l1, l2], &dest).unwrap();
        let got = walk(&dest, Hashing::All).unwrap().manifest;
        prop_assert_eq!(comparable(&got), comparable(&mb));
        prop_assert_eq!(comparable(&report.manifest), comparable(&mb));
    }
}

// ---------------------------------------------------------------------
// Manifest text round trip.

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn entry() -> impl Strategy<Value = Entry> {
    let comp = prop::collection::vec(
        any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0),
        1..6,
    );
    (
        prop::collection::vec(comp, 1..4),
        prop::sample::select(vec![
            Kind::File,
            Kind::Dir,
            Kind::Symlink,
            Kind::Hardlink,
            Kind::Char,
            Kind::Block,
            Kind::Fifo,
        ]),
        0u32..=0o7777,
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        (any::<i64>(), prop::option::of(1u32..1_000_000_000)),
        prop::option::of(bytes(12)),
        prop::option::of((any::<u32>(), any::<u32>())),
        prop::collection::btree_map(bytes(8), bytes(8), 0..3),
        prop::option::of(any::<[u8; 32]>()),
    )
        .prop_map(
            |(cs, kind, mode, uid, gid, size, (sec, nsec), link, rdev, xattrs, sha)| {
                let mut e = Entry::new(RelPath::new(cs.join(&b'/')), kind);
                e.mode = mode;
                e.uid = uid;
                e.gid = gid;
                e.size = if kind == Kind::File { size } else { 0 };
                e.mtime = Mtime { sec, nsec };
                e.link = link;
                e.rdev = rdev;
                e.xattrs = xattrs;
                e.sha256 = sha;
                e
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn manifests_round_trip_through_text(entries in prop::collection::vec(entry(), 0..8)) {
        let mut m = Manifest::default();
        for e in entries {
            m.insert(e);
        }
        let text = m.to_text();
        let back = Manifest::parse(&text[..], "t").unwrap();
        prop_assert_eq!(&back, &m);
        // One line per entry, whatever bytes the names hold.
        prop_assert_eq!(text.iter().filter(|b| **b == b'\n').count(), m.len() + 1);
    }

    #[test]
    fn manifest_parser_never_panics(text in bytes(400)) {
        let mut t = shipyard_image::rootfs::manifest::HEADER.as_bytes().to_vec();
        t.push(b'\n');
        t.extend(text);
        let _ = Manifest::parse(&t[..], "t");
    }
}

// ---------------------------------------------------------------------
// Archive readers and the ELF reader on arbitrary and mutated bytes.

/// A valid archive of each kind, made once.
fn archives() -> &'static (Vec<u8>, Vec<u8>) {
    static A: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    A.get_or_init(|| {
        let t = tempfile::tempdir().unwrap();
        let (l, _) = rawtar::image(
            t.path(),
            vec![rawtar::layer(&[
                rawtar::dir("d/"),
                rawtar::file("d/f", b"hello"),
            ])],
        );
        let layout = Layout::open(&l).unwrap();
        let desc = layout.resolve(Some("t")).unwrap();
        let oci = t.path().join("a.oci.tar");
        shipyard_image::archive::oci_write::export(&layout, &desc, Some("t"), &oci).unwrap();
        let image = shipyard_image::oci::image::Image::load(&layout, &desc).unwrap();
        let docker = t.path().join("a.docker.tar");
        shipyard_image::archive::docker_write::export(&layout, &image, Some("x/y:t"), &docker)
            .unwrap();
        (std::fs::read(oci).unwrap(), std::fs::read(docker).unwrap())
    })
}

/// `base` with `edits` (position, xor) applied and cut to `keep` of it.
fn mutate(base: &[u8], edits: &[(usize, u8)], keep: f64) -> Vec<u8> {
    let mut b = base.to_vec();
    for (at, x) in edits {
        let n = b.len();
        b[at % n] ^= x;
    }
    let len = ((b.len() as f64) * keep) as usize;
    b.truncate(len.max(1));
    b
}

fn import_both(bytes: &[u8]) {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("in.tar");
    std::fs::write(&f, bytes).unwrap();
    let dest = Layout::open_or_create(t.path().join("dest")).unwrap();
    let _ = shipyard_image::archive::oci_read::import(&f, None, &dest);
    let _ = shipyard_image::archive::docker_read::import(&f, None, &dest);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn archive_readers_never_panic_on_arbitrary_bytes(b in bytes(3000)) {
        import_both(&b);
    }

    #[test]
    fn archive_readers_never_panic_on_mutated_archives(
        edits in prop::collection::vec((any::<usize>(), 1u8..), 1..6),
        keep in prop_oneof![Just(1.0), 0.0f64..1.0],
        docker in any::<bool>(),
    ) {
        let (oci, dock) = archives();
        import_both(&mutate(if docker { dock } else { oci }, &edits, keep));
    }

    #[test]
    fn elf_reader_never_panics(
        body in bytes(2000),
        class in 1u8..=2,
        data in 1u8..=2,
        real in any::<bool>(),
        edits in prop::collection::vec((any::<usize>(), 1u8..), 0..8),
    ) {
        // A plausible ELF header on random bytes, or a real executable
        // with bytes flipped, so the parser goes deep.
        let b = match std::fs::read("/bin/true") {
            Ok(exe) if real => mutate(&exe, &edits, 1.0),
            _ => {
                let mut b = b"\x7fELF".to_vec();
                b.extend([class, data, 1, 0]);
                b.extend(body);
                mutate(&b, &edits[edits.len().min(1)..], 1.0)
            }
        };
        let _ = shipyard::tapeout::elf::needs_of(&b);
    }
}
