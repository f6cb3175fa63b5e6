//! How many requests people see in a realistic day, with and without the standing grants a team
//! would make. The day is `enforcer/judgement/assistant-day.jsonl` (783 commands of an assistant
//! looking after a few web servers, through `ssh-exec executeCommand` on one host, by a caller
//! with every capability), in its order:
//!
//!     cargo run --release -p enforcer --example grants_workload
//!
//! The team's rule, fixed before the figures were looked at: every request people see is
//! approved, and the approver then remembers it for the rest of the day when the policy lets
//! them: as its shape with its last argument generalised (`systemctl restart *`) when the command
//! has an argument that may be generalised, else as the exact call; no limit on uses. A later
//! call a standing grant covers is allowed without a request (the enforcer checks again on every
//! call that its decision may be remembered). The day is then worked again (the next day's
//! routine), with the first day's grants made for 7 days, the longest a grant may last. The
//! figures go to BENCHMARKS.md.

// This example reports by printing.
#![allow(clippy::print_stdout)]

use enforcer::grant::{self, GrantScope};
use enforcer::{call_hash, evaluate, Action, Principal, Request};
use serde_json::{Map, Value};
use std::path::Path;

fn main() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("judgement/assistant-day.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let policy = enforcer::default_policy().unwrap_or_else(|e| panic!("{e}"));
    let operation = policy
        .operation("ssh-exec", "executeCommand")
        .unwrap_or_else(|| panic!("ssh-exec.executeCommand is in the default policy"));
    let caller = Principal {
        id: "assistant".into(),
        roles: Default::default(),
        capabilities: enforcer::policy::BUILTIN_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .collect(),
    };
    let mut grants: Vec<GrantScope> = Vec::new();
    for day in 1..=2 {
        let figures = run_day(&text, &policy, operation, &caller, &mut grants);
        report(day, &figures);
    }
}

#[derive(Default)]
struct Figures {
    calls: u32,
    denied: u32,
    asked: u32,
    never: u32,
    covered: u32,
    shapes: u32,
    exact: u32,
}

/// Work through the day once, with the grants standing so far; the team's new grants are added.
fn run_day(
    text: &str,
    policy: &enforcer::PolicySet,
    operation: &enforcer::Operation,
    caller: &Principal,
    grants: &mut Vec<GrantScope>,
) -> Figures {
    let mut f = Figures::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let record: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let command = record["command"].as_str().unwrap_or_default();
        let mut args = Map::new();
        args.insert("command".into(), Value::String(command.into()));
        let request = Request {
            tool: "ssh-exec".into(),
            operation: "executeCommand".into(),
            args,
            target: Some("web-01".into()),
        };
        f.calls += 1;
        let decision = evaluate(&request, caller, policy);
        match decision.action {
            Action::Allow => continue,
            Action::Deny => {
                f.denied += 1;
                continue;
            }
            Action::RequireApproval => {}
        }
        let may_remember = grant::why_not_remembered(&decision, policy).is_none();
        let hash = call_hash(&request);
        if grants
            .iter()
            .any(|g| grant::allows(g, &request, &decision, operation, policy))
        {
            f.covered += 1;
            continue;
        }
        f.asked += 1;
        if !may_remember {
            f.never += 1;
            continue;
        }
        // Approved, then remembered by the team's rule.
        let last = grant::generalisable_words(&request, operation, policy).pop();
        let covers = match last {
            Some((field, _)) => match grant::shape_of(&request, operation, policy, &[field]) {
                Ok(covers) => {
                    f.shapes += 1;
                    covers
                }
                Err(_) => {
                    f.exact += 1;
                    grant::Covers::Call { call_hash: hash }
                }
            },
            None => {
                f.exact += 1;
                grant::Covers::Call { call_hash: hash }
            }
        };
        grants.push(GrantScope {
            tool: request.tool.clone(),
            operation: request.operation.clone(),
            covers,
            target: request.target.clone(),
            ceiling: Some(grant::Ceiling::of(&decision)),
        });
    }
    f
}

fn report(day: u32, f: &Figures) {
    let without = f.asked + f.covered;
    println!("day {day}: {} calls, {} denied", f.calls, f.denied);
    println!("  requests people would see without grants: {without}");
    println!(
        "  requests people see with the team's grants: {} ({} fewer, {:.0} %)",
        f.asked,
        without - f.asked,
        if without == 0 {
            0.0
        } else {
            100.0 * f64::from(without - f.asked) / f64::from(without)
        }
    );
    println!(
        "  never remembered (CRITICAL or a never_remember effect): {}; grants made: {} ({} shapes, \
         {} exact calls); calls grants allowed: {}",
        f.never,
        f.shapes + f.exact,
        f.shapes,
        f.exact,
        f.covered
    );
}
