//! The cache roles (`p2pd -c DIR`): the client-side cache and HTTP proxy (LHC, no
//! `-n`) and the site cache (SCC, with `-n`), each as real processes on their own
//! loopback addresses in front of a real origin. Scenarios 1, 3, 5 and 6 of the
//! specification; integrity of the cache's disk (bit flips, zeroed and truncated
//! blocks, SIGKILL in the middle of a fill); the disk limit `-C`; request coalescing;
//! the SPP refusal an outsider gets from a site cache; 502/504 for upstreams that
//! refuse or stay silent.
//!
//! Every failure message carries the nodes' metrics and log tails (`diagnose`).
//! Randomised tests print their seed; `P2PD_TEST_SEED=N` replays one.
//!
//! Origins publish with 16 KiB blocks so small files have many blocks, and the
//! origin's `p2pd_bytes_sent_total{proto="spp"}` counts block payload only, so the
//! tests can say exactly how many bytes a cache had to fetch.
//!
//! Nodes that must name each other before they start (scenarios 3, 5, 6, the
//! hierarchy) listen on fixed ports of a /24 of the test's own (`subnet`), which also
//! gives the site (`-n`) and the outsiders' addresses; everything else is on fresh
//! addresses (`host`).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use p2pd::pure::protocol::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::harness::*;

const BS: usize = ORIGIN_BLOCK;
const SPP_SENT: &str = "p2pd_bytes_sent_total{proto=\"spp\"}";
const HTTP_SENT: &str = "p2pd_bytes_sent_total{proto=\"http\"}";
/// How long a counter may take to show what has already happened on the wire.
const SETTLE: Duration = Duration::from_secs(5);

/// Panics with the message and the diagnostics (metrics, log tails) of the named
/// nodes unless `cond` holds.
macro_rules! check {
    ($cond:expr, [$($n:ident),*], $($fmt:tt)+) => {
        if !$cond {
            panic!("{}{}", format!($($fmt)+), diagnose(&[$((stringify!($n), nref(&$n))),*]));
        }
    };
}

/// Unwraps a `Result<_, String>`, or panics with the context, the error and the
/// diagnostics of the named nodes.
macro_rules! ok {
    ($e:expr, [$($n:ident),*], $($fmt:tt)+) => {
        match $e {
            Ok(v) => v,
            Err(e) => panic!("{}: {}{}", format!($($fmt)+), e, diagnose(&[$((stringify!($n), nref(&$n))),*])),
        }
    };
}

/// Asserts `got == want` byte for byte, saying where they first differ.
macro_rules! check_bytes {
    ($got:expr, $want:expr, [$($n:ident),*], $($fmt:tt)+) => {
        if let Some(d) = differ(&$got, &$want) {
            panic!("{}: {}{}", format!($($fmt)+), d, diagnose(&[$((stringify!($n), nref(&$n))),*]));
        }
    };
}

/// Waits (up to SETTLE) for the counter `name` of `$node` to reach `$want`, then
/// asserts it is exactly `$want` (a counter that overshot never comes back).
macro_rules! check_metric_eq {
    ($node:ident . $name:expr, $want:expr, [$($n:ident),*], $($fmt:tt)+) => {{
        let want: u64 = $want;
        let mut got = 0;
        wait_until(SETTLE, || {
            got = $node.metric($name);
            got >= want
        });
        if got != want {
            panic!(
                "{}: {} of {} is {got}, expected exactly {want} ({:+}){}",
                format!($($fmt)+),
                $name,
                stringify!($node),
                got as i128 - want as i128,
                diagnose(&[$((stringify!($n), nref(&$n))),*])
            );
        }
    }};
}

/// Unwraps a request's `Result<Response, String>`, then asserts its status and its
/// body byte for byte; names the failing step with `$fmt` and the nodes' diagnostics.
/// Evaluates to the response.
macro_rules! fetch_ok {
    ($req:expr, $status:expr, $want:expr, [$($n:ident),*], $($fmt:tt)+) => {{
        let what = format!($($fmt)+);
        let r = ok!($req, [$($n),*], "{what}");
        check!(
            r.status == $status,
            [$($n),*],
            "{what}: status {}, expected {}: {}",
            r.status,
            $status,
            body_text(&r)
        );
        check_bytes!(r.body, $want, [$($n),*], "{what}");
        r
    }};
}

/// `&Node` from `&Node` or `&&Node` (a coercion site), for the macros above.
fn nref(n: &Node) -> &Node {
    n
}

fn nblocks(len: usize) -> usize {
    len.div_ceil(BS)
}

/// Length of block `i` of a `len`-byte file (the last one may be short).
fn block_len(len: usize, i: usize) -> usize {
    BS.min(len - i * BS)
}

/// Bytes a whole `len`-byte file takes in a cache's data file: direct I/O stores each
/// block padded to 4 KiB, and `p2pd_disk_cache_bytes` counts what the disk holds.
fn stored_bytes(len: usize) -> u64 {
    (0..nblocks(len))
        .map(|i| block_len(len, i).next_multiple_of(4096) as u64)
        .sum()
}

/// Bytes of the blocks that overlap `a..=b`: what a cache must fetch for that range.
fn overlap_bytes(len: usize, a: usize, b: usize) -> u64 {
    (a / BS..=b / BS).map(|i| block_len(len, i) as u64).sum()
}

