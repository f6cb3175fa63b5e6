//! The decision: one total function from a request, a principal and a policy to an answer.

use crate::analysis::{self, Invocation};
use crate::catalogue::{category_name, Classification};
use crate::policy::{
    Category, Effects, InvocationFlags, Mode, Operation, Pattern, PolicySet, UnknownCommands,
};

pub use crate::request::{Principal, Request};
use crate::shell::{self, Warning};
use crate::{Action, Risk};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use std::cell::Cell;
use std::collections::BTreeSet;
use std::ops::Range;

/// A dangerous pattern found in an argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatternMatch {
    pub id: String,
    pub category: Category,
    pub description: String,
    /// The argument it was found in (`command`, or `command[2]` for an item of a list).
    pub argument: String,
    /// Byte span in that argument's original text.
    pub span: Range<usize>,
    /// The text at `span`.
    pub text: String,
}

/// The enforcer's answer, with everything needed to explain and audit it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub action: Action,
    pub risk: Risk,
    /// Sentences a person understands, most important first.
    pub reasons: Vec<String>,
    pub required_capabilities: BTreeSet<String>,
    pub missing_capabilities: BTreeSet<String>,
    pub matched_patterns: Vec<PatternMatch>,
    /// Distinct approvers needed (0 unless the action is `require_approval`).
    pub approvals_required: u32,
    /// Seconds a pending request may wait for approval.
    pub ttl_secs: u64,
    /// Seconds an approved job may wait to be executed.
    pub approval_window_secs: u64,
    pub interactive_only: bool,
    pub executor: Option<String>,
    pub policy_name: String,
    pub policy_hash: String,
    /// SHA-256 of the canonical (tool, operation, args, target): binds an approval to this call.
    pub call_hash: String,
    /// What each command in the shell arguments does, by the command catalogue.
    #[serde(default)]
    pub commands: Vec<Classification>,
    /// Shadow mode allowed a call that enforcing would have held for approval: the reasons say
    /// why it would have been held (see [`crate::policy::Mode`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub would_block: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// SHA-256 over the canonical JSON of the call (object keys sorted, no whitespace).
pub fn call_hash(request: &Request) -> String {
    use crate::canonical::{write_canonical_map, write_json_str, HashWriter};
    use std::fmt::Write as _;
    // The canonical JSON of {"args", "operation", "target", "tool"} (keys in sorted order),
    // streamed into the hash without copying the arguments.
    let mut hasher = HashWriter::default();
    let _ = hasher.write_str("{\"args\":");
    write_canonical_map(&request.args, &mut hasher);
    let _ = hasher.write_str(",\"operation\":");
    let _ = write_json_str(&request.operation, &mut hasher);
    let _ = hasher.write_str(",\"target\":");
    let _ = match &request.target {
        Some(target) => write_json_str(target, &mut hasher),
        None => hasher.write_str("null"),
    };
    let _ = hasher.write_str(",\"tool\":");
    let _ = write_json_str(&request.tool, &mut hasher);
    let _ = hasher.write_str("}");
    hasher.finish()
}

