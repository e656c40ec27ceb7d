//! A shard's connections to its upstream nodes (the `-S` parent, or the URL's host):
//! one multiplexed SPP connection per upstream address, shared by every request of the
//! shard, never by two shards. Requests are pipelined; a reader task hands each answer
//! to the request that waits for it (by request id), a writer task sends requests in
//! order. Every request has a deadline; a connection that broke, closed, or stayed
//! silent past a deadline is dropped and the next request opens a new one.
//!
//! Nothing here verifies blocks: the caller checks every block against the origin's
//! digest before anyone sees it.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::channel::{mpsc, oneshot};
use futures::future::{FutureExt, LocalBoxFuture, Shared};
use futures::{SinkExt, StreamExt};
use futures_lite::io::{ReadHalf, WriteHalf};

use super::connection::{info_request, Connection, FetchError, InfoPieces, RemoteFile};
use crate::disk::FileMeta;
use crate::pure::protocol::{
    capability, encode, limits, BlockRange, Decoder, ErrorCode, FileRef, Frame, Get, Have,
    InfoRequest, LocateRequest, Location, PeerProblem, PeerReport, Role,
};
use crate::runtime::{self, TcpStream};

/// Requests one connection carries at once: the upstream refuses more
/// (`limits::MAX_OUTSTANDING_REQUESTS`), so more wait here for a free slot.
pub const MAX_PENDING_PER_CONNECTION: usize = limits::MAX_OUTSTANDING_REQUESTS;
/// File handles a connection asks for before it is replaced by a fresh one: the
/// upstream keeps every handle of a connection until it closes, and holds no more
/// than this.
pub use limits::MAX_HANDLES_PER_CONNECTION;
/// Upstream addresses a shard keeps connections to; past it the least recently used
/// connection is closed.
pub const MAX_UPSTREAMS_PER_SHARD: usize = 256;
/// A connection unused for this long is replaced rather than reused: the upstream
/// closes connections idle for `limits::IDLE_TIMEOUT_SECS`, and a request sent just as
/// it does so would fail for nothing.
const REUSE_IDLE_LIMIT: Duration = Duration::from_secs(limits::IDLE_TIMEOUT_SECS - 10);
/// Bytes read from the socket per call (a Data frame needs up to a block more).
const READ_CHUNK_BYTES: usize = 256 * 1024;
/// Most digest bytes of one file held while its info is fetched (a 1 TiB file in
/// 256 KiB blocks with SHA-256 needs 128 MiB): a bigger announcement is refused.
pub const MAX_INFO_DIGEST_BYTES: usize = 256 << 20;

/// How this node talks to its upstreams; the same for every shard.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// Our role in the Hello (SCC or LHC).
    pub role: Role,
    /// The port we accept on, announced in the Hello (peers may be handed it).
    pub listen_port: u16,
    /// `--bind`: connections leave from this address when it is a specific one.
    pub bind: Option<IpAddr>,
    /// Deadline for connecting and for each answer.
    pub timeout: Duration,
}

/// What the reader and the requests of one connection share.
struct Inner {
    addr: SocketAddr,
    /// Requests waiting for their answer, by request id.
    pending: RefCell<HashMap<u32, oneshot::Sender<Frame>>>,
    /// Set once the connection is unusable, with why.
    dead: RefCell<Option<FetchError>>,
    /// When the last byte arrived from the upstream.
    last_rx: Cell<Instant>,
    /// Requests waiting for a free slot (see [`MAX_PENDING_PER_CONNECTION`]).
    slot_waiters: RefCell<VecDeque<oneshot::Sender<()>>>,
    in_use: Cell<usize>,
}

impl Inner {
    fn kill(&self, why: FetchError) {
        if self.dead.borrow().is_none() {
            tracing::debug!(upstream = %self.addr, error = %why, "upstream connection closed");
            *self.dead.borrow_mut() = Some(why);
        }
        // Dropping the senders wakes every waiting request with the error above.
        self.pending.borrow_mut().clear();
        self.slot_waiters.borrow_mut().clear();
    }

    fn death(&self) -> Option<FetchError> {
        self.dead.borrow().as_ref().map(duplicate)
    }
}

/// A slot among a connection's [`MAX_PENDING_PER_CONNECTION`]; freed on drop.
struct Slot(Rc<Inner>);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut waiters = self.0.slot_waiters.borrow_mut();
        // Hand the slot straight to the next waiter still waiting.
        while let Some(w) = waiters.pop_front() {
            if w.send(()).is_ok() {
                return;
            }
        }
        self.0.in_use.set(self.0.in_use.get() - 1);
    }
}

