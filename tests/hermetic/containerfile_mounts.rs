//! `shipyard build -f Containerfile`: what a step reads from outside its
//! stage: `COPY --from=IMAGE` and `RUN --mount=type=bind,from=IMAGE` (an
//! image reference, pulled or read once per build), binds of the build
//! context, tmpfs mounts, and `ADD` of a URL. On the small base of
//! `containerfile_features`.

use crate::common::*;
use crate::containerfile_features::{members, stderr, Ctx};
use std::process::Output;

impl Ctx {
    /// Builds `text` as [`Ctx::build`] does, with `cmd` as shipyard (a
    /// wrapper that changes what the machine allows) and `extra` flags.
    fn build_by(&self, mut cmd: std::process::Command, text: &str, extra: &[&str]) -> Output {
        let base = format!("oci:{}:base", self.t.path().join("img").display());
        let text = text.replace("FROM base", &format!("FROM {base}"));
        let file = self.ctx().join("Containerfile");
        write(&file, text.as_bytes(), 0o644);
        cmd.env("XDG_CACHE_HOME", self.t.path().join("cache"))
            .arg("build")
            .arg("-f")
            .arg(&file)
            .arg(self.ctx())
            .arg("--output")
            .arg(format!("oci:{}", self.t.path().join("out").display()))
            .args(extra)
            .output()
            .unwrap()
    }

    /// An image `oci:DIR:TAG` in the test's directory, made from `files`.
    fn image(&self, tag: &str, files: &[(&str, &[u8])]) -> String {
        let tree = self.t.path().join(format!("tree-{tag}"));
        let _ = std::fs::remove_dir_all(&tree);
        for (p, c) in files {
            write(&tree.join(p), c, 0o644);
        }
        let r = format!("oci:{}:{tag}", self.t.path().join("other").display());
        diff_scratch(&tree, &r, &[]);
        r
    }
}

#[test]
fn copy_and_bind_from_an_image_read_its_files_and_its_digest_keys_them() {
    let c = Ctx::new();
    let r = c.image("v1", &[("data/hello", b"one\n"), ("data/sub/x", b"x\n")]);
    let text = format!(
        "FROM base
COPY --from={r} /data/hello /got
RUN --mount=type=bind,from={r},source=/data,target=/m cat /m/hello /m/sub/x > /said
"
    );
    let m = c.ok(&text);
    assert_eq!(m["got"].content, b"one\n");
    assert_eq!(m["said"].content, b"one\nx\n");
    // The mount point is no part of the image.
    assert!(!m.contains_key("m"), "{:?}", m.keys());

    // The same tag, other files: both steps run again and see them.
    c.image("v1", &[("data/hello", b"two\n"), ("data/sub/x", b"y\n")]);
    let m = c.ok(&text);
    assert_eq!(m["got"].content, b"two\n");
    assert_eq!(m["said"].content, b"two\ny\n");
}

#[test]
fn a_from_image_that_does_not_exist_fails_the_build_naming_it() {
    let c = Ctx::new();
    let missing = format!("oci:{}:nope", c.t.path().join("absent").display());
    let o = c.build(&format!("FROM base\nCOPY --from={missing} /a /a\n"));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains(&missing), "{e}");
}

