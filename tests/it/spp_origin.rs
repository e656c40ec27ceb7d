//! The origin over SPP: `p2pd get` of every size that matters, index reuse and
//! rebuild, files added while running, protocol requests (locate, cancel, version
//! change), hostile input that must close only its own connection, and `get`'s
//! refusal of a block that fails its digest.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use p2pd::pure::digest::{DigestAlgo, MAX_DIGEST_BYTES};
use p2pd::pure::protocol::*;

use crate::harness::{self, *};

const BS: usize = 16 * 1024;

/// The shared SPP client (`harness::Spp`), panicking on any failure: these tests are
/// about the origin's answers, not about the connection.
struct Spp(harness::Spp);

impl Spp {
    fn connect(addr: SocketAddr) -> Spp {
        let (c, h) = harness::Spp::over(connect(addr), 0).expect("handshake");
        assert_eq!((h.version, h.role), (PROTOCOL_VERSION, Role::Origin));
        Spp(c)
    }
    fn send(&mut self, f: &Frame) {
        self.0.send(f).unwrap();
    }
    fn recv(&mut self) -> Frame {
        self.0.recv().expect("a valid frame from the server")
    }
    /// Info that must succeed.
    fn info_ok(&mut self, host: &str, path: &str) -> Info {
        match self.info(host, path) {
            Frame::Info(i) => i,
            other => panic!("info for {path}: {other:?}"),
        }
    }
    fn info(&mut self, host: &str, path: &str) -> Frame {
        self.0
            .info(7, host, path)
            .expect("an answer to InfoRequest")
    }
}

#[test]
fn files_of_every_edge_size_come_back_byte_identical_through_get() {
    let sizes = [0, 1, BS - 1, BS, BS + 1, 5 * 1024 * 1024 + 333];
    let node = sizes
        .iter()
        .enumerate()
        .fold(Origin::builder(), |b, (i, &n)| {
            b.file(&format!("f{n}.bin"), &content(n, i as u64))
        })
        .start();
    let out = tempfile::tempdir().unwrap();
    let mut total = 0u64;
    for (i, &n) in sizes.iter().enumerate() {
        let dest = out.path().join(format!("got{n}"));
        let (code, err) = p2pd_get(&node.spp_url(&format!("f{n}.bin")), &dest, &[]);
        assert_eq!(code, 0, "get of {n} bytes failed: {err}");
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            content(n, i as u64),
            "{n}-byte file differs"
        );
        assert!(!out.path().join(format!("got{n}.part")).exists());
        total += n as u64;
    }
    // Stdout works too.
    let o = run_p2pd(&["get", &node.spp_url(&format!("f{}.bin", BS + 1))]);
    assert!(o.status.success());
    assert_eq!(o.stdout, content(BS + 1, 4));
    total += (BS + 1) as u64;
    assert_eq!(node.metric("p2pd_bytes_sent_total{proto=\"spp\"}"), total);
    assert_eq!(node.metric("p2pd_digest_failures_total"), 0);
}

#[test]
fn index_is_reused_after_restart_and_rebuilt_after_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let idx = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_file(dir.path(), "a.mp4", &content(100_000, 1));
    write_file(dir.path(), "b.mp4", &content(50_000, 2));
    let dest = out.path().join("a");

    // Started again and again on the same directories: no builder.
    let origin = |extra: &[&str]| start_origin(dir.path(), idx.path(), extra);
    let node = origin(&["--rescan-interval", "200"]);
    node.wait_for("both files indexed", |n| {
        n.metric("p2pd_index_builds_total") == 2
    });
    assert_eq!(p2pd_get(&node.spp_url("a.mp4"), &dest, &[]).0, 0);
    drop(node);

    // Restart: nothing changed, so nothing is hashed again.
    let node = origin(&["--rescan-interval", "200"]);
    node.wait_for("both indexes reused", |n| {
        n.metric("p2pd_index_reuses_total") == 2
    });
    assert_eq!(node.metric("p2pd_index_builds_total"), 0);
    assert_eq!(p2pd_get(&node.spp_url("a.mp4"), &dest, &[]).0, 0);
    assert_eq!(std::fs::read(&dest).unwrap(), content(100_000, 1));

    // Change a file while running: it is re-indexed and the new bytes are served.
    rewrite_file(dir.path(), "a.mp4", &content(70_000, 9));
    node.wait_for("changed file re-indexed", |n| {
        n.metric("p2pd_index_builds_total") == 1
    });
    assert_eq!(p2pd_get(&node.spp_url("a.mp4"), &dest, &[]).0, 0);
    assert_eq!(std::fs::read(&dest).unwrap(), content(70_000, 9));
    drop(node);

    // Changed while stopped: rebuilt at start, the other one reused.
    write_file(dir.path(), "b.mp4", &content(60_000, 3));
    let node = origin(&[]);
    node.wait_for("indexes checked", |n| {
        n.metric("p2pd_index_builds_total") + n.metric("p2pd_index_reuses_total") == 2
    });
    assert_eq!(node.metric("p2pd_index_builds_total"), 1);
    assert_eq!(p2pd_get(&node.spp_url("b.mp4"), &dest, &[]).0, 0);
    assert_eq!(std::fs::read(&dest).unwrap(), content(60_000, 3));
    drop(node);

    // -Z starts cold: every index is rebuilt.
    let node = origin(&["-Z"]);
    node.wait_for("indexes rebuilt", |n| {
        n.metric("p2pd_index_builds_total") == 2
    });
    assert_eq!(node.metric("p2pd_index_reuses_total"), 0);
}

