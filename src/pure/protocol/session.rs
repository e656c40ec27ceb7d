//! The rules of one SPP connection on the serving side, without I/O (sans-I/O, as
//! quinn-proto does): decoded frames go in, and what to send or to do comes out as an
//! [`Event`]. The server's connection task (`server::spp`) drives it with sockets; the
//! fuzzer (`fuzzing::spp_session`) drives it with generated frames.
//!
//! It decides: the handshake (a Hello of a version we speak comes first), which
//! requests are accepted (known handle, same version, blocks inside the file, a fresh
//! request id, at most [`limits::MAX_OUTSTANDING_REQUESTS`] of every kind
//! outstanding, else `Busy`), which host and path an Info may name, which Have and
//! PeerReport frames count (a handle opened here, the same version; a report only
//! about a peer handed to this connection, at most [`MAX_REPORTS_PER_CONNECTION`]),
//! which frames close the connection. Error frames carry an [`ErrorMessage`], cut to
//! fit on a character boundary whatever they quote.
//!
//! [`ErrorMessage`]: super::ErrorMessage

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use super::{
    limits, negotiate_version, BlockRange, ErrorCode, ErrorFrame, Frame, Hello, PeerProblem,
    PROTOCOL_VERSION,
};
use crate::pure::pathsafe::normalize_plain_path;

pub use super::limits::MAX_HANDLES_PER_CONNECTION;
/// Peers remembered per connection as handed out to it; past it, new ones are not
/// remembered (and cannot be reported on this connection).
pub const MAX_HANDED_OUT: usize = 1024;
/// PeerReports that may remove a peer on one connection; later ones are ignored, so a
/// client cannot empty the registry by itself.
pub const MAX_REPORTS_PER_CONNECTION: u32 = 64;

/// What the session needs to know of an opened file.
pub trait SessionFile: Clone {
    fn version(&self) -> u64;
    fn block_count(&self) -> u64;
    /// The same file version (an Info for an opened file reuses its handle).
    fn same(&self, other: &Self) -> bool;
}

/// What the node says of itself and which requests it takes.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Our Hello (its version is replaced by the negotiated one).
    pub hello: Hello,
    /// `-A`: the hosts an Info may name (empty: any).
    pub allowed_hosts: Vec<String>,
    /// p2p mode (`-i`): Have, Holdings and PeerReport frames are acted on.
    pub p2p: bool,
}

/// What the driver is to do after a frame.
#[derive(Debug)]
pub enum Event<F> {
    /// Nothing to send or do.
    Nothing,
    /// Send this frame (in order with the other answers).
    Send(Frame),
    /// Send this frame, then close the connection; later frames are not looked at.
    SendAndClose(Frame),
    /// Find the file `host:port/path` (`path` normalized) and answer with its info
    /// from `digest_start` (at most `digest_count` digests); then call
    /// [`Session::info_resolved`]. Outstanding until [`Session::answer_done`].
    Resolve {
        req_id: u32,
        host: String,
        port: u16,
        path: String,
        digest_start: u64,
        digest_count: u32,
    },
    /// Answer where the blocks of `file` are. Outstanding until
    /// [`Session::answer_done`].
    Locate {
        req_id: u32,
        file: F,
        first_block: u64,
        block_count: u64,
    },
    /// Stream blocks `first..first + count` of `file`; [`Session::finish_get`] when
    /// its last block was sent or skipped.
    Stream {
        req_id: u32,
        file: F,
        first: u64,
        count: u32,
    },
    /// p2p: the requester, reachable at `listen`, holds `ranges` of `file`
    /// (`replace`: they replace what it reported of the file before).
    Have {
        file: F,
        listen: SocketAddr,
        ranges: Vec<BlockRange>,
        replace: bool,
    },
    /// p2p: the requester reports `peer`, which this node handed it, for `file`; call
    /// [`Session::report_counted`] if the registry removed the peer.
    Report {
        file: F,
        peer: SocketAddr,
        problem: PeerProblem,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    AwaitingHello,
    Open,
    Closed,
}

/// One connection's serving-side state.
pub struct Session<F> {
    config: SessionConfig,
    stage: Stage,
    peer_ip: IpAddr,
    /// Where the requester accepts SPP (its address, the port of its Hello): how it
    /// is handed to others as a peer in p2p mode.
    listen: Option<SocketAddr>,
    handles: Vec<F>,
    /// Gets queued or being streamed.
    gets: HashSet<u32>,
    cancelled: HashSet<u32>,
    /// Gets ended early by an error answer: their remaining blocks are skipped.
    failed: HashSet<u32>,
    /// Info and Locate requests being answered or whose answers wait to be sent.
    answers: usize,
    handed_out: HashSet<SocketAddr>,
    reports_counted: u32,
}

fn error(req_id: u32, code: ErrorCode, message: impl Into<String>) -> Frame {
    Frame::Error(ErrorFrame::new(req_id, code, message.into()))
}

impl<F: SessionFile> Session<F> {
    pub fn new(config: SessionConfig, peer_ip: IpAddr) -> Session<F> {
        Session {
            config,
            stage: Stage::AwaitingHello,
            peer_ip,
            listen: None,
            handles: Vec::new(),
            gets: HashSet::new(),
            cancelled: HashSet::new(),
            failed: HashSet::new(),
            answers: 0,
            handed_out: HashSet::new(),
            reports_counted: 0,
        }
    }

