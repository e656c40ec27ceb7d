//! [`CliError`]: a command line that cannot be run (one line naming the option), or
//! `--help`/`--version` output.

use std::fmt;

use super::defaults::USAGE_EXIT_CODE;

/// Prefix of every error line about the node's command line.
pub(super) const PREFIX: &str = "p2pd";
/// Prefix of every error line about `p2pd get`'s own arguments.
pub(super) const GET_PREFIX: &str = "p2pd get";

/// A command line that cannot be run, or `--help`/`--version` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// ONE line, no trailing newline (the full help text for `--help`/`--version`).
    pub message: String,
    /// 2 for usage errors, 0 for `--help`/`--version`.
    pub exit_code: i32,
    /// True for `--help`/`--version` output (print to stdout, exit 0).
    pub to_stdout: bool,
}

impl CliError {
    pub(super) fn usage(message: String) -> Self {
        CliError {
            message,
            exit_code: USAGE_EXIT_CODE,
            to_stdout: false,
        }
    }

    /// `p2pd: -b/--block-size: <why>`
    pub(super) fn option(option: &str, why: impl fmt::Display) -> Self {
        Self::usage(format!("{PREFIX}: {option}: {why}"))
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}
