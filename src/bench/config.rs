//! `p2pd-bench`'s command line: clap definitions, validation into [`BenchConfig`] with
//! one-line errors naming the option, and the titles (SPP or HTTP URLs) it loads.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::model::Popularity;
use crate::pure::protocol::FileRef;

/// The most titles a run takes (each viewer picks one; the list is held in memory).
pub const MAX_TITLES: usize = 100_000;
/// The most viewers or connections a run may keep at once.
pub const MAX_CONCURRENCY: usize = 1_000_000;
/// The most blocks one viewer or connection may ask for ahead.
pub const MAX_WINDOW_BLOCKS: u32 = 1024;

/// VoD load generator for p2pd (SPP) and any HTTP server with Range support.
#[derive(Parser, Debug)]
#[command(
    name = "p2pd-bench",
    version,
    about = "VoD load generator for p2pd (SPP) and any HTTP server with Range support",
    max_term_width = 100
)]
pub struct BenchArgs {
    /// Titles: spp://host:port/path or http://host:port/path (both kinds may be mixed).
    #[arg(value_name = "URL")]
    pub urls: Vec<String>,
    /// More titles, one URL per line ('#' starts a comment).
    #[arg(long, value_name = "FILE")]
    pub url_file: Option<PathBuf>,
    /// How long the run lasts (e.g. 30s, 2m, 500ms); it ends by itself.
    #[arg(short = 'd', long, default_value = "30s", value_name = "DUR")]
    pub duration: String,
    /// Closed loop: --connections connections fetch titles back to back, as fast as
    /// the server allows, instead of paced viewers.
    #[arg(long)]
    pub max_throughput: bool,
    /// With --max-throughput: fetch every title exactly once, in list order, spread
    /// over the connections, then stop (the fair cold-content test: no byte is read
    /// twice).
    #[arg(long, requires = "max_throughput")]
    pub once: bool,
    /// Connections in --max-throughput mode.
    #[arg(short = 'c', long, default_value_t = 16, value_name = "N")]
    pub connections: usize,
    /// VoD: viewers arriving per second (open loop: a slow server does not slow the
    /// arrivals down).
    #[arg(long, default_value_t = 10.0, value_name = "R")]
    pub rate: f64,
    /// VoD: fixed gaps between arrivals, or Poisson arrivals with the same mean rate.
    #[arg(long, default_value = "fixed", value_name = "fixed|poisson")]
    pub arrivals: String,
    /// VoD: the most viewers at once; arrivals beyond it are counted as dropped.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_viewers: usize,
    /// How viewers (and connections) pick titles: uniform, or Zipf with exponent S.
    #[arg(long, default_value = "zipf:1.0", value_name = "uniform|zipf[:S]")]
    pub popularity: String,
    /// VoD: stream bitrate in bit/s (e.g. 8M, 2.5M, 800k; decimal units).
    #[arg(long, default_value = "8M", value_name = "RATE")]
    pub bitrate: String,
    /// VoD: playback starts (and resumes after a stall or seek) once this much media is
    /// buffered.
    #[arg(long, default_value = "2s", value_name = "DUR")]
    pub startup_buffer: String,
    /// VoD: the player stops fetching ahead when this much media is buffered.
    #[arg(long, default_value = "30s", value_name = "DUR")]
    pub max_buffer: String,
    /// VoD: a viewer leaves this long after arriving, or at the end of the title.
    #[arg(long, default_value = "60s", value_name = "DUR")]
    pub watch: String,
    /// VoD: mean playback time between seeks to a random point (default: no seeks).
    #[arg(long, value_name = "DUR")]
    pub seek_every: Option<String>,
    /// HTTP: bytes per Range request (default 256K; in --max-throughput the whole file
    /// in one request).
    #[arg(long, value_name = "SIZE")]
    pub chunk: Option<String>,
    /// SPP: blocks asked for ahead per viewer or connection (default 4 for VoD, 32 for
    /// --max-throughput).
    #[arg(long, value_name = "N")]
    pub window: Option<u32>,
    /// Do not verify received SPP blocks against their digests (measures the server
    /// alone).
    #[arg(long)]
    pub no_verify: bool,
    /// Deadline for each connect and each request's next bytes.
    #[arg(long, default_value = "10s", value_name = "DUR")]
    pub timeout: String,
    /// Executors (threads) generating load.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Seed for title choice, arrivals and seeks (printed, so a run can be replayed).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Also write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// No progress line.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Send HTTP titles through this HTTP proxy (HOST:PORT), as a player with
    /// `http_proxy` set does: a viewer's client cache.
    #[arg(long, value_name = "HOST:PORT")]
    pub proxy: Option<String>,
}

