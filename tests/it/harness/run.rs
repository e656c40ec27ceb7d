//! One-shot commands with deadlines: `p2pd` itself (`get`, bad command lines) and the
//! external tools some tests drive (curl, ffmpeg, ffprobe), their output drained while
//! they run.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::{shared, BIN};

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
    let _shared = shared();
    let child = cmd.spawn().expect("spawn p2pd");
    finish(child, Duration::from_secs(60), || format!("p2pd {args:?}"))
}

/// Waits for `child` while draining its output; SIGKILLs it and fails the test if it
/// outlives `deadline`.
fn finish(child: Child, deadline: Duration, what: impl Fn() -> String) -> Output {
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(out) => out.unwrap_or_else(|e| panic!("waiting for {}: {e}", what())),
        Err(_) => {
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{} did not finish within {deadline:?}", what());
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
    let _shared = shared();
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("{program} is not installed: run scripts/install-deps.sh")
        }
        Err(e) => panic!("cannot run {program}: {e}"),
    };
    finish(child, deadline, || format!("{program} {args:?}"))
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
