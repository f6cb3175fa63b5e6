//! How the default policy judges real commands: every corpus in `enforcer/judgement/` (labelled
//! by `RULE.md` before any decision was looked at) is run through `ssh-exec executeCommand` by a
//! caller with every capability, and the figures the enforcer issue's goals name are printed:
//!
//!     cargo run --release -p enforcer --example judgement [-- --misses N] [--policy FILE]
//!
//! - `commands-*.jsonl` (public command references): the share of risky commands that are
//!   stopped (asked for approval, or denied), overall and by category, and the share of harmless
//!   ones stopped;
//! - `lotl.jsonl` (living-off-the-land invocations): the share stopped;
//! - `assistant-day.jsonl` (a day of an assistant's work): the share of all commands stopped.
//!
//! `--misses N` also lists up to N risky commands that were allowed and N harmless ones that were
//! stopped (with the reasons given), per corpus. `--policy FILE` scores another policy (such as
//! `policies/it-mcp-compatible.toml`) instead of the default. The figures go to BENCHMARKS.md;
//! the goals are not asserted here.

// This example reports by printing.
#![allow(clippy::print_stdout)]

use enforcer::Action;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

// The bench's request (`ssh-exec executeCommand` on web-01) and caller (every capability).
#[allow(dead_code)]
#[path = "../benches/cases.rs"]
mod cases;

/// One labelled command.
struct Case {
    id: String,
    command: String,
    risky: bool,
    category: String,
}

fn read_corpus(path: &Path) -> Vec<Case> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => panic!("{}: {error}", path.display()),
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(n, line)| {
            let record: Value = match serde_json::from_str(line) {
                Ok(record) => record,
                Err(error) => panic!("{}:{}: {error}", path.display(), n + 1),
            };
            let field = |name: &str| record[name].as_str().unwrap_or_default().to_string();
            let label = field("label");
            assert!(
                label == "risky" || label == "harmless",
                "{}:{}: label {label:?}",
                path.display(),
                n + 1
            );
            Case {
                id: field("id"),
                command: field("command"),
                risky: label == "risky",
                category: field("category"),
            }
        })
        .collect()
}

/// Stopped (asked for approval or denied) out of all, and the percentage.
#[derive(Default, Clone, Copy)]
struct Tally {
    stopped: usize,
    asked: usize,
    all: usize,
}

impl Tally {
    fn add(&mut self, action: Action) {
        self.all += 1;
        if action != Action::Allow {
            self.stopped += 1;
        }
        if action == Action::RequireApproval {
            self.asked += 1;
        }
    }

    fn show(self) -> String {
        let pct = |n: usize| {
            if self.all == 0 {
                0.0
            } else {
                100.0 * n as f64 / self.all as f64
            }
        };
        format!(
            "{:>5.1} % stopped ({} of {}; {} asked, {} denied)",
            pct(self.stopped),
            self.stopped,
            self.all,
            self.asked,
            self.stopped - self.asked
        )
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut misses = 0usize;
    let mut policy_file: Option<String> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--misses" => misses = args.next().and_then(|n| n.parse().ok()).unwrap_or(20),
            "--policy" => policy_file = args.next(),
            other => panic!("unknown argument {other}: --misses N, --policy FILE"),
        }
    }
    let loaded = match &policy_file {
        Some(file) => match std::fs::read_to_string(file) {
            Ok(text) => enforcer::PolicySet::load(file, &text),
            Err(error) => panic!("{file}: {error}"),
        },
        None => enforcer::default_policy(),
    };
    let policy = match loaded {
        Ok(policy) => policy,
        Err(error) => panic!("{error}"),
    };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("judgement");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect(),
        Err(error) => panic!("{}: {error}", dir.display()),
    };
    files.sort();
    // Corpus name (the commands-* files are one corpus) → its cases.
    let mut corpora: BTreeMap<String, Vec<Case>> = BTreeMap::new();
    for file in &files {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let name = if stem.starts_with("commands") {
            "commands"
        } else {
            stem
        };
        corpora
            .entry(name.to_string())
            .or_default()
            .extend(read_corpus(file));
    }
    let principal = cases::admin();
    println!("policy {} ({})", policy.name, policy.hash());
    for (name, cases) in &corpora {
        let (mut risky, mut harmless) = (Tally::default(), Tally::default());
        let mut by_category: BTreeMap<&str, Tally> = BTreeMap::new();
        let (mut let_through, mut held) = (Vec::new(), Vec::new());
        for case in cases {
            let decision = enforcer::evaluate(&cases::request(&case.command), &principal, &policy);
            let action = decision.action;
            by_category
                .entry(case.category.as_str())
                .or_default()
                .add(action);
            if case.risky {
                risky.add(action);
                if action == Action::Allow {
                    let_through.push(case);
                }
            } else {
                harmless.add(action);
                if action != Action::Allow {
                    held.push((case, decision.reasons.join(" / ")));
                }
            }
        }
        println!("\n{name}: {} commands", cases.len());
        println!("  risky    {}", risky.show());
        println!("  harmless {}", harmless.show());
        let all = Tally {
            stopped: risky.stopped + harmless.stopped,
            asked: risky.asked + harmless.asked,
            all: risky.all + harmless.all,
        };
        println!("  all      {}", all.show());
        println!("  by category:");
        for (category, tally) in &by_category {
            println!("    {category:<22} {}", tally.show());
        }
        if misses > 0 {
            println!("  risky but allowed (first {misses}):");
            for case in let_through.iter().take(misses) {
                println!("    [{}] {} :: {}", case.category, case.id, case.command);
            }
            println!("  harmless but stopped (first {misses}):");
            for (case, reasons) in held.iter().take(misses) {
                println!("    {} :: {}\n        {reasons}", case.id, case.command);
            }
        }
    }
}
