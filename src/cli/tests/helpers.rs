//! Helpers of the command-line tests: command lines parsed with an explicit home
//! directory, temporary publish and cache directories, and usage-error checks.

use std::path::Path;

use crate::cli::{config::*, error::*, parse::*};

/// A directory to publish, alive as long as the returned guard.
pub(super) fn publish_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_string_lossy().into_owned();
    (dir, path)
}

/// Parses `args` as if `$HOME` were unset.
pub(super) fn parse(args: &[&str]) -> Result<Command, CliError> {
    parse_home(args, None)
}

/// Parses `args` as if `$HOME` were `home`.
pub(super) fn parse_home(args: &[&str], home: Option<&Path>) -> Result<Command, CliError> {
    parse_args_with_home(
        std::iter::once("p2pd").chain(args.iter().copied()),
        home.map(Path::as_os_str),
    )
}

/// A cache directory that does not exist yet, inside a fresh temporary directory.
pub(super) fn cache_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cache").to_string_lossy().into_owned();
    (dir, path)
}

/// Parses a node command line with `-c <fresh dir>` in front of `args`.
pub(super) fn cache(args: &[&str]) -> ServeConfig {
    let (_dir, path) = cache_dir();
    let mut all = vec!["-c", path.as_str()];
    all.extend_from_slice(args);
    match parse(&all) {
        Ok(Command::Serve(cfg)) => cfg,
        other => panic!("{args:?}: expected a cache config, got {other:?}"),
    }
}

/// The cache part of a cache node's config.
pub(super) fn cache_of(cfg: &ServeConfig) -> &CacheConfig {
    cfg.cache()
        .unwrap_or_else(|| panic!("not a cache: {:?}", cfg.role))
}

/// Same as [`err`] with `-c <fresh dir>` in front; the directory must not be created.
pub(super) fn cache_err(args: &[&str]) -> CliError {
    let (dir, path) = cache_dir();
    let mut all = vec!["-c", path.as_str()];
    all.extend_from_slice(args);
    let e = err(&all);
    assert!(
        !dir.path().join("cache").exists(),
        "{args:?}: a refused command line created the cache directory"
    );
    e
}

/// Parses a node command line that publishes a fresh directory plus `args`.
pub(super) fn serve(args: &[&str]) -> ServeConfig {
    let (_dir, path) = publish_dir();
    let mut all = vec!["-p", path.as_str()];
    all.extend_from_slice(args);
    match parse(&all) {
        Ok(Command::Serve(cfg)) => cfg,
        other => panic!("{args:?}: expected a node config, got {other:?}"),
    }
}

pub(super) fn get(args: &[&str]) -> GetConfig {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    match parse(&all) {
        Ok(Command::Get(cfg)) => cfg,
        other => panic!("{args:?}: expected a get config, got {other:?}"),
    }
}

pub(super) fn err(args: &[&str]) -> CliError {
    match parse(args) {
        Err(e) => e,
        Ok(cmd) => panic!("{args:?}: expected an error, got {cmd:?}"),
    }
}

/// Same as [`err`] with `-p <fresh dir>` in front.
pub(super) fn serve_err(args: &[&str]) -> CliError {
    let (_dir, path) = publish_dir();
    let mut all = vec!["-p", path.as_str()];
    all.extend_from_slice(args);
    err(&all)
}

/// A usage error: exit 2, stderr, one line starting "p2pd", containing `needle`.
pub(super) fn assert_usage(e: &CliError, needle: &str) {
    assert_eq!(e.exit_code, 2, "{e:?}");
    assert!(!e.to_stdout, "{e:?}");
    assert!(e.message.starts_with("p2pd"), "{e:?}");
    assert!(!e.message.contains('\n'), "not one line: {:?}", e.message);
    assert!(!e.message.ends_with(' '), "{e:?}");
    assert!(
        e.message.contains(needle),
        "{:?} lacks {needle:?}",
        e.message
    );
}
