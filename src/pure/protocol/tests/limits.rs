//! One test per limit, from both sides: the encoder refuses it and the decoder rejects
//! its bytes.

use bytes::{Bytes, BytesMut};

use super::helpers::*;
use crate::pure::digest::DigestAlgo;
use crate::pure::protocol::limits::*;
use crate::pure::protocol::*;

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