/// `None` when equal, else where and how `got` differs from `want`.
fn differ(got: &[u8], want: &[u8]) -> Option<String> {
    if got == want {
        return None;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    Some(format!(
        "got {} bytes, expected {}; first difference at byte {first} (block {} at 16 KiB)",
        got.len(),
        want.len(),
        first / BS
    ))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// A request in origin form (`GET /path` with `Host: host`) to `addr`, optionally from
/// the source address `src`.
fn origin_form(
    addr: SocketAddr,
    src: Option<IpAddr>,
    method: &str,
    host: &str,
    path: &str,
    extra: &str,
) -> Result<Response, String> {
    let mut s = match src {
        Some(ip) => connect_from(ip, addr).map_err(|e| format!("connect from {ip}: {e}"))?,
        None => connect(addr),
    };
    let raw =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
    s.write_all(raw.as_bytes()).map_err(|e| e.to_string())?;
    try_read_response(&mut s, method == "HEAD")
        .map_err(|e| format!("{method} {path} (Host: {host}) to {addr}: {e}"))
}

/// A player's request through its proxy: absolute form, from the default source
/// address (127.0.0.1, local to every simulated host).
fn via(proxy: SocketAddr, url: &str, extra: &str) -> Result<Response, String> {
    try_proxy_request(proxy, None, "GET", url, extra)
        .map_err(|e| format!("GET {url} via {proxy}: {e}"))
}

fn body_text(r: &Response) -> String {
    String::from_utf8_lossy(&r.body[..r.body.len().min(300)]).to_string()
}

/// `curl` through `proxy` (or directly when `None`): returns (HTTP status, body).
/// `args` go before the URL (e.g. `-r 10-20`, `-H ...`, `--interface IP`).
fn curl_fetch(proxy: Option<SocketAddr>, args: &[&str], url: &str) -> (u16, Vec<u8>, String) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut a: Vec<String> = vec![
        "-sS".into(),
        "-o".into(),
        out.path().to_str().unwrap().into(),
        "-w".into(),
        "%{http_code}".into(),
    ];
    if let Some(p) = proxy {
        a.push("-x".into());
        a.push(format!("http://{p}"));
    }
    a.extend(args.iter().map(|s| s.to_string()));
    a.push(url.into());
    let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    let o = curl(&a);
    let code = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let body = std::fs::read(out.path()).unwrap_or_default();
    (code, body, String::from_utf8_lossy(&o.stderr).to_string())
}

/// Scenario 1: `p2pd -p /mediafiles` and an LHC `p2pd -c ...`; curl, ffprobe and
/// ffmpeg through `http_proxy` get exactly the published bytes, seeks included, and
/// a second viewing costs the origin nothing.
#[test]
fn scenario1_lhc_proxy_curl_ffmpeg_byte_identical_and_second_viewing_free() {
    require_tool("ffmpeg", &["-version"]);
    require_tool("ffprobe", &["-version"]);
    require_tool("curl", &["--version"]);
    let sample = tempfile::tempdir().unwrap();
    let local = sample.path().join("x.mp4");
    let local_s = local.to_str().unwrap();
    let g = run_tool(
        "ffmpeg",
        &[
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=duration=8:size=320x240:rate=25",
            "-c:v",
            "mpeg4",
            "-q:v",
            "5",
            "-y",
            local_s,
        ],
        &[],
        Duration::from_secs(120),
    );
    assert!(
        g.status.success(),
        "ffmpeg could not make the sample: {}",
        String::from_utf8_lossy(&g.stderr)
    );
    let data = std::fs::read(&local).unwrap();
    let size = data.len();
    assert!(size > 8 * BS, "sample is only {size} bytes");
    // The test relies on players reading the end first: the index (moov) must follow
    // the media data (mdat), as ffmpeg writes it without -movflags +faststart.
    let pos = |tag: &[u8]| data.windows(4).position(|w| w == tag);
    assert!(
        matches!((pos(b"mdat"), pos(b"moov")), (Some(a), Some(b)) if a < b),
        "the sample's moov atom is not at the end"
    );

    let origin = Origin::builder().file("x.mp4", &data).start();
    let lhc = Cache::builder().start();
    let url = format!("http://{}/x.mp4", origin.addr);
    let proxy_env = format!("http://{}", lhc.addr);
    let env = [("http_proxy", proxy_env.as_str())];

    let probe = |src: &str, env: &[(&str, &str)]| -> String {
        let o = run_tool(
            "ffprobe",
            &["-v", "error", "-show_format", "-show_streams", src],
            env,
            Duration::from_secs(60),
        );
        check!(
            o.status.success(),
            [origin, lhc],
            "ffprobe {src} (env {env:?}) failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.starts_with("filename="))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let md5 = |pre: &[&str], src: &str, env: &[(&str, &str)]| -> String {
        let mut a = vec!["-nostdin", "-v", "error"];
        a.extend_from_slice(pre);
        a.extend_from_slice(&["-i", src, "-map", "0", "-c", "copy", "-f", "md5", "-"]);
        let o = run_tool("ffmpeg", &a, env, Duration::from_secs(60));
        let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
        check!(
            o.status.success() && out.starts_with("MD5="),
            [origin, lhc],
            "ffmpeg {a:?} (env {env:?}) failed ({:?}): stdout {out:?} stderr {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        out
    };
    let probe_local = probe(local_s, &[]);
    assert!(probe_local.contains("codec_name=mpeg4"), "{probe_local}");
    let md5_local = md5(&[], local_s, &[]);
    let md5_local_mid = md5(&["-ss", "4"], local_s, &[]);
    let md5_local_end = md5(&["-ss", "7.5"], local_s, &[]);

    let viewing = |round: &str| {
        // curl -x: the whole file, a slice from the middle, the end, the last byte.
        let (code, body, err) = curl_fetch(Some(lhc.addr), &[], &url);
        check!(
            code == 200,
            [origin, lhc],
            "{round}: curl -x {url}: status {code}, {err}"
        );
        check_bytes!(body, data, [origin, lhc], "{round}: curl -x {url}");
        let a = size / 2 - 777;
        let b = a + 3 * BS + 5;
        for (range, want) in [
            (format!("{a}-{b}"), &data[a..=b]),
            ("-1000".to_string(), &data[size - 1000..]),
            (format!("{}-", size - 1), &data[size - 1..]),
        ] {
            let (code, body, err) = curl_fetch(Some(lhc.addr), &["-r", &range], &url);
            check!(
                code == 206,
                [origin, lhc],
                "{round}: curl -x -r {range}: status {code}, {err}"
            );
            check_bytes!(body, want, [origin, lhc], "{round}: curl -x -r {range}");
        }
        // ffprobe must read the moov at the end (a seek), ffmpeg everything, and
        // ffmpeg -ss seeks into the middle and near the end.
        let p = probe(&url, &env);
        check!(
            p == probe_local,
            [origin, lhc],
            "{round}: ffprobe through the proxy differs:\n{p}\n---- local file:\n{probe_local}"
        );
        for (pre, want) in [
            (&[][..], &md5_local),
            (&["-ss", "4"][..], &md5_local_mid),
            (&["-ss", "7.5"][..], &md5_local_end),
        ] {
            let got = md5(pre, &url, &env);
            check!(
                got == *want,
                [origin, lhc],
                "{round}: ffmpeg {pre:?} through the proxy: {got}, local file {want}"
            );
        }
    };

    viewing("first viewing");
    // The LHC proxied (the origin served no HTTP), fetching every block exactly once.
    check!(
        origin.metric(HTTP_SENT) == 0,
        [origin, lhc],
        "the origin served HTTP: the player bypassed the proxy"
    );
    check_metric_eq!(origin.SPP_SENT, size as u64, [origin, lhc], "first viewing");
    check_metric_eq!(
        lhc."p2pd_upstream_fetches_total",
        nblocks(size) as u64,
        [origin, lhc],
        "first viewing: each block fetched once"
    );

    // HEAD and an unsatisfiable range through the proxy.
    let h = ok!(
        try_proxy_request(lhc.addr, None, "HEAD", &url, ""),
        [origin, lhc],
        "HEAD via proxy"
    );
    check!(
        h.status == 200 && h.header("content-length") == Some(size.to_string().as_str()),
        [origin, lhc],
        "HEAD via proxy: {h:?}"
    );
    check!(
        h.header("etag").is_some() && h.header("accept-ranges") == Some("bytes"),
        [origin, lhc],
        "HEAD via proxy: no ETag or Accept-Ranges: {h:?}"
    );
    let r = ok!(
        via(lhc.addr, &url, &format!("Range: bytes={size}-\r\n")),
        [origin, lhc],
        "416"
    );
    check!(
        r.status == 416 && r.header("content-range") == Some(format!("bytes */{size}").as_str()),
        [origin, lhc],
        "Range past the end: {r:?}"
    );

    let fetches = lhc.metric("p2pd_upstream_fetches_total");
    viewing("second viewing");
    quiet_spell(Duration::from_millis(300));
    check!(
        origin.metric(SPP_SENT) == size as u64,
        [origin, lhc],
        "the second viewing made the origin send {} bytes in all, {size} after the first",
        origin.metric(SPP_SENT)
    );
    check!(
        lhc.metric("p2pd_upstream_fetches_total") == fetches,
        [origin, lhc],
        "the second viewing made the LHC fetch again"
    );
    check!(
        lhc.metric("p2pd_memory_cache_hits_total") + lhc.metric("p2pd_disk_cache_hits_total") > 0,
        [origin, lhc],
        "no cache hits reported for the second viewing"
    );
    check!(
        origin.metric(HTTP_SENT) == 0,
        [origin, lhc],
        "the origin served HTTP"
    );
}

/// Scenario 3: one origin listing two caches with `-l`; the caches run
/// `-A cdn.example.com -n 0.0.0.0/0 -S origin`. A range makes a cache fetch exactly the
/// blocks it overlaps; files added at the origin appear at the caches; other hosts
/// are refused.
#[test]
fn scenario3_two_caches_fetch_only_needed_blocks_and_see_new_files() {
    let data = content(64 * BS + 1234, 301);
    let size = data.len();
    let last_len = block_len(size, nblocks(size) - 1) as u64;

    let net = subnet();
    let (o_ip, c1_ip, c2_ip) = (net.ip(1), net.ip(2), net.ip(3));
    let origin = Origin::builder()
        .file("f.bin", &data)
        .args(&[
            "-l",
            &format!("{c1_ip}:1111"),
            "-l",
            &format!("{c2_ip}:1111"),
            "--rescan-interval",
            "200",
        ])
        .on(o_ip, 1111)
        .start();
    let parent = format!("{o_ip}:1111");
    let cache_extra = [
        "-A",
        "cdn.example.com",
        "-n",
        "0.0.0.0/0",
        "-S",
        parent.as_str(),
        "--info-ttl",
        "300",
    ];
    let c1 = Cache::builder().args(&cache_extra).on(c1_ip, 1111).start();
    let c2 = Cache::builder().args(&cache_extra).on(c2_ip, 1111).start();
    let host = "cdn.example.com:1111";

    // HEAD needs the file's info only: no block moves.
    let h = ok!(
        origin_form(c1.addr, None, "HEAD", host, "/f.bin", ""),
        [origin, c1],
        "HEAD"
    );
    check!(
        h.status == 200 && h.header("content-length") == Some(size.to_string().as_str()),
        [origin, c1],
        "HEAD /f.bin on c1: {h:?}"
    );
    quiet_spell(Duration::from_millis(200));
    check!(
        origin.metric(SPP_SENT) == 0,
        [origin, c1],
        "HEAD made the cache fetch blocks"
    );

    // One range in the middle: blocks 2..=4, nothing else.
    let r = ok!(
        origin_form(
            c1.addr,
            None,
            "GET",
            host,
            "/f.bin",
            "Range: bytes=40000-70000\r\n"
        ),
        [origin, c1],
        "range on c1"
    );
    check!(
        r.status == 206,
        [origin, c1],
        "Range 40000-70000 on c1: {r:?}"
    );
    check!(
        r.header("content-range") == Some(format!("bytes 40000-70000/{size}").as_str())
            && r.header("etag").is_some()
            && r.header("accept-ranges") == Some("bytes"),
        [origin, c1],
        "Range 40000-70000 on c1: headers {:?}",
        r.headers
    );
    check_bytes!(
        r.body,
        data[40000..=70000],
        [origin, c1],
        "Range 40000-70000 on c1"
    );
    let want = overlap_bytes(size, 40000, 70000);
    assert_eq!(want, 3 * BS as u64);
    check_metric_eq!(origin.SPP_SENT, want, [origin, c1], "one range on c1");
    check_metric_eq!(c1."p2pd_upstream_fetches_total", 3, [origin, c1], "one range on c1");

    // The last 100 bytes: only the short last block.
    fetch_ok!(
        origin_form(
            c1.addr,
            None,
            "GET",
            host,
            "/f.bin",
            "Range: bytes=-100\r\n"
        ),
        206,
        data[size - 100..],
        [origin, c1],
        "Range -100 on c1"
    );
    let held_by_c1 = want + last_len;
    check_metric_eq!(
        origin.SPP_SENT,
        held_by_c1,
        [origin, c1],
        "suffix range on c1"
    );

    // Unsatisfiable: 416, nothing fetched.
    let r = ok!(
        origin_form(
            c1.addr,
            None,
            "GET",
            host,
            "/f.bin",
            &format!("Range: bytes={size}-\r\n")
        ),
        [origin, c1],
        "416 on c1"
    );
    check!(
        r.status == 416,
        [origin, c1],
        "Range past the end on c1: {r:?}"
    );

    // c2, asked as a proxy, serves the whole file; it may take c1's blocks from c1.
    let url = format!("http://{host}/f.bin");
    fetch_ok!(
        via(c2.addr, &url, ""),
        200,
        data,
        [origin, c1, c2],
        "whole file from c2"
    );
    quiet_spell(Duration::from_millis(200));
    let sent = origin.metric(SPP_SENT) - held_by_c1;
    check!(
        sent >= size as u64 - held_by_c1 && sent <= size as u64,
        [origin, c1, c2],
        "c2's whole file cost the origin {sent} bytes, expected between {} and {size}",
        size as u64 - held_by_c1
    );

    // c1 completes its copy, fetching only the blocks it lacks.
    fetch_ok!(
        origin_form(c1.addr, None, "GET", host, "/f.bin", ""),
        200,
        data,
        [origin, c1, c2],
        "whole file from c1"
    );
    check_metric_eq!(
        c1."p2pd_upstream_fetches_total",
        nblocks(size) as u64,
        [origin, c1, c2],
        "c1 fetched each block once"
    );

    // A file that does not exist yet is 404; once added at the origin, both caches
    // serve it.
    let r = ok!(
        origin_form(c1.addr, None, "GET", host, "/g.bin", ""),
        [origin, c1],
        "missing"
    );
    check!(
        r.status == 404,
        [origin, c1],
        "a file missing at the origin: {r:?}"
    );
    let g = content(5 * BS + 99, 302);
    write_file(origin.dir(), "g.bin", &g);
    for (name, c) in [("c1", &c1), ("c2", &c2)] {
        let mut last = String::new();
        let served = wait_until(IO_DEADLINE, || {
            match origin_form(c.addr, None, "GET", host, "/g.bin", "") {
                Ok(r) if r.status == 200 && r.body == g => return true,
                Ok(r) => last = format!("{} {}", r.status, body_text(&r)),
                Err(e) => last = e,
            }
            false
        });
        check!(
            served,
            [origin, c1, c2],
            "{name} did not serve the new file within {IO_DEADLINE:?}; last answer: {last}"
        );
    }

    // Another host: refused by both caches, in both request forms; nothing moves.
    let before = origin.metric(SPP_SENT);
    for (name, c) in [("c1", &c1), ("c2", &c2)] {
        let r = ok!(
            origin_form(c.addr, None, "GET", "other.example.com:1111", "/f.bin", ""),
            [origin, c1, c2],
            "other host"
        );
        check!(
            r.status == 403,
            [origin, c1, c2],
            "{name}, Host other.example.com: {r:?}"
        );
        check!(
            !contains(&r.body, &data[..64]),
            [origin, c1, c2],
            "{name} leaked data"
        );
        let r = ok!(
            via(c.addr, "http://other.example.com:1111/g.bin", ""),
            [origin, c1, c2],
            "other host, proxy form"
        );
        check!(
            r.status == 403,
            [origin, c1, c2],
            "{name}, proxy form other.example.com: {r:?}"
        );
    }
    quiet_spell(Duration::from_millis(200));
    check!(
        origin.metric(SPP_SENT) == before,
        [origin, c1, c2],
        "refused requests made the origin send data"
    );
}

/// Scenario 5 (without -i): a site cache with `-n <site>` and site LHCs with
/// `-S cache`. Outsiders cannot make the site cache fetch, but get what it holds; an
/// LHC never fetches for a remote requester.
#[test]
fn scenario5_site_cache_serves_outsiders_only_what_it_holds() {
    let a = content(37 * BS + 5, 501);
    let b = content(9 * BS + 3, 502);
    let c = content(11 * BS + 7, 503);
    let d = content(4 * BS + 1, 504);
    let origin = Origin::builder()
        .file("a.bin", &a)
        .file("b.bin", &b)
        .file("c.bin", &c)
        .file("d.bin", &d)
        .start();
    let (site, outside) = (subnet(), subnet());
    let scc = Cache::builder()
        .args(&["-n", &site.cidr(), "--info-ttl", "60000"])
        .on(site.ip(1), 1111)
        .start();
    let parent = format!("{}:1111", site.ip(1));
    let lhc = |ip: IpAddr| Cache::builder().args(&["-S", &parent]).on(ip, 1111).start();
    let lhc2 = lhc(site.ip(2));
    let lhc3 = lhc(site.ip(3));
    let outsider = lhc(outside.ip(1));
    let url = |f: &str| format!("http://{}/{f}", origin.addr);
    let oh = origin.addr.to_string();

    // A site player: its LHC fetches through the site cache.
    fetch_ok!(
        via(lhc2.addr, &url("a.bin"), ""),
        200,
        a,
        [origin, scc, lhc2],
        "a.bin via a site LHC"
    );
    check_metric_eq!(
        origin.SPP_SENT,
        a.len() as u64,
        [origin, scc, lhc2],
        "a.bin"
    );
    // Another site player: the site cache has it, the origin sends nothing.
    fetch_ok!(
        via(lhc3.addr, &url("a.bin"), ""),
        200,
        a,
        [origin, scc, lhc3],
        "a.bin via the second LHC"
    );

    // An outside LHC (its connections leave from its own address) cannot make the site
    // cache fetch b.bin...
    let r = ok!(
        via(outsider.addr, &url("b.bin"), ""),
        [origin, scc, outsider],
        "b outside"
    );
    check!(
        r.status == 403,
        [origin, scc, outsider],
        "b.bin (not held by the site cache) via an outside LHC: expected 403, got {} {}",
        r.status,
        body_text(&r)
    );
    check!(
        !contains(&r.body, &b[..64]),
        [origin, scc, outsider],
        "b.bin leaked"
    );
    check!(
        scc.metric("p2pd_recursive_refused_total") > 0,
        [origin, scc, outsider],
        "the site cache did not count the refusal"
    );
    // ... but gets a.bin, which the site cache holds.
    fetch_ok!(
        via(outsider.addr, &url("a.bin"), ""),
        200,
        a,
        [origin, scc, outsider],
        "a.bin via an outside LHC"
    );
    quiet_spell(Duration::from_millis(200));
    check!(
        origin.metric(SPP_SENT) == a.len() as u64,
        [origin, scc, outsider],
        "the origin sent data for the outsider's requests"
    );

    // Directly, from an outside address: not held → 403 "not cached here"; held → 200.
    let scc_url = |f: &str| format!("http://{}/{f}", scc.addr);
    let host_h = format!("Host: {oh}");
    let (inside_ip, outside_ip) = (site.ip(9).to_string(), outside.ip(9).to_string());
    let (code, body, err) = curl_fetch(
        None,
        &["--interface", &outside_ip, "-H", &host_h],
        &scc_url("c.bin"),
    );
    check!(
        code == 403 && contains(&body, b"not cached here"),
        [origin, scc],
        "c.bin from outside, directly: {code} {:?} {err}",
        String::from_utf8_lossy(&body)
    );
    let (code, body, err) = curl_fetch(
        None,
        &["--interface", &outside_ip, "-H", &host_h],
        &scc_url("a.bin"),
    );
    check!(
        code == 200,
        [origin, scc],
        "a.bin from outside, directly: {code} {err}"
    );
    check_bytes!(body, a, [origin, scc], "a.bin from outside, directly");
    quiet_spell(Duration::from_millis(200));
    check!(
        origin.metric(SPP_SENT) == a.len() as u64,
        [origin, scc],
        "the origin sent data for an outsider"
    );
    // The same request from inside the site does make it fetch.
    let (code, body, err) = curl_fetch(
        None,
        &["--interface", &inside_ip, "-H", &host_h],
        &scc_url("c.bin"),
    );
    check!(
        code == 200,
        [origin, scc],
        "c.bin from inside, directly: {code} {err}"
    );
    check_bytes!(body, c, [origin, scc], "c.bin from inside, directly");
    check_metric_eq!(
        origin.SPP_SENT,
        (a.len() + c.len()) as u64,
        [origin, scc],
        "c.bin"
    );

    // An LHC never fetches for a remote requester (a site neighbour at .50), but
    // serves it what it holds.
    let neighbour = Some(site.ip(50));
    let r = ok!(
        try_proxy_request(lhc2.addr, neighbour, "GET", &url("d.bin"), ""),
        [origin, scc, lhc2],
        "d via lhc2 from a neighbour"
    );
    check!(
        r.status == 403 && contains(&r.body, b"not cached here"),
        [origin, scc, lhc2],
        "d.bin via an LHC from a remote requester: {} {}",
        r.status,
        body_text(&r)
    );
    fetch_ok!(
        try_proxy_request(lhc2.addr, neighbour, "GET", &url("a.bin"), ""),
        200,
        a,
        [origin, scc, lhc2],
        "a.bin via an LHC from a neighbour"
    );
    quiet_spell(Duration::from_millis(200));
    check!(
        origin.metric(SPP_SENT) == (a.len() + c.len()) as u64,
        [origin, scc, lhc2],
        "the LHC fetched for a remote requester"
    );
}

/// Scenario 6: an HTTP-only CDN on port 8080; a browser asks the cache, which fetches
/// from the origin over SPP.
#[test]
fn scenario6_http_cdn_on_port_8080() {
    let movie = content(23 * BS + 777, 601);
    let size = movie.len();
    let (ip_a, ip_b) = (host(), host());
    let origin = Origin::builder()
        .file("movie.mpg", &movie)
        .on(ip_a, 8080)
        .start();
    let parent = format!("{ip_a}:8080");
    let cache = Cache::builder()
        .args(&["-S", &parent, "-A", "cdn.example.com", "-n", "0.0.0.0/0"])
        .on(ip_b, 8080)
        .start();
    let url = format!("http://{ip_b}:8080/movie.mpg");
    let host = ["-H", "Host: cdn.example.com:8080"];

    let (code, body, err) = curl_fetch(None, &host, &url);
    check!(
        code == 200,
        [origin, cache],
        "browser GET {url}: {code} {err}"
    );
    check_bytes!(body, movie, [origin, cache], "browser GET {url}");
    check_metric_eq!(
        origin.SPP_SENT,
        size as u64,
        [origin, cache],
        "movie via SPP"
    );
    check!(
        origin.metric(HTTP_SENT) == 0,
        [origin, cache],
        "the cache fetched over HTTP"
    );
    let r = ok!(
        origin_form(
            cache.addr,
            None,
            "GET",
            "cdn.example.com:8080",
            "/movie.mpg",
            ""
        ),
        [origin, cache],
        "raw GET"
    );
    check!(
        r.status == 200
            && r.header("content-type")
                .map(|t| t.starts_with("video/mpeg"))
                == Some(true),
        [origin, cache],
        "Content-Type of movie.mpg from the cache: {:?}",
        r.headers
    );

    // A seek: from the cache alone.
    let (code, body, err) = curl_fetch(
        None,
        &[&host[..], &["-r", "100000-200000"][..]].concat(),
        &url,
    );
    check!(code == 206, [origin, cache], "browser range: {code} {err}");
    check_bytes!(
        body,
        movie[100000..=200000],
        [origin, cache],
        "browser range"
    );
    // Not at the origin: 404; another host: 403.
    let (code, _, err) = curl_fetch(None, &host, &format!("http://{ip_b}:8080/none.mpg"));
    check!(code == 404, [origin, cache], "missing file: {code} {err}");
    let (code, _, err) = curl_fetch(None, &["-H", "Host: other.example.com:8080"], &url);
    check!(code == 403, [origin, cache], "other host: {code} {err}");
    quiet_spell(Duration::from_millis(200));
    check!(
        origin.metric(SPP_SENT) == size as u64 && origin.metric(HTTP_SENT) == 0,
        [origin, cache],
        "the origin sent more than the file once over SPP"
    );
}

/// The one `*.data` file of a cache holding one file.
fn the_data_file(cdir: &Path) -> std::path::PathBuf {
    let files = files_with_suffix(cdir, ".data");
    assert_eq!(
        files.len(),
        1,
        "expected one *.data file in the cache dir, found {files:?}; contents: {:?}",
        files_with_suffix(cdir, "")
    );
    files[0].clone()
}

fn overwrite_at(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let len = f.metadata().unwrap().len();
    assert!(
        at + bytes.len() as u64 <= len,
        "{path:?} is {len} bytes; cannot overwrite {} at {at}",
        bytes.len()
    );
    f.write_all_at(bytes, at).unwrap();
    f.sync_all().unwrap();
}

/// Flipped bits, a zeroed block and a truncated last block on the cache's disk are
/// never served: each is detected, dropped and fetched again (exactly those blocks),
/// and stored again.
#[test]
fn corrupted_block_on_cache_disk_is_detected_dropped_and_fetched_again() {
    let data = content(10 * BS + 1000, 701);
    let size = data.len();
    let n = nblocks(size);
    let origin = Origin::builder().file("m.bin", &data).start();
    let mut cache = Cache::builder().start();
    let url = format!("http://{}/m.bin", origin.addr);

    // Fill the cache, let it store every block.
    let fetch = |cache: &Node, what: &str| {
        fetch_ok!(
            via(cache.addr, &url, ""),
            200,
            data,
            [origin, cache],
            "{what}"
        );
    };
    let stored = |cache: &Node, what: &str| {
        let (mut held, full) = (0, stored_bytes(size));
        let ok = wait_until(SETTLE, || {
            held = cache.metric("p2pd_disk_cache_bytes");
            held >= full
        });
        check!(
            ok && held == full,
            [origin, cache],
            "{what}: p2pd_disk_cache_bytes is {held}, expected {full} (every block on disk)"
        );
    };
    fetch(&cache, "fill");
    check_metric_eq!(origin.SPP_SENT, size as u64, [origin, cache], "fill");
    stored(&cache, "after the fill");

    // Killed and restarted (memory empty): everything comes from its disk.
    cache.restart();
    fetch(&cache, "after a restart");
    check!(
        cache.metric("p2pd_disk_cache_hits_total") >= n as u64,
        [origin, cache],
        "after a restart, fewer than {n} disk hits"
    );
    check!(
        origin.metric(SPP_SENT) == size as u64,
        [origin, cache],
        "a restarted cache fetched again what it had stored"
    );

    // Bits flipped in block 3, block 6 zeroed, while the cache is down.
    cache.kill9();
    let file = the_data_file(cache.dir());
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&file).unwrap();
        let mut b = vec![0u8; 64];
        f.read_exact_at(&mut b, (3 * BS + 100) as u64).unwrap();
        for x in &mut b {
            *x ^= 0xA5;
        }
        drop(f);
        overwrite_at(&file, (3 * BS + 100) as u64, &b);
    }
    overwrite_at(&file, (6 * BS) as u64, &vec![0u8; BS]);
    cache.restart();
    fetch(&cache, "with blocks 3 and 6 damaged on disk");
    check!(
        cache.metric("p2pd_disk_cache_corrupt_total") >= 2,
        [origin, cache],
        "the two damaged blocks were not both counted as corrupt"
    );
    check_metric_eq!(
        origin.SPP_SENT,
        (size + 2 * BS) as u64,
        [origin, cache],
        "exactly the two damaged blocks are fetched again"
    );
    // Served again from the cache, no new fetch.
    fetch(&cache, "again after the repair");
    quiet_spell(Duration::from_millis(200));
    check!(
        origin.metric(SPP_SENT) == (size + 2 * BS) as u64,
        [origin, cache],
        "the repaired blocks were fetched once more"
    );
    stored(&cache, "after the repair");

    // The last (short) block cut short on disk.
    cache.kill9();
    let file = the_data_file(cache.dir());
    let last = n - 1;
    let last_len = block_len(size, last);
    {
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.set_len((last * BS + last_len / 2) as u64).unwrap();
        f.sync_all().unwrap();
    }
    cache.restart();
    fetch(&cache, "with the last block truncated on disk");
    check_metric_eq!(
        origin.SPP_SENT,
        (size + 2 * BS + last_len) as u64,
        [origin, cache],
        "exactly the truncated last block is fetched again (the repaired 3 and 6 are on disk)"
    );
    stored(&cache, "after the second repair");

    // A last restart: everything on disk is right and complete.
    cache.restart();
    fetch(&cache, "after the last restart");
    quiet_spell(Duration::from_millis(200));
    check!(
        origin.metric(SPP_SENT) == (size + 2 * BS + last_len) as u64
            && cache.metric("p2pd_disk_cache_corrupt_total") == 0,
        [origin, cache],
        "after the repairs the disk copy is not complete and correct"
    );
}

/// The seed of a randomised test: `P2PD_TEST_SEED` replays one.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("P2PD_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{test}: seed {seed} (replay with P2PD_TEST_SEED={seed})");
    seed
}

