//! Unit tests: the test vectors of `docs/PROTOCOL.md`, one test per limit, and the
//! header-first error reporting the connection handlers rely on.

use bytes::{Bytes, BytesMut};

use super::limits::*;
use super::*;
use crate::pure::digest::DigestAlgo;

/// The frames whose encodings `docs/PROTOCOL.md` lists as test vectors, with those
/// encodings. Changing one side without the other fails `vectors_*`.
fn vectors() -> Vec<(Frame, &'static str)> {
    vec![
        (
            Frame::Hello(Hello {
                version: PROTOCOL_VERSION,
                role: Role::Lhc,
                listen_port: 7070,
                capabilities: 0,
            }),
            "01000000000d535050010001021b9e00000000",
        ),
        (
            Frame::InfoRequest(InfoRequest {
                req_id: 1,
                file: FileRef {
                    host: "cdn.example".into(),
                    port: 7070,
                    path: "video/a.mp4".into(),
                },
                digest_start: 0,
                digest_count: 16384,
            }),
            "02000000002b000000010b63646e2e6578616d706c651b9e000b766964656f2f612e6d7034000000000000000000004000",
        ),
        (
            Frame::Info(Info {
                req_id: 1,
                handle: 7,
                size: 40960,
                block_size: 16384,
                algo: DigestAlgo::Sha256,
                version: 3,
                mtime_unix_secs: 1_700_000_000,
                digest_start: 0,
                digests: Bytes::from([[0x11u8; 32], [0x22; 32], [0x33; 32]].concat()),
            }),
            "8200000000910000000100000007000000000000a00000004000010000000000000003000000006553f100000000000000000000000003\
             1111111111111111111111111111111111111111111111111111111111111111\
             2222222222222222222222222222222222222222222222222222222222222222\
             3333333333333333333333333333333333333333333333333333333333333333",
        ),
        (
            Frame::LocateRequest(LocateRequest {
                req_id: 2,
                handle: 7,
                first_block: 0,
                block_count: 3,
            }),
            "030000000018000000020000000700000000000000000000000000000003",
        ),
        (
            Frame::Locate(Locate {
                req_id: 2,
                locations: vec![
                    Location {
                        addr: "192.0.2.10:7070".parse().expect("literal address"),
                        role: Role::Scc,
                        holds: Holds::All,
                    },
                    Location {
                        addr: "[2001:db8::1]:7071".parse().expect("literal address"),
                        role: Role::Lhc,
                        holds: Holds::Ranges(vec![BlockRange { start: 0, count: 2 }]),
                    },
                ],
            }),
            "83000000003600000002000204c000020a1b9e01000620010db80000000000000000000000011b9f0201000100000000000000000000000000000002",
        ),
        (
            Frame::Get(Get {
                req_id: 3,
                handle: 7,
                version: 3,
                first_block: 0,
                block_count: 2,
            }),
            "04000000001c00000003000000070000000000000003000000000000000000000002",
        ),
        (
            Frame::Data(Data {
                req_id: 3,
                block: 0,
                payload: Bytes::from_static(b"hello"),
            }),
            "84000000001100000003000000000000000068656c6c6f",
        ),
        (Frame::Cancel { req_id: 3 }, "05000000000400000003"),
        (
            Frame::Have(Have {
                handle: 7,
                version: 3,
                ranges: vec![BlockRange { start: 0, count: 2 }],
            }),
            "06000000001e000000070000000000000003000100000000000000000000000000000002",
        ),
        (
            Frame::Holdings(Have {
                handle: 7,
                version: 3,
                ranges: vec![BlockRange { start: 2, count: 1 }],
            }),
            "09000000001e000000070000000000000003000100000000000000020000000000000001",
        ),
        (
            Frame::PeerReport(PeerReport {
                handle: 7,
                version: 3,
                problem: PeerProblem::BadData,
                peer: "192.0.2.20:7070".parse().expect("literal address"),
            }),
            "0800000000140000000700000000000000030204c00002141b9e",
        ),
        (Frame::Ping(0x0102_0304_0506_0708), "0700000000080102030405060708"),
        (Frame::Pong(0x0102_0304_0506_0708), "8700000000080102030405060708"),
        (
            Frame::Error(ErrorFrame {
                req_id: 4,
                code: ErrorCode::NotFound,
                message: "no such file".into(),
            }),
            "7f0000000014000000040001000c6e6f20737563682066696c65",
        ),
    ]
}

