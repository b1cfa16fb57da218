//! Step cache keys: the digest of everything that can change a step's
//! result, kept as named parts so a miss can say which input changed.
//!
//! A build rule's parts are the builder base's identity, the rule's
//! definition (command, environment, user, workdir, network, the mounts),
//! the content of every source it mounts and the key of the rule before
//! it. A tapeout's are its definition and the key of the last rule before
//! it; an image layer's are the keys of its tapeouts, the runtime base and
//! the output format. Keys never depend on results, so the whole plan's
//! keys are known before anything runs, and a rebuild with nothing changed
//! finds every image in the cache without touching the builder.
//!
//! Keys must be injective: two inputs that differ, in any byte, must not
//! share a key, or a build restores a stale result. So nothing enters a key
//! as text to be split again later: every path, name and value is a field
//! of a [`KeyHasher`], its length then its raw bytes (file names as the
//! kernel gives them, invalid UTF-8, tabs and newlines included). Fields
//! have fixed lengths and a fixed order, so keys are the same on every
//! machine.

use rayon::prelude::*;
use sha2::{Digest as _, Sha256};
use shipyard_image::oci::digest::Digest;
use shipyard_image::rootfs::entry::Kind;
use shipyard_image::rootfs::manifest::{escape_into, unescape, Manifest};
use shipyard_image::rootfs::walk::{hash_file, walk_with, Hashing, WalkOptions};
use std::collections::BTreeMap;
use std::io::BufReader;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Bumped whenever what a cached step holds, how keys are encoded, or
/// how a step makes its result changes, so no entry made the old way is
/// reused (v2: keys take raw bytes, length-prefixed; v3: tapeouts resolve
/// paths inside the builder and place them through the runtime base's
/// symlinks; v4: in a rootless builder with a subordinate id range, the
/// base's files have the image's owners).
const VERSION: &str = "shipyard step cache v4";
/// The first field of a source content digest.
const CONTENT_VERSION: &str = "shipyard source content v2";

/// The ignore file read at the top of every source directory.
pub const IGNORE_FILE: &str = ".shipyardignore";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("source {path}: {msg}")]
    Source { path: PathBuf, msg: String },
    #[error("{IGNORE_FILE} in {path}: {msg}")]
    Ignore { path: PathBuf, msg: String },
    #[error("cannot make a cache key of a step's definition: {0}")]
    Definition(String),
}

/// Hashes a sequence of fields so that different sequences never collide:
/// each field enters as its length (8 bytes, little-endian) and its bytes.
pub struct KeyHasher(Sha256);

impl KeyHasher {
    /// A hasher whose first field names what is hashed (and its version).
    pub fn new(domain: &str) -> KeyHasher {
        let mut h = KeyHasher(Sha256::new());
        h.field(domain.as_bytes());
        h
    }

    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    pub fn finish(self) -> Digest {
        Digest::from_bytes(self.0.finalize().as_slice())
    }
}

/// A cache key and the parts it was made of (part name → digest or value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepKey {
    pub key: Digest,
    pub parts: BTreeMap<String, String>,
}

impl StepKey {
    /// Hashes `parts` (canonically: sorted names) into a key.
    pub fn new(parts: BTreeMap<String, String>) -> StepKey {
        let mut h = KeyHasher::new(VERSION);
        for (k, v) in &parts {
            h.field(k.as_bytes()).field(v.as_bytes());
        }
        StepKey {
            key: h.finish(),
            parts,
        }
    }
}

/// Digest of a serializable value's JSON (struct fields in declaration
/// order, maps sorted, strings escaped, so distinct values give distinct
/// JSON): for rule definitions. A value JSON cannot hold (a path that is
/// not UTF-8) is an error, never a shared fallback key.
pub fn digest_json<T: serde::Serialize>(v: &T) -> Result<String, KeyError> {
    let bytes = serde_json::to_vec(v).map_err(|e| KeyError::Definition(e.to_string()))?;
    Ok(Digest::of(&bytes).to_string())
}

