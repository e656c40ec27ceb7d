//! The command line: bad command lines exit at once with one line naming the option,
//! `--help` and `p2pd man`, and `p2pd get` successes and failures (exit codes, one
//! line on stderr, no partial output file left behind).

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Runs p2pd with `args`, expects a quick exit with status 2 and exactly one stderr
/// line containing every one of `needles`; returns that line.
fn assert_refused(args: &[&str], needles: &[&str]) -> String {
    let t = Instant::now();
    let o = run_p2pd(args);
    check_refused(args, &o, t.elapsed(), needles)
}

/// [`assert_refused`] with `$HOME` set to `home`, or unset for `None`.
fn assert_refused_home(args: &[&str], home: Option<&Path>, needles: &[&str]) -> String {
    let t = Instant::now();
    let o = run_p2pd_home(args, home);
    check_refused(args, &o, t.elapsed(), needles)
}

/// Like `run_p2pd`, with `$HOME` set to `home` (unset for `None`), so that the client
/// cache's default directory is never made in the real home.
fn run_p2pd_home(args: &[&str], home: Option<&Path>) -> Output {
    run_p2pd_with(args, |cmd| {
        match home {
            Some(h) => cmd.env("HOME", h),
            None => cmd.env_remove("HOME"),
        };
    })
}

/// The checks of [`assert_refused`] on a finished run that took `took`.
fn check_refused(args: &[&str], o: &Output, took: Duration, needles: &[&str]) -> String {
    let err = stderr(o);
    assert!(
        took < Duration::from_secs(5),
        "p2pd {args:?} took {took:?} to refuse"
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "p2pd {args:?}: status {:?}, stderr {err:?}",
        o.status
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "p2pd {args:?}: want one stderr line, got {err:?}"
    );
    assert!(
        err.ends_with('\n'),
        "p2pd {args:?}: unterminated line {err:?}"
    );
    for n in needles {
        assert!(
            lines[0].contains(n),
            "p2pd {args:?}: {:?} does not mention {n:?}",
            lines[0]
        );
    }
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "p2pd {args:?} panicked: {err}"
    );
    assert!(
        o.stdout.is_empty(),
        "p2pd {args:?} wrote to stdout: {:?}",
        String::from_utf8_lossy(&o.stdout)
    );
    lines[0].to_string()
}

#[test]
fn bad_command_lines_are_refused_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pub");
    let dir2 = tmp.path().join("cache");
    let never = tmp.path().join("never-created");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let d2 = dir2.to_str().unwrap();
    let nv = never.to_str().unwrap();

    assert_refused(&["-p", d, "-b", "5000"], &["-b", "block-size"]);
    assert_refused(&["-p", d, "-b", "8k"], &["-b", "block-size"]);
    assert_refused(&["-p", d, "-b", "32M"], &["-b", "block-size"]);
    assert_refused(&["-p", d, "-b", "xyz"], &["-b", "block-size", "xyz"]);
    assert_refused(&["-p", d, "-M", "12q"], &["-M", "memory-cache-size", "12q"]);
    let l = assert_refused(&["-p", d, "-m", "md5"], &["-m", "digest", "md5", "sha256"]);
    for algo in ["sha224", "sha384", "sha512", "sha512-256"] {
        assert!(l.contains(algo), "{l:?} does not list {algo}");
    }
    assert_refused(&["-n", "10.0.0.0/33", "-c", nv], &["-n", "10.0.0.0/33"]);
    assert!(
        !never.exists(),
        "a refused command line created the cache directory"
    );
    assert_refused(&["-p", d, "-P", "70000"], &["port", "70000"]);
    assert_refused(&["-p", "/does/not/exist"], &["-p", "/does/not/exist"]);
    assert_refused(&["-p", d, "-c", d2], &["-p", "-c"]);
    // Options of the other role, and of a later release, on either role.
    assert_refused(&["-p", d, "-n", "10.0.0.0/8"], &["-n", "caches (-c) only"]);
    assert_refused(&["-p", d, "-S", "parent"], &["-S", "caches (-c) only"]);
    assert_refused(&["-p", d, "-C", "1G"], &["-C", "caches (-c) only"]);
    assert_refused(&["-c", d2, "-b", "1M"], &["-b", "origins (-p) only"]);
    assert_refused(
        &["-c", d2, "--verify-reads"],
        &["--verify-reads", "origins"],
    );
    assert_refused(&["-c", d2, "-C", "1k"], &["-C", "64 KiB"]);
    assert_refused(
        &[
            "-c",
            d2,
            "--bind",
            "127.0.0.1",
            "-P",
            "7000",
            "-S",
            "127.0.0.1:7000",
        ],
        &["-S", "names this node itself"],
    );
    assert_refused(
        &["-c", d2, "--upstream-timeout", "0"],
        &["--upstream-timeout"],
    );
    assert_refused(&["-p", d, "-D"], &["-D", "not supported yet"]);
    assert_refused(&["get", "notaurl"], &["notaurl", "spp://"]);
    assert_refused(&["get", "http://x/y"], &["http://x/y", "spp://"]);
    assert_refused(&["-p", d, "--threads", "0"], &["--threads"]);
    assert_refused(&["-p", d, "--no-such-option"], &["--no-such-option"]);
    assert!(
        !dir2.exists(),
        "a refused command line created the cache directory"
    );
    // Nothing was written into the published directory either.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);

    // A cache directory that is a file, or cannot be created.
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let f = file.to_str().unwrap();
    assert_refused(&["-c", f], &["-c/--cache", f, "not a directory"]);
    let under = file.join("sub");
    assert_refused(
        &["--cache", under.to_str().unwrap()],
        &["-c/--cache", "sub"],
    );
}

