//! Serving one SPP connection: handshake, then a reader that decodes requests and a
//! writer that sends answers and streams the blocks of pipelined `Get`s in order.

use std::cell::RefCell;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::channel::mpsc;
use futures::stream::StreamExt;
use futures_lite::io::{ReadHalf, WriteHalf};

use super::{Ctx, IDLE_TIMEOUT, INDEX_WAIT_TIMEOUT, READ_CHUNK_BYTES, WRITE_TIMEOUT};
use crate::metrics::ShardMetrics;
use crate::pathsafe::normalize_plain_path;
use crate::protocol::{
    encode, encode_data_header, frame_type, limits, negotiate_version, Decoder, ErrorCode,
    ErrorFrame, Frame, Get, Hello, Holds, Info, InfoRequest, Locate, LocateRequest, Location, Role,
    PROTOCOL_VERSION,
};
use crate::publish::{FileEntry, LookupError};
use crate::runtime::{self, TcpStream};
use crate::shard::{BlockError, Shard};

/// File handles one connection may hold.
pub const MAX_HANDLES_PER_CONNECTION: usize = 1024;

/// What the reader hands the writer, in the order it must go out.
enum Out {
    Frame(Bytes),
    Get {
        req_id: u32,
        entry: Arc<FileEntry>,
        first: u64,
        count: u32,
    },
    /// Write what is queued, then close (after a protocol error).
    Close,
}

/// Per-connection state the reader and writer share (same task set, same thread).
#[derive(Default)]
struct ConnState {
    handles: Vec<Arc<FileEntry>>,
    /// Get requests queued or being streamed.
    outstanding: HashSet<u32>,
    cancelled: HashSet<u32>,
}

fn frame_bytes(f: &Frame) -> Bytes {
    let mut b = BytesMut::new();
    // Our own frames are built within the limits; an encode error is a programmer error
    // and is turned into an internal error frame rather than a panic.
    if encode(f, &mut b).is_err() {
        b.clear();
        let _ = encode(
            &Frame::Error(ErrorFrame {
                req_id: 0,
                code: ErrorCode::Internal,
                message: "internal encode error".into(),
            }),
            &mut b,
        );
    }
    b.freeze()
}

fn error_frame(req_id: u32, code: ErrorCode, message: impl Into<String>) -> Bytes {
    let mut message = message.into();
    message.truncate(limits::MAX_ERROR_MESSAGE_BYTES);
    frame_bytes(&Frame::Error(ErrorFrame {
        req_id,
        code,
        message,
    }))
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
        role: Role::Origin,
        listen_port: ctx.port,
        capabilities: 0,
    });
    if write(&mut wr, &[&frame_bytes(&ours)]).await.is_err() {
        return;
    }

    let state = Rc::new(RefCell::new(ConnState::default()));
    let (tx, rx) = mpsc::channel::<Out>(limits::MAX_OUTSTANDING_REQUESTS + 16);
    let writer = runtime::spawn(writer_loop(shard.clone(), wr, rx, state.clone()));
    reader_loop(&shard, &ctx, rd, buf, dec, tx, &state, peer, local).await;
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

