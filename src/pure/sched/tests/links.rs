//! The scheduler on links like the testbed's (issue 14): two sources of different
//! speeds add up; the faster one slowed to a trickle or silenced mid-transfer is left
//! within a second with no long gap; deadlines send near blocks to servers and far
//! ones to peers. Simulated with `simulate_traced`, time passed in.

use std::time::{Duration, Instant};

use super::super::{config::*, scheduler::*, source::*};
use super::{simulate, simulate_traced, BS};
use crate::pure::protocol::Holds;

/// The knobs `p2pd get` runs with for 256 KiB blocks.
fn get_cfg() -> SchedConfig {
    SchedConfig {
        window_blocks: 64,
        max_outstanding: 8,
        ..SchedConfig::default()
    }
}

/// Milliseconds a 256 KiB block takes at `mbit` Mbit/s.
fn block_ms(mbit: f64) -> u64 {
    (BS as f64 * 8.0 / (mbit * 1e6) * 1000.0).round() as u64
}

/// The longest time the position stood still, and how long after `event` the
/// delivery rate (over a sliding `win`) first reached `share` of `rate` blocks per
/// second, in a trace from [`simulate_traced`].
fn gap_and_recovery(
    trace: &[(Duration, u64)],
    event: Duration,
    rate: f64,
    share: f64,
    win: Duration,
) -> (Duration, Option<Duration>) {
    let gap = trace
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default();
    let at = |t: Duration| {
        trace
            .iter()
            .take_while(|(x, _)| *x <= t)
            .last()
            .map_or(0, |&(_, p)| p)
    };
    let end = trace.last().map_or(event, |&(t, _)| t);
    let mut t = event;
    while t + win <= end {
        let got = (at(t + win) - at(t)) as f64 / win.as_secs_f64();
        if got >= share * rate {
            return (gap, Some(t + win - event));
        }
        t += Duration::from_millis(10);
    }
    (gap, None)
}

/// 800 blocks (200 MiB) from two sources holding all of them, A (0) and B (1).
fn a_and_b() -> (u64, Scheduler) {
    let mut s = Scheduler::new(get_cfg(), 0, 800);
    s.add_source(Holds::All);
    s.add_source(Holds::All);
    (800, s)
}

/// Issue 14: A at 200 and B at 40 Mbit/s. Every block to the source that delivers
/// it first adds the two up; with the old rule B (a fifth of A) only got probes.
#[test]
fn two_sources_of_different_speeds_add_up() {
    let t0 = Instant::now();
    let (blocks, mut s) = a_and_b();
    let (a, b) = (block_ms(200.0), block_ms(40.0));
    let (per, took) = simulate(
        &mut s,
        &|i, _| Some(if i == 0 { a } else { b }),
        t0,
        Duration::from_secs(60),
    );
    let ideal = blocks as f64 / (1.0 / a as f64 + 1.0 / b as f64);
    let ratio = ideal / took.as_millis() as f64;
    assert!(
        ratio >= 0.95,
        "{ratio:.3} of the two links' sum ({took:?}, {per:?})"
    );
    assert!(per[1] * 100 >= blocks * 12, "B carried {per:?}");
}

/// Issue 14: A at 200, B at 40 Mbit/s; 2.5 s in, A drops to `after` ms a block
/// (10 Mbit/s, or silent). The rate is back to 80% of what the remaining links give
/// within 1 s, the position never stands still for 0.5 s, and the whole takes at most
/// 1.2x the ideal.
fn faster_source_slows_mid_transfer(after: u64, left_mbit: f64) {
    let t0 = Instant::now();
    let (blocks, mut s) = a_and_b();
    let (a, b) = (block_ms(200.0), block_ms(40.0));
    let event = Duration::from_millis(2500);
    let speed = |i: SourceId, t: Duration| {
        Some(match i {
            0 if t < event => a,
            0 => after,
            _ => b,
        })
    };
    let mut trace = Vec::new();
    let (per, took) = simulate_traced(&mut s, &speed, t0, Duration::from_secs(120), &mut trace);
    let before = 1.0 / a as f64 + 1.0 / b as f64;
    let left = left_mbit / 200.0 / a as f64 + 1.0 / b as f64;
    let pre = event.as_millis() as f64 * before;
    let ideal = event.as_millis() as f64 + (blocks as f64 - pre) / left;
    let (gap, back) = gap_and_recovery(
        &trace,
        event,
        left * 1000.0,
        0.8,
        Duration::from_millis(500),
    );
    eprintln!("took {took:?}, ideal {ideal:.0} ms, gap {gap:?}, back {back:?}, {per:?}");
    assert!(
        took.as_millis() as f64 <= 1.2 * ideal,
        "took {took:?}, ideal {ideal:.0} ms ({per:?})"
    );
    assert!(
        gap < Duration::from_millis(500),
        "the position stood still {gap:?}"
    );
    assert!(
        back.is_some_and(|d| d <= Duration::from_secs(1)),
        "80% of the remaining rate after {back:?}"
    );
}

