//! p2p mode with real processes (scenario 4): an origin with `-i` hands out the client
//! caches that reported blocks (Have), and later viewers fetch from them instead of
//! the origin. Each simulated viewer machine is an LHC on an address of its own; each
//! test has its own /24s (`subnet`), the origin on .1 port 1111 of the first.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use p2pd::pure::protocol::{
    BlockRange, ErrorCode, Frame, Have, Info, PeerProblem, PeerReport, Role,
};

use crate::harness::*;

const SPP_SENT: &str = "p2pd_bytes_sent_total{proto=\"spp\"}";

/// Waits until `node` has recorded more Have reports than `before` and then for a
/// quiet spell with no new one: the viewer's batched reports (every 200 ms) are in.
fn wait_for_reports(node: &Node, before: u64) {
    let reports = || node.metric("p2pd_have_reports_total");
    assert!(
        wait_until(Duration::from_secs(20), || reports() > before),
        "no Have report arrived"
    );
    // Quiet means no new report for two batching intervals; a viewer that keeps
    // reporting for 20 s is left to the caller's checks.
    let mut last = reports();
    wait_until(Duration::from_secs(20), || {
        quiet_spell(Duration::from_millis(400));
        let now = reports();
        std::mem::replace(&mut last, now) == now
    });
}

/// An origin on `net`.1:1111 publishing `data` as `name`, with `extra` options.
fn origin_with(net: Subnet, name: &str, data: &[u8], extra: &[&str]) -> Origin {
    Origin::builder()
        .file(name, data)
        .args(extra)
        .on(net.ip(1), 1111)
        .start()
}

/// The peers (role Lhc) `node`'s Locate answer names for `path` (a file of the origin
/// at `host`), asked from `from`.
fn peers_named_by(node: &Node, from: IpAddr, host: &str, path: &str) -> Vec<SocketAddr> {
    let (mut c, _) = Spp::connect_from(from, node.addr).expect("locate: connect");
    let info = c
        .info(1, host, path)
        .and_then(expect_info)
        .expect("locate: info");
    c.locate(2, info.handle, 0, info.block_count().max(1))
        .and_then(expect_locations)
        .expect("locate: answer")
        .into_iter()
        .filter(|l| l.role == Role::Lhc)
        .map(|l| l.addr)
        .collect()
}

/// The peers an origin's Locate answer names for `path`, asked from `from`.
fn located_peers(origin: &Node, from: IpAddr, path: &str) -> Vec<SocketAddr> {
    peers_named_by(origin, from, &origin.addr.ip().to_string(), path)
}

/// Polls `origin`'s Locate answer for `path` until `cond` holds for its peers, for
/// at most `limit`; returns when it held (or None).
fn wait_for_peers(
    origin: &Node,
    from: IpAddr,
    path: &str,
    limit: Duration,
    mut cond: impl FnMut(&[SocketAddr]) -> bool,
) -> Option<Duration> {
    let t = Instant::now();
    wait_until(limit, || cond(&located_peers(origin, from, path))).then(|| t.elapsed())
}

/// Announces to `origin`, as a node accepting SPP at `peer`, that it holds every
/// block of `path` (a Have, as a viewer's cache sends). The connection is returned
/// open, to announce again.
fn announce_as(peer: SocketAddr, origin: &Node, path: &str) -> (Spp, Info) {
    let (mut c, _) = Spp::connect_as(peer.ip(), origin.addr, peer.port()).expect("connect");
    let info = c
        .info(1, "cdn.example.com", path)
        .and_then(expect_info)
        .expect("info");
    announce_all(&mut c, &info);
    (c, info)
}

fn announce_all(c: &mut Spp, info: &Info) {
    c.send(&Frame::Have(Have {
        handle: info.handle,
        version: info.version,
        ranges: vec![BlockRange {
            start: 0,
            count: info.block_count(),
        }],
    }))
    .expect("have");
}

/// A client cache (LHC) on `ip` with `extra` options.
fn viewer(ip: IpAddr, extra: &[&str]) -> Cache {
    Cache::builder().on(ip, 0).args(extra).start()
}

fn metric_line(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map_or(0, |v| v.trim().parse().unwrap_or(0))
}

