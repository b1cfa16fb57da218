//! dpkg: `var/lib/dpkg/status` names the installed packages, and
//! `var/lib/dpkg/info/NAME.list` (`NAME:ARCH.list` for Multi-Arch: same
//! packages) the paths each one installed.

use super::{distro_id, paragraphs, Db, Manager, Package, SbomError, Tree};
use std::path::{Path, PathBuf};

const STATUS: &str = "/var/lib/dpkg/status";
const INFO: &str = "/var/lib/dpkg/info";

/// Reads the dpkg database, `None` when the builder has no dpkg status.
pub fn read(tree: &dyn Tree) -> Result<Option<Db>, SbomError> {
    let Some(status) = tree.read(Path::new(STATUS)) else {
        return Ok(None);
    };
    let text = String::from_utf8(status).map_err(|_| SbomError::Database {
        path: STATUS.into(),
        msg: "not UTF-8".into(),
    })?;
    let distro = distro_id(tree).unwrap_or_else(|| "debian".into());
    let mut db = Db {
        kind: "dpkg",
        ..Db::default()
    };
    for para in paragraphs(&text) {
        let field = |name: &str| {
            para.iter().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k == name).then(|| v.trim().to_string())
            })
        };
        let Some(name) = field("Package") else {
            return Err(SbomError::Database {
                path: STATUS.into(),
                msg: format!("a paragraph without a Package field: {:?}", para[0]),
            });
        };
        // "install ok installed", or a state in which the package's files
        // are all unpacked (its triggers or configuration still to run,
        // as an apt run in a container often leaves them).
        // `config-files`, `half-installed` and `not-installed` packages
        // may lack files their lists name: no file is theirs.
        let unpacked = field("Status").is_some_and(|s| {
            matches!(
                s.split_whitespace().last(),
                Some(
                    "installed"
                        | "triggers-pending"
                        | "triggers-awaited"
                        | "half-configured"
                        | "unpacked"
                )
            )
        });
        if !unpacked {
            continue;
        }
        let arch = field("Architecture");
        let version = field("Version").ok_or_else(|| SbomError::Database {
            path: STATUS.into(),
            msg: format!("package {name} has no Version"),
        })?;
        let index = db.packages.len();
        let list = arch
            .as_ref()
            .and_then(|a| tree.read(&Path::new(INFO).join(format!("{name}:{a}.list"))))
            .or_else(|| tree.read(&Path::new(INFO).join(format!("{name}.list"))));
        if let Some(list) = list {
            for line in String::from_utf8_lossy(&list).lines() {
                // "/." stands for the root itself.
                if line.starts_with('/') && line != "/." {
                    db.files.push((PathBuf::from(line), index));
                }
            }
        }
        db.packages.push(Package {
            manager: Manager::Deb,
            distro: distro.clone(),
            name,
            version,
            arch,
            license: None,
            supplier: field("Maintainer"),
        });
    }
    Ok(Some(db))
}

#[cfg(test)]
mod tests {
    use super::super::testtree::Fixture;
    use super::super::{attribute, Taken};
    use std::path::PathBuf;

    const STATUS: &str = "Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Version: 2.36-9+deb12u7
Description: GNU C Library: Shared libraries
 Contains the standard libraries.

Package: zlib1g
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 1:1.2.13.dfsg-1

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: libc-bin
Status: install ok triggers-pending
Architecture: amd64
Version: 2.36-9+deb12u7
";

    /// A usrmerged bookworm in miniature: `/lib` is a symlink to
    /// `usr/lib`, the lists name the old paths.
    fn usrmerged() -> Fixture {
        let f = Fixture::new();
        f.file("/etc/os-release", "PRETTY_NAME=\"Debian\"\nID=debian\n")
            .file("/var/lib/dpkg/status", STATUS)
            .file(
                "/var/lib/dpkg/info/libc6:amd64.list",
                "/.\n/lib\n/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu/libc.so.6\n/lib64/ld-linux-x86-64.so.2\n",
            )
            .file(
                "/var/lib/dpkg/info/zlib1g:amd64.list",
                "/.\n/usr/lib/x86_64-linux-gnu/libz.so.1.2.13\n/usr/lib/x86_64-linux-gnu/libz.so.1\n",
            )
            .file("/var/lib/dpkg/info/gone.list", "/usr/bin/app\n")
            .file("/var/lib/dpkg/info/libc-bin.list", "/sbin/ldconfig\n")
            .link("/sbin", "usr/sbin")
            .file("/usr/sbin/ldconfig", "ldconfig")
            .file("/usr/lib/x86_64-linux-gnu/libc.so.6", "libc")
            .file("/usr/lib/x86_64-linux-gnu/libz.so.1.2.13", "zlib")
            .link("/usr/lib/x86_64-linux-gnu/libz.so.1", "libz.so.1.2.13")
            .file("/usr/lib64/ld-linux-x86-64.so.2", "ld")
            .file("/usr/bin/app", "app")
            .file("/usr/local/bin/mine", "mine")
            .link("/lib", "usr/lib")
            .link("/lib64", "usr/lib64");
        f
    }

