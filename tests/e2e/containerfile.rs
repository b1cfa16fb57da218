//! `shipyard build -f Containerfile` builds what `buildah bud` and BuildKit
//! (`DOCKER_BUILDKIT=1 docker build`, Debian's docker.io) build from the
//! same Containerfile and context: the final image's file tree (its
//! `shipyard manifest`, mtimes aside: shipyard clamps them to
//! SOURCE_DATE_EPOCH) and its config (Env, Entrypoint, Cmd, User,
//! WorkingDir, ExposedPorts, Volumes, Labels but buildah's
//! `io.buildah.version`, StopSignal, Healthcheck, OnBuild, and the top-level
//! author), and the image runs under podman. buildah builds in Docker's
//! format (`--format docker`): in its default OCI format it drops
//! HEALTHCHECK and ONBUILD with a warning, which is buildah's choice, not the
//! Containerfile's meaning.
//!
//! The corpus is written for these tests, on the two-images example's
//! small base (an `oci:` layout for shipyard and buildah, `docker load`ed
//! for BuildKit: the FROM line is rewritten per tool) and on the bookworm
//! base (usrmerged: `/lib -> usr/lib`).
//!
//! Intended differences, each handled where it shows:
//! - the mount points each tool's RUN sandbox leaves behind when the base
//!   lacks them (empty `/dev`, `/proc`, `/sys`, `/run`, buildah's
//!   `/etc/hostname`) differ from tool to tool and are left out of the
//!   comparison (`MOUNT_POINTS`); none leaves the `/etc/hosts` and
//!   `/etc/resolv.conf` it binds the host's onto, and that is compared;
//! - syntax the peers installed here do not read (buildah 1.28 and the
//!   Dockerfile frontend built into docker 20.10 know no heredocs, no
//!   `RUN --network` and no `COPY --link`) is rewritten for them into
//!   what means the same (`Case::peer_edits`);
//! - BuildKit lets a stage built `FROM` another stage see that stage's
//!   ARGs; buildah and shipyard follow the Dockerfile reference (an ARG is
//!   scoped to its stage): asserted in `argscope`.
//!
//! A missing peer or a dockerd that does not answer fails the test.

use crate::common::registry::{lowercase_tempdir, podman, podman_run, remove_at_exit, require};
use crate::common::*;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

const DOCKER: &str = "/usr/bin/docker";

/// Empty files and directories a RUN sandbox mounts over; each tool leaves
/// a different set of them in its layers when the base has none (shipyard
/// `/dev` and `/proc`, BuildKit `/sys` too, buildah `/run` and
/// `/etc/hostname` as well).
const MOUNT_POINTS: &[&str] = &["/dev", "/proc", "/sys", "/run", "/etc/hostname"];

#[derive(Clone, Copy, PartialEq)]
enum Base {
    /// examples/two-images/make-base.sh's tree: dash, coreutils, /etc/passwd.
    Small,
    /// The debootstrap'd bookworm, usrmerged.
    Bookworm,
}

struct Case {
    name: &'static str,
    base: Base,
    /// The Containerfile; `@BASE@` is the base image.
    containerfile: &'static str,
    /// (from, to) edits that make the Containerfile one the peers here read.
    peer_edits: &'static [(&'static str, &'static str)],
    /// Context files (path, content).
    files: &'static [(&'static str, &'static str)],
    /// Flags for every tool (`--build-arg`, `--target`).
    flags: &'static [&'static str],
    /// What podman runs (argv after the image's entrypoint) and the last
    /// line it must print.
    runs: (&'static [&'static str], &'static str),
}

fn docker() -> Command {
    let mut c = Command::new(DOCKER);
    c.env("DOCKER_BUILDKIT", "1");
    c
}

