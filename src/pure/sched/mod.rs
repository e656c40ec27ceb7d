//! Source selection for fetching one file from several sources (pure: no I/O, no
//! clock; the caller passes the time in). The scheduler decides which source gets
//! which block; the driver (`upstream::range`) sends the requests, verifies what comes
//! back and reports every outcome here.
//!
//! Policy:
//! - Blocks are assigned in playback order, from the first block not yet verified, at
//!   most `window_blocks` ahead of it, and at most `max_outstanding` per source.
//! - Each source is measured: its throughput (an exponentially weighted average of
//!   the bytes per second between its completions, so pipelining is accounted for)
//!   and, while a block is in flight, what it is late with: a source whose head
//!   request has taken longer than a block at its rate plans with the rate that
//!   delay implies, so a slow-down or silence is seen within about one block's time.
//! - From that, each source's queue says when it would deliver one more block. A
//!   block goes to the source that would deliver it first (a busy one is waited for
//!   when it would still be first), so every source whose rate adds to the total
//!   gets work in proportion to its rate and several sources add up.
//! - A block may have a deadline (when the viewer will need it). Then a peer that
//!   will deliver it in time is preferred, else the source that delivers it first,
//!   else any other in time; without one, a peer is preferred when nearly as quick
//!   (`tolerance`). A source nothing is known of gets only blocks with time to spare
//!   (`probe_slack`) and one at a time while others are measured.
//! - A late block (its source will miss its deadline, or without one is due later
//!   than another source would deliver it by a wide margin, `race_gain`) is raced to
//!   that source; the first verified copy wins and the driver cancels the other.
//! - A slow source that gets nothing is probed: one block at the end of the window
//!   every `probe_interval`, so one that recovered is noticed.
//! - A source that errors, closes, or sends a block failing its digest loses its
//!   outstanding blocks to the others; one that failed `max_failures` times in a row,
//!   was unreachable or sent a bad block is not used again for this file. A block
//!   outstanding past `stall_timeout` counts as a failure of its source and is
//!   assigned again.
//! - A block is done only when the driver says it was verified.
//!
//! Files: `candidate` (a source weighed for a block), `config` (the knobs), `source` (what is known of each source), `scheduler`
//! (the policy itself), `tests`.

mod candidate;
mod config;
mod explain;
mod scheduler;
mod source;
#[cfg(test)]
mod tests;

pub use config::SchedConfig;
pub use scheduler::{Assignment, Scheduler};
pub use source::{Failure, SourceClass, SourceId, SourceState};
