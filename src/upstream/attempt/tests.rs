//! Unit tests of the one-attempt step: its deadlines, and each outcome against a fake
//! upstream on loopback.

use super::*;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::BytesMut;

use crate::error::{exit, UpstreamErrorKind};
use crate::pure::digest::MAX_DIGEST_BYTES;
use crate::pure::geometry::FileGeometry;
use crate::pure::protocol::{
    encode, limits, Data, Decoder, ErrorCode, ErrorFrame, Frame, Hello, Info, PeerProblem, Role,
    PROTOCOL_VERSION,
};
use crate::pure::sched::Failure;
use crate::upstream::pool::UpstreamConfig;

#[test]
fn one_set_of_deadlines_for_every_fetcher() {
    let ten = Duration::from_secs(10);
    // Alternatives: an attempt is cut at the failover deadline, a peer's connect sooner.
    let d = Deadlines::new(ten, true);
    assert_eq!(d.attempt, FAILOVER_ATTEMPT_TIMEOUT);
    assert_eq!(d.peer_connect, PEER_CONNECT_TIMEOUT);
    // A single source gets the whole timeout.
    assert_eq!(Deadlines::new(ten, false).attempt, ten);
    // Short timeouts bound everything.
    let short = Deadlines::new(Duration::from_millis(500), true);
    assert_eq!(short.attempt, Duration::from_millis(500));
    assert_eq!(short.peer_connect, Duration::from_millis(500));
    // A request queued behind others at its source gets twice the time it is
    // expected to take, up to the cap; never less than its attempt.
    let queued = d.queued(Duration::from_secs(4), ten);
    assert_eq!(queued.attempt, Duration::from_secs(8));
    assert_eq!(queued.peer_connect, PEER_CONNECT_TIMEOUT);
    assert_eq!(d.queued(Duration::from_secs(9), ten).attempt, ten);
    assert_eq!(
        d.queued(Duration::from_millis(300), ten).attempt,
        FAILOVER_ATTEMPT_TIMEOUT
    );
}

/// The deadlines of every attempt below: short, so that the tests are quick, and far
/// enough apart that which one fired is plain.
const DEADLINES: Deadlines = Deadlines {
    peer_connect: Duration::from_millis(200),
    attempt: Duration::from_millis(800),
};
/// The pool's own deadline (handshake, each answer): longer than any attempt, so that
/// what cuts an attempt short is the attempt's deadlines, as with real callers.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the fake upstream's threads look at their stop flag.
const FAKE_POLL: Duration = Duration::from_millis(10);
/// The fake file: two full blocks of the smallest size and a short last one.
const BLOCK_SIZE: u32 = limits::MIN_BLOCK_BYTES;
const FILE_SIZE: u64 = 2 * BLOCK_SIZE as u64 + 1000;
const VERSION: u64 = 0x0123_4567_89ab_cdef;
const HANDLE: u32 = 7;
const ALGO: DigestAlgo = DigestAlgo::Sha256;

/// How the fake upstream behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    /// Answers everything as an origin would.
    Good,
    /// Sends each block with one byte changed.
    BadDigest,
    /// Sends each block one byte short.
    ShortBlock,
    /// Accepts the connection and never answers, not even the Hello.
    SilentHello,
    /// Answers Hello and InfoRequest, never a Get.
    SilentGet,
    /// Answers a Get with an Error NotFound.
    NotFound,
}

/// The fake file's bytes: a pattern that differs from block to block.
fn content() -> Vec<u8> {
    (0..FILE_SIZE).map(|i| (i * 31 + i / 4096) as u8).collect()
}

fn geometry() -> FileGeometry {
    FileGeometry::new(FILE_SIZE, BLOCK_SIZE)
}

/// Block `index` of the fake file.
fn block(index: u64) -> Vec<u8> {
    let start = (index * u64::from(BLOCK_SIZE)) as usize;
    content()[start..start + geometry().block_len(index)].to_vec()
}

/// The origin's digest of block `index`.
fn digest(index: u64) -> Vec<u8> {
    let mut out = [0u8; MAX_DIGEST_BYTES];
    ALGO.digest_into(&block(index), &mut out).to_vec()
}

