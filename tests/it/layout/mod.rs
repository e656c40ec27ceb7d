//! The layout gates (issue 13): every `src/**/*.rs` file opens with a `//!` line, is
//! under [`MAX_LINES`] lines, and the file-level module graph has no cycles. Std only:
//! a small lexer and path resolver, no parser crate.
//!
//! The module graph, as [`graph::graph`] builds it:
//! - Nodes are files, named by their path under `src/`. A `mod.rs` stands for its
//!   folder's module, `lib.rs` for the crate root. `main.rs` and `src/bin/*` are crate
//!   roots of their own, whose `p2pd::` paths are read like the library's `crate::`.
//! - Test-only code is not in the graph: files named `tests.rs` or `proptests.rs`,
//!   files under a `tests/` folder in `src`, and the rest of a file from a
//!   `#[cfg(test)]` line followed by `mod tests {`. (The line and size gates still
//!   read those files.)
//! - Comments (doc comments and their intra-doc links too), string and char literals
//!   are never read; neither are `mod x;` declarations nor `pub use` (or `pub(..) use`)
//!   re-exports: a facade is not a dependency.
//! - Edge A -> B when A's code names a path that resolves to module B: `crate::x::y::Item`
//!   resolves to the longest prefix that is a module file (`src/x/y.rs` or
//!   `src/x/y/mod.rs`); `super::` and `self::` go from A's module; a first segment that
//!   is a module declared in A (`mod child;`) or a module A imported by name (`use
//!   crate::x;`, `use crate::x::{self as z}`, or a child module that a glob `use
//!   crate::x::*` brings in) goes from that module. Grouped imports expand to each
//!   path. Importing a module by name is no edge of its own: its uses are.
//! - A path into a `mod.rs` that only re-exports (say `crate::disk::CacheIndex`, which
//!   lives in `disk/cache_index.rs`) is an edge to the `mod.rs` node, and a `mod.rs`
//!   node's own edges are its references other than re-exports; so a facade over its
//!   children is never a cycle, while a `mod.rs` that calls into a child (`config::`)
//!   does depend on it.
//! - A cycle is a strongly connected component of more than one file; a file naming
//!   itself is not one. Each is reported as chains `a.rs -> b.rs -> a.rs`, with the
//!   line and path behind every edge of the chain.

mod graph;

use std::fmt::Write as _;
use std::path::Path;

use graph::{components, cycles_in, describe, graph};

/// Every source file must have fewer lines than this (issue 13: "largest file < 700").
const MAX_LINES: usize = 700;

/// Every `.rs` file under `dir`, as (path relative to `root` with `/`, text).
fn read_tree(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            read_tree(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(root)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
            out.push((rel, text));
        }
    }
}

/// Every file under the crate's `src/`, sorted by path.
fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_tree(&root, &root, &mut files);
    files.sort();
    assert!(
        files.len() > 10,
        "found only {} files under {}",
        files.len(),
        root.display()
    );
    files
}

#[test]
fn every_source_file_opens_with_a_module_doc_line() {
    let offenders: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| {
            let first = text.lines().map(str::trim).find(|l| !l.is_empty());
            !first.is_some_and(|l| l.starts_with("//!"))
        })
        .map(|(rel, _)| format!("  src/{rel}"))
        .collect();
    assert!(
        offenders.is_empty(),
        "{} file(s) under src/ do not open with a `//!` line saying what they own:\n{}",
        offenders.len(),
        offenders.join("\n")
    );
}

#[test]
fn every_source_file_is_under_the_line_limit() {
    let mut offenders: Vec<(usize, String)> = sources()
        .into_iter()
        .map(|(rel, text)| (text.lines().count(), rel))
        .filter(|(n, _)| *n >= MAX_LINES)
        .collect();
    offenders.sort_by(|a, b| b.cmp(a));
    let list: Vec<String> = offenders
        .iter()
        .map(|(n, rel)| format!("  src/{rel}: {n} lines"))
        .collect();
    assert!(
        offenders.is_empty(),
        "{} file(s) under src/ have {MAX_LINES} lines or more:\n{}",
        offenders.len(),
        list.join("\n")
    );
}

#[test]
fn the_module_graph_has_no_cycles() {
    let g = graph(&sources());
    let comps = components(&g);
    let mut report = String::new();
    for comp in &comps {
        let names: Vec<&str> = comp.iter().map(String::as_str).collect();
        let _ = writeln!(
            report,
            "component of {} files: {}",
            comp.len(),
            names.join(", ")
        );
        for cycle in cycles_in(&g, comp) {
            report.push_str(&describe(&g, &cycle));
        }
    }
    assert!(
        comps.is_empty(),
        "{} module cycle(s) under src/ (files that depend on each other):\n{report}",
        comps.len()
    );
}

