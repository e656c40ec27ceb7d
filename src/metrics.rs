//! Counters and gauges. Each shard writes only its own [`ShardMetrics`] (relaxed
//! atomics on its own cache lines, so no contention); `/_p2pd/metrics` sums them on
//! demand and renders the Prometheus text format.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Indexing counters, for `/_p2pd/metrics`.
#[derive(Default, Debug)]
pub struct PublishStats {
    /// Indexes built by hashing a file.
    pub index_builds: AtomicU64,
    /// Indexes found current on disk and reused without hashing.
    pub index_reuses: AtomicU64,
}

/// A counter of the node: (name, help, the per-shard field it sums).
type CounterDef = (&'static str, &'static str, fn(&ShardMetrics) -> &AtomicU64);

/// One shard's counters. Padded so two shards never share a cache line.
#[derive(Default)]
#[repr(align(128))]
pub struct ShardMetrics {
    pub bytes_sent_spp: AtomicU64,
    pub bytes_sent_http: AtomicU64,
    pub requests_spp: AtomicU64,
    pub requests_http: AtomicU64,
    pub connections_open: AtomicI64,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    pub protocol_errors: AtomicU64,
    /// Panics contained at a connection (the connection was closed, the shard
    /// went on serving).
    pub panics: AtomicU64,
    /// Requests answered Busy because their connection had its most requests
    /// outstanding (SPP) or the shard its most block fetches in flight.
    pub requests_busy: AtomicU64,
    /// Connections closed because they held pinned block bytes without reading
    /// while the shard was over its pinned-bytes budget.
    pub connections_shed: AtomicU64,
    /// Gauge: block bytes held by this shard's connection writers (produced for a
    /// connection and not yet written to its socket).
    pub pinned_bytes: AtomicI64,
    pub digest_failures: AtomicU64,
    pub memory_cache_hits: AtomicU64,
    pub memory_cache_misses: AtomicU64,
    pub memory_cache_bytes: AtomicI64,
    pub disk_read_bytes: AtomicU64,
    pub router_forwarded: AtomicU64,
    /// Block productions (disk reads, upstream fetches) refused because the shard had
    /// `MAX_INFLIGHT_BLOCKS_PER_SHARD` in flight already.
    pub productions_refused: AtomicU64,
    /// Caches: blocks read from the cache disk and verified.
    pub disk_cache_hits: AtomicU64,
    /// Caches: blocks in neither the memory cache nor on disk.
    pub cache_misses: AtomicU64,
    /// Caches: blocks fetched from an upstream and verified.
    pub upstream_fetches: AtomicU64,
    pub upstream_bytes: AtomicU64,
    pub upstream_errors: AtomicU64,
    /// Caches: blocks on disk that failed their digest (dropped, fetched again).
    pub disk_cache_corrupt: AtomicU64,
    pub disk_cache_evictions: AtomicU64,
    pub disk_cache_write_bytes: AtomicU64,
    /// Caches: requests refused because the requester may not make this node fetch.
    pub recursive_refused: AtomicU64,
    /// Caches: verified blocks served but not stored, because the shard already had
    /// its most disk writes in flight (a disk slower than the network).
    pub disk_cache_write_skipped: AtomicU64,
    /// Caches: disk writes that failed (full or failing disk); the block is still served.
    pub disk_cache_write_errors: AtomicU64,
    /// Time senders waited under `--upload-rate`, in ms.
    pub upload_throttled_ms: AtomicU64,
    /// p2p mode: Have frames recorded, and Locate answers that named peers.
    pub have_reports: AtomicU64,
    pub locate_answers_with_peers: AtomicU64,
    /// p2p mode: PeerReports received, by problem, and the peers they removed.
    pub peer_reports_unreachable: AtomicU64,
    pub peer_reports_bad_data: AtomicU64,
    pub peers_removed: AtomicU64,
    /// Fetchers: PeerReports sent about peers found unreachable or bad.
    pub peer_reports_sent: AtomicU64,
    /// Fetchers: verified bytes from peers (other viewers' machines) and from servers
    /// (origins, mirrors, caches): the peer efficiency.
    pub peer_bytes: AtomicU64,
    pub server_bytes: AtomicU64,
    /// Caches: verified bytes fetched, by source address (at most
    /// [`MAX_SOURCES_COUNTED`] addresses; the rest under the unspecified address).
    /// Only the owning shard writes; the lock is uncontended but for a scrape.
    pub upstream_bytes_by_source: Mutex<HashMap<SocketAddr, u64>>,
    /// Caches (gauge): block bytes this shard holds on disk.
    pub disk_cache_bytes: AtomicI64,
    /// Caches (gauge): files whose metadata this shard holds.
    pub files_cached: AtomicI64,
}

