//! The cross-shard router: a full mesh of glommio channels over which a shard asks a
//! block's owner for it and gets the verified buffer back. Only the pointer moves: a
//! [`Bytes`] crosses cores without its data being copied.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures::channel::oneshot;

use crate::publish::FileEntry;
use crate::runtime::{self, Full, MeshBuilder, Receivers, Senders};
use crate::shard::{BlockError, Shard};

/// Messages queued per pair of shards before a sender waits.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;

pub enum RouterMsg {
    /// Shard `from` asks the owner for a block.
    Read {
        req: u64,
        from: usize,
        entry: Arc<FileEntry>,
        index: u64,
    },
    /// The owner's answer to request `req`.
    Done {
        req: u64,
        result: Result<Bytes, BlockError>,
    },
}

pub type Mesh = MeshBuilder<RouterMsg, Full>;

pub fn mesh(shards: usize) -> Mesh {
    MeshBuilder::full(shards, MESH_CHANNEL_CAPACITY)
}

pub struct Router {
    senders: Senders<RouterMsg>,
    pending: RefCell<HashMap<u64, oneshot::Sender<Result<Bytes, BlockError>>>>,
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
                next_req: Cell::new(1),
            },
            receivers,
        ))
    }

    /// Asks shard `owner` for a block and waits for the answer.
    pub async fn read(
        &self,
        owner: usize,
        entry: Arc<FileEntry>,
        index: u64,
    ) -> Result<Bytes, BlockError> {
        let req = self.next_req.get();
        self.next_req.set(req.wrapping_add(1));
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
                    entry,
                    index,
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
                            entry,
                            index,
                        } => {
                            let shard = shard.clone();
                            runtime::spawn_detached(async move {
                                let result = shard.local_block(entry, index).await;
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
                    }
                }
            });
        }
    }
}
