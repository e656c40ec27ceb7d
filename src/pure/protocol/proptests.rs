//! Property tests: round trips of arbitrary valid frames, every way of splitting a
//! stream, and arbitrary or corrupted bytes, which must end in a frame or an error,
//! never a panic, and never in the decoder asking for more room than the announced
//! frame type's limit.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use bytes::{BufMut, Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;

use super::limits::*;
use super::*;
use crate::pure::digest::{DigestAlgo, ALL_ALGOS};

/// Sizes for the frame strategies: small ones keep the every-split-point test quick.
#[derive(Clone, Copy)]
struct Sizes {
    payload: usize,
    digests: u64,
    ranges: usize,
    locations: usize,
}

const SMALL: Sizes = Sizes {
    payload: 64,
    digests: 4,
    ranges: 4,
    locations: 3,
};
const LARGE: Sizes = Sizes {
    payload: 70_000,
    digests: MAX_DIGESTS_PER_INFO as u64,
    ranges: MAX_RANGES,
    locations: 8,
};

/// Request ids of requests and their answers are never 0 (see `rules::check_req_id`).
fn req_id() -> impl Strategy<Value = u32> {
    prop_oneof![1..=u32::MAX, 1..=3u32]
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::Origin),
        Just(Role::Scc),
        Just(Role::Lhc),
        Just(Role::Client)
    ]
}

fn algo() -> impl Strategy<Value = DigestAlgo> {
    proptest::sample::select(ALL_ALGOS.to_vec())
}

/// Non-control Unicode of up to `chars` characters, or exactly `max_bytes` ASCII bytes
/// (the boundary value).
fn text(chars: usize, max_bytes: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::string::string_regex(&format!("\\PC{{0,{chars}}}"))
            .expect("valid regex")
            .prop_filter("within the byte limit", move |s| s.len() <= max_bytes),
        1 => Just("x".repeat(max_bytes)),
    ]
}

fn range() -> impl Strategy<Value = BlockRange> {
    prop_oneof![0..MAX_BLOCKS_PER_FILE, 0..64u64]
        .prop_flat_map(|start| (Just(start), 1..=MAX_BLOCKS_PER_FILE - start))
        .prop_map(|(start, count)| BlockRange { start, count })
}

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, p)| SocketAddr::new(Ipv4Addr::from(ip).into(), p)),
        // Flow info and scope id are not on the wire.
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddrV6::new(
            Ipv6Addr::from(ip),
            p,
            0,
            0
        )
        .into()),
    ]
}

fn holds(max_ranges: usize) -> impl Strategy<Value = Holds> {
    prop_oneof![
        Just(Holds::All),
        vec(range(), 0..=max_ranges).prop_map(Holds::Ranges)
    ]
}

fn info(max_digests: u64) -> impl Strategy<Value = Info> {
    let size = prop_oneof![0..=MAX_FILE_BYTES, 0..=(1u64 << 22), Just(MAX_FILE_BYTES)];
    (4u32..=4096, size, algo())
        .prop_flat_map(move |(k, size, algo)| {
            let block_size = k * BLOCK_ALIGN_BYTES;
            let blocks = crate::pure::geometry::FileGeometry::new(size, block_size).block_count();
            (
                Just((block_size, size, algo, blocks)),
                0..=blocks.min(max_digests),
            )
        })
        .prop_flat_map(|((block_size, size, algo, blocks), count)| {
            // An empty digest range may start anywhere; a non-empty one inside the file.
            let start = if count == 0 {
                any::<u64>().boxed()
            } else {
                (0..=blocks - count).boxed()
            };
            let digests = vec(any::<u8>(), count as usize * algo.len());
            (
                Just((block_size, size, algo)),
                start,
                digests,
                (req_id(), any::<u32>(), any::<u64>(), any::<i64>()),
            )
        })
        .prop_map(
            |(
                (block_size, size, algo),
                digest_start,
                digests,
                (req_id, handle, version, mtime),
            )| Info {
                req_id,
                handle,
                size,
                block_size,
                algo,
                version,
                mtime_unix_secs: mtime,
                digest_start,
                digests: Bytes::from(digests),
            },
        )
}