const PROTOCOL_MD: &str = include_str!("../../../docs/PROTOCOL.md");

fn enc(frame: &Frame) -> Result<BytesMut, EncodeError> {
    let mut b = BytesMut::new();
    encode(frame, &mut b)?;
    Ok(b)
}

/// Decodes one frame from exactly `bytes`, requiring nothing left over.
fn dec(bytes: &[u8]) -> Result<Option<Frame>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let r = Decoder::new().decode(&mut buf);
    if let Ok(Some(_)) = r {
        assert!(buf.is_empty(), "decoder left {} bytes", buf.len());
    }
    r
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("test hex is valid")
}

#[test]
fn vectors_encode_to_their_hex() {
    for (frame, hex) in vectors() {
        assert_eq!(hex::encode(enc(&frame).unwrap()), hex, "{}", frame.name());
    }
}

#[test]
fn vectors_decode_from_their_hex() {
    for (frame, hex) in vectors() {
        assert_eq!(dec(&unhex(hex)), Ok(Some(frame)));
    }
}

#[test]
fn vectors_are_in_protocol_md() {
    // The doc may wrap a vector over several lines inside a code block: compare with
    // whitespace removed.
    let doc: String = PROTOCOL_MD.split_whitespace().collect();
    for (frame, hex) in vectors() {
        assert!(
            doc.contains(hex),
            "docs/PROTOCOL.md lacks the {} vector {hex}",
            frame.name()
        );
    }
}

#[test]
fn data_header_matches_encode() {
    let h = encode_data_header(3, 0, 5);
    let mut whole = h.to_vec();
    whole.extend_from_slice(b"hello");
    assert_eq!(
        hex::encode(whole),
        "84000000001100000003000000000000000068656c6c6f"
    );
    assert!(try_encode_data_header(1, 0, MAX_BLOCK_BYTES as usize).is_ok());
    assert!(try_encode_data_header(1, 0, MAX_BLOCK_BYTES as usize + 1).is_err());
    assert!(try_encode_data_header(1, MAX_BLOCKS_PER_FILE, 1).is_err());
}

#[test]
#[should_panic(expected = "encode_data_header")]
fn data_header_over_limit_is_a_programmer_error() {
    let _ = encode_data_header(1, 0, MAX_BLOCK_BYTES as usize + 1);
}

#[test]
fn an_info_head_and_its_digests_are_the_frame_encode_writes() {
    for (size, count) in [(0u64, 0usize), (1 << 20, 4), (10 << 20, 40)] {
        let i = info(size, 256 * 1024, 0, count);
        let whole = enc(&Frame::Info(i.clone())).expect("valid Info");
        let mut head = BytesMut::new();
        encode_info_head(&i, &mut head).expect("valid Info");
        head.extend_from_slice(&i.digests);
        assert_eq!(head, whole);
    }
    // Refused exactly like encode, appending nothing.
    let bad = info(1 << 20, 256 * 1024, 0, 5);
    let mut out = BytesMut::from(&b"x"[..]);
    assert!(encode_info_head(&bad, &mut out).is_err() && enc(&Frame::Info(bad)).is_err());
    assert_eq!(&out[..], b"x");
}

#[test]
fn data_and_info_decode_zero_copy() {
    let frames = [
        Frame::Data(Data {
            req_id: 1,
            block: 9,
            payload: Bytes::from(vec![0xAB; 256 * 1024]),
        }),
        vectors().swap_remove(2).0,
    ];
    for frame in frames {
        let mut buf = enc(&frame).unwrap();
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let got = Decoder::new().decode(&mut buf).unwrap().unwrap();
        let bulk = match &got {
            Frame::Data(d) => d.payload.as_ptr(),
            Frame::Info(i) => i.digests.as_ptr(),
            _ => unreachable!("only bulk frames here"),
        };
        assert!(
            range.contains(&(bulk as usize)),
            "{} was copied",
            got.name()
        );
        assert_eq!(got, frame);
    }
}

