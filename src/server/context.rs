//! What every shard of a node shares, immutable after start-up ([`Context`]): the
//! configuration, the role (publisher, or the cache's store), who may make a cache
//! fetch, `-A`, and resolving a request's URL to the [`Content`] it names.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cli::ServeConfig;
use crate::disk::cache_dir::StoreDir;
use crate::disk::FileKey;
use crate::error::{Refusal, UpstreamError, UpstreamErrorKind};
use crate::metrics::Metrics;
use crate::node::cache::{CacheRoleConfig, CachedFile};
use crate::node::content::Content;
use crate::node::origin::publisher::{LookupError, Publisher};
use crate::node::shard::{Shard, ShardRole};
use crate::pure::protocol::Role;
use crate::runtime::{self};

/// A request waiting for its file to be indexed gets "busy" after this long.
pub const INDEX_WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// What every shard shares, immutable after start-up.
pub struct Context {
    pub config: ServeConfig,
    pub role: RoleContext,
    pub metrics: Metrics,
    /// The port we accept on (the real one when `-P 0` asked for any).
    pub port: u16,
    /// `-l` mirrors, resolved once at start-up.
    pub mirrors: Vec<SocketAddr>,
    /// Connections each shard accepts at most.
    pub max_connections_per_shard: usize,
    /// Every shard waits here once, after its start-up work, before serving.
    pub startup: std::sync::Barrier,
    /// `-i`: the peers that reported blocks (Have), handed out in Locate answers.
    /// Touched on Have and Locate only (control frames), never per block.
    pub peers: Option<Mutex<crate::pure::registry::Registry>>,
}

/// The role-specific part of the shared context.
pub enum RoleContext {
    Origin {
        publisher: Publisher,
    },
    Cache {
        /// Holds the cache directory's lock for the life of the process.
        _store: StoreDir,
        fill: Arc<CacheRoleConfig>,
        /// `-n`: requesters that may make this node fetch (empty on an LHC).
        subnets: Vec<ipnet::IpNet>,
        /// Files found in the store at start-up, handed to the shards once.
        stored: Vec<Arc<CachedFile>>,
    },
}

impl Context {
    /// Our role in SPP Hellos and Locate answers.
    pub fn spp_role(&self) -> Role {
        match &self.role {
            RoleContext::Origin { .. } => Role::Origin,
            RoleContext::Cache { subnets, .. } if subnets.is_empty() => Role::Lhc,
            RoleContext::Cache { .. } => Role::Scc,
        }
    }

    /// Whether a requester at `peer`, which reached us at `local`, may make this node
    /// fetch from its upstream: an SCC fetches for its `-n` subnets, an LHC for the
    /// local machine only. A requester on the local machine comes from the address it
    /// connected to, or from the loopback address the kernel picks by default; several
    /// simulated hosts on distinct 127.x addresses are therefore told apart.
    pub fn may_fetch(&self, peer: IpAddr, local: Option<IpAddr>) -> bool {
        let peer = canonical_ip(peer);
        match &self.role {
            RoleContext::Origin { .. } => true,
            RoleContext::Cache { subnets, .. } if !subnets.is_empty() => {
                subnets.iter().any(|n| n.contains(&peer))
            }
            RoleContext::Cache { .. } => {
                local.map(canonical_ip) == Some(peer)
                    || peer == IpAddr::V4(Ipv4Addr::LOCALHOST)
                    || peer == IpAddr::V6(Ipv6Addr::LOCALHOST)
            }
        }
    }

    /// The file `host:port/path` names on this node (`path` already normalized): the
    /// published file on an origin; on a cache, its cached copy, whose info is fetched
    /// or revalidated upstream when the requester may make us fetch.
    pub async fn resolve(
        &self,
        shard: &Rc<Shard>,
        host: &str,
        port: u16,
        path: &str,
        may_fetch: bool,
    ) -> Result<Content, Refusal> {
        match &shard.role {
            ShardRole::Origin(origin) => {
                match runtime::timeout(INDEX_WAIT_TIMEOUT, origin.publisher.lookup(path)).await {
                    Ok(Ok(e)) => Ok(Content::Published(e)),
                    Ok(Err(LookupError::NotFound)) => Err(Refusal::NotFound(path.to_string())),
                    Ok(Err(LookupError::Busy)) => Err(Refusal::Busy("indexer busy, retry".into())),
                    Ok(Err(LookupError::Failed(m))) => Err(Refusal::Internal(m)),
                    Err(_) => Err(Refusal::Busy("file is still being indexed, retry".into())),
                }
            }
            ShardRole::Cache(cache) => {
                let key = FileKey::new(host, port, path);
                match runtime::timeout(LOOKUP_TIMEOUT, cache.lookup(key, may_fetch)).await {
                    Ok(r) => r.map(Content::Cached),
                    Err(_) => Err(Refusal::Upstream(UpstreamError {
                        kind: UpstreamErrorKind::TimedOut,
                        message: "the upstream did not describe the file in time".into(),
                    })),
                }
            }
        }
    }

    pub fn is_cache(&self) -> bool {
        matches!(self.role, RoleContext::Cache { .. })
    }

    /// The `-A` rule: without `-A` every host is accepted.
    pub fn host_allowed(&self, host: &str) -> bool {
        let allowed = &self.config.allowed_hosts;
        allowed.is_empty() || allowed.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// The capability bits of this node's Hello: with `-i` it keeps a registry and
    /// takes PeerReports about the peers it hands out; without, neither.
    pub fn capabilities(&self) -> u32 {
        use crate::pure::protocol::capability;
        if self.peers.is_some() {
            capability::P2P_REGISTRY | capability::PEER_REPORT | capability::HOLDINGS
        } else {
            0
        }
    }

    /// Prometheus text of the node's metrics.
    pub fn render_metrics(&self) -> String {
        let mut text = match &self.role {
            RoleContext::Origin { publisher } => self
                .metrics
                .render(publisher.file_count(), &publisher.stats),
            RoleContext::Cache { .. } => self.metrics.render(0, &Default::default()),
        };
        if let Some(Ok(g)) = self.peers.as_ref().map(|p| p.lock()) {
            use std::fmt::Write as _;
            let _ = writeln!(
                text,
                "# HELP p2pd_peers_known p2p mode: peers that reported blocks, not yet expired.\n# TYPE p2pd_peers_known gauge\np2pd_peers_known {}",
                g.peers()
            );
        }
        text
    }
}

/// IPv4-mapped IPv6 addresses compare as the IPv4 address they carry.
pub(super) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Most time a request waits for a cached file's info (the upstream's own deadline
/// applies to each attempt; this bounds them all).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Shard code holds the shared context through an `Arc`: one atomic increment per
/// connection, never touched on the per-block path.
pub type Ctx = Arc<Context>;
