//! Helpers of the protocol tests: encoding and decoding one frame, hex, corrupting
//! encoded bytes, and small frames to build on.

use bytes::{Bytes, BytesMut};

use crate::pure::digest::DigestAlgo;
use crate::pure::protocol::*;

pub(super) fn enc(frame: &Frame) -> Result<BytesMut, EncodeError> {
    let mut b = BytesMut::new();
    encode(frame, &mut b)?;
    Ok(b)
}

/// Decodes one frame from exactly `bytes`, requiring nothing left over.
pub(super) fn dec(bytes: &[u8]) -> Result<Option<Frame>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let r = Decoder::new().decode(&mut buf);
    if let Ok(Some(_)) = r {
        assert!(buf.is_empty(), "decoder left {} bytes", buf.len());
    }
    r
}

pub(super) fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("test hex is valid")
}

/// Encodes a valid frame, lets `mutate` corrupt its bytes, and returns the decode error.
pub(super) fn corrupt(frame: Frame, mutate: impl FnOnce(&mut Vec<u8>)) -> DecodeError {
    let mut b = enc(&frame).unwrap().to_vec();
    mutate(&mut b);
    dec(&b).expect_err("corrupted frame must not decode")
}

pub(super) fn set_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

pub(super) fn set_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

pub(super) fn info(size: u64, block_size: u32, start: u64, count: usize) -> Info {
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

pub(super) fn get(first_block: u64, block_count: u32) -> Frame {
    Frame::Get(Get {
        req_id: 1,
        handle: 1,
        version: 1,
        first_block,
        block_count,
    })
}

pub(super) fn have(ranges: Vec<BlockRange>) -> Frame {
    Frame::Have(Have {
        handle: 1,
        version: 1,
        ranges,
    })
}
