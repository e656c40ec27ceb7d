//! The answers an SPP node computes: Info (with its digests), Locate (itself, what it
//! knows, `-l` mirrors, p2p peers), and the Have and PeerReport hints it records.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use super::state::{error, frame_bytes, out_frame, Conn, ConnState, Out};
use crate::metrics::ShardMetrics;
use crate::node::content::Content;
use crate::node::shard::{Shard, ShardRole};
use crate::pure::protocol::{
    encode_info_head, limits, ErrorCode, Frame, Holds, Info, Locate, Location, Role,
};
use crate::server::context::Ctx;

/// The digests `start..start + count` of a file, as a slice of its mapped index that
/// can be sent without copying.
pub(super) struct DigestSlice {
    pub(super) content: Content,
    pub(super) start: u64,
    pub(super) count: u64,
}

impl AsRef<[u8]> for DigestSlice {
    fn as_ref(&self) -> &[u8] {
        self.content.digests(self.start, self.count)
    }
}

/// The answer to an Info request: the file's info with its digests from
/// `digest_start` (a slice of the mapped index), or the Error frame that refuses it.
pub(super) fn info(
    state: &RefCell<ConnState>,
    req_id: u32,
    found: Result<Content, Frame>,
    digest_start: u64,
    digest_count: u32,
) -> Out {
    let resolved = state
        .borrow_mut()
        .session
        .info_resolved(req_id, found.clone());
    let (handle, content) = match (resolved, found) {
        (Ok(h), Ok(c)) => (h, c),
        (Err(f), _) | (Ok(_), Err(f)) => return out_frame(state, frame_bytes(&f), true),
    };
    let digest_start = digest_start.min(content.block_count());
    let digests = Bytes::from_owner(DigestSlice {
        content: content.clone(),
        start: digest_start,
        count: u64::from(digest_count),
    });
    let info = Info {
        req_id,
        handle,
        size: content.size(),
        block_size: content.block_size(),
        algo: content.algo(),
        version: content.version(),
        mtime_unix_secs: content.mtime_unix_secs(),
        digest_start,
        digests,
    };
    let mut head = BytesMut::new();
    if encode_info_head(&info, &mut head).is_err() {
        let f = error(req_id, ErrorCode::Internal, "internal encode error");
        return out_frame(state, frame_bytes(&f), true);
    }
    let head = head.freeze();
    state.borrow_mut().queued(head.len());
    Out::Frame {
        head,
        tail: info.digests,
        answer: true,
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn locate(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    state: &Rc<RefCell<ConnState>>,
    req_id: u32,
    content: &Content,
    (first_block, block_count): (u64, u64),
    (local, requester): (Option<SocketAddr>, std::net::IpAddr),
    may_fetch: bool,
) -> Bytes {
    let me = local.map(|l| Location {
        addr: SocketAddr::new(l.ip(), ctx.port),
        role: ctx.spp_role(),
        holds: Holds::All,
    });
    let mut locations = match (&shard.role, content) {
        (ShardRole::Cache(cache), Content::Cached(file)) => {
            cache
                .locations(file, me, first_block, block_count, may_fetch)
                .await
        }
        // An origin (or a mirror, below) serves all of a published file.
        _ => me.into_iter().collect(),
    };
    // `-l` nodes serve every file (mirrors, or caches that fetch recursively).
    for m in &ctx.mirrors {
        if locations.len() >= limits::MAX_LOCATIONS {
            break;
        }
        if !locations.iter().any(|l| l.addr == *m) {
            locations.push(Location {
                addr: *m,
                role: Role::Origin,
                holds: Holds::All,
            });
        }
    }
    // p2p mode: the peers that reported blocks of this span, nearest first.
    if let Some(Ok(g)) = ctx.peers.as_ref().map(|p| p.lock()) {
        let peers = g.locate(
            (content.file_id(), content.version()),
            first_block,
            block_count,
            requester,
            &ctx.config.locality,
            std::time::Instant::now(),
        );
        if !peers.is_empty() {
            ShardMetrics::add(&shard.m().locate_answers_with_peers, 1);
            state
                .borrow_mut()
                .session
                .handed(peers.iter().map(|p| p.addr));
        }
        for p in peers {
            if locations.len() >= limits::MAX_LOCATIONS {
                break;
            }
            if !locations.iter().any(|l| l.addr == p.addr) {
                locations.push(p);
            }
        }
    }
    frame_bytes(&Frame::Locate(Locate { req_id, locations }))
}

/// Records a Have in the registry (`-i`): blocks of a file version the requester
/// opened on this connection, under its listening address. With `replace` (a Holdings
/// frame) they replace what it reported of that file before.
pub(super) fn record_have(
    conn: &Conn<'_>,
    content: &Content,
    listen: SocketAddr,
    ranges: &[crate::pure::protocol::BlockRange],
    replace: bool,
) {
    let Some(peers) = &conn.ctx.peers else { return };
    ShardMetrics::add(&conn.shard.m().have_reports, 1);
    if let Ok(mut g) = peers.lock() {
        let (file, now) = (
            (content.file_id(), content.version()),
            std::time::Instant::now(),
        );
        if replace {
            g.holdings(file, listen, ranges, now);
        } else {
            g.have(file, listen, ranges, now);
        }
    }
}

/// Acts on a PeerReport the session let through (`-i`; a peer handed to this
/// connection, listed for a file it opened, within the per-connection cap): the
/// registry removes the peer and refuses it for a while if it lists it for the file
/// (see `pure::registry::Registry::report`).
pub(super) fn record_peer_report(
    conn: &Conn<'_>,
    content: &Content,
    reported: SocketAddr,
    problem: crate::pure::protocol::PeerProblem,
) {
    use crate::pure::protocol::PeerProblem;
    let Some(peers) = &conn.ctx.peers else { return };
    let m = conn.shard.m();
    ShardMetrics::add(
        match problem {
            PeerProblem::Unreachable => &m.peer_reports_unreachable,
            PeerProblem::BadData => &m.peer_reports_bad_data,
        },
        1,
    );
    let removed = peers.lock().is_ok_and(|mut g| {
        g.report(
            (content.file_id(), content.version()),
            reported,
            problem,
            std::time::Instant::now(),
        )
    });
    if removed {
        conn.state.borrow_mut().session.report_counted();
        ShardMetrics::add(&m.peers_removed, 1);
        tracing::info!(peer = %reported, problem = problem.name(), reporter = %conn.peer, "peer reported; removed from the registry");
    }
}