/// SIGKILL at random points of fills (several rounds, random start offsets): every byte
/// a player got was right, the restarted cache serves only correct data, and it keeps
/// what it had stored.
#[test]
fn cache_killed_during_fill_restarts_and_serves_only_correct_data() {
    let seed = seed("cache_killed_during_fill");
    let mut rng = StdRng::seed_from_u64(seed);
    let data = content(3 * 1024 * 1024 + 4321, 801);
    let size = data.len();
    let origin = Origin::builder().file("fill.bin", &data).start();
    let mut cache = Cache::builder().start();
    let url = format!("http://{}/fill.bin", origin.addr);
    let host = origin.addr.to_string();

    const ROUNDS: usize = 5;
    for round in 0..ROUNDS {
        let start = if round == 0 {
            0
        } else {
            rng.random_range(0..size / 2)
        };
        let stop_after = rng.random_range(1024..(size - start) * 9 / 10);
        let pause = Duration::from_millis(rng.random_range(0..30));
        let what = format!(
            "seed {seed} round {round}: from byte {start}, kill after {stop_after} bytes + {pause:?}"
        );
        let mut s = connect(cache.addr);
        let range = if start > 0 {
            format!("Range: bytes={start}-\r\n")
        } else {
            String::new()
        };
        s.write_all(
            format!("GET {url} HTTP/1.1\r\nHost: {host}\r\n{range}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        // Read the head, then the body slowly, 16 KiB at a time.
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; BS];
        let (status, body_at) = loop {
            let k = ok!(
                s.read(&mut chunk).map_err(|e| e.to_string()),
                [origin, cache],
                "{what}: reading the head"
            );
            check!(k > 0, [origin, cache], "{what}: closed before the head");
            buf.extend_from_slice(&chunk[..k]);
            if let Some((status, _, n, _)) = parse_head(&buf, false) {
                break (status, n);
            }
        };
        let want_status = if start > 0 { 206 } else { 200 };
        check!(
            status == want_status,
            [origin, cache],
            "{what}: status {status}: {:?}",
            String::from_utf8_lossy(&buf[..body_at])
        );
        let mut body = buf.split_off(body_at);
        while body.len() < stop_after {
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(k) => body.extend_from_slice(&chunk[..k]),
                Err(e) => panic!(
                    "{what}: read: {e}{}",
                    diagnose(&[("origin", &origin), ("cache", &cache)])
                ),
            }
            // A slow player (the test's own pace).
            std::thread::sleep(Duration::from_millis(1));
        }
        // The random point of the kill.
        std::thread::sleep(pause);
        cache.kill9();
        // What was already on its way must be right too.
        let t = Instant::now();
        while t.elapsed() < IO_DEADLINE {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(k) => body.extend_from_slice(&chunk[..k]),
            }
        }
        check!(
            body.len() <= size - start,
            [origin, cache],
            "{what}: {} body bytes for {} requested",
            body.len(),
            size - start
        );
        check_bytes!(
            body,
            data[start..start + body.len()],
            [origin, cache],
            "{what}: bytes received before the kill"
        );
        cache.restart();
        // Around where the fill was cut: correct bytes from the restarted cache.
        let at = (start + body.len()).min(size - 1);
        let (a, b) = (at.saturating_sub(BS + 17), (at + 2 * BS).min(size - 1));
        fetch_ok!(
            via(cache.addr, &url, &format!("Range: bytes={a}-{b}\r\n")),
            206,
            data[a..=b],
            [origin, cache],
            "{what}: range {a}-{b} after the restart"
        );
    }

    // Store a known part, kill, restart: what the cache reported held on disk before
    // the kill is not fetched again by the final whole-file request.
    let part = 512 * 1024;
    fetch_ok!(
        via(
            cache.addr,
            &url,
            &format!("Range: bytes=0-{}\r\n", part - 1)
        ),
        206,
        data[..part],
        [origin, cache],
        "seed {seed}: first {part} bytes"
    );
    let mut held = 0;
    wait_until(SETTLE, || {
        held = cache.metric("p2pd_disk_cache_bytes");
        held >= part as u64
    });
    let full = stored_bytes(size);
    check!(
        held >= part as u64 && held <= full,
        [origin, cache],
        "seed {seed}: p2pd_disk_cache_bytes {held} after storing the first {part} bytes"
    );
    cache.restart();
    let before = origin.metric(SPP_SENT);
    fetch_ok!(
        via(cache.addr, &url, ""),
        200,
        data,
        [origin, cache],
        "seed {seed}: final whole file"
    );
    quiet_spell(Duration::from_millis(200));
    let fetched = origin.metric(SPP_SENT) - before;
    let corrupt = cache.metric("p2pd_disk_cache_corrupt_total");
    // `full - held` bounds the bytes not on disk from above (padding included).
    let bound = full - held + corrupt * BS as u64;
    check!(
        fetched <= bound && fetched < size as u64,
        [origin, cache],
        "seed {seed}: the final fetch cost the origin {fetched} bytes; the cache held {held} \
         before the kill and found {corrupt} corrupt blocks, so at most {bound} (< {size})"
    );
    eprintln!(
        "seed {seed}: origin sent {} bytes over all rounds for a {size}-byte file; final fetch \
         {fetched}, corrupt blocks found {corrupt}",
        origin.metric(SPP_SENT)
    );
}

