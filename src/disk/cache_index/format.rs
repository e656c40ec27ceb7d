//! The on-disk format of an index (see the table in `disk::cache_index`): its constants,
//! the [`Layout`] of its regions, the header's encoding, parsing and checksum, and the
//! protocol's rules on what an index may describe.

use sha2::{Digest as _, Sha256};

use crate::disk::identity::{FileKey, FileMeta};
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
pub(super) const CHECKSUM_AT: usize = 96;
const CHECKSUM_BYTES: usize = 32;

/// Bitmap words are u64 and must be naturally aligned for atomics.
pub(super) const BITMAP_ALIGN_BYTES: u64 = 8;
pub(super) const BITS_PER_WORD: u64 = 64;
/// Zeros written per call when creating the bitmap.
pub(super) const ZERO_CHUNK_BYTES: usize = 64 * 1024;
/// Write buffer while creating an index (header, key and small digest lists).
pub(super) const CREATE_BUFFER_BYTES: usize = 64 * 1024;

// A header field's offset and length is documented in the table above; keep in step.
const _: () = assert!(CHECKSUM_AT + CHECKSUM_BYTES == HEADER_LEN);
// Key lengths are stored in u16 fields.
const _: () = assert!(MAX_HOST_BYTES <= u16::MAX as usize);
const _: () = assert!(MAX_PATH_BYTES <= u16::MAX as usize);

/// Where each region of an index of a given shape lies. All offsets in bytes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    pub(super) digests_at: usize,
    pub(super) digests_len: usize,
    pub(super) bitmap_at: usize,
    pub(super) bitmap_words: usize,
    pub(super) total_len: usize,
}

impl Layout {
    /// `None` when the index would not fit this machine's address space (only possible
    /// on 32-bit targets: the inputs are bounded by the protocol limits).
    pub(super) fn new(
        host_len: usize,
        path_len: usize,
        algo: DigestAlgo,
        block_count: u64,
    ) -> Option<Self> {
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
pub(super) fn check_meta(meta: &FileMeta) -> Result<u64, &'static str> {
    let bs = meta.block_size;
    if !(MIN_BLOCK_BYTES..=MAX_BLOCK_BYTES).contains(&bs) || !bs.is_multiple_of(BLOCK_ALIGN_BYTES) {
        return Err("block size out of range or not a multiple of 4 KiB");
    }
    if meta.size > MAX_FILE_BYTES {
        return Err("file size over the protocol's limit");
    }
    Ok(FileGeometry::new(meta.size, bs).block_count())
}

pub(super) fn check_key(key: &FileKey) -> Result<(), &'static str> {
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
pub(super) fn encode_header(key: &FileKey, meta: &FileMeta, block_count: u64) -> [u8; HEADER_LEN] {
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
pub(super) fn checksum(header: &[u8], rest: &[&[u8]]) -> [u8; CHECKSUM_BYTES] {
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
pub(super) struct Header {
    pub(super) meta: FileMeta,
    pub(super) port: u16,
    pub(super) host_len: usize,
    pub(super) path_len: usize,
    pub(super) block_count: u64,
}

pub(super) fn parse_header(h: &[u8; HEADER_LEN]) -> Result<Header, &'static str> {
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
