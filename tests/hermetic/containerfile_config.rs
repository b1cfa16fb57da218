//! `shipyard build -f Containerfile`: what goes into the image config
//! beside the OCI fields, as Docker and BuildKit write it (HEALTHCHECK,
//! ONBUILD), ONBUILD triggers of a base run after its FROM, and
//! `--squash`. On the small base of `containerfile_features`.

use super::containerfile_features::{members, stderr, Ctx};
use crate::common::*;
use std::path::PathBuf;

impl Ctx {
    /// A layout of the test's own, `NAME`.
    fn layout(&self, name: &str) -> PathBuf {
        self.t.path().join(name)
    }

    /// Builds `text` into the layout `out` (tag `image`), with `args`
    /// after the usual ones; `FROM base` is the test's base image.
    fn build_into(&self, text: &str, out: &str, args: &[&str]) -> std::process::Output {
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
            .arg(format!("oci:{}", self.layout(out).display()))
            .args(args)
            .output()
            .unwrap()
    }

    /// The image config of `out`'s `image`, as stored (raw JSON).
    fn config(&self, out: &str) -> serde_json::Value {
        let l = shipyard_image::oci::layout::Layout::open(self.layout(out)).unwrap();
        let d = l.resolve(Some("image")).unwrap();
        let img = shipyard_image::oci::image::Image::load(&l, &d).unwrap();
        serde_json::from_slice(&l.read_blob(&img.config_digest, None).unwrap()).unwrap()
    }

    /// `oci:LAYOUT:image`, to build FROM.
    fn image_ref(&self, out: &str) -> String {
        format!("oci:{}:image", self.layout(out).display())
    }
}

fn ok(o: &std::process::Output) {
    assert_success(o, "shipyard build -f Containerfile");
}

#[test]
fn healthcheck_goes_into_the_config_as_dockers_and_is_inherited_and_overridden() {
    let c = Ctx::new();
    ok(&c.build_into(
        "FROM base
HEALTHCHECK --interval=30s --timeout=5s --start-period=1m --start-interval=250ms --retries=3 \\
  CMD test -e /etc/passwd || exit 1
",
        "a",
        &[],
    ));
    let h = &c.config("a")["config"]["Healthcheck"];
    assert_eq!(
        h,
        &serde_json::json!({
            "Test": ["CMD-SHELL", "test -e /etc/passwd || exit 1"],
            "Interval": 30_000_000_000i64,
            "Timeout": 5_000_000_000i64,
            "StartPeriod": 60_000_000_000i64,
            "StartInterval": 250_000_000i64,
            "Retries": 3,
        })
    );
    // `shipyard inspect` says it.
    let o = shipyard()
        .arg("inspect")
        .arg(c.image_ref("a"))
        .output()
        .unwrap();
    assert_success(&o, "shipyard inspect");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("Healthcheck:  [\"CMD-SHELL\", \"test -e /etc/passwd || exit 1\"] --interval=30s --timeout=5s --start-period=60s --start-interval=0.25s --retries=3"),
        "{text}"
    );
    // Built on it: inherited as it is; a later HEALTHCHECK replaces all
    // of it (unset options are the runtime's defaults, not the base's).
    ok(&c.build_into(&format!("FROM {}\nRUN true\n", c.image_ref("a")), "b", &[]));
    assert_eq!(&c.config("b")["config"]["Healthcheck"], h);
    ok(&c.build_into(
        &format!(
            "FROM {}\nHEALTHCHECK CMD [\"/bin/true\", \"x\"]\n",
            c.image_ref("a")
        ),
        "c",
        &[],
    ));
    assert_eq!(
        c.config("c")["config"]["Healthcheck"],
        serde_json::json!({"Test": ["CMD", "/bin/true", "x"]})
    );
    // NONE disables the base's; a later stage FROM a stage keeps it.
    ok(&c.build_into(
        &format!(
            "FROM {} AS s\nHEALTHCHECK NONE\nFROM s\nRUN true\n",
            c.image_ref("a")
        ),
        "d",
        &[],
    ));
    assert_eq!(
        c.config("d")["config"]["Healthcheck"],
        serde_json::json!({"Test": ["NONE"]})
    );
    // Without one, the config has no such field (the digest is what it
    // was before shipyard knew the field).
    ok(&c.build_into("FROM base\nRUN true\n", "e", &[]));
    assert!(c.config("e")["config"].get("Healthcheck").is_none());
}

