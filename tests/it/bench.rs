//! `p2pd-bench` tells the truth: against a real origin it counts exactly the bytes of a
//! known file (over SPP and HTTP, matching the origin's own metrics), a server made to
//! stall shows up as stalls, and a closed port or a silent server gives errors and a
//! run that ends on time instead of a hang.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;

const BENCH: &str = env!("CARGO_BIN_EXE_p2pd-bench");

struct BenchRun {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    json: serde_json::Value,
}

/// Runs p2pd-bench with `args` and `--json`, killing it (and failing) if it outlives
/// `deadline`.
fn bench(dir: &Path, args: &[&str], deadline: Duration) -> BenchRun {
    let json_path = dir.join(format!("report-{}.json", rand_suffix()));
    let _shared = shared();
    let started = Instant::now();
    let mut child = Command::new(BENCH)
        .args(args)
        .args([
            "-q",
            "--threads",
            "1",
            "--json",
            json_path.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn p2pd-bench");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut status = None;
    if !wait_until(deadline, || {
        status = child.try_wait().expect("wait");
        status.is_some()
    }) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("p2pd-bench {args:?} still running after {deadline:?}: it hangs");
    }
    let status = status.unwrap();
    let elapsed = started.elapsed();
    let (stdout, stderr) = (out_t.join().unwrap(), err_t.join().unwrap());
    let json = std::fs::read_to_string(&json_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    BenchRun {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
        elapsed,
        json,
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// One viewer (a single arrival in a run shorter than the gap to the next), a bitrate
/// high enough to finish the title quickly: the report must count the file's bytes
/// exactly, once, with every block verified.
fn single_viewer_args(url: &str) -> Vec<String> {
    [
        "-d",
        "4s",
        "--rate",
        "0.1",
        "--bitrate",
        "400M",
        "--startup-buffer",
        "100ms",
        "--max-buffer",
        "60s",
        "--watch",
        "60s",
        url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn a_known_file_counts_exactly_its_bytes_over_spp_and_http() {
    let dir = tempfile::tempdir().unwrap();
    // Several 16 KiB blocks and a short last one.
    let size = 5 * 16 * 1024 * 16 + 123;
    let origin = Origin::builder()
        .file("movie.bin", &content(size, 9))
        .start();
    let blocks = (size as u64).div_ceil(16 * 1024);

    let args = single_viewer_args(&origin.spp_url("movie.bin"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = bench(dir.path(), &args, Duration::from_secs(30));
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    let j = &r.json;
    assert_eq!(j["mode"], "vod");
    assert_eq!(u(&j["bytes"]), size as u64, "{}", r.stdout);
    assert_eq!(u(&j["viewers"]["started"]), 1);
    assert_eq!(u(&j["viewers"]["completed"]), 1, "{}", r.stdout);
    assert_eq!(u(&j["viewers"]["failed"]), 0);
    assert_eq!(u(&j["digests"]["checked"]), blocks);
    assert_eq!(u(&j["digests"]["failed"]), 0);
    assert_eq!(u(&j["latency_ms"]["count"]), blocks);
    assert_eq!(u(&j["startup_ms"]["count"]), 1);
    assert_eq!(u(&j["stalls"]["count"]), 0);
    assert_eq!(u(&j["errors_total"]), 0);
    assert_eq!(
        u(&j["bytes_by_source"][origin.addr.to_string()]),
        size as u64
    );
    // The origin agrees on what it sent.
    assert_eq!(
        origin.metric("p2pd_bytes_sent_total{proto=\"spp\"}"),
        size as u64
    );
    // The text report carries the same figures.
    assert!(
        r.stdout.contains(&format!("({size} bytes)")),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("stalls          0"), "{}", r.stdout);

    // The same title over HTTP Range requests of 64 KiB.
    let url = format!("http://{}/movie.bin", origin.addr);
    let mut args = single_viewer_args(&url);
    args.extend(["--chunk".to_string(), "64k".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = bench(dir.path(), &args, Duration::from_secs(30));
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    let j = &r.json;
    assert_eq!(u(&j["bytes"]), size as u64, "{}", r.stdout);
    assert_eq!(u(&j["viewers"]["completed"]), 1, "{}", r.stdout);
    assert_eq!(
        u(&j["latency_ms"]["count"]),
        (size as u64).div_ceil(64 * 1024)
    );
    assert_eq!(u(&j["digests"]["checked"]), 0);
    assert_eq!(u(&j["errors_total"]), 0);
    assert_eq!(
        origin.metric("p2pd_bytes_sent_total{proto=\"http\"}"),
        size as u64
    );
}

#[test]
fn max_throughput_counts_whole_transfers_and_spreads_connections() {
    let dir = tempfile::tempdir().unwrap();
    let size = 300_000usize;
    let origin = Origin::builder()
        .file("a.bin", &content(size, 1))
        .file("b.bin", &content(size, 2))
        .start();
    let (a, b) = (origin.spp_url("a.bin"), origin.spp_url("b.bin"));
    let r = bench(
        dir.path(),
        &[
            "--max-throughput",
            "-c",
            "3",
            "-d",
            "2s",
            "--popularity",
            "uniform",
            &a,
            &b,
        ],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    let j = &r.json;
    assert_eq!(j["mode"], "max-throughput");
    let (bytes, done) = (u(&j["bytes"]), u(&j["viewers"]["completed"]));
    let active = u(&j["viewers"]["active_at_end"]);
    assert!(done > 0, "{}", r.stdout);
    assert_eq!(u(&j["viewers"]["failed"]), 0, "{}", r.stdout);
    assert!(active <= 3);
    // Whole transfers plus the parts of those cut off by the end of the run.
    assert!(bytes >= done * size as u64, "{}", r.stdout);
    assert!(bytes <= (done + active) * size as u64, "{}", r.stdout);
    assert_eq!(u(&j["viewers"]["started"]), done + active);
    assert_eq!(u(&j["viewers"]["concurrent_peak"]), 3);
    assert_eq!(u(&j["digests"]["failed"]), 0);
    assert_eq!(u(&j["digests"]["checked"]), u(&j["latency_ms"]["count"]));
    // The bench cannot have received more than the origin sent.
    assert!(origin.metric("p2pd_bytes_sent_total{proto=\"spp\"}") >= bytes);
}

/// A minimal HTTP/1.1 server for one title that answers Range requests from memory,
/// but holds every request starting at or past `slow_from` for `delay`: a server
/// that stalls partway through a stream.
fn stalling_http_server(
    data: Vec<u8>,
    slow_from: u64,
    delay: Duration,
) -> (SocketAddr, Arc<AtomicBool>) {
    let l = TcpListener::bind((host(), 0)).unwrap();
    let addr = l.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let data = Arc::new(data);
    std::thread::spawn(move || {
        for conn in l.incoming() {
            if stop2.load(Ordering::Relaxed) {
                return;
            }
            let Ok(mut s) = conn else { continue };
            let data = data.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                let mut buf = Vec::new();
                loop {
                    let head_end = loop {
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    buf.drain(..head_end);
                    let (start, end) = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Range: bytes="))
                        .and_then(|r| r.split_once('-'))
                        .map(|(a, b)| {
                            (
                                a.trim().parse::<u64>().unwrap(),
                                b.trim().parse::<u64>().unwrap(),
                            )
                        })
                        .unwrap_or((0, data.len() as u64 - 1));
                    let end = end.min(data.len() as u64 - 1);
                    if start >= slow_from {
                        // The stall the report must show.
                        std::thread::sleep(delay);
                    }
                    let body = &data[start as usize..=end as usize];
                    let head = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{end}/{}\r\n\r\n",
                        body.len(),
                        data.len()
                    );
                    if s.write_all(head.as_bytes()).is_err() || s.write_all(body).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, stop)
}

#[test]
fn a_server_that_stalls_produces_stalls_in_the_report() {
    let dir = tempfile::tempdir().unwrap();
    // 8 Mbit/s is 1 MB/s: the first 2 MB (2 s of playback) come at once, then every
    // request waits 1.5 s for 256 KiB (a quarter second of playback).
    let (addr, stop) = stalling_http_server(
        content(8_000_000, 5),
        2_000_000,
        Duration::from_millis(1500),
    );
    let url = format!("http://{addr}/title");
    let r = bench(
        dir.path(),
        &[
            "-d",
            "6s",
            "--rate",
            "0.1",
            "--bitrate",
            "8M",
            "--startup-buffer",
            "1s",
            "--max-buffer",
            "30s",
            "--watch",
            "60s",
            "--timeout",
            "5s",
            &url,
        ],
        Duration::from_secs(30),
    );
    stop.store(true, Ordering::Relaxed);
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    let j = &r.json;
    assert_eq!(u(&j["viewers"]["started"]), 1, "{}", r.stdout);
    assert_eq!(u(&j["startup_ms"]["count"]), 1, "{}", r.stdout);
    let stalls = u(&j["stalls"]["count"]);
    let stalled_s = j["stalls"]["stall_time_s"].as_f64().unwrap();
    let ratio = j["stalls"]["stall_ratio"].as_f64().unwrap();
    assert!(stalls >= 1, "no stall reported:\n{}", r.stdout);
    // Playback ran dry about 2 s in and got at most a quarter second per 1.5 s after
    // that: well over a second of the six was spent stalled.
    assert!(stalled_s > 1.0, "{}", r.stdout);
    assert!(ratio > 0.2 && ratio < 1.0, "{}", r.stdout);
    assert_eq!(u(&j["stalls"]["viewers_with_stalls"]), 1);
    assert_eq!(u(&j["errors_total"]), 0, "{}", r.stdout);
    assert!(r.stdout.contains("stalls          "), "{}", r.stdout);
}

#[test]
fn a_closed_port_gives_errors_and_the_run_ends_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = TcpListener::bind((host(), 0)).unwrap();
        l.local_addr().unwrap()
    };
    for (mode, url) in [
        (
            vec!["--max-throughput", "-c", "2"],
            format!("spp://{port}/x"),
        ),
        (vec!["--rate", "20"], format!("http://{port}/x")),
    ] {
        let mut args = mode.clone();
        args.extend(["-d", "2s", url.as_str()]);
        let r = bench(dir.path(), &args, Duration::from_secs(20));
        assert_eq!(r.code, 0, "{args:?} stderr: {}", r.stderr);
        assert!(
            r.elapsed < Duration::from_secs(8),
            "{args:?} took {:?}",
            r.elapsed
        );
        let j = &r.json;
        assert_eq!(u(&j["bytes"]), 0);
        let connect = u(&j["errors"]["connect"]);
        assert!(connect >= 2, "{args:?}: {}", r.stdout);
        assert_eq!(u(&j["errors_total"]), connect);
        assert_eq!(u(&j["viewers"]["failed"]), connect);
        assert_eq!(u(&j["viewers"]["completed"]), 0);
        assert!(r.stdout.contains("connect"), "{}", r.stdout);
    }
}

#[test]
fn a_silent_server_times_out_and_the_run_ends_on_time() {
    let dir = tempfile::tempdir().unwrap();
    // Accepts connections and never answers.
    let l = TcpListener::bind((host(), 0)).unwrap();
    let addr = l.local_addr().unwrap();
    let held: Arc<std::sync::Mutex<Vec<TcpStream>>> = Default::default();
    let held2 = held.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            held2.lock().unwrap().push(s);
        }
    });
    let url = format!("spp://{addr}/x");
    let r = bench(
        dir.path(),
        &[
            "--max-throughput",
            "-c",
            "2",
            "-d",
            "3s",
            "--timeout",
            "500ms",
            &url,
        ],
        Duration::from_secs(20),
    );
    assert_eq!(r.code, 0, "stderr: {}", r.stderr);
    assert!(r.elapsed < Duration::from_secs(8), "took {:?}", r.elapsed);
    let j = &r.json;
    assert!(u(&j["errors"]["timeout"]) >= 2, "{}", r.stdout);
    assert_eq!(u(&j["bytes"]), 0);
}

#[test]
fn bad_command_lines_are_one_clear_line() {
    for (args, needle) in [
        (vec!["--bitrate", "fast", "spp://127.0.0.1/x"], "--bitrate"),
        (vec!["-d", "forever", "spp://127.0.0.1/x"], "-d/--duration"),
        (vec!["ftp://127.0.0.1/x"], "not an spp:// or http:// URL"),
        (vec![], "no URL"),
    ] {
        let out = Command::new(BENCH).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}
