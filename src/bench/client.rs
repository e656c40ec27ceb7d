//! The bench's two ways of fetching a title: an SPP session (pipelined Gets, every block
//! verified against the origin's digests unless switched off) and an HTTP/1.1 session
//! (keep-alive Range requests, one at a time, as a progressive-download player does).
//! Both hand back the bytes as they arrive, so the playout buffer sees them in time.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};

use super::config::Title;
use crate::pure::protocol::{limits, ErrorCode, FileRef, Frame, Role};
use crate::runtime::{self, TcpStream};
use crate::upstream::connection::{Connection, FetchError, RemoteFile};

/// Most bytes of an HTTP response head.
const MAX_HTTP_HEAD_BYTES: usize = 16 * 1024;
/// Body bytes read per call.
const HTTP_READ_BYTES: usize = 256 * 1024;
/// Most headers in an HTTP response.
const MAX_HTTP_HEADERS: usize = 64;

/// Why a transfer failed, by kind (the report counts errors by [`BenchError::kind`]).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Fetch(#[from] FetchError),
    #[error("HTTP {status} from {addr}")]
    HttpStatus { addr: SocketAddr, status: u16 },
    #[error("{addr}: {message}")]
    Http { addr: SocketAddr, message: String },
}

impl BenchError {
    pub fn kind(&self) -> String {
        match self {
            BenchError::Fetch(f) => match f {
                FetchError::Connect { .. } => "connect".into(),
                FetchError::Timeout { .. } => "timeout".into(),
                FetchError::Remote {
                    code: ErrorCode::NotFound,
                    ..
                } => "not_found".into(),
                FetchError::Remote { code, .. } => {
                    format!("remote_{}", code.to_string().replace(' ', "_"))
                }
                FetchError::Protocol { .. } => "protocol".into(),
                FetchError::Closed { .. } => "closed".into(),
                FetchError::Digest { .. } => "digest".into(),
                FetchError::Io { .. } => "io".into(),
            },
            BenchError::HttpStatus { status, .. } => format!("http_{status}"),
            BenchError::Http { .. } => "http_protocol".into(),
        }
    }
}

/// Bytes that arrived.
pub struct Piece {
    pub bytes: u64,
    /// Set when this piece completed a request: seconds since that request was sent.
    pub latency_s: Option<f64>,
    /// Bytes of a request made before a seek: on the wire, but not for playback.
    pub stale: bool,
    /// This piece was a block whose digest was checked.
    pub verified: bool,
}

/// A title being fetched over one connection.
pub enum Session {
    Spp(SppSession),
    Http(HttpSession),
}

/// How a session asks for data; the same for every title of a run.
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    pub timeout: Duration,
    /// Check SPP blocks against their digests.
    pub verify: bool,
    /// SPP blocks per Get.
    pub blocks_per_get: u32,
    /// HTTP bytes per Range request; `None` for the whole file.
    pub chunk: Option<u64>,
}

impl Session {
    /// Connects and learns the title's size. For HTTP this sends the first request
    /// (from byte 0), since only a response tells the size; the second value is the
    /// offset just past what is already asked for.
    pub async fn open(title: &Title, o: OpenOptions) -> Result<(Session, u64), BenchError> {
        match title {
            Title::Spp { addr, file, .. } => {
                let conn = Connection::connect(*addr, Role::Client, 0, o.timeout).await?;
                let s = SppSession::start(conn, file, o).await?;
                Ok((Session::Spp(s), 0))
            }
            Title::Http {
                addr, host, target, ..
            } => {
                let s = HttpSession {
                    addr: *addr,
                    host: host.clone(),
                    target: target.clone(),
                    stream: None,
                    buf: BytesMut::with_capacity(HTTP_READ_BYTES),
                    size: None,
                    timeout: o.timeout,
                    chunk: o.chunk,
                    cur: None,
                    read_buf: vec![0u8; HTTP_READ_BYTES],
                };
                s.first_request().await
            }
        }
    }

