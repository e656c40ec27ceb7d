//! `p2pd get URL`: fetch one file over SPP, verify every block against the origin's
//! digests before writing it, and write it to a file (atomically, via a `.part` name)
//! or to stdout.

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::GetConfig;
use crate::fetch::client::{Connection, FetchError};
use crate::protocol::{limits, ErrorCode, FileRef, Frame, Role};

/// Blocks asked for per Get frame, and Get frames kept outstanding: enough in flight to
/// fill a long fat pipe without unbounded buffering.
const BLOCKS_PER_GET: u32 = 8;
const GETS_IN_FLIGHT: usize = 4;

/// Exit codes, so scripts can tell failures apart.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const NOT_FOUND: i32 = 3;
    pub const CONNECT: i32 = 4;
    pub const TIMEOUT: i32 = 5;
    pub const INTEGRITY: i32 = 6;
}

pub struct Target {
    pub file: FileRef,
    pub addrs: Vec<SocketAddr>,
    pub url: String,
}

/// Splits an `spp://host[:port]/path` URL with the CLI's own parser and resolves its
/// host.
pub fn resolve(url: &str) -> Result<Target, String> {
    let u = crate::config::SppUrl::parse(url)?;
    let (host, port) = (u.origin.host, u.origin.port);
    let path = percent_encoding::percent_decode_str(u.path.trim_start_matches('/'))
        .decode_utf8()
        .map_err(|_| format!("'{url}': path is not UTF-8"))?
        .into_owned();
    let addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} has no address"));
    }
    Ok(Target {
        file: FileRef {
            host: host.to_ascii_lowercase(),
            port,
            path,
        },
        addrs,
        url: url.to_string(),
    })
}

fn exit_code(e: &FetchError) -> i32 {
    match e {
        FetchError::Remote {
            code: ErrorCode::NotFound,
            ..
        } => exit::NOT_FOUND,
        FetchError::Connect { .. } => exit::CONNECT,
        FetchError::Timeout { .. } => exit::TIMEOUT,
        FetchError::Digest { .. } => exit::INTEGRITY,
        _ => exit::FAILED,
    }
}

/// Runs the command; returns the process exit code after printing one line on failure.
pub fn run(cfg: GetConfig) -> i32 {
    let target = match resolve(&cfg.url) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("p2pd get: {e}");
            return exit::FAILED;
        }
    };
    let io_memory = match crate::runtime::preflight(1) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("p2pd get: {e}");
            return exit::FAILED;
        }
    };
    let started = Instant::now();
    let result = crate::runtime::run_single(io_memory, fetch(cfg.clone(), target));
    match result {
        Ok(Ok(bytes)) => {
            if cfg.output.is_some() && !cfg.quiet {
                let secs = started.elapsed().as_secs_f64().max(1e-6);
                eprintln!(
                    "p2pd get: {} bytes verified and written in {:.2} s ({:.1} MB/s)",
                    bytes,
                    secs,
                    bytes as f64 / secs / 1e6
                );
            }
            exit::OK
        }
        Ok(Err((e, code))) => {
            eprintln!("p2pd get: {e}");
            code
        }
        Err(e) => {
            eprintln!("p2pd get: {e}");
            exit::FAILED
        }
    }
}

/// Where verified bytes go: a `.part` file renamed into place on success, or stdout.
enum Sink {
    File {
        part: PathBuf,
        dest: PathBuf,
        f: std::io::BufWriter<std::fs::File>,
    },
    Stdout(std::io::StdoutLock<'static>),
}

impl Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::File { f, .. } => f.write_all(b),
            Sink::Stdout(s) => s.write_all(b),
        }
    }
    fn finish(self) -> std::io::Result<()> {
        match self {
            Sink::File { part, dest, f } => {
                let f = f.into_inner().map_err(|e| e.into_error())?;
                f.sync_all()?;
                std::fs::rename(part, dest)
            }
            Sink::Stdout(mut s) => s.flush(),
        }
    }
}

async fn fetch(cfg: GetConfig, target: Target) -> Result<u64, (String, i32)> {
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let fail = |e: FetchError| {
        let code = exit_code(&e);
        let msg = match &e {
            FetchError::Remote {
                code: ErrorCode::NotFound,
                ..
            } => format!("not found: {}", target.url),
            _ => e.to_string(),
        };
        (msg, code)
    };
    // Try each address the host resolves to until one answers.
    let mut conn = None;
    let mut last_err = None;
    for a in &target.addrs {
        match Connection::connect(*a, Role::Client, 0, timeout).await {
            Ok(c) => {
                conn = Some(c);
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    let mut conn = match (conn, last_err) {
        (Some(c), _) => c,
        (None, Some(e)) => return Err(fail(e)),
        (None, None) => return Err(("no address to connect to".into(), exit::CONNECT)),
    };
    let file = conn.file_info(&target.file).await.map_err(fail)?;
    let total = file.block_count();

    let mut sink = match &cfg.output {
        Some(dest) => {
            let mut part = dest.clone().into_os_string();
            part.push(".part");
            let part = PathBuf::from(part);
            let f = std::fs::File::create(&part).map_err(|e| {
                (
                    format!("cannot create {}: {e}", part.display()),
                    exit::FAILED,
                )
            })?;
            Sink::File {
                part,
                dest: dest.clone(),
                f: std::io::BufWriter::with_capacity(1 << 20, f),
            }
        }
        None => Sink::Stdout(std::io::stdout().lock()),
    };
    let bar = (cfg.output.is_some() && !cfg.quiet && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(file.size);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });

    let mut next_to_ask = 0u64;
    let mut next_to_write = 0u64;
    let mut in_flight: std::collections::VecDeque<(u32, u64, u64)> = Default::default();
    let mut written = 0u64;
    while next_to_write < total {
        while in_flight.len() < GETS_IN_FLIGHT && next_to_ask < total {
            let count = (total - next_to_ask)
                .min(u64::from(BLOCKS_PER_GET.min(limits::MAX_BLOCKS_PER_GET)))
                as u32;
            let id = conn.get(&file, next_to_ask, count).await.map_err(fail)?;
            in_flight.push_back((id, next_to_ask, next_to_ask + u64::from(count)));
            next_to_ask += u64::from(count);
        }
        let frame = conn.recv("block data").await.map_err(fail)?;
        let (id, _, end) = *in_flight
            .front()
            .ok_or_else(|| ("internal: nothing in flight".to_string(), exit::FAILED))?;
        match frame {
            Frame::Data(d) if d.req_id == id && d.block == next_to_write => {
                if d.payload.len() != file.block_len(d.block)
                    || !file.algo.verify(&d.payload, file.digest(d.block))
                {
                    return Err(fail(FetchError::Digest {
                        addr: conn.addr,
                        block: d.block,
                        algo: file.algo.name(),
                    }));
                }
                sink.write(&d.payload)
                    .map_err(|e| (format!("cannot write output: {e}"), exit::FAILED))?;
                written += d.payload.len() as u64;
                if let Some(b) = &bar {
                    b.set_position(written);
                }
                next_to_write += 1;
                if next_to_write == end {
                    in_flight.pop_front();
                }
            }
            Frame::Error(e) => {
                return Err(fail(FetchError::Remote {
                    addr: conn.addr,
                    code: e.code,
                    message: e.message,
                }));
            }
            Frame::Pong(_) => {}
            _ => {
                return Err(fail(FetchError::Protocol {
                    addr: conn.addr,
                    message: "data out of order".into(),
                }));
            }
        }
    }
    sink.finish()
        .map_err(|e| (format!("cannot finish output: {e}"), exit::FAILED))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(written)
}
