//! Remembered approvals (standing grants): when approving a call, an approver may also approve
//! the next calls like it, for a while. This module says what a grant covers (this exact call,
//! or a shape of it with the arguments the approver chose to generalise), whether a call is
//! covered, for whom, until when and how often, and what may never be remembered.
//!
//! A grant never widens what the policy allows: it only stands in for the approval of a call the
//! enforcer asks about, and only while the call's fresh decision is one that may be remembered
//! (never CRITICAL, never interactive-only, never an effect in a `never_remember` category).
//! So a shape that would match `systemctl restart anything` still never lets `rm -rf` through.

use crate::decision::{Decision, Principal, Request};
use crate::policy::{Category, Operation, PolicySet};
use crate::shell;
use crate::Risk;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The longest a grant may last: 7 days (longer is refused, not shortened).
pub const MAX_TTL_SECS: u64 = 7 * 24 * 3_600;
/// How long a grant lasts when the approver does not say: 24 hours.
pub const DEFAULT_TTL_SECS: u64 = 24 * 3_600;

/// Which calls a grant covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Covers {
    /// This exact call: tool, operation, arguments and target (its call hash).
    Call { call_hash: String },
    /// Calls of this shape: every argument as given, except those generalised.
    Shape { args: BTreeMap<String, ArgShape> },
}

/// One argument of a shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "match", rename_all = "snake_case")]
pub enum ArgShape {
    /// Exactly this value.
    Exact { value: Value },
    /// Any value (never for a shell argument).
    Any,
    /// A shell argument: one plain command of exactly these words, where `None` is any plain
    /// word that is not a flag (`systemctl restart *`).
    Words { words: Vec<Option<String>> },
}

/// Who a grant is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Subject {
    /// One requester.
    Person(String),
    /// Every requester with this role.
    Group(String),
}

/// What a grant says about calls: the tool and operation, what it covers, on which target
/// (`None`: calls with no target; otherwise the exact name or a pattern where `*` stands for
/// any run of characters), and the most a covered call may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantScope {
    pub tool: String,
    pub operation: String,
    pub covers: Covers,
    pub target: Option<String>,
    /// The approved call's risk and effects: a covered call may not go beyond them.
    #[serde(default)]
    pub ceiling: Option<Ceiling>,
}

/// What the approved call did, as the enforcer judged it: a call a grant covers must not be
/// riskier, need more approvals, or have an effect (or dangerous pattern) of another category,
/// or run a command Countersign does not know where the approved one did not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ceiling {
    pub risk: Risk,
    pub approvals: u32,
    pub categories: std::collections::BTreeSet<Category>,
    pub unknown: bool,
}

impl Ceiling {
    /// The ceiling a decision sets.
    pub fn of(decision: &Decision) -> Ceiling {
        Ceiling {
            risk: decision.risk,
            approvals: decision.approvals_required,
            categories: categories_of(decision),
            unknown: decision.commands.iter().any(|c| c.unknown),
        }
    }

    /// Whether `decision` stays within it.
    pub fn holds(&self, decision: &Decision) -> bool {
        decision.risk <= self.risk
            && decision.approvals_required <= self.approvals
            && categories_of(decision).is_subset(&self.categories)
            && (self.unknown || !decision.commands.iter().any(|c| c.unknown))
    }
}

fn categories_of(decision: &Decision) -> std::collections::BTreeSet<Category> {
    categories_in_order(decision).collect()
}

/// The categories of a decision's dangerous patterns, then of its commands' effects.
fn categories_in_order(decision: &Decision) -> impl Iterator<Item = Category> + '_ {
    decision.matched_patterns.iter().map(|m| m.category).chain(
        decision
            .commands
            .iter()
            .flat_map(|c| c.effects.iter().map(|e| e.category)),
    )
}

/// A grant's standing at a moment: for whom, until when (Unix seconds), and its uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantTerms {
    pub subject: Subject,
    pub expires_at: i64,
    pub uses: u32,
    pub max_uses: Option<u32>,
    pub revoked: bool,
    /// Enough approvers have made it (a grant made from a job that needed two approvals needs
    /// both approvers to remember it).
    pub active: bool,
}