/// Scenario 4: ten viewers watch the same file one after another through their own
/// client caches; the origin (with -i) sends the first one the whole file and the
/// later ones far less, as they take blocks from the viewers before them.
#[test]
fn later_viewers_fetch_from_earlier_ones_and_the_origins_egress_falls() {
    let data = content(4 * 1024 * 1024, 2801);
    let size = data.len() as u64;
    let origin = origin_with(subnet(), "movie.mp4", &data, &["-i"]);
    let url = format!("http://{}/movie.mp4", origin.addr);
    let machines = subnet();
    let mut viewers = Vec::new();
    let mut origin_bytes = Vec::new();
    for k in 1..=10u8 {
        let lhc = viewer(machines.ip(k), &[]);
        let before = origin.metric(SPP_SENT);
        let reports = origin.metric("p2pd_have_reports_total");
        let r = try_proxy_request(lhc.addr, None, "GET", &url, "").unwrap_or_else(|e| {
            panic!(
                "viewer {k}: {e}{}",
                diagnose(&[("origin", &origin), ("viewer", &lhc)])
            )
        });
        assert_eq!(r.status, 200, "viewer {k}");
        assert!(r.body == data, "viewer {k}: the body differs");
        // The viewer's reports reach the origin before the next viewer asks.
        wait_for_reports(&origin, reports);
        origin_bytes.push(origin.metric(SPP_SENT) - before);
        viewers.push(lhc);
    }
    let later: u64 = origin_bytes[1..].iter().sum();
    let efficiency = 1.0 - later as f64 / (9.0 * size as f64);
    let peer_bytes: u64 = viewers
        .iter()
        .map(|v| {
            metric_line(
                &v.metrics_text(),
                "p2pd_fetched_bytes_total{source=\"peer\"} ",
            )
        })
        .sum();
    eprintln!(
        "origin bytes per viewer (file {size}): {origin_bytes:?}; viewers 2..10 took {peer_bytes} \
         bytes from peers; peer efficiency {:.1}%",
        efficiency * 100.0
    );
    assert_eq!(
        origin_bytes[0], size,
        "the first viewer gets the whole file from the origin"
    );
    let text = origin.metrics_text();
    assert!(metric_line(&text, "p2pd_peers_known ") >= 9, "{text}");
    assert!(
        metric_line(&text, "p2pd_locate_answers_with_peers_total ") >= 8,
        "{text}"
    );
    for (k, b) in origin_bytes.iter().enumerate().skip(1) {
        assert!(
            *b < size / 2,
            "viewer {}: the origin sent {b} bytes of a {size}-byte file",
            k + 1
        );
    }
    assert!(
        efficiency > 0.8,
        "peer efficiency {:.1}% is below the 80% target",
        efficiency * 100.0
    );
    // Every later byte came from a peer or the origin; a block raced to a second
    // source (late at the first) may be sent twice, the losing copy counted at its
    // sender, so a little more than the file may leave the origin.
    let sent = peer_bytes + later;
    assert!(
        sent >= 9 * size && sent <= 9 * size + 9 * size / 50,
        "viewers 2..10 got {sent} bytes for {} bytes of file",
        9 * size
    );

    // `p2pd get` is handed the same peers and prefers them too.
    let before = origin.metric(SPP_SENT);
    let out = viewers[0].dir().join("got.mp4");
    let o = run_p2pd(&[
        "get",
        &origin.spp_url("movie.mp4"),
        "-o",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        std::fs::read(&out).unwrap() == data,
        "p2pd get's output differs"
    );
    let from_origin = origin.metric(SPP_SENT) - before;
    eprintln!("p2pd get: the origin sent {from_origin} bytes; {stderr}");
    assert!(
        stderr.contains("bytes from peers"),
        "no peer bytes reported: {stderr}"
    );
    assert!(
        from_origin < size / 5,
        "the origin sent p2pd get {from_origin} of {size} bytes"
    );
}

/// Scenario 5 with p2p: an ISP cache with `-i -n <site> -N <site>`; site viewers'
/// LHCs with `-S cache` get the file from each other and from the cache; a viewer
/// outside the site is served what the cache holds and is never handed a site peer.
#[test]
fn site_viewers_share_through_the_isp_cache_and_outsiders_get_no_site_peer() {
    let data = content(3 * 1024 * 1024 + 77, 2802);
    let size = data.len() as u64;
    let origin = origin_with(subnet(), "show.ts", &data, &[]);
    let (site, outside) = (subnet(), subnet());
    let cidr = site.cidr();
    let scc = Cache::builder()
        .on(site.ip(1), 1111)
        .args(&["-i", "-n", &cidr, "-N", &cidr])
        .start();
    let parent = format!("{}", scc.addr);
    let url = format!("http://{}/show.ts", origin.addr);
    let viewer = |ip: IpAddr| viewer(ip, &["-S", &parent]);
    let fetched = |n: &Node, kind: &str| {
        metric_line(
            &n.metrics_text(),
            &format!("p2pd_fetched_bytes_total{{source=\"{kind}\"}} "),
        )
    };
    let a = viewer(site.ip(10));
    let reports = scc.metric("p2pd_have_reports_total");
    let r = try_proxy_request(a.addr, None, "GET", &url, "").unwrap();
    assert!(r.status == 200 && r.body == data, "site viewer a");
    assert_eq!(
        fetched(&a, "server"),
        size,
        "the first site viewer fetched from the cache"
    );
    wait_for_reports(&scc, reports);

    let b = viewer(site.ip(11));
    let r = try_proxy_request(b.addr, None, "GET", &url, "").unwrap();
    assert!(r.status == 200 && r.body == data, "site viewer b");
    let (b_peer, b_server) = (fetched(&b, "peer"), fetched(&b, "server"));
    eprintln!("site viewer b: {b_peer} bytes from a peer, {b_server} from the cache");
    assert_eq!(b_peer + b_server, size);
    assert!(
        b_peer >= size / 2,
        "site viewer b took only {b_peer} bytes from its neighbour"
    );

    // Outside the site: the cache serves what it holds, and no site peer is handed out.
    let x = viewer(outside.ip(10));
    let r = try_proxy_request(x.addr, None, "GET", &url, "").unwrap();
    assert!(
        r.status == 200 && r.body == data,
        "outside viewer x: {}",
        r.status
    );
    assert_eq!(fetched(&x, "peer"), 0, "an outsider was handed a site peer");
    assert_eq!(fetched(&x, "server"), size);
    // The origin sent the file once, for the cache.
    assert_eq!(origin.metric(SPP_SENT), size);

    // The outsider now holds the file and has reported it, yet a site client is only
    // ever handed site peers, and an outsider no site peer.
    scc.wait_for("three peers known", |n| n.metric("p2pd_peers_known") >= 3);
    let host = origin.addr.ip().to_string();
    let mut site_view = peers_named_by(&scc, site.ip(99), &host, "show.ts");
    site_view.sort();
    assert_eq!(site_view, vec![a.addr, b.addr], "a site client's peers");
    let outside_view = peers_named_by(&scc, outside.ip(99), &host, "show.ts");
    assert_eq!(outside_view, vec![x.addr], "an outsider's peers");
}

/// Resident memory of a process, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// A flood of Have reports from many fake peers, each with many scattered ranges: the
/// registry keeps its bounds (peers per file, peers per answer), memory stays flat,
/// and the origin goes on serving.
#[test]
fn the_registry_holds_its_bounds_under_a_flood_of_reports() {
    use p2pd::pure::protocol::{BlockRange, Frame, Have, Holds};
    let data = content(2 * 1024 * 1024, 2803);
    let net = subnet();
    let origin = origin_with(net, "f.bin", &data, &["-i"]);
    let rss_before = rss_bytes(origin.pid());
    const FAKE_PEERS: u16 = 1500;
    let peer_nets: Vec<Subnet> = (0..FAKE_PEERS.div_ceil(250)).map(|_| subnet()).collect();
    let t = Instant::now();
    for p in 0..FAKE_PEERS {
        // Peers from many addresses, each announcing its own port.
        let src = peer_nets[usize::from(p / 250)].ip((p % 250) as u8 + 1);
        let (mut c, _) = Spp::connect_as(src, origin.addr, 2000 + p)
            .unwrap_or_else(|e| panic!("fake peer {p}: {e}"));
        let info = c
            .info(1, "cdn.example.com", "f.bin")
            .and_then(expect_info)
            .unwrap();
        // 300 one-block ranges with gaps: more than a peer's run limit.
        let ranges: Vec<BlockRange> = (0..300)
            .map(|i| BlockRange {
                start: i * 2 % 128,
                count: 1,
            })
            .collect();
        for chunk in ranges.chunks(256) {
            c.send(&Frame::Have(Have {
                handle: info.handle,
                version: info.version,
                ranges: chunk.to_vec(),
            }))
            .unwrap();
        }
    }
    eprintln!("{FAKE_PEERS} fake peers reported in {:?}", t.elapsed());
    // Every report is in (a Ping round trip on a last connection orders after them
    // on that connection only, so wait for the counter).
    assert!(
        wait_until(Duration::from_secs(20), || {
            origin.metric("p2pd_have_reports_total") >= FAKE_PEERS as u64 * 2
        }),
        "reports were not all recorded"
    );
    let known = origin.metric("p2pd_peers_known");
    let rss_after = rss_bytes(origin.pid());
    eprintln!(
        "peers known {known}; origin RSS {} -> {} KiB",
        rss_before / 1024,
        rss_after / 1024
    );
    assert!(
        known <= p2pd::pure::registry::MAX_PEERS_PER_FILE as u64,
        "{known} peers kept"
    );
    assert!(known >= 200, "the newest peers are kept: {known}");
    assert!(
        rss_after < rss_before + 64 * 1024 * 1024,
        "memory grew from {rss_before} to {rss_after}"
    );
    // A Locate answer stays bounded; the origin still serves every byte.
    let (mut c, _) = Spp::connect_from(net.ip(9), origin.addr).unwrap();
    let info = c
        .info(1, "cdn.example.com", "f.bin")
        .and_then(expect_info)
        .unwrap();
    let locs = c
        .locate(2, info.handle, 0, 128)
        .and_then(expect_locations)
        .unwrap();
    let peers = locs
        .iter()
        .filter(|l| matches!(l.holds, Holds::Ranges(_)))
        .count();
    assert!(
        peers <= p2pd::pure::registry::MAX_PEERS_PER_ANSWER
            && locs.len() <= p2pd::pure::protocol::limits::MAX_LOCATIONS,
        "{} locations, {peers} peers",
        locs.len()
    );
    let got = c.get_all(&info).unwrap();
    assert!(got == data, "the origin served wrong bytes after the flood");
}

/// Expiry with and without re-announcing: a viewer that is killed stops announcing
/// and is dropped from Locate answers once the expiry has passed (no one reported it:
/// it goes by the expiry alone); a viewer that holds the file but fetches nothing
/// more keeps announcing (`--announce-interval`) and stays listed long past it.
#[test]
fn a_departed_peer_is_dropped_after_the_expiry_and_an_idle_holder_stays() {
    const EXPIRY: Duration = Duration::from_millis(3000);
    let data = content(1024 * 1024 + 5, 2804);
    let net = subnet();
    let origin = origin_with(net, "ep.mp4", &data, &["-i", "--peer-expiry", "3000"]);
    let url = format!("http://{}/ep.mp4", origin.addr);
    let announce = ["--announce-interval", "500"];
    let mut a = viewer(net.ip(2), &announce);
    // B fetches only what it is asked for (no read-ahead): its holdings are known.
    let b = viewer(net.ip(3), &[announce[0], announce[1], "--read-ahead", "0"]);
    // A viewer's cache serves other machines only what it holds, never fetching for
    // them: nothing before it watched, then its first block and no further.
    let host = origin.addr.ip().to_string();
    let outsider = net.ip(8);
    let (mut c, _) = Spp::connect_from(outsider, b.addr).unwrap();
    match c.info(1, &host, "ep.mp4").unwrap() {
        Frame::Error(e) => assert_eq!(e.code, ErrorCode::Forbidden, "{e:?}"),
        other => panic!("an LHC fetched info for a remote requester: {other:?}"),
    }
    let r = try_proxy_request(b.addr, None, "GET", &url, "Range: bytes=0-99\r\n").unwrap();
    assert!(r.status == 206 && r.body == data[..100]);
    let info = c.info(2, &host, "ep.mp4").and_then(expect_info).unwrap();
    let (got, err) = c.get_range(&info, 3, 0, 3).unwrap();
    assert_eq!(got, vec![0], "only the block it holds");
    assert_eq!(err.map(|e| e.code), Some(ErrorCode::NotCachedHere));
    let before = origin.metric(SPP_SENT);
    quiet_spell(Duration::from_millis(200));
    assert_eq!(
        origin.metric(SPP_SENT),
        before,
        "the LHC fetched for a remote requester"
    );
    drop(c);
    for v in [&a, &b] {
        let r = try_proxy_request(v.addr, None, "GET", &url, "").unwrap();
        assert!(r.status == 200 && r.body == data, "viewer at {}", v.addr);
    }
    let asker = net.ip(9);
    let both = wait_for_peers(&origin, asker, "ep.mp4", Duration::from_secs(10), |p| {
        p.contains(&a.addr) && p.contains(&b.addr)
    });
    assert!(
        both.is_some(),
        "both viewers should be handed out{}",
        diagnose(&[("origin", &origin)])
    );
    let gone_addr = a.addr;
    a.kill9();
    let killed = Instant::now();
    let gone = wait_for_peers(&origin, asker, "ep.mp4", Duration::from_secs(10), |p| {
        !p.contains(&gone_addr)
    })
    .map(|_| killed.elapsed())
    .unwrap_or_else(|| panic!("the dead viewer is still handed out 10 s after it died"));
    eprintln!(
        "dead viewer dropped from Locate answers {} ms after it was killed (expiry {} ms, \
         announce interval 500 ms)",
        gone.as_millis(),
        EXPIRY.as_millis()
    );
    // Its last announce was at most one interval before the kill: it went by the
    // expiry, not at once.
    assert!(
        gone >= EXPIRY - Duration::from_millis(700),
        "dropped after {gone:?}, before the expiry"
    );
    assert!(gone <= EXPIRY + Duration::from_millis(1500), "{gone:?}");
    // The idle holder is still handed out, well past an expiry since it last fetched
    // (the time passing is what is tested).
    std::thread::sleep(EXPIRY);
    let peers = located_peers(&origin, asker, "ep.mp4");
    assert_eq!(
        peers,
        vec![b.addr],
        "only the idle holder is handed out{}",
        diagnose(&[("origin", &origin), ("idle viewer", &b)])
    );
    assert_eq!(origin.metric("p2pd_peers_removed_total"), 0);
}

/// A viewer streams from a peer that dies mid-stream: the viewer's cache finishes
/// from the origin, byte-identical; it reports the peer unreachable, and the origin
/// stops handing it out at once (no waiting for the expiry).
#[test]
fn a_viewer_whose_peer_dies_mid_stream_finishes_from_the_origin() {
    let data = content(4 * 1024 * 1024 + 11, 2805);
    let size = data.len() as u64;
    let net = subnet();
    let origin = origin_with(net, "live.ts", &data, &["-i"]);
    let url = format!("http://{}/live.ts", origin.addr);
    // The first viewer's machine uploads at 4 MB/s: the second viewer's stream from
    // it takes about a second, long enough to kill it in the middle.
    let mut a = viewer(net.ip(2), &["--upload-rate", "4M"]);
    let reports = origin.metric("p2pd_have_reports_total");
    let r = try_proxy_request(a.addr, None, "GET", &url, "").unwrap();
    assert!(r.status == 200 && r.body == data, "first viewer");
    wait_for_reports(&origin, reports);
    assert_eq!(located_peers(&origin, net.ip(9), "live.ts"), vec![a.addr]);

    let b = viewer(net.ip(3), &[]);
    let (baddr, u) = (b.addr, url.clone());
    let stream = std::thread::spawn(move || try_proxy_request(baddr, None, "GET", &u, ""));
    // Kill the peer once the second viewer has taken a part of the file from it.
    let peer_bytes = |n: &Node| {
        metric_line(
            &n.metrics_text(),
            "p2pd_fetched_bytes_total{source=\"peer\"} ",
        )
    };
    let started = wait_until(Duration::from_secs(20), || peer_bytes(&b) >= size / 8);
    assert!(
        started,
        "the second viewer never fetched from the peer{}",
        diagnose(&[("viewer b", &b), ("origin", &origin)])
    );
    let dead = a.addr;
    a.kill9();
    let at_kill = peer_bytes(&b);
    let r = stream.join().unwrap().unwrap_or_else(|e| {
        panic!(
            "the stream broke: {e}{}",
            diagnose(&[("viewer b", &b), ("origin", &origin)])
        )
    });
    assert_eq!(r.status, 200);
    assert!(r.body == data, "the body differs after the peer died");
    let text = b.metrics_text();
    let (from_peer, from_server) = (
        metric_line(&text, "p2pd_fetched_bytes_total{source=\"peer\"} "),
        metric_line(&text, "p2pd_fetched_bytes_total{source=\"server\"} "),
    );
    eprintln!(
        "second viewer: {from_peer} bytes from the peer ({at_kill} when it was killed), \
         {from_server} from the origin"
    );
    assert_eq!(from_peer + from_server, size, "{text}");
    assert!(from_peer < size && from_server > 0, "{text}");
    // The viewer told the origin, which dropped the peer at once.
    assert!(
        metric_line(&text, "p2pd_peer_reports_sent_total ") >= 1,
        "{text}"
    );
    let dropped = wait_for_peers(&origin, net.ip(9), "live.ts", Duration::from_secs(5), |p| {
        !p.contains(&dead)
    });
    assert!(
        dropped.is_some(),
        "the origin still hands out the dead peer{}",
        diagnose(&[("origin", &origin)])
    );
    let otext = origin.metrics_text();
    assert!(
        metric_line(&otext, "p2pd_peer_reports_total{problem=\"unreachable\"} ") >= 1,
        "{otext}"
    );
    assert_eq!(
        metric_line(&otext, "p2pd_peers_removed_total "),
        1,
        "{otext}"
    );
}

/// Peers that serve corrupted blocks: they are announced to the origin as holders of
/// the file (a Have from their address and port), a viewer's cache and a `p2pd get`
/// are handed them, every bad block is caught by the origin's digest, the outputs are
/// byte-identical, and each client reports the peer, which the origin removes and
/// whose further Haves it refuses.
#[test]
fn a_peer_serving_corrupted_blocks_never_reaches_a_viewer_and_is_removed() {
    // The block size origins publish with.
    const BS: usize = ORIGIN_BLOCK;
    let data = content(160 * BS + 99, 2806);
    let size = data.len() as u64;
    let net = subnet();
    let origin = origin_with(net, "m.mkv", &data, &["-i"]);
    let good = origin.dir().join("m.mkv");
    // Two bad peers: nodes with a copy of the file that goes bad once indexed.
    let mtime = std::fs::metadata(&good).unwrap().modified().unwrap();
    let mut bad = Vec::new();
    for d in [9u8, 10] {
        let (bdir, bidx) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let p = write_file(bdir.path(), "m.mkv", &data);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let n = start_origin_on(net.ip(d), 1111, bdir.path(), bidx.path(), &[]);
        corrupt_every_block_in_place(&n, &p, &data, 7);
        bad.push((n, bdir, bidx));
    }
    let (x1, x2) = (bad[0].0.addr, bad[1].0.addr);
    let asker = net.ip(99);

    // 1. A viewer's cache is handed the first bad peer, prefers it, and catches it.
    let (mut x1_conn, x1_info) = announce_as(x1, &origin, "m.mkv");
    assert!(
        wait_for_peers(&origin, asker, "m.mkv", Duration::from_secs(5), |p| p
            == [x1])
        .is_some()
    );
    let v = viewer(net.ip(2), &[]);
    let url = format!("http://{}/m.mkv", origin.addr);
    let r = try_proxy_request(v.addr, None, "GET", &url, "").unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.body == data,
        "a corrupted byte reached the viewer{}",
        diagnose(&[("viewer", &v)])
    );
    let text = v.metrics_text();
    assert!(
        metric_line(&text, "p2pd_digest_failures_total ") >= 1,
        "{text}"
    );
    assert_eq!(
        metric_line(&text, "p2pd_fetched_bytes_total{source=\"peer\"} "),
        0,
        "{text}"
    );
    assert_eq!(
        metric_line(&text, "p2pd_fetched_bytes_total{source=\"server\"} "),
        size
    );
    assert!(
        metric_line(&text, "p2pd_peer_reports_sent_total ") >= 1,
        "{text}"
    );
    let removed = wait_for_peers(&origin, asker, "m.mkv", Duration::from_secs(5), |p| {
        !p.contains(&x1)
    });
    assert!(removed.is_some(), "the origin still hands out the bad peer");
    // Its next announcement is refused: it stays out.
    announce_all(&mut x1_conn, &x1_info);
    quiet_spell(Duration::from_millis(300));
    assert!(!located_peers(&origin, asker, "m.mkv").contains(&x1));
    let otext = origin.metrics_text();
    assert!(
        metric_line(&otext, "p2pd_peer_reports_total{problem=\"bad_data\"} ") >= 1,
        "{otext}"
    );
    assert_eq!(metric_line(&otext, "p2pd_peers_removed_total "), 1);

    // 2. `p2pd get` is handed the second bad peer: the same.
    let _x2_conn = announce_as(x2, &origin, "m.mkv");
    assert!(
        wait_for_peers(&origin, asker, "m.mkv", Duration::from_secs(5), |p| p
            .contains(&x2))
        .is_some()
    );
    // A client that was never handed the peer cannot get it removed.
    let (mut liar, _) = Spp::connect_from(net.ip(98), origin.addr).unwrap();
    let info = liar
        .info(1, &origin.addr.ip().to_string(), "m.mkv")
        .and_then(expect_info)
        .unwrap();
    liar.send(&Frame::PeerReport(PeerReport {
        handle: info.handle,
        version: info.version,
        problem: PeerProblem::BadData,
        peer: x2,
    }))
    .unwrap();
    quiet_spell(Duration::from_millis(300));
    assert!(located_peers(&origin, asker, "m.mkv").contains(&x2));
    assert_eq!(origin.metric("p2pd_peers_removed_total"), 1);
    let out = v.dir().join("got.mkv");
    let spp_url = origin.spp_url("m.mkv");
    let o = run_p2pd(&["get", &spp_url, "-o", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        std::fs::read(&out).unwrap() == data,
        "a corrupted byte reached p2pd get's output"
    );
    assert!(
        stderr.contains(&format!("from {x2}: 0 bytes in 0 blocks (dropped)")),
        "{stderr}"
    );
    let removed = wait_for_peers(&origin, asker, "m.mkv", Duration::from_secs(5), |p| {
        !p.contains(&x2)
    });
    assert!(
        removed.is_some(),
        "the origin still hands out the second bad peer{}",
        diagnose(&[("origin", &origin)])
    );
    assert_eq!(origin.metric("p2pd_peers_removed_total"), 2);
    // Nothing bad was ever served as good by the origin itself.
    assert_eq!(origin.metric("p2pd_digest_failures_total"), 0);
}

/// A peer that accepts connections but never answers (a machine gone silent behind a
/// NAT or a firewall): a viewer's cache does not wait it out (the block it was asked
/// for is raced to the origin once the peer is overdue), streams the file from the
/// origin, and once the peer connect deadline has passed without a connection reports
/// it unreachable and drops it for the file (on every shard).
#[test]
fn a_silent_peer_costs_one_attempt_and_is_reported() {
    let data = content(2 * 1024 * 1024 + 3, 2807);
    let size = data.len() as u64;
    let net = subnet();
    let origin = origin_with(net, "quiet.mp4", &data, &["-i"]);
    // Connections to it are completed by the kernel and then left unanswered.
    let silent = std::net::TcpListener::bind((net.ip(9), 0)).unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _announcer = announce_as(silent_addr, &origin, "quiet.mp4");
    assert_eq!(
        located_peers(&origin, net.ip(99), "quiet.mp4"),
        vec![silent_addr]
    );
    let v = viewer(net.ip(2), &[]);
    let url = format!("http://{}/quiet.mp4", origin.addr);
    let t = Instant::now();
    let r = try_proxy_request(v.addr, None, "GET", &url, "").unwrap();
    let took = t.elapsed();
    assert_eq!(r.status, 200);
    assert!(r.body == data, "the body differs");
    let text = v.metrics_text();
    eprintln!("a viewer handed a silent peer got the file in {took:?}");
    assert_eq!(
        metric_line(&text, "p2pd_fetched_bytes_total{source=\"server\"} "),
        size,
        "{text}"
    );
    let reported = wait_until(Duration::from_secs(5), || {
        metric_line(&v.metrics_text(), "p2pd_peer_reports_sent_total ") >= 1
    });
    assert!(reported, "{}", v.metrics_text());
    // At most one peer connect deadline (1.5 s), not one per block, shard or retry.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let removed = wait_for_peers(
        &origin,
        net.ip(99),
        "quiet.mp4",
        Duration::from_secs(5),
        // The viewer itself is handed out once its Haves are in: only the silent
        // peer must be gone.
        |p| !p.contains(&silent_addr),
    );
    assert!(
        removed.is_some(),
        "the origin still hands out the silent peer{}",
        diagnose(&[("origin", &origin), ("viewer", &v)])
    );
    assert_eq!(
        metric_line(
            &origin.metrics_text(),
            "p2pd_peer_reports_total{problem=\"unreachable\"} "
        ),
        1
    );
}

