//! How an MCP tool server's tools map onto the policy: the policy's `[mcp.upstreams.NAME]`
//! tables. Countersign's MCP gateway stands between an assistant and a tool server (an
//! *upstream*); every `tools/call` it passes on is first turned into a policy [`Request`] here,
//! then decided like any other call.
//!
//! ```toml
//! [mcp.upstreams.it-mcp.tools.ssh-exec]
//! tool = "ssh-exec"                 # the policy's tool
//! operation = "executeCommand"      # a fixed operation ...
//! target_arg = "host"               # the argument naming the host the call acts on
//!
//! [mcp.upstreams.it-mcp.tools.ubuntu-admin]
//! tool = "ubuntu-admin"
//! operation_arg = "operation"       # ... or the argument that carries it
//!
//! [mcp.upstreams.it-mcp.tools.run]
//! tool = "ssh-exec"
//! operation = "executeCommand"
//! args = { cmd = "command" }        # the tool's `cmd` is the policy's `command` (a shell argument)
//! ```
//!
//! A tool no table names is unknown: the gateway hides it from `tools/list` and denies calls to
//! it (default deny). An upstream may instead send its unknown tools to one policy operation
//! (`unknown_tools = { tool = "mcp-unknown", operation = "call" }`), which the policy then
//! decides like any other, typically CRITICAL.

use crate::request::Request;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// The `[mcp]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct McpFile {
    #[serde(default)]
    pub(crate) upstreams: BTreeMap<String, UpstreamFile>,
}

impl McpFile {
    pub(crate) fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamFile {
    #[serde(default)]
    pub(crate) tools: BTreeMap<String, ToolMapFile>,
    #[serde(default)]
    pub(crate) unknown_tools: Option<ToolMapFile>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ToolMapFile {
    pub(crate) tool: String,
    #[serde(default)]
    pub(crate) operation: Option<String>,
    #[serde(default)]
    pub(crate) operation_arg: Option<String>,
    #[serde(default)]
    pub(crate) target_arg: Option<String>,
    #[serde(default)]
    pub(crate) args: BTreeMap<String, String>,
}

/// Where a mapped call's operation comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum OperationSource {
    /// Always this operation.
    Fixed(String),
    /// The value of this (string) argument.
    Argument(String),
}

/// One upstream tool as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolMap {
    /// The policy's tool.
    pub tool: String,
    pub operation: OperationSource,
    /// The argument naming the host or resource the call acts on.
    pub target_arg: Option<String>,
    /// The tool's argument names that the policy knows under another name.
    pub rename: BTreeMap<String, String>,
}

/// What the policy says about one upstream's tools.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UpstreamPolicy {
    pub tools: BTreeMap<String, ToolMap>,
    /// Where calls to tools without a table go; `None`: they are hidden and denied.
    pub unknown_tools: Option<ToolMap>,
}

/// Why a tool call cannot be put to the policy (the gateway denies it, with this reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpRefusal {
    /// The policy has no `[mcp.upstreams.NAME]` table.
    UnknownUpstream { upstream: String },
    /// The upstream's table does not name the tool, and unknown tools are denied.
    UnknownTool { upstream: String, tool: String },
    /// The operation comes from an argument that is missing or not a string.
    NoOperation { tool: String, argument: String },
}

impl fmt::Display for McpRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            McpRefusal::UnknownUpstream { upstream } => write!(
                f,
                "the policy does not name the tool server `{upstream}`, so none of its tools may be called"
            ),
            McpRefusal::UnknownTool { upstream, tool } => write!(
                f,
                "the policy does not know the tool `{tool}` of `{upstream}`, and unknown tools are denied"
            ),
            McpRefusal::NoOperation { tool, argument } => write!(
                f,
                "the tool `{tool}` says what to do in its `{argument}` argument, which is missing or not text"
            ),
        }
    }
}

impl UpstreamPolicy {
    /// The mapping of one of this upstream's tools: its own, the unknown-tools one, or none.
    pub fn tool(&self, name: &str) -> Option<&ToolMap> {
        self.tools.get(name).or(self.unknown_tools.as_ref())
    }
}

