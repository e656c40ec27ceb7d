//! What the scheduler knows of each source: its [`SourceClass`], holdings, measured
//! rate and latency, failures ([`Failure`]) and outstanding blocks ([`SourceState`]),
//! and the model that turns it into times: when the source would deliver each block
//! in its queue, with its rate bounded by what it is late with right now.

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
    /// Requests outstanding at it (`inflight.len()`).
    pub outstanding: usize,
    /// Its outstanding requests, oldest first: when each was asked, which block. A
    /// source serves them in turn.
    pub(super) inflight: Vec<(Instant, u64)>,
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
    /// otherwise be measured on. A source never measured takes the bound as its rate.
    pub(super) fn bound_rate(&mut self, bytes: u64, since: Instant, now: Instant, alpha: f64) {
        let start = self.last_done.map_or(since, |d| d.max(since));
        let secs = now.saturating_duration_since(start).as_secs_f64();
        if secs <= 0.0 || bytes == 0 {
            return;
        }
        let bound = bytes as f64 / secs;
        match self.rate_bps {
            Some(r) if bound < r => self.rate_bps = Some(r + alpha * (bound - r)),
            Some(_) => {}
            // Never measured: the bound is the best guess there is.
            None => self.rate_bps = Some(bound),
        }
    }

    /// When the source started on the request at the head of its queue: when it was
    /// asked, or when it delivered the one before, whichever is later.
    fn head_started(&self) -> Option<Instant> {
        let &(since, _) = self.inflight.first()?;
        Some(self.last_done.map_or(since, |d| d.max(since)))
    }

    /// The rate to plan with at `now` (bytes per second): the measured one (`prior`
    /// if none), bounded by what the request at the head of its queue has failed to
    /// deliver so far: a source that slows down or goes silent is seen so while its
    /// block is in flight, within about one block's time.
    pub fn rate_at(&self, block_bytes: f64, prior: f64, now: Instant) -> f64 {
        let r = self.rate_bps.unwrap_or(prior).max(1.0);
        match self.head_started() {
            Some(start) => {
                let late = now.saturating_duration_since(start).as_secs_f64();
                if late > 0.0 {
                    r.min(block_bytes / late).max(1.0)
                } else {
                    r
                }
            }
            None => r,
        }
    }

    /// Whether the request at the head of its queue has taken `factor` times a
    /// block's time at its measured rate (`prior` if none), and at least `min`: the source slowed down
    /// or went silent, and what waits in its queue is better asked elsewhere.
    pub fn overdue(
        &self,
        block_bytes: f64,
        (factor, min): (f64, Duration),
        prior: f64,
        now: Instant,
    ) -> bool {
        let Some(start) = self.head_started() else {
            return false;
        };
        let rate = self.rate_bps.unwrap_or(prior);
        let late = now.saturating_duration_since(start);
        late >= min && late.as_secs_f64() >= factor * block_bytes / rate.max(1.0)
    }

    /// When the source is expected to deliver the request at `rank` in its queue (0
    /// the oldest; `outstanding` for one more given it now), planning with `rate`.
    /// A head request already late (it has had a block's time at `rate`) is expected
    /// to take as long again.
    pub fn finish(&self, rank: usize, rate: f64, block_bytes: f64, now: Instant) -> Instant {
        let per = Duration::from_secs_f64((block_bytes / rate.max(1.0)).min(3600.0));
        let first = match self.head_started() {
            Some(start) if start + per > now => start + per,
            _ => now + per,
        };
        first + per * rank as u32
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
