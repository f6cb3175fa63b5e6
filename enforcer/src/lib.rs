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
//! - [`catalogue`] says what each command that would run does (the command catalogue);
//! - [`policy`] is the TOML policy model, validated and compiled into regex sets;
//! - [`decision`] is the evaluation; [`approval`] the pure voting rules;
//! - [`canonical`] is the JSON form calls are hashed in, and the hashing.

pub mod analysis;
pub mod approval;
pub mod canonical;
pub mod catalogue;
pub mod category;
pub mod decision;
pub mod error;
pub mod executor;
mod fnv;
pub mod grant;
pub mod job;
pub mod mcp;
pub mod policy;
pub mod record;
pub mod request;
pub mod shell;
pub mod wire;

pub use approval::{can_approve, Eligibility, PendingJob, Quorum, Verdict, Vote};
pub use canonical::{canonical_json, canonical_sha256, sha256_hex};
pub use catalogue::{Catalogue, Classification, Effect};
pub use decision::{call_hash, evaluate, Decision, PatternMatch, Principal, Request};
pub use executor::{Executor, ExecutorKind, JobCall};
pub use job::{JobStatus, JobSummary, Priority};
pub use policy::{
    ArgKind, Category, Effects, Mode, Operation, Pattern, PolicyError, PolicySet, Tool,
    UnknownCommands,
};

use serde::{Deserialize, Serialize};
use std::fmt;

/// The default policy for IT-MCP's tools, as shipped in `policies/default.toml`.
pub const DEFAULT_POLICY: &str = include_str!("../../policies/default.toml");

/// Load [`DEFAULT_POLICY`].
pub fn default_policy() -> Result<PolicySet, PolicyError> {
    PolicySet::load("policies/default.toml", DEFAULT_POLICY)
}

/// IT-MCP's own enforcement (`policies/it-mcp-compatible.toml`): the default policy without
/// asking on what the command catalogue finds, for teams moving over step by step.
pub const IT_MCP_COMPATIBLE_POLICY: &str = include_str!("../../policies/it-mcp-compatible.toml");

/// Load [`IT_MCP_COMPATIBLE_POLICY`].
pub fn it_mcp_compatible_policy() -> Result<PolicySet, PolicyError> {
    PolicySet::load("policies/it-mcp-compatible.toml", IT_MCP_COMPATIBLE_POLICY)
}

