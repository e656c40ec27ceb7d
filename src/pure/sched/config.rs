//! [`SchedConfig`]: the knobs of the source-selection policy (see `pure::sched`).

use std::time::Duration;

/// The policy's knobs (see the module documentation).
#[derive(Clone, Debug)]
pub struct SchedConfig {
    /// Blocks outstanding at one source at most.
    pub max_outstanding: usize,
    /// How far ahead of the first unverified block blocks are assigned.
    pub window_blocks: u64,
    /// A source whose rate is at least this share of the best one's gets blocks.
    pub tolerance: f64,
    /// A source below this share of the best one is slow: its urgent blocks are also
    /// asked elsewhere.
    pub slow_factor: f64,
    /// A source outside the eligible set gets one block (a probe) at most this often,
    /// and only with nothing else outstanding, to measure it again.
    pub probe_interval: Duration,
    /// A block outstanding this long without arriving is taken from its source.
    pub stall_timeout: Duration,
    /// The block at the playback position is also asked of a second source after
    /// waiting this long.
    pub urgent_after: Duration,
    /// Failures in a row after which a source is dropped for this file.
    pub max_failures: u32,
    /// Weight of the newest sample in the rate average.
    pub ewma_alpha: f64,
}

impl Default for SchedConfig {
    fn default() -> Self {
        SchedConfig {
            max_outstanding: 8,
            window_blocks: 64,
            tolerance: 0.6,
            slow_factor: 0.3,
            probe_interval: Duration::from_millis(500),
            stall_timeout: Duration::from_secs(5),
            urgent_after: Duration::from_millis(1500),
            max_failures: 3,
            ewma_alpha: 0.3,
        }
    }
}