/// A viewer whose cache evicted the start of a film (`-C`) stops being handed out for
/// it: its announce is a complete list (Holdings), which replaces what it reported
/// while it fetched.
#[test]
fn evicted_blocks_stop_being_handed_out() {
    use p2pd::pure::protocol::Holds;
    let data = content(2 * 1024 * 1024, 2808);
    let net = subnet();
    let origin = origin_with(net, "long.mp4", &data, &["-i"]);
    let v = viewer(net.ip(2), &["-C", "512k", "--announce-interval", "500"]);
    let url = format!("http://{}/long.mp4", origin.addr);
    let r = try_proxy_request(v.addr, None, "GET", &url, "").unwrap();
    assert!(r.status == 200 && r.body == data);
    let blocks = (data.len() as u64).div_ceil(16 * 1024);
    // What `node`'s Locate answer says the viewer holds.
    let held_per = |node: &Node| -> Vec<(u64, u64)> {
        let (mut c, _) = Spp::connect_from(net.ip(99), node.addr).unwrap();
        let info = c
            .info(1, &origin.addr.ip().to_string(), "long.mp4")
            .and_then(expect_info)
            .unwrap();
        c.locate(2, info.handle, 0, blocks)
            .and_then(expect_locations)
            .unwrap()
            .into_iter()
            .filter(|l| l.addr == v.addr)
            .flat_map(|l| match l.holds {
                Holds::Ranges(rs) => rs.into_iter().map(|r| (r.start, r.count)).collect(),
                Holds::All => vec![(0, blocks)],
            })
            .collect()
    };
    // At most 512 KiB of 16 KiB blocks stay on its disk.
    let limit_blocks = 512 / 16;
    // Its reports while fetching named blocks it has since evicted; its next announce
    // replaces them with what it holds, as it says itself (to an outsider, a cache
    // lists itself with the ranges it holds).
    let (mut held, mut own) = (Vec::new(), Vec::new());
    let agree = wait_until(Duration::from_secs(10), || {
        (held, own) = (held_per(&origin), held_per(&v));
        !held.is_empty() && held == own
    });
    assert!(
        agree,
        "the origin hands the viewer out for {held:?}; it holds {own:?}{}",
        diagnose(&[("origin", &origin), ("viewer", &v)])
    );
    eprintln!("after eviction the viewer is handed out for {held:?} of {blocks} blocks");
    assert!(
        held.iter().map(|r| r.1).sum::<u64>() <= limit_blocks,
        "{held:?}"
    );
    assert!(
        held[0].0 > 0,
        "handed out for the first block, evicted: {held:?}"
    );
}

