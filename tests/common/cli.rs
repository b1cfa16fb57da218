//! The shipyard binary and the checkout's files, as the tests reach them
//! both from `cargo test` and from the copy scripts/test stages for the
//! test users.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The shipyard binary. `SHIPYARD_BIN` lets scripts/test run the tests as
/// another user from a copy of the binaries.
pub fn bin() -> PathBuf {
    std::env::var_os("SHIPYARD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_shipyard")))
}

/// The checkout's files the tests read (examples, fixtures, man pages):
/// `SHIPYARD_SRC_DIR` when scripts/test runs the tests from a copy.
pub fn src_dir() -> PathBuf {
    std::env::var_os("SHIPYARD_SRC_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// A shipyard command without the caller's SOURCE_DATE_EPOCH or
/// RUST_LOG, which would change digests and output.
pub fn shipyard() -> Command {
    let mut c = Command::new(bin());
    c.env_remove("SOURCE_DATE_EPOCH");
    c.env_remove("RUST_LOG");
    c
}

/// Runs shipyard and asserts success; returns stdout.
pub fn ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = shipyard().args(args).output().expect("run shipyard");
    assert_success(&out, "shipyard");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
