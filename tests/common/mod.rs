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

use bytes::BytesMut;
use p2pd::digest::MAX_DIGEST_BYTES;
use p2pd::protocol::*;

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
    /// The arguments it was started with (without `--bind` and `-P`), for `restart`.
    pub args: Vec<String>,
}

/// Spawns `p2pd ARGS --bind IP -P PORT`, appending its standard error to `log`, and
/// waits for its startup line; returns the child and the port it listens on.
fn spawn_node(ip: IpAddr, port: u16, args: &[String], log: &Arc<Mutex<String>>) -> (Child, u16) {
    spawn_node_env(ip, port, args, log, &[])
}

/// [`spawn_node`] with extra environment variables.
fn spawn_node_env(
    ip: IpAddr,
    port: u16,
    args: &[String],
    log: &Arc<Mutex<String>>,
    env: &[(&str, &str)],
) -> (Child, u16) {
    let mut cmd = Command::new(BIN);
    cmd.envs(env.iter().copied());
    cmd.args(args)
        .args(["--bind", &ip.to_string(), "-P", &port.to_string()]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "p2pd=debug");
    let mut child = cmd.spawn().expect("spawn p2pd");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let log2 = log.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = parse_listen_line(&line) {
                if let Some(t) = tx.take() {
                    let _ = t.send(addr.port());
                }
            }
            let mut l = log2.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    match rx.recv_timeout(STARTUP_DEADLINE) {
        Ok(p) => (child, p),
        Err(e) => {
            // Disconnected: standard error closed, so it exited before its startup line.
            let what = match e {
                std::sync::mpsc::RecvTimeoutError::Timeout => {
                    format!("did not print its startup line within {STARTUP_DEADLINE:?}")
                }
                std::sync::mpsc::RecvTimeoutError::Disconnected => {
                    "exited before printing its startup line".to_string()
                }
            };
            let _ = child.kill();
            let status = child.wait();
            std::thread::sleep(Duration::from_millis(50));
            panic!(
                "p2pd {args:?} --bind {ip} -P {port} {what} ({status:?}); log:\n{}",
                log.lock().unwrap()
            );
        }
    }
}

impl Node {
    /// Starts `p2pd ARGS --bind IP -P 0` and waits for its "p2pd: ... on IP:PORT"
    /// startup line.
    pub fn start(ip: IpAddr, args: &[&str]) -> Node {
        Node::start_on(ip, 0, args)
    }

    /// Starts `p2pd ARGS --bind IP -P PORT` (0: any free port) and waits for its
    /// startup line. Every simulated host has its own address, so a fixed port (1111,
    /// 8080) is free on a fresh one; nodes that must name each other before they start
    /// use fixed ports.
    pub fn start_on(ip: IpAddr, port: u16, args: &[&str]) -> Node {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let log = Arc::new(Mutex::new(String::new()));
        let (child, port) = spawn_node(ip, port, &args, &log);
        Node {
            child,
            addr: SocketAddr::new(ip, port),
            log,
            args,
        }
    }

    /// [`Node::start`] with extra environment variables (e.g. `P2PD_TEST_HOOKS=1`).
    /// A `restart` does not keep them.
    pub fn start_with_env(ip: IpAddr, args: &[&str], env: &[(&str, &str)]) -> Node {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let log = Arc::new(Mutex::new(String::new()));
        let (child, port) = spawn_node_env(ip, 0, &args, &log, env);
        Node {
            child,
            addr: SocketAddr::new(ip, port),
            log,
            args,
        }
    }