    fn take(f: &Fixture, p: &str) -> Taken {
        let host = f.host(p);
        let file = std::fs::symlink_metadata(&host).unwrap().is_file();
        Taken {
            image: PathBuf::from(p),
            builder: PathBuf::from(p),
            staged: file.then_some(host),
        }
    }

    #[test]
    fn reads_installed_packages_only() {
        let f = usrmerged();
        let db = super::read(&f.view()).unwrap().unwrap();
        let names: Vec<&str> = db.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["libc6", "zlib1g", "libc-bin"]);
        assert_eq!(db.packages[0].version, "2.36-9+deb12u7");
        assert_eq!(
            db.packages[0].purl(),
            "pkg:deb/debian/libc6@2.36-9+deb12u7?arch=amd64"
        );
        assert_eq!(
            db.packages[1].purl(),
            "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64"
        );
        assert_eq!(
            db.packages[0].supplier.as_deref(),
            Some("GNU Libc Maintainers <debian-glibc@lists.debian.org>")
        );
    }

    #[test]
    fn usrmerged_paths_are_owned_through_the_builders_symlinks() {
        let f = usrmerged();
        let paths = [
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            // The usrmerge symlink itself: libc6 lists `/lib` as a
            // directory, which does not make the symlink libc6's.
            "/lib",
            "/usr/lib64/ld-linux-x86-64.so.2",
            "/usr/lib/x86_64-linux-gnu/libz.so.1",
            "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13",
            "/usr/local/bin/mine",
            // Listed by a package that is not installed any more.
            "/usr/bin/app",
        ];
        let taken: Vec<Taken> = paths.iter().map(|p| take(&f, p)).collect();
        let a = attribute(&f.view(), &taken).unwrap();
        assert_eq!(a.database.as_deref(), Some("dpkg"));
        let owner = |p: &str| a.files[p].package.map(|i| a.packages[i].name.as_str());
        assert_eq!(owner(paths[0]), Some("libc6"));
        assert_eq!(owner(paths[1]), None);
        assert_eq!(owner(paths[2]), Some("libc6"));
        assert_eq!(owner(paths[3]), Some("zlib1g"));
        assert_eq!(owner(paths[4]), Some("zlib1g"));
        assert_eq!(owner(paths[5]), None);
        assert_eq!(owner(paths[6]), None);
        assert_eq!(a.packages.len(), 2);
        // A symlink has no checksum, a file has both.
        assert!(a.files[paths[3]].sha1.is_none());
        assert_eq!(
            a.files[paths[4]].sha1.as_deref(),
            Some("57968f12798767ae5da8b15a0c383ad79d0f338b")
        );
    }

    #[test]
    fn a_package_whose_triggers_are_pending_owns_its_files() {
        let f = usrmerged();
        let a = attribute(&f.view(), &[take(&f, "/usr/sbin/ldconfig")]).unwrap();
        assert_eq!(a.files["/usr/sbin/ldconfig"].package, Some(0));
        assert_eq!(a.packages[0].name, "libc-bin");
    }

    /// The host's own symlinks are never followed: a builder whose `/lib`
    /// points nowhere near `/usr/lib` does not own `/usr/lib` files
    /// through it, whatever the host has.
    #[test]
    fn without_the_builders_symlink_the_old_path_owns_nothing_new() {
        let f = Fixture::new();
        f.file("/var/lib/dpkg/status", STATUS)
            .file(
                "/var/lib/dpkg/info/libc6:amd64.list",
                "/lib/x86_64-linux-gnu/libc.so.6\n",
            )
            .file("/lib/x86_64-linux-gnu/libc.so.6", "old")
            .file("/usr/lib/x86_64-linux-gnu/libc.so.6", "new");
        let a = attribute(
            &f.view(),
            &[
                take(&f, "/usr/lib/x86_64-linux-gnu/libc.so.6"),
                take(&f, "/lib/x86_64-linux-gnu/libc.so.6"),
            ],
        )
        .unwrap();
        assert_eq!(a.files["/usr/lib/x86_64-linux-gnu/libc.so.6"].package, None);
        assert_eq!(a.files["/lib/x86_64-linux-gnu/libc.so.6"].package, Some(0));
    }

    #[test]
    fn a_paragraph_without_package_is_an_error() {
        let f = Fixture::new();
        f.file("/var/lib/dpkg/status", "Status: install ok installed\n");
        let e = super::read(&f.view()).unwrap_err().to_string();
        assert!(e.contains("without a Package field"), "{e}");
        f.file(
            "/var/lib/dpkg/status",
            "Package: x\nStatus: install ok installed\n",
        );
        let e = super::read(&f.view()).unwrap_err().to_string();
        assert!(e.contains("package x has no Version"), "{e}");
    }
}
