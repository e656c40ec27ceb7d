//! [`CacheIndex`]: one cached file version's index, created whole or opened and
//! checked, mapped read-write and shared; its have-bitmap is touched only atomically.

use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use super::{
    error::{io_err, StoreError},
    files::{data_path_of, file_stem, paths_for, sync_dir, tmp_path, INDEX_EXT},
    format::{
        check_key, check_meta, checksum, encode_header, parse_header, Layout, BITMAP_ALIGN_BYTES,
        BITS_PER_WORD, CHECKSUM_AT, CREATE_BUFFER_BYTES, HEADER_LEN, ZERO_CHUNK_BYTES,
    },
};
use crate::disk::identity::{FileKey, FileMeta};
use crate::pure::geometry::FileGeometry;

/// One cached file version's index, mapped read-write and shared (MAP_SHARED) so bits
/// set here reach the file and survive a restart.
///
/// Shareable between threads (`Send + Sync` come from `MmapRaw`): the only writes
/// through the mapping are atomic read-modify-writes on bitmap words; everything before
/// the bitmap is read-only after creation, and plain slices are only ever made of that
/// region.
pub struct CacheIndex {
    map: MmapRaw,
    key: FileKey,
    meta: FileMeta,
    block_count: u64,
    layout: Layout,
    index_path: PathBuf,
    data_path: PathBuf,
}

const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<CacheIndex>();
};

impl std::fmt::Debug for CacheIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheIndex")
            .field("url", &self.key.url())
            .field("version", &format_args!("{:016x}", self.meta.version))
            .field("size", &self.meta.size)
            .field("blocks", &self.block_count)
            .field("held", &self.held_count())
            .finish()
    }
}

