//! The `registry` fuzz target: the p2p registry driven by generated operations and
//! checked against a simple model of what it must answer.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::input::Input;
use crate::pure::protocol::limits::{MAX_BLOCKS_PER_FILE, MAX_LOCATIONS};
use crate::pure::protocol::{encode, BlockRange, Frame, Holds, Locate, PeerProblem};
use crate::pure::registry::{self, Bounds, Registry};

/// Subnets the registry target draws its `-N` locality from.
const SUBNETS: [&str; 5] = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "192.168.0.0/16",
    "fd00::/8",
    "2001:db8::/32",
];

/// The p2p registry driven by a sequence of operations read from the input: Have,
/// Holdings, Locate, PeerReport, expiry, removals and time passing (forwards only),
/// with peers of both families and IPv4-mapped IPv6 addresses. Most inputs make the
/// registry's bounds (files, peers per file, bans) small, so the code that makes room
/// runs often; the rest keep the real ones. After every operation its bounds must hold; every Locate answer is bounded, nearest first, within
/// the asked span, free of the requester, of removed and banned peers and of silent
/// ones, keeps `-N` sites apart (an IPv4-mapped address counts as its IPv4 address) and
/// encodes as a Locate frame.
pub fn registry(data: &[u8]) {
    let mut input = Input::new(data);
    let expiry = match input.u8() % 4 {
        0 => registry::PEER_EXPIRY,
        1 => Duration::from_secs(1),
        2 => Duration::from_millis(1000 + u64::from(input.u32())),
        _ => Duration::from_millis(1000 + u64::from(input.u16())),
    };
    let locality: Vec<ipnet::IpNet> = {
        let pick = input.u8();
        SUBNETS
            .iter()
            .enumerate()
            .filter(|(i, _)| pick & (1 << i) != 0)
            .map(|(_, s)| s.parse().expect("valid subnet"))
            .collect()
    };
    let start = Instant::now();
    let mut now = start;
    let (small, banned) = (input.u8(), input.u8());
    let bounds = if small >= 0xc0 {
        Bounds::default()
    } else {
        Bounds {
            files: usize::from(small & 7) + 1,
            peers_per_file: usize::from(small >> 3 & 7) + 1,
            banned: usize::from(banned & 15) + 1,
        }
    };
    let mut reg = Registry::with_bounds(expiry, bounds);
    let mut model = Model {
        expiry,
        bounds,
        ..Model::default()
    };
    // Ops are at least one byte each; the cap bounds the work of long inputs.
    for _ in 0..512 {
        if input.is_empty() {
            break;
        }
        let op = input.u8();
        match op % 10 {
            0 | 1 => {
                let file = file_of(input.u8());
                let peer = model.peer(&mut input);
                let ranges = ranges_of(&mut input);
                let replace = op % 10 == 1;
                let accepted = if replace {
                    reg.holdings(file, peer, &ranges, now)
                } else {
                    reg.have(file, peer, &ranges, now)
                };
                model.recorded(file, peer, &ranges, accepted, now, replace);
            }
            2 | 3 => {
                let file = file_of(input.u8());
                let requester = model.ip(&mut input);
                let first = input.u64() % MAX_BLOCKS_PER_FILE;
                let count = match input.u8() % 3 {
                    0 => u64::from(input.u8()) + 1,
                    1 => u64::from(input.u32()) + 1,
                    _ => MAX_BLOCKS_PER_FILE,
                }
                .min(MAX_BLOCKS_PER_FILE - first);
                let answer = reg.locate(file, first, count, requester, &locality, now);
                model.check_locate(&answer, file, first, count, requester, &locality, now);
            }
            4 => {
                let file = file_of(input.u8());
                let peer = model.peer(&mut input);
                let problem = if input.u8() & 1 == 0 {
                    PeerProblem::Unreachable
                } else {
                    PeerProblem::BadData
                };
                let (files, peers) = (reg.files(), reg.peers());
                let listed = model.listed(file, peer);
                let removed = reg.report(file, peer, problem, now);
                if !removed {
                    // Reports about peers not listed change nothing.
                    assert_eq!((reg.files(), reg.peers()), (files, peers));
                    assert!(!listed, "a listed peer's report was ignored");
                } else {
                    model.reported(peer, problem, now);
                }
            }
            5 => {
                reg.expire(now);
                model.expired(now);
            }
            6 | 7 => {
                let ms = match input.u8() % 4 {
                    0 => u64::from(input.u8()),
                    1 => u64::from(input.u16()),
                    2 => expiry.as_millis() as u64,
                    _ => u64::from(input.u32()),
                };
                now += Duration::from_millis(ms);
            }
            8 => {
                let peer = model.peer(&mut input);
                reg.remove_peer(peer);
                model.forget(peer);
            }
            _ => {
                // A little time passes.
                now += Duration::from_millis(u64::from(input.u8()) * 10);
            }
        }
        if let Err(e) = reg.check_bounds() {
            panic!("registry out of its bounds after op {op}: {e}");
        }
        assert!(reg.files() <= registry::MAX_FILES);
        assert!(reg.banned(now) <= registry::MAX_BANNED);
    }
}

