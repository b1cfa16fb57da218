//! rpm: the sqlite database of rpm ≥ 4.16 (Fedora ≥ 33, RHEL 9 and their
//! relatives) holds one header per installed package in its `Packages`
//! table. A header is rpm's own tagged format: a count of index entries
//! and the size of the data, then entries of (tag, type, offset, count),
//! then the data. The tags read here: Name, Version, Release, Epoch,
//! Arch, License, Vendor, and the file list as Dirnames + Basenames +
//! Dirindexes (or the older OldFilenames).
//!
//! The Berkeley DB and ndb formats of older rpm releases are not read: a
//! builder with one of them is refused rather than given an SBOM that
//! lists no package.

use super::sqlite;
use super::{distro_id, Db, Manager, Package, SbomError, Tree};
use std::path::{Path, PathBuf};

/// Where rpm keeps its sqlite database (Fedora ≥ 36 and RHEL 9 use the
/// first, older ones the second).
pub const DATABASES: [&str; 2] = [
    "/usr/lib/sysimage/rpm/rpmdb.sqlite",
    "/var/lib/rpm/rpmdb.sqlite",
];

/// The formats of older rpm releases.
const OTHER_FORMATS: [&str; 3] = [
    "/var/lib/rpm/Packages",
    "/var/lib/rpm/Packages.db",
    "/usr/lib/sysimage/rpm/Packages.db",
];

const NAME: i32 = 1000;
const VERSION: i32 = 1001;
const RELEASE: i32 = 1002;
const EPOCH: i32 = 1003;
const VENDOR: i32 = 1011;
const LICENSE: i32 = 1014;
const ARCH: i32 = 1022;
const OLDFILENAMES: i32 = 1027;
const DIRINDEXES: i32 = 1116;
const BASENAMES: i32 = 1117;
const DIRNAMES: i32 = 1118;

const INT32: u32 = 4;
const STRING: u32 = 6;
const STRING_ARRAY: u32 = 8;
const I18NSTRING: u32 = 9;

/// Reads the rpm database, `None` when the builder has none.
pub fn read(tree: &dyn Tree) -> Result<Option<Db>, SbomError> {
    let found = DATABASES
        .iter()
        .find_map(|p| tree.read(Path::new(p)).map(|b| (*p, b)));
    let Some((path, bytes)) = found else {
        if let Some(p) = OTHER_FORMATS
            .iter()
            .find(|p| tree.read(Path::new(p)).is_some())
        {
            return Err(SbomError::Database {
                path: (*p).into(),
                msg: "an rpm database in the Berkeley DB or ndb format (rpm < 4.16); \
                      --sbom reads the sqlite rpmdb only (`rpmdb --rebuilddb` with \
                      %_db_backend sqlite converts it)"
                    .into(),
            });
        }
        return Ok(None);
    };
    let err = |msg: String| SbomError::Database {
        path: path.into(),
        msg,
    };
    let wal = format!("{path}-wal");
    if tree.read(Path::new(&wal)).is_some_and(|w| !w.is_empty()) {
        return Err(err(format!(
            "{wal} holds changes not yet written to the database; \
             run a read of the database in the builder (`rpm -qa`) to checkpoint it"
        )));
    }
    let db = sqlite::Db::new(&bytes).map_err(|e| err(e.to_string()))?;
    let rows = db.table("Packages").map_err(|e| err(e.to_string()))?;
    let distro = distro_id(tree).unwrap_or_else(|| "rpm".into());
    let mut out = Db {
        kind: "rpm",
        ..Db::default()
    };
    for (i, row) in rows.iter().enumerate() {
        let Some(sqlite::Value::Blob(blob)) = row.get(1) else {
            return Err(err(format!(
                "row {} of Packages holds no header blob",
                i + 1
            )));
        };
        let h = Header::parse(blob).map_err(|m| err(format!("header {}: {m}", i + 1)))?;
        let name = h
            .string(NAME)
            .ok_or_else(|| err(format!("header {} has no name", i + 1)))?;
        // The public keys rpm imported are pseudo-packages without files.
        if name == "gpg-pubkey" {
            continue;
        }
        let index = out.packages.len();
        let mut version = format!(
            "{}-{}",
            h.string(VERSION).unwrap_or_default(),
            h.string(RELEASE).unwrap_or_default()
        );
        if let Some(e) = h.int32s(EPOCH).and_then(|e| e.first().copied()) {
            version = format!("{e}:{version}");
        }
        for f in h.files().map_err(|m| err(format!("{name}: {m}")))? {
            out.files.push((f, index));
        }
        out.packages.push(Package {
            manager: Manager::Rpm,
            distro: distro.clone(),
            name,
            version,
            arch: h.string(ARCH),
            license: h.string(LICENSE),
            supplier: h.string(VENDOR),
        });
    }
    Ok(Some(out))
}