fn run(c: &mut Command, what: &str) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_success(&out, what);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The bases, made once per test binary: (shipyard/buildah reference,
/// BuildKit name).
fn base(b: Base) -> (String, String) {
    static SMALL: OnceLock<(String, String)> = OnceLock::new();
    static BOOKWORM: OnceLock<(String, String)> = OnceLock::new();
    let (cell, oci, name) = match b {
        Base::Small => (&SMALL, None, "shipyard-cf-small:base"),
        Base::Bookworm => (&BOOKWORM, Some(bookworm()), "shipyard-cf-bookworm:merged"),
    };
    cell.get_or_init(|| {
        require("skopeo");
        let ready = docker().arg("info").output().unwrap();
        assert!(
            ready.status.success(),
            "no dockerd answers (DOCKER_HOST={:?}): {}",
            std::env::var("DOCKER_HOST").ok(),
            String::from_utf8_lossy(&ready.stderr)
        );
        // buildah takes an `oci:` path as a name: lowercase only.
        let dir = lowercase_tempdir("cf-base").keep();
        remove_at_exit(&dir);
        let oci = oci.unwrap_or_else(|| {
            let tree = dir.join("tree");
            run(
                Command::new("bash")
                    .arg(src_dir().join("examples/two-images/make-base.sh"))
                    .arg(&tree),
                "make-base.sh",
            );
            let r = format!("oci:{}:base", dir.join("oci").display());
            diff_scratch(&tree, &r, &[]);
            r
        });
        let tar = dir.join("base.tar");
        run(
            Command::new("skopeo").args([
                "copy",
                "-q",
                &oci,
                &format!("docker-archive:{}:{name}", tar.display()),
            ]),
            "skopeo copy of the base to a docker-archive",
        );
        run(docker().arg("load").arg("-i").arg(&tar), "docker load");
        std::fs::remove_file(&tar).unwrap();
        (oci, name.to_string())
    })
    .clone()
}

fn bookworm() -> String {
    let p = std::env::var_os("SHIPYARD_DISTRO_BASES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/shipyard-tests/images"));
    assert!(
        p.join("index.json").is_file(),
        "no distro bases at {}",
        p.display()
    );
    format!("oci:{}:bookworm-merged", p.display())
}

