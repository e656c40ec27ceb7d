//! Serving one HTTP/1.1 connection: keep-alive, `GET`/`HEAD`, ranges, conditional
//! requests, the `-T` playlist, and the operator endpoints under `/_p2pd/`.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::stream::StreamExt;

use crate::metrics::ShardMetrics;
use crate::node::content::Content;
use crate::node::origin::publisher::FileEntry;
use crate::node::shard::Shard;
use crate::pure::http::plan::{file_answer, method_not_allowed, route, FileFacts, Route};
use crate::pure::http::request::{parse_request, Method, Request, Target};
use crate::pure::http::response::{
    content_type_for, playlist_body, write_error, write_head, PLAYLIST_CONTENT_TYPE,
};
use crate::runtime::{self, TcpStream};
use crate::server::context::Ctx;
use crate::server::limits::{IDLE_TIMEOUT, READ_CHUNK_BYTES, WRITE_TIMEOUT};

/// Time allowed for the rest of a request head once its first byte arrived.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn serve(
    shard: Rc<Shard>,
    ctx: Ctx,
    mut stream: TcpStream,
    mut buf: BytesMut,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) {
    let mut out = BytesMut::with_capacity(1024);
    loop {
        // Read one request head.
        let req = loop {
            match parse_request(&buf) {
                Ok(Some((req, head_len))) => {
                    buf.advance(head_len);
                    break req;
                }
                Ok(None) => {}
                Err(e) => {
                    ShardMetrics::add(&shard.m().protocol_errors, 1);
                    tracing::debug!(%peer, error = %e, "bad HTTP request");
                    out.clear();
                    write_error(&mut out, e.status(), &e.to_string(), false, false);
                    let _ = send(&mut stream, &[&out]).await;
                    return;
                }
            }
            let wait = if buf.is_empty() {
                IDLE_TIMEOUT
            } else {
                HEAD_TIMEOUT
            };
            match runtime::timeout(
                wait,
                runtime::read_some(&mut stream, &mut buf, READ_CHUNK_BYTES),
            )
            .await
            {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
        };
        ShardMetrics::add(&shard.m().requests_http, 1);
        let keep_alive = req.keep_alive();
        match respond(&shard, &ctx, &mut stream, &req, keep_alive, peer, local).await {
            Ok(()) if keep_alive => {}
            _ => return,
        }
    }
}

async fn send(stream: &mut TcpStream, parts: &[&[u8]]) -> Result<(), ()> {
    match runtime::timeout(WRITE_TIMEOUT, runtime::write_all_parts(stream, parts)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn error(
    stream: &mut TcpStream,
    status: u16,
    msg: &str,
    keep_alive: bool,
    head_only: bool,
) -> Result<(), ()> {
    let mut out = BytesMut::new();
    write_error(&mut out, status, msg, keep_alive, head_only);
    send(stream, &[&out]).await
}

async fn respond(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    stream: &mut TcpStream,
    req: &Request,
    keep_alive: bool,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) -> Result<(), ()> {
    let head_only = matches!(req.method, Method::Head);
    let (host, port, path) = match route(req, ctx.is_cache(), &ctx.config.allowed_hosts) {
        Route::MethodNotAllowed => return send(stream, &[&method_not_allowed(keep_alive)]).await,
        Route::Error { status, message } => {
            return error(stream, status, message, keep_alive, head_only).await
        }
        Route::Operator(op) => {
            return operator(shard, ctx, stream, req, op, (keep_alive, head_only)).await
        }
        Route::File {
            host, port, path, ..
        } => (host, port, path),
    };
    let may_fetch = ctx.may_fetch(peer.ip(), local.map(|l| l.ip()));
    let content = match ctx.resolve(shard, &host, port, &path, may_fetch).await {
        Ok(c) => c,
        Err(e) => {
            let status = e.http_status();
            return error(stream, status, &e.to_string(), keep_alive, head_only).await;
        }
    };
    if let Content::Published(entry) = &content {
        if ctx.config.playlist && !req.has_query_flag("direct") {
            let raw_path = req.path();
            return playlist(
                ctx, stream, req, raw_path, entry, keep_alive, head_only, local,
            )
            .await;
        }
    }
    let opts = Serve {
        keep_alive,
        head_only,
        may_fetch,
    };
    serve_file(shard, stream, req, &content, opts).await
}

async fn operator(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    stream: &mut TcpStream,
    req: &Request,
    op: &str,
    (keep_alive, head_only): (bool, bool),
) -> Result<(), ()> {
    let (body, ctype) = match op {
        // Healthy only when every shard's reactor answers: a stuck shard hangs
        // the connections the kernel hands it, so the node is not ok.
        "health" => match crate::server::health::silent_shards(shard).await.as_slice() {
            [] => ("ok\n".to_string(), "text/plain"),
            silent => {
                let msg = format!("shard {silent:?} does not answer");
                return error(stream, 503, &msg, keep_alive, head_only).await;
            }
        },
        "metrics" => (ctx.render_metrics(), "text/plain; version=0.0.4"),
        test if test.starts_with("test/") && crate::server::health::test_hooks_enabled() => {
            return test_hook(shard, stream, req, test, keep_alive).await;
        }
        _ => {
            return error(
                stream,
                404,
                "no such operator endpoint",
                keep_alive,
                head_only,
            )
            .await
        }
    };
    let mut out = BytesMut::new();
    let len = body.len().to_string();
    write_head(
        &mut out,
        200,
        &[
            ("Content-Type", ctype),
            ("Content-Length", &len),
            ("Cache-Control", "no-store"),
        ],
        keep_alive,
    );
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    send(stream, &[&out]).await
}

/// The test-only endpoints (`P2PD_TEST_HOOKS=1`): `test/panic` panics inside this
/// connection, `test/abort` panics in a task of the shard's own (outside any
/// connection), `test/stall?shard=N&ms=M` blocks shard N's thread for M ms.
async fn test_hook(
    shard: &Rc<Shard>,
    stream: &mut TcpStream,
    req: &Request,
    op: &str,
    keep_alive: bool,
) -> Result<(), ()> {
    let param = |name: &str| -> Option<u64> {
        let (Target::Origin { query, .. } | Target::Absolute { query, .. }) = &req.target;
        query
            .as_deref()?
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
    };
    match op {
        "test/panic" => panic!("test hook: a panic inside a connection"),
        "test/abort" => {
            runtime::spawn_detached(async { panic!("test hook: a panic outside any connection") });
        }
        "test/stall" => {
            let (target, ms) = (
                param("shard").unwrap_or(0) as usize,
                param("ms").unwrap_or(1000),
            );
            if target >= shard.shards {
                return error(stream, 400, "no such shard", keep_alive, false).await;
            }
            let s = shard.clone();
            // Answer first: a stalled own shard could not.
            runtime::spawn_detached(async move {
                runtime::sleep(Duration::from_millis(20)).await;
                if target == s.id {
                    std::thread::sleep(Duration::from_millis(ms));
                } else {
                    s.router.stall(target, ms).await;
                }
            });
        }
        _ => return error(stream, 404, "no such test hook", keep_alive, false).await,
    }
    let mut out = BytesMut::new();
    write_head(&mut out, 200, &[("Content-Length", "0")], keep_alive);
    send(stream, &[&out]).await
}

#[allow(clippy::too_many_arguments)]
async fn playlist(
    ctx: &Ctx,
    stream: &mut TcpStream,
    req: &Request,
    raw_path: &str,
    entry: &FileEntry,
    keep_alive: bool,
    head_only: bool,
    local: Option<SocketAddr>,
) -> Result<(), ()> {
    let host = match req.authority() {
        Some((h, _)) if h.contains(':') => format!("[{h}]"),
        Some((h, _)) => h,
        None => match local {
            Some(SocketAddr::V6(a)) => format!("[{}]", a.ip()),
            Some(a) => a.ip().to_string(),
            None => "localhost".into(),
        },
    };
    let base = format!("{host}:{}{raw_path}", ctx.port);
    let body = playlist_body(
        &format!("spp://{base}"),
        &format!("http://{base}?direct"),
        entry.size(),
    );
    let mut out = BytesMut::new();
    let len = body.len().to_string();
    write_head(
        &mut out,
        200,
        &[
            ("Content-Type", PLAYLIST_CONTENT_TYPE),
            ("Content-Length", &len),
        ],
        keep_alive,
    );
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    send(stream, &[&out]).await
}

/// How one response is sent.
#[derive(Clone, Copy)]
struct Serve {
    keep_alive: bool,
    head_only: bool,
    /// The requester may make this node fetch missing blocks (caches).
    may_fetch: bool,
}

async fn serve_file(
    shard: &Rc<Shard>,
    stream: &mut TcpStream,
    req: &Request,
    content: &Content,
    opts: Serve,
) -> Result<(), ()> {
    let Serve {
        keep_alive,
        head_only,
        may_fetch,
    } = opts;
    let facts = FileFacts {
        size: content.size(),
        version: content.version(),
        mtime_unix_secs: content.mtime_unix_secs(),
        content_type: content_type_for(content.name()),
    };
    let answer = file_answer(req, &facts, keep_alive, head_only);
    // A requester who may not make a cache fetch gets only what it holds: known before
    // the head is sent, so the answer is a clear 403 rather than a cut-off body.
    if let (Content::Cached(file), Some(body)) = (content, &answer.body) {
        let blocks = content.geometry().blocks_of(body.clone());
        if !may_fetch && !file.holds_all(blocks.start, blocks.end) {
            ShardMetrics::add(&shard.m().recursive_refused, 1);
            let msg = "not cached here, and this node fetches only for its own clients";
            return error(stream, 403, msg, keep_alive, head_only).await;
        }
    }
    send(stream, &[&answer.head]).await?;
    match answer.body {
        Some(body) => stream_body(shard, stream, content, body, may_fetch).await,
        None => Ok(()),
    }
}

/// Writes bytes `start..end` of the file, block by block, reading a few blocks ahead
/// within the shard's pinned-bytes budget (a connection that stops reading while the
/// shard is short is shed). A block that cannot be produced ends the connection: the
/// length was promised, so a short body is the only honest signal left.
async fn stream_body(
    shard: &Rc<Shard>,
    stream: &mut TcpStream,
    content: &Content,
    bytes: std::ops::Range<u64>,
    may_fetch: bool,
) -> Result<(), ()> {
    let (start, end) = (bytes.start, bytes.end);
    let geometry = content.geometry();
    // A reader who may make this cache fetch has what it will need soon fetched
    // ahead (see `node::readahead`).
    let reader = match content {
        Content::Cached(_) if may_fetch => stream.peer_addr().ok().map(|a| a.ip()),
        _ => None,
    };
    if let Some(r) = reader {
        shard.read_ahead(content, r, geometry.blocks_of(bytes.clone()).start);
    }
    let writer = Rc::new(shard.pins.writer_on(stream.as_raw_fd()));
    let blocks = shard.blocks_in_order(
        content,
        geometry.blocks_of(bytes.clone()),
        may_fetch,
        writer.clone(),
    );
    futures::pin_mut!(blocks);
    while let Some((idx, pinned)) = blocks.next().await {
        let pinned = pinned.map_err(|_| ())?;
        let block = match &pinned.block {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(path = %content.name(), block = idx, error = %e, "cannot serve block; closing");
                return Err(());
            }
        };
        let block_start = geometry.block_offset(idx);
        let from = start.saturating_sub(block_start) as usize;
        let to = (end.saturating_sub(block_start) as usize).min(block.len());
        if from >= to {
            return Err(());
        }
        shard.upload_throttle(to - from).await;
        writer
            .write(stream, &[&block[from..to]], WRITE_TIMEOUT)
            .await
            .map_err(|_| ())?;
        ShardMetrics::add(&shard.m().bytes_sent_http, (to - from) as u64);
        if let Some(r) = reader {
            shard.read_ahead(content, r, idx + 1);
        }
    }
    Ok(())
}
