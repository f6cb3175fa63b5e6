//! The server's layering, read from its own source: every `crate::` path in `src/` is an import
//! edge between two parts, and the edges must run downward (edges → services → core) and never
//! form a cycle. A part is a top-level module, or one service under `services/`.
//!
//! ```text
//! edges      lib (router)  api  portal  web  cli  agent  executors  mcp
//! services   services::{decisions, approvals, execution, exports, notifications, identity, …}
//! core       store  config  metrics  telemetry  listener  vocab
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const EDGES: &[&str] = &[
    "lib",
    "main",
    "api",
    "portal",
    "web",
    "cli",
    "agent",
    "executors",
    "mcp",
];
const CORE: &[&str] = &[
    "store",
    "config",
    "metrics",
    "telemetry",
    "listener",
    "vocab",
];

/// 3 = edge, 2 = service, 1 = core; `None` for a part nobody placed.
fn layer(part: &str) -> Option<u8> {
    let top = part.split("::").next().unwrap_or(part);
    if EDGES.contains(&top) {
        Some(3)
    } else if top == "services" {
        Some(2)
    } else if CORE.contains(&top) {
        Some(1)
    } else {
        None
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The part a file belongs to: its top-level module, or `services::<name>`.
fn part_of(relative: &Path) -> String {
    let parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    match parts.as_slice() {
        [only] => only.clone(),
        [first, second, ..] if first == "services" && second != "mod" => {
            format!("services::{second}")
        }
        [first, ..] => first.clone(),
        [] => String::new(),
    }
}

/// The part a `crate::` path names, from the words after `crate::`.
fn part_named(words: &[&str]) -> String {
    match words {
        ["services", second, ..] if second.chars().all(|c| c.is_ascii_lowercase() || c == '_') => {
            format!("services::{second}")
        }
        ["services", ..] => "services".to_string(),
        [first, ..] if first.chars().next().is_some_and(|c| c.is_ascii_lowercase()) => {
            first.to_string()
        }
        // `crate::AppState`, `crate::app`: the crate root, which is the router.
        _ => "lib".to_string(),
    }
}

/// The code of a file without its comments (doc links name modules without importing them).
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_len(text: &str) -> usize {
    text.find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len())
}

/// Every part a file's code names through `crate::`, including `use crate::{a, b::c}` groups.
fn named_parts(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(group.len(), |(i, _)| i);
            // Top-level items of the group: split on commas outside braces.
            let (mut depth, mut start) = (0, 0);
            let inner = &group[..end];
            let mut items = Vec::new();
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(&inner[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            items.push(&inner[start..]);
            for item in items {
                let words: Vec<&str> = item
                    .split("::")
                    .map(|w| w.trim())
                    .map(|w| &w[..ident_len(w)])
                    .take_while(|w| !w.is_empty())
                    .collect();
                if !words.is_empty() {
                    out.insert(part_named(&words));
                }
            }
            continue;
        }
        let mut words = Vec::new();
        let mut cursor = rest;
        loop {
            let len = ident_len(cursor);
            if len == 0 {
                break;
            }
            words.push(&cursor[..len]);
            match cursor[len..].strip_prefix("::") {
                Some(next) if !next.starts_with('{') => cursor = next,
                _ => break,
            }
        }
        if !words.is_empty() {
            out.insert(part_named(&words));
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src").to_path_buf();
        let from = part_of(&relative);
        let text = std::fs::read_to_string(&file).expect("read file");
        // Tests inside a file may reach anywhere; only the code counts.
        let code = match text.find("#[cfg(test)]") {
            Some(at) => &text[..at],
            None => &text[..],
        };
        let node = edges.entry(from.clone()).or_default();
        for to in named_parts(&without_comments(code)) {
            let within_services = (from == "services" && to.starts_with("services::"))
                || (to == "services" && from.starts_with("services::"));
            if to != from && !within_services {
                node.entry(to)
                    .or_default()
                    .insert(relative.display().to_string());
            }
        }
    }
    edges
}

#[test]
fn every_part_has_a_layer() {
    let unplaced: Vec<String> = graph()
        .keys()
        .filter(|part| layer(part).is_none())
        .cloned()
        .collect();
    assert!(
        unplaced.is_empty(),
        "parts of server/src with no layer (add them to tests/layers.rs): {unplaced:?}"
    );
}

#[test]
fn imports_run_downward() {
    let mut upward = Vec::new();
    for (from, targets) in graph() {
        for (to, files) in targets {
            if let (Some(a), Some(b)) = (layer(&from), layer(&to)) {
                if b > a {
                    upward.push(format!("{from} -> {to} (in {files:?})"));
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that run up a layer:\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_import_cycles() {
    let graph = graph();
    // Depth-first search for a back edge; report the cycle it closes.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
        cycles: &mut Vec<String>,
    ) {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in graph.get(node).map(|t| t.keys()).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(next.clone());
                    cycles.push(cycle.join(" -> "));
                }
                Some(_) => {}
                None => visit(next, graph, state, stack, cycles),
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
    }
    let (mut state, mut cycles) = (BTreeMap::new(), Vec::new());
    for node in graph.keys() {
        if !state.contains_key(node.as_str()) {
            visit(node, &graph, &mut state, &mut Vec::new(), &mut cycles);
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_reader_sees_groups_paths_and_the_root() {
    let parts = named_parts(
        "use crate::{store::{Job, Store}, services::decisions::record, AppState};\n\
         let x = crate::config::Config::default(); fn f() -> crate::services::ServiceError {}",
    );
    let expected: BTreeSet<String> = ["store", "services::decisions", "lib", "config", "services"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(parts, expected);
    assert_eq!(
        part_of(Path::new("services/exports/pdf.rs")),
        "services::exports"
    );
    assert_eq!(part_of(Path::new("services/mod.rs")), "services");
    assert_eq!(part_of(Path::new("api/jobs.rs")), "api");
}