/// The checker on a made-up tree: a known cycle is found (and only through code),
/// a re-export facade is not a cycle, test-only code is not read.
#[test]
fn the_cycle_finder_finds_a_known_cycle_and_not_a_facade() {
    let files: Vec<(String, String)> = [
        ("lib.rs", "//! root\npub mod a;\npub mod b;\npub mod f;\npub mod h;\n"),
        (
            "a.rs",
            "//! a\n// crate::h::X in a comment\nuse crate::b::Thing;\n\
             /// [`crate::h::Y`] in a doc link\nfn x() { let s = \"crate::h::Z\"; let r = r#\"h::Q\"#; }\n\
             #[cfg(test)]\nmod tests {\n    use crate::h::Z;\n}\n",
        ),
        ("b.rs", "//! b\npub struct Thing;\nfn y<'a>(c: char) { let q = '\"'; crate::a::x(); }\n"),
        ("f/mod.rs", "//! facade\npub mod g;\npub use g::G;\npub use self::g::{G as H};\n"),
        ("f/g.rs", "//! g\nuse super::G;\nuse crate::{b::Thing, f};\nfn z() { f::G; }\n"),
        ("h/mod.rs", "//! h\nmod i;\nfn w() { i::I; }\n"),
        ("h/i.rs", "//! i\nuse crate::f::{self as ff};\nfn v() { ff::G; }\n"),
        ("h/tests.rs", "//! tests\nuse crate::h::i::I;\nuse crate::a::x;\n"),
        ("main.rs", "//! main\nfn main() { p2pd::h::i::I; }\n"),
    ]
    .iter()
    .map(|(rel, text)| (rel.to_string(), text.to_string()))
    .collect();
    let g = graph(&files);
    let targets = |rel: &str| g[rel].keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        targets("a.rs"),
        ["b.rs"],
        "comments, strings, doc links and tests are not read"
    );
    assert_eq!(targets("b.rs"), ["a.rs"]);
    assert!(targets("f/mod.rs").is_empty(), "re-exports are no edges");
    assert_eq!(targets("f/g.rs"), ["b.rs", "f/mod.rs"]);
    assert_eq!(
        targets("h/mod.rs"),
        ["h/i.rs"],
        "a declared child module is an edge"
    );
    assert_eq!(
        targets("h/i.rs"),
        ["f/mod.rs"],
        "an imported module's uses are edges"
    );
    assert_eq!(
        targets("main.rs"),
        ["h/i.rs"],
        "`p2pd::` in a binary is the library"
    );
    assert!(
        !g.contains_key("h/tests.rs"),
        "test files are not in the graph"
    );
    let comps = components(&g);
    assert_eq!(comps.len(), 1, "one cycle, not the facade: {comps:?}");
    let cycles: Vec<_> = cycles_in(&g, &comps[0]).into_iter().collect();
    assert_eq!(cycles, [vec!["a.rs".to_string(), "b.rs".to_string()]]);
    assert_eq!(
        describe(&g, &cycles[0]),
        "  a.rs -> b.rs -> a.rs\n      a.rs:3 names `crate::b::Thing` (b.rs)\n      \
         b.rs:3 names `crate::a::x` (a.rs)\n"
    );
}

/// The layers of `src/`, lowest first: a file may use its own layer and the ones before
/// it, never one after (`lib.rs` says the same in words). Crate roots (`lib.rs`,
/// `main.rs`, `src/bin/*`) sit above all.
const LAYERS: &[&str] = &[
    "panics", "pure", "cli", "disk", "runtime", "metrics", "error", "upstream", "node", "server",
    "get", "entry", "bench", "fuzzing",
];

/// The layer of a file under `src/`: its first path component or file stem.
fn layer_of(rel: &str) -> Option<usize> {
    let top = rel.split('/').next().unwrap_or(rel);
    let top = top.strip_suffix(".rs").unwrap_or(top);
    LAYERS.iter().position(|l| *l == top)
}

#[test]
fn the_layers_depend_only_downward() {
    let files = sources();
    let mut unknown = Vec::new();
    for (rel, _) in &files {
        let root = matches!(rel.as_str(), "lib.rs" | "main.rs") || rel.starts_with("bin/");
        if !root && layer_of(rel).is_none() {
            unknown.push(format!("  src/{rel}"));
        }
    }
    assert!(
        unknown.is_empty(),
        "files in no layer (add their folder to LAYERS in tests/it/layout/mod.rs and to \
         ARCHITECTURE.md):\n{}",
        unknown.join("\n")
    );
    let g = graph(&files);
    let mut upward = Vec::new();
    for (from, targets) in &g {
        let Some(lf) = layer_of(from) else { continue };
        for (to, (line, path)) in targets {
            if layer_of(to).is_some_and(|lt| lt > lf) {
                upward.push(format!(
                    "  {from}:{line} ({}) names `{path}` ({}, a higher layer)",
                    LAYERS[lf],
                    LAYERS[layer_of(to).unwrap_or(0)]
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "{} reference(s) up the layers ({}):\n{}",
        upward.len(),
        LAYERS.join(" < "),
        upward.join("\n")
    );
}

/// ARCHITECTURE.md's code map names every source file (unit tests apart: `tests.rs`,
/// `proptests.rs` and `tests/` folders beside the code they test), and every `src/`
/// path it names exists: the map matches the tree file for file.
#[test]
fn the_code_map_names_every_source_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let arch = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let map = arch
        .split("## Code map")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("ARCHITECTURE.md has a '## Code map' section");
    let named: std::collections::BTreeSet<String> = map
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("src/") && s.ends_with(".rs"))
        .map(|s| s.trim_start_matches("src/").to_string())
        .collect();
    // Unit-test files are named by the rule the map states, not one by one.
    let test_only = |rel: &str| {
        rel.ends_with("/tests.rs") || rel.ends_with("/proptests.rs") || rel.contains("/tests/")
    };
    let files: std::collections::BTreeSet<String> = sources()
        .into_iter()
        .map(|(rel, _)| rel)
        .filter(|rel| !test_only(rel))
        .collect();
    let missing: Vec<String> = files
        .difference(&named)
        .map(|f| format!("  src/{f}"))
        .collect();
    let stale: Vec<String> = named
        .difference(&files)
        .map(|f| format!("  src/{f}"))
        .collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "ARCHITECTURE.md's code map (each file as `src/...rs` in backticks) is out of \
         step with the tree.\nNot in the map:\n{}\nIn the map, not in the tree:\n{}",
        missing.join("\n"),
        stale.join("\n")
    );
}
