//! What the scheduler knows of each source: its [`SourceClass`], holdings, measured
//! rate and latency, failures ([`Failure`]) and outstanding blocks ([`SourceState`]).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::pure::protocol::Holds;

/// Index of a source in its scheduler.
pub type SourceId = usize;

/// Why a request to a source failed, as far as the scheduler cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// An error answer or a timeout: the source may do better next time.
    Error,
    /// The connection broke or could not be made: nothing more will come from it
    /// now (it counts as a failure and its other blocks go elsewhere).
    Closed,
    /// The source does not hold the block (it is not asked for it again).
    NotHeld,
    /// A block failed its digest: the source is never used again for this file.
    BadBlock,
    /// A peer that could not be reached at all (refused, or no handshake within the
    /// attempt's deadline): dropped for this file at once, so a viewer does not wait
    /// out a silent machine again for the next blocks.
    Unreachable,
    /// The driver gave the request up before the source answered (its own deadline
    /// ran out, or it is stopping): the request's place at the source is freed and the
    /// source not blamed. Stalls are [`Failure::Error`]s.
    Abandoned,
}

/// Whose bandwidth a source is: a peer's (another viewer's machine, free to the
/// provider) is used before a server's (origin, mirror, cache), which then serves
/// what no peer can, and stands in when peers are slow or fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SourceClass {
    Peer,
    Server,
}

/// What a source is known to be like.
#[derive(Clone, Debug)]
pub struct SourceState {
    pub(super) holds: Holds,
    pub class: SourceClass,
    /// Bytes per second (EWMA); None until its first block.
    pub rate_bps: Option<f64>,
    /// Latency to first byte of its last block.
    pub ttfb: Option<Duration>,
    pub failures_in_row: u32,
    pub outstanding: usize,
    /// Dropped for this file (bad block, too many failures).
    pub dropped: bool,
    /// Blocks it does not have after all.
    pub(super) missing: BTreeSet<u64>,
    pub blocks: u64,
    pub bytes: u64,
    pub(super) last_done: Option<Instant>,
    pub(super) last_probe: Option<Instant>,
}

impl SourceState {
    /// What a block asked of this source at `since` and still not delivered at `now`
    /// says about its rate: at most `bytes` over the time it had the block to itself
    /// (from `since`, or from its previous completion if later). An estimate above
    /// that bound moves towards it as a measured block would; one below it stays. A
    /// source that slowed down or went silent is seen so even when all its blocks are
    /// taken by others before they complete, which are the only ones it would
    /// otherwise be measured on.
    pub(super) fn bound_rate(&mut self, bytes: u64, since: Instant, now: Instant, alpha: f64) {
        let start = self.last_done.map_or(since, |d| d.max(since));
        let secs = now.saturating_duration_since(start).as_secs_f64();
        if secs <= 0.0 || bytes == 0 {
            return;
        }
        let bound = bytes as f64 / secs;
        if let Some(r) = self.rate_bps {
            if bound < r {
                self.rate_bps = Some(r + alpha * (bound - r));
            }
        }
    }

    pub(super) fn holds(&self, block: u64) -> bool {
        if self.missing.contains(&block) {
            return false;
        }
        match &self.holds {
            Holds::All => true,
            Holds::Ranges(rs) => rs
                .iter()
                .any(|r| block >= r.start && block - r.start < r.count),
        }
    }
}
