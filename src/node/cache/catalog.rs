//! The catalog of the files whose metadata this shard owns: lookups (from any shard),
//! one shared revalidation per file with the upstream, new versions' indexes, retiring
//! replaced ones, and the addresses of a file's upstream (parent, else the URL's host).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::FutureExt;

use super::file::{file_ref, now_ms, CachedFile};
use super::locate::LOCATE_REFRESH;
use super::role::CacheRole;
use crate::disk::cache_index::CacheIndex;
use crate::disk::{FileKey, FileMeta, StoreDir};
use crate::error::{FetchError, Refusal, UpstreamError, UpstreamErrorKind};
use crate::metrics::ShardMetrics;
use crate::pure::placement::meta_owner;
use crate::runtime::{self};
use crate::upstream::connection::RemoteFile;
use crate::upstream::pool::Upstream;

/// How long a resolved upstream host name is reused before it is looked up again.
pub(super) const DNS_TTL: Duration = Duration::from_secs(60);

/// Host names whose addresses a shard remembers at most.
pub(super) const MAX_DNS_ENTRIES: usize = 4096;

/// Files whose metadata one shard keeps open (index mapped) at most; beyond it the
/// least recently validated ones are closed (their files stay on disk for a restart).
pub const MAX_FILES_PER_SHARD: usize = 65_536;

impl CacheRole {
    /// The cached file named by `key`, from whichever shard owns its metadata.
    pub async fn lookup(
        self: &Rc<Self>,
        key: FileKey,
        may_fetch: bool,
    ) -> Result<Arc<CachedFile>, Refusal> {
        let owner = meta_owner(key.file_id(), self.shards);
        if owner == self.id {
            self.local_lookup(key, may_fetch).await
        } else {
            ShardMetrics::add(&self.m().router_forwarded, 1);
            self.router.lookup(owner, key, may_fetch).await
        }
    }

    /// A lookup on the metadata owner: the catalog entry if its info is fresh (or the
    /// requester may not make us ask upstream), else one shared revalidation.
    pub async fn local_lookup(
        self: &Rc<Self>,
        key: FileKey,
        may_fetch: bool,
    ) -> Result<Arc<CachedFile>, Refusal> {
        let existing = self.catalog.borrow().get(&key).cloned();
        if let Some(f) = &existing {
            let validated = f.validated_ms.load(Relaxed);
            let fresh = validated != 0
                && now_ms().saturating_sub(validated) < self.cfg.info_ttl.as_millis() as u64;
            if fresh || !may_fetch {
                return Ok(f.clone());
            }
        } else if !may_fetch {
            ShardMetrics::add(&self.m().recursive_refused, 1);
            return Err(Refusal::Forbidden(format!(
                "{} is not cached here, and this node fetches only for {}",
                key.url(),
                self.cfg.who_may_fetch
            )));
        }
        let pending = self.lookups.borrow().get(&key).cloned();
        let fut = match pending {
            Some(f) => f,
            None => {
                let me = self.clone();
                let k = key.clone();
                let f = async move {
                    let r = me.revalidate(&k, existing).await;
                    me.lookups.borrow_mut().remove(&k);
                    me.update_disk_gauges();
                    r
                }
                .boxed_local()
                .shared();
                self.lookups.borrow_mut().insert(key, f.clone());
                f
            }
        };
        fut.await
    }

    /// Asks the upstream whether `existing` is still the current version; fetches the
    /// full info (and starts a new version) when it is not or when there is none.
    pub(super) async fn revalidate(
        self: &Rc<Self>,
        key: &FileKey,
        existing: Option<Arc<CachedFile>>,
    ) -> Result<Arc<CachedFile>, Refusal> {
        let fref = file_ref(key);
        if let Some(f) = &existing {
            let r = self
                .with_upstream(key, |up| {
                    let fref = fref.clone();
                    async move { up.file_meta(&fref).await }
                })
                .await;
            match r {
                Ok(meta) if meta.version == f.meta().version => {
                    f.validated_ms.store(now_ms(), Relaxed);
                    self.refresh_located(f, LOCATE_REFRESH);
                    return Ok(f.clone());
                }
                Ok(_) => {
                    tracing::info!(url = %key.url(), "file changed at the origin; fetching its new info");
                }
                Err(Refusal::Upstream(u)) if u.kind == UpstreamErrorKind::NotFound => {
                    tracing::info!(url = %key.url(), "file gone at the origin; dropping it");
                    self.retire(f);
                    return Err(Refusal::NotFound(key.url()));
                }
                Err(e) => {
                    // Stale-if-error: keep serving what we hold while the upstream is
                    // away, and do not make every request wait for it: trust the old
                    // info for another TTL.
                    tracing::warn!(url = %key.url(), error = %e, "cannot revalidate; serving the cached version");
                    f.validated_ms.store(now_ms(), Relaxed);
                    return Ok(f.clone());
                }
            }
        }
        let info = self
            .with_upstream(key, |up| {
                let fref = fref.clone();
                async move { up.file_info(&fref).await }
            })
            .await?;
        let file = self.start_version(key, info).await?;
        if let Some(old) = existing {
            self.retire(&old);
        }
        // A new file's sources are learned before its first block is asked for, so
        // peers can serve it from the start; later refreshes go on in the background.
        if let Some(locate) = self.locate_task(&file, LOCATE_REFRESH) {
            locate.await;
        }
        Ok(file)
    }

