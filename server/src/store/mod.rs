//! The store: the audit trail and the approval queue, on SQLite (embedded default) or
//! PostgreSQL (several replicas). [`Store`] is the contract; [`sqlite::SqliteStore`] and
//! [`postgres::PgStore`] implement it, and one conformance suite (`tests/store.rs`) runs against
//! both. Every job state change is one conditional UPDATE inside a transaction, so concurrent
//! approvals or claims have exactly one winner.

pub mod any;
pub mod audit;
pub mod db;
pub mod export_rows;
pub mod idempotency;
pub mod identity;
pub mod integrations;
pub mod it_mcp_import;
pub mod postgres;
pub mod sqlite;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use std::future::Future;
use thiserror::Error;

pub use any::AnyStore;
pub use audit::{AuditWriter, ChainReport};
pub use db::Database;
pub use enforcer::{Action, AuditAction, JobStatus, JobSummary, Priority, Risk};
pub use idempotency::{Claim, IdempotencyStore};
pub use identity::{Credentials, IdentityStore, NewUser, TokenRow, UserRow};
pub use integrations::{Attempt, IntegrationStore, NewOutboxMessage, OutboxRow, TransitionRow};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A state change that the job's current state does not allow (or a lost race).
    #[error("job {job_id} is {actual}; cannot {action}")]
    Conflict {
        job_id: String,
        actual: String,
        action: &'static str,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the audit writer has stopped")]
    WriterGone,
    /// A unique name is taken.
    #[error("`{0}` already exists")]
    Duplicate(String),
}

/// What kind of event an audit row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    Decision,
    Approval,
    Denial,
    Execution,
    Expiry,
    SignIn,
    SignOut,
    Export,
    Import,
    PortalAction,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        EventKind::Decision,
        EventKind::Approval,
        EventKind::Denial,
        EventKind::Execution,
        EventKind::Expiry,
        EventKind::SignIn,
        EventKind::SignOut,
        EventKind::Export,
        EventKind::Import,
        EventKind::PortalAction,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Decision => "decision",
            EventKind::Approval => "approval",
            EventKind::Denial => "denial",
            EventKind::Execution => "execution",
            EventKind::Expiry => "expiry",
            EventKind::SignIn => "sign-in",
            EventKind::SignOut => "sign-out",
            EventKind::Export => "export",
            EventKind::Import => "import",
            EventKind::PortalAction => "portal-action",
        }
    }

    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One audit event to append. `id` is kept when given (imports), else a new UUID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEvent {
    pub id: Option<String>,
    pub timestamp: DateTime<Utc>,
    pub kind: EventKind,
    pub caller_id: String,
    pub tool: String,
    pub operation: String,
    pub decision_action: String,
    pub decision_reason: String,
    pub risk_level: String,
    pub requires_approval: bool,
    pub execution_status: Option<String>,
    pub execution_duration_ms: Option<i64>,
    pub side_effects: Option<String>,
    pub error: Option<String>,
    pub approver: Option<String>,
    pub approved_at: Option<DateTime<Utc>>,
    pub context: String,
    pub decision: String,
    pub job_id: Option<String>,
    pub policy_hash: Option<String>,
    pub call_hash: Option<String>,
}

impl NewAuditEvent {
    /// An event with the required fields; the rest empty.
    pub fn new(
        kind: EventKind,
        caller_id: &str,
        tool: &str,
        operation: &str,
        action: AuditAction,
        reason: &str,
        risk: Risk,
    ) -> Self {
        NewAuditEvent {
            id: None,
            timestamp: Utc::now(),
            kind,
            caller_id: caller_id.to_string(),
            tool: tool.to_string(),
            operation: operation.to_string(),
            decision_action: action.as_str().to_string(),
            decision_reason: reason.to_string(),
            risk_level: risk.as_str().to_string(),
            requires_approval: action == AuditAction::RequireApproval,
            execution_status: None,
            execution_duration_ms: None,
            side_effects: None,
            error: None,
            approver: None,
            approved_at: None,
            context: "{}".to_string(),
            decision: "{}".to_string(),
            job_id: None,
            policy_hash: None,
            call_hash: None,
        }
    }

