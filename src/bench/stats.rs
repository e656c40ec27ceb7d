//! What `p2pd-bench` counts: per-executor tallies and HdrHistograms, live counters for
//! the progress line, and the final report (text and JSON) built from their merge.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds up to this (an hour), 3 significant digits.
const MAX_RECORDED_US: u64 = 3_600_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_RECORDED_US, 3).expect("constant bounds are valid")
}

/// One executor's tallies; merged into a [`Report`] at the end.
pub struct Stats {
    pub bytes: u64,
    pub bytes_by_source: BTreeMap<String, u64>,
    pub started: u64,
    pub completed: u64,
    pub failed: u64,
    pub dropped: u64,
    pub active_at_end: u64,
    pub startup_us: Histogram<u64>,
    pub latency_us: Histogram<u64>,
    pub seek_wait_us: Histogram<u64>,
    pub seeks: u64,
    pub stalls: u64,
    pub stall_time_s: f64,
    pub play_time_s: f64,
    pub viewers_with_stalls: u64,
    pub errors: BTreeMap<String, u64>,
    pub digests_checked: u64,
    pub digests_failed: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            bytes: 0,
            bytes_by_source: BTreeMap::new(),
            started: 0,
            completed: 0,
            failed: 0,
            dropped: 0,
            active_at_end: 0,
            startup_us: histogram(),
            latency_us: histogram(),
            seek_wait_us: histogram(),
            seeks: 0,
            stalls: 0,
            stall_time_s: 0.0,
            play_time_s: 0.0,
            viewers_with_stalls: 0,
            errors: BTreeMap::new(),
            digests_checked: 0,
            digests_failed: 0,
        }
    }
}

/// Records `secs` into a microsecond histogram, clamped to its range.
pub fn record_secs(h: &mut Histogram<u64>, secs: f64) {
    let us = (secs * 1e6).round().clamp(1.0, MAX_RECORDED_US as f64) as u64;
    // Cannot fail: the value is clamped to the histogram's bounds.
    let _ = h.record(us);
}

impl Stats {
    pub fn merge(&mut self, o: Stats) {
        self.bytes += o.bytes;
        for (k, v) in o.bytes_by_source {
            *self.bytes_by_source.entry(k).or_default() += v;
        }
        self.started += o.started;
        self.completed += o.completed;
        self.failed += o.failed;
        self.dropped += o.dropped;
        self.active_at_end += o.active_at_end;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.startup_us.add(&o.startup_us);
        let _ = self.latency_us.add(&o.latency_us);
        let _ = self.seek_wait_us.add(&o.seek_wait_us);
        self.seeks += o.seeks;
        self.stalls += o.stalls;
        self.stall_time_s += o.stall_time_s;
        self.play_time_s += o.play_time_s;
        self.viewers_with_stalls += o.viewers_with_stalls;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.digests_checked += o.digests_checked;
        self.digests_failed += o.digests_failed;
    }

    pub fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_default() += 1;
    }

    pub fn add_bytes(&mut self, source: &str, n: u64) {
        self.bytes += n;
        match self.bytes_by_source.get_mut(source) {
            Some(v) => *v += n,
            None => {
                self.bytes_by_source.insert(source.to_string(), n);
            }
        }
    }
}

/// Counters every executor bumps as things happen, read once a second for the progress
/// line and sampled for concurrency.
#[derive(Default)]
pub struct Live {
    pub bytes: AtomicU64,
    pub active: AtomicU64,
    pub started: AtomicU64,
    pub failed: AtomicU64,
    pub stalls: AtomicU64,
    pub errors: AtomicU64,
    /// With `--once`: the next title to fetch, shared by every connection.
    pub next_title: AtomicU64,
}

