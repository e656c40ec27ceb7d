//! Serving one SPP connection: handshake, then a reader that decodes requests and a
//! writer that sends answers and streams the blocks of pipelined `Get`s in order.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures::channel::mpsc;
use futures::future::{FutureExt, LocalBoxFuture};
use futures::stream::StreamExt;
use futures_lite::io::{ReadHalf, WriteHalf};

use super::{Ctx, IDLE_TIMEOUT, READ_CHUNK_BYTES, WRITE_TIMEOUT};
use crate::metrics::ShardMetrics;
use crate::node::content::Content;
use crate::node::shard::{PinnedBlock, Shard, ShardRole, PIN_WAIT_TIMEOUT};
use crate::pure::protocol::session::{Event, Session, SessionConfig};
use crate::pure::protocol::{
    encode, encode_info_head, frame_type, limits, try_encode_data_header, Decoder, ErrorCode,
    ErrorFrame, Frame, Hello, Holds, Info, Locate, Location, Role, PROTOCOL_VERSION,
};
use crate::runtime::{self, TcpStream};

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

/// Per-connection state the reader, the writer and the answer tasks share (same
/// thread): the protocol's rules (`Session`, pure) and the I/O bookkeeping.
struct ConnState {
    session: Session<Content>,
    /// Heap bytes of frames queued for the writer and not yet written; the reader
    /// stops reading while they are over [`MAX_QUEUED_ANSWER_BYTES`].
    queued_bytes: usize,
    /// Info and Locate answers being worked out now (tasks): at most
    /// [`MAX_ANSWER_TASKS`], past which the reader waits.
    answers_running: usize,
    /// The writer has ended: the reader stops too.
    writer_gone: bool,
    /// The reader, waiting for the writer to catch up.
    reader_waker: Option<std::task::Waker>,
}

impl crate::pure::protocol::session::SessionFile for Content {
    fn version(&self) -> u64 {
        Content::version(self)
    }
    fn block_count(&self) -> u64 {
        Content::block_count(self)
    }
    fn same(&self, other: &Self) -> bool {
        Content::same(self, other)
    }
}

/// Info and Locate answers one connection works out at once; further requests wait
/// in the socket (the reader pauses) rather than each holding a task.
pub const MAX_ANSWER_TASKS: usize = 8;
/// What a queued frame costs beyond its bytes (the queue's node, the frame's
/// buffer header, the writer's bookkeeping), counted against
/// [`MAX_QUEUED_ANSWER_BYTES`] so that many tiny frames cannot hide their cost.
const QUEUED_FRAME_OVERHEAD_BYTES: usize = 256;

/// Frames one connection's reader works through before it lets the shard's other
/// tasks run.
const FRAMES_PER_TURN: usize = 8;

/// Bytes of answers a connection may have queued before it stops reading requests:
/// a client that pipelines requests and reads nothing fills its socket buffers, not
/// this node's memory.
pub const MAX_QUEUED_ANSWER_BYTES: usize = 32 * 1024;

impl ConnState {
    /// Counts a frame queued for the writer.
    fn queued(&mut self, bytes: usize) {
        self.queued_bytes += bytes + QUEUED_FRAME_OVERHEAD_BYTES;
    }

    /// Counts a queued frame written (or dropped) and lets the reader go on when the
    /// queue is short again.
    fn written(&mut self, bytes: usize, answer: bool) {
        self.queued_bytes = self
            .queued_bytes
            .saturating_sub(bytes + QUEUED_FRAME_OVERHEAD_BYTES);
        if answer {
            self.session.answer_done();
        }
        self.wake_reader();
    }

    /// An answer task finished working its answer out.
    fn answer_ready(&mut self) {
        self.answers_running = self.answers_running.saturating_sub(1);
        self.wake_reader();
    }

    /// Whether the reader may read the next request.
    fn may_read(&self) -> bool {
        self.writer_gone
            || (self.queued_bytes <= MAX_QUEUED_ANSWER_BYTES
                && self.answers_running < MAX_ANSWER_TASKS)
    }

