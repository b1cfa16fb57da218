//! The image reference parser on arbitrary text: it never panics, and what
//! it accepts prints to text that parses back and prints the same (a
//! reference shown in a message names the image it was parsed from).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shipyard_image::reference::Reference;

fuzz_target!(|text: &str| {
    if let Ok(r) = Reference::parse(text) {
        let printed = r.to_string();
        let again = Reference::parse(&printed).unwrap_or_else(|e| {
            panic!("{text:?} prints as {printed:?}, which does not parse: {e}")
        });
        assert_eq!(again.to_string(), printed, "from {text:?}");
    }
});