#[test]
fn the_faster_source_slowed_to_a_trickle_is_left_at_once() {
    faster_source_slows_mid_transfer(block_ms(10.0), 10.0);
}

#[test]
fn the_faster_source_gone_silent_is_left_at_once() {
    faster_source_slows_mid_transfer(1_000_000, 0.0);
}

/// Issue 14: blocks with deadlines. A 5 Mbit/s peer gets a block needed in 5 s (it
/// delivers it in time; the server is spared), not one needed in 100 ms (the server
/// does); a peer never measured gets no urgent block; a block late at its peer is
/// raced to the server before its deadline passes.
#[test]
fn deadlines_send_near_blocks_to_servers_and_far_ones_to_peers() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(get_cfg(), 0, 0);
    let server = s.add_source_of(Holds::All, SourceClass::Server);
    let peer = s.add_source_of(Holds::All, SourceClass::Peer);
    let fresh = s.add_source_of(Holds::All, SourceClass::Peer);
    let ms = Duration::from_millis;
    // Measure the server (200 Mbit/s) and one peer (5 Mbit/s).
    assert_eq!(s.pick_block(0, Some(t0), t0), Some(server));
    s.on_verified(server, 0, BS, t0, t0 + ms(block_ms(200.0)));
    let t = t0 + ms(1000);
    assert_eq!(
        s.pick_block(1, Some(t + ms(5000)), t),
        Some(peer),
        "far: a peer"
    );
    s.on_verified(peer, 1, BS, t, t + ms(block_ms(5.0)));
    let t = t + ms(1000);
    // Needed in 100 ms: the peer cannot make it, nor may the unknown one try.
    assert_eq!(s.pick_block(2, Some(t + ms(100)), t), Some(server));
    // Needed in 5 s: time to spare, so the unknown peer may measure itself on it.
    assert_eq!(s.pick_block(3, Some(t + ms(5000)), t), Some(fresh));
    // The next one too: it takes one at a time, and the measured peer can make it.
    assert_eq!(s.pick_block(4, Some(t + ms(5000)), t), Some(peer));
    // Needed in 3 s: the peer is busy with block 4 until ~420 ms, then takes ~420 ms:
    // still in time, so the peer again (the server is spared).
    assert_eq!(s.pick_block(5, Some(t + ms(3000)), t), Some(peer));
    // Needed in 600 ms: the peer would deliver at ~1.26 s; the server takes it.
    assert_eq!(s.pick_block(6, Some(t + ms(600)), t), Some(server));
    // Block 4 has not come 1 s later: by what the peer failed to deliver it still
    // makes its deadline. At 2 s, more than four times a block's time at its rate,
    // the peer is overdue: the block is raced to the server.
    assert_eq!(s.race(4, t + ms(1000)), None, "in time, by what is known");
    assert_eq!(s.race(4, t + ms(2000)), Some(server));
}

