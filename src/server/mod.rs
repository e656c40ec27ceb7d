//! The daemon: binds the port, starts the publisher and one shard per core, and runs
//! each shard's accept loop. A connection's first byte decides whether it speaks HTTP
//! (an ASCII capital letter, the start of a method) or SPP (anything else).

mod http;
mod spp;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;

use crate::config::ServeConfig;
use crate::metrics::{Metrics, ShardMetrics};
use crate::publish::{default_index_dir, PublishConfig, Publisher};
use crate::router::{self, Router};
use crate::runtime::{self, TcpListener, TcpStream};
use crate::shard::Shard;

/// How long a new connection may take to send its first byte.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle keep-alive connections (HTTP) and SPP connections with nothing outstanding are
/// closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A single socket write that makes no progress for this long ends the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// A request waiting for its file to be indexed gets "busy" after this long.
pub const INDEX_WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read from a socket per call.
/// Requests are small (an HTTP head, an SPP Get): a small read keeps the per-connection
/// buffer small and the zeroing of its free space cheap with thousands of viewers.
pub const READ_CHUNK_BYTES: usize = 8 * 1024;
const LISTEN_BACKLOG: i32 = 1024;

/// What every shard shares, immutable after start-up.
pub struct Context {
    pub config: ServeConfig,
    pub publisher: Publisher,
    pub metrics: Metrics,
    /// The port we accept on (the real one when `-P 0` asked for any).
    pub port: u16,
    /// `-l` mirrors, resolved once at start-up.
    pub mirrors: Vec<SocketAddr>,
    /// Connections each shard accepts at most.
    pub max_connections_per_shard: usize,
}

/// Binds one listening socket per shard on the same address and port with
/// `SO_REUSEPORT`, so the kernel spreads connections. Port 0 picks a free port once.
pub fn bind_listeners(
    ip: IpAddr,
    port: u16,
    n: usize,
) -> Result<(Vec<std::net::TcpListener>, u16), String> {
    let mut out = Vec::with_capacity(n);
    let mut port = port;
    for _ in 0..n {
        let addr = SocketAddr::new(ip, port);
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .map_err(|e| format!("-P/--port: cannot create a socket: {e}"))?;
        let _ = sock.set_reuse_address(true);
        sock.set_reuse_port(true)
            .map_err(|e| format!("-P/--port: SO_REUSEPORT: {e}"))?;
        if ip.is_ipv6() {
            let _ = sock.set_only_v6(false);
        }
        sock.bind(&addr.into()).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                format!("-P/--port: port {port} on {ip} is already in use")
            } else {
                format!("-P/--port / --bind: cannot bind {addr}: {e}")
            }
        })?;
        sock.listen(LISTEN_BACKLOG)
            .map_err(|e| format!("-P/--port: cannot listen on {addr}: {e}"))?;
        let l: std::net::TcpListener = sock.into();
        if port == 0 {
            port = l.local_addr().map_err(|e| e.to_string())?.port();
        }
        out.push(l);
    }
    Ok((out, port))
}

