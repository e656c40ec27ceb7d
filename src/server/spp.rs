//! Serving one SPP connection: handshake, then a reader that decodes requests and a
//! writer that sends answers and streams the blocks of pipelined `Get`s in order.

use std::cell::RefCell;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures::channel::mpsc;
use futures::future::{FutureExt, LocalBoxFuture};
use futures::stream::StreamExt;
use futures_lite::io::{ReadHalf, WriteHalf};

use super::{Ctx, IDLE_TIMEOUT, READ_CHUNK_BYTES, WRITE_TIMEOUT};
use crate::content::Content;
use crate::metrics::ShardMetrics;
use crate::pathsafe::normalize_plain_path;
use crate::protocol::{
    encode, encode_info_head, frame_type, limits, negotiate_version, try_encode_data_header,
    Decoder, ErrorCode, ErrorFrame, Frame, Get, Hello, Holds, Info, InfoRequest, Locate,
    LocateRequest, Location, Role, PROTOCOL_VERSION,
};
use crate::runtime::{self, TcpStream};
use crate::shard::{BlockError, PinnedBlock, Shard, PIN_WAIT_TIMEOUT};

/// File handles one connection may hold.
pub const MAX_HANDLES_PER_CONNECTION: usize = 1024;

/// What the reader hands the writer, in the order it must go out.
enum Out {
    /// A frame in one or two parts (an Info's head and its digests, sent from the
    /// mapped index without a copy). `answer`: it answers an Info or Locate request,
    /// which stays outstanding until it is written.
    Frame {
        head: Bytes,
        tail: Bytes,
        answer: bool,
    },
    Get {
        req_id: u32,
        content: Content,
        first: u64,
        count: u32,
    },
    /// Write what is queued, then close (after a protocol error).
    Close,
}

/// Per-connection state the reader and writer share (same task set, same thread).
#[derive(Default)]
struct ConnState {
    handles: Vec<Content>,
    /// Get requests queued or being streamed.
    outstanding: HashSet<u32>,
    cancelled: HashSet<u32>,
    /// Gets ended early by an error answer: their remaining blocks are skipped.
    failed: HashSet<u32>,
    /// p2p mode: the peers this connection was handed in Locate answers (at most
    /// [`MAX_HANDED_OUT`]): only those may be reported (PeerReport).
    handed_out: HashSet<SocketAddr>,
    /// PeerReports that removed a peer, on this connection.
    reports_accepted: u32,
    /// Info and Locate requests being answered or whose answers wait to be written:
    /// they count against the outstanding-request limit with the Gets.
    answers_pending: usize,
    /// Heap bytes of frames queued for the writer and not yet written; the reader
    /// stops reading while they are over [`MAX_QUEUED_ANSWER_BYTES`].
    queued_bytes: usize,
    /// The reader, waiting for the writer to catch up.
    reader_waker: Option<std::task::Waker>,
}

/// Bytes of answers a connection may have queued before it stops reading requests:
/// a client that pipelines requests and reads nothing fills its socket buffers, not
/// this node's memory.
pub const MAX_QUEUED_ANSWER_BYTES: usize = 32 * 1024;

/// Peers remembered per connection as handed out to it; past it, new ones are not
/// remembered (and cannot be reported on this connection).
const MAX_HANDED_OUT: usize = 1024;
/// PeerReports that may remove a peer on one connection; later ones are ignored, so a
/// client cannot empty the registry by itself.
const MAX_REPORTS_PER_CONNECTION: u32 = 64;

impl ConnState {
    /// Whether the rest of Get `req_id` is to be skipped.
    fn is_stopped(&self, req_id: u32) -> bool {
        self.cancelled.contains(&req_id) || self.failed.contains(&req_id)
    }

    /// Forgets Get `req_id`: its last block was sent or skipped.
    fn finish(&mut self, req_id: u32) {
        self.outstanding.remove(&req_id);
        self.cancelled.remove(&req_id);
        self.failed.remove(&req_id);
    }

