//! Waiting without guessing: poll for the condition a test needs (a node up, a counter
//! at a value, a file gone) instead of sleeping a fixed time and hoping.

use std::time::{Duration, Instant};

/// How often the waits look again.
const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` every 20 ms until it holds (true) or `within` has passed (false).
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if t.elapsed() >= within {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Lets `d` pass before checking that something did *not* happen (a counter that must
/// stay put, a peer that must stay listed): there is no condition to poll for, only
/// time for a wrong move to show.
pub fn quiet_spell(d: Duration) {
    std::thread::sleep(d);
}
