//! Fetching a file's blocks from several sources at once: [`discover`] asks the URL's
//! addresses for the file's info and locations, [`fetch_blocks`] drives a
//! [`Scheduler`] over connections from an [`UpstreamPool`], verifies every block
//! against the origin's digests and hands the blocks on in order. A source that
//! errors, closes, stalls or sends a bad block loses its blocks to the others, so the
//! consumer sees one uninterrupted, verified stream while any source is left.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{self, Either, FutureExt, LocalBoxFuture};
use futures::stream::{FuturesUnordered, StreamExt};

use super::attempt::{self, Deadlines, Expected};
use super::connection::{FetchError, RemoteFile};
use super::pool::UpstreamPool;
use crate::pure::protocol::{ErrorCode, FileRef, Holds, PeerProblem, Role};
use crate::pure::sched::{Assignment, SchedConfig, Scheduler, SourceClass, SourceId};
use crate::runtime;

/// Block bytes the window ahead of the playback position may hold at most (blocks
/// verified out of order wait in memory for the ones before them).
pub const WINDOW_BYTES: u64 = 32 << 20;
/// Blocks asked of one source at once at most.
pub const MAX_OUTSTANDING_PER_SOURCE: usize = 8;
/// Sources one fetch uses at most (a Locate answer carries at most 64).
pub const MAX_SOURCES: usize = 64;
/// How long the first source may take to say where else the blocks are; one that
/// does not answer Locate is simply the only source.
const LOCATE_WAIT: Duration = Duration::from_secs(2);

/// The scheduler settings for a file with `block_size`-byte blocks: a window of at
/// most [`WINDOW_BYTES`] (4..=64 blocks).
pub fn sched_config(block_size: u32, stall_timeout: Duration) -> SchedConfig {
    let window = (WINDOW_BYTES / u64::from(block_size.max(1))).clamp(4, 64);
    SchedConfig {
        window_blocks: window,
        max_outstanding: MAX_OUTSTANDING_PER_SOURCE.min(window as usize),
        stall_timeout,
        ..SchedConfig::default()
    }
}

/// A source of a file: where, what it holds, whose bandwidth it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Located {
    pub addr: SocketAddr,
    pub holds: Holds,
    pub class: SourceClass,
}

impl Located {
    /// A server holding the whole file (an address of the URL, a parent).
    pub fn server(addr: SocketAddr) -> Located {
        Located {
            addr,
            holds: Holds::All,
            class: SourceClass::Server,
        }
    }

    /// Whether it is said to hold block `block`.
    pub fn has(&self, block: u64) -> bool {
        match &self.holds {
            Holds::All => true,
            Holds::Ranges(rs) => rs
                .iter()
                .any(|r| block >= r.start && block - r.start < r.count),
        }
    }
}

/// Peers (viewers' machines, Locate role LHC or client) are preferred over servers
/// (origins, mirrors, caches); see `pure::sched`.
pub fn class_of(role: Role) -> SourceClass {
    match role {
        Role::Lhc | Role::Client => SourceClass::Peer,
        Role::Origin | Role::Scc => SourceClass::Server,
    }
}

/// What one source contributed.
#[derive(Clone, Debug)]
pub struct SourceReport {
    pub addr: SocketAddr,
    pub class: SourceClass,
    pub bytes: u64,
    pub blocks: u64,
    /// Dropped for this file (bad block, repeated failures).
    pub dropped: bool,
    pub rate_bps: Option<f64>,
}

/// How a fetch went.
#[derive(Clone, Debug, Default)]
pub struct FetchReport {
    pub sources: Vec<SourceReport>,
    /// The longest the consumer waited for the next block in order (after the first).
    pub longest_wait: Duration,
    /// Blocks that failed their digest (each dropped its source).
    pub bad_blocks: u64,
}

/// Why a multi-source fetch stopped.
#[derive(Debug, thiserror::Error)]
pub enum MultiError {
    /// No source can deliver a missing block any more; `last` is the last failure.
    #[error("{why}; last error: {last}")]
    NoSource {
        why: String,
        last: String,
        digest: bool,
    },
    /// The consumer refused a block (its output failed).
    #[error("{0}")]
    Deliver(String),
}

