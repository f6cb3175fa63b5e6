//! Request shapes shared across Countersign's edges.
//!
//! - [`DecisionInput`]: the decision request as IT-MCP sends it, a JSON object decoded field by
//!   field, so every refusal names its field and a stable code. Shared by the server's API and the
//!   fuzz target `api_decoding`; the HTTP status is the server's business.
//! - [`ReportQuery`]: which part of the audit trail a report or export covers, as the Reports
//!   page's form and the export API's query string carry it (text as typed; the server checks
//!   it and names the field at fault).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Which part of the audit trail a report covers: a period and equality filters, as typed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportQuery {
    /// Start of the period: `YYYY-MM-DD` (UTC) or RFC 3339; default 30 days before `to`.
    pub from: Option<String>,
    /// End of the period, exclusive; a date means the end of that day. Default: now.
    pub to: Option<String>,
    /// `pci-dss`, `soc2` or `iso27001`: the controls a PDF maps its evidence to.
    pub framework: Option<String>,
    pub tool: Option<String>,
    pub caller: Option<String>,
    /// LOW, MEDIUM, HIGH or CRITICAL.
    pub risk: Option<String>,
    /// allow, deny, require_approval, approve, execute or cancel.
    pub action: Option<String>,
}

impl ReportQuery {
    /// The fields that are set, as (query-string name, value), in the form's order.
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("from", &self.from),
            ("to", &self.to),
            ("framework", &self.framework),
            ("tool", &self.tool),
            ("caller", &self.caller),
            ("risk", &self.risk),
            ("action", &self.action),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

/// The fields a decision request may have; any other is refused.
pub const FIELDS: [&str; 7] = [
    "tool",
    "operation",
    "args",
    "target",
    "reason",
    "on_behalf_of",
    "session",
];

/// A decision request, checked field by field.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionInput {
    pub tool: String,
    pub operation: String,
    pub args: Map<String, Value>,
    pub target: Option<String>,
    pub reason: Option<String>,
    pub on_behalf_of: Option<String>,
    pub session: Option<String>,
    /// SHA-256 of the canonical body (for `Idempotency-Key`).
    pub body_hash: String,
}

impl DecisionInput {
    /// The request as JSON (optional fields that are absent are left out).
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("tool".into(), Value::String(self.tool.clone()));
        object.insert("operation".into(), Value::String(self.operation.clone()));
        object.insert("args".into(), Value::Object(self.args.clone()));
        for (name, value) in [
            ("target", &self.target),
            ("reason", &self.reason),
            ("on_behalf_of", &self.on_behalf_of),
            ("session", &self.session),
        ] {
            if let Some(text) = value {
                object.insert(name.into(), Value::String(text.clone()));
            }
        }
        Value::Object(object)
    }

    /// What the enforcer decides on.
    pub fn request(&self) -> crate::Request {
        crate::Request {
            tool: self.tool.clone(),
            operation: self.operation.clone(),
            args: self.args.clone(),
            target: self.target.clone(),
        }
    }
}

/// Why a request body was refused: a stable code, the field when one is at fault, and a message
/// for the caller (it never echoes the body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub code: &'static str,
    pub field: Option<String>,
    pub message: String,
}

impl InputError {
    fn body(code: &'static str, message: impl Into<String>) -> InputError {
        InputError {
            code,
            field: None,
            message: message.into(),
        }
    }

    fn field(code: &'static str, field: &str, message: impl Into<String>) -> InputError {
        InputError {
            code,
            field: Some(field.to_string()),
            message: message.into(),
        }
    }
}