    /// Opens `title`, reusing this session's connection when it is the same server and
    /// protocol and the connection is idle.
    pub async fn reopen(self, title: &Title, o: OpenOptions) -> Result<(Session, u64), BenchError> {
        match (self, title) {
            (Session::Spp(s), Title::Spp { addr, file, .. })
                if s.conn.addr == *addr && s.outstanding.is_empty() =>
            {
                let s = SppSession::start(s.conn, file, o).await?;
                Ok((Session::Spp(s), 0))
            }
            (
                Session::Http(mut s),
                Title::Http {
                    addr, host, target, ..
                },
            ) if s.addr == *addr && s.cur.is_none() => {
                s.host = host.clone();
                s.target = target.clone();
                s.size = None;
                s.first_request().await
            }
            _ => Session::open(title, o).await,
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            Session::Spp(s) => s.file.size,
            Session::Http(s) => s.size.unwrap_or(0),
        }
    }

    /// The unit requests are made in: a block (SPP) or a chunk (HTTP).
    pub fn unit_bytes(&self) -> u64 {
        match self {
            Session::Spp(s) => u64::from(s.file.block_size).max(1),
            Session::Http(s) => s.chunk.unwrap_or(s.size.unwrap_or(1)).max(1),
        }
    }

    /// How many more requests may be sent now (SPP: blocks in the window; HTTP: one
    /// request at a time).
    pub fn can_request(&self, window_blocks: u32) -> bool {
        match self {
            Session::Spp(s) => {
                s.outstanding_blocks() < u64::from(window_blocks)
                    && s.outstanding.len() < limits::MAX_OUTSTANDING_REQUESTS
            }
            Session::Http(s) => s.cur.is_none(),
        }
    }

    pub fn idle(&self) -> bool {
        match self {
            Session::Spp(s) => s.outstanding.is_empty(),
            Session::Http(s) => s.cur.is_none(),
        }
    }

    /// Asks for the data from byte `offset` (a unit boundary); returns the offset just
    /// past what was asked for.
    pub async fn request(&mut self, offset: u64) -> Result<u64, BenchError> {
        match self {
            Session::Spp(s) => s.request(offset).await,
            Session::Http(s) => s.request(offset).await,
        }
    }

    /// Sends requests from `next_off` while the window has room and the data asked for
    /// stays below `limit`; returns the offset just past what is now asked for.
    pub async fn fill(
        &mut self,
        mut next_off: u64,
        limit: u64,
        window_blocks: u32,
    ) -> Result<u64, BenchError> {
        while self.can_request(window_blocks) && next_off < limit {
            let to = self.request(next_off).await?;
            if to == next_off {
                break;
            }
            next_off = to;
        }
        Ok(next_off)
    }

    /// Marks everything outstanding as stale (a seek): it is still read off the wire
    /// but not played.
    pub fn discard_outstanding(&mut self) {
        match self {
            Session::Spp(s) => s.outstanding.iter_mut().for_each(|r| r.stale = true),
            Session::Http(s) => {
                if let Some(c) = &mut s.cur {
                    c.stale = true
                }
            }
        }
    }

    /// Waits for the next bytes of what is outstanding.
    pub async fn recv(&mut self) -> Result<Piece, BenchError> {
        match self {
            Session::Spp(s) => s.recv().await,
            Session::Http(s) => s.recv().await,
        }
    }

    pub fn source(&self) -> SocketAddr {
        match self {
            Session::Spp(s) => s.conn.addr,
            Session::Http(s) => s.addr,
        }
    }
}

struct SppRequest {
    req_id: u32,
    next_block: u64,
    end_block: u64,
    sent: Instant,
    stale: bool,
}

pub struct SppSession {
    conn: Connection,
    file: RemoteFile,
    verify: bool,
    blocks_per_get: u32,
    outstanding: VecDeque<SppRequest>,
}

impl SppSession {
    async fn start(
        mut conn: Connection,
        file: &FileRef,
        o: OpenOptions,
    ) -> Result<SppSession, BenchError> {
        let file = conn.file_info(file).await?;
        Ok(SppSession {
            conn,
            file,
            verify: o.verify,
            blocks_per_get: o.blocks_per_get.clamp(1, limits::MAX_BLOCKS_PER_GET),
            outstanding: VecDeque::new(),
        })
    }