impl CacheIndex {
    /// Writes a complete new index for `key` and `meta` with every bit clear and maps
    /// it: under a temporary name, synced, renamed to its final name
    /// ([`paths_for`]), and the directory synced, so a crash leaves either no index or
    /// a whole one. An index already there under that name is replaced.
    /// `digests.len()` must be `block_count * meta.algo.len()`.
    ///
    /// Blocks on disk writes and fsyncs: call it off the reactor or accept the stall.
    pub fn create(
        dir: &Path,
        key: &FileKey,
        meta: &FileMeta,
        digests: &[u8],
    ) -> Result<CacheIndex, StoreError> {
        let invalid = |why: &str| StoreError::Invalid(format!("{}: {why}", key.url()));
        let block_count = check_meta(meta).map_err(invalid)?;
        check_key(key).map_err(invalid)?;
        let layout = Layout::new(key.host.len(), key.path.len(), meta.algo, block_count)
            .ok_or_else(|| invalid("too large for this machine"))?;
        if digests.len() != layout.digests_len {
            return Err(invalid(&format!(
                "{} digest bytes for {block_count} blocks of {}",
                digests.len(),
                meta.algo.name()
            )));
        }
        let mut header = encode_header(key, meta, block_count);
        let padding = [0u8; BITMAP_ALIGN_BYTES as usize];
        let padding = &padding[..layout.bitmap_at - (layout.digests_at + layout.digests_len)];
        let sum = checksum(
            &header,
            &[key.host.as_bytes(), key.path.as_bytes(), digests, padding],
        );
        header[CHECKSUM_AT..].copy_from_slice(&sum);

        let (index_path, _) = paths_for(dir, key, meta.version);
        let tmp = tmp_path(&index_path);
        if let Err(e) = write_complete(&tmp, &header, key, digests, &layout) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&tmp)(e));
        }
        if let Err(e) = fs::rename(&tmp, &index_path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&index_path)(e));
        }
        // Until the directory is synced the rename itself may be lost in a crash; that
        // only loses the index, never tears it.
        sync_dir(dir).map_err(io_err(dir))?;
        Self::open(&index_path)
    }

    /// Maps an existing index and checks everything: magic, format version, algorithm,
    /// block size rules, size limit, block count, exact file length, checksum, key and
    /// that the file's name is the one [`paths_for`] gives its key and version. Bits
    /// past the block count are cleared. Any failure is [`StoreError::Damaged`] (or
    /// `Io` when the file cannot be read): the caller discards the index and its data.
    pub fn open(path: &Path) -> Result<CacheIndex, StoreError> {
        let damaged = |why: &'static str| StoreError::Damaged {
            path: path.to_path_buf(),
            why,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        let file_len = file.metadata().map_err(io_err(path))?.len();
        if file_len < HEADER_LEN as u64 {
            return Err(damaged("shorter than its header"));
        }
        let mut raw = [0u8; HEADER_LEN];
        file.read_exact(&mut raw).map_err(io_err(path))?;
        let h = parse_header(&raw).map_err(damaged)?;
        let layout = Layout::new(h.host_len, h.path_len, h.meta.algo, h.block_count)
            .ok_or_else(|| damaged("too large for this machine"))?;
        // Checked before mapping, so a bad length never maps past the end of the file
        // (which would fault on access) nor maps more than the header allows.
        if file_len != layout.total_len as u64 {
            return Err(damaged("length does not match its header"));
        }
        let map = MmapOptions::new()
            .len(layout.total_len)
            .map_raw(&file)
            .map_err(io_err(path))?;
        // SAFETY: the region before the bitmap lies inside the mapping (its length was
        // checked above) and is never written through any mapping after creation (only
        // bitmap words are, atomically), so a shared slice of it does not alias a
        // write. The slice does not outlive `map`.
        let fixed = unsafe { std::slice::from_raw_parts(map.as_ptr(), layout.bitmap_at) };
        let key_bytes = &fixed[HEADER_LEN..layout.digests_at];
        if checksum(fixed, &[&fixed[HEADER_LEN..]]) != fixed[CHECKSUM_AT..HEADER_LEN] {
            return Err(damaged("checksum mismatch"));
        }
        let (host, path_part) = key_bytes.split_at(h.host_len);
        let key = FileKey {
            host: String::from_utf8(host.to_vec()).map_err(|_| damaged("host not UTF-8"))?,
            port: h.port,
            path: String::from_utf8(path_part.to_vec()).map_err(|_| damaged("path not UTF-8"))?,
        };
        check_key(&key).map_err(damaged)?;
        let expected_name = format!("{}.{INDEX_EXT}", file_stem(&key, h.meta.version));
        if path.file_name() != Some(expected_name.as_ref()) {
            return Err(damaged("file name does not match its key and version"));
        }
        let ix = CacheIndex {
            map,
            key,
            meta: h.meta,
            block_count: h.block_count,
            layout,
            index_path: path.to_path_buf(),
            data_path: data_path_of(path),
        };
        ix.clear_bits_past_end();
        Ok(ix)
    }

    pub fn key(&self) -> &FileKey {
        &self.key
    }

    pub fn meta(&self) -> &FileMeta {
        &self.meta
    }

    pub fn block_count(&self) -> u64 {
        self.block_count
    }

    /// The file's blocks.
    pub fn geometry(&self) -> FileGeometry {
        FileGeometry::new(self.meta.size, self.meta.block_size)
    }

    /// Length of block `idx` (the last block may be short). Panics on `idx` out of
    /// range: a programmer error.
    pub fn block_len(&self, idx: u64) -> usize {
        assert!(idx < self.block_count, "block {idx} out of range");
        self.geometry().block_len(idx)
    }

    /// Where block `idx` starts in the data file (`idx * block_size`).
    pub fn block_offset(&self, idx: u64) -> u64 {
        self.geometry().block_offset(idx)
    }

    /// The digests region: immutable after creation (see the SAFETY note in `open`).
    fn digest_region(&self) -> &[u8] {
        // SAFETY: in bounds (checked at open); never written after creation; lives as
        // long as `&self`.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(self.layout.digests_at),
                self.layout.digests_len,
            )
        }
    }

    /// The digest of block `idx`. Panics on `idx` out of range: a programmer error.
    pub fn digest(&self, idx: u64) -> &[u8] {
        assert!(idx < self.block_count, "block {idx} out of range");
        let len = self.meta.algo.len();
        let at = idx as usize * len;
        &self.digest_region()[at..at + len]
    }

    /// The digests of blocks `start..start+count`, clamped to the file's blocks.
    pub fn digests(&self, start: u64, count: u64) -> &[u8] {
        let start = start.min(self.block_count);
        let end = start.saturating_add(count).min(self.block_count);
        let len = self.meta.algo.len();
        &self.digest_region()[start as usize * len..end as usize * len]
    }

    /// Bitmap word `w`, as an atomic on the shared mapping.
    fn word(&self, w: u64) -> &AtomicU64 {
        assert!(
            w < self.layout.bitmap_words as u64,
            "bitmap word {w} out of range"
        );
        // SAFETY: the word lies inside the mapping (asserted), is 8-byte aligned (the
        // mapping starts on a page and `bitmap_at` is a multiple of 8), is only ever
        // accessed atomically by every user of every mapping of this file in this
        // process (the store directory's lock keeps other processes out), and the
        // reference does not outlive the mapping, which `&self` keeps alive.
        unsafe {
            AtomicU64::from_ptr(
                self.map
                    .as_mut_ptr()
                    .add(self.layout.bitmap_at + w as usize * 8)
                    .cast::<u64>(),
            )
        }
    }

    /// The stored (little-endian) form of the mask of block `idx`'s bit.
    fn mask(idx: u64) -> u64 {
        (1u64 << (idx % BITS_PER_WORD)).to_le()
    }

    /// True when block `idx` is claimed to be in the data file. False for any `idx`
    /// past the end.
    pub fn has(&self, idx: u64) -> bool {
        idx < self.block_count
            && self.word(idx / BITS_PER_WORD).load(Ordering::Acquire) & Self::mask(idx) != 0
    }

    /// Claims block `idx`: call only after its data write completed. Returns true if the
    /// bit was newly set. Panics on `idx` out of range: a programmer error.
    pub fn set(&self, idx: u64) -> bool {
        assert!(idx < self.block_count, "block {idx} out of range");
        let m = Self::mask(idx);
        self.word(idx / BITS_PER_WORD)
            .fetch_or(m, Ordering::Release)
            & m
            == 0
    }

    /// Withdraws the claim on block `idx` (evicted, or failed verification). Returns
    /// true if it was set. Panics on `idx` out of range: a programmer error.
    pub fn clear(&self, idx: u64) -> bool {
        assert!(idx < self.block_count, "block {idx} out of range");
        let m = Self::mask(idx);
        self.word(idx / BITS_PER_WORD)
            .fetch_and(!m, Ordering::AcqRel)
            & m
            != 0
    }

    /// Withdraws every claim (the data file is gone).
    pub(crate) fn clear_all(&self) {
        for w in 0..self.layout.bitmap_words as u64 {
            self.word(w).store(0, Ordering::Release);
        }
    }

    /// Bits past the last block mean nothing; clearing them once at open keeps
    /// `held_count` a plain popcount.
    fn clear_bits_past_end(&self) {
        let used = self.block_count % BITS_PER_WORD;
        if used != 0 {
            let keep = ((1u64 << used) - 1).to_le();
            let word = self.word(self.block_count / BITS_PER_WORD);
            // Written only when needed: a write would dirty the page (and bump the
            // file's mtime, which picks the newest version at start-up).
            if word.load(Ordering::Acquire) & !keep != 0 {
                word.fetch_and(keep, Ordering::AcqRel);
            }
        }
    }

    /// Number of blocks claimed.
    pub fn held_count(&self) -> u64 {
        (0..self.layout.bitmap_words as u64)
            .map(|w| u64::from(self.word(w).load(Ordering::Acquire).count_ones()))
            .sum()
    }

    /// The first block in `from..end` whose bit equals `set`, or `end`.
    fn next_with(&self, from: u64, end: u64, set: bool) -> u64 {
        let mut i = from;
        while i < end {
            let w = u64::from_le(self.word(i / BITS_PER_WORD).load(Ordering::Acquire));
            let w = if set { w } else { !w };
            let hits = w & (u64::MAX << (i % BITS_PER_WORD));
            let word_start = i - i % BITS_PER_WORD;
            if hits != 0 {
                return (word_start + u64::from(hits.trailing_zeros())).min(end);
            }
            i = word_start + BITS_PER_WORD;
        }
        end
    }

    /// Runs of held blocks within `first..first+count` (clamped to the file), as
    /// `(start, count)` pairs in order, at most `max_ranges` (the first ones).
    pub fn held_ranges(&self, first: u64, count: u64, max_ranges: usize) -> Vec<(u64, u64)> {
        let end = first.saturating_add(count).min(self.block_count);
        let mut out = Vec::new();
        let mut i = first;
        while i < end && out.len() < max_ranges {
            let start = self.next_with(i, end, true);
            if start == end {
                break;
            }
            let stop = self.next_with(start, end, false);
            out.push((start, stop - start));
            i = stop;
        }
        out
    }

    pub fn index_path(&self) -> &Path {
        &self.index_path
    }

    pub fn data_path(&self) -> &Path {
        &self.data_path
    }

    /// Asks the kernel to start writing dirty bitmap pages back (asynchronous msync).
    /// Durability of bits is best effort by design: a lost bit only costs a refetch.
    pub fn flush_bitmap(&self) -> io::Result<()> {
        if self.layout.bitmap_words == 0 {
            return Ok(());
        }
        self.map
            .flush_async_range(self.layout.bitmap_at, self.layout.bitmap_words * 8)
    }
}

/// Writes the whole index to `tmp` (which must not exist) and syncs it. The bitmap is
/// written as real zeros rather than left as a hole, so setting a bit later never needs
/// the filesystem to allocate a block (a full disk would then fault the writer).
fn write_complete(
    tmp: &Path,
    header: &[u8; HEADER_LEN],
    key: &FileKey,
    digests: &[u8],
    layout: &Layout,
) -> io::Result<()> {
    let file = OpenOptions::new().write(true).create_new(true).open(tmp)?;
    let mut w = BufWriter::with_capacity(CREATE_BUFFER_BYTES, file);
    w.write_all(header)?;
    w.write_all(key.host.as_bytes())?;
    w.write_all(key.path.as_bytes())?;
    w.write_all(digests)?;
    let zeros = [0u8; ZERO_CHUNK_BYTES];
    let mut left = layout.total_len - (layout.digests_at + layout.digests_len);
    while left > 0 {
        let n = left.min(ZERO_CHUNK_BYTES);
        w.write_all(&zeros[..n])?;
        left -= n;
    }
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}