    /// Requests of every kind outstanding on this connection.
    fn requests(&self) -> usize {
        self.outstanding.len() + self.answers_pending
    }

    /// Counts a frame queued for the writer.
    fn queued(&mut self, bytes: usize) {
        self.queued_bytes += bytes;
    }

    /// Counts a queued frame written (or dropped) and lets the reader go on when the
    /// queue is short again.
    fn written(&mut self, bytes: usize, answer: bool) {
        self.queued_bytes = self.queued_bytes.saturating_sub(bytes);
        if answer {
            self.answers_pending = self.answers_pending.saturating_sub(1);
        }
        if self.queued_bytes <= MAX_QUEUED_ANSWER_BYTES {
            if let Some(w) = self.reader_waker.take() {
                w.wake();
            }
        }
    }
}

/// A frame for the writer, counted in the connection's queued bytes.
fn out_frame(state: &RefCell<ConnState>, f: Bytes, answer: bool) -> Out {
    state.borrow_mut().queued(f.len());
    Out::Frame {
        head: f,
        tail: Bytes::new(),
        answer,
    }
}

/// Waits until the connection's queued answers are within [`MAX_QUEUED_ANSWER_BYTES`].
async fn queue_has_room(state: &RefCell<ConnState>) {
    std::future::poll_fn(|cx| {
        let mut st = state.borrow_mut();
        if st.queued_bytes <= MAX_QUEUED_ANSWER_BYTES {
            std::task::Poll::Ready(())
        } else {
            st.reader_waker = Some(cx.waker().clone());
            std::task::Poll::Pending
        }
    })
    .await
}

fn frame_bytes(f: &Frame) -> Bytes {
    let mut b = BytesMut::new();
    // Our own frames are built within the limits; an encode error is a programmer error
    // and is turned into an internal error frame rather than a panic.
    if encode(f, &mut b).is_err() {
        b.clear();
        let _ = encode(
            &Frame::Error(ErrorFrame::new(
                0,
                ErrorCode::Internal,
                "internal encode error",
            )),
            &mut b,
        );
    }
    b.freeze()
}

/// An Error frame; its message is cut to fit on a character boundary by
/// [`ErrorFrame::new`], however long the path, host or upstream error it quotes.
fn error_frame(req_id: u32, code: ErrorCode, message: impl Into<String>) -> Bytes {
    frame_bytes(&Frame::Error(ErrorFrame::new(req_id, code, message.into())))
}

pub async fn serve(
    shard: Rc<Shard>,
    ctx: Ctx,
    stream: TcpStream,
    mut buf: BytesMut,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) {
    let (mut rd, mut wr) = futures_lite::io::split(stream);
    let mut dec = Decoder::new();

    // Handshake: the first frame must be a Hello of a version we speak.
    let hello = match read_frame(&mut rd, &mut buf, &mut dec, super::FIRST_BYTE_TIMEOUT).await {
        Ok(Read::Frame(Frame::Hello(h))) => h,
        Ok(Read::Frame(_)) => {
            reject(
                &shard,
                &mut wr,
                error_frame(0, ErrorCode::BadRequest, "expected Hello"),
            )
            .await;
            return;
        }
        Ok(Read::Closed | Read::Idle) => return,
        Err(msg) => {
            reject(&shard, &mut wr, error_frame(0, ErrorCode::BadRequest, msg)).await;
            return;
        }
    };
    // A newer peer is answered with the version we speak; it must fall back to it.
    let Some(version) = negotiate_version(hello.version) else {
        let msg = format!(
            "version {} not supported (this node speaks {PROTOCOL_VERSION})",
            hello.version
        );
        reject(
            &shard,
            &mut wr,
            error_frame(0, ErrorCode::UnsupportedVersion, msg),
        )
        .await;
        return;
    };
    tracing::debug!(role = ?hello.role, port = hello.listen_port, "spp hello");
    let ours = Frame::Hello(Hello {
        version,
        role: ctx.spp_role(),
        listen_port: ctx.port,
        capabilities: ctx.capabilities(),
    });
    if write(&mut wr, &[&frame_bytes(&ours)]).await.is_err() {
        return;
    }

    let state = Rc::new(RefCell::new(ConnState::default()));
    let (tx, rx) = mpsc::channel::<Out>(limits::MAX_OUTSTANDING_REQUESTS + 16);
    let may_fetch = ctx.may_fetch(peer.ip(), local.map(|l| l.ip()));
    let writer = {
        let (s, st) = (shard.clone(), state.clone());
        // The writer is a task of its own: run it under the panic policy as well.
        runtime::spawn(async move {
            super::contained(&s.clone(), writer_loop(s, wr, rx, st, may_fetch)).await;
        })
    };
    let conn = Conn {
        shard: &shard,
        ctx: &ctx,
        state: &state,
        peer,
        local,
        may_fetch,
        // Where the requester accepts SPP (its address, the port of its Hello): how it
        // is handed to others as a peer in p2p mode.
        listen: (hello.listen_port != 0).then(|| SocketAddr::new(peer.ip(), hello.listen_port)),
    };
    reader_loop(&conn, rd, buf, dec, tx).await;
    writer.await;
}