/// The content of a source tree as a key sees it: paths, kinds, the
/// executable bits, sizes, content digests and link targets. Owners,
/// mtimes and the other mode bits are left out on purpose: a fresh clone
/// on another CI runner has other owners, new mtimes and that runner's
/// umask, and must still hit the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceContent {
    /// What the key sees of each entry (see [`entry_fields`]), by path as
    /// raw bytes relative to the tree (empty for a single-file source).
    pub entries: BTreeMap<Vec<u8>, Vec<Vec<u8>>>,
    /// Whether the fields hold every mode bit and the owners too.
    pub owners_and_modes: bool,
    pub digest: Digest,
}

impl SourceContent {
    fn new(entries: BTreeMap<Vec<u8>, Vec<Vec<u8>>>, owners_and_modes: bool) -> SourceContent {
        let mut h = KeyHasher::new(CONTENT_VERSION);
        h.field(&[u8::from(owners_and_modes)]);
        h.field(&(entries.len() as u64).to_le_bytes());
        for (path, fields) in &entries {
            h.field(path);
            h.field(&(fields.len() as u64).to_le_bytes());
            for f in fields {
                h.field(f);
            }
        }
        SourceContent {
            entries,
            owners_and_modes,
            digest: h.finish(),
        }
    }

    /// The paths whose entries differ from `old`'s (added, removed,
    /// changed), escaped for display like manifests show them.
    pub fn changed_since(&self, old: &SourceContent) -> Vec<String> {
        let mut out: Vec<&Vec<u8>> = self
            .entries
            .iter()
            .filter(|(p, f)| old.entries.get(*p) != Some(f))
            .map(|(p, _)| p)
            .collect();
        out.extend(
            old.entries
                .keys()
                .filter(|p| !self.entries.contains_key(*p)),
        );
        let mut out: Vec<String> = out.into_iter().map(|p| display_path(p)).collect();
        out.sort();
        out
    }

