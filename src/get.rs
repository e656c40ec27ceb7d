//! `p2pd get URL`: fetch one file over SPP from every source the URL's node knows
//! (itself, its mirrors, peers; the fastest preferred, failing ones dropped), verify
//! every block against the origin's digests before writing it, and write it to a file
//! (atomically, via a `.part` name) or to stdout.

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::cli::GetConfig;
use crate::pure::protocol::{ErrorCode, FileRef, Role};
use crate::pure::sched::SourceClass;
use crate::upstream::attempt::Deadlines;
use crate::upstream::connection::FetchError;
use crate::upstream::pool::{UpstreamConfig, UpstreamPool};
use crate::upstream::range::{self, FetchReport, MultiError};

/// A block outstanding this long at one source is asked of another (capped by
/// `--timeout`); each attempt has its own, shorter deadlines besides
/// (`upstream::attempt::Deadlines`: 3 s with other sources, 1.5 s for a peer's
/// connection).
const STALL_TIMEOUT: Duration = Duration::from_secs(5);

pub use crate::error::exit;

pub struct Target {
    pub file: FileRef,
    pub addrs: Vec<SocketAddr>,
    pub url: String,
}

/// Splits an `spp://host[:port]/path` URL with the CLI's own parser and resolves its
/// host.
pub fn resolve(url: &str) -> Result<Target, String> {
    let u = crate::cli::SppUrl::parse(url)?;
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
        Ok(Ok((bytes, report))) => {
            if cfg.output.is_some() && !cfg.quiet {
                let secs = started.elapsed().as_secs_f64().max(1e-6);
                eprintln!(
                    "p2pd get: {} bytes verified and written in {:.2} s ({:.1} MB/s)",
                    bytes,
                    secs,
                    bytes as f64 / secs / 1e6
                );
                for s in report.sources.iter().filter(|s| s.blocks > 0 || s.dropped) {
                    eprintln!(
                        "p2pd get: from {}: {} bytes in {} blocks{}",
                        s.addr,
                        s.bytes,
                        s.blocks,
                        if s.dropped { " (dropped)" } else { "" }
                    );
                }
                let from_peers: u64 = report
                    .sources
                    .iter()
                    .filter(|s| s.class == SourceClass::Peer)
                    .map(|s| s.bytes)
                    .sum();
                if from_peers > 0 {
                    eprintln!(
                        "p2pd get: {from_peers} bytes from peers, {} from servers ({:.1}% from peers)",
                        bytes.saturating_sub(from_peers),
                        from_peers as f64 * 100.0 / bytes.max(1) as f64
                    );
                }
                if report.bad_blocks > 0 {
                    eprintln!(
                        "p2pd get: {} blocks failed their digest and were fetched again from other sources",
                        report.bad_blocks
                    );
                }
                eprintln!(
                    "p2pd get: longest wait for the next block: {} ms",
                    report.longest_wait.as_millis()
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

/// Where verified bytes go: a `.part` file renamed into place on success; straight
/// into an output that exists and is not a regular file (`/dev/null`, a FIFO, a
/// terminal: renaming over it would replace the device with a file); or stdout.
enum Sink {
    File {
        part: PathBuf,
        dest: PathBuf,
        f: std::io::BufWriter<std::fs::File>,
    },
    Special(std::io::BufWriter<std::fs::File>),
    Stdout(std::io::StdoutLock<'static>),
}

impl Sink {
    /// The sink for `-o dest`.
    fn to_path(dest: &std::path::Path) -> Result<Sink, String> {
        let special = std::fs::metadata(dest).is_ok_and(|m| !m.is_file() && !m.is_dir());
        if special {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(dest)
                .map_err(|e| format!("cannot open {}: {e}", dest.display()))?;
            return Ok(Sink::Special(std::io::BufWriter::with_capacity(1 << 20, f)));
        }
        let mut part = dest.to_path_buf().into_os_string();
        part.push(".part");
        let part = PathBuf::from(part);
        let f = std::fs::File::create(&part)
            .map_err(|e| format!("cannot create {}: {e}", part.display()))?;
        Ok(Sink::File {
            part,
            dest: dest.to_path_buf(),
            f: std::io::BufWriter::with_capacity(1 << 20, f),
        })
    }

    fn write(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::File { f, .. } | Sink::Special(f) => f.write_all(b),
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
            Sink::Special(mut f) => f.flush(),
            Sink::Stdout(mut s) => s.flush(),
        }
    }
}

async fn fetch(cfg: GetConfig, target: Target) -> Result<(u64, FetchReport), (String, i32)> {
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let fail = |e: FetchError| {
        let code = e.exit_code();
        let msg = match &e {
            FetchError::Remote {
                code: ErrorCode::NotFound,
                ..
            } => format!("not found: {}", target.url),
            _ => e.to_string(),
        };
        (msg, code)
    };
    let pool = UpstreamPool::new(UpstreamConfig {
        role: Role::Client,
        listen_port: 0,
        bind: None,
        timeout,
    });
    // The file's info from the first of the URL's addresses that answers, and every
    // source it knows of (itself, its -l nodes, peers), plus the URL's other addresses.
    let (file, sources) = range::discover(&pool, &target.file, &target.addrs)
        .await
        .map_err(fail)?;
    let total = file.block_count();

    let mut sink = match &cfg.output {
        Some(dest) => Sink::to_path(dest).map_err(|m| (m, exit::FAILED))?,
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

    let mut written = 0u64;
    let sched = range::sched_config(file.block_size, timeout.min(STALL_TIMEOUT));
    let result = range::fetch_blocks(
        &pool,
        &target.file,
        &file,
        &sources,
        0..total,
        (sched, Deadlines::new(timeout, sources.len() > 1)),
        |_, b| {
            sink.write(&b)
                .map_err(|e| format!("cannot write output: {e}"))?;
            written += b.len() as u64;
            if let Some(bar) = &bar {
                bar.set_position(written);
            }
            Ok(())
        },
    )
    .await;
    let report = match result {
        Ok(r) => r,
        Err(MultiError::Deliver(m)) => return Err((m, exit::FAILED)),
        Err(e @ MultiError::NoSource { digest, .. }) => {
            let code = if digest {
                exit::INTEGRITY
            } else {
                exit::FAILED
            };
            return Err((e.to_string(), code));
        }
    };
    sink.finish()
        .map_err(|e| (format!("cannot finish output: {e}"), exit::FAILED))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok((written, report))
}
