//! Software bill of materials: which of the builder's packages the files
//! an image took come from, written as SPDX 2.3 JSON.
//!
//! Ownership is read from the builder's own package database (dpkg, apk
//! or rpm), never guessed from file names: a path belongs to a package
//! when the package's file list names it. Both sides are compared with
//! their directories resolved inside the builder's root (usrmerge: dpkg
//! says `/lib/x86_64-linux-gnu/libc.so.6`, the tapeout took
//! `/usr/lib/x86_64-linux-gnu/libc.so.6`; the builder's `/lib` symlink
//! makes them one file). Files no package names are kept and said to be
//! in no package, so the document never hides what the image holds.
//!
//! The readers and the writer are pure over a [`Tree`]; the build hands in
//! its view of the builder (see [`attribute`]) while the builder still
//! exists, and the result is cached with the tapeout, since a cached
//! tapeout's builder may never be rebuilt.

pub mod apk;
pub mod build;
pub mod dpkg;
pub mod rpm;
pub mod spdx;
pub mod sqlite;

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    /// A database file exists but cannot be understood: an SBOM that
    /// silently left its packages out would be wrong, so this stops.
    #[error("the builder's package database {path}: {msg}")]
    Database { path: String, msg: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A builder's filesystem as the readers see it: paths are absolute
/// builder paths, and every symlink is followed inside the builder's root.
pub trait Tree {
    /// The bytes of a regular file, or `None` when it does not exist.
    fn read(&self, p: &Path) -> Option<Vec<u8>>;
    /// The names in a directory, sorted (empty when it does not exist).
    fn list(&self, dir: &Path) -> Vec<OsString>;
    /// A directory with every symlink on its way resolved, or `None`.
    fn canonical_dir(&self, dir: &Path) -> Option<PathBuf>;
}

impl Tree for crate::tapeout::view::BuilderView {
    fn read(&self, p: &Path) -> Option<Vec<u8>> {
        use std::io::Read;
        let r = self.resolve(p, true)?;
        let loc = self.locate(&r.path)?;
        let mut f = self.open_file(&loc).ok()?;
        let mut out = Vec::new();
        f.read_to_end(&mut out).ok()?;
        Some(out)
    }

    fn list(&self, dir: &Path) -> Vec<OsString> {
        match self.resolve(dir, true) {
            Some(r) => self.read_dir(&r.path),
            None => Vec::new(),
        }
    }

    fn canonical_dir(&self, dir: &Path) -> Option<PathBuf> {
        self.resolve(dir, true).map(|r| r.path)
    }
}

/// The package manager a package comes from (the purl type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Manager {
    Deb,
    Apk,
    Rpm,
}

impl Manager {
    pub fn as_str(self) -> &'static str {
        match self {
            Manager::Deb => "deb",
            Manager::Apk => "apk",
            Manager::Rpm => "rpm",
        }
    }
}

/// One installed package, as its database describes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Package {
    pub manager: Manager,
    /// The distribution (`ID` of os-release): the purl namespace.
    pub distro: String,
    pub name: String,
    /// The full version as the manager spells it (`2.36-9+deb12u7`,
    /// `1:2.3-4` with an epoch, `3.1-r0`, `2.38-1.fc40`).
    pub version: String,
    pub arch: Option<String>,
    /// The license as the database states it (apk and rpm have one; dpkg
    /// does not).
    pub license: Option<String>,
    /// Who ships it (dpkg's Maintainer, apk's maintainer, rpm's Vendor).
    pub supplier: Option<String>,
}

