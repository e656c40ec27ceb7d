//! The names of a cached version's files ([`paths_for`]: index and data file, and the
//! temporary name an index is created under) and making directory entries durable.

use std::fs::File;
use std::io::{self};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use crate::disk::identity::FileKey;

/// File name extension of index files.
pub const INDEX_EXT: &str = "idx";
/// File name extension of data files.
pub const DATA_EXT: &str = "data";
/// Marks a temporary index file name; [`StoreDir::open`](crate::disk::cache_dir::StoreDir::open) removes such leftovers.
pub const TMP_MARKER: &str = ".tmp-";
/// Hex characters of SHA-256(url) in a file name: 128 bits, so names never collide.
const NAME_HASH_HEX_CHARS: usize = 32;
/// Hex characters of the content version in a file name (a whole u64).
const NAME_VERSION_HEX_CHARS: usize = 16;

/// `<dir>/<32 hex chars of SHA-256(url)>-<16 hex version>.idx` and the same with
/// `.data`: the index and the data file of one version of one file.
pub fn paths_for(dir: &Path, key: &FileKey, version: u64) -> (PathBuf, PathBuf) {
    let stem = file_stem(key, version);
    (
        dir.join(format!("{stem}.{INDEX_EXT}")),
        dir.join(format!("{stem}.{DATA_EXT}")),
    )
}

pub(super) fn file_stem(key: &FileKey, version: u64) -> String {
    let d = Sha256::digest(key.url().as_bytes());
    let hash = hex::encode(&d[..NAME_HASH_HEX_CHARS / 2]);
    format!("{hash}-{version:0width$x}", width = NAME_VERSION_HEX_CHARS)
}

/// The data file that belongs to an index file.
pub fn data_path_of(index_path: &Path) -> PathBuf {
    index_path.with_extension(DATA_EXT)
}

/// A unique temporary name beside `index_path`, for the index being created.
pub(super) fn tmp_path(index_path: &Path) -> PathBuf {
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
