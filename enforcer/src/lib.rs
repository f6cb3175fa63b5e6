//! Countersign's policy decision engine.
//!
//! This crate is pure: no I/O, no async runtime, no database or web framework. The server, the
//! command line and the browser (compiled to wasm32) share it so that every place that shows or
//! makes a decision agrees. Modelled on Cedar's authorizer: one total function,
//! [`evaluate`], with default deny. Loading a policy ([`PolicySet::load`]) is the only step that
//! can fail.
//!
//! - [`shell`] reads command lines (quoting, escapes, substitutions) into words and commands;
//! - [`analysis`] looks through wrappers (`sudo`, `env`, `sh -c`, ...) to what would run;
//! - [`policy`] is the TOML policy model, validated and compiled into regex sets;
//! - [`decision`] is the evaluation; [`approval`] the pure voting rules.

pub mod analysis;
pub mod approval;
pub mod decision;
pub mod policy;
pub mod shell;

pub use approval::{can_approve, Eligibility, PendingJob, Quorum, Verdict, Vote};
pub use decision::{call_hash, evaluate, Decision, PatternMatch, Principal, Request};
pub use policy::{ArgKind, Category, Operation, Pattern, PolicyError, PolicySet, Tool};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The default policy for IT-MCP's tools, as shipped in `policies/default.toml`.
pub const DEFAULT_POLICY: &str = include_str!("../../policies/default.toml");

/// Load [`DEFAULT_POLICY`].
pub fn default_policy() -> Result<PolicySet, PolicyError> {
    PolicySet::load("policies/default.toml", DEFAULT_POLICY)
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
    }
    out
}

/// JSON with object keys sorted and no insignificant whitespace: the form that is hashed.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*key).clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(*key) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

use serde::{Deserialize, Serialize};
use std::fmt;

/// How dangerous an operation is, in IT-MCP's words (`LOW` .. `CRITICAL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Risk {
    Low,
    Medium,
    High,
    Critical,
}

impl Risk {
    /// Every level, lowest first.
    pub const ALL: [Risk; 4] = [Risk::Low, Risk::Medium, Risk::High, Risk::Critical];

    /// The spelling stored in IT-MCP's `audit_logs.risk_level` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "LOW",
            Risk::Medium => "MEDIUM",
            Risk::High => "HIGH",
            Risk::Critical => "CRITICAL",
        }
    }
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the enforcer says about a call, in IT-MCP's `decision_action` words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Deny,
    RequireApproval,
}

impl Action {
    /// The spelling stored in IT-MCP's `audit_logs.decision_action` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::RequireApproval => "require_approval",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn risk_levels_are_ordered_and_spelled_like_it_mcp() {
        assert!(
            Risk::Low < Risk::Medium && Risk::Medium < Risk::High && Risk::High < Risk::Critical
        );
        let spelled: Vec<&str> = Risk::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(spelled, ["LOW", "MEDIUM", "HIGH", "CRITICAL"]);
        assert_eq!(
            serde_json::to_string(&Risk::Critical).ok().as_deref(),
            Some("\"CRITICAL\"")
        );
    }

    #[test]
    fn actions_are_spelled_like_it_mcp() {
        assert_eq!(Action::RequireApproval.to_string(), "require_approval");
        assert_eq!(
            serde_json::to_string(&Action::Deny).ok().as_deref(),
            Some("\"deny\"")
        );
    }
}
