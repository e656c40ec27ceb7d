//! The cache's disk under `-C`: blocks adopted from the store at start-up, written after
//! verification (room made first, bytes reserved in flight), evicted least recently
//! used first with their holes punched, and the open data files.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::file::CachedFile;
use super::role::{CacheRole, KnownFile};
use crate::metrics::ShardMetrics;
use crate::pure::lru::BlockKey;
use crate::pure::placement::{meta_owner, owner_of};
use crate::runtime::{self, DataFile};

/// Open data files kept per shard.
pub(super) const MAX_OPEN_DATA_FILES: usize = 256;

/// Block bytes one shard has waiting for or in disk writes at most: a verified block
/// arriving beyond it is served but not stored, so viewers never wait for a disk
/// slower than the network and the memory held by pending writes stays bounded
/// (64 blocks of 256 KiB, or one of the largest, 16 MiB). It is part of a cache's
/// memory bound (ARCHITECTURE.md); a disk that keeps up at line rate needs a few MiB
/// in flight.
pub(super) const MAX_WRITE_BYTES_IN_FLIGHT: u64 = 16 << 20;

/// Failed disk writes are logged at most once per this interval per shard.
pub(super) const WRITE_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Blocks looked at between two chances for other tasks to run, while a retired
/// version's blocks are dropped from the accounting.
pub(super) const PURGE_SLICE_BLOCKS: u64 = 4096;

/// Takes `n` back from a counter when dropped, however the holder's task ends.
pub(super) struct Release<'a>(&'a Cell<u64>, u64);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - self.1);
    }
}

impl CacheRole {
    /// Takes the files found in the store at start-up: the ones whose metadata this
    /// shard owns go into its catalog (to be revalidated on first use), and the blocks
    /// it owns into its disk LRU (evicting at once if the limit shrank).
    pub async fn adopt_stored(self: &Rc<Self>, files: &[Arc<CachedFile>]) {
        let mut evicted = Vec::new();
        for f in files {
            if meta_owner(f.file_id, self.shards) == self.id {
                self.catalog.borrow_mut().insert(f.key.clone(), f.clone());
            }
            let version = f.meta().version;
            self.remember_known(f);
            for i in 0..f.index.block_count() {
                if f.index.has(i) && owner_of(f.file_id, i, self.shards) == self.id {
                    let key = BlockKey {
                        file_id: f.file_id,
                        version,
                        index: i,
                    };
                    let len = DataFile::aligned(f.index.block_len(i));
                    evicted.extend(
                        self.disk
                            .borrow_mut()
                            .insert(key, Arc::downgrade(f), len)
                            .into_iter()
                            .map(|(k, w)| (k, w, len)),
                    );
                }
            }
        }
        self.update_disk_gauges();
        for (key, file, len) in evicted {
            self.evict(key, file, len).await;
        }
    }

    /// Notes that this shard holds (or is about to hold) blocks of `file`.
    pub(super) fn remember_known(&self, file: &Arc<CachedFile>) {
        self.known
            .borrow_mut()
            .entry((file.file_id, file.meta().version))
            .or_insert_with(|| KnownFile {
                file: Arc::downgrade(file),
                block_count: file.index.block_count(),
            });
    }

    pub(super) async fn forget_retired(&self) {
        let gone: Vec<((u64, u64), u64)> = self
            .known
            .borrow()
            .iter()
            .filter(|(_, k)| k.file.upgrade().is_none_or(|f| f.is_retired()))
            .map(|(key, k)| (*key, k.block_count))
            .collect();
        if gone.is_empty() {
            return;
        }
        for ((file_id, version), block_count) in gone {
            self.known.borrow_mut().remove(&(file_id, version));
            self.data_files.borrow_mut().remove(&(file_id, version));
            let mut i = 0;
            while i < block_count {
                let end = (i + PURGE_SLICE_BLOCKS).min(block_count);
                {
                    let mut disk = self.disk.borrow_mut();
                    for index in i..end {
                        if owner_of(file_id, index, self.shards) == self.id {
                            disk.remove(&BlockKey {
                                file_id,
                                version,
                                index,
                            });
                        }
                    }
                }
                i = end;
                runtime::yield_if_needed().await;
            }
        }
        self.update_disk_gauges();
    }

    pub(super) fn update_disk_gauges(&self) {
        let m = self.m();
        m.disk_cache_bytes
            .store(self.disk.borrow().used_bytes() as i64, Relaxed);
        m.files_cached.store(self.files() as i64, Relaxed);
    }

