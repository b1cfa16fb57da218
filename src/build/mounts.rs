//! Cache mounts (BuildKit's `--mount=type=cache`): directories that
//! persist between builds, for the package managers' and compilers' own
//! caches (pip, cargo, ccache, apt's archives), mounted writable into the
//! rules that name them.
//!
//! They live in `$XDG_CACHE_HOME/shipyard/mounts/ID`, are shared by every
//! build of the user, and are never part of a layer (they are mounts) or of
//! a key (what a cache holds must not change what a rule makes, only how
//! fast). Concurrent builds are kept apart by an `flock` on `ID.lock`,
//! whose mtime is also when the mount was last used:
//! - `locked` (the default): one rule at a time; others wait.
//! - `shared`: rules use it at once (the tool must cope, as apt and pip
//!   do not always).
//! - `private`: a rule that finds it busy gets an empty directory of its
//!   own for this run, thrown away after.
//!
//! `cache prune` takes each lock exclusively before removing a mount, so a
//! mount in use is never removed under a rule.

use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use crate::project::cache_mount::{CacheMount, Sharing};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cache mount {id}: {path}")]
    Io {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Cache(#[from] shipyard_image::cache::CacheError),
}

/// The cache mounts of this user.
pub struct MountStore {
    root: PathBuf,
}

/// A cache mount held for one rule: its directory, and the lock (or the
/// private directory) that goes when this is dropped.
pub struct Held {
    pub path: PathBuf,
    _lock: Option<Flock<File>>,
    _private: Option<tempfile::TempDir>,
}

/// One cache mount, as `cache ls` shows it.
#[derive(Debug, Clone)]
pub struct MountInfo {
    pub id: String,
    pub size: u64,
    pub last_used: SystemTime,
}

impl MountStore {
    /// The store under the user's cache directory.
    pub fn open() -> Result<Self, MountError> {
        Ok(Self::at(shipyard_image::cache::cache_dir()?.join("mounts")))
    }

    /// The store in `root` (a cache directory's `mounts`).
    pub fn at(root: PathBuf) -> Self {
        Self { root }
    }

    fn io(id: &str, path: &Path) -> impl FnOnce(std::io::Error) -> MountError {
        let (id, path) = (id.to_string(), path.to_path_buf());
        move |source| MountError::Io { id, path, source }
    }

    fn lock_file(&self, id: &str) -> Result<File, MountError> {
        let p = self.root.join(format!("{id}.lock"));
        std::fs::create_dir_all(&self.root).map_err(Self::io(id, &self.root))?;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(Self::io(id, &p))
    }

    /// Takes the mount for a rule, waiting for it if it is `locked` and in
    /// use.
    pub fn acquire(&self, m: &CacheMount) -> Result<Held, MountError> {
        let dir = self.root.join(&m.id);
        let file = self.lock_file(&m.id)?;
        // Last used: now.
        let _ = file.set_modified(SystemTime::now());
        let arg = match m.sharing {
            Sharing::Locked => FlockArg::LockExclusive,
            Sharing::Shared => FlockArg::LockShared,
            Sharing::Private => FlockArg::LockExclusiveNonblock,
        };
        let lock = match Flock::lock(file, arg) {
            Ok(l) => Some(l),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) if m.sharing == Sharing::Private => None,
            Err((_, e)) => {
                return Err(MountError::Io {
                    id: m.id.clone(),
                    path: self.root.join(format!("{}.lock", m.id)),
                    source: e.into(),
                })
            }
        };
        if lock.is_none() {
            let private = tempfile::Builder::new()
                .prefix(&format!(".private-{}-", m.id))
                .tempdir_in(&self.root)
                .map_err(Self::io(&m.id, &self.root))?;
            tracing::info!(
                "cache mount {} is in use: this rule gets an empty one of its own",
                m.id
            );
            return Ok(Held {
                path: private.path().to_path_buf(),
                _lock: None,
                _private: Some(private),
            });
        }
        std::fs::create_dir_all(&dir).map_err(Self::io(&m.id, &dir))?;
        Ok(Held {
            path: dir,
            _lock: lock,
            _private: None,
        })
    }

    /// Every cache mount, most recently used first.
    pub fn list(&self) -> Vec<MountInfo> {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut v: Vec<MountInfo> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let id = name.strip_suffix(".lock")?.to_string();
                // A pruned mount keeps its lock file (removing it could
                // hand two rules two different locks): it is gone when
                // its directory is.
                if !self.root.join(&id).is_dir() {
                    return None;
                }
                let last_used = e.metadata().ok()?.modified().ok()?;
                Some(MountInfo {
                    size: du(&self.root.join(&id)),
                    id,
                    last_used,
                })
            })
            .collect();
        v.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.id.cmp(&b.id)));
        v
    }

    /// Removes the mounts not used within `keep` (all with zero), each
    /// under its lock, skipping those in use; returns how many and the
    /// bytes freed.
    pub fn prune(&self, keep: Duration) -> Result<(usize, u64), MountError> {
        let cutoff = SystemTime::now()
            .checked_sub(keep)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut n = 0;
        let mut freed = 0;
        for m in self.list() {
            if !keep.is_zero() && m.last_used >= cutoff {
                continue;
            }
            let file = self.lock_file(&m.id)?;
            let Ok(_lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
                tracing::info!("cache mount {} is in use: kept", m.id);
                continue;
            };
            let dir = self.root.join(&m.id);
            // Files a rule gave to subordinate ids need the sandbox's help.
            crate::sandbox::remove_tree(&dir).map_err(|e| MountError::Io {
                id: m.id.clone(),
                path: dir.clone(),
                source: std::io::Error::other(shipyard_image::error::chain_text(&e)),
            })?;
            n += 1;
            freed += m.size;
        }
        Ok((n, freed))
    }
}

