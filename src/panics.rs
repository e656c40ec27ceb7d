//! The panic policy of the daemon: a panic is contained at the connection whose work
//! raised it, or it ends the whole process at once. A process is never left half
//! dead (a shard gone while the others accept connections that hang).
//!
//! - A connection's futures run inside [`contain`]: a panic while they are polled
//!   closes that connection only (its future is dropped), is counted by the caller
//!   (`p2pd_panics_total`) and logged once with its backtrace; the shard goes on.
//! - Code that changes state the whole shard relies on (the memory cache's LRU, the
//!   in-flight map) marks itself with [`critical`]: a panic there, even during a
//!   connection's poll, would leave that state inconsistent, so it is not contained.
//! - Any other panic (a shard's own tasks, the router, housekeeping, the publisher's
//!   threads, glommio's reactor) ends the process with [`FATAL_EXIT_CODE`] as soon as
//!   the panic hook runs, before any other task can see the broken state, so a
//!   service manager restarts the node.
//!
//! [`install`] sets the hook; only the daemon calls it (`p2pd get`, the bench and the
//! unit tests keep Rust's default behaviour).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The exit status of a process ended by a panic it could not contain (EX_SOFTWARE).
pub const FATAL_EXIT_CODE: i32 = 70;

/// Backtrace frames kept in a contained panic's log line.
const MAX_BACKTRACE_BYTES: usize = 8 * 1024;

thread_local! {
    /// Depth of [`contain`] scopes being polled on this thread.
    static CONTAINED: Cell<u32> = const { Cell::new(0) };
    /// Depth of [`critical`] sections on this thread.
    static CRITICAL: Cell<u32> = const { Cell::new(0) };
    /// What the hook saw of the last contained panic on this thread.
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs the process's panic hook (see the module documentation).
pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        let where_ = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let backtrace = one_line(&std::backtrace::Backtrace::force_capture().to_string());
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        let containable = CONTAINED.with(Cell::get) > 0 && CRITICAL.with(Cell::get) == 0;
        let line = format!("panic at {where_} on thread {thread}: {what}; backtrace: {backtrace}");
        if containable {
            LAST.with(|l| *l.borrow_mut() = Some(line));
            return;
        }
        // Nothing is left to unwind into that could make this thread's state whole
        // again, and the other threads must not go on without it.
        eprintln!("p2pd: fatal: {line}; exiting with status {FATAL_EXIT_CODE}");
        std::process::exit(FATAL_EXIT_CODE);
    }));
}

/// The backtrace on one line: frames joined by " | ", at most
/// [`MAX_BACKTRACE_BYTES`].
fn one_line(bt: &str) -> String {
    let mut out = String::new();
    for l in bt.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if out.len() + l.len() + 3 > MAX_BACKTRACE_BYTES {
            out.push_str(" | …");
            break;
        }
        if !out.is_empty() {
            out.push_str(" | ");
        }
        out.push_str(l);
    }
    out
}

/// A panic that [`contain`] caught: the hook's line (place, message, backtrace).
#[derive(Debug)]
pub struct Panicked(pub String);

/// Marks a section that changes shard-wide state: a panic inside it is never
/// contained (see the module documentation). Dropping the guard ends the section.
pub fn critical() -> Critical {
    CRITICAL.with(|c| c.set(c.get() + 1));
    Critical(())
}

pub struct Critical(());

impl Drop for Critical {
    fn drop(&mut self) {
        CRITICAL.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

/// Runs `fut`, turning a panic while it is polled (or dropped) into
/// `Err(Panicked)`. After a panic the future is dropped and never polled again.
pub fn contain<F: Future>(fut: F) -> Contained<F> {
    Contained {
        inner: Some(Box::pin(fut)),
    }
}

pub struct Contained<F> {
    inner: Option<Pin<Box<F>>>,
}

/// Counts the scope while a contained future is polled or dropped; a guard, so the
/// count is right however the poll ends.
struct Scope;

impl Scope {
    fn enter() -> Scope {
        CONTAINED.with(|c| c.set(c.get() + 1));
        Scope
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        CONTAINED.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

fn caught() -> Panicked {
    Panicked(
        LAST.with(|l| l.borrow_mut().take())
            .unwrap_or_else(|| "panic (no details)".into()),
    )
}

impl<F: Future> Future for Contained<F> {
    type Output = Result<F::Output, Panicked>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(Err(Panicked("polled after it ended".into())));
        };
        let polled = {
            let _scope = Scope::enter();
            std::panic::catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx)))
        };
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => {
                self.inner = None;
                Poll::Ready(Ok(v))
            }
            Err(_) => {
                let p = caught();
                // Drop what is left of the future inside the scope too: its
                // destructors may panic as well.
                let rest = self.inner.take();
                let _scope = Scope::enter();
                let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(rest)));
                LAST.with(|l| l.borrow_mut().take());
                Poll::Ready(Err(p))
            }
        }
    }
}

