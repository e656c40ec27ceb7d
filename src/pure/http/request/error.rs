//! [`HttpError`]: why a request head was refused, and the status it is answered with.

/// Why a request head was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    /// Answered with 431.
    #[error("request head too large")]
    HeadTooLarge,
    /// Answered with 400.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// Answered with 505.
    #[error("unsupported HTTP version")]
    Version,
}

impl HttpError {
    /// The status code the server answers this error with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge => 431,
            HttpError::Malformed(_) => 400,
            HttpError::Version => 505,
        }
    }
}

pub(super) fn malformed(why: &str) -> HttpError {
    HttpError::Malformed(why.to_string())
}