/// Decide. Never fails and never panics; anything unknown is denied.
pub fn evaluate(request: &Request, principal: &Principal, policy: &PolicySet) -> Decision {
    let mut decision = Decision {
        action: Action::Deny,
        risk: Risk::Critical,
        reasons: Vec::with_capacity(4),
        required_capabilities: BTreeSet::new(),
        missing_capabilities: BTreeSet::new(),
        matched_patterns: Vec::new(),
        approvals_required: 0,
        ttl_secs: 0,
        approval_window_secs: 0,
        interactive_only: false,
        executor: None,
        policy_name: policy.name.clone(),
        policy_hash: policy.hash().to_string(),
        call_hash: call_hash(request),
        commands: Vec::new(),
        would_block: false,
    };
    let Some(tool) = policy.tools.get(&request.tool) else {
        decision.reasons.push(format!(
            "unknown tool `{}`: the policy does not allow it",
            request.tool
        ));
        return decision;
    };
    let Some(operation) = tool.operations.get(&request.operation) else {
        decision.reasons.push(format!(
            "unknown operation `{}` of tool `{}`: the policy does not allow it",
            request.operation, request.tool
        ));
        return decision;
    };
    decision.risk = operation.risk;
    decision.interactive_only = operation.interactive_only;
    decision.executor = operation.executor.clone();
    decision.required_capabilities = operation.requires.clone();
    decision.missing_capabilities = operation
        .requires
        .difference(&principal.capabilities)
        .cloned()
        .collect();

    let inspection = inspect(request, operation, policy);
    decision.matched_patterns = inspection.matches;
    decision.commands = inspection.commands;
    let escalated = decision
        .matched_patterns
        .iter()
        .filter_map(|m| escalation(policy, &m.id))
        .max();
    if let Some(higher) = escalated.filter(|r| *r > decision.risk) {
        decision.reasons.push(format!(
            "risk raised from {} to {higher} by what the arguments do",
            operation.risk
        ));
        decision.risk = higher;
    }

    let rule = policy.approvals.for_risk(decision.risk);
    decision.ttl_secs = rule.request_ttl_secs;
    decision.approval_window_secs = rule.approval_window_secs;

    if !inspection.malformed.is_empty() {
        decision.action = Action::Deny;
        decision.reasons.insert(
            0,
            format!("malformed arguments: {}", inspection.malformed.join("; ")),
        );
        return decision;
    }
    if !decision.missing_capabilities.is_empty() {
        decision.action = Action::Deny;
        let missing: Vec<&str> = decision
            .missing_capabilities
            .iter()
            .map(String::as_str)
            .collect();
        decision.reasons.insert(
            0,
            format!("missing required capabilities: {}", missing.join(", ")),
        );
        return decision;
    }

    // Why approval is needed, if it is: appended to the reasons given so far.
    let given = decision.reasons.len();
    let why_approval = &mut decision.reasons;
    if operation.interactive_only {
        why_approval.push(format!(
            "{}.{} always needs a person's approval (interactive only)",
            request.tool, request.operation
        ));
    }
    if decision.risk == Risk::Critical {
        why_approval.push("CRITICAL operations always need approval".to_string());
    }
    if operation.effects == Effects::RequireApproval
        || operation.unknown_commands == UnknownCommands::RequireApproval
    {
        why_approval.extend(what_commands_do(&decision.commands, operation));
    }
    if decision.risk == Risk::High {
        let has = |category| {
            decision
                .matched_patterns
                .iter()
                .any(|m| m.category == category)
        };
        if has(Category::PrivilegeEscalation) {
            why_approval.push("the command runs with elevated privileges (sudo)".to_string());
        }
        if has(Category::ForceFlag) {
            why_approval.push("a force or no-confirm flag is present".to_string());
        }
        let mut dangerous: Vec<&str> = decision
            .matched_patterns
            .iter()
            .filter(|m| {
                !matches!(
                    m.category,
                    Category::PrivilegeEscalation | Category::ForceFlag
                )
            })
            .map(|m| m.id.as_str())
            .collect();
        dangerous.sort_unstable();
        dangerous.dedup();
        if !dangerous.is_empty() {
            why_approval.push(format!(
                "dangerous patterns detected: {}",
                dangerous.join(", ")
            ));
        }
        if !inspection.warnings.is_empty() {
            why_approval.push("the command could not be read completely (unbalanced quoting or too deeply nested)".to_string());
        }
    }
    if decision.reasons.len() == given {
        decision.action = Action::Allow;
        decision.reasons.push(match decision.risk {
            Risk::Low | Risk::Medium => format!(
                "{} risk: allowed for a caller with the required capabilities",
                decision.risk
            ),
            _ => "HIGH risk with no dangerous pattern, sudo or force flag: allowed".to_string(),
        });
    } else if operation.mode == Mode::Shadow
        && !operation.interactive_only
        && decision.risk != Risk::Critical
    {
        // Shadow mode: allowed, and the reasons say what enforcing would have asked for. A
        // CRITICAL call (by the operation, or raised by what its arguments do) still asks.
        decision.action = Action::Allow;
        decision.would_block = true;
        decision.reasons.insert(
            0,
            format!(
                "shadow mode: allowed, but enforcing would hold it for {} approval{}",
                rule.quorum,
                if rule.quorum == 1 { "" } else { "s" },
            ),
        );
    } else {
        decision.action = Action::RequireApproval;
        decision.approvals_required = rule.quorum;
        decision.reasons.push(format!(
            "needs {} approval{} from people with the `{}` role",
            rule.quorum,
            if rule.quorum == 1 { "" } else { "s" },
            policy.approvals.approver_role
        ));
    }
    decision
}

