//! [`Upstream`]: one multiplexed connection to one upstream node, and its requests
//! (info, blocks, Locate) with their deadlines.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::channel::{mpsc, oneshot};
use futures::SinkExt;

use super::{
    config::{
        UpstreamConfig, MAX_HANDLES_PER_CONNECTION, MAX_INFO_DIGEST_BYTES,
        MAX_PENDING_PER_CONNECTION, REUSE_IDLE_LIMIT,
    },
    io_tasks::{reader, writer},
    state::{Inner, Slot},
};
use crate::disk::FileMeta;
use crate::pure::protocol::{
    capability, encode, ErrorCode, FileRef, Frame, Get, InfoRequest, LocateRequest, Location,
};
use crate::runtime::{self};
use crate::upstream::connection::{info_request, Connection, FetchError, InfoPieces, RemoteFile};

/// One connection to one upstream node.
pub struct Upstream {
    pub addr: SocketAddr,
    pub(super) inner: Rc<Inner>,
    pub(super) timeout: Duration,
    pub(super) out: mpsc::Sender<Bytes>,
    next_req: Cell<u32>,
    /// The handle and version the upstream gave each file on this connection.
    handles: RefCell<HashMap<FileRef, (u32, u64)>>,
    handles_asked: Cell<usize>,
    pub(super) last_used: Cell<Instant>,
    /// p2p mode: blocks this node fetched and verified, to report in batches (Have),
    /// by file: (version, blocks).
    pub(super) haves: RefCell<HashMap<FileRef, (u64, Vec<u64>)>>,
    pub(super) have_flush_due: Cell<bool>,
    /// The upstream's Hello announced that it accepts PeerReport frames.
    pub(super) takes_peer_reports: bool,
    /// The upstream's Hello announced a p2p registry: Haves are worth sending.
    pub(super) registry: bool,
    /// The upstream's Hello announced that it takes Holdings frames.
    pub(super) takes_holdings: bool,
    /// Dropping the upstream stops its reader (and, with `out`, its writer).
    _reader: runtime::Task<()>,
}

impl Upstream {
    /// Connects, exchanges Hellos, and starts the reader and writer.
    pub async fn connect(addr: SocketAddr, cfg: &UpstreamConfig) -> Result<Upstream, FetchError> {
        let conn = Connection::connect_from(addr, cfg.bind, cfg.role, cfg.listen_port, cfg.timeout)
            .await?;
        let takes_peer_reports = conn.remote_capabilities & capability::PEER_REPORT != 0;
        let registry = conn.remote_capabilities & capability::P2P_REGISTRY != 0;
        let takes_holdings = conn.remote_capabilities & capability::HOLDINGS != 0;
        let (stream, buf, dec) = conn.into_parts();
        let (rd, wr) = futures_lite::io::split(stream);
        let inner = Rc::new(Inner {
            addr,
            pending: RefCell::new(HashMap::new()),
            dead: RefCell::new(None),
            last_rx: Cell::new(Instant::now()),
            slot_waiters: RefCell::new(VecDeque::new()),
            in_use: Cell::new(0),
        });
        let (tx, rx) = mpsc::channel(MAX_PENDING_PER_CONNECTION);
        runtime::spawn_detached(writer(inner.clone(), wr, rx, cfg.timeout));
        let reader = runtime::spawn(reader(inner.clone(), rd, buf, dec));
        tracing::debug!(upstream = %addr, "upstream connection open");
        Ok(Upstream {
            addr,
            inner,
            timeout: cfg.timeout,
            out: tx,
            next_req: Cell::new(1),
            handles: RefCell::new(HashMap::new()),
            handles_asked: Cell::new(0),
            last_used: Cell::new(Instant::now()),
            haves: RefCell::new(HashMap::new()),
            have_flush_due: Cell::new(false),
            takes_peer_reports,
            registry,
            takes_holdings,
            _reader: reader,
        })
    }

    /// Whether new requests may use this connection.
    pub(super) fn usable(&self) -> bool {
        self.inner.dead.borrow().is_none()
            && self.handles_asked.get() < MAX_HANDLES_PER_CONNECTION
            && self.last_used.get().elapsed() < REUSE_IDLE_LIMIT
    }

    fn next_req_id(&self) -> u32 {
        let id = self.next_req.get();
        self.next_req.set(id.wrapping_add(1).max(1));
        id
    }

