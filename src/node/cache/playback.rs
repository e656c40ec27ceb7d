//! Where viewers read a cached file and how fast ([`Playback`]): each reader's
//! position and pace give every block ahead of it a deadline (when that reader will
//! need it), which the fetch scheduler serves by (near blocks from sources that make
//! them, far ones from slower peers), and say how far ahead a client cache fetches
//! for its readers before they ask ([`Playback::consumed`]).

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Readers of one file followed at most (the least recently seen goes first).
pub const MAX_READERS: usize = 16;
/// A reader not heard from this long is forgotten.
pub const READER_IDLE: Duration = Duration::from_secs(10);
/// The pace assumed of a reader until it has read for a while: 8 Mbit/s.
pub const DEFAULT_PACE_BPS: f64 = 1e6;
/// A reader is taken to read at least this fast (bytes per second).
pub const MIN_PACE_BPS: f64 = 64e3;
/// How long a reader must have read before its pace is measured.
const PACE_AFTER: Duration = Duration::from_secs(1);
/// A reader's startup, which is served before anything is fetched ahead for it: its
/// first bytes (a player's startup buffer, 2 s at 8 Mbit/s)...
pub const STARTUP_BYTES: u64 = 2 << 20;
/// ...or its first second, whichever ends first.
pub const STARTUP_MAX: Duration = Duration::from_secs(1);
/// A reader's pace is measured over its last one to two of these.
const PACE_WINDOW: Duration = Duration::from_secs(10);
/// A read this many blocks behind where a reader was, or beyond what was fetched
/// ahead for it, is a seek: its pace is measured afresh from there.
const SEEK_BLOCKS: u64 = 8;
/// A cache fetches at most this many bytes ahead of one reader (besides the time
/// its `--read-ahead` gives).
pub const AHEAD_MAX_BYTES: u64 = 24 << 20;
/// Fetches ahead in flight for one file at most.
pub const AHEAD_IN_FLIGHT: usize = 32;

#[derive(Debug)]
struct Reader {
    addr: IpAddr,
    /// Where and when its pace is measured from: its last 10 to 20 s (a player that
    /// filled its buffer at link speed reads at the film's rate afterwards).
    pace_from: (u64, Instant),
    /// Where it was [`PACE_WINDOW`] ago at most: the next start of its pace.
    mark: (u64, Instant),
    /// The next block it needs, since when.
    pos: u64,
    at: Instant,
    /// The first block not yet fetched ahead for it.
    ahead_to: u64,
    /// Where and when it started (or sought): its startup comes first.
    born: (u64, Instant),
    /// A look after its startup is planned (see [`Playback::startup_left`]).
    after_startup: bool,
}

impl Reader {
    /// A reader first seen (or seeking) at block `next`.
    fn at(addr: IpAddr, next: u64, now: Instant) -> Reader {
        Reader {
            addr,
            pace_from: (next, now),
            mark: (next, now),
            pos: next,
            at: now,
            ahead_to: next,
            born: (next, now),
            after_startup: false,
        }
    }

    /// Whether it is still starting: it has been sent less than [`STARTUP_BYTES`]
    /// since it started or sought, within [`STARTUP_MAX`]. Nothing is fetched ahead
    /// for it meanwhile: what peers send ahead shares its downlink with the blocks
    /// the player waits for before it can start.
    fn starting(&self, block_bytes: u64, now: Instant) -> bool {
        let sent = self
            .pos
            .saturating_sub(self.born.0)
            .saturating_mul(block_bytes);
        sent < STARTUP_BYTES && now.saturating_duration_since(self.born.1) < STARTUP_MAX
    }

    /// From where fetching ahead stopped to `ahead` at its pace, at most `max_bytes`
    /// and `AHEAD_MAX_BYTES`, not past `end`.
    fn to_fetch(
        &self,
        end: u64,
        block_bytes: u64,
        (ahead, max_bytes): (Duration, u64),
        now: Instant,
    ) -> std::ops::Range<u64> {
        if ahead.is_zero() || max_bytes < block_bytes || self.starting(block_bytes, now) {
            return 0..0;
        }
        let blk = block_bytes.max(1);
        let by_time = (ahead.as_secs_f64() * self.pace(blk as f64) / blk as f64) as u64;
        let horizon = by_time.min(AHEAD_MAX_BYTES.min(max_bytes) / blk);
        let from = self.ahead_to.max(self.pos);
        let to = self.pos.saturating_add(horizon).min(end);
        from..to.max(from)
    }

    fn pace(&self, block_bytes: f64) -> f64 {
        let (first, started) = self.pace_from;
        let secs = self.at.saturating_duration_since(started);
        if secs < PACE_AFTER || self.pos <= first {
            return DEFAULT_PACE_BPS;
        }
        ((self.pos - first) as f64 * block_bytes / secs.as_secs_f64()).max(MIN_PACE_BPS)
    }
}