    /// The text kept for a later explanation: a header, then one line per
    /// entry, path and fields escaped and separated by spaces.
    pub fn to_text(&self) -> String {
        let mut out = Vec::new();
        out.extend_from_slice(CONTENT_VERSION.as_bytes());
        out.extend_from_slice(if self.owners_and_modes {
            b" full\n"
        } else {
            b" source\n"
        });
        for (p, fields) in &self.entries {
            out.push(b'/');
            escape_into(p, &mut out);
            for f in fields {
                out.push(b' ');
                // An empty field must still take its place.
                out.push(b'=');
                escape_into(f, &mut out);
            }
            out.push(b'\n');
        }
        // Escaped text is ASCII.
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Reads [`SourceContent::to_text`]'s text back (`None` if it is not).
    pub fn parse(text: &str) -> Option<SourceContent> {
        let mut lines = text.lines();
        let head = lines.next()?;
        let owners_and_modes = match head.strip_prefix(CONTENT_VERSION)? {
            " full" => true,
            " source" => false,
            _ => return None,
        };
        let mut entries = BTreeMap::new();
        for line in lines {
            let mut words = line.split(' ');
            let path = unescape(words.next()?.strip_prefix('/')?.as_bytes()).ok()?;
            let fields = words
                .map(|w| unescape(w.strip_prefix('=')?.as_bytes()).ok())
                .collect::<Option<Vec<_>>>()?;
            entries.insert(path, fields);
        }
        Some(SourceContent::new(entries, owners_and_modes))
    }
}

/// `/PATH` with the bytes a terminal or a log would mangle escaped.
fn display_path(p: &[u8]) -> String {
    let mut out = vec![b'/'];
    escape_into(p, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// What a key sees of one entry, as a fixed list of fields: kind, exec bit
/// (sources) or full mode, size, content digest, link target, and with
/// `owners_and_modes` the owners and device numbers.
fn entry_fields(e: &shipyard_image::rootfs::entry::Entry, owners_and_modes: bool) -> Vec<Vec<u8>> {
    let file = e.kind == Kind::File;
    let mode = if owners_and_modes {
        format!("{:o}", e.mode)
    } else if file {
        (if e.mode & 0o111 != 0 { "x" } else { "-" }).to_string()
    } else {
        String::new()
    };
    let mut f = vec![
        e.kind.as_str().as_bytes().to_vec(),
        mode.into_bytes(),
        if file {
            e.size.to_string().into_bytes()
        } else {
            Vec::new()
        },
        e.sha256.map(hex::encode).unwrap_or_default().into_bytes(),
        e.link.clone().unwrap_or_default(),
    ];
    if owners_and_modes {
        f.push(format!("{}:{}", e.uid, e.gid).into_bytes());
        f.push(
            e.rdev
                .map(|(ma, mi)| format!("{ma},{mi}"))
                .unwrap_or_default()
                .into_bytes(),
        );
    }
    f
}

/// Reads a source tree's content for its key. Files whose size and mtime
/// match the previous walk of the same tree (`stat_cache`, updated here)
/// are not re-hashed, so an unchanged source costs a walk, not a read.
pub fn source_content(root: &Path, stat_cache: Option<&Path>) -> Result<SourceContent, KeyError> {
    content(root, stat_cache, false)
}

/// [`source_content`], or with `owners_and_modes` every mode bit and the
/// owners too (for builder bases, where they are part of the result).
fn content(
    root: &Path,
    stat_cache: Option<&Path>,
    owners_and_modes: bool,
) -> Result<SourceContent, KeyError> {
    let serr = |msg: String| KeyError::Source {
        path: root.to_path_buf(),
        msg,
    };
    let md = std::fs::metadata(root).map_err(|e| serr(e.to_string()))?;
    if !md.is_dir() {
        let h = hash_file(root).map_err(|e| serr(e.to_string()))?;
        let mut e = shipyard_image::rootfs::entry::Entry::new(Default::default(), Kind::File);
        e.mode = md.mode() & 0o7777;
        e.size = md.len();
        e.uid = md.uid().into();
        e.gid = md.gid().into();
        e.sha256 = Some(h);
        let entries = BTreeMap::from([(Vec::new(), entry_fields(&e, owners_and_modes))]);
        return Ok(SourceContent::new(entries, owners_and_modes));
    }
    let ignore = ignore_matcher(root)?;
    let mut tree = walk_with(root, &WalkOptions::new(Hashing::None))
        .map_err(|e| serr(shipyard_image::error::chain_text(&e)))?;
    tree.manifest.entries.retain(|p, e| {
        p.is_root()
            || !ignore
                .matched_path_or_any_parents(p.to_path(), e.kind == Kind::Dir)
                .is_ignore()
    });
    // The stat cache, and when it was written.
    let old: Option<(Manifest, i64)> = stat_cache.and_then(|p| {
        let f = std::fs::File::open(p).ok()?;
        let written = f.metadata().ok()?.mtime();
        let m = Manifest::parse(BufReader::new(f), &p.display().to_string()).ok()?;
        Some((m, written))
    });
    // Reuse the digests of files that did not move since the last walk.
    // Not of files modified within two seconds before that walk ended: the
    // filesystem's clock is coarse, so a second write in the same tick
    // could leave size and mtime as they were ("racy git").
    let mut todo = Vec::new();
    for e in tree.manifest.entries.values_mut() {
        if e.kind != Kind::File {
            continue;
        }
        let known = old
            .as_ref()
            .and_then(|(m, written)| m.get(&e.path).filter(|o| o.mtime.sec + 2 <= *written));
        let known = known.filter(|o| {
            o.kind == Kind::File
                && o.size == e.size
                && o.mtime.sec == e.mtime.sec
                && o.mtime.nsec.is_some()
                && o.mtime.nsec == e.mtime.nsec
        });
        match known.and_then(|o| o.sha256) {
            Some(h) => e.sha256 = Some(h),
            None => todo.push(e.path.clone()),
        }
    }
    let hashed: Vec<_> = todo
        .par_iter()
        .map(|p| {
            hash_file(&root.join(p.to_path()))
                .map(|h| (p.clone(), h))
                .map_err(|e| serr(format!("{p}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    for (p, h) in hashed {
        if let Some(e) = tree.manifest.entries.get_mut(&p) {
            e.sha256 = Some(h);
        }
    }
    if let Some(p) = stat_cache {
        // A hint only: a failure to save it costs a re-hash next time.
        let _ = shipyard_image::cache::write_private(p, &tree.manifest.to_text());
    }
    let entries = tree
        .manifest
        .entries
        .values()
        .filter(|e| !e.path.is_root())
        .map(|e| {
            (
                e.path.as_bytes().to_vec(),
                entry_fields(e, owners_and_modes),
            )
        })
        .collect();
    Ok(SourceContent::new(entries, owners_and_modes))
}

/// The `.shipyardignore` of a source directory (gitignore syntax), or a
/// matcher that ignores nothing.
fn ignore_matcher(root: &Path) -> Result<ignore::gitignore::Gitignore, KeyError> {
    let file = root.join(IGNORE_FILE);
    let mut b = ignore::gitignore::GitignoreBuilder::new(root);
    if file.is_file() {
        if let Some(e) = b.add(&file) {
            return Err(KeyError::Ignore {
                path: root.to_path_buf(),
                msg: e.to_string(),
            });
        }
    }
    b.build().map_err(|e| KeyError::Ignore {
        path: root.to_path_buf(),
        msg: e.to_string(),
    })
}

/// The identity of the `host` builder base. The host cannot be hashed
/// whole in a build's time budget, so this is a heuristic that still holds
/// across a fleet of identical runners: the package database (dpkg's
/// status file) plus the name, kind and size of every entry directly in
/// the host's toolchain directories and their subdirectories (/usr/bin,
/// /usr/local/lib, …), which change when a package or a hand-installed
/// tool adds, removes or replaces a file. /etc is left out: it holds
/// per-machine files (hostname, resolv.conf). `--no-cache` is the way out
/// when it guesses wrong.
pub fn host_identity(dirs: &[PathBuf]) -> String {
    let mut h = KeyHasher::new("shipyard host identity v2");
    for f in ["/var/lib/dpkg/status", "/usr/lib/os-release"] {
        let digest = hash_file(Path::new(f)).map(hex::encode).unwrap_or_default();
        h.field(f.as_bytes()).field(digest.as_bytes());
    }
    let list = |d: &Path, h: &mut KeyHasher| -> Vec<PathBuf> {
        let mut subdirs = Vec::new();
        let mut entries: Vec<(Vec<u8>, &'static str, u64)> = std::fs::read_dir(d)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let m = e.metadata().ok()?;
                        let ft = m.file_type();
                        let kind = if ft.is_dir() {
                            subdirs.push(e.path());
                            "d"
                        } else if ft.is_symlink() {
                            "l"
                        } else {
                            "f"
                        };
                        Some((e.file_name().as_bytes().to_vec(), kind, m.len()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        entries.sort();
        h.field(d.as_os_str().as_bytes());
        h.field(&(entries.len() as u64).to_le_bytes());
        for (name, kind, len) in entries {
            h.field(&name)
                .field(kind.as_bytes())
                .field(&len.to_le_bytes());
        }
        subdirs.sort();
        subdirs
    };
    for d in dirs.iter().filter(|d| !d.starts_with("/etc")) {
        for sub in list(d, &mut h) {
            list(&sub, &mut h);
        }
    }
    h.finish().to_string()
}

/// The identity of a `rootfs:DIR` builder base: every entry's path, kind,
/// mode, owner (as a walk reports it: a rootless caller's files as root),
/// link target and content digest; no mtimes, so the same tree made on
/// another runner has the same identity. Digests of files whose size and
/// mtime did not move come from `stat_cache`.
pub fn tree_identity(dir: &Path, stat_cache: Option<&Path>) -> Result<String, KeyError> {
    let c = content(dir, stat_cache, true)?;
    Ok(c.digest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, s: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    }

    #[test]
    fn content_ignores_mtimes_owners_and_umask_but_not_bytes_or_exec_bits() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        write(&a.join("src/main.c"), "int main;");
        write(&a.join("README"), "hi");
        let first = source_content(&a, None).unwrap();
        // Same bytes, other mtime and group/other bits: same key.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(a.join("README"), std::fs::Permissions::from_mode(0o600)).unwrap();
        shipyard_image::fsutil::set_mtime(&a.join("README"), 12345);
        assert_eq!(source_content(&a, None).unwrap().digest, first.digest);
        // The exec bit counts.
        std::fs::set_permissions(a.join("README"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let x = source_content(&a, None).unwrap();
        assert_ne!(x.digest, first.digest);
        assert_eq!(x.changed_since(&first), ["/README"]);
        // Content counts, and the changed path is named.
        std::fs::set_permissions(a.join("README"), std::fs::Permissions::from_mode(0o644)).unwrap();
        write(&a.join("src/main.c"), "int main();");
        let c = source_content(&a, None).unwrap();
        assert_eq!(c.changed_since(&first), ["/src/main.c"]);
        // Round trip through the stored text.
        assert_eq!(SourceContent::parse(&c.to_text()), Some(c));
    }

    #[test]
    fn ignored_paths_do_not_change_the_key() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path();
        write(&a.join(IGNORE_FILE), "target/\n*.log\n");
        write(&a.join("main.c"), "x");
        let first = source_content(a, None).unwrap();
        write(&a.join("target/debug/out"), "binary");
        write(&a.join("build.log"), "noise");
        assert_eq!(source_content(a, None).unwrap().digest, first.digest);
        write(&a.join("main.c"), "y");
        assert_ne!(source_content(a, None).unwrap().digest, first.digest);
    }

    #[test]
    fn the_stat_cache_is_used_only_while_size_and_mtime_match() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let stat = t.path().join("stat");
        write(&a.join("f"), "one");
        shipyard_image::fsutil::set_mtime(&a.join("f"), 1000);
        let first = source_content(&a, Some(&stat)).unwrap();
        assert!(stat.is_file());
        // Same size, new content, new mtime: re-hashed, so seen.
        write(&a.join("f"), "two");
        let second = source_content(&a, Some(&stat)).unwrap();
        assert_ne!(first.digest, second.digest);
        assert_eq!(
            source_content(&a, Some(&stat)).unwrap().digest,
            second.digest
        );
    }

    #[test]
    fn a_file_rewritten_in_the_same_clock_tick_is_still_seen() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let stat = t.path().join("stat");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let stamp = |p: &Path| {
            let ts = nix::sys::time::TimeSpec::new(now, 123_456_789);
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                p,
                &ts,
                &ts,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .unwrap();
        };
        write(&a.join("f"), "one");
        stamp(&a.join("f"));
        let first = source_content(&a, Some(&stat)).unwrap();
        // Same size, same mtime to the nanosecond (as a coarse clock
        // would leave a second write in the same tick).
        write(&a.join("f"), "two");
        stamp(&a.join("f"));
        assert_ne!(
            source_content(&a, Some(&stat)).unwrap().digest,
            first.digest
        );
    }

    #[test]
    fn keys_follow_their_parts() {
        let mut p = BTreeMap::new();
        p.insert("a".to_string(), "1".to_string());
        let k1 = StepKey::new(p.clone());
        assert_eq!(k1, StepKey::new(p.clone()));
        p.insert("a".to_string(), "2".to_string());
        assert_ne!(k1.key, StepKey::new(p).key);
    }

    #[test]
    fn parts_cannot_be_forged_by_separators_in_names_or_values() {
        // Under a text encoding ("name\tvalue\n"), these two collide.
        let a = StepKey::new(BTreeMap::from([("a".to_string(), "1\nb\t2".to_string())]));
        let b = StepKey::new(BTreeMap::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ]));
        assert_ne!(a.key, b.key);
    }

    #[test]
    fn names_that_differ_only_in_bytes_that_are_not_utf8_give_different_keys() {
        use std::os::unix::ffi::OsStrExt;
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        write(&a.join(std::ffi::OsStr::from_bytes(b"a\xfe")), "same");
        write(&b.join(std::ffi::OsStr::from_bytes(b"a\xff")), "same");
        let (ca, cb) = (
            source_content(&a, None).unwrap(),
            source_content(&b, None).unwrap(),
        );
        assert_ne!(ca.digest, cb.digest);
        assert_eq!(cb.changed_since(&ca), ["/a\\xfe", "/a\\xff"]);
        // The stat caches of two such trees are two files too.
        let root = Path::new("/cache");
        assert_ne!(
            crate::build::stepcache::stat_cache_path(
                root,
                &t.path().join(std::ffi::OsStr::from_bytes(b"s\xfe"))
            ),
            crate::build::stepcache::stat_cache_path(
                root,
                &t.path().join(std::ffi::OsStr::from_bytes(b"s\xff"))
            )
        );
        // Symlink targets too.
        let (c, d) = (t.path().join("c"), t.path().join("d"));
        std::fs::create_dir_all(&c).unwrap();
        std::fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(b"t\xfe"), c.join("l")).unwrap();
        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(b"t\xff"), d.join("l")).unwrap();
        assert_ne!(
            source_content(&c, None).unwrap().digest,
            source_content(&d, None).unwrap().digest
        );
    }

    mod trees {
        //! Random small trees: distinct trees (as a key sees them) give
        //! distinct keys, equal trees equal keys.
        use super::super::*;
        use proptest::prelude::*;
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;

        #[derive(Debug, Clone, PartialEq, Eq)]
        enum Node {
            Dir,
            File { content: Vec<u8>, exec: bool },
            Symlink(Vec<u8>),
        }

        /// A tree by path (raw bytes, `/`-separated), parents included.
        type Tree = BTreeMap<Vec<u8>, Node>;

        /// Any byte a name may hold, the troublesome ones often.
        fn name_byte() -> impl Strategy<Value = u8> {
            prop_oneof![
                Just(b'\n'),
                Just(b'\t'),
                Just(b' '),
                Just(b'\\'),
                Just(0xfe),
                Just(0xff),
                Just(0x80),
                b'a'..=b'c',
                any::<u8>().prop_filter("not / or NUL", |b| *b != b'/' && *b != 0),
            ]
        }

        fn name() -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec(name_byte(), 1..5)
                .prop_filter("not . or ..", |n| n != b"." && n != b"..")
        }

        fn leaf() -> impl Strategy<Value = Node> {
            prop_oneof![
                (prop::collection::vec(b'x'..=b'z', 0..4), any::<bool>())
                    .prop_map(|(content, exec)| Node::File { content, exec }),
                prop::collection::vec(any::<u8>().prop_filter("not NUL", |b| *b != 0), 1..5)
                    .prop_map(Node::Symlink),
            ]
        }

        fn tree() -> impl Strategy<Value = Tree> {
            let child = prop::collection::btree_map(name(), leaf(), 0..3);
            let top = prop_oneof![
                leaf().prop_map(|l| (l, BTreeMap::new())),
                child.prop_map(|c| (Node::Dir, c)),
            ];
            prop::collection::btree_map(name(), top, 0..5).prop_map(|m| {
                let mut t = Tree::new();
                for (n, (node, children)) in m {
                    for (c, l) in children {
                        let mut p = n.clone();
                        p.push(b'/');
                        p.extend_from_slice(&c);
                        t.insert(p, l);
                    }
                    t.insert(n, node);
                }
                t
            })
        }

        /// One small change (or none): a byte of a name, a file's bytes or
        /// exec bit, a link target, an entry removed.
        fn mutate(t: &Tree, what: u8, pick: usize, byte: u8, bytes: &[u8]) -> Tree {
            let mut out = t.clone();
            let keys: Vec<Vec<u8>> = t.keys().cloned().collect();
            if keys.is_empty() {
                return out;
            }
            let k = keys[pick % keys.len()].clone();
            match (what % 5, t[&k].clone()) {
                (0, _) => {
                    // Rename: one byte of the last component.
                    let start = k.iter().rposition(|b| *b == b'/').map_or(0, |i| i + 1);
                    let mut nk = k.clone();
                    let i = start + pick % (k.len() - start);
                    nk[i] = byte;
                    let last = &nk[start..];
                    if last == b"." || last == b".." || out.contains_key(&nk) {
                        return out;
                    }
                    let moved: Vec<Vec<u8>> = keys
                        .iter()
                        .filter(|p| *p == &k || p.starts_with(&[k.as_slice(), b"/"].concat()))
                        .cloned()
                        .collect();
                    for p in moved {
                        let node = out.remove(&p).unwrap();
                        let mut np = nk.clone();
                        np.extend_from_slice(&p[k.len()..]);
                        out.insert(np, node);
                    }
                }
                (1, Node::File { exec, .. }) => {
                    out.insert(
                        k,
                        Node::File {
                            content: bytes.to_vec(),
                            exec,
                        },
                    );
                }
                (2, Node::File { content, exec }) => {
                    out.insert(
                        k,
                        Node::File {
                            content,
                            exec: !exec,
                        },
                    );
                }
                (3, Node::Symlink(_)) if !bytes.is_empty() && !bytes.contains(&0) => {
                    out.insert(k, Node::Symlink(bytes.to_vec()));
                }
                (4, _)
                    if !keys
                        .iter()
                        .any(|p| p.starts_with(&[k.as_slice(), b"/"].concat())) =>
                {
                    out.remove(&k);
                }
                _ => {}
            }
            out
        }

        /// Writes `t` under `root`, in path order or the reverse.
        fn materialize(t: &Tree, root: &Path, reverse: bool) {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir_all(root).unwrap();
            let path = |p: &[u8]| root.join(OsStr::from_bytes(p));
            for (p, n) in t {
                if *n == Node::Dir {
                    std::fs::create_dir_all(path(p)).unwrap();
                }
            }
            let mut leaves: Vec<_> = t.iter().filter(|(_, n)| **n != Node::Dir).collect();
            if reverse {
                leaves.reverse();
            }
            for (p, n) in leaves {
                match n {
                    Node::File { content, exec } => {
                        std::fs::write(path(p), content).unwrap();
                        let mode = if *exec { 0o755 } else { 0o644 };
                        std::fs::set_permissions(path(p), std::fs::Permissions::from_mode(mode))
                            .unwrap();
                    }
                    Node::Symlink(target) => {
                        std::os::unix::fs::symlink(OsStr::from_bytes(target), path(p)).unwrap()
                    }
                    Node::Dir => {}
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            #[test]
            fn distinct_trees_get_distinct_keys(
                a in tree(),
                other in tree(),
                (what, pick, byte) in (any::<u8>(), any::<usize>(), name_byte()),
                bytes in prop::collection::vec(any::<u8>(), 0..4),
                independent in prop::bool::weighted(0.2),
            ) {
                let b = if independent { other } else { mutate(&a, what, pick, byte, &bytes) };
                let t = tempfile::tempdir().unwrap();
                materialize(&a, &t.path().join("a"), false);
                materialize(&a, &t.path().join("a2"), true);
                materialize(&b, &t.path().join("b"), false);
                let ka = source_content(&t.path().join("a"), None).unwrap();
                let ka2 = source_content(&t.path().join("a2"), None).unwrap();
                let kb = source_content(&t.path().join("b"), None).unwrap();
                prop_assert_eq!(&ka.digest, &ka2.digest, "the same tree, written in another order");
                prop_assert_eq!(a == b, ka.digest == kb.digest, "trees {:?} and {:?}", a, b);
                // What is kept for explanations reads back as it was.
                prop_assert_eq!(SourceContent::parse(&kb.to_text()), Some(kb.clone()));
                // And as the part of a step key.
                let key = |c: &SourceContent| {
                    StepKey::new(BTreeMap::from([("source:/src".to_string(), c.digest.to_string())])).key
                };
                prop_assert_eq!(a == b, key(&ka) == key(&kb));
            }
        }
    }
}