/// `-C 512k`: the disk use (allocated bytes of the data files, as `du` counts them)
/// stays under the limit while a 4 MiB file streams through; least recently used
/// blocks are the ones that go.
#[test]
fn disk_cache_limit_holds_while_a_larger_file_streams_through() {
    const LIMIT: u64 = 512 * 1024;
    // The cache counts a block from before its write is issued until its hole is
    // punched, so the data files never hold more than the limit. The holes split a
    // data file into many extents, though, whose index block the file system counts
    // in the file's allocation (4 KiB): that much slack, and no more.
    const FS_METADATA: u64 = 8 * 1024;
    const SLACK: u64 = FS_METADATA;
    let data = content(4 * 1024 * 1024, 901);
    let size = data.len();
    let origin = Origin::builder().file("big.bin", &data).start();
    // No read-ahead: the blocks fetched are exactly the ones read, so the origin's
    // bytes count them (read-ahead within the limit has a test of its own).
    let cache = Cache::builder()
        .args(&["-C", "512k", "-M", "256k", "--read-ahead", "0"])
        .start();
    let url = format!("http://{}/big.bin", origin.addr);

    let stop = Arc::new(AtomicBool::new(false));
    let max_seen = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, max_seen) = (stop.clone(), max_seen.clone());
        let cdir = cache.dir().to_path_buf();
        std::thread::spawn(move || {
            let mut samples = 0u32;
            let mut over = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let used = allocated_bytes(&cdir, ".data");
                max_seen.fetch_max(used, Ordering::Relaxed);
                if used > LIMIT + SLACK && over.len() < 10 {
                    over.push((samples, used));
                }
                samples += 1;
                // The sampling period.
                std::thread::sleep(Duration::from_millis(20));
            }
            (samples, over)
        })
    };
    // Stream it like a player: 64 KiB at a time, with pauses.
    let mut s = connect(cache.addr);
    s.write_all(
        format!(
            "GET {url} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            origin.addr
        )
        .as_bytes(),
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let t = Instant::now();
    loop {
        let k = match s.read(&mut chunk) {
            Ok(k) => k,
            Err(e) => panic!(
                "streaming: {e}{}",
                diagnose(&[("origin", &origin), ("cache", &cache)])
            ),
        };
        if k == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..k]);
        // The player's pauses.
        std::thread::sleep(Duration::from_millis(10));
        check!(
            t.elapsed() < Duration::from_secs(60),
            [origin, cache],
            "streaming took over 60 s"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let (samples, over) = sampler.join().unwrap();
    let (status, _, n, _) = parse_head(&buf, false).expect("a response head");
    check!(status == 200, [origin, cache], "streaming: status {status}");
    check_bytes!(buf[n..], data, [origin, cache], "the streamed file");
    let max = max_seen.load(Ordering::Relaxed);
    check!(
        over.is_empty(),
        [origin, cache],
        "disk use went over {LIMIT} + {SLACK} bytes of slack: (sample, bytes) {over:?} of {samples} samples"
    );
    check!(
        samples >= 10,
        [origin, cache],
        "only {samples} samples of the disk use"
    );
    eprintln!("disk use: max {max} bytes in {samples} samples (limit {LIMIT})");

    // Settled: the blocks are within the limit (the gauge exactly, `du` but for the
    // file system's extent blocks), and it evicted.
    let mut used = 0;
    let settled = wait_until(SETTLE, || {
        used = allocated_bytes(cache.dir(), ".data");
        used <= LIMIT + FS_METADATA
    });
    check!(
        settled,
        [origin, cache],
        "after streaming the data files hold {used} bytes > {LIMIT} + {FS_METADATA}"
    );
    let gauge = cache.metric("p2pd_disk_cache_bytes");
    check!(
        gauge <= LIMIT,
        [origin, cache],
        "p2pd_disk_cache_bytes {gauge} > {LIMIT}"
    );
    check!(
        cache.metric("p2pd_disk_cache_evictions_total") > 0,
        [origin, cache],
        "nothing was evicted"
    );
    check_metric_eq!(origin.SPP_SENT, size as u64, [origin, cache], "the stream");

    // LRU: the end, used last, is still here; the beginning is gone and comes back
    // from the origin, exactly its blocks.
    let tail = 128 * 1024;
    fetch_ok!(
        via(cache.addr, &url, &format!("Range: bytes=-{tail}\r\n")),
        206,
        data[size - tail..],
        [origin, cache],
        "tail"
    );
    quiet_spell(Duration::from_millis(200));
    check!(
        origin.metric(SPP_SENT) == size as u64,
        [origin, cache],
        "the most recently used blocks were not kept"
    );
    fetch_ok!(
        via(cache.addr, &url, "Range: bytes=0-65535\r\n"),
        206,
        data[..65536],
        [origin, cache],
        "head"
    );
    check_metric_eq!(
        origin.SPP_SENT,
        (size + 4 * BS) as u64,
        [origin, cache],
        "the evicted head"
    );
    let used = allocated_bytes(cache.dir(), ".data");
    check!(
        used <= LIMIT + SLACK,
        [origin, cache],
        "after the refetch the data files hold {used} bytes"
    );
}

