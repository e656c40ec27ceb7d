//! The `spp_session` fuzz target: the serving side's SPP session rules
//! (`protocol::session`) driven by generated client frames and a simulated driver.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::BytesMut;

use super::input::Input;
use crate::pure::protocol::limits::MAX_RANGES;
use crate::pure::protocol::{encode, BlockRange, Frame, Locate, PeerProblem};

/// A file as the session sees it: (version, blocks).
#[derive(Clone, Debug, PartialEq)]
struct SessionFile(u64, u64);

impl crate::pure::protocol::session::SessionFile for SessionFile {
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

/// Characters of 1 to 4 bytes, to build hosts and paths whose quoted forms are cut at
/// every byte of a character.
const WIDE: [&str; 5] = ["a", "é", "€", "😀", "/"];

/// A string of `len` (up to `max`) characters picked by the input.
fn wide_text(inp: &mut Input<'_>, max: usize) -> String {
    let len = usize::from(inp.u16()) % (max + 1);
    let kind = inp.u8();
    let mut s = String::new();
    while s.len() < len {
        let c = if kind < 64 {
            WIDE[usize::from(kind) % WIDE.len()]
        } else {
            WIDE[usize::from(inp.u8()) % WIDE.len()]
        };
        if s.len() + c.len() > max {
            break;
        }
        s.push_str(c);
    }
    s
}

/// One client frame built from the input (structure-aware, so that deep states are
/// reached), if it is one the encoder accepts (so one a server can receive).
fn session_frame(inp: &mut Input<'_>, handles: u32) -> Option<Frame> {
    use crate::pure::protocol::limits::{MAX_HOST_BYTES, MAX_PATH_BYTES};
    use crate::pure::protocol::{
        FileRef, Get, Have, Hello, InfoRequest, LocateRequest, PeerReport, Role,
    };
    let handle = |inp: &mut Input<'_>| u32::from(inp.u8()) % (handles + 2);
    let f = match inp.u8() % 12 {
        0 => Frame::Hello(Hello {
            version: u16::from(inp.u8() % 3),
            role: Role::Client,
            listen_port: inp.u16(),
            capabilities: inp.u32(),
        }),
        1..=3 => Frame::InfoRequest(InfoRequest {
            req_id: u32::from(inp.u8()),
            file: FileRef {
                host: wide_text(inp, MAX_HOST_BYTES),
                port: inp.u16(),
                path: wide_text(inp, MAX_PATH_BYTES),
            },
            digest_start: u64::from(inp.u16()),
            digest_count: inp.u32(),
        }),
        4 => Frame::LocateRequest(LocateRequest {
            req_id: u32::from(inp.u8()),
            handle: handle(inp),
            first_block: u64::from(inp.u16()),
            block_count: u64::from(inp.u8()) + 1,
        }),
        5 | 6 => Frame::Get(Get {
            req_id: u32::from(inp.u8()),
            handle: handle(inp),
            version: u64::from(inp.u8() % 3),
            first_block: u64::from(inp.u16()),
            block_count: u32::from(inp.u8()) + 1,
        }),
        7 => Frame::Cancel {
            req_id: u32::from(inp.u8()),
        },
        8 => {
            let h = Have {
                handle: handle(inp),
                version: u64::from(inp.u8() % 3),
                ranges: (0..inp.u8() % 4)
                    .map(|_| BlockRange {
                        start: u64::from(inp.u16()),
                        count: u64::from(inp.u8()) + 1,
                    })
                    .collect(),
            };
            if inp.u8().is_multiple_of(2) {
                Frame::Have(h)
            } else {
                Frame::Holdings(h)
            }
        }
        9 => Frame::PeerReport(PeerReport {
            handle: handle(inp),
            version: u64::from(inp.u8() % 3),
            problem: if inp.u8().is_multiple_of(2) {
                PeerProblem::Unreachable
            } else {
                PeerProblem::BadData
            },
            peer: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, inp.u8() % 4)), 1111),
        }),
        10 => Frame::Ping(inp.u64()),
        _ => Frame::Locate(Locate {
            req_id: 1,
            locations: vec![],
        }),
    };
    // Only frames that can be on the wire (the decoder, fuzzed on its own by
    // `spp_decode`, gives back exactly what encodes).
    crate::pure::protocol::encoded_payload_len(&f).ok()?;
    Some(f)
}