fn string_field(
    object: &Map<String, Value>,
    name: &str,
    max_chars: usize,
    required: bool,
) -> Result<Option<String>, InputError> {
    match object.get(name) {
        None | Some(Value::Null) if required => Err(InputError::field(
            "missing_field",
            name,
            format!("`{name}` is required"),
        )),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => {
            if required && text.trim().is_empty() {
                return Err(InputError::field(
                    "invalid_value",
                    name,
                    format!("`{name}` must not be empty"),
                ));
            }
            if text.chars().count() > max_chars {
                return Err(InputError::field(
                    "invalid_value",
                    name,
                    format!("`{name}` is longer than {max_chars} characters"),
                ));
            }
            Ok(Some(text.clone()))
        }
        Some(_) => Err(InputError::field(
            "invalid_type",
            name,
            format!("`{name}` must be a string"),
        )),
    }
}

/// Decode and check a decision request body. Every refusal names its field.
pub fn parse_decision(body: &[u8]) -> Result<DecisionInput, InputError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        InputError::body(
            "malformed_json",
            format!(
                "the body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    let Value::Object(object) = &value else {
        return Err(InputError::body(
            "invalid_body",
            "the body must be a JSON object",
        ));
    };
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(InputError::field(
            "unknown_field",
            unknown,
            format!(
                "unknown field `{unknown}`; expected one of {}",
                FIELDS.join(", ")
            ),
        ));
    }
    let args = match object.get("args") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(args)) => args.clone(),
        Some(_) => {
            return Err(InputError::field(
                "invalid_type",
                "args",
                "`args` must be an object",
            ))
        }
    };
    let required =
        |name: &str| string_field(object, name, 128, true).map(Option::unwrap_or_default);
    Ok(DecisionInput {
        tool: required("tool")?,
        operation: required("operation")?,
        args,
        target: string_field(object, "target", 512, false)?,
        reason: string_field(object, "reason", 2_000, false)?,
        on_behalf_of: string_field(object, "on_behalf_of", 256, false)?,
        session: string_field(object, "session", 256, false)?,
        body_hash: crate::canonical_sha256(&value),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_decodes_and_encodes_to_itself() {
        let body = br#"{"tool":"ssh-exec","operation":"executeCommand","args":{"command":"ls"},"target":"web-1","session":null}"#;
        let input = parse_decision(body).expect("a good request");
        assert_eq!(
            (
                input.tool.as_str(),
                input.target.as_deref(),
                input.session.as_deref()
            ),
            ("ssh-exec", Some("web-1"), None)
        );
        let again = parse_decision(input.to_json().to_string().as_bytes()).expect("again");
        assert_eq!(again.request(), input.request());
    }

    #[test]
    fn refusals_name_the_field_and_never_echo_the_body() {
        let code = |body: &str| {
            parse_decision(body.as_bytes())
                .map(|_| ("ok", None))
                .unwrap_or_else(|e| (e.code, e.field))
        };
        assert_eq!(code("{"), ("malformed_json", None));
        assert_eq!(code("[1]"), ("invalid_body", None));
        assert_eq!(
            code(r#"{"tool":"t","operation":"o","x<script>":1}"#),
            ("unknown_field", Some("x<script>".into()))
        );
        assert_eq!(
            code(r#"{"operation":"o"}"#),
            ("missing_field", Some("tool".into()))
        );
        assert_eq!(
            code(r#"{"tool":" ","operation":"o"}"#),
            ("invalid_value", Some("tool".into()))
        );
        assert_eq!(
            code(r#"{"tool":"t","operation":7}"#),
            ("invalid_type", Some("operation".into()))
        );
        assert_eq!(
            code(r#"{"tool":"t","operation":"o","args":[]}"#),
            ("invalid_type", Some("args".into()))
        );
        let long = format!(
            r#"{{"tool":"t","operation":"o","target":"{}"}}"#,
            "é".repeat(513)
        );
        assert_eq!(code(&long), ("invalid_value", Some("target".into())));
        let secret = parse_decision(br#"{"tool":"t","operation":"o","reason":["hunter2"]}"#)
            .expect_err("refused");
        assert!(!secret.message.contains("hunter2"), "{}", secret.message);
    }
}