fn frame(s: Sizes) -> impl Strategy<Value = Frame> {
    let hello = any::<(u16, u16, u32)>().prop_flat_map(|(version, listen_port, capabilities)| {
        role().prop_map(move |role| {
            Frame::Hello(Hello {
                version,
                role,
                listen_port,
                capabilities,
            })
        })
    });
    let file = (
        text(20, MAX_HOST_BYTES),
        any::<u16>(),
        text(40, MAX_PATH_BYTES),
    )
        .prop_map(|(host, port, path)| FileRef { host, port, path });
    let info_request = (req_id(), file, any::<u64>(), any::<u32>()).prop_map(
        |(req_id, file, digest_start, digest_count)| {
            Frame::InfoRequest(InfoRequest {
                req_id,
                file,
                digest_start,
                digest_count,
            })
        },
    );
    let locate_request = (req_id(), any::<u32>(), range()).prop_map(|(req_id, handle, r)| {
        Frame::LocateRequest(LocateRequest {
            req_id,
            handle,
            first_block: r.start,
            block_count: r.count,
        })
    });
    let location = (addr(), role(), holds(s.ranges)).prop_map(|(addr, role, holds)| Location {
        addr,
        role,
        holds,
    });
    let locate = (req_id(), vec(location, 0..=s.locations))
        // Many locations with many ranges can pass the control payload limit: such a
        // Locate is not valid, and has its own test.
        .prop_filter("fits the control payload limit", |(_, locs)| {
            let ranges: usize = locs
                .iter()
                .map(|l| match &l.holds {
                    Holds::All => 0,
                    Holds::Ranges(r) => r.len(),
                })
                .sum();
            6 + locs.len() * 24 + ranges * 16 <= MAX_CONTROL_PAYLOAD_BYTES
        })
        .prop_map(|(req_id, locations)| Frame::Locate(Locate { req_id, locations }));
    let get = (
        (req_id(), any::<u32>(), any::<u64>()),
        1..=MAX_BLOCKS_PER_GET,
    )
        .prop_flat_map(|(ids, count)| {
            (
                Just(ids),
                Just(count),
                0..=MAX_BLOCKS_PER_FILE - u64::from(count),
            )
                .prop_map(|((req_id, handle, version), block_count, first_block)| {
                    Frame::Get(Get {
                        req_id,
                        handle,
                        version,
                        first_block,
                        block_count,
                    })
                })
        });
    let data = (
        req_id(),
        0..MAX_BLOCKS_PER_FILE,
        vec(any::<u8>(), 0..=s.payload),
    )
        .prop_map(|(req_id, block, payload)| {
            Frame::Data(Data {
                req_id,
                block,
                payload: Bytes::from(payload),
            })
        });
    let have = (any::<(u32, u64)>(), vec(range(), 0..=s.ranges)).prop_map(
        |((handle, version), ranges)| {
            Frame::Have(Have {
                handle,
                version,
                ranges,
            })
        },
    );
    let peer_report =
        (any::<(u32, u64, bool)>(), addr()).prop_map(|((handle, version, bad), peer)| {
            Frame::PeerReport(PeerReport {
                handle,
                version,
                problem: if bad {
                    PeerProblem::BadData
                } else {
                    PeerProblem::Unreachable
                },
                peer,
            })
        });
    let error = (any::<(u32, u16)>(), text(40, MAX_ERROR_MESSAGE_BYTES)).prop_map(
        |((req_id, code), message)| {
            Frame::Error(ErrorFrame {
                req_id,
                code: ErrorCode::from_u16(code),
                message: message.into(),
            })
        },
    );
    prop_oneof![
        hello,
        info_request,
        info(s.digests).prop_map(Frame::Info),
        locate_request,
        locate,
        get,
        data,
        req_id().prop_map(|req_id| Frame::Cancel { req_id }),
        have.prop_flat_map(|f| {
            // The same fields as a Have or as a Holdings.
            let Frame::Have(h) = f else {
                unreachable!("the have strategy makes Haves")
            };
            prop_oneof![Just(Frame::Have(h.clone())), Just(Frame::Holdings(h))]
        }),
        peer_report,
        any::<u64>().prop_map(Frame::Ping),
        any::<u64>().prop_map(Frame::Pong),
        error,
    ]
}

fn encode_all(frames: &[Frame]) -> BytesMut {
    let mut out = BytesMut::new();
    for f in frames {
        encode(f, &mut out).expect("strategy frames are valid");
    }
    out
}

