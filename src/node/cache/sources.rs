//! A file's sources as one shard sees them: the scheduler over them, the place each
//! attempt holds at its source until its outcome, and merging fresher Locate answers.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;

use super::file::CachedFile;
use crate::error::BlockError;
use crate::pure::protocol::Holds;
use crate::pure::sched::{Failure, SchedConfig, Scheduler, SourceClass, SourceId};
use crate::upstream::attempt::Deadlines;
use crate::upstream::range::Located;

/// The sources of one file version as a shard sees them.
pub(super) struct FileSources {
    pub(super) sources: Vec<Located>,
    pub(super) sched: Scheduler,
    pub(super) last_pick: Option<SourceId>,
    /// The attempt running for each (block, source) the scheduler counts as
    /// outstanding: dropping the sender takes the block away from that attempt (its
    /// source stalled, closed, sent a bad block, or was dropped), as `p2pd get` cancels
    /// its requests. An outcome reported for a request not in here no longer counts.
    pub(super) cancels: HashMap<(u64, SourceId), oneshot::Sender<()>>,
}

impl FileSources {
    pub(super) fn new(sources: &[Located], cfg: SchedConfig) -> FileSources {
        let mut sched = Scheduler::new(cfg, 0, 0);
        for l in sources {
            sched.add_source_of(l.holds.clone(), l.class);
        }
        FileSources {
            sources: sources.to_vec(),
            sched,
            last_pick: None,
            cancels: HashMap::new(),
        }
    }

    /// Block `index` now goes to `src` (picked by the scheduler): the receiver
    /// resolves when it is taken away from that attempt.
    pub(super) fn started(&mut self, src: SourceId, index: u64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.cancels.insert((index, src), tx);
        rx
    }

    /// Block `index` now goes to `src` (picked by the scheduler), logged when the
    /// source differs from the last one picked.
    pub(super) fn chosen(&mut self, src: SourceId, index: u64) -> Chosen {
        let cancelled = self.started(src, index);
        let (addr, class) = (self.sources[src].addr, self.sources[src].class);
        let now = Instant::now();
        let expected = self
            .sched
            .expected(src, index, now)
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        if self.last_pick != Some(src) {
            if let Some(prev) = self.last_pick {
                tracing::debug!(from = %self.sources[prev].addr, to = %addr, block = index, "switching source");
            }
            self.last_pick = Some(src);
        }
        Chosen {
            src,
            addr,
            class,
            cancelled,
            expected,
        }
    }

    /// Requests outstanding past the stall timeout count as failures of their sources
    /// and are taken from their attempts.
    pub(super) fn check_stalls(&mut self, now: Instant) {
        for a in self.sched.check_stalls(now) {
            if self.cancels.remove(&(a.block, a.source)).is_some() {
                tracing::debug!(source = %self.sources[a.source].addr, block = a.block, "block stalled; asking elsewhere");
            }
        }
    }

    /// The attempt at `src` for block `index` failed. Blocks the scheduler takes from
    /// the source with it (it closed, was dropped) are taken from their attempts too.
    /// False when the request had already been taken away (counted then).
    pub(super) fn failed(&mut self, src: SourceId, index: u64, why: Failure) -> bool {
        if self.cancels.remove(&(index, src)).is_none() {
            return false;
        }
        for a in self.sched.on_failure(src, index, why) {
            self.cancels.remove(&(a.block, a.source));
        }
        true
    }

    /// The attempt at `src` delivered block `index`, verified.
    pub(super) fn verified(&mut self, src: SourceId, index: u64, bytes: u64, started: Instant) {
        self.cancels.remove(&(index, src));
        for a in self
            .sched
            .on_verified(src, index, bytes, started, Instant::now())
        {
            self.cancels.remove(&(a.block, a.source));
        }
    }
}

/// What [`CacheRole::pick_source`](super::role::CacheRole::pick_source) found for a block.
pub(super) enum Pick {
    /// Ask this source.
    Source(Chosen),
    /// Every source that may have the block is busy with others: ask again soon.
    Busy,
    /// No source can give it.
    NoSource,
}