    /// The row's action, when it is one of today's words (see [`AuditAction`]).
    pub fn action(&self) -> Option<AuditAction> {
        AuditAction::parse(&self.decision_action)
    }

    /// The row's risk level, when it is one of IT-MCP's four.
    pub fn risk(&self) -> Option<Risk> {
        Risk::parse(&self.risk_level)
    }
}

/// A stored audit row: the event, its place in the chain and its hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: String,
    pub seq: i64,
    #[serde(flatten)]
    pub event: NewAuditEvent,
    pub prev_hash: String,
    pub row_hash: String,
}

/// What a writer is told once its row is durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReceipt {
    pub id: String,
    pub seq: i64,
    pub row_hash: String,
}

/// A job to queue for approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    pub job_id: Option<String>,
    pub tool_name: String,
    pub operation: String,
    pub params: String,
    pub requested_capabilities: Vec<String>,
    pub target: Option<String>,
    pub target_agent_id: Option<String>,
    pub priority: Priority,
    pub requester: String,
    pub requester_reason: Option<String>,
    pub risk: Risk,
    pub call_hash: String,
    pub policy_hash: Option<String>,
    pub approvals_required: i32,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// How long an approved job may wait to be executed.
    pub approval_window_secs: i64,
    pub max_retries: i32,
    pub decision_audit_id: Option<String>,
    /// Who submitted it through the API (a service acting for `requester`, or the requester).
    pub submitted_by: Option<String>,
}

/// A kept policy's name and TOML text (see [`Store::policy_version`]).
pub type KeptPolicy = (Option<String>, Option<String>);

/// What the audit explorer filters on; every field narrows (empty: no condition).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub caller_id: Option<String>,
    pub tool: Option<String>,
    pub operation: Option<String>,
    pub action: Option<AuditAction>,
    pub risk: Option<Risk>,
    pub execution_status: Option<String>,
    pub kind: Option<EventKind>,
    /// Keyset cursor: only rows with a smaller sequence number.
    pub before_seq: Option<i64>,
    /// Forward keyset cursor: only rows with a larger sequence number, and then oldest first
    /// (exports read the trail in chain order).
    pub after_seq: Option<i64>,
}

impl AuditFilter {
    /// The filter's equality conditions that are set, as (column, wanted value): one list for
    /// every query that applies them.
    pub fn equalities(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("caller_id", self.caller_id.as_deref()),
            ("tool", self.tool.as_deref()),
            ("operation", self.operation.as_deref()),
            ("decision_action", self.action.map(AuditAction::as_str)),
            ("risk_level", self.risk.map(Risk::as_str)),
            ("execution_status", self.execution_status.as_deref()),
            ("event_kind", self.kind.map(EventKind::as_str)),
        ]
        .into_iter()
        .filter_map(|(column, value)| value.map(|value| (column, value)))
    }

    /// Whether a row passes the filter: the same conditions the database applies.
    pub fn matches(&self, row: &AuditRecord) -> bool {
        let e = &row.event;
        let same = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        self.from.is_none_or(|from| e.timestamp >= from)
            && self.to.is_none_or(|to| e.timestamp < to)
            && same(&self.caller_id, &e.caller_id)
            && same(&self.tool, &e.tool)
            && same(&self.operation, &e.operation)
            && self.action.is_none_or(|a| e.decision_action == a.as_str())
            && self.risk.is_none_or(|r| e.risk_level == r.as_str())
            && self
                .execution_status
                .as_deref()
                .is_none_or(|w| e.execution_status.as_deref() == Some(w))
            && self.kind.is_none_or(|k| e.kind == k)
            && self.before_seq.is_none_or(|s| row.seq < s)
            && self.after_seq.is_none_or(|s| row.seq > s)
    }
}

