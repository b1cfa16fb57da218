//! Staged tapeout trees: each tapeout rule stages the files it takes in a
//! tree of its own (with an ownership record beside it, for what the
//! caller could not represent on disk). An image's layer, or a pod
//! volume, is the merge of its stages.

use shipyard_image::rootfs::manifest::{Manifest, ManifestError};
use shipyard_image::rootfs::walk::ownership_record_path;
use std::fs;
use std::path::{Path, PathBuf};

/// Merging stages failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// A file of a stage or of the merged tree could not be read or made.
    #[error("merging tapeout stages: {}", path.display())]
    Io {
        /// The path the operation failed on.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// A stage's ownership record is corrupt.
    #[error("merging tapeout stages")]
    Record(#[source] ManifestError),
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> StageError + '_ {
    move |source| StageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Merges staged tapeout trees into `into` (later stages win), with their
/// ownership records, using hard links: stages and the merge live on the
/// same file system, and nothing is copied.
pub fn merge_stages(stages: &[PathBuf], into: &Path) -> Result<(), StageError> {
    fs::create_dir_all(into).map_err(at(into))?;
    let mut record = Manifest::default();
    for s in stages {
        for e in walkdir::WalkDir::new(s).min_depth(1).sort_by_file_name() {
            let e = e.map_err(|w| StageError::Io {
                path: w.path().unwrap_or(s).to_path_buf(),
                source: w
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("a file system loop")),
            })?;
            let Ok(rel) = e.path().strip_prefix(s) else {
                continue; // walkdir yields only paths under `s`
            };
            let dest = into.join(rel);
            let ft = e.file_type();
            if ft.is_dir() {
                fs::create_dir_all(&dest).map_err(at(&dest))?;
                let perm = fs::metadata(e.path()).map_err(at(e.path()))?.permissions();
                fs::set_permissions(&dest, perm).map_err(at(&dest))?;
            } else {
                let _ = fs::remove_file(&dest);
                if ft.is_symlink() {
                    let target = fs::read_link(e.path()).map_err(at(e.path()))?;
                    std::os::unix::fs::symlink(target, &dest).map_err(at(&dest))?;
                } else {
                    fs::hard_link(e.path(), &dest).map_err(at(&dest))?;
                }
            }
        }
        let rec = ownership_record_path(s);
        if let Ok(f) = fs::File::open(&rec) {
            let m = Manifest::parse(std::io::BufReader::new(f), &rec.display().to_string())
                .map_err(StageError::Record)?;
            for (_, e) in m.entries {
                record.insert(e);
            }
        }
    }
    let out = ownership_record_path(into);
    let f = fs::File::create(&out).map_err(at(&out))?;
    record
        .write_to(std::io::BufWriter::new(f))
        .map_err(at(&out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipyard_image::rootfs::entry::{Entry, Kind, RelPath};

    #[test]
    fn later_stages_win_and_records_are_merged() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, out) = (d.path().join("a"), d.path().join("b"), d.path().join("out"));
        fs::create_dir_all(a.join("etc")).unwrap();
        fs::create_dir_all(b.join("etc")).unwrap();
        fs::write(a.join("etc/x"), b"from a").unwrap();
        fs::write(a.join("etc/only-a"), b"a").unwrap();
        fs::write(b.join("etc/x"), b"from b").unwrap();
        let mut rec = Manifest::default();
        let mut e = Entry::new(RelPath::new(b"etc/only-a".to_vec()), Kind::File);
        e.uid = 1000;
        rec.insert(e);
        rec.write_to(fs::File::create(ownership_record_path(&a)).unwrap())
            .unwrap();
        merge_stages(&[a.clone(), b.clone()], &out).unwrap();
        assert_eq!(fs::read(out.join("etc/x")).unwrap(), b"from b");
        assert_eq!(fs::read(out.join("etc/only-a")).unwrap(), b"a");
        let f = fs::File::open(ownership_record_path(&out)).unwrap();
        let merged = Manifest::parse(std::io::BufReader::new(f), "out").unwrap();
        let owners: Vec<_> = merged.entries.values().map(|e| e.uid).collect();
        assert_eq!(owners, [1000], "stage a's record reaches the merge");
    }

    #[test]
    fn a_missing_stage_is_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let err = merge_stages(&[d.path().join("nope")], &d.path().join("out")).unwrap_err();
        assert!(
            matches!(&err, StageError::Io { path, .. } if path.ends_with("nope")),
            "{err:?}"
        );
    }
}
