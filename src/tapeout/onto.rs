//! Placing a staged tapeout onto a runtime base the way the base will
//! resolve its paths.
//!
//! A usrmerged base has `/lib -> usr/lib`, `/bin -> usr/bin`, and so on.
//! A layer entry `lib/x86_64-linux-gnu/libz.so.1` is then unpacked under
//! `/usr/lib`, but a layer entry `lib/` (a directory) replaces the base's
//! symlink and hides everything the base has under `/usr/lib`. So every
//! staged path is moved to where the base resolves it (its symlinks
//! followed over the base's manifest, clamped at the root), and the layer
//! never puts a directory or file where the base has a symlink. Then
//! subtraction compares what the base really has at that path.

use shipyard_image::rootfs::entry::{Entry, Kind, RelPath};
use shipyard_image::rootfs::manifest::Manifest;
use std::collections::BTreeMap;

/// Symlinks followed in one resolution at most (the kernel's bound).
const MAX_LINKS: usize = 40;

/// Resolves `p` against the symlinks of `base`: each component that is a
/// symlink there (the last one only if `follow_last`) is replaced by its
/// target, absolute targets from the root, `..` clamped at the root.
/// Components the base does not have are kept as they are. `None` if the
/// symlinks loop.
pub fn resolve(base: &Manifest, p: &RelPath, follow_last: bool) -> Option<RelPath> {
    let mut done: Vec<Vec<u8>> = Vec::new();
    let mut todo: Vec<Vec<u8>> = p.components().map(<[u8]>::to_vec).collect();
    todo.reverse();
    let mut followed = 0;
    while let Some(c) = todo.pop() {
        match c.as_slice() {
            b"." => continue,
            b".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        done.push(c);
        let here = RelPath::new(done.join(&b'/'));
        let last = todo.is_empty();
        let Some(e) = base.get(&here) else { continue };
        if e.kind != Kind::Symlink || (last && !follow_last) {
            continue;
        }
        followed += 1;
        if followed > MAX_LINKS {
            return None;
        }
        let target = e.link.clone().unwrap_or_default();
        done.pop();
        if target.starts_with(b"/") {
            done.clear();
        }
        todo.extend(
            target
                .split(|b| *b == b'/')
                .filter(|c| !c.is_empty())
                .rev()
                .map(<[u8]>::to_vec),
        );
    }
    Some(RelPath::new(done.join(&b'/')))
}

/// Where one staged entry goes in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub from: RelPath,
    /// `None`: left out, `note` says why.
    pub to: Option<RelPath>,
    pub note: Option<String>,
}

/// Places every entry of a staged tree (`stage`, in tree order) onto
/// `base`. Directories and files go where the base resolves their path;
/// a staged symlink stays a symlink at its place, except where the base
/// has a directory there (or a symlink to one): the base's stays, since
/// the staged entries under it are placed by resolution anyway.
pub fn plan(stage: &Manifest, base: &Manifest) -> Vec<Move> {
    let mut out = Vec::new();
    let mut taken: BTreeMap<RelPath, RelPath> = BTreeMap::new();
    let is_dir_in_base = |p: &RelPath| {
        resolve(base, p, true)
            .and_then(|r| base.get(&r))
            .is_some_and(|e| e.kind == Kind::Dir)
    };
    let aliases = aliases(stage, base);
    for e in stage.entries.values() {
        // The parent as the base resolves it (fully: the parent is a
        // directory in the image).
        let parent = resolve(base, &e.path.parent(), true).unwrap_or_else(|| e.path.parent());
        let mut here = parent.join(e.path.name());
        // A merged builder's /usr/lib/x/libc.so.6 is also its
        // /lib/x/libc.so.6; where the base is not merged and has the
        // latter, that is the path it stands for (and the one the base's
        // loader finds first): compare and place it there.
        if e.kind != Kind::Dir && base.get(&here).is_none() {
            if let Some(alias) = aliases.iter().find_map(|(target, link)| {
                if target.is_root() || !e.path.starts_with(target) || &e.path == target {
                    return None;
                }
                let rest = &e.path.as_bytes()[target.as_bytes().len() + 1..];
                // A symlink is compared as itself, not as what it names.
                let a = resolve(base, &link.join(rest), e.kind != Kind::Symlink)?;
                base.get(&a).is_some_and(|b| b.kind == e.kind).then_some(a)
            }) {
                here = alias;
            }
        }
        let mut note = None;
        let to = match (e.kind, base.get(&here).map(|b| b.kind)) {
            (Kind::Symlink, Some(Kind::Symlink)) => {
                let same = base.get(&here).is_some_and(|b| b.link == e.link);
                if !same && is_dir_in_base(&here) {
                    note = Some(format!(
                        "left out: the runtime base's symlink {here} to a directory stays"
                    ));
                    None
                } else {
                    Some(here.clone())
                }
            }
            (Kind::Symlink, Some(Kind::Dir)) => {
                note = Some(format!(
                    "left out: the runtime base has the directory {here}, which stays"
                ));
                None
            }
            (_, Some(Kind::Symlink)) => Some(resolve(base, &here, true).unwrap_or(here.clone())),
            _ => Some(here.clone()),
        };
        if let Some(t) = &to {
            if t != &e.path && note.is_none() {
                note = Some(format!(
                    "at {t}: the runtime base's symlinks lead there from {}",
                    e.path
                ));
            }
            if let Some(first) = taken.get(t) {
                if e.kind != Kind::Dir {
                    out.push(Move {
                        from: e.path.clone(),
                        to: None,
                        note: Some(format!("left out: {first} is placed at {t} already")),
                    });
                    continue;
                }
            }
            taken.entry(t.clone()).or_insert(e.path.clone());
        }
        out.push(Move {
            from: e.path.clone(),
            to,
            note,
        });
    }
    out
}