    /// Whether the Hello exchange is done and the connection open.
    pub fn is_open(&self) -> bool {
        self.stage == Stage::Open
    }

    pub fn is_closed(&self) -> bool {
        self.stage == Stage::Closed
    }

    /// The requester's SPP address, when it accepts connections.
    pub fn listen(&self) -> Option<SocketAddr> {
        self.listen
    }

    /// Requests of every kind outstanding.
    pub fn outstanding(&self) -> usize {
        self.gets.len() + self.answers
    }

    pub fn handles(&self) -> usize {
        self.handles.len()
    }

    pub fn handed_out_count(&self) -> usize {
        self.handed_out.len()
    }

    pub fn reports_counted(&self) -> u32 {
        self.reports_counted
    }

    /// The session's answer to a frame that could not be decoded: it closes.
    pub fn on_decode_error(&mut self, message: impl Into<String>) -> Event<F> {
        self.close(error(0, ErrorCode::BadRequest, message))
    }

    fn close(&mut self, f: Frame) -> Event<F> {
        self.stage = Stage::Closed;
        Event::SendAndClose(f)
    }

    /// The rules for one decoded frame.
    pub fn on_frame(&mut self, frame: Frame) -> Event<F> {
        match self.stage {
            Stage::Closed => Event::Nothing,
            Stage::AwaitingHello => self.on_hello(frame),
            Stage::Open => self.on_request(frame),
        }
    }

    fn on_hello(&mut self, frame: Frame) -> Event<F> {
        let Frame::Hello(h) = frame else {
            return self.close(error(0, ErrorCode::BadRequest, "expected Hello"));
        };
        // A newer peer is answered with the version we speak; it must fall back to it.
        let Some(version) = negotiate_version(h.version) else {
            let msg = format!(
                "version {} not supported (this node speaks {PROTOCOL_VERSION})",
                h.version
            );
            return self.close(error(0, ErrorCode::UnsupportedVersion, msg));
        };
        self.stage = Stage::Open;
        self.listen = (h.listen_port != 0).then(|| SocketAddr::new(self.peer_ip, h.listen_port));
        Event::Send(Frame::Hello(Hello {
            version,
            ..self.config.hello.clone()
        }))
    }

    /// Whether one more request may be outstanding; `Busy` for `req_id` if not.
    fn room(&self, req_id: u32) -> Result<(), Frame> {
        if self.outstanding() >= limits::MAX_OUTSTANDING_REQUESTS {
            return Err(error(
                req_id,
                ErrorCode::Busy,
                "too many outstanding requests",
            ));
        }
        Ok(())
    }