/// Twenty players asking at once for a file the cache does not hold: one upstream
/// fetch per block.
#[test]
fn twenty_concurrent_requesters_one_upstream_fetch_per_block() {
    let data = Arc::new(content(2 * 1024 * 1024, 1001));
    let size = data.len();
    let origin = Origin::builder().file("hot.bin", &data).start();
    let cache = Cache::builder().start();
    let url = format!("http://{}/hot.bin", origin.addr);
    let barrier = Arc::new(Barrier::new(20));
    let players: Vec<_> = (0..20)
        .map(|_| {
            let (barrier, url, addr) = (barrier.clone(), url.clone(), cache.addr);
            std::thread::spawn(move || {
                barrier.wait();
                via(addr, &url, "")
            })
        })
        .collect();
    for (i, p) in players.into_iter().enumerate() {
        fetch_ok!(
            p.join().unwrap(),
            200,
            data[..],
            [origin, cache],
            "player {i}"
        );
    }
    check_metric_eq!(
        origin.SPP_SENT,
        size as u64,
        [origin, cache],
        "twenty players"
    );
    check_metric_eq!(
        cache."p2pd_upstream_fetches_total",
        nblocks(size) as u64,
        [origin, cache],
        "twenty players: one fetch per block"
    );
}

/// Over SPP, a site cache refuses an outsider's request for a file it does not hold
/// (no fetch), serves it the blocks it holds, and refuses hosts outside `-A`.
#[test]
fn spp_outsider_gets_forbidden_for_uncached_and_blocks_for_cached() {
    let a = content(13 * BS + 11, 1101);
    let b = content(3 * BS + 1, 1102);
    let origin = Origin::builder()
        .file("a.bin", &a)
        .file("b.bin", &b)
        .start();
    let parent = origin.addr.to_string();
    let (site, outside) = (subnet(), subnet());
    let scc = Cache::builder()
        .args(&[
            "-n",
            &site.cidr(),
            "-S",
            &parent,
            "-A",
            "cdn.example.com",
            "--info-ttl",
            "60000",
        ])
        .on(site.ip(1), 0)
        .start();
    let host = "cdn.example.com";

    // From inside the site: the cache fetches a.bin, relays the origin's info, and
    // every block verifies.
    let (mut inside, hello) = ok!(
        Spp::connect_from(site.ip(7), scc.addr),
        [origin, scc],
        "inside"
    );
    check!(
        hello.role == Role::Scc,
        [origin, scc],
        "a site cache announced {:?}",
        hello.role
    );
    let info = match ok!(inside.info(1, host, "a.bin"), [origin, scc], "inside info") {
        Frame::Info(i) => i,
        other => panic!(
            "inside: info for a.bin: {other:?}{}",
            diagnose(&[("origin", &origin), ("scc", &scc)])
        ),
    };
    check!(
        info.size == a.len() as u64 && info.block_size == BS as u32,
        [origin, scc],
        "a.bin info: {info:?}"
    );
    let got = ok!(inside.get_all(&info), [origin, scc], "inside get");
    check_bytes!(got, a, [origin, scc], "a.bin over SPP from inside");
    check_metric_eq!(origin.SPP_SENT, a.len() as u64, [origin, scc], "a.bin");

    // From outside: b.bin would need a fetch, so it is refused at once.
    let (mut outside, _) = ok!(
        Spp::connect_from(outside.ip(5), scc.addr),
        [origin, scc],
        "outside"
    );
    match ok!(
        outside.info(2, host, "b.bin"),
        [origin, scc],
        "outside info b"
    ) {
        Frame::Error(e) => check!(
            e.req_id == 2 && matches!(e.code, ErrorCode::Forbidden | ErrorCode::NotCachedHere),
            [origin, scc],
            "outsider asking for b.bin: {e:?}"
        ),
        other => panic!(
            "outsider asking for an uncached file got {other:?}{}",
            diagnose(&[("origin", &origin), ("scc", &scc)])
        ),
    }
    // a.bin is held: same version, every block.
    let oinfo = match ok!(
        outside.info(3, host, "a.bin"),
        [origin, scc],
        "outside info a"
    ) {
        Frame::Info(i) => i,
        other => panic!(
            "outside: info for a.bin: {other:?}{}",
            diagnose(&[("origin", &origin), ("scc", &scc)])
        ),
    };
    check!(
        oinfo.version == info.version,
        [origin, scc],
        "outsider sees another version"
    );
    let got = ok!(outside.get_all(&oinfo), [origin, scc], "outside get");
    check_bytes!(got, a, [origin, scc], "a.bin over SPP from outside");
    // A host outside -A: forbidden, whoever asks.
    match ok!(
        inside.info(4, "other.example.com", "a.bin"),
        [origin, scc],
        "other host"
    ) {
        Frame::Error(e) => check!(
            e.req_id == 4 && e.code == ErrorCode::Forbidden,
            [origin, scc],
            "host outside -A: {e:?}"
        ),
        other => panic!(
            "host outside -A got {other:?}{}",
            diagnose(&[("origin", &origin), ("scc", &scc)])
        ),
    }
    quiet_spell(Duration::from_millis(200));
    check!(
        origin.metric(SPP_SENT) == a.len() as u64,
        [origin, scc],
        "the origin sent data for the outsider or the other host"
    );
    check!(
        scc.metric("p2pd_recursive_refused_total") > 0,
        [origin, scc],
        "the refusal was not counted"
    );
}

