//! Unit tests for the command line: every option's forms, defaults, the roles and their
//! rules, each refusal, the one-line error rule, sizes, host:port, `get` URLs, help
//! output and the man page; one file per topic, with shared helpers in `helpers`.
//!
//! No test reads or changes `$HOME`: command lines are parsed with an explicit home
//! directory (none, or a temporary one), so the client cache's default directory is
//! never created in the real home.

mod cache;
mod get;
mod helpers;
mod options;
mod output;
mod roles;
mod values;