/// An rpm header: its index entries and data store.
struct Header<'a> {
    entries: Vec<(i32, u32, usize, usize)>,
    data: &'a [u8],
}

impl<'a> Header<'a> {
    fn parse(b: &'a [u8]) -> Result<Header<'a>, String> {
        let u32_at = |o: usize| -> Result<u32, String> {
            b.get(o..o + 4)
                .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
                .ok_or_else(|| "truncated".to_string())
        };
        let il = u32_at(0)? as usize;
        let dl = u32_at(4)? as usize;
        let start = il
            .checked_mul(16)
            .and_then(|n| n.checked_add(8))
            .ok_or("too many entries")?;
        let data = b
            .get(start..start.checked_add(dl).ok_or("data too large")?)
            .ok_or("the data store is past the end of the header")?;
        let mut entries = Vec::with_capacity(il.min(4096));
        for i in 0..il {
            let o = 8 + 16 * i;
            entries.push((
                u32_at(o)? as i32,
                u32_at(o + 4)?,
                u32_at(o + 8)? as usize,
                u32_at(o + 12)? as usize,
            ));
        }
        Ok(Header { entries, data })
    }

    fn entry(&self, tag: i32) -> Option<(u32, usize, usize)> {
        self.entries
            .iter()
            .find(|e| e.0 == tag)
            .map(|e| (e.1, e.2, e.3))
    }

    /// `count` NUL-terminated strings from `offset`.
    fn strings_at(&self, offset: usize, count: usize) -> Option<Vec<String>> {
        let mut out = Vec::with_capacity(count.min(1 << 16));
        let mut at = offset;
        for _ in 0..count {
            let rest = self.data.get(at..)?;
            let end = rest.iter().position(|b| *b == 0)?;
            out.push(String::from_utf8_lossy(&rest[..end]).into_owned());
            at += end + 1;
        }
        Some(out)
    }

    fn string(&self, tag: i32) -> Option<String> {
        let (typ, off, _) = self.entry(tag)?;
        match typ {
            // An i18n string's first entry is the untranslated one.
            STRING | I18NSTRING => self.strings_at(off, 1)?.pop(),
            _ => None,
        }
    }

    fn strings(&self, tag: i32) -> Option<Vec<String>> {
        let (typ, off, count) = self.entry(tag)?;
        (typ == STRING_ARRAY).then(|| self.strings_at(off, count))?
    }

    fn int32s(&self, tag: i32) -> Option<Vec<u32>> {
        let (typ, off, count) = self.entry(tag)?;
        if typ != INT32 {
            return None;
        }
        let bytes = self
            .data
            .get(off..off.checked_add(count.checked_mul(4)?)?)?;
        Some(
            bytes
                .chunks(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    }

    /// The package's paths.
    fn files(&self) -> Result<Vec<PathBuf>, String> {
        if let Some(base) = self.strings(BASENAMES) {
            let dirs = self.strings(DIRNAMES).ok_or("Basenames without Dirnames")?;
            let idx = self
                .int32s(DIRINDEXES)
                .ok_or("Basenames without Dirindexes")?;
            if idx.len() != base.len() {
                return Err("Basenames and Dirindexes differ in length".into());
            }
            return base
                .iter()
                .zip(idx)
                .map(|(b, i)| {
                    dirs.get(i as usize)
                        .map(|d| PathBuf::from(format!("{d}{b}")))
                        .ok_or_else(|| format!("Dirindexes names directory {i} of {}", dirs.len()))
                })
                .collect();
        }
        Ok(self
            .strings(OLDFILENAMES)
            .unwrap_or_default()
            .into_iter()
            .map(PathBuf::from)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testtree::Fixture;
    use super::super::{attribute, Taken};
    use std::path::PathBuf;

    const FIXTURE: &[u8] = include_bytes!("../../rootfs-fixtures/rpmdb/rpmdb.sqlite");

    fn fedora() -> Fixture {
        let f = Fixture::new();
        f.file("/etc/os-release", "NAME=\"Fedora Linux\"\nID=fedora\n")
            .link("/lib64", "usr/lib64")
            .file("/usr/lib64/libc.so.6", "libc")
            .file("/usr/lib64/libz.so.1.3.1.zlib-ng", "z")
            .link("/usr/lib64/libz.so.1", "libz.so.1.3.1.zlib-ng")
            .file("/usr/share/bigpkg/file-0599.txt", "big")
            .file("/usr/local/bin/mine", "mine");
        let db = f.host("/usr/lib/sysimage/rpm/rpmdb.sqlite");
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        std::fs::write(db, FIXTURE).unwrap();
        f
    }

    #[test]
    fn reads_the_sqlite_rpmdb() {
        let f = fedora();
        let db = super::read(&f.view()).unwrap().unwrap();
        // gpg-pubkey-less fixture: every row is a package.
        assert_eq!(db.packages.len(), 43);
        let glibc = &db.packages[0];
        assert_eq!(glibc.name, "glibc");
        assert_eq!(glibc.version, "2.39-17.fc40");
        assert_eq!(
            glibc.purl(),
            "pkg:rpm/fedora/glibc@2.39-17.fc40?arch=x86_64"
        );
        assert_eq!(
            glibc.license.as_deref(),
            Some("LGPL-2.1-or-later AND GPL-2.0-or-later")
        );
        assert_eq!(glibc.supplier.as_deref(), Some("Fedora Project"));
        assert_eq!(db.packages[1].version, "1:2.1.7-2.fc40");
        assert_eq!(
            db.packages[1].purl(),
            "pkg:rpm/fedora/zlib-ng-compat@2.1.7-2.fc40?arch=x86_64&epoch=1"
        );
        // The big header spilled onto overflow pages and is read whole.
        let big = db.files.iter().filter(|(_, i)| *i == 2).count();
        assert_eq!(big, 600);
    }

    #[test]
    fn usrmerged_rpm_paths_are_owned_through_the_builders_symlinks() {
        let f = fedora();
        let paths = [
            "/usr/lib64/libc.so.6",
            "/usr/lib64/libz.so.1",
            "/usr/lib64/libz.so.1.3.1.zlib-ng",
            "/usr/share/bigpkg/file-0599.txt",
            "/usr/local/bin/mine",
        ];
        let taken: Vec<Taken> = paths
            .iter()
            .map(|p| Taken {
                image: PathBuf::from(p),
                builder: PathBuf::from(p),
                staged: None,
            })
            .collect();
        let a = attribute(&f.view(), &taken).unwrap();
        assert_eq!(a.database.as_deref(), Some("rpm"));
        let owner = |p: &str| a.files[p].package.map(|i| a.packages[i].name.as_str());
        assert_eq!(owner(paths[0]), Some("glibc"));
        assert_eq!(owner(paths[1]), Some("zlib-ng-compat"));
        assert_eq!(owner(paths[2]), Some("zlib-ng-compat"));
        assert_eq!(owner(paths[3]), Some("bigpkg"));
        assert_eq!(owner(paths[4]), None);
        assert_eq!(a.packages.len(), 3);
    }

    #[test]
    fn a_wal_with_data_and_old_formats_are_refused() {
        let f = fedora();
        f.file("/usr/lib/sysimage/rpm/rpmdb.sqlite-wal", "pages");
        let e = super::read(&f.view()).unwrap_err().to_string();
        assert!(e.contains("not yet written to the database"), "{e}");
        let old = Fixture::new();
        old.file("/var/lib/rpm/Packages", "bdb");
        let e = super::read(&old.view()).unwrap_err().to_string();
        assert!(e.contains("Berkeley DB"), "{e}");
        let broken = Fixture::new();
        broken.file("/var/lib/rpm/rpmdb.sqlite", "SQLite format 3\0garbage");
        assert!(super::read(&broken.view()).is_err());
    }

    #[test]
    fn headers_are_checked() {
        assert!(super::Header::parse(&[0, 0, 0, 1]).is_err());
        // One entry claiming more data than there is.
        let mut h = vec![0, 0, 0, 1, 0, 0, 1, 0];
        h.extend_from_slice(&[0; 16]);
        assert!(super::Header::parse(&h).is_err());
    }
}