/// Feeds `bytes` to a decoder in the given chunk sizes (cycled), collecting frames, and
/// checks the `wanted` contract after every step. Returns the frames and the first error.
fn feed(bytes: &[u8], chunks: &[usize]) -> (Vec<Frame>, Option<DecodeError>) {
    let mut d = Decoder::new();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = bytes;
    let mut sizes = chunks.iter().copied().cycle();
    loop {
        loop {
            match d.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
        let wanted = d.wanted(&buf);
        assert!(wanted > 0, "need-more-bytes but wants none");
        assert!(buf.len() + wanted <= MAX_FRAME_BYTES);
        if buf.len() >= FRAME_HEADER_LEN {
            let (_, _, max) = payload_bounds(buf[0]).expect("header accepted");
            assert!(
                buf.len() + wanted <= FRAME_HEADER_LEN + max,
                "wanted goes past the type's limit"
            );
        }
        if rest.is_empty() {
            return (frames, None);
        }
        let n = sizes.next().unwrap_or(1).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip(f in frame(LARGE)) {
        let bytes = encode_all(std::slice::from_ref(&f));
        let len = u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]) as usize;
        prop_assert_eq!(bytes.len(), FRAME_HEADER_LEN + len);
        let mut buf = bytes.clone();
        prop_assert_eq!(Decoder::new().decode(&mut buf), Ok(Some(f)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn random_chunking_decodes_the_same(
        frames in vec(frame(SMALL), 1..6),
        chunks in vec(1usize..40, 1..8),
    ) {
        let bytes = encode_all(&frames);
        let (got, err) = feed(&bytes, &chunks);
        prop_assert_eq!(err, None);
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in vec(any::<u8>(), 0..4096),
        chunks in vec(1usize..600, 1..8),
    ) {
        let (_, _) = feed(&bytes, &chunks);
    }

    /// Well-formed headers with random payloads reach deep into the parsers. Whatever
    /// decodes must re-encode to the same bytes: the encoding is canonical.
    #[test]
    fn random_payloads_never_panic_and_accepted_ones_are_canonical(
        ty in proptest::sample::select((0..=u8::MAX).filter(|t| type_name(*t).is_some()).collect::<Vec<_>>()),
        seed in vec(any::<u8>(), 0..2048),
        len_pick in any::<usize>(),
    ) {
        let (_, min, max) = payload_bounds(ty).expect("known type");
        let len = min + len_pick % (max.min(min + seed.len()) - min + 1);
        let mut bytes = vec![ty, 0];
        bytes.extend_from_slice(&(len as u32).to_be_bytes());
        if ty == frame_type::HELLO {
            bytes.extend_from_slice(&MAGIC);
        }
        bytes.extend(seed.iter().copied().cycle().take(FRAME_HEADER_LEN + len - bytes.len()));
        let mut buf = BytesMut::from(&bytes[..]);
        if let Ok(Some(f)) = Decoder::new().decode(&mut buf) {
            prop_assert!(buf.is_empty());
            prop_assert_eq!(&encode_all(&[f])[..], &bytes[..]);
        }
    }

    /// One corrupted byte in a valid stream: a frame (re-encoding to what was read), or
    /// an error; never a panic.
    #[test]
    fn corrupted_frames_never_panic(
        frames in vec(frame(SMALL), 1..4),
        at in any::<usize>(),
        xor in 1u8..=255,
    ) {
        let mut bytes = encode_all(&frames).to_vec();
        let at = at % bytes.len();
        bytes[at] ^= xor;
        let mut buf = BytesMut::from(&bytes[..]);
        let mut d = Decoder::new();
        let mut consumed = 0;
        while let Ok(Some(f)) = d.decode(&mut buf) {
            let again = encode_all(&[f]);
            prop_assert_eq!(&bytes[consumed..consumed + again.len()], &again[..]);
            consumed += again.len();
        }
    }

    /// Fields drawn from their whole type, limits ignored: encode refuses exactly what
    /// the decoder refuses, appending nothing, and never panics.
    #[test]
    fn unconstrained_fields_are_refused_not_panicked_on(
        ints in any::<(u32, u64, u64, u32, u64)>(),
        small in any::<(u8, u16)>(),
        pick in 0u8..5,
        n in 0usize..300,
        msg_len in 1000usize..1100,
    ) {
        let (a, b, c, d, e) = ints;
        let f = match pick {
            0 => Frame::Get(Get { req_id: a, handle: a, version: b, first_block: c, block_count: d % 1100 }),
            1 => Frame::LocateRequest(LocateRequest { req_id: a, handle: a, first_block: b, block_count: c % 5 }),
            2 => Frame::Info(Info {
                req_id: a, handle: d, size: b >> (small.0 % 64), block_size: d >> (small.1 % 32),
                algo: DigestAlgo::Sha256, version: e, mtime_unix_secs: 0,
                digest_start: c >> (small.1 % 64), digests: Bytes::from(vec![0; 32 * (n % 8)]),
            }),
            3 => Frame::Have(Have { handle: a, version: b, ranges: vec![BlockRange { start: c >> (small.0 % 64), count: e >> (small.1 % 64) }; n] }),
            _ => Frame::Error(ErrorFrame { req_id: a, code: ErrorCode::Busy, message: "m".repeat(msg_len).into() }),
        };
        let mut out = BytesMut::from(&b"prefix"[..]);
        match encode(&f, &mut out) {
            Ok(()) => {
                let mut frame = out.split_off(6);
                prop_assert_eq!(Decoder::new().decode(&mut frame), Ok(Some(f.clone())));
            }
            Err(_) => {
                prop_assert_eq!(&out[..], b"prefix");
                // The same fields written by hand must be refused by the decoder too.
                if let Some(raw) = raw_layout(&f) {
                    prop_assert!(Decoder::new().decode(&mut BytesMut::from(&raw[..])).is_err());
                }
            }
        }
    }
}

/// Every split point of a short stream, two chunks each: exhaustive rather than sampled.
#[test]
fn every_split_point_decodes_the_same() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(96));
    runner
        .run(&vec(frame(SMALL), 1..4), |frames| {
            let bytes = encode_all(&frames);
            // Chunk sizes [split, len] mean: `split` bytes, then the rest. Split 0 and
            // the full length are the same single chunk.
            for split in 1..=bytes.len() {
                let (got, err) = feed(&bytes, &[split, bytes.len()]);
                prop_assert_eq!(err, None);
                prop_assert_eq!(&got, &frames);
            }
            Ok(())
        })
        .expect("split property");
}

/// The wire layout of a few frame types written out by hand, independent of the
/// encoder, so out-of-limit values can be fed to the decoder.
fn raw_layout(f: &Frame) -> Option<Vec<u8>> {
    let mut p = BytesMut::new();
    let ty = match f {
        Frame::Get(g) => {
            p.put_u32(g.req_id);
            p.put_u32(g.handle);
            p.put_u64(g.version);
            p.put_u64(g.first_block);
            p.put_u32(g.block_count);
            frame_type::GET
        }
        Frame::LocateRequest(r) => {
            p.put_u32(r.req_id);
            p.put_u32(r.handle);
            p.put_u64(r.first_block);
            p.put_u64(r.block_count);
            frame_type::LOCATE_REQUEST
        }
        Frame::Info(i) => {
            p.put_u32(i.req_id);
            p.put_u32(i.handle);
            p.put_u64(i.size);
            p.put_u32(i.block_size);
            p.put_u8(i.algo.id());
            p.put_u64(i.version);
            p.put_i64(i.mtime_unix_secs);
            p.put_u64(i.digest_start);
            p.put_u32((i.digests.len() / i.algo.len()) as u32);
            p.put_slice(&i.digests);
            frame_type::INFO
        }
        Frame::Have(h) => {
            p.put_u32(h.handle);
            p.put_u64(h.version);
            p.put_u16(u16::try_from(h.ranges.len()).ok()?);
            for r in &h.ranges {
                p.put_u64(r.start);
                p.put_u64(r.count);
            }
            frame_type::HAVE
        }
        Frame::Error(e) => {
            p.put_u32(e.req_id);
            p.put_u16(e.code.to_u16());
            p.put_u16(u16::try_from(e.message.len()).ok()?);
            p.put_slice(e.message.as_bytes());
            frame_type::ERROR
        }
        _ => return None,
    };
    let mut out = vec![ty, 0];
    out.extend_from_slice(&u32::try_from(p.len()).ok()?.to_be_bytes());
    out.extend_from_slice(&p);
    Some(out)
}