#[test]
fn client_cache_without_options_needs_a_home() {
    let tmp = tempfile::tempdir().unwrap();
    // Neither -p nor -c is a client cache in $HOME/.p2pd_cache: without HOME there is
    // no such directory, and the line says to give -c.
    assert_refused_home(&[], None, &["-c/--cache", "HOME", "-c DIR"]);
    assert_refused_home(&["-d"], Some(Path::new("")), &["-c/--cache", "HOME"]);
    // With a HOME, origin options and -n without -c are refused before anything is
    // created there.
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    assert_refused_home(&["-b", "1M"], Some(&home), &["-b", "origins (-p) only"]);
    assert_refused_home(&["-T"], Some(&home), &["-T", "origins (-p) only"]);
    assert_refused_home(
        &["-n", "10.0.0.0/8"],
        Some(&home),
        &["-n", "site cache", "-c DIR"],
    );
    assert_refused_home(&["-S", "localhost"], Some(&home), &["-S", "itself"]);
    assert_eq!(
        std::fs::read_dir(&home).unwrap().count(),
        0,
        "a refused command line wrote into HOME"
    );
    // $HOME/.p2pd_cache that is a file.
    std::fs::write(home.join(".p2pd_cache"), b"x").unwrap();
    assert_refused_home(
        &[],
        Some(&home),
        &["-c/--cache", ".p2pd_cache", "not a directory"],
    );
}

#[test]
fn port_in_use_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pub");
    let idx = tmp.path().join("idx");
    write_file(&dir, "a.mp4", &content(10, 1));
    let ip = host();
    // std's listener sets SO_REUSEADDR but not SO_REUSEPORT, so p2pd cannot share it.
    let holder = TcpListener::bind(SocketAddr::new(ip, 0)).unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    let t = Instant::now();
    let o = run_p2pd(&[
        "-p",
        dir.to_str().unwrap(),
        "--index-dir",
        idx.to_str().unwrap(),
        "--threads",
        "2",
        "--bind",
        &ip.to_string(),
        "-P",
        &port,
    ]);
    let err = stderr(&o);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        o.status.code().is_some_and(|c| c != 0 && c != 101),
        "status {:?}, stderr {err:?}",
        o.status
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "want one stderr line, got {err:?}");
    assert!(lines[0].contains("in use"), "{:?}", lines[0]);
    assert!(
        lines[0].contains(&port),
        "{:?} does not name the port",
        lines[0]
    );
    drop(holder);
}

/// Runs p2pd with `args` for at most `deadline`: its output once it exited, or
/// `Err` with what it printed if it was still running (then killed).
fn run_for(args: &[&str], deadline: Duration) -> Result<Output, String> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let _shared = shared();
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn p2pd");
    let mut se = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let mut status = None;
    if !wait_until(deadline, || {
        status = child.try_wait().unwrap();
        status.is_some()
    }) {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stderr = err.join().unwrap();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout: Vec::new(),
            stderr,
        }),
        None => Err(format!(
            "still running after {deadline:?}; stderr: {:?}",
            String::from_utf8_lossy(&stderr)
        )),
    }
}

