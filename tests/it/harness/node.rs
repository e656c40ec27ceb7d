//! A running `p2pd`: started on an address of its own, waited for by its startup line,
//! asked for its metrics, killed and reaped on drop; and the diagnostics a failing test
//! prints about its nodes.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{host, shared, try_http, wait_until, Shared, BIN, IO_DEADLINE, STARTUP_DEADLINE};

/// How long a killed node's log reader may take to read what is left in the pipe.
const LOG_DRAIN: Duration = Duration::from_secs(2);

/// A running p2pd node; killed (and reaped) when dropped.
pub struct Node {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<String>>,
    /// The arguments it was started with (without `--bind` and `-P`), for `restart`.
    pub args: Vec<String>,
    /// Disconnected once the log reader has taken the last line (in a mutex: a `Node`
    /// is shared between threads).
    log_done: Mutex<Receiver<()>>,
    _shared: Shared,
}

/// Spawns `p2pd ARGS --bind IP -P PORT` with extra environment variables, appending
/// its standard error to `log`, and waits for its startup line; returns the child, the
/// port it listens on and the log reader's end (disconnected once it has taken the
/// last line).
fn spawn_node(
    ip: IpAddr,
    port: u16,
    args: &[String],
    log: &Arc<Mutex<String>>,
    env: &[(&str, &str)],
) -> (Child, u16, Receiver<()>) {
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
    let (done_tx, done) = std::sync::mpsc::channel::<()>();
    let log2 = log.clone();
    std::thread::spawn(move || {
        let _done = done_tx;
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
        Ok(p) => (child, p, done),
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
            let _ = done.recv_timeout(LOG_DRAIN);
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
    /// startup line. Every simulated host has its own address (see `net`), so a fixed
    /// port (1111, 8080) is free on a fresh one; nodes that must name each other before
    /// they start use fixed ports.
    pub fn start_on(ip: IpAddr, port: u16, args: &[&str]) -> Node {
        Node::spawn(ip, port, args, &[])
    }

    /// [`Node::start`] with extra environment variables (e.g. `P2PD_TEST_HOOKS=1`).
    /// A `restart` does not keep them.
    pub fn start_with_env(ip: IpAddr, args: &[&str], env: &[(&str, &str)]) -> Node {
        Node::spawn(ip, 0, args, env)
    }

    fn spawn(ip: IpAddr, port: u16, args: &[&str], env: &[(&str, &str)]) -> Node {
        let shared = shared();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let log = Arc::new(Mutex::new(String::new()));
        let (child, port, log_done) = spawn_node(ip, port, &args, &log, env);
        Node {
            child,
            addr: SocketAddr::new(ip, port),
            log,
            args,
            log_done: Mutex::new(log_done),
            _shared: shared,
        }
    }

    /// SIGKILL, as a crash or `kill -9` would, and reap it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let done = self.log_done.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = done.recv_timeout(LOG_DRAIN);
    }

    /// Kills the node if it still runs and starts it again with the same arguments
    /// on the same address and port; the log goes on in the same buffer after a
    /// marker line.
    pub fn restart(&mut self) {
        self.kill9();
        // A killed node's io_uring instance, and with it its listening socket, is torn
        // down by the kernel a moment after the process is reaped.
        let free = wait_until(STARTUP_DEADLINE, || TcpListener::bind(self.addr).is_ok());
        assert!(free, "{} still in use after the node was killed", self.addr);
        self.log
            .lock()
            .unwrap()
            .push_str("---- test harness: restarting p2pd ----\n");
        let (child, port, log_done) =
            spawn_node(self.addr.ip(), self.addr.port(), &self.args, &self.log, &[]);
        assert_eq!(port, self.addr.port(), "restarted on another port");
        self.child = child;
        self.log_done = Mutex::new(log_done);
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
        if !wait_until(IO_DEADLINE, || cond(self)) {
            panic!("timed out waiting for {what}; log:\n{}", self.log());
        }
    }

    /// Kills it and returns its whole log.
    pub fn stop(mut self) -> String {
        self.kill9();
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
/// `p2pd: origin publishing /d on 127.64.0.1:40000 (2 shards, ...)` or
/// `p2pd: site cache (SCC) caching in /c on 127.64.0.2:1111 (...)`.
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

/// The block size origins publish with (`-b 16k`): small files span several blocks.
pub const ORIGIN_BLOCK: usize = 16 * 1024;

/// Starts an origin on a fresh address publishing `dir` with [`ORIGIN_BLOCK`] blocks,
/// two shards and its indexes under `idx`.
pub fn start_origin(dir: &Path, idx: &Path, extra: &[&str]) -> Node {
    start_origin_on(host(), 0, dir, idx, extra)
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
