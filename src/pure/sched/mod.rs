//! Source selection for fetching one file from several sources (pure: no I/O, no
//! clock; the caller passes the time in). The scheduler decides which source gets
//! which block; the driver (`upstream::range`) sends the requests, verifies what comes
//! back and reports every outcome here.
//!
//! Policy, in the order it is applied:
//! - Blocks are assigned in playback order, from the first block not yet verified, at
//!   most `window_blocks` ahead of it, and at most `max_outstanding` per source.
//! - Each source's throughput is measured (an exponentially weighted average of the
//!   bytes per second between its completions, so pipelining is accounted for) with
//!   its latency to first byte. Sources whose rate is within `tolerance` of the best
//!   share the blocks: each block goes to the one that would finish it first given
//!   what it already has outstanding. Slower sources get no blocks...
//! - ...except probes: a source outside that set with nothing outstanding gets one
//!   block every `probe_interval` (a new source at once), so a new source gets a
//!   chance and a slow one that recovered is noticed.
//! - A source that errors, closes, or sends a block failing its digest loses its
//!   outstanding blocks to the others; one that failed `max_failures` times in a row
//!   or sent a bad block is not used again for this file. A block outstanding past
//!   `stall_timeout` counts as a failure of its source and is assigned again.
//! - The block at the playback position is urgent: when it has waited past
//!   `urgent_after` at one source, or sits at a source well below the best rate
//!   (`slow_factor`), it is also asked of a second source; the first verified copy
//!   wins and the driver cancels the other.
//! - A block is done only when the driver says it was verified.
//!
//! Files: `config` (the knobs), `source` (what is known of each source), `scheduler`
//! (the policy itself), `tests`.

mod config;
mod scheduler;
mod source;
#[cfg(test)]
mod tests;

pub use config::SchedConfig;
pub use scheduler::{Assignment, Scheduler};
pub use source::{Failure, SourceClass, SourceId, SourceState};
