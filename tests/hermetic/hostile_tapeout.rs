//! Hostile build steps against tapeout: a step plants symlinks that lead
//! out of the builder to a file of the caller's (`/lnk -> /home/USER`,
//! `/out/data -> /lnk/secret`), and tapeout must resolve every path inside
//! the builder: the caller's file never reaches the image. Each case puts
//! a secret with unique content in a host directory beside the project
//! and greps every blob of the output for it.

use crate::common::*;
use std::io::Read;
use std::path::PathBuf;

struct Scene {
    t: tempfile::TempDir,
    /// The caller's private directory the step links to.
    host: PathBuf,
    secret: Vec<u8>,
}

/// A project with a small rootfs builder and a host directory holding a
/// 0600 `secret`, a library `libdir/libsecret.so` carrying the same
/// secret, and loader configs that name directories through `/lnk`.
fn scene() -> Scene {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("p");
    let mk = std::process::Command::new("bash")
        .arg(src_dir().join("examples/two-images/make-base.sh"))
        .arg(p.join("base"))
        .output()
        .unwrap();
    assert_success(&mk, "make-base.sh");
    let nonce = format!(
        "SHIPYARD-SECRET-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let host = t.path().join("home-of-caller");
    write(&host.join("secret"), nonce.as_bytes(), 0o600);
    write(&host.join("confs/evil.conf"), b"/lnk/libdir\n", 0o600);
    // Programs that need libsecret.so, found only through /lnk.
    let c = t.path().join("c");
    write(
        &c.join("secret.c"),
        format!("const char secret[] = \"{nonce}\";\n").as_bytes(),
        0o644,
    );
    write(
        &c.join("main.c"),
        b"extern const char secret[];\nint main(void) { return secret[0] == 0; }\n",
        0o644,
    );
    let cc = |args: &[&str]| {
        let out = std::process::Command::new("cc")
            .current_dir(&c)
            .args(args)
            .output()
            .unwrap();
        assert_success(&out, "cc");
    };
    cc(&[
        "-shared",
        "-fPIC",
        "-o",
        "libsecret.so",
        "secret.c",
        "-Wl,-soname,libsecret.so",
    ]);
    for (name, rpath) in [
        ("main-plain", None),
        ("main-rpath", Some("/lnk/libdir")),
        ("main-origin", Some("$ORIGIN/olnk")),
    ] {
        let mut a = vec!["-o", name, "main.c", "-L.", "-lsecret"];
        let flag = rpath.map(|r| format!("-Wl,-rpath,{r}"));
        if let Some(f) = &flag {
            a.push(f);
        }
        cc(&a);
        std::fs::create_dir_all(p.join("src")).unwrap();
        std::fs::copy(c.join(name), p.join("src").join(name)).unwrap();
    }
    std::fs::create_dir_all(host.join("libdir")).unwrap();
    std::fs::copy(c.join("libsecret.so"), host.join("libdir/libsecret.so")).unwrap();
    Scene {
        t,
        host,
        secret: nonce.into_bytes(),
    }
}

impl Scene {
    fn dir(&self) -> PathBuf {
        self.t.path().join("p")
    }

    fn layout(&self) -> PathBuf {
        self.t.path().join("out")
    }

    /// Writes a spec whose one step runs `plant` (with `HOST` replaced by
    /// the caller's directory) and whose tapeout has `tapeout` lines.
    fn spec(&self, plant: &str, tapeout: &str) {
        let plant = plant.replace("HOST", &self.host.display().to_string());
        let spec = format!(
            "[builder]\nfrom = \"rootfs:base\"\nsources = {{ \"/src\" = \"src\" }}\n\n\
             [build.plant]\nrun = \"\"\"\nmkdir -p /out\n{plant}\n\"\"\"\n\n\
             [tapeout.t]\nafter = [\"build.plant\"]\n{tapeout}\n\n\
             [image.i]\nfrom = \"scratch\"\ntapeouts = [\"t\"]\n"
        );
        write(&self.dir().join("shipyard.toml"), spec.as_bytes(), 0o644);
    }

    fn build(&self) -> std::process::Output {
        shipyard()
            .env("XDG_CACHE_HOME", self.t.path().join("cache"))
            .arg("build")
            .arg(self.dir())
            .arg("--output")
            .arg(format!("oci:{}", self.layout().display()))
            .output()
            .unwrap()
    }

    /// Asserts the secret is in no blob of the output layout (nor of the
    /// step cache), compressed or not.
    fn assert_secret_nowhere(&self) {
        for root in [self.layout(), self.t.path().join("cache")] {
            for e in walkdir::WalkDir::new(&root)
                .into_iter()
                .filter_map(|e| e.ok())
            {
                if !e.file_type().is_file() {
                    continue;
                }
                // The cache's trash is emptied in the background: a file
                // may go while we look.
                let raw = match std::fs::read(e.path()) {
                    Ok(r) => r,
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(err) => panic!("{}: {err}", e.path().display()),
                };
                let mut plain = Vec::new();
                let _ = flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut plain);
                let mut z = Vec::new();
                if let Ok(mut d) = zstd::stream::read::Decoder::new(&raw[..]) {
                    let _ = d.read_to_end(&mut z);
                }
                for bytes in [&raw, &plain, &z] {
                    assert!(
                        !contains(bytes, &self.secret),
                        "the caller's secret is in {}",
                        e.path().display()
                    );
                }
            }
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn member<'a>(members: &'a [(String, char)], path: &str) -> Option<&'a (String, char)> {
    members
        .iter()
        .find(|(p, _)| p.trim_end_matches('/') == path)
}

#[test]
fn elf_closure_stores_a_symlink_out_of_the_builder_verbatim_and_never_follows_it_on_the_host() {
    let s = scene();
    s.spec(
        "ln -s HOST /lnk\nln -s /lnk/secret /out/data\nln -s ../lnk/secret /out/rel",
        "include = [\"/out/**\"]\nelf-closure = true",
    );
    let out = s.build();
    assert_success(&out, "build");
    s.assert_secret_nowhere();
    let m = layer_members(&s.layout(), "i");
    assert_eq!(member(&m, "out/data").map(|x| x.1), Some('2'), "{m:?}");
    assert_eq!(member(&m, "out/rel").map(|x| x.1), Some('2'), "{m:?}");
    assert!(member(&m, "lnk/secret").is_none(), "{m:?}");
}

#[test]
fn a_literal_include_through_a_planted_directory_symlink_does_not_exist_in_the_builder() {
    let s = scene();
    s.spec("ln -s HOST /lnk", "include = [\"/lnk/secret\"]");
    let out = s.build();
    assert!(!out.status.success(), "the build took the caller's file");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/lnk/secret does not exist in the builder"),
        "{err}"
    );
    s.assert_secret_nowhere();
}

