//! Entry point shared by the binary: turns a parsed [`Command`] into a run, sets up
//! logging, and maps every failure to one line on stderr and an exit code.

use std::ffi::OsString;

use crate::cli::{parse_args, Command};

/// Block buffers (16 KiB to 16 MiB) are allocated and freed at line rate, and often
/// freed out of order (blocks wait for the ones before them). Above glibc's default
/// mmap threshold each one would be a fresh mapping, page-faulted and zeroed by the
/// kernel, then unmapped: more kernel time than the data's whole journey. Serving
/// them from the heap, and not trimming it after each burst, keeps the pages.
fn tune_allocator() {
    const MMAP_THRESHOLD_BYTES: libc::c_int = 64 << 20;
    const TRIM_THRESHOLD_BYTES: libc::c_int = 256 << 20;
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
    }
}

/// Runs p2pd with `args` (including argv\[0\]) and returns the exit code.
pub fn main<I: IntoIterator<Item = OsString>>(args: I) -> i32 {
    tune_allocator();
    let cmd = match parse_args(args) {
        Ok(c) => c,
        Err(e) if e.to_stdout => {
            println!("{}", e.message);
            return e.exit_code;
        }
        Err(e) => {
            eprintln!("{}", e.message);
            return e.exit_code;
        }
    };
    match cmd {
        Command::Man => {
            use std::io::Write;
            let _ = std::io::stdout().write_all(&crate::cli::man_page());
            0
        }
        Command::Get(g) => {
            // `get` says how it ended in one line of its own; log lines only with -d.
            init_logging(g.debug_level, "p2pd=error");
            crate::get::run(g)
        }
        Command::Serve(s) => {
            init_logging(s.debug_level, "p2pd=info");
            match crate::server::run(s) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("p2pd: {e}");
                    1
                }
            }
        }
    }
}

/// Logs go to stderr; `-d` is debug, `-dd` trace; `RUST_LOG` overrides.
fn init_logging(level: u8, quiet: &str) {
    let default = match level {
        0 => quiet,
        1 => "p2pd=debug",
        _ => "p2pd=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