/// The fake upstream's answer to `frame`, if it gives one.
fn answer(behaviour: Behaviour, frame: Frame) -> Option<Frame> {
    match frame {
        Frame::Hello(_) if behaviour == Behaviour::SilentHello => None,
        Frame::Hello(_) => Some(Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            role: Role::Origin,
            listen_port: 0,
            capabilities: 0,
        })),
        Frame::InfoRequest(r) => {
            let count = u64::from(r.digest_count)
                .min(geometry().block_count().saturating_sub(r.digest_start));
            let digests: Vec<u8> = (r.digest_start..r.digest_start + count)
                .flat_map(digest)
                .collect();
            Some(Frame::Info(Info {
                req_id: r.req_id,
                handle: HANDLE,
                size: FILE_SIZE,
                block_size: BLOCK_SIZE,
                algo: ALGO,
                version: VERSION,
                mtime_unix_secs: 0,
                digest_start: r.digest_start,
                digests: digests.into(),
            }))
        }
        Frame::Get(g) if (g.handle, g.version, g.block_count) != (HANDLE, VERSION, 1) => {
            Some(Frame::Error(ErrorFrame::new(
                g.req_id,
                ErrorCode::BadRequest,
                "wrong Get",
            )))
        }
        Frame::Get(g) => {
            let mut payload = block(g.first_block);
            match behaviour {
                Behaviour::SilentGet => return None,
                Behaviour::NotFound => {
                    return Some(Frame::Error(ErrorFrame::new(
                        g.req_id,
                        ErrorCode::NotFound,
                        "no such file",
                    )))
                }
                Behaviour::BadDigest => payload[0] ^= 1,
                Behaviour::ShortBlock => {
                    payload.pop();
                }
                Behaviour::Good | Behaviour::SilentHello => {}
            }
            Some(Frame::Data(Data {
                req_id: g.req_id,
                block: g.first_block,
                payload: payload.into(),
            }))
        }
        Frame::Ping(n) => Some(Frame::Pong(n)),
        _ => None,
    }
}

/// Serves one connection until it closes, it breaks the protocol, or `stop` is set.
fn serve(mut s: TcpStream, behaviour: Behaviour, stop: &AtomicBool) {
    if s.set_nonblocking(false).is_err() || s.set_read_timeout(Some(FAKE_POLL)).is_err() {
        return;
    }
    let (mut buf, mut dec, mut chunk) = (BytesMut::new(), Decoder::new(), [0u8; 64 * 1024]);
    while !stop.load(Ordering::Relaxed) {
        match dec.decode(&mut buf) {
            Ok(Some(frame)) => {
                if let Some(a) = answer(behaviour, frame) {
                    let mut out = BytesMut::new();
                    encode(&a, &mut out).expect("the fake's answer encodes");
                    if s.write_all(&out).is_err() {
                        return;
                    }
                }
                continue;
            }
            Ok(None) => {}
            Err(_) => return,
        }
        match s.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// An SPP upstream on 127.0.0.1 served by a std thread (one more per connection),
/// behaving as told. Dropping it stops and joins its threads.
struct FakeUpstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeUpstream {
    fn start(behaviour: Behaviour) -> FakeUpstream {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let flag = flag.clone();
                        conns.push(std::thread::spawn(move || serve(s, behaviour, &flag)));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(FAKE_POLL),
                    Err(_) => break,
                }
            }
            for c in conns {
                c.join().expect("a fake connection's thread panicked");
            }
        });
        FakeUpstream {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let joined = t.join();
            if !std::thread::panicking() {
                joined.expect("the fake upstream's thread panicked");
            }
        }
    }
}

/// Runs `f` on a single glommio executor, as `p2pd get` does.
fn run<T: 'static>(f: impl std::future::Future<Output = T> + 'static) -> T {
    let io_memory = runtime::preflight(1).expect("io_uring");
    runtime::run_single(io_memory, f).expect("executor")
}

/// The fake file, named as a URL on `addr` would name it.
fn file_ref(addr: SocketAddr) -> FileRef {
    FileRef {
        host: addr.ip().to_string(),
        port: addr.port(),
        path: "video.mp4".into(),
    }
}

