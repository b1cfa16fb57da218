//! Watching the processes a sandboxed step starts, from outside.

use super::wait::wait_until;
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A sleep whose command line is unique to this test process and to this
/// call (the tests of a binary share one pid), so `ps` can find exactly it
/// (dash has no `exec -a`).
pub fn unique_sleep() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    assert!(n < 100, "unique_sleep numbers calls below 100");
    format!(
        "sleep {}",
        100_000 + (std::process::id() % 50_000) * 100 + n
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

/// Waits up to 20 s for `f` to hold (polling every 50 ms).
pub fn wait_for(what: &str, f: impl FnMut() -> bool) {
    wait_until(what, Duration::from_secs(20), Duration::from_millis(50), f);
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

/// Makes `cmd`'s process start with SIGINT at its default action. A job a
/// shell without job control starts in the background (`cmd &` in a
/// script) inherits SIGINT ignored, and shipyard, like any program, keeps
/// an ignored signal ignored: a test that interrupts it must not depend
/// on how the test run itself was started.
pub fn interruptible(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec, only signal(2), which is
    // async-signal-safe, on a signal number that is valid.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        })
    }
}
