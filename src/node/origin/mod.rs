//! The origin role: the publisher that indexes the published directory, and reading
//! published blocks from disk.

pub mod publisher;
pub mod reads;