/// One connection to one upstream node.
pub struct Upstream {
    pub addr: SocketAddr,
    inner: Rc<Inner>,
    timeout: Duration,
    out: mpsc::Sender<Bytes>,
    next_req: Cell<u32>,
    /// The handle and version the upstream gave each file on this connection.
    handles: RefCell<HashMap<FileRef, (u32, u64)>>,
    handles_asked: Cell<usize>,
    last_used: Cell<Instant>,
    /// p2p mode: blocks this node fetched and verified, to report in batches (Have),
    /// by file: (version, blocks).
    haves: RefCell<HashMap<FileRef, (u64, Vec<u64>)>>,
    have_flush_due: Cell<bool>,
    /// The upstream's Hello announced that it accepts PeerReport frames.
    takes_peer_reports: bool,
    /// The upstream's Hello announced a p2p registry: Haves are worth sending.
    registry: bool,
    /// The upstream's Hello announced that it takes Holdings frames.
    takes_holdings: bool,
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
    fn usable(&self) -> bool {
        self.inner.dead.borrow().is_none()
            && self.handles_asked.get() < MAX_HANDLES_PER_CONNECTION
            && self.last_used.get().elapsed() < REUSE_IDLE_LIMIT
    }

    fn next_req_id(&self) -> u32 {
        let id = self.next_req.get();
        self.next_req.set(id.wrapping_add(1).max(1));
        id
    }

