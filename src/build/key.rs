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

use crate::oci::digest::Digest;
use crate::rootfs::entry::Kind;
use crate::rootfs::manifest::Manifest;
use crate::rootfs::walk::{hash_file, walk_with, Hashing, WalkOptions};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::io::BufReader;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Bumped whenever what a cached step holds changes shape.
const VERSION: &str = "shipyard step cache v1";

/// The ignore file read at the top of every source directory.
pub const IGNORE_FILE: &str = ".shipyardignore";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("source {path}: {msg}")]
    Source { path: PathBuf, msg: String },
    #[error("{IGNORE_FILE} in {path}: {msg}")]
    Ignore { path: PathBuf, msg: String },
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
        let mut text = String::from(VERSION);
        text.push('\n');
        for (k, v) in &parts {
            text.push_str(k);
            text.push('\t');
            text.push_str(v);
            text.push('\n');
        }
        StepKey {
            key: Digest::of(text.as_bytes()),
            parts,
        }
    }
}

/// Digest of a serializable value's JSON (struct fields in declaration
/// order, maps sorted): for rule definitions.
pub fn digest_json<T: serde::Serialize>(v: &T) -> String {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    Digest::of(&bytes).to_string()
}

/// The content of a source tree as a key sees it: paths, kinds, the
/// executable bits, sizes, content digests and link targets. Owners,
/// mtimes and the other mode bits are left out on purpose: a fresh clone
/// on another CI runner has other owners, new mtimes and that runner's
/// umask, and must still hit the cache.
#[derive(Debug, Clone)]
pub struct SourceContent {
    /// One line per entry, sorted by path.
    pub lines: BTreeMap<String, String>,
    pub digest: Digest,
}

impl SourceContent {
    /// The paths whose lines differ from `old`'s (added, removed, changed).
    pub fn changed_since(&self, old: &SourceContent) -> Vec<String> {
        let mut out: Vec<String> = self
            .lines
            .iter()
            .filter(|(p, l)| old.lines.get(*p) != Some(l))
            .map(|(p, _)| p.clone())
            .collect();
        out.extend(
            old.lines
                .keys()
                .filter(|p| !self.lines.contains_key(*p))
                .cloned(),
        );
        out.sort();
        out
    }

    /// The canonical text (what is stored for a later explanation).
    pub fn to_text(&self) -> String {
        self.lines
            .iter()
            .map(|(p, l)| format!("{l}\t{p}\n"))
            .collect()
    }

    pub fn parse(text: &str) -> SourceContent {
        let lines: BTreeMap<String, String> = text
            .lines()
            .filter_map(|l| l.rsplit_once('\t'))
            .map(|(l, p)| (p.to_string(), l.to_string()))
            .collect();
        let digest = Digest::of(text.as_bytes());
        SourceContent { lines, digest }
    }
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
        let mut lines = BTreeMap::new();
        let exec = if md.mode() & 0o111 != 0 { "x" } else { "-" };
        lines.insert(
            String::new(),
            format!("file {exec} {} {}", md.len(), hex::encode(h)),
        );
        return Ok(finish(lines));
    }
    let ignore = ignore_matcher(root)?;
    let mut tree =
        walk_with(root, &WalkOptions::new(Hashing::None)).map_err(|e| serr(e.to_string()))?;
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
        let _ = crate::cache::write_atomic(p, &tree.manifest.to_text());
    }
    let mut lines = BTreeMap::new();
    for e in tree.manifest.entries.values() {
        if e.path.is_root() {
            continue;
        }
        let mut line = match e.kind {
            Kind::File => {
                let exec = if e.mode & 0o111 != 0 { "x" } else { "-" };
                let h = e.sha256.map(hex::encode).unwrap_or_default();
                format!("file {exec} {} {h}", e.size)
            }
            Kind::Symlink | Kind::Hardlink => format!(
                "{} {}",
                e.kind.as_str(),
                String::from_utf8_lossy(e.link.as_deref().unwrap_or_default())
            ),
            k => k.as_str().to_string(),
        };
        if owners_and_modes {
            line.push_str(&format!(" {:o} {}:{} {:?}", e.mode, e.uid, e.gid, e.rdev));
        }
        lines.insert(e.path.to_string(), line);
    }
    Ok(finish(lines))
}

fn finish(lines: BTreeMap<String, String>) -> SourceContent {
    let mut c = SourceContent {
        lines,
        digest: Digest::of(b""),
    };
    c.digest = Digest::of(c.to_text().as_bytes());
    c
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
    let mut text = String::new();
    for f in ["/var/lib/dpkg/status", "/usr/lib/os-release"] {
        if let Ok(h) = hash_file(Path::new(f)) {
            text.push_str(&format!("{f} {}\n", hex::encode(h)));
        }
    }
    let list = |d: &Path, text: &mut String| -> Vec<PathBuf> {
        let mut subdirs = Vec::new();
        let Ok(rd) = std::fs::read_dir(d) else {
            return subdirs;
        };
        let mut entries: Vec<(String, String)> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                let ft = m.file_type();
                if ft.is_dir() {
                    subdirs.push(e.path());
                }
                let kind = if ft.is_dir() {
                    "d"
                } else if ft.is_symlink() {
                    "l"
                } else {
                    "f"
                };
                Some((
                    e.file_name().to_string_lossy().into_owned(),
                    format!("{kind} {}", m.len()),
                ))
            })
            .collect();
        entries.sort();
        text.push_str(&format!("{}\n", d.display()));
        for (n, k) in entries {
            text.push_str(&format!("  {n} {k}\n"));
        }
        subdirs.sort();
        subdirs
    };
    for d in dirs.iter().filter(|d| !d.starts_with("/etc")) {
        for sub in list(d, &mut text) {
            list(&sub, &mut text);
        }
    }
    Digest::of(text.as_bytes()).to_string()
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
        crate::tapeout::set_mtime(&a.join("README"), 12345);
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
        assert_eq!(SourceContent::parse(&c.to_text()).digest, c.digest);
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
        crate::tapeout::set_mtime(&a.join("f"), 1000);
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
}