    fn wake_reader(&mut self) {
        if self.may_read() {
            if let Some(w) = self.reader_waker.take() {
                w.wake();
            }
        }
    }
}

/// An answer being worked out; counted until dropped, however its task ends.
struct AnswerRunning(Rc<RefCell<ConnState>>);

impl AnswerRunning {
    fn start(state: &Rc<RefCell<ConnState>>) -> AnswerRunning {
        state.borrow_mut().answers_running += 1;
        AnswerRunning(state.clone())
    }
}

impl Drop for AnswerRunning {
    fn drop(&mut self) {
        self.0.borrow_mut().answer_ready();
    }
}

/// Marks the connection's writer ended (however it ends) and wakes the reader.
struct WriterGone(Rc<RefCell<ConnState>>);

impl Drop for WriterGone {
    fn drop(&mut self) {
        let mut st = self.0.borrow_mut();
        st.writer_gone = true;
        if let Some(w) = st.reader_waker.take() {
            w.wake();
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

/// Completes when the connection's writer has ended.
async fn writer_ended(state: &RefCell<ConnState>) {
    std::future::poll_fn(|cx| {
        let mut st = state.borrow_mut();
        if st.writer_gone {
            std::task::Poll::Ready(())
        } else {
            st.reader_waker = Some(cx.waker().clone());
            std::task::Poll::Pending
        }
    })
    .await
}

/// Waits until the connection's queued answers are within [`MAX_QUEUED_ANSWER_BYTES`]
/// and fewer than [`MAX_ANSWER_TASKS`] answers are being worked out.
async fn queue_has_room(state: &RefCell<ConnState>) {
    std::future::poll_fn(|cx| {
        let mut st = state.borrow_mut();
        if st.may_read() {
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
    let fd = stream.as_raw_fd();
    let (mut rd, mut wr) = futures_lite::io::split(stream);
    let mut dec = Decoder::new();
    let mut session = Session::new(
        SessionConfig {
            hello: Hello {
                version: PROTOCOL_VERSION,
                role: ctx.spp_role(),
                listen_port: ctx.port,
                capabilities: ctx.capabilities(),
            },
            allowed_hosts: ctx.config.allowed_hosts.clone(),
            p2p: ctx.peers.is_some(),
        },
        peer.ip(),
    );

    // Handshake: the first frame must be a Hello of a version we speak.
    let event = match read_frame(&mut rd, &mut buf, &mut dec, super::FIRST_BYTE_TIMEOUT).await {
        Ok(Read::Frame(f)) => session.on_frame(f),
        Ok(Read::Closed | Read::Idle) => return,
        Err(msg) => session.on_decode_error(msg),
    };
    match event {
        Event::Send(ours) => {
            if write(&mut wr, &[&frame_bytes(&ours)]).await.is_err() {
                return;
            }
        }
        Event::SendAndClose(err) => {
            ShardMetrics::add(&shard.m().protocol_errors, 1);
            let _ = write(&mut wr, &[&frame_bytes(&err)]).await;
            return;
        }
        _ => return,
    }
    tracing::debug!(listen = ?session.listen(), "spp hello");

    let state = Rc::new(RefCell::new(ConnState {
        session,
        queued_bytes: 0,
        answers_running: 0,
        writer_gone: false,
        reader_waker: None,
    }));
    let (tx, rx) = mpsc::channel::<Out>(limits::MAX_OUTSTANDING_REQUESTS + 16);
    let may_fetch = ctx.may_fetch(peer.ip(), local.map(|l| l.ip()));
    // This connection's place in the shard's turns of paused request work.
    let owner = runtime::request_owner();
    let writer = {
        let (s, st) = (shard.clone(), state.clone());
        // The writer is a task of its own: run it under the panic policy as well.
        runtime::spawn(async move {
            super::contained(&s.clone(), writer_loop(s, wr, fd, rx, st, may_fetch)).await;
        })
    };
    let conn = Conn {
        owner,
        shard: &shard,
        ctx: &ctx,
        state: &state,
        peer,
        local,
        may_fetch,
    };
    reader_loop(&conn, rd, buf, dec, tx).await;
    writer.await;
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
        // Read what has arrived, in bounded slices (the buffer only grows as bytes
        // really arrive, by at most one slice past the frame in progress). Reading only
        // what the frame still needed took two system calls per frame: a flood of
        // small requests cost more to read than to answer.
        let want = READ_CHUNK_BYTES;
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
    /// The connection's place in the shard's turns of paused request work.
    owner: runtime::RequestOwner,
}

async fn reader_loop(
    conn: &Conn<'_>,
    mut rd: ReadHalf<TcpStream>,
    mut buf: BytesMut,
    mut dec: Decoder,
    mut tx: mpsc::Sender<Out>,
) {
    let (shard, state, peer) = (conn.shard, conn.state, conn.peer);
    let mut frames_this_turn = 0usize;
    // Whether a frame of this turn asked for something other than blocks: the time
    // such frames take counts against the shard's request budget, and a turn of them
    // pauses with the other requests once it is spent (a stream of Gets never does).
    let mut requests_this_turn = false;
    let owner = conn.owner;
    loop {
        // One connection's pipelined frames are worked through a few at a time: the
        // other connections of the shard get their turn in between, so a flood of
        // requests on one connection delays the others by a few frames, not a
        // buffer's worth.
        frames_this_turn += 1;
        if frames_this_turn > FRAMES_PER_TURN {
            frames_this_turn = 0;
            if std::mem::take(&mut requests_this_turn) {
                runtime::request_turn(owner).await;
            } else {
                futures_lite::future::yield_now().await;
            }
        }
        // A client that does not read its answers is not read either.
        if runtime::timeout(IDLE_TIMEOUT, queue_has_room(state))
            .await
            .is_err()
            || state.borrow().writer_gone
        {
            return;
        }
        // A connection whose writer ended (shed, or its client stopped reading) ends
        // now, even while its client sends nothing.
        // The time spent reading and decoding (not waiting) counts, with the frame's
        // handling below, against the request budget when the frame is a request.
        let (read, reading) = runtime::polled(futures_lite::future::or(
            read_frame(&mut rd, &mut buf, &mut dec, IDLE_TIMEOUT),
            async {
                writer_ended(state).await;
                Ok(Read::Closed)
            },
        ))
        .await;
        let began = std::time::Instant::now();
        let mut request = false;
        let event = match read {
            Ok(Read::Frame(f)) => {
                request = !matches!(f, Frame::Get(_) | Frame::Cancel { .. });
                if matches!(
                    f,
                    Frame::InfoRequest(_) | Frame::LocateRequest(_) | Frame::Get(_)
                ) {
                    ShardMetrics::add(&shard.m().requests_spp, 1);
                }
                state.borrow_mut().session.on_frame(f)
            }
            Ok(Read::Idle) => {
                // Idle with Gets still streaming is not idle: keep the connection.
                if state.borrow().session.outstanding() > 0 && !tx.is_closed() {
                    continue;
                }
                return;
            }
            // The peer is gone (or only half-closed): stop reading and let the writer
            // finish what is queued; reading again would return end-of-file at once,
            // a busy loop that starves every other task of this shard.
            Ok(Read::Closed) => return,
            Err(msg) => state.borrow_mut().session.on_decode_error(msg),
        };
        requests_this_turn |= request;
        // What this frame cost the shard, up to here and in the arms below that do
        // more than queue an answer; never time spent waiting.
        let charge = |request: bool| {
            if request {
                runtime::charge_request(reading + began.elapsed());
            }
        };
        let out = match event {
            Event::Nothing => {
                charge(request);
                continue;
            }
            Event::Send(f) => {
                if matches!(&f, Frame::Error(e) if e.code == ErrorCode::Busy) {
                    ShardMetrics::add(&shard.m().requests_busy, 1);
                }
                charge(request);
                out_frame(state, frame_bytes(&f), false)
            }
            Event::SendAndClose(f) => {
                ShardMetrics::add(&shard.m().protocol_errors, 1);
                tracing::debug!(%peer, frame = ?f, "closing connection after a bad frame");
                let _ = tx.try_send(out_frame(state, frame_bytes(&f), false));
                let _ = tx.try_send(Out::Close);
                return;
            }
            Event::Resolve {
                req_id,
                host,
                port,
                path,
                digest_start,
                digest_count,
            } => {
                let running = AnswerRunning::start(state);
                let (shard, ctx, state, tx) =
                    (shard.clone(), conn.ctx.clone(), state.clone(), tx.clone());
                let may_fetch = conn.may_fetch;
                // Indexing (origin) or asking the upstream (cache) may take a while:
                // answer on its own so other requests go on.
                runtime::spawn_request(owner, async move {
                    let s = shard.clone();
                    super::contained(&s, async move {
                        let found = ctx
                            .resolve(&shard, &host, port, &path, may_fetch)
                            .await
                            .map_err(|e| error(req_id, e.spp_code(), e.to_string()));
                        let out = info(&state, req_id, found, digest_start, digest_count);
                        drop(running);
                        send_answer(tx, out).await;
                    })
                    .await;
                });
                charge(request);
                continue;
            }
            Event::Locate {
                req_id,
                file,
                first_block,
                block_count,
            } => {
                let running = AnswerRunning::start(state);
                let (local, may_fetch, requester) = (conn.local, conn.may_fetch, conn.peer.ip());
                if matches!(file, Content::Published(_)) {
                    // An origin answers from memory at once: here, in the reader's
                    // charged time, without a task, a queue turn and a wake-up per
                    // request (under a Locate flood those cost more than the answers).
                    let span = (first_block, block_count);
                    let now = locate(
                        shard,
                        conn.ctx,
                        state,
                        req_id,
                        &file,
                        span,
                        (local, requester),
                        may_fetch,
                    )
                    .now_or_never();
                    if let Some(f) = now {
                        let out = out_frame(state, f, true);
                        drop(running);
                        send_answer(tx.clone(), out).await;
                        charge(request);
                        continue;
                    }
                }
                let (shard, ctx, state, tx) =
                    (shard.clone(), conn.ctx.clone(), state.clone(), tx.clone());
                // A cache relays its upstream's answer: that takes a round trip.
                runtime::spawn_request(owner, async move {
                    let s = shard.clone();
                    super::contained(&s, async move {
                        let span = (first_block, block_count);
                        let f = locate(
                            &shard,
                            &ctx,
                            &state,
                            req_id,
                            &file,
                            span,
                            (local, requester),
                            may_fetch,
                        )
                        .await;
                        let out = out_frame(&state, f, true);
                        drop(running);
                        send_answer(tx, out).await;
                    })
                    .await;
                });
                charge(request);
                continue;
            }
            Event::Stream {
                req_id,
                file,
                first,
                count,
            } => Out::Get {
                req_id,
                content: file,
                first,
                count,
            },
            Event::Have {
                file,
                listen,
                ranges,
                replace,
            } => {
                record_have(conn, &file, listen, &ranges, replace);
                charge(request);
                continue;
            }
            Event::Report {
                file,
                peer: reported,
                problem,
            } => {
                record_peer_report(conn, &file, reported, problem);
                charge(request);
                continue;
            }
        };
        if futures::SinkExt::send(&mut tx, out).await.is_err() {
            return;
        }
    }
}

/// An Error frame for an answer task.
fn error(req_id: u32, code: ErrorCode, message: impl Into<String>) -> Frame {
    Frame::Error(ErrorFrame::new(req_id, code, message.into()))
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

/// The answer to an Info request: the file's info with its digests from
/// `digest_start` (a slice of the mapped index), or the Error frame that refuses it.
fn info(
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
async fn locate(
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
fn record_have(
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
fn record_peer_report(
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
/// written (see `node::budget`); a connection that holds pins without reading while
/// the shard is short is shed.
/// Frames up to this long are gathered with the ready ones after them into one send.
const GATHER_FRAME_BYTES: usize = 4 * 1024;
/// Most bytes of frames gathered into one send.
const GATHER_BYTES: usize = 64 * 1024;

async fn writer_loop(
    shard: Rc<Shard>,
    mut wr: WriteHalf<TcpStream>,
    // `wr`'s socket, open for as long as `wr` is.
    fd: std::os::fd::RawFd,
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
    let _gone = WriterGone(state.clone());
    let writer = Rc::new(shard.pins.writer_on(fd));
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
                        let result = if state.borrow().session.is_stopped(req_id) {
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
    // An item taken while gathering frames, to be written next.
    let mut held: Option<Work> = None;
    let mut ended = false;
    while !ended {
        let w = match held.take() {
            Some(w) => w,
            None => match work.next().await {
                Some(w) => w,
                None => break,
            },
        };
        let ok = match w {
            Work::Frame { head, tail, answer } => {
                // Small frames that are ready go out together, in one send: a burst
                // of answers (a Locate flood's) was one system call and one TCP
                // segment each, and kept the shard from polling for I/O.
                let mut frames = vec![(head.len(), answer)];
                let mut batch: Option<BytesMut> = None;
                let small = |h: &Bytes, t: &Bytes| h.len() + t.len() <= GATHER_FRAME_BYTES;
                if small(&head, &tail) {
                    while batch.as_ref().map_or(0, |b| b.len()) < GATHER_BYTES {
                        match work.next().now_or_never() {
                            Some(Some(Work::Frame {
                                head: h,
                                tail: t,
                                answer: a,
                            })) if small(&h, &t) => {
                                let b = batch.get_or_insert_with(|| {
                                    let mut b =
                                        BytesMut::with_capacity(GATHER_BYTES + GATHER_FRAME_BYTES);
                                    b.extend_from_slice(&head);
                                    b.extend_from_slice(&tail);
                                    b
                                });
                                b.extend_from_slice(&h);
                                b.extend_from_slice(&t);
                                frames.push((h.len(), a));
                            }
                            Some(Some(other)) => {
                                held = Some(other);
                                break;
                            }
                            Some(None) => {
                                ended = true;
                                break;
                            }
                            None => break,
                        }
                    }
                }
                // Writing answers is request work too: counted against the shard's
                // request budget (a Locate flood's answers cost more to send than to
                // work out). The writer does not wait for a turn: blocks of a Get
                // may follow; the reader's pauses hold back a flood's next requests.
                let r = runtime::charged(async {
                    match &batch {
                        Some(b) => writer.write(&mut wr, &[b], WRITE_TIMEOUT).await,
                        None => writer.write(&mut wr, &[&head, &tail], WRITE_TIMEOUT).await,
                    }
                })
                .await;
                for (len, answer) in frames {
                    state.borrow_mut().written(len, answer);
                }
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
                let stopped = state.borrow().session.is_stopped(req_id);
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
                            state.borrow_mut().session.get_failed(req_id);
                            let f = error_frame(req_id, ErrorCode::Internal, e.to_string());
                            writer.write(&mut wr, &[&f], WRITE_TIMEOUT).await
                        }
                    },
                    Some(Err(e)) => {
                        // The rest of this Get is not produced or sent.
                        state.borrow_mut().session.get_failed(req_id);
                        let (code, msg) = e.clone().spp_answer(idx);
                        writer
                            .write(&mut wr, &[&error_frame(req_id, code, msg)], WRITE_TIMEOUT)
                            .await
                    }
                };
                drop(result);
                if last {
                    state.borrow_mut().session.finish_get(req_id);
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
