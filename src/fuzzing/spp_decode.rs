//! The `spp_decode` fuzz target: the SPP decoder on arbitrary bytes, in arbitrary
//! chunks, with every decoded frame checked against the bytes it came from.

use bytes::BytesMut;

use crate::pure::protocol::limits::{
    MAX_BLOCKS_PER_FILE, MAX_BLOCK_BYTES, MAX_FILE_BYTES, MAX_FRAME_BYTES, MAX_LOCATIONS,
    MAX_RANGES,
};
use crate::pure::protocol::{
    encode, payload_bounds, try_encode_data_header, DecodeError, Decoder, Frame, Holds,
    DATA_HEADER_LEN, FRAME_HEADER_LEN,
};

/// What decoding a stream gave: the frames, the error that ended it (if any), and how
/// many input bytes the frames took.
#[derive(Debug, PartialEq)]
struct Decoded {
    frames: Vec<Frame>,
    error: Option<DecodeError>,
    consumed: usize,
}

/// The SPP decoder on arbitrary bytes. The first byte chooses how the rest arrives:
/// below 128, in chunks of `b + 1` bytes; from 128 on, in two parts split at a point
/// proportional to `b - 128`. The same bytes in one piece must decode to the same
/// frames and the same error. Every frame re-encodes to exactly the bytes it was read
/// from and decodes back to itself; the decoder never asks for more room than the
/// announced frame type allows, and collections it returns are sized by the bytes that
/// arrived, never by a count field alone.
pub fn spp_decode(data: &[u8]) {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let chunks: Vec<usize> = if mode < 128 {
        vec![usize::from(mode) + 1]
    } else {
        let split = stream.len() * usize::from(mode - 128) / 127;
        vec![split.max(1), stream.len().max(1)]
    };
    let chunked = decode_stream(stream, &chunks);
    let whole = decode_stream(stream, &[stream.len().max(1)]);
    assert_eq!(
        chunked, whole,
        "decoding depends on how the bytes arrive (chunks {chunks:?})"
    );
}

/// Feeds `stream` to a decoder in `chunks` (cycled, the last size repeating), checking
/// every frame and the `wanted` contract at each step.
fn decode_stream(stream: &[u8], chunks: &[usize]) -> Decoded {
    let mut d = Decoder::new();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut fed = 0usize;
    let mut sizes = chunks
        .iter()
        .copied()
        .chain(std::iter::repeat(chunks.last().copied().unwrap_or(1)));
    loop {
        loop {
            let before = fed - buf.len();
            match d.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let after = fed - buf.len();
                    check_frame(&frame, &stream[before..after]);
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(e) => {
                    // A failed decoder stays failed, and wants nothing more.
                    assert_eq!(d.decode(&mut buf), Err(e.clone()));
                    assert_eq!(d.wanted(&buf), 0);
                    let _ = e.to_string();
                    return Decoded {
                        frames,
                        error: Some(e),
                        consumed: before,
                    };
                }
            }
        }
        let wanted = d.wanted(&buf);
        assert!(wanted > 0, "needs more bytes but wants none");
        assert!(
            buf.len() + wanted <= MAX_FRAME_BYTES,
            "wants past MAX_FRAME_BYTES"
        );
        if buf.len() >= FRAME_HEADER_LEN {
            let (_, _, max) = payload_bounds(buf[0]).expect("an accepted header has a type");
            assert!(
                buf.len() + wanted <= FRAME_HEADER_LEN + max,
                "wants past the frame type's limit"
            );
        }
        if fed == stream.len() {
            return Decoded {
                frames,
                error: None,
                consumed: fed - buf.len(),
            };
        }
        let n = sizes.next().unwrap_or(1).clamp(1, stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
    }
}

/// One decoded frame, read from `wire`: canonical, round-trips, sized by its bytes.
fn check_frame(frame: &Frame, wire: &[u8]) {
    let mut out = BytesMut::new();
    encode(frame, &mut out).expect("a decoded frame encodes");
    assert_eq!(&out[..], wire, "the encoding is not canonical");
    let mut again = out.clone();
    assert_eq!(Decoder::new().decode(&mut again), Ok(Some(frame.clone())));
    assert!(again.is_empty());
    assert!(!frame.name().is_empty());
    if !matches!(frame, Frame::Error(_)) {
        assert_ne!(frame.req_id(), Some(0), "request id 0 outside an Error");
    }
    // What a count field promised may only be allocated for entries that arrived:
    // a range takes 16 bytes on the wire, a location at least 9.
    let (ranges_room, locations_room) = (wire.len() / 16, wire.len() / 9);
    match frame {
        Frame::Data(f) => {
            assert!(f.payload.len() <= MAX_BLOCK_BYTES as usize);
            let head = try_encode_data_header(f.req_id, f.block, f.payload.len())
                .expect("a decoded Data header encodes");
            assert_eq!(&head[..], &wire[..DATA_HEADER_LEN]);
        }
        Frame::Info(f) => {
            assert_eq!(f.digests.len(), f.digest_count() * f.algo.len());
            assert!(f.block_count() <= MAX_BLOCKS_PER_FILE);
            assert!(f.size <= MAX_FILE_BYTES);
            if f.digest_count() > 0 {
                assert!(f.digest(f.digest_count() - 1).is_some());
            }
            assert!(f.digest(f.digest_count()).is_none());
        }
        Frame::Have(h) | Frame::Holdings(h) => {
            assert!(h.ranges.len() <= MAX_RANGES);
            assert!(h.ranges.capacity() <= ranges_room.min(MAX_RANGES));
        }
        Frame::Locate(l) => {
            assert!(l.locations.len() <= MAX_LOCATIONS);
            assert!(l.locations.capacity() <= locations_room.min(MAX_LOCATIONS));
            for loc in &l.locations {
                if let Holds::Ranges(r) = &loc.holds {
                    assert!(r.capacity() <= ranges_room.min(MAX_RANGES));
                }
            }
        }
        _ => {}
    }
}