    /// Writes a verified block to the data file and only then marks it held and puts
    /// it in the LRU. Room is made first (LRU eviction, holes punched) and the write's
    /// bytes are reserved while it is in flight, so the LRU's bytes plus the reserved
    /// ones, which bound what the disk holds, never exceed the limit.
    pub(super) async fn store_block(
        self: &Rc<Self>,
        file: &Arc<CachedFile>,
        key: BlockKey,
        data: Bytes,
    ) {
        let len = DataFile::aligned(data.len());
        let limit = self.cfg.disk_limit_per_shard_bytes.unwrap_or(u64::MAX);
        if len > limit {
            return;
        }
        let pending = self.write_bytes_in_flight.get();
        if pending + len > MAX_WRITE_BYTES_IN_FLIGHT {
            ShardMetrics::add(&self.m().disk_cache_write_skipped, 1);
            return;
        }
        self.write_bytes_in_flight.set(pending + len);
        let _in_flight = Release(&self.write_bytes_in_flight, len);
        self.remember_known(file);
        loop {
            let used = self.disk.borrow().used_bytes() + self.reserved_bytes.get();
            if used.saturating_add(len) <= limit {
                break;
            }
            let victim = self.disk.borrow_mut().pop_lru();
            let Some((k, w, l)) = victim else {
                // Everything within the limit is being written or punched right now.
                ShardMetrics::add(&self.m().disk_cache_write_skipped, 1);
                return;
            };
            self.evict(k, w, l).await;
        }
        if file.is_retired() {
            return;
        }
        self.reserved_bytes.set(self.reserved_bytes.get() + len);
        let written = match self.data_file(file).await {
            Ok(df) => {
                df.write_block(file.index.block_offset(key.index), &data)
                    .await
            }
            Err(e) => Err(e),
        };
        self.reserved_bytes.set(self.reserved_bytes.get() - len);
        match written {
            Ok(()) if !file.is_retired() => {
                let evicted = self
                    .disk
                    .borrow_mut()
                    .insert(key, Arc::downgrade(file), len);
                file.index.set(key.index);
                ShardMetrics::add(&self.m().disk_cache_write_bytes, data.len() as u64);
                // Only when the limit changed under us: the reservation kept room.
                for (k, w) in evicted {
                    let l = self.evicted_len(&k, &w);
                    self.evict(k, w, l).await;
                }
            }
            // A retired version's files are deleted: nothing to claim or free.
            Ok(()) => {}
            Err(e) => {
                ShardMetrics::add(&self.m().disk_cache_write_errors, 1);
                // A full or failing disk fails every write: one line per interval, the
                // count in the metrics.
                let now = Instant::now();
                let due = self
                    .last_write_warning
                    .get()
                    .is_none_or(|t| now.duration_since(t) >= WRITE_WARNING_INTERVAL);
                if due {
                    self.last_write_warning.set(Some(now));
                    tracing::warn!(url = %file.key.url(), block = key.index, error = %e, "cannot write a block to the cache (the block is still served; further write errors are counted in p2pd_disk_cache_write_errors_total)");
                }
                // A failed write may still have allocated part of the block.
                if let Ok(df) = self.data_file(file).await {
                    let _ = df
                        .punch(file.index.block_offset(key.index), data.len())
                        .await;
                }
            }
        }
        self.update_disk_gauges();
    }

    /// The bytes an LRU entry stood for (its block's on-disk size).
    pub(super) fn evicted_len(&self, key: &BlockKey, file: &Weak<CachedFile>) -> u64 {
        file.upgrade()
            .filter(|f| key.index < f.index.block_count())
            .map_or(0, |f| DataFile::aligned(f.index.block_len(key.index)))
    }

    /// Evicts a block taken out of the LRU: its `len` bytes stay reserved until its
    /// hole is punched.
    pub(super) async fn evict(&self, key: BlockKey, file: Weak<CachedFile>, len: u64) {
        self.reserved_bytes.set(self.reserved_bytes.get() + len);
        self.punch(key, file).await;
        self.reserved_bytes.set(self.reserved_bytes.get() - len);
    }

    /// Evicts a block: it stops being held at once, then its space is freed.
    pub(super) async fn punch(&self, key: BlockKey, file: Weak<CachedFile>) {
        ShardMetrics::add(&self.m().disk_cache_evictions, 1);
        let Some(file) = file.upgrade() else { return };
        if file.meta().version != key.version {
            return;
        }
        file.index.clear(key.index);
        if file.is_retired() {
            return;
        }
        if let Ok(df) = self.data_file(&file).await {
            if let Err(e) = df
                .punch(
                    file.index.block_offset(key.index),
                    file.index.block_len(key.index),
                )
                .await
            {
                tracing::warn!(url = %file.key.url(), block = key.index, error = %e, "cannot free an evicted block's space");
            }
        }
    }

    pub(super) async fn data_file(&self, file: &Arc<CachedFile>) -> std::io::Result<Rc<DataFile>> {
        let k = (file.file_id, file.meta().version);
        if let Some(f) = self.data_files.borrow().get(&k) {
            return Ok(f.clone());
        }
        let df = Rc::new(DataFile::open(file.index.data_path()).await?);
        let mut files = self.data_files.borrow_mut();
        if files.len() >= MAX_OPEN_DATA_FILES {
            files.clear();
        }
        files.insert(k, df.clone());
        Ok(df)
    }
}
