//! The viewer model of `p2pd-bench`, without I/O or a clock (time is passed in as
//! seconds since the viewer arrived): the playout buffer that decides when playback
//! starts and when it stalls, the title picker (uniform or Zipf) and the arrival
//! schedule (fixed interval or Poisson).

use rand::Rng;
use rand_distr::{Distribution, Exp, Zipf};

/// What the playout buffer is doing.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// Waiting for the first `startup` seconds of media (at arrival or after a seek).
    Starting {
        since_s: f64,
        after_seek: bool,
    },
    Playing,
    /// The buffer ran dry at `since_s`; playback resumes once `startup` seconds are
    /// buffered again.
    Stalled {
        since_s: f64,
    },
    /// Playback reached the end of the title.
    Ended,
}

/// Something a caller records when it happens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PlayoutEvent {
    /// Playback started for the first time, `startup_s` after arrival.
    Started { startup_s: f64 },
    /// Playback resumed after a seek, `wait_s` after the seek.
    Resumed { wait_s: f64 },
}

/// A player's buffer: bytes arrive in order from `downloaded_to`, playback consumes
/// them at the stream's byte rate once enough is buffered. Stalls are found exactly,
/// whenever the caller next looks (the moment the buffer ran dry is computed, not
/// sampled), so a server that sends nothing at all still produces a stall.
#[derive(Clone, Debug)]
pub struct Playout {
    bytes_per_s: f64,
    startup_s: f64,
    size_bytes: u64,
    phase: Phase,
    /// Byte offset playback has reached.
    play_pos: f64,
    /// Bytes received contiguously up to here.
    downloaded_to: u64,
    last_s: f64,
    pub stalls: u64,
    pub stall_time_s: f64,
    pub play_time_s: f64,
}

impl Playout {
    pub fn new(bitrate_bps: u64, startup_s: f64, size_bytes: u64, now_s: f64) -> Playout {
        Playout {
            bytes_per_s: (bitrate_bps as f64 / 8.0).max(1.0),
            startup_s,
            size_bytes,
            phase: Phase::Starting {
                since_s: now_s,
                after_seek: false,
            },
            play_pos: 0.0,
            downloaded_to: 0,
            last_s: now_s,
            stalls: 0,
            stall_time_s: 0.0,
            play_time_s: 0.0,
        }
    }

    /// Brings playback up to `now_s`: plays what is buffered and, if the buffer runs dry
    /// before `now_s`, records a stall from that exact moment.
    pub fn advance(&mut self, now_s: f64) {
        let now_s = now_s.max(self.last_s);
        match self.phase {
            Phase::Playing => {
                let dt = now_s - self.last_s;
                let avail_s = (self.downloaded_to as f64 - self.play_pos) / self.bytes_per_s;
                if avail_s >= dt {
                    self.play_pos += dt * self.bytes_per_s;
                    self.play_time_s += dt;
                } else {
                    let dry_at = self.last_s + avail_s.max(0.0);
                    self.play_pos = self.downloaded_to as f64;
                    self.play_time_s += avail_s.max(0.0);
                    if self.downloaded_to >= self.size_bytes {
                        self.phase = Phase::Ended;
                    } else {
                        self.stalls += 1;
                        self.stall_time_s += now_s - dry_at;
                        self.phase = Phase::Stalled { since_s: dry_at };
                    }
                }
            }
            Phase::Stalled { .. } => self.stall_time_s += now_s - self.last_s,
            Phase::Starting { .. } | Phase::Ended => {}
        }
        self.last_s = now_s;
    }

    /// `n` more bytes arrived at `now_s`.
    pub fn on_data(&mut self, now_s: f64, n: u64) -> Option<PlayoutEvent> {
        self.advance(now_s);
        self.downloaded_to = (self.downloaded_to + n).min(self.size_bytes);
        let enough = self.buffered_s() >= self.startup_s || self.downloaded_to >= self.size_bytes;
        match self.phase {
            Phase::Starting {
                since_s,
                after_seek,
            } if enough => {
                self.phase = Phase::Playing;
                Some(if after_seek {
                    PlayoutEvent::Resumed {
                        wait_s: now_s - since_s,
                    }
                } else {
                    PlayoutEvent::Started {
                        startup_s: now_s - since_s,
                    }
                })
            }
            Phase::Stalled { .. } if enough => {
                self.phase = Phase::Playing;
                None
            }
            _ => None,
        }
    }

    /// Jumps to byte `to` at `now_s`: what was buffered is dropped and playback waits
    /// for the startup amount again (a seek wait, not a stall).
    pub fn seek(&mut self, now_s: f64, to: u64) {
        self.advance(now_s);
        let to = to.min(self.size_bytes);
        self.play_pos = to as f64;
        self.downloaded_to = to;
        self.phase = Phase::Starting {
            since_s: now_s,
            after_seek: true,
        };
    }

