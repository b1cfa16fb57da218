//! `shipyard build -f Containerfile`: USER and `COPY --chown` by name
//! (looked up in the builder's own files when the rule runs), inline
//! files (`COPY <<EOF`) and heredoc scripts with `#!`. On a small base
//! image made from the two-images example's tree (dash, coreutils, an
//! /etc/passwd with `app` 1000:1000), with a step cache of the test's own.

use crate::common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub(crate) struct Ctx {
    pub(crate) t: tempfile::TempDir,
}

/// One member of the image's layers (the last layer that has it wins).
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) mode: u32,
    pub(crate) content: Vec<u8>,
    pub(crate) mtime: u64,
}

impl Ctx {
    pub(crate) fn new() -> Ctx {
        let t = tempfile::tempdir().unwrap();
        let mk = std::process::Command::new("bash")
            .arg(src_dir().join("examples/two-images/make-base.sh"))
            .arg(t.path().join("base"))
            .output()
            .unwrap();
        assert_success(&mk, "make-base.sh");
        let ctx = t.path().join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        diff_scratch(
            &t.path().join("base"),
            &format!("oci:{}:base", t.path().join("img").display()),
            &[],
        );
        Ctx { t }
    }

    pub(crate) fn ctx(&self) -> PathBuf {
        self.t.path().join("ctx")
    }

    /// Builds `text` (its `FROM base` made the test's base image).
    pub(crate) fn build(&self, text: &str) -> std::process::Output {
        let base = format!("oci:{}:base", self.t.path().join("img").display());
        let text = text.replace("FROM base", &format!("FROM {base}"));
        let file = self.ctx().join("Containerfile");
        write(&file, text.as_bytes(), 0o644);
        shipyard()
            .env("XDG_CACHE_HOME", self.t.path().join("cache"))
            .arg("build")
            .arg("-f")
            .arg(&file)
            .arg(self.ctx())
            .arg("--output")
            .arg(format!("oci:{}", self.t.path().join("out").display()))
            .output()
            .unwrap()
    }

    pub(crate) fn ok(&self, text: &str) -> BTreeMap<String, Member> {
        let o = self.build(text);
        assert_success(&o, "shipyard build -f Containerfile");
        members(&self.t.path().join("out"), "image")
    }
}

/// Every member of the image's layers, as the image has it.
pub(crate) fn members(layout: &Path, tag: &str) -> BTreeMap<String, Member> {
    let l = shipyard_image::oci::layout::Layout::open(layout).unwrap();
    let d = l.resolve(Some(tag)).unwrap();
    let img = shipyard_image::oci::image::Image::load(&l, &d).unwrap();
    let mut out = BTreeMap::new();
    for layer in img.manifest.layers() {
        let dg = shipyard_image::oci::media::digest_of(layer).unwrap();
        let f = l.open_blob(&dg).unwrap();
        let r = shipyard_image::layer::compress::decoder(
            f,
            shipyard_image::oci::media::layer_encoding(layer.media_type()),
        )
        .unwrap();
        let mut a = tar::Archive::new(r);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let h = e.header().clone();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut content).unwrap();
            out.insert(
                path.trim_end_matches('/').to_string(),
                Member {
                    uid: h.uid().unwrap(),
                    gid: h.gid().unwrap(),
                    mode: h.mode().unwrap(),
                    content,
                    mtime: h.mtime().unwrap(),
                },
            );
        }
    }
    out
}

pub(crate) fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn user_and_chown_names_are_the_builders_users_as_an_earlier_rule_made_them() {
    if !ids_range_mapped() {
        // A single id mapped: no step can run as, or give files to, another.
        return;
    }
    let c = Ctx::new();
    write(&c.ctx().join("f"), b"from the context\n", 0o644);
    let m = c.ok(
        "FROM base
RUN echo 'web:x:1234:2345::/:/bin/sh' >> /etc/passwd && echo 'grp:x:77:' > /etc/group && mkdir /out && chmod 777 /out
USER web
RUN echo ran > /out/by-web
USER app:grp
RUN echo ran > /out/by-app-grp
USER 1234
RUN echo ran > /out/by-uid
WORKDIR /out/work
USER root
COPY --chown=web:grp f /out/copied
COPY --chown=app f /out/copied-app
",
    );
    let owner = |p: &str| (m[p].uid, m[p].gid);
    // A name: its uid and its primary group, from the builder's passwd
    // as the first rule left it (the host has no such user).
    assert_eq!(owner("out/by-web"), (1234, 2345));
    assert_eq!(owner("out/by-app-grp"), (1000, 77));
    // A UID alone takes its primary group from the image too.
    assert_eq!(owner("out/by-uid"), (1234, 2345));
    // WORKDIR made as the user in effect, its group as BuildKit's
    // chown gives a bare UID (the same number).
    assert_eq!(owner("out/work"), (1234, 1234));
    assert_eq!(owner("out/copied"), (1234, 77));
    assert_eq!(owner("out/copied-app"), (1000, 1000));
    assert_eq!(m["out/copied"].content, b"from the context\n");
}

