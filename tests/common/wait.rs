//! Waiting for something another process does, with a deadline, so that a
//! regression fails the test instead of hanging it.

use std::time::{Duration, Instant};

/// Polls `f` every `every` until it holds; panics naming `what` after
/// `limit`.
pub fn wait_until(what: &str, limit: Duration, every: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting: {what}"
        );
        std::thread::sleep(every);
    }
}
