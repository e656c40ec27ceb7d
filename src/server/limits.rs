//! The deadlines and sizes every connection of a node lives under.

use std::time::Duration;

/// How long a new connection may take to send its first byte.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle keep-alive connections (HTTP) and SPP connections with nothing outstanding are
/// closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A single socket write that makes no progress for this long ends the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read from a socket per call.
/// Requests are small (an HTTP head, an SPP Get): a small read keeps the per-connection
/// buffer small and the zeroing of its free space cheap with thousands of viewers.
pub const READ_CHUNK_BYTES: usize = 8 * 1024;