    /// Seconds of media buffered ahead of playback.
    pub fn buffered_s(&self) -> f64 {
        (self.downloaded_to as f64 - self.play_pos).max(0.0) / self.bytes_per_s
    }

    /// The byte offset the next request should start at.
    pub fn downloaded_to(&self) -> u64 {
        self.downloaded_to
    }

    /// The byte offset playback has reached.
    pub fn play_pos_bytes(&self) -> u64 {
        self.play_pos as u64
    }

    /// Bytes a media-time span covers at this stream's rate.
    pub fn bytes_for(&self, secs: f64) -> u64 {
        (secs * self.bytes_per_s) as u64
    }

    /// Seconds of playback until only `keep_s` seconds remain buffered (0 when there
    /// is already less, or when playback is not running).
    pub fn secs_until_buffer_below(&self, keep_s: f64) -> f64 {
        match self.phase {
            Phase::Playing => (self.buffered_s() - keep_s).max(0.0),
            _ => 0.0,
        }
    }

    pub fn started(&self) -> bool {
        !matches!(
            self.phase,
            Phase::Starting {
                after_seek: false,
                ..
            }
        )
    }

    pub fn ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    pub fn stalled(&self) -> bool {
        matches!(self.phase, Phase::Stalled { .. })
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
}

/// How viewers choose a title.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Popularity {
    Uniform,
    /// Zipf with exponent `s`: title `k` (1-based) is chosen with weight `1/k^s`.
    Zipf(f64),
}

impl Popularity {
    pub fn parse(s: &str) -> Result<Popularity, String> {
        match s {
            "uniform" => Ok(Popularity::Uniform),
            "zipf" => Ok(Popularity::Zipf(1.0)),
            _ => match s.strip_prefix("zipf:") {
                Some(e) => match e.parse::<f64>() {
                    Ok(x) if x.is_finite() && x >= 0.0 => Ok(Popularity::Zipf(x)),
                    _ => Err(format!("'{e}' is not a Zipf exponent (a number >= 0)")),
                },
                None => Err(format!("'{s}' is neither uniform nor zipf[:S]")),
            },
        }
    }
}

/// Picks title indexes in `0..n` by a [`Popularity`].
pub struct TitlePicker {
    n: usize,
    zipf: Option<Zipf<f64>>,
}

impl TitlePicker {
    pub fn new(n: usize, p: Popularity) -> TitlePicker {
        let zipf = match p {
            Popularity::Zipf(s) if n > 1 => Zipf::new(n as f64, s).ok(),
            _ => None,
        };
        TitlePicker { n: n.max(1), zipf }
    }

    pub fn pick<R: Rng>(&self, rng: &mut R) -> usize {
        match &self.zipf {
            // Zipf yields 1..=n as a float; rank 1 is the most popular title.
            Some(z) => ((z.sample(rng) as usize).max(1) - 1).min(self.n - 1),
            None => rng.random_range(0..self.n),
        }
    }
}

/// When viewers arrive: fixed gaps of `1/rate`, or exponential gaps with that mean
/// (a Poisson process). Open loop: the schedule never waits for the server.
pub struct Arrivals {
    gap_s: f64,
    exp: Option<Exp<f64>>,
    next_s: f64,
}

impl Arrivals {
    /// `rate` arrivals per second starting at `offset_s` (executors interleave their
    /// schedules with offsets so that together they keep the overall rate).
    pub fn new(rate: f64, poisson: bool, offset_s: f64) -> Arrivals {
        let rate = rate.max(1e-9);
        Arrivals {
            gap_s: 1.0 / rate,
            exp: if poisson { Exp::new(rate).ok() } else { None },
            next_s: offset_s,
        }
    }

    /// The time of the next arrival, advancing the schedule.
    pub fn next<R: Rng>(&mut self, rng: &mut R) -> f64 {
        let t = self.next_s;
        self.next_s += match &self.exp {
            Some(e) => e.sample(rng),
            None => self.gap_s,
        };
        t
    }
}