fn escalation(policy: &PolicySet, id: &str) -> Option<Risk> {
    policy
        .escalating
        .iter()
        .find(|(pattern, _)| pattern == id)
        .map(|&(_, risk)| risk)
}

/// What each command in the operation's shell arguments does, as [`evaluate`] finds it (for a
/// decision rebuilt from its audit row).
pub(crate) fn classify_commands(
    request: &Request,
    operation: &Operation,
    policy: &PolicySet,
) -> Vec<Classification> {
    let mut out = Vec::new();
    for name in &operation.shell_args {
        let Some(texts) = request
            .args
            .get(name)
            .and_then(|value| labelled(name, value))
        else {
            continue;
        };
        for (label, text) in texts {
            if text.len() > shell::MAX_LEN {
                continue;
            }
            let analysis = analysis::invocations(text);
            let may_name_secrets = policy.catalogue.may_name_secrets(text);
            out.extend(analysis.invocations().map(|invocation| {
                policy
                    .catalogue
                    .classify(&label, &invocation, may_name_secrets)
            }));
        }
    }
    out
}

/// Reasons to ask from what the commands do, most serious first, one per command and effect,
/// at most [`MAX_COMMAND_REASONS`] (then how many more).
fn what_commands_do(commands: &[Classification], operation: &Operation) -> Vec<String> {
    let mut found: Vec<(u8, String)> = Vec::new();
    for command in commands {
        if operation.effects == Effects::RequireApproval {
            for effect in &command.effects {
                // "`systemctl restart` restarts a unit (service disruption)"; a path's effect
                // already names its kind: "`tee` writes /etc/hosts (system configuration)".
                let why = if effect.why.ends_with(')') {
                    format!("`{}` {}", command.command, effect.why)
                } else {
                    format!(
                        "`{}` {} ({})",
                        command.command,
                        effect.why,
                        category_name(effect.category)
                    )
                };
                found.push((severity(effect.category), why));
            }
        }
        if command.unknown && operation.unknown_commands == UnknownCommands::RequireApproval {
            found.push((
                u8::MAX,
                format!("Countersign does not know what `{}` does", command.command),
            ));
        }
    }
    found.sort_by_key(|(severity, _)| *severity);
    let mut reasons: Vec<String> = Vec::new();
    for (_, why) in found {
        if !reasons.contains(&why) {
            reasons.push(why);
        }
    }
    if reasons.len() > MAX_COMMAND_REASONS {
        let more = reasons.len() - MAX_COMMAND_REASONS + 1;
        reasons.truncate(MAX_COMMAND_REASONS - 1);
        reasons.push(format!("and {more} more things the commands do"));
    }
    reasons
}

/// Reasons given for what commands do, at most.
const MAX_COMMAND_REASONS: usize = 6;

/// The order reasons are given in: RULE.md's order of seriousness.
fn severity(category: Category) -> u8 {
    match category {
        Category::Destructive => 0,
        Category::DeviceWrite => 1,
        Category::RemoteCodeExecution => 2,
        Category::PrivilegeEscalation => 3,
        Category::Secrets => 4,
        Category::SystemConfig => 5,
        Category::Firewall => 6,
        Category::NetworkExposure => 7,
        Category::ServiceDisruption => 8,
        Category::RemoteState => 9,
        Category::Packages => 10,
        Category::Permissions => 11,
        Category::ProcessKill => 12,
        Category::RunsUnreviewedCode => 13,
        Category::WritesFiles => 14,
        Category::ForceFlag => 15,
    }
}