/// More lying peers than a block has attempts (eight that refuse connections, eight
/// that accept and never answer, each announcing the whole file): a viewer's cache is
/// never cut off while the origin can serve. After a peer fails a block the block goes
/// to the origin; before, six peer attempts failed the block and the player got a
/// short body.
#[test]
fn a_viewer_is_never_cut_off_while_the_origin_can_serve() {
    let data = content(1024 * 1024 + 11, 2811);
    let net = subnet();
    let origin = origin_with(net, "liars.mp4", &data, &["-i"]);
    let mut announcers = Vec::new();
    let mut silent = Vec::new();
    for d in 20..28 {
        // A port nobody listens on: connections are refused.
        let l = std::net::TcpListener::bind((net.ip(d), 0)).unwrap();
        let refused = l.local_addr().unwrap();
        drop(l);
        announcers.push(announce_as(refused, &origin, "liars.mp4"));
        // A listener that never accepts: the handshake is never answered.
        let l = std::net::TcpListener::bind((net.ip(d + 10), 0)).unwrap();
        announcers.push(announce_as(l.local_addr().unwrap(), &origin, "liars.mp4"));
        silent.push(l);
    }
    let v = viewer(net.ip(2), &[]);
    let url = format!("http://{}/liars.mp4", origin.addr);
    let t = Instant::now();
    let r = try_proxy_request(v.addr, None, "GET", &url, "").unwrap();
    let took = t.elapsed();
    assert_eq!(r.status, 200);
    assert!(
        r.body == data,
        "the player got {} of {} bytes{}",
        r.body.len(),
        data.len(),
        diagnose(&[("origin", &origin), ("viewer", &v)])
    );
    eprintln!("a viewer handed 16 lying peers got the file in {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let text = v.metrics_text();
    assert_eq!(
        metric_line(&text, "p2pd_fetched_bytes_total{source=\"server\"} "),
        data.len() as u64,
        "{text}"
    );
}