/// Exponentially distributed gap with the given mean (seconds), for seeks.
pub fn exp_gap<R: Rng>(rng: &mut R, mean_s: f64) -> f64 {
    match Exp::new(1.0 / mean_s.max(1e-9)) {
        Ok(e) => e.sample(rng),
        Err(_) => mean_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    // 8 Mbit/s = 1 MB/s keeps the arithmetic readable.
    const BPS: u64 = 8_000_000;
    const MB: u64 = 1_000_000;

    #[test]
    fn starts_once_the_startup_amount_is_buffered() {
        let mut p = Playout::new(BPS, 2.0, 100 * MB, 0.0);
        assert_eq!(p.on_data(0.5, MB), None);
        assert!(!p.started());
        assert_eq!(
            p.on_data(1.0, MB),
            Some(PlayoutEvent::Started { startup_s: 1.0 })
        );
        assert!(p.started());
        p.advance(2.0);
        assert_eq!(p.stalls, 0);
        assert!((p.play_time_s - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_buffer_that_runs_dry_is_a_stall_from_that_moment() {
        let mut p = Playout::new(BPS, 1.0, 100 * MB, 0.0);
        p.on_data(0.0, 2 * MB); // starts at 0 with 2 s buffered
                                // Nothing arrives for 5 s: dry at 2 s, so 3 s of stall by t = 5.
        p.advance(5.0);
        assert_eq!(p.stalls, 1);
        assert!(p.stalled());
        assert!((p.stall_time_s - 3.0).abs() < 1e-9);
        // Data trickles in; the stall continues until 1 s is buffered again.
        p.on_data(6.0, MB / 2);
        assert!(p.stalled());
        p.on_data(7.0, MB / 2);
        assert!(!p.stalled());
        assert_eq!(p.stalls, 1);
        assert!((p.stall_time_s - 5.0).abs() < 1e-9);
        assert!((p.play_time_s - 2.0).abs() < 1e-9);
    }

    #[test]
    fn a_fast_enough_stream_never_stalls() {
        let mut p = Playout::new(BPS, 2.0, 50 * MB, 0.0);
        let mut t = 0.0;
        for _ in 0..50 {
            t += 0.5; // 1 MB every half second: twice the playback rate
            p.on_data(t, MB);
        }
        p.advance(200.0);
        assert_eq!(p.stalls, 0);
        assert!(p.ended());
        assert!((p.play_time_s - 50.0).abs() < 1e-6);
    }

    #[test]
    fn the_end_of_the_title_is_not_a_stall() {
        let mut p = Playout::new(BPS, 5.0, 3 * MB, 0.0);
        // A title shorter than the startup buffer starts once it is all there.
        assert_eq!(
            p.on_data(0.25, 3 * MB),
            Some(PlayoutEvent::Started { startup_s: 0.25 })
        );
        p.advance(10.0);
        assert!(p.ended());
        assert_eq!(p.stalls, 0);
    }

    #[test]
    fn a_seek_waits_for_the_buffer_without_counting_a_stall() {
        let mut p = Playout::new(BPS, 1.0, 100 * MB, 0.0);
        p.on_data(0.0, 10 * MB);
        p.seek(3.0, 50 * MB);
        assert_eq!(p.downloaded_to(), 50 * MB);
        p.advance(4.0);
        assert_eq!(p.stalls, 0);
        assert_eq!(
            p.on_data(4.5, MB),
            Some(PlayoutEvent::Resumed { wait_s: 1.5 })
        );
        assert!(p.started());
    }

    #[test]
    fn pacing_says_how_long_until_there_is_room() {
        let mut p = Playout::new(BPS, 1.0, 100 * MB, 0.0);
        p.on_data(0.0, 10 * MB);
        assert!((p.secs_until_buffer_below(4.0) - 6.0).abs() < 1e-9);
        p.advance(3.0);
        assert!((p.secs_until_buffer_below(4.0) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn popularity_parses_and_zipf_prefers_the_first_titles() {
        assert_eq!(Popularity::parse("uniform"), Ok(Popularity::Uniform));
        assert_eq!(Popularity::parse("zipf"), Ok(Popularity::Zipf(1.0)));
        assert_eq!(Popularity::parse("zipf:0.8"), Ok(Popularity::Zipf(0.8)));
        assert!(Popularity::parse("zipf:-1").is_err());
        assert!(Popularity::parse("pareto").is_err());
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let z = TitlePicker::new(10, Popularity::Zipf(1.0));
        let mut counts = [0u32; 10];
        for _ in 0..20_000 {
            counts[z.pick(&mut rng)] += 1;
        }
        // Weight 1 vs 1/10: the first title is chosen several times as often.
        assert!(counts[0] > 5 * counts[9], "{counts:?}");
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
        let u = TitlePicker::new(4, Popularity::Uniform);
        let mut counts = [0u32; 4];
        for _ in 0..8_000 {
            counts[u.pick(&mut rng)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (1700..2300).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(TitlePicker::new(1, Popularity::Zipf(1.0)).pick(&mut rng), 0);
    }

    #[test]
    fn arrivals_keep_their_rate() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut fixed = Arrivals::new(4.0, false, 0.1);
        assert_eq!(fixed.next(&mut rng), 0.1);
        assert!((fixed.next(&mut rng) - 0.35).abs() < 1e-12);
        let mut poisson = Arrivals::new(100.0, true, 0.0);
        let mut last = 0.0;
        for _ in 0..10_000 {
            last = poisson.next(&mut rng);
        }
        // 10 000 arrivals at 100/s take about 100 s.
        assert!((90.0..110.0).contains(&last), "{last}");
    }
}
