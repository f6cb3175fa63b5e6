//! What the server sends the pages: the data each page shows and the queries it asks with.
//! Plain serde structs, shared by the server's portal service (which fills them) and the pages
//! (which draw them), so neither has to know the other.

use enforcer::{JobStatus, JobSummary, Verdict};
use serde::{Deserialize, Serialize};

// The approvals pages.
/// One request waiting for approval, as the list shows it: the job's summary and where it
/// stands now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingApproval {
    #[serde(flatten)]
    pub job: JobSummary,
    pub age_secs: i64,
    /// Seconds until the request expires (negative: overdue, about to be expired).
    pub expires_in_secs: Option<i64>,
    pub approvals: u32,
}

/// A run of argument text, marked when a dangerous pattern matched it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub text: String,
    /// The pattern id that matched this text.
    pub pattern: Option<String>,
}

/// One argument of the call, split into segments for highlighting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgumentView {
    pub name: String,
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatternView {
    pub id: String,
    pub category: String,
    pub description: String,
    pub argument: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRow {
    pub approver: String,
    pub verdict: Verdict,
    pub reason: Option<String>,
    pub at: String,
}

/// Everything an approver needs to decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalView {
    pub summary: PendingApproval,
    pub status: JobStatus,
    pub arguments: Vec<ArgumentView>,
    pub patterns: Vec<PatternView>,
    /// What each command in the call does.
    #[serde(default)]
    pub commands: Vec<CommandView>,
    pub reasons: Vec<String>,
    pub required_capabilities: Vec<String>,
    pub viewer_capabilities: Vec<String>,
    pub votes: Vec<VoteRow>,
    /// Whether the signed-in person may vote now; if not, why.
    pub may_vote: bool,
    pub why_not: Vec<String>,
    /// Recent decisions on the same tool and operation (for context).
    pub similar: Vec<SimilarRow>,
    /// For an approver who approved it, once it is approved: remembering the approval.
    #[serde(default)]
    pub remember: Option<RememberOffer>,
}

/// What the approval page offers the approver who approved a request: remembering it for the
/// next calls like it (a standing grant).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RememberOffer {
    /// Why it cannot be remembered (CRITICAL, an effect never remembered), when it cannot.
    pub refusal: Option<String>,
    /// What may be generalised: (field, words for people): `command[2]`, "any word in place of
    /// `nginx`".
    pub choices: Vec<(String, String)>,
    /// The request's target, the grant's by default.
    pub target: Option<String>,
    pub requester: String,
    /// Whether the viewer already remembered it (a grant waiting for a second approver, or
    /// standing).
    pub remembered: Option<String>,
}

/// One standing grant on the Grants page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRow {
    pub id: String,
    pub tool: String,
    pub operation: String,
    /// What it covers, in words: "this exact call" or the shape (`systemctl restart *`).
    pub covers: String,
    pub target: Option<String>,
    /// "alice", or "anyone with role ops".
    pub subject: String,
    /// standing, spent, expired, revoked, or waiting for a second approver.
    pub state: String,
    pub uses: i32,
    pub max_uses: Option<i32>,
    pub last_used_at: Option<String>,
    pub created_at: String,
    pub expires_at: String,
    pub approvers: Vec<String>,
    pub job_id: String,
    pub revoked_by: Option<String>,
    /// What it covers, as the enforcer reads it (`enforcer::grant::GrantScope` as JSON): the
    /// policies page's simulator checks calls against it in the browser.
    #[serde(default)]
    pub scope: String,
}

/// The Grants page: every grant, newest first, and whether the viewer may revoke.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantList {
    pub rows: Vec<GrantRow>,
    pub may_revoke: bool,
}

/// What one command in the call does, as the command catalogue tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandView {
    pub argument: String,
    /// The catalogue's name for it: `systemctl restart`.
    pub command: String,
    /// The invocation as written in the argument.
    pub text: String,
    pub effects: Vec<EffectView>,
    /// Paths it writes or deletes only under the scratch paths.
    #[serde(default)]
    pub scratch: Vec<String>,
    /// Countersign does not know what it does.
    pub unknown: bool,
    /// What decided: the catalogue entry, a verb, a redirection.
    pub decided_by: String,
}