    /// SIGKILL, as a crash or `kill -9` would, and reap it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Let the log reader take the last lines.
        std::thread::sleep(Duration::from_millis(20));
    }

    /// Kills the node if it still runs and starts it again with the same arguments
    /// on the same address and port; the log goes on in the same buffer after a
    /// marker line.
    pub fn restart(&mut self) {
        self.kill9();
        self.log
            .lock()
            .unwrap()
            .push_str("---- test harness: restarting p2pd ----\n");
        let (child, port) = spawn_node(self.addr.ip(), self.addr.port(), &self.args, &self.log);
        assert_eq!(port, self.addr.port(), "restarted on another port");
        self.child = child;
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(n);
        let mut out = String::new();
        if from > 0 {
            out.push_str(&format!("[... {from} earlier lines]\n"));
        }
        for l in &lines[from..] {
            out.push_str(l);
            out.push('\n');
        }
        out
    }

    /// The node's metrics (sample lines only, no HELP/TYPE comments), or why they
    /// could not be read. Never panics: it is used to explain failures.
    pub fn metrics_text(&self) -> String {
        match try_http(
            self.addr,
            "GET /_p2pd/metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        ) {
            Ok(r) if r.status == 200 => String::from_utf8_lossy(&r.body)
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .map(|l| format!("{l}\n"))
                .collect(),
            Ok(r) => format!(
                "<metrics answered {}: {:?}>\n",
                r.status,
                String::from_utf8_lossy(&r.body)
            ),
            Err(e) => format!("<metrics unavailable: {e}>\n"),
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
        let r = try_http(
            self.addr,
            "GET /_p2pd/metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            IO_DEADLINE,
        )
        .unwrap_or_else(|e| {
            panic!(
                "reading metric {name} of {}: {e}; log (tail):\n{}",
                self.addr,
                self.log_tail(60)
            )
        });
        let body = String::from_utf8_lossy(&r.body).to_string();
        for line in body.lines() {
            if let Some(v) = line.strip_prefix(name).and_then(|r| r.strip_prefix(' ')) {
                return v
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("bad metric value {line}"));
            }
        }
        panic!(
            "metric {name} missing at {} ({} {:?}) from:\n{body}\nlog (tail):\n{}",
            self.addr,
            r.status,
            self.args,
            self.log_tail(60)
        );
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

/// The address in a startup line of any role: a line starting "p2pd: " in which the
/// word after some " on " is a socket address (a trailing ',' trimmed), e.g.
/// `p2pd: origin publishing /d on 127.26.0.1:40000 (2 shards, ...)` or
/// `p2pd: site cache (SCC) caching in /c on 127.26.0.2:1111 (...)`.
fn parse_listen_line(line: &str) -> Option<SocketAddr> {
    if !line.starts_with("p2pd: ") {
        return None;
    }
    line.split(" on ").skip(1).find_map(|after| {
        after
            .split_whitespace()
            .next()?
            .trim_end_matches(',')
            .parse::<SocketAddr>()
            .ok()
    })
}

/// Starts an origin on a fresh 127.`tag`.x.y publishing `dir` with 16 KiB blocks (so
/// small files span several blocks), two shards and its indexes under `idx`.
pub fn start_origin(tag: u8, dir: &Path, idx: &Path, extra: &[&str]) -> Node {
    start_origin_on(host_ip(tag), 0, dir, idx, extra)
}

/// [`start_origin`] on a given address and port (0: any free port).
pub fn start_origin_on(ip: IpAddr, port: u16, dir: &Path, idx: &Path, extra: &[&str]) -> Node {
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
    Node::start_on(ip, port, &args)
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
    run_p2pd_with(args, |_| {})
}

/// [`run_p2pd`] with the command adjusted first (its environment, say).
pub fn run_p2pd_with(args: &[&str], adjust: impl FnOnce(&mut Command)) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    adjust(&mut cmd);
    let child = cmd.spawn().expect("spawn p2pd");
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

// ---- Helpers for the cache roles (tests/cache.rs) ----

/// A connection to `addr` whose source address is `src` (any simulated host: the
/// whole of 127.0.0.0/8 is local), with the usual deadlines.
pub fn connect_from(src: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.bind(&SocketAddr::new(src, 0).into())?;
    sock.connect_timeout(&addr.into(), IO_DEADLINE)?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(IO_DEADLINE))?;
    s.set_write_timeout(Some(IO_DEADLINE))?;
    Ok(s)
}