/// What the dashboard shows, counted by the database.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DashboardStats {
    /// Decisions of the last 24 h: (action, risk, count).
    pub by_action_risk: Vec<(String, String, i64)>,
    /// Decisions per UTC day of the last 7 days: (YYYY-MM-DD, action, count).
    pub daily: Vec<(String, String, i64)>,
    /// The reference note's alert: more than 5 denials for one caller, tool and operation in the
    /// last hour: (caller, tool, operation, count).
    pub denial_alerts: Vec<(String, String, String, i64)>,
    /// Most asked-for tools of the last 24 h: (tool, count).
    pub top_tools: Vec<(String, i64)>,
    /// The newest audit rows.
    pub recent: Vec<AuditRecord>,
}

/// A standing grant as the store keeps it (`migrations/*/20261208000002_grants.sql`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    pub id: String,
    pub tool: String,
    pub operation: String,
    /// What it covers: the enforcer's `GrantScope` as JSON.
    pub scope: String,
    /// `person` or `group`.
    pub subject_kind: String,
    pub subject: String,
    /// The approved job it was made from.
    pub job_id: String,
    pub approvals_needed: i32,
    /// The approvers who remembered it, in order (the first made it).
    pub approvers: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub max_uses: Option<i32>,
    pub uses: i32,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
}

impl GrantRecord {
    /// Enough approvers have remembered it.
    pub fn active(&self) -> bool {
        i32::try_from(self.approvers.len()).unwrap_or(i32::MAX) >= self.approvals_needed
    }
}

/// What shadow mode let through that enforcing would have held ([`Store::shadow_decisions`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShadowDecisions {
    /// (tool, operation, risk, count), most first.
    pub counts: Vec<(String, String, String, i64)>,
    /// The newest rows: (tool, operation, stored decision), newest first.
    pub newest: Vec<(String, String, String)>,
}

/// Which jobs a page of the job list shows.

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub requester: Option<String>,
    /// Keyset cursor: only jobs strictly older than this (created_at, job_id).
    pub before: Option<(DateTime<Utc>, String)>,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub job_id: String,
    pub tool_name: String,
    pub operation: String,
    pub params: String,
    pub requested_capabilities: Vec<String>,
    pub target: Option<String>,
    pub target_agent_id: Option<String>,
    pub status: JobStatus,
    pub priority: Priority,
    pub requester: String,
    pub requester_reason: Option<String>,
    pub risk: Risk,
    pub call_hash: String,
    pub policy_hash: Option<String>,
    pub approvals_required: i32,
    pub approval_window_secs: i64,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub approved_at: Option<DateTime<Utc>>,
    pub approval_expires_at: Option<DateTime<Utc>>,
    pub picked_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub retry_count: i32,
    pub max_retries: i32,
    pub result: Option<String>,
    pub error: Option<String>,
    pub decision_audit_id: Option<String>,
    pub submitted_by: Option<String>,
}

impl From<&Job> for JobSummary {
    fn from(job: &Job) -> JobSummary {
        JobSummary {
            job_id: job.job_id.clone(),
            tool: job.tool_name.clone(),
            operation: job.operation.clone(),
            target: job.target.clone(),
            risk: job.risk,
            priority: job.priority,
            requester: job.requester.clone(),
            requester_reason: job.requester_reason.clone(),
            call_hash: job.call_hash.clone(),
            approvals_required: job.approvals_required,
            created_at: job.created_at,
            expires_at: job.expires_at,
        }
    }
}

/// One vote on a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRecord {
    pub job_id: String,
    pub approver: String,
    pub verdict: enforcer::Verdict,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// What the store decided about a vote, inside the vote's transaction: the job's approvals
/// after it (counted votes only) and the quorum. The vote's audit row is built from this, so the
/// trail says what was decided, not what was hoped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoteTally {
    /// Approving votes on the job, this one included.
    pub approvals: i64,
    /// Approvals the job needs.
    pub required: i32,
    /// The job's status after the vote (queued while the quorum is not reached).
    pub status: JobStatus,
}

/// Builds a vote's audit row from the job (as it was before the vote) and the store's tally;
/// `None` writes no row (tests and imports only: the approval service always writes one).
pub trait VoteAudit: FnOnce(&Job, &VoteTally) -> Option<NewAuditEvent> + Send {}
impl<F: FnOnce(&Job, &VoteTally) -> Option<NewAuditEvent> + Send> VoteAudit for F {}

