//! The module-graph checker behind `the_module_graph_has_no_cycles`: a small lexer
//! (comments and literals dropped), a resolver of `use` trees and paths to module
//! files, the graph, its strongly connected components and a cycle per file in them.
//! The rules it follows are in the parent module's doc.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

/// A module's path from the crate root: `["node", "cache"]` for `src/node/cache/mod.rs`.
type ModPath = Vec<String>;

/// The graph: for each file, the files it depends on, each with the first line and
/// path that made the edge.
pub(super) type Graph = BTreeMap<String, BTreeMap<String, (usize, String)>>;

/// What a file under `src/` is to the module graph.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// A module of the library, at this path.
    Module(ModPath),
    /// `main.rs` or a `bin/` file: a crate root of its own that uses `p2pd::`.
    BinRoot,
    /// Test-only code, not in the graph.
    TestOnly,
}

/// Classifies the file at `rel` (relative to `src/`, `/`-separated).
fn classify(rel: &str) -> Kind {
    let parts: Vec<&str> = rel.split('/').collect();
    let (dirs, file) = parts.split_at(parts.len() - 1);
    if rel == "main.rs" || dirs.first() == Some(&"bin") {
        return Kind::BinRoot;
    }
    if file[0] == "tests.rs" || file[0] == "proptests.rs" || dirs.contains(&"tests") {
        return Kind::TestOnly;
    }
    let mut path: ModPath = dirs.iter().map(|d| d.to_string()).collect();
    let stem = file[0].trim_end_matches(".rs");
    if stem != "mod" && rel != "lib.rs" {
        path.push(stem.to_string());
    }
    Kind::Module(path)
}

/// `text` without its inline test module: cut at a `#[cfg(test)]` line whose next
/// line other than attributes and blank lines is `mod tests {`.
fn without_tests(text: &str) -> &str {
    let mut offset = 0;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim() == "#[cfg(test)]" {
            let next = lines[i + 1..]
                .iter()
                .map(|l| l.trim())
                .find(|l| !l.is_empty() && !l.starts_with("#["));
            if next.is_some_and(|l| {
                l.ends_with("mod tests {") && (l.starts_with("mod ") || l.starts_with("pub"))
            }) {
                return &text[..offset];
            }
        }
        offset += line.len();
    }
    text
}

/// One token of Rust source: an identifier, `::`, or one punctuation character.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Tok {
    text: String,
    line: usize,
}

/// Whether `c` may start an identifier.
fn ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

/// Whether `c` may continue an identifier (or a number).
fn ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The tokens of `src`, skipping whitespace, comments (nested block comments too),
/// string, byte-string, raw-string and char literals, lifetimes and numbers.
fn lex(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let (mut i, mut line, mut out) = (0, 1, Vec::new());
    // Skips a quoted literal whose opening quote is at `i`; returns the index after it.
    let skip_quoted = |mut i: usize, line: &mut usize| {
        i += 1;
        while i < c.len() && c[i] != '"' {
            if c[i] == '\\' {
                i += 1;
            }
            if at(i) == '\n' {
                *line += 1;
            }
            i += 1;
        }
        i + 1
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
            }
        } else if ident_start(ch) {
            let mut j = i;
            while j < c.len() && ident_char(c[j]) {
                j += 1;
            }
            let word: String = c[i..j].iter().collect();
            let raw_prefix = matches!(word.as_str(), "r" | "br" | "cr");
            let mut hashes = j;
            while at(hashes) == '#' {
                hashes += 1;
            }
            if raw_prefix && at(hashes) == '"' {
                // A raw string: ends at a quote followed by as many `#`.
                let n = hashes - j;
                i = hashes + 1;
                while i < c.len() && !(c[i] == '"' && (1..=n).all(|k| at(i + k) == '#')) {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
                i += n + 1;
            } else if word == "r" && hashes == j + 1 && ident_start(at(hashes)) {
                // A raw identifier `r#name`.
                let mut k = hashes;
                while k < c.len() && ident_char(c[k]) {
                    k += 1;
                }
                out.push(Tok {
                    text: c[hashes..k].iter().collect(),
                    line,
                });
                i = k;
            } else if matches!(word.as_str(), "b" | "c") && matches!(at(j), '"' | '\'') {
                i = j; // the literal itself is skipped next round
            } else {
                out.push(Tok { text: word, line });
                i = j;
            }
        } else if ch == '"' {
            i = skip_quoted(i, &mut line);
        } else if ch == '\'' {
            if at(i + 1) == '\\' {
                i += 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1; // a lifetime or label: its name is not a path
                while i < c.len() && ident_char(c[i]) {
                    i += 1;
                }
            }
        } else if ch.is_ascii_digit() {
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
        } else if ch == ':' && at(i + 1) == ':' {
            out.push(Tok {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            out.push(Tok {
                text: ch.to_string(),
                line,
            });
            i += 1;
        }
    }
    out
}

/// One path a `use` tree names, expanded out of its groups.
#[derive(Clone, Debug, PartialEq, Eq)]
struct UseItem {
    segs: Vec<String>,
    /// The name it binds: the `as` name, else the last segment.
    name: String,
    glob: bool,
    line: usize,
}

/// Expands the `use` tree at `toks[*pos..]` under `prefix` into `out`.
fn use_tree(toks: &[Tok], pos: &mut usize, mut segs: Vec<String>, out: &mut Vec<UseItem>) {
    while let Some(t) = toks.get(*pos) {
        match t.text.as_str() {
            "::" if segs.is_empty() => {
                segs.push("::".into()); // `::name` is an extern crate
                *pos += 1;
            }
            "::" => *pos += 1,
            "{" => {
                *pos += 1;
                while toks.get(*pos).is_some_and(|t| t.text != "}") {
                    use_tree(toks, pos, segs.clone(), out);
                    if toks.get(*pos).is_some_and(|t| t.text == ",") {
                        *pos += 1;
                    }
                }
                *pos += 1;
                return;
            }
            "*" => {
                *pos += 1;
                let name = segs.last().cloned().unwrap_or_default();
                out.push(UseItem {
                    segs,
                    name,
                    glob: true,
                    line: t.line,
                });
                return;
            }
            word if ident_start(word.chars().next().unwrap_or(' ')) => {
                *pos += 1;
                if toks.get(*pos).is_some_and(|t| t.text == "::") {
                    segs.push(word.into());
                    continue;
                }
                if word != "self" {
                    segs.push(word.into());
                }
                let mut name = segs.last().cloned().unwrap_or_default();
                if toks.get(*pos).is_some_and(|t| t.text == "as") {
                    name = toks
                        .get(*pos + 1)
                        .map(|t| t.text.clone())
                        .unwrap_or_default();
                    *pos += 2;
                }
                out.push(UseItem {
                    segs,
                    name,
                    glob: false,
                    line: t.line,
                });
                return;
            }
            _ => {
                *pos += 1; // unexpected: skip it rather than loop
                return;
            }
        }
    }
}

/// Finds a file's references: what it needs to resolve the paths it names.
struct Resolver<'a> {
    /// Every library module (test-only files left out) and its file.
    modules: &'a BTreeMap<ModPath, String>,
    /// The file's own module; `None` for a crate root of a binary.
    own: Option<ModPath>,
    /// Names bound to modules: declared children and modules imported by name.
    bound: BTreeMap<String, ModPath>,
}

