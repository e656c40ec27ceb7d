//! One SPP connection to an upstream node: handshake, file info (all digest ranges),
//! and pipelined block requests. Every wait has a deadline; every block is verified by
//! the caller against the digests from [`RemoteFile`] before use.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::AsyncWriteExt;

use crate::pure::digest::DigestAlgo;
use crate::pure::geometry::FileGeometry;
use crate::pure::protocol::{
    encode, limits, Decoder, ErrorCode, FileRef, Frame, Get, Hello, InfoRequest, Role,
    PROTOCOL_VERSION,
};
use crate::runtime::{self, TcpStream};

/// Bytes read from the socket per call; a Data frame needs up to a block plus header.
const READ_CHUNK_BYTES: usize = 256 * 1024;

pub use crate::error::{FetchError, CONNECT_WHAT};

/// A file as the upstream described it.
#[derive(Debug, Clone)]
pub struct RemoteFile {
    pub handle: u32,
    pub size: u64,
    pub block_size: u32,
    pub algo: DigestAlgo,
    pub version: u64,
    pub mtime_unix_secs: i64,
    /// Every block's digest, concatenated.
    pub digests: Vec<u8>,
}

impl RemoteFile {
    pub fn geometry(&self) -> FileGeometry {
        FileGeometry::new(self.size, self.block_size)
    }
    pub fn block_count(&self) -> u64 {
        self.geometry().block_count()
    }
    pub fn digest(&self, idx: u64) -> &[u8] {
        let l = self.algo.len();
        &self.digests[idx as usize * l..(idx as usize + 1) * l]
    }
    pub fn block_len(&self, idx: u64) -> usize {
        self.geometry().block_len(idx)
    }
}

/// The request for the digests of a file from block `digest_start` on, as many as
/// one answer may carry.
pub fn info_request(req_id: u32, file: &FileRef, digest_start: u64) -> Frame {
    Frame::InfoRequest(InfoRequest {
        req_id,
        file: file.clone(),
        digest_start,
        digest_count: limits::MAX_DIGESTS_PER_INFO,
    })
}

/// Assembles a file's info from the answers to successive [`info_request`]s: the
/// first answer names the file, each later one must describe the same version and
/// carry the digests from where the previous one stopped.
pub struct InfoPieces {
    addr: SocketAddr,
    max_digest_bytes: usize,
    file: Option<RemoteFile>,
    next: u64,
}

impl InfoPieces {
    /// `max_digest_bytes` bounds the digest list held in memory: a file announcing
    /// more is refused before its digests are asked for.
    pub fn new(addr: SocketAddr, max_digest_bytes: usize) -> InfoPieces {
        InfoPieces {
            addr,
            max_digest_bytes,
            file: None,
            next: 0,
        }
    }

    /// The block whose digest to ask for next; None when every digest is in.
    pub fn next_start(&self) -> Option<u64> {
        match &self.file {
            Some(f) if self.next >= f.block_count() => None,
            _ => Some(self.next),
        }
    }

    pub fn add(&mut self, info: crate::pure::protocol::Info) -> Result<(), FetchError> {
        let addr = self.addr;
        let protocol = |message: String| FetchError::Protocol { addr, message };
        let f = match &mut self.file {
            Some(f) => f,
            None => {
                let digest_bytes = info
                    .geometry()
                    .block_count()
                    .saturating_mul(info.algo.len() as u64);
                if digest_bytes > self.max_digest_bytes as u64 {
                    return Err(protocol(format!(
                        "the file's digest list ({digest_bytes} bytes) is over this node's limit of {} bytes",
                        self.max_digest_bytes
                    )));
                }
                self.file.insert(RemoteFile {
                    handle: info.handle,
                    size: info.size,
                    block_size: info.block_size,
                    algo: info.algo,
                    version: info.version,
                    mtime_unix_secs: info.mtime_unix_secs,
                    digests: Vec::with_capacity(digest_bytes as usize),
                })
            }
        };
        // Every answer must describe the same file: a digest list of one algorithm and
        // geometry, so that block i's digest is where `digest(i)` looks for it.
        if (info.algo, info.size, info.block_size) != (f.algo, f.size, f.block_size) {
            return Err(protocol(
                "info answers for one file disagree on its size, block size or digest".into(),
            ));
        }
        if info.version != f.version || info.digest_start != self.next {
            return Err(FetchError::Remote {
                addr,
                code: ErrorCode::VersionChanged,
                message: "the file changed while its digests were read".into(),
            });
        }
        let got = (info.digests.len() / f.algo.len()) as u64;
        if got == 0 && self.next < f.block_count() {
            return Err(protocol("info answer carried no digests".into()));
        }
        if self.next + got > f.block_count() {
            return Err(protocol(
                "info answer carried digests past the last block".into(),
            ));
        }
        f.digests.extend_from_slice(&info.digests);
        self.next += got;
        Ok(())
    }

    pub fn finish(self) -> Result<RemoteFile, FetchError> {
        let addr = self.addr;
        self.file.ok_or(FetchError::Protocol {
            addr,
            message: "no info".into(),
        })
    }
}

pub struct Connection {
    stream: TcpStream,
    pub addr: SocketAddr,
    buf: BytesMut,
    dec: Decoder,
    out: BytesMut,
    timeout: Duration,
    next_req: u32,
    pub remote_role: Role,
    /// The capability bits of the remote's Hello.
    pub remote_capabilities: u32,
}