    fn host_allowed(&self, host: &str) -> bool {
        let allowed = &self.config.allowed_hosts;
        allowed.is_empty() || allowed.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    fn on_request(&mut self, frame: Frame) -> Event<F> {
        match frame {
            Frame::InfoRequest(r) => {
                if let Err(busy) = self.room(r.req_id) {
                    return Event::Send(busy);
                }
                if !self.host_allowed(&r.file.host) {
                    let msg = format!("host {} is not served here", r.file.host);
                    return Event::Send(error(r.req_id, ErrorCode::Forbidden, msg));
                }
                let path = match normalize_plain_path(&r.file.path) {
                    Ok(p) => p,
                    Err(e) => {
                        return Event::Send(error(r.req_id, ErrorCode::NotFound, e.to_string()))
                    }
                };
                self.answers += 1;
                Event::Resolve {
                    req_id: r.req_id,
                    host: r.file.host,
                    port: r.file.port,
                    path,
                    digest_start: r.digest_start,
                    digest_count: r.digest_count.min(limits::MAX_DIGESTS_PER_INFO),
                }
            }
            Frame::LocateRequest(r) => {
                if let Err(busy) = self.room(r.req_id) {
                    return Event::Send(busy);
                }
                let Some(file) = self.handles.get(r.handle as usize).cloned() else {
                    return Event::Send(error(
                        r.req_id,
                        ErrorCode::BadRequest,
                        "unknown file handle",
                    ));
                };
                self.answers += 1;
                Event::Locate {
                    req_id: r.req_id,
                    file,
                    first_block: r.first_block,
                    block_count: r.block_count,
                }
            }
            Frame::Get(g) => match self.accept_get(&g) {
                Ok(file) => Event::Stream {
                    req_id: g.req_id,
                    file,
                    first: g.first_block,
                    count: g.block_count,
                },
                Err(f) => Event::Send(f),
            },
            Frame::Cancel { req_id } => {
                if self.gets.contains(&req_id) {
                    self.cancelled.insert(req_id);
                }
                Event::Nothing
            }
            Frame::Have(h) | Frame::Holdings(h) if !self.config.p2p => {
                let _ = h;
                Event::Nothing
            }
            // p2p mode: the requester holds these blocks now; from a node that accepts
            // no connections there is nothing to record.
            Frame::Have(h) => self.have(h, false),
            Frame::Holdings(h) => self.have(h, true),
            Frame::PeerReport(r) => {
                if !self.config.p2p
                    || !self.handed_out.contains(&r.peer)
                    || self.reports_counted >= MAX_REPORTS_PER_CONNECTION
                {
                    return Event::Nothing;
                }
                match self.handles.get(r.handle as usize) {
                    Some(file) if file.version() == r.version => Event::Report {
                        file: file.clone(),
                        peer: r.peer,
                        problem: r.problem,
                    },
                    _ => Event::Nothing,
                }
            }
            Frame::Ping(v) => Event::Send(Frame::Pong(v)),
            Frame::Pong(_) | Frame::Error(_) => Event::Nothing,
            Frame::Hello(_) | Frame::Info(_) | Frame::Locate(_) | Frame::Data(_) => self.close(
                error(0, ErrorCode::BadRequest, "unexpected frame from a client"),
            ),
        }
    }

    fn have(&mut self, h: super::Have, replace: bool) -> Event<F> {
        let Some(listen) = self.listen else {
            return Event::Nothing;
        };
        match self.handles.get(h.handle as usize) {
            // A Have for another version is ignored, as the protocol says.
            Some(file) if file.version() == h.version => Event::Have {
                file: file.clone(),
                listen,
                ranges: h.ranges,
                replace,
            },
            _ => Event::Nothing,
        }
    }

    fn accept_get(&mut self, g: &super::Get) -> Result<F, Frame> {
        let file = self
            .handles
            .get(g.handle as usize)
            .cloned()
            .ok_or_else(|| error(g.req_id, ErrorCode::BadRequest, "unknown file handle"))?;
        if file.version() != g.version {
            return Err(error(
                g.req_id,
                ErrorCode::VersionChanged,
                "the file changed; ask for its info again",
            ));
        }
        let end = g.first_block.checked_add(u64::from(g.block_count));
        if end.is_none_or(|e| e > file.block_count()) {
            let msg = format!(
                "blocks past the end of the file ({} blocks)",
                file.block_count()
            );
            return Err(error(g.req_id, ErrorCode::BadRequest, msg));
        }
        self.room(g.req_id)?;
        if !self.gets.insert(g.req_id) {
            return Err(error(
                g.req_id,
                ErrorCode::BadRequest,
                "request id already outstanding",
            ));
        }
        Ok(file)
    }

    /// The file an Info request named was found (`Ok`) or refused (`Err`, the Error
    /// frame to send). Returns the handle to answer with, or the Error frame.
    pub fn info_resolved(&mut self, req_id: u32, found: Result<F, Frame>) -> Result<u32, Frame> {
        let file = found?;
        if let Some(i) = self.handles.iter().position(|h| h.same(&file)) {
            return Ok(i as u32);
        }
        if self.handles.len() >= MAX_HANDLES_PER_CONNECTION {
            return Err(error(
                req_id,
                ErrorCode::Busy,
                "too many files open on this connection",
            ));
        }
        self.handles.push(file);
        Ok((self.handles.len() - 1) as u32)
    }

    /// An Info or Locate answer was sent (or dropped): no longer outstanding.
    pub fn answer_done(&mut self) {
        self.answers = self.answers.saturating_sub(1);
    }

    /// Remembers the peers a Locate answer handed this connection (at most
    /// [`MAX_HANDED_OUT`]): only those may be reported here.
    pub fn handed<I: IntoIterator<Item = SocketAddr>>(&mut self, peers: I) {
        for p in peers {
            if self.handed_out.len() >= MAX_HANDED_OUT {
                break;
            }
            self.handed_out.insert(p);
        }
    }

    /// A report from this connection removed a peer.
    pub fn report_counted(&mut self) {
        self.reports_counted += 1;
    }

    /// Whether the rest of Get `req_id` is to be skipped (cancelled or failed).
    pub fn is_stopped(&self, req_id: u32) -> bool {
        self.cancelled.contains(&req_id) || self.failed.contains(&req_id)
    }

    /// Get `req_id` was ended by an error answer: its other blocks are skipped.
    pub fn get_failed(&mut self, req_id: u32) {
        if self.gets.contains(&req_id) {
            self.failed.insert(req_id);
        }
    }

    /// Get `req_id`'s last block was sent or skipped.
    pub fn finish_get(&mut self, req_id: u32) {
        self.gets.remove(&req_id);
        self.cancelled.remove(&req_id);
        self.failed.remove(&req_id);
    }

    /// Gets still outstanding (whose last block is not sent yet).
    pub fn gets_outstanding(&self) -> usize {
        self.gets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::protocol::{FileRef, Get, Have, InfoRequest, LocateRequest, PeerReport, Role};

    #[derive(Clone, Debug, PartialEq)]
    struct F(u64, u64);

    impl SessionFile for F {
        fn version(&self) -> u64 {
            self.0
        }
        fn block_count(&self) -> u64 {
            self.1
        }
        fn same(&self, other: &Self) -> bool {
            self == other
        }
    }

    fn open(p2p: bool, allowed: &[&str]) -> Session<F> {
        let mut s = Session::new(
            SessionConfig {
                hello: Hello {
                    version: PROTOCOL_VERSION,
                    role: Role::Origin,
                    listen_port: 1111,
                    capabilities: 0,
                },
                allowed_hosts: allowed.iter().map(|h| h.to_string()).collect(),
                p2p,
            },
            "192.0.2.7".parse().unwrap(),
        );
        let hello = Frame::Hello(Hello {
            version: 7,
            role: Role::Lhc,
            listen_port: 2222,
            capabilities: 0,
        });
        match s.on_frame(hello) {
            Event::Send(Frame::Hello(h)) => assert_eq!(h.version, PROTOCOL_VERSION),
            e => panic!("{e:?}"),
        }
        s
    }

    fn info_req(req_id: u32, host: &str, path: &str) -> Frame {
        Frame::InfoRequest(InfoRequest {
            req_id,
            file: FileRef {
                host: host.into(),
                port: 80,
                path: path.into(),
            },
            digest_start: 0,
            digest_count: 1 << 30,
        })
    }

    fn get(req_id: u32, first_block: u64, block_count: u32) -> Frame {
        Frame::Get(Get {
            req_id,
            handle: 0,
            version: 9,
            first_block,
            block_count,
        })
    }

    fn code(e: Event<F>) -> ErrorCode {
        match e {
            Event::Send(Frame::Error(e)) | Event::SendAndClose(Frame::Error(e)) => e.code,
            e => panic!("not an error: {e:?}"),
        }
    }

    #[test]
    fn the_first_frame_must_be_a_hello_of_a_version_we_speak() {
        let cfg = open(false, &[]).config;
        let mut s: Session<F> = Session::new(cfg.clone(), "192.0.2.1".parse().unwrap());
        assert_eq!(code(s.on_frame(Frame::Ping(1))), ErrorCode::BadRequest);
        assert!(s.is_closed());
        assert!(matches!(s.on_frame(Frame::Ping(1)), Event::Nothing));
        let mut s: Session<F> = Session::new(cfg, "192.0.2.1".parse().unwrap());
        let v0 = Frame::Hello(Hello {
            version: 0,
            role: Role::Client,
            listen_port: 0,
            capabilities: 0,
        });
        assert_eq!(code(s.on_frame(v0)), ErrorCode::UnsupportedVersion);
    }

    #[test]
    fn info_requests_are_checked_and_counted_until_answered() {
        let mut s = open(false, &["cdn.example.com"]);
        let long_host = "é".repeat(127);
        let e = s.on_frame(info_req(1, &long_host, "/a"));
        match e {
            Event::Send(Frame::Error(e)) => {
                assert_eq!(e.code, ErrorCode::Forbidden);
                assert!(e.message.len() <= limits::MAX_ERROR_MESSAGE_BYTES);
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(
            code(s.on_frame(info_req(2, "cdn.example.com", "/../x"))),
            ErrorCode::NotFound
        );
        match s.on_frame(info_req(3, "CDN.example.com", "/a/./b")) {
            Event::Resolve {
                path, digest_count, ..
            } => {
                assert_eq!(path, "a/b");
                assert_eq!(digest_count, limits::MAX_DIGESTS_PER_INFO);
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(s.outstanding(), 1);
        assert_eq!(s.info_resolved(3, Ok(F(9, 4))), Ok(0));
        assert_eq!(
            s.info_resolved(4, Ok(F(9, 4))),
            Ok(0),
            "the same file keeps its handle"
        );
        s.answer_done();
        assert_eq!(s.outstanding(), 0);
    }

    #[test]
    fn every_kind_of_request_counts_against_the_limit() {
        let mut s = open(false, &[]);
        s.info_resolved(0, Ok(F(9, 4096))).unwrap();
        for i in 0..limits::MAX_OUTSTANDING_REQUESTS as u32 {
            let e = match i % 3 {
                0 => s.on_frame(info_req(i, "h", "/a")),
                1 => s.on_frame(Frame::LocateRequest(LocateRequest {
                    req_id: i,
                    handle: 0,
                    first_block: 0,
                    block_count: 1,
                })),
                _ => s.on_frame(get(i, u64::from(i), 1)),
            };
            assert!(!matches!(e, Event::Send(_)), "{i}: {e:?}");
        }
        assert_eq!(code(s.on_frame(info_req(999, "h", "/a"))), ErrorCode::Busy);
        assert_eq!(code(s.on_frame(get(1000, 0, 1))), ErrorCode::Busy);
        s.answer_done();
        assert!(matches!(s.on_frame(get(1001, 0, 1)), Event::Stream { .. }));
    }

    #[test]
    fn gets_are_checked_against_the_file() {
        let mut s = open(false, &[]);
        assert_eq!(code(s.on_frame(get(1, 0, 1))), ErrorCode::BadRequest);
        s.info_resolved(0, Ok(F(9, 4))).unwrap();
        assert_eq!(code(s.on_frame(get(1, 3, 2))), ErrorCode::BadRequest);
        assert_eq!(code(s.on_frame(get(1, u64::MAX, 1))), ErrorCode::BadRequest);
        let mut other_version = get(1, 0, 1);
        if let Frame::Get(g) = &mut other_version {
            g.version = 8;
        }
        assert_eq!(code(s.on_frame(other_version)), ErrorCode::VersionChanged);
        assert!(matches!(s.on_frame(get(1, 0, 4)), Event::Stream { .. }));
        assert_eq!(
            code(s.on_frame(get(1, 0, 1))),
            ErrorCode::BadRequest,
            "duplicate id"
        );
        assert!(matches!(
            s.on_frame(Frame::Cancel { req_id: 1 }),
            Event::Nothing
        ));
        assert!(s.is_stopped(1));
        s.finish_get(1);
        assert!(!s.is_stopped(1) && s.gets_outstanding() == 0);
    }

    #[test]
    fn haves_and_reports_count_only_in_p2p_mode_and_only_as_the_rules_say() {
        let have = |handle, version| {
            Frame::Have(Have {
                handle,
                version,
                ranges: vec![BlockRange { start: 0, count: 1 }],
            })
        };
        let mut off = open(false, &[]);
        off.info_resolved(0, Ok(F(9, 4))).unwrap();
        assert!(matches!(off.on_frame(have(0, 9)), Event::Nothing));
        let mut s = open(true, &[]);
        assert!(
            matches!(s.on_frame(have(0, 9)), Event::Nothing),
            "no such handle"
        );
        s.info_resolved(0, Ok(F(9, 4))).unwrap();
        assert!(
            matches!(s.on_frame(have(0, 8)), Event::Nothing),
            "other version"
        );
        match s.on_frame(have(0, 9)) {
            Event::Have { listen, .. } => assert_eq!(listen, "192.0.2.7:2222".parse().unwrap()),
            e => panic!("{e:?}"),
        }
        let peer: SocketAddr = "198.51.100.1:1111".parse().unwrap();
        let report = Frame::PeerReport(PeerReport {
            handle: 0,
            version: 9,
            problem: PeerProblem::BadData,
            peer,
        });
        assert!(
            matches!(s.on_frame(report.clone()), Event::Nothing),
            "never handed"
        );
        s.handed([peer]);
        assert!(matches!(s.on_frame(report.clone()), Event::Report { .. }));
        for _ in 0..MAX_REPORTS_PER_CONNECTION {
            s.report_counted();
        }
        assert!(matches!(s.on_frame(report), Event::Nothing), "over the cap");
    }

    #[test]
    fn answers_from_a_client_close_the_connection() {
        let mut s = open(false, &[]);
        assert!(matches!(s.on_frame(Frame::Pong(1)), Event::Nothing));
        let answer = Frame::Locate(crate::pure::protocol::Locate {
            req_id: 1,
            locations: vec![],
        });
        assert!(matches!(s.on_frame(answer), Event::SendAndClose(_)));
        assert!(s.is_closed());
    }
}
