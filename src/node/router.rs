//! The cross-shard router: a full mesh of glommio channels over which a shard asks a
//! block's owner for it and gets the verified buffer back, and asks a cached file's
//! metadata owner for the file. Only the pointer moves: a
//! [`Bytes`] crosses cores without its data being copied.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::channel::oneshot;

use crate::disk::FileKey;
use crate::error::{BlockError, Refusal};
use crate::node::cache::CachedFile;
use crate::node::content::Content;
use crate::pure::protocol::{FileRef, PeerProblem};
use crate::runtime::{self, Full, MeshBuilder, Receivers, Senders};

/// Messages queued per pair of shards before a sender waits.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;
/// Health pings waiting for their answer, at most (see [`Router::ping`]).
const MAX_PINGS_WAITING: usize = 64;

pub enum RouterMsg {
    /// Shard `from` asks the owner for a block.
    Read {
        req: u64,
        from: usize,
        content: Content,
        index: u64,
        /// The requester may make this node fetch the block upstream.
        may_fetch: bool,
    },
    /// The owner's answer to request `req`.
    Done {
        req: u64,
        result: Result<Bytes, BlockError>,
    },
    /// Shard `from` asks a file's metadata owner for the cached file named `key`.
    Lookup {
        req: u64,
        from: usize,
        key: FileKey,
        may_fetch: bool,
    },
    /// The metadata owner's answer to lookup `req`.
    LookupDone {
        req: u64,
        result: Result<Arc<CachedFile>, Refusal>,
    },
    /// Shard `from` asks whether this shard is serving (`/_p2pd/health`).
    Ping { req: u64, from: usize },
    /// The answer to ping `req`: the shard's reactor ran it.
    Pong { req: u64 },
    /// Test hooks only (`P2PD_TEST_HOOKS=1`): block this shard's thread for `ms`.
    Stall { ms: u64 },
    /// Report `peer` to `to` over this shard's connection to it, the one that was
    /// handed the peer (p2p mode); no answer.
    ReportPeer {
        to: SocketAddr,
        file: FileRef,
        version: u64,
        peer: SocketAddr,
        problem: PeerProblem,
    },
}

pub type Mesh = MeshBuilder<RouterMsg, Full>;

pub fn mesh(shards: usize) -> Mesh {
    MeshBuilder::full(shards, MESH_CHANNEL_CAPACITY)
}

type LookupResult = Result<Arc<CachedFile>, Refusal>;

pub struct Router {
    senders: Senders<RouterMsg>,
    pending: RefCell<HashMap<u64, oneshot::Sender<Result<Bytes, BlockError>>>>,
    lookups: RefCell<HashMap<u64, oneshot::Sender<LookupResult>>>,
    pings: RefCell<HashMap<u64, oneshot::Sender<Result<(), ()>>>>,
    next_req: Cell<u64>,
}

impl Router {
    /// Joins the mesh; the shard's index is its place in the mesh.
    pub async fn join(mesh: Mesh) -> Result<(usize, Router, Receivers<RouterMsg>), String> {
        let (senders, receivers) = mesh
            .join()
            .await
            .map_err(|_| "cannot join the shard mesh".to_string())?;
        let id = senders.peer_id();
        Ok((
            id,
            Router {
                senders,
                pending: RefCell::new(HashMap::new()),
                lookups: RefCell::new(HashMap::new()),
                pings: RefCell::new(HashMap::new()),
                next_req: Cell::new(1),
            },
            receivers,
        ))
    }

    fn next_id(&self) -> u64 {
        let req = self.next_req.get();
        self.next_req.set(req.wrapping_add(1));
        req
    }

