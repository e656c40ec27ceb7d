//! Serving one HTTP/1.1 connection: keep-alive, `GET`/`HEAD`, ranges, conditional
//! requests, the `-T` playlist, and the operator endpoints under `/_p2pd/`.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use futures::stream::StreamExt;

use super::{Ctx, IDLE_TIMEOUT, READ_CHUNK_BYTES, WRITE_TIMEOUT};
use crate::content::Content;
use crate::http::range::{if_range_allows, resolve_range, RangeSpec};
use crate::http::request::{parse_request, Method, Request, Target};
use crate::http::response::{
    content_range, content_range_unsatisfied, content_type_for, etag_for, etag_matches, http_date,
    not_modified_since, playlist_body, write_error, write_head, PLAYLIST_CONTENT_TYPE,
};
use crate::metrics::ShardMetrics;
use crate::pathsafe::{normalize_request_path, PathError};
use crate::publish::FileEntry;
use crate::runtime::{self, TcpStream};
use crate::shard::Shard;

/// The port an http:// URL or Host header without one names.
const HTTP_DEFAULT_PORT: u16 = 80;
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
    let head_only = match &req.method {
        Method::Get => false,
        Method::Head => true,
        Method::Other(_) => {
            let mut out = BytesMut::new();
            let body = "405 Method Not Allowed: only GET and HEAD\n";
            let len = body.len().to_string();
            write_head(
                &mut out,
                405,
                &[
                    ("Allow", "GET, HEAD"),
                    ("Content-Type", "text/plain"),
                    ("Content-Length", &len),
                ],
                keep_alive,
            );
            out.extend_from_slice(body.as_bytes());
            return send(stream, &[&out]).await;
        }
    };
    let raw_path = req.path();
    // RFC 9112 section 3.2: an HTTP/1.1 request in origin form without Host is a 400.
    if req.minor_version >= 1 && req.host.is_none() && matches!(req.target, Target::Origin { .. }) {
        return error(
            stream,
            400,
            "HTTP/1.1 requests need a Host header",
            keep_alive,
            head_only,
        )
        .await;
    }
    // Operator endpoints are the node's own: on a cache only in origin form, so a
    // proxy request for another node's /_p2pd/ path is proxied like any file.
    let own_target = matches!(req.target, Target::Origin { .. }) || !ctx.is_cache();
    if let Some(op) = raw_path.strip_prefix("/_p2pd/").filter(|_| own_target) {
        return operator(shard, ctx, stream, req, op, (keep_alive, head_only)).await;
    }
    let authority = req.authority();
    if !ctx.config.allowed_hosts.is_empty()
        && !authority.as_ref().is_some_and(|(h, _)| ctx.host_allowed(h))
    {
        return error(
            stream,
            403,
            "this host is not served here",
            keep_alive,
            head_only,
        )
        .await;
    }
    let path = match normalize_request_path(raw_path) {
        Ok(p) => p,
        Err(PathError::Escape) | Err(PathError::Nul) => {
            return error(stream, 400, "bad path", keep_alive, head_only).await
        }
        Err(_) => return error(stream, 404, "not found", keep_alive, head_only).await,
    };
    let may_fetch = ctx.may_fetch(peer.ip(), local.map(|l| l.ip()));
    // The file's identity is the URL's: the proxy request's absolute target, else the
    // Host header (a missing port is HTTP's default, 80). An origin ignores the host.
    let (host, port) = match &authority {
        Some((h, p)) => (h.as_str(), p.unwrap_or(HTTP_DEFAULT_PORT)),
        None if ctx.is_cache() => {
            return error(
                stream,
                400,
                "a cache needs the file's host: send a Host header or an absolute URL",
                keep_alive,
                head_only,
            )
            .await
        }
        None => ("", HTTP_DEFAULT_PORT),
    };
    let content = match ctx.resolve(shard, host, port, &path, may_fetch).await {
        Ok(c) => c,
        Err(e) => {
            let status = e.http_status();
            return error(stream, status, &e.to_string(), keep_alive, head_only).await;
        }
    };
    if let Content::Published(entry) = &content {
        if ctx.config.playlist && !req.has_query_flag("direct") {
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
        "health" => match super::silent_shards(shard).await.as_slice() {
            [] => ("ok\n".to_string(), "text/plain"),
            silent => {
                let msg = format!("shard {silent:?} does not answer");
                return error(stream, 503, &msg, keep_alive, head_only).await;
            }
        },
        "metrics" => (ctx.render_metrics(), "text/plain; version=0.0.4"),
        test if test.starts_with("test/") && super::test_hooks_enabled() => {
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
    let size = content.size();
    let etag = etag_for(content.version());
    let mtime = u64::try_from(content.mtime_unix_secs()).unwrap_or(0);
    let last_modified = http_date(UNIX_EPOCH + Duration::from_secs(mtime));
    let ctype = content_type_for(content.name());
    let common = [
        ("ETag", etag.as_str()),
        ("Last-Modified", last_modified.as_str()),
        ("Accept-Ranges", "bytes"),
    ];

    let not_modified = match (&req.if_none_match, &req.if_modified_since) {
        (Some(inm), _) => etag_matches(inm, &etag),
        (None, Some(ims)) => not_modified_since(ims, content.mtime_unix_secs()),
        _ => false,
    };
    let mut out = BytesMut::with_capacity(512);
    if not_modified {
        write_head(&mut out, 304, &common, keep_alive);
        return send(stream, &[&out]).await;
    }
    let range = if if_range_allows(req.if_range.as_deref(), &etag, &last_modified) {
        resolve_range(req.range.as_deref(), size)
    } else {
        RangeSpec::Full
    };
    let (status, start, end_excl, crange) = match range {
        RangeSpec::Full => (200, 0, size, None),
        RangeSpec::Partial {
            start,
            end_inclusive,
        } => (
            206,
            start,
            end_inclusive + 1,
            Some(content_range(start, end_inclusive, size)),
        ),
        RangeSpec::Unsatisfiable => {
            let cr = content_range_unsatisfied(size);
            let body = "416 Range Not Satisfiable\n";
            let len = body.len().to_string();
            let mut h = common.to_vec();
            h.extend([
                ("Content-Range", cr.as_str()),
                ("Content-Type", "text/plain"),
                ("Content-Length", len.as_str()),
            ]);
            write_head(&mut out, 416, &h, keep_alive);
            if !head_only {
                out.extend_from_slice(body.as_bytes());
            }
            return send(stream, &[&out]).await;
        }
    };
    // A requester who may not make a cache fetch gets only what it holds: known before
    // the head is sent, so the answer is a clear 403 rather than a cut-off body.
    if let Content::Cached(file) = content {
        let bs = u64::from(content.block_size());
        if !may_fetch
            && !head_only
            && start < end_excl
            && !file.holds_all(start / bs, (end_excl - 1) / bs + 1)
        {
            ShardMetrics::add(&shard.m().recursive_refused, 1);
            let msg = "not cached here, and this node fetches only for its own clients";
            return error(stream, 403, msg, keep_alive, head_only).await;
        }
    }
    let len = (end_excl - start).to_string();
    let mut h = common.to_vec();
    h.extend([("Content-Type", ctype), ("Content-Length", len.as_str())]);
    if let Some(cr) = &crange {
        h.push(("Content-Range", cr.as_str()));
    }
    write_head(&mut out, status, &h, keep_alive);
    send(stream, &[&out]).await?;
    if head_only || start == end_excl {
        return Ok(());
    }
    stream_body(shard, stream, content, start..end_excl, may_fetch).await
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
    let bs = u64::from(content.block_size());
    let writer = Rc::new(shard.pins.writer());
    let blocks = shard.blocks_in_order(
        content,
        start / bs..(end - 1) / bs + 1,
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
        let block_start = idx * bs;
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
    }
    Ok(())
}