    pub(super) async fn slot(&self) -> Result<Slot, FetchError> {
        let inner = &self.inner;
        if inner.in_use.get() < MAX_PENDING_PER_CONNECTION {
            inner.in_use.set(inner.in_use.get() + 1);
            return Ok(Slot(inner.clone()));
        }
        let (tx, rx) = oneshot::channel();
        inner.slot_waiters.borrow_mut().push_back(tx);
        match runtime::timeout(self.timeout, rx).await {
            Ok(Ok(())) => Ok(Slot(inner.clone())),
            Ok(Err(_)) => Err(self.gone()),
            Err(_) => Err(self.timed_out("a free request slot")),
        }
    }

    pub(super) fn gone(&self) -> FetchError {
        self.inner
            .death()
            .unwrap_or(FetchError::Closed { addr: self.addr })
    }

    fn timed_out(&self, what: &'static str) -> FetchError {
        FetchError::Timeout {
            addr: self.addr,
            what,
            ms: self.timeout.as_millis() as u64,
        }
    }

    /// Sends `frame` (whose request id is `req_id`) and waits for its answer. A
    /// timeout with nothing at all heard from the upstream since the request went out
    /// kills the connection: it is silent, not merely slow with this request.
    pub(super) async fn request(
        &self,
        req_id: u32,
        frame: &Frame,
        what: &'static str,
    ) -> Result<Frame, FetchError> {
        if let Some(e) = self.inner.death() {
            return Err(e);
        }
        let _slot = self.slot().await?;
        self.last_used.set(Instant::now());
        let mut bytes = BytesMut::new();
        encode(frame, &mut bytes).map_err(|e| FetchError::Protocol {
            addr: self.addr,
            message: format!("cannot encode request: {e}"),
        })?;
        let (tx, rx) = oneshot::channel();
        self.inner.pending.borrow_mut().insert(req_id, tx);
        let sent_at = Instant::now();
        let mut out = self.out.clone();
        // Dropped before its answer (another source delivered the block first, the
        // caller's deadline): the upstream is told to stop.
        let mut unanswered = Unanswered {
            up: self,
            req_id,
            get: matches!(frame, Frame::Get(_)),
            armed: true,
        };
        let answer = runtime::timeout(self.timeout, async {
            out.send(bytes.freeze()).await.map_err(|_| self.gone())?;
            rx.await.map_err(|_| self.gone())
        })
        .await;
        unanswered.armed = false;
        match answer {
            Ok(Ok(Frame::Error(e))) => Err(FetchError::Remote {
                addr: self.addr,
                code: e.code,
                message: e.message.to_string(),
            }),
            Ok(r) => r,
            Err(_) => {
                self.inner.pending.borrow_mut().remove(&req_id);
                let err = self.timed_out(what);
                if self.inner.last_rx.get() < sent_at {
                    self.inner.kill(err.clone());
                } else if matches!(frame, Frame::Get(_)) {
                    // The upstream is alive but slow with this block: stop it from
                    // sending what nobody waits for any more.
                    let _ = self.cancel(req_id).await;
                }
                Err(err)
            }
        }
    }

    /// Tells the upstream, without waiting, that nobody waits for request `req_id`
    /// any more (a Get it may still be sending: its link is freed for what is
    /// wanted). Best effort: a full or closed connection drops the Cancel.
    fn cancel_now(&self, req_id: u32) {
        let mut b = BytesMut::new();
        if encode(&Frame::Cancel { req_id }, &mut b).is_ok() {
            // A fresh clone of the sender has a slot of its own.
            let _ = self.out.clone().try_send(b.freeze());
        }
    }