#[derive(Default)]
struct Inspection {
    matches: Vec<PatternMatch>,
    commands: Vec<Classification>,
    warnings: Vec<Warning>,
    malformed: Vec<String>,
}

/// Run the operation's arguments through the patterns for their kind.
fn inspect(request: &Request, operation: &Operation, policy: &PolicySet) -> Inspection {
    let mut out = Inspection::default();
    let mut scratch = Scratch {
        joined: JOINED.try_with(Cell::take).unwrap_or_default(),
        flags: InvocationFlags::default(),
    };
    for name in &operation.shell_args {
        let Some(value) = request.args.get(name) else {
            continue;
        };
        match labelled(name, value) {
            Some(texts) => {
                for (label, text) in texts {
                    if text.len() > shell::MAX_LEN {
                        out.malformed.push(format!(
                            "argument `{label}` is longer than {} MiB",
                            shell::MAX_LEN >> 20
                        ));
                        continue;
                    }
                    let analysis = analysis::invocations(text);
                    out.warnings.extend(analysis.warnings().iter().copied());
                    out.commands.reserve(analysis.invocations().len());
                    let may_name_secrets = policy.catalogue.may_name_secrets(text);
                    for invocation in analysis.invocations() {
                        out.commands.push(policy.catalogue.classify(
                            &label,
                            &invocation,
                            may_name_secrets,
                        ));
                        match_invocation(
                            policy,
                            &label,
                            text,
                            &invocation,
                            &mut scratch,
                            &mut out.matches,
                        );
                    }
                }
            }
            None => out.malformed.push(format!(
                "argument `{name}` must be a string or a list of strings"
            )),
        }
    }
    // Kept for the thread's next evaluation, unless one very long argument made it large.
    if scratch.joined.capacity() <= shell::KEEP_AT_MOST {
        let _ = JOINED.try_with(|slot| slot.set(scratch.joined));
    }
    for name in &operation.path_args {
        let Some(value) = request.args.get(name) else {
            continue;
        };
        match labelled(name, value) {
            Some(texts) => {
                for (label, text) in texts {
                    for index in policy.path_set.matches(text).iter() {
                        if let Some(pattern) = policy
                            .path_owner
                            .get(index)
                            .and_then(|&i| policy.patterns.get(i))
                        {
                            push_match(&mut out.matches, pattern, &label, text, 0..text.len());
                        }
                    }
                }
            }
            None => out
                .malformed
                .push(format!("argument `{name}` must be a path string")),
        }
    }
    for name in &operation.flag_args {
        let Some(value) = request.args.get(name) else {
            continue;
        };
        if truthy(value) {
            let shown = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            for index in policy.flag_set.matches(name).iter() {
                if let Some(pattern) = policy
                    .flag_owner
                    .get(index)
                    .and_then(|&i| policy.patterns.get(i))
                {
                    push_match(&mut out.matches, pattern, name, &shown, 0..shown.len());
                }
            }
        }
    }
    out
}

/// The texts of an argument that is a string, a list of strings or null, each with the name
/// it is reported under: `command`, or `command[1]` inside a list. `None` for any other value.
/// A single string (the usual case) costs no allocation.
fn labelled<'v>(
    name: &'v str,
    value: &'v Value,
) -> Option<impl Iterator<Item = (Cow<'v, str>, &'v str)> + 'v> {
    let items: &[Value] = match value {
        Value::String(_) | Value::Null => std::slice::from_ref(value),
        Value::Array(items) if items.iter().all(Value::is_string) => items,
        _ => return None,
    };
    let listed = value.is_array();
    Some(items.iter().enumerate().filter_map(move |(i, item)| {
        let label = if listed {
            Cow::Owned(format!("{name}[{i}]"))
        } else {
            Cow::Borrowed(name)
        };
        item.as_str().map(|text| (label, text))
    }))
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "" | "false" | "0" | "no" | "off"
        ),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Null => false,
    }
}