impl Resolver<'_> {
    /// The absolute path `segs` stands for, or `None` for a path outside the library
    /// (std, a dependency, a local item that is not a module).
    fn absolute(&self, segs: &[String]) -> Option<ModPath> {
        let first = segs.first()?.as_str();
        let (mut base, rest) = match (first, &self.own) {
            ("crate", Some(_)) => (vec![], &segs[1..]),
            ("p2pd", None) => (vec![], &segs[1..]),
            ("self", Some(own)) => (own.clone(), &segs[1..]),
            ("super", Some(own)) => {
                let ups = segs.iter().take_while(|s| *s == "super").count();
                let keep = own.len().checked_sub(ups)?;
                (own[..keep].to_vec(), &segs[ups..])
            }
            _ => (self.bound.get(first)?.clone(), &segs[1..]),
        };
        base.extend(rest.iter().cloned());
        Some(base)
    }

    /// The module file holding `abs`: its longest prefix that is a module.
    fn target(&self, abs: &[String]) -> Option<&String> {
        (0..=abs.len())
            .rev()
            .find_map(|n| self.modules.get(&abs[..n]))
    }
}

/// The files `text` (the file at `rel`) depends on, each with its first line and path.
fn references(
    rel: &str,
    text: &str,
    modules: &BTreeMap<ModPath, String>,
) -> BTreeMap<String, (usize, String)> {
    let own = match classify(rel) {
        Kind::Module(p) => Some(p),
        Kind::BinRoot => None,
        Kind::TestOnly => return BTreeMap::new(),
    };
    let toks = lex(without_tests(text));
    let mut r = Resolver {
        modules,
        own,
        bound: BTreeMap::new(),
    };
    let mut skip = vec![false; toks.len()];
    let mut uses = Vec::new();
    // Pass 1: `mod` declarations and `use` statements.
    for i in 0..toks.len() {
        let t = |k: usize| toks.get(k).map_or("", |t| t.text.as_str());
        if t(i) == "mod" && t(i + 2) == ";" {
            if let Some(own) = &r.own {
                let child = [own.clone(), vec![t(i + 1).to_string()]].concat();
                if modules.contains_key(&child) {
                    r.bound.insert(t(i + 1).to_string(), child);
                }
            }
            skip[i + 1] = true;
        } else if t(i) == "use" && t(i + 1) != "<" {
            let end = (i..toks.len()).find(|&k| t(k) == ";").unwrap_or(toks.len());
            skip[i..end].iter_mut().for_each(|s| *s = true);
            let is_pub = t(i.wrapping_sub(1)) == "pub"
                || (t(i.wrapping_sub(1)) == ")" && t(i.wrapping_sub(3)) == "pub")
                || (t(i.wrapping_sub(1)) == ")" && t(i.wrapping_sub(4)) == "pub");
            if !is_pub {
                let mut pos = i + 1;
                while pos < end {
                    use_tree(&toks[..end], &mut pos, vec![], &mut uses);
                }
            }
        }
    }
    let mut edges = BTreeMap::new();
    let mut edge = |r: &Resolver<'_>, abs: &[String], line: usize, segs: &[String]| {
        if let Some(file) = r.target(abs) {
            if file != rel {
                edges.entry(file.clone()).or_insert((line, segs.join("::")));
            }
        }
    };
    for u in &uses {
        let Some(abs) = r.absolute(&u.segs) else {
            continue;
        };
        if u.glob {
            edge(&r, &abs, u.line, &u.segs);
            let children = modules
                .keys()
                .filter(|m| m.len() == abs.len() + 1 && m.starts_with(&abs));
            for child in children.cloned().collect::<Vec<_>>() {
                r.bound.entry(child[abs.len()].clone()).or_insert(child);
            }
        } else if modules.contains_key(&abs) {
            if u.name != "_" {
                r.bound.insert(u.name.clone(), abs);
            }
        } else {
            edge(&r, &abs, u.line, &u.segs);
        }
    }
    // Pass 2: paths in the code, `first::second...` not itself after a `::`.
    let mut i = 0;
    while i < toks.len() {
        let after_sep = i > 0 && toks[i - 1].text == "::";
        let is_path = !skip[i]
            && !after_sep
            && ident_start(toks[i].text.chars().next().unwrap_or(' '))
            && toks.get(i + 1).is_some_and(|t| t.text == "::");
        if !is_path {
            i += 1;
            continue;
        }
        let mut segs = vec![toks[i].text.clone()];
        let mut j = i + 1;
        while toks.get(j).is_some_and(|t| t.text == "::")
            && toks
                .get(j + 1)
                .is_some_and(|t| ident_start(t.text.chars().next().unwrap_or(' ')))
        {
            segs.push(toks[j + 1].text.clone());
            j += 2;
        }
        if let Some(abs) = r.absolute(&segs) {
            edge(&r, &abs, toks[i].line, &segs);
        }
        i = j;
    }
    edges
}