/// One effect of a command: its category and the words that explain it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectView {
    pub category: String,
    pub why: String,
}

impl CommandView {
    /// The decision's classifications, with the text of each invocation from the call's
    /// arguments.
    pub fn of(
        commands: &[enforcer::Classification],
        args: &serde_json::Map<String, serde_json::Value>,
    ) -> Vec<CommandView> {
        commands
            .iter()
            .map(|c| {
                let value = match c
                    .argument
                    .strip_suffix(']')
                    .and_then(|a| a.rsplit_once('['))
                {
                    Some((name, index)) => index
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| args.get(name).and_then(|v| v.get(i))),
                    None => args.get(&c.argument),
                };
                let text = value
                    .and_then(|v| v.as_str())
                    .and_then(|t| t.get(c.span.clone()))
                    .unwrap_or(c.command.as_str())
                    .to_string();
                CommandView {
                    argument: c.argument.clone(),
                    command: c.command.clone(),
                    text,
                    effects: c
                        .effects
                        .iter()
                        .map(|e| EffectView {
                            category: e.category.as_str().to_string(),
                            why: e.why.clone(),
                        })
                        .collect(),
                    scratch: c.scratch.clone(),
                    unknown: c.unknown,
                    decided_by: c.decided_by.clone(),
                }
            })
            .collect()
    }
}

/// A recent decision on the same tool and operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimilarRow {
    pub seq: i64,
    pub at: String,
    pub caller: String,
    pub action: String,
    pub risk: String,
    pub reason: String,
}

// The audit explorer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub caller: Option<String>,
    pub tool: Option<String>,
    pub operation: Option<String>,
    pub action: Option<String>,
    pub risk: Option<String>,
    pub status: Option<String>,
    pub kind: Option<String>,
    pub before: Option<String>,
}