/// The readers of one cached file (see the module documentation).
#[derive(Debug, Default)]
pub struct Playback {
    readers: Mutex<Vec<Reader>>,
    /// Fetches ahead of the readers in flight.
    pub in_flight: AtomicUsize,
}

impl Playback {
    /// Reader `addr` needs block `next` next (it was sent the one before, or asked to
    /// start there), at `now`. Returns the blocks to fetch ahead for it now: from
    /// where the last fetch ahead stopped to `ahead` at its pace (at most
    /// `max_bytes` and `AHEAD_MAX_BYTES`; none when `ahead` is zero), without passing
    /// `end`. The
    /// caller fetches what it can and hands back the first block it did not
    /// ([`Playback::ahead_stopped`]).
    pub fn consumed(
        &self,
        (addr, next): (IpAddr, u64),
        (end, block_bytes): (u64, u64),
        (ahead, max_bytes): (Duration, u64),
        now: Instant,
    ) -> std::ops::Range<u64> {
        let Ok(mut readers) = self.readers.lock() else {
            return 0..0;
        };
        readers.retain(|r| now.saturating_duration_since(r.at) < READER_IDLE);
        let i = match readers.iter().position(|r| r.addr == addr) {
            Some(i) => i,
            None => {
                if readers.len() >= MAX_READERS {
                    let oldest = (0..readers.len()).min_by_key(|&i| readers[i].at);
                    if let Some(o) = oldest {
                        readers.swap_remove(o);
                    }
                }
                readers.push(Reader::at(addr, next, now));
                readers.len() - 1
            }
        };
        let r = &mut readers[i];
        let seek = next.saturating_add(SEEK_BLOCKS) < r.pos
            || next > r.ahead_to.max(r.pos).saturating_add(SEEK_BLOCKS);
        if seek {
            *r = Reader::at(addr, next, now);
        }
        r.pos = r.pos.max(next);
        r.at = now;
        if now.saturating_duration_since(r.mark.1) >= PACE_WINDOW {
            r.pace_from = r.mark;
            r.mark = (r.pos, now);
        }
        r.to_fetch(end, block_bytes, (ahead, max_bytes), now)
    }

    /// What to fetch ahead for reader `addr` now, where it was last seen (a fetch
    /// ahead for it finished: the next may start), as [`Playback::consumed`] says;
    /// nothing for a reader gone idle.
    pub fn more(
        &self,
        addr: IpAddr,
        (end, block_bytes): (u64, u64),
        (ahead, max_bytes): (Duration, u64),
        now: Instant,
    ) -> std::ops::Range<u64> {
        let Ok(readers) = self.readers.lock() else {
            return 0..0;
        };
        readers
            .iter()
            .find(|r| r.addr == addr && now.saturating_duration_since(r.at) < READER_IDLE)
            .map_or(0..0, |r| {
                r.to_fetch(end, block_bytes, (ahead, max_bytes), now)
            })
    }

    /// How long until reader `addr`'s startup is over, once per startup (None: it
    /// is not starting, or this was asked already): the caller looks again then, so a
    /// player that took its first bytes and waits still gets its blocks fetched ahead.
    pub fn startup_left(&self, addr: IpAddr, block_bytes: u64, now: Instant) -> Option<Duration> {
        let mut readers = self.readers.lock().ok()?;
        let r = readers.iter_mut().find(|r| r.addr == addr)?;
        if r.after_startup || !r.starting(block_bytes, now) {
            return None;
        }
        r.after_startup = true;
        Some((r.born.1 + STARTUP_MAX).saturating_duration_since(now))
    }

    /// The fetches ahead for reader `addr` stopped before block `at` (they were all
    /// made, or the file's in-flight bound was reached): the next call starts there.
    pub fn ahead_stopped(&self, addr: IpAddr, at: u64) {
        if let Ok(mut readers) = self.readers.lock() {
            if let Some(r) = readers.iter_mut().find(|r| r.addr == addr) {
                r.ahead_to = at;
            }
        }
    }

    /// When block `index` is needed: the earliest time any reader at or before it will
    /// reach it at its pace (None: no reader is before it).
    pub fn deadline(&self, index: u64, block_bytes: u64, now: Instant) -> Option<Instant> {
        let readers = self.readers.lock().ok()?;
        readers
            .iter()
            .filter(|r| r.pos <= index && now.saturating_duration_since(r.at) < READER_IDLE)
            .map(|r| {
                let secs = (index - r.pos) as f64 * block_bytes as f64 / r.pace(block_bytes as f64);
                r.at + Duration::from_secs_f64(secs.min(3600.0))
            })
            .min()
    }

    /// Claims one of the file's fetch-ahead places (false: all taken).
    pub fn claim(&self) -> bool {
        self.in_flight
            .fetch_update(Relaxed, Relaxed, |n| (n < AHEAD_IN_FLIGHT).then_some(n + 1))
            .is_ok()
    }