/// Runs the origin until the process is stopped.
pub fn run(config: ServeConfig) -> Result<(), String> {
    let shards = config.threads;
    let io_memory = runtime::preflight(shards + 1)?;
    let (listeners, port) = bind_listeners(config.bind, config.port, shards)?;

    let root = config.publish_dir.clone();
    let index_dir = config
        .index_dir
        .clone()
        .unwrap_or_else(|| default_index_dir(&root));
    std::fs::create_dir_all(&index_dir)
        .map_err(|e| format!("--index-dir: cannot create {}: {e}", index_dir.display()))?;
    let index_dir = std::fs::canonicalize(&index_dir)
        .map_err(|e| format!("--index-dir: {}: {e}", index_dir.display()))?;
    let hasher_threads = shards.clamp(1, 4);
    let publisher = Publisher::start(PublishConfig {
        root: root.clone(),
        index_dir: index_dir.clone(),
        block_size: config.block_size_bytes,
        algo: config.digest,
        rescan_interval: Duration::from_millis(config.rescan_interval_ms),
        hasher_threads,
        start_cold: config.start_cold,
    })?;

    let mut mirrors = Vec::new();
    for m in &config.mirrors {
        let addr = (m.host.as_str(), m.port)
            .to_socket_addrs()
            .map_err(|e| format!("-l/--mirror: cannot resolve {m}: {e}"))?
            .next()
            .ok_or_else(|| format!("-l/--mirror: {m} has no address"))?;
        mirrors.push(addr);
    }

    eprintln!(
        "p2pd: origin publishing {} on {}:{} ({} shards, index dir {}, block size {}, digest {})",
        root.display(),
        config.bind,
        port,
        shards,
        index_dir.display(),
        config.block_size_bytes,
        config.digest.name()
    );
    let max_connections_per_shard = config.max_connections.div_ceil(shards).max(1);
    let ctx = Arc::new(Context {
        config,
        publisher,
        metrics: Metrics::new(shards),
        port,
        mirrors,
        max_connections_per_shard,
    });
    let listeners = Arc::new(Mutex::new(listeners));
    let mesh = router::mesh(shards);
    runtime::run_shards(shards, io_memory, move |_| {
        let (ctx, listeners, mesh) = (ctx.clone(), listeners.clone(), mesh.clone());
        async move {
            if let Err(e) = shard_main(ctx, listeners, mesh).await {
                eprintln!("p2pd: {e}");
                std::process::exit(1);
            }
        }
    })
}

async fn shard_main(
    ctx: Arc<Context>,
    listeners: Arc<Mutex<Vec<std::net::TcpListener>>>,
    mesh: router::Mesh,
) -> Result<(), String> {
    let (id, router, receivers) = Router::join(mesh).await?;
    let cache_bytes = ctx.config.memory_cache_bytes / ctx.config.threads as u64;
    let shard = Shard::new(
        id,
        ctx.config.threads,
        cache_bytes,
        ctx.metrics.clone(),
        ctx.publisher.clone(),
        router,
        crate::shard::ReadPolicy {
            verify: ctx.config.verify_reads,
            buffered: ctx.config.buffered_reads,
        },
    );
    Router::serve(shard.clone(), receivers);
    let std_listener = listeners
        .lock()
        .map_err(|_| "listener list poisoned".to_string())?
        .pop();
    let listener: TcpListener =
        runtime::listener_from_std(std_listener.ok_or("no listener left for this shard")?);
    tracing::debug!(shard = id, "accepting");
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let m = shard.m();
                ShardMetrics::add(&m.connections_total, 1);
                if m.connections_open
                    .load(std::sync::atomic::Ordering::Relaxed) as usize
                    >= ctx.max_connections_per_shard
                {
                    ShardMetrics::add(&m.connections_refused, 1);
                    drop(stream);
                    continue;
                }
                let (shard, ctx) = (shard.clone(), ctx.clone());
                runtime::spawn_detached(async move { handle_connection(shard, ctx, stream).await });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                runtime::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Shard code holds the shared context through an `Arc`: one atomic increment per
/// connection, never touched on the per-block path.
type Ctx = Arc<Context>;

/// Keeps `p2pd_connections_open` right however a connection ends.
struct OpenGuard(Rc<Shard>);
impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0
            .m()
            .connections_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn handle_connection(shard: Rc<Shard>, ctx: Ctx, mut stream: TcpStream) {
    shard
        .m()
        .connections_open
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _guard = OpenGuard(shard.clone());
    let _ = stream.set_nodelay(true);
    let peer = match stream.peer_addr() {
        Ok(p) => p,
        Err(_) => return,
    };
    let local = stream.local_addr().ok();
    let span = tracing::debug_span!("conn", %peer);
    let _e = span.enter();
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    match runtime::timeout(
        FIRST_BYTE_TIMEOUT,
        runtime::read_some(&mut stream, &mut buf, READ_CHUNK_BYTES),
    )
    .await
    {
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }
    match crate::protocol::sniff(buf[0]) {
        crate::protocol::Sniffed::Http => http::serve(shard, ctx, stream, buf, peer, local).await,
        crate::protocol::Sniffed::Spp => spp::serve(shard, ctx, stream, buf, peer, local).await,
    }
}
