//! The cross-shard router: a full mesh of glommio channels over which a shard asks a
//! block's owner for it and gets the verified buffer back, and asks a cached file's
//! metadata owner for the file. Only the pointer moves: a
//! [`Bytes`] crosses cores without its data being copied.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures::channel::oneshot;

use crate::content::{Content, Refusal};
use crate::runtime::{self, Full, MeshBuilder, Receivers, Senders};
use crate::shard::fill::CachedFile;
use crate::shard::{BlockError, Shard};
use crate::store::FileKey;

/// Messages queued per pair of shards before a sender waits.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;

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

    /// Asks shard `owner` (a file's metadata owner) for the cached file `key`.
    pub async fn lookup(&self, owner: usize, key: FileKey, may_fetch: bool) -> LookupResult {
        let req = self.next_id();
        let (tx, rx) = oneshot::channel();
        self.lookups.borrow_mut().insert(req, tx);
        let from = self.senders.peer_id();
        let msg = RouterMsg::Lookup {
            req,
            from,
            key,
            may_fetch,
        };
        if self.senders.send_to(owner, msg).await.is_err() {
            self.lookups.borrow_mut().remove(&req);
            return Err(Refusal::Internal("shard unavailable".into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(Refusal::Internal("shard unavailable".into())))
    }

    /// Asks shard `owner` for a block and waits for the answer.
    pub async fn read(
        &self,
        owner: usize,
        content: Content,
        index: u64,
        may_fetch: bool,
    ) -> Result<Bytes, BlockError> {
        let req = self.next_id();
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(req, tx);
        let from = self.senders.peer_id();
        if self
            .senders
            .send_to(
                owner,
                RouterMsg::Read {
                    req,
                    from,
                    content,
                    index,
                    may_fetch,
                },
            )
            .await
            .is_err()
        {
            self.pending.borrow_mut().remove(&req);
            return Err(BlockError::ShardGone);
        }
        rx.await.unwrap_or(Err(BlockError::ShardGone))
    }

    /// Starts one task per peer that serves its requests and delivers its answers.
    pub fn serve(shard: Rc<Shard>, mut receivers: Receivers<RouterMsg>) {
        for (_peer, rx) in receivers.streams() {
            let shard = shard.clone();
            runtime::spawn_detached(async move {
                while let Some(msg) = rx.recv().await {
                    match msg {
                        RouterMsg::Read {
                            req,
                            from,
                            content,
                            index,
                            may_fetch,
                        } => {
                            let shard = shard.clone();
                            runtime::spawn_detached(async move {
                                let result = shard.local_block(content, index, may_fetch).await;
                                let _ = shard
                                    .router
                                    .senders
                                    .send_to(from, RouterMsg::Done { req, result })
                                    .await;
                            });
                        }
                        RouterMsg::Done { req, result } => {
                            if let Some(tx) = shard.router.pending.borrow_mut().remove(&req) {
                                let _ = tx.send(result);
                            }
                        }
                        RouterMsg::Lookup {
                            req,
                            from,
                            key,
                            may_fetch,
                        } => {
                            let shard = shard.clone();
                            runtime::spawn_detached(async move {
                                let result = shard.local_lookup(key, may_fetch).await;
                                let _ = shard
                                    .router
                                    .senders
                                    .send_to(from, RouterMsg::LookupDone { req, result })
                                    .await;
                            });
                        }
                        RouterMsg::LookupDone { req, result } => {
                            if let Some(tx) = shard.router.lookups.borrow_mut().remove(&req) {
                                let _ = tx.send(result);
                            }
                        }
                    }
                }
            });
        }
    }
}
