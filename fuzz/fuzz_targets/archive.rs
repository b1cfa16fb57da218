//! The oci-archive and docker-archive readers on arbitrary bytes: they
//! refuse what they cannot read, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shipyard_image::archive::{docker_read, oci_read};
use shipyard_image::oci::layout::Layout;

fuzz_target!(|bytes: &[u8]| {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("in.tar");
    std::fs::write(&f, bytes).unwrap();
    let dest = Layout::open_or_create(t.path().join("dest")).unwrap();
    let _ = oci_read::import(&f, None, &dest);
    let _ = docker_read::import(&f, None, &dest);
});
