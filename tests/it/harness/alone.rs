//! Which tests share the machine: all of them run side by side in the test binary's
//! threads, except those that measure (a viewer's throughput, a node's memory under
//! attack, in `hostile`), which a neighbour's processes would distort. Such a test
//! takes [`exclusive`] first: it waits until no process of another test runs, and
//! until it ends no other test can start one.
//!
//! Every process the harness starts for a test (a node, `p2pd get`, a tool) holds a
//! [`Shared`] while it lives. A thread that holds one never waits for another (an
//! exclusive test only begins once none is held), so nothing can deadlock; the
//! exclusive test's own processes do not count, and must be started on its own thread.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;

struct State {
    /// Processes of shared tests alive now.
    shared: usize,
    /// The thread of the test running alone, if one is.
    exclusive: Option<ThreadId>,
}

static STATE: Mutex<State> = Mutex::new(State {
    shared: 0,
    exclusive: None,
});
static CHANGED: Condvar = Condvar::new();

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

fn wait(s: MutexGuard<'static, State>) -> MutexGuard<'static, State> {
    CHANGED.wait(s).unwrap_or_else(|e| e.into_inner())
}

/// Held while a process of a shared test runs (see the module comment).
pub struct Shared {
    counted: bool,
}

/// Waits while a test runs alone (unless it is this thread's), then counts one more
/// process of a shared test.
pub fn shared() -> Shared {
    let me = std::thread::current().id();
    let mut s = state();
    if s.exclusive == Some(me) {
        return Shared { counted: false };
    }
    while s.exclusive.is_some() {
        s = wait(s);
    }
    s.shared += 1;
    Shared { counted: true }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if self.counted {
            state().shared -= 1;
            CHANGED.notify_all();
        }
    }
}

/// Held by a test that runs alone, for as long as it runs.
pub struct Exclusive(());

/// Waits until no other test runs alone and no process of another test runs, then
/// keeps other tests from starting processes until the guard is dropped.
pub fn exclusive() -> Exclusive {
    let mut s = state();
    while s.exclusive.is_some() || s.shared > 0 {
        s = wait(s);
    }
    s.exclusive = Some(std::thread::current().id());
    Exclusive(())
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        state().exclusive = None;
        CHANGED.notify_all();
    }
}