    /// Sends the request `msg(req, from)` to shard `owner` and waits for the answer
    /// that `serve` files under `req` in `waiting`; `gone` when the owner cannot be
    /// reached.
    async fn ask<T>(
        &self,
        owner: usize,
        waiting: &RefCell<HashMap<u64, oneshot::Sender<T>>>,
        msg: impl FnOnce(u64, usize) -> RouterMsg,
        gone: impl Fn() -> T,
    ) -> T {
        let req = self.next_id();
        let (tx, rx) = oneshot::channel();
        waiting.borrow_mut().insert(req, tx);
        let from = self.senders.peer_id();
        if self.senders.send_to(owner, msg(req, from)).await.is_err() {
            waiting.borrow_mut().remove(&req);
            return gone();
        }
        rx.await.unwrap_or_else(|_| gone())
    }

    /// Asks shard `owner` (a file's metadata owner) for the cached file `key`.
    pub async fn lookup(&self, owner: usize, key: FileKey, may_fetch: bool) -> LookupResult {
        let msg = |req, from| RouterMsg::Lookup {
            req,
            from,
            key,
            may_fetch,
        };
        self.ask(owner, &self.lookups, msg, || {
            Err(Refusal::Internal("shard unavailable".into()))
        })
        .await
    }

    /// Whether shard `owner` answers within `wait` (its reactor runs and serves its
    /// router): what `/_p2pd/health` asks of every shard.
    pub async fn ping(&self, owner: usize, wait: std::time::Duration) -> bool {
        // Pings that timed out leave their entry behind until their Pong comes,
        // which a dead shard never sends: keep that leftover bounded.
        if self.pings.borrow().len() >= MAX_PINGS_WAITING {
            self.pings.borrow_mut().clear();
        }
        let msg = |req, from| RouterMsg::Ping { req, from };
        let answered = runtime::timeout(wait, self.ask(owner, &self.pings, msg, || Err(()))).await;
        matches!(answered, Ok(Ok(())))
    }

    /// Test hooks only: blocks shard `owner`'s thread for `ms` (it answers nothing
    /// meanwhile), as a shard stuck in a long computation would.
    pub async fn stall(&self, owner: usize, ms: u64) -> bool {
        self.senders
            .send_to(owner, RouterMsg::Stall { ms })
            .await
            .is_ok()
    }

    /// Has shard `by` report `peer` to `to` over its connection (see
    /// [`RouterMsg::ReportPeer`]); dropped if the channel is gone.
    pub async fn report_peer(
        &self,
        by: usize,
        to: SocketAddr,
        file: FileRef,
        version: u64,
        peer: SocketAddr,
        problem: PeerProblem,
    ) {
        let msg = RouterMsg::ReportPeer {
            to,
            file,
            version,
            peer,
            problem,
        };
        let _ = self.senders.send_to(by, msg).await;
    }

    /// Asks shard `owner` for a block and waits for the answer.
    pub async fn read(
        &self,
        owner: usize,
        content: Content,
        index: u64,
        may_fetch: bool,
    ) -> Result<Bytes, BlockError> {
        let msg = |req, from| RouterMsg::Read {
            req,
            from,
            content,
            index,
            may_fetch,
        };
        self.ask(owner, &self.pending, msg, || Err(BlockError::ShardGone))
            .await
    }

    /// Takes an answer to one of this shard's requests (a block, a lookup, a pong) to
    /// the request that waits for it; hands anything else (a request from another
    /// shard) back to the caller, the shard's inbox.
    pub fn settle(&self, msg: RouterMsg) -> Option<RouterMsg> {
        match msg {
            RouterMsg::Done { req, result } => {
                if let Some(tx) = self.pending.borrow_mut().remove(&req) {
                    let _ = tx.send(result);
                }
                None
            }
            RouterMsg::LookupDone { req, result } => {
                if let Some(tx) = self.lookups.borrow_mut().remove(&req) {
                    let _ = tx.send(result);
                }
                None
            }
            RouterMsg::Pong { req } => {
                if let Some(tx) = self.pings.borrow_mut().remove(&req) {
                    let _ = tx.send(Ok(()));
                }
                None
            }
            request => Some(request),
        }
    }

    /// Sends `msg` to shard `to` (an answer to its request).
    pub async fn reply(&self, to: usize, msg: RouterMsg) {
        let _ = self.senders.send_to(to, msg).await;
    }
}
