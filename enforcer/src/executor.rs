//! Executors: how an approved job runs, as the policy file describes it (`[executors.NAME]`).
//!
//! - `process` — the server runs a program. `argv` is a template filled from the job: each
//!   element stays one argument (no shell unless the policy says `shell = true`), so an argument's
//!   value can never become extra words.
//! - `agent` — left for a pulling agent (`countersign agent`), optionally a named one, which runs
//!   `argv` the same way on its own machine.
//! - `webhook` — the server POSTs the approved job to a tool server's URL, signed with
//!   HMAC-SHA256 (the secret comes from the environment variable `secret_env`, never the file).
//!
//! Placeholders in `argv`: `{tool}`, `{operation}`, `{target}`, `{job_id}`, `{args_json}` (the
//! arguments as canonical JSON) and `{args.NAME}` (one argument; a list fills one element per
//! item when the placeholder is the whole element). `:q` after a name (`{args.command:q}`) quotes
//! the value for a POSIX shell, for templates that hand a command line to a remote shell.
//! `{{` and `}}` are literal braces. Filling a template is pure and shared by the server and the
//! agent.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// Programs that are shells: a template starting with one needs `shell = true`.
const SHELLS: [&str; 13] = [
    "sh",
    "bash",
    "dash",
    "zsh",
    "ksh",
    "fish",
    "csh",
    "tcsh",
    "pwsh",
    "powershell",
    "powershell.exe",
    "cmd",
    "cmd.exe",
];

/// The default time a run may take.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// Webhook deliveries tried before the job fails.
pub const DEFAULT_WEBHOOK_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    Process,
    Agent,
    Webhook,
}

impl ExecutorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Process => "process",
            ExecutorKind::Agent => "agent",
            ExecutorKind::Webhook => "webhook",
        }
    }
}

/// One executor, validated. (Agents receive it with each job they claim.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Executor {
    pub name: String,
    pub kind: ExecutorKind,
    pub description: String,
    /// The argv template (`process` and `agent`).
    pub argv: Vec<String>,
    /// The template deliberately starts a shell.
    pub shell: bool,
    pub timeout_secs: u64,
    /// Environment variables passed through to the program; every other one is dropped.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    /// The one agent that may run it (`agent`); any agent when empty.
    pub agent: Option<String>,
    /// Where to POST the job (`webhook`).
    pub url: Option<String>,
    /// The environment variable holding the HMAC secret (`webhook`).
    pub secret_env: Option<String>,
    /// Delivery attempts (`webhook`).
    pub attempts: u32,
}

/// The parts of a job a template may use.
#[derive(Debug, Clone, Copy)]
pub struct JobCall<'a> {
    pub job_id: &'a str,
    pub tool: &'a str,
    pub operation: &'a str,
    pub target: Option<&'a str>,
    pub args: &'a Map<String, Value>,
}

/// Why a command template, or its filling for one job, is refused: a sentence for the
/// policy's author (at load) or the job's record (at run time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field { name: String, quote: bool },
}

/// Split one template element into literal text and placeholders.
fn pieces(element: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = element.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => return Err(TemplateError(format!("unclosed `{{` in `{element}`"))),
                    }
                }
                let (name, quote) = match name.strip_suffix(":q") {
                    Some(base) => (base.to_string(), true),
                    None => (name, false),
                };
                let known = matches!(
                    name.as_str(),
                    "tool" | "operation" | "target" | "job_id" | "args_json"
                ) || name
                    .strip_prefix("args.")
                    .is_some_and(|arg| !arg.is_empty() && !arg.contains(['{', '}']));
                if !known {
                    return Err(TemplateError(format!(
                        "unknown placeholder `{{{name}}}` (use tool, operation, target, job_id, args_json or args.NAME)"
                    )));
                }
                if !text.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut text)));
                }
                out.push(Piece::Field { name, quote });
            }
            '}' => {
                return Err(TemplateError(format!(
                    "stray `}}` in `{element}` (write `}}}}`)"
                )))
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() || out.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// Check a template's syntax; `Err` says what is wrong.
pub fn check_template(argv: &[String]) -> Result<(), TemplateError> {
    argv.iter()
        .try_for_each(|element| pieces(element).map(drop))
}

/// Quote a value for a POSIX shell: one word, whatever it contains.
pub fn shell_quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@,+%".contains(&b))
    {
        return value.to_string();
    }
    format!("'{}'", value.replace('\'', "'\\''"))
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The values one placeholder stands for (several only for a list argument).
fn values(name: &str, call: &JobCall<'_>) -> Result<Vec<String>, TemplateError> {
    let one = |v: &str| Ok(vec![v.to_string()]);
    match name {
        "tool" => one(call.tool),
        "operation" => one(call.operation),
        "job_id" => one(call.job_id),
        "target" => call.target.map(|t| vec![t.to_string()]).ok_or_else(|| {
            TemplateError("the job names no target, which this executor needs".into())
        }),
        "args_json" => one(&crate::canonical_json(&Value::Object(call.args.clone()))),
        _ => {
            let arg = name.strip_prefix("args.").unwrap_or(name);
            match call.args.get(arg) {
                None | Some(Value::Null) => Err(TemplateError(format!(
                    "the job has no argument `{arg}`, which this executor needs"
                ))),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| {
                        scalar(item).ok_or_else(|| {
                            TemplateError(format!("argument `{arg}` holds a list of something other than text, numbers or booleans"))
                        })
                    })
                    .collect(),
                Some(value) => scalar(value).map(|v| vec![v]).ok_or_else(|| {
                    TemplateError(format!("argument `{arg}` is an object; a template can only use text, numbers, booleans or lists of them"))
                }),
            }
        }
    }
}

