//! The reader of an SPP connection: frames decoded under the session's rules, each
//! request admitted, answered inline or by a bounded answer task, or queued for the writer.

use bytes::BytesMut;
use futures::channel::mpsc;
use futures::future::FutureExt;
use futures_lite::io::ReadHalf;

use super::answers::{info, locate, record_have, record_peer_report};
use super::state::{
    error, frame_bytes, out_frame, queue_has_room, send_answer, writer_ended, AnswerRunning, Conn,
    Out, FRAMES_PER_TURN,
};
use crate::metrics::ShardMetrics;
use crate::node::content::Content;
use crate::pure::protocol::session::Event;
use crate::pure::protocol::{frame_type, Decoder, ErrorCode, Frame};
use crate::runtime::{self, TcpStream};
use crate::server::limits::{IDLE_TIMEOUT, READ_CHUNK_BYTES};

/// What one attempt to read a frame found.
pub(super) enum Read {
    Frame(Frame),
    /// The peer closed its side, or the socket failed: nothing more will arrive.
    Closed,
    /// Nothing arrived within the wait.
    Idle,
}

/// Reads until one frame is decoded, the peer closes, or `wait` passes without bytes.
pub(super) async fn read_frame(
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

pub(super) async fn reader_loop(
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
                    crate::server::health::contained(&s, async move {
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
                    crate::server::health::contained(&s, async move {
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
