//! Layer extraction of arbitrary bytes as an uncompressed tar layer:
//! never a panic, and nothing outside the root is created or changed,
//! whatever the members say. Run it as an unprivileged user: a bug it
//! finds is a write outside the root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_spec::image::{Descriptor, MediaType};
use shipyard_image::layer::extract::Extractor;
use shipyard_image::oci::digest::Digest;
use shipyard_image::oci::layout::Layout;
use shipyard_image::oci::media;

fn names(dir: &std::path::Path) -> Vec<std::ffi::OsString> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    v.sort();
    v
}

fuzz_target!(|tar: &[u8]| {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("target"), b"precious").unwrap();
    let root = t.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let layout = Layout::open_or_create(t.path().join("layout")).unwrap();
    let (digest, size) = layout.put_bytes(tar).unwrap();
    let desc = Descriptor::new(MediaType::ImageLayer, size, media::to_spec_digest(&digest));
    let mut ex = Extractor::new(&root).unwrap();
    // Twice: the second time over what the first one left.
    for _ in 0..2 {
        if ex
            .apply_layer(&layout, &desc, &Digest::of(tar).to_string())
            .is_err()
        {
            break;
        }
    }
    let _ = ex.finish();
    assert_eq!(names(t.path()), ["layout", "outside", "root"]);
    assert_eq!(names(&outside), ["target"]);
    assert_eq!(std::fs::read(outside.join("target")).unwrap(), b"precious");
    assert!(std::fs::symlink_metadata(&root).unwrap().is_dir());
});
