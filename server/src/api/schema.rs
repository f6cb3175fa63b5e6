//! The API's JSON shapes as types: what handlers read and write, and what the OpenAPI document
//! ([`super::openapi`]) describes.

use crate::store::{Action, JobStatus, JobSummary, Risk};
use chrono::{DateTime, Utc};
use enforcer::Verdict;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// Every error: a stable code, a sentence, and the offending field for bad input.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable (`invalid_json`, `unknown_field`, `rate_limited`, ...).
    pub error: String,
    pub message: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// `deny` when a decision could not be made or recorded: the call must not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// A decision request. Unknown fields are refused.
#[allow(dead_code)] // Read field by field by `enforcer::wire::parse_decision`; this type documents the shape.
#[derive(ToSchema)]
pub struct DecisionRequest {
    /// IT-MCP tool, e.g. `ssh-exec`.
    pub tool: String,
    /// Operation of the tool, e.g. `executeCommand`.
    pub operation: String,
    /// The call's arguments (an object).
    #[schema(value_type = Object)]
    pub args: Value,
    /// The host or system the call acts on.
    pub target: Option<String>,
    /// Why the assistant wants to do this (shown to approvers).
    pub reason: Option<String>,
    /// The person an AI assistant acts for (delegating callers only).
    pub on_behalf_of: Option<String>,
    /// The assistant's session id, kept with the audit row.
    pub session: Option<String>,
}

/// The enforcer's answer, recorded before it is given.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionAnswer {
    pub action: Action,
    pub risk: Risk,
    pub reasons: Vec<String>,
    /// The complete decision: matched patterns, capabilities, call hash, policy hash.
    #[schema(value_type = Object)]
    pub decision: Value,
    pub audit_id: String,
    pub audit_seq: i64,
    /// Who the call is for (the person, when a service acts for one).
    pub requester: String,
    /// Who asked.
    pub caller: String,
    /// For `require_approval`: the queued job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
    /// Long-poll this for the outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approvals_required: Option<i32>,
    /// `true` when the same caller's request for this call (same requester, same call hash)
    /// was already waiting: this call joined it (`job_id`) instead of queuing another.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub attached: bool,
    /// `true` when the operation is in shadow mode and enforcing would have held this call for
    /// approval: the call is allowed, and the audit row says it would have been held.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub would_block: bool,
    /// The standing grant that allowed this call in place of people's approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
}

/// One vote on a job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VoteView {
    pub approver: String,
    pub verdict: Verdict,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// A job as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    #[serde(flatten)]
    pub job: JobSummary,
    pub status: JobStatus,
    /// Whether the status can no longer change.
    #[serde(rename = "final")]
    pub is_final: bool,
    pub submitted_by: Option<String>,
    /// Every vote, approving or denying, oldest first.
    pub votes: Vec<VoteView>,
    /// The same list as `votes`, under its first name (kept so existing callers go on working;
    /// deprecated: read `votes`).
    #[schema(deprecated)]
    pub approvals: Vec<VoteView>,
    /// The reviewer's reason, when the job was denied (tell the person why).
    pub denial_reason: Option<String>,
    pub approved_at: Option<DateTime<Utc>>,
    pub approval_expires_at: Option<DateTime<Utc>>,
    pub picked_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// The run's report (JSON text: exit code, duration, output, digest, side effects).
    pub result: Option<String>,
    pub error: Option<String>,
    pub decision_audit_id: Option<String>,
}

/// A job leased to an agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimedJob {
    /// The job; check its `call_hash` against the arguments before running.
    #[serde(flatten)]
    pub job: JobSummary,
    #[schema(value_type = Object)]
    pub args: Value,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Heartbeat well within this.
    pub lease_secs: i64,
    /// How many times the job was handed out before.
    pub retry: i32,
    /// The policy's executor for the operation (argv template, timeout, env allow-list).
    #[schema(value_type = Option<Object>)]
    pub executor: Option<Value>,
}

/// A lease extended.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeaseAnswer {
    pub job_id: String,
    pub status: JobStatus,
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// A job ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobEnded {
    pub job_id: String,
    pub status: JobStatus,
}

/// Where a reported result was written in the audit trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditReceiptView {
    pub audit_id: String,
    pub audit_seq: i64,
}

/// The caller a token speaks for.
#[allow(dead_code)] // Documents `auth::ApiCaller`.
#[derive(ToSchema)]
pub struct CallerView {
    pub id: String,
    /// `api-token`, `service` or `person`.
    pub kind: String,
    pub roles: Vec<String>,
    pub capabilities: Vec<String>,
}
