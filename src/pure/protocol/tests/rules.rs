//! Tests of the protocol's smaller rules: error codes and roles, sniffing HTTP from
//! SPP, frame helpers, request id 0, version negotiation.

use super::helpers::*;
use super::vectors::vectors;
use crate::pure::protocol::*;

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
