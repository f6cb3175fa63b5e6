//! Evaluate one bench case many times, for counting instructions with `perf stat`, which stays
//! steady on a shared machine where wall-clock medians move by ±30 %:
//!
//!     cargo build --release -p enforcer --example evaluate_loop
//!     perf stat -e instructions:u target/release/examples/evaluate_loop typical 200000
//!
//! Cases: `typical` (the 100-byte command), `script` (the 4 KB script), `file:PATH` (the text
//! of a file, to see what one kind of command costs), `none` (only load the policy, to
//! subtract). The figure per evaluation is (instructions − none's) / count.
//! `typical/parse`, `script/analysis` and the like run only the shell reading, or the reading
//! and its analysis, of that case's text.

// This example reports by printing.
#![allow(clippy::print_stdout)]

use std::hint::black_box;

#[path = "../benches/cases.rs"]
mod cases;

/// Which part of an evaluation a `CASE/PART` case runs.
#[derive(Clone, Copy)]
enum Part {
    Parse,
    Analysis,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_else(|| "typical".into());
    let count: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let policy = match enforcer::default_policy() {
        Ok(policy) => policy,
        Err(error) => panic!("{error}"),
    };
    let (base, part) = match case.rsplit_once('/') {
        Some((base, "parse")) => (base, Some(Part::Parse)),
        Some((base, "analysis")) => (base, Some(Part::Analysis)),
        _ => (case.as_str(), None),
    };
    let text = match base {
        "typical" => cases::TYPICAL.to_string(),
        "script" => cases::script_4kb(),
        "none" => return,
        other => match other.strip_prefix("file:") {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(error) => panic!("{path}: {error}"),
            },
            None => panic!(
                "unknown case {other}: typical, script, file:PATH or none (with /parse or /analysis)"
            ),
        },
    };
    if let Some(part) = part {
        // Only the shell reading, or the reading and its analysis, of the same text.
        let mut found = 0usize;
        for _ in 0..count {
            found += match part {
                Part::Parse => enforcer::shell::parse(black_box(&text)).commands().len(),
                Part::Analysis => enforcer::analysis::invocations(black_box(&text))
                    .invocations()
                    .len(),
            };
        }
        println!("{case}: {count} readings ({found} commands or invocations)");
        return;
    }
    let request = cases::request(&text);
    let admin = cases::admin();
    let mut allowed = 0u64;
    for _ in 0..count {
        let decision = enforcer::evaluate(black_box(&request), black_box(&admin), &policy);
        allowed += u64::from(decision.action == enforcer::Action::Allow);
    }
    println!("{case}: {count} evaluations ({allowed} allowed)");
}