/// Like `read_response`, but every failure (closed early, timeout, bad head) is an
/// `Err` describing it, so callers can add the nodes' logs to their panic.
pub fn try_read_response(s: &mut TcpStream, head_only: bool) -> Result<Response, String> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65536];
    let head = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut headers);
        match r.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => break parse_head(&buf, head_only).unwrap(),
            Ok(httparse::Status::Partial) => {}
            Err(e) => {
                return Err(format!(
                    "invalid response head ({e}): {:?}",
                    String::from_utf8_lossy(&buf)
                ))
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => {
                return Err(format!(
                    "connection closed before a response head; got {:?}",
                    String::from_utf8_lossy(&buf)
                ))
            }
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) => {
                return Err(format!(
                    "reading the response head: {e}; got {:?}",
                    String::from_utf8_lossy(&buf)
                ))
            }
        }
    };
    let (status, headers, n, want) = head;
    let mut body = buf[n..].to_vec();
    while body.len() < want {
        match s.read(&mut chunk) {
            Ok(0) => {
                return Err(format!(
                    "{status} response: connection closed after {} of {want} body bytes",
                    body.len()
                ))
            }
            Ok(k) => body.extend_from_slice(&chunk[..k]),
            Err(e) => {
                return Err(format!(
                    "{status} response: reading the body after {} of {want} bytes: {e}",
                    body.len()
                ))
            }
        }
    }
    if body.len() > want {
        return Err(format!(
            "{status} response: {} bytes more than Content-Length {want}",
            body.len() - want
        ));
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// One raw request on a new connection, with `deadline` for every read and write;
/// never panics.
pub fn try_http(addr: SocketAddr, raw: &str, deadline: Duration) -> Result<Response, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, deadline).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(deadline))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(deadline))
        .map_err(|e| e.to_string())?;
    s.write_all(raw.as_bytes())
        .map_err(|e| format!("send to {addr}: {e}"))?;
    try_read_response(&mut s, raw.starts_with("HEAD "))
}

/// The `host[:port]` part of an absolute `http://` URL.
pub fn url_authority(url: &str) -> &str {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not an http:// URL: {url}"));
    rest.split('/').next().unwrap()
}

/// The request a player sends to its `http_proxy`: `GET http://host:port/path` in
/// absolute form, with `Host`, the given extra header lines (each ending in CRLF) and
/// `Connection: close`. Sent from `src` when given, else from the default source
/// address (127.0.0.1, local to every simulated host).
pub fn try_proxy_request(
    proxy: SocketAddr,
    src: Option<IpAddr>,
    method: &str,
    url: &str,
    extra_headers: &str,
) -> Result<Response, String> {
    let mut s = match src {
        Some(ip) => connect_from(ip, proxy),
        None => TcpStream::connect_timeout(&proxy, IO_DEADLINE).and_then(|s| {
            s.set_read_timeout(Some(IO_DEADLINE))?;
            s.set_write_timeout(Some(IO_DEADLINE))?;
            Ok(s)
        }),
    }
    .map_err(|e| format!("connect to {proxy} from {src:?}: {e}"))?;
    let host = url_authority(url);
    let raw = format!(
        "{method} {url} HTTP/1.1\r\nHost: {host}\r\n{extra_headers}Connection: close\r\n\r\n"
    );
    s.write_all(raw.as_bytes())
        .map_err(|e| format!("send to {proxy}: {e}"))?;
    try_read_response(&mut s, method == "HEAD")
}

/// `GET url` through the proxy at `proxy` (raw absolute-form request); panics on an
/// I/O failure, returns whatever status came back.
pub fn proxy_get(proxy: SocketAddr, url: &str, extra_headers: &str) -> Response {
    try_proxy_request(proxy, None, "GET", url, extra_headers)
        .unwrap_or_else(|e| panic!("GET {url} via proxy {proxy}: {e}"))
}

