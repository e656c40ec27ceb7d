//! Replays the fuzz corpus without libFuzzer: every file under `fuzz/corpus/<target>/`
//! and `fuzz/regressions/<target>/` goes through `p2pd::fuzzing::<target>`, the same
//! body the libFuzzer binary runs, so its assertions hold in the normal test suite.
//! An empty corpus directory fails the test: a replay of nothing asserts nothing.
//!
//! `cargo test --test it -- --ignored fuzz_corpus::write_seed_corpus` (re)writes the
//! hand-made seeds (`seed-*` files) from the encoder and literal heads.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use p2pd::pure::digest::DigestAlgo;
use p2pd::pure::protocol::*;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 5] = [
    ("spp_decode", p2pd::fuzzing::spp_decode),
    ("spp_session", p2pd::fuzzing::spp_session),
    ("http_request", p2pd::fuzzing::http_request),
    ("http_connection", p2pd::fuzzing::http_connection),
    ("registry", p2pd::fuzzing::registry),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted (none if it does not exist).
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_and_regressions_replay_clean() {
    let mut total = 0;
    for (name, target) in TARGETS {
        let corpus = inputs(&fuzz_dir().join("corpus").join(name));
        assert!(
            !corpus.is_empty(),
            "fuzz/corpus/{name}/ is empty or missing: nothing would be replayed"
        );
        let regressions = inputs(&fuzz_dir().join("regressions").join(name));
        for path in corpus.iter().chain(&regressions) {
            let data = std::fs::read(path).expect("readable corpus file");
            // A panic names the input, so it can be reproduced with the fuzz binary.
            eprintln!("replaying {}", path.display());
            target(&data);
        }
        println!(
            "{name}: replayed {} corpus and {} regression inputs",
            corpus.len(),
            regressions.len()
        );
        total += corpus.len() + regressions.len();
    }
    println!("fuzz corpus: {total} inputs replayed");
}

fn frame_bytes(frames: &[Frame]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for f in frames {
        encode(f, &mut out).expect("seed frames are valid");
    }
    out.to_vec()
}

/// Seeds for `spp_decode`: byte 0 picks the chunking, the rest is a stream of valid
/// frames of every type (one file per type, and one whole session).
fn spp_seeds() -> Vec<(String, Vec<u8>)> {
    let file = FileRef {
        host: "origin.example".into(),
        port: 8000,
        path: "films/caf\u{e9}.mp4".into(),
    };
    let range = BlockRange { start: 0, count: 4 };
    let frames = vec![
        Frame::Hello(Hello {
            version: 1,
            role: Role::Lhc,
            listen_port: 7000,
            capabilities: capability::ALL,
        }),
        Frame::InfoRequest(InfoRequest {
            req_id: 1,
            file,
            digest_start: 0,
            digest_count: 2,
        }),
        Frame::Info(Info {
            req_id: 1,
            handle: 0,
            size: 100_000,
            block_size: 65536,
            algo: DigestAlgo::Sha256,
            version: 0x1234_5678,
            mtime_unix_secs: 1_700_000_000,
            digest_start: 0,
            digests: Bytes::from(vec![0xab; 64]),
        }),
        Frame::LocateRequest(LocateRequest {
            req_id: 2,
            handle: 0,
            first_block: 0,
            block_count: 2,
        }),
        Frame::Locate(Locate {
            req_id: 2,
            locations: vec![
                Location {
                    addr: SocketAddr::new(Ipv4Addr::new(10, 0, 0, 1).into(), 7000),
                    role: Role::Origin,
                    holds: Holds::All,
                },
                Location {
                    addr: SocketAddrV6::new(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2), 7001, 0, 0)
                        .into(),
                    role: Role::Lhc,
                    holds: Holds::Ranges(vec![range, BlockRange { start: 9, count: 1 }]),
                },
            ],
        }),
        Frame::Get(Get {
            req_id: 3,
            handle: 0,
            version: 0x1234_5678,
            first_block: 0,
            block_count: 2,
        }),
        Frame::Data(Data {
            req_id: 3,
            block: 0,
            payload: Bytes::from_static(b"block bytes"),
        }),
        Frame::Cancel { req_id: 3 },
        Frame::Have(Have {
            handle: 0,
            version: 0x1234_5678,
            ranges: vec![range],
        }),
        Frame::Holdings(Have {
            handle: 0,
            version: 0x1234_5678,
            ranges: vec![range, BlockRange { start: 8, count: 8 }],
        }),
        Frame::PeerReport(PeerReport {
            handle: 0,
            version: 0x1234_5678,
            problem: PeerProblem::BadData,
            peer: SocketAddr::new(Ipv4Addr::new(10, 0, 0, 9).into(), 7000),
        }),
        Frame::Ping(42),
        Frame::Pong(42),
        Frame::Error(ErrorFrame::new(0, ErrorCode::NotFound, "no such file")),
    ];
    let mut seeds = Vec::new();
    for f in &frames {
        let mut bytes = vec![0x07];
        bytes.extend(frame_bytes(std::slice::from_ref(f)));
        seeds.push((format!("seed-{}", f.name().to_ascii_lowercase()), bytes));
    }
    // A whole session byte by byte, and split in the middle.
    for (mode, name) in [(0u8, "seed-session-bytewise"), (192, "seed-session-split")] {
        let mut bytes = vec![mode];
        bytes.extend(frame_bytes(&frames));
        seeds.push((name.into(), bytes));
    }
    seeds
}

