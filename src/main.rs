//! The `p2pd` binary: parse the command line, then run the daemon or a subcommand.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(p2pd::entry::main(std::env::args_os()) as u8)
}