/// Fill a template from a job. Each element yields one argument, except an element that is a
/// single list-valued `{args.NAME}`, which yields one per item. Values are never re-split.
pub fn fill(argv: &[String], call: &JobCall<'_>) -> Result<Vec<String>, TemplateError> {
    let mut out = Vec::with_capacity(argv.len());
    for element in argv {
        let parts = pieces(element)?;
        if let [Piece::Field { name, quote }] = parts.as_slice() {
            for value in values(name, call)? {
                out.push(if *quote { shell_quote(&value) } else { value });
            }
            continue;
        }
        let mut text = String::new();
        for part in parts {
            match part {
                Piece::Text(t) => text.push_str(&t),
                Piece::Field { name, quote } => {
                    let vals = values(&name, call)?;
                    let joined = if quote {
                        vals.iter()
                            .map(|v| shell_quote(v))
                            .collect::<Vec<_>>()
                            .join(" ")
                    } else {
                        vals.join(" ")
                    };
                    text.push_str(&joined);
                }
            }
        }
        out.push(text);
    }
    if out.first().is_none_or(|p| p.is_empty()) {
        return Err(TemplateError("the filled template names no program".into()));
    }
    Ok(out)
}

impl Executor {
    /// The argv this executor runs for a job.
    pub fn command(&self, call: &JobCall<'_>) -> Result<Vec<String>, TemplateError> {
        if self.kind == ExecutorKind::Webhook {
            return Err(TemplateError(format!(
                "executor `{}` is a webhook and runs no program",
                self.name
            )));
        }
        fill(&self.argv, call)
    }
}

/// Whether a program (path or name) is a shell.
pub fn is_shell(program: &str) -> bool {
    let base = program.rsplit(['/', '\\']).next().unwrap_or(program);
    SHELLS.contains(&base.to_ascii_lowercase().as_str())
}

/// Environment variable names: letters, digits and `_`, not starting with a digit.
pub fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Agent ids: 1 to 128 letters, digits, `-`, `_` or `.`.
pub fn is_agent_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The argument names a template reads (for the Policies page).
pub fn template_args(argv: &[String]) -> BTreeSet<String> {
    argv.iter()
        .filter_map(|e| pieces(e).ok())
        .flatten()
        .filter_map(|p| match p {
            Piece::Field { name, .. } => name.strip_prefix("args.").map(str::to_string),
            Piece::Text(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(args: &Value) -> (Map<String, Value>, &'static str) {
        (args.as_object().cloned().unwrap_or_default(), "job-1")
    }

    fn t(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn values_stay_single_arguments() {
        let (args, job_id) = call(&json!({"command": "ls; rm -rf /", "pkgs": ["a b", "c"]}));
        let c = JobCall {
            job_id,
            tool: "ssh-exec",
            operation: "executeCommand",
            target: Some("web-1"),
            args: &args,
        };
        let argv = fill(
            &t(&[
                "ssh",
                "--",
                "{target}",
                "{args.command}",
                "{args.pkgs}",
                "x={tool}/{operation}",
            ]),
            &c,
        )
        .expect("fills");
        assert_eq!(
            argv,
            t(&[
                "ssh",
                "--",
                "web-1",
                "ls; rm -rf /",
                "a b",
                "c",
                "x=ssh-exec/executeCommand"
            ])
        );
        let quoted = fill(&t(&["ssh", "sudo -n sh -c {args.command:q}"]), &c).expect("fills");
        assert_eq!(quoted[1], "sudo -n sh -c 'ls; rm -rf /'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(fill(&t(&["echo", "{{x}}"]), &c).expect("fills")[1], "{x}");
    }

    #[test]
    fn missing_and_unusable_values_are_errors() {
        let (args, job_id) = call(&json!({"o": {"a": 1}}));
        let c = JobCall {
            job_id,
            tool: "t",
            operation: "o",
            target: None,
            args: &args,
        };
        assert!(fill(&t(&["x", "{args.missing}"]), &c)
            .expect_err("missing")
            .0
            .contains("`missing`"));
        assert!(fill(&t(&["x", "{target}"]), &c).is_err());
        assert!(fill(&t(&["x", "{args.o}"]), &c).is_err());
        assert!(check_template(&t(&["x", "{nope}"])).is_err());
        assert!(check_template(&t(&["x", "{args.a"])).is_err());
        assert!(check_template(&t(&["x", "a}b"])).is_err());
    }

    #[test]
    fn shells_are_recognised() {
        assert!(is_shell("/bin/sh") && is_shell("bash") && is_shell("C:\\x\\PowerShell.exe"));
        assert!(!is_shell("/usr/bin/ssh") && !is_shell("shred"));
    }
}
