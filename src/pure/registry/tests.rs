//! Unit tests of the p2p registry: runs, Locate answers (nearest first, locality,
//! IPv4-mapped addresses), expiry, reports and bans, and its bounds under floods.

use super::*;

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}
fn r(start: u64, count: u64) -> BlockRange {
    BlockRange { start, count }
}
const F: FileVersion = (7, 9);

#[test]
fn runs_merge_and_stay_sorted() {
    let mut runs = Vec::new();
    add_run(&mut runs, (10, 20));
    add_run(&mut runs, (0, 5));
    add_run(&mut runs, (5, 7));
    add_run(&mut runs, (30, 31));
    add_run(&mut runs, (15, 30));
    assert_eq!(runs, vec![(0, 7), (10, 31)]);
    merge_smallest_gap(&mut runs);
    assert_eq!(runs, vec![(0, 31)]);
}

#[test]
fn locate_hands_out_holders_nearest_first_never_the_requester() {
    let t = Instant::now();
    let mut g = Registry::new();
    g.have(F, a("10.1.2.3:1111"), &[r(0, 10)], t);
    g.have(F, a("10.9.0.1:1111"), &[r(5, 10)], t);
    g.have(F, a("192.168.0.1:1111"), &[r(0, 100)], t);
    g.have(F, a("10.1.2.99:1111"), &[r(50, 10)], t);
    let got = g.locate(F, 0, 20, "10.1.2.200".parse().unwrap(), &[], t);
    let addrs: Vec<SocketAddr> = got.iter().map(|l| l.addr).collect();
    // 10.1.2.99 holds nothing in 0..20; the nearest holder first.
    assert_eq!(
        addrs,
        vec![
            a("10.1.2.3:1111"),
            a("10.9.0.1:1111"),
            a("192.168.0.1:1111")
        ]
    );
    assert_eq!(got[1].holds, Holds::Ranges(vec![r(5, 10)]));
    assert_eq!(got[2].holds, Holds::Ranges(vec![r(0, 20)]));
    // The requester is never handed itself.
    let got = g.locate(F, 0, 20, "10.1.2.3".parse().unwrap(), &[], t);
    assert!(got.iter().all(|l| l.addr.ip().to_string() != "10.1.2.3"));
    // Another file version knows nobody.
    assert!(g
        .locate((7, 10), 0, 20, "10.1.2.200".parse().unwrap(), &[], t)
        .is_empty());
}

#[test]
fn locate_hands_out_the_nearest_sixteen_of_many_with_their_runs_inside_the_span() {
    let t = Instant::now();
    let mut g = Registry::new();
    // 60 holders at every distance from the requester, each holding runs on
    // both sides of the span and one across its start.
    let mut all = Vec::new();
    for i in 0..60u32 {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 | (i.wrapping_mul(2_654_435_761) >> 8));
        let addr = SocketAddr::new(ip.into(), 1000 + i as u16);
        g.have(
            F,
            addr,
            &[r(0, 2), r(98, 4 + u64::from(i % 3)), r(200, 5)],
            t,
        );
        all.push(addr);
    }
    let requester: IpAddr = "10.0.0.1".parse().unwrap();
    let got = g.locate(F, 100, 50, requester, &[], t);
    let mut want = all.clone();
    want.sort_by(|x, y| {
        common_prefix(requester, y.ip())
            .cmp(&common_prefix(requester, x.ip()))
            .then(x.cmp(y))
    });
    want.truncate(MAX_PEERS_PER_ANSWER);
    assert_eq!(got.iter().map(|l| l.addr).collect::<Vec<_>>(), want);
    for l in &got {
        let i = u64::from(l.addr.port() - 1000);
        // Only the part of 98..102+ inside 100..150.
        assert_eq!(
            l.holds,
            Holds::Ranges(vec![r(100, 2 + i % 3)]),
            "{}",
            l.addr
        );
    }
    // A span no one holds a block of.
    assert!(g.locate(F, 10, 50, requester, &[], t).is_empty());
}

