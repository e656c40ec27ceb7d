//! The daemon: binds the port, starts the publisher and one shard per core, and runs
//! each shard's accept loop. A connection's first byte decides whether it speaks HTTP
//! (an ASCII capital letter, the start of a method) or SPP (anything else).

pub mod context;
pub mod health;
mod http;
pub mod limits;
mod spp;

use context::Ctx;
pub use context::{Context, RoleContext, LOOKUP_TIMEOUT};
use health::contained;
use limits::{FIRST_BYTE_TIMEOUT, READ_CHUNK_BYTES};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tracing::Instrument;

use crate::cli::{CacheConfig, HostPort, NodeRole, ServeConfig, DEFAULT_CLIENT_READ_AHEAD_SECS};
use crate::disk::cache_dir::StoreDir;
use crate::metrics::{Metrics, ShardMetrics};
use crate::node::cache::{CacheRole, CacheRoleConfig, CachedFile};
use crate::node::origin::publisher::{default_index_dir, PublishConfig, Publisher};
use crate::node::origin::reads::{OriginRole, ReadPolicy};
use crate::node::router::{self, Router};
use crate::node::shard::{Shard, ShardRole};
use crate::pure::protocol::Role;
use crate::runtime::{self, TcpListener, TcpStream};
use crate::upstream::pool::UpstreamConfig;

const LISTEN_BACKLOG: i32 = 1024;

/// How often peers that stopped reporting are looked for and forgotten.
const PEER_EXPIRY_CHECK: Duration = Duration::from_secs(10);

/// Binds one listening socket per shard on the same address and port with
/// `SO_REUSEPORT`, so the kernel spreads connections. The port is probed first (see
/// `probe_port`): one in use is refused, even when its holder set `SO_REUSEPORT`
/// too. Port 0 picks a free port once, for every shard.
pub fn bind_listeners(
    ip: IpAddr,
    port: u16,
    n: usize,
) -> Result<(Vec<std::net::TcpListener>, u16), String> {
    let port = probe_port(ip, port)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let addr = SocketAddr::new(ip, port);
        let sock = listen_socket(addr)?;
        sock.set_reuse_port(true)
            .map_err(|e| format!("-P/--port: SO_REUSEPORT: {e}"))?;
        sock.bind(&addr.into()).map_err(|e| bind_error(addr, &e))?;
        sock.listen(LISTEN_BACKLOG)
            .map_err(|e| format!("-P/--port: cannot listen on {addr}: {e}"))?;
        out.push(sock.into());
    }
    Ok((out, port))
}

/// A TCP socket for `addr` with `SO_REUSEADDR` (connections of an earlier run left in
/// TIME_WAIT do not hold the port) and, for an IPv6 address, dual-stack.
fn listen_socket(addr: SocketAddr) -> Result<socket2::Socket, String> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .map_err(|e| format!("-P/--port: cannot create a socket: {e}"))?;
    let _ = sock.set_reuse_address(true);
    if addr.is_ipv6() {
        let _ = sock.set_only_v6(false);
    }
    Ok(sock)
}

/// The one-line error for a failed bind of `addr`.
fn bind_error(addr: SocketAddr, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        format!(
            "-P/--port: port {} on {} is already in use",
            addr.port(),
            addr.ip()
        )
    } else {
        format!("-P/--port / --bind: cannot bind {addr}: {e}")
    }
}

/// Checks that `ip:port` is free by binding it once without `SO_REUSEPORT`: the
/// kernel lets `SO_REUSEPORT` sockets of one user share a port, so a second p2pd (or
/// anyone else who set it) would otherwise start on a port already served and get
/// half of its connections. The probe is closed before the shards' listeners bind
/// (it never listens, so it leaves nothing behind). Returns the port, the one the
/// kernel picked for port 0.
fn probe_port(ip: IpAddr, port: u16) -> Result<u16, String> {
    let addr = SocketAddr::new(ip, port);
    let probe = listen_socket(addr)?;
    probe.bind(&addr.into()).map_err(|e| bind_error(addr, &e))?;
    if port != 0 {
        return Ok(port);
    }
    probe
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.port())
        .ok_or_else(|| format!("-P/--port: cannot tell which port {ip} got"))
}

