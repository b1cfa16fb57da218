//! Watching the processes a sandboxed step starts, from outside.

use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// A sleep whose command line is unique to this test process and `salt`,
/// so `ps` can find exactly it (dash has no `exec -a`).
pub fn unique_sleep(salt: u32) -> String {
    format!(
        "sleep {}",
        100_000 + (std::process::id() % 50_000) * 10 + salt
    )
}

/// Whether a process with exactly this command line is running, whoever
/// its user.
pub fn running(cmdline: &str) -> bool {
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    String::from_utf8_lossy(&ps.stdout)
        .lines()
        .any(|l| l.trim() == cmdline)
}

/// Waits up to 20 s for `f` to hold.
pub fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The output of a child, which must exit within `limit` (a generous bound
/// so that a regression fails the test instead of hanging it).
pub fn output_within(mut child: Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} still running after {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