#[test]
fn an_unknown_user_fails_the_rule_naming_it_and_the_hosts_users_are_not_seen() {
    let c = Ctx::new();
    // The host has root (and the test users); the builder's passwd is
    // replaced by one without them, and a symlink to the host's file is
    // resolved inside the builder (where it loops), never followed out.
    let o = c.build(
        "FROM base
RUN rm /etc/passwd && ln -s /etc/../../../../etc/passwd /etc/passwd
USER root
RUN echo never
",
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("USER root"), "{e}");
    assert!(e.contains("no /etc/passwd"), "{e}");
    assert!(!e.contains("never"), "{e}");
    let o = c.build("FROM base\nCOPY --chown=nobody:nogroup <<EOF /x\nx\nEOF\n");
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("no such user in the builder's /etc/passwd"),
        "{e}"
    );
}

#[test]
fn inline_files_are_written_with_their_content_mode_and_owner() {
    let c = Ctx::new();
    // A single id mapped gives no file to another id.
    let chown = if ids_range_mapped() {
        "--chown=app"
    } else {
        ""
    };
    let m = c.ok(&format!(
        "FROM base
ARG who=world
COPY <<EOF <<'RAW' /etc/greet/
hello $who
EOF
keep $who
RAW
COPY --chmod=755 {chown} <<EOF /bin/hi
#!/bin/sh
echo hi
EOF
RUN /bin/hi > /said
"
    ));
    let greet = &m["etc/greet/EOF"];
    assert_eq!(greet.content, b"hello world\n");
    assert_eq!(greet.mode & 0o7777, 0o644);
    assert_eq!((greet.uid, greet.gid), (0, 0));
    assert_eq!(m["etc/greet/RAW"].content, b"keep $who\n");
    let hi = &m["bin/hi"];
    assert_eq!(hi.mode & 0o7777, 0o755);
    if ids_range_mapped() {
        assert_eq!((hi.uid, hi.gid), (1000, 1000));
    }
    assert_eq!(m["said"].content, b"hi\n");
    // Reproducible: the build's epoch, not the time of the build.
    assert!(greet.mtime < 1_000_000_000, "{}", greet.mtime);
}

#[test]
fn a_shebang_heredoc_runs_as_a_script_under_its_own_interpreter() {
    let c = Ctx::new();
    // Executed as a file (so `$0` is its path) by the interpreter its
    // first line names, as the USER in effect (it can read it).
    let user = if ids_range_mapped() { "app" } else { "root" };
    let m = c.ok(&format!(
        "FROM base
RUN mkdir /out && chmod 777 /out
USER {user}
RUN <<EOF
#!/bin/sh -e
echo \"$0\" > /out/script-name
EOF
"
    ));
    if ids_range_mapped() {
        assert_eq!(m["out/script-name"].uid, 1000);
    }
    assert_eq!(m["out/script-name"].content, b"/dev/pipes/EOF\n");
}

#[test]
fn add_unpacks_a_local_tar_archive_with_its_owners_confined_to_the_destination() {
    use crate::common::rawtar::{dir, file, gzip, symlink, tar, M};
    let c = Ctx::new();
    let owned = |m: M, uid: u64, gid: u64, mode: u32| M {
        uid,
        gid,
        mode,
        ..m
    };
    let archive = gzip(&tar(&[
        owned(dir("pkg/"), 1234, 77, 0o750),
        owned(file("pkg/tool", b"tool\n"), 1234, 77, 0o755),
        // A link out of the destination, then a member through it: it
        // lands inside the destination, never in the builder's /etc.
        symlink("pkg/etc", "/etc"),
        file("pkg/etc/planted", b"x"),
    ]));
    // Named like no archive: Docker decides by content.
    write(&c.ctx().join("bundle.data"), &archive, 0o644);
    let m = c.ok("FROM base\nADD bundle.data /opt\nRUN cat /opt/pkg/tool > /said\n");
    assert_eq!(m["opt/pkg/tool"].content, b"tool\n");
    assert_eq!(m["opt/pkg/tool"].mode & 0o7777, 0o755);
    assert_eq!(m["opt/pkg"].mode & 0o7777, 0o750);
    if ids_range_mapped() {
        assert_eq!((m["opt/pkg/tool"].uid, m["opt/pkg/tool"].gid), (1234, 77));
    }
    assert_eq!(m["said"].content, b"tool\n");
    assert!(m.contains_key("opt/etc/planted"), "{:?}", m.keys());
    assert!(!m.contains_key("etc/planted"));
    assert!(!m.contains_key("opt/bundle.data"));

    // A member that climbs out is refused, naming it.
    let hostile = tar(&[file("../escape", b"x")]);
    write(&c.ctx().join("bad.tar"), &hostile, 0o644);
    let o = c.build("FROM base\nADD bad.tar /opt/\n");
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("../escape"), "{e}");
    assert!(!c.t.path().join("escape").exists());
}
