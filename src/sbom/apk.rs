//! apk: `lib/apk/db/installed` holds one paragraph per package: `P:` name,
//! `V:` version, `A:` arch, `L:` license, `m:` maintainer, then its files
//! as `F:` directory lines (relative to `/`) each followed by the `R:`
//! files in it.

use super::{distro_id, paragraphs, Db, Manager, Package, SbomError, Tree};
use std::path::{Path, PathBuf};

const INSTALLED: &str = "/lib/apk/db/installed";
/// Where a usr-merged Alpine may keep it instead.
const INSTALLED_USR: &str = "/usr/lib/apk/db/installed";

/// Reads the apk database, `None` when the builder has none.
pub fn read(tree: &dyn Tree) -> Result<Option<Db>, SbomError> {
    let Some(bytes) = tree
        .read(Path::new(INSTALLED))
        .or_else(|| tree.read(Path::new(INSTALLED_USR)))
    else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes);
    let distro = distro_id(tree).unwrap_or_else(|| "alpine".into());
    let mut db = Db {
        kind: "apk",
        ..Db::default()
    };
    for para in paragraphs(&text) {
        let mut pkg = Package {
            manager: Manager::Apk,
            distro: distro.clone(),
            name: String::new(),
            version: String::new(),
            arch: None,
            license: None,
            supplier: None,
        };
        let index = db.packages.len();
        let mut dir = PathBuf::from("/");
        for line in &para {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            match k {
                "P" => pkg.name = v.to_string(),
                "V" => pkg.version = v.to_string(),
                "A" => pkg.arch = Some(v.to_string()),
                "L" => pkg.license = Some(v.to_string()),
                "m" => pkg.supplier = Some(v.to_string()),
                "F" => dir = Path::new("/").join(v),
                "R" => db.files.push((dir.join(v), index)),
                _ => {}
            }
        }
        if pkg.name.is_empty() || pkg.version.is_empty() {
            return Err(SbomError::Database {
                path: INSTALLED.into(),
                msg: format!("a package without P: or V: ({:?})", para[0]),
            });
        }
        db.packages.push(pkg);
    }
    Ok(Some(db))
}

#[cfg(test)]
mod tests {
    use super::super::testtree::Fixture;
    use super::super::{attribute, Taken};
    use std::path::PathBuf;

    const INSTALLED: &str = "C:Q1abc=
P:musl
V:1.2.5-r0
A:x86_64
S:400000
L:MIT
o:musl
m:Natanael Copa <ncopa@alpinelinux.org>
F:lib
R:ld-musl-x86_64.so.1
a:0:0:755
R:libc.musl-x86_64.so.1

P:zlib
V:1.3.1-r1
A:x86_64
L:Zlib
F:usr/lib
R:libz.so.1.3.1
R:libz.so.1
";

    #[test]
    fn reads_packages_and_files() {
        let f = Fixture::new();
        f.file("/etc/os-release", "NAME=\"Alpine Linux\"\nID=alpine\n")
            .file("/lib/apk/db/installed", INSTALLED)
            .file("/lib/ld-musl-x86_64.so.1", "musl")
            .link("/lib/libc.musl-x86_64.so.1", "ld-musl-x86_64.so.1")
            .file("/usr/lib/libz.so.1.3.1", "z")
            .file("/usr/bin/mine", "m");
        let db = super::read(&f.view()).unwrap().unwrap();
        assert_eq!(db.packages.len(), 2);
        assert_eq!(
            db.packages[0].purl(),
            "pkg:apk/alpine/musl@1.2.5-r0?arch=x86_64"
        );
        assert_eq!(db.packages[0].license.as_deref(), Some("MIT"));
        assert_eq!(db.packages[1].license.as_deref(), Some("Zlib"));
        let taken: Vec<Taken> = [
            "/lib/ld-musl-x86_64.so.1",
            "/lib/libc.musl-x86_64.so.1",
            "/usr/lib/libz.so.1.3.1",
            "/usr/bin/mine",
        ]
        .iter()
        .map(|p| Taken {
            image: PathBuf::from(p),
            builder: PathBuf::from(p),
            staged: None,
        })
        .collect();
        let a = attribute(&f.view(), &taken).unwrap();
        let owner = |p: &str| a.files[p].package.map(|i| a.packages[i].name.as_str());
        assert_eq!(owner("/lib/ld-musl-x86_64.so.1"), Some("musl"));
        assert_eq!(owner("/lib/libc.musl-x86_64.so.1"), Some("musl"));
        assert_eq!(owner("/usr/lib/libz.so.1.3.1"), Some("zlib"));
        assert_eq!(owner("/usr/bin/mine"), None);
    }

    #[test]
    fn the_database_under_usr_is_read_too() {
        let f = Fixture::new();
        f.file("/usr/lib/apk/db/installed", INSTALLED);
        let db = super::read(&f.view()).unwrap().unwrap();
        assert_eq!(db.packages.len(), 2);
        assert_eq!(db.packages[0].distro, "alpine");
    }

    #[test]
    fn a_package_without_a_name_is_an_error() {
        let f = Fixture::new();
        f.file("/lib/apk/db/installed", "V:1\nF:usr\nR:x\n");
        let e = super::read(&f.view()).unwrap_err().to_string();
        assert!(e.contains("without P: or V:"), "{e}");
    }
}