    /// Gives a fetch-ahead place back.
    pub fn release(&self) {
        let _ = self
            .in_flight
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BS: u64 = 256 * 1024;
    const AHEAD: (Duration, u64) = (Duration::from_secs(20), u64::MAX);

    #[test]
    fn blocks_ahead_of_a_reader_get_deadlines_at_its_pace() {
        let p = Playback::default();
        let t0 = Instant::now();
        let me: IpAddr = [10, 0, 0, 1].into();
        // A new reader at block 10: its startup comes first (nothing fetched ahead
        // for its first second or 2 MiB), once, to be looked at again after it.
        assert!(p.consumed((me, 10), (1000, BS), AHEAD, t0).is_empty());
        assert_eq!(p.startup_left(me, BS, t0), Some(STARTUP_MAX));
        assert_eq!(p.startup_left(me, BS, t0), None, "once");
        // Then 20 s at the default 1 MB/s, 76 blocks.
        let ahead = p.more(me, (1000, BS), AHEAD, t0 + STARTUP_MAX);
        assert_eq!(ahead, 10..86);
        p.ahead_stopped(me, 40);
        // Block 14 is four blocks ahead: needed in about 1 s.
        let d = p.deadline(14, BS, t0).unwrap() - t0;
        assert!((d.as_secs_f64() - 1.048576).abs() < 1e-3, "{d:?}");
        assert_eq!(p.deadline(9, BS, t0), None, "behind the reader");
        // Two seconds later it has read 16 blocks (2 MiB/s): the next fetches ahead
        // start where the last stopped and reach 20 s at that pace.
        let t = t0 + Duration::from_secs(2);
        let ahead = p.consumed((me, 26), (1000, BS), AHEAD, t);
        assert_eq!(ahead.start, 40);
        assert_eq!(ahead.end, 26 + 96, "capped at {AHEAD_MAX_BYTES} bytes");
        // At 2 MiB/s, eight blocks ahead is 1 s ahead.
        let d = p.deadline(34, BS, t).unwrap() - t;
        assert!((d.as_secs_f64() - 1.0).abs() < 1e-3, "{d:?}");
        // A seek starts afresh (with a startup of its own); the end of the file
        // bounds what is fetched ahead.
        assert!(p.consumed((me, 990), (1000, BS), AHEAD, t).is_empty());
        let ahead = p.consumed((me, 991), (1000, BS), AHEAD, t + STARTUP_MAX);
        assert_eq!(ahead, 991..1000);
    }

    #[test]
    fn a_reader_that_filled_its_buffer_is_paced_at_its_later_rate() {
        let p = Playback::default();
        let t0 = Instant::now();
        let me: IpAddr = [10, 0, 0, 1].into();
        // 120 blocks in the first 5 s (a player filling its buffer), then 4 a second.
        let mut pos = 0;
        for i in 0..=120u64 {
            p.consumed(
                (me, i),
                (10_000, BS),
                AHEAD,
                t0 + Duration::from_millis(i * 5000 / 120),
            );
            pos = i;
        }
        let mut t = t0 + Duration::from_secs(5);
        for _ in 0..(25 * 4) {
            t += Duration::from_millis(250);
            pos += 1;
            p.consumed((me, pos), (10_000, BS), AHEAD, t);
        }
        // Forty blocks ahead is ten seconds at 4 a second; over its whole life the
        // reader averaged 7.4 a second, which would have said 5.4 s.
        let d = p.deadline(pos + 40, BS, t).unwrap() - t;
        assert!((d.as_secs_f64() - 10.0).abs() < 0.5, "{d:?}");
    }

    #[test]
    fn the_nearest_reader_sets_the_deadline_and_readers_are_bounded() {
        let p = Playback::default();
        let t0 = Instant::now();
        p.consumed(([10, 0, 0, 1].into(), 100), (10_000, BS), AHEAD, t0);
        p.consumed(([10, 0, 0, 2].into(), 50), (10_000, BS), AHEAD, t0);
        let near = p.deadline(100, BS, t0).unwrap();
        assert_eq!(near, t0, "the first reader needs it now");
        for i in 0..(MAX_READERS as u8 + 4) {
            p.consumed(([10, 0, 1, i].into(), 5000), (10_000, BS), AHEAD, t0);
        }
        assert_eq!(p.readers.lock().unwrap().len(), MAX_READERS);
        // Readers idle too long are forgotten.
        let later = t0 + READER_IDLE + Duration::from_secs(1);
        assert_eq!(p.deadline(6000, BS, later), None);
        assert!((0..AHEAD_IN_FLIGHT).all(|_| p.claim()));
        assert!(!p.claim(), "bounded");
        p.release();
        assert!(p.claim());
    }
}