/// The staged symlinks to directories that the base has as directories
/// (a merged builder's `lib -> usr/lib` onto a non-merged base), as
/// (the link's target, the link): a staged path under the target is also
/// reachable, in the builder, under the link.
fn aliases(stage: &Manifest, base: &Manifest) -> Vec<(RelPath, RelPath)> {
    stage
        .entries
        .values()
        .filter(|e| e.kind == Kind::Symlink)
        .filter(|e| base.get(&e.path).is_some_and(|b| b.kind == Kind::Dir))
        .filter_map(|e| {
            let target = resolve(stage, &e.path, true)?;
            (target != e.path).then(|| (target, e.path.clone()))
        })
        .collect()
}

/// Whether placing onto `base` can move anything (it has a symlink).
pub fn needed(base: &Manifest) -> bool {
    base.entries.values().any(|e| e.kind == Kind::Symlink)
}

/// Materializes `plan` from the staged tree `stage_dir` into `into` (hard
/// links to the staged files), with an ownership record saying the owners
/// `stage` gives. A directory that lands on one of the base's takes the
/// base's metadata: placing files in it does not change it.
pub fn materialize(
    stage_dir: &std::path::Path,
    stage: &Manifest,
    base: &Manifest,
    moves: &[Move],
    into: &std::path::Path,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(into)?;
    let mut record = Manifest::default();
    let mut dirs: Vec<(std::path::PathBuf, u32)> = Vec::new();
    let mut placed: BTreeMap<RelPath, RelPath> = BTreeMap::new();
    let mut sorted: Vec<(&Move, &RelPath)> = moves
        .iter()
        .filter_map(|m| m.to.as_ref().map(|t| (m, t)))
        .collect();
    sorted.sort_by(|a, b| a.1.cmp(b.1));
    for (m, to) in sorted {
        let Some(e) = stage.get(&m.from) else {
            continue;
        };
        // Parents the plan did not place: the base's metadata if it has
        // them, else a plain directory.
        let mut acc = RelPath::default();
        for c in to.parent().components() {
            acc = acc.join(c);
            let d = into.join(acc.to_path());
            if std::fs::symlink_metadata(&d).is_err() {
                std::fs::create_dir(&d)?;
                let mut de = base
                    .get(&acc)
                    .filter(|b| b.kind == Kind::Dir)
                    .cloned()
                    .unwrap_or_else(|| {
                        let mut x = Entry::new(acc.clone(), Kind::Dir);
                        x.mode = 0o755;
                        x
                    });
                de.path = acc.clone();
                dirs.push((d, de.mode));
                record.insert(de);
            }
        }
        let dest = into.join(to.to_path());
        if std::fs::symlink_metadata(&dest).is_ok() {
            continue;
        }
        let src = stage_dir.join(m.from.to_path());
        let mut re = e.clone();
        re.path = to.clone();
        match e.kind {
            Kind::Dir => {
                if let Some(b) = base.get(to).filter(|b| b.kind == Kind::Dir) {
                    re.mode = b.mode;
                    re.uid = b.uid;
                    re.gid = b.gid;
                    re.xattrs = b.xattrs.clone();
                }
                std::fs::create_dir(&dest)?;
                dirs.push((dest.clone(), re.mode));
            }
            Kind::Symlink => {
                std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dest)?;
            }
            Kind::Hardlink => {
                // Link to the first name where it was placed.
                let first = e
                    .link
                    .as_ref()
                    .map(|l| RelPath::new(l.clone()))
                    .and_then(|l| placed.get(&l).cloned());
                match first {
                    Some(f) => std::fs::hard_link(into.join(f.to_path()), &dest)?,
                    None => std::fs::hard_link(&src, &dest)?,
                }
                re.kind = Kind::File;
                re.link = None;
            }
            _ => std::fs::hard_link(&src, &dest)?,
        }
        placed.insert(m.from.clone(), to.clone());
        record.insert(re);
    }
    for (d, mode) in dirs.iter().rev() {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(*mode))?;
    }
    let rec = shipyard_image::rootfs::walk::ownership_record_path(into);
    record.write_to(std::io::BufWriter::new(std::fs::File::create(rec)?))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rp(s: &str) -> RelPath {
        RelPath::new(s.as_bytes().to_vec())
    }

    fn entry(p: &str, kind: Kind, link: Option<&str>) -> Entry {
        let mut e = Entry::new(rp(p), kind);
        e.mode = if kind == Kind::Symlink { 0o777 } else { 0o755 };
        e.link = link.map(|l| l.as_bytes().to_vec());
        e
    }

    /// A usrmerged base: /lib -> usr/lib, /lib64 -> /usr/lib64 (absolute),
    /// /bin -> usr/bin, with libz in usr/lib/x86_64-linux-gnu.
    fn merged() -> Manifest {
        let mut m = Manifest::default();
        for (p, k, l) in [
            ("bin", Kind::Symlink, Some("usr/bin")),
            ("lib", Kind::Symlink, Some("usr/lib")),
            ("lib64", Kind::Symlink, Some("/usr/lib64")),
            ("usr", Kind::Dir, None),
            ("usr/bin", Kind::Dir, None),
            ("usr/lib", Kind::Dir, None),
            ("usr/lib64", Kind::Dir, None),
            (
                "usr/lib64/ld-linux-x86-64.so.2",
                Kind::Symlink,
                Some("../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
            ),
            ("usr/lib/x86_64-linux-gnu", Kind::Dir, None),
            (
                "usr/lib/x86_64-linux-gnu/libz.so.1",
                Kind::Symlink,
                Some("libz.so.1.2.13"),
            ),
            ("usr/lib/x86_64-linux-gnu/libz.so.1.2.13", Kind::File, None),
            (
                "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                Kind::File,
                None,
            ),
            ("loop", Kind::Symlink, Some("loop2")),
            ("loop2", Kind::Symlink, Some("/loop")),
            ("up", Kind::Symlink, Some("../../../usr")),
        ] {
            m.insert(entry(p, k, l));
        }
        m
    }

    #[test]
    fn paths_resolve_through_the_base_symlinks_clamped_at_the_root() {
        let b = merged();
        let r = |p: &str, f: bool| resolve(&b, &rp(p), f).map(|x| x.to_string());
        assert_eq!(
            r("lib/x86_64-linux-gnu/libz.so.1", false).as_deref(),
            Some("/usr/lib/x86_64-linux-gnu/libz.so.1")
        );
        assert_eq!(
            r("lib/x86_64-linux-gnu/libz.so.1", true).as_deref(),
            Some("/usr/lib/x86_64-linux-gnu/libz.so.1.2.13")
        );
        assert_eq!(
            r("lib64/ld-linux-x86-64.so.2", true).as_deref(),
            Some("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        );
        assert_eq!(r("up/bin/sh", false).as_deref(), Some("/usr/bin/sh"));
        assert_eq!(r("opt/new/x", true).as_deref(), Some("/opt/new/x"));
        assert_eq!(r("loop/x", false), None);
        assert_eq!(r("lib", false).as_deref(), Some("/lib"));
    }

    #[test]
    fn a_non_merged_stage_goes_under_the_merged_base_and_keeps_its_symlinks() {
        let b = merged();
        let mut s = Manifest::default();
        for (p, k, l) in [
            ("lib", Kind::Dir, None),
            ("lib/x86_64-linux-gnu", Kind::Dir, None),
            (
                "lib/x86_64-linux-gnu/libfoo.so.1",
                Kind::Symlink,
                Some("libfoo.so.1.0"),
            ),
            ("lib/x86_64-linux-gnu/libfoo.so.1.0", Kind::File, None),
            ("lib64", Kind::Dir, None),
            ("lib64/ld-linux-x86-64.so.2", Kind::File, None),
        ] {
            s.insert(entry(p, k, l));
        }
        let moves = plan(&s, &b);
        let to: Vec<(String, Option<String>)> = moves
            .iter()
            .map(|m| (m.from.to_string(), m.to.as_ref().map(|t| t.to_string())))
            .collect();
        assert_eq!(
            to,
            [
                ("/lib", Some("/usr/lib")),
                ("/lib/x86_64-linux-gnu", Some("/usr/lib/x86_64-linux-gnu")),
                (
                    "/lib/x86_64-linux-gnu/libfoo.so.1",
                    Some("/usr/lib/x86_64-linux-gnu/libfoo.so.1")
                ),
                (
                    "/lib/x86_64-linux-gnu/libfoo.so.1.0",
                    Some("/usr/lib/x86_64-linux-gnu/libfoo.so.1.0")
                ),
                ("/lib64", Some("/usr/lib64")),
                (
                    "/lib64/ld-linux-x86-64.so.2",
                    Some("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
                ),
            ]
            .map(|(a, b)| (a.to_string(), b.map(str::to_string)))
        );
    }

    #[test]
    fn a_merged_stage_onto_a_non_merged_base_keeps_the_base_directories() {
        let mut b = Manifest::default();
        for (p, k) in [
            ("lib", Kind::Dir),
            ("usr", Kind::Dir),
            ("usr/lib", Kind::Dir),
        ] {
            b.insert(entry(p, k, None));
        }
        let mut s = Manifest::default();
        s.insert(entry("lib", Kind::Symlink, Some("usr/lib")));
        s.insert(entry("usr", Kind::Dir, None));
        s.insert(entry("usr/lib", Kind::Dir, None));
        s.insert(entry("usr/lib/libfoo.so.1", Kind::File, None));
        let moves = plan(&s, &b);
        assert_eq!(moves[0].to, None, "{moves:?}");
        assert!(moves[0].note.as_deref().unwrap().contains("directory /lib"));
        assert_eq!(moves[3].to, Some(rp("usr/lib/libfoo.so.1")));
        // What the base has under its own /lib is compared there: the
        // staged usr/lib/libc.so.6 is the builder's lib/libc.so.6.
        b.insert(entry("lib/libc.so.6", Kind::File, None));
        s.insert(entry("usr/lib/libc.so.6", Kind::File, None));
        let moves = plan(&s, &b);
        let to = |from: &str| {
            moves
                .iter()
                .find(|m| m.from == rp(from))
                .unwrap()
                .to
                .clone()
        };
        assert_eq!(to("usr/lib/libc.so.6"), Some(rp("lib/libc.so.6")));
        assert_eq!(to("usr/lib/libfoo.so.1"), Some(rp("usr/lib/libfoo.so.1")));
        // Onto scratch, the builder's layout as it is.
        let moves = plan(&s, &Manifest::default());
        assert!(moves.iter().all(|m| m.to.as_ref() == Some(&m.from)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// Whatever the base's symlinks, resolution terminates, never
        /// climbs above the root, and a resolved path has no symlink of
        /// the base in a directory above it.
        #[test]
        fn resolution_stays_in_the_root_and_leaves_no_symlink_above(
            links in proptest::collection::vec(
                ("[abc]{1,2}(/[abc]{1,2}){0,2}", "(/|\\.\\./){0,3}[abc]{1,2}(/[abc.]{1,2}){0,2}"),
                0..8),
            p in "[abc]{1,2}(/[abc]{1,2}){0,3}",
        ) {
            let mut b = Manifest::default();
            for (at, target) in &links {
                b.insert(entry(at, Kind::Symlink, Some(target)));
            }
            if let Some(r) = resolve(&b, &rp(&p), false) {
                let mut anc = r.parent();
                while !anc.is_root() {
                    prop_assert!(b.get(&anc).is_none_or(|e| e.kind != Kind::Symlink));
                    anc = anc.parent();
                }
                prop_assert!(!r.components().any(|c| c == b".." || c == b"."));
            }
        }
    }
}