/// Asks the addresses of the file's URL, in turn, for its info; the first that
/// answers is also asked where its blocks are. Returns the info and the sources: the
/// answering address first, then the located nodes, then the URL's other addresses.
pub async fn discover(
    pool: &UpstreamPool,
    file: &FileRef,
    addrs: &[SocketAddr],
) -> Result<(RemoteFile, Vec<Located>), FetchError> {
    let mut last = None;
    for &addr in addrs {
        let up = match pool.get(addr).await {
            Ok(up) => up,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        let info = match up.file_info(file).await {
            Ok(i) => i,
            Err(
                e @ FetchError::Remote {
                    code: ErrorCode::NotFound,
                    ..
                },
            ) => return Err(e),
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        let mut sources = vec![Located::server(addr)];
        // Where else the blocks are; a node that cannot say is simply the one source.
        let located = runtime::timeout(
            LOCATE_WAIT,
            up.locate(file, info.version, 0, info.block_count().max(1)),
        )
        .await;
        if let Ok(Ok(locs)) = located {
            for l in locs {
                if sources.len() >= MAX_SOURCES {
                    break;
                }
                if !sources.iter().any(|s| s.addr == l.addr) {
                    sources.push(Located {
                        addr: l.addr,
                        holds: l.holds,
                        class: class_of(l.role),
                    });
                }
            }
        }
        for &a in addrs {
            if sources.len() < MAX_SOURCES && !sources.iter().any(|s| s.addr == a) {
                sources.push(Located::server(a));
            }
        }
        return Ok((info, sources));
    }
    Err(last.unwrap_or(FetchError::Protocol {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        message: "no address to ask".into(),
    }))
}

/// What a request brought back.
type Outcome = (Assignment, Instant, Result<Bytes, FetchError>);

/// Fetches blocks `range` of `file` from `sources` and calls `deliver` with each one,
/// verified, in order. Returns when every block was delivered, or with why not.
pub async fn fetch_blocks(
    pool: &UpstreamPool,
    fref: &FileRef,
    file: &RemoteFile,
    sources: &[Located],
    range: std::ops::Range<u64>,
    (cfg, deadlines): (SchedConfig, Deadlines),
    mut deliver: impl FnMut(u64, Bytes) -> Result<(), String>,
) -> Result<FetchReport, MultiError> {
    let mut sched = Scheduler::new(cfg, range.start, range.end.min(file.block_count()));
    let addrs: Vec<SocketAddr> = sources.iter().map(|s| s.addr).collect();
    for s in sources {
        sched.add_source_of(s.holds.clone(), s.class);
    }
    let mut running: FuturesUnordered<LocalBoxFuture<'_, Option<Outcome>>> =
        FuturesUnordered::new();
    let mut cancels: HashMap<(u64, SourceId), oneshot::Sender<()>> = HashMap::new();
    let mut ready: BTreeMap<u64, Bytes> = BTreeMap::new();
    let mut next = range.start;
    let mut report = FetchReport::default();
    let mut last_delivery: Option<Instant> = None;
    let mut last_error = String::from("none");
    let mut last_was_digest = false;
    let mut best: Option<SourceId> = None;

    // A source found unreachable or bad is reported, alongside the requests, to the
    // node that handed it out (the first source, which answered the Locate), so it
    // stops handing it to others.
    let report_peer = |peer: SocketAddr, problem: PeerProblem| {
        let to = addrs[0];
        async move {
            pool.report_peer(to, fref, file.version, peer, problem)
                .await;
            None
        }
        .boxed_local()
    };
    let cancel = |cancels: &mut HashMap<(u64, SourceId), oneshot::Sender<()>>, a: &Assignment| {
        // Dropping the sender resolves the request's cancel branch.
        cancels.remove(&(a.block, a.source));
    };

    while !sched.is_finished() {
        let now = Instant::now();
        for c in sched.check_stalls(now) {
            tracing::debug!(source = %addrs[c.source], block = c.block, "block stalled; asking elsewhere");
            cancel(&mut cancels, &c);
        }
        if let Some(why) = sched.stuck() {
            return Err(MultiError::NoSource {
                why,
                last: last_error,
                digest: last_was_digest,
            });
        }
        for a in sched.assign(now) {
            let s = sched.source(a.source);
            tracing::trace!(block = a.block, source = %addrs[a.source], rate_mbps = s.rate_bps.unwrap_or(0.0) / 1e6, outstanding = s.outstanding, "block asked");
            let (tx, rx) = oneshot::channel::<()>();
            cancels.insert((a.block, a.source), tx);
            let source = &sources[a.source];
            let version = file.version;
            let fut = async move {
                let req = attempt::request(
                    pool,
                    (source.addr, source.class),
                    fref,
                    version,
                    a.block,
                    deadlines,
                );
                match future::select(req.boxed_local(), rx).await {
                    Either::Left((r, _)) => Some((a, Instant::now(), r)),
                    // Cancelled: another source delivered the block, or it stalled.
                    Either::Right(_) => None,
                }
            };
            running.push(fut.boxed_local());
        }
        let wait = sched
            .next_deadline(now)
            .map(|d| d.saturating_duration_since(now))
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_millis(1));
        if running.is_empty() {
            // Nothing in flight and nothing could be assigned (every source that may
            // take the next block is busy or waits for a probe slot): wait a little
            // rather than spin.
            runtime::sleep(wait.min(Duration::from_millis(10))).await;
            continue;
        }
        let outcome = match runtime::timeout(wait, running.next()).await {
            Ok(Some(Some(o))) => o,
            // A cancelled request, or a deadline: look at the scheduler again.
            Ok(Some(None)) | Ok(None) | Err(_) => continue,
        };
        let (a, at, result) = outcome;
        // Cancelled after it completed (another copy won, or it was taken away for
        // stalling): its outcome no longer counts.
        if cancels.remove(&(a.block, a.source)).is_none() {
            continue;
        }
        let addr = addrs[a.source];
        let class = sources[a.source].class;
        let expected = Expected {
            len: file.block_len(a.block),
            algo: file.algo,
            digest: file.digest(a.block),
        };
        let result = match result {
            Ok(data) => attempt::check(addr, a.block, data, expected).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(data) => {
                let bytes = data.len() as u64;
                tracing::trace!(block = a.block, source = %addr, "block verified");
                for c in sched.on_verified(a.source, a.block, bytes, at, Instant::now()) {
                    tracing::trace!(block = c.block, source = %addrs[c.source], "overtaken copy cancelled");
                    cancel(&mut cancels, &c);
                }
                if a.block >= next {
                    ready.insert(a.block, data);
                }
                while let Some(b) = ready.remove(&next) {
                    deliver(next, b).map_err(MultiError::Deliver)?;
                    let now = Instant::now();
                    if let Some(prev) = last_delivery {
                        report.longest_wait = report.longest_wait.max(now - prev);
                    }
                    last_delivery = Some(now);
                    next += 1;
                }
                // A debug line whenever the fastest source changes.
                let fastest = (0..sched.sources())
                    .filter(|&i| !sched.source(i).dropped)
                    .filter_map(|i| sched.source(i).rate_bps.map(|r| (i, r)))
                    .max_by(|x, y| x.1.total_cmp(&y.1))
                    .map(|(i, _)| i);
                if fastest != best {
                    if let Some(f) = fastest {
                        tracing::debug!(source = %addrs[f], rate_mbps = sched.source(f).rate_bps.unwrap_or(0.0) / 1e6, "fastest source is now");
                    }
                    best = fastest;
                }
            }
            Err(e) => {
                if class == SourceClass::Peer {
                    if let Some(problem) = e.peer_problem() {
                        running.push(report_peer(addr, problem));
                    }
                }
                let kind = e.source_failure(class);
                last_was_digest = matches!(e, FetchError::Digest { .. });
                if last_was_digest {
                    report.bad_blocks += 1;
                    tracing::warn!(source = %addr, block = a.block, "block failed its digest check; the source is dropped for this file");
                } else {
                    tracing::debug!(source = %addr, block = a.block, error = %e, ?kind, "block request failed");
                }
                last_error = e.to_string();
                let was_dropped = sched.source(a.source).dropped;
                for c in sched.on_failure(a.source, a.block, kind) {
                    cancel(&mut cancels, &c);
                }
                if !was_dropped && sched.source(a.source).dropped {
                    tracing::debug!(source = %addr, "source dropped for this file");
                }
            }
        }
    }
    report.sources = (0..sched.sources())
        .map(|i| {
            let s = sched.source(i);
            SourceReport {
                addr: addrs[i],
                class: sources[i].class,
                bytes: s.bytes,
                blocks: s.blocks,
                dropped: s.dropped,
                rate_bps: s.rate_bps,
            }
        })
        .collect();
    Ok(report)
}