#[test]
fn a_file_added_while_running_is_served_at_once() {
    let out = tempfile::tempdir().unwrap();
    // A long rescan interval: the file must be found by the on-demand lookup.
    let node = Origin::builder()
        .args(&["--rescan-interval", "600000"])
        .start();
    write_file(node.dir(), "new/late.mp4", &content(40_000, 5));
    let dest = out.path().join("late");
    let (code, err) = p2pd_get(&node.spp_url("new/late.mp4"), &dest, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&dest).unwrap(), content(40_000, 5));
}

#[test]
fn spp_requests_locate_cancel_version_and_escapes() {
    let data = content(10 * BS + 5, 11);
    // Mirrors that are only named, never asked: any addresses do.
    let node = Origin::builder()
        .file("m.ts", &data)
        .args(&["-l", "127.0.0.9:2222", "-l", "127.0.0.10:3333"])
        .start();
    let mut c = Spp::connect(node.addr);
    let info = c.info_ok("cdn.example.com", "m.ts");
    assert_eq!(
        (info.size, info.block_size, info.algo),
        (data.len() as u64, BS as u32, DigestAlgo::Sha256)
    );
    assert_eq!(info.digests.len(), 11 * 32);
    let mut d = [0u8; MAX_DIGEST_BYTES];
    assert_eq!(
        &info.digests[32..64],
        DigestAlgo::Sha256.digest_into(&data[BS..2 * BS], &mut d)
    );

    // Locate: the origin itself, then its -l mirrors.
    c.send(&Frame::LocateRequest(LocateRequest {
        req_id: 8,
        handle: info.handle,
        first_block: 0,
        block_count: 11,
    }));
    match c.recv() {
        Frame::Locate(l) => {
            let addrs: Vec<SocketAddr> = l.locations.iter().map(|x| x.addr).collect();
            assert_eq!(
                addrs,
                vec![
                    node.addr,
                    "127.0.0.9:2222".parse().unwrap(),
                    "127.0.0.10:3333".parse().unwrap()
                ]
            );
            assert!(l.locations.iter().all(|x| x.holds == Holds::All));
        }
        other => panic!("{other:?}"),
    }

    // Pipelined gets answered in order; the last block is short.
    c.send(&get_request(20, &info, 9, 2));
    c.send(&get_request(21, &info, 0, 1));
    for (req, block, range) in [
        (20, 9, 9 * BS..10 * BS),
        (20, 10, 10 * BS..data.len()),
        (21, 0, 0..BS),
    ] {
        match c.recv() {
            Frame::Data(dt) => {
                assert_eq!((dt.req_id, dt.block), (req, block));
                assert_eq!(&dt.payload[..], &data[range]);
            }
            other => panic!("{other:?}"),
        }
    }

    // Cancel: a long get stops early; the connection keeps working.
    let big = content(400 * BS, 12);
    write_file(node.dir(), "big.ts", &big);
    let binfo = c.info_ok("h", "big.ts");
    c.send(&get_request(30, &binfo, 0, 400));
    c.send(&Frame::Cancel { req_id: 30 });
    c.send(&Frame::Ping(99));
    let mut data_frames = 0;
    loop {
        match c.recv() {
            Frame::Data(dt) => {
                assert_eq!(dt.req_id, 30);
                data_frames += 1;
            }
            Frame::Pong(99) => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(
        data_frames < 400,
        "cancel did not stop the get ({data_frames} blocks sent)"
    );

    // A stale version, an unknown handle and blocks past the end are refused per request.
    c.send(&Frame::Get(Get {
        req_id: 40,
        handle: info.handle,
        version: info.version ^ 1,
        first_block: 0,
        block_count: 1,
    }));
    c.send(&Frame::Get(Get {
        req_id: 41,
        handle: 999,
        version: info.version,
        first_block: 0,
        block_count: 1,
    }));
    c.send(&get_request(42, &info, 10, 2));
    for (req, code) in [
        (40, ErrorCode::VersionChanged),
        (41, ErrorCode::BadRequest),
        (42, ErrorCode::BadRequest),
    ] {
        match c.recv() {
            Frame::Error(e) => assert_eq!((e.req_id, e.code), (req, code), "{}", e.message),
            other => panic!("{other:?}"),
        }
    }

    // Paths that escape the directory are not found, and nothing outside is read.
    for p in [
        "../etc/passwd",
        "a/../../etc/passwd",
        "/etc/passwd",
        "..",
        "x\0y",
    ] {
        match c.info("h", p) {
            Frame::Error(e) => assert!(
                matches!(e.code, ErrorCode::NotFound | ErrorCode::BadRequest),
                "{p}: {e:?}"
            ),
            other => panic!("{p}: {other:?}"),
        }
    }
    match c.info("h", "missing.ts") {
        Frame::Error(e) => assert_eq!(e.code, ErrorCode::NotFound),
        other => panic!("{other:?}"),
    }
}

#[test]
fn garbage_and_absurd_frames_close_only_their_connection() {
    let big = content(6 * 1024 * 1024 + 7, 21);
    let node = Origin::builder().file("big.mp4", &big).start();

    // A transfer in progress on its own connection, read slowly.
    let mut a = connect(node.addr);
    a.write_all(b"GET /big.mp4 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = vec![0u8; 100_000];
    a.read_exact(&mut first).unwrap();

    // Garbage bytes (not an HTTP method, so taken as SPP, and not a valid frame).
    let mut g = connect(node.addr);
    g.write_all(&[0x00, 0xff, 0x13, 0x37, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0])
        .unwrap();
    assert!(closed_by_peer(&mut g), "garbage connection left open");
    // A valid Hello, then a frame announcing a 4 GiB payload.
    let mut hello = BytesMut::new();
    encode(
        &Frame::Hello(Hello {
            version: 1,
            role: Role::Client,
            listen_port: 0,
            capabilities: 0,
        }),
        &mut hello,
    )
    .unwrap();
    let mut h = connect(node.addr);
    h.write_all(&hello).unwrap();
    h.write_all(&[0x02, 0x00, 0xff, 0xff, 0xff, 0xff]).unwrap();
    assert!(closed_by_peer(&mut h), "absurd-length connection left open");
    // A Data frame sent by a client, an unknown frame type, a wrong magic.
    for bad in [
        vec![0x84u8, 0, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        vec![0x55, 0, 0, 0, 0, 0],
    ] {
        let mut s = connect(node.addr);
        s.write_all(&hello).unwrap();
        s.write_all(&bad).unwrap();
        assert!(
            closed_by_peer(&mut s),
            "bad frame {bad:?} left the connection open"
        );
    }
    let mut wrong_magic = hello.to_vec();
    wrong_magic[6] ^= 0xff;
    let mut s = connect(node.addr);
    s.write_all(&wrong_magic).unwrap();
    assert!(closed_by_peer(&mut s));
    // Garbage that looks like HTTP.
    let mut s = connect(node.addr);
    s.write_all(b"XYZZY \x01\x02\r\n\r\n").unwrap();
    assert!(closed_by_peer(&mut s));

    // A concurrent SPP transfer and the slow HTTP one both finish intact.
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("big");
    assert_eq!(p2pd_get(&node.spp_url("big.mp4"), &dest, &[]).0, 0);
    assert_eq!(std::fs::read(&dest).unwrap(), big);
    let mut rest = Vec::new();
    let mut head_and_body = first;
    let t = Instant::now();
    // Read until the whole response (head + body) is in.
    while t.elapsed() < IO_DEADLINE {
        let mut chunk = vec![0u8; 1 << 16];
        let n = a.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        rest.extend_from_slice(&chunk[..n]);
        let have = head_and_body.len() + rest.len();
        let head_end = head_and_body
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap()
            + 4;
        if have - head_end >= big.len() {
            break;
        }
    }
    head_and_body.extend_from_slice(&rest);
    let head_end = head_and_body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap()
        + 4;
    assert_eq!(
        &head_and_body[head_end..],
        &big[..],
        "the transfer in progress was harmed"
    );
    assert!(node.metric("p2pd_protocol_errors_total") >= 5);
    assert_eq!(http_get(node.addr, "/_p2pd/health", "").status, 200);
}

/// A fake origin that serves correct info but a corrupted block: `p2pd get` must stop
/// with the integrity exit code and never produce the output file.
#[test]
fn get_refuses_a_block_that_fails_its_digest() {
    let data = content(3 * BS, 31);
    let listener = TcpListener::bind((host(), 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(IO_DEADLINE)).unwrap();
        let mut buf = BytesMut::new();
        let mut dec = Decoder::new();
        let mut chunk = vec![0u8; 65536];
        let send = |s: &mut TcpStream, f: Frame| {
            let mut o = BytesMut::new();
            encode(&f, &mut o).unwrap();
            s.write_all(&o).unwrap();
        };
        let mut digests = Vec::new();
        let mut d = [0u8; MAX_DIGEST_BYTES];
        for b in data.chunks(BS) {
            digests.extend_from_slice(DigestAlgo::Sha256.digest_into(b, &mut d));
        }
        loop {
            let f = loop {
                if let Some(f) = dec.decode(&mut buf).unwrap() {
                    break f;
                }
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
            };
            match f {
                Frame::Hello(_) => send(
                    &mut s,
                    Frame::Hello(Hello {
                        version: 1,
                        role: Role::Origin,
                        listen_port: addr.port(),
                        capabilities: 0,
                    }),
                ),
                Frame::InfoRequest(r) => send(
                    &mut s,
                    Frame::Info(Info {
                        req_id: r.req_id,
                        handle: 0,
                        size: data.len() as u64,
                        block_size: BS as u32,
                        algo: DigestAlgo::Sha256,
                        version: 5,
                        mtime_unix_secs: 0,
                        digest_start: 0,
                        digests: bytes::Bytes::from(digests.clone()),
                    }),
                ),
                Frame::Get(g) => {
                    for i in g.first_block..g.first_block + u64::from(g.block_count) {
                        let mut block = data[i as usize * BS..(i as usize + 1) * BS].to_vec();
                        if i == 1 {
                            block[100] ^= 0x40;
                        }
                        send(
                            &mut s,
                            Frame::Data(Data {
                                req_id: g.req_id,
                                block: i,
                                payload: block.into(),
                            }),
                        );
                    }
                }
                _ => {}
            }
        }
    });
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("x");
    let (code, err) = p2pd_get(&format!("spp://{addr}/x.mp4"), &dest, &[]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("digest") && err.contains("block 1"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!dest.exists(), "output written despite a digest failure");
    let _ = server.join();
}

/// CPU seconds (user + system) the process has used, from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Regression: a client that went away with Gets still streaming made the reader see
/// end-of-file, treat it as "idle", and read again at once, forever, starving every
/// other task of its shard (found by p2pd-bench ending a run mid-transfer).
#[test]
fn regression_client_closing_with_gets_outstanding_does_not_spin_its_shard() {
    let data = content(256 * BS, 41);
    let node = Origin::builder().file("big.bin", &data).start();
    for _ in 0..8 {
        let mut c = Spp::connect(node.addr);
        let info = c.info_ok("cdn.example.com", "big.bin");
        for i in 0..4u32 {
            c.send(&get_request(100 + i, &info, u64::from(i) * 64, 64));
        }
        // Half-close, then go away without reading a byte: the node reads the
        // end-of-file first, with the Gets still streaming (the case that spun).
        let _ = c.0.s.shutdown(std::net::Shutdown::Write);
        std::thread::sleep(Duration::from_millis(20));
        drop(c);
    }
    // Idle once the clients' connections are gone (only the metrics request's is open;
    // a node that spins may never get there, so at most 5 s): the process must not be
    // burning a core.
    wait_until(Duration::from_secs(5), || {
        node.metric("p2pd_connections_open") == 1
    });
    let pid = node.child.id();
    let before = cpu_secs(pid);
    // The measurement: CPU time over one idle second.
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_secs(pid) - before;
    assert!(used < 0.3, "an idle origin used {used:.2} s of CPU in 1 s");
    // And every shard still serves: whole-file transfers touch blocks of both.
    for _ in 0..4 {
        let r = http_get(node.addr, "/big.bin", "");
        assert_eq!(r.status, 200);
        assert!(r.body == data, "body differs");
    }
}

/// Overwrites `len` bytes at `at` in place (same inode, same size).
fn overwrite_in_place(path: &std::path::Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
    f.sync_all().unwrap();
}

/// Sends Gets for every block of `info`'s version and collects what comes back: the
/// blocks' bytes, or the error code that ended the answer.
fn get_all(c: &mut Spp, info: &Info, blocks: u64) -> Result<Vec<u8>, ErrorCode> {
    c.send(&get_request(500, info, 0, blocks as u32));
    let mut out = Vec::new();
    for _ in 0..blocks {
        match c.recv() {
            Frame::Data(d) => out.extend_from_slice(&d.payload),
            Frame::Error(e) => return Err(e.code),
            other => panic!("{other:?}"),
        }
    }
    Ok(out)
}

#[test]
fn a_file_edited_in_place_is_never_served_under_its_old_digests() {
    for verify_reads in [false, true] {
        let data = content(6 * BS, 51);
        let mut extra = vec!["--rescan-interval", "600000"];
        if verify_reads {
            extra.push("--verify-reads");
        }
        let node = Origin::builder().file("m.bin", &data).args(&extra).start();
        let path = node.dir().join("m.bin");
        let mut c = Spp::connect(node.addr);
        let old = c.info_ok("cdn.example.com", "m.bin");
        // Nothing is cached yet; now the bytes change under the index.
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let edit = vec![0xAAu8; 100];
        overwrite_in_place(&path, 3 * BS as u64 + 7, &edit);
        if verify_reads {
            // Put the old modification time back (as `rsync --inplace -t` would): only
            // the digest can tell now.
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(mtime).unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        }
        let mut edited = data.clone();
        edited[3 * BS + 7..3 * BS + 107].copy_from_slice(&edit);
        match get_all(&mut c, &old, 6) {
            Ok(bytes) => panic!(
                "verify_reads={verify_reads}: served {} bytes (edited: {}) under the old version",
                bytes.len(),
                bytes == edited
            ),
            Err(code) => assert!(
                matches!(
                    code,
                    ErrorCode::VersionChanged | ErrorCode::Busy | ErrorCode::Internal
                ),
                "{code:?}"
            ),
        }
        // Asked again, the file has a new version whose blocks are the edited bytes.
        node.wait_for("the edited file to be re-indexed", |_| {
            let mut c2 = Spp::connect(node.addr);
            let i = c2.info_ok("cdn.example.com", "m.bin");
            i.version != old.version && get_all(&mut c2, &i, 6).as_deref() == Ok(&edited[..])
        });
    }
}

#[test]
fn buffered_reads_serve_the_same_verified_bytes() {
    let data = content(37 * BS + 11, 61);
    let node = Origin::builder()
        .file("b.bin", &data)
        .args(&["--buffered-reads"])
        .start();
    let out = node.dir().join("out.bin");
    let (code, err) = p2pd_get(&node.spp_url("b.bin"), &out, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read(&out).unwrap() == data);
    let r = http_get(node.addr, "/b.bin", "Range: bytes=100-70000\r\n");
    assert_eq!(r.status, 206);
    assert!(r.body == data[100..=70000]);
}

/// `p2pd get -o` into something that is not a regular file (a FIFO here, `/dev/null`
/// in practice) writes into it and leaves it what it was: the `.part` file and rename
/// that make a regular output appear whole would replace the device with a file (as
/// root, `-o /dev/null` turned /dev/null into a regular file, and every later write to
/// it landed there).
#[test]
fn get_into_a_fifo_writes_through_it_and_leaves_it_a_fifo() {
    use std::os::unix::fs::FileTypeExt;
    let data = content(700 * 1024 + 3, 41);
    let node = Origin::builder().file("f.bin", &data).start();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("out");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(&fifo).unwrap())
    };
    let (code, err) = p2pd_get(&node.spp_url("f.bin"), &fifo, &[]);
    assert_eq!(code, 0, "p2pd get into a FIFO: {err}");
    // Looked at before the reader is joined: had the FIFO been replaced, nothing would
    // ever open it for writing and the reader would wait for ever.
    let meta = std::fs::symlink_metadata(&fifo).unwrap();
    assert!(
        meta.file_type().is_fifo(),
        "the FIFO was replaced: {meta:?}"
    );
    let part = dir.path().join("out.part");
    assert!(!part.exists(), "a .part file was left beside it");
    let got = reader.join().unwrap();
    assert!(
        got == data,
        "{} bytes came through the FIFO, not the file",
        got.len()
    );
}