#[test]
fn a_bad_healthcheck_option_names_the_file_and_line() {
    let c = Ctx::new();
    for (line, want) in [
        (
            "HEALTHCHECK --interval=5 CMD true",
            "HEALTHCHECK: --interval: missing unit in duration \"5\"",
        ),
        (
            "HEALTHCHECK --retries=-2 CMD true",
            "HEALTHCHECK: --retries: invalid count \"-2\"",
        ),
    ] {
        let o = c.build_into(&format!("FROM base\nRUN true\n{line}\n"), "a", &[]);
        assert!(!o.status.success());
        let e = stderr(&o);
        assert!(e.contains(&format!("Containerfile:3: {want}")), "{e}");
    }
}

#[test]
fn onbuild_is_stored_and_a_base_s_triggers_run_after_from_and_are_not_inherited() {
    let c = Ctx::new();
    write(&c.ctx().join("f"), b"from the later context\n", 0o644);
    ok(&c.build_into(
        "FROM base
ONBUILD RUN echo first > /order
ONBUILD COPY f /from-ctx
ONBUILD RUN echo second >> /order
RUN true
",
        "a",
        &[],
    ));
    assert_eq!(
        c.config("a")["config"]["OnBuild"],
        serde_json::json!([
            "RUN echo first > /order",
            "COPY f /from-ctx",
            "RUN echo second >> /order"
        ])
    );
    let o = shipyard()
        .arg("inspect")
        .arg(c.image_ref("a"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("OnBuild:      COPY f /from-ctx\n"));
    // The image that stores them does not run them.
    assert!(!members(&c.layout("a"), "image").contains_key("order"));
    ok(&c.build_into(
        &format!("FROM {}\nRUN echo third >> /order\n", c.image_ref("a")),
        "b",
        &[],
    ));
    let m = members(&c.layout("b"), "image");
    // In order, right after FROM, with this build's context.
    assert_eq!(m["order"].content, b"first\nsecond\nthird\n");
    assert_eq!(m["from-ctx"].content, b"from the later context\n");
    // Docker clears them: an image built on b runs nothing of a's.
    assert!(c.config("b")["config"].get("OnBuild").is_none());
    // An earlier stage's own ONBUILDs run in a stage FROM it (BuildKit).
    ok(&c.build_into(
        "FROM base AS s\nONBUILD RUN echo s > /s\nFROM s\nRUN test -e /s\n",
        "c",
        &[],
    ));
    assert!(members(&c.layout("c"), "image").contains_key("s"));
    assert!(c.config("c")["config"].get("OnBuild").is_none());
}

/// Stores a copy of `out`'s image whose config has these triggers, as
/// `out`'s tag `image`, as a base built elsewhere could have them.
fn with_triggers(c: &Ctx, out: &str, triggers: &[&str]) {
    use shipyard_image::oci::{image, layout::Layout};
    let l = Layout::open(c.layout(out)).unwrap();
    let d = l.resolve(Some("image")).unwrap();
    let mut img = image::Image::load(&l, &d).unwrap();
    img.config.on_build = triggers.iter().map(|t| t.to_string()).collect();
    let d = image::write_image(&l, &img.config, img.manifest.layers().clone()).unwrap();
    l.tag("image", &d).unwrap();
}

#[test]
fn a_bad_trigger_names_the_base_and_the_trigger() {
    let c = Ctx::new();
    ok(&c.build_into("FROM base\nRUN true\n", "a", &[]));
    let base = c.image_ref("a");
    for (trigger, want) in [
        ("RUN --bogus x", "RUN: unknown flag: --bogus"),
        (
            "ONBUILD RUN x",
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
        ),
        ("FROM scratch", "FROM isn't allowed as an ONBUILD trigger"),
        (
            "MAINTAINER me",
            "MAINTAINER isn't allowed as an ONBUILD trigger",
        ),
        (
            "COPY missing /x",
            "COPY: missing: no such file in the build context",
        ),
    ] {
        with_triggers(&c, "a", &[trigger]);
        let o = c.build_into(&format!("FROM {base}\nRUN true\n"), "b", &[]);
        assert!(!o.status.success(), "{trigger}");
        let e = stderr(&o);
        let head = format!("Containerfile:1: FROM: ONBUILD trigger {trigger:?} of {base}: {want}");
        assert!(e.contains(&head), "{e}");
    }
}

/// The layers of `out`'s image, by digest.
fn layers(c: &Ctx, out: &str, tag: &str) -> Vec<String> {
    let l = shipyard_image::oci::layout::Layout::open(c.layout(out)).unwrap();
    let d = l.resolve(Some(tag)).unwrap();
    let img = shipyard_image::oci::image::Image::load(&l, &d).unwrap();
    (img.manifest.layers().iter())
        .map(|d| d.digest().to_string())
        .collect()
}

#[test]
fn squash_keeps_the_bases_layers_and_makes_one_minimal_layer_of_the_build() {
    let c = Ctx::new();
    write(&c.ctx().join("f"), b"copied\n", 0o644);
    let text = "FROM base AS build
RUN mkdir /app && echo 1 > /app/a && echo scratch > /big
RUN rm /big && echo 2 > /app/b
FROM build
COPY f /app/f
RUN echo 3 >> /app/b
";
    ok(&c.build_into(text, "layers", &[]));
    ok(&c.build_into(text, "squashed", &["--squash"]));
    let base = {
        let l = shipyard_image::oci::layout::Layout::open(c.t.path().join("img")).unwrap();
        let d = l.resolve(Some("base")).unwrap();
        let img = shipyard_image::oci::image::Image::load(&l, &d).unwrap();
        (img.manifest.layers().iter())
            .map(|d| d.digest().to_string())
            .collect::<Vec<_>>()
    };
    let per_instruction = layers(&c, "layers", "image");
    assert_eq!(per_instruction.len(), base.len() + 4);
    let squashed = layers(&c, "squashed", "image");
    // Docker's --squash: the base's layers as they are, then one.
    assert_eq!(squashed.len(), base.len() + 1);
    assert_eq!(squashed[..base.len()], base[..]);
    // The same files as the layered image, and in the one layer only
    // what the build left: /big came and went, no trace of it.
    let m = members(&c.layout("squashed"), "image");
    assert_eq!(m["app/a"].content, b"1\n");
    assert_eq!(m["app/b"].content, b"2\n3\n");
    assert_eq!(m["app/f"].content, b"copied\n");
    let layered = members(&c.layout("layers"), "image");
    assert!(layered.contains_key(".wh.big"), "{:?}", layered.keys());
    assert!(!m.keys().any(|k| k.contains("big")), "{:?}", m.keys());
    // The config still says how to run: history and diff_ids agree.
    let cfg = c.config("squashed");
    assert_eq!(
        cfg["rootfs"]["diff_ids"].as_array().unwrap().len(),
        base.len() + 1
    );
}

/// The digest of `out`'s image.
fn digest(c: &Ctx, out: &str) -> String {
    let l = shipyard_image::oci::layout::Layout::open(c.layout(out)).unwrap();
    l.resolve(Some("image")).unwrap().digest().to_string()
}

/// `shipyard manifest` of `out`'s image, mtimes aside.
fn tree(c: &Ctx, out: &str) -> Vec<String> {
    let o = shipyard()
        .arg("manifest")
        .arg(c.image_ref(out))
        .output()
        .unwrap();
    assert_success(&o, "shipyard manifest");
    (String::from_utf8_lossy(&o.stdout).lines())
        .map(|l| {
            l.split(' ')
                .filter(|f| !f.starts_with("mtime="))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn squash_deletes_the_bases_files_and_leaves_no_mount_points() {
    let c = Ctx::new();
    write(&c.ctx().join("f"), b"copied\n", 0o644);
    let text = "FROM base AS tools
RUN mkdir /t && echo x > /t/x
FROM base AS build
RUN rm /etc/motd && echo gone > /soon && mkdir /app && echo 1 > /app/a
RUN --mount=type=cache,target=/cached --mount=type=bind,from=tools,source=/t,target=/ctx rm /soon && cat /ctx/x > /app/b
FROM build
COPY f /app/f
";
    ok(&c.build_into(text, "layers", &[]));
    ok(&c.build_into(text, "squashed", &["--squash"]));
    let base = members(&c.t.path().join("img"), "base");
    assert!(base.contains_key("etc/motd"));
    let m = members(&c.layout("squashed"), "image");
    // The base's file the build deleted is deleted in the image too.
    assert!(m.contains_key("etc/.wh.motd"), "{:?}", m.keys());
    let t = tree(&c, "squashed");
    assert!(!t.iter().any(|l| l.starts_with("/etc/motd ")), "{t:?}");
    // Made and deleted again: no file, no whiteout.
    assert!(!m.keys().any(|k| k.contains("soon")), "{:?}", m.keys());
    // The directories the mounts were made on are not the build's.
    assert!(
        !m.contains_key("cached") && !m.contains_key("ctx"),
        "{:?}",
        m.keys()
    );
    // The same tree as the layer per instruction.
    assert_eq!(t, tree(&c, "layers"));
    // The same image again, and from another cache.
    ok(&c.build_into(text, "again", &["--squash"]));
    assert_eq!(digest(&c, "again"), digest(&c, "squashed"));
    std::fs::rename(c.t.path().join("cache"), c.t.path().join("cache.old")).unwrap();
    ok(&c.build_into(text, "cold", &["--squash"]));
    assert_eq!(digest(&c, "cold"), digest(&c, "squashed"));
}

#[test]
fn squash_of_a_build_that_changes_nothing_adds_no_layer() {
    let c = Ctx::new();
    // A base that already has what a rule's sandbox mounts on (/dev,
    // /proc, /etc/hosts...), so that `RUN true` changes nothing.
    ok(&c.build_into("FROM base\nRUN true\n", "prep", &[]));
    let base = layers(&c, "prep", "image");
    for text in ["ENV X=1\n", "RUN true\n", "RUN echo x > /x && rm /x\n"] {
        let text = format!("FROM {}\n{text}", c.image_ref("prep"));
        ok(&c.build_into(&text, "squashed", &["--squash"]));
        assert_eq!(layers(&c, "squashed", "image"), base, "{text}");
    }
}

#[test]
fn instructions_substitute_with_the_base_images_env() {
    let c = Ctx::new();
    write(&c.ctx().join("f"), b"copied\n", 0o644);
    ok(&c.build_into(
        "FROM base\nENV HOME=/opt/home GREETING=hi\nRUN true\n",
        "a",
        &[],
    ));
    // Built on it: its Env is there for $VARs, as the file's own ENV is.
    let text = format!(
        "FROM {}\nWORKDIR $HOME/work\nCOPY f ${{HOME}}/copied\nENV SAID=$GREETING-there\n",
        c.image_ref("a")
    );
    ok(&c.build_into(&text, "b", &[]));
    let cfg = c.config("b");
    assert_eq!(cfg["config"]["WorkingDir"], "/opt/home/work");
    let env = cfg["config"]["Env"].as_array().unwrap();
    assert!(env.contains(&"SAID=hi-there".into()), "{env:?}");
    let m = members(&c.layout("b"), "image");
    assert_eq!(m["opt/home/copied"].content, b"copied\n");
}

/// A stage on an image starts where and as whom the image says: its
/// WorkingDir and User, as Docker runs the steps, until the file's own
/// WORKDIR and USER.
#[test]
fn steps_on_an_image_run_in_its_workdir_as_its_user() {
    if !is_root() && !ids_range_mapped() {
        // A single id mapped: uid 1000 does not exist in the build's
        // user namespace, so it cannot own the base's /srv/app.
        return;
    }
    let c = Ctx::new();
    // Image a: /srv/app and a file in it belong to app (1000). As a user,
    // its files are unpacked with the user's own id, their owners kept
    // beside them: the builder of b must still give them to 1000.
    ok(&c.build_into(
        "FROM base\nUSER app\nWORKDIR /srv/app\nRUN mkdir data && echo k > data/keep\n",
        "a",
        &[],
    ));
    let text = format!(
        "FROM {}\nRUN pwd > where\nCOPY f .\nUSER root\nWORKDIR /\nRUN pwd > /who\n",
        c.image_ref("a")
    );
    write(&c.ctx().join("f"), b"copied\n", 0o644);
    ok(&c.build_into(&text, "b", &[]));
    let m = members(&c.layout("b"), "image");
    assert_eq!(
        String::from_utf8_lossy(&m["srv/app/where"].content),
        "/srv/app\n"
    );
    // Written by the step, as the base's User.
    assert_eq!(m["srv/app/where"].uid, 1000);
    assert_eq!(m["srv/app/f"].content, b"copied\n");
    assert_eq!(String::from_utf8_lossy(&m["who"].content), "/\n");
    assert_eq!(m["who"].uid, 0);
    let cfg = c.config("b");
    assert_eq!(cfg["config"]["WorkingDir"], "/");
    assert_eq!(cfg["config"]["User"], "root");
    // Only what b's steps changed is in its layers: not a's files that
    // only had to get their owner back in the builder.
    let theirs = layers(&c, "a", "image").len();
    let l = shipyard_image::oci::layout::Layout::open(c.layout("b")).unwrap();
    let d = l.resolve(Some("image")).unwrap();
    let img = shipyard_image::oci::image::Image::load(&l, &d).unwrap();
    for layer in &img.manifest.layers()[theirs..] {
        let dg = shipyard_image::oci::media::digest_of(layer).unwrap();
        let r = shipyard_image::layer::compress::decoder(
            l.open_blob(&dg).unwrap(),
            shipyard_image::oci::media::layer_encoding(layer.media_type()),
        )
        .unwrap();
        for e in tar::Archive::new(r).entries().unwrap() {
            let p = String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned();
            assert!(!p.contains("data"), "{p} is in a layer of b");
        }
    }
}

#[test]
fn squash_is_refused_for_a_shipyard_toml() {
    let c = Ctx::new();
    write(
        &c.ctx().join("shipyard.toml"),
        b"[builder]\nfrom = \"scratch\"\n",
        0o644,
    );
    let o = shipyard()
        .arg("build")
        .arg(c.ctx())
        .arg("--squash")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--squash is for Containerfiles"),
        "{}",
        stderr(&o)
    );
}
