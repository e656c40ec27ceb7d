//! Criterion benchmarks of the SPP v1 codec: the hot frames of a transfer (Get, a
//! 256 KiB Data block, an Info of 1024 SHA-256 digests), each encoded and decoded.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use p2pd::pure::digest::DigestAlgo;
use p2pd::pure::protocol::{encode, encode_data_header, Data, Decoder, Frame, Get, Info};

fn encoded(frame: &Frame) -> BytesMut {
    let mut b = BytesMut::new();
    encode(frame, &mut b).expect("valid frame");
    b
}

fn bench_get(c: &mut Criterion) {
    let frame = Frame::Get(Get {
        req_id: 42,
        handle: 7,
        version: 3,
        first_block: 1000,
        block_count: 64,
    });
    let wire = encoded(&frame);
    let mut g = c.benchmark_group("get");
    g.throughput(Throughput::Elements(1));
    let mut out = BytesMut::with_capacity(4096);
    g.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            encode(black_box(&frame), &mut out).expect("valid frame");
        })
    });
    let mut dec = Decoder::new();
    let mut buf = BytesMut::with_capacity(4096);
    g.bench_function("decode", |b| {
        b.iter(|| {
            // Reuses the buffer's allocation: what a connection's read loop does.
            buf.extend_from_slice(&wire);
            black_box(dec.decode(&mut buf).expect("valid").expect("complete"))
        })
    });
    g.finish();
}

fn bench_data(c: &mut Criterion) {
    const BLOCK: usize = 256 * 1024;
    let payload = Bytes::from(vec![0x5Au8; BLOCK]);
    let frame = Frame::Data(Data {
        req_id: 42,
        block: 1000,
        payload: payload.clone(),
    });
    let wire = encoded(&frame);
    let mut g = c.benchmark_group("data_256k");
    g.throughput(Throughput::Bytes(BLOCK as u64));
    g.bench_function("encode_header_only", |b| {
        // The send path: header built apart, the cached block goes out by writev.
        b.iter(|| black_box(encode_data_header(42, black_box(1000), BLOCK)))
    });
    let mut out = BytesMut::with_capacity(BLOCK + 64);
    g.bench_function("encode_copying", |b| {
        b.iter(|| {
            out.clear();
            encode(black_box(&frame), &mut out).expect("valid frame");
        })
    });
    let mut dec = Decoder::new();
    g.bench_function("decode_zero_copy", |b| {
        // The copy into a fresh buffer stands in for the socket read and is not timed:
        // decoding itself only splits the buffer.
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |mut buf| black_box(dec.decode(&mut buf).expect("valid").expect("complete")),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn bench_info(c: &mut Criterion) {
    const DIGESTS: usize = 1024;
    let algo = DigestAlgo::Sha256;
    let frame = Frame::Info(Info {
        req_id: 42,
        handle: 7,
        size: 1 << 30,
        block_size: 1 << 20,
        algo,
        version: 3,
        mtime_unix_secs: 1_700_000_000,
        digest_start: 0,
        digests: Bytes::from(vec![0xA5u8; DIGESTS * algo.len()]),
    });
    let wire = encoded(&frame);
    let mut g = c.benchmark_group("info_1024_sha256");
    g.throughput(Throughput::Elements(DIGESTS as u64));
    let mut out = BytesMut::with_capacity(wire.len() + 64);
    g.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            encode(black_box(&frame), &mut out).expect("valid frame");
        })
    });
    let mut dec = Decoder::new();
    g.bench_function("decode", |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |mut buf| black_box(dec.decode(&mut buf).expect("valid").expect("complete")),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_get, bench_data, bench_info);
criterion_main!(benches);
