//! Unit tests of the scheduler: simulated sources of given speeds and failures, and
//! the policy's rules (sharing, probes, failover, stalls, urgent duplicates, peers
//! first, holdings); `links`: the situations of real links (sources of different
//! speeds, a source that slows down or goes silent, deadlines).

use std::time::{Duration, Instant};

use super::{config::*, scheduler::*, source::*};

mod links;
use crate::pure::protocol::{BlockRange, Holds};

pub(super) const BS: u64 = 256 * 1024;

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
pub(super) fn simulate(
    s: &mut Scheduler,
    ms: &dyn Fn(SourceId, Duration) -> Option<u64>,
    t0: Instant,
    limit: Duration,
) -> (Vec<u64>, Duration) {
    simulate_traced(s, ms, t0, limit, &mut Vec::new())
}

/// [`simulate`], recording in `trace` when the position (the first block not yet
/// verified) moved and where to.
pub(super) fn simulate_traced(
    s: &mut Scheduler,
    ms: &dyn Fn(SourceId, Duration) -> Option<u64>,
    t0: Instant,
    limit: Duration,
    trace: &mut Vec<(Duration, u64)>,
) -> (Vec<u64>, Duration) {
    let n = s.sources();
    // Per source: the queue of blocks asked, and when the one at its head started.
    let mut queues: Vec<std::collections::VecDeque<u64>> = vec![Default::default(); n];
    let mut head_since: Vec<Option<Instant>> = vec![None; n];
    let mut now = t0;
    let step = Duration::from_millis(1);
    let s_tick = SchedConfig::default().tick;
    let (mut changed, mut last_assign) = (true, None::<Instant>);
    while !s.is_finished() {
        assert!(
            now - t0 < limit,
            "not finished within {limit:?}: position {}",
            s.position()
        );
        if s.stuck().is_some() {
            break;
        }
        // As the driver does: after news from a source, else every tick.
        let due = last_assign.is_none_or(|t| now - t >= s_tick);
        if changed || due {
            for a in s.assign(now) {
                queues[a.source].push_back(a.block);
            }
            last_assign = Some(now);
            changed = false;
        }
        for c in s.check_stalls(now) {
            changed = true;
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
                    changed = true;
                    queues[i].pop_front();
                    // The next in its queue starts at once.
                    head_since[i] = queues[i].front().map(|_| now);
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
                    changed = true;
                    queues[i].pop_front();
                    head_since[i] = None;
                    for c in s.on_failure(i, block, Failure::Closed) {
                        queues[c.source].retain(|&b| b != c.block);
                    }
                }
            }
        }
        if trace.last().is_none_or(|&(_, p)| p != s.position()) {
            trace.push((now - t0, s.position()));
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
    // Its blocks were raced elsewhere or taken when they stalled: it is dropped, or
    // known to be far slower than the source that works.
    let (r0, r1) = (s.source(0).rate_bps.unwrap(), s.source(1).rate_bps);
    assert!(
        s.source(1).dropped || r1.is_some_and(|r1| r1 * 10.0 < r0),
        "a source that never answers is neither dropped nor seen slow: {r1:?} vs {r0}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn an_abandoned_request_frees_its_place_without_blaming_the_source() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 0, 0);
    let a = s.add_source(Holds::All);
    for b in 0..4 {
        assert_eq!(s.pick_block(b, None, t0), Some(a));
    }
    assert_eq!(s.pick_block(4, None, t0), None, "full at max_outstanding");
    for b in 0..4 {
        assert!(s.on_failure(a, b, Failure::Abandoned).is_empty());
    }
    let st = s.source(a);
    assert_eq!(
        (st.outstanding, st.failures_in_row, st.dropped),
        (0, 0, false)
    );
    assert_eq!(s.pick_block(4, None, t0), Some(a));
}

#[test]
fn a_late_block_is_raced_to_a_second_source_and_the_first_copy_wins() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 0, 10);
    let a = s.add_source(Holds::All);
    let b = s.add_source(Holds::All);
    let first = s.assign(t0);
    assert!(first.iter().any(|x| x.source == a) && first.iter().any(|x| x.source == b));
    let at_a = first.iter().find(|x| x.block == 0).unwrap().source;
    let other = if at_a == a { b } else { a };
    // The other source delivers its blocks, 10 ms each; block 0's source nothing.
    let mut t = t0;
    for x in first.iter().filter(|x| x.source == other) {
        t += Duration::from_millis(10);
        s.on_verified(other, x.block, BS, t, t);
    }
    // 100 ms on, block 0 is late at its source: it is asked of the other too.
    let later = s.assign(t0 + Duration::from_millis(100));
    assert!(
        later.contains(&Assignment {
            block: 0,
            source: other
        }),
        "{later:?}"
    );
    // The second copy arrives first: the first request is to be cancelled.
    let t = t0 + Duration::from_millis(110);
    let cancel = s.on_verified(other, 0, BS, t, t);
    assert_eq!(
        cancel,
        vec![Assignment {
            block: 0,
            source: at_a
        }]
    );
    assert!(s.position() >= 1);
    assert_eq!(
        s.source(at_a).outstanding,
        first.iter().filter(|x| x.source == at_a).count() - 1
    );
    // What it failed to deliver in the time it had lowered its estimate below the
    // other's.
    let r = |i: SourceId| s.source(i).rate_bps.unwrap_or(f64::MAX);
    assert!(r(at_a) < r(other), "{} vs {}", r(at_a), r(other));
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
    let x = s.pick_block(10, None, t0).unwrap();
    let y = s.pick_block(11, None, t0).unwrap();
    assert_ne!(x, y);
    // a is fast, b slow.
    let (fast, slow) = (a, b);
    let blk = |_: &Scheduler, src| if src == x { 10 } else { 11 };
    s.on_verified(fast, blk(&s, fast), BS, t0, t0 + Duration::from_millis(2));
    s.on_verified(slow, blk(&s, slow), BS, t0, t0 + Duration::from_millis(40));
    let t = t0 + Duration::from_millis(50);
    for i in 0..6 {
        let src = s.pick_block(100 + i, None, t).unwrap();
        assert_eq!(src, fast, "block {i} went to the slow source");
        s.on_verified(src, 100 + i, BS, t, t + Duration::from_millis(2));
    }
    // The fast one dies: the next block goes to the slow one, nothing is kept.
    let src = s.pick_block(200, None, t).unwrap();
    s.on_failure(src, 200, Failure::Closed);
    s.on_failure(fast, 200, Failure::Closed);
    s.on_failure(fast, 200, Failure::Closed);
    assert!(s.source(fast).dropped);
    assert_eq!(s.pick_block(200, None, t), Some(slow));
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
    assert_eq!(s.pick_block(6, None, t0), Some(server));
    s.on_failure(server, 6, Failure::Error);
    // The peer said it lacks block 2.
    assert_eq!(s.pick_block(2, None, t0), Some(peer));
    s.on_failure(peer, 2, Failure::NotHeld);
    // A fresher Locate: it holds 0..10 now.
    s.set_holds(peer, holds_ranges(&[(0, 10)]));
    assert_eq!(s.pick_block(7, None, t0), Some(peer));
    s.on_failure(peer, 7, Failure::Error);
    assert_eq!(
        s.pick_block(2, None, t0),
        Some(peer),
        "what it said before is forgotten"
    );
}