/// Where a title lives and how to ask for it.
#[derive(Clone, Debug)]
pub enum Title {
    Spp {
        url: String,
        addr: SocketAddr,
        file: FileRef,
    },
    Http {
        url: String,
        addr: SocketAddr,
        /// The Host header value.
        host: String,
        /// Path and query as sent on the request line.
        target: String,
    },
}

impl Title {
    /// An HTTP title asked of `proxy` instead of its host, with the whole URL on the
    /// request line (absolute form); SPP titles are left as they are.
    pub fn through_proxy(&mut self, proxy: SocketAddr) {
        if let Title::Http {
            url, addr, target, ..
        } = self
        {
            *addr = proxy;
            *target = url.clone();
        }
    }

    pub fn parse(url: &str) -> Result<Title, String> {
        if url.starts_with("spp://") {
            let t = crate::get::resolve(url)?;
            return Ok(Title::Spp {
                url: url.to_string(),
                addr: t.addrs[0],
                file: t.file,
            });
        }
        let bad = || format!("'{url}' is not an spp:// or http:// URL");
        let u = url::Url::parse(url).map_err(|_| bad())?;
        if u.scheme() != "http" {
            return Err(bad());
        }
        let host = u.host_str().filter(|h| !h.is_empty()).ok_or_else(bad)?;
        let port = u.port().unwrap_or(80);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addr = (bare, port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} has no address"))?;
        let target = match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        };
        let host = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Ok(Title::Http {
            url: url.to_string(),
            addr,
            host,
            target,
        })
    }

    pub fn url(&self) -> &str {
        match self {
            Title::Spp { url, .. } | Title::Http { url, .. } => url,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        match self {
            Title::Spp { addr, .. } | Title::Http { addr, .. } => *addr,
        }
    }
}

/// A validated run description.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub titles: Vec<Title>,
    pub duration: Duration,
    pub max_throughput: bool,
    /// Each title once, in order, then stop.
    pub once: bool,
    pub connections: usize,
    pub rate_per_s: f64,
    pub poisson: bool,
    pub max_viewers: usize,
    pub popularity: Popularity,
    pub bitrate_bps: u64,
    pub startup_buffer_s: f64,
    pub max_buffer_s: f64,
    pub watch_s: f64,
    pub seek_every_s: Option<f64>,
    /// HTTP bytes per request; `None` asks for the whole file in one request.
    pub chunk_bytes: Option<u64>,
    pub window_blocks: u32,
    pub verify: bool,
    pub timeout: Duration,
    pub threads: usize,
    pub seed: u64,
    pub json: Option<PathBuf>,
    pub quiet: bool,
}

fn duration(opt: &str, s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|_| format!("{opt}: '{s}' is not a duration (e.g. 30s, 2m, 500ms)"))?;
    if d.is_zero() {
        return Err(format!("{opt}: must be more than zero"));
    }
    Ok(d)
}

fn count(opt: &str, n: usize, max: usize) -> Result<usize, String> {
    if n == 0 || n > max {
        return Err(format!("{opt}: {n} is out of range (1..={max})"));
    }
    Ok(n)
}

