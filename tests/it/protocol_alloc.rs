//! Measures what the SPP decoder allocates, with a counting global allocator: a length
//! field must never buy an allocation, only bytes that actually arrived may.
//!
//! The allocator is the whole test binary's, and other tests allocate in their own
//! threads meanwhile, so it counts only on the measuring thread, while that thread's
//! flag is set.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::BytesMut;
use p2pd::pure::protocol::{frame_type, limits, Decoder};
use proptest::prelude::*;

/// Forwards to the system allocator; on a thread that is measuring, remembers the
/// largest single request.
struct LargestAlloc;

thread_local! {
    /// Whether this thread is measuring, and the largest request it made since it began.
    /// Const-initialised cells without destructors: reading them never allocates.
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

/// Records a request of `size` bytes if this thread is measuring.
fn note(size: usize) {
    // `try_with`: a thread being torn down may still allocate.
    let _ = MEASURING.try_with(|m| {
        if m.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the contract;
// the bookkeeping touches thread-local cells only and never allocates.
unsafe impl GlobalAlloc for LargestAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: our caller's guarantees, passed on to `System` unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: our caller's guarantees, passed on to `System` unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: our caller's guarantees, passed on to `System` unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: our caller's guarantees, passed on to `System` unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: LargestAlloc = LargestAlloc;

/// Largest single allocation made while decoding `input` to its end or first error.
fn largest_alloc_decoding(input: &[u8]) -> usize {
    let mut buf = BytesMut::from(input);
    let mut d = Decoder::new();
    LARGEST.set(0);
    MEASURING.set(true);
    while let Ok(Some(frame)) = d.decode(&mut buf) {
        drop(frame);
    }
    let _ = d.wanted(&buf);
    MEASURING.set(false);
    LARGEST.get()
}

/// Decoded values may take more room than their wire form (a 9-byte Location becomes a
/// ~64-byte struct), but only in proportion to bytes present.
fn bound(input_len: usize) -> usize {
    16 * input_len + 64
}

fn header(ty: u8, len: u32) -> Vec<u8> {
    let mut h = vec![ty, 0];
    h.extend_from_slice(&len.to_be_bytes());
    h
}

#[test]
fn decoder_allocates_only_for_bytes_that_arrived() {
    // Lying lengths: the largest each type allows, with only a few bytes present.
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for ty in [
        frame_type::DATA,
        frame_type::INFO,
        frame_type::LOCATE,
        frame_type::HAVE,
    ] {
        for len in [u32::MAX, limits::MAX_DATA_PAYLOAD_BYTES as u32, 65_536] {
            let mut c = header(ty, len);
            c.extend_from_slice(&[0u8; 40]);
            cases.push(c);
        }
    }
    // Counts that promise many entries in a frame too short to hold them.
    let mut locate = header(frame_type::LOCATE, 6 + 9);
    locate.extend_from_slice(&[0, 0, 0, 1, 0, 64, 4, 127, 0, 0, 1, 0, 1, 0, 0]);
    cases.push(locate);
    let mut have = header(frame_type::HAVE, 14);
    have.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0]);
    cases.push(have);
    for c in &cases {
        let got = largest_alloc_decoding(c);
        assert!(
            got <= bound(c.len()),
            "{got} bytes allocated for {} input bytes: {c:02x?}",
            c.len()
        );
    }

    // The counter works: a real 1000-byte message is allocated for.
    let mut error = header(frame_type::ERROR, 8 + 1000);
    error.extend_from_slice(&[0, 0, 0, 1, 0, 1, 0x03, 0xE8]);
    error.extend_from_slice(&[b'm'; 1000]);
    assert!(largest_alloc_decoding(&error) >= 1000);

    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(2000));
    runner
        .run(
            &(
                proptest::sample::select(vec![
                    frame_type::DATA,
                    frame_type::INFO,
                    frame_type::LOCATE,
                    frame_type::HAVE,
                    frame_type::INFO_REQUEST,
                    frame_type::ERROR,
                ]),
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..512),
            ),
            |(ty, len, payload)| {
                let mut input = header(ty, len % 2048);
                input.extend_from_slice(&payload);
                let got = largest_alloc_decoding(&input);
                prop_assert!(
                    got <= bound(input.len()),
                    "{} bytes for {} input bytes",
                    got,
                    input.len()
                );
                Ok(())
            },
        )
        .expect("allocation bound");
}