/// The serving side's SPP rules (`protocol::session`) driven by generated frames, for
/// an origin, a cache whose requester may make it fetch, and one whose requester may
/// not, with and without `-A` and `-i`; hosts and paths of every length up to the
/// protocol's limits in characters of 1 to 4 bytes. A simulated driver resolves Info
/// requests (files named "a" and "b" exist; others are refused quoting the URL, as
/// `error::Refusal` does), finishes Gets and answers at input-chosen moments.
/// Every frame the session asks to send must encode (error messages cut on a
/// character boundary), nothing is answered before the Hello exchange, nothing after
/// a close, and the per-connection bounds (outstanding requests, handles, handed-out
/// peers, counted reports) hold after every step.
pub fn spp_session(data: &[u8]) {
    use crate::error::Refusal;
    use crate::pure::protocol::session::{
        Event, Session, SessionConfig, MAX_HANDED_OUT, MAX_HANDLES_PER_CONNECTION,
        MAX_REPORTS_PER_CONNECTION,
    };
    use crate::pure::protocol::{ErrorFrame, Hello, Role, PROTOCOL_VERSION};
    let mut inp = Input::new(data);
    let mode = inp.u8();
    // 0: origin; 1: cache, requester may fetch; 2: cache, remote requester.
    let role = mode % 3;
    let config = SessionConfig {
        hello: Hello {
            version: PROTOCOL_VERSION,
            role: if role == 0 { Role::Origin } else { Role::Lhc },
            listen_port: 1111,
            capabilities: 0,
        },
        allowed_hosts: if mode & 4 != 0 {
            vec!["cdn.example.com".into()]
        } else {
            vec![]
        },
        p2p: mode & 8 != 0,
    };
    let mut s: Session<SessionFile> =
        Session::new(config, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9)));
    // Requests the simulated driver still has to finish: Gets (req_id) and answers.
    let mut gets: Vec<u32> = Vec::new();
    let mut answers = 0usize;
    let check_sendable = |f: &Frame| {
        let mut out = BytesMut::new();
        assert!(
            encode(f, &mut out).is_ok(),
            "the session asked to send {f:?}, which does not encode"
        );
    };
    let mut steps = 0;
    while !inp.is_empty() && steps < 4096 {
        steps += 1;
        let was_open = s.is_open();
        // Sometimes the driver catches up first: answers written, Gets finished.
        match inp.u8() % 8 {
            0 if answers > 0 => {
                answers -= 1;
                s.answer_done();
            }
            1 if !gets.is_empty() => {
                let id = gets.remove(0);
                if inp.u8().is_multiple_of(4) {
                    s.get_failed(id);
                    assert!(s.is_stopped(id));
                }
                s.finish_get(id);
            }
            2 => s.handed(
                (0..inp.u8() % 4)
                    .map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)), 1111)),
            ),
            _ => {}
        }
        let Some(frame) = session_frame(&mut inp, s.handles() as u32) else {
            continue;
        };
        let is_hello = matches!(frame, Frame::Hello(_));
        match s.on_frame(frame) {
            Event::Nothing => {}
            Event::Send(f) => {
                check_sendable(&f);
                if let Frame::Hello(h) = &f {
                    assert!(!was_open && is_hello && h.version >= 1);
                } else {
                    assert!(was_open, "answered before the Hello exchange: {f:?}");
                }
            }
            Event::SendAndClose(f) => {
                check_sendable(&f);
                assert!(matches!(f, Frame::Error(_)));
                assert!(s.is_closed());
            }
            Event::Resolve {
                req_id,
                host,
                port,
                path,
                digest_count,
                ..
            } => {
                assert!(was_open);
                assert!(digest_count <= crate::pure::protocol::limits::MAX_DIGESTS_PER_INFO);
                assert!(!path.contains("..") && !path.contains('\0'));
                let found = match (role, path.as_str()) {
                    (2, _) => Err(Refusal::Forbidden(format!(
                        "{host}:{port}/{path} is not cached here, and this node fetches only for its own clients"
                    ))),
                    (_, "a") => Ok(SessionFile(1, 16)),
                    (_, "b") => Ok(SessionFile(2, 4096)),
                    _ => Err(Refusal::NotFound(format!("{host}:{port}/{path}"))),
                };
                let found = found.map_err(|r| {
                    Frame::Error(ErrorFrame::new(req_id, r.spp_code(), r.to_string()))
                });
                if let Err(f) = &found {
                    check_sendable(f);
                }
                match s.info_resolved(req_id, found) {
                    Ok(h) => assert!((h as usize) < s.handles()),
                    Err(f) => check_sendable(&f),
                }
                answers += 1;
            }
            Event::Locate { .. } => answers += 1,
            Event::Stream {
                req_id,
                file,
                first,
                count,
            } => {
                assert!(first + u64::from(count) <= file.1);
                gets.push(req_id);
            }
            Event::Have { ranges, .. } => {
                assert!(ranges.len() <= MAX_RANGES);
            }
            Event::Report { .. } => {
                if inp.u8().is_multiple_of(2) {
                    s.report_counted();
                }
            }
        }
        assert!(s.outstanding() <= crate::pure::protocol::limits::MAX_OUTSTANDING_REQUESTS);
        assert_eq!(s.outstanding(), gets.len() + answers);
        assert!(s.handles() <= MAX_HANDLES_PER_CONNECTION);
        assert!(s.handed_out_count() <= MAX_HANDED_OUT);
        assert!(s.reports_counted() <= MAX_REPORTS_PER_CONNECTION);
        if s.is_closed() {
            // Nothing more is looked at.
            let later = session_frame(&mut inp, 0).map(|f| s.on_frame(f));
            assert!(matches!(later, None | Some(Event::Nothing)));
            break;
        }
    }
}
