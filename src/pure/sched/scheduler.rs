//! The [`Scheduler`] of one file's (or one range's) blocks: which source gets which
//! block ([`Assignment`]), and what each outcome the driver reports changes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::{
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
            .map(|(src, since)| {
                let o = &mut self.sources[src];
                o.outstanding = o.outstanding.saturating_sub(1);
                // Overtaken: it did not deliver this block in the time it had it.
                o.bound_rate(bytes, since, now, cfg_alpha);
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
        let alpha = self.cfg.ewma_alpha;
        for a in stalled {
            // A block of its usual size did not come in the whole stall timeout.
            let since = self
                .outstanding
                .get(&a.block)
                .and_then(|st| st.at.iter().find(|(s, _)| *s == a.source))
                .map(|&(_, t)| t);
            let s = &mut self.sources[a.source];
            if let (Some(since), Some(avg)) = (since, s.bytes.checked_div(s.blocks)) {
                s.bound_rate(avg, since, now, alpha);
            }
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