/// Bytes of the files under `dir` (not following symlinks).
fn du(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(id: &str, sharing: Sharing) -> CacheMount {
        CacheMount {
            target: PathBuf::from("/c"),
            id: id.into(),
            sharing,
        }
    }

    #[test]
    fn a_private_mount_in_use_gives_a_fresh_directory_and_the_shared_one_persists() {
        let t = tempfile::tempdir().unwrap();
        let s = MountStore::at(t.path().join("mounts"));
        let a = s.acquire(&mount("pip", Sharing::Locked)).unwrap();
        std::fs::write(a.path.join("wheel"), b"w").unwrap();
        let b = s.acquire(&mount("pip", Sharing::Private)).unwrap();
        assert_ne!(a.path, b.path);
        assert!(!b.path.join("wheel").exists());
        let private = b.path.clone();
        drop(b);
        assert!(!private.exists(), "the private copy is thrown away");
        drop(a);
        let c = s.acquire(&mount("pip", Sharing::Private)).unwrap();
        assert!(c.path.join("wheel").exists(), "the cache persists");
    }

    #[test]
    fn prune_skips_a_mount_in_use_and_removes_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let s = MountStore::at(t.path().join("mounts"));
        let busy = s.acquire(&mount("busy", Sharing::Locked)).unwrap();
        let idle = s.acquire(&mount("idle", Sharing::Locked)).unwrap();
        std::fs::write(idle.path.join("f"), b"1234").unwrap();
        drop(idle);
        let (n, freed) = s.prune(Duration::ZERO).unwrap();
        assert_eq!((n, freed), (1, 4));
        let ids: Vec<String> = s.list().into_iter().map(|m| m.id).collect();
        assert_eq!(ids, ["busy"]);
        assert!(busy.path.exists());
    }

    #[test]
    fn sharing_parses_and_names_the_choices() {
        assert_eq!("shared".parse::<Sharing>(), Ok(Sharing::Shared));
        assert!("lockd"
            .parse::<Sharing>()
            .unwrap_err()
            .contains("locked, shared or private"));
    }
}