    /// Creates the index of a new file version (on the blocking pool: it writes and
    /// syncs a file) and puts it in the catalog.
    pub(super) async fn start_version(
        self: &Rc<Self>,
        key: &FileKey,
        info: RemoteFile,
    ) -> Result<Arc<CachedFile>, Refusal> {
        let meta = FileMeta {
            size: info.size,
            block_size: info.block_size,
            algo: info.algo,
            version: info.version,
            mtime_unix_secs: info.mtime_unix_secs,
        };
        let (dir, k) = (self.cfg.dir.clone(), key.clone());
        let index = runtime::blocking(move || CacheIndex::create(&dir, &k, &meta, &info.digests))
            .await
            .map_err(|e| Refusal::Internal(format!("cannot create the cache index: {e}")))?;
        let file = Arc::new(CachedFile::new(index));
        file.validated_ms.store(now_ms(), Relaxed);
        let mut catalog = self.catalog.borrow_mut();
        if catalog.len() >= MAX_FILES_PER_SHARD && !catalog.contains_key(key) {
            // Forget the least recently validated file's metadata; its blocks stay on
            // disk and in the LRU until evicted, and a restart finds it again.
            if let Some(victim) = catalog
                .iter()
                .min_by_key(|(_, f)| f.validated_ms.load(Relaxed))
                .map(|(k, _)| k.clone())
            {
                catalog.remove(&victim);
            }
        }
        catalog.insert(key.clone(), file.clone());
        tracing::debug!(url = %key.url(), version = %format_args!("{:016x}", file.meta().version), blocks = file.index.block_count(), "caching a new file version");
        Ok(file)
    }

    /// Takes a replaced or vanished version out of service and deletes its files.
    pub(super) fn retire(&self, old: &Arc<CachedFile>) {
        if old.retired.swap(true, Relaxed) {
            return;
        }
        {
            let mut catalog = self.catalog.borrow_mut();
            if catalog.get(&old.key).is_some_and(|f| Arc::ptr_eq(f, old)) {
                catalog.remove(&old.key);
            }
        }
        let (idx, data) = (
            old.index.index_path().to_path_buf(),
            old.index.data_path().to_path_buf(),
        );
        runtime::spawn_detached(async move {
            let _ = runtime::blocking(move || StoreDir::remove_files(&idx, &data)).await;
        });
    }

    /// The addresses misses for `key` go to: the parent, else the URL's host.
    pub(super) async fn upstream_addrs(&self, key: &FileKey) -> Result<Vec<SocketAddr>, Refusal> {
        if let Some(p) = self.cfg.parent {
            return Ok(vec![p]);
        }
        let name = (key.host.clone(), key.port);
        let cached = self
            .dns
            .borrow()
            .get(&name)
            .filter(|(_, at)| at.elapsed() < DNS_TTL)
            .map(|(a, _)| a.clone());
        let addrs = match cached {
            Some(a) => a,
            None => {
                let resolved = match key.host.parse::<IpAddr>() {
                    Ok(ip) => vec![SocketAddr::new(ip, key.port)],
                    Err(_) => {
                        let n = name.clone();
                        runtime::blocking(move || {
                            n.to_socket_addrs().map(|a| a.collect::<Vec<_>>())
                        })
                        .await
                        .map_err(|e| {
                            Refusal::Upstream(UpstreamError {
                                kind: UpstreamErrorKind::Unreachable,
                                message: format!("cannot resolve {}: {e}", key.host),
                            })
                        })?
                    }
                };
                let mut dns = self.dns.borrow_mut();
                if dns.len() >= MAX_DNS_ENTRIES {
                    dns.clear();
                }
                dns.insert(name, (resolved.clone(), Instant::now()));
                resolved
            }
        };
        let addrs: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| !self.cfg.own_addrs.contains(a))
            .collect();
        if addrs.is_empty() {
            return Err(Refusal::Upstream(UpstreamError {
                kind: UpstreamErrorKind::Failed,
                message: format!(
                    "{} names this node itself and no parent (-S) is set",
                    key.url()
                ),
            }));
        }
        Ok(addrs)
    }

    /// Runs `op` against the upstream of `key`, trying its addresses in turn while
    /// they are unreachable or overloaded.
    pub(super) async fn with_upstream<T, F, Fut>(&self, key: &FileKey, op: F) -> Result<T, Refusal>
    where
        F: Fn(Rc<Upstream>) -> Fut,
        Fut: std::future::Future<Output = Result<T, FetchError>>,
    {
        let mut last = None;
        for addr in self.upstream_addrs(key).await? {
            let r = match self.pool.get(addr).await {
                Ok(up) => op(up).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(v) => return Ok(v),
                Err(e) => {
                    ShardMetrics::add(&self.m().upstream_errors, 1);
                    tracing::debug!(upstream = %addr, url = %key.url(), error = %e, "upstream request failed");
                    let next = e.retry_next_address();
                    last = Some(e);
                    if !next {
                        break;
                    }
                }
            }
        }
        Err(match last {
            Some(e) => Refusal::Upstream(e.to_upstream_error()),
            None => Refusal::Internal("no upstream".into()),
        })
    }
}