impl Connection {
    /// Connects and exchanges Hellos.
    pub async fn connect(
        addr: SocketAddr,
        role: Role,
        listen_port: u16,
        timeout: Duration,
    ) -> Result<Connection, FetchError> {
        Self::connect_from(addr, None, role, listen_port, timeout).await
    }

    /// [`Connection::connect`] from a chosen source address (see
    /// [`runtime::connect_from`]).
    pub async fn connect_from(
        addr: SocketAddr,
        source: Option<std::net::IpAddr>,
        role: Role,
        listen_port: u16,
        timeout: Duration,
    ) -> Result<Connection, FetchError> {
        let stream = runtime::connect_from(addr, source, timeout)
            .await
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::TimedOut => FetchError::Timeout {
                    addr,
                    what: CONNECT_WHAT,
                    ms: timeout.as_millis() as u64,
                },
                _ => FetchError::Connect { addr, source },
            })?;
        let mut c = Connection {
            stream,
            addr,
            buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            dec: Decoder::new(),
            out: BytesMut::new(),
            timeout,
            next_req: 1,
            remote_role: Role::Origin,
            remote_capabilities: 0,
        };
        c.send(&Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            role,
            listen_port,
            capabilities: 0,
        }))
        .await?;
        match c.recv("the handshake").await? {
            Frame::Hello(h) if h.version == PROTOCOL_VERSION => {
                c.remote_role = h.role;
                c.remote_capabilities = h.capabilities;
                Ok(c)
            }
            Frame::Hello(h) => Err(c.protocol(format!("speaks version {}", h.version))),
            other => Err(c.unexpected(other)),
        }
    }

    /// The socket and what was read past the handshake, for a caller that runs its
    /// own reader and writer over the connection (the upstream pool).
    pub fn into_parts(self) -> (TcpStream, BytesMut, Decoder) {
        (self.stream, self.buf, self.dec)
    }

    fn protocol(&self, message: String) -> FetchError {
        FetchError::Protocol {
            addr: self.addr,
            message,
        }
    }

    fn unexpected(&self, f: Frame) -> FetchError {
        match f {
            Frame::Error(e) => FetchError::Remote {
                addr: self.addr,
                code: e.code,
                message: e.message.to_string(),
            },
            other => self.protocol(format!(
                "unexpected frame {:?}",
                std::mem::discriminant(&other)
            )),
        }
    }

    pub fn next_req_id(&mut self) -> u32 {
        let id = self.next_req;
        self.next_req = self.next_req.wrapping_add(1).max(1);
        id
    }

    pub async fn send(&mut self, f: &Frame) -> Result<(), FetchError> {
        self.out.clear();
        encode(f, &mut self.out)
            .map_err(|e| self.protocol(format!("cannot encode request: {e}")))?;
        let addr = self.addr;
        match runtime::timeout(self.timeout, self.stream.write_all(&self.out)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(FetchError::Io { addr, source }),
            Err(_) => Err(FetchError::Timeout {
                addr,
                what: "a write",
                ms: self.timeout.as_millis() as u64,
            }),
        }
    }

    /// The next frame, waiting at most the connection's timeout for each read.
    pub async fn recv(&mut self, what: &'static str) -> Result<Frame, FetchError> {
        loop {
            match self.dec.decode(&mut self.buf) {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => return Err(self.protocol(e.to_string())),
            }
            let want = self
                .dec
                .wanted(&self.buf)
                .clamp(READ_CHUNK_BYTES, limits::MAX_BLOCK_BYTES as usize + 64);
            let addr = self.addr;
            match runtime::timeout(
                self.timeout,
                runtime::read_some(&mut self.stream, &mut self.buf, want),
            )
            .await
            {
                Ok(Ok(0)) => return Err(FetchError::Closed { addr }),
                Ok(Ok(_)) => {}
                Ok(Err(source)) => return Err(FetchError::Io { addr, source }),
                Err(_) => {
                    return Err(FetchError::Timeout {
                        addr,
                        what,
                        ms: self.timeout.as_millis() as u64,
                    })
                }
            }
        }
    }

    /// File info with every block's digest (asked for in ranges for large files).
    pub async fn file_info(&mut self, file: &FileRef) -> Result<RemoteFile, FetchError> {
        let mut pieces = InfoPieces::new(self.addr, usize::MAX);
        while let Some(start) = pieces.next_start() {
            let req_id = self.next_req_id();
            self.send(&info_request(req_id, file, start)).await?;
            match self.recv("file info").await? {
                Frame::Info(i) if i.req_id == req_id => pieces.add(i)?,
                other => return Err(self.unexpected(other)),
            }
        }
        pieces.finish()
    }

    /// Asks for `count` blocks from `first`; the answer is Data frames with `req_id`.
    pub async fn get(
        &mut self,
        file: &RemoteFile,
        first: u64,
        count: u32,
    ) -> Result<u32, FetchError> {
        let req_id = self.next_req_id();
        self.send(&Frame::Get(Get {
            req_id,
            handle: file.handle,
            version: file.version,
            first_block: first,
            block_count: count,
        }))
        .await?;
        Ok(req_id)
    }
}