/// Issue 14: a block a peer failed goes to a server next, however fast the peers
/// look (the cache asks with `only: Server`), and a server is the fallback a viewer
/// never waits on: with every peer dropped the server still gets the block.
#[test]
fn after_a_peer_failed_a_block_a_server_gets_it() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut s = Scheduler::new(get_cfg(), 0, 0);
    let server = s.add_source_of(Holds::All, SourceClass::Server);
    let peers: Vec<SourceId> = (0..8)
        .map(|_| s.add_source_of(Holds::All, SourceClass::Peer))
        .collect();
    // The peers are measured faster than the server.
    assert_eq!(
        s.pick_block_of(0, None, Some(SourceClass::Server), t0),
        Some(server)
    );
    s.on_verified(server, 0, BS, t0, t0 + ms(50));
    for b in 100..108 {
        let p = s
            .pick_block_of(b, None, Some(SourceClass::Peer), t0)
            .unwrap();
        s.on_verified(p, b, BS, t0, t0 + ms(5));
    }
    let t = t0 + ms(10);
    let first = s.pick_block(1, None, t).unwrap();
    assert!(peers.contains(&first), "a fast peer first");
    s.on_failure(first, 1, Failure::Unreachable);
    assert_eq!(
        s.pick_block_of(1, None, Some(SourceClass::Server), t),
        Some(server)
    );
    // Every peer gone: the server takes what comes.
    for &p in &peers {
        s.on_failure(p, 999, Failure::Unreachable);
    }
    assert_eq!(s.pick_block(2, None, t), Some(server));
}

/// Issue 14: blocks fetched ahead of a reader must not take a busy source's places
/// from the block the reader waits on: a server's queue takes blocks needed later
/// only up to `max_queue` of work (it serves its queue in turn), and when a place
/// frees, the most urgent waiting block gets it, whichever fetch asks first.
#[test]
fn a_freed_place_goes_to_the_most_urgent_waiting_block() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut s = Scheduler::new(get_cfg(), 0, 0);
    let server = s.add_source_of(Holds::All, SourceClass::Server);
    s.pick_block(0, None, t0);
    s.on_verified(server, 0, BS, t0, t0 + ms(50));
    let t = t0 + ms(60);
    // Blocks needed in 10 s join its queue only while it holds at most 150 ms of
    // work (a few at 50 ms), not its eight places...
    let mut far = 0;
    while s.pick_block(100 + far, Some(t + ms(10_000)), t).is_some() {
        far += 1;
    }
    assert!((2..=4).contains(&far), "{far}");
    // ...so the reader's block, needed now, finds a place at once, and blocks needed
    // already (readers behind) fill the rest.
    assert_eq!(s.pick_block(1, Some(t), t), Some(server));
    let mut b = 200;
    while s.pick_block(b, Some(t), t).is_some() {
        b += 1;
    }
    // Full: the reader's next block waits, and so does one needed later.
    assert_eq!(s.pick_block(2, Some(t), t), None);
    assert_eq!(s.pick_block(b, Some(t + ms(200)), t), None);
    // A place frees: the less urgent block asks first, the reader's block gets it.
    s.on_verified(server, 100, BS, t, t + ms(5));
    let t = t + ms(6);
    assert_eq!(s.pick_block(b, Some(t0 + ms(260)), t), None);
    assert_eq!(s.pick_block(2, Some(t0 + ms(60)), t), Some(server));
    // A waiting block whose fetch gave up holds nothing for long.
    s.on_verified(server, 101, BS, t, t + ms(5));
    let later = t + ms(500);
    assert_eq!(s.pick_block(b, Some(later), later), Some(server));
}

/// Fetches that were told to wait and then gave up leave no lasting trace: a cache
/// asked for many different blocks while its one source is full keeps its list of
/// waiting blocks as small as the blocks waiting now.
#[test]
fn blocks_that_gave_up_waiting_are_forgotten() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(get_cfg(), 0, 0);
    let server = s.add_source_of(Holds::All, SourceClass::Server);
    let mut b = 0;
    while s.pick_block(b, Some(t0), t0).is_some() {
        b += 1;
    }
    for i in 0..10_000u64 {
        let t = t0 + Duration::from_millis(10 * i);
        assert_eq!(s.pick_block(1_000 + i, Some(t), t), None);
    }
    assert!(s.waiting_len() <= 65, "{} entries", s.waiting_len());
    assert_eq!(s.source(server).outstanding as u64, b);
}