    fn outstanding_blocks(&self) -> u64 {
        self.outstanding
            .iter()
            .map(|r| r.end_block - r.next_block)
            .sum()
    }

    async fn request(&mut self, offset: u64) -> Result<u64, BenchError> {
        let bs = u64::from(self.file.block_size);
        let first = offset / bs;
        let total = self.file.block_count();
        let count = (total.saturating_sub(first)).min(u64::from(self.blocks_per_get)) as u32;
        if count == 0 || self.outstanding.len() >= limits::MAX_OUTSTANDING_REQUESTS {
            return Ok(offset);
        }
        let req_id = self.conn.get(&self.file, first, count).await?;
        let end_block = first + u64::from(count);
        self.outstanding.push_back(SppRequest {
            req_id,
            next_block: first,
            end_block,
            sent: Instant::now(),
            stale: false,
        });
        Ok((end_block * bs).min(self.file.size))
    }

    async fn recv(&mut self) -> Result<Piece, BenchError> {
        loop {
            let addr = self.conn.addr;
            let frame = self.conn.recv("block data").await?;
            let d = match frame {
                Frame::Data(d) => d,
                Frame::Pong(_) | Frame::Have(_) => continue,
                Frame::Error(e) => {
                    return Err(FetchError::Remote {
                        addr,
                        code: e.code,
                        message: e.message.to_string(),
                    }
                    .into())
                }
                _ => {
                    return Err(FetchError::Protocol {
                        addr,
                        message: "unexpected frame while waiting for data".into(),
                    }
                    .into())
                }
            };
            let pos = self
                .outstanding
                .iter()
                .position(|r| r.req_id == d.req_id && r.next_block == d.block);
            let Some(pos) = pos else {
                return Err(FetchError::Protocol {
                    addr,
                    message: format!(
                        "block {} for request {} was not expected next",
                        d.block, d.req_id
                    ),
                }
                .into());
            };
            if d.payload.len() != self.file.block_len(d.block) {
                return Err(FetchError::Protocol {
                    addr,
                    message: format!("block {} has {} bytes", d.block, d.payload.len()),
                }
                .into());
            }
            if self.verify && !self.file.algo.verify(&d.payload, self.file.digest(d.block)) {
                return Err(FetchError::Digest {
                    addr,
                    block: d.block,
                    algo: self.file.algo.name(),
                }
                .into());
            }
            let r = &mut self.outstanding[pos];
            r.next_block += 1;
            let latency_s = r.sent.elapsed().as_secs_f64();
            let stale = r.stale;
            if r.next_block == r.end_block {
                self.outstanding.remove(pos);
            }
            if self.verify {
                // Hashing a large block is long CPU work; let other viewers run.
                runtime::yield_if_needed().await;
            }
            return Ok(Piece {
                bytes: d.payload.len() as u64,
                latency_s: Some(latency_s),
                stale,
                verified: self.verify,
            });
        }
    }
}

struct HttpRequest {
    sent: Instant,
    /// Body bytes a Range request asked for (`None`: the whole file).
    asked: Option<u64>,
    /// Body bytes still to read; `None` until the head is read.
    remaining: Option<u64>,
    close_after: bool,
    stale: bool,
}

pub struct HttpSession {
    addr: SocketAddr,
    host: String,
    target: String,
    stream: Option<TcpStream>,
    /// Bytes read past the head, not yet handed out.
    buf: BytesMut,
    size: Option<u64>,
    timeout: Duration,
    chunk: Option<u64>,
    cur: Option<HttpRequest>,
    read_buf: Vec<u8>,
}

impl HttpSession {
    fn err(&self, message: impl Into<String>) -> BenchError {
        BenchError::Http {
            addr: self.addr,
            message: message.into(),
        }
    }

