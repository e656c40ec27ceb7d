//! A token bucket for `--upload-rate` (pure: the time is passed in). Each shard has its
//! own with its share of the node's rate; a sender takes the bytes it is about to send
//! and waits for as long as the bucket says. Taking never fails: a bucket in debt makes
//! later senders wait longer, so bytes leave in the order they were taken and the long
//! run average never exceeds the rate.

use std::time::{Duration, Instant};

/// How much may be sent at once after a quiet spell, as time at the full rate.
pub const BURST: Duration = Duration::from_millis(50);
/// The smallest burst in bytes, so one small block never waits.
pub const MIN_BURST_BYTES: f64 = 16.0 * 1024.0;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_bytes_per_s: f64,
    burst_bytes: f64,
    /// Bytes that may go now; negative: owed.
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate_bytes_per_s: u64, now: Instant) -> TokenBucket {
        let rate = rate_bytes_per_s.max(1) as f64;
        let burst = (rate * BURST.as_secs_f64()).max(MIN_BURST_BYTES);
        TokenBucket {
            rate_bytes_per_s: rate,
            burst_bytes: burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes `bytes` and returns how long the caller must wait before sending them.
    pub fn take(&mut self, bytes: u64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate_bytes_per_s).min(self.burst_bytes);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate_bytes_per_s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_then_the_rate_holds() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1_000_000, t0); // burst 50 kB
        assert_eq!(b.take(50_000, t0), Duration::ZERO);
        // 100 kB more at once: owed 100 kB at 1 MB/s.
        assert_eq!(b.take(100_000, t0), Duration::from_millis(100));
        // A later taker waits behind it.
        assert_eq!(b.take(10_000, t0), Duration::from_millis(110));
        // After the debt is paid and a quiet second, only the burst comes back.
        let t1 = t0 + Duration::from_millis(1110);
        assert_eq!(b.take(50_000, t1), Duration::ZERO);
        assert!(b.take(1, t1) > Duration::ZERO);
    }

    #[test]
    fn long_run_average_is_the_rate() {
        let t0 = Instant::now();
        let rate = 4 << 20;
        let mut b = TokenBucket::new(rate, t0);
        let mut now = t0;
        let block = 256 * 1024;
        for _ in 0..100 {
            now += b.take(block, now);
        }
        let secs = (now - t0).as_secs_f64();
        let expected = (100 * block) as f64 / rate as f64;
        assert!(
            (secs - expected).abs() < 0.06,
            "{secs} s for {expected} s of data"
        );
    }

    #[test]
    fn small_rates_still_let_one_small_block_through() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(16 * 1024, t0);
        assert_eq!(b.take(16 * 1024, t0), Duration::ZERO);
        assert_eq!(b.take(16 * 1024, t0), Duration::from_secs(1));
    }
}