impl GrantTerms {
    /// Whether the grant stands at `now` (Unix seconds) for `principal`.
    pub fn stands_for(&self, principal: &Principal, now: i64) -> bool {
        let for_them = match &self.subject {
            Subject::Person(id) => *id == principal.id,
            Subject::Group(role) => principal.roles.contains(role),
        };
        for_them
            && self.active
            && !self.revoked
            && now < self.expires_at
            && self.max_uses.is_none_or(|max| self.uses < max)
    }
}

/// Why a decision may not be remembered, if it may not: a CRITICAL operation, an
/// interactive-only one, or an effect or pattern in a category the policy never remembers.
pub fn why_not_remembered(decision: &Decision, policy: &PolicySet) -> Option<String> {
    if decision.risk == Risk::Critical {
        return Some(
            "CRITICAL operations are never remembered: each one needs its approvals".into(),
        );
    }
    if decision.interactive_only {
        return Some("interactive-only operations are never remembered".into());
    }
    let never = &policy.approvals.never_remember;
    let found = categories_in_order(decision).find(|category| never.contains(category));
    found.map(|category| {
        format!(
            "{} effects are never remembered (approvals.never_remember)",
            crate::catalogue::category_name(category)
        )
    })
}

/// A refusal to make a shape, in words for the approver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError {
    /// The argument at fault (`command`, `command[2]`), if one is.
    pub field: Option<String>,
    pub message: String,
}

impl std::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// How many of a shell argument's words name the command as the catalogue knows it
/// (`systemctl restart` → 2, an unknown program → 1): they are never generalised. `None` when
/// the argument is not one command whose name and subcommands come first, word for word (a
/// wrapper such as `nohup`, an assignment, or an option before the subcommand): such a command
/// is never remembered as a shape.
fn command_words(
    request: &Request,
    operation: &Operation,
    policy: &PolicySet,
    arg: &str,
    words: &[String],
) -> Option<usize> {
    let classified = crate::decision::classify_commands(request, operation, policy);
    let mut ours = classified.iter().filter(|c| c.argument == arg);
    let (Some(only), None) = (ours.next(), ours.next()) else {
        return None;
    };
    let name: Vec<&str> = only.command.split_whitespace().collect();
    let fixed = name.len().max(1);
    (words.len() >= fixed
        && words.iter().zip(&name).all(|(word, part)| {
            word == part || (word.ends_with(&format!("/{part}")) && !part.contains('/'))
        }))
    .then_some(fixed)
}

/// The words of the call's shell arguments that a shape may generalise, as (field, word): the
/// arguments of a single plain command after its name and subcommands as the catalogue knows
/// them (`nginx` in `systemctl restart nginx` is `command[2]`), never a flag.
pub fn generalisable_words(
    request: &Request,
    operation: &Operation,
    policy: &PolicySet,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in &operation.shell_args {
        let Some(words) = request
            .args
            .get(name)
            .and_then(Value::as_str)
            .and_then(plain_words)
        else {
            continue;
        };
        let Some(fixed) = command_words(request, operation, policy, name, &words) else {
            continue;
        };
        for (i, word) in words.iter().enumerate().skip(fixed) {
            if !word.starts_with('-') {
                out.push((format!("{name}[{i}]"), word.clone()));
            }
        }
    }
    out
}