#[test]
fn locality_keeps_site_requesters_inside_their_site() {
    let t = Instant::now();
    let mut g = Registry::new();
    let site: Vec<ipnet::IpNet> = vec!["10.1.0.0/16".parse().unwrap()];
    g.have(F, a("10.1.5.5:1111"), &[r(0, 10)], t);
    g.have(F, a("172.16.0.1:1111"), &[r(0, 10)], t);
    let inside = g.locate(F, 0, 10, "10.1.9.9".parse().unwrap(), &site, t);
    assert_eq!(
        inside.iter().map(|l| l.addr).collect::<Vec<_>>(),
        vec![a("10.1.5.5:1111")]
    );
    // Outside every -N subnet: never handed a site peer.
    let outside = g.locate(F, 0, 10, "172.16.0.2".parse().unwrap(), &site, t);
    assert_eq!(
        outside.iter().map(|l| l.addr).collect::<Vec<_>>(),
        vec![a("172.16.0.1:1111")]
    );
}

/// A dual-stack listener (`--bind ::`) sees IPv4 clients as IPv4-mapped IPv6
/// addresses: `-N 10.0.0.0/8` must still hold them to their site (found by the
/// registry fuzz target: such a requester was handed peers of every site).
#[test]
fn ipv4_mapped_addresses_count_as_their_ipv4_address() {
    let t = Instant::now();
    let site: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    let mut g = Registry::new();
    g.have(F, a("[::ffff:10.1.2.3]:1111"), &[r(0, 10)], t);
    g.have(F, a("[::ffff:192.168.0.1]:1111"), &[r(0, 10)], t);
    g.have(F, a("[fd00::4]:1111"), &[r(0, 10)], t);
    g.have(F, a("10.9.9.9:1111"), &[r(0, 10)], t);
    let requester = "::ffff:10.1.2.200".parse().unwrap();
    let got: Vec<SocketAddr> = g
        .locate(F, 0, 10, requester, &site, t)
        .iter()
        .map(|l| l.addr)
        .collect();
    // Only its site, nearest first, whichever form the addresses came in.
    assert_eq!(got, vec![a("[::ffff:10.1.2.3]:1111"), a("10.9.9.9:1111")]);
    // And never the requester itself, in either form.
    g.have(F, a("10.1.2.200:2222"), &[r(0, 10)], t);
    let got = g.locate(F, 0, 10, requester, &site, t);
    assert!(got
        .iter()
        .all(|l| l.addr.ip().to_canonical() != requester.to_canonical()));
    // Outside every site: no site's peers.
    let outside = "::ffff:172.16.0.1".parse().unwrap();
    let got: Vec<SocketAddr> = g
        .locate(F, 0, 10, outside, &site, t)
        .iter()
        .map(|l| l.addr)
        .collect();
    assert_eq!(
        got,
        vec![a("[::ffff:192.168.0.1]:1111"), a("[fd00::4]:1111")]
    );
}

#[test]
fn silent_peers_expire_and_removed_peers_are_gone() {
    let t = Instant::now();
    let mut g = Registry::new();
    g.have(F, a("10.0.0.1:1"), &[r(0, 4)], t);
    g.have(F, a("10.0.0.2:1"), &[r(0, 4)], t + Duration::from_secs(100));
    let later = t + PEER_EXPIRY + Duration::from_secs(1);
    assert_eq!(
        g.locate(F, 0, 4, "10.0.0.9".parse().unwrap(), &[], later)
            .len(),
        1
    );
    g.expire(later);
    assert_eq!(g.peers(), 1);
    g.remove_peer(a("10.0.0.2:1"));
    assert_eq!((g.peers(), g.files()), (0, 0));
}

#[test]
fn a_flood_of_reports_stays_within_the_bounds() {
    let t = Instant::now();
    let mut g = Registry::new();
    for f in 0..(MAX_FILES as u64 + 50) {
        for p in 0..3u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + p);
            g.have(
                (f, 1),
                SocketAddr::new(ip.into(), 1),
                &[r(0, 1)],
                t + Duration::from_millis(f),
            );
        }
    }
    assert_eq!(g.files(), MAX_FILES);
    // Many peers on one file, each with many scattered ranges.
    for p in 0..(MAX_PEERS_PER_FILE as u32 + 100) {
        let ip = std::net::Ipv4Addr::from(0x0b00_0000 + p);
        let ranges: Vec<BlockRange> = (0..200).map(|i| r(i * 3, 1)).collect();
        g.have((u64::MAX, 1), SocketAddr::new(ip.into(), 1), &ranges, t);
    }
    let peers = &g.files[&(u64::MAX, 1)];
    assert_eq!(peers.len(), MAX_PEERS_PER_FILE);
    assert!(peers.values().all(|e| e.runs.len() <= MAX_RANGES_PER_PEER));
    // Answers stay bounded too.
    let got = g.locate((u64::MAX, 1), 0, 1000, "1.2.3.4".parse().unwrap(), &[], t);
    assert_eq!(got.len(), MAX_PEERS_PER_ANSWER);
}