/// A source chosen for one attempt of a block.
pub(super) struct Chosen {
    pub(super) src: SourceId,
    pub(super) addr: SocketAddr,
    pub(super) class: SourceClass,
    /// Resolves if the block is taken from this source.
    pub(super) cancelled: oneshot::Receiver<()>,
    /// How long the scheduler expects the source to take (it may have a queue).
    pub(super) expected: Duration,
}

/// What one attempt of a block fetch came to.
pub(super) enum Ended {
    /// The block, verified.
    Done(Bytes),
    /// The origin has a new version of the file.
    Changed,
    /// This source did not deliver it (`peer`: a peer's failure).
    Failed { error: BlockError, peer: bool },
}

/// What every attempt of one block fetch shares.
pub(super) struct AttemptContext<'a> {
    pub(super) file: &'a Arc<CachedFile>,
    pub(super) index: u64,
    /// The file version's key in the shard's source map.
    pub(super) key: (u64, u64),
    /// An attempt's deadlines at a peer, and at a server (the whole upstream timeout:
    /// a slow server is left by racing, not by cutting its attempt short).
    pub(super) deadlines: (Deadlines, Deadlines),
    /// The file's first upstream (Haves go there).
    pub(super) upstream: Option<SocketAddr>,
    /// Where, and over which shard's connection, reports about its peers go.
    pub(super) report_to: Option<(SocketAddr, usize)>,
}

/// How often a block fetch asks the scheduler whether its block is late at its
/// source (and should be raced to another).
pub(super) const RACE_CHECK: Duration = Duration::from_millis(20);

/// The place one attempt of a block fetch holds at its source (the scheduler's
/// outstanding count): given back with the attempt's outcome, or, when the attempt is
/// dropped before it has one (the whole fetch's deadline, the shard stopping), as
/// abandoned, so no path can keep it. (An attempt that outlives its own deadline is a
/// stall: reported as a failure of its source.)
pub(super) struct SourceSlot<'a> {
    pub(super) sources: &'a RefCell<HashMap<(u64, u64), FileSources>>,
    pub(super) file: (u64, u64),
    pub(super) src: SourceId,
    pub(super) index: u64,
    pub(super) open: bool,
}

impl SourceSlot<'_> {
    pub(super) fn report<T>(&mut self, f: impl FnOnce(&mut FileSources) -> T) -> Option<T> {
        self.open = false;
        // Never borrowed across an await; `try_` only so a drop can never panic.
        let mut all = self.sources.try_borrow_mut().ok()?;
        all.get_mut(&self.file).map(f)
    }

    pub(super) fn failed(mut self, why: Failure) {
        let (src, index) = (self.src, self.index);
        self.report(|s| s.failed(src, index, why));
    }

    pub(super) fn verified(mut self, bytes: u64, started: Instant) {
        let (src, index) = (self.src, self.index);
        self.report(|s| s.verified(src, index, bytes, started));
    }

    /// The block was taken from this attempt (and counted) already.
    pub(super) fn taken_away(mut self) {
        self.open = false;
    }
}

impl Drop for SourceSlot<'_> {
    fn drop(&mut self) {
        if self.open {
            let (src, index) = (self.src, self.index);
            self.report(|s| s.failed(src, index, Failure::Abandoned));
        }
    }
}

/// Sources one file is fetched from at most.
pub(super) const MAX_SOURCES_PER_FILE: usize = 16;

/// Files whose source state a shard keeps; beyond it the state starts afresh.
pub(super) const MAX_FILES_WITH_SOURCES: usize = 4096;

/// The scheduler policy for blocks fetched on demand.
pub(super) fn sched_config(upstream_timeout: Duration) -> SchedConfig {
    SchedConfig {
        stall_timeout: upstream_timeout,
        ..SchedConfig::default()
    }
}