#[allow(clippy::too_many_arguments)]
async fn reader_loop(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    mut rd: ReadHalf<TcpStream>,
    mut buf: BytesMut,
    mut dec: Decoder,
    mut tx: mpsc::Sender<Out>,
    state: &Rc<RefCell<ConnState>>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) {
    loop {
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
                let _ = tx.try_send(Out::Frame(error_frame(0, ErrorCode::BadRequest, msg)));
                let _ = tx.try_send(Out::Close);
                return;
            }
        };
        let out = match frame {
            Frame::InfoRequest(r) => {
                ShardMetrics::add(&shard.m().requests_spp, 1);
                let (ctx, state, mut tx) = (ctx.clone(), state.clone(), tx.clone());
                // Indexing may take a while: answer on its own so other requests go on.
                runtime::spawn_detached(async move {
                    let f = info(&ctx, &state, r).await;
                    let _ = futures::SinkExt::send(&mut tx, Out::Frame(f)).await;
                });
                continue;
            }
            Frame::LocateRequest(r) => {
                ShardMetrics::add(&shard.m().requests_spp, 1);
                Out::Frame(locate(ctx, state, &r, local))
            }
            Frame::Get(g) => {
                ShardMetrics::add(&shard.m().requests_spp, 1);
                match accept_get(state, &g) {
                    Ok(entry) => Out::Get {
                        req_id: g.req_id,
                        entry,
                        first: g.first_block,
                        count: g.block_count,
                    },
                    Err((code, msg)) => Out::Frame(error_frame(g.req_id, code, msg)),
                }
            }
            Frame::Cancel { req_id } => {
                let mut st = state.borrow_mut();
                if st.outstanding.contains(&req_id) {
                    st.cancelled.insert(req_id);
                }
                continue;
            }
            // Recorded in p2p mode (a later release); accepted and dropped here.
            Frame::Have(_) => continue,
            Frame::Ping(v) => Out::Frame(frame_bytes(&Frame::Pong(v))),
            Frame::Pong(_) | Frame::Error(_) => continue,
            Frame::Hello(_) | Frame::Info(_) | Frame::Locate(_) | Frame::Data(_) => {
                ShardMetrics::add(&shard.m().protocol_errors, 1);
                let _ = tx.try_send(Out::Frame(error_frame(
                    0,
                    ErrorCode::BadRequest,
                    "unexpected frame from a client",
                )));
                let _ = tx.try_send(Out::Close);
                return;
            }
        };
        if futures::SinkExt::send(&mut tx, out).await.is_err() {
            return;
        }
    }
}

fn lookup_error(req_id: u32, e: LookupError, path: &str) -> Bytes {
    match e {
        LookupError::NotFound => {
            error_frame(req_id, ErrorCode::NotFound, format!("not found: {path}"))
        }
        LookupError::Busy => error_frame(req_id, ErrorCode::Busy, "indexer busy, retry"),
        LookupError::Failed(m) => error_frame(req_id, ErrorCode::Internal, m),
    }
}

async fn info(ctx: &Ctx, state: &Rc<RefCell<ConnState>>, r: InfoRequest) -> Bytes {
    let allowed = &ctx.config.allowed_hosts;
    if !allowed.is_empty() && !allowed.iter().any(|h| h.eq_ignore_ascii_case(&r.file.host)) {
        return error_frame(
            r.req_id,
            ErrorCode::Forbidden,
            format!("host {} is not served here", r.file.host),
        );
    }
    let path = match normalize_plain_path(&r.file.path) {
        Ok(p) => p,
        Err(e) => return error_frame(r.req_id, ErrorCode::NotFound, e.to_string()),
    };
    let entry = match runtime::timeout(INDEX_WAIT_TIMEOUT, ctx.publisher.lookup(&path)).await {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => return lookup_error(r.req_id, e, &path),
        Err(_) => {
            return error_frame(
                r.req_id,
                ErrorCode::Busy,
                "file is still being indexed, retry",
            )
        }
    };
    let handle = {
        let mut st = state.borrow_mut();
        match st.handles.iter().position(|h| Arc::ptr_eq(h, &entry)) {
            Some(i) => i,
            None if st.handles.len() < MAX_HANDLES_PER_CONNECTION => {
                st.handles.push(entry.clone());
                st.handles.len() - 1
            }
            None => {
                return error_frame(
                    r.req_id,
                    ErrorCode::Busy,
                    "too many files open on this connection",
                )
            }
        }
    };
    let count = u64::from(r.digest_count.min(limits::MAX_DIGESTS_PER_INFO));
    let digests = Bytes::copy_from_slice(entry.index.digests(r.digest_start, count));
    frame_bytes(&Frame::Info(Info {
        req_id: r.req_id,
        handle: handle as u32,
        size: entry.size(),
        block_size: entry.index.block_size,
        algo: entry.index.algo,
        version: entry.version(),
        mtime_unix_secs: entry.mtime_unix_secs(),
        digest_start: r.digest_start.min(entry.index.block_count),
        digests,
    }))
}

