//! The entry point [`parse_args`]: argv through clap, then validation; clap's reports
//! turned into one line.

use std::ffi::{OsStr, OsString};

use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches};

use super::args;
use super::{
    config::Command,
    error::{CliError, PREFIX},
    validate::{validate_get, validate_serve},
};

/// Parses and validates argv (including `argv[0]`). Never panics and never exits the process itself.
///
/// A node's cache directory is created here when validation passes (`-c DIR`, or
/// `$HOME/.p2pd_cache` when neither -p nor -c is given).
pub fn parse_args<I, T>(args: I) -> Result<Command, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    parse_args_with_home(args, std::env::var_os("HOME").as_deref())
}

/// [`parse_args`] with the home directory given instead of read from `$HOME`, so tests
/// need not change the process environment.
pub(super) fn parse_args_with_home<I, T>(args: I, home: Option<&OsStr>) -> Result<Command, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = args::Cli::command()
        .try_get_matches_from(args)
        .map_err(from_clap_error)?;
    let parsed = args::Cli::from_arg_matches(&matches).map_err(from_clap_error)?;
    match parsed.command {
        Some(args::SubCmd::Get(get)) => validate_get(get).map(Command::Get),
        Some(args::SubCmd::Man) => Ok(Command::Man),
        None => validate_serve(parsed.serve, &matches, home).map(Command::Serve),
    }
}

/// Turns clap's report into our one line; `--help`/`--version` pass through whole.
fn from_clap_error(err: clap::Error) -> CliError {
    let text = err.render().to_string();
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => CliError {
            message: text.trim_end().to_string(),
            exit_code: 0,
            to_stdout: true,
        },
        _ => CliError::usage(format!("{PREFIX}: {}", one_line(&text))),
    }
}

/// The first paragraph of clap's report, without "error: ", joined into one line:
/// the usage and "For more information" parts after the first blank line are dropped.
fn one_line(report: &str) -> String {
    let words: Vec<&str> = report
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .flat_map(|line| line.split_whitespace())
        .collect();
    let joined = words.join(" ");
    match joined.strip_prefix("error: ") {
        Some(rest) => rest.to_string(),
        None => joined,
    }
}
