//! The client registry of p2p mode (`-i`), pure: no I/O, the time passed in. Peers
//! that fetched blocks from this node report them (Have); later requesters are handed
//! the peers that hold the blocks they ask about, nearest first, and with `-N` only
//! peers of their own subnet. Entries expire when a peer stops reporting; a peer that a
//! client reports unreachable or bad (PeerReport) is removed, and its reports are
//! refused for a while (one expiry period for unreachable, [`BAD_DATA_BAN_EXPIRIES`]
//! for bad data), so it is not handed out again as soon as it reports.
//!
//! Memory is bounded: at most [`MAX_FILES`] files, [`MAX_PEERS_PER_FILE`] peers per
//! file and [`MAX_RANGES_PER_PEER`] block ranges per peer and file. An entry takes
//! about 100 bytes plus 16 per range, so the registry stays under
//! `MAX_FILES * MAX_PEERS_PER_FILE * (100 + 16 * MAX_RANGES_PER_PEER)` bytes in the
//! worst case (about 300 MiB), and in practice a few MiB: most peers hold one run of
//! blocks. Past a bound the least recently seen entry makes room.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::pure::protocol::{BlockRange, Holds, Location, PeerProblem, Role};

/// Files with peers at most.
pub const MAX_FILES: usize = 4096;
/// Peers remembered per file at most.
pub const MAX_PEERS_PER_FILE: usize = 256;
/// Block ranges remembered per peer and file; beyond it the smallest are merged away.
pub const MAX_RANGES_PER_PEER: usize = 64;
/// A peer not heard from for this long is forgotten, unless `--peer-expiry` says.
pub const PEER_EXPIRY: Duration = Duration::from_secs(120);
/// Peers handed out in one Locate answer at most.
pub const MAX_PEERS_PER_ANSWER: usize = 16;
/// Removed peers whose reports are refused for a while, at most; past it the ban that
/// ends first makes room.
pub const MAX_BANNED: usize = 4096;
/// A peer reported for bad data is refused for this many expiry periods (20 minutes
/// by default).
pub const BAD_DATA_BAN_EXPIRIES: u32 = 10;

/// A file version as the registry names it: the node's own file id and version.
pub type FileVersion = (u64, u64);

/// The bounds a registry keeps: [`MAX_FILES`], [`MAX_PEERS_PER_FILE`] and
/// [`MAX_BANNED`] unless a test or fuzz target makes them small, so that the code that
/// makes room runs often and cheaply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub files: usize,
    pub peers_per_file: usize,
    pub banned: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            files: MAX_FILES,
            peers_per_file: MAX_PEERS_PER_FILE,
            banned: MAX_BANNED,
        }
    }
}

#[derive(Clone, Debug)]
struct PeerEntry {
    /// Held blocks as sorted, disjoint, non-adjacent `(start, end)` runs.
    runs: Vec<(u64, u64)>,
    last_seen: Instant,
}