fn locate(
    ctx: &Ctx,
    state: &Rc<RefCell<ConnState>>,
    r: &LocateRequest,
    local: Option<SocketAddr>,
) -> Bytes {
    if state.borrow().handles.get(r.handle as usize).is_none() {
        return error_frame(r.req_id, ErrorCode::BadRequest, "unknown file handle");
    }
    let mut locations = Vec::with_capacity(1 + ctx.mirrors.len());
    if let Some(l) = local {
        locations.push(Location {
            addr: SocketAddr::new(l.ip(), ctx.port),
            role: Role::Origin,
            holds: Holds::All,
        });
    }
    for m in ctx
        .mirrors
        .iter()
        .take(limits::MAX_LOCATIONS - locations.len())
    {
        locations.push(Location {
            addr: *m,
            role: Role::Origin,
            holds: Holds::All,
        });
    }
    frame_bytes(&Frame::Locate(Locate {
        req_id: r.req_id,
        locations,
    }))
}

fn accept_get(
    state: &Rc<RefCell<ConnState>>,
    g: &Get,
) -> Result<Arc<FileEntry>, (ErrorCode, String)> {
    let mut st = state.borrow_mut();
    let entry = st
        .handles
        .get(g.handle as usize)
        .cloned()
        .ok_or((ErrorCode::BadRequest, "unknown file handle".to_string()))?;
    if entry.version() != g.version {
        return Err((
            ErrorCode::VersionChanged,
            "the file changed; ask for its info again".into(),
        ));
    }
    let end = g.first_block.checked_add(u64::from(g.block_count));
    if end.is_none_or(|e| e > entry.index.block_count) {
        return Err((
            ErrorCode::BadRequest,
            format!(
                "blocks past the end of the file ({} blocks)",
                entry.index.block_count
            ),
        ));
    }
    if st.outstanding.len() >= limits::MAX_OUTSTANDING_REQUESTS {
        return Err((ErrorCode::Busy, "too many outstanding requests".into()));
    }
    if !st.outstanding.insert(g.req_id) {
        return Err((
            ErrorCode::BadRequest,
            "request id already outstanding".into(),
        ));
    }
    Ok(entry)
}

async fn writer_loop(
    shard: Rc<Shard>,
    mut wr: WriteHalf<TcpStream>,
    mut rx: mpsc::Receiver<Out>,
    state: Rc<RefCell<ConnState>>,
) {
    while let Some(out) = rx.next().await {
        let ok = match out {
            Out::Frame(f) => write(&mut wr, &[&f]).await.is_ok(),
            Out::Get {
                req_id,
                entry,
                first,
                count,
            } => {
                let r = stream_get(&shard, &mut wr, &state, req_id, &entry, first, count).await;
                let mut st = state.borrow_mut();
                st.outstanding.remove(&req_id);
                st.cancelled.remove(&req_id);
                r.is_ok()
            }
            Out::Close => false,
        };
        if !ok {
            break;
        }
    }
    let _ = futures_lite::AsyncWriteExt::close(&mut wr).await;
}

/// Streams blocks `first..first+count` as Data frames, reading a few blocks ahead.
/// `Err` means the socket failed and the connection must end.
async fn stream_get(
    shard: &Rc<Shard>,
    wr: &mut WriteHalf<TcpStream>,
    state: &Rc<RefCell<ConnState>>,
    req_id: u32,
    entry: &Arc<FileEntry>,
    first: u64,
    count: u32,
) -> Result<(), ()> {
    let blocks = shard.blocks_in_order(entry, first..first + u64::from(count));
    futures::pin_mut!(blocks);
    while let Some((idx, result)) = blocks.next().await {
        if state.borrow().cancelled.contains(&req_id) {
            return Ok(());
        }
        match result {
            Ok(block) => {
                let header = encode_data_header(req_id, idx, block.len());
                write(wr, &[&header, &block]).await?;
                ShardMetrics::add(&shard.m().bytes_sent_spp, block.len() as u64);
            }
            Err(e) => {
                let (code, msg) = match e {
                    BlockError::Changed => (
                        ErrorCode::VersionChanged,
                        "the file changed on the origin; ask for its info again".to_string(),
                    ),
                    other => (ErrorCode::Internal, other.to_string()),
                };
                return write(wr, &[&error_frame(req_id, code, msg)]).await;
            }
        }
    }
    Ok(())
}