/// Upstream failures are answered at once with the right status, never a hang: 502
/// when the upstream refuses connections, 504 when it accepts but stays silent past
/// `--upstream-timeout`.
#[test]
fn upstream_unreachable_is_502_and_silent_upstream_is_504() {
    let cache = Cache::builder()
        .args(&["--upstream-timeout", "500"])
        .start();
    // Nobody listens on this port any more: connection refused.
    let dead = {
        let l = std::net::TcpListener::bind((host(), 0)).unwrap();
        l.local_addr().unwrap()
    };
    // Accepts connections and never says a word.
    let silent = std::net::TcpListener::bind((host(), 0)).unwrap();
    let silent_addr = silent.local_addr().unwrap();
    silent.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let holder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok((s, _)) = silent.accept() {
                    held.push(s);
                }
                // The fake upstream's accept loop (non-blocking, to see `stop`).
                std::thread::sleep(Duration::from_millis(10));
            }
            held.len()
        })
    };

    let t = Instant::now();
    let r = ok!(
        via(cache.addr, &format!("http://{dead}/x.bin"), ""),
        [cache],
        "dead upstream"
    );
    let took = t.elapsed();
    check!(
        r.status == 502,
        [cache],
        "upstream refusing connections: {} {}",
        r.status,
        body_text(&r)
    );
    check!(
        took < Duration::from_secs(10),
        [cache],
        "the 502 took {took:?}"
    );

    let t = Instant::now();
    let r = ok!(
        via(cache.addr, &format!("http://{silent_addr}/x.bin"), ""),
        [cache],
        "silent upstream"
    );
    let took = t.elapsed();
    check!(
        r.status == 504,
        [cache],
        "silent upstream: {} {}",
        r.status,
        body_text(&r)
    );
    check!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(10),
        [cache],
        "the 504 came after {took:?} with --upstream-timeout 500"
    );
    stop.store(true, Ordering::Relaxed);
    let accepted = holder.join().unwrap();
    check!(
        accepted >= 1,
        [cache],
        "the cache never connected to the silent upstream"
    );
    check!(
        cache.metric("p2pd_upstream_errors_total") >= 2,
        [cache],
        "upstream errors not counted"
    );
    // Still serving.
    let r = ok!(
        try_http(
            cache.addr,
            "GET /_p2pd/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            IO_DEADLINE
        ),
        [cache],
        "health"
    );
    check!(
        r.status == 200,
        [cache],
        "health after upstream failures: {r:?}"
    );
}