impl ToolMap {
    /// The policy request for a call with these arguments: the policy's tool, the operation
    /// (fixed, or read from its argument), the arguments under the policy's names, and the
    /// target.
    pub fn request(
        &self,
        tool_name: &str,
        arguments: &Map<String, Value>,
    ) -> Result<Request, McpRefusal> {
        let operation = match &self.operation {
            OperationSource::Fixed(operation) => operation.clone(),
            OperationSource::Argument(argument) => arguments
                .get(argument)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| McpRefusal::NoOperation {
                    tool: tool_name.to_string(),
                    argument: argument.clone(),
                })?
                .to_string(),
        };
        let args = arguments
            .iter()
            .map(|(name, value)| {
                let name = self.rename.get(name).unwrap_or(name);
                (name.clone(), value.clone())
            })
            .collect();
        let target = self
            .target_arg
            .as_ref()
            .and_then(|a| arguments.get(a))
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(Request {
            tool: self.tool.clone(),
            operation,
            args,
            target,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(operation: OperationSource) -> ToolMap {
        ToolMap {
            tool: "ssh-exec".into(),
            operation,
            target_arg: Some("host".into()),
            rename: [("cmd".to_string(), "command".to_string())].into(),
        }
    }

    fn args(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn a_call_becomes_the_policy_request_it_names() {
        let request = map(OperationSource::Fixed("executeCommand".into()))
            .request("run", &args(json!({ "host": "web-01", "cmd": "uptime" })))
            .expect("maps");
        assert_eq!(request.tool, "ssh-exec");
        assert_eq!(request.operation, "executeCommand");
        assert_eq!(request.target.as_deref(), Some("web-01"));
        assert_eq!(request.args.get("command"), Some(&json!("uptime")));
        assert!(!request.args.contains_key("cmd"));
    }

    #[test]
    fn an_operation_from_an_argument_must_be_there() {
        let by_arg = map(OperationSource::Argument("operation".into()));
        let request = by_arg
            .request("ubuntu", &args(json!({ "operation": "restartService" })))
            .expect("maps");
        assert_eq!(request.operation, "restartService");
        for missing in [
            json!({}),
            json!({ "operation": 3 }),
            json!({ "operation": "" }),
        ] {
            assert_eq!(
                by_arg.request("ubuntu", &args(missing)),
                Err(McpRefusal::NoOperation {
                    tool: "ubuntu".into(),
                    argument: "operation".into()
                })
            );
        }
    }

    #[test]
    fn unknown_tools_go_where_the_upstream_says() {
        let mut upstream = UpstreamPolicy::default();
        upstream.tools.insert(
            "run".into(),
            map(OperationSource::Fixed("executeCommand".into())),
        );
        assert!(upstream.tool("run").is_some());
        assert!(upstream.tool("rm").is_none());
        upstream.unknown_tools = Some(map(OperationSource::Fixed("anything".into())));
        assert_eq!(
            upstream.tool("rm").map(|m| &m.operation),
            Some(&OperationSource::Fixed("anything".into()))
        );
    }

    const POLICY: &str = r#"
name = "t"
[tools.files]
[tools.files.operations.read]
risk = "LOW"
requires = []
"#;

    #[test]
    fn the_policy_checks_its_mcp_tables() {
        let ok = crate::PolicySet::load(
            "p.toml",
            &format!("{POLICY}\n[mcp.upstreams.fs.tools.read_text_file]\ntool = \"files\"\noperation = \"read\"\n"),
        )
        .expect("loads");
        let fs = ok.mcp.get("fs").expect("upstream");
        assert!(fs.tool("read_text_file").is_some());
        assert!(fs.tool("write_file").is_none());
        for (table, field, says) in [
            (
                "tool = \"nope\"\noperation = \"read\"",
                "tools.t.tool",
                "does not have",
            ),
            (
                "tool = \"files\"\noperation = \"write\"",
                "tools.t.operation",
                "does not have",
            ),
            (
                "tool = \"files\"",
                "tools.t.operation",
                "say which operation",
            ),
            (
                "tool = \"files\"\noperation = \"read\"\noperation_arg = \"op\"",
                "tools.t.operation",
                "not both",
            ),
            ("tool = \"files\"\nwhatever = 1", "", "unknown field"),
        ] {
            let text = format!("{POLICY}\n[mcp.upstreams.fs.tools.t]\n{table}\n");
            let error = crate::PolicySet::load("p.toml", &text).expect_err(says);
            assert!(error.to_string().contains(says), "{error}");
            assert!(
                error.field.as_deref().unwrap_or_default().contains(field),
                "{:?}",
                error.field
            );
        }
    }

    #[test]
    fn a_policy_without_mcp_tables_hashes_as_it_did_and_one_with_them_does_not() {
        let plain = crate::PolicySet::load("p.toml", POLICY).expect("loads");
        let empty = crate::PolicySet::load("p.toml", &format!("{POLICY}\n[mcp]\n")).expect("loads");
        assert_eq!(plain.hash(), empty.hash(), "an empty [mcp] is no change");
        let mapped = crate::PolicySet::load(
            "p.toml",
            &format!(
                "{POLICY}\n[mcp.upstreams.fs.tools.r]\ntool = \"files\"\noperation = \"read\"\n"
            ),
        )
        .expect("loads");
        assert_ne!(plain.hash(), mapped.hash(), "the mapping decides too");
    }
}
