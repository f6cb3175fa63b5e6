//! The judgement corpora (`enforcer/judgement/*.jsonl`, labelled by `RULE.md`) are well formed:
//! every record has an id (unique across the corpora), a command, a label and a category from
//! the rule, and a source; and each corpus is as large as the enforcer issue asks. How the
//! policy scores on them is measured by `examples/judgement.rs`, not asserted here.

use serde_json::Value;
use std::collections::HashSet;
use std::path::PathBuf;

const CATEGORIES: [&str; 16] = [
    "destructive",
    "writes-files",
    "system-config",
    "service-disruption",
    "packages",
    "permissions",
    "privilege-escalation",
    "process-kill",
    "firewall-network",
    "network-exposure",
    "remote-code-execution",
    "runs-unreviewed-code",
    "secrets",
    "remote-state",
    "device-write",
    "read-only",
];

#[test]
fn the_corpora_are_well_formed_and_large_enough() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("judgement");
    let mut ids = HashSet::new();
    let (mut commands, mut lotl, mut day) = (0usize, 0usize, 0usize);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the judgement folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    for file in &files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let text = std::fs::read_to_string(file).expect("corpus");
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let at = format!("{name}:{}", n + 1);
            let record: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{at}: {e}"));
            let field = |key: &str| record[key].as_str().unwrap_or_default();
            assert!(!field("id").is_empty(), "{at}: no id");
            assert!(
                ids.insert(field("id").to_string()),
                "{at}: id {} again",
                field("id")
            );
            assert!(!field("command").trim().is_empty(), "{at}: no command");
            assert!(!field("source").is_empty(), "{at}: no source");
            let (label, category) = (field("label"), field("category"));
            assert!(
                CATEGORIES.contains(&category),
                "{at}: category {category:?}"
            );
            match label {
                "harmless" => assert_eq!(category, "read-only", "{at}"),
                "risky" => assert_ne!(category, "read-only", "{at}"),
                other => panic!("{at}: label {other:?}"),
            }
            if name.starts_with("commands") {
                commands += 1;
            } else if name == "lotl.jsonl" {
                lotl += 1;
            } else if name == "assistant-day.jsonl" {
                day += 1;
            }
        }
    }
    assert!(
        commands >= 1_000,
        "{commands} reference commands, the issue asks for 1,000"
    );
    assert!(
        lotl >= 200,
        "{lotl} living-off-the-land invocations, the issue asks for 200"
    );
    assert!(
        day >= 500,
        "{day} commands in the assistant's day, the issue asks for 500"
    );
}