    async fn slot(&self) -> Result<Slot, FetchError> {
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

    fn gone(&self) -> FetchError {
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
    async fn request(
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
        let answer = runtime::timeout(self.timeout, async {
            out.send(bytes.freeze()).await.map_err(|_| self.gone())?;
            rx.await.map_err(|_| self.gone())
        })
        .await;
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
                    self.inner.kill(duplicate(&err));
                } else if matches!(frame, Frame::Get(_)) {
                    // The upstream is alive but slow with this block: stop it from
                    // sending what nobody waits for any more.
                    let _ = self.cancel(req_id).await;
                }
                Err(err)
            }
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

    fn unexpected(&self, f: &Frame) -> FetchError {
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
    async fn handle(&self, file: &FileRef, version: u64) -> Result<u32, FetchError> {
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

/// Reads answers and hands each to the request that waits for it.
async fn reader(
    inner: Rc<Inner>,
    mut rd: ReadHalf<TcpStream>,
    mut buf: BytesMut,
    mut dec: Decoder,
) {
    let addr = inner.addr;
    loop {
        let frame = match dec.decode(&mut buf) {
            Ok(Some(f)) => f,
            Ok(None) => {
                let want = dec
                    .wanted(&buf)
                    .clamp(READ_CHUNK_BYTES, limits::MAX_FRAME_BYTES);
                match runtime::read_some(&mut rd, &mut buf, want).await {
                    Ok(0) => return inner.kill(FetchError::Closed { addr }),
                    Ok(_) => {
                        inner.last_rx.set(Instant::now());
                        continue;
                    }
                    Err(source) => return inner.kill(FetchError::Io { addr, source }),
                }
            }
            Err(e) => {
                return inner.kill(FetchError::Protocol {
                    addr,
                    message: e.to_string(),
                })
            }
        };
        match &frame {
            Frame::Error(e) if e.req_id == 0 => {
                return inner.kill(FetchError::Remote {
                    addr,
                    code: e.code,
                    message: e.message.to_string(),
                })
            }
            Frame::Info(_) | Frame::Locate(_) | Frame::Data(_) | Frame::Error(_) => {
                let req_id = frame.req_id().unwrap_or(0);
                // An answer nobody waits for (cancelled, timed out) is dropped.
                if let Some(tx) = inner.pending.borrow_mut().remove(&req_id) {
                    let _ = tx.send(frame);
                }
            }
            Frame::Pong(_) => {}
            other => {
                return inner.kill(FetchError::Protocol {
                    addr,
                    message: format!("unexpected {} frame from an upstream", other.name()),
                })
            }
        }
    }
}

/// Sends requests in order; stops when the connection dies or its upstream is dropped.
async fn writer(
    inner: Rc<Inner>,
    mut wr: WriteHalf<TcpStream>,
    mut rx: mpsc::Receiver<Bytes>,
    timeout: Duration,
) {
    let addr = inner.addr;
    while let Some(b) = rx.next().await {
        if inner.dead.borrow().is_some() {
            break;
        }
        match runtime::timeout(timeout, runtime::write_all_parts(&mut wr, &[&b])).await {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                inner.kill(FetchError::Io { addr, source });
                break;
            }
            Err(_) => {
                inner.kill(FetchError::Timeout {
                    addr,
                    what: "a write",
                    ms: timeout.as_millis() as u64,
                });
                break;
            }
        }
    }
    let _ = futures_lite::AsyncWriteExt::close(&mut wr).await;
}

/// A copy of a fetch error for every request it fails (io errors keep their kind and
/// message).
pub fn duplicate(e: &FetchError) -> FetchError {
    let io = |s: &std::io::Error| std::io::Error::new(s.kind(), s.to_string());
    match e {
        FetchError::Connect { addr, source } => FetchError::Connect {
            addr: *addr,
            source: io(source),
        },
        FetchError::Timeout { addr, what, ms } => FetchError::Timeout {
            addr: *addr,
            what,
            ms: *ms,
        },
        FetchError::Remote {
            addr,
            code,
            message,
        } => FetchError::Remote {
            addr: *addr,
            code: *code,
            message: message.clone(),
        },
        FetchError::Protocol { addr, message } => FetchError::Protocol {
            addr: *addr,
            message: message.clone(),
        },
        FetchError::Closed { addr } => FetchError::Closed { addr: *addr },
        FetchError::Digest { addr, block, algo } => FetchError::Digest {
            addr: *addr,
            block: *block,
            algo,
        },
        FetchError::Io { addr, source } => FetchError::Io {
            addr: *addr,
            source: io(source),
        },
    }
}

type Connecting = Shared<LocalBoxFuture<'static, Result<Rc<Upstream>, Rc<FetchError>>>>;

enum Entry {
    Ready(Rc<Upstream>),
    /// One connect per address at a time, however many requests wait for it.
    Connecting(Connecting),
}

/// A shard's upstream connections, one per address.
pub struct UpstreamPool {
    cfg: UpstreamConfig,
    conns: RefCell<HashMap<SocketAddr, Entry>>,
    /// When each (peer, problem) was last reported, so a peer that keeps failing is
    /// reported once per [`PEER_REPORT_REPEAT`].
    reported: RefCell<HashMap<(SocketAddr, PeerProblem), Instant>>,
}

/// The same peer and problem are reported at most once per this interval.
pub const PEER_REPORT_REPEAT: Duration = Duration::from_secs(10);
/// (peer, problem) pairs a pool remembers reporting, at most.
const MAX_REPORTED: usize = 1024;

impl UpstreamPool {
    pub fn new(cfg: UpstreamConfig) -> UpstreamPool {
        UpstreamPool {
            cfg,
            conns: RefCell::new(HashMap::new()),
            reported: RefCell::new(HashMap::new()),
        }
    }

    /// Whether the open connection to `addr` (none is opened) has a p2p registry at
    /// the other end.
    pub fn is_registry(&self, addr: SocketAddr) -> bool {
        matches!(self.conns.borrow().get(&addr), Some(Entry::Ready(up)) if up.registry)
    }

    /// Reports `peer` as unreachable or bad to the node at `to` that handed it out for
    /// `file` (see [`Upstream::report_peer`]), unless it was reported for the same
    /// problem within [`PEER_REPORT_REPEAT`]. Returns whether a report was sent.
    pub async fn report_peer(
        &self,
        to: SocketAddr,
        file: &FileRef,
        version: u64,
        peer: SocketAddr,
        problem: PeerProblem,
    ) -> bool {
        if peer == to {
            return false;
        }
        {
            let mut reported = self.reported.borrow_mut();
            let now = Instant::now();
            if reported
                .get(&(peer, problem))
                .is_some_and(|t| now.duration_since(*t) < PEER_REPORT_REPEAT)
            {
                return false;
            }
            if reported.len() >= MAX_REPORTED {
                reported.retain(|_, t| now.duration_since(*t) < PEER_REPORT_REPEAT);
                if reported.len() >= MAX_REPORTED {
                    reported.clear();
                }
            }
            reported.insert((peer, problem), now);
        }
        let sent = runtime::timeout(self.cfg.timeout, async {
            match self.get(to).await {
                Ok(up) => up.report_peer(file, version, peer, problem).await,
                Err(_) => false,
            }
        })
        .await
        .unwrap_or_default();
        if sent {
            tracing::info!(%peer, problem = problem.name(), to = %to, "reported a peer");
        }
        sent
    }

    /// A usable connection to `addr`: the open one, or a new one.
    pub async fn get(&self, addr: SocketAddr) -> Result<Rc<Upstream>, FetchError> {
        let connecting = {
            let mut conns = self.conns.borrow_mut();
            match conns.get(&addr) {
                Some(Entry::Ready(up)) if up.usable() => return Ok(up.clone()),
                Some(Entry::Connecting(f)) => f.clone(),
                _ => {
                    if conns.len() >= MAX_UPSTREAMS_PER_SHARD && !conns.contains_key(&addr) {
                        let victim = conns
                            .iter()
                            .filter_map(|(a, e)| match e {
                                Entry::Ready(up) => Some((*a, up.last_used.get())),
                                Entry::Connecting(_) => None,
                            })
                            .min_by_key(|(_, t)| *t)
                            .map(|(a, _)| a);
                        if let Some(v) = victim {
                            conns.remove(&v);
                        }
                    }
                    let cfg = self.cfg.clone();
                    let f = async move {
                        Upstream::connect(addr, &cfg)
                            .await
                            .map(Rc::new)
                            .map_err(Rc::new)
                    }
                    .boxed_local()
                    .shared();
                    conns.insert(addr, Entry::Connecting(f.clone()));
                    f
                }
            }
        };
        let r = connecting.await;
        let mut conns = self.conns.borrow_mut();
        // The first waiter to wake files the result; later ones find it filed.
        if matches!(conns.get(&addr), Some(Entry::Connecting(_))) {
            match &r {
                Ok(up) => {
                    conns.insert(addr, Entry::Ready(up.clone()));
                }
                Err(_) => {
                    conns.remove(&addr);
                }
            }
        }
        r.map_err(|e| duplicate(&e))
    }
}