#[test]
fn a_tmpfs_mount_is_empty_private_to_its_step_and_in_no_layer() {
    let c = Ctx::new();
    let m = c.ok("FROM base
RUN mkdir /out
RUN --mount=type=tmpfs,target=/scratch,size=1m echo kept > /scratch/f && cat /scratch/f > /out/said && \\
    if head -c 2000000 /dev/zero > /scratch/big 2>/dev/null; then echo unlimited; else echo full; fi > /out/size
RUN ls -A /scratch > /out/after
");
    assert_eq!(m["out/said"].content, b"kept\n");
    assert_eq!(m["out/size"].content, b"full\n");
    // The next step finds nothing there, and the image has no /scratch.
    assert_eq!(m["out/after"].content, b"");
    assert!(
        !m.keys().any(|k| k.starts_with("scratch")),
        "{:?}",
        m.keys()
    );
}

#[test]
fn without_mounts_a_tmpfs_is_an_empty_directory_emptied_after_its_step() {
    if !is_root() {
        return;
    }
    // As root in a Docker container: chroot, no CAP_SYS_ADMIN, no mounts.
    let c = Ctx::new();
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--bounding-set", "-sys_admin"]).arg(bin());
    let o = c.build_by(
        cmd,
        "FROM base
RUN --mount=type=tmpfs,target=/scratch echo kept > /scratch/f && cat /scratch/f > /said
RUN ls -A /scratch > /after
",
        &["--isolation", "chroot"],
    );
    assert_success(&o, "build at chroot without mounts");
    let e = stderr(&o);
    assert!(
        e.contains("isolation: chroot (no namespaces or mounts"),
        "{e}"
    );
    let m = members(&c.t.path().join("out"), "image");
    assert_eq!(m["said"].content, b"kept\n");
    assert_eq!(m["after"].content, b"");
    assert!(
        !m.keys().any(|k| k.starts_with("scratch")),
        "{:?}",
        m.keys()
    );
}

#[test]
fn a_bind_of_the_context_is_read_only_without_ignored_files_and_keys_only_what_it_mounts() {
    let c = Ctx::new();
    write(&c.ctx().join("a/f"), b"one\n", 0o644);
    write(&c.ctx().join("a/secret.txt"), b"hidden\n", 0o644);
    write(&c.ctx().join("b/other"), b"elsewhere\n", 0o644);
    write(&c.ctx().join(".dockerignore"), b"**/secret.txt\n", 0o644);
    let text = "FROM base
RUN --mount=type=bind,source=a,target=/m cat /m/f > /said && ls -A /m > /list && \\
    if echo x > /m/new 2>/dev/null; then echo writable; else echo read-only; fi > /ro
RUN --mount=type=bind,target=ctx ls -A ctx > /whole
";
    let m = c.ok(text);
    assert_eq!(m["said"].content, b"one\n");
    assert_eq!(m["list"].content, b"f\n");
    assert_eq!(m["ro"].content, b"read-only\n");
    let whole = String::from_utf8_lossy(&m["whole"].content).into_owned();
    assert!(whole.contains("Containerfile\na\nb\n"), "{whole}");
    assert!(
        !m.contains_key("m") && !m.contains_key("ctx"),
        "{:?}",
        m.keys()
    );

    // A change outside the mounted part: the first RUN is cached.
    write(&c.ctx().join("b/other"), b"changed\n", 0o644);
    let o = c.build(text);
    assert_success(&o, "rebuild");
    let e = stderr(&o);
    let line = |rule: &str| {
        (e.lines().find(|l| l.contains(rule)))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("==> build.stage0-2 ").ends_with(": cached"), "{e}");
    assert!(
        line("==> build.stage0-4 ")
            .ends_with("run: the part of the build context it mounts changed"),
        "{e}"
    );
    // In it: the step runs again and sees the change.
    write(&c.ctx().join("a/f"), b"two\n", 0o644);
    let m = c.ok(text);
    assert_eq!(m["said"].content, b"two\n");
}

#[test]
fn a_writable_bind_of_the_context_is_a_copy_whose_writes_go() {
    let c = Ctx::new();
    write(&c.ctx().join("a/f"), b"one\n", 0o644);
    let m = c.ok("FROM base
RUN --mount=type=bind,source=a,target=/m,rw echo more >> /m/f && echo new > /m/g && cat /m/f /m/g > /said
RUN ls -A /m > /after
RUN --mount=type=bind,source=a/f,target=/one cat /one > /file
RUN --mount=type=bind,source=./a/f,target=/one,rw echo x >> /one && cat /one > /file-rw
");
    assert_eq!(m["said"].content, b"one\nmore\nnew\n");
    assert_eq!(m["file"].content, b"one\n");
    assert_eq!(m["file-rw"].content, b"one\nx\n");
    assert_eq!(m["after"].content, b"");
    assert_eq!(std::fs::read(c.ctx().join("a/f")).unwrap(), b"one\n");
    assert!(!c.ctx().join("a/g").exists());
}

#[test]
fn a_bind_source_outside_the_context_or_missing_is_refused_naming_its_line() {
    let c = Ctx::new();
    std::os::unix::fs::symlink("/etc", c.ctx().join("link")).unwrap();
    for (source, want) in [
        ("../x", "outside the build context"),
        ("link", "outside the build context"),
        ("nothere", "in the build context"),
    ] {
        let o = c.build(&format!(
            "FROM base\n\nRUN --mount=type=bind,source={source},target=/m true\n"
        ));
        assert!(!o.status.success());
        let e = stderr(&o);
        assert!(
            e.contains(&format!(
                "Containerfile:3: RUN: --mount=type=bind,source={source}: "
            )) && e.contains(want),
            "{e}"
        );
    }
}

/// An HTTP server on 127.0.0.1 answering every GET with `body` (which the
/// test may change) and a Last-Modified of 1994; returns its address.
fn serve(body: std::sync::Arc<std::sync::Mutex<Vec<u8>>>) -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut req = [0u8; 4096];
            let _ = s.read(&mut req);
            let body = body.lock().unwrap().clone();
            let head = format!(
                "HTTP/1.1 200 OK\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    addr
}

/// shipyard, reaching 127.0.0.1 without a proxy, at a fixed epoch later
/// than the server's Last-Modified.
fn local_shipyard() -> std::process::Command {
    let mut c = shipyard();
    c.env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1")
        .env("SOURCE_DATE_EPOCH", "2000000000");
    c
}

#[test]
fn add_of_a_url_downloads_it_mode_0600_dated_by_the_server_and_keyed_by_its_content() {
    let c = Ctx::new();
    let body = std::sync::Arc::new(std::sync::Mutex::new(b"echo hi\n".to_vec()));
    let addr = serve(body.clone());
    let text =
        format!("FROM base\nADD http://{addr}/dl/tool.sh /opt/\nRUN cat /opt/tool.sh > /said\n");
    let o = c.build_by(local_shipyard(), &text, &[]);
    assert_success(&o, "ADD of a URL");
    let m = members(&c.t.path().join("out"), "image");
    assert_eq!(m["opt/tool.sh"].content, b"echo hi\n");
    assert_eq!(m["opt/tool.sh"].mode & 0o7777, 0o600);
    assert_eq!(m["opt/tool.sh"].mtime, 784111777);
    assert_eq!(m["said"].content, b"echo hi\n");

    // The server's file changes: the step runs again and takes it.
    *body.lock().unwrap() = b"echo bye\n".to_vec();
    let o = c.build_by(local_shipyard(), &text, &[]);
    assert_success(&o, "ADD of a changed URL");
    let m = members(&c.t.path().join("out"), "image");
    assert_eq!(m["said"].content, b"echo bye\n");

    // --checksum: the right one passes, another fails naming both.
    let real = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b"echo bye\n"))
    };
    let o = c.build_by(
        local_shipyard(),
        &format!("FROM base\nADD --checksum=sha256:{real} http://{addr}/f /f\n"),
        &[],
    );
    assert_success(&o, "ADD --checksum");
    let wrong = "0".repeat(64);
    let o = c.build_by(
        local_shipyard(),
        &format!("FROM base\n\nADD --checksum=sha256:{wrong} http://{addr}/f /f\n"),
        &[],
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "Containerfile:3: ADD: http://{addr}/f: its sha256 is {real}, not the {wrong}"
        )),
        "{e}"
    );
}

