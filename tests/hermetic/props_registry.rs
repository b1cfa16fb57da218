//! Randomized tests of the image reference parser: it never panics, and
//! whatever it accepts prints back to a string that parses to the same
//! thing (so a reference shown in a message, a report or a digest file
//! names the image it was parsed from). The `WWW-Authenticate` parser
//! has its own properties next to it (src/registry/client.rs).

use proptest::prelude::*;
use shipyard_image::reference::{Reference, RegistryRef};

/// Compares what a reference names; whether the tag was written or
/// implied (`latest`) is lost in printing, by design.
fn same_image(a: &Reference, b: &Reference) -> bool {
    match (a, b) {
        (Reference::Registry(x), Reference::Registry(y)) => {
            (&x.registry, &x.repository, &x.tag, &x.digest)
                == (&y.registry, &y.repository, &y.tag, &y.digest)
        }
        _ => a == b,
    }
}

fn round_trips(r: &Reference) -> Result<(), TestCaseError> {
    let printed = r.to_string();
    let again = Reference::parse(&printed)
        .map_err(|e| TestCaseError::fail(format!("{printed:?} does not parse back: {e}")))?;
    prop_assert!(
        same_image(r, &again),
        "{printed:?} parses back to {again:?}, not {r:?}"
    );
    prop_assert_eq!(again.to_string(), printed);
    Ok(())
}

/// Strings near the grammar: transports, hosts, ports, paths, tags and
/// digests, glued in random order.
fn near_reference() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("docker://".to_string()),
        Just("oci:".to_string()),
        Just("oci-archive:".to_string()),
        Just("docker-archive:".to_string()),
        Just("sha256:".to_string()),
        Just("@".to_string()),
        Just(":".to_string()),
        Just("/".to_string()),
        Just("localhost".to_string()),
        Just("docker.io".to_string()),
        Just("library".to_string()),
        "[0-9a-f]{64}",
        "[a-zA-Z0-9._-]{1,8}",
        "[0-9]{1,6}",
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|v| v.concat())
}

/// Valid registry references, written the many ways users write them.
fn registry_ref() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        Just(String::new()),
        "[a-z0-9]{1,8}\\.[a-z]{2,4}/",
        "[a-z0-9]{1,8}\\.[a-z]{2,4}:[0-9]{1,5}/",
        "127\\.0\\.0\\.1:[0-9]{2,5}/",
        Just("localhost/".to_string()),
        Just("docker.io/".to_string()),
    ];
    let repo = proptest::collection::vec("[a-z0-9]{1,6}([._-][a-z0-9]{1,4})?", 1..4)
        .prop_map(|v| v.join("/"));
    let tag = prop_oneof![Just(String::new()), ":[A-Za-z0-9_][A-Za-z0-9_.-]{0,16}",];
    let digest = prop_oneof![Just(String::new()), "@sha256:[0-9a-f]{64}"];
    (host, repo, tag, digest).prop_map(|(h, r, t, d)| format!("{h}{r}{t}{d}"))
}

/// Inputs the properties found (or would find rarely) that once printed
/// to something that read back differently.
#[test]
fn known_tricky_references_round_trip() {
    for s in [
        "oci:docker://@",
        "oci:a:b@",
        "oci:a:b@v1",
        "oci:/@@",
        "oci:a@b:c",
        "oci-archive:x:y@sha256:1",
        "docker-archive:f:sha256:abc",
        "docker-archive:f:app:v1",
        "docker-archive:f",
    ] {
        let r = Reference::parse(s).unwrap();
        round_trips(&r).unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_strings_never_panic_and_what_parses_round_trips(s in "\\PC{0,64}") {
        if let Ok(r) = Reference::parse(&s) {
            round_trips(&r)?;
        }
        if let Ok(r) = Reference::parse_or_registry(&s) {
            round_trips(&r)?;
        }
        let _ = RegistryRef::parse(&s);
    }

    #[test]
    fn near_misses_never_panic_and_what_parses_round_trips(s in near_reference()) {
        if let Ok(r) = Reference::parse(&s) {
            round_trips(&r)?;
        }
        if let Ok(r) = Reference::parse_or_registry(&s) {
            round_trips(&r)?;
        }
    }

    #[test]
    fn valid_registry_references_parse_and_round_trip(s in registry_ref()) {
        let r = RegistryRef::parse(&s)
            .map_err(|e| TestCaseError::fail(format!("{s:?} was refused: {e}")))?;
        round_trips(&Reference::Registry(r.clone()))?;
        let via_transport = Reference::parse(&format!("docker://{s}"))
            .map_err(|e| TestCaseError::fail(format!("docker://{s}: {e}")))?;
        prop_assert_eq!(via_transport, Reference::Registry(r));
    }
}
