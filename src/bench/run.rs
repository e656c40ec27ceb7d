//! Runs a bench: one executor per `--threads`, each with its share of the arrivals (VoD)
//! or of the connections (`--max-throughput`), until the deadline; the calling thread
//! samples concurrency, draws the progress line and builds the report.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::client::{BenchError, OpenOptions, Piece, Session};
use super::config::{BenchConfig, Title};
use super::model::{exp_gap, Arrivals, Playout, PlayoutEvent, TitlePicker};
use super::stats::{cpu_times, record_secs, Live, Report, RunFacts, Stats};
use crate::runtime;
use crate::upstream::connection::FetchError;

/// How often the calling thread samples the number of active viewers.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// A connection that failed waits this long before its next try, so a dead server
/// produces a steady count of errors instead of a busy loop.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Shortest sleep of a viewer whose buffer is full.
const MIN_PACING_SLEEP: Duration = Duration::from_millis(5);
/// SPP blocks per Get in --max-throughput mode (VoD viewers ask one block at a time,
/// so each block's latency is its own).
const THROUGHPUT_BLOCKS_PER_GET: u32 = 8;

/// One executor's view of the run.
struct Exec {
    cfg: Arc<BenchConfig>,
    live: Arc<Live>,
    end: Instant,
    stats: RefCell<Stats>,
    rng: RefCell<StdRng>,
    picker: TitlePicker,
    /// Viewers still running, so the deadline can account for them.
    viewers: RefCell<HashMap<u64, Rc<RefCell<ViewerSlot>>>>,
    /// --max-throughput transfers under way, counted as active if the run ends first.
    transfers: std::cell::Cell<u64>,
    /// --max-throughput connections still running (they stop early with --once).
    connections: std::cell::Cell<u64>,
}

/// What the executor can see of a running viewer.
struct ViewerSlot {
    arrived: Instant,
    /// Set once the title's size is known.
    playout: Option<Playout>,
}

impl Exec {
    fn title(&self) -> &Title {
        let i = self.picker.pick(&mut *self.rng.borrow_mut());
        &self.cfg.titles[i]
    }

    fn account(&self, source: std::net::SocketAddr, p: &Piece) {
        let mut s = self.stats.borrow_mut();
        s.add_bytes(&source.to_string(), p.bytes);
        Live::add(&self.live.bytes, p.bytes);
        if let Some(l) = p.latency_s {
            record_secs(&mut s.latency_us, l);
        }
        if p.verified {
            s.digests_checked += 1;
        }
    }

    fn failed(&self, e: &BenchError) {
        let mut s = self.stats.borrow_mut();
        s.failed += 1;
        s.error(&e.kind());
        if matches!(e, BenchError::Fetch(FetchError::Digest { .. })) {
            s.digests_checked += 1;
            s.digests_failed += 1;
        }
        Live::add(&self.live.failed, 1);
        Live::add(&self.live.errors, 1);
        tracing::debug!("{e}");
    }

    /// Adds a viewer's playback tallies to the executor's.
    fn settle(&self, p: &Playout) {
        let mut s = self.stats.borrow_mut();
        s.stalls += p.stalls;
        s.stall_time_s += p.stall_time_s;
        s.play_time_s += p.play_time_s;
        if p.stalls > 0 {
            s.viewers_with_stalls += 1;
        }
    }
}