/// The shape of an approved call with the arguments in `generalise` made any: an argument's
/// name (`service`: any value; never a shell argument) or a word of a shell argument
/// (`command[2]`: any plain word in that place; never the command's name or subcommands as the
/// catalogue knows them, never a flag).
pub fn shape_of(
    request: &Request,
    operation: &Operation,
    policy: &PolicySet,
    generalise: &[String],
) -> Result<Covers, ShapeError> {
    let mut args = BTreeMap::new();
    for (name, value) in &request.args {
        let shell = operation.shell_args.contains(name);
        if !shell {
            let any = generalise.iter().any(|g| g == name);
            if any && (operation.path_args.contains(name) || operation.flag_args.contains(name)) {
                return Err(ShapeError {
                    field: Some(name.clone()),
                    message: format!(
                        "`{name}` is a path or a flag: paths and flags are never generalised"
                    ),
                });
            }
            args.insert(
                name.clone(),
                if any {
                    ArgShape::Any
                } else {
                    ArgShape::Exact {
                        value: value.clone(),
                    }
                },
            );
            continue;
        }
        let Some(text) = value.as_str() else {
            return Err(ShapeError {
                field: Some(name.clone()),
                message: format!("`{name}` is not one command: remember this exact call instead"),
            });
        };
        let Some(words) = plain_words(text) else {
            return Err(ShapeError {
                field: Some(name.clone()),
                message: format!(
                    "`{name}` is not one plain command (pipes, redirections, substitutions, \
                     quoting or variables): remember this exact call instead"
                ),
            });
        };
        let mut shaped: Vec<Option<String>> = words.iter().map(|w| Some(w.clone())).collect();
        let fixed = command_words(request, operation, policy, name, &words);
        for g in generalise {
            if g == name {
                return Err(ShapeError {
                    field: Some(name.clone()),
                    message: format!(
                        "a shell argument cannot match anything: generalise one of its words, \
                         such as `{name}[2]`"
                    ),
                });
            }
            let Some(index) = g
                .strip_prefix(name.as_str())
                .and_then(|rest| rest.strip_prefix('['))
                .and_then(|rest| rest.strip_suffix(']'))
            else {
                continue;
            };
            let index: usize = index.parse().map_err(|_| ShapeError {
                field: Some(g.clone()),
                message: format!("`{g}` does not name a word: use `{name}[N]`, N from 1"),
            })?;
            match words.get(index) {
                None => {
                    return Err(ShapeError {
                        field: Some(g.clone()),
                        message: format!("`{name}` has no word {index}"),
                    })
                }
                Some(_) if fixed.is_none() => {
                    return Err(ShapeError {
                        field: Some(g.clone()),
                        message: "only one command whose name and subcommands come first (no \
                                  wrapper, assignment or option before them) is remembered as a \
                                  shape: remember this exact call instead"
                            .into(),
                    })
                }
                Some(_) if index < fixed.unwrap_or(usize::MAX) => {
                    return Err(ShapeError {
                        field: Some(g.clone()),
                        message: format!(
                            "`{}` names the command: only its arguments are generalised",
                            words[..fixed.unwrap_or(0).min(words.len())].join(" ")
                        ),
                    })
                }
                Some(word) if word.starts_with('-') => {
                    return Err(ShapeError {
                        field: Some(g.clone()),
                        message: format!("`{word}` is a flag: flags are never generalised"),
                    })
                }
                Some(_) => shaped[index] = None,
            }
        }
        args.insert(name.clone(), ArgShape::Words { words: shaped });
    }
    for g in generalise {
        let known = request.args.contains_key(g)
            || operation
                .shell_args
                .iter()
                .any(|s| g.starts_with(&format!("{s}[")) && request.args.contains_key(s));
        if !known {
            return Err(ShapeError {
                field: Some(g.clone()),
                message: format!("the call has no argument `{g}`"),
            });
        }
    }
    Ok(Covers::Shape { args })
}

/// Whether a standing grant of `scope` allows a call the enforcer holds, as `decision` says:
/// the decision may be remembered, the scope covers the call, and the call stays within the
/// approved call's ceiling (a scope without one allows nothing). Who the grant is for, its time
/// and uses are [`GrantTerms`]'.
pub fn allows(
    scope: &GrantScope,
    request: &Request,
    decision: &Decision,
    operation: &Operation,
    policy: &PolicySet,
) -> bool {
    decision.action == crate::Action::RequireApproval
        && why_not_remembered(decision, policy).is_none()
        && covers(scope, request, &decision.call_hash, operation)
        && scope.ceiling.as_ref().is_some_and(|c| c.holds(decision))
}