/// One attempt at block `index` from `addr` as a source of `class`, expecting the fake
/// file's block; the outcome and how long it took.
fn attempt(
    addr: SocketAddr,
    class: SourceClass,
    index: u64,
) -> (Result<Bytes, FetchError>, Duration) {
    run(async move {
        let pool = UpstreamPool::new(UpstreamConfig {
            role: Role::Client,
            listen_port: 0,
            bind: None,
            timeout: POOL_TIMEOUT,
        });
        let want = digest(index);
        let expected = Expected {
            len: geometry().block_len(index),
            algo: ALGO,
            digest: &want,
        };
        let started = Instant::now();
        let r = one_block(
            &pool,
            (addr, class),
            &file_ref(addr),
            VERSION,
            index,
            expected,
            DEADLINES,
        )
        .await;
        (r, started.elapsed())
    })
}

#[test]
fn a_good_server_gives_the_verified_block() {
    let fake = FakeUpstream::start(Behaviour::Good);
    // A full block, and the short last one.
    for index in [1, 2] {
        for class in [SourceClass::Server, SourceClass::Peer] {
            let (r, took) = attempt(fake.addr, class, index);
            let data = r.unwrap_or_else(|e| panic!("block {index} from a {class:?}: {e}"));
            assert_eq!(&data[..], &block(index)[..]);
            assert!(took < DEADLINES.attempt, "took {took:?}");
        }
    }
    assert_eq!(block(2).len(), 1000);
}

/// Checks that `e` is the digest failure of block `index` from `addr`, and that it
/// counts as bad data everywhere.
fn assert_bad_data(e: &FetchError, addr: SocketAddr, index: u64) {
    assert!(
        matches!(e, FetchError::Digest { addr: a, block, algo }
            if *a == addr && *block == index && *algo == ALGO.name()),
        "{e:?}"
    );
    assert_eq!(e.peer_problem(), Some(PeerProblem::BadData));
    assert_eq!(e.source_failure(SourceClass::Peer), Failure::BadBlock);
    assert_eq!(e.source_failure(SourceClass::Server), Failure::BadBlock);
    assert!(!e.retry_next_address());
    assert_eq!(e.exit_code(), exit::INTEGRITY);
    assert_eq!(e.to_upstream_error().kind, UpstreamErrorKind::Failed);
}

#[test]
fn a_block_with_a_wrong_digest_is_bad_data() {
    let fake = FakeUpstream::start(Behaviour::BadDigest);
    let (r, _) = attempt(fake.addr, SourceClass::Peer, 1);
    assert_bad_data(&r.expect_err("a corrupt block passed"), fake.addr, 1);
}

#[test]
fn a_block_of_the_wrong_length_is_bad_data() {
    let fake = FakeUpstream::start(Behaviour::ShortBlock);
    let (r, _) = attempt(fake.addr, SourceClass::Peer, 0);
    assert_bad_data(&r.expect_err("a short block passed"), fake.addr, 0);
}

#[test]
fn a_peer_silent_from_the_start_is_unreachable_after_the_connect_deadline() {
    let fake = FakeUpstream::start(Behaviour::SilentHello);
    let (r, took) = attempt(fake.addr, SourceClass::Peer, 1);
    let e = r.expect_err("a silent peer gave a block");
    let ms = DEADLINES.peer_connect.as_millis() as u64;
    assert!(
        matches!(&e, FetchError::Timeout { addr, what, ms: m }
            if *addr == fake.addr && *what == CONNECT_WHAT && *m == ms),
        "{e:?}"
    );
    // Given up at the peer's connect deadline, not at the attempt's.
    assert!(took >= DEADLINES.peer_connect, "took {took:?}");
    assert!(took < DEADLINES.attempt, "took {took:?}");
    // Unreachable as far as a report goes (after the cache's verdict), but not
    // dropped at once on this alone: on a congested uplink a lost SYN is sent again.
    assert_eq!(e.peer_problem(), Some(PeerProblem::Unreachable));
    assert!(e.is_connect_timeout());
    assert_eq!(e.source_failure(SourceClass::Peer), Failure::Error);
    assert!(e.retry_next_address());
    assert_eq!(e.exit_code(), exit::TIMEOUT);
}