#[test]
fn several_frames_in_one_buffer_and_byte_by_byte() {
    let mut all = BytesMut::new();
    for (frame, _) in vectors() {
        encode(&frame, &mut all).unwrap();
    }
    let want: Vec<Frame> = vectors().into_iter().map(|(f, _)| f).collect();

    let mut buf = all.clone();
    let mut d = Decoder::new();
    let mut got = Vec::new();
    while let Some(f) = d.decode(&mut buf).unwrap() {
        got.push(f);
    }
    assert_eq!(got, want);
    assert!(buf.is_empty());

    let mut buf = BytesMut::new();
    let mut d = Decoder::new();
    let mut got = Vec::new();
    for &b in all.iter() {
        assert!(d.wanted(&buf) > 0);
        buf.extend_from_slice(&[b]);
        while let Some(f) = d.decode(&mut buf).unwrap() {
            got.push(f);
        }
    }
    assert_eq!(got, want);
}

#[test]
fn header_announcing_4gib_fails_at_once_without_wanting_it() {
    for ty in [
        frame_type::DATA,
        frame_type::INFO,
        frame_type::GET,
        frame_type::LOCATE,
    ] {
        let mut buf = BytesMut::from(&[ty, 0, 0xFF, 0xFF, 0xFF, 0xFF][..]);
        let d = Decoder::new();
        assert_eq!(d.wanted(&buf), 0);
        let mut d = d;
        let cap = buf.capacity();
        assert!(matches!(
            d.decode(&mut buf),
            Err(DecodeError::TooLong {
                len: 0xFFFF_FFFF,
                ..
            })
        ));
        assert_eq!(buf.capacity(), cap, "decoder must not reserve");
    }
}

#[test]
fn wanted_is_capped_by_the_type_limit() {
    let mut d = Decoder::new();
    let mut buf = BytesMut::new();
    assert_eq!(d.wanted(&buf), FRAME_HEADER_LEN);
    buf.extend_from_slice(&[frame_type::DATA, 0]);
    assert_eq!(d.wanted(&buf), FRAME_HEADER_LEN - 2);
    let len = MAX_DATA_PAYLOAD_BYTES as u32;
    buf.extend_from_slice(&len.to_be_bytes());
    assert_eq!(d.wanted(&buf), MAX_DATA_PAYLOAD_BYTES);
    buf.extend_from_slice(&[0; 100]);
    assert_eq!(d.decode(&mut buf), Ok(None));
    assert_eq!(d.wanted(&buf), MAX_DATA_PAYLOAD_BYTES - 100);

    // One byte over the limit of the type is refused, for every type.
    for ty in 0..=u8::MAX {
        let Some((kind, _, max)) = payload_bounds(ty) else {
            assert_eq!(dec(&[ty]), Err(DecodeError::UnknownType(ty)));
            continue;
        };
        let mut h = vec![ty, 0];
        h.extend_from_slice(&(max as u32 + 1).to_be_bytes());
        assert_eq!(
            dec(&h),
            Err(DecodeError::TooLong {
                kind,
                len: max + 1,
                max
            })
        );
        assert!(max <= MAX_DATA_PAYLOAD_BYTES);
        if ty != frame_type::INFO && ty != frame_type::DATA {
            assert!(max <= MAX_CONTROL_PAYLOAD_BYTES, "{kind}");
        }
    }
}

#[test]
fn header_errors_come_before_the_payload() {
    assert_eq!(dec(&[0x42]), Err(DecodeError::UnknownType(0x42)));
    assert_eq!(dec(&[frame_type::PING, 1]), Err(DecodeError::BadFlags(1)));
    // A fixed-size frame with a wrong length is refused from the header alone.
    assert_eq!(
        dec(&[frame_type::PING, 0, 0, 0, 0, 7]),
        Err(DecodeError::Truncated("Ping"))
    );
    assert!(matches!(
        dec(&[frame_type::PING, 0, 0, 0, 0, 9]),
        Err(DecodeError::TooLong { .. })
    ));
    // The Hello magic is checked as soon as its first wrong byte is in.
    assert_eq!(
        dec(&[1, 0, 0, 0, 0, 13, b'S', b'X']),
        Err(DecodeError::BadMagic)
    );
    assert_eq!(dec(&[1, 0, 0, 0, 0, 13, b'S', b'P']), Ok(None));
}

