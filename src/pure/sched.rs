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

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::pure::protocol::Holds;

/// Index of a source in its scheduler.
pub type SourceId = usize;

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
    holds: Holds,
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
    missing: BTreeSet<u64>,
    pub blocks: u64,
    pub bytes: u64,
    last_done: Option<Instant>,
    last_probe: Option<Instant>,
}

impl SourceState {
    fn holds(&self, block: u64) -> bool {
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

/// One request the driver is to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub block: u64,
    pub source: SourceId,
}

#[derive(Clone, Debug, Default)]
struct BlockState {
    /// Sources asked for it, with when (at most two: the urgent duplicate).
    at: Vec<(SourceId, Instant)>,
}

/// The scheduler of one file's (or one range's) blocks.
#[derive(Debug)]
pub struct Scheduler {
    cfg: SchedConfig,
    sources: Vec<SourceState>,
    end: u64,
    /// The first block not yet verified.
    position: u64,
    /// Blocks at or after `position` that are verified.
    verified: BTreeSet<u64>,
    /// Blocks outstanding somewhere.
    outstanding: BTreeMap<u64, BlockState>,
}

impl Scheduler {
    /// Schedules blocks `first..end`.
    pub fn new(cfg: SchedConfig, first: u64, end: u64) -> Scheduler {
        Scheduler {
            cfg,
            sources: Vec::new(),
            end,
            position: first.min(end),
            verified: BTreeSet::new(),
            outstanding: BTreeMap::new(),
        }
    }

    pub fn add_source(&mut self, holds: Holds) -> SourceId {
        self.add_source_of(holds, SourceClass::Server)
    }

    /// New knowledge of what a source holds (a fresher Locate answer): replaces what
    /// was known, and forgets the blocks it said it did not hold. Its measurements stay.
    pub fn set_holds(&mut self, id: SourceId, holds: Holds) {
        if let Some(s) = self.sources.get_mut(id) {
            s.holds = holds;
            s.missing.clear();
        }
    }

    pub fn add_source_of(&mut self, holds: Holds, class: SourceClass) -> SourceId {
        self.sources.push(SourceState {
            holds,
            class,
            rate_bps: None,
            ttfb: None,
            failures_in_row: 0,
            outstanding: 0,
            dropped: false,
            missing: BTreeSet::new(),
            blocks: 0,
            bytes: 0,
            last_done: None,
            last_probe: None,
        });
        self.sources.len() - 1
    }

    pub fn source(&self, id: SourceId) -> &SourceState {
        &self.sources[id]
    }

    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// The first block not yet verified (everything before it is).
    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn is_finished(&self) -> bool {
        self.position >= self.end
    }

    /// The best measured rate among usable sources.
    fn best_rate(&self) -> Option<f64> {
        self.sources
            .iter()
            .filter(|s| !s.dropped)
            .filter_map(|s| s.rate_bps)
            .fold(None, |m, r| Some(m.map_or(r, |m: f64| m.max(r))))
    }

    fn usable(&self, id: SourceId, block: u64) -> bool {
        let s = &self.sources[id];
        !s.dropped && s.outstanding < self.cfg.max_outstanding && s.holds(block)
    }

    /// Whether a usable source could ever serve `block` (capacity aside).
    fn servable(&self, block: u64) -> bool {
        self.sources.iter().any(|s| !s.dropped && s.holds(block))
    }

    /// Whether no source that is still used may serve `block`.
    pub fn stuck_on(&self, block: u64) -> bool {
        !self.servable(block)
    }

    /// Why nothing more can be done, if so: every source that could serve a missing
    /// block was dropped.
    pub fn stuck(&self) -> Option<String> {
        if self.is_finished() {
            return None;
        }
        let missing =
            (self.position..self.end).find(|b| !self.verified.contains(b) && !self.servable(*b))?;
        let dropped = self.sources.iter().filter(|s| s.dropped).count();
        Some(format!(
            "no source left for block {missing}: {} source(s), {dropped} dropped after failures or bad blocks",
            self.sources.len()
        ))
    }

