//! The JSON case corpus in `tests/cases/`: each case is a request and the decision expected for
//! it (action, risk, and the exact set of pattern ids). `action` is IT-MCP's own decision, which
//! `policies/it-mcp-compatible.toml` must give exactly; the shipped default policy gives
//! `default_action` where a case has one (it also asks on what the command catalogue finds:
//! `kill`, `chmod`, `systemctl restart`, ...), and `action` otherwise.
//!
//! File shape: `{"defaults": {...}, "cases": [{...}, ...]}`. A case may give `tool`,
//! `operation`, `args`, `target`, `caller` (a name from `callers.json`), or the shorthand
//! `command` (sets `args.command`); anything missing comes from `defaults`.

use enforcer::{evaluate, Principal, Request};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let policy = enforcer::default_policy().unwrap_or_else(|e| panic!("{e}"));
    let compatible = enforcer::it_mcp_compatible_policy().unwrap_or_else(|e| panic!("{e}"));
    let callers: BTreeMap<String, Principal> =
        serde_json::from_value(load(&dir.join("callers.json"))).expect("callers.json");

    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("cases dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && p.file_name().is_some_and(|n| n != "callers.json")
        })
        .collect();
    files.sort();

    let mut total = 0;
    let mut failures = Vec::new();
    let mut seen_patterns = BTreeSet::new();
    for file in &files {
        let doc = load(file);
        let defaults = doc.get("defaults").cloned().unwrap_or_else(|| json!({}));
        let cases = doc
            .get("cases")
            .and_then(Value::as_array)
            .expect("cases array");
        for (i, case) in cases.iter().enumerate() {
            total += 1;
            let get = |key: &str| case.get(key).or_else(|| defaults.get(key)).cloned();
            let mut args: Map<String, Value> = get("args")
                .and_then(|a| a.as_object().cloned())
                .unwrap_or_default();
            if let Some(command) = case.get("command") {
                args.insert("command".into(), command.clone());
            }
            let request = Request {
                tool: get("tool")
                    .and_then(|v| v.as_str().map(String::from))
                    .expect("tool"),
                operation: get("operation")
                    .and_then(|v| v.as_str().map(String::from))
                    .expect("operation"),
                args,
                target: get("target").and_then(|v| v.as_str().map(String::from)),
            };
            let caller_name = get("caller")
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_else(|| "admin".into());
            let caller = callers
                .get(&caller_name)
                .unwrap_or_else(|| panic!("unknown caller {caller_name}"));
            let decision = evaluate(&request, caller, &policy);

            let label = format!(
                "{}#{i} {}",
                file.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
                serde_json::to_string(&case).unwrap_or_default()
            );
            let it_mcp_action = case.get("action").and_then(Value::as_str).expect("action");
            let want_action = case
                .get("default_action")
                .and_then(Value::as_str)
                .unwrap_or(it_mcp_action);
            if decision.action.as_str() != want_action {
                failures.push(format!(
                    "{label}\n   action: want {want_action}, got {} ({:?})",
                    decision.action, decision.reasons
                ));
            }
            let as_it_mcp = evaluate(&request, caller, &compatible);
            if as_it_mcp.action.as_str() != it_mcp_action {
                failures.push(format!(
                    "{label}\n   it-mcp-compatible action: want {it_mcp_action}, got {} ({:?})",
                    as_it_mcp.action, as_it_mcp.reasons
                ));
            }
            if as_it_mcp.risk != decision.risk
                || as_it_mcp.matched_patterns != decision.matched_patterns
            {
                failures.push(format!(
                    "{label}\n   it-mcp-compatible: risk or patterns differ from the default policy's"
                ));
            }
            if let Some(want_risk) = case.get("risk").and_then(Value::as_str) {
                if decision.risk.as_str() != want_risk {
                    failures.push(format!(
                        "{label}\n   risk: want {want_risk}, got {}",
                        decision.risk
                    ));
                }
            }
            if let Some(want) = case.get("patterns").and_then(Value::as_array) {
                let want: BTreeSet<&str> = want.iter().filter_map(Value::as_str).collect();
                let got: BTreeSet<&str> = decision
                    .matched_patterns
                    .iter()
                    .map(|m| m.id.as_str())
                    .collect();
                if want != got {
                    failures.push(format!("{label}\n   patterns: want {want:?}, got {got:?}"));
                }
                seen_patterns.extend(want.iter().map(|s| s.to_string()));
            }
            if let Some(want) = case.get("missing").and_then(Value::as_array) {
                let want: BTreeSet<String> = want
                    .iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect();
                if want != decision.missing_capabilities {
                    failures.push(format!(
                        "{label}\n   missing: want {want:?}, got {:?}",
                        decision.missing_capabilities
                    ));
                }
            }
            // The audit row's compact form gives back exactly this decision.
            let stored = enforcer::record::compact(&decision, &request, &policy);
            let joined = enforcer::record::joined_reasons(&decision);
            let columns = enforcer::record::Columns::of(&decision, &joined);
            if enforcer::record::expand(&stored, &request, &columns, &policy).as_ref()
                != Some(&decision)
            {
                failures.push(format!(
                    "{label}\n   stored as {stored}: not the same decision"
                ));
            }
            if stored.contains("\"action\"") {
                failures.push(format!("{label}\n   stored whole: {stored}"));
            }
            // Every span points at real text in the argument it names.
            for m in &decision.matched_patterns {
                let (name, item) = match m.argument.split_once('[') {
                    Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
                    None => (m.argument.as_str(), None),
                };
                let value = request.args.get(name).and_then(|v| match item {
                    Some(i) => v.get(i),
                    None => Some(v),
                });
                let text = value.map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
                if text.is_none() {
                    failures.push(format!(
                        "{label}\n   {} names argument {} which does not exist",
                        m.id, m.argument
                    ));
                }
                if let Some(text) = text {
                    if !text.is_char_boundary(m.span.start)
                        || !text.is_char_boundary(m.span.end)
                        || text.get(m.span.clone()) != Some(m.text.as_str())
                    {
                        failures.push(format!(
                            "{label}\n   span {:?} of {} does not match its text",
                            m.span, m.id
                        ));
                    }
                }
            }
        }
    }
    assert!(
        total >= 150,
        "the corpus should hold at least 150 cases, it has {total}"
    );
    // Every shell pattern of the default policy has at least one positive case.
    let unseen: Vec<&str> = policy
        .patterns
        .iter()
        .map(|p| p.id.as_str())
        .filter(|id| !seen_patterns.contains(*id))
        .collect();
    assert!(
        unseen.is_empty(),
        "patterns without a positive case: {unseen:?}"
    );
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
