//! Tapeout: pick from the builder what an image needs, stage it, and say
//! why each path is there.
//!
//! Selection starts from what the build changed (the step's upper dir):
//! include/exclude globs match builder paths (a match on a directory takes
//! its contents); literal includes may also name base files. With
//! `elf-closure`, every selected ELF file pulls in its interpreter and the
//! libraries it needs, symlinks kept and followed to their targets. The
//! selection is copied to a staging tree (remapped, with owner and mode
//! overrides), and the owners it has inside the builder are written beside
//! it as an ownership record, so the layer says what the builder said.

pub mod elf;
pub mod job;
pub mod onto;
pub mod stage;
pub mod view;

use crate::project::TapeoutRule;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use shipyard_image::rootfs::entry::{Entry, Kind, RelPath};
use shipyard_image::rootfs::manifest::Manifest;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use view::{normalize, BuilderView};

#[derive(Debug, thiserror::Error)]
pub enum TapeoutError {
    #[error("tapeout.{rule}: {path} does not exist in the builder")]
    Missing { rule: String, path: String },
    #[error("tapeout.{rule}: pattern {pattern:?}: {msg}")]
    Pattern {
        rule: String,
        pattern: String,
        msg: String,
    },
    #[error("tapeout.{rule}: {path}")]
    Io {
        rule: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a path is in the image.
pub type Explain = BTreeMap<PathBuf, String>;

fn globs(rule: &str, pats: &[String]) -> Result<GlobSet, TapeoutError> {
    let mut b = GlobSetBuilder::new();
    for p in pats {
        let g = GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| TapeoutError::Pattern {
                rule: rule.to_string(),
                pattern: p.clone(),
                msg: e.to_string(),
            })?;
        b.add(g);
    }
    b.build().map_err(|e| TapeoutError::Pattern {
        rule: rule.to_string(),
        pattern: String::new(),
        msg: e.to_string(),
    })
}

fn matches_self_or_ancestor(set: &GlobSet, p: &Path) -> Option<usize> {
    p.ancestors()
        .filter(|a| *a != Path::new("/"))
        .find_map(|a| set.matches(a).first().copied())
}

fn is_literal(p: &str) -> bool {
    !p.contains(['*', '?', '[', '{'])
}

/// Runs one tapeout into `stage` (created empty). Returns the explanation
/// of every staged path (image paths).
/// `final_step`: no build step runs after this tapeout, so staged files may
/// share the builder's inodes instead of copying them.
pub fn run(
    rule: &TapeoutRule,
    view: &BuilderView,
    stage: &Path,
    final_step: bool,
) -> Result<Explain, TapeoutError> {
    let io = |path: &Path| {
        let rule = rule.name.clone();
        let path = path.display().to_string();
        move |source: std::io::Error| TapeoutError::Io { rule, path, source }
    };
    let inc = globs(&rule.name, &rule.include)?;
    let exc = globs(&rule.name, &rule.exclude)?;
    let mut selected: BTreeMap<PathBuf, String> = BTreeMap::new();
    // What the build changed: known already on a copy and in place (where
    // the changes dir is a whole tree, `/` itself at isolation none), else
    // the overlay upper dir's contents.
    let changed = match view.changed_paths() {
        Some(c) => c,
        None => {
            let mut c = Vec::new();
            for e in walkdir::WalkDir::new(&view.changes)
                .min_depth(1)
                .sort_by_file_name()
            {
                let e = e.map_err(|err| io(&view.changes)(err.into()))?;
                let rel = e.path().strip_prefix(&view.changes).unwrap_or(e.path());
                c.push(Path::new("/").join(rel));
            }
            c
        }
    };
    for p in changed {
        if !view.is_change(&p) {
            continue;
        }
        if let Some(i) = matches_self_or_ancestor(&inc, &p) {
            if matches_self_or_ancestor(&exc, &p).is_none() && view.locate(&p).is_some() {
                selected.entry(p).or_insert_with(|| {
                    format!(
                        "included by tapeout.{}{} ({})",
                        rule.name,
                        rule.builder_label(),
                        rule.include[i]
                    )
                });
            }
        }
    }
    // Literal includes may name what the base already had.
    for (i, pat) in rule.include.iter().enumerate() {
        if !is_literal(pat) {
            continue;
        }
        // Resolved inside the builder: a symlink in a directory above
        // the named file is followed there, never on the host.
        let r = view
            .resolve(&normalize(Path::new(pat)), false)
            .ok_or_else(|| TapeoutError::Missing {
                rule: rule.name.clone(),
                path: pat.clone(),
            })?;
        let why = format!(
            "included by tapeout.{}{} ({})",
            rule.name,
            rule.builder_label(),
            rule.include[i]
        );
        for l in &r.links {
            if matches_self_or_ancestor(&exc, l).is_none() {
                selected
                    .entry(l.clone())
                    .or_insert_with(|| format!("symlink on the way to {pat}"));
            }
        }
        let is_dir = view
            .locate(&r.path)
            .and_then(|l| view.metadata(&l).ok())
            .is_some_and(|m| m.is_dir());
        let paths = if is_dir {
            view.list_tree(&r.path)
        } else {
            vec![r.path.clone()]
        };
        for sub in paths {
            if matches_self_or_ancestor(&exc, &sub).is_none() {
                selected.entry(sub).or_insert_with(|| why.clone());
            }
        }
    }
    if rule.elf_closure {
        elf_closure(view, &mut selected);
    }
    stage_selection(rule, view, &selected, stage, final_step)
}

/// Adds interpreters and needed libraries (and the symlinks leading to
/// them, in their names and in the directories above) of every selected
/// ELF file, transitively. Every path is resolved inside the builder.
fn elf_closure(view: &BuilderView, selected: &mut BTreeMap<PathBuf, String>) {
    let dirs = elf::loader_dirs(view);
    let mut queue: Vec<PathBuf> = selected.keys().cloned().collect();
    let mut seen = std::collections::HashSet::new();
    // Selects a resolved path and the symlinks on its way.
    let add = |r: elf::Resolved, why: String, selected: &mut BTreeMap<PathBuf, String>| {
        for l in &r.links {
            selected
                .entry(l.clone())
                .or_insert_with(|| format!("symlink on the way to {}", r.path.display()));
        }
        selected.entry(r.path.clone()).or_insert(why);
        r.path
    };
    while let Some(p) = queue.pop() {
        if !seen.insert(p.clone()) {
            continue;
        }
        let Some(loc) = view.locate(&p) else { continue };
        let Ok(md) = view.metadata(&loc) else {
            continue;
        };
        let dir = p.parent().unwrap_or(Path::new("/")).to_path_buf();
        if md.file_type().is_symlink() {
            if let Ok(t) = view.read_link(&loc) {
                if let Some(r) = view.resolve(&dir.join(t), false) {
                    let why = format!("target of symlink {}", p.display());
                    queue.push(add(r, why, selected));
                }
            }
            continue;
        }
        if !md.is_file() {
            continue;
        }
        let Some(n) = elf::needs(view, &loc) else {
            continue;
        };
        if let Some(interp) = &n.interpreter {
            if let Some(r) = view.resolve(Path::new(interp), false) {
                let why = format!("interpreter of {}", p.display());
                queue.push(add(r, why, selected));
            }
        }
        for lib in &n.needed {
            if let Some(r) = elf::find_library(view, lib, &dir, &n.search, &dirs) {
                let why = format!("needed by {} (DT_NEEDED {lib})", p.display());
                queue.push(add(r, why, selected));
            } else {
                tracing::warn!("{}: needs {lib}, which is not in the builder", p.display());
            }
        }
    }
}

fn remap(rule: &TapeoutRule, p: &Path) -> PathBuf {
    for (from, to) in &rule.remap {
        if let Ok(rest) = p.strip_prefix(from) {
            return if rest.as_os_str().is_empty() {
                to.clone()
            } else {
                to.join(rest)
            };
        }
    }
    p.to_path_buf()
}

fn stage_selection(
    rule: &TapeoutRule,
    view: &BuilderView,
    selected: &BTreeMap<PathBuf, String>,
    stage: &Path,
    link_ok: bool,
) -> Result<Explain, TapeoutError> {
    std::fs::create_dir_all(stage).map_err(io_err(rule, stage))?;
    let mut s = Stager {
        rule,
        view,
        stage,
        link_ok,
        record: Manifest::default(),
        explain: Explain::new(),
        dir_mtimes: Vec::new(),
        staged_inodes: HashMap::new(),
    };
    for (src, why) in selected {
        s.put(src, why)?;
    }
    s.finish()
}

fn io_err(rule: &TapeoutRule, path: &Path) -> impl FnOnce(std::io::Error) -> TapeoutError {
    let rule = rule.name.clone();
    let path = path.display().to_string();
    move |source: std::io::Error| TapeoutError::Io { rule, path, source }
}

/// Copies a tapeout's selection out of the builder into its stage, and
/// records what the stage's files cannot hold (owners, modes).
struct Stager<'a> {
    rule: &'a TapeoutRule,
    view: &'a BuilderView,
    stage: &'a Path,
    /// Whether files may be hard-linked rather than copied (no step runs
    /// after this tapeout).
    link_ok: bool,
    record: Manifest,
    explain: Explain,
    /// Directories made, with the mtime to give them once filled.
    dir_mtimes: Vec<(PathBuf, i64)>,
    /// Hardlinks stay hardlinks: the second name of a file is linked to
    /// the first staged copy, so the layer stores the content once.
    staged_inodes: HashMap<(u64, u64), PathBuf>,
}