/// Whether `scope` covers `request` (whose call hash is `call_hash`) of `operation`.
pub fn covers(
    scope: &GrantScope,
    request: &Request,
    call_hash: &str,
    operation: &Operation,
) -> bool {
    if scope.tool != request.tool || scope.operation != request.operation {
        return false;
    }
    let target_ok = match (&scope.target, &request.target) {
        (None, None) => true,
        (Some(pattern), Some(target)) => glob(pattern, target),
        _ => false,
    };
    if !target_ok {
        return false;
    }
    match &scope.covers {
        Covers::Call { call_hash: hash } => hash == call_hash,
        Covers::Shape { args } => {
            args.len() == request.args.len()
                && request.args.iter().all(|(name, value)| {
                    args.get(name).is_some_and(|shape| {
                        arg_fits(
                            shape,
                            value,
                            operation.shell_args.contains(name),
                            operation.path_args.contains(name)
                                || operation.flag_args.contains(name),
                        )
                    })
                })
        }
    }
}

fn arg_fits(shape: &ArgShape, value: &Value, shell: bool, path_or_flag: bool) -> bool {
    match shape {
        ArgShape::Exact { value: want } => want == value,
        ArgShape::Any => !shell && !path_or_flag,
        ArgShape::Words { words } => {
            let Some(found) = value.as_str().and_then(plain_words) else {
                return false;
            };
            found.len() == words.len()
                && words.iter().zip(&found).all(|(want, got)| match want {
                    Some(want) => want == got,
                    None => !got.starts_with('-'),
                })
        }
    }
}

/// The words of `text` when it is one plain command: no pipes, lists, redirections,
/// substitutions or warnings, and every word written plainly (no quoting, escapes, variables or
/// globs). Only such a command can be remembered as a shape.
pub fn plain_words(text: &str) -> Option<Vec<String>> {
    let script = shell::parse(text);
    let [command] = script.commands() else {
        return None;
    };
    if command.depth > 0 || !script.redirects(command).is_empty() || !script.warnings().is_empty() {
        return None;
    }
    let words = script.words(command);
    if words.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(words.len());
    for word in words {
        let raw = text.get(word.span())?;
        let plain = script.word_text(word);
        if raw != plain || !plain.bytes().all(is_plain_byte) {
            return None;
        }
        out.push(plain.to_string());
    }
    // Separators the parser takes (`;`, `&`, newlines) leave text outside the words.
    let rest: String = text
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>();
    let joined: String = out.concat();
    (rest == joined).then_some(out)
}

fn is_plain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b)
}

/// Whether a grant's target `pattern` covers `target`: `*` matches any run of characters,
/// everything else itself.
pub fn target_matches(pattern: &str, target: &str) -> bool {
    glob(pattern, target)
}

fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, rest) = (parts[0], &parts[1..]);
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let last = rest.len() - 1;
    for (i, part) in rest.iter().enumerate() {
        if i == last {
            return remaining.len() >= part.len() && remaining.ends_with(part);
        }
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Whether a category name is one a policy may list in `never_remember`.
pub fn category_of(name: &str) -> Option<Category> {
    serde_json::from_value(Value::String(name.to_string())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_runs_of_characters() {
        assert!(glob("web-*", "web-1"));
        assert!(glob("*", "anything"));
        assert!(glob("web-*.example.com", "web-2.example.com"));
        assert!(!glob("web-*", "db-1"));
        assert!(!glob("web-*.example.com", "web-2.example.org"));
        assert!(glob("a*b*c", "aXbYc"));
        assert!(!glob("a*b*c", "aXc"));
        assert!(glob("exact", "exact") && !glob("exact", "exact2"));
    }

    #[test]
    fn only_one_plain_command_has_words() {
        assert_eq!(
            plain_words("systemctl restart nginx"),
            Some(vec!["systemctl".into(), "restart".into(), "nginx".into()])
        );
        for text in [
            "systemctl restart nginx; rm -rf /",
            "systemctl restart $(whoami)",
            "systemctl restart 'nginx'",
            "systemctl restart nginx > /etc/x",
            "systemctl restart $UNIT",
            "systemctl restart ngi*",
            "systemctl restart nginx | sh",
            "systemctl restart nginx && reboot",
            "systemctl restart nginx &",
            "systemctl restart \\nginx",
            "",
        ] {
            assert_eq!(plain_words(text), None, "{text}");
        }
    }
}