#[test]
fn decoder_stays_failed() {
    let mut d = Decoder::new();
    let mut buf = BytesMut::from(&[0x42u8][..]);
    assert!(d.decode(&mut buf).is_err());
    let mut good = enc(&Frame::Ping(1)).unwrap();
    assert_eq!(d.decode(&mut good), Err(DecodeError::UnknownType(0x42)));
    assert_eq!(d.wanted(&good), 0);
}

#[test]
fn hello_of_another_version_still_decodes() {
    // So a v1 server can answer a v2 client with Error UnsupportedVersion.
    let f = Frame::Hello(Hello {
        version: 2,
        role: Role::Client,
        listen_port: 0,
        capabilities: 0xFFFF_FFFF,
    });
    assert_eq!(dec(&enc(&f).unwrap()), Ok(Some(f)));
}

/// Encodes a valid frame, lets `mutate` corrupt its bytes, and returns the decode error.
fn corrupt(frame: Frame, mutate: impl FnOnce(&mut Vec<u8>)) -> DecodeError {
    let mut b = enc(&frame).unwrap().to_vec();
    mutate(&mut b);
    dec(&b).expect_err("corrupted frame must not decode")
}

fn set_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn set_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

fn info(size: u64, block_size: u32, start: u64, count: usize) -> Info {
    Info {
        req_id: 1,
        handle: 1,
        size,
        block_size,
        algo: DigestAlgo::Sha256,
        version: 1,
        mtime_unix_secs: 0,
        digest_start: start,
        digests: Bytes::from(vec![0u8; count * 32]),
    }
}

fn get(first_block: u64, block_count: u32) -> Frame {
    Frame::Get(Get {
        req_id: 1,
        handle: 1,
        version: 1,
        first_block,
        block_count,
    })
}

fn have(ranges: Vec<BlockRange>) -> Frame {
    Frame::Have(Have {
        handle: 1,
        version: 1,
        ranges,
    })
}