/// Runs the bench described by `cfg` and returns its report.
pub fn run(cfg: BenchConfig) -> Result<Report, String> {
    let threads = cfg.threads;
    let io_memory = runtime::preflight(threads)?;
    let cfg = Arc::new(cfg);
    let live = Arc::new(Live::default());
    let start = Instant::now();
    let end = start + cfg.duration;
    let (user0, sys0) = cpu_times();

    let pool = {
        let (cfg, live) = (cfg.clone(), live.clone());
        std::thread::Builder::new()
            .name("p2pd-bench-pool".into())
            .spawn(move || {
                runtime::run_pool("p2pd-bench", threads, io_memory, false, move |k| {
                    executor(k, threads, cfg.clone(), live.clone(), end)
                })
            })
            .map_err(|e| format!("cannot start the bench threads: {e}"))?
    };

    let bar = (!cfg.quiet && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(cfg.duration.as_secs().max(1));
        b.set_style(
            indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:24}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let (mut samples, mut sum, mut peak) = (0u64, 0u64, 0u64);
    let (mut last_print, mut last_bytes) = (Instant::now(), 0u64);
    while !pool.is_finished() {
        std::thread::sleep(SAMPLE_EVERY);
        let active = Live::get(&live.active);
        if Instant::now() <= end {
            samples += 1;
            sum += active;
            peak = peak.max(active);
        }
        if let Some(b) = &bar {
            let since = last_print.elapsed();
            if since >= Duration::from_secs(1) {
                let bytes = Live::get(&live.bytes);
                let gbit = (bytes - last_bytes) as f64 * 8.0 / since.as_secs_f64() / 1e9;
                b.set_position(start.elapsed().as_secs());
                b.set_message(format!(
                    "{active} active, {} started, {} failed | {gbit:.3} Gbit/s | stalls {} | errors {}",
                    Live::get(&live.started),
                    Live::get(&live.failed),
                    Live::get(&live.stalls),
                    Live::get(&live.errors),
                ));
                (last_print, last_bytes) = (Instant::now(), bytes);
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let per_executor = pool
        .join()
        .map_err(|_| "a bench thread panicked".to_string())??;
    let wall_s = start
        .elapsed()
        .as_secs_f64()
        .min(cfg.duration.as_secs_f64().max(1e-9));
    let (user1, sys1) = cpu_times();
    let mut total = Stats::default();
    for s in per_executor {
        total.merge(s);
    }
    Ok(Report::build(
        &total,
        RunFacts {
            mode: if cfg.max_throughput {
                "max-throughput"
            } else {
                "vod"
            },
            targets: {
                let mut t: Vec<String> = cfg.titles.iter().map(|t| t.url().to_string()).collect();
                t.truncate(20);
                t
            },
            seed: cfg.seed,
            wall_s,
            concurrent_mean: if samples > 0 {
                sum as f64 / samples as f64
            } else {
                0.0
            },
            concurrent_peak: peak,
            cpu_user_s: user1 - user0,
            cpu_system_s: sys1 - sys0,
        },
    ))
}

async fn sleep_until(t: Instant) {
    let d = t.saturating_duration_since(Instant::now());
    if !d.is_zero() {
        runtime::sleep(d).await;
    }
}

/// One executor: starts its share of the load, waits for the deadline, and accounts
/// for whatever is still running then.
async fn executor(
    k: usize,
    n: usize,
    cfg: Arc<BenchConfig>,
    live: Arc<Live>,
    end: Instant,
) -> Stats {
    let ex = Rc::new(Exec {
        picker: TitlePicker::new(cfg.titles.len(), cfg.popularity),
        rng: RefCell::new(StdRng::seed_from_u64(cfg.seed.wrapping_add(k as u64))),
        cfg: cfg.clone(),
        live,
        end,
        stats: RefCell::new(Stats::default()),
        viewers: RefCell::new(HashMap::new()),
        transfers: std::cell::Cell::new(0),
        connections: std::cell::Cell::new(0),
    });
    let start = Instant::now();
    if cfg.max_throughput {
        for _ in (k..cfg.connections).step_by(n) {
            ex.connections.set(ex.connections.get() + 1);
            runtime::spawn_detached(connection(ex.clone()));
        }
    } else {
        // Together the executors keep the overall rate: each takes every n-th arrival.
        let mut arrivals = Arrivals::new(
            cfg.rate_per_s / n as f64,
            cfg.poisson,
            k as f64 / cfg.rate_per_s,
        );
        let mut id = 0u64;
        loop {
            let at = arrivals.next(&mut *ex.rng.borrow_mut());
            let when = start + Duration::from_secs_f64(at);
            if when >= end {
                break;
            }
            sleep_until(when).await;
            let active = ex
                .live
                .active
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if active >= cfg.max_viewers as u64 {
                ex.live
                    .active
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                ex.stats.borrow_mut().dropped += 1;
                continue;
            }
            id += 1;
            runtime::spawn_detached(viewer(ex.clone(), id));
        }
    }
    if cfg.max_throughput {
        // Connections end at the deadline, or earlier when --once runs out of titles.
        while ex.connections.get() > 0 && Instant::now() < end {
            runtime::sleep(Duration::from_millis(10)).await;
        }
    } else {
        sleep_until(end).await;
    }
    // Viewers still waiting on the network at the deadline: their playback up to now
    // counts (a server that sends nothing shows up as a stall, not as silence).
    let left: Vec<_> = ex.viewers.borrow_mut().drain().map(|(_, v)| v).collect();
    let t_end = Instant::now();
    ex.stats.borrow_mut().active_at_end += ex.transfers.get();
    for v in left {
        ex.stats.borrow_mut().active_at_end += 1;
        let mut v = v.borrow_mut();
        let arrived = v.arrived;
        if let Some(p) = v.playout.as_mut() {
            p.advance(t_end.saturating_duration_since(arrived).as_secs_f64());
            ex.settle(p);
        }
    }
    ex.stats.replace(Stats::default())
}

/// How a viewer's session ended without an error.
enum Outcome {
    /// Left after its watch time or at the end of the title.
    Completed,
    /// Still watching when the run ended.
    RunEnded,
}

/// One VoD viewer: arrives, picks a title, plays it through the buffer, leaves.
async fn viewer(ex: Rc<Exec>, id: u64) {
    ex.stats.borrow_mut().started += 1;
    Live::add(&ex.live.started, 1);
    let slot = Rc::new(RefCell::new(ViewerSlot {
        arrived: Instant::now(),
        playout: None,
    }));
    ex.viewers.borrow_mut().insert(id, slot.clone());
    let r = watch(&ex, &slot).await;
    ex.live
        .active
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    if ex.viewers.borrow_mut().remove(&id).is_none() {
        return; // the executor already accounted for it at the deadline
    }
    match r {
        Ok(Outcome::Completed) => ex.stats.borrow_mut().completed += 1,
        Ok(Outcome::RunEnded) => ex.stats.borrow_mut().active_at_end += 1,
        Err(e) => ex.failed(&e),
    }
    let slot = slot.borrow();
    if let Some(p) = slot.playout.as_ref() {
        ex.settle(p);
    }
}

async fn watch(ex: &Rc<Exec>, slot: &Rc<RefCell<ViewerSlot>>) -> Result<Outcome, BenchError> {
    let cfg = ex.cfg.clone();
    let arrived = slot.borrow().arrived;
    let leave_at = (arrived + Duration::from_secs_f64(cfg.watch_s)).min(ex.end);
    let secs = |i: Instant| i.saturating_duration_since(arrived).as_secs_f64();
    let title = ex.title().clone();
    let (mut session, mut next_off) = Session::open(&title, open_options(&cfg, 1)).await?;
    let size = session.size();
    let unit = session.unit_bytes();
    let source = session.source();
    slot.borrow_mut().playout = Some(Playout::new(
        cfg.bitrate_bps,
        cfg.startup_buffer_s,
        size,
        0.0,
    ));
    let mut next_seek = cfg
        .seek_every_s
        .map(|m| arrived + Duration::from_secs_f64(exp_gap(&mut *ex.rng.borrow_mut(), m)));
    let mut stalls_seen = 0u64;
    loop {
        let now = Instant::now();
        if now >= ex.end {
            return Ok(Outcome::RunEnded);
        }
        let (max_buffer_bytes, play_pos, wait_for_room, left_to_play_s) = {
            let mut b = slot.borrow_mut();
            let Some(p) = b.playout.as_mut() else {
                return Ok(Outcome::Completed);
            };
            p.advance(secs(now));
            if p.stalls > stalls_seen {
                Live::add(&ex.live.stalls, p.stalls - stalls_seen);
                stalls_seen = p.stalls;
            }
            if now >= leave_at || p.ended() {
                return Ok(Outcome::Completed);
            }
            if next_seek.is_some_and(|at| now >= at && p.started()) {
                let to = ex.rng.borrow_mut().random_range(0..size.max(1)) / unit * unit;
                p.seek(secs(now), to);
                session.discard_outstanding();
                next_off = to;
                ex.stats.borrow_mut().seeks += 1;
                next_seek = cfg
                    .seek_every_s
                    .map(|m| now + Duration::from_secs_f64(exp_gap(&mut *ex.rng.borrow_mut(), m)));
            }
            let unit_s = unit as f64 * 8.0 / cfg.bitrate_bps as f64;
            (
                p.bytes_for(cfg.max_buffer_s),
                p.play_pos_bytes(),
                p.secs_until_buffer_below((cfg.max_buffer_s - unit_s).max(0.0)),
                p.secs_until_buffer_below(0.0),
            )
        };
        let limit = size.min(play_pos + max_buffer_bytes.max(unit));
        next_off = session.fill(next_off, limit, cfg.window_blocks).await?;
        if session.idle() {
            // Nothing to fetch now: the buffer is full, or the whole title is in.
            let wake = if next_off >= size {
                // All of it is in: the viewer leaves when playback reaches the end.
                now + Duration::from_secs_f64(left_to_play_s)
            } else {
                now + Duration::from_secs_f64(wait_for_room).max(MIN_PACING_SLEEP)
            };
            let wake = next_seek.map_or(wake, |s| wake.min(s)).min(leave_at);
            sleep_until(wake.max(now + Duration::from_millis(1))).await;
            continue;
        }
        let piece = session.recv().await?;
        ex.account(source, &piece);
        if !piece.stale {
            let t = secs(Instant::now());
            let event = slot
                .borrow_mut()
                .playout
                .as_mut()
                .and_then(|p| p.on_data(t, piece.bytes));
            match event {
                Some(PlayoutEvent::Started { startup_s }) => {
                    record_secs(&mut ex.stats.borrow_mut().startup_us, startup_s)
                }
                Some(PlayoutEvent::Resumed { wait_s }) => {
                    record_secs(&mut ex.stats.borrow_mut().seek_wait_us, wait_s)
                }
                None => {}
            }
        }
    }
}

fn open_options(cfg: &BenchConfig, blocks_per_get: u32) -> OpenOptions {
    OpenOptions {
        timeout: cfg.timeout,
        verify: cfg.verify,
        blocks_per_get,
        chunk: cfg.chunk_bytes,
    }
}

/// One connection of --max-throughput: fetches titles back to back until the end.
async fn connection(ex: Rc<Exec>) {
    let mut session: Option<Session> = None;
    while Instant::now() < ex.end {
        let title = if ex.cfg.once {
            let i = ex
                .live
                .next_title
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match ex.cfg.titles.get(i as usize) {
                Some(t) => t.clone(),
                None => break,
            }
        } else {
            ex.title().clone()
        };
        ex.stats.borrow_mut().started += 1;
        Live::add(&ex.live.started, 1);
        ex.live
            .active
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ex.transfers.set(ex.transfers.get() + 1);
        let r = transfer(&ex, &mut session, &title).await;
        ex.transfers.set(ex.transfers.get() - 1);
        ex.live
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        match r {
            Ok(Outcome::Completed) => ex.stats.borrow_mut().completed += 1,
            Ok(Outcome::RunEnded) => ex.stats.borrow_mut().active_at_end += 1,
            Err(e) => {
                ex.failed(&e);
                session = None;
                sleep_until((Instant::now() + RETRY_BACKOFF).min(ex.end)).await;
            }
        }
    }
    ex.connections.set(ex.connections.get() - 1);
}

async fn transfer(
    ex: &Rc<Exec>,
    slot: &mut Option<Session>,
    title: &Title,
) -> Result<Outcome, BenchError> {
    let cfg = &ex.cfg;
    let o = open_options(cfg, THROUGHPUT_BLOCKS_PER_GET);
    let opened = match slot.take() {
        Some(s) => s.reopen(title, o).await,
        None => Session::open(title, o).await,
    };
    let (mut s, mut next_off) = opened?;
    let size = s.size();
    let source = s.source();
    loop {
        if Instant::now() >= ex.end {
            return Ok(Outcome::RunEnded);
        }
        next_off = s.fill(next_off, size, cfg.window_blocks).await?;
        if s.idle() {
            *slot = Some(s);
            return Ok(Outcome::Completed);
        }
        let piece = s.recv().await?;
        ex.account(source, &piece);
    }
}