    /// Picks the source for `block` (not already asked of `except`): among the peers
    /// that hold it if any is usable and not too slow, else among the servers.
    fn pick(&mut self, block: u64, except: Option<SourceId>, now: Instant) -> Option<SourceId> {
        let peers_hold = (0..self.sources.len()).any(|i| {
            let s = &self.sources[i];
            Some(i) != except && s.class == SourceClass::Peer && !s.dropped && s.holds(block)
        });
        if peers_hold {
            if let Some(p) = self.pick_in(block, except, now, Some(SourceClass::Peer)) {
                return Some(p);
            }
            // Every peer that holds it is busy: a server takes it only when the peers
            // are slower than the servers (otherwise the block waits for a peer).
            let best = |c: SourceClass| {
                self.sources
                    .iter()
                    .filter(|s| s.class == c && !s.dropped)
                    .filter_map(|s| s.rate_bps)
                    .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))))
            };
            let servers_faster = match (best(SourceClass::Peer), best(SourceClass::Server)) {
                (Some(p), Some(s)) => s > p / self.cfg.tolerance,
                // A server not measured yet gets tried, so the comparison can be made.
                (_, None) => true,
                // Peers not measured yet: they get the chance first.
                (None, Some(_)) => false,
            };
            if !servers_faster {
                return None;
            }
        }
        self.pick_in(block, except, now, Some(SourceClass::Server))
            .or_else(|| self.pick_in(block, except, now, None))
    }

    /// [`pick`](Self::pick) within one class (or all).
    fn pick_in(
        &mut self,
        block: u64,
        except: Option<SourceId>,
        now: Instant,
        class: Option<SourceClass>,
    ) -> Option<SourceId> {
        let candidates: Vec<SourceId> = (0..self.sources.len())
            .filter(|&i| {
                Some(i) != except
                    && self.usable(i, block)
                    && class.is_none_or(|c| self.sources[i].class == c)
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        // Rates compare within the class being picked from.
        let best = self
            .sources
            .iter()
            .filter(|s| !s.dropped && class.is_none_or(|c| s.class == c))
            .filter_map(|s| s.rate_bps)
            .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
        let eligible = |s: &SourceState| match (s.rate_bps, best) {
            (Some(r), Some(b)) => r >= b * self.cfg.tolerance,
            // Nothing measured yet: everyone is worth trying.
            (None, None) => true,
            (None, Some(_)) => false,
            (Some(_), None) => true,
        };
        // A probe: a source outside the eligible set, idle, not probed recently; the
        // one probed longest ago (never-measured ones first).
        let interval = self.cfg.probe_interval;
        let probe = candidates
            .iter()
            .copied()
            .filter(|&i| {
                let s = &self.sources[i];
                // Measured sources are probed `interval` after they were last heard
                // from; never-measured ones at once.
                let last_heard = s.last_probe.max(s.last_done);
                !eligible(s)
                    && s.outstanding == 0
                    && (s.rate_bps.is_none()
                        || last_heard.is_none_or(|t| now.saturating_duration_since(t) >= interval))
            })
            .min_by_key(|&i| {
                let s = &self.sources[i];
                (s.rate_bps.is_some(), s.last_probe)
            });
        if let Some(p) = probe {
            self.sources[p].last_probe = Some(now);
            return Some(p);
        }
        // Among the eligible, the one that would finish this block first.
        let finish = |s: &SourceState| -> f64 {
            let rate = s.rate_bps.or(best).unwrap_or(1.0).max(1.0);
            (s.outstanding as f64 + 1.0) / rate
        };
        let chosen = candidates
            .iter()
            .copied()
            .filter(|&i| eligible(&self.sources[i]))
            .min_by(|&a, &b| {
                finish(&self.sources[a])
                    .total_cmp(&finish(&self.sources[b]))
                    .then(a.cmp(&b))
            });
        // When every eligible source is busy, the block waits for one rather than go
        // to a slow source (unless nobody eligible can ever serve it).
        chosen.or_else(|| {
            let any_eligible_holds = self.sources.iter().any(|s| {
                !s.dropped && class.is_none_or(|c| s.class == c) && eligible(s) && s.holds(block)
            });
            if any_eligible_holds {
                None
            } else {
                candidates.iter().copied().min_by(|&a, &b| {
                    finish(&self.sources[a])
                        .total_cmp(&finish(&self.sources[b]))
                        .then(a.cmp(&b))
                })
            }
        })
    }

    fn start(&mut self, block: u64, source: SourceId, now: Instant) -> Assignment {
        self.sources[source].outstanding += 1;
        self.outstanding
            .entry(block)
            .or_default()
            .at
            .push((source, now));
        Assignment { block, source }
    }

    /// The requests to send now: blocks not yet verified nor outstanding, in order
    /// within the window, and the urgent duplicates.
    pub fn assign(&mut self, now: Instant) -> Vec<Assignment> {
        let mut out = Vec::new();
        if let Some(a) = self.urgent_duplicate(now) {
            out.push(a);
        }
        let window_end = self
            .end
            .min(self.position.saturating_add(self.cfg.window_blocks));
        let mut b = self.position;
        while b < window_end {
            if !self.verified.contains(&b) && !self.outstanding.contains_key(&b) {
                match self.pick(b, None, now) {
                    Some(s) => out.push(self.start(b, s, now)),
                    // Later blocks wait too: assignment stays in playback order.
                    None => break,
                }
            }
            b += 1;
        }
        out
    }

    /// One block on demand, outside any range (a cache's owner shard fetching the
    /// block a viewer needs): the source to ask, chosen and counted as in [`assign`],
    /// or None when every source that may have it is dropped or full. Use a scheduler
    /// made for an empty range, so nothing is tracked per block once it is done.
    ///
    /// [`assign`]: Scheduler::assign
    pub fn pick_block(&mut self, block: u64, now: Instant) -> Option<SourceId> {
        let s = self.pick(block, None, now)?;
        self.start(block, s, now);
        Some(s)
    }

    /// The block at the playback position, asked of a second source when it waited
    /// too long or sits at a slow source.
    fn urgent_duplicate(&mut self, now: Instant) -> Option<Assignment> {
        let block = self.position;
        let st = self.outstanding.get(&block)?;
        if st.at.len() != 1 {
            return None;
        }
        let (src, since) = st.at[0];
        let waited = now.saturating_duration_since(since);
        let slow = match (self.sources[src].rate_bps, self.best_rate()) {
            (Some(r), Some(b)) => r < b * self.cfg.slow_factor,
            _ => false,
        };
        if waited < self.cfg.urgent_after && !slow {
            return None;
        }
        // The most urgent block may exceed a source's outstanding limit by one: the
        // fastest other source that holds it takes it.
        let max = self.cfg.max_outstanding + 1;
        let other = (0..self.sources.len())
            .filter(|&i| {
                let s = &self.sources[i];
                i != src && !s.dropped && s.outstanding < max && s.holds(block)
            })
            .max_by(|&a, &b| {
                let ra = self.sources[a].rate_bps.unwrap_or(0.0);
                let rb = self.sources[b].rate_bps.unwrap_or(0.0);
                ra.total_cmp(&rb).then(b.cmp(&a))
            })?;
        Some(self.start(block, other, now))
    }

    fn finish_request(&mut self, block: u64, source: SourceId) -> bool {
        let Some(st) = self.outstanding.get_mut(&block) else {
            return false;
        };
        let Some(i) = st.at.iter().position(|(s, _)| *s == source) else {
            return false;
        };
        st.at.remove(i);
        if st.at.is_empty() {
            self.outstanding.remove(&block);
        }
        let s = &mut self.sources[source];
        s.outstanding = s.outstanding.saturating_sub(1);
        true
    }

    /// `block` from `source` was verified: `bytes` long, its first byte at
    /// `first_byte`, its last at `now`. Returns the other sources still asked for
    /// the same block, whose requests the driver should cancel.
    pub fn on_verified(
        &mut self,
        source: SourceId,
        block: u64,
        bytes: u64,
        first_byte: Instant,
        now: Instant,
    ) -> Vec<Assignment> {
        let since = self
            .outstanding
            .get(&block)
            .and_then(|st| st.at.iter().find(|(s, _)| *s == source).map(|(_, t)| *t));
        self.finish_request(block, source);
        let cfg_alpha = self.cfg.ewma_alpha;
        let s = &mut self.sources[source];
        s.blocks += 1;
        s.bytes += bytes;
        s.failures_in_row = 0;
        if let Some(since) = since {
            s.ttfb = Some(first_byte.saturating_duration_since(since));
            // Time this source spent on this block alone: from its previous
            // completion or from the request, whichever is later.
            let start = s.last_done.map_or(since, |d| d.max(since));
            let secs = now.saturating_duration_since(start).as_secs_f64().max(1e-4);
            let sample = bytes as f64 / secs;
            s.rate_bps = Some(match s.rate_bps {
                Some(r) => r + cfg_alpha * (sample - r),
                None => sample,
            });
        }
        s.last_done = Some(now);
        let others: Vec<Assignment> = self
            .outstanding
            .remove(&block)
            .map(|st| st.at)
            .unwrap_or_default()
            .into_iter()
            .map(|(src, _)| {
                let o = &mut self.sources[src];
                o.outstanding = o.outstanding.saturating_sub(1);
                Assignment { block, source: src }
            })
            .collect();
        if block >= self.position && block < self.end {
            self.verified.insert(block);
        }
        while self.verified.remove(&self.position) {
            self.position += 1;
        }
        others
    }

    /// The request for `block` at `source` failed. The block goes back to be assigned
    /// again; after `Closed` or `BadBlock`, the source's other blocks too (they are
    /// returned: the driver cancels them).
    pub fn on_failure(&mut self, source: SourceId, block: u64, why: Failure) -> Vec<Assignment> {
        self.finish_request(block, source);
        let max = self.cfg.max_failures;
        let s = &mut self.sources[source];
        match why {
            Failure::NotHeld => {
                s.missing.insert(block);
                return Vec::new();
            }
            Failure::Abandoned => return Vec::new(),
            Failure::BadBlock | Failure::Unreachable => s.dropped = true,
            Failure::Error | Failure::Closed => {
                s.failures_in_row += 1;
                if s.failures_in_row >= max {
                    s.dropped = true;
                }
            }
        }
        let take_all = why != Failure::Error || self.sources[source].dropped;
        if !take_all {
            return Vec::new();
        }
        self.take_all_from(source)
    }

    fn take_all_from(&mut self, source: SourceId) -> Vec<Assignment> {
        let blocks: Vec<u64> = self
            .outstanding
            .iter()
            .filter(|(_, st)| st.at.iter().any(|(s, _)| *s == source))
            .map(|(b, _)| *b)
            .collect();
        for &b in &blocks {
            self.finish_request(b, source);
        }
        blocks
            .into_iter()
            .map(|block| Assignment { block, source })
            .collect()
    }

    /// Requests outstanding past `stall_timeout`: each counts as a failure of its
    /// source and goes back to be assigned. Returned so the driver cancels them.
    pub fn check_stalls(&mut self, now: Instant) -> Vec<Assignment> {
        let stalled: Vec<Assignment> = self
            .outstanding
            .iter()
            .flat_map(|(&block, st)| {
                st.at
                    .iter()
                    .filter(|(_, since)| {
                        now.saturating_duration_since(*since) >= self.cfg.stall_timeout
                    })
                    .map(move |&(source, _)| Assignment { block, source })
            })
            .collect();
        let mut out = Vec::new();
        for a in stalled {
            out.push(a);
            out.extend(self.on_failure(a.source, a.block, Failure::Error));
        }
        out
    }

    /// The earliest time something may change without news from a source (a stall or
    /// an urgent duplicate falls due), for the driver's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.outstanding
            .iter()
            .flat_map(|(&b, st)| {
                st.at.iter().map(move |&(_, since)| {
                    if b == self.position && st.at.len() == 1 {
                        since + self.cfg.urgent_after.min(self.cfg.stall_timeout)
                    } else {
                        since + self.cfg.stall_timeout
                    }
                })
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::protocol::BlockRange;

    const BS: u64 = 256 * 1024;

    /// Holdings from `(start, count)` pairs.
    fn holds_ranges(ranges: &[(u64, u64)]) -> Holds {
        Holds::Ranges(
            ranges
                .iter()
                .map(|&(start, count)| BlockRange { start, count })
                .collect(),
        )
    }

    fn cfg() -> SchedConfig {
        SchedConfig {
            max_outstanding: 4,
            window_blocks: 16,
            probe_interval: Duration::from_millis(100),
            ..SchedConfig::default()
        }
    }

    /// Drives a scheduler against simulated sources: source `i` delivers a block
    /// `ms[i]` milliseconds after it starts on it, one block at a time (requests
    /// queue at the source), or fails when `ms[i]` is None. Returns blocks per
    /// source and the simulated time taken.
    fn simulate(
        s: &mut Scheduler,
        ms: &dyn Fn(SourceId, Duration) -> Option<u64>,
        t0: Instant,
        limit: Duration,
    ) -> (Vec<u64>, Duration) {
        let n = s.sources();
        // Per source: the queue of blocks asked, and when the one at its head started.
        let mut queues: Vec<std::collections::VecDeque<u64>> = vec![Default::default(); n];
        let mut head_since: Vec<Option<Instant>> = vec![None; n];
        let mut now = t0;
        let step = Duration::from_millis(1);
        while !s.is_finished() {
            assert!(
                now - t0 < limit,
                "not finished within {limit:?}: position {}",
                s.position()
            );
            if s.stuck().is_some() {
                break;
            }
            for a in s.assign(now) {
                queues[a.source].push_back(a.block);
            }
            for c in s.check_stalls(now) {
                if let Some(i) = queues[c.source].iter().position(|&b| b == c.block) {
                    queues[c.source].remove(i);
                    if i == 0 {
                        head_since[c.source] = None;
                    }
                }
            }
            for i in 0..n {
                let Some(&block) = queues[i].front() else {
                    continue;
                };
                let since = *head_since[i].get_or_insert(now);
                match ms(i, now - t0) {
                    Some(d) if now - since >= Duration::from_millis(d) => {
                        queues[i].pop_front();
                        head_since[i] = None;
                        for c in s.on_verified(i, block, BS, since, now) {
                            if let Some(p) = queues[c.source].iter().position(|&b| b == c.block) {
                                queues[c.source].remove(p);
                                if p == 0 {
                                    head_since[c.source] = None;
                                }
                            }
                        }
                    }
                    Some(_) => {}
                    None => {
                        queues[i].pop_front();
                        head_since[i] = None;
                        for c in s.on_failure(i, block, Failure::Closed) {
                            queues[c.source].retain(|&b| b != c.block);
                        }
                    }
                }
            }
            now += step;
        }
        ((0..n).map(|i| s.source(i).blocks).collect(), now - t0)
    }

    #[test]
    fn one_source_gets_every_block_within_its_outstanding_limit() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(cfg(), 0, 40);
        let a = s.add_source(Holds::All);
        let first = s.assign(t0);
        assert_eq!(first.len(), 4, "max_outstanding bounds the first round");
        assert!(first
            .iter()
            .enumerate()
            .all(|(i, x)| x.block == i as u64 && x.source == a));
        assert!(
            s.assign(t0).is_empty(),
            "nothing more while the source is full"
        );
        let mut s = Scheduler::new(cfg(), 0, 40);
        s.add_source(Holds::All);
        let (per, _) = simulate(&mut s, &|_, _| Some(2), t0, Duration::from_secs(10));
        assert_eq!(per, vec![40]);
        assert!(s.is_finished() && s.stuck().is_none());
    }

    #[test]
    fn ties_spread_over_both_sources() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(cfg(), 0, 200);
        s.add_source(Holds::All);
        s.add_source(Holds::All);
        let (per, _) = simulate(&mut s, &|_, _| Some(3), t0, Duration::from_secs(10));
        assert_eq!(per.iter().sum::<u64>(), 200);
        assert!(per.iter().all(|&n| n >= 80), "equal sources share: {per:?}");
    }

    #[test]
    fn the_fast_sources_get_most_blocks_and_the_slow_one_only_probes() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(cfg(), 0, 400);
        for _ in 0..3 {
            s.add_source(Holds::All);
        }
        // Source 2 is ten times slower.
        let (per, _) = simulate(
            &mut s,
            &|i, _| Some(if i == 2 { 20 } else { 2 }),
            t0,
            Duration::from_secs(60),
        );
        let fast = per[0] + per[1];
        assert!(
            fast * 100 >= 400 * 90,
            "fast sources got {fast} of 400: {per:?}"
        );
        assert!(
            per[0] >= 100 && per[1] >= 100,
            "both fast sources used: {per:?}"
        );
        assert!(
            per[2] >= 1,
            "the slow source was measured at least once: {per:?}"
        );
    }

    #[test]
    fn a_source_that_recovers_is_used_again() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(cfg(), 0, 2000);
        s.add_source(Holds::All);
        s.add_source(Holds::All);
        // Source 1 is slow for the first second, then as fast as source 0.
        let speed = |i: SourceId, t: Duration| {
            Some(if i == 1 && t < Duration::from_secs(1) {
                40
            } else {
                2
            })
        };
        let (per, _) = simulate(&mut s, &speed, t0, Duration::from_secs(60));
        assert!(
            per[1] >= 400,
            "the recovered source took a share again: {per:?}"
        );
        let r = (s.source(0).rate_bps.unwrap(), s.source(1).rate_bps.unwrap());
        assert!(r.1 >= r.0 * 0.6, "its rate was measured again: {r:?}");
    }

    #[test]
    fn a_source_that_dies_loses_its_blocks_to_the_others() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(cfg(), 0, 300);
        s.add_source(Holds::All);
        s.add_source(Holds::All);
        // Source 0 dies after 100 ms.
        let speed = |i: SourceId, t: Duration| {
            if i == 0 && t >= Duration::from_millis(100) {
                None
            } else {
                Some(2)
            }
        };
        let (per, _) = simulate(&mut s, &speed, t0, Duration::from_secs(60));
        assert_eq!(
            per.iter().sum::<u64>(),
            300,
            "every block exactly once: {per:?}"
        );
        assert!(s.source(0).dropped || s.source(0).failures_in_row > 0);
        assert!(s.is_finished());
    }

    #[test]
    fn all_sources_failing_is_a_clear_error_in_bounded_time() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(cfg(), 0, 50);
        s.add_source(Holds::All);
        s.add_source(Holds::All);
        let (per, took) = simulate(&mut s, &|_, _| None, t0, Duration::from_secs(10));
        assert_eq!(per, vec![0, 0]);
        assert!(took < Duration::from_millis(50), "gave up after {took:?}");
        let why = s.stuck().expect("stuck");
        assert!(
            why.contains("no source left for block 0") && why.contains("2 dropped"),
            "{why}"
        );
        assert!(!s.is_finished());
    }

    #[test]
    fn a_stalled_block_is_taken_from_its_source_and_asked_elsewhere() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(
            SchedConfig {
                stall_timeout: Duration::from_millis(100),
                urgent_after: Duration::from_secs(100),
                ..cfg()
            },
            0,
            100,
        );
        s.add_source(Holds::All);
        s.add_source(Holds::All);
        // Source 1 accepts requests and never answers.
        let (per, took) = simulate(
            &mut s,
            &|i, _| Some(if i == 1 { 1_000_000 } else { 2 }),
            t0,
            Duration::from_secs(30),
        );
        assert_eq!(per, vec![100, 0]);
        assert!(
            s.source(1).dropped,
            "a source that stalls every time is dropped"
        );
        assert!(took < Duration::from_secs(5), "took {took:?}");
    }

    #[test]
    fn an_abandoned_request_frees_its_place_without_blaming_the_source() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(cfg(), 0, 0);
        let a = s.add_source(Holds::All);
        for b in 0..4 {
            assert_eq!(s.pick_block(b, t0), Some(a));
        }
        assert_eq!(s.pick_block(4, t0), None, "full at max_outstanding");
        for b in 0..4 {
            assert!(s.on_failure(a, b, Failure::Abandoned).is_empty());
        }
        let st = s.source(a);
        assert_eq!(
            (st.outstanding, st.failures_in_row, st.dropped),
            (0, 0, false)
        );
        assert_eq!(s.pick_block(4, t0), Some(a));
    }

    #[test]
    fn the_urgent_block_is_asked_of_a_second_source_and_the_first_copy_wins() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(
            SchedConfig {
                urgent_after: Duration::from_millis(50),
                ..cfg()
            },
            0,
            10,
        );
        let a = s.add_source(Holds::All);
        let b = s.add_source(Holds::All);
        let first = s.assign(t0);
        let at_a = first.iter().find(|x| x.block == 0).unwrap().source;
        let other = if at_a == a { b } else { a };
        // Block 0 is late at its source: after urgent_after it is asked elsewhere too.
        let later = s.assign(t0 + Duration::from_millis(60));
        assert!(
            later.contains(&Assignment {
                block: 0,
                source: other
            }),
            "{later:?}"
        );
        // The second copy arrives first: the first request is to be cancelled.
        let t = t0 + Duration::from_millis(70);
        let cancel = s.on_verified(other, 0, BS, t, t);
        assert_eq!(
            cancel,
            vec![Assignment {
                block: 0,
                source: at_a
            }]
        );
        assert_eq!(s.position(), 1);
        assert_eq!(
            s.source(at_a).outstanding,
            first.iter().filter(|x| x.source == at_a).count() - 1
        );
    }

    #[test]
    fn a_bad_block_drops_the_source_for_good() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(cfg(), 0, 20);
        let a = s.add_source(Holds::All);
        let b = s.add_source(Holds::All);
        let first = s.assign(t0);
        let (bad, good) = (first[0].source, if first[0].source == a { b } else { a });
        let taken = s.on_failure(bad, first[0].block, Failure::BadBlock);
        assert!(taken.iter().all(|x| x.source == bad));
        assert!(s.source(bad).dropped);
        for x in first.iter().filter(|x| x.source == good) {
            s.on_verified(good, x.block, BS, t0, t0);
        }
        for round in 0..10 {
            let t = t0 + Duration::from_millis(round);
            for x in s.assign(t) {
                assert_eq!(x.source, good, "a bad source was asked again");
                s.on_verified(x.source, x.block, BS, t, t);
            }
        }
        assert!(s.is_finished());
    }

    #[test]
    fn the_end_of_the_file_is_neither_overrun_nor_left_short() {
        let t0 = Instant::now();
        // A range ending at 5, with a window larger than what is left.
        let mut s = Scheduler::new(cfg(), 3, 5);
        s.add_source(Holds::All);
        s.add_source(Holds::All);
        let a = s.assign(t0);
        let mut blocks: Vec<u64> = a.iter().map(|x| x.block).collect();
        blocks.sort();
        assert_eq!(blocks, vec![3, 4]);
        // Out of order completion: the position waits for block 3.
        s.on_verified(
            a.iter().find(|x| x.block == 4).unwrap().source,
            4,
            1,
            t0,
            t0,
        );
        assert_eq!(s.position(), 3);
        assert!(!s.is_finished());
        s.on_verified(
            a.iter().find(|x| x.block == 3).unwrap().source,
            3,
            BS,
            t0,
            t0,
        );
        assert!(s.is_finished());
        assert!(s.assign(t0).is_empty());
        // An empty range is finished at once.
        assert!(Scheduler::new(cfg(), 7, 7).is_finished());
    }

    #[test]
    fn blocks_on_demand_go_to_the_fastest_source_and_fail_over() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(cfg(), 0, 0);
        let a = s.add_source(Holds::All);
        let b = s.add_source(Holds::All);
        // Both unmeasured: the first two blocks go one to each.
        let x = s.pick_block(10, t0).unwrap();
        let y = s.pick_block(11, t0).unwrap();
        assert_ne!(x, y);
        // a is fast, b slow.
        let (fast, slow) = (a, b);
        let blk = |_: &Scheduler, src| if src == x { 10 } else { 11 };
        s.on_verified(fast, blk(&s, fast), BS, t0, t0 + Duration::from_millis(2));
        s.on_verified(slow, blk(&s, slow), BS, t0, t0 + Duration::from_millis(40));
        let t = t0 + Duration::from_millis(50);
        for i in 0..6 {
            let src = s.pick_block(100 + i, t).unwrap();
            assert_eq!(src, fast, "block {i} went to the slow source");
            s.on_verified(src, 100 + i, BS, t, t + Duration::from_millis(2));
        }
        // The fast one dies: the next block goes to the slow one, nothing is kept.
        let src = s.pick_block(200, t).unwrap();
        s.on_failure(src, 200, Failure::Closed);
        s.on_failure(fast, 200, Failure::Closed);
        s.on_failure(fast, 200, Failure::Closed);
        assert!(s.source(fast).dropped);
        assert_eq!(s.pick_block(200, t), Some(slow));
        assert!(s.is_finished() && s.stuck().is_none());
    }

    #[test]
    fn peers_are_preferred_and_the_server_serves_what_they_lack() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(cfg(), 0, 200);
        let server = s.add_source_of(Holds::All, SourceClass::Server);
        let p1 = s.add_source_of(holds_ranges(&[(0, 150)]), SourceClass::Peer);
        let p2 = s.add_source_of(holds_ranges(&[(0, 120)]), SourceClass::Peer);
        // Peers as fast as the server.
        let (per, _) = simulate(&mut s, &|_, _| Some(2), t0, Duration::from_secs(60));
        assert!(per[p1] + per[p2] >= 140, "peers took {per:?}");
        assert!(
            per[server] >= 50 && per[server] <= 60,
            "the server served what no peer holds: {per:?}"
        );
        // Peers ten times slower than the server: the server takes over.
        let mut s = Scheduler::new(cfg(), 0, 200);
        let server = s.add_source_of(Holds::All, SourceClass::Server);
        s.add_source_of(Holds::All, SourceClass::Peer);
        let (per, _) = simulate(
            &mut s,
            &|i, _| Some(if i == server { 2 } else { 20 }),
            t0,
            Duration::from_secs(60),
        );
        assert!(per[server] >= 150, "slow peers did not hand over: {per:?}");
    }

    #[test]
    fn sources_get_only_blocks_they_hold() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(cfg(), 0, 12);
        let part = s.add_source(holds_ranges(&[(0, 4)]));
        let all = s.add_source(Holds::All);
        let (per, _) = simulate(&mut s, &|_, _| Some(2), t0, Duration::from_secs(10));
        assert!(per[part] <= 4 && per[all] >= 8, "{per:?}");
        // A source that says NotHeld is not asked for that block again.
        let mut s = Scheduler::new(cfg(), 0, 1);
        let x = s.add_source(Holds::All);
        let y = s.add_source(Holds::All);
        let a = s.assign(t0)[0];
        s.on_failure(a.source, 0, Failure::NotHeld);
        let again = s.assign(t0);
        assert_eq!(
            again,
            vec![Assignment {
                block: 0,
                source: if a.source == x { y } else { x }
            }]
        );
    }

    #[test]
    fn fresher_holds_replace_what_a_source_was_known_to_hold() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(cfg(), 0, 0);
        let server = s.add_source_of(Holds::All, SourceClass::Server);
        let peer = s.add_source_of(holds_ranges(&[(0, 4)]), SourceClass::Peer);
        // Block 6: the peer is not known to hold it; the server gets it.
        assert_eq!(s.pick_block(6, t0), Some(server));
        s.on_failure(server, 6, Failure::Error);
        // The peer said it lacks block 2.
        assert_eq!(s.pick_block(2, t0), Some(peer));
        s.on_failure(peer, 2, Failure::NotHeld);
        // A fresher Locate: it holds 0..10 now.
        s.set_holds(peer, holds_ranges(&[(0, 10)]));
        assert_eq!(s.pick_block(7, t0), Some(peer));
        s.on_failure(peer, 7, Failure::Error);
        assert_eq!(
            s.pick_block(2, t0),
            Some(peer),
            "what it said before is forgotten"
        );
    }
}
