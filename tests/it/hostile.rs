//! Hostile input never takes a node down. For each role (origin, site cache, client
//! cache), while a legitimate viewer streams a file, the attacks that took nodes down
//! or grew them without bound are mounted, and the node must stay up (process running,
//! `/_p2pd/health` 200), keep its resident memory within
//! `-M + 64 KiB × connections + 50 MiB`, and give the viewer exactly the file's bytes
//! in a time not far from an unattacked run measured in the same test:
//!
//! - crash frames: error messages that quote a long multi-byte path or URL, with every
//!   cut point of the 1024-byte message limit inside each byte of a 2-, 3- and 4-byte
//!   character, up to the 4096-byte path limit; long multi-byte hosts; the same over
//!   HTTP (long paths, Host headers, proxy-form URLs);
//! - pipelined InfoRequests (a file with 4096 digests), LocateRequests and Gets from
//!   connections that never read;
//! - slow readers of 16 MiB blocks that send a few Gets and never read;
//! - Have and Holdings floods (`-i`), random bytes after a valid Hello, frames cut in
//!   the middle, connections that send one byte and nothing more.
//!
//! Then the panic policy with the test hooks (`P2PD_TEST_HOOKS=1`): a panic inside a
//! connection is contained and counted, a stalled shard makes health 503, a panic
//! outside any connection ends the process with status 70.
//!
//! The tests run alone (`exclusive`: no other test's processes run meanwhile, and no
//! other hostile test): each measures a viewer's throughput and a node's memory, which
//! a neighbour test on a 2-core machine would distort. A watchdog SIGKILLs a node whose
//! memory runs far past the bound, so an unfixed node fails the test instead of
//! exhausting the machine.
//!
//! Addresses: nodes on fresh addresses (`host`); three /24s of this module's own
//! (`subnet`), taken once since the tests run one at a time: the viewer and site
//! insiders (the site cache's `-n`), outsiders and remote hosts, Have flooders.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use p2pd::pure::digest::MAX_DIGEST_BYTES;
use p2pd::pure::protocol::*;

use crate::harness::*;

/// The host every legitimate request names, and the only one `-A` allows.
const HOST: &str = "cdn.example.com";
/// `-M` of every node under attack, small so the memory bound means something.
const MEM_ARG: &str = "32M";
const MEM_BYTES: u64 = 32 << 20;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
/// How long an attacked node may take to answer one hostile frame or request.
const ANSWER_DEADLINE: Duration = Duration::from_secs(5);
/// The viewer's file (16 KiB blocks: 1024 of them) and the 4096-digest file.
const FILM_BYTES: usize = 16 << 20;
const BIG_BYTES: usize = 64 << 20;

/// The /24s of the module comment: the site, the rest of the world, the flooders.
struct Nets {
    site: Subnet,
    remote: Subnet,
    flooders: Subnet,
}

fn nets() -> &'static Nets {
    static NETS: OnceLock<Nets> = OnceLock::new();
    NETS.get_or_init(|| Nets {
        site: subnet(),
        remote: subnet(),
        flooders: subnet(),
    })
}

/// The legitimate viewer, inside the site.
fn viewer() -> IpAddr {
    nets().site.ip(1)
}
/// A site insider (inside the SCC's `-n`), number `k`.
fn insider(k: usize) -> IpAddr {
    nets().site.ip(10 + (k % 200) as u8)
}
/// Outside every subnet, a remote host for a client cache, number `k`.
fn outsider(k: usize) -> IpAddr {
    nets().remote.ip(1 + (k % 200) as u8)
}

/// The memory goal: `-M` + 64 KiB per connection + 50 MiB.
fn rss_bound(connections: usize) -> u64 {
    MEM_BYTES + 64 * KIB * connections as u64 + 50 * MIB
}

/// Resident memory of process `pid` (VmRSS), or None once it is gone (or a zombie).
fn rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * KIB)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB as f64)
}