const HEADS: [(&str, &str); 8] = [
    ("get", "GET /films/a%20b.mp4 HTTP/1.1\r\nHost: origin.example:8080\r\n\r\n"),
    (
        "range",
        "GET /films/caf%C3%A9.mp4 HTTP/1.1\r\nHost: cdn\r\nRange: bytes=100-\r\nIf-Range: \"00000000000000ff\"\r\n\r\n",
    ),
    (
        "proxy",
        "GET http://origin.example:8000/films/%E6%98%A0%E7%94%BB.mp4?direct HTTP/1.1\r\nHost: origin.example:8000\r\nRange: bytes=-500\r\nConnection: keep-alive\r\n\r\n",
    ),
    (
        "proxy-v6",
        "HEAD http://[2001:db8::1]:8000/a.ts HTTP/1.1\r\nHost: [2001:db8::1]:8000\r\nIf-None-Match: W/\"1\", \"2\"\r\n\r\n",
    ),
    (
        "http10",
        "GET /a.mp4 HTTP/1.0\r\nRange: bytes=0-99\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
    ),
    (
        "escape",
        "GET /films/..%2f..%2fetc/passwd HTTP/1.1\r\nHost: h\r\n\r\n",
    ),
    ("close", "GET /x/./y//z.m3u8 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"),
    (
        "body",
        "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
    ),
];

/// Seeds for `http_request`: single heads, and all of them pipelined.
fn http_request_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = HEADS
        .iter()
        .map(|(name, head)| (format!("seed-{name}"), head.as_bytes().to_vec()))
        .collect();
    let pipelined: String = HEADS.iter().map(|(_, h)| *h).collect();
    seeds.push(("seed-pipelined".into(), pipelined.into_bytes()));
    seeds
}

/// Seeds for `http_connection`: a chunk size, a file size and a seed, then pipelined
/// heads (the last closes the connection).
fn http_connection_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (name, chunk, size) in [
        ("seed-pipelined-small-chunks", 3u8, 1_000_000u64),
        ("seed-pipelined-empty-file", 200, 0),
    ] {
        let mut bytes = vec![chunk];
        bytes.extend(size.to_be_bytes());
        bytes.push(17);
        for (_, head) in &HEADS[..5] {
            bytes.extend(head.as_bytes());
        }
        bytes.extend(HEADS[6].1.as_bytes());
        seeds.push((name.to_string(), bytes));
    }
    seeds
}

/// Seeds for `registry`: expiry and locality choice, then operations (see
/// `p2pd::fuzzing::registry` for the encoding).
fn registry_seeds() -> Vec<(String, Vec<u8>)> {
    // op 0 have: file, peer pick (>=160 new: tag, addr bytes, port), ranges (n, kind, ...)
    let have_v4 = [0, 0, 200, 0, 1, 2, 0, 1, 0, 5, 3];
    let have_mapped = [0, 0, 200, 1, 1, 2, 1, 1, 0, 0, 9];
    let have_v6 = [0, 0, 200, 3, 4, 2, 1, 0, 7, 2];
    let locate = [2, 0, 0, 1, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 40];
    let report = [4, 0, 0, 1];
    let mut ops: Vec<u8> = Vec::new();
    ops.extend(have_v4);
    ops.extend(have_mapped);
    ops.extend(have_v6);
    ops.extend(locate);
    ops.extend(report);
    ops.extend(locate);
    ops.extend([6, 2, 5]); // an expiry passes, expire
    ops.extend(locate);
    // Header: expiry (0: 120 s, 1: 1 s), locality bits, bounds (>= 0xc0: the real
    // ones; else files and peers per file 1..=8 in the low 6 bits), bans 1..=16.
    let mut seeds = Vec::new();
    for (name, header) in [
        ("seed-ops", [0u8, 0b0001, 0xff, 0]),
        ("seed-small-bounds", [1, 0b1001, 0b001_001, 1]),
        ("seed-tiny-bounds", [0, 0b1000, 0, 0]),
    ] {
        let mut input = header.to_vec();
        input.extend(&ops);
        seeds.push((name.to_string(), input));
    }
    seeds
}

