//! Network-aware fetching with real processes: several origins with identical content
//! listing each other with `-l` (scenario 2), one of them slow (`--upload-rate`),
//! killed halfway, or serving corrupted blocks; `p2pd get` picks the fast ones, fails
//! over without a gap, and never writes a byte that failed its digest.
//!
//! Origins publish with 16 KiB blocks and listen on port 1111 of fixed addresses (they
//! name each other before they start): each test has a /24 of its own.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::*;

const BS: usize = 16 * 1024;
const SPP_SENT: &str = "p2pd_bytes_sent_total{proto=\"spp\"}";

/// Three origins on `net`.1..=3, port 1111, each publishing `dir`'s copy with the other
/// two as `-l` mirrors; `extra[i]` goes to origin i.
fn three_origins(net: Subnet, dirs: [&Path; 3], idx: [&Path; 3], extra: [&[&str]; 3]) -> Vec<Node> {
    let addrs: Vec<SocketAddr> = (1..=3).map(|d| SocketAddr::new(net.ip(d), 1111)).collect();
    (0..3)
        .map(|i| {
            let mirrors: Vec<String> = (0..3)
                .filter(|&j| j != i)
                .flat_map(|j| ["-l".to_string(), addrs[j].to_string()])
                .collect();
            let mut args: Vec<&str> = mirrors.iter().map(|s| s.as_str()).collect();
            args.extend_from_slice(extra[i]);
            start_origin_on(addrs[i].ip(), 1111, dirs[i], idx[i], &args)
        })
        .collect()
}

/// Three origins publishing identical copies of one file (see [`three_origins`]),
/// with their directories kept alive as long as they run.
struct Trio {
    /// The origins' /24 (for a client cache next to them).
    net: Subnet,
    dirs: Vec<tempfile::TempDir>,
    _idx: Vec<tempfile::TempDir>,
    paths: Vec<std::path::PathBuf>,
    nodes: Vec<Node>,
}

impl Trio {
    fn start(name: &str, data: &[u8], extra: [&[&str]; 3]) -> Trio {
        let net = subnet();
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let idx: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let paths = dirs
            .iter()
            .map(|d| write_file(d.path(), name, data))
            .collect();
        let nodes = three_origins(
            net,
            [dirs[0].path(), dirs[1].path(), dirs[2].path()],
            [idx[0].path(), idx[1].path(), idx[2].path()],
            extra,
        );
        Trio {
            net,
            dirs,
            _idx: idx,
            paths,
            nodes,
        }
    }
}

impl Trio {
    /// `p2pd get` of `f.bin` from origin 0 into the first directory: it must succeed
    /// and write exactly `data`.
    fn get_whole(&self, data: &[u8]) -> GetRun {
        let o = &self.nodes;
        let out = self.dirs[0].path().join("out.bin");
        let r = get(&format!("spp://{}/f.bin", o[0].addr), &out);
        assert!(
            r.code == 0,
            "get failed: {}{}",
            r.stderr,
            diag(&[&o[0], &o[1], &o[2]])
        );
        assert!(std::fs::read(&out).unwrap() == data, "the output differs");
        r
    }
}

/// `p2pd get URL -o OUT` (not quiet): (exit code, stderr, bytes per source address,
/// dropped sources, the longest wait for the next block in ms).
struct GetRun {
    code: i32,
    stderr: String,
    by_source: Vec<(SocketAddr, u64)>,
    dropped: Vec<SocketAddr>,
    longest_wait_ms: u64,
}

