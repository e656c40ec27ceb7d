//! The index of one cached file version: the origin's info and block digests (immutable
//! once written) and a have-bitmap of the blocks in its data file, memory-mapped and
//! shared by every shard.
//!
//! Layout (little-endian; [`HEADER_LEN`] bytes of header, then the key, the digests and
//! the bitmap):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `P2PDCIX1` |
//! | 8 | 4 | format version (1) |
//! | 12 | 1 | digest algorithm id (see `digest::DigestAlgo::id`) |
//! | 13 | 1 | reserved, 0 |
//! | 14 | 2 | port of the file's URL |
//! | 16 | 4 | block size in bytes (16 KiB..16 MiB, a multiple of 4 KiB) |
//! | 20 | 2 | host length `h` in bytes (1..=255) |
//! | 22 | 2 | path length `p` in bytes (0..=4096) |
//! | 24 | 8 | file size in bytes (at most `protocol::limits::MAX_FILE_BYTES`) |
//! | 32 | 8 | origin mtime, seconds since the epoch (signed) |
//! | 40 | 8 | content version |
//! | 48 | 8 | block count `n` = ceil(size / block size) |
//! | 56 | 40 | reserved, 0 |
//! | 96 | 32 | SHA-256 of bytes 0..96 then 128..`b` (key, digests, padding) |
//! | 128 | h | host (UTF-8, lowercase) |
//! | 128+h | p | path (UTF-8, as in `FileKey::path`) |
//! | 128+h+p | n×len | the digests, `len` per the algorithm |
//! | | 0..7 | zero padding to a multiple of 8 |
//! | `b` | ceil(n/64)×8 | have-bitmap: u64 words, bit `i % 64` of word `i / 64` is block `i` |
//!
//! Everything before the bitmap is written once, when the index is created, and never
//! again, so the checksum covers all of it but itself. The bitmap changes at run time
//! and is not covered: a set bit is only a claim, which the caller re-verifies against
//! the digest. The file's length is exact: anything else is damage. The file's name must
//! be the one [`paths_for`] gives its key and version, so a renamed file is damage too.
//!
//! Limits: every length comes from the protocol's (`protocol::limits`), so the largest
//! index (16 TiB in 16 KiB blocks with SHA-512) is 64 GiB of digests and 128 MiB of
//! bitmap; the header is checked against them and the file's length before anything is
//! mapped.
//!
//! Concurrency: shards own different blocks but bits of one word may belong to
//! different shards, so the bitmap is touched only with atomic operations on the shared
//! (MAP_SHARED) mapping, through a pointer taken from [`MmapRaw`], never through a
//! `&[u8]` of the bitmap.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};
use sha2::{Digest as _, Sha256};

use super::identity::{FileKey, FileMeta};
use crate::disk::origin_index::{le_u32, le_u64};
use crate::pure::digest::DigestAlgo;
use crate::pure::geometry::FileGeometry;
use crate::pure::protocol::limits::{
    BLOCK_ALIGN_BYTES, MAX_BLOCK_BYTES, MAX_FILE_BYTES, MAX_HOST_BYTES, MAX_PATH_BYTES,
    MIN_BLOCK_BYTES,
};

pub const MAGIC: &[u8; 8] = b"P2PDCIX1";
pub const FORMAT_VERSION: u32 = 1;
/// Length of the fixed header, before the key.
pub const HEADER_LEN: usize = 128;
/// Where the checksum sits in the header; it covers the header bytes before it.
const CHECKSUM_AT: usize = 96;
const CHECKSUM_BYTES: usize = 32;
/// File name extension of index files.
pub const INDEX_EXT: &str = "idx";
/// File name extension of data files.
pub const DATA_EXT: &str = "data";
/// Marks a temporary index file name; [`StoreDir::open`](super::cache_dir::StoreDir::open) removes such leftovers.
pub const TMP_MARKER: &str = ".tmp-";
/// Hex characters of SHA-256(url) in a file name: 128 bits, so names never collide.
const NAME_HASH_HEX_CHARS: usize = 32;
/// Hex characters of the content version in a file name (a whole u64).
const NAME_VERSION_HEX_CHARS: usize = 16;
/// Bitmap words are u64 and must be naturally aligned for atomics.
const BITMAP_ALIGN_BYTES: u64 = 8;
const BITS_PER_WORD: u64 = 64;
/// Zeros written per call when creating the bitmap.
const ZERO_CHUNK_BYTES: usize = 64 * 1024;
/// Write buffer while creating an index (header, key and small digest lists).
const CREATE_BUFFER_BYTES: usize = 64 * 1024;