/// Every limit, from both sides: the encoder refuses it (appending nothing) and the
/// decoder rejects the bytes with an error.
#[test]
fn every_limit_is_an_error_both_ways() {
    let refused = |f: Frame| {
        let mut out = BytesMut::from(&b"keep"[..]);
        assert!(encode(&f, &mut out).is_err(), "{f:?} encoded");
        assert_eq!(&out[..], b"keep", "a refused frame appended bytes");
    };
    let lim = |e: DecodeError| assert!(matches!(e, DecodeError::LimitExceeded(_)), "{e:?}");
    let file = |host: &str, path: &str| {
        Frame::InfoRequest(InfoRequest {
            req_id: 1,
            file: FileRef {
                host: host.into(),
                port: 1,
                path: path.into(),
            },
            digest_start: 0,
            digest_count: 0,
        })
    };

    // Strings.
    refused(file(&"h".repeat(MAX_HOST_BYTES + 1), "p"));
    refused(file("h", &"p".repeat(MAX_PATH_BYTES + 1)));
    assert!(enc(&file(
        &"h".repeat(MAX_HOST_BYTES),
        &"p".repeat(MAX_PATH_BYTES)
    ))
    .is_ok());
    // path length field 4097 with the bytes present (room made by a long host).
    lim(corrupt(file("h", &"p".repeat(MAX_PATH_BYTES)), |b| {
        let at = FRAME_HEADER_LEN + 4 + 1 + 1 + 2;
        b[at..at + 2].copy_from_slice(&(MAX_PATH_BYTES as u16 + 1).to_be_bytes());
        b.push(b'p');
        let len = (b.len() - FRAME_HEADER_LEN) as u32;
        set_u32(b, 2, len);
    }));
    assert_eq!(
        corrupt(file("h", "p"), |b| b[FRAME_HEADER_LEN + 5] = 0xFF),
        DecodeError::BadUtf8
    );
    // No message can be too long: every constructor cuts on a character boundary.
    let long_msg = ErrorFrame::new(
        0,
        ErrorCode::Internal,
        "x".repeat(MAX_ERROR_MESSAGE_BYTES + 1),
    );
    assert_eq!(long_msg.message.len(), MAX_ERROR_MESSAGE_BYTES);
    assert!(enc(&Frame::Error(long_msg)).is_ok());
    for width in ["é", "€", "😀"] {
        for n in 0..=MAX_ERROR_MESSAGE_BYTES + 8 {
            let text = format!("{}{}", "x".repeat(n % 4), width.repeat(n / width.len() + 1));
            let cut = ErrorFrame::new(0, ErrorCode::Internal, text.as_str());
            assert!(cut.message.len() <= MAX_ERROR_MESSAGE_BYTES);
            assert!(text.starts_with(cut.message.as_str()));
            assert!(
                MAX_ERROR_MESSAGE_BYTES - cut.message.len() < 4 || cut.message.len() == text.len()
            );
            let owned = ErrorFrame::new(0, ErrorCode::Internal, text.clone());
            assert_eq!(owned, cut);
            assert!(enc(&Frame::Error(cut)).is_ok());
        }
    }

    // Info.
    refused(Frame::Info(info(1 << 20, MIN_BLOCK_BYTES - 4096, 0, 0)));
    refused(Frame::Info(info(1 << 20, MAX_BLOCK_BYTES + 4096, 0, 0)));
    refused(Frame::Info(info(1 << 20, MIN_BLOCK_BYTES + 1, 0, 0)));
    refused(Frame::Info(info(MAX_FILE_BYTES + 1, MIN_BLOCK_BYTES, 0, 0)));
    refused(Frame::Info(info(3 * 16384, 16384, 1, 3))); // past the last block
    refused(Frame::Info(Info {
        digests: Bytes::from(vec![0u8; 33]),
        ..info(1 << 30, 16384, 0, 0)
    }));
    refused(Frame::Info(info(
        MAX_FILE_BYTES,
        MIN_BLOCK_BYTES,
        0,
        MAX_DIGESTS_PER_INFO as usize + 1,
    )));
    assert!(enc(&Frame::Info(info(
        MAX_FILE_BYTES,
        MIN_BLOCK_BYTES,
        0,
        MAX_DIGESTS_PER_INFO as usize
    )))
    .is_ok());
    let ok_info = || Frame::Info(info(3 * 16384, 16384, 0, 3));
    let at = |field: usize| FRAME_HEADER_LEN + field;
    lim(corrupt(ok_info(), |b| set_u32(b, at(16), 20000))); // block_size
    lim(corrupt(ok_info(), |b| {
        set_u64(b, at(8), MAX_FILE_BYTES + 1)
    })); // size
    lim(corrupt(ok_info(), |b| set_u64(b, at(8), 2 * 16384))); // digests past the end
    lim(corrupt(ok_info(), |b| {
        set_u32(b, at(45), MAX_DIGESTS_PER_INFO + 1)
    }));
    assert_eq!(
        corrupt(ok_info(), |b| b[at(20)] = 99),
        DecodeError::BadDigestAlgo(99)
    );
    assert_eq!(
        corrupt(ok_info(), |b| set_u32(b, at(45), 2)),
        DecodeError::DigestBytesMismatch {
            expected: 64,
            got: 96
        }
    );
    // Sha224 digests are 28 bytes: 96 bytes is no whole number of them.
    assert!(matches!(
        corrupt(ok_info(), |b| b[at(20)] = DigestAlgo::Sha224.id()),
        DecodeError::DigestBytesMismatch { .. }
    ));

    // Get.
    refused(get(0, 0));
    refused(get(0, MAX_BLOCKS_PER_GET + 1));
    refused(get(MAX_BLOCKS_PER_FILE - 1, 2));
    refused(get(u64::MAX, 1));
    assert!(enc(&get(MAX_BLOCKS_PER_FILE - 1, 1)).is_ok());
    assert!(enc(&get(0, MAX_BLOCKS_PER_GET)).is_ok());
    lim(corrupt(get(0, 1), |b| set_u32(b, at(24), 0)));
    lim(corrupt(get(0, 1), |b| {
        set_u32(b, at(24), MAX_BLOCKS_PER_GET + 1)
    }));
    lim(corrupt(get(0, 1), |b| set_u64(b, at(16), u64::MAX)));

    // LocateRequest.
    let locreq = |first_block, block_count| {
        Frame::LocateRequest(LocateRequest {
            req_id: 1,
            handle: 1,
            first_block,
            block_count,
        })
    };
    refused(locreq(0, 0));
    refused(locreq(1, u64::MAX));
    lim(corrupt(locreq(0, 1), |b| set_u64(b, at(16), u64::MAX)));

    // Data.
    refused(Frame::Data(Data {
        req_id: 1,
        block: 0,
        payload: Bytes::from(vec![0u8; MAX_BLOCK_BYTES as usize + 1]),
    }));
    refused(Frame::Data(Data {
        req_id: 1,
        block: MAX_BLOCKS_PER_FILE,
        payload: Bytes::new(),
    }));
    let data = Frame::Data(Data {
        req_id: 1,
        block: 0,
        payload: Bytes::new(),
    });
    lim(corrupt(data, |b| set_u64(b, at(4), MAX_BLOCKS_PER_FILE)));

    // Ranges (Have and Locate share them).
    let r = |start, count| BlockRange { start, count };
    refused(have(vec![r(0, 1); MAX_RANGES + 1]));
    refused(have(vec![r(0, 0)]));
    refused(have(vec![r(MAX_BLOCKS_PER_FILE, 1)]));
    assert!(enc(&have(vec![r(0, 1); MAX_RANGES])).is_ok());
    lim(corrupt(have(vec![r(0, 1)]), |b| set_u64(b, at(22), 0)));
    lim(corrupt(have(vec![r(0, 1)]), |b| {
        b[at(12)..at(14)].copy_from_slice(&[0x01, 0x01])
    }));

    // Locate.
    let loc = |holds| Location {
        addr: "[::1]:1".parse().expect("literal address"),
        role: Role::Origin,
        holds,
    };
    let locate = |locations| {
        Frame::Locate(Locate {
            req_id: 1,
            locations,
        })
    };
    refused(locate(vec![loc(Holds::All); MAX_LOCATIONS + 1]));
    assert!(enc(&locate(vec![loc(Holds::All); MAX_LOCATIONS])).is_ok());
    // 64 locations of 256 ranges each respect both counts but not the payload limit.
    refused(locate(vec![
        loc(Holds::Ranges(vec![r(0, 1); MAX_RANGES]));
        MAX_LOCATIONS
    ]));
    lim(corrupt(locate(vec![]), |b| {
        b[at(4)..at(6)].copy_from_slice(&[0, 65])
    }));
    let one = || locate(vec![loc(Holds::All)]);
    assert_eq!(corrupt(one(), |b| b[at(6)] = 5), DecodeError::BadAddress);
    assert_eq!(corrupt(one(), |b| b[at(25)] = 4), DecodeError::BadRole(4));
    assert_eq!(
        corrupt(one(), |b| b[at(26)] = 2),
        DecodeError::BadHoldsTag(2)
    );

    // PeerReport: a problem v1 does not define, a bad family, a length off the bounds.
    let report = || {
        Frame::PeerReport(PeerReport {
            handle: 1,
            version: 2,
            problem: PeerProblem::Unreachable,
            peer: "10.0.0.1:1111".parse().expect("literal address"),
        })
    };
    assert_eq!(
        corrupt(report(), |b| b[at(12)] = 3),
        DecodeError::BadPeerProblem(3)
    );
    assert_eq!(
        corrupt(report(), |b| b[at(13)] = 5),
        DecodeError::BadAddress
    );
    // An IPv6 family with only an IPv4 address behind it.
    assert!(matches!(
        corrupt(report(), |b| b[at(13)] = 6),
        DecodeError::Truncated(_)
    ));
    assert!(matches!(
        corrupt(report(), |b| {
            b.extend_from_slice(&[0; 13]);
            set_u32(b, 2, 33);
        }),
        DecodeError::TooLong {
            kind: "PeerReport",
            len: 33,
            max: 32
        }
    ));

    // Structure.
    assert_eq!(
        corrupt(Frame::Cancel { req_id: 1 }, |b| {
            b.push(0);
            set_u32(b, 2, 5);
        }),
        DecodeError::TooLong {
            kind: "Cancel",
            len: 5,
            max: 4
        }
    );
    assert_eq!(
        corrupt(have(vec![]), |b| {
            b.push(0);
            set_u32(b, 2, 15);
        }),
        DecodeError::TrailingBytes
    );
    assert!(matches!(
        corrupt(have(vec![r(0, 1)]), |b| {
            b.truncate(b.len() - 1);
            set_u32(b, 2, 29);
        }),
        DecodeError::Truncated(_)
    ));
    assert_eq!(
        corrupt(
            Frame::Hello(Hello {
                version: 1,
                role: Role::Origin,
                listen_port: 0,
                capabilities: 0
            }),
            |b| { b[FRAME_HEADER_LEN + 3] = 2 }
        ),
        DecodeError::BadMagic
    );
    assert_eq!(
        corrupt(
            Frame::Hello(Hello {
                version: 1,
                role: Role::Origin,
                listen_port: 0,
                capabilities: 0
            }),
            |b| { b[FRAME_HEADER_LEN + 6] = 7 }
        ),
        DecodeError::BadRole(7)
    );
}