#[test]
fn a_server_silent_from_the_start_gets_the_whole_attempt_and_only_fails_it() {
    let fake = FakeUpstream::start(Behaviour::SilentHello);
    let (r, took) = attempt(fake.addr, SourceClass::Server, 1);
    let e = r.expect_err("a silent server gave a block");
    let ms = DEADLINES.attempt.as_millis() as u64;
    assert!(
        matches!(&e, FetchError::Timeout { addr, what, ms: m }
            if *addr == fake.addr && *what == CONNECT_WHAT && *m == ms),
        "{e:?}"
    );
    assert!(took >= DEADLINES.attempt, "took {took:?}");
    assert!(took < POOL_TIMEOUT, "took {took:?}");
    // A server that never answered is a failed attempt, not a source to drop.
    assert_eq!(e.source_failure(SourceClass::Server), Failure::Error);
    // The error itself does not know the class: it names no connection, so it reads
    // as unreachable; callers report only sources of the Peer class.
    assert_eq!(e.peer_problem(), Some(PeerProblem::Unreachable));
    assert!(e.retry_next_address());
    assert_eq!(e.to_upstream_error().kind, UpstreamErrorKind::TimedOut);
}

#[test]
fn a_source_silent_on_the_get_times_out_on_block_data_and_is_no_peer_problem() {
    let fake = FakeUpstream::start(Behaviour::SilentGet);
    let (r, took) = attempt(fake.addr, SourceClass::Server, 1);
    let e = r.expect_err("a silent Get gave a block");
    let ms = DEADLINES.attempt.as_millis() as u64;
    assert!(
        matches!(&e, FetchError::Timeout { addr, what, ms: m }
            if *addr == fake.addr && *what == DATA_WHAT && *m == ms),
        "{e:?}"
    );
    assert!(took >= DEADLINES.attempt, "took {took:?}");
    assert!(took < POOL_TIMEOUT, "took {took:?}");
    // It was reached: slow, not unreachable, whatever its class.
    assert_eq!(e.peer_problem(), None);
    assert_eq!(e.source_failure(SourceClass::Server), Failure::Error);
    assert_eq!(e.source_failure(SourceClass::Peer), Failure::Error);
    assert!(e.retry_next_address());
    assert_eq!(e.exit_code(), exit::TIMEOUT);
}

#[test]
fn a_closed_port_is_a_connect_failure_worth_the_next_address() {
    // A port nothing listens on: bound, then let go.
    let addr = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let (r, took) = attempt(addr, SourceClass::Server, 1);
    let e = r.expect_err("a closed port gave a block");
    assert!(
        matches!(&e, FetchError::Connect { addr: a, .. } if *a == addr),
        "{e:?}"
    );
    assert!(took < DEADLINES.attempt, "took {took:?}");
    assert_eq!(e.source_failure(SourceClass::Server), Failure::Closed);
    assert!(e.retry_next_address());
    assert_eq!(e.exit_code(), exit::CONNECT);
    assert_eq!(e.to_upstream_error().kind, UpstreamErrorKind::Unreachable);
    // Were it a peer, it would be reported unreachable and dropped.
    assert_eq!(e.peer_problem(), Some(PeerProblem::Unreachable));
    assert_eq!(e.source_failure(SourceClass::Peer), Failure::Unreachable);
}

#[test]
fn a_not_found_answer_means_the_source_does_not_hold_the_file() {
    let fake = FakeUpstream::start(Behaviour::NotFound);
    for class in [SourceClass::Server, SourceClass::Peer] {
        let (r, _) = attempt(fake.addr, class, 1);
        let e = r.expect_err("a NotFound answer gave a block");
        assert!(
            matches!(&e, FetchError::Remote { addr, code: ErrorCode::NotFound, .. }
                if *addr == fake.addr),
            "{e:?}"
        );
        assert_eq!(e.source_failure(SourceClass::Server), Failure::NotHeld);
        assert_eq!(e.source_failure(SourceClass::Peer), Failure::NotHeld);
        assert_eq!(e.peer_problem(), None);
        assert!(!e.retry_next_address());
        assert_eq!(e.exit_code(), exit::NOT_FOUND);
        assert_eq!(e.to_upstream_error().kind, UpstreamErrorKind::NotFound);
    }
}
