//! Criterion benchmarks of the server's pure hot paths: block digest verification per
//! algorithm and block size, digest index lookups, block-to-shard routing and the
//! per-shard memory cache. No sockets, no reactor: only the code every block passes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::time::Duration;

use bytes::Bytes;
use criterion::{
    black_box, criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use p2pd::disk::origin_index::FileIndex;
use p2pd::pure::digest::{DigestAlgo, ALL_ALGOS, MAX_DIGEST_BYTES};
use p2pd::pure::lru::{BlockCache, BlockKey};
use p2pd::pure::placement::{mix64, owner_of};
use p2pd::pure::protocol::limits::MIN_BLOCK_BYTES;

/// Block sizes an origin may plausibly publish with, from the protocol's minimum up.
const BLOCK_SIZES: [(usize, &str); 5] = [
    (16 << 10, "16KiB"),
    (64 << 10, "64KiB"),
    (256 << 10, "256KiB"),
    (1 << 20, "1MiB"),
    (4 << 20, "4MiB"),
];

/// Blocks in the benchmarked index, and keys in the benchmarked cache: a 4 GiB title at
/// 1 MiB blocks, so the digest region (128 KiB of SHA-256) has a realistic size.
const BLOCKS: u64 = 4096;

/// Digests in the benchmarked Info answer: the same count as the Info frame that
/// `benches/protocol.rs` encodes, so the two costs can be added up.
const INFO_DIGESTS: u64 = 1024;

/// Deterministic, incompressible-looking bytes. The content does not change what SHA-2
/// costs, but a buffer of zeros would make any wrong-digest bug easier to miss.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(&mix64(seed ^ i).to_le_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// The numbers `0..n` in a fixed shuffled order, so lookups defeat the prefetcher the
/// way a seeking player does, without pulling a random-number crate into the bench.
fn shuffled(n: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).collect();
    v.sort_by_key(|&i| mix64(i ^ 0x5eed));
    v
}

fn bench_verify(c: &mut Criterion) {
    let (largest, _) = BLOCK_SIZES[BLOCK_SIZES.len() - 1];
    let data = pseudo_random(largest, 1);
    for algo in ALL_ALGOS {
        let mut g = c.benchmark_group(format!("verify_{}", algo.name()));
        // 25 cases of up to several milliseconds each: short, flat sampling keeps the
        // whole matrix within a minute while the large blocks still get ten samples.
        g.sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        for (size, label) in BLOCK_SIZES {
            let block = &data[..size];
            let mut out = [0u8; MAX_DIGEST_BYTES];
            let expected = algo.digest_into(block, &mut out).to_vec();
            // A benchmark of a verify that always said yes (or no) would look fast and
            // mean nothing: check both answers before timing either.
            assert!(
                algo.verify(block, &expected),
                "{} rejects its own digest",
                algo.name()
            );
            let mut wrong = expected.clone();
            wrong[0] ^= 1;
            assert!(
                !algo.verify(block, &wrong),
                "{} accepts a wrong digest",
                algo.name()
            );
            assert!(
                !algo.verify(block, &expected[1..]),
                "{} accepts a short digest",
                algo.name()
            );
            g.throughput(Throughput::Bytes(size as u64));
            g.bench_with_input(BenchmarkId::from_parameter(label), &block, |b, block| {
                b.iter(|| algo.verify(black_box(block), black_box(&expected)))
            });
        }
        g.finish();
    }
}