impl<F> Drop for Contained<F> {
    fn drop(&mut self) {
        // A connection future dropped early (its task cancelled) runs its destructors
        // inside the scope as well.
        if let Some(rest) = self.inner.take() {
            let _scope = Scope::enter();
            if std::panic::catch_unwind(AssertUnwindSafe(move || drop(rest))).is_err() {
                LAST.with(|l| l.borrow_mut().take());
            }
        }
    }
}

/// A task's own future: polled outside any scope of the task that spawned it.
/// glommio polls a task it spawns at once, inside the spawner's poll; without this a
/// shard task spawned by a connection would run its first poll inside the
/// connection's scope, and a panic there would count as the connection's.
pub fn own_task<F: Future>(fut: F) -> OwnTask<F> {
    OwnTask { inner: fut }
}

pub struct OwnTask<F> {
    inner: F,
}

/// Sets this thread's scope counters to zero for its life, then restores them.
struct Outside {
    contained: u32,
    critical: u32,
}

impl Outside {
    fn enter() -> Outside {
        Outside {
            contained: CONTAINED.with(|c| c.replace(0)),
            critical: CRITICAL.with(|c| c.replace(0)),
        }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        CONTAINED.with(|c| c.set(self.contained));
        CRITICAL.with(|c| c.set(self.critical));
    }
}

impl<F: Future> Future for OwnTask<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _outside = Outside::enter();
        // SAFETY: structural pinning: `inner` is never moved out of the pinned
        // `OwnTask`, and `OwnTask` has no Drop impl or Unpin impl of its own.
        let inner = unsafe { self.map_unchecked_mut(|s| &mut s.inner) };
        inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: Future>(f: F) -> F::Output {
        futures_lite::future::block_on(f)
    }

    #[test]
    fn a_panic_inside_is_an_error_and_the_future_is_not_polled_again() {
        let r = block_on(contain(async { panic!("boom") }));
        assert!(r.is_err());
        let ok = block_on(contain(async { 7 }));
        assert_eq!(ok.unwrap(), 7);
        // The scope counters are back to zero whatever happened.
        assert_eq!(CONTAINED.with(Cell::get), 0);
        assert_eq!(CRITICAL.with(Cell::get), 0);
    }

    #[test]
    fn a_task_spawned_inside_a_scope_runs_outside_it() {
        let _scope = Scope::enter();
        let _c = critical();
        let seen = block_on(own_task(async {
            (CONTAINED.with(Cell::get), CRITICAL.with(Cell::get))
        }));
        assert_eq!(seen, (0, 0));
        assert_eq!(
            (CONTAINED.with(Cell::get), CRITICAL.with(Cell::get)),
            (1, 1)
        );
    }

    #[test]
    fn critical_sections_nest_and_end_with_their_guard() {
        {
            let _a = critical();
            let _b = critical();
            assert_eq!(CRITICAL.with(Cell::get), 2);
        }
        assert_eq!(CRITICAL.with(Cell::get), 0);
    }

    #[test]
    fn backtraces_are_one_bounded_line() {
        let bt = "  0: a\n     at x.rs:1\n\n  1: b\n".repeat(2000);
        let l = one_line(&bt);
        assert!(!l.contains('\n'));
        assert!(l.len() <= MAX_BACKTRACE_BYTES + 8);
        assert!(l.starts_with("0: a | at x.rs:1 | 1: b"));
    }
}