impl Package {
    /// The package URL (purl), e.g.
    /// `pkg:deb/debian/libc6@2.36-9+deb12u7?arch=amd64`.
    ///
    /// An rpm epoch is a qualifier (`…@2.1.7-2.fc40?arch=x86_64&epoch=1`),
    /// as the purl spec has it for rpm; dpkg's stays in the version.
    pub fn purl(&self) -> String {
        let (epoch, version) = match (self.manager, self.version.split_once(':')) {
            (Manager::Rpm, Some((e, v))) if e.bytes().all(|b| b.is_ascii_digit()) => (Some(e), v),
            _ => (None, self.version.as_str()),
        };
        let mut s = format!(
            "pkg:{}/{}/{}@{}",
            self.manager.as_str(),
            purl_escape(&self.distro.to_ascii_lowercase()),
            purl_escape(&self.name),
            purl_escape(version)
        );
        let mut qualifiers = Vec::new();
        if let Some(a) = &self.arch {
            qualifiers.push(format!("arch={}", purl_escape(a)));
        }
        if let Some(e) = epoch {
            qualifiers.push(format!("epoch={e}"));
        }
        if !qualifiers.is_empty() {
            s.push('?');
            s.push_str(&qualifiers.join("&"));
        }
        s
    }
}

/// Percent-encodes what a purl component cannot hold as is. `+`, `:` and
/// `~` are common in versions and legal there, so they stay readable.
fn purl_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~+:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A package database: its packages and the paths each one lists, as
/// the database spells them (not yet resolved).
#[derive(Debug, Default)]
pub struct Db {
    /// Which database this is (`dpkg`, `apk`, `rpm`), for the document.
    pub kind: &'static str,
    pub packages: Vec<Package>,
    /// Listed path → index into `packages`.
    pub files: Vec<(PathBuf, usize)>,
}

/// The distribution id of the builder (os-release `ID`), if it says.
pub fn distro_id(tree: &dyn Tree) -> Option<String> {
    let bytes = tree
        .read(Path::new("/etc/os-release"))
        .or_else(|| tree.read(Path::new("/usr/lib/os-release")))?;
    let text = String::from_utf8_lossy(&bytes);
    text.lines().find_map(|l| {
        let v = l.strip_prefix("ID=")?;
        let v = v.trim().trim_matches('"').trim_matches('\'');
        (!v.is_empty()).then(|| v.to_string())
    })
}

/// Reads the builder's package database: dpkg, apk or rpm, the first one
/// present. `None` when the builder has none (a tree without a package
/// manager): every file is then in no package.
pub fn read_db(tree: &dyn Tree) -> Result<Option<Db>, SbomError> {
    if let Some(db) = dpkg::read(tree)? {
        return Ok(Some(db));
    }
    if let Some(db) = apk::read(tree)? {
        return Ok(Some(db));
    }
    rpm::read(tree)
}

/// What one image path is, for the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakenFile {
    /// The package that owns it (index into [`Attribution::packages`]).
    pub package: Option<usize>,
    /// Regular files only: their SHA-1 and SHA-256 (SPDX wants SHA-1).
    pub sha1: Option<String>,
    pub sha256: Option<String>,
}

/// The packages the paths of one tapeout come from: what the SBOM of an
/// image is made of. Cached with the tapeout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    /// The database read (`dpkg`, `apk`, `rpm`), `None` without one.
    pub database: Option<String>,
    pub packages: Vec<Package>,
    /// Image path → what it is. Directories are left out: a directory
    /// belongs to many packages and says nothing about what was taken.
    pub files: BTreeMap<String, TakenFile>,
}

/// One path a tapeout took.
pub struct Taken {
    /// Where the image has it.
    pub image: PathBuf,
    /// Where the builder had it (differs under `remap`).
    pub builder: PathBuf,
    /// The staged copy on the host (checksums are read from it), `None`
    /// for a symlink.
    pub staged: Option<PathBuf>,
}

/// Resolves a listed or taken path: its directory through the builder's
/// symlinks (memoized: a database names the same directories again and
/// again), its last component kept.
struct Canon<'t> {
    tree: &'t dyn Tree,
    dirs: HashMap<PathBuf, Option<PathBuf>>,
}

impl Canon<'_> {
    fn path(&mut self, p: &Path) -> PathBuf {
        let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
            return p.to_path_buf();
        };
        let tree = self.tree;
        let d = self
            .dirs
            .entry(dir.to_path_buf())
            .or_insert_with(|| tree.canonical_dir(dir))
            .clone()
            .unwrap_or_else(|| dir.to_path_buf());
        d.join(name)
    }
}