// A header field's offset and length is documented in the table above; keep in step.
const _: () = assert!(CHECKSUM_AT + CHECKSUM_BYTES == HEADER_LEN);
// Key lengths are stored in u16 fields.
const _: () = assert!(MAX_HOST_BYTES <= u16::MAX as usize);
const _: () = assert!(MAX_PATH_BYTES <= u16::MAX as usize);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("i/o error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The file is not an index this code wrote, or not any more: discard it and its
    /// data file.
    #[error("damaged cache index {path}: {why}")]
    Damaged { path: PathBuf, why: &'static str },
    /// `create` was handed something no index may describe (a programmer or upstream
    /// error: the origin's Info should have been refused by the protocol rules).
    #[error("cannot create a cache index: {0}")]
    Invalid(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `<dir>/<32 hex chars of SHA-256(url)>-<16 hex version>.idx` and the same with
/// `.data`: the index and the data file of one version of one file.
pub fn paths_for(dir: &Path, key: &FileKey, version: u64) -> (PathBuf, PathBuf) {
    let stem = file_stem(key, version);
    (
        dir.join(format!("{stem}.{INDEX_EXT}")),
        dir.join(format!("{stem}.{DATA_EXT}")),
    )
}

fn file_stem(key: &FileKey, version: u64) -> String {
    let d = Sha256::digest(key.url().as_bytes());
    let hash = hex::encode(&d[..NAME_HASH_HEX_CHARS / 2]);
    format!("{hash}-{version:0width$x}", width = NAME_VERSION_HEX_CHARS)
}

/// The data file that belongs to an index file.
pub fn data_path_of(index_path: &Path) -> PathBuf {
    index_path.with_extension(DATA_EXT)
}

/// Where each region of an index of a given shape lies. All offsets in bytes.
#[derive(Clone, Copy, Debug)]
struct Layout {
    digests_at: usize,
    digests_len: usize,
    bitmap_at: usize,
    bitmap_words: usize,
    total_len: usize,
}

impl Layout {
    /// `None` when the index would not fit this machine's address space (only possible
    /// on 32-bit targets: the inputs are bounded by the protocol limits).
    fn new(host_len: usize, path_len: usize, algo: DigestAlgo, block_count: u64) -> Option<Self> {
        let key_len = host_len.checked_add(path_len)?;
        let digests_at = HEADER_LEN.checked_add(key_len)?;
        let digests_len = usize::try_from(block_count.checked_mul(algo.len() as u64)?).ok()?;
        let digests_end = u64::try_from(digests_at.checked_add(digests_len)?).ok()?;
        let bitmap_at = usize::try_from(digests_end.next_multiple_of(BITMAP_ALIGN_BYTES)).ok()?;
        let bitmap_words = usize::try_from(block_count.div_ceil(BITS_PER_WORD)).ok()?;
        let total_len = bitmap_at.checked_add(bitmap_words.checked_mul(8)?)?;
        Some(Layout {
            digests_at,
            digests_len,
            bitmap_at,
            bitmap_words,
            total_len,
        })
    }
}

/// The protocol's rules for what an origin may announce; returns the block count.
fn check_meta(meta: &FileMeta) -> Result<u64, &'static str> {
    let bs = meta.block_size;
    if !(MIN_BLOCK_BYTES..=MAX_BLOCK_BYTES).contains(&bs) || !bs.is_multiple_of(BLOCK_ALIGN_BYTES) {
        return Err("block size out of range or not a multiple of 4 KiB");
    }
    if meta.size > MAX_FILE_BYTES {
        return Err("file size over the protocol's limit");
    }
    Ok(FileGeometry::new(meta.size, bs).block_count())
}

fn check_key(key: &FileKey) -> Result<(), &'static str> {
    if key.host.is_empty() || key.host.len() > MAX_HOST_BYTES {
        return Err("host empty or longer than 255 bytes");
    }
    if key.path.len() > MAX_PATH_BYTES {
        return Err("path longer than 4096 bytes");
    }
    if key.host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("host not lowercased (build keys with FileKey::new)");
    }
    Ok(())
}

