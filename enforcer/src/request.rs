//! The question put to the enforcer: a tool call, and who asks.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// A tool call someone wants to make.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub tool: String,
    pub operation: String,
    #[serde(default)]
    pub args: Map<String, Value>,
    /// The host or resource the call acts on, when the tool names one.
    #[serde(default)]
    pub target: Option<String>,
}

/// Who asks: an identity with roles and capabilities (from Keycloak or a local account).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    pub id: String,
    #[serde(default)]
    pub roles: BTreeSet<String>,
    #[serde(default)]
    pub capabilities: BTreeSet<String>,
}
