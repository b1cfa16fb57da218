//! The rootfs manifest parser (the text `shipyard manifest` prints and
//! the cache and ownership records are kept in) on arbitrary bytes after
//! its header line: it never panics, and what it accepts prints to text
//! that parses back to the same manifest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shipyard_image::rootfs::manifest::{Manifest, HEADER};

fuzz_target!(|body: &[u8]| {
    let mut text = HEADER.as_bytes().to_vec();
    text.push(b'\n');
    text.extend_from_slice(body);
    if let Ok(m) = Manifest::parse(&text[..], "fuzz") {
        let printed = m.to_text();
        let back = Manifest::parse(&printed[..], "fuzz").expect("a printed manifest parses");
        assert_eq!(back, m);
    }
});