#[test]
fn error_codes_round_trip_and_read_well() {
    for v in 0..=u16::MAX {
        assert_eq!(ErrorCode::from_u16(v).to_u16(), v);
    }
    assert_eq!(ErrorCode::from_u16(1), ErrorCode::NotFound);
    assert_eq!(ErrorCode::from_u16(9), ErrorCode::UnsupportedVersion);
    assert_eq!(ErrorCode::from_u16(10), ErrorCode::Other(10));
    assert_eq!(ErrorCode::Internal.to_string(), "internal error");
    assert_eq!(ErrorCode::NotCachedHere.to_string(), "not cached here");
    assert_eq!(ErrorCode::Other(300).to_string(), "error 300");
}

#[test]
fn roles_round_trip() {
    for r in [Role::Origin, Role::Scc, Role::Lhc, Role::Client] {
        assert_eq!(Role::from_u8(r.to_u8()), Some(r));
    }
    assert_eq!(Role::from_u8(4), None);
}

#[test]
fn sniffing_tells_http_from_spp() {
    for m in [&b"GET /"[..], b"HEAD /", b"OPTIONS *"] {
        assert_eq!(sniff(m[0]), Sniffed::Http);
    }
    for ty in 0..=u8::MAX {
        if type_name(ty).is_some() {
            assert_eq!(
                sniff(ty),
                Sniffed::Spp,
                "frame type 0x{ty:02x} looks like HTTP"
            );
        }
    }
}

