//! The test vectors of `docs/PROTOCOL.md`: each encodes to its hex and decodes from it,
//! and the document lists exactly these.

use bytes::Bytes;

use super::helpers::*;
use crate::pure::digest::DigestAlgo;
use crate::pure::protocol::*;

/// The frames whose encodings `docs/PROTOCOL.md` lists as test vectors, with those
/// encodings. Changing one side without the other fails `vectors_*`.
pub(super) fn vectors() -> Vec<(Frame, &'static str)> {
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

const PROTOCOL_MD: &str = include_str!("../../../../docs/PROTOCOL.md");

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
