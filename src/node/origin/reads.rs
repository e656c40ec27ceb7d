//! The origin role of a shard: reading published blocks from disk, making sure each is
//! the content the index vouches for, and asking the publisher to re-index a file that
//! changed under it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;

use super::publisher::{FileEntry, Publisher};
use crate::error::BlockError;
use crate::metrics::{Metrics, ShardMetrics};
use crate::runtime::verify_block;
use crate::runtime::BlockFile;

/// Open media files kept per shard.
pub const MAX_OPEN_FILES_PER_SHARD: usize = 256;
/// How blocks are read from published files.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadPolicy {
    /// `--verify-reads`: hash every block read from disk (otherwise the file's
    /// identity is checked against its index on every read).
    pub verify: bool,
    /// `--buffered-reads`: page-cache reads instead of direct I/O.
    pub buffered: bool,
}

/// A shard's origin-role state: the publisher and this shard's open published files.
pub struct OriginRole {
    pub publisher: Publisher,
    reads: ReadPolicy,
    id: usize,
    metrics: Metrics,
    files: RefCell<HashMap<(u64, u64), Rc<BlockFile>>>,
}

impl OriginRole {
    pub fn new(publisher: Publisher, reads: ReadPolicy, id: usize, metrics: Metrics) -> OriginRole {
        OriginRole {
            publisher,
            reads,
            id,
            metrics,
            files: RefCell::new(HashMap::new()),
        }
    }

    fn m(&self) -> &ShardMetrics {
        self.metrics.shard(self.id)
    }

    async fn open_file(&self, entry: &FileEntry) -> Result<Rc<BlockFile>, BlockError> {
        let k = (entry.file_id, entry.version());
        if let Some(f) = self.files.borrow().get(&k) {
            return Ok(f.clone());
        }
        let f = Rc::new(
            BlockFile::open(&entry.abs_path, !self.reads.buffered)
                .await
                .map_err(|e| BlockError::Io(e.to_string()))?,
        );
        let mut files = self.files.borrow_mut();
        if files.len() >= MAX_OPEN_FILES_PER_SHARD {
            // Dropping an Rc closes the file once no read uses it any more.
            files.clear();
        }
        files.insert(k, f.clone());
        Ok(f)
    }

    /// Reads a block from disk, making sure it is the content the index vouches for:
    /// the open file must still be the indexed one (same size, modification time and
    /// inode, checked on every read, so a file edited in place is caught here), and
    /// with `--verify-reads` the block must also match its digest.
    pub async fn load(&self, entry: &FileEntry, index: u64) -> Result<Bytes, BlockError> {
        let file = self.open_file(entry).await?;
        let len = entry.index.block_len(index);
        let offset = entry.index.geometry().block_offset(index);
        let data = file
            .read_block(offset, len)
            .await
            .map_err(|e| BlockError::Io(e.to_string()))?;
        ShardMetrics::add(&self.m().disk_read_bytes, data.len() as u64);
        // The identity is taken after the read: a write that raced with it has already
        // moved the modification time.
        let same_file = file.source_stat().is_ok_and(|now| now == entry.index.stat);
        if data.len() != len || !same_file {
            tracing::warn!(path = %entry.rel_path, block = index, "published file changed on disk; re-indexing");
            return Err(self.changed(entry));
        }
        if self.reads.verify
            && !verify_block(entry.index.algo, &data, entry.index.digest(index)).await
        {
            ShardMetrics::add(&self.m().digest_failures, 1);
            tracing::warn!(path = %entry.rel_path, block = index, "block on disk does not match its digest; re-indexing");
            return Err(self.changed(entry));
        }
        Ok(data)
    }

    /// Forgets the open file of a changed entry and asks for it to be re-indexed.
    fn changed(&self, entry: &FileEntry) -> BlockError {
        self.files
            .borrow_mut()
            .remove(&(entry.file_id, entry.version()));
        self.publisher
            .report_stale(&entry.rel_path, entry.version());
        BlockError::Changed
    }
}
