//! `countersign evaluate` and `countersign policy check`: the enforcer from the command line.

use enforcer::{evaluate, PolicySet, Principal, Request};
use serde::Deserialize;
use serde_json::Map;
use std::io::{BufRead, Write};
use std::path::Path;

/// One request as the command line reads it: the call plus who makes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliRequest {
    pub tool: String,
    pub operation: String,
    #[serde(default)]
    pub args: Map<String, serde_json::Value>,
    #[serde(default)]
    pub target: Option<String>,
    pub caller: Principal,
}

/// Why the command line could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Policy(#[from] enforcer::PolicyError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid request{}: {message}", line.map(|l| format!(" on line {l}")).unwrap_or_default())]
    Invalid {
        line: Option<usize>,
        message: String,
    },
    #[error("cannot write the decision: {0}")]
    Write(std::io::Error),
}

/// The policy at `path`, or the built-in default policy.
pub fn load_policy(path: Option<&Path>) -> Result<PolicySet, CliError> {
    match path {
        Some(path) => {
            let source = std::fs::read_to_string(path).map_err(|source| CliError::Read {
                path: path.display().to_string(),
                source,
            })?;
            Ok(PolicySet::load(&path.display().to_string(), &source)?)
        }
        None => Ok(enforcer::default_policy()?),
    }
}

fn decide(
    policy: &PolicySet,
    text: &str,
    line: Option<usize>,
) -> Result<enforcer::Decision, CliError> {
    let request: CliRequest = serde_json::from_str(text).map_err(|e| CliError::Invalid {
        line,
        message: e.to_string(),
    })?;
    let call = Request {
        tool: request.tool,
        operation: request.operation,
        args: request.args,
        target: request.target,
    };
    Ok(evaluate(&call, &request.caller, policy))
}

/// Evaluate one JSON request (the whole input) and print the decision as JSON.
pub fn evaluate_one(policy: &PolicySet, input: &str, out: &mut impl Write) -> Result<(), CliError> {
    let decision = decide(policy, input, None)?;
    let json = serde_json::to_string_pretty(&decision).map_err(|e| CliError::Write(e.into()))?;
    writeln!(out, "{json}").map_err(CliError::Write)
}

/// Evaluate one request per line. Every good line gets its decision; bad lines are reported on
/// `err` with their line number, and the first such error is returned at the end.
pub fn evaluate_lines(
    policy: &PolicySet,
    input: impl BufRead,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<usize, CliError> {
    let mut first_error = None;
    let mut count = 0;
    for (index, line) in input.lines().enumerate() {
        let line = line.map_err(|source| CliError::Read {
            path: "standard input".into(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        match decide(policy, &line, Some(index + 1)) {
            Ok(decision) => {
                let json =
                    serde_json::to_string(&decision).map_err(|e| CliError::Write(e.into()))?;
                writeln!(out, "{json}").map_err(CliError::Write)?;
                count += 1;
            }
            Err(e) => {
                let _ = writeln!(err, "countersign: {e}");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(count),
    }
}

/// One line describing a valid policy.
pub fn describe_policy(path: &str, policy: &PolicySet) -> String {
    let operations: usize = policy.tools.values().map(|t| t.operations.len()).sum();
    format!(
        "{path}: ok: policy `{}`, {} tools, {operations} operations, {} patterns, {} commands in the catalogue, hash {}",
        policy.name,
        policy.tools.len(),
        policy.patterns.len(),
        policy.catalogue.len(),
        policy.hash()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PolicySet {
        load_policy(None).expect("default policy")
    }

    #[test]
    fn one_request_prints_a_decision() {
        let mut out = Vec::new();
        let input = r#"{"tool":"ssh-exec","operation":"executeCommand","args":{"command":"rm -rf /tmp/x"},
            "caller":{"id":"a","roles":[],"capabilities":["ssh-linux","remote-exec"]}}"#;
        evaluate_one(&policy(), input, &mut out).expect("evaluates");
        let decision: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(decision["action"], "require_approval");
        assert_eq!(decision["matched_patterns"][0]["id"], "rm-recursive-force");
    }

    #[test]
    fn malformed_input_is_a_clear_error() {
        let mut out = Vec::new();
        let err = evaluate_one(
            &policy(),
            r#"{"tool":"x","operation":"y","caller":{"id":"a"},"bogus":1}"#,
            &mut out,
        )
        .expect_err("unknown field");
        assert!(err.to_string().contains("bogus"), "{err}");
        let err = evaluate_one(&policy(), "not json", &mut out).expect_err("not json");
        assert!(err.to_string().starts_with("invalid request"), "{err}");
    }

    #[test]
    fn jsonl_keeps_going_and_names_bad_lines() {
        let good = r#"{"tool":"dns-lookup","operation":"lookup","caller":{"id":"a","capabilities":["local-shell"]}}"#;
        let input = format!("{good}\n{{broken\n\n{good}\n");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let result = evaluate_lines(&policy(), input.as_bytes(), &mut out, &mut err);
        assert!(matches!(
            result,
            Err(CliError::Invalid { line: Some(2), .. })
        ));
        let lines: Vec<&str> = std::str::from_utf8(&out).expect("utf8").lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.contains("\"action\":\"allow\"")));
        assert!(String::from_utf8_lossy(&err).contains("line 2"));
    }
}