/// The header without its checksum.
fn encode_header(key: &FileKey, meta: &FileMeta, block_count: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12] = meta.algo.id();
    h[14..16].copy_from_slice(&key.port.to_le_bytes());
    h[16..20].copy_from_slice(&meta.block_size.to_le_bytes());
    // Both lengths were checked against bounds that fit a u16.
    h[20..22].copy_from_slice(&(key.host.len() as u16).to_le_bytes());
    h[22..24].copy_from_slice(&(key.path.len() as u16).to_le_bytes());
    h[24..32].copy_from_slice(&meta.size.to_le_bytes());
    h[32..40].copy_from_slice(&meta.mtime_unix_secs.to_le_bytes());
    h[40..48].copy_from_slice(&meta.version.to_le_bytes());
    h[48..56].copy_from_slice(&block_count.to_le_bytes());
    h
}

/// The checksum of an index: over the header before the checksum field, then over
/// `rest`, which together must be the bytes from [`HEADER_LEN`] up to the bitmap.
fn checksum(header: &[u8], rest: &[&[u8]]) -> [u8; CHECKSUM_BYTES] {
    let mut s = Sha256::new();
    s.update(&header[..CHECKSUM_AT]);
    for part in rest {
        s.update(part);
    }
    s.finalize().into()
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// What the fixed header says, checked against every rule that needs no other bytes.
struct Header {
    meta: FileMeta,
    port: u16,
    host_len: usize,
    path_len: usize,
    block_count: u64,
}

fn parse_header(h: &[u8; HEADER_LEN]) -> Result<Header, &'static str> {
    if &h[0..8] != MAGIC {
        return Err("bad magic");
    }
    if le_u32(h, 8) != FORMAT_VERSION {
        return Err("unknown format version");
    }
    let algo = DigestAlgo::from_id(h[12]).map_err(|_| "unknown digest algorithm")?;
    if h[13] != 0 || h[56..CHECKSUM_AT].iter().any(|&b| b != 0) {
        return Err("reserved bytes not zero");
    }
    let meta = FileMeta {
        size: le_u64(h, 24),
        block_size: le_u32(h, 16),
        algo,
        version: le_u64(h, 40),
        mtime_unix_secs: le_u64(h, 32) as i64,
    };
    let block_count = check_meta(&meta)?;
    if le_u64(h, 48) != block_count {
        return Err("block count does not match size and block size");
    }
    let host_len = usize::from(le_u16(h, 20));
    let path_len = usize::from(le_u16(h, 22));
    if host_len == 0 || host_len > MAX_HOST_BYTES || path_len > MAX_PATH_BYTES {
        return Err("key length out of range");
    }
    Ok(Header {
        meta,
        port: le_u16(h, 14),
        host_len,
        path_len,
        block_count,
    })
}

/// A unique temporary name beside `index_path`, for the index being created.
fn tmp_path(index_path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = index_path.file_name().unwrap_or_default().to_os_string();
    name.push(format!("{TMP_MARKER}{}-{n}", std::process::id()));
    index_path.with_file_name(name)
}