thread_local! {
    /// [`Scratch::joined`] between evaluations on a thread, so that joining arguments
    /// allocates only while it is longer than ever before.
    static JOINED: Cell<String> = const { Cell::new(String::new()) };
}

/// What matching works out per invocation, kept between invocations for its allocations.
struct Scratch {
    /// The invocation's arguments joined by spaces (what `args` regexes see).
    joined: String,
    flags: InvocationFlags,
}

fn match_invocation(
    policy: &PolicySet,
    argument: &str,
    text: &str,
    invocation: &Invocation<'_>,
    scratch: &mut Scratch,
    out: &mut Vec<PatternMatch>,
) {
    // Only the patterns that name this command (or any command) can match it. The by-name
    // lists already hold the `*` patterns; a prefix (`mkfs.*`) match is rare and merged here.
    let name = invocation.name();
    let named: &[usize] = policy
        .by_command
        .get(name)
        .unwrap_or(&policy.any_command)
        .for_invocation(
            !invocation.redirects().is_empty(),
            invocation.args().iter().any(|word| word.dashed),
        );
    let mut merged: Vec<usize> = Vec::new();
    let mut prefixed = policy
        .by_prefix
        .iter()
        .filter(|(prefix, _)| name.starts_with(prefix.as_str()))
        .map(|(_, i)| *i)
        .peekable();
    let candidates: &[usize] = if prefixed.peek().is_some() {
        merged.extend(named.iter().copied().chain(prefixed));
        merged.sort_unstable();
        merged.dedup();
        &merged
    } else {
        named
    };
    // The flags and the joined arguments are worked out once, when the first candidate that
    // needs them gets that far; each candidate runs only its own regex, cheap checks first.
    let mut flags_read = false;
    let mut joined = false;
    for &index in candidates {
        let Some(pattern) = policy.patterns.get(index) else {
            continue;
        };
        if pattern.redirect_re.is_some() && invocation.redirects().is_empty() {
            continue;
        }
        if let Some(rule) = &pattern.flag_rule {
            if !flags_read {
                scratch.flags.read(invocation, policy);
                flags_read = true;
            }
            if !rule.matches(&scratch.flags) {
                continue;
            }
        }
        if !pattern.piped_from.is_empty()
            && !invocation
                .upstream()
                .any(|up| command_matches(&pattern.piped_from, up))
        {
            continue;
        }
        if let Some(re) = &pattern.args_re {
            if !joined {
                invocation.write_args_text(&mut scratch.joined);
                joined = true;
            }
            if !re.is_match(&scratch.joined) {
                continue;
            }
        }
        let mut span = invocation.span();
        if let Some(re) = &pattern.redirect_re {
            match invocation
                .redirects()
                .iter()
                .find(|r| re.is_match(invocation.text(&r.target)))
            {
                Some(redirect) => {
                    let target = redirect.target.span();
                    span = span.start.min(target.start)..span.end.max(target.end)
                }
                None => continue,
            }
        }
        push_match(out, pattern, argument, text, span);
    }
}

fn push_match(
    out: &mut Vec<PatternMatch>,
    pattern: &Pattern,
    argument: &str,
    text: &str,
    span: Range<usize>,
) {
    let span = span.start.min(text.len())..span.end.min(text.len());
    let snippet = text.get(span.clone()).unwrap_or_default().to_string();
    if out
        .iter()
        .any(|m| m.id == pattern.id && m.argument == argument && m.span == span)
    {
        return;
    }
    out.push(PatternMatch {
        id: pattern.id.clone(),
        category: pattern.category,
        description: pattern.description.clone(),
        argument: argument.to_string(),
        span,
        text: snippet,
    });
}

/// `rm`, `mkfs.*` (prefix) and `*` (anything).
fn command_matches(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => name.starts_with(prefix),
        None => p == name,
    })
}
