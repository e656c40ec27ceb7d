//! p2p mode with real processes (scenario 4): an origin with `-i` hands out the client
//! caches that reported blocks (Have), and later viewers fetch from them instead of
//! the origin. Each simulated viewer machine is an LHC on its own 127.28.1.x address.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::*;

const SPP_SENT: &str = "p2pd_bytes_sent_total{proto=\"spp\"}";

fn ip(c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 28, c, d))
}

/// Waits until `node` has recorded more Have reports than `before` and then for a
/// quiet spell with no new one: the viewer's batched reports (every 200 ms) are in.
fn wait_for_reports(node: &Node, before: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = node.metric("p2pd_have_reports_total");
    while last <= before {
        assert!(Instant::now() < deadline, "no Have report arrived");
        std::thread::sleep(Duration::from_millis(20));
        last = node.metric("p2pd_have_reports_total");
    }
    loop {
        std::thread::sleep(Duration::from_millis(400));
        let now = node.metric("p2pd_have_reports_total");
        if now == last || Instant::now() > deadline {
            return;
        }
        last = now;
    }
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
    let dir = tempfile::tempdir().unwrap();
    let idx = tempfile::tempdir().unwrap();
    let data = content(4 * 1024 * 1024, 2801);
    let size = data.len() as u64;
    write_file(dir.path(), "movie.mp4", &data);
    let origin = start_origin_on(ip(0, 1), 1111, dir.path(), idx.path(), &["-i"]);
    let url = format!("http://{}/movie.mp4", origin.addr);
    let mut viewers = Vec::new();
    let mut dirs = Vec::new();
    let mut origin_bytes = Vec::new();
    for k in 1..=10u8 {
        let d = tempfile::tempdir().unwrap();
        let lhc = Node::start_on(
            ip(1, k),
            0,
            &["-c", d.path().to_str().unwrap(), "--threads", "2"],
        );
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
        dirs.push(d);
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
    assert_eq!(
        peer_bytes + later,
        9 * size,
        "every later byte came from a peer or the origin"
    );
}

/// Scenario 5 with p2p: an ISP cache with `-i -n <site> -N <site>`; site viewers'
/// LHCs with `-S cache` get the file from each other and from the cache; a viewer
/// outside the site is served what the cache holds and is never handed a site peer.
#[test]
fn site_viewers_share_through_the_isp_cache_and_outsiders_get_no_site_peer() {
    let dir = tempfile::tempdir().unwrap();
    let idx = tempfile::tempdir().unwrap();
    let data = content(3 * 1024 * 1024 + 77, 2802);
    let size = data.len() as u64;
    write_file(dir.path(), "show.ts", &data);
    let origin = start_origin_on(ip(0, 2), 1111, dir.path(), idx.path(), &[]);
    let sdir = tempfile::tempdir().unwrap();
    let site = "127.28.2.0/24";
    let scc = Node::start_on(
        ip(2, 1),
        1111,
        &[
            "-c",
            sdir.path().to_str().unwrap(),
            "--threads",
            "2",
            "-i",
            "-n",
            site,
            "-N",
            site,
        ],
    );
    let parent = format!("{}", scc.addr);
    let url = format!("http://{}/show.ts", origin.addr);
    let viewer = |c: u8, d: u8, dir: &tempfile::TempDir| {
        Node::start_on(
            ip(c, d),
            0,
            &[
                "-c",
                dir.path().to_str().unwrap(),
                "--threads",
                "2",
                "-S",
                &parent,
            ],
        )
    };
    let fetched = |n: &Node, kind: &str| {
        metric_line(
            &n.metrics_text(),
            &format!("p2pd_fetched_bytes_total{{source=\"{kind}\"}} "),
        )
    };
    let (da, db, dx) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = viewer(2, 10, &da);
    let reports = scc.metric("p2pd_have_reports_total");
    let r = try_proxy_request(a.addr, None, "GET", &url, "").unwrap();
    assert!(r.status == 200 && r.body == data, "site viewer a");
    assert_eq!(
        fetched(&a, "server"),
        size,
        "the first site viewer fetched from the cache"
    );
    wait_for_reports(&scc, reports);

    let b = viewer(2, 11, &db);
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
    let x = viewer(3, 10, &dx);
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
    use p2pd::protocol::{BlockRange, Frame, Have, Holds};
    let dir = tempfile::tempdir().unwrap();
    let idx = tempfile::tempdir().unwrap();
    let data = content(2 * 1024 * 1024, 2803);
    write_file(dir.path(), "f.bin", &data);
    let origin = start_origin_on(ip(9, 1), 1111, dir.path(), idx.path(), &["-i"]);
    let rss_before = rss_bytes(origin.pid());
    const FAKE_PEERS: u16 = 1500;
    let t = Instant::now();
    for p in 0..FAKE_PEERS {
        // Peers from many addresses, each announcing its own port.
        let src = ip(10 + (p / 250) as u8, (p % 250) as u8 + 1);
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
    let deadline = Instant::now() + Duration::from_secs(20);
    while origin.metric("p2pd_have_reports_total") < FAKE_PEERS as u64 * 2 {
        assert!(Instant::now() < deadline, "reports were not all recorded");
        std::thread::sleep(Duration::from_millis(20));
    }
    let known = origin.metric("p2pd_peers_known");
    let rss_after = rss_bytes(origin.pid());
    eprintln!(
        "peers known {known}; origin RSS {} -> {} KiB",
        rss_before / 1024,
        rss_after / 1024
    );
    assert!(
        known <= p2pd::peers::MAX_PEERS_PER_FILE as u64,
        "{known} peers kept"
    );
    assert!(known >= 200, "the newest peers are kept: {known}");
    assert!(
        rss_after < rss_before + 64 * 1024 * 1024,
        "memory grew from {rss_before} to {rss_after}"
    );
    // A Locate answer stays bounded; the origin still serves every byte.
    let (mut c, _) = Spp::connect_from(ip(9, 9), origin.addr).unwrap();
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
        peers <= p2pd::peers::MAX_PEERS_PER_ANSWER
            && locs.len() <= p2pd::protocol::limits::MAX_LOCATIONS,
        "{} locations, {peers} peers",
        locs.len()
    );
    let got = c.get_all(&info).unwrap();
    assert!(got == data, "the origin served wrong bytes after the flood");
}