/// Seeds for `spp_session` (see `p2pd::fuzzing::spp_session` for the encoding): per
/// mode (origin, cache fetching, cache refusing; with -A and -i), a Hello, an Info for
/// "a" (a 16-block file), a Get, a Locate, a Have, a report, a Ping; and an Info whose
/// path is 4,000 bytes of "é" (its refusal quotes it).
fn spp_session_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for mode in [0u8, 1, 2, 4, 8, 9, 14] {
        let mut b = vec![mode];
        // Driver no-op, Hello v1 listening on port 2222.
        b.extend([3, 0, 1, 0x08, 0xae, 0, 0, 0, 0]);
        // Info for host "h" (1 × 'a'... "a"), path "a": req 5.
        b.extend([3, 1, 5, 0, 1, 0, 0, 80, 0, 1, 0, 0, 0, 0, 0, 0, 64]);
        // Get req 6, handle 0, version 1, blocks 2..6.
        b.extend([3, 5, 6, 0, 1, 0, 2, 4]);
        // Locate req 7, handle 0, blocks 0..4.
        b.extend([3, 4, 7, 0, 0, 0, 3]);
        // Driver hands out 192.0.2.0-2, then a Have of blocks 0..2 and a report.
        b.extend([2, 3, 8, 0, 1, 1, 0, 0, 1, 0]);
        b.extend([3, 9, 0, 1, 1, 1]);
        // Driver finishes the Get and an answer; Ping.
        b.extend([1, 0, 10, 1, 2, 3, 4, 5, 6, 7, 8]);
        b.extend([0, 10, 0, 0, 0, 0, 0, 0, 0, 9]);
        out.push((format!("seed-mode{mode}"), b));
    }
    // An Info whose path is 4,000 bytes of "é" and whose host is 254 bytes of "€".
    let mut b = vec![4u8, 3, 0, 1, 0, 0, 0, 0, 0, 0];
    b.extend([3, 1, 9, 0, 254, 2, 0, 80, 0x0f, 0xa0, 1, 0, 0, 0, 0, 0, 1]);
    out.push(("seed-long-multibyte".into(), b));
    out
}

#[test]
#[ignore = "writes the seed corpus into fuzz/corpus; run by hand"]
fn write_seed_corpus() {
    let all = [
        ("spp_decode", spp_seeds()),
        ("spp_session", spp_session_seeds()),
        ("http_request", http_request_seeds()),
        ("http_connection", http_connection_seeds()),
        ("registry", registry_seeds()),
    ];
    for (target, seeds) in all {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("corpus directory");
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).expect("seed written");
        }
    }
}

/// A poor man's fuzzer for when libFuzzer is not at hand: random byte mutations of
/// the corpus inputs through every target. `P2PD_SMOKE_RUNS` per target (default
/// 20000); run by hand.
#[test]
#[ignore = "random mutations of the corpus; run by hand"]
fn smoke_random_mutations() {
    let runs: u64 = std::env::var("P2PD_SMOKE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (name, target) in TARGETS {
        let corpus: Vec<Vec<u8>> = inputs(&fuzz_dir().join("corpus").join(name))
            .iter()
            .map(|p| std::fs::read(p).expect("readable corpus file"))
            .collect();
        for _ in 0..runs {
            let mut data = corpus[next() as usize % corpus.len()].clone();
            for _ in 0..1 + next() % 8 {
                let r = next();
                match r % 4 {
                    0 if !data.is_empty() => {
                        let i = (r >> 8) as usize % data.len();
                        data[i] = (r >> 32) as u8;
                    }
                    1 => data.insert((r >> 8) as usize % (data.len() + 1), (r >> 32) as u8),
                    2 if !data.is_empty() => {
                        data.remove((r >> 8) as usize % data.len());
                    }
                    _ => {
                        let i = (r >> 8) as usize % (data.len() + 1);
                        data.truncate(i);
                    }
                }
            }
            let input = data.clone();
            if std::panic::catch_unwind(|| target(&input)).is_err() {
                panic!("{name} failed on {data:02x?}");
            }
        }
        println!("{name}: {runs} mutated inputs");
    }
}