/// A small set of file versions, so operations meet.
fn file_of(b: u8) -> registry::FileVersion {
    (u64::from(b % 6), u64::from(b / 6 % 2))
}

/// Up to 8 ranges, each valid on the wire (count >= 1, ending by MAX_BLOCKS_PER_FILE),
/// mostly small so they touch and merge.
fn ranges_of(input: &mut Input<'_>) -> Vec<BlockRange> {
    let n = input.u8();
    let many = n >= 250;
    let n = if many { 80 } else { usize::from(n % 9) };
    (0..n)
        .map(|i| {
            let (start, count) = if many {
                (i as u64 * 3 + u64::from(input.u8() % 2), 1)
            } else {
                match input.u8() % 4 {
                    0 => (u64::from(input.u8()), u64::from(input.u8() % 16) + 1),
                    1 => (u64::from(input.u16()), u64::from(input.u16()) + 1),
                    2 => (input.u64() % MAX_BLOCKS_PER_FILE, u64::MAX),
                    _ => (input.u64() % MAX_BLOCKS_PER_FILE, input.u64()),
                }
            };
            let count = count.clamp(1, MAX_BLOCKS_PER_FILE - start);
            BlockRange { start, count }
        })
        .collect()
}

/// What the target knows about the registry's contents, from the operations it made.
#[derive(Default)]
struct Model {
    expiry: Duration,
    /// Per file version and peer: when it last reported blocks that were recorded.
    seen: HashMap<SocketAddr, HashMap<registry::FileVersion, Instant>>,
    /// Peers removed by a report and not recorded since.
    removed: HashSet<SocketAddr>,
    /// Reported peers and until when their reports are refused.
    bans: HashMap<SocketAddr, Instant>,
    /// Every address used, so later operations can name them again.
    addrs: Vec<SocketAddr>,
    bounds: Bounds,
    /// A bound was passed: the registry may have dropped entries or bans the model
    /// still has.
    overflowed: bool,
}

impl Model {
    /// An address: a fresh one of some family, or one used before.
    fn ip(&mut self, input: &mut Input<'_>) -> IpAddr {
        let tag = input.u8();
        let v4 = |a: [u8; 2]| Ipv4Addr::new(10, a[0] % 3, 0, a[1] % 8);
        match tag % 8 {
            0 => IpAddr::V4(v4(input.bytes())),
            1 => IpAddr::V6(v4(input.bytes()).to_ipv6_mapped()),
            2 => IpAddr::V4(Ipv4Addr::new(192, 168, 0, input.u8() % 8)),
            3 => IpAddr::V6(Ipv6Addr::new(
                0xfd00,
                0,
                0,
                0,
                0,
                0,
                0,
                u16::from(input.u8() % 8),
            )),
            4 => IpAddr::V4(Ipv4Addr::from(input.bytes::<4>())),
            5 => IpAddr::V6(Ipv6Addr::from(input.bytes::<16>())),
            _ => match self.addrs.len() {
                0 => IpAddr::V4(Ipv4Addr::LOCALHOST),
                n => {
                    let a = self.addrs[usize::from(input.u8()) % n].ip();
                    // The same host in the other form, sometimes.
                    match (a, tag & 0x80 != 0) {
                        (IpAddr::V4(v4), true) => IpAddr::V6(v4.to_ipv6_mapped()),
                        (IpAddr::V6(v6), true) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
                        _ => a,
                    }
                }
            },
        }
    }

    /// A peer's SPP address: mostly one used before, so reports meet listed peers.
    fn peer(&mut self, input: &mut Input<'_>) -> SocketAddr {
        let pick = input.u8();
        if pick < 160 && !self.addrs.is_empty() {
            return self.addrs[usize::from(pick) % self.addrs.len()];
        }
        let addr = SocketAddr::new(self.ip(input), 7000 + u16::from(input.u8() % 3));
        if self.addrs.len() < 64 {
            self.addrs.push(addr);
        }
        addr
    }

    fn banned(&self, peer: SocketAddr, now: Instant) -> bool {
        self.bans.get(&peer).is_some_and(|&until| until > now)
    }