/// Which package owns each path a tapeout took, with checksums of the
/// regular files among them.
pub fn attribute(tree: &dyn Tree, taken: &[Taken]) -> Result<Attribution, SbomError> {
    let db = read_db(tree)?;
    let mut canon = Canon {
        tree,
        dirs: HashMap::new(),
    };
    let mut owner: HashMap<PathBuf, usize> = HashMap::new();
    if let Some(db) = &db {
        // Directories are listed by every package with files in them:
        // they say nothing about who made a path, and a usrmerge symlink
        // such as `/lib` must not be given to whichever package listed
        // the directory `/lib` first. A listed path with listed paths
        // under it is a directory.
        let dirs: std::collections::HashSet<&Path> = db
            .files
            .iter()
            .flat_map(|(p, _)| p.ancestors().skip(1))
            .collect();
        for (p, i) in &db.files {
            if !dirs.contains(p.as_path()) {
                owner.entry(canon.path(p)).or_insert(*i);
            }
        }
    }
    // Packages in the order of the document (sorted), renumbered.
    let mut used: BTreeMap<&Package, Vec<String>> = BTreeMap::new();
    let mut files: BTreeMap<String, TakenFile> = BTreeMap::new();
    let mut owned: Vec<(String, Option<usize>)> = Vec::new();
    for t in taken {
        let pkg = owner.get(&canon.path(&t.builder)).copied();
        let (sha1, sha256) = match &t.staged {
            Some(s) => {
                let (a, b) = checksums(s)?;
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        let image = t.image.display().to_string();
        owned.push((image.clone(), pkg));
        files.insert(
            image,
            TakenFile {
                package: None,
                sha1,
                sha256,
            },
        );
    }
    let packages: Vec<Package> = match &db {
        Some(db) => {
            for (image, pkg) in &owned {
                if let Some(i) = pkg {
                    used.entry(&db.packages[*i])
                        .or_default()
                        .push(image.clone());
                }
            }
            let mut out = Vec::new();
            for (n, (p, paths)) in used.into_iter().enumerate() {
                for image in paths {
                    if let Some(f) = files.get_mut(&image) {
                        f.package = Some(n);
                    }
                }
                out.push(p.clone());
            }
            out
        }
        None => Vec::new(),
    };
    Ok(Attribution {
        database: db.map(|d| d.kind.to_string()),
        packages,
        files,
    })
}

/// Merges the attributions of an image's tapeouts (later ones win a path,
/// as they do in the layer).
pub fn merge(parts: &[Attribution]) -> Attribution {
    let mut all: BTreeMap<String, (Option<Package>, TakenFile)> = BTreeMap::new();
    let mut databases: Vec<String> = Vec::new();
    for a in parts {
        if let Some(d) = &a.database {
            if !databases.contains(d) {
                databases.push(d.clone());
            }
        }
        for (p, f) in &a.files {
            let pkg = f.package.and_then(|i| a.packages.get(i)).cloned();
            all.insert(p.clone(), (pkg, f.clone()));
        }
    }
    let packages: Vec<Package> = {
        let mut v: Vec<Package> = all.values().filter_map(|(p, _)| p.clone()).collect();
        v.sort();
        v.dedup();
        v
    };
    let files = all
        .into_iter()
        .map(|(path, (pkg, mut f))| {
            f.package = pkg.and_then(|p| packages.iter().position(|q| *q == p));
            (path, f)
        })
        .collect();
    Attribution {
        database: (!databases.is_empty()).then(|| databases.join(",")),
        packages,
        files,
    }
}

/// SHA-1 and SHA-256 of a file, hex, in one pass.
fn checksums(p: &Path) -> Result<(String, String), SbomError> {
    use sha1::Digest as _;
    use std::io::Read;
    let io = |source| SbomError::Io {
        path: p.display().to_string(),
        source,
    };
    let mut f = std::fs::File::open(p).map_err(io)?;
    let mut a = sha1::Sha1::new();
    let mut b = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        a.update(&buf[..n]);
        b.update(&buf[..n]);
    }
    Ok((hex::encode(a.finalize()), hex::encode(b.finalize())))
}

/// Splits a control-file style database (dpkg status, apk installed) into
/// paragraphs of lines.
pub(crate) fn paragraphs(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.split("\n\n")
        .map(|p| p.lines().filter(|l| !l.is_empty()).collect::<Vec<_>>())
        .filter(|p| !p.is_empty())
}

#[cfg(test)]
pub(crate) mod testtree {
    /// A fixture builder tree: files with contents, symlinks.
    pub struct Fixture(pub tempfile::TempDir);

    impl Fixture {
        pub fn new() -> Fixture {
            Fixture(tempfile::tempdir().unwrap())
        }
        pub fn file(&self, p: &str, content: &str) -> &Self {
            let at = self.0.path().join(p.trim_start_matches('/'));
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            std::fs::write(at, content).unwrap();
            self
        }
        pub fn link(&self, p: &str, target: &str) -> &Self {
            let at = self.0.path().join(p.trim_start_matches('/'));
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, at).unwrap();
            self
        }
        pub fn host(&self, p: &str) -> std::path::PathBuf {
            self.0.path().join(p.trim_start_matches('/'))
        }
        pub fn view(&self) -> crate::tapeout::view::BuilderView {
            crate::tapeout::view::BuilderView::new(
                self.0.path().to_path_buf(),
                Vec::new(),
                Vec::new(),
                None,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testtree::Fixture;
    use super::*;

    fn taken(f: &Fixture, p: &str) -> Taken {
        let staged = f.host(p);
        let is_file = std::fs::symlink_metadata(&staged).is_ok_and(|m| m.is_file());
        Taken {
            image: PathBuf::from(p),
            builder: PathBuf::from(p),
            staged: is_file.then_some(staged),
        }
    }

    #[test]
    fn purl_of_a_debian_package() {
        let p = Package {
            manager: Manager::Deb,
            distro: "debian".into(),
            name: "libc6".into(),
            version: "2.36-9+deb12u7".into(),
            arch: Some("amd64".into()),
            license: None,
            supplier: None,
        };
        assert_eq!(p.purl(), "pkg:deb/debian/libc6@2.36-9+deb12u7?arch=amd64");
        let q = Package {
            name: "a b/c".into(),
            ..p
        };
        assert_eq!(
            q.purl(),
            "pkg:deb/debian/a%20b%2Fc@2.36-9+deb12u7?arch=amd64"
        );
    }

    #[test]
    fn no_database_means_every_file_in_no_package() {
        let f = Fixture::new();
        f.file("/app/bin", "x");
        let a = attribute(&f.view(), &[taken(&f, "/app/bin")]).unwrap();
        assert_eq!(a.database, None);
        assert!(a.packages.is_empty());
        assert_eq!(a.files["/app/bin"].package, None);
        assert_eq!(
            a.files["/app/bin"].sha256.as_deref(),
            Some("2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881")
        );
    }

    #[test]
    fn merge_keeps_the_later_tapeout_and_renumbers() {
        let pkg = |n: &str| Package {
            manager: Manager::Apk,
            distro: "alpine".into(),
            name: n.into(),
            version: "1".into(),
            arch: None,
            license: None,
            supplier: None,
        };
        let file = |i| TakenFile {
            package: i,
            sha1: None,
            sha256: None,
        };
        let a = Attribution {
            database: Some("apk".into()),
            packages: vec![pkg("b")],
            files: [("/x".to_string(), file(Some(0)))].into(),
        };
        let b = Attribution {
            database: Some("apk".into()),
            packages: vec![pkg("a")],
            files: [("/y".to_string(), file(Some(0))), ("/x".into(), file(None))].into(),
        };
        let m = merge(&[a.clone(), b]);
        assert_eq!(m.packages, vec![pkg("a")]);
        assert_eq!(m.files["/x"].package, None);
        assert_eq!(m.files["/y"].package, Some(0));
        let m = merge(&[a]);
        assert_eq!(m.files["/x"].package, Some(0));
        assert_eq!(m.packages, vec![pkg("b")]);
    }
}