/// Environment variables that would send a tool through a proxy, or around one.
const PROXY_ENV: [&str; 8] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// Runs an external tool (curl, ffmpeg, ffprobe) with `deadline`, the caller's proxy
/// variables removed and `env` set, draining its output while it runs. A missing tool
/// is a test failure that says how to install it, never a skip.
pub fn run_tool(program: &str, args: &[&str], env: &[(&str, &str)], deadline: Duration) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for k in PROXY_ENV {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("{program} is not installed: run scripts/install-deps.sh")
        }
        Err(e) => panic!("cannot run {program}: {e}"),
    };
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(out) => out.unwrap_or_else(|e| panic!("wait for {program}: {e}")),
        Err(_) => {
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{program} {args:?} did not finish within {deadline:?}");
        }
    }
}

/// Fails (never skips) when `program` cannot run: the tests that need it say how to
/// get it.
pub fn require_tool(program: &str, version_args: &[&str]) {
    let o = run_tool(program, version_args, &[], Duration::from_secs(30));
    assert!(
        o.status.success(),
        "{program} {version_args:?} failed ({:?}): run scripts/install-deps.sh\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `curl ARGS` with a deadline and without proxy variables from the environment (pass
/// `-x` explicitly).
pub fn curl(args: &[&str]) -> Output {
    let mut a = vec!["--max-time", "60"];
    a.extend_from_slice(args);
    run_tool("curl", &a, &[], Duration::from_secs(70))
}

/// Files under `dir` (recursively) whose name ends in `suffix`, sorted.
pub fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(p),
                Ok(t) if t.is_file() && p.to_string_lossy().ends_with(suffix) => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Disk space allocated to the files under `dir` whose name ends in `suffix`, as `du`
/// counts it (st_blocks * 512: holes are free, preallocated space counts). Files that
/// vanish while counting count as 0.
pub fn allocated_bytes(dir: &Path, suffix: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    files_with_suffix(dir, suffix)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// Polls `cond` every 20 ms until it holds (true) or `deadline` passes (false).
pub fn poll_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if t.elapsed() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Everything that explains a failure: per node its address, whether it runs, its
/// metrics and the tail of its log.
pub fn diagnose(nodes: &[(&str, &Node)]) -> String {
    let mut out = String::from("\n======== diagnostics ========\n");
    for (name, n) in nodes {
        out.push_str(&format!(
            "---- {name} at {} (args {:?}) metrics:\n{}---- {name} log (tail):\n{}",
            n.addr,
            n.args,
            n.metrics_text(),
            n.log_tail(80)
        ));
    }
    out
}

/// A minimal blocking SPP client.
pub struct Spp {
    pub s: TcpStream,
    buf: BytesMut,
    dec: Decoder,
}

impl Spp {
    /// Connects from `src` and shakes hands; returns the peer's Hello too.
    pub fn connect_from(src: IpAddr, addr: SocketAddr) -> Result<(Spp, Hello), String> {
        Spp::connect_as(src, addr, 0)
    }

    /// Connects from `src`, announcing `listen_port` in the Hello (a node that
    /// accepts connections there, as a peer would).
    pub fn connect_as(
        src: IpAddr,
        addr: SocketAddr,
        listen_port: u16,
    ) -> Result<(Spp, Hello), String> {
        let s = connect_from(src, addr).map_err(|e| format!("connect from {src}: {e}"))?;
        Spp::over(s, listen_port)
    }

    /// Shakes hands over a connected stream, announcing `listen_port`.
    pub fn over(s: TcpStream, listen_port: u16) -> Result<(Spp, Hello), String> {
        let mut c = Spp {
            s,
            buf: BytesMut::new(),
            dec: Decoder::new(),
        };
        c.send(&Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            role: Role::Client,
            listen_port,
            capabilities: 0,
        }))?;
        match c.recv()? {
            Frame::Hello(h) => Ok((c, h)),
            other => Err(format!("expected Hello, got {other:?}")),
        }
    }
    pub fn send(&mut self, f: &Frame) -> Result<(), String> {
        let mut out = BytesMut::new();
        encode(f, &mut out).unwrap();
        self.s.write_all(&out).map_err(|e| format!("send: {e}"))
    }
    pub fn recv(&mut self) -> Result<Frame, String> {
        let mut chunk = vec![0u8; 65536];
        loop {
            if let Some(f) = self
                .dec
                .decode(&mut self.buf)
                .map_err(|e| format!("invalid frame: {e:?}"))?
            {
                return Ok(f);
            }
            let n = self.s.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
    pub fn info(&mut self, req_id: u32, host: &str, path: &str) -> Result<Frame, String> {
        self.send(&info_request(
            req_id,
            host,
            path,
            limits::MAX_DIGESTS_PER_INFO,
        ))?;
        self.recv()
    }
    /// Every block of `info`, each checked against its digest.
    pub fn get_all(&mut self, info: &Info) -> Result<Vec<u8>, String> {
        let blocks = info.block_count();
        self.send(&Frame::Get(Get {
            req_id: 77,
            handle: info.handle,
            version: info.version,
            first_block: 0,
            block_count: blocks as u32,
        }))?;
        let mut out = Vec::new();
        let mut d = [0u8; MAX_DIGEST_BYTES];
        for i in 0..blocks {
            match self.recv()? {
                Frame::Data(dt) if dt.req_id == 77 && dt.block == i => {
                    let want = info.digest(i as usize).ok_or("too few digests")?;
                    if info.algo.digest_into(&dt.payload, &mut d) != want {
                        return Err(format!("block {i} fails its digest"));
                    }
                    out.extend_from_slice(&dt.payload);
                }
                other => return Err(format!("block {i}: got {other:?}")),
            }
        }
        Ok(out)
    }
}

impl Spp {
    pub fn locate(
        &mut self,
        req_id: u32,
        handle: u32,
        first: u64,
        count: u64,
    ) -> Result<Frame, String> {
        self.send(&Frame::LocateRequest(LocateRequest {
            req_id,
            handle,
            first_block: first,
            block_count: count,
        }))?;
        self.recv()
    }

    /// Asks for blocks `first..first+count`; returns the Data frames' block numbers
    /// (each verified against `info`) and the Error that ended the Get, if any.
    pub fn get_range(
        &mut self,
        info: &Info,
        req_id: u32,
        first: u64,
        count: u32,
    ) -> Result<(Vec<u64>, Option<ErrorFrame>), String> {
        self.send(&Frame::Get(Get {
            req_id,
            handle: info.handle,
            version: info.version,
            first_block: first,
            block_count: count,
        }))?;
        let mut got = Vec::new();
        let mut d = [0u8; MAX_DIGEST_BYTES];
        while got.len() < count as usize {
            match self.recv()? {
                Frame::Data(dt) if dt.req_id == req_id => {
                    let want = info.digest(dt.block as usize).ok_or("no digest")?;
                    if info.algo.digest_into(&dt.payload, &mut d) != want {
                        return Err(format!("block {} fails its digest", dt.block));
                    }
                    got.push(dt.block);
                }
                Frame::Error(e) if e.req_id == req_id => return Ok((got, Some(e))),
                other => return Err(format!("unexpected {other:?}")),
            }
        }
        Ok((got, None))
    }
}

pub fn expect_info(f: Frame) -> Result<Info, String> {
    match f {
        Frame::Info(i) => Ok(i),
        other => Err(format!("expected Info, got {other:?}")),
    }
}

pub fn expect_locations(f: Frame) -> Result<Vec<Location>, String> {
    match f {
        Frame::Locate(l) => Ok(l.locations),
        other => Err(format!("expected Locate, got {other:?}")),
    }
}

/// An InfoRequest for `host:1111/path` asking for `digests` digests from the first.
pub fn info_request(req_id: u32, host: &str, path: &str, digests: u32) -> Frame {
    Frame::InfoRequest(InfoRequest {
        req_id,
        file: FileRef {
            host: host.into(),
            port: 1111,
            path: path.into(),
        },
        digest_start: 0,
        digest_count: digests,
    })
}