    fn recorded(
        &mut self,
        file: registry::FileVersion,
        peer: SocketAddr,
        ranges: &[BlockRange],
        accepted: bool,
        now: Instant,
        replace: bool,
    ) {
        // A report within its ban is refused, unless the ban list overflowed (then
        // the ban that ended first was dropped, which the model does not follow).
        if self.banned(peer, now) && !self.overflowed {
            assert!(!accepted, "a banned peer's report was recorded");
        }
        if !self.banned(peer, now) {
            assert!(accepted, "a report of a peer not banned was refused");
        }
        if !accepted {
            return;
        }
        let files = self.seen.entry(peer).or_default();
        if replace {
            files.remove(&file);
        }
        if !ranges.is_empty() {
            files.insert(file, now);
            self.removed.remove(&peer);
        }
        // Past a bound the registry made room (dropped a file or a file's oldest
        // peer): from then on the model no longer knows exactly what it lists.
        let files: HashSet<_> = self.seen.values().flat_map(HashMap::keys).collect();
        let peers_of_file = self.seen.values().filter(|f| f.contains_key(&file)).count();
        self.overflowed |=
            files.len() > self.bounds.files || peers_of_file > self.bounds.peers_per_file;
        if self.seen.get(&peer).is_some_and(HashMap::is_empty) {
            self.seen.remove(&peer);
        }
    }

    /// Whether the registry must list `peer` for `file`: it was recorded and not
    /// removed since, and no bound has made the registry drop entries (which the model
    /// does not follow).
    fn listed(&self, file: registry::FileVersion, peer: SocketAddr) -> bool {
        !self.overflowed && self.seen.get(&peer).is_some_and(|f| f.contains_key(&file))
    }

    fn reported(&mut self, peer: SocketAddr, problem: PeerProblem, now: Instant) {
        let periods = match problem {
            PeerProblem::Unreachable => 1,
            PeerProblem::BadData => registry::BAD_DATA_BAN_EXPIRIES,
        };
        let until = now + self.expiry * periods;
        let e = self.bans.entry(peer).or_insert(until);
        *e = (*e).max(until);
        self.overflowed |= self.bans.len() > self.bounds.banned;
        self.removed.insert(peer);
        self.seen.remove(&peer);
    }

    fn expired(&mut self, now: Instant) {
        let expiry = self.expiry;
        self.bans.retain(|_, until| *until > now);
        for files in self.seen.values_mut() {
            files.retain(|_, at| now.saturating_duration_since(*at) < expiry);
        }
        self.seen.retain(|_, files| !files.is_empty());
    }

    fn forget(&mut self, peer: SocketAddr) {
        self.seen.remove(&peer);
    }

    #[allow(clippy::too_many_arguments)]
    fn check_locate(
        &self,
        answer: &[crate::pure::protocol::Location],
        file: registry::FileVersion,
        first: u64,
        count: u64,
        requester: IpAddr,
        locality: &[ipnet::IpNet],
        now: Instant,
    ) {
        assert!(answer.len() <= registry::MAX_PEERS_PER_ANSWER);
        assert!(answer.len() <= MAX_LOCATIONS);
        let requester = requester.to_canonical();
        let site = locality.iter().find(|n| n.contains(&requester));
        let end = first + count;
        let mut addrs = HashSet::new();
        let mut last_prefix = u32::MAX;
        for loc in answer {
            let ip = loc.addr.ip().to_canonical();
            assert!(addrs.insert(loc.addr), "{} twice in one answer", loc.addr);
            assert_ne!(ip, requester, "the requester {requester} is handed itself");
            assert!(
                !self.removed.contains(&loc.addr),
                "removed {} handed out",
                loc.addr
            );
            // (Unless the ban list overflowed: then a ban was dropped to make room.)
            assert!(
                self.overflowed || !self.banned(loc.addr, now),
                "banned {} handed out",
                loc.addr
            );
            let seen = self.seen.get(&loc.addr).and_then(|f| f.get(&file));
            assert!(
                seen.is_some_and(|&at| now.saturating_duration_since(at) < self.expiry),
                "{} handed out but not heard from within the expiry",
                loc.addr
            );
            match site {
                Some(n) => assert!(n.contains(&ip), "{ip} handed across sites to {requester}"),
                None => assert!(
                    !locality.iter().any(|n| n.contains(&ip)),
                    "site peer {ip} handed to {requester} outside every site"
                ),
            }
            let prefix = registry::common_prefix(requester, ip);
            assert!(prefix <= last_prefix, "answer is not nearest first");
            last_prefix = prefix;
            let Holds::Ranges(ranges) = &loc.holds else {
                panic!("a peer holds ranges, not the whole file");
            };
            assert!(!ranges.is_empty() && ranges.len() <= registry::MAX_RANGES_PER_PEER);
            let mut prev_end = None;
            for r in ranges {
                assert!(r.count >= 1 && r.start >= first && r.start + r.count <= end);
                assert!(
                    prev_end.is_none_or(|p| p < r.start),
                    "ranges not disjoint/sorted"
                );
                prev_end = Some(r.start + r.count);
            }
        }
        let frame = Frame::Locate(Locate {
            req_id: 1,
            locations: answer.to_vec(),
        });
        let mut out = BytesMut::new();
        encode(&frame, &mut out).expect("a Locate answer encodes");
    }
}
