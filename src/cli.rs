//! Entry point shared by the binary: turns a parsed [`Command`] into a run, sets up
//! logging, and maps every failure to one line on stderr and an exit code.

use std::ffi::OsString;

use crate::config::{parse_args, Command};

/// Runs p2pd with `args` (including argv\[0\]) and returns the exit code.
pub fn main<I: IntoIterator<Item = OsString>>(args: I) -> i32 {
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
            let _ = std::io::stdout().write_all(&crate::config::man_page());
            0
        }
        Command::Get(g) => {
            init_logging(g.debug_level);
            crate::get::run(g)
        }
        Command::Serve(s) => {
            init_logging(s.debug_level);
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
fn init_logging(level: u8) {
    let default = match level {
        0 => "p2pd=info",
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