/// How dangerous an operation is, in IT-MCP's words (`LOW` .. `CRITICAL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

    pub fn parse(text: &str) -> Option<Risk> {
        Risk::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the enforcer says about a call, in IT-MCP's `decision_action` words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

    pub fn parse(text: &str) -> Option<Action> {
        [Action::Allow, Action::Deny, Action::RequireApproval]
            .into_iter()
            .find(|a| a.as_str() == text)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an audit row says was done (`audit_logs.decision_action`): the enforcer's three answers,
/// a person's approval, a run, or a withdrawal. Rows are written with these; rows read back keep the
/// column's text, because trails imported from IT-MCP or written by older versions hold other
/// words too (`error`), which reports still read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    Allow,
    Deny,
    RequireApproval,
    Approve,
    Execute,
    /// A requester withdrew their job.
    Cancel,
}

impl AuditAction {
    pub const ALL: [AuditAction; 6] = [
        AuditAction::Allow,
        AuditAction::Deny,
        AuditAction::RequireApproval,
        AuditAction::Approve,
        AuditAction::Execute,
        AuditAction::Cancel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Allow => "allow",
            AuditAction::Deny => "deny",
            AuditAction::RequireApproval => "require_approval",
            AuditAction::Approve => "approve",
            AuditAction::Execute => "execute",
            AuditAction::Cancel => "cancel",
        }
    }

    pub fn parse(text: &str) -> Option<AuditAction> {
        AuditAction::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

impl From<Action> for AuditAction {
    fn from(action: Action) -> Self {
        match action {
            Action::Allow => AuditAction::Allow,
            Action::Deny => AuditAction::Deny,
            Action::RequireApproval => AuditAction::RequireApproval,
        }
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::{write_json_str, HashWriter};
    use serde_json::Value;

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

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[1,{"d":2,"c":3}],"x":"é"}}"#).expect("json");
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":"é","y":[1,{"c":3,"d":2}]},"b":1}"#
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn strings_are_escaped_like_serde_json_and_streaming_hashes_the_same() {
        let tricky = "quote\" back\\slash \n\r\t\u{8}\u{c}\u{1}\u{1f} é ✓ \u{7f}";
        let mut out = String::new();
        write_json_str(tricky, &mut out).expect("write");
        assert_eq!(out, serde_json::to_string(tricky).expect("serde_json"));
        // Every ASCII byte and a few multi-byte characters, at every offset of an 8-byte chunk,
        // alone and next to other bytes that need escaping.
        let specials: Vec<String> = (0u8..0x80)
            .map(|b| char::from(b).to_string())
            .chain(["é".into(), "✓".into(), "\u{10ffff}".into()])
            .collect();
        for special in &specials {
            for offset in 0..17 {
                for tail in ["", "\"", "x\n", "abcdefghij"] {
                    let text = format!("{}{special}{tail}", "a".repeat(offset));
                    out.clear();
                    write_json_str(&text, &mut out).expect("write");
                    assert_eq!(
                        out,
                        serde_json::to_string(&text).expect("serde_json"),
                        "{text:?}"
                    );
                }
            }
        }
        let value: Value =
            serde_json::json!({"b": [tricky, 1.5, -2, true, null], "a": {"z": {}, "y": []}});
        assert_eq!(
            canonical_sha256(&value),
            sha256_hex(canonical_json(&value).as_bytes())
        );
    }

    /// The hash of `pieces` written to a [`HashWriter`], strings escaped by it (`true`) or
    /// written as they are.
    fn hashed(pieces: &[(bool, &str)]) -> String {
        let mut hasher = HashWriter::default();
        for &(escaped, piece) in pieces {
            if escaped {
                write_json_str(piece, &mut hasher).expect("hash");
            } else {
                fmt::Write::write_str(&mut hasher, piece).expect("hash");
            }
        }
        hasher.finish()
    }

    #[test]
    fn the_hasher_escapes_strings_as_serde_json_does() {
        let specials: Vec<String> = (0u8..0x80)
            .map(|b| char::from(b).to_string())
            .chain(["é".into(), "✓".into(), "\u{10ffff}".into()])
            .collect();
        // Every special byte at every offset of a chunk, then next to the end of a block:
        // what was gathered before it (`lead`) moves where the buffer fills up.
        for lead in [0, 1, 7, 8, 200, 250, 255] {
            let lead = "L".repeat(lead);
            for special in &specials {
                for offset in [0, 1, 5, 6, 7, 8, 9, 15, 16, 17, 60, 61, 62, 63, 64] {
                    for tail in ["", "\"", "x\n", "abcdefghij", "\"\"\"\"\"\"\"\"\"\"\""] {
                        let text = format!("{}{special}{tail}", "a".repeat(offset));
                        let expected = format!(
                            "{lead}{}!",
                            serde_json::to_string(&text).expect("serde_json")
                        );
                        assert_eq!(
                            hashed(&[(false, &lead), (true, &text), (false, "!")]),
                            sha256_hex(expected.as_bytes()),
                            "{lead:?} {text:?}"
                        );
                    }
                }
            }
        }
        // Long texts: many blocks, escapes everywhere, and pieces of every size around them.
        let script =
            "find /var/log -name '*.gz' | xargs rm; echo \"$(date)\\t\" \u{1}>> /x\n".repeat(70);
        for cut in [0, 1, 63, 64, 65, 255, 256, 257, 1000] {
            let (a, b) = script.split_at(cut.min(script.len()));
            let expected = format!(
                "{}{a}{}",
                serde_json::to_string(&script).expect("serde_json"),
                serde_json::to_string(b).expect("serde_json")
            );
            assert_eq!(
                hashed(&[(true, &script), (false, a), (true, b)]),
                sha256_hex(expected.as_bytes()),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn the_call_hash_is_the_hash_of_the_canonical_call() {
        let mut args = serde_json::Map::new();
        args.insert("command".into(), Value::String("rm -rf \"/tmp/x\"".into()));
        args.insert("a".into(), serde_json::json!({"z": 1, "b": [true]}));
        let request = Request {
            tool: "ssh-exec".into(),
            operation: "executeCommand".into(),
            args: args.clone(),
            target: Some("web-01".into()),
        };
        let expected = serde_json::json!({"tool": "ssh-exec", "operation": "executeCommand", "args": args, "target": "web-01"});
        assert_eq!(call_hash(&request), canonical_sha256(&expected));
        let untargeted = Request {
            target: None,
            ..request
        };
        assert_ne!(call_hash(&untargeted), canonical_sha256(&expected));
    }
}
