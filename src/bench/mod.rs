//! `p2pd-bench`, the bundled VoD load generator: open-loop viewers that stream titles
//! through a playout buffer over SPP or HTTP (or a closed-loop max-throughput mode),
//! reporting throughput, latency percentiles, stalls and errors as text and JSON.

pub mod client;
pub mod config;
pub mod model;
pub mod run;
pub mod stats;

use clap::Parser;

/// The binary's entry point; returns the process exit code (0 when the run completed,
/// whatever it counted; 2 for a bad command line; 1 when the run could not start).
pub fn main() -> i32 {
    let args = match config::BenchArgs::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = e.exit_code();
            let _ = e.print();
            return code;
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let cfg = match config::BenchConfig::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("p2pd-bench: {e}");
            return 2;
        }
    };
    let json = cfg.json.clone();
    let report = match run::run(cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("p2pd-bench: {e}");
            return 1;
        }
    };
    print!("{}", report.text());
    if let Some(path) = json {
        let text = match serde_json::to_string_pretty(&report) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("p2pd-bench: cannot encode the report: {e}");
                return 1;
            }
        };
        if let Err(e) = std::fs::write(&path, text + "\n") {
            eprintln!("p2pd-bench: --json: cannot write {}: {e}", path.display());
            return 1;
        }
    }
    0
}