impl AuditQuery {
    /// The value of one field of the form, by its name.
    pub fn get(&self, name: &str) -> Option<&String> {
        match name {
            "from" => self.from.as_ref(),
            "to" => self.to.as_ref(),
            "caller" => self.caller.as_ref(),
            "tool" => self.tool.as_ref(),
            "operation" => self.operation.as_ref(),
            "action" => self.action.as_ref(),
            "risk" => self.risk.as_ref(),
            "status" => self.status.as_ref(),
            "kind" => self.kind.as_ref(),
            _ => self.before.as_ref(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRowView {
    pub seq: i64,
    pub id: String,
    pub at: String,
    pub kind: String,
    pub caller: String,
    pub tool: String,
    pub operation: String,
    pub action: String,
    pub risk: String,
    pub status: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditList {
    pub rows: Vec<AuditRowView>,
    /// The sequence number the next (older) page starts below.
    pub next: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRowDetail {
    pub row: AuditRowView,
    /// Every stored field, as name and text.
    pub fields: Vec<(String, String)>,
    pub prev_hash: String,
    pub row_hash: String,
    /// The row's hash recomputed from its content matches.
    pub hash_ok: bool,
    /// Its `prev_hash` is the previous row's hash (None: the previous row was purged).
    pub prev_ok: Option<bool>,
    /// The next row's `prev_hash` is this row's hash (None: this is the head).
    pub next_ok: Option<bool>,
}

/// A page of the audit trail. (JSON-encoded: the filters are one struct, which the URL-encoded
/// form would drop when every field is empty.)
// The dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentRow {
    pub seq: i64,
    pub at: String,
    pub kind: String,
    pub caller: String,
    pub tool: String,
    pub operation: String,
    pub action: String,
    pub risk: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DashboardView {
    /// The most urgent pending requests (at most 5) and how many wait per priority.
    pub pending: Vec<PendingApproval>,
    pub pending_total: usize,
    pub pending_by_priority: Vec<(String, i64)>,
    /// Jobs per status.
    pub queue: Vec<(String, i64)>,
    /// Decisions of the last 24 h: (action, risk, count).
    pub by_action_risk: Vec<(String, String, i64)>,
    /// Decisions per day, last 7 days: (day, action, count).
    pub daily: Vec<(String, String, i64)>,
    /// More than 5 denials in an hour: (caller, tool, operation, count).
    pub alerts: Vec<(String, String, String, i64)>,
    pub top_tools: Vec<(String, i64)>,
    /// The newest audit rows (auditors and admins only: the trail is theirs to read).
    pub recent: Option<Vec<RecentRow>>,
    /// Notification deliveries (auditors and admins only).
    pub deliveries: Option<DeliveryView>,
    /// What shadow mode let through that enforcing would have held, last 7 days (auditors and
    /// admins, when the policy has operations in shadow mode or the week has such calls).
    #[serde(default)]
    pub shadow: Option<ShadowView>,
}

/// What shadow mode allowed that enforcing would have held.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowView {
    pub days: u32,
    pub total: i64,
    /// (tool, operation, risk, count), most first.
    pub by_operation: Vec<(String, String, String, i64)>,
    /// (pattern, category, count), most first.
    pub by_pattern: Vec<(String, String, i64)>,
    /// (category, count), most first.
    pub by_category: Vec<(String, i64)>,
    pub without_pattern: i64,
    /// How many rows the pattern figures were read from.
    pub rows_read: i64,
    /// `tool.operation` of the operations in shadow mode now.
    pub in_shadow: Vec<String>,
}

/// How notifications are getting out: messages per sink and status, and the newest dead
/// letters (given up after the last retry, or refused by the receiver).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryView {
    /// (sink, status, count); status is pending, delivered or dead.
    pub counts: Vec<(String, String, i64)>,
    pub dead: Vec<DeadLetterRow>,
    /// Whether the signed-in person may put dead letters back in the queue (admins).
    pub may_retry: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterRow {
    pub id: i64,
    pub sink: String,
    pub event: String,
    pub job_id: Option<String>,
    pub attempts: i32,
    pub error: String,
    pub created_at: String,
}

/// Put a dead letter back in the queue (admins), then come back to the dashboard.
// The jobs pages.
/// What the job list asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobQuery {
    pub status: Option<String>,
    /// Keyset cursor from the previous page (`next`).
    pub before: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRow {
    #[serde(flatten)]
    pub job: JobSummary,
    pub status: JobStatus,
    pub age_secs: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobList {
    pub rows: Vec<JobRow>,
    /// The cursor for the next (older) page, when there is one.
    pub next: Option<String>,
    /// Jobs per status (all jobs, not only this page).
    pub counts: Vec<(String, i64)>,
}

/// One step of a job's life, from its audit rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at: String,
    pub kind: String,
    pub who: String,
    pub what: String,
    pub seq: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDetail {
    pub row: JobRow,
    pub arguments: String,
    pub timeline: Vec<TimelineEntry>,
    pub exit_code: Option<i64>,
    pub duration_ms: Option<i64>,
    pub output: Option<String>,
    pub output_digest: Option<String>,
    pub side_effects: Vec<String>,
    pub error: Option<String>,
}

/// A page of jobs. (Flat optional arguments: an empty nested struct would not survive the
// The policies page.
/// The active policy's text, as the server loaded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySource {
    pub file: String,
    pub source: String,
    pub hash: String,
}

/// The active policy.
// The reports page.
/// The report form's fields, as typed (the server checks them): the export API's own query.
pub use enforcer::wire::ReportQuery;

/// What an export of the chosen period and filters would hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportPreview {
    /// The period as the server understood it (RFC 3339, end exclusive).
    pub from: String,
    pub to: String,
    pub framework: Option<String>,
    pub total: i64,
    pub by_kind: Vec<(String, i64)>,
    pub by_action: Vec<(String, i64)>,
    /// Whether evidence bundles can be made (a signing key is configured).
    pub bundles: bool,
}

/// How far a download has got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportProgress {
    pub rows: u64,
    pub done: bool,
    pub failed: bool,
}
