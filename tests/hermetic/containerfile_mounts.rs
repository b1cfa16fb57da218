//! `shipyard build -f Containerfile`: what a step reads from outside its
//! stage: `COPY --from=IMAGE` and `RUN --mount=type=bind,from=IMAGE` (an
//! image reference, pulled or read once per build), binds of the build
//! context, tmpfs mounts, and `ADD` of a URL. On the small base of
//! `containerfile_features`.

use crate::common::*;
use crate::containerfile_features::{stderr, Ctx};

impl Ctx {
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
