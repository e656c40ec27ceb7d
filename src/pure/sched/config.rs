//! [`SchedConfig`]: the knobs of the source-selection policy (see `pure::sched`).

use std::time::Duration;

/// The policy's knobs (see the module documentation).
#[derive(Clone, Debug)]
pub struct SchedConfig {
    /// Blocks outstanding at one source at most (one more for a raced block).
    pub max_outstanding: usize,
    /// How far ahead of the first unverified block blocks are assigned.
    pub window_blocks: u64,
    /// Without a deadline, a peer is preferred over the source that would deliver a
    /// block first when it would take at most 1/`tolerance` as long.
    pub tolerance: f64,
    /// A source slower than the fastest candidate is planned as if it took this
    /// many times as long (a margin for its jitter).
    pub slow_margin: f64,
    /// A block is raced to a second source when that one would deliver it within
    /// this share of the time its first source still needs for it.
    pub race_gain: f64,
    /// A block expected within this long at its source is not raced.
    pub race_min: Duration,
    /// A source whose head request has taken this many times a block's time at its
    /// measured rate (and at least `overdue_min`) is overdue: everything it has
    /// outstanding is raced to sources with room, whatever the gain.
    pub overdue_factor: f64,
    /// See `overdue_factor`.
    pub overdue_min: Duration,
    /// A source is given more blocks only while what it has outstanding would take at
    /// most this long (one at least): a queue at a slow source is a queue the
    /// blocks a viewer needs first wait behind.
    pub max_queue: Duration,
    /// A block needed within this long may join a server's queue however long it
    /// is (see `max_queue`): it is fetched ahead of its reader by that much, so the
    /// reader does not wait out the queue, while blocks needed later wait for room or
    /// for a peer that holds them.
    pub server_lead: Duration,
    /// How often the driver looks again while blocks are in flight (races fall due,
    /// rates bound by what is late).
    pub tick: Duration,
    /// A slow source with nothing outstanding gets one block (a probe) at most this
    /// often, so one that recovered is noticed.
    pub probe_interval: Duration,
    /// A source nothing is known of is given a block with a deadline only if that
    /// deadline is at least this far away (time to race it elsewhere if it is slow).
    pub probe_slack: Duration,
    /// The rate assumed of a source before anything is measured (bytes per second),
    /// when no other source is measured either.
    pub prior_rate_bps: f64,
    /// The block size rates are turned into times with, until blocks are measured.
    pub block_bytes: u64,
    /// A block outstanding this long without arriving is taken from its source.
    pub stall_timeout: Duration,
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
            slow_margin: 1.3,
            race_gain: 0.75,
            race_min: Duration::from_millis(30),
            overdue_factor: 4.0,
            overdue_min: Duration::from_millis(100),
            max_queue: Duration::from_millis(150),
            server_lead: Duration::from_secs(4),
            tick: Duration::from_millis(20),
            probe_interval: Duration::from_millis(500),
            probe_slack: Duration::from_secs(2),
            prior_rate_bps: 12.5e6,
            block_bytes: 256 * 1024,
            stall_timeout: Duration::from_secs(5),
            max_failures: 3,
            ewma_alpha: 0.3,
        }
    }
}
