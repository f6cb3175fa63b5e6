//! Evaluate one bench case many times, for counting instructions with `perf stat`, which stays
//! steady on a shared machine where wall-clock medians move by ±30 %:
//!
//!     cargo build --release -p enforcer --example evaluate_loop
//!     perf stat -e instructions:u target/release/examples/evaluate_loop typical 200000
//!
//! Cases: `typical` (the 100-byte command), `script` (the 4 KB script), `none` (only load the
//! policy, to subtract). The figure per evaluation is (instructions − none's) / count.

// This example reports by printing.
#![allow(clippy::print_stdout)]

use std::hint::black_box;

#[path = "../benches/cases.rs"]
mod cases;

fn main() {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_else(|| "typical".into());
    let count: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let policy = match enforcer::default_policy() {
        Ok(policy) => policy,
        Err(error) => panic!("{error}"),
    };
    let text = match case.as_str() {
        "typical" => cases::TYPICAL.to_string(),
        "script" => cases::script_4kb(),
        "none" => return,
        other => panic!("unknown case {other}: typical, script or none"),
    };
    let request = cases::request(&text);
    let admin = cases::admin();
    let mut allowed = 0u64;
    for _ in 0..count {
        let decision = enforcer::evaluate(black_box(&request), black_box(&admin), &policy);
        allowed += u64::from(decision.action == enforcer::Action::Allow);
    }
    println!("{case}: {count} evaluations ({allowed} allowed)");
}