#[test]
fn frame_helpers() {
    let (f, _) = vectors().swap_remove(5);
    assert_eq!(
        (f.name(), f.frame_type(), f.req_id()),
        ("Get", 0x04, Some(3))
    );
    assert_eq!(Frame::Ping(1).req_id(), None);
    let Frame::Info(i) = vectors().swap_remove(2).0 else {
        unreachable!("vector 2 is Info")
    };
    assert_eq!((i.digest_count(), i.block_count()), (3, 3));
    assert_eq!(i.digest(1), Some(&[0x22u8; 32][..]));
    assert_eq!(i.digest(3), None);
    assert_eq!(i.digest(usize::MAX), None);
}

#[test]
fn req_id_zero_is_only_for_connection_errors() {
    for (frame, _) in vectors() {
        let Some(_) = frame.req_id() else { continue };
        let mut zero = frame.clone();
        match &mut zero {
            Frame::InfoRequest(f) => f.req_id = 0,
            Frame::Info(f) => f.req_id = 0,
            Frame::LocateRequest(f) => f.req_id = 0,
            Frame::Locate(f) => f.req_id = 0,
            Frame::Get(f) => f.req_id = 0,
            Frame::Data(f) => f.req_id = 0,
            Frame::Cancel { req_id } => *req_id = 0,
            Frame::Error(f) => {
                f.req_id = 0;
                assert!(enc(&zero).is_ok());
                continue;
            }
            _ => unreachable!("frames without req_id were skipped"),
        }
        assert!(
            matches!(enc(&zero), Err(EncodeError::Invalid(_))),
            "{}",
            frame.name()
        );
        // Zero the id in the bytes: it sits right after the header in every such frame.
        assert_eq!(
            corrupt(frame, |b| set_u32(b, FRAME_HEADER_LEN, 0)),
            DecodeError::ZeroReqId
        );
    }
    assert!(try_encode_data_header(0, 0, 1).is_err());
}

#[test]
fn version_negotiation() {
    assert_eq!(negotiate_version(0), None);
    assert_eq!(negotiate_version(1), Some(1));
    assert_eq!(negotiate_version(7), Some(1));
}