impl Stager<'_> {
    fn io<'p>(&self, path: &'p Path) -> impl FnOnce(std::io::Error) -> TapeoutError + 'p {
        io_err(self.rule, path)
    }

    /// Stages one selected path, `why` being the reason it was taken.
    fn put(&mut self, src: &Path, why: &str) -> Result<(), TapeoutError> {
        let (rule, view, stage) = (self.rule, self.view, self.stage);
        let Some(loc) = view.locate(src) else {
            return Ok(());
        };
        let md = view.metadata(&loc).map_err(self.io(&loc.host))?;
        let dest = remap(rule, src);
        let rel = dest.strip_prefix("/").unwrap_or(&dest).to_path_buf();
        if rel.as_os_str().is_empty() {
            return Ok(());
        }
        self.parents(&rel, &dest)?;
        let target = stage.join(&rel);
        let mut owner = view.owner(src, &loc, &md);
        if let Some(o) = rule.owner {
            owner = o;
        }
        let mut mode = md.mode() & 0o7777;
        if let Some(m) = rule.mode {
            if !md.file_type().is_symlink() {
                mode = m;
            }
        }
        if std::fs::symlink_metadata(&target).is_ok() {
            return Ok(());
        }
        let kind = if md.file_type().is_symlink() {
            let t = view.read_link(&loc).map_err(self.io(&loc.host))?;
            std::os::unix::fs::symlink(t, &target).map_err(self.io(&target))?;
            Kind::Symlink
        } else if md.is_dir() {
            std::fs::create_dir(&target).map_err(self.io(&target))?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode | 0o700))
                .map_err(self.io(&target))?;
            self.dir_mtimes.push((target.clone(), md.mtime()));
            Kind::Dir
        } else if md.is_file() {
            self.put_file(&loc, &md, &target, mode)?;
            Kind::File
        } else {
            tracing::warn!(
                "tapeout.{}: {} is a device, fifo or socket; skipped",
                rule.name,
                src.display()
            );
            return Ok(());
        };
        record_entry(&mut self.record, &rel, kind, owner, mode);
        self.explain.insert(dest, why.to_string());
        Ok(())
    }

    /// Makes the parents of `rel` in the stage, with the builder's
    /// metadata where it has them.
    fn parents(&mut self, rel: &Path, dest: &Path) -> Result<(), TapeoutError> {
        let (view, stage) = (self.view, self.stage);
        let mut acc = PathBuf::new();
        let comps: Vec<_> = rel
            .parent()
            .map(|p| p.components().collect())
            .unwrap_or_default();
        for c in comps {
            acc.push(c);
            let sd = stage.join(&acc);
            match std::fs::symlink_metadata(&sd) {
                Ok(m) if m.is_dir() => {}
                // A remap can put a path under one staged as a symlink:
                // writing through it would leave the stage.
                Ok(_) => {
                    return Err(self.io(&sd)(std::io::Error::other(format!(
                        "{} is staged as a non-directory, {} cannot go under it (check remap)",
                        Path::new("/").join(&acc).display(),
                        dest.display()
                    ))))
                }
                Err(_) => {
                    std::fs::create_dir(&sd).map_err(self.io(&sd))?;
                    let bpath = Path::new("/").join(&acc);
                    let (mode, owner) = match view
                        .locate(&bpath)
                        .and_then(|l| view.metadata(&l).ok().map(|m| (l, m)))
                    {
                        Some((l, m)) if m.is_dir() => {
                            (m.mode() & 0o7777, view.owner(&bpath, &l, &m))
                        }
                        _ => (0o755, (0, 0)),
                    };
                    std::fs::set_permissions(&sd, std::fs::Permissions::from_mode(mode | 0o700))
                        .map_err(self.io(&sd))?;
                    record_entry(&mut self.record, &acc, Kind::Dir, owner, mode);
                    self.dir_mtimes.push((sd, 0));
                }
            }
        }
        Ok(())
    }

    /// Stages a regular file: a hard link to an earlier name of it, a link
    /// to the builder's own file, or a copy.
    fn put_file(
        &mut self,
        loc: &view::Located,
        md: &std::fs::Metadata,
        target: &Path,
        mode: u32,
    ) -> Result<(), TapeoutError> {
        let (rule, view) = (self.rule, self.view);
        let key = (md.dev(), md.ino());
        match self.staged_inodes.get(&key) {
            Some(first) if md.nlink() > 1 && rule.mode.is_none() => {
                std::fs::hard_link(first, target).map_err(self.io(target))?;
            }
            // No step runs after this tapeout, so the builder's file
            // will not change: link it instead of copying its bytes.
            // Only our own, owner-readable files: the layer is written
            // outside the namespace and must read them. (Other
            // filesystems, files we may not link: copy.)
            _ if self.link_ok
                && rule.mode.is_none()
                && md.uid() == nix::unistd::geteuid().as_raw()
                && md.mode() & 0o400 != 0
                && view.hard_link(loc, target).is_ok() =>
            {
                self.staged_inodes.insert(key, target.to_path_buf());
            }
            _ => {
                let mut from = view.open_file(loc).map_err(self.io(&loc.host))?;
                let mut to = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(target)
                    .map_err(self.io(target))?;
                std::io::copy(&mut from, &mut to).map_err(self.io(&loc.host))?;
                drop(to);
                std::fs::set_permissions(target, std::fs::Permissions::from_mode(mode))
                    .map_err(self.io(target))?;
                shipyard_image::fsutil::set_mtime(target, md.mtime());
                self.staged_inodes.insert(key, target.to_path_buf());
            }
        }
        Ok(())
    }

    /// Gives directories their modes (last: a 0555 directory must stay
    /// writable while it is filled) and mtimes, and writes the record.
    fn finish(self) -> Result<Explain, TapeoutError> {
        let (stage, record) = (self.stage, &self.record);
        let io = |p: &Path| io_err(self.rule, p);
        // Directory modes last (a 0555 dir must stay writable while filled).
        for (d, mtime) in self.dir_mtimes.iter().rev() {
            let rel = d.strip_prefix(stage).unwrap_or(d);
            let key = RelPath::new(rel.as_os_str().as_bytes().to_vec());
            if let Some(e) = record.get(&key) {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(e.mode))
                    .map_err(io(d))?;
            }
            shipyard_image::fsutil::set_mtime(d, *mtime);
        }
        let rec_path = shipyard_image::rootfs::walk::ownership_record_path(stage);
        let f = std::fs::File::create(&rec_path).map_err(io(&rec_path))?;
        record
            .write_to(std::io::BufWriter::new(f))
            .map_err(io(&rec_path))?;
        Ok(self.explain)
    }
}

fn record_entry(record: &mut Manifest, rel: &Path, kind: Kind, owner: (u32, u32), mode: u32) {
    let mut e = Entry::new(RelPath::new(rel.as_os_str().as_bytes().to_vec()), kind);
    e.uid = owner.0 as u64;
    e.gid = owner.1 as u64;
    e.mode = mode;
    record.insert(e);
}
