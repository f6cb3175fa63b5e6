//! Countersign's policy decision engine.
//!
//! This crate is pure: no I/O, no async runtime, no database or web framework. The server, the
//! command line and the browser (compiled to wasm32) share it so that every place that shows or
//! makes a decision agrees. The decision function arrives with the enforcer issue; this module
//! holds the vocabulary the rest of the workspace already uses.

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
