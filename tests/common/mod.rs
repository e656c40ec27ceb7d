//! Test harness: starts real `p2pd` processes on distinct loopback addresses, waits
//! for them with deadlines, kills them on drop, and speaks raw HTTP and SPP to them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_p2pd");
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(20);
pub const IO_DEADLINE: Duration = Duration::from_secs(20);

static NEXT_HOST: AtomicU32 = AtomicU32::new(1);

/// A distinct loopback address per simulated host: 127.<test binary>.<n>.<n>, so
/// nodes of different tests never share an address.
pub fn host_ip(binary_tag: u8) -> IpAddr {
    let n = NEXT_HOST.fetch_add(1, Ordering::Relaxed);
    IpAddr::V4(Ipv4Addr::new(
        127,
        binary_tag,
        (n / 250) as u8,
        (n % 250 + 1) as u8,
    ))
}

/// A running p2pd node; killed (and reaped) when dropped.
pub struct Node {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<String>>,
}

impl Node {
    /// Starts `p2pd ARGS --bind IP -P 0` and waits for its "publishing ... on IP:PORT"
    /// line.
    pub fn start(ip: IpAddr, args: &[&str]) -> Node {
        let mut cmd = Command::new(BIN);
        cmd.args(args).args(["--bind", &ip.to_string(), "-P", "0"]);
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "p2pd=debug");
        let mut child = cmd.spawn().expect("spawn p2pd");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(port) = parse_listen_line(&line) {
                    if let Some(t) = tx.take() {
                        let _ = t.send(port);
                    }
                }
                log2.lock().unwrap().push_str(&line);
                log2.lock().unwrap().push('\n');
            }
        });
        let port = match rx.recv_timeout(STARTUP_DEADLINE) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "p2pd did not start within {STARTUP_DEADLINE:?}; log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        Node {
            child,
            addr: SocketAddr::new(ip, port),
            log,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn spp_url(&self, path: &str) -> String {
        format!("spp://{}/{}", self.addr, path)
    }

    /// The value of one metric line (`name` including labels) from /_p2pd/metrics.
    pub fn metric(&self, name: &str) -> u64 {
        let r = http(
            self.addr,
            "GET /_p2pd/metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        let body = String::from_utf8_lossy(&r.body).to_string();
        for line in body.lines() {
            if let Some(v) = line.strip_prefix(name).and_then(|r| r.strip_prefix(' ')) {
                return v
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("bad metric value {line}"));
            }
        }
        panic!("metric {name} missing from:\n{body}");
    }

    /// Waits until `cond` holds, polling, or panics at the deadline.
    pub fn wait_for(&self, what: &str, mut cond: impl FnMut(&Node) -> bool) {
        let t = Instant::now();
        while t.elapsed() < IO_DEADLINE {
            if cond(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}; log:\n{}", self.log());
    }

    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(50));
        self.log()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_listen_line(line: &str) -> Option<u16> {
    if !line.starts_with("p2pd: ") || !line.contains(" publishing ") {
        return None;
    }
    let after = line.split(" on ").nth(1)?;
    let hostport = after.split_whitespace().next()?;
    hostport.rsplit(':').next()?.parse().ok()
}

/// Starts an origin on a fresh 127.`tag`.x.y publishing `dir` with 16 KiB blocks (so
/// small files span several blocks), two shards and its indexes under `idx`.
pub fn start_origin(tag: u8, dir: &Path, idx: &Path, extra: &[&str]) -> Node {
    let mut args = vec![
        "-p",
        dir.to_str().unwrap(),
        "--index-dir",
        idx.to_str().unwrap(),
        "--threads",
        "2",
        "-b",
        "16k",
    ];
    args.extend_from_slice(extra);
    Node::start(host_ip(tag), &args)
}

/// Deterministic test content: a byte pattern that differs per file and per position.
pub fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn write_file(dir: &Path, rel: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, data).unwrap();
    p
}

/// Runs `p2pd ARGS` to completion with a deadline, draining its output while it runs
/// (so output larger than a pipe buffer cannot wedge it).
pub fn run_p2pd(args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn p2pd");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.expect("wait for p2pd"),
        Err(_) => {
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("p2pd {args:?} did not finish within 60 s");
        }
    }
}

/// `p2pd get URL -o OUT -q`; returns (exit code, stderr).
pub fn p2pd_get(url: &str, out: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["get", url, "-o", out.to_str().unwrap(), "-q"];
    args.extend_from_slice(extra);
    let o = run_p2pd(&args);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_DEADLINE).expect("connect");
    s.set_read_timeout(Some(IO_DEADLINE)).unwrap();
    s.set_write_timeout(Some(IO_DEADLINE)).unwrap();
    s
}

/// Sends one raw request on a new connection and reads one response.
pub fn http(addr: SocketAddr, raw: &str) -> Response {
    let mut s = connect(addr);
    s.write_all(raw.as_bytes()).unwrap();
    let head_only = raw.starts_with("HEAD ");
    read_response(&mut s, head_only)
}

/// `GET path` with optional extra header lines.
pub fn http_get(addr: SocketAddr, path: &str, extra: &str) -> Response {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"),
    )
}

/// A parsed response head: status, headers, head length, body length to expect.
pub type Head = (u16, Vec<(String, String)>, usize, usize);

/// The response head at the front of `buf`; `None` while it is incomplete.
pub fn parse_head(buf: &[u8], head_only: bool) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(n) = r.parse(buf).expect("valid response head") else {
        return None;
    };
    let status = r.code.unwrap();
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).to_string(),
            )
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse().unwrap())
        .unwrap_or(0);
    let want = if head_only || status == 304 || status == 204 {
        0
    } else {
        len
    };
    Some((status, headers, n, want))
}

/// Reads one HTTP response (head and Content-Length body) from `s`.
pub fn read_response(s: &mut TcpStream, head_only: bool) -> Response {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        if let Some((status, headers, n, want)) = parse_head(&buf, head_only) {
            let mut body = buf[n..].to_vec();
            while body.len() < want {
                let k = s.read(&mut chunk).expect("read body");
                assert!(
                    k > 0,
                    "connection closed after {} of {want} body bytes",
                    body.len()
                );
                body.extend_from_slice(&chunk[..k]);
            }
            assert_eq!(body.len(), want, "more bytes than Content-Length");
            return Response {
                status,
                headers,
                body,
            };
        }
        let k = s.read(&mut chunk).expect("read head");
        assert!(
            k > 0,
            "connection closed before a response head; got {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..k]);
    }
}

/// True when the server closed `s` (EOF or reset) within the deadline.
pub fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 4096];
    let t = Instant::now();
    while t.elapsed() < IO_DEADLINE {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
    false
}