#[test]
fn a_reported_peer_is_forgotten_everywhere_and_banned_for_a_while() {
    let t = Instant::now();
    let exp = Duration::from_secs(10);
    let mut g = Registry::with_expiry(exp);
    let (bad, slow, good) = (a("10.0.0.1:1"), a("10.0.0.2:1"), a("10.0.0.3:1"));
    for p in [bad, slow, good] {
        assert!(g.have(F, p, &[r(0, 10)], t));
    }
    assert!(g.have((8, 1), bad, &[r(0, 1)], t));
    let requester = "10.0.0.9".parse().unwrap();
    // Bad data: gone from every file, refused for ten expiry periods.
    assert!(g.report(F, bad, PeerProblem::BadData, t));
    assert!(g.locate((8, 1), 0, 1, requester, &[], t).is_empty());
    assert!(!g.have(F, bad, &[r(0, 10)], t + exp * 9));
    assert!(g
        .locate(F, 0, 10, requester, &[], t)
        .iter()
        .all(|l| l.addr != bad));
    assert!(g.have(F, bad, &[r(0, 10)], t + exp * 10));
    // Unreachable: refused for one expiry period.
    assert!(g.report(F, slow, PeerProblem::Unreachable, t));
    assert!(!g.have(F, slow, &[r(0, 10)], t + exp / 2));
    assert!(g.have(F, slow, &[r(0, 10)], t + exp));
    // The untouched peer is still handed out.
    assert!(g
        .locate(F, 0, 10, requester, &[], t)
        .iter()
        .any(|l| l.addr == good));
    assert_eq!(g.banned(t), 2);
    g.expire(t + exp * 10);
    assert_eq!(g.banned(t + exp * 10), 0);
    assert!(g.banned.is_empty());
}

#[test]
fn reports_about_peers_not_listed_for_the_file_change_nothing() {
    let t = Instant::now();
    let mut g = Registry::new();
    g.have(F, a("10.0.0.1:1"), &[r(0, 10)], t);
    // Another file, an unknown address, another port on the same machine.
    assert!(!g.report((7, 10), a("10.0.0.1:1"), PeerProblem::BadData, t));
    assert!(!g.report(F, a("10.0.0.7:1"), PeerProblem::BadData, t));
    assert!(!g.report(F, a("10.0.0.1:2"), PeerProblem::Unreachable, t));
    assert_eq!(g.peers(), 1);
    assert_eq!(g.banned(t), 0);
}

#[test]
fn the_ban_list_is_bounded() {
    let t = Instant::now();
    let mut g = Registry::new();
    for p in 0..(MAX_BANNED as u32 + 100) {
        let peer = SocketAddr::new(std::net::Ipv4Addr::from(0x0a00_0000 + p).into(), 1);
        g.have(F, peer, &[r(0, 1)], t);
        assert!(g.report(
            F,
            peer,
            PeerProblem::Unreachable,
            t + Duration::from_millis(p.into())
        ));
    }
    assert_eq!(g.banned.len(), MAX_BANNED);
    // The bans that end first made room; the newest are kept.
    let newest = SocketAddr::new(
        std::net::Ipv4Addr::from(0x0a00_0000 + MAX_BANNED as u32 + 99).into(),
        1,
    );
    assert!(g.banned.contains_key(&newest));
}

#[test]
fn holdings_replace_what_a_peer_reported_before() {
    let t = Instant::now();
    let mut g = Registry::new();
    let p = a("10.0.0.1:1");
    let requester = "10.0.0.9".parse().unwrap();
    g.have(F, p, &[r(0, 100)], t);
    // It evicted the first 60 blocks: its next full list says so.
    assert!(g.holdings(F, p, &[r(60, 40)], t));
    let got = g.locate(F, 0, 100, requester, &[], t);
    assert_eq!(got[0].holds, Holds::Ranges(vec![r(60, 40)]));
    // Later Haves add to it.
    g.have(F, p, &[r(0, 1)], t);
    let got = g.locate(F, 0, 100, requester, &[], t);
    assert_eq!(got[0].holds, Holds::Ranges(vec![r(0, 1), r(60, 40)]));
    // An empty list: it holds nothing of the file any more.
    g.holdings(F, p, &[], t);
    assert!(g.locate(F, 0, 100, requester, &[], t).is_empty());
    assert_eq!(g.files(), 0);
}