#[test]
fn add_of_a_url_is_refused_naming_its_line_when_the_build_has_no_network() {
    let c = Ctx::new();
    let body = std::sync::Arc::new(std::sync::Mutex::new(b"x".to_vec()));
    let addr = serve(body);
    let o = c.build_by(
        local_shipyard(),
        &format!("FROM base\nADD http://{addr}/f /f\n"),
        &["--network", "none"],
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "Containerfile:2: ADD: http://{addr}/f: the build's network is none"
        )),
        "{e}"
    );
}

#[test]
fn add_unpacks_local_xz_and_bzip2_tar_archives() {
    let c = Ctx::new();
    let tree = c.t.path().join("arch");
    write(&tree.join("pkg/tool"), b"tool\n", 0o755);
    let tar = c.t.path().join("a.tar");
    let o = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&tree)
        .arg("pkg")
        .output()
        .unwrap();
    assert_success(&o, "tar");
    for (tool, name) in [("xz", "a.tar.xz"), ("bzip2", "a.tar.bz2")] {
        let o = std::process::Command::new(tool)
            .arg("-c")
            .arg(&tar)
            .output()
            .unwrap();
        assert_success(&o, tool);
        write(&c.ctx().join(name), &o.stdout, 0o644);
    }
    let m = c.ok("FROM base\nADD a.tar.xz /x/\nADD a.tar.bz2 /b\n");
    assert_eq!(m["x/pkg/tool"].content, b"tool\n");
    assert_eq!(m["x/pkg/tool"].mode & 0o777, 0o755);
    assert_eq!(m["b/pkg/tool"].content, b"tool\n");
    assert!(!m.contains_key("x/a.tar.xz"), "{:?}", m.keys());
}
