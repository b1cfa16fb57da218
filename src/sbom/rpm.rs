//! rpm: not read yet (see `read`).

use super::{Db, SbomError, Tree};
use std::path::Path;

/// Where rpm keeps its sqlite database (Fedora ≥ 36 and RHEL 9 use the
/// first, older ones the second).
pub const DATABASES: [&str; 2] = [
    "/usr/lib/sysimage/rpm/rpmdb.sqlite",
    "/var/lib/rpm/rpmdb.sqlite",
];

/// An rpm builder is refused rather than given an SBOM that lists no
/// package: reading the sqlite rpmdb is not implemented yet.
pub fn read(tree: &dyn Tree) -> Result<Option<Db>, SbomError> {
    for p in DATABASES {
        if tree.read(Path::new(p)).is_some() {
            return Err(SbomError::Database {
                path: p.into(),
                msg: "rpm databases are not read yet; --sbom supports dpkg and apk builders".into(),
            });
        }
    }
    Ok(None)
}