async fn reject(shard: &Shard, wr: &mut WriteHalf<TcpStream>, err: Bytes) {
    ShardMetrics::add(&shard.m().protocol_errors, 1);
    let _ = write(wr, &[&err]).await;
}

async fn write(wr: &mut WriteHalf<TcpStream>, parts: &[&[u8]]) -> Result<(), ()> {
    match runtime::timeout(WRITE_TIMEOUT, runtime::write_all_parts(wr, parts)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// What one attempt to read a frame found.
enum Read {
    Frame(Frame),
    /// The peer closed its side, or the socket failed: nothing more will arrive.
    Closed,
    /// Nothing arrived within the wait.
    Idle,
}

/// Reads until one frame is decoded, the peer closes, or `wait` passes without bytes.
async fn read_frame(
    rd: &mut ReadHalf<TcpStream>,
    buf: &mut BytesMut,
    dec: &mut Decoder,
    wait: std::time::Duration,
) -> Result<Read, String> {
    loop {
        match dec.decode(buf) {
            Ok(Some(f)) => return Ok(Read::Frame(f)),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        // Only answers are large (Info, Data) and a client never sends those: refuse
        // them from the type byte, before their payload could make us buffer megabytes.
        if let Some(&t) = buf.first() {
            if matches!(t, frame_type::INFO | frame_type::LOCATE | frame_type::DATA) {
                return Err(format!(
                    "frame type {t:#04x} is an answer; clients may not send it"
                ));
            }
        }
        // Read what the frame still needs, in bounded slices, so the buffer only grows
        // as bytes really arrive.
        let want = dec.wanted(buf).clamp(1, READ_CHUNK_BYTES);
        match runtime::timeout(wait, runtime::read_some(rd, buf, want)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(Read::Closed),
            Err(_) => return Ok(Read::Idle),
            Ok(Ok(_)) => {}
        }
    }
}

/// What the reader knows about its connection.
struct Conn<'a> {
    shard: &'a Rc<Shard>,
    ctx: &'a Ctx,
    state: &'a Rc<RefCell<ConnState>>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    /// The requester may make this node fetch from its upstream (caches).
    may_fetch: bool,
    /// The requester's SPP address, when it accepts connections (a node, not a
    /// plain client).
    listen: Option<SocketAddr>,
}

async fn reader_loop(
    conn: &Conn<'_>,
    mut rd: ReadHalf<TcpStream>,
    mut buf: BytesMut,
    mut dec: Decoder,
    mut tx: mpsc::Sender<Out>,
) {
    let (shard, state, peer) = (conn.shard, conn.state, conn.peer);
    loop {
        // A client that does not read its answers is not read either.
        if runtime::timeout(IDLE_TIMEOUT, queue_has_room(state))
            .await
            .is_err()
        {
            return;
        }
        let frame = match read_frame(&mut rd, &mut buf, &mut dec, IDLE_TIMEOUT).await {
            Ok(Read::Frame(f)) => f,
            Ok(Read::Idle) => {
                // Idle with Gets still streaming is not idle: keep the connection.
                if !state.borrow().outstanding.is_empty() && !tx.is_closed() {
                    continue;
                }
                return;
            }
            // The peer is gone (or only half-closed): stop reading and let the writer
            // finish what is queued; reading again would return end-of-file at once,
            // a busy loop that starves every other task of this shard.
            Ok(Read::Closed) => return,
            Err(msg) => {
                ShardMetrics::add(&shard.m().protocol_errors, 1);
                tracing::debug!(%peer, error = %msg, "closing connection after a bad frame");
                let f = error_frame(0, ErrorCode::BadRequest, msg);
                let _ = tx.try_send(out_frame(state, f, false));
                let _ = tx.try_send(Out::Close);
                return;
            }
        };
        let out = match frame {
            Frame::InfoRequest(r) => {
                ShardMetrics::add(&shard.m().requests_spp, 1);
                let Some(tx) = start_answer(conn, r.req_id, &tx) else {
                    continue;
                };
                let (shard, ctx, state) = (shard.clone(), conn.ctx.clone(), state.clone());
                let may_fetch = conn.may_fetch;
                // Indexing (origin) or asking the upstream (cache) may take a while:
                // answer on its own so other requests go on.
                runtime::spawn_detached(async move {
                    let s = shard.clone();
                    super::contained(&s, async move {
                        let out = info(&shard, &ctx, &state, r, may_fetch).await;
                        send_answer(tx, out).await;
                    })
                    .await;
                });
                continue;
            }
            Frame::LocateRequest(r) => {
                ShardMetrics::add(&shard.m().requests_spp, 1);
                let Some(tx) = start_answer(conn, r.req_id, &tx) else {
                    continue;
                };
                let (shard, ctx, state) = (shard.clone(), conn.ctx.clone(), state.clone());
                let (local, may_fetch, requester) = (conn.local, conn.may_fetch, conn.peer.ip());
                // A cache relays its upstream's answer: that takes a round trip.
                runtime::spawn_detached(async move {
                    let s = shard.clone();
                    super::contained(&s, async move {
                        let f =
                            locate(&shard, &ctx, &state, &r, (local, requester), may_fetch).await;
                        let out = out_frame(&state, f, true);
                        send_answer(tx, out).await;
                    })
                    .await;
                });
                continue;
            }
            Frame::Get(g) => {
                ShardMetrics::add(&shard.m().requests_spp, 1);
                match accept_get(state, &g) {
                    Ok(content) => Out::Get {
                        req_id: g.req_id,
                        content,
                        first: g.first_block,
                        count: g.block_count,
                    },
                    Err((code, msg)) => {
                        if code == ErrorCode::Busy {
                            ShardMetrics::add(&shard.m().requests_busy, 1);
                        }
                        out_frame(state, error_frame(g.req_id, code, msg), false)
                    }
                }
            }
            Frame::Cancel { req_id } => {
                let mut st = state.borrow_mut();
                if st.outstanding.contains(&req_id) {
                    st.cancelled.insert(req_id);
                }
                continue;
            }
            // p2p mode: the requester holds these blocks now; without -i, or from a
            // node that accepts no connections, there is nothing to record.
            Frame::Have(h) => {
                record_have(conn, &h, false);
                continue;
            }
            Frame::Holdings(h) => {
                record_have(conn, &h, true);
                continue;
            }
            // p2p mode: a peer we handed out is unreachable or sent a bad block.
            Frame::PeerReport(r) => {
                record_peer_report(conn, &r);
                continue;
            }
            Frame::Ping(v) => out_frame(state, frame_bytes(&Frame::Pong(v)), false),
            Frame::Pong(_) | Frame::Error(_) => continue,
            Frame::Hello(_) | Frame::Info(_) | Frame::Locate(_) | Frame::Data(_) => {
                ShardMetrics::add(&shard.m().protocol_errors, 1);
                let f = error_frame(0, ErrorCode::BadRequest, "unexpected frame from a client");
                let _ = tx.try_send(out_frame(state, f, false));
                let _ = tx.try_send(Out::Close);
                return;
            }
        };
        if futures::SinkExt::send(&mut tx, out).await.is_err() {
            return;
        }
    }
}

/// Counts an Info or Locate request as outstanding and returns the sender its answer
/// goes to; past the connection's limit it is answered Busy at once (`None`).
fn start_answer(conn: &Conn<'_>, req_id: u32, tx: &mpsc::Sender<Out>) -> Option<mpsc::Sender<Out>> {
    let mut st = conn.state.borrow_mut();
    if st.requests() >= limits::MAX_OUTSTANDING_REQUESTS {
        ShardMetrics::add(&conn.shard.m().requests_busy, 1);
        let f = error_frame(req_id, ErrorCode::Busy, "too many outstanding requests");
        st.queued(f.len());
        drop(st);
        let out = Out::Frame {
            head: f,
            tail: Bytes::new(),
            answer: false,
        };
        // The queue has room for the limit and more; a full one means the writer is
        // gone or far behind, and the reader stops at the byte budget anyway.
        if let Err(e) = tx.clone().try_send(out) {
            if let Out::Frame { head, .. } = e.into_inner() {
                conn.state.borrow_mut().written(head.len(), false);
            }
        }
        return None;
    }
    st.answers_pending += 1;
    Some(tx.clone())
}

/// Hands an answer to the writer (gone when the connection is closing: then the
/// answer is dropped with the connection's state).
async fn send_answer(mut tx: mpsc::Sender<Out>, out: Out) {
    let _ = futures::SinkExt::send(&mut tx, out).await;
}

/// The digests `start..start + count` of a file, as a slice of its mapped index that
/// can be sent without copying.
struct DigestSlice {
    content: Content,
    start: u64,
    count: u64,
}

impl AsRef<[u8]> for DigestSlice {
    fn as_ref(&self) -> &[u8] {
        self.content.digests(self.start, self.count)
    }
}

async fn info(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    state: &Rc<RefCell<ConnState>>,
    r: InfoRequest,
    may_fetch: bool,
) -> Out {
    match info_answer(shard, ctx, state, r, may_fetch).await {
        Ok(out) => out,
        Err(refused) => out_frame(state, refused, true),
    }
}

/// An Info answer (its digests a slice of the mapped index), or the Error frame
/// that refuses it.
async fn info_answer(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    state: &Rc<RefCell<ConnState>>,
    r: InfoRequest,
    may_fetch: bool,
) -> Result<Out, Bytes> {
    if !ctx.host_allowed(&r.file.host) {
        return Err(error_frame(
            r.req_id,
            ErrorCode::Forbidden,
            format!("host {} is not served here", r.file.host),
        ));
    }
    let path = match normalize_plain_path(&r.file.path) {
        Ok(p) => p,
        Err(e) => return Err(error_frame(r.req_id, ErrorCode::NotFound, e.to_string())),
    };
    let content = match ctx
        .resolve(shard, &r.file.host, r.file.port, &path, may_fetch)
        .await
    {
        Ok(c) => c,
        Err(e) => return Err(error_frame(r.req_id, e.spp_code(), e.to_string())),
    };
    let handle = {
        let mut st = state.borrow_mut();
        match st.handles.iter().position(|h| h.same(&content)) {
            Some(i) => i,
            None if st.handles.len() < MAX_HANDLES_PER_CONNECTION => {
                st.handles.push(content.clone());
                st.handles.len() - 1
            }
            None => {
                return Err(error_frame(
                    r.req_id,
                    ErrorCode::Busy,
                    "too many files open on this connection",
                ))
            }
        }
    };
    let count = u64::from(r.digest_count.min(limits::MAX_DIGESTS_PER_INFO));
    let digest_start = r.digest_start.min(content.block_count());
    let digests = Bytes::from_owner(DigestSlice {
        content: content.clone(),
        start: digest_start,
        count,
    });
    let info = Info {
        req_id: r.req_id,
        handle: handle as u32,
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
        return Err(error_frame(
            r.req_id,
            ErrorCode::Internal,
            "internal encode error",
        ));
    }
    let head = head.freeze();
    state.borrow_mut().queued(head.len());
    Ok(Out::Frame {
        head,
        tail: info.digests,
        answer: true,
    })
}

async fn locate(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    state: &Rc<RefCell<ConnState>>,
    r: &LocateRequest,
    (local, requester): (Option<SocketAddr>, std::net::IpAddr),
    may_fetch: bool,
) -> Bytes {
    let Some(content) = state.borrow().handles.get(r.handle as usize).cloned() else {
        return error_frame(r.req_id, ErrorCode::BadRequest, "unknown file handle");
    };
    let me = local.map(|l| Location {
        addr: SocketAddr::new(l.ip(), ctx.port),
        role: ctx.spp_role(),
        holds: Holds::All,
    });
    let mut locations = match &content {
        Content::Published(_) => me.into_iter().collect(),
        Content::Cached(file) => {
            shard
                .cache_locations(file, me, r.first_block, r.block_count, may_fetch)
                .await
        }
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
            r.first_block,
            r.block_count,
            requester,
            &ctx.config.locality,
            std::time::Instant::now(),
        );
        if !peers.is_empty() {
            ShardMetrics::add(&shard.m().locate_answers_with_peers, 1);
            let mut st = state.borrow_mut();
            for p in &peers {
                if st.handed_out.len() < MAX_HANDED_OUT {
                    st.handed_out.insert(p.addr);
                }
            }
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
    frame_bytes(&Frame::Locate(Locate {
        req_id: r.req_id,
        locations,
    }))
}

/// Records a Have in the registry (`-i`): blocks of a file version the requester
/// opened on this connection, under its listening address. With `replace` (a Holdings
/// frame) they replace what it reported of that file before.
fn record_have(conn: &Conn<'_>, h: &crate::protocol::Have, replace: bool) {
    let (Some(peers), Some(listen)) = (&conn.ctx.peers, conn.listen) else {
        return;
    };
    let Some(content) = conn.state.borrow().handles.get(h.handle as usize).cloned() else {
        return;
    };
    // A Have for another version is ignored, as the protocol says.
    if content.version() != h.version {
        return;
    }
    ShardMetrics::add(&conn.shard.m().have_reports, 1);
    if let Ok(mut g) = peers.lock() {
        let (file, now) = (
            (content.file_id(), content.version()),
            std::time::Instant::now(),
        );
        if replace {
            g.holdings(file, listen, &h.ranges, now);
        } else {
            g.have(file, listen, &h.ranges, now);
        }
    }
}

/// Acts on a PeerReport (`-i`): the peer is removed from the registry and refused for
/// a while, if this node handed it to this connection and lists it for the file the
/// requester opened here (see `peers::Registry::report`), up to
/// [`MAX_REPORTS_PER_CONNECTION`] removals. A client can thus only report peers it was
/// given (with `-N`, never another site's), and not empty the registry by itself.
fn record_peer_report(conn: &Conn<'_>, r: &crate::protocol::PeerReport) {
    use crate::protocol::PeerProblem;
    let Some(peers) = &conn.ctx.peers else { return };
    let content = {
        let st = conn.state.borrow();
        if !st.handed_out.contains(&r.peer) || st.reports_accepted >= MAX_REPORTS_PER_CONNECTION {
            return;
        }
        match st.handles.get(r.handle as usize) {
            Some(c) => c.clone(),
            None => return,
        }
    };
    if content.version() != r.version {
        return;
    }
    let m = conn.shard.m();
    ShardMetrics::add(
        match r.problem {
            PeerProblem::Unreachable => &m.peer_reports_unreachable,
            PeerProblem::BadData => &m.peer_reports_bad_data,
        },
        1,
    );
    let removed = peers.lock().is_ok_and(|mut g| {
        g.report(
            (content.file_id(), content.version()),
            r.peer,
            r.problem,
            std::time::Instant::now(),
        )
    });
    if removed {
        conn.state.borrow_mut().reports_accepted += 1;
        ShardMetrics::add(&m.peers_removed, 1);
        tracing::info!(peer = %r.peer, problem = r.problem.name(), reporter = %conn.peer, "peer reported; removed from the registry");
    }
}

fn accept_get(state: &Rc<RefCell<ConnState>>, g: &Get) -> Result<Content, (ErrorCode, String)> {
    let mut st = state.borrow_mut();
    let content = st
        .handles
        .get(g.handle as usize)
        .cloned()
        .ok_or((ErrorCode::BadRequest, "unknown file handle".to_string()))?;
    if content.version() != g.version {
        return Err((
            ErrorCode::VersionChanged,
            "the file changed; ask for its info again".into(),
        ));
    }
    let end = g.first_block.checked_add(u64::from(g.block_count));
    if end.is_none_or(|e| e > content.block_count()) {
        return Err((
            ErrorCode::BadRequest,
            format!(
                "blocks past the end of the file ({} blocks)",
                content.block_count()
            ),
        ));
    }
    if st.requests() >= limits::MAX_OUTSTANDING_REQUESTS {
        return Err((ErrorCode::Busy, "too many outstanding requests".into()));
    }
    if !st.outstanding.insert(g.req_id) {
        return Err((
            ErrorCode::BadRequest,
            "request id already outstanding".into(),
        ));
    }
    Ok(content)
}

/// What the writer sends next, in order: a ready frame, one block of a Get (its
/// production already started, up to [`Shard::readahead_window`] ahead, pinned in the
/// shard's budget), or the end.
enum Work {
    Frame {
        head: Bytes,
        tail: Bytes,
        answer: bool,
    },
    Block {
        req_id: u32,
        idx: u64,
        /// The Get's last block: its bookkeeping ends here.
        last: bool,
        /// `None` when the Get was cancelled or had failed before this block's turn
        /// came to be produced.
        result: Option<PinnedBlock>,
    },
    /// No room in the shard's budget in time, or shed: the connection ends.
    Shed,
    Close,
}

/// One item of the writer's queue before its block (if any) is produced.
enum Job {
    Frame {
        head: Bytes,
        tail: Bytes,
        answer: bool,
    },
    Block {
        req_id: u32,
        content: Content,
        idx: u64,
        last: bool,
    },
    Close,
}

/// Sends the reader's answers in order and streams the blocks of pipelined Gets. Blocks
/// are produced up to [`Shard::readahead_window`] ahead of the one being written, across
/// Get boundaries: a client that asks for one block per Get (a cache filling itself)
/// keeps as many disk reads or upstream fetches going as one that asks for long runs.
/// Each block is pinned in the shard's budget from before it is produced until it is
/// written (see `shard::budget`); a connection that holds pins without reading while
/// the shard is short is shed.
async fn writer_loop(
    shard: Rc<Shard>,
    mut wr: WriteHalf<TcpStream>,
    rx: mpsc::Receiver<Out>,
    state: Rc<RefCell<ConnState>>,
    may_fetch: bool,
) {
    let jobs = rx.flat_map(|out| {
        let jobs: Vec<Job> = match out {
            Out::Frame { head, tail, answer } => vec![Job::Frame { head, tail, answer }],
            Out::Close => vec![Job::Close],
            Out::Get {
                req_id,
                content,
                first,
                count,
            } => {
                let end = first.saturating_add(u64::from(count));
                return futures::stream::iter((first..end).map(move |idx| Job::Block {
                    req_id,
                    content: content.clone(),
                    idx,
                    last: idx + 1 == end,
                }))
                .left_stream();
            }
        };
        futures::stream::iter(jobs).right_stream()
    });
    let writer = Rc::new(shard.pins.writer());
    // The window follows the node's block size for every file: a connection's blocks
    // may come from files of different sizes, and the pins bound the bytes anyway.
    let window = shard.readahead_window(shard.pins.block_size());
    let work = {
        let (shard, state, writer) = (shard.clone(), state.clone(), writer.clone());
        jobs.map(move |job| -> LocalBoxFuture<'static, Work> {
            match job {
                Job::Frame { head, tail, answer } => {
                    futures::future::ready(Work::Frame { head, tail, answer }).boxed_local()
                }
                Job::Close => futures::future::ready(Work::Close).boxed_local(),
                Job::Block {
                    req_id,
                    content,
                    idx,
                    last,
                } => {
                    let (shard, state, writer) = (shard.clone(), state.clone(), writer.clone());
                    let ticket = writer.ticket();
                    async move {
                        let result = if state.borrow().is_stopped(req_id) {
                            // Its turn still has to pass, or the next block would wait.
                            match writer.pin(ticket, 0, PIN_WAIT_TIMEOUT).await {
                                Ok(_) => None,
                                Err(_) => return Work::Shed,
                            }
                        } else {
                            match shard
                                .pinned_block(&writer, ticket, &content, idx, may_fetch)
                                .await
                            {
                                Ok(p) => Some(p),
                                Err(_) => return Work::Shed,
                            }
                        };
                        Work::Block {
                            req_id,
                            idx,
                            last,
                            result,
                        }
                    }
                    .boxed_local()
                }
            }
        })
        .buffered(window)
    };
    futures::pin_mut!(work);
    while let Some(w) = work.next().await {
        let ok = match w {
            Work::Frame { head, tail, answer } => {
                let r = writer.write(&mut wr, &[&head, &tail], WRITE_TIMEOUT).await;
                state.borrow_mut().written(head.len(), answer);
                r.is_ok()
            }
            Work::Close => false,
            Work::Shed => false,
            Work::Block {
                req_id,
                idx,
                last,
                result,
            } => {
                let stopped = state.borrow().is_stopped(req_id);
                let r = match result.as_ref().map(|p| &p.block) {
                    _ if stopped => Ok(()),
                    None => Ok(()),
                    Some(Ok(block)) => match try_encode_data_header(req_id, idx, block.len()) {
                        Ok(header) => {
                            shard.upload_throttle(block.len()).await;
                            let r = writer
                                .write(&mut wr, &[&header, block], WRITE_TIMEOUT)
                                .await;
                            if r.is_ok() {
                                ShardMetrics::add(&shard.m().bytes_sent_spp, block.len() as u64);
                            }
                            r
                        }
                        Err(e) => {
                            state.borrow_mut().failed.insert(req_id);
                            let f = error_frame(req_id, ErrorCode::Internal, e.to_string());
                            writer.write(&mut wr, &[&f], WRITE_TIMEOUT).await
                        }
                    },
                    Some(Err(e)) => {
                        // The rest of this Get is not produced or sent.
                        state.borrow_mut().failed.insert(req_id);
                        let (code, msg) = block_error_answer(e.clone(), idx);
                        writer
                            .write(&mut wr, &[&error_frame(req_id, code, msg)], WRITE_TIMEOUT)
                            .await
                    }
                };
                drop(result);
                if last {
                    state.borrow_mut().finish(req_id);
                }
                r.is_ok()
            }
        };
        if !ok {
            break;
        }
    }
    let _ = futures_lite::AsyncWriteExt::close(&mut wr).await;
}

/// The SPP error that ends a Get whose block `idx` could not be produced.
fn block_error_answer(e: BlockError, idx: u64) -> (ErrorCode, String) {
    match e {
        BlockError::Changed => (
            ErrorCode::VersionChanged,
            "the file changed on the origin; ask for its info again".to_string(),
        ),
        BlockError::NotCached => (
            ErrorCode::NotCachedHere,
            format!("block {idx} is not cached here, and this node will not fetch it for you"),
        ),
        BlockError::Upstream(u) => (
            crate::content::Refusal::Upstream(u.clone()).spp_code(),
            format!("block {idx}: upstream: {u}"),
        ),
        BlockError::Busy => (
            ErrorCode::Busy,
            format!("block {idx}: {}", BlockError::Busy),
        ),
        other => (ErrorCode::Internal, other.to_string()),
    }
}