/// The registry: per file version, per peer, what it holds.
#[derive(Debug)]
pub struct Registry {
    files: HashMap<FileVersion, HashMap<SocketAddr, PeerEntry>>,
    /// Removed peers whose Haves are ignored until the instant given.
    banned: HashMap<SocketAddr, Instant>,
    expiry: Duration,
    bounds: Bounds,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::with_expiry(PEER_EXPIRY)
    }
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// A registry that forgets peers silent for `expiry`.
    pub fn with_expiry(expiry: Duration) -> Registry {
        Registry::with_bounds(expiry, Bounds::default())
    }

    /// A registry with other bounds than the default ones (tests and fuzzing; each
    /// bound at least 1).
    #[doc(hidden)]
    pub fn with_bounds(expiry: Duration, bounds: Bounds) -> Registry {
        Registry {
            files: HashMap::new(),
            banned: HashMap::new(),
            expiry,
            bounds: Bounds {
                files: bounds.files.max(1),
                peers_per_file: bounds.peers_per_file.max(1),
                banned: bounds.banned.max(1),
            },
        }
    }

    /// Peers known (distinct addresses over every file).
    pub fn peers(&self) -> usize {
        let mut all: Vec<&SocketAddr> = self.files.values().flat_map(|m| m.keys()).collect();
        all.sort();
        all.dedup();
        all.len()
    }

    pub fn files(&self) -> usize {
        self.files.len()
    }

    /// Peers whose reports are refused now.
    pub fn banned(&self, now: Instant) -> usize {
        self.banned.values().filter(|&&until| until > now).count()
    }

    fn is_banned(&self, peer: &SocketAddr, now: Instant) -> bool {
        self.banned.get(peer).is_some_and(|&until| until > now)
    }

    /// `peer` reports it holds `ranges` of `file`. Returns false when the report is
    /// refused (the peer was removed after a PeerReport and is still banned).
    pub fn have(
        &mut self,
        file: FileVersion,
        peer: SocketAddr,
        ranges: &[BlockRange],
        now: Instant,
    ) -> bool {
        self.record(file, peer, ranges, now, false)
    }

    /// `peer` reports the complete list of the blocks of `file` it holds (the first
    /// part of it: later Haves add): what it reported before is replaced, so blocks it
    /// evicted are no longer handed out. False when refused, as for [`Registry::have`].
    pub fn holdings(
        &mut self,
        file: FileVersion,
        peer: SocketAddr,
        ranges: &[BlockRange],
        now: Instant,
    ) -> bool {
        self.record(file, peer, ranges, now, true)
    }

    fn record(
        &mut self,
        file: FileVersion,
        peer: SocketAddr,
        ranges: &[BlockRange],
        now: Instant,
        replace: bool,
    ) -> bool {
        if self.is_banned(&peer, now) {
            return false;
        }
        if replace {
            if let Some(peers) = self.files.get_mut(&file) {
                peers.remove(&peer);
                if peers.is_empty() {
                    self.files.remove(&file);
                }
            }
        }
        if ranges.is_empty() {
            return true;
        }
        if !self.files.contains_key(&file) && self.files.len() >= self.bounds.files {
            self.evict_file();
        }
        let peers = self.files.entry(file).or_default();
        if !peers.contains_key(&peer) && peers.len() >= self.bounds.peers_per_file {
            if let Some(oldest) = peers
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(a, _)| *a)
            {
                peers.remove(&oldest);
            }
        }
        let e = peers.entry(peer).or_insert_with(|| PeerEntry {
            runs: Vec::new(),
            last_seen: now,
        });
        e.last_seen = now;
        for r in ranges {
            if r.count == 0 {
                continue;
            }
            add_run(&mut e.runs, (r.start, r.start.saturating_add(r.count)));
        }
        while e.runs.len() > MAX_RANGES_PER_PEER {
            merge_smallest_gap(&mut e.runs);
        }
        true
    }

    /// A client reports that `peer`, which it was handed for `file`, is unreachable or
    /// sent a bad block. A peer this registry lists for that file is forgotten
    /// everywhere and its reports are refused for a while; returns whether it was.
    /// Reports about peers not listed for the file (never handed out, already gone)
    /// change nothing, so a client cannot fill the ban list with arbitrary addresses.
    pub fn report(
        &mut self,
        file: FileVersion,
        peer: SocketAddr,
        problem: PeerProblem,
        now: Instant,
    ) -> bool {
        if !self.files.get(&file).is_some_and(|p| p.contains_key(&peer)) {
            return false;
        }
        self.remove_peer(peer);
        let periods = match problem {
            PeerProblem::Unreachable => 1,
            PeerProblem::BadData => BAD_DATA_BAN_EXPIRIES,
        };
        if !self.banned.contains_key(&peer) && self.banned.len() >= self.bounds.banned {
            if let Some(first) = self
                .banned
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(a, _)| *a)
            {
                self.banned.remove(&first);
            }
        }
        let until = now + self.expiry * periods;
        let e = self.banned.entry(peer).or_insert(until);
        *e = (*e).max(until);
        true
    }

    /// Forgets `peer` everywhere (unreachable, or it served a bad block).
    pub fn remove_peer(&mut self, peer: SocketAddr) {
        for peers in self.files.values_mut() {
            peers.remove(&peer);
        }
        self.files.retain(|_, p| !p.is_empty());
    }

    /// Forgets every peer not heard from within the expiry, and bans that ended.
    pub fn expire(&mut self, now: Instant) {
        let expiry = self.expiry;
        self.banned.retain(|_, until| *until > now);
        for peers in self.files.values_mut() {
            peers.retain(|_, e| now.saturating_duration_since(e.last_seen) < expiry);
        }
        self.files.retain(|_, p| !p.is_empty());
    }

    /// Checks the bounds and shapes the registry promises (see the module docs):
    /// at most [`MAX_FILES`] files, none without peers, at most [`MAX_PEERS_PER_FILE`]
    /// peers per file, each with at most [`MAX_RANGES_PER_PEER`] sorted, disjoint,
    /// non-adjacent, non-empty runs, and at most [`MAX_BANNED`] bans (or the smaller
    /// [`Bounds`] it was made with). For the fuzz targets and tests: it walks
    /// everything.
    #[doc(hidden)]
    pub fn check_bounds(&self) -> Result<(), String> {
        let b = self.bounds;
        if self.files.len() > b.files {
            return Err(format!("{} files, over {b:?}", self.files.len()));
        }
        if self.banned.len() > b.banned {
            return Err(format!("{} bans, over {b:?}", self.banned.len()));
        }
        for (file, peers) in &self.files {
            if peers.is_empty() || peers.len() > b.peers_per_file {
                return Err(format!("file {file:?} has {} peers", peers.len()));
            }
            for (peer, e) in peers {
                if e.runs.len() > MAX_RANGES_PER_PEER {
                    return Err(format!("{peer} has {} runs of {file:?}", e.runs.len()));
                }
                if e.runs.iter().any(|&(s, t)| s >= t)
                    || e.runs.windows(2).any(|w| w[0].1 >= w[1].0)
                {
                    return Err(format!("{peer}'s runs of {file:?}: {:?}", e.runs));
                }
            }
        }
        Ok(())
    }

    fn evict_file(&mut self) {
        let oldest = self
            .files
            .iter()
            .map(|(f, peers)| (*f, peers.values().map(|e| e.last_seen).max()))
            .min_by_key(|(_, t)| *t)
            .map(|(f, _)| f);
        if let Some(f) = oldest {
            self.files.remove(&f);
        }
    }

    /// The peers holding any of blocks `first..first+count` of `file`, for a
    /// requester at `requester`: not the requester itself, nearest first (longest
    /// common address prefix, then the most recently seen), and when `locality` is
    /// not empty and the requester is inside one of its subnets, only peers inside
    /// that same subnet. Each with the ranges it holds within the span. An
    /// IPv4-mapped IPv6 address (how a dual-stack listener, `--bind ::`, sees IPv4
    /// clients) counts as the IPv4 address it carries, for the sites, nearness and
    /// telling the requester apart.
    pub fn locate(
        &self,
        file: FileVersion,
        first: u64,
        count: u64,
        requester: IpAddr,
        locality: &[ipnet::IpNet],
        now: Instant,
    ) -> Vec<Location> {
        let Some(peers) = self.files.get(&file) else {
            return Vec::new();
        };
        let end = first.saturating_add(count);
        let requester = requester.to_canonical();
        let site = locality.iter().find(|n| n.contains(&requester));
        // First the peers holding part of the span, with what ranks them; the ranges
        // are built for the few handed out only.
        let mut found: Vec<Candidate<'_>> = peers
            .iter()
            .filter_map(|(addr, e)| {
                let ip = addr.ip().to_canonical();
                let eligible = ip != requester
                    && now.saturating_duration_since(e.last_seen) < self.expiry
                    && site.is_none_or(|n| n.contains(&ip))
                    && (locality.is_empty() || site.is_some() || !in_any(locality, ip));
                if !eligible {
                    return None;
                }
                // The runs are sorted and disjoint: the ones inside the span follow the
                // first that ends after its start.
                let inside = &e.runs[e.runs.partition_point(|&(_, t)| t <= first)..];
                let inside = &inside[..inside.partition_point(|&(s, _)| s < end)];
                (!inside.is_empty())
                    .then(|| (common_prefix(requester, ip), e.last_seen, addr, inside))
            })
            .collect();
        let order = |a: &Candidate<'_>, b: &Candidate<'_>| {
            b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(b.2))
        };
        // Only the nearest few are handed out: no need to sort the others.
        if found.len() > MAX_PEERS_PER_ANSWER {
            found.select_nth_unstable_by(MAX_PEERS_PER_ANSWER - 1, order);
            found.truncate(MAX_PEERS_PER_ANSWER);
        }
        found.sort_by(order);
        found
            .into_iter()
            .map(|(_, _, addr, inside)| Location {
                addr: *addr,
                role: Role::Lhc,
                holds: Holds::Ranges(
                    inside
                        .iter()
                        .map(|&(s, t)| {
                            let (s, t) = (s.max(first), t.min(end));
                            BlockRange {
                                start: s,
                                count: t - s,
                            }
                        })
                        .collect(),
                ),
            })
            .collect()
    }
}