/// Source addresses one shard counts bytes for, separately.
pub const MAX_SOURCES_COUNTED: usize = 256;

impl ShardMetrics {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    /// Counts `bytes` of verified blocks fetched from `source`.
    pub fn add_upstream_bytes_from(&self, source: SocketAddr, bytes: u64) {
        let Ok(mut m) = self.upstream_bytes_by_source.lock() else {
            return;
        };
        let key = if m.len() < MAX_SOURCES_COUNTED || m.contains_key(&source) {
            source
        } else {
            SocketAddr::from(([0, 0, 0, 0], 0))
        };
        *m.entry(key).or_default() += bytes;
    }
}

/// All shards' counters, indexed by shard.
#[derive(Clone)]
pub struct Metrics {
    pub shards: Arc<Vec<ShardMetrics>>,
}

impl Metrics {
    pub fn new(n: usize) -> Metrics {
        Metrics {
            shards: Arc::new((0..n).map(|_| ShardMetrics::default()).collect()),
        }
    }

    pub fn shard(&self, i: usize) -> &ShardMetrics {
        &self.shards[i]
    }

    fn sum(&self, f: impl Fn(&ShardMetrics) -> u64) -> u64 {
        self.shards.iter().map(f).sum()
    }

    fn sum_i(&self, f: impl Fn(&ShardMetrics) -> i64) -> i64 {
        self.shards.iter().map(f).sum()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, files_published: usize, publish: &PublishStats) -> String {
        let mut o = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, rows: &[(&str, u64)]| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in rows {
                let _ = writeln!(o, "{name}{labels} {v}");
            }
        };
        counter(
            "p2pd_bytes_sent_total",
            "Bytes of block data and bodies sent to downstream nodes and players.",
            &[
                (
                    "{proto=\"spp\"}",
                    self.sum(|s| s.bytes_sent_spp.load(Relaxed)),
                ),
                (
                    "{proto=\"http\"}",
                    self.sum(|s| s.bytes_sent_http.load(Relaxed)),
                ),
            ],
        );
        counter(
            "p2pd_requests_total",
            "Requests received (SPP frames that ask for something, HTTP requests).",
            &[
                (
                    "{proto=\"spp\"}",
                    self.sum(|s| s.requests_spp.load(Relaxed)),
                ),
                (
                    "{proto=\"http\"}",
                    self.sum(|s| s.requests_http.load(Relaxed)),
                ),
            ],
        );
        counter(
            "p2pd_connections_total",
            "Connections accepted.",
            &[("", self.sum(|s| s.connections_total.load(Relaxed)))],
        );
        counter(
            "p2pd_connections_refused_total",
            "Connections closed at once because the connection limit was reached.",
            &[("", self.sum(|s| s.connections_refused.load(Relaxed)))],
        );
        counter(
            "p2pd_protocol_errors_total",
            "Connections closed for breaking the protocol (bad frames, bad HTTP).",
            &[("", self.sum(|s| s.protocol_errors.load(Relaxed)))],
        );
        counter(
            "p2pd_panics_total",
            "Panics contained at a connection: the connection was closed, its shard went on serving.",
            &[("", self.sum(|s| s.panics.load(Relaxed)))],
        );
        counter(
            "p2pd_requests_busy_total",
            "Requests answered Busy: too many outstanding on their connection, or too many block fetches in flight.",
            &[("", self.sum(|s| s.requests_busy.load(Relaxed)))],
        );
        counter(
            "p2pd_connections_shed_total",
            "Connections closed for holding block bytes without reading while their shard was over its pinned-bytes budget.",
            &[("", self.sum(|s| s.connections_shed.load(Relaxed)))],
        );
        counter(
            "p2pd_digest_failures_total",
            "Blocks whose bytes did not match the origin's digest (never served).",
            &[("", self.sum(|s| s.digest_failures.load(Relaxed)))],
        );
        counter(
            "p2pd_memory_cache_hits_total",
            "Block reads answered from the memory cache.",
            &[("", self.sum(|s| s.memory_cache_hits.load(Relaxed)))],
        );
        counter(
            "p2pd_memory_cache_misses_total",
            "Block reads that went to disk.",
            &[("", self.sum(|s| s.memory_cache_misses.load(Relaxed)))],
        );
        counter(
            "p2pd_disk_read_bytes_total",
            "Bytes read from disk.",
            &[("", self.sum(|s| s.disk_read_bytes.load(Relaxed)))],
        );
        counter(
            "p2pd_upload_throttled_ms_total",
            "Milliseconds senders waited under --upload-rate.",
            &[("", self.sum(|s| s.upload_throttled_ms.load(Relaxed)))],
        );
        counter(
            "p2pd_have_reports_total",
            "p2p mode: Have reports recorded from peers.",
            &[("", self.sum(|s| s.have_reports.load(Relaxed)))],
        );
        counter(
            "p2pd_locate_answers_with_peers_total",
            "p2p mode: Locate answers that named peers.",
            &[("", self.sum(|s| s.locate_answers_with_peers.load(Relaxed)))],
        );
        counter(
            "p2pd_peer_reports_total",
            "p2p mode: PeerReports received from clients, by problem.",
            &[
                (
                    "{problem=\"unreachable\"}",
                    self.sum(|s| s.peer_reports_unreachable.load(Relaxed)),
                ),
                (
                    "{problem=\"bad_data\"}",
                    self.sum(|s| s.peer_reports_bad_data.load(Relaxed)),
                ),
            ],
        );
        counter(
            "p2pd_peers_removed_total",
            "p2p mode: peers removed from the registry after a PeerReport.",
            &[("", self.sum(|s| s.peers_removed.load(Relaxed)))],
        );
        counter(
            "p2pd_peer_reports_sent_total",
            "PeerReports sent about peers found unreachable or sending bad blocks.",
            &[("", self.sum(|s| s.peer_reports_sent.load(Relaxed)))],
        );
        counter(
            "p2pd_fetched_bytes_total",
            "Verified bytes fetched, by kind of source: peers (viewers' machines) or servers (origins, mirrors, caches).",
            &[
                ("{source=\"peer\"}", self.sum(|s| s.peer_bytes.load(Relaxed))),
                ("{source=\"server\"}", self.sum(|s| s.server_bytes.load(Relaxed))),
            ],
        );
        counter(
            "p2pd_router_forwarded_total",
            "Block requests forwarded to the owning shard.",
            &[("", self.sum(|s| s.router_forwarded.load(Relaxed)))],
        );
        counter(
            "p2pd_block_productions_refused_total",
            "Block reads and fetches refused (busy) because the shard had the most blocks in production already.",
            &[("", self.sum(|s| s.productions_refused.load(Relaxed)))],
        );
        let cache_counters: [CounterDef; 11] = [
            (
                "p2pd_disk_cache_hits_total",
                "Caches: blocks read from the cache disk and verified.",
                |s| &s.disk_cache_hits,
            ),
            (
                "p2pd_cache_misses_total",
                "Caches: blocks in neither the memory cache nor on disk.",
                |s| &s.cache_misses,
            ),
            (
                "p2pd_upstream_fetches_total",
                "Caches: blocks fetched from an upstream node and verified.",
                |s| &s.upstream_fetches,
            ),
            (
                "p2pd_upstream_bytes_total",
                "Caches: bytes of verified blocks fetched from upstream nodes.",
                |s| &s.upstream_bytes,
            ),
            (
                "p2pd_upstream_errors_total",
                "Caches: failed upstream requests (connect, timeout, error answer, bad block).",
                |s| &s.upstream_errors,
            ),
            (
                "p2pd_disk_cache_corrupt_total",
                "Caches: blocks on the cache disk that failed their digest (dropped, never served).",
                |s| &s.disk_cache_corrupt,
            ),
            (
                "p2pd_disk_cache_evictions_total",
                "Caches: blocks evicted from the disk cache to stay within -C.",
                |s| &s.disk_cache_evictions,
            ),
            (
                "p2pd_disk_cache_write_bytes_total",
                "Caches: block bytes written to the disk cache.",
                |s| &s.disk_cache_write_bytes,
            ),
            (
                "p2pd_recursive_refused_total",
                "Caches: requests refused because the requester may not make this node fetch.",
                |s| &s.recursive_refused,
            ),
            (
                "p2pd_disk_cache_write_skipped_total",
                "Caches: verified blocks served but not stored because the disk writes were behind.",
                |s| &s.disk_cache_write_skipped,
            ),
            (
                "p2pd_disk_cache_write_errors_total",
                "Caches: disk writes that failed (full or failing disk); the blocks were still served.",
                |s| &s.disk_cache_write_errors,
            ),
        ];
        for (name, help, field) in cache_counters {
            counter(name, help, &[("", self.sum(|s| field(s).load(Relaxed)))]);
        }
        counter(
            "p2pd_index_builds_total",
            "Digest indexes built by hashing a published file.",
            &[("", publish.index_builds.load(Relaxed))],
        );
        counter(
            "p2pd_index_reuses_total",
            "Digest indexes found current on disk and reused without hashing.",
            &[("", publish.index_reuses.load(Relaxed))],
        );
        let _ = writeln!(
            o,
            "# HELP p2pd_connections_open Connections open now.\n# TYPE p2pd_connections_open gauge\np2pd_connections_open {}",
            self.sum_i(|s| s.connections_open.load(Relaxed))
        );
        let _ = writeln!(
            o,
            "# HELP p2pd_memory_cache_bytes Bytes held in the memory cache.\n# TYPE p2pd_memory_cache_bytes gauge\np2pd_memory_cache_bytes {}",
            self.sum_i(|s| s.memory_cache_bytes.load(Relaxed))
        );
        let _ = writeln!(
            o,
            "# HELP p2pd_pinned_bytes Block bytes produced for connections and not yet written to their sockets.\n# TYPE p2pd_pinned_bytes gauge\np2pd_pinned_bytes {}",
            self.sum_i(|s| s.pinned_bytes.load(Relaxed))
        );
        let _ = writeln!(
            o,
            "# HELP p2pd_disk_cache_bytes Caches: block bytes held on disk.\n# TYPE p2pd_disk_cache_bytes gauge\np2pd_disk_cache_bytes {}",
            self.sum_i(|s| s.disk_cache_bytes.load(Relaxed))
        );
        let _ = writeln!(
            o,
            "# HELP p2pd_files_cached Caches: files whose info is held.\n# TYPE p2pd_files_cached gauge\np2pd_files_cached {}",
            self.sum_i(|s| s.files_cached.load(Relaxed))
        );
        let _ = writeln!(
            o,
            "# HELP p2pd_files_published Files in the published catalog.\n# TYPE p2pd_files_published gauge\np2pd_files_published {files_published}"
        );
        let _ = writeln!(o, "# HELP p2pd_shards Executors (one per core).\n# TYPE p2pd_shards gauge\np2pd_shards {}", self.shards.len());
        let mut by_source: std::collections::BTreeMap<SocketAddr, u64> = Default::default();
        for s in self.shards.iter() {
            if let Ok(m) = s.upstream_bytes_by_source.lock() {
                for (a, b) in m.iter() {
                    *by_source.entry(*a).or_default() += b;
                }
            }
        }
        let _ = writeln!(
            o,
            "# HELP p2pd_upstream_bytes_by_source_total Caches: verified bytes fetched from each source.\n# TYPE p2pd_upstream_bytes_by_source_total counter"
        );
        for (a, b) in by_source {
            let _ = writeln!(
                o,
                "p2pd_upstream_bytes_by_source_total{{source=\"{a}\"}} {b}"
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_over_shards() {
        let m = Metrics::new(3);
        ShardMetrics::add(&m.shard(0).bytes_sent_spp, 10);
        ShardMetrics::add(&m.shard(2).bytes_sent_spp, 5);
        m.shard(1).connections_open.fetch_add(2, Relaxed);
        let t = m.render(7, &Default::default());
        assert!(
            t.contains("p2pd_bytes_sent_total{proto=\"spp\"} 15\n"),
            "{t}"
        );
        assert!(t.contains("p2pd_connections_open 2\n"));
        assert!(t.contains("p2pd_files_published 7\n"));
        assert!(t.contains("p2pd_digest_failures_total 0\n"));
    }
}
