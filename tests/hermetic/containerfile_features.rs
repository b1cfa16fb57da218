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

    /// Builds `text` with a context, cache and output of the caller's
    /// choosing (else the test's), `args` added; the command is run by
    /// `run` (another umask, another environment).
    fn build_in(
        &self,
        text: &str,
        ctx: &Path,
        cache: &Path,
        out: &Path,
        args: &[&str],
        run: impl FnOnce(std::process::Command) -> std::process::Output,
    ) -> std::process::Output {
        let base = format!("oci:{}:base", self.t.path().join("img").display());
        let text = text.replace("FROM base", &format!("FROM {base}"));
        let file = ctx.join("Containerfile");
        write(&file, text.as_bytes(), 0o644);
        let mut c = shipyard();
        c.env("XDG_CACHE_HOME", cache)
            .arg("build")
            .arg("-f")
            .arg(&file)
            .arg(ctx)
            .args(args)
            .arg("--output")
            .arg(format!("oci:{}", out.display()));
        run(c)
    }

    /// `build`, with `args`; its stderr (it must succeed).
    fn rebuild(&self, text: &str, args: &[&str]) -> String {
        let t = self.t.path();
        let o = self.build_in(
            text,
            &self.ctx(),
            &t.join("cache"),
            &t.join("out"),
            args,
            |mut c| c.output().unwrap(),
        );
        assert_success(&o, "shipyard build -f Containerfile");
        stderr(&o)
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

/// The image config of `tag` in `layout`.
fn config(layout: &Path, tag: &str) -> serde_json::Value {
    let l = shipyard_image::oci::layout::Layout::open(layout).unwrap();
    let d = l.resolve(Some(tag)).unwrap();
    let img = shipyard_image::oci::image::Image::load(&l, &d).unwrap();
    serde_json::to_value(&img.config).unwrap()
}

#[test]
fn directories_copy_chown_and_workdir_make_are_their_owners_and_existing_ones_stay() {
    if !ids_range_mapped() {
        // A single id mapped gives no directory to another id.
        return;
    }
    let c = Ctx::new();
    write(&c.ctx().join("d/y"), b"y\n", 0o644);
    write(&c.ctx().join("d/sub/x"), b"x\n", 0o644);
    write(&c.ctx().join("f"), b"f\n", 0o644);
    // As buildah and BuildKit: what COPY --chown makes (missing parents,
    // the destination, directories copied) is the owner's, and so is what
    // WORKDIR makes after USER (parents too); a directory that is there
    // already keeps its owner, whoever copies into it or makes it WORKDIR.
    let m = c.ok("FROM base
RUN mkdir -p /exist/wd
COPY --chown=1000:1000 d /a/b/c/
COPY --chown=app f /p/q/r
COPY --chown=1000:1000 d /exist/
COPY f /plain/f
USER 1000:1000
WORKDIR /exist/wd
WORKDIR /w1/w2
");
    let owner = |p: &str| (m[p].uid, m[p].gid);
    for d in ["a", "a/b", "a/b/c", "a/b/c/sub", "p", "p/q", "w1", "w1/w2"] {
        assert_eq!(owner(d), (1000, 1000), "{d}");
    }
    assert_eq!(owner("a/b/c/sub/x"), (1000, 1000));
    assert_eq!(owner("p/q/r"), (1000, 1000));
    assert_eq!(owner("exist/sub"), (1000, 1000));
    for d in ["exist", "exist/wd", "plain"] {
        assert_eq!(owner(d), (0, 0), "{d}");
    }
    assert_eq!(m["a/b"].mode & 0o7777, 0o755);
}

#[test]
fn the_files_a_run_step_binds_the_hosts_over_are_left_out_of_its_layer() {
    let c = Ctx::new();
    // The base has no /etc/hosts nor /etc/resolv.conf: the sandbox made
    // empty ones to bind the host's onto, which are not the step's.
    let m = c.ok("FROM base\nRUN echo ran > /ran\n");
    assert_eq!(m["ran"].content, b"ran\n");
    for f in ["etc/hosts", "etc/resolv.conf"] {
        assert!(!m.contains_key(f), "{f} is in the image: {:?}", m.keys());
    }
    // Without the host's network nothing is bound there, and a step's
    // own /etc/hosts is its change.
    let m = c.ok("FROM base\nRUN --network=none echo '127.0.0.1 me' > /etc/hosts\n");
    assert_eq!(m["etc/hosts"].content, b"127.0.0.1 me\n");
}

#[test]
fn maintainer_and_workdir_are_written_to_the_config_as_the_peers_write_them() {
    let c = Ctx::new();
    c.ok("FROM base\nMAINTAINER Jo <jo@example.org>\nWORKDIR /root/\n");
    let cfg = config(&c.t.path().join("out"), "image");
    assert_eq!(cfg["author"], "Jo <jo@example.org>");
    assert_eq!(cfg["config"]["WorkingDir"], "/root/");
    assert!(cfg["config"]["Labels"].get("maintainer").is_none(), "{cfg}");
}

/// The steps a build ran (`==> ID (...): run: ...` lines), by rule id.
fn ran(err: &str) -> Vec<String> {
    err.lines()
        .filter_map(|l| l.strip_prefix("==> build."))
        .filter(|l| l.contains(": run: "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

#[test]
fn the_step_cache_keys_each_instruction_and_reruns_from_what_changed() {
    let c = Ctx::new();
    write(&c.ctx().join("a.txt"), b"one\n", 0o644);
    write(&c.ctx().join("unused.txt"), b"u\n", 0o644);
    let text = "FROM base
RUN echo before > /before
COPY a.txt /a.txt
RUN cat /a.txt > /after
ENV X=1
RUN echo last > /last
";
    let err = c.rebuild(text, &[]);
    assert_eq!(
        ran(&err),
        ["stage0-2", "stage0-3", "stage0-4", "stage0-6"],
        "{err}"
    );
    // Nothing changed: nothing runs, and no step says a word.
    let err = c.rebuild(text, &[]);
    assert!(ran(&err).is_empty(), "{err}");
    assert!(!err.contains(" | "), "{err}");
    // A file the build does not copy is not an input.
    write(&c.ctx().join("unused.txt"), b"changed\n", 0o644);
    assert!(ran(&c.rebuild(text, &[])).is_empty());
    // The copied file changed: that COPY and what follows run again.
    write(&c.ctx().join("a.txt"), b"two\n", 0o644);
    let err = c.rebuild(text, &[]);
    assert_eq!(ran(&err), ["stage0-3", "stage0-4", "stage0-6"], "{err}");
    assert!(
        err.contains("stage0-3 (stage0): run: the files it copies changed"),
        "{err}"
    );
    let m = members(&c.t.path().join("out"), "image");
    assert_eq!(m["after"].content, b"two\n");
    // An instruction that changes no file (ENV) still keys what follows.
    let err = c.rebuild(&text.replace("X=1", "X=2"), &[]);
    assert_eq!(ran(&err), ["stage0-6"], "{err}");
}

#[test]
fn errors_name_the_file_the_line_and_the_instruction() {
    let c = Ctx::new();
    let fails = |text: &str| {
        let o = c.build(text);
        assert!(!o.status.success(), "{text}");
        stderr(&o)
    };
    let e = fails("FROM base\nFROB x\n");
    assert!(
        e.contains("Containerfile:2: FROB: unknown instruction"),
        "{e}"
    );
    let e = fails("FROM base\n\nRUN --frob=1 true\n");
    assert!(
        e.contains("Containerfile:3: RUN: unknown flag: --frob"),
        "{e}"
    );
    let e = fails("FROM base\nCOPY --frob=1 a /a\n");
    assert!(
        e.contains("Containerfile:2: COPY: unknown flag: --frob"),
        "{e}"
    );
    let e = fails("FROM base\nCOPY nothere /a\n");
    assert!(
        e.contains("Containerfile:2: COPY: nothere: no such file in the build context"),
        "{e}"
    );
    // A RUN that fails: its exit code, the end of its log, where it is.
    let e = fails("FROM base\nRUN true\nRUN echo first; echo second >&2; exit 7\n");
    assert!(
        e.contains("build.stage0-3 (")
            && e.contains("Containerfile:3: RUN) failed with exit code 7"),
        "{e}"
    );
    let tail = e.split("last lines of its log").nth(1).unwrap_or("");
    // (stdout and stderr, as they came)
    assert!(tail.contains("first") && tail.contains("second"), "{e}");
    // A COPY whose owner the builder does not know: where it is, too.
    let e = fails("FROM base\nCOPY --chown=nobody <<EOF /x\nx\nEOF\n");
    assert!(e.contains("Containerfile:2: COPY)"), "{e}");
}

#[test]
fn a_target_builds_only_the_stages_it_needs() {
    let c = Ctx::new();
    let text = "FROM base AS broken
RUN echo broken-ran; exit 9

FROM base AS dep
RUN echo dep > /dep

FROM base AS good
COPY --from=dep /dep /dep
RUN echo good > /good

FROM broken
RUN echo never
";
    // The last stage (the default target) needs the broken one.
    let o = c.build(text);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("failed with exit code 9"),
        "{}",
        stderr(&o)
    );
    let err = c.rebuild(text, &["--target", "good"]);
    assert!(!err.contains("broken"), "{err}");
    assert!(!err.contains("never"), "{err}");
    assert_eq!(ran(&err), ["dep-5", "good-8", "good-9"], "{err}");
    // The image is named after its target.
    let m = members(&c.t.path().join("out"), "good");
    assert_eq!(m["dep"].content, b"dep\n");
    assert_eq!(m["good"].content, b"good\n");
    // A target that is no stage is refused.
    let o = c.build_in(
        text,
        &c.ctx(),
        &c.t.path().join("cache"),
        &c.t.path().join("out"),
        &["--target", "nosuch"],
        |mut c| c.output().unwrap(),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nosuch"), "{}", stderr(&o));
}

#[test]
fn the_same_containerfile_gives_the_same_digest_elsewhere_and_honours_source_date_epoch() {
    let c = Ctx::new();
    let text = "FROM base
COPY app /opt/app
RUN mkdir -p /var/made && echo made > /var/made/f
WORKDIR /srv/www
";
    let t = c.t.path();
    let fill = |ctx: &Path| {
        write(&ctx.join("app/bin/run"), b"#!/bin/sh\n", 0o755);
        write(&ctx.join("app/README"), b"r\n", 0o644);
    };
    fill(&c.ctx());
    let digest = |out: &Path| {
        let l = shipyard_image::oci::layout::Layout::open(out).unwrap();
        l.resolve(Some("image")).unwrap().digest().to_string()
    };
    let o = c.build_in(
        text,
        &c.ctx(),
        &t.join("cache"),
        &t.join("o1"),
        &[],
        |mut c| c.env_remove("SOURCE_DATE_EPOCH").output().unwrap(),
    );
    assert_success(&o, "first build");
    // Another context directory, another cache, another umask.
    let other = t.join("elsewhere/ctx");
    fill(&other);
    let o = c.build_in(
        text,
        &other,
        &t.join("cache2"),
        &t.join("o2"),
        &[],
        |mut c| {
            c.env_remove("SOURCE_DATE_EPOCH");
            with_umask(0o077, c)
        },
    );
    assert_success(&o, "second build");
    assert_eq!(digest(&t.join("o1")), digest(&t.join("o2")));
    // SOURCE_DATE_EPOCH: the config's dates and the layers' mtimes.
    let o = c.build_in(
        text,
        &c.ctx(),
        &t.join("cache"),
        &t.join("o3"),
        &[],
        |mut c| c.env("SOURCE_DATE_EPOCH", "1700000000").output().unwrap(),
    );
    assert_success(&o, "build with SOURCE_DATE_EPOCH");
    assert_ne!(digest(&t.join("o1")), digest(&t.join("o3")));
    let cfg = config(&t.join("o3"), "image");
    assert_eq!(cfg["created"], "2023-11-14T22:13:20Z", "{cfg}");
    let m = members(&t.join("o3"), "image");
    for p in ["opt/app/bin/run", "var/made/f", "srv/www"] {
        assert!(m[p].mtime <= 1_700_000_000, "{p}: {}", m[p].mtime);
    }
    assert_eq!(m["var/made/f"].mtime, 1_700_000_000);
}

/// Hard links among the files one COPY copies stay links, from the
/// context and from a stage, as BuildKit and buildah keep them (they
/// were copied as separate files: twice the bytes, and a tree that
/// differed from the peers').
#[test]
fn copy_keeps_hard_links() {
    let c = Ctx::new();
    let d = c.ctx().join("d");
    std::fs::create_dir_all(&d).unwrap();
    write(&d.join("a"), b"same bytes\n", 0o644);
    std::fs::hard_link(d.join("a"), d.join("b")).unwrap();
    c.ok("FROM base AS s\nCOPY d /d\nFROM base\nCOPY d /ctx\nCOPY --from=s /d /staged\n");
    let out = shipyard()
        .arg("manifest")
        .arg(format!("oci:{}:image", c.t.path().join("out").display()))
        .output()
        .unwrap();
    assert_success(&out, "shipyard manifest");
    let text = String::from_utf8_lossy(&out.stdout);
    for dir in ["ctx", "staged"] {
        let line = |name: &str| {
            (text.lines())
                .find(|l| l.starts_with(&format!("/{dir}/{name} ")))
                .unwrap_or_else(|| panic!("no /{dir}/{name} in {text}"))
                .to_string()
        };
        assert!(line("a").contains("type=file"), "{}", line("a"));
        assert!(
            line("b").contains("type=hardlink") && line("b").contains(&format!("link={dir}/a")),
            "{}",
            line("b")
        );
    }
}

/// `COPY --chown` to another id: given where a range is mapped; without
/// one, the build stops and says why and what to do (it said "Invalid
/// argument").
#[test]
fn copy_chown_without_a_range_says_why() {
    let c = Ctx::new();
    write(&c.ctx().join("f"), b"x\n", 0o644);
    let o = c.build("FROM base\nCOPY --chown=1234:1234 f /f\n");
    if ids_range_mapped() {
        assert_success(&o, "COPY --chown");
    } else {
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(
            err.contains("Containerfile:2: COPY")
                && err.contains("cannot give it the owner 1234:1234")
                && err.contains("/etc/subuid"),
            "{err}"
        );
    }
}

/// A stage's last `COPY --from` links the staged files rather than copy
/// them; nothing may show it. A later step writing a copied file in
/// place, a `--chmod` or a `--chown`, must leave the other stages' files
/// as they were, and the image must be the one a copy (`--keep-builder`,
/// which never links) gives.
#[test]
fn copies_from_stages_are_independent_files_whatever_comes_after() {
    let c = Ctx::new();
    let text = "FROM base AS a
RUN mkdir -p /d && echo one > /d/f && echo big > /d/g && ln /d/g /d/h && chmod 0640 /d/g
FROM base AS b
COPY --from=a /d/f /f
RUN echo two >> /f
FROM base
COPY --from=a /d /copied
COPY --from=b /f /b-f
COPY --from=a --chmod=0600 /d/f /private
COPY --from=a /d /last
";
    let m = c.ok(text);
    assert_eq!(m["b-f"].content, b"one\ntwo\n");
    // The in-place append of stage b reached neither stage a's file nor
    // the final stage's copies of it.
    for p in ["copied/f", "last/f"] {
        assert_eq!(m[p].content, b"one\n", "{p}");
        assert_eq!(m[p].mode & 0o7777, 0o644, "{p}");
    }
    assert_eq!(m["private"].mode & 0o7777, 0o600);
    assert_eq!(m["last/g"].mode & 0o7777, 0o640);
    assert_eq!(m["last/g"].content, b"big\n");
    // Hard links among the copied files stay links, to their own copy.
    let lay = shipyard()
        .arg("manifest")
        .arg(format!("oci:{}:image", c.t.path().join("out").display()))
        .output()
        .unwrap();
    assert_success(&lay, "shipyard manifest");
    let listing = String::from_utf8_lossy(&lay.stdout).into_owned();
    assert!(
        listing
            .lines()
            .any(|l| l.contains("/last/h") && l.contains("hardlink")),
        "{listing}"
    );
    let linked = digest_of_image(&c.t.path().join("out"));
    // The same build where every file is copied gives the same image.
    let t = c.t.path();
    let kept = t.join("kept");
    let o = c.build_in(
        text,
        &c.ctx(),
        &t.join("cache2"),
        &kept,
        &["--keep-builder", "--no-cache"],
        |mut cmd| {
            // The kept builder goes in the test's directory.
            std::fs::create_dir_all(t.join("state")).unwrap();
            cmd.env("TMPDIR", t.join("state")).output().unwrap()
        },
    );
    assert_success(&o, "shipyard build -f --keep-builder");
    assert_eq!(linked, digest_of_image(&kept));
    // A last COPY --from that changes the mode copies: the file it would
    // share has another mode.
    let m = c.ok("FROM base AS a
RUN mkdir -p /d && echo one > /d/f
FROM base
COPY --from=a --chmod=0600 /d/f /private
");
    assert_eq!(m["private"].mode & 0o7777, 0o600);
    assert_eq!(m["private"].content, b"one\n");
}

fn digest_of_image(layout: &Path) -> String {
    let l = shipyard_image::oci::layout::Layout::open(layout).unwrap();
    l.resolve(Some("image")).unwrap().digest().to_string()
}