/// The manifest without mtimes and without the mount points the base
/// does not have.
fn tree(reference: &str, base: &str) -> String {
    let had = strip_mtimes(&ok(["manifest", base]));
    let has = |p: &str| had.lines().any(|l| l.split(' ').next() == Some(p));
    strip_mtimes(&ok(["manifest", reference]))
        .lines()
        .filter(|l| {
            let p = l.split(' ').next().unwrap_or("");
            let empty = l.contains(" type=dir ") || l.contains(" size=0 ");
            !(MOUNT_POINTS.contains(&p) && empty && !has(p))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The config fields compared, as JSON.
fn config(reference: &str) -> serde_json::Value {
    let text = run(
        Command::new("skopeo").args(["inspect", "--config", reference]),
        "skopeo inspect --config",
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let c = &v["config"];
    let mut labels = c["Labels"].clone();
    if let Some(m) = labels.as_object_mut() {
        m.remove("io.buildah.version");
        if m.is_empty() {
            labels = serde_json::Value::Null;
        }
    }
    let mut out = serde_json::json!({ "Labels": labels, "author": v["author"] });
    for k in [
        "Env",
        "Entrypoint",
        "Cmd",
        "User",
        "WorkingDir",
        "ExposedPorts",
        "Volumes",
        "StopSignal",
        "Healthcheck",
        "OnBuild",
    ] {
        let f = &c[k];
        let empty =
            f.is_null() || f.as_str() == Some("") || f.as_object().is_some_and(|o| o.is_empty());
        out[k] = if empty {
            serde_json::Value::Null
        } else {
            f.clone()
        };
    }
    out
}

struct Built {
    _t: tempfile::TempDir,
    /// Each tool's image: shipyard, buildah, BuildKit.
    refs: [String; 3],
    base: String,
}

/// The three tools' images of `case`; None where shipyard (and so the
/// peers) cannot build it: a case that gives files to other owners, as a
/// user without a subordinate id range.
fn build(case: &Case) -> Option<Built> {
    require("buildah");
    let (oci_base, docker_base) = base(case.base);
    let t = lowercase_tempdir(&format!("cf-{}", case.name));
    let ctx = t.path().join("ctx");
    for (p, c) in case.files {
        write(&ctx.join(p), c.as_bytes(), 0o644);
    }
    let ours = case.containerfile.replace("@BASE@", &oci_base);
    write(&ctx.join("Containerfile"), ours.as_bytes(), 0o644);
    let mut peers = case.containerfile.to_string();
    for (a, b) in case.peer_edits {
        assert!(peers.contains(a), "{}: no {a:?} to edit", case.name);
        peers = peers.replace(a, b);
    }
    let for_buildah = t.path().join("Containerfile.buildah");
    write(
        &for_buildah,
        peers.replace("@BASE@", &oci_base).as_bytes(),
        0o644,
    );
    let for_docker = t.path().join("Dockerfile");
    write(
        &for_docker,
        peers.replace("@BASE@", &docker_base).as_bytes(),
        0o644,
    );
    let secret = t.path().join("tok");
    write(&secret, b"s3cret", 0o644);
    let secret_flag = format!("id=tok,src={}", secret.display());

    let sy = t.path().join("sy");
    let out = shipyard()
        .env("XDG_CACHE_HOME", t.path().join("cache"))
        .arg("build")
        .arg("-f")
        .arg(ctx.join("Containerfile"))
        .arg(&ctx)
        .args(case.flags)
        .args(["--secret", &secret_flag])
        .arg("--output")
        .arg(format!("oci:{}", sy.display()))
        .output()
        .unwrap();
    if !out.status.success() && !ids_range_mapped() {
        // A single id mapped: no file can be given to another owner, and
        // the build says so (neither peer can build these without a
        // range either).
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("is not mapped in the build's user namespace"),
            "{}: {err}",
            case.name
        );
        return None;
    }
    assert_success(&out, &format!("{}: shipyard build -f", case.name));

    let store = t.path().join("buildah");
    let buildah = || {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(store.join("root"))
            .arg("--runroot")
            .arg(store.join("run"))
            .args(["--storage-driver", "vfs"]);
        c
    };
    let tag = format!("localhost/shipyard-cf-{}", case.name);
    run(
        buildah()
            .args([
                "bud",
                "--format",
                "docker",
                "--network",
                "none",
                "--layers=false",
            ])
            .arg("-f")
            .arg(&for_buildah)
            .args(case.flags)
            .args(["--secret", &secret_flag, "-t", &tag])
            .arg(&ctx),
        &format!("{}: buildah bud", case.name),
    );
    // A docker-archive keeps the Docker config as buildah wrote it (a push
    // to an OCI layout converts it and drops Healthcheck).
    let b = t.path().join("b.tar");
    run(
        buildah().args(["push", &tag, &format!("docker-archive:{}", b.display())]),
        "buildah push",
    );
    run(buildah().args(["rmi", "-a", "-f"]), "buildah rmi");

    let dtag = format!("shipyard-cf-{}-{}", case.name, std::process::id());
    run(
        docker()
            .args(["build", "-q", "--network", "none", "-f"])
            .arg(&for_docker)
            .args(case.flags)
            .args(["--secret", &secret_flag, "-t", &dtag])
            .arg(&ctx),
        &format!("{}: BuildKit docker build", case.name),
    );
    let d = t.path().join("d.tar");
    run(
        docker().args(["save", "-o"]).arg(&d).arg(&dtag),
        "docker save",
    );
    let _ = docker().args(["rmi", "-f", &dtag]).output();
    // buildah's store holds files of other ids in a user namespace.
    if !is_root() {
        let _ = Command::new("buildah")
            .args(["unshare", "rm", "-rf"])
            .arg(&store)
            .output();
    }
    Some(Built {
        refs: [
            format!("oci:{}:image", sy.display()),
            format!("docker-archive:{}", b.display()),
            format!("docker-archive:{}", d.display()),
        ],
        base: oci_base,
        _t: t,
    })
}

/// Builds `case` with the three tools and compares; `buildkit_tree`
/// adjusts BuildKit's tree where it differs by design.
fn check(case: &Case, buildkit_tree: impl Fn(String) -> String) {
    let Some(built) = build(case) else {
        return;
    };
    let [sy, b, d] = &built.refs;
    let ours = tree(sy, &built.base);
    same(
        &ours,
        &tree(b, &built.base),
        &format!("{}: buildah", case.name),
    );
    same(
        &ours,
        &buildkit_tree(tree(d, &built.base)),
        &format!("{}: BuildKit", case.name),
    );
    let c = config(sy);
    assert_eq!(c, config(b), "{}: config differs from buildah's", case.name);
    assert_eq!(
        c,
        config(d),
        "{}: config differs from BuildKit's",
        case.name
    );
    let (argv, says) = case.runs;
    let out = podman(&podman_runtime())
        .args(podman_run(sy, argv))
        .output()
        .unwrap();
    if !out.status.success() && !is_root() && !ids_range_mapped() {
        // Without a subordinate range podman cannot hold files of other
        // owners (uid 1000 here); it says so.
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("insufficient UIDs or GIDs"), "{err}");
        return;
    }
    assert_success(&out, &format!("{}: podman run", case.name));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim_end().lines().last(),
        Some(says),
        "{}",
        case.name
    );
}

/// Fails with the lines only one of the two trees has.
fn same(ours: &str, theirs: &str, what: &str) {
    let only = |a: &str, b: &str| -> Vec<String> {
        a.lines()
            .filter(|l| !b.lines().any(|m| m == *l))
            .map(String::from)
            .collect()
    };
    let (mine, peer) = (only(ours, theirs), only(theirs, ours));
    assert!(
        mine.is_empty() && peer.is_empty(),
        "{what}: the trees differ\nonly shipyard's:\n{}\nonly the peer's:\n{}",
        mine.join("\n"),
        peer.join("\n")
    );
}

fn podman_runtime() -> PathBuf {
    static RT: OnceLock<PathBuf> = OnceLock::new();
    RT.get_or_init(|| {
        let d = tempfile::tempdir().unwrap().keep();
        remove_at_exit(&d);
        d
    })
    .clone()
}

/// The seed's shape: a builder stage, and a runtime stage that copies its
/// one artifact from stage 0 into its WORKDIR.
#[test]
fn seed_multistage() {
    check(
        &Case {
            name: "seed",
            base: Base::Small,
            containerfile: r#"FROM @BASE@
WORKDIR /go/src/github.com/alexellis/href-counter/
RUN mkdir -p vendor && echo golang.org/x/net/html > vendor/modules.txt
COPY app.sh .
RUN cat app.sh > app && chmod 0755 app

FROM @BASE@
RUN mkdir -p /etc/ssl/certs && echo ca > /etc/ssl/certs/ca-certificates.crt
WORKDIR /root
COPY --from=0 /go/src/github.com/alexellis/href-counter/app .
CMD ["./app"]
"#,
            peer_edits: &[],
            files: &[("app.sh", "#!/bin/sh\necho counted 3 links\n")],
            flags: &[],
            runs: (&[], "counted 3 links"),
        },
        |t| t,
    );
}

/// The reference workload of `benches/multistage.sh` (its file, with a
/// 5 MiB file where the bench has 50): a builder stage that writes 2,000
/// small files, a big file with a symlink and a hard link to it and a
/// directory of mode 0750, and deletes a base file; the final stage takes
/// `/out` from it.
#[test]
fn reference_workload() {
    check(
        &Case {
            name: "reference",
            base: Base::Small,
            containerfile: r#"FROM @BASE@ AS builder
COPY src /src
RUN mkdir -p /out/small && cat /src/input > /out/input && i=0 && while [ $i -lt 2000 ]; do echo $i > /out/small/f$i; i=$((i+1)); done && head -c 5242880 /dev/zero > /out/big && ln -s big /out/link && ln /out/big /out/hard && chmod 0750 /out/small && rm /etc/motd
FROM @BASE@
COPY --from=builder /out /out
CMD ["cat", "/out/input", "/out/small/f1999"]
"#,
            peer_edits: &[],
            files: &[("src/input", "v0\n")],
            flags: &[],
            runs: (&[], "1999"),
        },
        |t| t,
    );
}

/// Each supported instruction and flag once.
#[test]
fn every_instruction() {
    check(
        &Case {
            name: "every",
            base: Base::Small,
            containerfile: r#"# escape=`
ARG GREETING=hello
FROM @BASE@ AS build
ARG GREETING
ARG FLAVOUR=plain
ENV A=1 B="two words"
ENV C 3
SHELL ["/bin/sh", "-c"]
RUN mkdir -p /out && echo "$GREETING $FLAVOUR $A $B $C" > /out/greeting
RUN ["/bin/sh", "-c", "echo exec > /out/exec"]
RUN --mount=type=cache,target=/cache echo cached > /cache/x && cat /cache/x > /out/cached
RUN --mount=type=secret,id=tok cat /run/secrets/tok > /out/secret-seen
RUN --network=none echo offline > /out/net
RUN --mount=type=bind,source=src,target=/mnt/src cat /mnt/src/a.txt > /out/bound
RUN --mount=type=tmpfs,target=/scratch echo t > /scratch/t && cat /scratch/t > /out/tmpfs
RUN echo one `
    two > /out/continued
RUN <<EOT
echo heredoc > /out/heredoc
echo second line >> /out/heredoc
EOT

FROM @BASE@
ARG FLAVOUR=final
COPY src/*.txt /app/
COPY --chown=1000:1000 --chmod=0640 conf/app.conf /etc/app.conf
COPY --link src/sub /app/sub
COPY --from=build /out /out
ADD added.txt /app/added.txt
WORKDIR /app
USER 1000:1000
WORKDIR data
RUN echo "$FLAVOUR" > flavour
ENV PATH=/app/bin:/usr/bin:/bin
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /app/data/flavour"]
EXPOSE 8080 53/udp
VOLUME /data
LABEL org.example.name="every" org.example.kind=test
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=3s --retries=2 CMD cat /app/data/flavour
ONBUILD RUN echo triggered
"#,
            peer_edits: &[
                ("RUN --network=none echo", "RUN echo"),
                ("COPY --link ", "COPY "),
                (
                    "RUN <<EOT\necho heredoc > /out/heredoc\necho second line >> /out/heredoc\nEOT\n",
                    "RUN echo heredoc > /out/heredoc && echo second line >> /out/heredoc\n",
                ),
            ],
            files: &[
                ("src/a.txt", "one\n"),
                ("src/b.txt", "two\n"),
                ("src/skip.log", "skip\n"),
                ("src/sub/c.txt", "three\n"),
                ("conf/app.conf", "cfg\n"),
                ("added.txt", "added\n"),
                (".dockerignore", "src/*.log\n"),
            ],
            flags: &["--build-arg", "FLAVOUR=arg"],
            runs: (&[], "arg"),
        },
        |t| t,
    );
}

/// ARGs: global ones seen only where a stage declares them, per-stage
/// defaults, --build-arg, ENV from an ARG inherited by a child stage.
#[test]
fn argscope() {
    let case = Case {
        name: "argscope",
        base: Base::Small,
        containerfile: r#"ARG GLOBAL=g-default
ARG OVERRIDDEN=o-default
FROM @BASE@ AS one
ARG GLOBAL
RUN mkdir -p /r && echo "global=$GLOBAL overridden=$OVERRIDDEN" > /r/one
ARG LOCAL=l-default
ENV FROM_ENV=$LOCAL
RUN echo "local=$LOCAL env=$FROM_ENV" >> /r/one

FROM one
RUN echo "inherited-env=$FROM_ENV local=$LOCAL global=$GLOBAL" > /r/two
ARG OVERRIDDEN
ARG LOCAL=second
ENV FROM_ENV=override
RUN echo "overridden=$OVERRIDDEN local=$LOCAL env=$FROM_ENV" >> /r/two
LABEL version=$OVERRIDDEN
CMD ["cat", "/r/one", "/r/two"]
"#,
        peer_edits: &[],
        files: &[],
        flags: &["--build-arg", "OVERRIDDEN=cli"],
        runs: (&[], "overridden=cli local=second env=override"),
    };
    // BuildKit carries stage one's ARGs (LOCAL, GLOBAL) into the stage
    // built FROM it; the reference and buildah do not (the line says
    // `local= global=`). Only /r/two differs, by those values.
    let ours = "inherited-env=l-default local= global=\noverridden=cli local=second env=override\n";
    let bk = "inherited-env=l-default local=l-default global=g-default\noverridden=cli local=second env=override\n";
    let line = |s: &str| {
        format!(
            "/r/two type=file mode=0644 uid=0 gid=0 size={} sha256={}\n",
            s.len(),
            sha256_hex(s.as_bytes())
        )
    };
    check(&case, |t| {
        assert!(
            t.contains(&line(bk)),
            "BuildKit's /r/two is not the expected one:\n{t}"
        );
        t.replace(&line(bk), &line(ours))
    });
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// USER and WORKDIR: a WORKDIR made after USER belongs to that user, a
/// relative WORKDIR goes on from the last one, COPY's files belong to
/// root unless --chown says otherwise (USER does not change that).
#[test]
fn user_and_workdir() {
    check(
        &Case {
            name: "userwd",
            base: Base::Small,
            containerfile: r#"FROM @BASE@
RUN mkdir -p /srv/app /home
WORKDIR /srv
USER 1000:1000
WORKDIR app/data
RUN echo as-user > made-by-user
USER 0:0
WORKDIR ../logs
RUN echo root > made-by-root
USER 1000
WORKDIR /home/app
COPY --chown=1000 f.txt ./
COPY f.txt ./root-owned.txt
USER 1000:1000
CMD ["cat", "/srv/app/data/made-by-user"]
"#,
            peer_edits: &[],
            files: &[("f.txt", "hi\n")],
            flags: &[],
            runs: (&[], "as-user"),
        },
        |t| t,
    );
}

/// .dockerignore: patterns, `**`, exceptions, the Containerfile itself.
#[test]
fn dockerignore() {
    check(
        &Case {
            name: "ignore",
            base: Base::Small,
            containerfile: "FROM @BASE@\nCOPY . /ctx/\nCOPY keep /keep\nCMD [\"cat\", \"/keep/b.tmp\"]\n",
            peer_edits: &[],
            files: &[
                ("README.md", "r\n"),
                ("docs/a.md", "d\n"),
                ("build/out.o", "x\n"),
                ("keep/a.tmp", "k\n"),
                ("keep/b.tmp", "kept\n"),
                ("secret.key", "s\n"),
                ("code.c", "c\n"),
                (
                    ".dockerignore",
                    "# comment\n*.md\n!README.md\nbuild\n**/*.tmp\n!keep/b.tmp\nsecret.key\nContainerfile*\n.dockerignore\n",
                ),
            ],
            flags: &[],
            runs: (&[], "kept"),
        },
        |t| t,
    );
}

/// COPY --chown through the usrmerged base's /lib -> usr/lib: the file
/// lands in /usr/lib, the symlink stays.
#[test]
fn chown_through_usrmerge_symlink() {
    check(
        &Case {
            name: "usrmerge",
            base: Base::Bookworm,
            containerfile: r#"FROM @BASE@
COPY --chown=1000:1000 libfoo.so.1 /lib/x86_64-linux-gnu/libfoo.so.1
COPY --chown=1000:1000 --chmod=0600 foo.conf /lib/foo.conf
RUN ln -s /lib/x86_64-linux-gnu/libfoo.so.1 /usr/lib/libfoo.so
USER 1000:1000
WORKDIR /lib/x86_64-linux-gnu
CMD ["cat", "libfoo.so.1"]
"#,
            peer_edits: &[],
            files: &[("libfoo.so.1", "lib\n"), ("foo.conf", "conf\n")],
            flags: &[],
            runs: (&[], "lib"),
        },
        |t| t,
    );
}

/// What COPY --chown and WORKDIR make, and what they leave: missing
/// parents and copied directories are the owner's, an existing directory
/// keeps its owner; WORKDIR's text (a trailing `/`) goes into the config
/// as written; MAINTAINER is the author.
#[test]
fn ownership_of_made_directories_and_config_text() {
    check(
        &Case {
            name: "owners",
            base: Base::Small,
            containerfile: r#"FROM @BASE@
MAINTAINER Jo <jo@example.org>
RUN mkdir -p /exist/wd /root
COPY --chown=1000:1000 d /a/b/c/
COPY --chown=1000:1000 f /p/q/r
COPY --chown=1000:1000 f /p2/q/
COPY --chown=1000:1000 d /exist/
COPY f /plain/dir/f
USER 1000:1000
WORKDIR /exist/wd
WORKDIR /w1/w2/w3
RUN echo here > made
WORKDIR /root/
CMD ["cat", "/w1/w2/w3/made"]
"#,
            peer_edits: &[],
            files: &[("d/y", "y\n"), ("d/sub/x", "x\n"), ("f", "f\n")],
            flags: &[],
            runs: (&[], "here"),
        },
        |t| t,
    );
}

/// A Containerfile build uses the same engine as a spec: one runner
/// shares its steps with `--cache-to` and pushes the image with `--push`;
/// another, with an empty cache of its own, finds every step with
/// `--cache-from`, runs none, and builds the same digest; skopeo reads
/// the pushed image; `--explain` says where each step came from.
#[test]
fn a_containerfile_build_shares_its_cache_and_pushes_through_a_registry() {
    let reg = crate::common::registry::Registry::start();
    let (oci_base, _) = base(Base::Small);
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path().join("ctx");
    write(&ctx.join("src/input"), b"v1\n", 0o644);
    write(
        &ctx.join("Containerfile"),
        format!(
            "FROM {oci_base} AS build\nCOPY src /src\nRUN echo rule-ran >&2 && mkdir -p /out && cat /src/input > /out/value\n\
             FROM {oci_base}\nCOPY --from=build /out /out\nCMD [\"cat\", \"/out/value\"]\n"
        )
        .as_bytes(),
        0o644,
    );
    let cache = reg.url("ci/cf-cache");
    let pushed = reg.url("ci/app:1");
    let build = |cache_dir: &str, out: &str, flags: &[&str]| {
        let o = shipyard()
            .env("XDG_CACHE_HOME", t.path().join(cache_dir))
            .args(["build", "--tls-verify=false", "-f"])
            .arg(ctx.join("Containerfile"))
            .arg(&ctx)
            .args(flags)
            .arg("--output")
            .arg(format!("oci:{}", t.path().join(out).display()))
            .output()
            .unwrap();
        assert_success(&o, &format!("shipyard build -f {flags:?}"));
        o
    };
    let a = build("cache-a", "a", &["--cache-to", &cache, "--push", &pushed]);
    let err = String::from_utf8_lossy(&a.stderr);
    assert!(err.contains("rule-ran"), "{err}");
    let digest = |out: &str| {
        let l = shipyard_image::oci::layout::Layout::open(t.path().join(out)).unwrap();
        l.resolve(Some("image")).unwrap().digest().to_string()
    };
    // The pushed image is the built one, as a registry client reads it.
    let inspect = run(
        Command::new("skopeo").args(["inspect", "--tls-verify=false", &pushed]),
        "skopeo inspect of the pushed image",
    );
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(
        v["Digest"].as_str(),
        Some(digest("a").as_str()),
        "{inspect}"
    );

    // Another runner: nothing runs, the same image comes out.
    let b = build("cache-b", "b", &["--cache-from", &cache, "--explain"]);
    let err = String::from_utf8_lossy(&b.stderr);
    assert!(!err.contains("rule-ran"), "{err}");
    assert_eq!(digest("a"), digest("b"));
    // `--explain` gives each instruction's step and where it came from.
    let explain = String::from_utf8_lossy(&b.stdout);
    for step in [
        "build.build-3 (build)\tcached",
        "build.stage1-5 (stage1)\tcached",
    ] {
        assert!(explain.contains(step), "{explain}");
    }
}
