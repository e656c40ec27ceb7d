//! Tests of what the command line prints: one-line clap errors, `--help` and
//! `--version` on stdout, and the man page (hidden subcommand, complete, current).

use super::helpers::*;
use crate::cli::config::*;
use crate::cli::man_page;

#[test]
fn clap_errors_are_one_line() {
    let e = serve_err(&["-P", "x"]);
    assert_eq!(
        e.message,
        "p2pd: invalid value 'x' for '--port <portnumber>': invalid digit found in string"
    );
    assert_usage(&serve_err(&["-x"]), "'-x'");
    assert_usage(&serve_err(&["--no-such-option"]), "--no-such-option");
    assert_usage(&serve_err(&["stray"]), "'stray'");
    assert_usage(&serve_err(&["-b"]), "--block-size");
    assert_usage(&serve_err(&["-P", "1", "-P", "2"]), "--port");
}

#[test]
fn help_and_version_go_to_stdout() {
    for args in [&["--help"][..], &["-h"], &["get", "--help"], &["get", "-h"]] {
        let e = err(args);
        assert_eq!((e.exit_code, e.to_stdout), (0, true), "{args:?}");
        assert!(e.message.contains("Usage: p2pd"), "{args:?}: {}", e.message);
        assert!(!e.message.ends_with('\n'));
    }
    let long = err(&["--help"]).message;
    for opt in [
        "--publish",
        "--block-size",
        "--max-connections",
        "--cache",
        "--recursive-subnet",
        "--parent",
        "--disk-cache-size",
        "--info-ttl",
        "--upstream-timeout",
        "-dDiTZ",
        "p2pd get URL",
    ] {
        assert!(long.contains(opt), "--help lacks {opt}");
    }
    assert!(
        !long.contains("origin role only"),
        "--help still says only the origin runs"
    );
    let short = err(&["-h"]).message;
    assert!(short.contains("[--info-ttl MS]") && short.contains("[--upstream-timeout MS]"));
    assert!(!long.contains("\u{1b}["), "no colour codes in help");
    assert!(err(&["get", "--help"]).message.contains("--timeout"));
    for args in [["--version"], ["-V"]] {
        let e = err(&args);
        assert_eq!((e.exit_code, e.to_stdout), (0, true));
        assert_eq!(e.message, format!("p2pd {}", env!("CARGO_PKG_VERSION")));
    }
}

#[test]
fn man_subcommand_is_hidden() {
    assert!(matches!(parse(&["man"]), Ok(Command::Man)));
    assert!(!err(&["--help"]).message.contains("man "));
}

#[test]
fn man_page_lists_every_option() {
    let page = String::from_utf8(man_page()).expect("utf-8");
    assert!(page.starts_with(".ie"), "preamble first");
    assert!(page.contains(".TH p2pd 8"));
    assert_eq!(page.matches(".ds Aq").count(), 2, "preamble once");
    for long in [
        "allow\\-host",
        "block\\-size",
        "disk\\-cache\\-size",
        "cache",
        "debug",
        "detach",
        "p2p",
        "mirror",
        "memory\\-cache\\-size",
        "digest",
        "locality",
        "recursive\\-subnet",
        "port",
        "publish",
        "parent",
        "playlist",
        "cold",
        "bind",
        "threads",
        "index\\-dir",
        "rescan\\-interval",
        "max\\-connections",
        "verify\\-reads",
        "buffered\\-reads",
        "info\\-ttl",
        "upstream\\-timeout",
        "output",
        "timeout",
        "quiet",
    ] {
        assert!(
            page.contains(&format!("\\fB\\-\\-{long}\\fR")),
            "man page lacks --{long}"
        );
    }
    assert!(page.contains("[\\fB\\-dDiTZ\\fR]"));
    assert!(page.contains("[\\fB\\-\\-upstream\\-timeout\\fR\\ \\fIMS\\fR]"));
    assert!(!page.contains("origin role only"));
    assert!(
        !page.contains("p2pd\\-man"),
        "hidden subcommand stays hidden"
    );
}

/// The committed docs/p2pd.8 must be what the definitions render; run with
/// `P2PD_WRITE_MAN=1 cargo test man_page_is_current` to regenerate it.
#[test]
fn man_page_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/p2pd.8");
    let rendered = man_page();
    if std::env::var_os("P2PD_WRITE_MAN").is_some() {
        std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/docs")).unwrap();
        std::fs::write(path, &rendered).unwrap();
    }
    let committed = std::fs::read(path).unwrap_or_default();
    assert!(
        committed == rendered,
        "{path} is out of date: run P2PD_WRITE_MAN=1 cargo test man_page_is_current"
    );
}
