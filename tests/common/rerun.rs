//! Running one test of this binary again in a process of its own, for
//! work that needs process-wide state the other tests must not see (a
//! umask) or a small process to measure (peak memory): the tests of a
//! binary run in parallel threads of one process.
//!
//! The helper is an ordinary `#[test]` that returns at once unless
//! [`helper_arg`] says this process was started to run it, so a plain test
//! run passes over it.

use std::process::{Command, Output};

/// The helper's name, in the process [`rerun`] starts.
const HELPER: &str = "SHIPYARD_TEST_HELPER";
/// What the helper is asked to do.
const HELPER_ARG: &str = "SHIPYARD_TEST_HELPER_ARG";

/// libtest names tests without the crate: `hostile::measure_helper` for
/// `hermetic::hostile::measure_helper`.
fn test_name(path: &str) -> &str {
    path.split_once("::").map_or(path, |(_, rest)| rest)
}

/// A command running only the test `path` of this binary (as
/// `concat!(module_path!(), "::name")` spells it), which [`helper_arg`]
/// there answers with `arg`.
pub fn rerun(path: &str, arg: &str) -> Command {
    let name = test_name(path);
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(HELPER, name)
        .env(HELPER_ARG, arg);
    c
}

/// In the helper test `path`: the argument [`rerun`] gave it, or `None`
/// in an ordinary test run (the helper then does nothing).
pub fn helper_arg(path: &str) -> Option<String> {
    if std::env::var(HELPER).ok()? != test_name(path) {
        return None;
    }
    std::env::var(HELPER_ARG).ok()
}

/// Runs `c` with umask `mask` (only in that child: the umask is
/// process-wide, and tests run in parallel threads).
pub fn with_umask(mask: u32, mut c: Command) -> Output {
    use std::os::unix::process::CommandExt;
    // SAFETY: umask is async-signal-safe.
    unsafe {
        c.pre_exec(move || {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
            Ok(())
        });
    }
    c.output().unwrap()
}
