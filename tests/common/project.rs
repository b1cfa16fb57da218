//! A small project for step cache tests: a rootfs base (the two-images
//! example's script, plus chown), two rules that delete, link, chmod and
//! chown, a tapeout and an image; a cache of its own, so a test is one
//! CI runner.

use super::*;
use std::path::PathBuf;
use std::process::Output;

pub const SPEC: &str = r#"
[builder]
from = "rootfs:base"
sources = { "/src" = "src" }

[build.prep]
run = """
mkdir -p /opt/a /opt/gone && cat /src/input > /opt/a/one && echo x > /opt/gone/f
ln /opt/a/one /opt/a/hard && ln -s one /opt/a/sym && chmod 700 /opt/a
rm /etc/motd
echo prep-ran
"""

[build.two]
after = ["build.prep"]
run = """
if [ -e /src/slow ]; then echo two-waits; while [ -e /src/slow ]; do :; done; fi
test ! -e /etc/motd && rm -rf /opt/gone && cat /src/input >> /opt/a/one
mkdir -p /opt/b && echo b > /opt/b/b
chown 1000:1000 /opt/b/b 2>/dev/null || true
echo two-ran
"""

[tapeout.t]
after = ["build.two"]
include = ["/opt/**", "/etc"]

[image.i]
from = "scratch"
tapeouts = ["t"]
"#;

/// A project (base made by the two-images example's script, a source
/// directory with an ignore file) and a cache of its own.
pub struct Project {
    t: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Project {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("p");
        let mk = std::process::Command::new("bash")
            .arg(src_dir().join("examples/two-images/make-base.sh"))
            .arg(p.join("base"))
            .output()
            .unwrap();
        assert_success(&mk, "make-base.sh");
        // chown too (its libraries are the other tools').
        std::fs::copy("/bin/chown", p.join("base/bin/chown")).unwrap();
        write(&p.join("shipyard.toml"), SPEC.as_bytes(), 0o644);
        write(&p.join("src/input"), b"v1\n", 0o644);
        write(&p.join("src/.shipyardignore"), b"*.log\nslow\n", 0o644);
        Project { t }
    }

    pub fn dir(&self) -> PathBuf {
        self.t.path().join("p")
    }

    pub fn cache(&self) -> PathBuf {
        self.t.path().join("cache")
    }

    pub fn layout(&self, name: &str) -> PathBuf {
        self.t.path().join(name)
    }

    pub fn cmd(&self, layout: &str, extra: &[&str]) -> std::process::Command {
        let mut c = shipyard();
        c.env("XDG_CACHE_HOME", self.cache())
            .arg("build")
            .arg(self.dir())
            .arg("--output")
            .arg(format!("oci:{}", self.layout(layout).display()))
            .args(extra);
        c
    }

    pub fn build(&self, layout: &str, extra: &[&str]) -> Output {
        self.cmd(layout, extra).output().unwrap()
    }

    /// Builds, asserts success, returns (stdout, stderr).
    pub fn ok(&self, layout: &str, extra: &[&str]) -> (String, String) {
        let out = self.build(layout, extra);
        assert_success(&out, &format!("build {layout}"));
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn digest(&self, layout: &str) -> String {
        digest_of_tag(&self.layout(layout), "i")
    }

    pub fn cache_cmd(&self, args: &[&str]) -> String {
        let out = shipyard()
            .env("XDG_CACHE_HOME", self.cache())
            .arg("cache")
            .args(args)
            .output()
            .unwrap();
        assert_success(&out, "shipyard cache");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Project {
    /// Replaces `from` with `to` in shipyard.toml (which must hold it).
    pub fn edit_spec(&self, from: &str, to: &str) {
        let path = self.dir().join("shipyard.toml");
        let spec = std::fs::read_to_string(&path).unwrap();
        assert!(spec.contains(from), "{from:?} is not in the spec");
        write(&path, spec.replace(from, to).as_bytes(), 0o644);
    }
}
