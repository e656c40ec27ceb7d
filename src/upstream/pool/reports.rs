//! p2p mode's reports on an [`Upstream`]: blocks fetched (Have, batched), holdings
//! announced, and peers reported.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::upstream::Upstream;
use crate::pure::protocol::{
    encode, limits, BlockRange, FileRef, Frame, Have, PeerProblem, PeerReport,
};
use crate::runtime::{self};

impl Upstream {
    /// Whether the upstream keeps a p2p registry (its Hello said so): only then are
    /// Haves sent to it.
    pub fn is_registry(&self) -> bool {
        self.registry
    }

    /// Reports, soon and batched, that this node now holds block `index` of version
    /// `version` of `file` (p2p mode: the upstream may hand this node to others). Best
    /// effort: with too much unsent, or the connection gone, the report is dropped; an
    /// upstream without a registry is not told.
    pub fn report_have(self: &Rc<Self>, file: &FileRef, version: u64, index: u64) {
        if !self.registry || self.inner.dead.borrow().is_some() {
            return;
        }
        {
            let mut haves = self.haves.borrow_mut();
            let pending: usize = haves.values().map(|(_, b)| b.len()).sum();
            if pending >= MAX_PENDING_HAVE_BLOCKS {
                return;
            }
            // Looked up before inserting: no copy of the file's name per block.
            match haves.get_mut(file) {
                // The file changed: only the new version's blocks are worth reporting.
                Some(e) if e.0 != version => *e = (version, vec![index]),
                Some(e) => e.1.push(index),
                None => {
                    haves.insert(file.clone(), (version, vec![index]));
                }
            }
        }
        if !self.have_flush_due.replace(true) {
            let me = Rc::downgrade(self);
            runtime::spawn_detached(async move {
                runtime::sleep(HAVE_BATCH_INTERVAL).await;
                if let Some(up) = me.upgrade() {
                    up.flush_haves().await;
                }
            });
        }
    }

    /// Sends the pending reports as Have frames (ranges of consecutive blocks).
    async fn flush_haves(&self) {
        self.have_flush_due.set(false);
        let haves = std::mem::take(&mut *self.haves.borrow_mut());
        for (file, (version, mut blocks)) in haves {
            blocks.sort_unstable();
            blocks.dedup();
            let mut ranges: Vec<BlockRange> = Vec::new();
            for b in blocks {
                match ranges.last_mut() {
                    Some(r) if r.start + r.count == b => r.count += 1,
                    _ => ranges.push(BlockRange { start: b, count: 1 }),
                }
            }
            self.announce(&file, version, &ranges, false).await;
        }
    }

    /// Tells the upstream this node holds `ranges` of version `version` of `file`
    /// (Have frames of at most `MAX_RANGES` ranges each), asking for a handle first
    /// if this connection has none for that version. Best effort: reports are hints.
    /// With `complete`, `ranges` are all the blocks this node holds of the file: the
    /// first frame is a Holdings (when the upstream takes them), which replaces what
    /// it knew, so blocks evicted since are no longer handed out.
    /// Returns false when the upstream could not be told (no registry there, no
    /// handle, the connection busy or gone).
    pub async fn announce(
        &self,
        file: &FileRef,
        version: u64,
        ranges: &[BlockRange],
        complete: bool,
    ) -> bool {
        if !self.registry {
            return false;
        }
        if ranges.is_empty() {
            return true;
        }
        let Ok(handle) = self.handle(file, version).await else {
            return false;
        };
        ranges
            .chunks(limits::MAX_RANGES)
            .enumerate()
            .all(|(i, chunk)| {
                let h = Have {
                    handle,
                    version,
                    ranges: chunk.to_vec(),
                };
                self.send_hint(&if i == 0 && complete && self.takes_holdings {
                    Frame::Holdings(h)
                } else {
                    Frame::Have(h)
                })
            })
    }

    /// Tells the upstream, which handed out `peer` for `file`, that the peer is
    /// unreachable or sent a bad block, if its Hello said it takes such reports.
    /// Returns whether a report was sent.
    pub async fn report_peer(
        &self,
        file: &FileRef,
        version: u64,
        peer: SocketAddr,
        problem: PeerProblem,
    ) -> bool {
        if !self.takes_peer_reports || peer == self.addr {
            return false;
        }
        let Ok(handle) = self.handle(file, version).await else {
            return false;
        };
        self.send_hint(&Frame::PeerReport(PeerReport {
            handle,
            version,
            problem,
            peer,
        }))
    }

    /// Queues a frame that has no answer; dropped when the queue is full (the
    /// connection is busy) or the connection is gone.
    fn send_hint(&self, frame: &Frame) -> bool {
        let mut bytes = BytesMut::new();
        let sent =
            encode(frame, &mut bytes).is_ok() && self.out.clone().try_send(bytes.freeze()).is_ok();
        if sent {
            // A frame keeps the connection from idling out at the upstream: reuse it
            // (and its handles) rather than open a new one for the next announce.
            self.last_used.set(Instant::now());
        }
        sent
    }
}

/// How long fetched blocks are collected before they are reported (Have).
const HAVE_BATCH_INTERVAL: Duration = Duration::from_millis(200);
/// Unsent reports one connection keeps at most.
const MAX_PENDING_HAVE_BLOCKS: usize = 65_536;
