//! A client cache fetches ahead of its HTTP reader (`--read-ahead`; by default only
//! when the file has peers among its sources): after a player's first request the
//! rest of what it will need soon is fetched before it asks, each block once, within a
//! quarter of the disk limit; `--read-ahead 0`, a site cache, and a client cache whose
//! file has no peers fetch only what is asked for.

use std::time::Duration;

use crate::harness::*;

const BS: usize = 16 * 1024;
const SPP_SENT: &str = "p2pd_bytes_sent_total{proto=\"spp\"}";

fn diag(origin: &Origin, cache: &Cache) -> String {
    diagnose(&[("origin", origin), ("cache", cache)])
}

/// The player's first request: the first 100 bytes through the cache.
fn first_request(cache: &Cache, url: &str, data: &[u8]) {
    let r = try_proxy_request(cache.addr, None, "GET", url, "Range: bytes=0-99\r\n").unwrap();
    assert!(r.status == 206 && r.body == data[..100], "{r:?}");
}

#[test]
fn a_client_cache_fetches_ahead_of_its_reader_each_block_once() {
    let data = content(4 * 1024 * 1024, 3101);
    let blocks = data.len().div_ceil(BS) as u64;
    let origin = Origin::builder().file("ra.mp4", &data).start();
    // Given explicitly: by default a cache fetches ahead only with peers among the
    // file's sources.
    let cache = Cache::builder().args(&["--read-ahead", "20"]).start();
    let url = format!("http://{}/ra.mp4", origin.addr);
    first_request(&cache, &url, &data);
    // 20 s at the 8 Mbit/s a reader is taken to read at before it is measured is more
    // than the file: all of it comes ahead of the player.
    let all = wait_until(Duration::from_secs(10), || {
        cache.metric("p2pd_upstream_fetches_total") >= blocks
    });
    assert!(
        all,
        "{} of {blocks} blocks fetched ahead{}",
        cache.metric("p2pd_upstream_fetches_total"),
        diag(&origin, &cache)
    );
    // Each block once: what the player asked for and what was fetched ahead of it
    // are the same fetches.
    assert_eq!(
        origin.metric(SPP_SENT),
        data.len() as u64,
        "{}",
        diag(&origin, &cache)
    );
    // The player then finds the whole file held: nothing more from the origin.
    let r = try_proxy_request(cache.addr, None, "GET", &url, "").unwrap();
    assert!(r.status == 200 && r.body == data, "the body differs");
    assert_eq!(origin.metric(SPP_SENT), data.len() as u64);
    assert_eq!(cache.metric("p2pd_upstream_fetches_total"), blocks);
}

#[test]
fn fetching_ahead_stays_within_a_quarter_of_the_disk_limit() {
    let data = content(4 * 1024 * 1024, 3102);
    let origin = Origin::builder().file("rl.mp4", &data).start();
    let cache = Cache::builder()
        .args(&["-C", "1M", "--read-ahead", "20"])
        .start();
    let url = format!("http://{}/rl.mp4", origin.addr);
    first_request(&cache, &url, &data);
    // A quarter of 1 MiB is 16 blocks of 16 KiB, plus the one asked for.
    std::thread::sleep(Duration::from_secs(2));
    let fetched = cache.metric("p2pd_upstream_fetches_total");
    assert!(
        (2..=17).contains(&fetched),
        "{fetched} blocks fetched{}",
        diag(&origin, &cache)
    );
    // Streaming the file then holds the limit and fetches each block once (what was
    // fetched ahead is still there when the player comes to it).
    let r = try_proxy_request(cache.addr, None, "GET", &url, "").unwrap();
    assert!(r.status == 200 && r.body == data, "the body differs");
    assert_eq!(
        origin.metric(SPP_SENT),
        data.len() as u64,
        "{}",
        diag(&origin, &cache)
    );
    assert!(cache.metric("p2pd_disk_cache_bytes") <= 1024 * 1024);
}

#[test]
fn without_read_ahead_and_on_a_site_cache_only_what_is_asked_is_fetched() {
    let data = content(1024 * 1024, 3103);
    let origin = Origin::builder().file("rn.mp4", &data).start();
    let url = format!("http://{}/rn.mp4", origin.addr);
    for args in [
        &["--read-ahead", "0"][..],
        &["-n", "127.0.0.0/8"][..],
        // The default on a client cache, with no peer for the file.
        &[][..],
    ] {
        let cache = Cache::builder().args(args).start();
        first_request(&cache, &url, &data);
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(
            cache.metric("p2pd_upstream_fetches_total"),
            1,
            "{args:?}{}",
            diag(&origin, &cache)
        );
    }
}