impl BenchConfig {
    pub fn from_args(a: BenchArgs) -> Result<BenchConfig, String> {
        let mut urls = a.urls.clone();
        if let Some(f) = &a.url_file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("--url-file: cannot read {}: {e}", f.display()))?;
            for line in text.lines() {
                let line = line.split('#').next().unwrap_or("").trim();
                if !line.is_empty() {
                    urls.push(line.to_string());
                }
            }
        }
        if urls.is_empty() {
            return Err("no URL given: name at least one spp:// or http:// title".into());
        }
        if urls.len() > MAX_TITLES {
            return Err(format!("{} titles given; at most {MAX_TITLES}", urls.len()));
        }
        let max_throughput = a.max_throughput;
        let bitrate_bps = parse_size::parse_size(a.bitrate.trim()).map_err(|_| {
            format!(
                "--bitrate: '{}' is not a rate in bit/s (e.g. 8M)",
                a.bitrate
            )
        })?;
        if bitrate_bps == 0 {
            return Err("--bitrate: must be more than zero".into());
        }
        if !(a.rate.is_finite() && a.rate > 0.0) {
            return Err(format!("--rate: '{}' must be a number above zero", a.rate));
        }
        let poisson = match a.arrivals.as_str() {
            "fixed" => false,
            "poisson" => true,
            other => {
                return Err(format!(
                    "--arrivals: '{other}' is neither fixed nor poisson"
                ))
            }
        };
        let popularity =
            Popularity::parse(&a.popularity).map_err(|e| format!("--popularity: {e}"))?;
        let chunk_bytes = match &a.chunk {
            Some(s) => {
                let n = crate::cli::parse_size_bytes(s).map_err(|e| format!("--chunk: {e}"))?;
                if n == 0 {
                    return Err("--chunk: must be more than zero".into());
                }
                Some(n)
            }
            None if max_throughput => None,
            None => Some(256 * 1024),
        };
        let window_blocks = match a.window {
            Some(w) => count("--window", w as usize, MAX_WINDOW_BLOCKS as usize)? as u32,
            None if max_throughput => 32,
            None => 4,
        };
        let threads = match a.threads {
            Some(n) => count("--threads", n, 1024)?,
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        };
        let (startup, max_buffer) = (
            duration("--startup-buffer", &a.startup_buffer)?,
            duration("--max-buffer", &a.max_buffer)?,
        );
        if max_buffer < startup {
            return Err("--max-buffer: must be at least --startup-buffer".into());
        }
        let run_for = duration("-d/--duration", &a.duration)?;
        let connections = count("-c/--connections", a.connections, MAX_CONCURRENCY)?;
        let max_viewers = count("--max-viewers", a.max_viewers, MAX_CONCURRENCY)?;
        let watch_s = duration("--watch", &a.watch)?.as_secs_f64();
        let seek_every_s = match &a.seek_every {
            Some(s) => Some(duration("--seek-every", s)?.as_secs_f64()),
            None => None,
        };
        let timeout = duration("--timeout", &a.timeout)?;
        // Titles last: resolving names can take a while, option mistakes cannot.
        let mut titles = urls
            .iter()
            .map(|u| Title::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(p) = &a.proxy {
            let proxy = p
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| format!("--proxy: '{p}' is not HOST:PORT with an address"))?;
            for t in &mut titles {
                t.through_proxy(proxy);
            }
        }
        Ok(BenchConfig {
            titles,
            duration: run_for,
            max_throughput,
            once: a.once,
            connections,
            rate_per_s: a.rate,
            poisson,
            max_viewers,
            popularity,
            bitrate_bps,
            startup_buffer_s: startup.as_secs_f64(),
            max_buffer_s: max_buffer.as_secs_f64(),
            watch_s,
            seek_every_s,
            chunk_bytes,
            window_blocks,
            verify: !a.no_verify,
            timeout,
            threads,
            seed: a.seed.unwrap_or_else(rand::random),
            json: a.json,
            quiet: a.quiet,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(args: &[&str]) -> Result<BenchConfig, String> {
        let mut v = vec!["p2pd-bench"];
        v.extend_from_slice(args);
        BenchConfig::from_args(BenchArgs::try_parse_from(v).map_err(|e| e.to_string())?)
    }

    #[test]
    fn defaults_and_title_kinds() {
        let c = cfg(&["spp://127.0.0.1:9/a/b.mp4", "http://127.0.0.1:8080/x?y=1"]).unwrap();
        assert_eq!(c.duration, Duration::from_secs(30));
        assert_eq!(c.bitrate_bps, 8_000_000);
        assert_eq!(c.chunk_bytes, Some(256 * 1024));
        assert_eq!(c.window_blocks, 4);
        assert!(c.verify);
        match &c.titles[0] {
            Title::Spp { file, addr, .. } => {
                assert_eq!(file.path, "a/b.mp4");
                assert_eq!(addr.port(), 9);
            }
            t => panic!("{t:?}"),
        }
        match &c.titles[1] {
            Title::Http { host, target, .. } => {
                assert_eq!(host, "127.0.0.1:8080");
                assert_eq!(target, "/x?y=1");
            }
            t => panic!("{t:?}"),
        }
        let m = cfg(&["--max-throughput", "--no-verify", "http://127.0.0.1/f"]).unwrap();
        assert_eq!(m.chunk_bytes, None);
        assert_eq!(m.window_blocks, 32);
        assert!(!m.verify);
    }

    #[test]
    fn bad_values_name_their_option() {
        for (args, needle) in [
            (vec![], "no URL"),
            (vec!["ftp://h/x"], "not an spp:// or http://"),
            (vec!["-d", "soon", "spp://h/x"], "-d/--duration"),
            (vec!["-d", "0s", "spp://h/x"], "-d/--duration"),
            (vec!["--bitrate", "fast", "spp://h/x"], "--bitrate"),
            (vec!["--popularity", "zipf:x", "spp://h/x"], "--popularity"),
            (vec!["--arrivals", "bursty", "spp://h/x"], "--arrivals"),
            (vec!["--window", "0", "spp://h/x"], "--window"),
            (vec!["-c", "0", "spp://h/x"], "-c/--connections"),
            (vec!["--max-buffer", "1s", "spp://h/x"], "--max-buffer"),
            (vec!["--chunk", "0", "spp://h/x"], "--chunk"),
        ] {
            let e = cfg(&args).expect_err(needle);
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }
}
