//! The p2pd.8 man page, rendered by clap_mangen from the same clap definitions as
//! `--help`, plus hand-written sections (get, exit status, examples) clap cannot express.

use std::io::Write;

use clap::CommandFactory;

use super::args::{Cli, SynopsisItem, GET_SYNOPSIS, SERVE_SYNOPSIS};

/// Manual section: p2pd is a system daemon.
const MAN_SECTION: &str = "8";
const MAN_MANUAL: &str = "System Manager's Manual";
/// No version in the page's header, so the committed docs/p2pd.8 does not go stale
/// with every release (`p2pd --version` tells it).
const MAN_SOURCE: &str = "p2pd";

/// Sections written by hand: (heading, paragraphs). Plain text; escaped on output.
const EXTRA_SECTIONS: [(&str, &[&str]); 3] = [
    (
        "EXIT STATUS",
        &[
            "0 on success, and after --help or --version.",
            "2 for a bad command line: one line on standard error names the option.",
            "Another non-zero status when a node cannot start (for example its port is in \
             use) or a get fails (unreachable node, missing file, a block that does not \
             verify, timeout).",
        ],
    ),
    (
        "EXAMPLES",
        &[
            "Publish /srv/video on the default port 1111, with 1 MiB blocks:",
            "    p2pd -p /srv/video -b 1M",
            "Publish on port 8080 for the host cdn.example.com only, naming a mirror:",
            "    p2pd -p /srv/video -P 8080 -A cdn.example.com -l mirror.example.com:8080",
            "Run a site cache for cdn.example.com that fetches for anyone, with the origin \
             as its parent and at most 500 GiB on disk:",
            "    p2pd -c /var/cache/p2pd -A cdn.example.com -n 0.0.0.0/0 -S origin.example.com -C 500G",
            "Run a client cache and HTTP proxy on a viewer's machine (in $HOME/.p2pd_cache), \
             with the site cache as its parent:",
            "    p2pd -S cache.example.net",
            "Fetch a file from an origin, verifying every block:",
            "    p2pd get spp://cdn.example.com/movies/big.mp4 -o big.mp4",
        ],
    ),
    ("SEE ALSO", &["systemd.service(5), curl(1)"]),
];

/// The p2pd.8 man page (roff) generated with clap_mangen from the same clap definitions.
pub fn man_page() -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail; an error would only truncate the page.
    let _ = render(&mut out);
    out
}

/// The preamble clap_mangen writes before every section it renders; kept once only.
const ROFF_PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

fn render(out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut cmd = Cli::command();
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone())
        .section(MAN_SECTION)
        .manual(MAN_MANUAL)
        .source(MAN_SOURCE);
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    write_synopsis(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;

    if let Some(get) = cmd.find_subcommand("get").cloned() {
        let about = get
            .get_long_about()
            .or_else(|| get.get_about())
            .map(|s| s.to_string())
            .unwrap_or_default();
        writeln!(page, ".SH \"FETCHING A FILE\"")?;
        write_paragraph(&mut page, &about)?;
        // The subcommand's options go under our heading rather than a second OPTIONS.
        let mut options = Vec::new();
        clap_mangen::Man::new(get)
            .section(MAN_SECTION)
            .render_options_section(&mut options)?;
        let options = String::from_utf8_lossy(&options);
        for line in options.lines().filter(|l| !l.starts_with(".SH")) {
            writeln!(page, "{line}")?;
        }
    }

    for (heading, paragraphs) in EXTRA_SECTIONS {
        writeln!(page, ".SH \"{heading}\"")?;
        for paragraph in paragraphs {
            match paragraph.strip_prefix("    ") {
                // A command line: shown verbatim and indented.
                Some(example) => {
                    writeln!(page, ".IP")?;
                    writeln!(page, ".nf")?;
                    writeln!(page, "{}", escape(example))?;
                    writeln!(page, ".fi")?;
                }
                None => write_paragraph(&mut page, paragraph)?,
            }
        }
    }

    // Each render_* call repeats the preamble; the page needs it once, at the top.
    let page = String::from_utf8_lossy(&page);
    let body = page.replace(ROFF_PREAMBLE, "");
    out.extend_from_slice(ROFF_PREAMBLE.as_bytes());
    out.extend_from_slice(body.as_bytes());
    Ok(())
}

/// The synopsis as the original man page gives it (clap_mangen would list every
/// long option instead), then the `get` line.
fn write_synopsis(out: &mut Vec<u8>) -> std::io::Result<()> {
    writeln!(out, ".SH SYNOPSIS")?;
    // No hyphenation inside option and argument names, and no stretched gaps.
    writeln!(out, ".nh")?;
    writeln!(out, ".ad l")?;
    writeln!(out, ".B p2pd")?;
    let items: Vec<String> = SERVE_SYNOPSIS.iter().map(synopsis_item).collect();
    writeln!(out, "{}", items.join("\n"))?;
    writeln!(out, ".br")?;
    writeln!(out, ".B p2pd get")?;
    writeln!(out, "\\fIURL\\fR")?;
    let items: Vec<String> = GET_SYNOPSIS.iter().map(synopsis_item).collect();
    writeln!(out, "{}", items.join("\n"))?;
    writeln!(out, ".ad")?;
    writeln!(out, ".hy")
}

/// `[\fB-A\fR\ \fIhostname\fR]`: the option in bold, its argument in italics, joined
/// by an unbreakable space so a line never ends between them.
fn synopsis_item(item: &SynopsisItem) -> String {
    match item.1 {
        Some(value) => format!("[\\fB{}\\fR\\ \\fI{}\\fR]", escape(item.0), escape(value)),
        None => format!("[\\fB{}\\fR]", escape(item.0)),
    }
}

/// Starts a new paragraph with `text`.
fn write_paragraph(out: &mut Vec<u8>, text: &str) -> std::io::Result<()> {
    writeln!(out, ".PP")?;
    writeln!(out, "{}", escape(text))
}

/// Escapes plain text for roff: backslashes, hyphens (so they stay hyphens, not
/// typographic dashes) and control characters at the start of a line.
fn escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}