/// Samples a process's VmRSS every 20 ms and keeps the peak; SIGKILLs it once it
/// passes `hard_cap` (an unfixed node would otherwise take the machine's memory).
struct RssWatch {
    pid: u32,
    /// VmRSS when the watch started (before the attack).
    start: u64,
    peak: Arc<AtomicU64>,
    killed_at: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    fn start(pid: u32, hard_cap: u64) -> RssWatch {
        let start = rss(pid).unwrap_or(0);
        let peak = Arc::new(AtomicU64::new(start));
        let killed_at = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, k, s) = (peak.clone(), killed_at.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(r) = rss(pid) {
                    p.fetch_max(r, Ordering::Relaxed);
                    if r > hard_cap && k.load(Ordering::Relaxed) == 0 {
                        k.store(r, Ordering::Relaxed);
                        // SAFETY: signalling our own child (still alive: it has a VmRSS).
                        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    }
                }
                // The sampling period.
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssWatch {
            pid,
            start,
            peak,
            killed_at,
            stop,
            thread: Some(thread),
        }
    }
    fn peak(&self) -> u64 {
        if let Some(r) = rss(self.pid) {
            self.peak.fetch_max(r, Ordering::Relaxed);
        }
        self.peak.load(Ordering::Relaxed)
    }
    fn killed(&self) -> Option<u64> {
        Some(self.killed_at.load(Ordering::Relaxed)).filter(|&k| k != 0)
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Test content, quicker to make than `harness::content` for tens of MiB.
fn media(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn film() -> Arc<Vec<u8>> {
    static F: OnceLock<Arc<Vec<u8>>> = OnceLock::new();
    F.get_or_init(|| Arc::new(media(FILM_BYTES, 3001))).clone()
}

fn big() -> Arc<Vec<u8>> {
    static F: OnceLock<Arc<Vec<u8>>> = OnceLock::new();
    F.get_or_init(|| Arc::new(media(BIG_BYTES, 3002))).clone()
}

fn frame_bytes(f: &Frame) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode(f, &mut b).expect("encodable frame");
    b.to_vec()
}

fn health(addr: SocketAddr) -> Result<Response, String> {
    try_http(
        addr,
        "GET /_p2pd/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ANSWER_DEADLINE,
    )
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Origin,
    Scc,
    Lhc,
}

/// An origin (`-b`, `-A HOST`, `-M 32M`, 2 shards) publishing the viewer's file (and
/// the 4096-digest file), and for the cache roles a cache below it (`-S origin`,
/// `-A HOST`, `-M 32M`, 2 shards; the SCC with the site's `-n`). The node under
/// attack is the cache when there is one.
struct Rig {
    kind: Kind,
    /// The origin's `-b` in bytes.
    block_bytes: u64,
    origin: Node,
    cache: Option<Node>,
    film: Arc<Vec<u8>>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Rig {
    /// `film_bytes` of the viewer's file in blocks of `block`; with `big`, the
    /// 4096-digest file too (16 KiB blocks only). `extra` goes to the attacked node.
    fn new(kind: Kind, block: &str, film: Arc<Vec<u8>>, big_file: bool, extra: &[&str]) -> Rig {
        let (dir, idx, cdir) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        write_file(dir.path(), "film.bin", &film);
        let mut want_files = 1;
        if big_file {
            write_file(dir.path(), "big.bin", &big());
            want_files += 1;
        }
        let mut args = vec![
            "-p",
            dir.path().to_str().unwrap(),
            "--index-dir",
            idx.path().to_str().unwrap(),
            "--threads",
            "2",
            "-b",
            block,
            "-A",
            HOST,
            "-M",
            MEM_ARG,
        ];
        if kind == Kind::Origin {
            args.extend_from_slice(extra);
        }
        let origin = Node::start(host(), &args);
        origin.wait_for("the published files indexed", |n| {
            n.metric("p2pd_index_builds_total") == want_files
        });
        let cache = (kind != Kind::Origin).then(|| {
            let parent = origin.addr.to_string();
            let mut args = vec![
                "-c",
                cdir.path().to_str().unwrap(),
                "--threads",
                "2",
                "-S",
                &parent,
                "-A",
                HOST,
                "-M",
                MEM_ARG,
            ];
            let site = nets().site.cidr();
            if kind == Kind::Scc {
                args.extend_from_slice(&["-n", &site]);
            }
            args.extend_from_slice(extra);
            Node::start(host(), &args)
        });
        Rig {
            kind,
            block_bytes: match block {
                "16M" => 16 * MIB,
                "256k" => 256 * KIB,
                _ => 16 * KIB,
            },
            origin,
            cache,
            film,
            _dirs: vec![dir, idx, cdir],
        }
    }

    fn target(&self) -> &Node {
        self.cache.as_ref().unwrap_or(&self.origin)
    }

    fn target_mut(&mut self) -> &mut Node {
        self.cache.as_mut().unwrap_or(&mut self.origin)
    }

    /// The attackers' addresses for connection `k`: for a site cache insiders and
    /// outsiders in turn, for a client cache the local machine and remote hosts in
    /// turn, for an origin remote hosts.
    fn attacker(&self, k: usize) -> IpAddr {
        match (self.kind, k % 2) {
            (Kind::Origin, _) => outsider(k),
            (Kind::Scc, 0) => insider(k),
            (Kind::Lhc, 0) => self.target().addr.ip(),
            _ => outsider(k),
        }
    }

    /// What attacker `k` is, for messages.
    fn who(&self, k: usize) -> &'static str {
        match (self.kind, k % 2) {
            (Kind::Origin, _) => "remote client",
            (Kind::Scc, 0) => "site insider",
            (Kind::Scc, _) => "outsider",
            (Kind::Lhc, 0) => "local client",
            (Kind::Lhc, _) => "remote host",
        }
    }

    /// Streams the film as its viewer does (over SPP from the origin or the site
    /// cache, over HTTP through the client cache as a proxy) and compares every byte;
    /// returns how long it took.
    fn view(&self) -> Result<Duration, String> {
        let t = Instant::now();
        match self.kind {
            Kind::Origin | Kind::Scc => {
                spp_view(viewer(), self.target().addr, "film.bin", &self.film)?
            }
            Kind::Lhc => {
                let url = format!("http://{HOST}:1111/film.bin");
                let r = try_proxy_request(self.target().addr, None, "GET", &url, "")?;
                if r.status != 200 {
                    return Err(format!(
                        "GET {url} via the client cache: status {}",
                        r.status
                    ));
                }
                if let Some(d) = first_difference(&r.body, &self.film) {
                    return Err(format!("GET {url} via the client cache: {d}"));
                }
            }
        }
        Ok(t.elapsed())
    }

    /// Runs the viewer twice unattacked (the first run fills the caches) and returns
    /// the second run's time.
    fn baseline(&self) -> Duration {
        let mut took = Duration::ZERO;
        for _ in 0..2 {
            took = self
                .view()
                .unwrap_or_else(|e| panic!("unattacked viewer: {e}{}", self.diagnose()));
            eprintln!("{:?}: unattacked viewer took {took:?}", self.kind);
        }
        took
    }

    /// Makes the attacked node know the 4096-digest file (a cache fetches its info)
    /// and returns it.
    fn warm_big(&self) -> Info {
        let src = match self.kind {
            Kind::Origin | Kind::Scc => viewer(),
            Kind::Lhc => self.target().addr.ip(),
        };
        let (mut c, _) = Spp::connect_from(src, self.target().addr)
            .unwrap_or_else(|e| panic!("warm: {e}{}", self.diagnose()));
        c.send(&info_request(
            1,
            HOST,
            "big.bin",
            limits::MAX_DIGESTS_PER_INFO,
        ))
        .unwrap();
        match c.recv() {
            Ok(Frame::Info(i)) if i.block_count() == 4096 => i,
            other => panic!("info of big.bin: {other:?}{}", self.diagnose()),
        }
    }

    /// The memory bound this rig's node must hold: the goal, `-M + 64 KiB ×
    /// connections + 50 MiB`. With blocks over 1 MiB the goal's 50 MiB cannot hold a
    /// shard's block in flight, so the bound is ARCHITECTURE.md's worst case instead:
    /// it adds, for each of the 2 shards, the pinned budget `max(8 MiB, 4 × -b)` and on
    /// a cache the 16 MiB of disk writes in flight, and one block for the draining
    /// viewer.
    fn bound(&self, connections: usize) -> u64 {
        let goal = rss_bound(connections);
        if self.block_bytes <= MIB {
            return goal;
        }
        let pinned = 2 * (8 * MIB).max(4 * self.block_bytes);
        let writes = if self.cache.is_some() {
            2 * 16 * MIB
        } else {
            0
        };
        goal + pinned + writes + self.block_bytes
    }

    /// Waits (at most 5 s) for the attacked node to close the connections of attackers
    /// that went away, leaving only the metrics request's own. Whether it did is not
    /// this step's check (a node that is down never does): what follows checks that
    /// the node is up and serves.
    fn wait_for_departures(&self) {
        wait_until(Duration::from_secs(5), || {
            self.target()
                .metrics_text()
                .lines()
                .any(|l| l == "p2pd_connections_open 1")
        });
    }

    fn diagnose(&self) -> String {
        match &self.cache {
            Some(c) => diagnose(&[("origin", &self.origin), ("cache", c)]),
            None => diagnose(&[("origin", &self.origin)]),
        }
    }

    /// Asserts the attacked node runs (the watchdog did not have to kill it) and
    /// answers health 200 `ok`.
    fn check_up(&mut self, watch: &RssWatch, connections: usize, what: &str) {
        let killed = watch.killed();
        let running = self.target_mut().is_running();
        let status = self.target_mut().child.try_wait().ok().flatten();
        if let Some(k) = killed {
            panic!(
                "{what}: the {:?} node grew to {} (bound {} for {connections} connections) and was killed by the test's watchdog{}",
                self.kind,
                mib(k),
                mib(rss_bound(connections)),
                self.diagnose()
            );
        }
        if !running {
            panic!(
                "{what}: the {:?} node is down (exit {status:?}){}",
                self.kind,
                self.diagnose()
            );
        }
        match health(self.target().addr) {
            Ok(r) if r.status == 200 && r.body == b"ok\n" => {}
            Ok(r) => panic!(
                "{what}: health answered {} {:?}{}",
                r.status,
                String::from_utf8_lossy(&r.body),
                self.diagnose()
            ),
            Err(e) => panic!("{what}: health: {e}{}", self.diagnose()),
        }
    }

    /// Asserts the attacked node's VmRSS stayed within the bound for `connections`
    /// over the whole attack (the watchdog's peak). Checked last, so that a node
    /// already above the bound before the attack still has its other checks made.
    fn check_rss(&self, watch: &RssWatch, connections: usize, what: &str) {
        let peak = watch.peak();
        if peak > self.bound(connections) {
            panic!(
                "{what}: the {:?} node's VmRSS peaked at {} ({} before the attack), above the bound {} (-M {MEM_ARG} + 64 KiB × {connections} connections + 50 MiB, and with blocks over 1 MiB ARCHITECTURE.md's pinned, write and draining terms){}",
                self.kind,
                mib(peak),
                mib(watch.start),
                mib(self.bound(connections)),
                self.diagnose()
            );
        }
        eprintln!(
            "{what}: {:?} node up, VmRSS peak {} ({} before the attack; bound {})",
            self.kind,
            mib(peak),
            mib(watch.start),
            mib(self.bound(connections))
        );
    }

    /// Asserts the attacked viewer got its bytes within a generous deadline compared
    /// with the unattacked run: at most 10 × its time + 5 s. Generous on purpose: under
    /// the pipelined floods the node works through about a million queued requests
    /// (40 MB) and the viewer gets its connection's fair share meanwhile (1-5 s for
    /// 16 MiB in a debug build, against 50-80 ms unattacked); the limit catches a
    /// starved viewer (a dead shard, a wedged writer), not a fair share.
    /// `perf/hostile.sh` measures the ratio in release.
    fn check_viewer(&self, r: Result<Duration, String>, baseline: Duration, what: &str) {
        let took = match r {
            Ok(t) => t,
            Err(e) => panic!("{what}: the viewer failed: {e}{}", self.diagnose()),
        };
        let limit = baseline * 10 + Duration::from_secs(5);
        eprintln!("{what}: viewer took {took:?} attacked, {baseline:?} unattacked");
        if took > limit {
            panic!(
                "{what}: the viewer's throughput collapsed: {took:?} attacked against {baseline:?} unattacked (limit {limit:?}){}",
                self.diagnose()
            );
        }
    }
}

/// Where `got` first differs from `want`, if it does.
fn first_difference(got: &[u8], want: &[u8]) -> Option<String> {
    if got == want {
        return None;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    Some(format!(
        "{} bytes where {} were expected; first difference at byte {at}",
        got.len(),
        want.len()
    ))
}

/// A viewer over SPP: Info, then Gets of 64 blocks, every block checked against its
/// digest and against the file's bytes.
fn spp_view(src: IpAddr, addr: SocketAddr, path: &str, want: &[u8]) -> Result<(), String> {
    let (mut c, _) = Spp::connect_from(src, addr)?;
    let info = c.info(1, HOST, path).and_then(expect_info)?;
    if info.size != want.len() as u64 {
        return Err(format!("info size {} for {} bytes", info.size, want.len()));
    }
    let bs = info.block_size as usize;
    let blocks = info.block_count();
    let mut d = [0u8; MAX_DIGEST_BYTES];
    let mut first = 0u64;
    let mut req_id = 10u32;
    while first < blocks {
        let count = (blocks - first).min(64) as u32;
        req_id += 1;
        c.send(&get_request(req_id, &info, first, count))?;
        for i in first..first + u64::from(count) {
            match c.recv().map_err(|e| format!("block {i}: {e}"))? {
                Frame::Data(dt) if dt.req_id == req_id && dt.block == i => {
                    let digest = info.digest(i as usize).ok_or("too few digests")?;
                    if info.algo.digest_into(&dt.payload, &mut d) != digest {
                        return Err(format!("block {i} fails its digest"));
                    }
                    let at = i as usize * bs;
                    let end = (at + bs).min(want.len());
                    if dt.payload[..] != want[at..end] {
                        return Err(format!("block {i} differs from the file"));
                    }
                }
                other => return Err(format!("block {i}: got {other:?}")),
            }
        }
        first += u64::from(count);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Crash frames: messages cut inside a multi-byte character.

/// The multi-byte characters whose every byte a cut must land on.
const WIDE: [&str; 3] = ["é", "€", "😀"];

/// Paths of `N × c` (after 0..w ASCII bytes, so the cut lands on every byte of `c`)
/// whose length sweeps across the 1024-byte message limit for any message prefix up to
/// 96 bytes, and the longest paths the protocol allows (4096 bytes).
fn crash_paths() -> Vec<String> {
    let mut out = Vec::new();
    let limit = limits::MAX_ERROR_MESSAGE_BYTES;
    for c in WIDE {
        let w = c.len();
        for shift in 0..w {
            let pad = "x".repeat(shift);
            let lo = (limit - 96 - shift) / w;
            let hi = (limit + 8 - shift) / w;
            for n in lo..=hi {
                out.push(format!("{pad}{}", c.repeat(n)));
            }
            out.push(format!(
                "{pad}{}",
                c.repeat((limits::MAX_PATH_BYTES - shift) / w)
            ));
        }
    }
    out
}

/// Hosts of up to 255 bytes made of multi-byte characters, at every alignment.
fn crash_hosts() -> Vec<String> {
    let mut out = Vec::new();
    for c in WIDE {
        let w = c.len();
        for shift in 0..w {
            out.push(format!(
                "{}{}",
                "h".repeat(shift),
                c.repeat((limits::MAX_HOST_BYTES - shift) / w)
            ));
        }
    }
    out
}

/// One InfoRequest on a fresh connection from `src`; the answer must be an Error
/// frame for it (the decoder checks its message is UTF-8 of at most 1024 bytes).
fn crash_frame(
    (src, who): (IpAddr, &str),
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<(), String> {
    let what = format!(
        "{who} {src}: InfoRequest host {} bytes, path {} bytes ({:?}…)",
        host.len(),
        path.len(),
        path.chars().take(3).collect::<String>()
    );
    let (mut c, _) = Spp::connect_from(src, addr).map_err(|e| format!("{what}: handshake: {e}"))?;
    c.s.set_read_timeout(Some(ANSWER_DEADLINE)).unwrap();
    c.send(&info_request(42, host, path, 0))
        .map_err(|e| format!("{what}: {e}"))?;
    match c.recv() {
        Ok(Frame::Error(e)) if e.req_id == 42 => Ok(()),
        Ok(other) => Err(format!("{what}: answered {other:?}")),
        Err(e) => Err(format!("{what}: no answer: {e}")),
    }
}

/// Raw HTTP requests whose error answers may quote long multi-byte paths and hosts:
/// origin form with raw and percent-encoded paths, long Host headers, proxy form
/// with long hosts and long paths.
fn crash_http_requests(addr: SocketAddr) -> Vec<String> {
    let mut out = Vec::new();
    for c in WIDE {
        let enc: String = c.bytes().map(|b| format!("%{b:02X}")).collect();
        for n in [1000 / c.len(), 1024 / c.len(), 4096 / c.len()] {
            let raw = c.repeat(n);
            let pct = enc.repeat(n.min(2000 / c.len()));
            out.push(format!(
                "GET /{raw} HTTP/1.1\r\nHost: {HOST}:1111\r\nConnection: close\r\n\r\n"
            ));
            out.push(format!(
                "GET /{pct} HTTP/1.1\r\nHost: {HOST}:1111\r\nConnection: close\r\n\r\n"
            ));
            out.push(format!(
                "GET http://{HOST}:1111/{pct} HTTP/1.1\r\nHost: {HOST}:1111\r\nConnection: close\r\n\r\n"
            ));
            out.push(format!(
                "GET http://{HOST}:1111/{raw} HTTP/1.1\r\nHost: {HOST}:1111\r\nConnection: close\r\n\r\n"
            ));
        }
        for host in crash_hosts().into_iter().filter(|h| h.contains(c)) {
            let long = c.repeat(1500 / c.len());
            out.push(format!(
                "GET /film.bin HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            ));
            out.push(format!(
                "GET /{long} HTTP/1.1\r\nHost: {host}:1111\r\nConnection: close\r\n\r\n"
            ));
            out.push(format!(
                "GET http://{host}/{long} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            ));
            out.push(format!(
                "GET http://{host}:1111/film.bin HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            ));
        }
    }
    out
}

/// One raw HTTP request from `src`; any complete response counts (an error status is
/// expected), a closed connection or silence does not.
fn crash_http(src: IpAddr, addr: SocketAddr, raw: &str) -> Result<u16, String> {
    let what = format!(
        "HTTP request of {} bytes ({:?}…)",
        raw.len(),
        raw.chars().take(40).collect::<String>()
    );
    let mut s = connect_from(src, addr).map_err(|e| format!("{what}: connect: {e}"))?;
    s.set_read_timeout(Some(ANSWER_DEADLINE)).unwrap();
    s.write_all(raw.as_bytes())
        .map_err(|e| format!("{what}: send: {e}"))?;
    try_read_response(&mut s, false)
        .map(|r| r.status)
        .map_err(|e| format!("{what}: {e}"))
}

fn crash_frames_test(kind: Kind) {
    let _alone = exclusive();
    let mut rig = Rig::new(kind, "16k", film(), false, &[]);
    let baseline = rig.baseline();
    let watch = RssWatch::start(rig.target().pid(), rss_bound(4) + 512 * MIB);
    let what = format!("{kind:?} under crash frames");
    let target = rig.target().addr;
    let (viewed, failures, frames) = std::thread::scope(|sc| {
        let rig_ref = &rig;
        let viewer = sc.spawn(move || rig_ref.view());
        let mut failures = Vec::new();
        let mut frames = 0usize;
        let mut k = 0usize;
        let note = |r: Result<(), String>, failures: &mut Vec<String>| {
            if let Err(e) = r {
                failures.push(e);
            }
        };
        // Every cut point, from every kind of requester.
        'all: for (i, path) in crash_paths().into_iter().enumerate() {
            for who in 0..2 {
                frames += 1;
                let k = 2 * i + who;
                let src = (rig_ref.attacker(k), rig_ref.who(k));
                note(crash_frame(src, target, HOST, &path), &mut failures);
                if failures.len() >= 3 {
                    break 'all;
                }
            }
        }
        // Long multi-byte hosts (refused by -A), alone and with long paths.
        if failures.is_empty() {
            for host in crash_hosts() {
                for path in ["film.bin".to_string(), "é".repeat(2000)] {
                    k += 1;
                    frames += 1;
                    let src = (rig_ref.attacker(k), rig_ref.who(k));
                    note(crash_frame(src, target, &host, &path), &mut failures);
                }
            }
        }
        // The same over HTTP.
        if failures.is_empty() {
            for raw in crash_http_requests(target) {
                k += 1;
                frames += 1;
                if let Err(e) = crash_http(rig_ref.attacker(k), target, &raw) {
                    failures.push(format!("{}: {e}", rig_ref.who(k)));
                    if failures.len() >= 3 {
                        break;
                    }
                }
            }
        }
        (viewer.join().unwrap(), failures, frames)
    });
    if !failures.is_empty() {
        panic!(
            "{what}: {} of {frames} hostile requests went unanswered (first: {:?}); node running: {}{}",
            failures.len(),
            failures,
            rig.target_mut().is_running(),
            rig.diagnose()
        );
    }
    eprintln!("{what}: {frames} hostile requests answered");
    rig.check_up(&watch, 4, &what);
    rig.check_viewer(viewed, baseline, &what);
    // And it still serves the viewer afterwards.
    let after = rig.view();
    rig.check_viewer(after, baseline, &format!("{what}, afterwards"));
    rig.check_rss(&watch, 4, &what);
}

/// An origin answers InfoRequests whose "not found" message quotes a path of
/// multi-byte characters cut at every byte of the 1024-byte limit (and paths up to
/// 4096 bytes, long multi-byte hosts refused by `-A`, the same over HTTP), and keeps
/// serving its viewer.
#[test]
fn origin_survives_error_messages_cut_inside_multibyte_chars() {
    crash_frames_test(Kind::Origin);
}

/// A site cache answers insiders (its "not found" quotes the URL) and outsiders (its
/// Forbidden quotes the URL) at every cut point, over SPP and HTTP.
#[test]
fn site_cache_survives_error_messages_cut_inside_multibyte_chars() {
    crash_frames_test(Kind::Scc);
}

/// A client cache answers the local machine and remote hosts (its Forbidden quotes
/// the URL) at every cut point, over SPP and as an HTTP proxy.
#[test]
fn client_cache_survives_error_messages_cut_inside_multibyte_chars() {
    crash_frames_test(Kind::Lhc);
}

// ---------------------------------------------------------------------------------
// Pipelining without reading.

/// Writes `frames` (one encoded frame, repeated with fresh ids by `next`) until
/// `max_bytes` went out or a write makes no progress for `stall`: the node stopped
/// reading. Returns the bytes written.
fn flood(
    s: &mut TcpStream,
    max_bytes: usize,
    stall: Duration,
    mut next: impl FnMut(u32) -> Vec<u8>,
) -> usize {
    s.set_write_timeout(Some(stall)).unwrap();
    let mut sent = 0;
    let mut id = 1000u32;
    while sent < max_bytes {
        let mut batch = Vec::with_capacity(64 * 1024);
        while batch.len() < 64 * 1024 {
            id += 1;
            batch.extend_from_slice(&next(id));
        }
        if s.write_all(&batch).is_err() {
            return sent;
        }
        sent += batch.len();
    }
    sent
}

/// Per connection, 1 MB of requests without reading a byte.
const FLOOD_BYTES: usize = 1 << 20;
const FLOOD_CONNECTIONS: usize = 40;

fn pipelined_test(kind: Kind) {
    let _alone = exclusive();
    let mut rig = Rig::new(kind, "16k", film(), true, &[]);
    let big_info = rig.warm_big();
    let baseline = rig.baseline();
    let conns = FLOOD_CONNECTIONS + 2;
    let watch = RssWatch::start(rig.target().pid(), rss_bound(conns) + 512 * MIB);
    let what = format!("{kind:?} under pipelined requests that are never read");
    let target = rig.target().addr;
    let sent = AtomicU64::new(0);
    let (viewed, open) = std::thread::scope(|sc| {
        let rig_ref = &rig;
        let (sent, big_info) = (&sent, &big_info);
        let attackers: Vec<_> = (0..FLOOD_CONNECTIONS)
            .map(|k| {
                sc.spawn(move || -> Option<TcpStream> {
                    let (mut c, _) = Spp::connect_from(rig_ref.attacker(k), target).ok()?;
                    // Open the 4096-digest file (outsiders get it too: the cache holds
                    // its info), then ask again and again without reading.
                    c.send(&info_request(1, HOST, "big.bin", 0)).ok()?;
                    let handle = match c.recv() {
                        Ok(Frame::Info(i)) => i.handle,
                        _ => 0,
                    };
                    let mut s = c.s;
                    let n = match k % 4 {
                        0 | 1 => flood(&mut s, FLOOD_BYTES, Duration::from_secs(1), |id| {
                            frame_bytes(&info_request(id, HOST, "big.bin", 4096))
                        }),
                        2 => flood(&mut s, FLOOD_BYTES, Duration::from_secs(1), |id| {
                            frame_bytes(&Frame::LocateRequest(LocateRequest {
                                req_id: id,
                                handle,
                                first_block: u64::from(id) % 4096,
                                block_count: 1,
                            }))
                        }),
                        _ => flood(&mut s, FLOOD_BYTES, Duration::from_secs(1), |id| {
                            frame_bytes(&Frame::Get(Get {
                                req_id: id,
                                handle,
                                version: big_info.version,
                                first_block: u64::from(id) % 4096,
                                block_count: 1,
                            }))
                        }),
                    };
                    sent.fetch_add(n as u64, Ordering::Relaxed);
                    Some(s)
                })
            })
            .collect();
        let open: Vec<TcpStream> = attackers
            .into_iter()
            .filter_map(|a| a.join().unwrap())
            .collect();
        // The floods are in (or the node stopped reading them): now the viewer, while
        // every flooding connection stays open and unread, and a moment longer (the
        // attack's duration).
        let viewed = rig_ref.view();
        std::thread::sleep(Duration::from_millis(500));
        (viewed, open)
    });
    eprintln!(
        "{what}: {} connections sent {} of requests",
        open.len(),
        mib(sent.load(Ordering::Relaxed))
    );
    rig.check_up(&watch, conns, &what);
    rig.check_viewer(viewed, baseline, &what);
    drop(open);
    rig.wait_for_departures();
    rig.check_up(&watch, conns, &format!("{what}, after the attackers left"));
    let after = rig.view();
    rig.check_viewer(after, baseline, &format!("{what}, afterwards"));
    rig.check_rss(&watch, conns, &what);
}

/// 40 connections each pipeline 1 MB of InfoRequests for a 4096-digest file,
/// LocateRequests or Gets and never read: the origin's memory stays within the bound
/// and its viewer is served.
#[test]
fn origin_memory_stays_bounded_under_pipelined_requests_never_read() {
    pipelined_test(Kind::Origin);
}

/// The same against a site cache, from insiders and outsiders.
#[test]
fn site_cache_memory_stays_bounded_under_pipelined_requests_never_read() {
    pipelined_test(Kind::Scc);
}

/// The same against a client cache, from the local machine and remote hosts.
#[test]
fn client_cache_memory_stays_bounded_under_pipelined_requests_never_read() {
    pipelined_test(Kind::Lhc);
}

// ---------------------------------------------------------------------------------
// Slow readers of large blocks.

const SLOW_READERS: usize = 8;

fn slow_readers_test(kind: Kind) {
    let _alone = exclusive();
    // 16 MiB blocks: the 64 MiB file is 4 of them.
    let mut rig = Rig::new(kind, "16M", big(), false, &[]);
    let baseline = rig.baseline();
    let conns = SLOW_READERS + 2;
    let watch = RssWatch::start(rig.target().pid(), rss_bound(conns) + 512 * MIB);
    let what = format!("{kind:?} under {SLOW_READERS} slow readers of 16 MiB blocks");
    let target = rig.target().addr;
    let mut slow = Vec::new();
    for k in 0..SLOW_READERS {
        let (mut c, _) = Spp::connect_from(rig.attacker(k), target)
            .unwrap_or_else(|e| panic!("{what}: slow reader {k}: {e}{}", rig.diagnose()));
        let info = match c.info(1, HOST, "film.bin") {
            Ok(Frame::Info(i)) => i,
            other => panic!("{what}: slow reader {k}: info {other:?}{}", rig.diagnose()),
        };
        // A few Gets for every block, and not one byte read.
        for req_id in 2..5 {
            c.send(&get_request(req_id, &info, 0, info.block_count() as u32))
                .unwrap();
        }
        slow.push(c);
    }
    // The Gets pile up unread for a while before the viewer comes (the attack).
    std::thread::sleep(Duration::from_millis(500));
    let viewed = rig.view();
    rig.check_up(&watch, conns, &what);
    rig.check_viewer(viewed, baseline, &what);
    // Seconds later, with the slow readers still there (or shed), it still holds (the
    // time passing is what is tested).
    std::thread::sleep(Duration::from_secs(3));
    eprintln!(
        "{what}: connections open after 3 s more: {}",
        rig.target().metric("p2pd_connections_open")
    );
    let again = rig.view();
    rig.check_up(&watch, conns, &format!("{what}, 3 s later"));
    rig.check_viewer(again, baseline, &format!("{what}, 3 s later"));
    drop(slow);
    rig.check_rss(&watch, conns, &what);
}

/// Eight connections ask an origin with 16 MiB blocks for every block, three times,
/// and never read: its memory stays within the bound and its viewer is served.
#[test]
fn origin_memory_stays_bounded_under_slow_readers_of_16m_blocks() {
    slow_readers_test(Kind::Origin);
}

/// The same against a site cache (insiders make it fetch, outsiders read what it holds).
#[test]
fn site_cache_memory_stays_bounded_under_slow_readers_of_16m_blocks() {
    slow_readers_test(Kind::Scc);
}

/// The same against a client cache (the local machine and remote hosts).
#[test]
fn client_cache_memory_stays_bounded_under_slow_readers_of_16m_blocks() {
    slow_readers_test(Kind::Lhc);
}

// ---------------------------------------------------------------------------------
// Non-readers and the kernel's send queues.

/// The most a node's socket may hold unsent (p2pd's `UNSENT_LIMIT`, 1 MiB), plus what
/// one send may put past it (a few segments).
const UNSENT_BOUND: u64 = MIB + 256 * KIB;
const NON_READERS: usize = 24;

/// For every established TCP socket whose local address is `addr`: bytes in its send
/// queue (`tx_queue` of /proc/net/tcp: not yet acknowledged, which for a client whose
/// window is shut is what the node has not sent).
fn send_queues(addr: SocketAddr) -> Vec<u64> {
    let IpAddr::V4(ip) = addr.ip() else {
        return Vec::new();
    };
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(ip.octets()),
        addr.port()
    );
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // sl local rem st tx:rx ...; 01 is ESTABLISHED.
            if f.len() < 5 || f[1] != local || f[3] != "01" {
                return None;
            }
            u64::from_str_radix(f[4].split(':').next()?, 16).ok()
        })
        .collect()
}

/// Twenty-four connections never read a byte from an origin with 256 KiB blocks: a
/// third ask for the whole 64 MiB file over SPP, a third over HTTP, a third pipeline
/// InfoRequests with all 256 digests (the answers are frames, outside the pin budget).
/// Each may make the node hold at most about 1 MiB unsent in the kernel
/// (`TCP_NOTSENT_LOWAT`), not `tcp_wmem`'s maximum (4 MiB here): a few hundred such
/// connections used to put the host's TCP memory past its pressure mark, where every
/// viewer's socket crawled. Their viewer is still served, and the node's pinned blocks
/// stay within its budget plus a block per connection.
#[test]
fn non_readers_make_the_node_hold_at_most_a_mebibyte_unsent_each() {
    let _alone = exclusive();
    let mut rig = Rig::new(Kind::Origin, "256k", big(), false, &[]);
    let baseline = rig.baseline();
    let conns = NON_READERS + 2;
    let watch = RssWatch::start(rig.target().pid(), rss_bound(conns) + 512 * MIB);
    let what = format!("an origin under {NON_READERS} connections that never read");
    let target = rig.target().addr;
    let mut spp = Vec::new();
    let mut http = Vec::new();
    for k in 0..NON_READERS {
        if k % 3 == 2 {
            let (mut c, _) = Spp::connect_from(rig.attacker(k), target)
                .unwrap_or_else(|e| panic!("{what}: SPP non-reader {k}: {e}{}", rig.diagnose()));
            // 256 digests, about 8 KiB per answer: 2 MiB of requests ask for far more
            // than a socket holds (the node stops reading long before).
            flood(&mut c.s, 2 * MIB as usize, Duration::from_secs(1), |id| {
                frame_bytes(&info_request(id, HOST, "film.bin", 256))
            });
            spp.push(c);
        } else if k % 3 == 0 {
            let (mut c, _) = Spp::connect_from(rig.attacker(k), target)
                .unwrap_or_else(|e| panic!("{what}: SPP non-reader {k}: {e}{}", rig.diagnose()));
            let info = match c.info(1, HOST, "film.bin") {
                Ok(Frame::Info(i)) => i,
                other => panic!("{what}: non-reader {k}: info {other:?}{}", rig.diagnose()),
            };
            c.send(&get_request(2, &info, 0, info.block_count() as u32))
                .unwrap();
            spp.push(c);
        } else {
            let mut s = connect_from(rig.attacker(k), target)
                .unwrap_or_else(|e| panic!("{what}: HTTP non-reader {k}: {e}{}", rig.diagnose()));
            s.write_all(format!("GET /film.bin HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
                .unwrap();
            http.push(s);
        }
    }
    // The node writes until each socket is backed up: wait until the queues stop
    // growing, then look at them.
    let mut last = 0u64;
    wait_until(Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(300));
        let total: u64 = send_queues(target).iter().sum();
        let settled = total == last && total > 0;
        last = total;
        settled
    });
    let queues = send_queues(target);
    let backed_up = queues.iter().filter(|&&q| q > 256 * KIB).count();
    let largest = queues.iter().copied().max().unwrap_or(0);
    let wmem_max = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").unwrap_or_default();
    eprintln!(
        "{what}: {} established sockets, {backed_up} holding over 256 KiB, the largest send queue {} (bound {}; tcp_wmem {})",
        queues.len(),
        mib(largest),
        mib(UNSENT_BOUND),
        wmem_max.trim()
    );
    // The attack took hold: most non-readers have a backed-up socket.
    assert!(
        backed_up >= NON_READERS / 2,
        "{what}: only {backed_up} sockets backed up: the attack did not take hold ({queues:?}){}",
        rig.diagnose()
    );
    assert!(
        largest <= UNSENT_BOUND,
        "{what}: a socket holds {} unsent, over {} ({queues:?}){}",
        mib(largest),
        mib(UNSENT_BOUND),
        rig.diagnose()
    );
    let pinned = rig.target().metric("p2pd_pinned_bytes");
    let budget = 2 * (8 * MIB).max(4 * rig.block_bytes) + conns as u64 * rig.block_bytes;
    assert!(
        pinned <= budget,
        "{what}: {} pinned, over {}{}",
        mib(pinned),
        mib(budget),
        rig.diagnose()
    );
    let viewed = rig.view();
    rig.check_up(&watch, conns, &what);
    rig.check_viewer(viewed, baseline, &what);
    drop(spp);
    drop(http);
    rig.check_rss(&watch, conns, &what);
}

// ---------------------------------------------------------------------------------
// Floods and garbage.

/// A xorshift stream of bytes: random enough for garbage, reproducible.
fn garbage(len: usize, seed: u64) -> Vec<u8> {
    media(len, seed ^ 0x5eed)
}

/// 256 block ranges: half inside the film, half anywhere a file could have blocks.
fn ranges(seed: u64) -> Vec<BlockRange> {
    let r = garbage(256 * 16, seed);
    (0..256)
        .map(|i| {
            let a = u64::from_le_bytes(r[i * 16..i * 16 + 8].try_into().unwrap());
            let b = u64::from_le_bytes(r[i * 16 + 8..i * 16 + 16].try_into().unwrap());
            if i % 2 == 0 {
                let start = a % 1024;
                BlockRange {
                    start,
                    count: 1 + b % (1024 - start),
                }
            } else {
                let start = a % (limits::MAX_BLOCKS_PER_FILE / 2);
                BlockRange {
                    start,
                    count: 1 + b % (limits::MAX_BLOCKS_PER_FILE / 2),
                }
            }
        })
        .collect()
}

const HAVE_FLOODERS: usize = 20;
const GARBAGE_EACH: usize = 20;

fn floods_and_garbage_test(kind: Kind) {
    let _alone = exclusive();
    let mut rig = Rig::new(kind, "16k", film(), false, &["-i"]);
    let baseline = rig.baseline();
    // Flooders, random bytes, half frames, one SPP byte, one HTTP byte, nothing.
    let conns = HAVE_FLOODERS + 5 * GARBAGE_EACH + 2;
    let watch = RssWatch::start(rig.target().pid(), rss_bound(conns) + 512 * MIB);
    let what = format!("{kind:?} under Have floods and garbage");
    let target = rig.target().addr;
    let src = |k: usize| rig.attacker(k);
    // Have and Holdings floods, each from its own "peer" (address and port).
    let flooded = AtomicU64::new(0);
    let flooders: Vec<TcpStream> = std::thread::scope(|sc| {
        let flooded = &flooded;
        let hs: Vec<_> = (0..HAVE_FLOODERS)
            .map(|k| {
                sc.spawn(move || -> Option<TcpStream> {
                    let from = nets().flooders.ip(1 + k as u8);
                    let (mut c, _) = Spp::connect_as(from, target, 20000 + k as u16).ok()?;
                    let info = match c.info(1, HOST, "film.bin") {
                        Ok(Frame::Info(i)) => i,
                        _ => return Some(c.s),
                    };
                    let mut s = c.s;
                    let n = flood(&mut s, FLOOD_BYTES, Duration::from_secs(1), |id| {
                        let h = Have {
                            handle: info.handle,
                            version: info.version,
                            ranges: ranges(u64::from(id) + 1000 * k as u64),
                        };
                        frame_bytes(&if id % 2 == 0 {
                            Frame::Have(h)
                        } else {
                            Frame::Holdings(h)
                        })
                    });
                    flooded.fetch_add(n as u64, Ordering::Relaxed);
                    Some(s)
                })
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().unwrap()).collect()
    });
    eprintln!(
        "{what}: {} flooders sent {} of Have and Holdings",
        flooders.len(),
        mib(flooded.load(Ordering::Relaxed))
    );
    // Random bytes after a valid Hello: each must be closed by the node.
    let mut random = Vec::new();
    for k in 0..GARBAGE_EACH {
        let (mut c, _) = Spp::connect_from(src(k), target)
            .unwrap_or_else(|e| panic!("{what}: random bytes {k}: {e}{}", rig.diagnose()));
        let _ = c.s.write_all(&garbage(64 * 1024, k as u64));
        random.push(c.s);
    }
    // Half a frame, then silence.
    let mut half = Vec::new();
    for k in 0..GARBAGE_EACH {
        let (mut c, _) = Spp::connect_from(src(k), target)
            .unwrap_or_else(|e| panic!("{what}: half frame {k}: {e}{}", rig.diagnose()));
        let f = frame_bytes(&info_request(9, HOST, &"p".repeat(4000), 4096));
        c.s.write_all(&f[..f.len() / 2]).unwrap();
        half.push(c.s);
    }
    // One byte (SPP's Hello type, or an HTTP method's first letter), or nothing at all.
    let mut idle = Vec::new();
    for k in 0..3 * GARBAGE_EACH {
        let mut s = connect_from(src(k), target)
            .unwrap_or_else(|e| panic!("{what}: idle {k}: {e}{}", rig.diagnose()));
        match k % 3 {
            0 => s.write_all(&[frame_type::HELLO]).unwrap(),
            1 => s.write_all(b"G").unwrap(),
            _ => {}
        }
        idle.push(s);
    }
    // The viewer, with every hostile connection still open.
    let viewed = rig.view();
    rig.check_up(&watch, conns, &what);
    rig.check_viewer(viewed, baseline, &what);
    let mut still_open = 0;
    for mut s in random {
        s.set_read_timeout(Some(ANSWER_DEADLINE)).unwrap();
        if !closed_by_peer(&mut s) {
            still_open += 1;
        }
    }
    if still_open > 0 {
        panic!(
            "{what}: {still_open} of {GARBAGE_EACH} connections that sent random bytes after their Hello were not closed{}",
            rig.diagnose()
        );
    }
    drop((flooders, half, idle));
    rig.wait_for_departures();
    let after = rig.view();
    rig.check_up(&watch, conns, &format!("{what}, afterwards"));
    rig.check_viewer(after, baseline, &format!("{what}, afterwards"));
    rig.check_rss(&watch, conns, &what);
}

/// An origin with `-i` takes 20 peers' floods of Have and Holdings frames (256 ranges
/// each, half of them far outside the file), random bytes after Hellos (closed),
/// half frames, single bytes and silent connections, and serves its viewer.
#[test]
fn origin_survives_have_floods_garbage_and_silent_connections() {
    floods_and_garbage_test(Kind::Origin);
}

/// The same against a site cache with `-i`.
#[test]
fn site_cache_survives_have_floods_garbage_and_silent_connections() {
    floods_and_garbage_test(Kind::Scc);
}

/// The same against a client cache with `-i`.
#[test]
fn client_cache_survives_have_floods_garbage_and_silent_connections() {
    floods_and_garbage_test(Kind::Lhc);
}

// ---------------------------------------------------------------------------------
// The panic policy, through the test hooks.

const HOOKS: [(&str, &str); 1] = [("P2PD_TEST_HOOKS", "1")];

/// An origin with the test hooks on, `threads` shards, publishing a small file.
fn hooked_origin(threads: &str) -> (Node, Vec<u8>, [tempfile::TempDir; 2]) {
    let (dir, idx) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let data = media(1 << 20, 3003);
    write_file(dir.path(), "small.bin", &data);
    let node = Node::start_with_env(
        host(),
        &[
            "-p",
            dir.path().to_str().unwrap(),
            "--index-dir",
            idx.path().to_str().unwrap(),
            "--threads",
            threads,
            "-b",
            "16k",
            "-M",
            MEM_ARG,
        ],
        &HOOKS,
    );
    (node, data, [dir, idx])
}

fn get_raw(addr: SocketAddr, path: &str, deadline: Duration) -> Result<Response, String> {
    try_http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
        deadline,
    )
}

/// `GET /_p2pd/test/panic` panics inside its connection: no answer, the connection
/// closes, `p2pd_panics_total` counts it, and the shard (the only one) goes on
/// serving SPP and HTTP.
#[test]
fn a_panic_inside_a_connection_is_contained_and_counted() {
    let _alone = exclusive();
    let (mut node, data, _dirs) = hooked_origin("1");
    let d = |n: &Node| diagnose(&[("origin", n)]);
    assert_eq!(node.metric("p2pd_panics_total"), 0, "{}", d(&node));
    match get_raw(node.addr, "/_p2pd/test/panic", ANSWER_DEADLINE) {
        Err(e) if e.contains("closed") => {}
        other => panic!(
            "GET /_p2pd/test/panic: expected the connection closed without an answer, got {other:?}{}",
            d(&node)
        ),
    }
    assert!(
        node.is_running(),
        "the node exited after a contained panic{}",
        d(&node)
    );
    assert_eq!(node.metric("p2pd_panics_total"), 1, "{}", d(&node));
    let h = health(node.addr).unwrap_or_else(|e| panic!("health: {e}{}", d(&node)));
    assert_eq!((h.status, &h.body[..]), (200, &b"ok\n"[..]), "{}", d(&node));
    // Later requests on the same (only) shard: SPP and HTTP.
    let (mut c, _) = Spp::connect_from(outsider(1), node.addr).unwrap();
    let info = c.info(1, HOST, "small.bin").and_then(expect_info).unwrap();
    assert_eq!(c.get_all(&info).unwrap(), data, "{}", d(&node));
    let r = get_raw(node.addr, "/small.bin", IO_DEADLINE).unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.body == data,
        "HTTP body differs after the panic{}",
        d(&node)
    );
    // A second one is counted too.
    let _ = get_raw(node.addr, "/_p2pd/test/panic", ANSWER_DEADLINE);
    assert_eq!(node.metric("p2pd_panics_total"), 2, "{}", d(&node));
    assert!(node.is_running());
}

/// `GET /_p2pd/test/stall?shard=1&ms=4000` blocks shard 1 of a 2-shard node: health
/// answers 503 naming the shard while it is stalled (from shard 0; a request that
/// landed on shard 1 waits for it), and 200 once it is back.
#[test]
fn a_stalled_shard_makes_health_503_until_it_recovers() {
    let _alone = exclusive();
    let (node, _data, _dirs) = hooked_origin("2");
    let d = |n: &Node| diagnose(&[("origin", n)]);
    let h = health(node.addr).unwrap();
    assert_eq!(h.status, 200, "{}", d(&node));
    let stall = Duration::from_millis(4000);
    let t0 = Instant::now();
    let r = get_raw(
        node.addr,
        "/_p2pd/test/stall?shard=1&ms=4000",
        ANSWER_DEADLINE,
    )
    .unwrap_or_else(|e| panic!("stall: {e}{}", d(&node)));
    assert_eq!(r.status, 200, "stall: {r:?}{}", d(&node));
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "the stall request took {:?} to answer; it must answer at once",
        t0.elapsed()
    );
    // Shard 1 starts its stall once the request's answer is out; nothing observable
    // says so without asking shard 1, which would wait out the stall.
    std::thread::sleep(Duration::from_millis(200));
    // Several health requests at once: the kernel spreads them over both shards.
    let answers: Vec<(Duration, Result<Response, String>)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                sc.spawn(|| {
                    let r = try_http(
                        node.addr,
                        "GET /_p2pd/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                        Duration::from_secs(6),
                    );
                    (t0.elapsed(), r)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let during: Vec<_> = answers
        .iter()
        .filter(|(at, _)| *at + Duration::from_millis(300) < stall)
        .collect();
    let summary: Vec<String> = answers
        .iter()
        .map(|(at, r)| match r {
            Ok(r) => format!(
                "{at:?}: {} {:?}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ),
            Err(e) => format!("{at:?}: {e}"),
        })
        .collect();
    assert!(
        during.iter().any(|(_, r)| r
            .as_ref()
            .is_ok_and(|r| r.status == 503 && String::from_utf8_lossy(&r.body).contains('1'))),
        "no health answer was 503 naming shard 1 during the stall: {summary:#?}{}",
        d(&node)
    );
    assert!(
        during
            .iter()
            .all(|(_, r)| r.as_ref().is_ok_and(|r| r.status == 503)),
        "during the stall every health answer must be 503: {summary:#?}{}",
        d(&node)
    );
    // Once the stall is over (its length is what is tested): 200 within 2 s.
    std::thread::sleep(stall.saturating_sub(t0.elapsed()));
    let back = wait_until(Duration::from_secs(2), || {
        health(node.addr).is_ok_and(|r| r.status == 200)
    });
    assert!(
        back,
        "health did not come back to 200 after the stall{}",
        d(&node)
    );
}

/// `GET /_p2pd/test/abort` panics outside any connection: the process exits at once
/// with status 70.
#[test]
fn a_panic_outside_any_connection_ends_the_process_with_status_70() {
    let _alone = exclusive();
    let (mut node, _data, _dirs) = hooked_origin("2");
    let t0 = Instant::now();
    let _ = get_raw(node.addr, "/_p2pd/test/abort", Duration::from_secs(2));
    let mut status = None;
    wait_until(Duration::from_secs(2), || {
        status = node.child.try_wait().ok().flatten();
        status.is_some()
    });
    match status {
        Some(s) => {
            assert_eq!(
                s.code(),
                Some(70),
                "exit status {s:?} after {:?}; log:\n{}",
                t0.elapsed(),
                node.log_tail(40)
            );
            eprintln!("exited with {s:?} after {:?}", t0.elapsed());
        }
        None => panic!(
            "the node still runs {:?} after /_p2pd/test/abort{}",
            t0.elapsed(),
            diagnose(&[("origin", &node)])
        ),
    }
}

// ---------------------------------------------------------------------------------
// The outstanding-request limit, seen from a well-behaved pipelining client.

/// One connection pipelines 1,500 InfoRequests (metadata only, for the 4096-block
/// file and for files that do not exist) and 1,500 LocateRequests in one burst, then
/// reads: every request is answered exactly once, with its answer or an Error for its
/// own req_id (NotFound for the missing files, Busy past the outstanding-request
/// limit), and the connection stays usable.
fn pipelined_answers_test(kind: Kind) {
    let _alone = exclusive();
    let rig = Rig::new(kind, "16k", film(), true, &[]);
    let info = rig.warm_big();
    let src = match kind {
        Kind::Lhc => rig.target().addr.ip(),
        _ => viewer(),
    };
    let what = format!("{kind:?}: 3,000 pipelined Info and Locate requests");
    let (mut c, _) = Spp::connect_from(src, rig.target().addr).unwrap();
    c.send(&info_request(1, HOST, "big.bin", 0)).unwrap();
    let handle = match c.recv() {
        Ok(Frame::Info(i)) => i.handle,
        other => panic!("{what}: {other:?}{}", rig.diagnose()),
    };
    let n = 1500u32;
    let mut burst = Vec::new();
    for i in 0..n {
        let path = if i % 3 == 2 {
            format!("missing-{i}.bin")
        } else {
            "big.bin".to_string()
        };
        burst.extend(frame_bytes(&info_request(10_000 + i, HOST, &path, 0)));
        burst.extend(frame_bytes(&Frame::LocateRequest(LocateRequest {
            req_id: 20_000 + i,
            handle,
            first_block: u64::from(i) % info.block_count(),
            block_count: 1,
        })));
    }
    c.s.write_all(&burst).unwrap();
    let mut seen = std::collections::HashMap::<u32, String>::new();
    let mut busy = 0;
    let info_id = |id: u32| (10_000..10_000 + n).contains(&id);
    let missing = |id: u32| info_id(id) && (id - 10_000) % 3 == 2;
    while seen.len() < 2 * n as usize {
        let f = c.recv().unwrap_or_else(|e| {
            panic!(
                "{what}: after {} answers: {e}{}",
                seen.len(),
                rig.diagnose()
            )
        });
        let (id, label) = match &f {
            Frame::Info(i) if info_id(i.req_id) && !missing(i.req_id) => (i.req_id, "info"),
            Frame::Locate(l) if (20_000..20_000 + n).contains(&l.req_id) => (l.req_id, "locate"),
            Frame::Error(e) if e.code == ErrorCode::Busy => {
                busy += 1;
                (e.req_id, "busy")
            }
            Frame::Error(e) if e.code == ErrorCode::NotFound && missing(e.req_id) => {
                (e.req_id, "not found")
            }
            other => panic!("{what}: unexpected answer {other:?}{}", rig.diagnose()),
        };
        if let Some(before) = seen.insert(id, label.to_string()) {
            panic!(
                "{what}: req_id {id} answered twice ({before}, then {label}){}",
                rig.diagnose()
            );
        }
    }
    eprintln!("{what}: all answered once, {busy} of them Busy");
    // Still usable.
    let again = c.info(2, HOST, "film.bin").and_then(expect_info);
    assert!(
        again.is_ok(),
        "{what}: the connection is unusable afterwards: {again:?}{}",
        rig.diagnose()
    );
}

#[test]
fn origin_answers_every_pipelined_request_once_or_busy() {
    pipelined_answers_test(Kind::Origin);
}

#[test]
fn site_cache_answers_every_pipelined_request_once_or_busy() {
    pipelined_answers_test(Kind::Scc);
}

/// A site cache relays a downstream's Locate to its upstream (p2p peers live in the
/// origin's registry); a flood of Locates must not become a flood at the origin: the
/// upstream is asked once per file and second, and every Locate is still answered.
#[test]
fn a_locate_flood_through_a_site_cache_asks_its_upstream_once_per_file_and_second() {
    let _alone = exclusive();
    let rig = Rig::new(Kind::Scc, "16k", film(), true, &[]);
    let big_info = rig.warm_big();
    let origin_spp = || rig.origin.metric("p2pd_requests_total{proto=\"spp\"}");
    // An insider: the cache may fetch (and relay) for it.
    let (mut c, _) = Spp::connect_from(insider(0), rig.target().addr).unwrap();
    c.send(&info_request(1, HOST, "big.bin", 0)).unwrap();
    let handle = match c.recv() {
        Ok(Frame::Info(i)) => i.handle,
        other => panic!("info of big.bin: {other:?}{}", rig.diagnose()),
    };
    let before = origin_spp();
    let began = Instant::now();
    const LOCATES: u32 = 2000;
    const WINDOW: u32 = 4;
    let mut answered = 0;
    for batch in 0..LOCATES / WINDOW {
        for k in 0..WINDOW {
            let id = 10 + batch * WINDOW + k;
            c.send(&Frame::LocateRequest(LocateRequest {
                req_id: id,
                handle,
                first_block: u64::from(id) % big_info.block_count(),
                block_count: 1,
            }))
            .unwrap();
        }
        for _ in 0..WINDOW {
            match c.recv() {
                Ok(Frame::Locate(_)) => answered += 1,
                other => panic!("locate {answered}: {other:?}{}", rig.diagnose()),
            }
        }
    }
    let secs = began.elapsed().as_secs_f64();
    let asked = origin_spp() - before;
    eprintln!("{LOCATES} Locates through the site cache in {secs:.1} s: the origin was asked {asked} times");
    assert_eq!(answered, LOCATES);
    // One relay per second at most (the connection is on one shard), and the cache's
    // own revalidations.
    let allowed = secs.ceil() as u64 + 4;
    assert!(
        asked <= allowed,
        "{LOCATES} Locates through the cache asked the origin {asked} times in {secs:.1} s (at most {allowed} expected){}",
        rig.diagnose()
    );
}

/// A client asks for a film, reads nothing, and resets the connection once the node's
/// socket holds more than its writer may run ahead of (half of `UNSENT_LIMIT`): the
/// node frees the connection at once. (A reset socket keeps counting what it never
/// sent, so the writer took it for a slow client and waited out the 30 s pin deadline:
/// a client could hold a connection slot for 30 s with one request and one reset.)
#[test]
fn a_client_that_resets_with_bytes_queued_frees_its_connection_at_once() {
    let film = content(24 * MIB as usize, 29);
    let node = Origin::builder().file("film.bin", &film).start();
    let addr = node.addr;
    let mut s = connect(addr);
    s.write_all(format!("GET /film.bin HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .unwrap();
    let queued = wait_until(Duration::from_secs(20), || {
        send_queues(addr).iter().any(|&q| q > 512 * KIB)
    });
    assert!(
        queued,
        "the node never queued over 512 KiB for a client that reads nothing: {:?}",
        send_queues(addr)
    );
    // Linger 0: close sends a reset.
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
    let reset = Instant::now();
    node.wait_for(
        "p2pd_connections_open to drop back to 1 after the reset",
        |n| n.metric("p2pd_connections_open") == 1,
    );
    let took = reset.elapsed();
    eprintln!("a reset client's connection was freed {took:?} after the reset");
    assert!(
        took < Duration::from_secs(5),
        "the connection of a client that reset stayed open {took:?}"
    );
}
