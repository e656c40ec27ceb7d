//! Tests of decoding: DATA headers, zero-copy payloads, frames split anywhere, and the
//! header-first error reporting the connection handlers rely on.

use bytes::{Bytes, BytesMut};

use super::helpers::*;
use super::vectors::vectors;
use crate::pure::protocol::limits::*;
use crate::pure::protocol::*;

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
