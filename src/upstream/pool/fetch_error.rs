//! [`duplicate`]: one fetch error copied for every request it fails.

use crate::upstream::connection::FetchError;

/// A copy of a fetch error for every request it fails (io errors keep their kind and
/// message).
pub fn duplicate(e: &FetchError) -> FetchError {
    let io = |s: &std::io::Error| std::io::Error::new(s.kind(), s.to_string());
    match e {
        FetchError::Connect { addr, source } => FetchError::Connect {
            addr: *addr,
            source: io(source),
        },
        FetchError::Timeout { addr, what, ms } => FetchError::Timeout {
            addr: *addr,
            what,
            ms: *ms,
        },
        FetchError::Remote {
            addr,
            code,
            message,
        } => FetchError::Remote {
            addr: *addr,
            code: *code,
            message: message.clone(),
        },
        FetchError::Protocol { addr, message } => FetchError::Protocol {
            addr: *addr,
            message: message.clone(),
        },
        FetchError::Closed { addr } => FetchError::Closed { addr: *addr },
        FetchError::Digest { addr, block, algo } => FetchError::Digest {
            addr: *addr,
            block: *block,
            algo,
        },
        FetchError::Io { addr, source } => FetchError::Io {
            addr: *addr,
            source: io(source),
        },
    }
}