/// Runs the node until the process is stopped.
pub fn run(config: ServeConfig) -> Result<(), String> {
    // A panic is contained at its connection or ends the process (see `panics`).
    crate::panics::install();
    let shards = config.threads;
    let io_memory = runtime::preflight(shards + 1)?;
    let (listeners, port) = bind_listeners(config.bind, config.port, shards)?;
    start_trimmer();

    let mut mirrors = Vec::new();
    for m in &config.mirrors {
        mirrors.push(resolve_one(m).map_err(|e| format!("-l/--mirror: {e}"))?);
    }
    let role = match &config.role {
        NodeRole::Origin { publish_dir } => start_origin(&config, publish_dir, shards, port)?,
        NodeRole::Cache(cache) => start_cache(&config, cache, shards, port)?,
    };
    let max_connections_per_shard = config.max_connections.div_ceil(shards).max(1);
    let (p2p, peer_expiry_ms) = (config.p2p, config.peer_expiry_ms);
    let ctx = Arc::new(Context {
        config,
        role,
        metrics: Metrics::new(shards),
        port,
        mirrors,
        max_connections_per_shard,
        startup: std::sync::Barrier::new(shards),
        peers: p2p.then(|| {
            Mutex::new(crate::pure::registry::Registry::with_expiry(
                Duration::from_millis(peer_expiry_ms),
            ))
        }),
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

/// How often freed heap memory is handed back to the kernel.
const TRIM_INTERVAL: Duration = Duration::from_secs(2);

/// Hands freed heap memory back to the kernel every [`TRIM_INTERVAL`], from a thread
/// of its own. Blocks are freed out of order at line rate, so glibc's heaps stay
/// fragmented: free chunks between live ones stay resident (trimming only ever cuts
/// a heap's top), and a node that streamed a film held several times its `-M` long
/// after. `malloc_trim` also returns the free pages inside the heaps.
fn start_trimmer() {
    let _ = std::thread::Builder::new()
        .name("p2pd-trim".into())
        .spawn(|| loop {
            std::thread::sleep(TRIM_INTERVAL);
            // SAFETY: malloc_trim only releases free memory of the allocator's arenas.
            unsafe { libc::malloc_trim(0) };
        });
}

/// Resolves a `host:port` given on the command line to its first address.
fn resolve_one(hp: &HostPort) -> Result<SocketAddr, String> {
    (hp.host.as_str(), hp.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {hp}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hp} has no address"))
}

fn start_origin(
    config: &ServeConfig,
    root: &Path,
    shards: usize,
    port: u16,
) -> Result<RoleContext, String> {
    let index_dir = config
        .index_dir
        .clone()
        .unwrap_or_else(|| default_index_dir(root));
    std::fs::create_dir_all(&index_dir)
        .map_err(|e| format!("--index-dir: cannot create {}: {e}", index_dir.display()))?;
    let index_dir = std::fs::canonicalize(&index_dir)
        .map_err(|e| format!("--index-dir: {}: {e}", index_dir.display()))?;
    let hasher_threads = shards.clamp(1, 4);
    let publisher = Publisher::start(PublishConfig {
        root: root.to_path_buf(),
        index_dir: index_dir.clone(),
        block_size: config.block_size_bytes,
        algo: config.digest,
        rescan_interval: Duration::from_millis(config.rescan_interval_ms),
        hasher_threads,
        start_cold: config.start_cold,
    })?;
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
    Ok(RoleContext::Origin { publisher })
}

fn start_cache(
    config: &ServeConfig,
    cache: &CacheConfig,
    shards: usize,
    port: u16,
) -> Result<RoleContext, String> {
    let (store, indexes) = StoreDir::open(&cache.dir, config.start_cold)?;
    let stored: Vec<Arc<CachedFile>> = indexes
        .into_iter()
        .map(|i| Arc::new(CachedFile::new(i)))
        .collect();
    let parent = match &cache.parent {
        Some(p) => Some(resolve_one(p).map_err(|e| format!("-S/--parent: {e}"))?),
        None => None,
    };
    let subnets = cache.recursive_subnets.clone();
    let site = !subnets.is_empty();
    let who_may_fetch = if site {
        subnets
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        "the local machine".to_string()
    };
    let mut own_addrs = vec![SocketAddr::new(config.bind, port)];
    if config.bind.is_unspecified() {
        own_addrs.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
        own_addrs.push(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port));
    }
    let fill = Arc::new(CacheRoleConfig {
        dir: store.path().to_path_buf(),
        parent,
        info_ttl: Duration::from_millis(config.info_ttl_ms),
        announce_interval: Duration::from_millis(config.announce_interval_ms),
        read_ahead: Duration::from_secs(config.read_ahead_secs.unwrap_or(if site {
            0
        } else {
            DEFAULT_CLIENT_READ_AHEAD_SECS
        })),
        read_ahead_always: config.read_ahead_secs.is_some(),
        disk_limit_per_shard_bytes: cache.disk_limit_bytes.map(|l| l / shards as u64),
        upstream: UpstreamConfig {
            role: if site { Role::Scc } else { Role::Lhc },
            listen_port: port,
            bind: (!config.bind.is_unspecified()).then_some(config.bind),
            timeout: Duration::from_millis(config.upstream_timeout_ms),
        },
        own_addrs,
        who_may_fetch: who_may_fetch.clone(),
    });
    let held: u64 = stored.iter().map(|f| f.index.held_count()).sum();
    eprintln!(
        "p2pd: {} caching in {} on {}:{} ({} shards, {} files and {} blocks kept, misses go to {}, fetching for {}, disk limit {})",
        if site { "site cache (SCC)" } else { "client cache (LHC)" },
        store.path().display(),
        config.bind,
        port,
        shards,
        stored.len(),
        held,
        match &cache.parent {
            Some(p) => format!("the parent {p}"),
            None => "the URL's host".to_string(),
        },
        who_may_fetch,
        match cache.disk_limit_bytes {
            Some(l) => format!("{l} bytes"),
            None => "none".to_string(),
        },
    );
    Ok(RoleContext::Cache {
        _store: store,
        fill,
        subnets,
        stored,
    })
}

async fn shard_main(
    ctx: Arc<Context>,
    listeners: Arc<Mutex<Vec<std::net::TcpListener>>>,
    mesh: router::Mesh,
) -> Result<(), String> {
    let (id, router, receivers) = Router::join(mesh).await?;
    let cache_bytes = ctx.config.memory_cache_bytes / ctx.config.threads as u64;
    let router = Rc::new(router);
    let threads = ctx.config.threads;
    let role = match &ctx.role {
        RoleContext::Origin { publisher } => ShardRole::Origin(Rc::new(OriginRole::new(
            publisher.clone(),
            ReadPolicy {
                verify: ctx.config.verify_reads,
                buffered: ctx.config.buffered_reads,
            },
            id,
            ctx.metrics.clone(),
        ))),
        RoleContext::Cache { fill, stored, .. } => {
            if let Err(e) = runtime::settle_direct_io(&fill.dir).await {
                tracing::warn!(dir = %fill.dir.display(), error = %e, "cannot probe direct I/O in the cache directory");
            }
            let cache = Rc::new(CacheRole::new(
                fill.clone(),
                id,
                threads,
                ctx.metrics.clone(),
                router.clone(),
            ));
            cache.adopt_stored(stored).await;
            runtime::spawn_detached(cache.clone().housekeeping());
            ShardRole::Cache(cache)
        }
    };
    let shard = Shard::new(
        id,
        threads,
        cache_bytes,
        ctx.metrics.clone(),
        router,
        role,
        // Each shard sends its share of the node's rate.
        ctx.config
            .upload_rate_bytes_per_s
            .map(|r| (r / threads as u64).max(1)),
        ctx.config.block_size_bytes,
    );
    // No shard serves a request before every shard has taken its part of the store:
    // a lookup reaching a metadata owner that has not yet adopted its files would
    // start their versions afresh, losing what the store held. Every shard has joined
    // the mesh already, so none waits here for one that cannot arrive.
    ctx.startup.wait();
    crate::node::inbox::serve(shard.clone(), receivers);
    if id == 0 && ctx.peers.is_some() {
        // One shard forgets the peers that stopped reporting.
        let ctx = ctx.clone();
        runtime::spawn_detached(async move {
            loop {
                runtime::sleep(
                    PEER_EXPIRY_CHECK
                        .min(Duration::from_millis(ctx.config.peer_expiry_ms.max(100))),
                )
                .await;
                if let Some(Ok(mut g)) = ctx.peers.as_ref().map(|p| p.lock()) {
                    g.expire(std::time::Instant::now());
                }
            }
        });
    }
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
                runtime::spawn_detached(async move {
                    let s = shard.clone();
                    contained(&s, handle_connection(shard, ctx, stream)).await;
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                runtime::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

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
    // The kernel's send queue has a byte budget too (see `node::budget`): a client
    // that stops reading makes this node hold at most this much unsent for it.
    runtime::limit_unsent(stream.as_raw_fd(), crate::node::budget::UNSENT_LIMIT);
    let peer = match stream.peer_addr() {
        Ok(p) => p,
        Err(_) => return,
    };
    let local = stream.local_addr().ok();
    // The span is entered each time the future is polled and left when it yields
    // (`Instrument`), never held across an `.await`: a guard from `span.enter()` would
    // stay entered while the executor runs other connections' tasks on this thread.
    let span = tracing::debug_span!("conn", %peer);
    async move {
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
        match crate::pure::protocol::sniff(buf[0]) {
            crate::pure::protocol::Sniffed::Http => {
                http::serve(shard, ctx, stream, buf, peer, local).await
            }
            crate::pure::protocol::Sniffed::Spp => {
                spp::serve(shard, ctx, stream, buf, peer, local).await
            }
        }
    }
    .instrument(span)
    .await
}