/// A file replaced at the origin (same size, new content): the cache never serves a
/// byte of the old version together with the new one, switches to the new version
/// once its info expires, and deletes the old version's files.
#[test]
fn a_file_changed_at_the_origin_is_never_mixed_with_its_old_blocks() {
    let old = content(12 * BS + 300, 1101);
    let new = content(old.len(), 1102);
    let size = old.len();
    let origin = Origin::builder()
        .file("v.bin", &old)
        .args(&["--rescan-interval", "200"])
        .start();
    // The cache trusts the info it has for 3 s: long enough to see the old version
    // after the change, when its missing blocks can no longer be had.
    // No read-ahead: the cache is to hold only the half of the old version read.
    let mut cache = Cache::builder()
        .args(&["--info-ttl", "3000", "--read-ahead", "0"])
        .start();
    let url = format!("http://{}/v.bin", origin.addr);

    // The cache holds the first half of the old version only.
    let half = size / 2;
    fetch_ok!(
        via(
            cache.addr,
            &url,
            &format!("Range: bytes=0-{}\r\n", half - 1)
        ),
        206,
        old[..half],
        [origin, cache],
        "first half"
    );

    // Replaced at the origin; the modification time moves too.
    rewrite_file(origin.dir(), "v.bin", &new);

    // Every answer from now on is a prefix of one version, never a mix; a cut-off
    // body (the old version's missing blocks cannot be had any more) is allowed, a
    // wrong byte is not. Eventually the new version arrives whole.
    let mut answers = Vec::new();
    let switched = wait_until(IO_DEADLINE, || {
        let (code, body, err) = curl_fetch(Some(cache.addr), &[], &url);
        let is_prefix_of = |v: &[u8]| body.len() <= v.len() && body[..] == v[..body.len()];
        check!(
            code == 0 || body.is_empty() || is_prefix_of(&old) || is_prefix_of(&new),
            [origin, cache],
            "status {code} ({err}): {} bytes that are neither version: {:?}",
            body.len(),
            differ(&body, &new)
        );
        answers.push((code, body.len()));
        code == 200 && body == new
    });
    check!(
        switched,
        [origin, cache],
        "the new version was never served whole; answers (status, bytes): {answers:?}"
    );
    eprintln!("answers while the version changed (status, bytes): {answers:?}");
    // Within the 3 s the old version was answered and cut where its held blocks
    // ended, rather than completed with the new version's blocks.
    check!(
        answers.iter().any(|&(_, n)| n >= half && n < size),
        [origin, cache],
        "no answer served the old version's held blocks and stopped: {answers:?}"
    );

    // The old version's files are gone: one index and one data file remain.
    let one = wait_until(SETTLE, || {
        files_with_suffix(cache.dir(), ".idx").len() == 1
            && files_with_suffix(cache.dir(), ".data").len() == 1
    });
    check!(
        one,
        [origin, cache],
        "old version files left: {:?}",
        files_with_suffix(cache.dir(), "")
    );
    // And its blocks left the accounting: the disk holds the new version only.
    let (full, mut held) = (stored_bytes(size), 0);
    check!(
        wait_until(SETTLE, || {
            held = cache.metric("p2pd_disk_cache_bytes");
            held == full
        }),
        [origin, cache],
        "p2pd_disk_cache_bytes {held}, expected {full}: the old version's blocks are still counted"
    );

    // After a restart the cache still serves the new version, from its disk.
    cache.restart();
    let before = origin.metric(SPP_SENT);
    fetch_ok!(
        via(cache.addr, &url, ""),
        200,
        new,
        [origin, cache],
        "after restart"
    );
    quiet_spell(Duration::from_millis(200));
    check!(
        origin.metric(SPP_SENT) == before,
        [origin, cache],
        "the restarted cache fetched blocks it held"
    );
}

/// `-Z` on a cache: what the store held is discarded at start-up and fetched again.
#[test]
fn start_cold_discards_the_cache_store() {
    let data = content(6 * BS + 11, 1201);
    let origin = Origin::builder().file("z.bin", &data).start();
    // Started twice on the same directory: no builder.
    let cdir = tempfile::tempdir().unwrap();
    let cache = start_cache_on(host(), 0, cdir.path(), &[]);
    let url = format!("http://{}/z.bin", origin.addr);
    let r = ok!(via(cache.addr, &url, ""), [origin, cache], "fill");
    check_bytes!(r.body, data, [origin, cache], "fill");
    let full = stored_bytes(data.len());
    check!(
        wait_until(SETTLE, || cache.metric("p2pd_disk_cache_bytes") == full),
        [origin, cache],
        "the fill never reached the disk"
    );
    // Without -Z a restart keeps the file and its blocks...
    let mut cache = cache;
    cache.restart();
    check!(
        wait_until(SETTLE, || cache.log().contains("1 files and 7 blocks kept")),
        [origin, cache],
        "a plain restart did not keep the store"
    );
    // ... with -Z nothing is kept.
    let port = cache.addr.port();
    cache.stop();

    let cache = start_cache_on(host(), port, cdir.path(), &["-Z"]);
    check!(
        wait_until(SETTLE, || cache.log().contains("0 files and 0 blocks kept")),
        [origin, cache],
        "-Z kept something"
    );
    check!(
        files_with_suffix(cdir.path(), ".data").is_empty()
            && files_with_suffix(cdir.path(), ".idx").is_empty(),
        [origin, cache],
        "-Z left files: {:?}",
        files_with_suffix(cdir.path(), "")
    );
    let before = origin.metric(SPP_SENT);
    let r = ok!(via(cache.addr, &url, ""), [origin, cache], "after -Z");
    check_bytes!(r.body, data, [origin, cache], "after -Z");
    check_metric_eq!(
        origin.SPP_SENT,
        before + data.len() as u64,
        [origin, cache],
        "after -Z every block is fetched again"
    );
}

/// The origin goes away: the cache keeps serving what it holds (its info is used past
/// `--info-ttl` while the upstream cannot be asked), and says 502 for what it lacks.
#[test]
fn cache_keeps_serving_what_it_holds_while_the_origin_is_down() {
    let data = content(9 * BS + 5, 1301);
    let other = content(3 * BS, 1302);
    let mut origin = Origin::builder()
        .file("held.bin", &data)
        .file("other.bin", &other)
        .start();
    let cache = Cache::builder()
        .args(&["--info-ttl", "100", "--upstream-timeout", "1000"])
        .start();
    let oaddr = origin.addr;
    let url = |f: &str| format!("http://{oaddr}/{f}");
    let r = ok!(
        via(cache.addr, &url("held.bin"), ""),
        [origin, cache],
        "fill"
    );
    check_bytes!(r.body, data, [origin, cache], "fill");

    origin.kill9();
    // Past the --info-ttl of 100 ms: the info the cache holds has expired (what is
    // tested is that it is used anyway while the upstream cannot be asked).
    std::thread::sleep(Duration::from_millis(300));
    for round in 0..2 {
        fetch_ok!(
            via(cache.addr, &url("held.bin"), ""),
            200,
            data,
            [cache],
            "round {round}: held file, origin down"
        );
        fetch_ok!(
            via(cache.addr, &url("held.bin"), "Range: bytes=20000-40000\r\n"),
            206,
            data[20000..=40000],
            [cache],
            "round {round}: range"
        );
        // Past the --info-ttl again before the next round.
        std::thread::sleep(Duration::from_millis(150));
    }
    let r = ok!(
        via(cache.addr, &url("other.bin"), ""),
        [cache],
        "missing file, origin down"
    );
    check!(
        r.status == 502,
        [cache],
        "a file the cache lacks, origin down: {} {}",
        r.status,
        body_text(&r)
    );

    // The origin comes back on the same address: the cache connects again by itself.
    origin.restart();
    fetch_ok!(
        via(cache.addr, &url("other.bin"), ""),
        200,
        other,
        [origin, cache],
        "other.bin, origin back"
    );
}