fn get(url: &str, out: &Path) -> GetRun {
    let o = run_p2pd(&["get", url, "-o", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    let mut by_source = Vec::new();
    let mut dropped = Vec::new();
    let mut longest_wait_ms = 0;
    for line in stderr.lines() {
        if let Some(rest) = line.strip_prefix("p2pd get: from ") {
            // "ADDR: N bytes in M blocks[ (dropped)]"
            let (addr, rest) = rest.split_once(": ").expect("source line");
            let addr: SocketAddr = addr.parse().expect("source address");
            let bytes: u64 = rest.split(' ').next().unwrap().parse().expect("bytes");
            by_source.push((addr, bytes));
            if rest.ends_with("(dropped)") {
                dropped.push(addr);
            }
        }
        if let Some(ms) = line.strip_prefix("p2pd get: longest wait for the next block: ") {
            longest_wait_ms = ms.trim_end_matches(" ms").parse().expect("ms");
        }
    }
    GetRun {
        code: o.status.code().unwrap_or(-1),
        stderr,
        by_source,
        dropped,
        longest_wait_ms,
    }
}

fn bytes_from(r: &GetRun, a: SocketAddr) -> u64 {
    r.by_source
        .iter()
        .filter(|(s, _)| *s == a)
        .map(|(_, b)| b)
        .sum()
}

fn diag(nodes: &[&Node]) -> String {
    let named: Vec<(&str, &Node)> = nodes.iter().map(|n| ("origin", *n)).collect();
    diagnose(&named)
}

/// Scenario 2: three origins, one limited to a tenth of the others' rate. The client
/// takes most bytes from the two fast ones and uses both.
#[test]
fn the_fast_origins_serve_most_bytes_and_both_are_used() {
    let data = content(8 * 1024 * 1024, 2701);
    let fast: &[&str] = &["--upload-rate", "8M"];
    let slow: &[&str] = &["--upload-rate", "800k"];
    let t = Trio::start("f.bin", &data, [fast, fast, slow]);
    let o = &t.nodes;
    let started = Instant::now();
    let r = t.get_whole(&data);
    let took = started.elapsed();
    let (a, b, c) = (
        bytes_from(&r, o[0].addr),
        bytes_from(&r, o[1].addr),
        bytes_from(&r, o[2].addr),
    );
    let total = data.len() as u64;
    eprintln!(
        "bytes by source: fast {a} + {b}, slow {c} of {total} ({:.1}% from the fast ones) in {took:?}",
        (a + b) as f64 * 100.0 / total as f64
    );
    assert_eq!(a + b + c, total, "{}", r.stderr);
    assert!(
        (a + b) * 100 > total * 80,
        "the fast origins served only {} of {total} bytes: {}",
        a + b,
        r.stderr
    );
    assert!(a > 0 && b > 0, "both fast origins used: {}", r.stderr);
    // The origins' own counters agree with what the client reports.
    let sent: u64 = o.iter().map(|n| n.metric(SPP_SENT)).sum();
    assert!(sent >= total, "the origins sent {sent} bytes for {total}");
}

/// One origin (the one the URL names, whose info the client has) is killed halfway:
/// the download completes from the others, byte-identical, and the longest wait for
/// the next block is bounded.
#[test]
fn an_origin_killed_halfway_does_not_stop_the_download() {
    let data = content(12 * 1024 * 1024, 2702);
    // Each at 8 MiB/s: about half a second a source for the whole file.
    let cap: &[&str] = &["--upload-rate", "8M"];
    let mut t = Trio::start("f.bin", &data, [cap, cap, cap]);
    let o = &mut t.nodes;
    let out = t.dirs[0].path().join("out.bin");
    let url = format!("spp://{}/f.bin", o[0].addr);
    let out2 = out.clone();
    let client = std::thread::spawn(move || get(&url, &out2));
    // Kill origin 0 once it has sent a sixth of the file.
    let total = data.len() as u64;
    let sixth = wait_until(Duration::from_secs(20), || {
        o[0].metric(SPP_SENT) >= total / 6
    });
    assert!(
        sixth,
        "origin 0 never sent a sixth of the file{}",
        diag(&[&o[0], &o[1], &o[2]])
    );
    let sent_before_kill = o[0].metric(SPP_SENT);
    o[0].kill9();
    let r = client.join().unwrap();
    assert!(
        r.code == 0,
        "get failed: {}{}",
        r.stderr,
        diag(&[&o[1], &o[2]])
    );
    assert!(std::fs::read(&out).unwrap() == data, "the output differs");
    let from_killed = bytes_from(&r, o[0].addr);
    eprintln!(
        "origin 0 killed after sending {sent_before_kill} bytes; the client took {from_killed} \
         from it; longest wait for the next block: {} ms",
        r.longest_wait_ms
    );
    assert!(from_killed < total, "{}", r.stderr);
    assert!(
        bytes_from(&r, o[1].addr) > 0 && bytes_from(&r, o[2].addr) > 0,
        "{}",
        r.stderr
    );
    assert!(
        r.longest_wait_ms < 2000,
        "the interruption lasted {} ms: {}",
        r.longest_wait_ms,
        r.stderr
    );
}

/// One origin serves corrupted blocks (its file was edited in place with its size
/// and modification time kept, so it still vouches for the old digests): the client
/// detects them, drops that origin, and the file arrives intact from the others.
#[test]
fn a_source_serving_corrupted_blocks_is_dropped_and_the_file_arrives_intact() {
    let data = content(64 * BS + 500, 2703);
    let none: &[&str] = &[];
    let t = Trio::start("f.bin", &data, [none, none, none]);
    let o = &t.nodes;
    // Origin 2 has indexed the file; now its copy goes bad in place.
    corrupt_every_block_in_place(&o[2], &t.paths[2], &data, 7);
    let r = t.get_whole(&data);
    eprintln!("{}", r.stderr.trim());
    assert!(
        r.dropped.contains(&o[2].addr),
        "the corrupting origin was not dropped: {}",
        r.stderr
    );
    assert_eq!(bytes_from(&r, o[2].addr), 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("failed their digest"),
        "no digest failure reported: {}",
        r.stderr
    );
}

/// A player streams through its client cache (LHC, no parent) from an origin that
/// lists two mirrors; the origin is killed halfway through. The HTTP stream goes on
/// from the mirrors: status 200, every byte right, none repeated or missing, and no
/// long gap. The cache's per-source metrics show the mirrors took over.
#[test]
fn a_player_streaming_through_its_cache_does_not_notice_the_origin_dying() {
    use std::io::{Read, Write};
    let data = content(12 * 1024 * 1024, 2704);
    let cap: &[&str] = &["--upload-rate", "8M"];
    let mut t = Trio::start("movie.mp4", &data, [cap, cap, cap]);
    let o = &mut t.nodes;
    let lhc = Cache::builder().on(t.net.ip(10), 0).start();
    let url = format!("http://{}/movie.mp4", o[0].addr);
    let mut s = std::net::TcpStream::connect(lhc.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {url} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        o[0].addr
    )
    .unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut last = Instant::now();
        let mut longest = Duration::ZERO;
        loop {
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    all.extend_from_slice(&chunk[..n]);
                    longest = longest.max(last.elapsed());
                    last = Instant::now();
                }
                Err(e) => panic!("reading the stream: {e}"),
            }
        }
        (all, longest)
    });
    let total = data.len() as u64;
    let sixth = wait_until(Duration::from_secs(20), || {
        o[0].metric(SPP_SENT) >= total / 6
    });
    assert!(
        sixth,
        "origin 0 never sent a sixth of the file{}",
        diag(&[&o[0], &lhc])
    );
    o[0].kill9();
    let (all, longest) = reader.join().unwrap();
    let (status, _, n, _) = parse_head(&all, false).expect("a response head");
    assert_eq!(status, 200);
    let body = &all[n..];
    assert!(
        body.len() == data.len() && body == &data[..],
        "the stream was {} bytes for {} (or differs){}",
        body.len(),
        data.len(),
        diag(&[&o[1], &o[2], &lhc])
    );
    let metrics = lhc.metrics_text();
    let from = |a: SocketAddr| -> u64 {
        let key = format!("p2pd_upstream_bytes_by_source_total{{source=\"{a}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    let (a, b, c) = (from(o[0].addr), from(o[1].addr), from(o[2].addr));
    eprintln!(
        "through the cache: {a} bytes from the killed origin, {b} + {c} from the mirrors; \
         longest gap in the stream {longest:?}"
    );
    assert_eq!(a + b + c, total, "{metrics}");
    assert!(b + c > 0 && a < total, "{metrics}");
    assert!(
        longest < Duration::from_secs(4),
        "the stream stopped for {longest:?}"
    );
}

/// The same through a client cache: one of the origin's mirrors serves corrupted
/// blocks. The cache drops it for the file at its first bad block; the player gets
/// every byte right and the bad mirror's bytes never count as fetched.
#[test]
fn a_cache_drops_a_corrupting_mirror_and_streams_intact_data() {
    let data = content(96 * BS + 123, 2705);
    let none: &[&str] = &[];
    let t = Trio::start("f.bin", &data, [none, none, none]);
    let o = &t.nodes;
    // Origin 2 has indexed the file; now its copy goes bad in place.
    corrupt_every_block_in_place(&o[2], &t.paths[2], &data, 11);
    let lhc = Cache::builder().on(t.net.ip(10), 0).start();
    let url = format!("http://{}/f.bin", o[0].addr);
    // A first small request makes the cache learn the mirrors; the whole file then
    // spreads over all three sources, the corrupting one included.
    let r = try_proxy_request(lhc.addr, None, "GET", &url, "Range: bytes=0-99\r\n")
        .unwrap_or_else(|e| panic!("first range: {e}{}", diag(&[&lhc])));
    assert_eq!(r.status, 206);
    assert!(r.body == data[..100]);
    lhc.wait_for("the cache to learn the file's sources", |n| {
        n.log().contains("located the file's sources")
    });
    let r = try_proxy_request(lhc.addr, None, "GET", &url, "")
        .unwrap_or_else(|e| panic!("whole file: {e}{}", diag(&[&lhc])));
    assert_eq!(r.status, 200);
    assert!(r.body == data, "the body differs{}", diag(&[&lhc]));
    let failures = lhc.metric("p2pd_digest_failures_total");
    assert!(
        failures >= 1,
        "the corrupting mirror was never asked{}",
        diag(&[&lhc])
    );
    let metrics = lhc.metrics_text();
    let from_bad = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                "p2pd_upstream_bytes_by_source_total{{source=\"{}\"}} ",
                o[2].addr
            ))
        })
        .map_or(0, |v| v.trim().parse::<u64>().unwrap());
    assert_eq!(
        from_bad, 0,
        "bytes from the corrupting mirror were counted: {metrics}"
    );
    eprintln!("digest failures at the cache: {failures} (each dropped the mirror for the file on one shard)");
}