/// The module graph of `files` (path under `src/`, text), as the module doc says.
pub(super) fn graph(files: &[(String, String)]) -> Graph {
    let modules: BTreeMap<ModPath, String> = files
        .iter()
        .filter_map(|(rel, _)| match classify(rel) {
            Kind::Module(p) => Some((p, rel.clone())),
            _ => None,
        })
        .collect();
    files
        .iter()
        .filter(|(rel, _)| classify(rel) != Kind::TestOnly)
        .map(|(rel, text)| (rel.clone(), references(rel, text, &modules)))
        .collect()
}

/// The strongly connected components of `g` with more than one file (Tarjan).
pub(super) fn components(g: &Graph) -> Vec<BTreeSet<String>> {
    /// Tarjan's bookkeeping.
    struct State<'g> {
        g: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        out: Vec<BTreeSet<String>>,
    }
    /// Visits `v` and everything reachable from it.
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.g.get(v).into_iter().flat_map(|e| e.keys()) {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let lw = s.low[w.as_str()];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w.as_str()) {
                let iw = s.index[w.as_str()];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                comp.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        on_stack: BTreeSet::new(),
        out: vec![],
    };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out.sort();
    s.out
}

/// Cycles through `comp`: for each of its files the shortest cycle through it (within
/// the component), each rotated to start at its least file, duplicates dropped.
pub(super) fn cycles_in(g: &Graph, comp: &BTreeSet<String>) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    for start in comp {
        let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([start.as_str()]);
        let mut closing = None;
        'bfs: while let Some(v) = queue.pop_front() {
            for w in g[v].keys().filter(|w| comp.contains(*w)) {
                if w == start {
                    closing = Some(v);
                    break 'bfs;
                }
                if !prev.contains_key(w.as_str()) {
                    prev.insert(w, v);
                    queue.push_back(w);
                }
            }
        }
        let Some(mut v) = closing else { continue };
        let mut cycle = vec![v.to_string()];
        while v != start {
            v = prev[v];
            cycle.push(v.to_string());
        }
        cycle.reverse();
        let least = (0..cycle.len()).min_by_key(|&k| &cycle[k]).unwrap_or(0);
        cycle.rotate_left(least);
        found.insert(cycle);
    }
    found
}

/// `a -> b -> a`, then the line and path behind each edge.
pub(super) fn describe(g: &Graph, cycle: &[String]) -> String {
    let mut chain: Vec<&str> = cycle.iter().map(String::as_str).collect();
    chain.push(&cycle[0]);
    let mut text = format!("  {}\n", chain.join(" -> "));
    for pair in chain.windows(2) {
        let (line, path) = &g[pair[0]][pair[1]];
        let _ = writeln!(
            text,
            "      {}:{line} names `{path}` ({})",
            pair[0], pair[1]
        );
    }
    text
}