impl Live {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Serialize, Clone, Debug, Default)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Viewers {
    pub started: u64,
    pub completed: u64,
    pub failed: u64,
    pub dropped: u64,
    pub active_at_end: u64,
    pub concurrent_mean: f64,
    pub concurrent_peak: u64,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Stalls {
    pub count: u64,
    pub stall_time_s: f64,
    /// Stall time over the time viewers spent after startup (playing or stalled).
    pub stall_ratio: f64,
    pub viewers_with_stalls: u64,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Digests {
    pub checked: u64,
    pub failed: u64,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Cpu {
    pub user_s: f64,
    pub system_s: f64,
    /// (user + system) / wall time: how many cores the bench itself kept busy.
    pub cores_used: f64,
}

/// The run's result, as printed and as written with `--json`.
#[derive(Serialize, Clone, Debug, Default)]
pub struct Report {
    pub mode: String,
    pub targets: Vec<String>,
    pub seed: u64,
    pub duration_s: f64,
    pub bytes: u64,
    pub bytes_per_s: f64,
    pub gbit_per_s: f64,
    pub viewers: Viewers,
    pub startup_ms: Percentiles,
    pub latency_ms: Percentiles,
    pub seek_wait_ms: Percentiles,
    pub seeks: u64,
    pub stalls: Stalls,
    pub errors: BTreeMap<String, u64>,
    pub errors_total: u64,
    pub digests: Digests,
    pub bytes_by_source: BTreeMap<String, u64>,
    pub cpu: Cpu,
}

/// What the run measured besides the tallies.
pub struct RunFacts {
    pub mode: &'static str,
    pub targets: Vec<String>,
    pub seed: u64,
    pub wall_s: f64,
    pub concurrent_mean: f64,
    pub concurrent_peak: u64,
    pub cpu_user_s: f64,
    pub cpu_system_s: f64,
}

impl Report {
    pub fn build(s: &Stats, f: RunFacts) -> Report {
        let wall = f.wall_s.max(1e-9);
        let watched = s.play_time_s + s.stall_time_s;
        Report {
            mode: f.mode.to_string(),
            targets: f.targets,
            seed: f.seed,
            duration_s: f.wall_s,
            bytes: s.bytes,
            bytes_per_s: s.bytes as f64 / wall,
            gbit_per_s: s.bytes as f64 * 8.0 / wall / 1e9,
            viewers: Viewers {
                started: s.started,
                completed: s.completed,
                failed: s.failed,
                dropped: s.dropped,
                active_at_end: s.active_at_end,
                concurrent_mean: f.concurrent_mean,
                concurrent_peak: f.concurrent_peak,
            },
            startup_ms: Percentiles::of(&s.startup_us),
            latency_ms: Percentiles::of(&s.latency_us),
            seek_wait_ms: Percentiles::of(&s.seek_wait_us),
            seeks: s.seeks,
            stalls: Stalls {
                count: s.stalls,
                stall_time_s: s.stall_time_s,
                stall_ratio: if watched > 0.0 {
                    s.stall_time_s / watched
                } else {
                    0.0
                },
                viewers_with_stalls: s.viewers_with_stalls,
            },
            errors: s.errors.clone(),
            errors_total: s.errors.values().sum(),
            digests: Digests {
                checked: s.digests_checked,
                failed: s.digests_failed,
            },
            bytes_by_source: s.bytes_by_source.clone(),
            cpu: Cpu {
                user_s: f.cpu_user_s,
                system_s: f.cpu_system_s,
                cores_used: (f.cpu_user_s + f.cpu_system_s) / wall,
            },
        }
    }

    /// The human-readable report.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let pct = |p: &Percentiles| {
            if p.count == 0 {
                "none".to_string()
            } else {
                format!(
                    "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms  (n={})",
                    p.p50, p.p90, p.p99, p.p999, p.max, p.count
                )
            }
        };
        let _ = writeln!(
            o,
            "p2pd-bench {} run, {:.1} s, seed {}",
            self.mode, self.duration_s, self.seed
        );
        let _ = writeln!(
            o,
            "  throughput      {:.1} MB/s = {:.3} Gbit/s ({} bytes)",
            self.bytes_per_s / 1e6,
            self.gbit_per_s,
            self.bytes
        );
        let v = &self.viewers;
        let noun = if self.mode == "vod" {
            "viewers"
        } else {
            "transfers"
        };
        let _ = writeln!(
            o,
            "  {noun:<15} started {}  completed {}  failed {}  dropped {}  active at end {}",
            v.started, v.completed, v.failed, v.dropped, v.active_at_end
        );
        let _ = writeln!(
            o,
            "  concurrent      mean {:.1}  peak {}",
            v.concurrent_mean, v.concurrent_peak
        );
        if self.mode == "vod" {
            let _ = writeln!(o, "  startup         {}", pct(&self.startup_ms));
        }
        let _ = writeln!(o, "  request latency {}", pct(&self.latency_ms));
        if self.seeks > 0 {
            let _ = writeln!(
                o,
                "  seeks           {}  wait {}",
                self.seeks,
                pct(&self.seek_wait_ms)
            );
        }
        if self.mode == "vod" {
            let _ = writeln!(
                o,
                "  stalls          {}  ({:.2} s stalled, ratio {:.4}, {} viewers stalled)",
                self.stalls.count,
                self.stalls.stall_time_s,
                self.stalls.stall_ratio,
                self.stalls.viewers_with_stalls
            );
        }
        let errs = if self.errors.is_empty() {
            "none".to_string()
        } else {
            self.errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(o, "  errors          {} ({errs})", self.errors_total);
        let _ = writeln!(
            o,
            "  digests         {} checked, {} failed",
            self.digests.checked, self.digests.failed
        );
        for (src, b) in &self.bytes_by_source {
            let _ = writeln!(o, "  from {src:<21} {b} bytes");
        }
        let _ = writeln!(
            o,
            "  bench cpu       user {:.2} s  system {:.2} s  ({:.2} cores)",
            self.cpu.user_s, self.cpu.system_s, self.cpu.cores_used
        );
        o
    }
}

/// CPU time used by this process so far: (user, system) seconds.
pub fn cpu_times() -> (f64, f64) {
    // SAFETY: getrusage fills a zeroed struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage struct.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return (0.0, 0.0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_stats_report_sums_and_percentiles() {
        let mut a = Stats::default();
        a.add_bytes("127.0.0.1:1", 1000);
        a.started = 2;
        a.completed = 1;
        record_secs(&mut a.latency_us, 0.010);
        a.error("connect");
        a.play_time_s = 9.0;
        a.stall_time_s = 1.0;
        let mut b = Stats::default();
        b.add_bytes("127.0.0.1:1", 500);
        b.add_bytes("127.0.0.2:1", 7);
        b.started = 1;
        record_secs(&mut b.latency_us, 0.020);
        b.error("connect");
        b.error("timeout");
        a.merge(b);
        let r = Report::build(
            &a,
            RunFacts {
                mode: "vod",
                targets: vec![],
                seed: 1,
                wall_s: 2.0,
                concurrent_mean: 1.5,
                concurrent_peak: 2,
                cpu_user_s: 0.5,
                cpu_system_s: 0.5,
            },
        );
        assert_eq!(r.bytes, 1507);
        assert_eq!(r.bytes_by_source["127.0.0.1:1"], 1500);
        assert_eq!(r.viewers.started, 3);
        assert_eq!(r.errors["connect"], 2);
        assert_eq!(r.errors_total, 3);
        assert_eq!(r.latency_ms.count, 2);
        assert!((r.latency_ms.p50 - 10.0).abs() < 0.05, "{:?}", r.latency_ms);
        assert!((r.latency_ms.max - 20.0).abs() < 0.05, "{:?}", r.latency_ms);
        assert!((r.stalls.stall_ratio - 0.1).abs() < 1e-9);
        assert!((r.cpu.cores_used - 0.5).abs() < 1e-9);
        assert!((r.bytes_per_s - 753.5).abs() < 1e-9);
        let json = serde_json::to_value(&r).expect("serializes");
        assert_eq!(json["viewers"]["started"], 3);
        assert_eq!(json["latency_ms"]["count"], 2);
        assert!(r
            .text()
            .contains("errors          3 (connect 2, timeout 1)"));
    }
}