/// A hierarchy two caches deep (cache2 `-S cache1`, cache1 `-S origin`): the origin's
/// info reaches the client unchanged, each level fetches each block once, and Locate
/// answers are relayed up the chain (each cache first, then what its upstream said,
/// the origin's `-l` mirror last). An outsider's Locate lists only the ranges the
/// cache holds, and its Gets stop with NotCachedHere at the first block not held.
#[test]
fn hierarchy_relays_info_and_locate_answers() {
    let f = content(10 * BS + 99, 1401);
    let g = content(8 * BS, 1402);
    let (net, outside) = (subnet(), subnet());
    let (o_ip, c1_ip, c2_ip) = (net.ip(1), net.ip(2), net.ip(3));
    // Named in Locate answers only: nothing listens there.
    let mirror = SocketAddr::new(net.ip(9), 1111);
    let origin = Origin::builder()
        .file("f.bin", &f)
        .file("g.bin", &g)
        .args(&["-l", &mirror.to_string()])
        .on(o_ip, 1111)
        .start();
    let cidr = net.cidr();
    let site = ["-n", cidr.as_str(), "--info-ttl", "60000"];
    let p1 = format!("{o_ip}:1111");
    let c1 = Cache::builder()
        .args(&site)
        .args(&["-S", &p1])
        .on(c1_ip, 1111)
        .start();
    let p2 = format!("{c1_ip}:1111");
    let c2 = Cache::builder()
        .args(&site)
        .args(&["-S", &p2])
        .on(c2_ip, 1111)
        .start();
    let host = "cdn.example.com";

    // The origin's own answer, to compare with what arrives through two caches.
    let (mut direct, _) = ok!(
        Spp::connect_from(net.ip(8), origin.addr),
        [origin],
        "direct"
    );
    let want = ok!(
        direct.info(1, host, "f.bin").and_then(expect_info),
        [origin],
        "direct info"
    );
    let (mut inside, _) = ok!(
        Spp::connect_from(net.ip(7), c2.addr),
        [origin, c1, c2],
        "inside"
    );
    let info = ok!(
        inside.info(1, host, "f.bin").and_then(expect_info),
        [origin, c1, c2],
        "info via two caches"
    );
    check!(
        (
            info.size,
            info.block_size,
            info.algo,
            info.version,
            info.mtime_unix_secs,
            &info.digests
        ) == (
            want.size,
            want.block_size,
            want.algo,
            want.version,
            want.mtime_unix_secs,
            &want.digests
        ),
        [origin, c1, c2],
        "the info changed on its way: {info:?} vs the origin's {want:?}"
    );
    let got = ok!(
        inside.get_all(&info),
        [origin, c1, c2],
        "f.bin via two caches"
    );
    check_bytes!(got, f, [origin, c1, c2], "f.bin via two caches");
    let n = nblocks(f.len()) as u64;
    check_metric_eq!(origin.SPP_SENT, f.len() as u64, [origin, c1, c2], "origin");
    check_metric_eq!(c1."p2pd_upstream_fetches_total", n, [origin, c1, c2], "cache1");
    check_metric_eq!(c2."p2pd_upstream_fetches_total", n, [origin, c1, c2], "cache2");

    // Locate from inside: cache2, then cache1, then the origin and its mirror.
    let locs = ok!(
        inside
            .locate(2, info.handle, 0, n)
            .and_then(expect_locations),
        [origin, c1, c2],
        "inside locate"
    );
    let addrs: Vec<SocketAddr> = locs.iter().map(|l| l.addr).collect();
    let chain = vec![c2.addr, c1.addr, origin.addr, mirror];
    check!(
        addrs == chain,
        [origin, c1, c2],
        "locate via the chain: {locs:?}, expected the addresses {chain:?}"
    );
    check!(
        locs[0].role == Role::Scc
            && locs[1].role == Role::Scc
            && locs[2].role == Role::Origin
            && locs.iter().all(|l| l.holds == Holds::All),
        [origin, c1, c2],
        "roles or holdings: {locs:?}"
    );

    // An inside client takes blocks 2..5 of g.bin through cache2 only.
    let ginfo = ok!(
        inside.info(3, host, "g.bin").and_then(expect_info),
        [origin, c1, c2],
        "g info"
    );
    let (blocks, err) = ok!(
        inside.get_range(&ginfo, 4, 2, 3),
        [origin, c1, c2],
        "g 2..5"
    );
    check!(
        blocks == vec![2, 3, 4] && err.is_none(),
        [origin, c1, c2],
        "g.bin 2..5 inside: {blocks:?} {err:?}"
    );

    // An outsider: cache2 alone, holding 2..5; no fetch on its behalf.
    let sent = origin.metric(SPP_SENT);
    let (mut outside, _) = ok!(
        Spp::connect_from(outside.ip(5), c2.addr),
        [origin, c1, c2],
        "outside"
    );
    let oinfo = ok!(
        outside.info(5, host, "g.bin").and_then(expect_info),
        [origin, c1, c2],
        "outside g info"
    );
    // cache2 writes the blocks it streamed in the background: a block is held (and
    // listed) once its write landed, so ask until all three are.
    let want = Holds::Ranges(vec![BlockRange { start: 2, count: 3 }]);
    let mut locs = Vec::new();
    let mut req_id = 100;
    let listed = wait_until(SETTLE, || {
        req_id += 1;
        locs = ok!(
            outside
                .locate(req_id, oinfo.handle, 0, 8)
                .and_then(expect_locations),
            [origin, c1, c2],
            "outside locate"
        );
        locs.len() == 1 && locs[0].addr == c2.addr && locs[0].holds == want
    });
    check!(listed, [origin, c1, c2], "an outsider's locate: {locs:?}");
    let (blocks, err) = ok!(
        outside.get_range(&oinfo, 7, 3, 4),
        [origin, c1, c2],
        "outside 3..7"
    );
    check!(
        blocks == vec![3, 4]
            && err
                .as_ref()
                .is_some_and(|e| e.code == ErrorCode::NotCachedHere),
        [origin, c1, c2],
        "an outsider's Get of 3..7: {blocks:?} then {err:?}"
    );
    let (blocks, err) = ok!(
        outside.get_range(&oinfo, 8, 0, 2),
        [origin, c1, c2],
        "outside 0..2"
    );
    check!(
        blocks.is_empty()
            && err
                .as_ref()
                .is_some_and(|e| e.code == ErrorCode::NotCachedHere),
        [origin, c1, c2],
        "an outsider's Get of 0..2: {blocks:?} then {err:?}"
    );
    quiet_spell(Duration::from_millis(200));
    check!(
        origin.metric(SPP_SENT) == sent,
        [origin, c1, c2],
        "the outsider made the origin send data"
    );
}

/// After a player hangs up mid-stream through a client cache in front of a slow
/// origin, every other range of the same file streams whole: the block fetches the
/// player left behind run on to the end (or to their deadline) on their own and give
/// their place at the source back, so nothing is left waiting on them.
#[test]
fn a_player_hanging_up_mid_stream_leaves_every_other_range_streaming_whole() {
    let data = content(4 * 1024 * 1024 + 777, 1301);
    let size = data.len();
    let origin = Origin::builder()
        .file("film.bin", &data)
        .args(&["--upload-rate", "2M"])
        .start();
    let cache = Cache::builder().start();
    let url = format!("http://{}/film.bin", origin.addr);

    // The player asks for the whole film, takes the start and hangs up with the
    // cache's read-ahead in flight; then again further in (seeks).
    let hang_ups = [
        (0usize, 64 * 1024usize),
        (size / 2, 48 * 1024),
        (3 * size / 8 + 100, 40 * 1024),
    ];
    for (from, take) in hang_ups {
        let mut s = connect(cache.addr);
        let raw = format!(
            "GET {url} HTTP/1.1\r\nHost: {}\r\nRange: bytes={from}-\r\nConnection: close\r\n\r\n",
            url_authority(&url)
        );
        s.write_all(raw.as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        let head_len = loop {
            let k = s.read(&mut chunk).unwrap_or(0);
            check!(
                k > 0,
                [origin, cache],
                "the player's request at {from}: closed after {} bytes",
                got.len()
            );
            got.extend_from_slice(&chunk[..k]);
            if let Some((status, _, n, _)) = parse_head(&got, false) {
                check!(
                    status == 206 || (from == 0 && status == 200),
                    [origin, cache],
                    "the player's request at {from}: status {status}"
                );
                break n;
            }
        };
        while got.len() < head_len + take {
            let k = s.read(&mut chunk).unwrap_or(0);
            check!(
                k > 0,
                [origin, cache],
                "the player's request at {from}: closed after {} body bytes",
                got.len() - head_len
            );
            got.extend_from_slice(&chunk[..k]);
        }
        check_bytes!(
            got[head_len..head_len + take],
            data[from..from + take],
            [origin, cache],
            "what the player got at {from} before hanging up"
        );
        // Hang up with bytes unread: the cache's next write fails.
        drop(s);
    }

    // Every other range of the film, through the same cache, comes whole.
    let ranges = [
        (BS / 2, 5 * BS + 99),
        (size / 4 + 1234, size / 4 + 20 * BS),
        (size / 2 + 30 * BS, size / 2 + 50 * BS - 1),
        (3 * size / 4, 3 * size / 4 + 17 * BS + 5),
        (size - 9 * BS - 3, size - 1),
    ];
    for (a, b) in ranges {
        fetch_ok!(
            via(cache.addr, &url, &format!("Range: bytes={a}-{b}\r\n")),
            206,
            data[a..=b],
            [origin, cache],
            "range {a}-{b} after the player hung up"
        );
    }
}

/// A cache reads back with direct I/O the blocks it stored in the same run. glommio
/// decides per executor and device whether direct reads use its poll ring from a read
/// of the first direct-I/O file it opens; a cache's first such file was a new, empty
/// data file, the probe "succeeded" without touching the device, and on a device that
/// cannot poll (a virtual disk) about half of the stored blocks then failed to read
/// (EOPNOTSUPP), were taken for damaged and fetched again.
#[test]
fn blocks_stored_in_this_run_are_read_back_from_disk() {
    // 512 blocks of 16 KiB against 1 MiB of memory cache: most come from disk the
    // second time.
    let data = content(512 * BS, 1407);
    let origin = Origin::builder().file("film.bin", &data).start();
    let cache = Cache::builder().args(&["-M", "1M"]).start();
    let url = format!("http://{}/film.bin", origin.addr);
    let first = proxy_get(cache.addr, &url, "");
    check_bytes!(first.body, data, [origin, cache], "first viewing");
    let sent = origin.metric(SPP_SENT);
    let second = proxy_get(cache.addr, &url, "");
    check_bytes!(second.body, data, [origin, cache], "second viewing");
    let corrupt = cache.metric("p2pd_disk_cache_corrupt_total");
    let hits = cache.metric("p2pd_disk_cache_hits_total");
    check!(
        corrupt == 0 && hits >= 400,
        [origin, cache],
        "second viewing: {hits} blocks read from disk, {corrupt} taken for damaged"
    );
    check!(
        origin.metric(SPP_SENT) == sent,
        [origin, cache],
        "the origin sent {} more bytes for the second viewing",
        origin.metric(SPP_SENT) - sent
    );
}
