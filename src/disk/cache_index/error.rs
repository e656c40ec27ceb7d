//! [`StoreError`]: why a cache index could not be created or opened.

use std::io;
use std::path::{Path, PathBuf};

/// Why a cache index could not be created or opened.
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

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}