/// An origin publishing a fresh directory on `ip:port`: its arguments.
fn origin_args(tmp: &Path, ip: std::net::IpAddr, port: u16) -> Vec<String> {
    let dir = tmp.join("pub");
    write_file(&dir, "a.mp4", &content(10, 1));
    [
        "-p",
        dir.to_str().unwrap(),
        "--index-dir",
        tmp.join("idx").to_str().unwrap(),
        "--threads",
        "2",
        "--bind",
        &ip.to_string(),
        "-P",
        &port.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// p2pd on `ip:port` must exit at once, non-zero, with one stderr line naming the
/// port as in use.
fn assert_port_refused(ip: std::net::IpAddr, port: u16, holder: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let args = origin_args(tmp.path(), ip, port);
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let t = Instant::now();
    let o = run_for(&args, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("p2pd on {ip} -P {port}, held by {holder}: {e}"));
    let took = t.elapsed();
    let err = stderr(&o);
    assert!(
        o.status.code().is_some_and(|c| c != 0 && c != 101),
        "held by {holder}: status {:?}, stderr {err:?}",
        o.status
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "held by {holder}: want one stderr line, got {err:?}"
    );
    assert!(
        lines[0].contains("in use") && lines[0].contains(&format!("port {port} ")),
        "held by {holder}: {:?} does not say port {port} is in use",
        lines[0]
    );
    // Start-up checks (io_uring, the memory-lock limit) and the probe: no executor,
    // no index, no waiting.
    assert!(
        took < Duration::from_secs(2),
        "held by {holder}: took {took:?} to refuse"
    );
}

#[test]
fn port_held_by_another_p2pd_is_refused_although_both_set_reuseport() {
    let tmp = tempfile::tempdir().unwrap();
    write_file(&tmp.path().join("pub"), "a.mp4", &content(10, 1));
    let first = start_origin(&tmp.path().join("pub"), &tmp.path().join("idx"), &[]);
    assert_port_refused(first.addr.ip(), first.addr.port(), "a running p2pd");
    // The first one still serves.
    let r = http_get(first.addr, "/_p2pd/health", "");
    assert_eq!(r.status, 200, "the first p2pd after the refused start");
}

#[test]
fn port_held_by_a_foreign_reuseport_listener_is_refused() {
    use socket2::{Domain, Socket, Type};
    let ip = host();
    let holder = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    holder.set_reuse_port(true).unwrap();
    holder.bind(&SocketAddr::new(ip, 0).into()).unwrap();
    holder.listen(16).unwrap();
    let port = holder.local_addr().unwrap().as_socket().unwrap().port();
    assert_port_refused(ip, port, "a foreign SO_REUSEPORT listener");
    drop(holder);
}

#[test]
fn port_held_on_ipv4_is_refused_for_a_dual_stack_bind() {
    use socket2::{Domain, Socket, Type};
    // Held on 0.0.0.0 with SO_REUSEPORT: `--bind ::` (dual-stack) would share it.
    let holder = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    holder.set_reuse_port(true).unwrap();
    holder
        .bind(&SocketAddr::from(([0, 0, 0, 0], 0)).into())
        .unwrap();
    holder.listen(16).unwrap();
    let port = holder.local_addr().unwrap().as_socket().unwrap().port();
    assert_port_refused("::".parse().unwrap(), port, "an IPv4 SO_REUSEPORT listener");
    drop(holder);
}

#[test]
fn help_and_man_page() {
    let o = run_p2pd(&["--help"]);
    assert_eq!(o.status.code(), Some(0), "stderr {}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.to_lowercase().contains("usage"), "{out}");
    for opt in [
        "-p",
        "-c",
        "-n",
        "-S",
        "-C",
        "-b",
        "-T",
        "-A",
        "--index-dir",
        "--threads",
        "--info-ttl",
        "--upstream-timeout",
        "get",
    ] {
        assert!(out.contains(opt), "--help does not mention {opt}:\n{out}");
    }
    assert!(
        o.stderr.is_empty(),
        "--help wrote to stderr: {}",
        stderr(&o)
    );

    let o = run_p2pd(&["-h"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout)
        .to_lowercase()
        .contains("usage"));

    let o = run_p2pd(&["get", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("--timeout") && out.contains("-o"), "{out}");

    let o = run_p2pd(&["man"]);
    assert_eq!(o.status.code(), Some(0), "stderr {}", stderr(&o));
    let page = String::from_utf8_lossy(&o.stdout);
    assert!(
        page.starts_with(".TH") || page.contains(".SH NAME"),
        "not a roff page:\n{page}"
    );
    assert!(page.contains(".TH"), "no .TH:\n{page}");
    assert!(page.contains("block"), "man page misses -b:\n{page}");
}

/// Asserts neither `out` nor `out.part` exists.
fn assert_no_output(out: &Path) {
    let mut part = out.as_os_str().to_owned();
    part.push(".part");
    assert!(!out.exists(), "{} exists after a failed get", out.display());
    assert!(
        !Path::new(&part).exists(),
        "{} left behind",
        Path::new(&part).display()
    );
}

fn one_line(err: &str) -> &str {
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "want one stderr line, got {err:?}");
    lines[0]
}

#[test]
fn get_connect_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ip = host();
    // A port that was free a moment ago on an address no other test uses.
    let port = TcpListener::bind(SocketAddr::new(ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = tmp.path().join("out.mp4");
    let url = format!("spp://{ip}:{port}/a.mp4");
    let t = Instant::now();
    let (code, err) = p2pd_get(&url, &out, &["--timeout", "2000"]);
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(code, 4, "stderr {err:?}");
    let line = one_line(&err);
    assert!(line.contains("connect"), "{line:?}");
    assert_no_output(&out);
}

#[test]
fn get_timeout_on_silent_server() {
    let tmp = tempfile::tempdir().unwrap();
    let ip = host();
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    // Accepts and holds connections, never answering.
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        let t = Instant::now();
        while !stop2.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(60) {
            if let Ok((s, _)) = listener.accept() {
                held.push(s);
            }
            // The silent server's accept loop (non-blocking, to see `stop`).
            std::thread::sleep(Duration::from_millis(10));
        }
        held.len()
    });
    let out = tmp.path().join("out.mp4");
    let url = format!("spp://{addr}/a.mp4");
    let t = Instant::now();
    let (code, err) = p2pd_get(&url, &out, &["--timeout", "500"]);
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let accepted = holder.join().unwrap();
    assert!(accepted >= 1, "p2pd get never connected");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(took >= Duration::from_millis(400), "gave up after {took:?}");
    assert_eq!(code, 5, "stderr {err:?}");
    let line = one_line(&err);
    assert!(line.contains("timed out"), "{line:?}");
    assert_no_output(&out);
}

#[test]
fn get_not_found_and_success() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pub");
    let idx = tmp.path().join("idx");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("empty.mp4", Vec::new()),
        ("one.mp4", content(1, 2)),
        ("block.mp4", content(16384, 3)),
        ("sub/big.mp4", content(1024 * 1024 + 3, 4)),
    ];
    for (rel, data) in &files {
        write_file(&dir, rel, data);
    }
    // The index directory next to the published one: "../idx" must not escape to it.
    let node = start_origin(&dir, &idx, &[]);
    let outdir = tmp.path().join("out");
    std::fs::create_dir_all(&outdir).unwrap();

    // Not found: exit 3, one exact line, no output file.
    let out = outdir.join("nope.mp4");
    let url = node.spp_url("nope.mp4");
    let (code, err) = p2pd_get(&url, &out, &[]);
    assert_eq!(code, 3, "stderr {err:?}");
    assert_eq!(one_line(&err), format!("p2pd get: not found: {url}"));
    assert_no_output(&out);

    // Escapes are not found (or refused), never served.
    let out = outdir.join("escape");
    let (code, err) = p2pd_get(&node.spp_url("../idx"), &out, &[]);
    assert_ne!(code, 0, "stderr {err:?}");
    one_line(&err);
    assert_no_output(&out);

    // Success: exact bytes in -o FILE, no FILE.part, nothing on stderr with -q.
    for (i, (rel, data)) in files.iter().enumerate() {
        let out = outdir.join(format!("got{i}.bin"));
        let (code, err) = p2pd_get(&node.spp_url(rel), &out, &[]);
        assert_eq!(code, 0, "get {rel}: stderr {err:?}");
        assert!(err.is_empty(), "get -q {rel} wrote {err:?}");
        let got = std::fs::read(&out).unwrap();
        assert_eq!(got.len(), data.len(), "{rel}");
        assert!(got == *data, "{rel}: bytes differ");
        let mut part = out.as_os_str().to_owned();
        part.push(".part");
        assert!(!Path::new(&part).exists(), "{rel}: .part left behind");
    }

    // To standard output (run_p2pd drains it while p2pd runs).
    let (rel, data) = &files[3];
    let o = run_p2pd(&["get", &node.spp_url(rel), "-q"]);
    assert_eq!(o.status.code(), Some(0), "stderr {}", stderr(&o));
    assert!(
        o.stdout == *data,
        "stdout differs ({} bytes)",
        o.stdout.len()
    );

    // Without -q and with -o: one summary line, still the right bytes.
    let out = outdir.join("loud.bin");
    let o = run_p2pd(&["get", &node.spp_url(rel), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "stderr {}", stderr(&o));
    assert!(std::fs::read(&out).unwrap() == *data);

    // A failed get does not leave a complete-looking FILE; an existing FILE from
    // before is not replaced by a partial one.
    let out = outdir.join("kept.bin");
    std::fs::write(&out, b"previous").unwrap();
    let (code, _) = p2pd_get(&node.spp_url("gone.mp4"), &out, &[]);
    assert_eq!(code, 3);
    assert_eq!(std::fs::read(&out).unwrap(), b"previous");
    let mut part = out.as_os_str().to_owned();
    part.push(".part");
    assert!(!Path::new(&part).exists());

    // The origin is unharmed.
    let r = http_get(node.addr, "/_p2pd/health", "");
    assert_eq!(r.status, 200);
}