    fn timed_out(&self, what: &'static str) -> BenchError {
        FetchError::Timeout {
            addr: self.addr,
            what,
            ms: self.timeout.as_millis() as u64,
        }
        .into()
    }

    async fn request(&mut self, offset: u64) -> Result<u64, BenchError> {
        if self.stream.is_none() {
            let addr = self.addr;
            let s = runtime::connect(addr, self.timeout)
                .await
                .map_err(|source| match source.kind() {
                    std::io::ErrorKind::TimedOut => self.timed_out("the connection"),
                    _ => FetchError::Connect { addr, source }.into(),
                })?;
            self.stream = Some(s);
            self.buf.clear();
        }
        let (range, end, asked) = match (self.chunk, self.size) {
            (None, _) => (String::new(), self.size.unwrap_or(u64::MAX), None),
            (Some(c), size) => {
                let last = offset.saturating_add(c - 1);
                let last = size.map_or(last, |s| last.min(s.saturating_sub(1)));
                (
                    format!("Range: bytes={offset}-{last}\r\n"),
                    last + 1,
                    Some(last + 1 - offset),
                )
            }
        };
        let head = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: p2pd-bench\r\n{range}\r\n",
            self.target, self.host
        );
        let (addr, t) = (self.addr, self.timeout);
        let Some(stream) = self.stream.as_mut() else {
            return Err(self.err("not connected"));
        };
        match runtime::timeout(t, stream.write_all(head.as_bytes())).await {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                self.stream = None;
                return Err(FetchError::Io { addr, source }.into());
            }
            Err(_) => {
                self.stream = None;
                return Err(self.timed_out("a write"));
            }
        }
        self.cur = Some(HttpRequest {
            sent: Instant::now(),
            asked,
            remaining: None,
            close_after: false,
            stale: false,
        });
        Ok(end)
    }

    /// Asks for the start of the title and reads the answer's head, which tells the
    /// size.
    async fn first_request(mut self) -> Result<(Session, u64), BenchError> {
        let end = self.request(0).await?;
        self.read_head().await?;
        let size = self.size.unwrap_or(0);
        // Answered whole (200 to a Range request, or no Range asked): all of it comes.
        let whole = self.cur.as_ref().is_some_and(|c| c.remaining == Some(size));
        let end = if whole { size } else { end.min(size) };
        Ok((Session::Http(self), end))
    }

    /// Reads once into `buf`, with the deadline; 0 bytes means the server closed.
    async fn fill(&mut self, what: &'static str) -> Result<usize, BenchError> {
        let (addr, t) = (self.addr, self.timeout);
        let Some(stream) = self.stream.as_mut() else {
            return Err(self.err("not connected"));
        };
        let r = runtime::timeout(t, stream.read(&mut self.read_buf)).await;
        match r {
            Ok(Ok(0)) => {
                self.stream = None;
                Err(FetchError::Closed { addr }.into())
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&self.read_buf[..n]);
                Ok(n)
            }
            Ok(Err(source)) => {
                self.stream = None;
                Err(FetchError::Io { addr, source }.into())
            }
            Err(_) => {
                self.stream = None;
                Err(self.timed_out(what))
            }
        }
    }

    async fn read_head(&mut self) -> Result<(), BenchError> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HTTP_HEADERS];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let status = resp.code.unwrap_or(0);
                    let header = |name: &str| {
                        resp.headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .and_then(|h| std::str::from_utf8(h.value).ok())
                            .map(str::trim)
                    };
                    let len = header("content-length").and_then(|v| v.parse::<u64>().ok());
                    let total = header("content-range")
                        .and_then(|v| v.rsplit('/').next())
                        .and_then(|v| v.parse::<u64>().ok());
                    let close = header("connection")
                        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                        || resp.version == Some(0);
                    let chunked = header("transfer-encoding").is_some();
                    let _ = self.buf.split_to(head_len);
                    if status != 200 && status != 206 {
                        self.stream = None;
                        self.cur = None;
                        return Err(BenchError::HttpStatus {
                            addr: self.addr,
                            status,
                        });
                    }
                    let Some(len) = len.filter(|_| !chunked) else {
                        self.stream = None;
                        return Err(self.err(
                            "response has no Content-Length (chunked bodies are not supported)",
                        ));
                    };
                    // A server that ignores Range sends the whole file with 200: the
                    // bytes would not be the ones asked for, so that is an error (the
                    // first request of a title, from byte 0, may be answered whole).
                    let asked = self.cur.as_ref().and_then(|c| c.asked);
                    if status == 200 && asked.is_some_and(|a| a != len) && self.size.is_some() {
                        self.stream = None;
                        return Err(
                            self.err("the server ignored the Range header (200 instead of 206)")
                        );
                    }
                    let size = if status == 206 { total } else { Some(len) };
                    match (self.size, size) {
                        (None, Some(s)) => self.size = Some(s),
                        (Some(a), Some(b)) if a != b => {
                            self.stream = None;
                            return Err(self.err(format!("size changed from {a} to {b}")));
                        }
                        _ => {}
                    }
                    if self.size.is_none() {
                        self.stream = None;
                        return Err(self.err("206 without a total size in Content-Range"));
                    }
                    if let Some(c) = &mut self.cur {
                        c.remaining = Some(len);
                        c.close_after = close;
                    }
                    return Ok(());
                }
                Ok(httparse::Status::Partial) => {
                    if self.buf.len() > MAX_HTTP_HEAD_BYTES {
                        self.stream = None;
                        return Err(self.err("response head too long"));
                    }
                    self.fill("a response").await?;
                }
                Err(e) => {
                    self.stream = None;
                    return Err(self.err(format!("bad response head: {e}")));
                }
            }
        }
    }

    async fn recv(&mut self) -> Result<Piece, BenchError> {
        let Some(cur) = &self.cur else {
            return Err(self.err("nothing requested"));
        };
        if cur.remaining.is_none() {
            self.read_head().await?;
        }
        let remaining = self.cur.as_ref().and_then(|c| c.remaining).unwrap_or(0);
        let take = (self.buf.len() as u64).min(remaining);
        if take > 0 || remaining == 0 {
            let _ = self.buf.split_to(take as usize);
            return Ok(self.body_piece(take));
        }
        // Body bytes are counted straight from the read buffer, never more than the
        // body holds, so the next response's head stays on the socket.
        let n = self.read_body(remaining).await?;
        Ok(self.body_piece(n as u64))
    }

    /// Reads up to `max` body bytes into the scratch buffer (not kept).
    async fn read_body(&mut self, max: u64) -> Result<usize, BenchError> {
        let (addr, t) = (self.addr, self.timeout);
        let want = (max as usize).min(self.read_buf.len());
        let Some(stream) = self.stream.as_mut() else {
            return Err(self.err("not connected"));
        };
        match runtime::timeout(t, stream.read(&mut self.read_buf[..want])).await {
            Ok(Ok(0)) => {
                self.stream = None;
                Err(FetchError::Closed { addr }.into())
            }
            Ok(Ok(n)) => Ok(n),
            Ok(Err(source)) => {
                self.stream = None;
                Err(FetchError::Io { addr, source }.into())
            }
            Err(_) => {
                self.stream = None;
                Err(self.timed_out("response body"))
            }
        }
    }

    /// Accounts `n` body bytes of the current request, finishing it when none remain.
    fn body_piece(&mut self, n: u64) -> Piece {
        let Some(cur) = &mut self.cur else {
            return Piece {
                bytes: n,
                latency_s: None,
                stale: false,
                verified: false,
            };
        };
        let left = cur.remaining.unwrap_or(0).saturating_sub(n);
        cur.remaining = Some(left);
        let (sent, stale, close) = (cur.sent, cur.stale, cur.close_after);
        let latency_s = if left == 0 {
            self.cur = None;
            if close {
                self.stream = None;
            }
            Some(sent.elapsed().as_secs_f64())
        } else {
            None
        };
        Piece {
            bytes: n,
            latency_s,
            stale,
            verified: false,
        }
    }
}