/// A job brought in from another system, with the state it had there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportedJob {
    pub job: NewJob,
    pub status: JobStatus,
    pub picked_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub result: Option<String>,
    pub error: Option<String>,
    pub retry_count: i32,
}

/// How a finished job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOutcome {
    pub status: JobStatus,
    pub result: Option<String>,
    pub error: Option<String>,
}

/// An import under way: one transaction that rows and jobs are added to in batches, so a large
/// history is never held in memory at once and still lands all or nothing.
pub trait ImportSession: Send {
    /// Chain `events` after the rows already there and insert `jobs`; rows whose id and jobs
    /// whose job_id already exist are skipped. Returns (rows added, jobs added).
    fn add(
        &mut self,
        events: &[NewAuditEvent],
        jobs: &[ImportedJob],
    ) -> impl Future<Output = Result<(usize, usize), StoreError>> + Send;
    /// Make everything added durable.
    fn commit(self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Undo everything added (logged, not returned, if even that fails: the transaction is
    /// rolled back when its connection is next used).
    fn rollback(self) -> impl Future<Output = ()> + Send;
}

/// The store contract. Both databases implement it; `tests/store.rs` holds them to it.
pub trait Store: Clone + Send + Sync + 'static {
    /// An import's transaction ([`Store::begin_import`]).
    type Import: ImportSession;
    /// Append events to the hash chain in one transaction; returns once it is committed.
    fn append_audit(
        &self,
        events: &[NewAuditEvent],
    ) -> impl Future<Output = Result<Vec<AuditReceipt>, StoreError>> + Send {
        async move { Ok(self.append_audit_and_jobs(events, &[]).await?.0) }
    }
    /// Append events to the hash chain and queue `jobs` (each with its `queued` transition) in
    /// one transaction: a decision that needs approval is recorded together with its job, or not
    /// at all. Returns the receipts in `events`' order and the stored jobs in `jobs`' order.
    fn append_audit_and_jobs(
        &self,
        events: &[NewAuditEvent],
        jobs: &[NewJob],
    ) -> impl Future<Output = Result<(Vec<AuditReceipt>, Vec<Job>), StoreError>> + Send;
    /// Audit rows with `seq > after`, in chain order, at most `limit`.
    fn audit_page(
        &self,
        after: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<AuditRecord>, StoreError>> + Send;
    /// The chain head: last sequence number and its hash (0 and the zero hash when empty).
    fn audit_head(&self) -> impl Future<Output = Result<(i64, String), StoreError>> + Send;
    /// The policy kept under this hash in `policy_versions`: its name and text (both `None`
    /// when it is kept by hash alone), or `None` when no such policy is kept.
    fn policy_version(
        &self,
        hash: &str,
    ) -> impl Future<Output = Result<Option<KeptPolicy>, StoreError>> + Send;

    /// Keep a policy's name and text by its hash (idempotent; a row the audit writer made by
    /// hash alone gets them, a complete row is never changed).
    fn keep_policy(
        &self,
        hash: &str,
        name: &str,
        source: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn insert_job(&self, job: &NewJob) -> impl Future<Output = Result<Job, StoreError>> + Send;
    fn job(&self, job_id: &str) -> impl Future<Output = Result<Job, StoreError>> + Send;
    /// The newest open job of `requester`, submitted by the same caller `submitted_by`, for the
    /// call `call_hash`: the one a repeated call attaches to instead of asking again (another
    /// caller's request for the same person is never joined). `scope` says which jobs count:
    /// the MCP gateway's (`mcp:JOB_ID`) while queued, approved or being run (a repeated call
    /// collects an approved one), or the others while queued (pending); never one expired at
    /// `now` (not yet swept), which a new request replaces. It reads the caller's
    /// open jobs for the requester through their partial index (`command_queue_open_requests`);
    /// an index on the call hash was measured to cost the decision API about a tenth of its
    /// throughput, since every queued job would write to it at a random place (BENCHMARKS.md,
    /// "The MCP gateway").
    fn open_job_for_call(
        &self,
        requester: &str,
        submitted_by: &str,
        call_hash: &str,
        scope: OpenCallScope,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<Job>, StoreError>> + Send;
    /// The decisions shadow mode allowed although enforcing would have held them (`allow` with
    /// `requires_approval`) since `since`: per tool, operation and risk, how many (all of them),
    /// and the newest `limit` rows themselves (for their patterns), newest first.
    fn shadow_decisions(
        &self,
        since: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = Result<ShadowDecisions, StoreError>> + Send;
    /// Keep a new standing grant and its audit row, in one transaction.
    fn create_grant(
        &self,
        grant: &GrantRecord,
        audit: &NewAuditEvent,
    ) -> impl Future<Output = Result<GrantRecord, StoreError>> + Send;
    /// Add an approver to a grant not revoked that does not list them yet, ending it at
    /// `expires_at` if that is sooner, with its audit row, in one transaction
    /// ([`StoreError::Invalid`] otherwise).
    fn add_grant_approver(
        &self,
        id: &str,
        approver: &str,
        expires_at: DateTime<Utc>,
        audit: &NewAuditEvent,
    ) -> impl Future<Output = Result<GrantRecord, StoreError>> + Send;
    fn grant(&self, id: &str) -> impl Future<Output = Result<GrantRecord, StoreError>> + Send;
    /// The grants a call of `tool` and `operation` may use at `now`: not revoked, not expired,
    /// newest first (at most 100).
    fn grants_for(
        &self,
        tool: &str,
        operation: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<GrantRecord>, StoreError>> + Send;
    /// Every grant, newest first, at most `limit`.
    fn grants_page(
        &self,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<GrantRecord>, StoreError>> + Send;
    /// Spend one use of a grant, if it still stands at `now` (active, not revoked, not expired,
    /// uses left): one conditional update, so the last use is spent once. `false` when it no
    /// longer stands.
    fn spend_grant(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Revoke a grant not yet revoked, with its audit row, in one transaction.
    fn revoke_grant(
        &self,
        id: &str,
        by: &str,
        now: DateTime<Utc>,
        audit: &NewAuditEvent,
    ) -> impl Future<Output = Result<GrantRecord, StoreError>> + Send;
    /// How many requests `submitted_by` made for `requester` still wait for people (queued, and
    /// not expired at `now`).
    fn pending_requests(
        &self,
        submitted_by: &str,
        requester: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;
    /// Approved jobs of the MCP gateway (`mcp:JOB_ID`) that no call has collected since
    /// `approved_before`, never handed out before (no retries), and whose approval window is
    /// still open at `now`, oldest approval first, at most `limit`: the server's `mcp` executor
    /// runs them.
    fn unattended_gateway_jobs(
        &self,
        approved_before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Job>, StoreError>> + Send;
    fn votes(
        &self,
        job_id: &str,
    ) -> impl Future<Output = Result<Vec<VoteRecord>, StoreError>> + Send;
    /// Jobs newest first, optionally of one status and one requester, strictly before the
    /// keyset cursor `(created_at, job_id)`; at most `limit`.
    fn jobs_page(
        &self,
        filter: &JobFilter,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Job>, StoreError>> + Send;
    /// How many jobs are in each status.
    fn job_counts(&self) -> impl Future<Output = Result<Vec<(String, i64)>, StoreError>> + Send;
    /// A job's audit rows, in chain order (its timeline).
    /// The audit row of this kind with this id, if any (a row of another kind is not read).
    fn audit_row(
        &self,
        id: &str,
        kind: EventKind,
    ) -> impl Future<Output = Result<Option<AuditRecord>, StoreError>> + Send;
    fn audit_for_job(
        &self,
        job_id: &str,
    ) -> impl Future<Output = Result<Vec<AuditRecord>, StoreError>> + Send;
    /// Audit rows matching `filter`, newest first (by sequence number), at most `limit`; oldest
    /// first when the filter has a forward cursor (`after_seq`).
    fn audit_search(
        &self,
        filter: &AuditFilter,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<AuditRecord>, StoreError>> + Send;
    /// How many rows match `filter`, by event kind and decision action.
    fn audit_counts(
        &self,
        filter: &AuditFilter,
    ) -> impl Future<Output = Result<Vec<(String, String, i64)>, StoreError>> + Send;
    /// The dashboard's figures since `day_ago` (24 h) and `week_ago` (7 days).
    fn dashboard_stats(
        &self,
        day_ago: DateTime<Utc>,
        week_ago: DateTime<Utc>,
        hour_ago: DateTime<Utc>,
    ) -> impl Future<Output = Result<DashboardStats, StoreError>> + Send;
    /// Jobs waiting for approval, most urgent first, then oldest; at most `limit`.
    fn pending_jobs(&self, limit: i64)
        -> impl Future<Output = Result<Vec<Job>, StoreError>> + Send;
    /// Record a vote and, in the same transaction, move the job (a denial → denied; the
    /// approval that reaches the quorum → approved) and append the audit row `audit` builds from
    /// the tally: the vote counts only if its row is written, and the row states what was
    /// decided. Refuses a second vote by the same person and any vote on a job that is no longer
    /// queued (nothing is written then).
    fn vote(
        &self,
        vote: &VoteRecord,
        audit: impl VoteAudit,
    ) -> impl Future<Output = Result<(Job, VoteTally), StoreError>> + Send;
    /// Lease the oldest, most urgent approved job (for `agent_id`, or unassigned). The server's
    /// own executors claim as `executor:NAME` ([`SERVER_EXECUTOR_PREFIX`]) and the MCP gateway
    /// as `mcp:JOB_ID` ([`MCP_GATEWAY_PREFIX`]); they take only the jobs assigned to them, never
    /// unassigned ones (those are for agents).
    fn claim(
        &self,
        agent_id: &str,
        lease_secs: i64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<Job>, StoreError>> + Send;
    /// picked → executing, by the lease owner.
    fn start(
        &self,
        job_id: &str,
        agent_id: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Job, StoreError>> + Send;
    /// The lease owner is still at work: picked → executing (on the first call) and the lease
    /// runs `lease_secs` from now.
    fn extend_lease(
        &self,
        job_id: &str,
        agent_id: &str,
        lease_secs: i64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Job, StoreError>> + Send;
    /// picked | executing → completed | failed | timeout, by the lease owner.
    fn finish(
        &self,
        job_id: &str,
        agent_id: &str,
        outcome: &JobOutcome,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Job, StoreError>> + Send;
    /// queued | approved → cancelled, by the requester.
    fn cancel(
        &self,
        job_id: &str,
        requester: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Job, StoreError>> + Send;
    /// Expire queued jobs past their TTL and approved jobs past their window; returns them.
    fn expire_due(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<Job>, StoreError>> + Send;
    /// Return lapsed leases to approved (retry_count + 1) or fail them when retries run out.
    fn reap_leases(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<Job>, StoreError>> + Send;

    /// Record a keyed checkpoint of the chain.
    fn add_checkpoint(
        &self,
        checkpoint: &audit::Checkpoint,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Every checkpoint, oldest first.
    fn checkpoints(
        &self,
    ) -> impl Future<Output = Result<Vec<audit::Checkpoint>, StoreError>> + Send;
    /// The first sequence number whose timestamp is at or after `cutoff`.
    fn first_seq_since(
        &self,
        cutoff: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;
    /// Start an import of rows and jobs from another system (IT-MCP): one transaction that
    /// batches join ([`ImportSession::add`]), committed or rolled back as a whole. Rows whose id
    /// and jobs whose job_id already exist are skipped, so an import can be repeated safely.
    fn begin_import(&self) -> impl Future<Output = Result<Self::Import, StoreError>> + Send;
    /// Delete audit rows with `seq <= through`, at most `batch` rows; returns how many went.
    fn purge_batch(
        &self,
        through: i64,
        batch: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// Timestamps as the store keeps them: UTC, millisecond precision.
pub fn truncate(ts: DateTime<Utc>) -> DateTime<Utc> {
    ts.trunc_subsecs(3)
}

/// The text form (SQLite columns, hashes): `2026-11-25 11:42:07.123Z`. RFC 3339 with a space,
/// which sorts and compares correctly against SQLite's `datetime('now', ...)`.
pub fn format_ts(ts: DateTime<Utc>) -> String {
    truncate(ts)
        .to_rfc3339_opts(SecondsFormat::Millis, true)
        .replacen('T', " ", 1)
}

pub fn parse_ts(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(&text.replacen(' ', "T", 1))
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Invalid(format!("bad timestamp {text:?}: {e}")))
}

/// Lease owners (and job assignments) of the server's own executors start with this; agent ids
/// cannot contain `:`, so no agent can claim such a job. The claim query spells it too.
pub const SERVER_EXECUTOR_PREFIX: &str = "executor:";
/// The MCP gateway runs the jobs it asked for itself: each is assigned to `mcp:JOB_ID`, which
/// only the gateway claims (and which never takes an unassigned job).
pub const MCP_GATEWAY_PREFIX: &str = "mcp:";

/// Which open jobs a repeated call may join ([`Store::open_job_for_call`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenCallScope {
    /// The MCP gateway's jobs, queued, approved or being run.
    Gateway,
    /// Every other job, while it waits for people (queued).
    Pending,
}

/// The zero hash that precedes the first row of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The `audit_hourly` bucket of a time: `YYYY-MM-DD HH` in UTC.
pub(crate) fn hour_bucket(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H").to_string()
}

/// The start of the hour after `at`.
pub(crate) fn next_hour(at: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::{Duration, Timelike};
    let start = at
        .with_nanosecond(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_minute(0))
        .unwrap_or(at);
    start + Duration::hours(1)
}

/// Decision counts (hour, action, risk, tool, n) of the last day and week, summarised as the
/// dashboard shows them: by action × risk (day), by UTC day × action (week), top five tools (day).
pub(crate) type DecisionSummary = (
    Vec<(String, String, i64)>,
    Vec<(String, String, i64)>,
    Vec<(String, i64)>,
);

pub(crate) fn summarise_decisions(
    day: &[(String, String, String, String, i64)],
    week: &[(String, String, String, String, i64)],
) -> DecisionSummary {
    use std::collections::BTreeMap;
    let mut by_action_risk: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    let mut tools: BTreeMap<&str, i64> = BTreeMap::new();
    for (_, action, risk, tool, n) in day {
        *by_action_risk.entry((action, risk)).or_default() += n;
        *tools.entry(tool).or_default() += n;
    }
    let mut daily: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for (hour, action, _, _, n) in week {
        *daily
            .entry((hour.get(..10).unwrap_or(hour), action))
            .or_default() += n;
    }
    let mut top_tools: Vec<(String, i64)> = tools
        .into_iter()
        .map(|(tool, n)| (tool.to_string(), n))
        .collect();
    top_tools.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top_tools.truncate(5);
    (
        by_action_risk
            .into_iter()
            .map(|((a, r), n)| (a.to_string(), r.to_string(), n))
            .collect(),
        daily
            .into_iter()
            .map(|((d, a), n)| (d.to_string(), a.to_string(), n))
            .collect(),
        top_tools,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_and_sort_against_sqlite_datetime() {
        let ts = parse_ts("2026-11-25 11:42:07.123Z").expect("parses");
        assert_eq!(format_ts(ts), "2026-11-25 11:42:07.123Z");
        // SQLite's datetime() gives '2026-11-25 11:42:07'; a later instant must sort after it.
        assert!(format_ts(ts).as_str() > "2026-11-25 11:42:07");
        assert!(format_ts(ts).as_str() < "2026-11-25 11:42:08");
    }

    #[test]
    fn transitions() {
        use JobStatus::*;
        assert!(
            Queued.can_become(Approved)
                && Approved.can_become(Picked)
                && Picked.can_become(Executing)
        );
        assert!(Executing.can_become(Completed) && Queued.can_become(Denied));
        assert!(
            !Denied.can_become(Approved)
                && !Completed.can_become(Executing)
                && !Queued.can_become(Picked)
        );
        assert!(JobStatus::ALL
            .iter()
            .all(|s| JobStatus::parse(s.as_str()) == Some(*s)));
    }
}
