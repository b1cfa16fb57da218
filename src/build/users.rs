//! Users and groups by name, as the builder has them: a Containerfile's
//! `USER name` and `COPY --chown=name` mean the image's users, which an
//! earlier rule may have made. The builder's `/etc/passwd` and
//! `/etc/group` are read through its view (its changes over its base,
//! every symlink resolved inside its root), never the host's.

use crate::tapeout::view::{normalize, BuilderView};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};

/// How a name without a group takes its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Missing {
    /// `USER`: the user's primary group (`/etc/passwd`), else 0, as
    /// runc gives a process.
    Primary,
    /// `COPY --chown`: a name's primary group, a bare UID its own number,
    /// as BuildKit does.
    SameAsUid,
}

/// The most read of a passwd or group file: more is not a real one.
const MAX_FILE: u64 = 16 << 20;

/// One line of `/etc/passwd` or `/etc/group`: its name and its first two
/// numeric fields (uid and gid, or gid alone).
fn entries(text: &str) -> impl Iterator<Item = (&str, Option<u32>, Option<u32>)> {
    text.lines().filter_map(|l| {
        if l.starts_with('#') || l.trim().is_empty() {
            return None;
        }
        let mut f = l.split(':');
        let name = f.next()?;
        let _password = f.next();
        let a = f.next().and_then(|v| v.trim().parse().ok());
        let b = f.next().and_then(|v| v.trim().parse().ok());
        Some((name, a, b))
    })
}

/// A builder file's text, or `None` if the builder has no such file.
fn read(view: &BuilderView, path: &str) -> Result<Option<String>, String> {
    let Some(r) = view.resolve(&normalize(Path::new(path)), true) else {
        return Ok(None);
    };
    let Some(loc) = view.locate(&r.path) else {
        return Ok(None);
    };
    let f = view
        .open_file(&loc)
        .map_err(|e| format!("reading the builder's {path}: {e}"))?;
    let mut buf = Vec::new();
    f.take(MAX_FILE)
        .read_to_end(&mut buf)
        .map_err(|e| format!("reading the builder's {path}: {e}"))?;
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// `USER` or `--chown` text (`user[:group]`, names or numbers) as the
/// builder's ids.
pub fn resolve(view: &BuilderView, spec: &str, missing: Missing) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() || group.is_some_and(str::is_empty) {
        return Err(format!("{spec:?}: expected USER[:GROUP]"));
    }
    let passwd = read(view, "/etc/passwd")?;
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => {
            let entry = entries(passwd.as_deref().unwrap_or_default())
                .find(|(_, u, _)| *u == Some(uid))
                .and_then(|(_, _, g)| g);
            let g = match missing {
                Missing::Primary => entry.unwrap_or(0),
                Missing::SameAsUid => uid,
            };
            (uid, g)
        }
        Err(_) => {
            let Some(text) = passwd.as_deref() else {
                return Err(format!(
                    "user {user:?}: the builder has no /etc/passwd to look it up in"
                ));
            };
            match entries(text).find(|(n, _, _)| *n == user) {
                Some((_, Some(u), Some(g))) => (u, g),
                Some(_) => {
                    return Err(format!(
                        "user {user:?}: a malformed entry in the builder's /etc/passwd"
                    ))
                }
                None => {
                    return Err(format!(
                        "user {user:?}: no such user in the builder's /etc/passwd"
                    ))
                }
            }
        }
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let Some(text) = read(view, "/etc/group")? else {
                    return Err(format!(
                        "group {g:?}: the builder has no /etc/group to look it up in"
                    ));
                };
                let found = entries(&text)
                    .find(|(n, _, _)| *n == g)
                    .map(|(_, gid, _)| gid);
                match found {
                    Some(Some(gid)) => gid,
                    Some(None) => {
                        return Err(format!(
                            "group {g:?}: a malformed entry in the builder's /etc/group"
                        ))
                    }
                    None => {
                        return Err(format!(
                            "group {g:?}: no such group in the builder's /etc/group"
                        ))
                    }
                }
            }
        },
    };
    Ok((uid, gid))
}

/// Looks a `USER` up in the builder, as root of its user namespace (what
/// a step made is readable there whatever its mode), and writes the ids
/// as JSON to `out`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LookupJob {
    pub changes: PathBuf,
    pub lowers: Vec<PathBuf>,
    pub copy_mode: bool,
    pub spec: String,
    pub out: PathBuf,
}

impl crate::sandbox::job::InNamespace for LookupJob {
    const KIND: &'static str = "lookup-user";