/// Makes the directory entries (renames, creations, removals) in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;

    pub(crate) fn key() -> FileKey {
        FileKey::new("Cdn.Example.com", 1111, "/movies/a.mp4")
    }

    pub(crate) fn meta(size: u64, version: u64) -> FileMeta {
        FileMeta {
            size,
            block_size: 16384,
            algo: DigestAlgo::Sha256,
            version,
            mtime_unix_secs: -5,
        }
    }

    /// Digests of blocks of a deterministic content (block `i` filled with `i as u8`).
    pub(crate) fn digests_for(m: &FileMeta) -> Vec<u8> {
        let g = FileGeometry::new(m.size, m.block_size);
        let mut out = Vec::new();
        let mut buf = [0u8; crate::pure::digest::MAX_DIGEST_BYTES];
        for i in 0..g.block_count() {
            let block = vec![i as u8; g.block_len(i)];
            out.extend_from_slice(m.algo.digest_into(&block, &mut buf));
        }
        out
    }

    fn make(dir: &Path, size: u64) -> CacheIndex {
        let m = meta(size, 0xabc);
        CacheIndex::create(dir, &key(), &m, &digests_for(&m)).unwrap()
    }

    fn is_damaged(r: Result<CacheIndex, StoreError>) -> bool {
        matches!(r, Err(StoreError::Damaged { .. }))
    }

    #[test]
    fn create_then_open_round_trips_every_field() {
        let d = tempfile::tempdir().unwrap();
        let m = FileMeta {
            size: 100_000,
            block_size: 32768,
            algo: DigestAlgo::Sha384,
            version: u64::MAX - 3,
            mtime_unix_secs: 1_700_000_000,
        };
        let k = FileKey::new("::1", 8080, "/a/b c.mkv");
        let dg = digests_for(&m);
        let ix = CacheIndex::create(d.path(), &k, &m, &dg).unwrap();
        let (ip, dp) = paths_for(d.path(), &k, m.version);
        assert_eq!(
            (ix.index_path(), ix.data_path()),
            (ip.as_path(), dp.as_path())
        );
        assert!(ip
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("-fffffffffffffffc.idx"));
        drop(ix);
        let ix = CacheIndex::open(&ip).unwrap();
        assert_eq!(ix.key(), &k);
        assert_eq!(ix.meta(), &m);
        assert_eq!(ix.block_count(), 4);
        assert_eq!(ix.block_len(0), 32768);
        assert_eq!(ix.block_len(3), 100_000 - 3 * 32768);
        assert_eq!(ix.block_offset(3), 3 * 32768);
        assert_eq!(ix.digests(0, 99), &dg[..]);
        assert_eq!(ix.digest(2), &dg[2 * 48..3 * 48]);
        assert!(m.algo.verify(&[1u8; 32768], ix.digest(1)));
        assert_eq!(ix.digests(3, 5), &dg[3 * 48..]);
        assert!(ix.digests(9, 5).is_empty());
        assert_eq!(ix.held_count(), 0);
        // The file is exactly as long as the layout table says.
        let len = fs::metadata(&ip).unwrap().len() as usize;
        let host_path = 3 + "a/b c.mkv".len();
        assert_eq!(
            len,
            (HEADER_LEN + host_path + 4 * 48).next_multiple_of(8) + 8
        );
    }

    #[test]
    fn bits_survive_drop_and_reopen() {
        let d = tempfile::tempdir().unwrap();
        let ix = make(d.path(), 16384 * 130 + 1); // 131 blocks: three words
        assert!(ix.set(0) && ix.set(64) && ix.set(130) && ix.set(7));
        assert!(!ix.set(7), "second set is not new");
        assert!(ix.clear(7) && !ix.clear(7));
        assert!(ix.has(0) && ix.has(130) && !ix.has(7) && !ix.has(131) && !ix.has(u64::MAX));
        ix.flush_bitmap().unwrap();
        let p = ix.index_path().to_path_buf();
        drop(ix);
        let ix = CacheIndex::open(&p).unwrap();
        assert_eq!(ix.held_count(), 3);
        assert!(ix.has(0) && ix.has(64) && ix.has(130) && !ix.has(1));
        // A mapping of the same file elsewhere sees the same bits at once (MAP_SHARED).
        let other = CacheIndex::open(&p).unwrap();
        ix.set(5);
        assert!(other.has(5));
    }

    #[test]
    fn empty_file_has_no_blocks_and_no_bitmap() {
        let d = tempfile::tempdir().unwrap();
        let ix = make(d.path(), 0);
        assert_eq!((ix.block_count(), ix.held_count()), (0, 0));
        assert!(ix.digests(0, 10).is_empty());
        assert!(ix.held_ranges(0, 10, 10).is_empty());
        assert!(!ix.has(0));
        ix.flush_bitmap().unwrap();
        let p = ix.index_path().to_path_buf();
        drop(ix);
        assert_eq!(CacheIndex::open(&p).unwrap().block_count(), 0);
    }

    #[test]
    fn create_refuses_what_no_index_may_describe() {
        let d = tempfile::tempdir().unwrap();
        let m = meta(40_000, 1);
        let dg = digests_for(&m);
        let invalid = |r: Result<CacheIndex, StoreError>| matches!(r, Err(StoreError::Invalid(_)));
        assert!(invalid(CacheIndex::create(d.path(), &key(), &m, &dg[1..])));
        let bad_bs = FileMeta {
            block_size: 16384 + 512,
            ..m.clone()
        };
        assert!(invalid(CacheIndex::create(d.path(), &key(), &bad_bs, &dg)));
        let huge = FileMeta {
            size: MAX_FILE_BYTES + 1,
            ..m.clone()
        };
        assert!(invalid(CacheIndex::create(d.path(), &key(), &huge, &dg)));
        let long_host = FileKey::new(&"h".repeat(256), 1, "a");
        assert!(invalid(CacheIndex::create(d.path(), &long_host, &m, &dg)));
        let long_path = FileKey::new("h", 1, &"p".repeat(4097));
        assert!(invalid(CacheIndex::create(d.path(), &long_path, &m, &dg)));
        let upper = FileKey {
            host: "H".into(),
            port: 1,
            path: "a".into(),
        };
        assert!(invalid(CacheIndex::create(d.path(), &upper, &m, &dg)));
        // Nothing was left behind, not even a temporary file.
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn any_damage_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let ix = make(d.path(), 16384 * 3);
        ix.set(1);
        let p = ix.index_path().to_path_buf();
        let len = fs::metadata(&p).unwrap().len() as usize;
        drop(ix);
        let good = fs::read(&p).unwrap();
        let digests_at = HEADER_LEN + "cdn.example.com".len() + "movies/a.mp4".len();
        let bitmap_at = len - 8;
        // A flipped byte anywhere before the bitmap: magic, version, algo, sizes,
        // mtime, version, reserved, checksum, key, digests.
        for at in [
            0,
            9,
            12,
            13,
            15,
            17,
            21,
            25,
            33,
            41,
            49,
            60,
            100,
            HEADER_LEN,
            digests_at - 1,
            digests_at,
            bitmap_at - 1,
        ] {
            let mut raw = good.clone();
            raw[at] ^= 0x20;
            fs::write(&p, &raw).unwrap();
            assert!(is_damaged(CacheIndex::open(&p)), "flip at {at} accepted");
        }
        // Truncated by one byte, one byte too long, shorter than a header, empty.
        for raw in [
            &good[..len - 1],
            &[good.as_slice(), &[0]].concat()[..],
            &good[..50],
            &[][..],
        ] {
            fs::write(&p, raw).unwrap();
            assert!(is_damaged(CacheIndex::open(&p)));
        }
        // The bitmap is not covered: a flipped bit there is only a claim.
        let mut raw = good.clone();
        raw[bitmap_at] ^= 1;
        fs::write(&p, &raw).unwrap();
        let ix = CacheIndex::open(&p).unwrap();
        assert!(ix.has(0) && ix.has(1));
        // A valid index under another name (another key or version) is not trusted.
        let moved = d
            .path()
            .join(format!("{}-{:016x}.idx", "0".repeat(32), 0xabc));
        fs::write(&moved, &good).unwrap();
        assert!(is_damaged(CacheIndex::open(&moved)));
        // A missing file is an i/o error, not damage.
        assert!(matches!(
            CacheIndex::open(&d.path().join("nope.idx")),
            Err(StoreError::Io { .. })
        ));
    }

    #[test]
    fn absurd_lengths_are_refused_before_mapping() {
        let d = tempfile::tempdir().unwrap();
        let ix = make(d.path(), 16384 * 3);
        let p = ix.index_path().to_path_buf();
        drop(ix);
        let good = fs::read(&p).unwrap();
        let patch = |at: usize, bytes: &[u8]| {
            let mut raw = good.clone();
            raw[at..at + bytes.len()].copy_from_slice(bytes);
            fs::write(&p, &raw).unwrap();
            assert!(is_damaged(CacheIndex::open(&p)), "patch at {at} accepted");
        };
        patch(24, &u64::MAX.to_le_bytes()); // size
        patch(48, &u64::MAX.to_le_bytes()); // block count
        patch(16, &u32::MAX.to_le_bytes()); // block size
        patch(16, &0u32.to_le_bytes());
        patch(20, &u16::MAX.to_le_bytes()); // host length
        patch(20, &0u16.to_le_bytes());
        patch(22, &u16::MAX.to_le_bytes()); // path length
    }

    #[test]
    fn bits_past_the_last_block_are_cleared_at_open() {
        let d = tempfile::tempdir().unwrap();
        let ix = make(d.path(), 16384 * 3); // 3 blocks, one word
        let p = ix.index_path().to_path_buf();
        drop(ix);
        let mut raw = fs::read(&p).unwrap();
        let at = raw.len() - 8;
        raw[at..].copy_from_slice(&(u64::MAX << 1).to_le_bytes());
        fs::write(&p, &raw).unwrap();
        let ix = CacheIndex::open(&p).unwrap();
        assert_eq!(ix.held_count(), 2);
        assert!(!ix.has(0) && ix.has(1) && ix.has(2) && !ix.has(3));
        assert_eq!(ix.held_ranges(0, 100, 10), vec![(1, 2)]);
        drop(ix);
        let raw = fs::read(&p).unwrap();
        assert_eq!(raw[at..], 0b110u64.to_le_bytes());
    }

    #[test]
    fn held_ranges_runs_and_cap() {
        let d = tempfile::tempdir().unwrap();
        let ix = make(d.path(), 16384 * 200);
        assert!(ix.held_ranges(0, 200, 8).is_empty());
        for i in (3..5).chain(60..130).chain([140]).chain(190..200) {
            ix.set(i);
        }
        let all = vec![(3, 2), (60, 70), (140, 1), (190, 10)];
        assert_eq!(ix.held_ranges(0, 200, 8), all);
        assert_eq!(ix.held_ranges(0, u64::MAX, usize::MAX), all);
        assert_eq!(ix.held_ranges(0, 200, 2), all[..2]);
        assert!(ix.held_ranges(0, 200, 0).is_empty());
        // Windows cut runs at both ends.
        assert_eq!(ix.held_ranges(4, 60, 8), vec![(4, 1), (60, 4)]);
        assert_eq!(ix.held_ranges(64, 64, 8), vec![(64, 64)]);
        assert_eq!(ix.held_ranges(129, 12, 8), vec![(129, 1), (140, 1)]);
        assert_eq!(ix.held_ranges(195, 100, 8), vec![(195, 5)]);
        assert!(ix.held_ranges(200, 10, 8).is_empty());
        assert!(ix.held_ranges(u64::MAX, u64::MAX, 8).is_empty());
        assert_eq!(ix.held_count(), 2 + 70 + 1 + 10);
    }

    #[test]
    fn concurrent_sets_from_many_threads_all_land() {
        const THREADS: u64 = 8;
        const BLOCKS: u64 = 4096;
        let d = tempfile::tempdir().unwrap();
        let ix = Arc::new(make(d.path(), 16384 * BLOCKS));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let ix = Arc::clone(&ix);
                // Interleaved: neighbouring bits of every word belong to different
                // threads, so a non-atomic update would lose some.
                std::thread::spawn(move || {
                    let mut new = 0;
                    for i in (t..BLOCKS).step_by(THREADS as usize) {
                        new += u64::from(ix.set(i));
                    }
                    new
                })
            })
            .collect();
        let newly: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(newly, BLOCKS);
        assert_eq!(ix.held_count(), BLOCKS);
        assert_eq!(ix.held_ranges(0, BLOCKS, 8), vec![(0, BLOCKS)]);
        // And concurrent clears of every other block leave exactly the rest.
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let ix = Arc::clone(&ix);
                std::thread::spawn(move || {
                    for i in (t * 2..BLOCKS).step_by(THREADS as usize * 2) {
                        assert!(ix.clear(i));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(ix.held_count(), BLOCKS / 2);
        assert!((0..BLOCKS).all(|i| ix.has(i) == (i % 2 == 1)));
    }

    #[test]
    fn a_create_replaces_an_index_of_the_same_version_whole() {
        let d = tempfile::tempdir().unwrap();
        let a = make(d.path(), 16384 * 3);
        a.set(2);
        let b = make(d.path(), 16384 * 3);
        assert_eq!(a.index_path(), b.index_path());
        assert_eq!(b.held_count(), 0, "a new index starts with every bit clear");
        // Only the final file remains: no temporary file is left on success.
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }
}