#[test]
fn loader_config_includes_and_runpaths_resolve_inside_the_builder() {
    let s = scene();
    // ld.so.conf includes configs from the caller's directory, which name
    // a library directory through /lnk; RUNPATHs go through /lnk and
    // through $ORIGIN/olnk; one library the builder really has is reached
    // through a symlinked directory and must come along.
    s.spec(
        "ln -s HOST /lnk\nln -s /lnk/confs /confs\n\
         echo 'include /confs/*.conf' > /etc/ld.so.conf\n\
         ln -s HOST/libdir /out/olnk\n\
         cat /src/main-plain > /out/main-plain && cat /src/main-rpath > /out/main-rpath\n\
         cat /src/main-origin > /out/main-origin && chmod 755 /out/main-*",
        "include = [\"/out/main-*\"]\nelf-closure = true",
    );
    let out = s.build();
    assert_success(&out, "build");
    s.assert_secret_nowhere();
    let m = layer_members(&s.layout(), "i");
    assert!(member(&m, "out/main-rpath").is_some(), "{m:?}");
    assert!(!m.iter().any(|(p, _)| p.contains("libsecret")), "{m:?}");
    // What the builder does have comes along: libc, through the loader's
    // own directories.
    assert!(m.iter().any(|(p, _)| p.contains("libc.so")), "{m:?}");
}

#[test]
fn a_library_the_builder_has_is_found_through_its_own_directory_symlinks() {
    let s = scene();
    // The library inside the builder, under /opt/real; RUNPATH
    // /lnk/libdir where /lnk -> /opt/real (absolute, resolved in the
    // builder's root), and the library name itself a relative symlink.
    s.spec(
        "mkdir -p /opt/real/libdir\n\
         cat /src/libsecret.so > /opt/real/libdir/libsecret.so.1\n\
         ln -s libsecret.so.1 /opt/real/libdir/libsecret.so\n\
         ln -s /opt/real /lnk\n\
         cat /src/main-rpath > /out/main-rpath && chmod 755 /out/main-rpath",
        "include = [\"/out/main-rpath\"]\nelf-closure = true",
    );
    std::fs::copy(
        s.t.path().join("c/libsecret.so"),
        s.dir().join("src/libsecret.so"),
    )
    .unwrap();
    let out = s.build();
    assert_success(&out, "build");
    let m = layer_members(&s.layout(), "i");
    assert_eq!(member(&m, "lnk").map(|x| x.1), Some('2'), "{m:?}");
    assert_eq!(
        member(&m, "opt/real/libdir/libsecret.so").map(|x| x.1),
        Some('2'),
        "{m:?}"
    );
    assert_eq!(
        member(&m, "opt/real/libdir/libsecret.so.1").map(|x| x.1),
        Some('0'),
        "{m:?}"
    );
}
