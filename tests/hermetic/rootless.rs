//! Ownership and metadata the host cannot represent. Run as root, the
//! unpack applies them for real; run unprivileged (as scripts/test does),
//! they are recorded beside the tree. Either way shipyard's manifest of the
//! tree says what the image says, and a diff of the tree keeps it.

use crate::common::rawtar::*;
use crate::common::*;
use std::os::unix::fs::MetadataExt;

/// cap_net_raw+ep in VFS_CAP_REVISION_2 layout.
const CAP_NET_RAW: [u8; 20] = [
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn foreign_image(dir: &std::path::Path) -> std::path::PathBuf {
    let mut app = dir_m("home/app/", 0o750);
    app.uid = 1000;
    app.gid = 1000;
    let mut data = file("home/app/data", b"user data");
    data.uid = 1000;
    data.gid = 1000;
    let mut shadow = file("etc/shadow", b"root:*:1:0:::::\n");
    shadow.mode = 0o640;
    shadow.gid = 42;
    let mut null = m(b"dev/null", b'3');
    null.mode = 0o666;
    null.dev = (1, 3);
    let mut ping = file("bin/ping", b"\x7fELF...");
    ping.mode = 0o755;
    ping.pax.push((
        "SCHILY.xattr.security.capability".into(),
        CAP_NET_RAW.to_vec(),
    ));
    let mut rofile = file("ro/file", b"read only");
    rofile.mode = 0o444;
    let (l, _) = image(
        dir,
        vec![layer(&[
            dir_m("bin/", 0o755),
            ping,
            dir_m("dev/", 0o755),
            null,
            dir_m("etc/", 0o755),
            shadow,
            dir_m("home/", 0o755),
            app,
            data,
            dir_m("ro/", 0o555),
            rofile,
        ])],
    );
    l
}

fn dir_m(name: &str, mode: u32) -> M {
    let mut d = dir(name);
    d.mode = mode;
    d
}

#[test]
fn ownership_devices_and_caps_survive_an_unprivileged_unpack() {
    let t = tempfile::tempdir().unwrap();
    let l = foreign_image(t.path());
    let img = format!("oci:{}:t", l.display());
    let root = t.path().join("rootfs");
    let out = ok(["unpack", &img, root.to_str().unwrap()]);
    let _ = out;
    let m = ok(["manifest", root.to_str().unwrap()]);
    let line = |p: &str| {
        m.lines()
            .find(|l| l.starts_with(&format!("{p} ")))
            .unwrap_or_else(|| panic!("{p} missing from manifest:\n{m}"))
            .to_string()
    };
    assert!(
        line("/home/app/data").contains(" uid=1000 gid=1000 "),
        "{m}"
    );
    assert!(
        line("/home/app").contains("mode=0750 uid=1000 gid=1000"),
        "{m}"
    );
    assert!(
        line("/etc/shadow").contains("mode=0640 uid=0 gid=42"),
        "{m}"
    );
    assert!(
        line("/dev/null").contains("type=char mode=0666 uid=0 gid=0")
            && line("/dev/null").contains("rdev=1,3"),
        "{m}"
    );
    assert!(
        line("/bin/ping").contains("xattr.security.capability=\\x01\\x00\\x00\\x02"),
        "{m}"
    );
    assert!(line("/ro").contains("type=dir mode=0555"), "{m}");
    assert!(line("/ro/file").contains("mode=0444"), "{m}");
    // The manifest of the image, read from its tar headers, agrees.
    let im = ok(["manifest", &img]);
    assert_eq!(im, m);

    let record = shipyard_image::rootfs::walk::ownership_record_path(&root);
    let data_uid = std::fs::metadata(root.join("home/app/data")).unwrap().uid();
    if is_root() {
        assert_eq!(data_uid, 1000, "root applies ownership for real");
    } else {
        assert_eq!(data_uid, nix::unistd::geteuid().as_raw());
        assert!(
            record.is_file(),
            "an unprivileged unpack records what it could not apply"
        );
    }

    // Nothing changed: the diff of the tree against its image is empty.
    let again = format!("oci:{}:again", t.path().join("l2").display());
    ok([
        "diff",
        root.to_str().unwrap(),
        "--against",
        &img,
        "--output",
        &again,
    ]);
    assert_eq!(layer_members(&t.path().join("l2"), "again"), vec![]);

    // Change a file: the layer carries the image's owner, not the caller's.
    std::fs::write(root.join("home/app/data"), b"new user data").unwrap();
    let v2 = format!("oci:{}:v2", t.path().join("l2").display());
    ok([
        "diff",
        root.to_str().unwrap(),
        "--against",
        &img,
        "--output",
        &v2,
        "--base",
        &img,
    ]);
    let m2 = ok(["manifest", &v2]);
    let data = m2
        .lines()
        .find(|l| l.starts_with("/home/app/data "))
        .unwrap();
    assert!(
        data.contains(" uid=1000 gid=1000 ") && data.contains("size=13"),
        "{data}"
    );
}

#[test]
fn callers_own_files_are_root_owned_in_the_image_unless_kept() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    write(&a.join("f"), b"x", 0o644);
    let me = nix::unistd::geteuid().as_raw();
    let myg = nix::unistd::getegid().as_raw();
    let default = ok(["manifest", a.to_str().unwrap()]);
    assert!(
        default.contains("/f type=file mode=0644 uid=0 gid=0 "),
        "{default}"
    );
    let kept = ok(["manifest", a.to_str().unwrap(), "--keep-owners"]);
    assert!(
        kept.contains(&format!("/f type=file mode=0644 uid={me} gid={myg} ")),
        "{kept}"
    );
    // The same rule in the layer.
    let l = t.path().join("l");
    ok([
        "diff",
        a.to_str().unwrap(),
        "--against",
        "scratch",
        "--output",
        &format!("oci:{}:x", l.display()),
    ]);
    assert!(ok(["manifest", &format!("oci:{}:x", l.display())]).contains(" uid=0 gid=0 "));
}

#[test]
fn rootlesscontainers_xattr_is_ownership_not_content() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    write(&a.join("f"), b"x", 0o644);
    if !xattrs_supported(t.path()) {
        panic!("this test needs user xattrs on {}", t.path().display());
    }
    // uid 1001, gid 1002, as umoci --rootless writes it.
    xattr::set(
        a.join("f"),
        "user.rootlesscontainers",
        &[0x08, 0xe9, 0x07, 0x10, 0xea, 0x07],
    )
    .unwrap();
    let m = ok(["manifest", a.to_str().unwrap()]);
    let line = m.lines().find(|l| l.starts_with("/f ")).unwrap();
    assert!(line.contains(" uid=1001 gid=1002 "), "{line}");
    assert!(!line.contains("rootlesscontainers"), "{line}");
}