/// Source 0 is fast, then after half a second takes 3 s a block (a link throttled
/// to a trickle); source 1 is steady. Source 0's blocks are taken by source 1 before
/// they complete (urgent duplicates, stalls), so no block of it is ever measured
/// slow: what it failed to deliver in the time it had must lower its estimate, or it
/// stays "the fastest" and keeps getting blocks that wait out the stall timeout.
#[test]
fn a_source_that_slows_down_is_seen_slow_though_it_completes_nothing() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 0, 1000);
    s.add_source(Holds::All);
    s.add_source(Holds::All);
    let speed = |i: SourceId, t: Duration| {
        Some(match i {
            0 if t < Duration::from_millis(500) => 2,
            0 => 3000,
            _ => 10,
        })
    };
    let (per, took) = simulate(&mut s, &speed, t0, Duration::from_secs(120));
    let r = (s.source(0).rate_bps.unwrap(), s.source(1).rate_bps.unwrap());
    assert!(
        r.0 < r.1,
        "the slowed source still looks faster: {r:?} (blocks {per:?}, {took:?})"
    );
    // Source 1 alone would take 10 s for the blocks source 0 did not deliver.
    assert!(
        took < Duration::from_secs(16),
        "took {took:?} (blocks {per:?}, rates {r:?})"
    );
}

#[test]
fn a_queued_block_is_expected_after_the_ones_before_it() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(cfg(), 0, 0);
    let p = s.add_source_of(Holds::All, SourceClass::Peer);
    // Measured: a block in 250 ms.
    assert_eq!(s.pick_block(0, None, t0), Some(p));
    s.on_verified(p, 0, BS, t0, t0 + Duration::from_millis(250));
    // Three blocks with time to spare queue at the peer; each is expected a block's
    // time after the one before it (what its attempt's deadline is made from).
    let t = t0 + Duration::from_millis(300);
    let far = Some(t + Duration::from_secs(10));
    for b in 1..=3 {
        assert_eq!(s.pick_block(b, far, t), Some(p));
    }
    let after = |b| s.expected(p, b, t).map(|e| e.duration_since(t).as_millis());
    assert_eq!(after(1), Some(250));
    assert_eq!(after(2), Some(500));
    assert_eq!(after(3), Some(750));
    assert_eq!(after(9), None, "never asked");
}
