//! The [`Scheduler`] of one file's (or one range's) blocks: which source gets which
//! block ([`Assignment`]), which late block is raced to a second source, and what
//! each outcome the driver reports changes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::{
    candidate::{earliest, Candidate, Waiting, MAX_WAITING},
    config::SchedConfig,
    source::{Failure, SourceClass, SourceId, SourceState},
};
use crate::pure::protocol::Holds;

/// One request the driver is to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub block: u64,
    pub source: SourceId,
}

/// Where one outstanding block is asked.
#[derive(Clone, Debug, Default)]
struct BlockState {
    /// Sources asked for it, with when (at most two: the raced copy).
    at: Vec<(SourceId, Instant)>,
    /// When it is needed (None: as soon as possible).
    deadline: Option<Instant>,
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
    /// Blocks waiting for a busy source (the one that would deliver them first),
    /// since when: a block after them counts them in that source's queue, so it goes
    /// to a slower source with room when that one would deliver it sooner than the
    /// busy one would after the blocks waiting for it; and a source that frees up is
    /// kept for the most urgent of them by deadline.
    /// Forgotten after `tick` x 5 (a fetch that gave up does not hold a source).
    waiting: BTreeMap<u64, Waiting>,
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
            waiting: BTreeMap::new(),
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
            inflight: Vec::new(),
            dropped: false,
            missing: BTreeSet::new(),
            blocks: 0,
            bytes: 0,
            last_done: None,
            last_probe: None,
        });
        self.sources.len() - 1
    }

    /// Blocks noted as waiting for a busy source (tests: the map stays bounded).
    #[cfg(test)]
    pub(super) fn waiting_len(&self) -> usize {
        self.waiting.len()
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

    /// The size rates are turned into times with: the blocks measured so far, on
    /// average, else the configured one.
    fn block_bytes(&self) -> f64 {
        let (bytes, blocks) = self
            .sources
            .iter()
            .fold((0, 0), |(b, n), s| (b + s.bytes, n + s.blocks));
        bytes
            .checked_div(blocks)
            .unwrap_or(self.cfg.block_bytes)
            .max(1) as f64
    }

    /// The rate assumed of a source not measured yet: the best measured rate (a new
    /// source is given the benefit of the doubt), else the configured prior.
    fn prior(&self) -> f64 {
        self.sources
            .iter()
            .filter(|s| !s.dropped)
            .filter_map(|s| s.rate_bps)
            .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))))
            .unwrap_or(self.cfg.prior_rate_bps)
    }

    /// Every source that could take `block` (but `except`), with when it would
    /// deliver it. A source not yet measured takes one block at a time while others
    /// are measured; a raced block (`extra`) may exceed a source's limit by one; a
    /// block needed by `deadline` joins a queue of more than `max_queue` of work only
    /// as `may_queue_deep` says.
    pub(super) fn candidates(
        &self,
        block: u64,
        except: Option<SourceId>,
        (extra, deadline): (usize, Option<Instant>),
        now: Instant,
    ) -> Vec<Candidate> {
        let (blk, prior) = (self.block_bytes(), self.prior());
        let any_measured = self
            .sources
            .iter()
            .any(|s| !s.dropped && s.rate_bps.is_some());
        let stale = self.cfg.tick * 5;
        let mut ahead = vec![0usize; self.sources.len()];
        for (_, w) in self.waiting.range(..block) {
            if now.saturating_duration_since(w.since) < stale {
                ahead[w.source] += 1;
            }
        }
        let mut cands: Vec<Candidate> = (0..self.sources.len())
            .filter(|&i| Some(i) != except)
            .filter(|&i| !self.sources[i].dropped && self.sources[i].holds(block))
            .map(|i| {
                let s = &self.sources[i];
                let measured = s.rate_bps.is_some();
                let limit = if measured || !any_measured {
                    self.cfg.max_outstanding
                } else {
                    1
                };
                let rate = s.rate_at(blk, prior, now);
                let queued = s.finish(s.outstanding.saturating_sub(1), rate, blk, now);
                let short = s.outstanding == 0
                    || queued.saturating_duration_since(now) <= self.cfg.max_queue;
                Candidate {
                    id: i,
                    eta: s.finish(s.outstanding + ahead[i], rate, blk, now),
                    room: s.outstanding < limit + extra
                        && (short || extra > 0 || self.may_queue_deep(s.class, deadline, now)),
                    measured,
                    rate,
                    class: s.class,
                }
            })
            .collect();
        // A source slower than the fastest is planned with a margin: a block it is
        // given just in time is late at its first hiccup, and racing it then costs
        // its link what it already sent.
        let fastest = cands.iter().map(|c| c.rate).fold(0.0, f64::max);
        for c in &mut cands {
            if c.rate < fastest {
                c.eta = now
                    + c.eta
                        .saturating_duration_since(now)
                        .mul_f64(self.cfg.slow_margin);
            }
        }
        cands
    }

    /// Whether a block needed by `deadline` may join a queue longer than `max_queue`
    /// at a source of `class`: when it is needed within `server_lead` (a reader
    /// waits on it, or soon will), or has a deadline and the source is a peer (its
    /// deadline says whether the queue is too long). A block without a deadline, or
    /// needed later from a server, may not: a source serves its queue in turn, so a
    /// deep queue of blocks needed later holds up the one a reader waits on, and a
    /// block needed later waits for a peer ahead in the film to hold it.
    fn may_queue_deep(&self, class: SourceClass, deadline: Option<Instant>, now: Instant) -> bool {
        deadline.is_some_and(|d| d <= now + self.cfg.server_lead || class == SourceClass::Peer)
    }

    /// Picks the source for `block` (of class `only`, if given), needed by
    /// `deadline` (None: as soon as possible). With a deadline: a peer that will
    /// deliver it in time, else the source that delivers it first, else another that
    /// is in time. Without: a peer nearly as fast (`tolerance`) as the source that
    /// delivers it first, else that source. None when the block had better wait for a
    /// busy source.
    fn pick(
        &mut self,
        block: u64,
        deadline: Option<Instant>,
        only: Option<SourceClass>,
        now: Instant,
    ) -> Option<SourceId> {
        let mut cands = self.candidates(block, None, (0, deadline), now);
        cands.retain(|c| only.is_none_or(|o| c.class == o));
        let best = earliest(cands.iter())?;
        let chosen = self
            .choose(&cands, best, deadline, now)
            .filter(|c| !self.more_urgent_waits(block, deadline, c.id, now));
        match chosen {
            Some(c) => {
                self.waiting.remove(&block);
                Some(c.id)
            }
            None => {
                let w = Waiting {
                    source: chosen.map_or(best.id, |c| c.id),
                    since: now,
                    deadline,
                };
                // Entries of fetches that gave up are dropped once stale, so the map
                // stays as small as the blocks waiting now.
                if self.waiting.len() >= MAX_WAITING {
                    let stale = self.cfg.tick * 5;
                    self.waiting
                        .retain(|_, w| now.saturating_duration_since(w.since) < stale);
                }
                self.waiting.insert(block, w);
                None
            }
        }
    }

    /// Whether another block, more urgent than `block` (needed by `deadline`: an
    /// earlier deadline, or one where `block` has none), waits for `source`: it gets
    /// the room first (blocks fetched ahead of a reader must not take a source's
    /// places from the one the reader waits on).
    fn more_urgent_waits(
        &self,
        block: u64,
        deadline: Option<Instant>,
        source: SourceId,
        now: Instant,
    ) -> bool {
        let stale = self.cfg.tick * 5;
        self.waiting.iter().any(|(&b, w)| {
            b != block
                && w.source == source
                && now.saturating_duration_since(w.since) < stale
                && w.deadline
                    .is_some_and(|wd| deadline.is_none_or(|d| (wd, b) < (d, block)))
        })
    }

    /// The rule of [`pick`](Self::pick) over weighed candidates (`best` delivers first).
    fn choose(
        &self,
        cands: &[Candidate],
        best: Candidate,
        deadline: Option<Instant>,
        now: Instant,
    ) -> Option<Candidate> {
        match deadline {
            Some(d) => {
                // A source nothing is known of gets only blocks with time to spare.
                let may_probe = d.saturating_duration_since(now) >= self.cfg.probe_slack;
                let in_time = |c: &&Candidate| c.room && c.eta <= d && (c.measured || may_probe);
                let peers = cands.iter().filter(|c| c.class == SourceClass::Peer);
                earliest(peers.filter(in_time))
                    .or(Some(best).filter(|b| b.room))
                    .or_else(|| earliest(cands.iter().filter(in_time)))
            }
            None => {
                // A peer nearly as fast is waited for when busy: a server serves
                // what the peers lack or are too slow for.
                let near = |c: &&Candidate| {
                    c.class == SourceClass::Peer && c.rate >= best.rate * self.cfg.tolerance
                };
                match earliest(cands.iter().filter(near)) {
                    Some(p) => Some(p).filter(|p| p.room),
                    None => Some(best).filter(|b| b.room),
                }
            }
        }
    }

    fn start(&mut self, block: u64, source: SourceId, now: Instant) -> Assignment {
        self.waiting.remove(&block);
        let s = &mut self.sources[source];
        s.outstanding += 1;
        s.inflight.push((now, block));
        self.outstanding
            .entry(block)
            .or_default()
            .at
            .push((source, now));
        Assignment { block, source }
    }

    /// The requests to send now, walking the window in playback order: a block
    /// outstanding at one source is raced to a second if late, a block not yet asked
    /// goes to the source that delivers it first, counting the blocks before it that
    /// wait for a busy source in that source's queue (so a slower source with room
    /// takes a block when it would deliver it sooner than the busy one would); then a
    /// probe of a slow source that has been idle a while. In order, so the blocks a
    /// viewer needs first get the quick sources' room first.
    pub fn assign(&mut self, now: Instant) -> Vec<Assignment> {
        let mut out = Vec::new();
        let window_end = self
            .end
            .min(self.position.saturating_add(self.cfg.window_blocks));
        let mut waiting = None;
        // The walk below decides again for every block of the window.
        self.waiting.clear();
        for b in self.position..window_end {
            if self.verified.contains(&b) {
                continue;
            }
            if self.outstanding.contains_key(&b) {
                if let Some(source) = self.race(b, now) {
                    out.push(Assignment { block: b, source });
                }
                continue;
            }
            match self.pick(b, None, None, now) {
                Some(s) => out.push(self.start(b, s, now)),
                None => {
                    waiting.get_or_insert(b);
                }
            }
        }
        // The last block of the window waits longest: a slow source may measure
        // itself on it.
        if let Some(w) = waiting {
            let last = (w..window_end)
                .rev()
                .find(|x| !self.verified.contains(x) && !self.outstanding.contains_key(x));
            if let Some(p) = last.and_then(|x| self.probe(x, None, now).map(|s| (x, s))) {
                out.push(self.start(p.0, p.1, now));
            }
        }
        out
    }

    /// A source that would not get `block` otherwise, idle, and never measured or
    /// not heard from for `probe_interval`; the one probed longest ago.
    fn probe(&mut self, block: u64, only: Option<SourceClass>, now: Instant) -> Option<SourceId> {
        let interval = self.cfg.probe_interval;
        let id = (0..self.sources.len())
            .filter(|&i| {
                let s = &self.sources[i];
                let heard = s.last_probe.max(s.last_done);
                only.is_none_or(|o| s.class == o)
                    && !s.dropped
                    && s.outstanding == 0
                    && s.holds(block)
                    && heard.is_none_or(|t| now.saturating_duration_since(t) >= interval)
            })
            .min_by_key(|&i| self.sources[i].last_probe)?;
        self.sources[id].last_probe = Some(now);
        Some(id)
    }

    /// One block on demand, outside any range (a cache's owner shard fetching the
    /// block a viewer needs), needed by `deadline` (None: as soon as possible): the
    /// source to ask, chosen and counted as in [`assign`] (a block that would wait
    /// may be a probe), or None when every source that may have it is dropped or busy. Use a scheduler made for an empty range,
    /// so nothing is tracked per block once it is done.
    ///
    /// [`assign`]: Scheduler::assign
    pub fn pick_block(
        &mut self,
        block: u64,
        deadline: Option<Instant>,
        now: Instant,
    ) -> Option<SourceId> {
        self.pick_block_of(block, deadline, None, now)
    }

    /// [`pick_block`](Self::pick_block) among the sources of one class (`only`), or
    /// all: after a peer failed a block, its next attempt goes to a server.
    pub fn pick_block_of(
        &mut self,
        block: u64,
        deadline: Option<Instant>,
        only: Option<SourceClass>,
        now: Instant,
    ) -> Option<SourceId> {
        let s = match self.pick(block, deadline, only, now) {
            Some(s) => s,
            // It would wait: unless it is needed soon, a source idle for a while may
            // measure itself on it.
            None if deadline
                .is_none_or(|d| d.saturating_duration_since(now) >= self.cfg.probe_slack) =>
            {
                self.probe(block, only, now)?
            }
            None => return None,
        };
        self.start(block, s, now);
        self.outstanding.entry(block).or_default().deadline = deadline;
        Some(s)
    }

    /// Whether `block`, asked of one source, should also be asked of a second one
    /// now: its source is overdue (see `SchedConfig::overdue_factor`), or is
    /// expected to deliver it after its deadline (without one: it is the block at the
    /// playback position) while another would deliver it in `race_gain` of the time
    /// left. That source, counted as asked.
    pub fn race(&mut self, block: u64, now: Instant) -> Option<SourceId> {
        let other = self.race_to(block, now)?;
        self.start(block, other, now);
        Some(other)
    }

    fn race_to(&self, block: u64, now: Instant) -> Option<SourceId> {
        let st = self.outstanding.get(&block)?;
        let &[(src, _)] = st.at.as_slice() else {
            return None;
        };
        let s = &self.sources[src];
        let rank = s.inflight.iter().position(|&(_, b)| b == block)?;
        let (blk, prior) = (self.block_bytes(), self.prior());
        let overdue = s.overdue(
            blk,
            (self.cfg.overdue_factor, self.cfg.overdue_min),
            prior,
            now,
        );
        // At its measured rate: a source merely slower than thought is not raced
        // (its head being late is what `overdue` judges).
        let arrival = s.finish(rank, s.rate_bps.unwrap_or(prior), blk, now);
        let left = arrival.saturating_duration_since(now);
        // Not ahead of an earlier request at the same source: that one is needed
        // first and comes first.
        let earlier_waits = s.inflight[..rank]
            .iter()
            .any(|(_, b)| self.outstanding.get(b).is_some_and(|o| o.at.len() == 1));
        // Without a deadline only the block at the playback position (everything
        // after it waits for it) and an overdue source's blocks are raced: a slow
        // source's other blocks come in time for the window, and a raced copy it is
        // already sending is link time lost (a Cancel cannot recall what its socket
        // holds).
        let late = st
            .deadline
            .map_or(block == self.position && self.end > self.position, |d| {
                arrival > d
            });
        if !overdue && (earlier_waits || left < self.cfg.race_min || !late) {
            return None;
        }
        let cands = self.candidates(block, Some(src), (1, st.deadline), now);
        let best = earliest(cands.iter().filter(|c| c.room && c.measured))?;
        let gain = left.mul_f64(self.cfg.race_gain);
        (overdue || best.eta.saturating_duration_since(now) < gain).then_some(best.id)
    }

    fn finish_request(&mut self, block: u64, source: SourceId) -> Option<Instant> {
        let st = self.outstanding.get_mut(&block)?;
        let i = st.at.iter().position(|(s, _)| *s == source)?;
        let (_, since) = st.at.remove(i);
        if st.at.is_empty() {
            self.outstanding.remove(&block);
        }
        let s = &mut self.sources[source];
        s.outstanding = s.outstanding.saturating_sub(1);
        s.inflight.retain(|&(_, b)| b != block);
        Some(since)
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
        let since = self.finish_request(block, source);
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
        let (blk, prior) = (self.block_bytes(), self.prior());
        let others: Vec<(SourceId, Instant)> = self
            .outstanding
            .get(&block)
            .map(|st| st.at.clone())
            .unwrap_or_default();
        let others = others
            .into_iter()
            .map(|(src, since)| {
                // Overtaken: it did not deliver this block in the time it had it. If
                // it is overdue (slowed down or silent), that bound is its rate now.
                let o = &self.sources[src];
                let overdue = o.overdue(
                    blk,
                    (self.cfg.overdue_factor, self.cfg.overdue_min),
                    prior,
                    now,
                );
                self.finish_request(block, src);
                let alpha = if overdue { 1.0 } else { cfg_alpha };
                self.sources[src].bound_rate(bytes, since, now, alpha);
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
        let blocks: Vec<u64> = self.sources[source]
            .inflight
            .iter()
            .map(|&(_, b)| b)
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
        let stalled: Vec<(Assignment, Instant)> = self
            .outstanding
            .iter()
            .flat_map(|(&block, st)| {
                st.at
                    .iter()
                    .filter(|(_, since)| {
                        now.saturating_duration_since(*since) >= self.cfg.stall_timeout
                    })
                    .map(move |&(source, since)| (Assignment { block, source }, since))
            })
            .collect();
        let mut out = Vec::new();
        let alpha = self.cfg.ewma_alpha;
        for (a, since) in stalled {
            // A block of its usual size did not come in the whole stall timeout.
            let s = &mut self.sources[a.source];
            if let Some(avg) = s.bytes.checked_div(s.blocks) {
                s.bound_rate(avg, since, now, alpha);
            }
            out.push(a);
            out.extend(self.on_failure(a.source, a.block, Failure::Error));
        }
        out
    }

    /// When `source` is expected to deliver `block`, asked of it (its place in the
    /// source's queue, at the rate planned with now); None if it was not asked.
    pub fn expected(&self, source: SourceId, block: u64, now: Instant) -> Option<Instant> {
        let s = self.sources.get(source)?;
        let rank = s.inflight.iter().position(|&(_, b)| b == block)?;
        let blk = self.block_bytes();
        Some(s.finish(rank, s.rate_at(blk, self.prior(), now), blk, now))
    }

    /// The next time the driver should look again without news from a source: a
    /// stall falls due, or, while anything is in flight, `tick` from `now` (a late
    /// block may be raced).
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let stall = self
            .outstanding
            .values()
            .flat_map(|st| {
                st.at
                    .iter()
                    .map(|&(_, since)| since + self.cfg.stall_timeout)
            })
            .min()?;
        Some(stall.min(now + self.cfg.tick))
    }
}