/// A peer holding part of a located span: nearness to the requester, when it last
/// reported, its address and its runs inside the span.
type Candidate<'a> = (u32, Instant, &'a SocketAddr, &'a [(u64, u64)]);

fn in_any(nets: &[ipnet::IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&ip))
}

/// Leading bits two addresses share (0 across families): "nearness" on the network.
pub fn common_prefix(a: IpAddr, b: IpAddr) -> u32 {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) ^ u32::from(b)).leading_zeros(),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a) ^ u128::from(b)).leading_zeros(),
        _ => 0,
    }
}

/// Adds `[s, t)` to sorted disjoint runs, merging what it touches.
fn add_run(runs: &mut Vec<(u64, u64)>, (mut s, mut t): (u64, u64)) {
    let mut out = Vec::with_capacity(runs.len() + 1);
    let mut placed = false;
    for &(a, b) in runs.iter() {
        if b < s {
            out.push((a, b));
        } else if t < a {
            if !placed {
                out.push((s, t));
                placed = true;
            }
            out.push((a, b));
        } else {
            s = s.min(a);
            t = t.max(b);
        }
    }
    if !placed {
        out.push((s, t));
        out.sort_unstable();
    }
    *runs = out;
}

/// Joins the two neighbouring runs with the smallest gap (the peer is then thought to
/// hold the gap too: a Get for it is answered NotCachedHere and goes elsewhere).
fn merge_smallest_gap(runs: &mut Vec<(u64, u64)>) {
    if runs.len() < 2 {
        return;
    }
    let i = (0..runs.len() - 1)
        .min_by_key(|&i| runs[i + 1].0 - runs[i].1)
        .unwrap_or(0);
    runs[i].1 = runs[i + 1].1;
    runs.remove(i + 1);
}

#[cfg(test)]
mod tests;