/// Takes a fresher list of a file's sources into its scheduler, matching them by
/// address (Locate answers order peers by how recently they reported, so positions
/// move): known sources get their new holds and keep what was measured and whether
/// they were dropped, new ones are added, and ones no longer named are left holding
/// nothing. False when the list would grow past twice [`MAX_SOURCES_PER_FILE`]: the
/// caller then starts afresh.
pub(super) fn merge_sources(entry: &mut FileSources, sources: &[Located]) -> bool {
    let added = sources
        .iter()
        .filter(|l| !entry.sources.iter().any(|e| e.addr == l.addr))
        .count();
    if entry.sources.len() + added > 2 * MAX_SOURCES_PER_FILE {
        return false;
    }
    for (i, e) in entry.sources.iter_mut().enumerate() {
        let holds = sources
            .iter()
            .find(|l| l.addr == e.addr)
            .map_or(Holds::Ranges(Vec::new()), |l| l.holds.clone());
        if e.holds != holds {
            entry.sched.set_holds(i, holds.clone());
            e.holds = holds;
        }
    }
    for l in sources {
        if !entry.sources.iter().any(|e| e.addr == l.addr) {
            entry.sched.add_source_of(l.holds.clone(), l.class);
            entry.sources.push(l.clone());
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn one_server() -> RefCell<HashMap<(u64, u64), FileSources>> {
        let src = Located::server(SocketAddr::from(([127, 0, 0, 1], 1111)));
        let entry = FileSources::new(&[src], sched_config(Duration::from_secs(10)));
        RefCell::new(HashMap::from([((1, 2), entry)]))
    }

    /// Takes a source for `index` as `CacheRole::pick_source` does.
    pub(super) fn take(
        all: &RefCell<HashMap<(u64, u64), FileSources>>,
        index: u64,
    ) -> Option<(SourceSlot<'_>, oneshot::Receiver<()>)> {
        let mut map = all.borrow_mut();
        let e = map.get_mut(&(1, 2)).unwrap();
        let src = e.sched.pick_block(index, None, Instant::now())?;
        let rx = e.started(src, index);
        let slot = SourceSlot {
            sources: all,
            file: (1, 2),
            src,
            index,
            open: true,
        };
        Some((slot, rx))
    }

    pub(super) fn outstanding(all: &RefCell<HashMap<(u64, u64), FileSources>>) -> usize {
        all.borrow()[&(1, 2)].sched.source(0).outstanding
    }

    #[test]
    pub(super) fn an_attempt_dropped_before_its_outcome_gives_its_place_back() {
        let all = one_server();
        let max = SchedConfig::default().max_outstanding as u64;
        // Every place at the source taken, as by a player's read-ahead...
        let taken: Vec<_> = (0..max).map(|i| take(&all, i).unwrap()).collect();
        assert!(take(&all, max).is_none(), "the source is full");
        // ...then the attempts dropped mid-way (the fetch's deadline, the task
        // ending): no place is kept, and the source is not blamed.
        drop(taken);
        assert_eq!(outstanding(&all), 0);
        for i in 0..max {
            let (slot, _rx) = take(&all, 100 + i).expect("a free place again");
            slot.verified(1000, Instant::now());
        }
        assert_eq!(outstanding(&all), 0);
        let s = all.borrow()[&(1, 2)].sched.source(0).clone();
        assert_eq!((s.blocks, s.failures_in_row, s.dropped), (max, 0, false));
    }

    #[test]
    pub(super) fn a_source_that_closes_loses_every_attempt_at_it() {
        let all = one_server();
        let (a, _rx_a) = take(&all, 0).unwrap();
        let (b, mut rx_b) = take(&all, 1).unwrap();
        a.failed(Failure::Closed);
        // The other attempt at the closed source is told to move on...
        assert!(matches!(rx_b.try_recv(), Err(oneshot::Canceled)));
        assert_eq!(outstanding(&all), 0);
        // ...and its own outcome, when it comes, no longer counts.
        b.taken_away();
        assert_eq!(all.borrow()[&(1, 2)].sched.source(0).failures_in_row, 1);
    }

    #[test]
    pub(super) fn a_stalled_request_is_taken_away_and_counted_once() {
        let all = one_server();
        let (slot, mut rx) = take(&all, 7).unwrap();
        let later = Instant::now() + Duration::from_secs(11);
        all.borrow_mut()
            .get_mut(&(1, 2))
            .unwrap()
            .check_stalls(later);
        assert!(matches!(rx.try_recv(), Err(oneshot::Canceled)));
        assert_eq!(outstanding(&all), 0);
        // The attempt's late failure (or its drop) is not a second one.
        slot.failed(Failure::Error);
        assert_eq!(all.borrow()[&(1, 2)].sched.source(0).failures_in_row, 1);
    }
}
