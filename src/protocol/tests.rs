use super::*;
use bytes::{Bytes, BytesMut};

pub(super) fn vector_frames() -> Vec<(&'static str, Frame)> {
    vec![
        (
            "Hello",
            Frame::Hello(Hello {
                version: PROTOCOL_VERSION,
                role: Role::Lhc,
                listen_port: 7070,
                capabilities: 0,
            }),
        ),
        (
            "InfoRequest",
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
        ),
        (
            "Info",
            Frame::Info(Info {
                req_id: 1,
                handle: 7,
                size: 40960,
                block_size: 16384,
                algo: crate::digest::DigestAlgo::Sha256,
                version: 3,
                mtime_unix_secs: 1_700_000_000,
                digest_start: 0,
                digests: Bytes::from([[0x11u8; 32], [0x22; 32], [0x33; 32]].concat()),
            }),
        ),
        (
            "LocateRequest",
            Frame::LocateRequest(LocateRequest {
                req_id: 2,
                handle: 7,
                first_block: 0,
                block_count: 3,
            }),
        ),
        (
            "Locate",
            Frame::Locate(Locate {
                req_id: 2,
                locations: vec![
                    Location {
                        addr: "192.0.2.10:7070".parse().unwrap(),
                        role: Role::Scc,
                        holds: Holds::All,
                    },
                    Location {
                        addr: "[2001:db8::1]:7071".parse().unwrap(),
                        role: Role::Lhc,
                        holds: Holds::Ranges(vec![BlockRange { start: 0, count: 2 }]),
                    },
                ],
            }),
        ),
        (
            "Get",
            Frame::Get(Get {
                req_id: 3,
                handle: 7,
                version: 3,
                first_block: 0,
                block_count: 2,
            }),
        ),
        (
            "Data",
            Frame::Data(Data {
                req_id: 3,
                block: 0,
                payload: Bytes::from_static(b"hello"),
            }),
        ),
        ("Cancel", Frame::Cancel { req_id: 3 }),
        (
            "Have",
            Frame::Have(Have {
                handle: 7,
                version: 3,
                ranges: vec![BlockRange { start: 0, count: 2 }],
            }),
        ),
        ("Ping", Frame::Ping(0x0102_0304_0506_0708)),
        ("Pong", Frame::Pong(0x0102_0304_0506_0708)),
        (
            "Error",
            Frame::Error(ErrorFrame {
                req_id: 4,
                code: ErrorCode::NotFound,
                message: "no such file".into(),
            }),
        ),
    ]
}

#[test]
fn print_vectors() {
    for (name, f) in vector_frames() {
        let mut b = BytesMut::new();
        encode(&f, &mut b).unwrap();
        println!("{name}: {}", hex::encode(&b));
    }
}