fn bench_index(c: &mut Criterion) {
    // The smallest block size the protocol allows keeps the source file (and the build,
    // which hashes all of it) small; lookups cost the same at any block size.
    let block_size = MIN_BLOCK_BYTES;
    let algo = DigestAlgo::Sha256;
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("title.bin");
    let ix_path = dir.path().join("title.idx");
    {
        // Each block starts with its own number, so no two blocks share a digest and a
        // lookup returning the wrong block's digest fails the check below.
        let mut w = BufWriter::new(File::create(&src).expect("create source"));
        let mut block = pseudo_random(block_size as usize, 2);
        for i in 0..BLOCKS {
            block[..8].copy_from_slice(&i.to_le_bytes());
            w.write_all(&block).expect("write source");
        }
        w.flush().expect("flush source");
    }
    // FileIndex::build is synchronous (the publisher runs it on a hasher thread), so
    // setup calls it directly, then reopens the index as a restarted server would.
    let built = FileIndex::build(&src, &ix_path, block_size, algo).expect("build index");
    let ix = FileIndex::open_if_current(&ix_path, &built.stat, block_size, algo)
        .expect("open index")
        .expect("freshly built index is current");
    drop(built);
    assert_eq!(ix.block_count, BLOCKS);
    let content = std::fs::read(&src).expect("read source");
    for i in [0, 1, BLOCKS / 2, BLOCKS - 1] {
        let at = (i * u64::from(block_size)) as usize;
        let block = &content[at..at + ix.block_len(i)];
        assert!(
            algo.verify(block, ix.digest(i)),
            "index digest {i} is wrong"
        );
        assert!(!algo.verify(block, ix.digest((i + 1) % BLOCKS)));
    }
    assert_eq!(
        ix.digests(1000, INFO_DIGESTS),
        &ix.digests(0, BLOCKS)[1000 * algo.len()..(1000 + INFO_DIGESTS as usize) * algo.len()]
    );
    drop(content);

    let sequential: Vec<u64> = (0..BLOCKS).collect();
    let random = shuffled(BLOCKS);
    let mut g = c.benchmark_group("index_sha256_4096");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    // One iteration looks up every block once: a single lookup is a bounds check and a
    // multiply, too short to time alone without the loop dominating.
    g.throughput(Throughput::Elements(BLOCKS));
    for (name, order) in [
        ("digest_sequential", &sequential),
        ("digest_random", &random),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut acc = 0u8;
                for &i in order.iter() {
                    acc ^= black_box(ix.digest(black_box(i)))[0];
                }
                acc
            })
        });
    }
    // What an Info answer does: slice 1024 digests out of the map and copy them into the
    // frame's buffer. The start is unaligned, as a client's request may be.
    g.throughput(Throughput::Elements(INFO_DIGESTS));
    g.bench_function("digests_1024_copy", |b| {
        b.iter(|| Bytes::copy_from_slice(ix.digests(black_box(1000), black_box(INFO_DIGESTS))))
    });
    g.finish();
}

fn bench_routing(c: &mut Criterion) {
    const FILE_ID: u64 = 0x0123_4567_89ab_cdef;
    let mut g = c.benchmark_group("owner_of_4096");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(BLOCKS));
    for shards in [2usize, 8, 64] {
        // Every shard must own some of the sweep, or the routing is broken and the
        // numbers below are of a constant function.
        let mut owned = vec![0u64; shards];
        for i in 0..BLOCKS {
            owned[owner_of(FILE_ID, i, shards)] += 1;
        }
        assert!(owned.iter().all(|&n| n > 0), "{shards} shards: {owned:?}");
        g.bench_with_input(BenchmarkId::new("shards", shards), &shards, |b, &shards| {
            b.iter(|| {
                // The shard count is only known at run time in the server; hiding it
                // keeps the compiler from turning the modulo into a mask.
                let shards = black_box(shards);
                let mut acc = 0usize;
                for i in 0..BLOCKS {
                    acc = acc.wrapping_add(owner_of(black_box(FILE_ID), i, shards));
                }
                acc
            })
        });
    }
    g.finish();
}

fn bench_cache(c: &mut Criterion) {
    const BLOCK: usize = 256 << 10;
    const VERSION: u64 = 3;
    let key = |index| BlockKey {
        file_id: 7,
        version: VERSION,
        index,
    };
    // One shared buffer stands in for every block: the cache only counts its length,
    // so a full 1 GiB cache costs 256 KiB of real memory.
    let block = Bytes::from(pseudo_random(BLOCK, 3));
    let mut cache = BlockCache::new(BLOCKS * BLOCK as u64);
    for i in 0..BLOCKS {
        cache.insert(key(i), block.clone());
    }
    assert_eq!(
        cache.len(),
        BLOCKS as usize,
        "filling the cache evicted blocks"
    );
    assert_eq!(cache.get(&key(5)).expect("hit").len(), BLOCK);
    // A miss on the same file and index but an older content version: what a shard
    // sees the first time a block is asked for after the file was republished.
    let stale = |index| BlockKey {
        version: VERSION - 1,
        ..key(index)
    };
    assert!(cache.get(&stale(5)).is_none());

    let hits: Vec<BlockKey> = shuffled(BLOCKS).into_iter().map(key).collect();
    let misses: Vec<BlockKey> = shuffled(BLOCKS).into_iter().map(stale).collect();
    let mut g = c.benchmark_group("cache_get_4096");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(BLOCKS));
    // A hit also moves the key to the back of the LRU order and clones the buffer's
    // handle; dropping that clone at once is part of what the server pays.
    g.bench_function("hit", |b| {
        b.iter(|| {
            let mut found = 0usize;
            for k in &hits {
                found += black_box(cache.get(k)).is_some() as usize;
            }
            found
        })
    });
    g.bench_function("miss", |b| {
        b.iter(|| {
            let mut found = 0usize;
            for k in &misses {
                found += black_box(cache.get(k)).is_some() as usize;
            }
            found
        })
    });
    g.finish();
    assert_eq!(
        cache.len(),
        BLOCKS as usize,
        "lookups changed the cache's contents"
    );
}

criterion_group!(
    benches,
    bench_verify,
    bench_index,
    bench_routing,
    bench_cache
);
criterion_main!(benches);