    fn run(&self) -> Result<(), String> {
        let mut view = BuilderView::new(
            self.changes.clone(),
            if self.copy_mode {
                Vec::new()
            } else {
                self.lowers.clone()
            },
            Vec::new(),
            None,
        );
        view.set_inside_namespace();
        let ids = resolve(&view, &self.spec, Missing::Primary)?;
        let json = serde_json::to_vec(&ids).map_err(|e| e.to_string())?;
        std::fs::write(&self.out, json).map_err(|e| format!("{}: {e}", self.out.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# a comment\napp:x:1000:1001::/home/app:/bin/sh\nbroken:x:oops\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:app\n";

    /// A builder tree with a base (lower) and changes over it.
    fn tree(files: &[(&str, &str)]) -> (tempfile::TempDir, BuilderView) {
        let t = tempfile::tempdir().unwrap();
        let changes = t.path().join("changes");
        let lower = t.path().join("lower");
        std::fs::create_dir_all(changes.join("etc")).unwrap();
        std::fs::create_dir_all(lower.join("etc")).unwrap();
        for (p, text) in files {
            let p = t.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let v = BuilderView::new(changes, vec![lower], Vec::new(), None);
        (t, v)
    }

    #[test]
    fn names_and_numbers_as_docker_and_buildkit_give_them() {
        let (_t, v) = tree(&[("lower/etc/passwd", PASSWD), ("lower/etc/group", GROUP)]);
        let r = |s, m| resolve(&v, s, m);
        assert_eq!(r("app", Missing::Primary), Ok((1000, 1001)));
        assert_eq!(r("app", Missing::SameAsUid), Ok((1000, 1001)));
        assert_eq!(r("1000", Missing::Primary), Ok((1000, 1001)));
        assert_eq!(r("1000", Missing::SameAsUid), Ok((1000, 1000)));
        // A UID the image does not know: group 0 for a process.
        assert_eq!(r("4242", Missing::Primary), Ok((4242, 0)));
        assert_eq!(r("app:staff", Missing::Primary), Ok((1000, 50)));
        assert_eq!(r("app:7", Missing::Primary), Ok((1000, 7)));
        assert_eq!(r("5:staff", Missing::SameAsUid), Ok((5, 50)));
    }

    #[test]
    fn unknown_or_malformed_names_are_errors() {
        let (_t, v) = tree(&[("lower/etc/passwd", PASSWD), ("lower/etc/group", GROUP)]);
        let e = resolve(&v, "nobody", Missing::Primary).unwrap_err();
        assert!(e.contains("no such user"), "{e}");
        let e = resolve(&v, "broken", Missing::Primary).unwrap_err();
        assert!(e.contains("malformed"), "{e}");
        let e = resolve(&v, "app:wheel", Missing::Primary).unwrap_err();
        assert!(e.contains("no such group"), "{e}");
        let e = resolve(&v, "app:", Missing::Primary).unwrap_err();
        assert!(e.contains("USER[:GROUP]"), "{e}");
        let (_t, v) = tree(&[]);
        let e = resolve(&v, "app", Missing::Primary).unwrap_err();
        assert!(e.contains("no /etc/passwd"), "{e}");
        let (_t, v) = tree(&[("lower/etc/passwd", PASSWD)]);
        let e = resolve(&v, "app:staff", Missing::Primary).unwrap_err();
        assert!(e.contains("no /etc/group"), "{e}");
    }

    #[test]
    fn the_builders_changes_win_over_its_base() {
        let (_t, v) = tree(&[
            ("lower/etc/passwd", PASSWD),
            ("changes/etc/passwd", "app:x:2000:2000::/:/bin/sh\n"),
        ]);
        assert_eq!(resolve(&v, "app", Missing::Primary), Ok((2000, 2000)));
    }

    #[test]
    fn a_symlinked_passwd_resolves_inside_the_builder_never_the_host() {
        // /etc/passwd -> /../../../../etc/passwd: absolute from the
        // builder's root, `..` clamped there, so the builder's own file.
        let (t, v) = tree(&[("lower/real/passwd", "app:x:3000:3000::/:/bin/sh\n")]);
        std::os::unix::fs::symlink(
            "/../../../../../real/passwd",
            t.path().join("lower/etc/passwd"),
        )
        .unwrap();
        assert_eq!(resolve(&v, "app", Missing::Primary), Ok((3000, 3000)));
        // A link to the host's file: not followed out of the root.
        std::fs::remove_file(t.path().join("lower/etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", t.path().join("lower/etc/passwd")).unwrap();
        let e = resolve(&v, "root", Missing::Primary).unwrap_err();
        assert!(e.contains("no /etc/passwd"), "{e}");
    }

    #[test]
    fn a_fifo_for_passwd_is_refused_not_waited_on() {
        let (t, v) = tree(&[]);
        nix::unistd::mkfifo(
            &t.path().join("lower/etc/passwd"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let e = resolve(&v, "app", Missing::Primary).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