    async fn cancel(&self, req_id: u32) -> Result<(), ()> {
        let mut b = BytesMut::new();
        encode(&Frame::Cancel { req_id }, &mut b).map_err(|_| ())?;
        let mut out = self.out.clone();
        match runtime::timeout(self.timeout, out.send(b.freeze())).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    pub(super) fn unexpected(&self, f: &Frame) -> FetchError {
        FetchError::Protocol {
            addr: self.addr,
            message: format!("unexpected {} frame", f.name()),
        }
    }

    /// One Info request; remembers the handle it names.
    async fn info_piece(
        &self,
        file: &FileRef,
        frame: Frame,
    ) -> Result<crate::pure::protocol::Info, FetchError> {
        let Some(req_id) = frame.req_id() else {
            return Err(self.unexpected(&frame));
        };
        self.handles_asked.set(self.handles_asked.get() + 1);
        match self.request(req_id, &frame, "file info").await {
            Ok(Frame::Info(i)) => {
                self.handles
                    .borrow_mut()
                    .insert(file.clone(), (i.handle, i.version));
                Ok(i)
            }
            Ok(other) => Err(self.unexpected(&other)),
            Err(e) => {
                if let FetchError::Remote {
                    code: ErrorCode::Busy,
                    ..
                } = e
                {
                    // Most likely out of handles on this connection: use a new one.
                    self.handles_asked.set(MAX_HANDLES_PER_CONNECTION);
                }
                Err(e)
            }
        }
    }

    /// The file's current metadata (no digests): to revalidate a cached version.
    pub async fn file_meta(&self, file: &FileRef) -> Result<FileMeta, FetchError> {
        let req_id = self.next_req_id();
        let frame = Frame::InfoRequest(InfoRequest {
            req_id,
            file: file.clone(),
            digest_start: 0,
            digest_count: 0,
        });
        let i = self.info_piece(file, frame).await?;
        Ok(FileMeta {
            size: i.size,
            block_size: i.block_size,
            algo: i.algo,
            version: i.version,
            mtime_unix_secs: i.mtime_unix_secs,
        })
    }

    /// The file's info with every block's digest (asked for in ranges).
    pub async fn file_info(&self, file: &FileRef) -> Result<RemoteFile, FetchError> {
        let mut pieces = InfoPieces::new(self.addr, MAX_INFO_DIGEST_BYTES);
        while let Some(start) = pieces.next_start() {
            let frame = info_request(self.next_req_id(), file, start);
            pieces.add(self.info_piece(file, frame).await?)?;
        }
        pieces.finish()
    }

    /// This connection's handle for version `version` of `file`, asking for one if
    /// needed. Another version at the upstream is `VersionChanged`.
    pub(super) async fn handle(&self, file: &FileRef, version: u64) -> Result<u32, FetchError> {
        let known = self.handles.borrow().get(file).copied();
        let (handle, v) = match known {
            // A handle for another version may be stale (the file changed since this
            // connection asked): ask again rather than trust it.
            Some(hv) if hv.1 == version => hv,
            _ => {
                let m = self.file_meta(file).await?;
                let h = self.handles.borrow().get(file).map_or(0, |(h, _)| *h);
                (h, m.version)
            }
        };
        if v != version {
            return Err(FetchError::Remote {
                addr: self.addr,
                code: ErrorCode::VersionChanged,
                message: format!("the upstream has version {v:016x}, not {version:016x}"),
            });
        }
        Ok(handle)
    }

    /// Block `index` of version `version` of `file` (unverified: the caller checks it).
    pub async fn block(
        &self,
        file: &FileRef,
        version: u64,
        index: u64,
    ) -> Result<Bytes, FetchError> {
        let handle = self.handle(file, version).await?;
        let req_id = self.next_req_id();
        let frame = Frame::Get(Get {
            req_id,
            handle,
            version,
            first_block: index,
            block_count: 1,
        });
        match self.request(req_id, &frame, "block data").await {
            Ok(Frame::Data(d)) if d.block == index => Ok(d.payload),
            Ok(other) => Err(self.unexpected(&other)),
            Err(e) => {
                if matches!(
                    e,
                    FetchError::Remote {
                        code: ErrorCode::VersionChanged,
                        ..
                    }
                ) {
                    self.handles.borrow_mut().remove(file);
                }
                Err(e)
            }
        }
    }

    /// The upstream's Locate answer for blocks `first..first+count` of `file`.
    pub async fn locate(
        &self,
        file: &FileRef,
        version: u64,
        first: u64,
        count: u64,
    ) -> Result<Vec<Location>, FetchError> {
        let handle = self.handle(file, version).await?;
        let req_id = self.next_req_id();
        let frame = Frame::LocateRequest(LocateRequest {
            req_id,
            handle,
            first_block: first,
            block_count: count,
        });
        match self.request(req_id, &frame, "locations").await? {
            Frame::Locate(l) => Ok(l.locations),
            other => Err(self.unexpected(&other)),
        }
    }
}

/// A request sent and not yet answered: dropped so (the caller gave it up), it leaves
/// the pending map and a Get is cancelled at the upstream.
struct Unanswered<'a> {
    up: &'a Upstream,
    req_id: u32,
    get: bool,
    armed: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let pending = self.up.inner.pending.try_borrow_mut().ok();
        let was_pending = pending.is_some_and(|mut p| p.remove(&self.req_id).is_some());
        if self.get && was_pending && self.up.inner.death().is_none() {
            self.up.cancel_now(self.req_id);
        }
    }
}
