//! Running what was allowed or approved, and hearing how it went.
//!
//! - Agents pull approved jobs: `POST /api/v1/agents/{agent_id}/claim` leases the next one (for
//!   that agent or any), `POST /api/v1/jobs/{id}/heartbeat` keeps the lease (and marks the job
//!   executing), `POST /api/v1/jobs/{id}/result` ends it. A lease that lapses returns the job per
//!   the store's retry rules (see `maintenance`). Only an agent's own identity does any of this:
//!   a caller with the `agent` role (`countersign token create --agent NAME`) acting as the agent
//!   it is named after. Anyone else is refused with 403, and the refusal is audited.
//! - Just before a job is handed out it is checked again ([`recheck`]): the approval window is
//!   open, the arguments still hash to the approved call, and the policy (if it changed) still
//!   permits it. A job that fails the check is not run: it ends failed, with the reason.
//! - Tool servers report how an allowed call went: `POST /api/v1/decisions/{audit_id}/result`,
//!   once per decision.
//!
//! Every step is written to the job and the audit trail.

use super::schema::{AuditReceiptView, ClaimedJob, JobEnded, LeaseAnswer};
use super::{idempotency, rate_limit, ApiError, BODY_LIMIT};
use crate::services::identity::api_tokens::AGENT_ROLE;
use crate::store::{
    EventKind, Job, JobOutcome, JobStatus, NewAuditEvent, Store, StoreError, SERVER_EXECUTOR_PREFIX,
};
use crate::web::auth::ApiCaller;
use crate::AppState;
use axum::{
    body::Body,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use chrono::{DateTime, Utc};
use enforcer::{Action, PolicySet, Principal, Request};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Jobs failing the re-check that one claim clears before giving up for now.
const MAX_SKIPS: usize = 16;
/// Output kept in the job's result; the rest is represented by its digest.
pub const OUTPUT_KEEP: usize = 64 * 1024;

/// Check an approved job again just before it runs. `Err` says why it must not.
pub fn recheck(policy: &PolicySet, job: &Job, now: DateTime<Utc>) -> Result<(), String> {
    if job.approval_expires_at.is_some_and(|t| t <= now) {
        return Err("the approval window has closed".into());
    }
    let args: Map<String, Value> = serde_json::from_str(&job.params)
        .map_err(|_| "the job's arguments are not a JSON object".to_string())?;
    let request = Request {
        tool: job.tool_name.clone(),
        operation: job.operation.clone(),
        args,
        target: job.target.clone(),
    };
    if enforcer::call_hash(&request) != job.call_hash {
        return Err("the job's arguments differ from the call that was approved".into());
    }
    if job.policy_hash.as_deref() != Some(policy.hash()) {
        // The policy changed since the decision: decide again with what was granted then.
        let principal = Principal {
            id: job.requester.clone(),
            roles: Default::default(),
            capabilities: job.requested_capabilities.iter().cloned().collect(),
        };
        let decision = enforcer::evaluate(&request, &principal, policy);
        match decision.action {
            Action::Deny => {
                return Err(format!(
                    "the policy changed and now denies this call: {}",
                    decision.reasons.join("; ")
                ))
            }
            Action::RequireApproval
                if i64::from(decision.approvals_required) > i64::from(job.approvals_required) =>
            {
                return Err(format!(
                    "the policy changed and now needs {} approvals",
                    decision.approvals_required
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

pub(crate) fn execution_event(job: &Job, actor: &str, status: &str, reason: &str) -> NewAuditEvent {
    let mut event = NewAuditEvent::new(
        EventKind::Execution,
        actor,
        &job.tool_name,
        &job.operation,
        "execute",
        reason,
        &job.risk,
    );
    event.execution_status = Some(status.to_string());
    event.job_id = Some(job.job_id.clone());
    event.call_hash = Some(job.call_hash.clone());
    event.policy_hash = job.policy_hash.clone();
    event
}

/// Write an execution step to the audit trail. A job step is already in the job's row, so a
/// failed audit write is logged loudly rather than undoing it.
pub(crate) async fn audit_step(state: &AppState, event: NewAuditEvent) {
    if let Some(status) = &event.execution_status {
        state.metrics.execution(status);
    }
    if let Err(error) = state.audit.append(event).await {
        tracing::error!(%error, "could not audit an execution step");
    }
}

/// Leases held by the server's own executors are never touched through the API (whatever a
/// caller's identity provider lets it be called).
fn refuse_server_owner(caller: &ApiCaller) -> Result<(), ApiError> {
    if caller.id.starts_with(SERVER_EXECUTOR_PREFIX) {
        return Err(ApiError::not_found());
    }
    Ok(())
}

/// Claims, heartbeats and results come only from an execution agent's own identity: the
/// `agent` role ([`AGENT_ROLE`]), acting as the agent it is named after (for claims, the agent in
/// the path). Anyone else gets 403, and the attempt is audited (the refusal stands whether or not
/// the row could be written).
async fn require_agent(
    state: &AppState,
    caller: &ApiCaller,
    agent_id: Option<&str>,
    what: &str,
    job_id: Option<&str>,
) -> Result<(), ApiError> {
    let is_agent = caller.roles.iter().any(|r| r == AGENT_ROLE);
    let same = agent_id.is_none_or(|id| id == caller.id);
    if is_agent && same {
        return Ok(());
    }
    let why = if is_agent {
        "an agent claims jobs as itself (its token's name)"
    } else {
        "only an execution agent's token (`countersign token create --agent NAME`) may do this"
    };
    let mut event = NewAuditEvent::new(
        EventKind::PortalAction,
        &caller.id,
        "countersign",
        "agent.refused",
        "deny",
        &format!("{what} refused: {why}"),
        "MEDIUM",
    );
    event.job_id = job_id.map(|id| id.chars().take(64).collect());
    event.context = json!({
        "attempt": what,
        "agent_id": agent_id.map(|id| id.chars().take(128).collect::<String>()),
        "caller_kind": caller.kind,
    })
    .to_string();
    if let Err(error) = state.audit.append(event).await {
        tracing::error!(%error, "could not audit a refused agent call");
    }
    let code = if is_agent {
        "not_this_agent"
    } else {
        "not_an_agent"
    };
    Err(ApiError::new(StatusCode::FORBIDDEN, code, why))
}

fn lease_error(error: StoreError, what: &'static str) -> ApiError {
    match error {
        StoreError::NotFound => ApiError::not_found(),
        StoreError::Conflict { actual, .. } => ApiError::new(
            StatusCode::CONFLICT,
            "lease_lost",
            format!("the job is {actual} and not leased to this agent"),
        ),
        other => ApiError::unavailable(what, &other),
    }
}

/// `POST /api/v1/agents/{agent_id}/claim?wait=N`: the next approved job for this agent, leased
/// to it, or 204 when there is none (after waiting up to N ≤ 60 seconds for one to be approved).
#[utoipa::path(
    post,
    path = "/api/v1/agents/{agent_id}/claim",
    tag = "agents",
    summary = "Lease the next approved job for this agent (or any agent)",
    description = "Call with the agent's own token (`countersign token create --agent NAME`: the `agent` role, named like the agent); any other caller gets 403. The job was checked again just before: approval window open, arguments unchanged, policy still permits it.",
    params(
        ("agent_id" = String, Path, description = "The agent's id (its token's name)"),
        ("wait" = Option<u64>, Query, description = "Seconds (≤ 60) to wait for a job to be approved"),
    ),
    responses(
        (status = 200, description = "A job, leased", body = super::schema::ClaimedJob),
        (status = 204, description = "Nothing to run"),
        (status = 400, description = "Bad agent id or `wait`", body = super::schema::ErrorBody),
        (status = 403, description = "Not this agent's token, or not an agent's", body = super::schema::ErrorBody),
        (status = 401, description = "No valid bearer token", body = super::schema::ErrorBody),
        (status = 503, description = "The store (or the identity provider) is unavailable; retry", body = super::schema::ErrorBody),
    )
)]
pub async fn claim(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(agent_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let result = async {
        rate_limit(&state, &caller)?;
        if !enforcer::executor::is_agent_id(&agent_id) {
            return Err(ApiError::bad_request(
                "invalid_value",
                "agent_id",
                "an agent id is 1 to 128 letters, digits, `-`, `_` or `.`",
            ));
        }
        require_agent(&state, &caller, Some(&agent_id), "claim", None).await?;
        let wait = match query.get("wait") {
            None => 0,
            Some(text) => text.parse::<u64>().map_err(|_| {
                ApiError::bad_request("invalid_value", "wait", "`wait` must be whole seconds")
            })?,
        }
        .min(super::jobs::MAX_WAIT_SECS);
        // Subscribe before looking, so an approval landing in between is not missed.
        let mut changes = state.job_events.subscribe();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait);
        loop {
            if let Some(response) = try_claim(&state, &agent_id).await? {
                return Ok(response);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(StatusCode::NO_CONTENT.into_response());
            }
            // Woken at once when a job is approved on this replica; other replicas' approvals
            // are found by looking again every second.
            let tick = (deadline - now).min(std::time::Duration::from_secs(1));
            tokio::select! {
                _ = changes.recv() => {}
                () = tokio::time::sleep(tick) => {}
            }
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Lease the next approved job for `owner` that passes the re-check, and audit the pick; jobs
/// that fail the re-check end failed (audited) and the next one is tried. Shared by agents'
/// claims and the server's own executors.
pub(crate) async fn lease_next(state: &AppState, owner: &str) -> Result<Option<Job>, StoreError> {
    for _ in 0..MAX_SKIPS {
        let now = Utc::now();
        let Some(job) = state.store.claim(owner, state.lease_secs, now).await? else {
            return Ok(None);
        };
        match recheck(&state.policy, &job, now) {
            Ok(()) => {
                audit_step(
                    state,
                    execution_event(&job, owner, "picked", &format!("picked by {owner}")),
                )
                .await;
                state.notify_job(&job);
                return Ok(Some(job));
            }
            Err(reason) => {
                let outcome = JobOutcome {
                    status: JobStatus::Failed,
                    result: None,
                    error: Some(format!("not run: {reason}")),
                };
                let ended = state
                    .store
                    .finish(&job.job_id, owner, &outcome, now)
                    .await?;
                let mut event = execution_event(
                    &ended,
                    crate::services::maintenance::SYSTEM_CALLER,
                    "failed",
                    &format!("not run: {reason}"),
                );
                event.decision_action = "deny".into();
                event.error = Some(reason);
                audit_step(state, event).await;
                state.notify_job(&ended);
            }
        }
    }
    Ok(None)
}

/// Lease the next job for an agent and describe it, with the executor that says how to run it.
async fn try_claim(state: &AppState, agent_id: &str) -> Result<Option<Response>, ApiError> {
    let job = lease_next(state, agent_id)
        .await
        .map_err(|e| ApiError::unavailable("no job could be claimed", &e))?;
    Ok(job.map(|job| {
        Json(ClaimedJob {
            args: serde_json::from_str::<Value>(&job.params).unwrap_or(Value::Null),
            executor: state
                .policy
                .executor_for(&job.tool_name, &job.operation)
                .and_then(|e| serde_json::to_value(e).ok()),
            job_id: job.job_id,
            tool: job.tool_name,
            operation: job.operation,
            target: job.target,
            risk: job.risk,
            requester: job.requester,
            call_hash: job.call_hash,
            lease_expires_at: job.lease_expires_at,
            lease_secs: state.lease_secs,
            retry: job.retry_count,
        })
        .into_response()
    }))
}

/// `POST /api/v1/jobs/{id}/heartbeat`: the agent is at work; the lease runs on.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/heartbeat",
    tag = "agents",
    summary = "Keep a leased job's lease (the first call marks it executing)",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "Lease extended", body = super::schema::LeaseAnswer),
        (status = 401, description = "No valid bearer token", body = super::schema::ErrorBody),
        (status = 403, description = "Not an execution agent's token", body = super::schema::ErrorBody),
        (status = 404, description = "Not leased to this agent", body = super::schema::ErrorBody),
        (status = 409, description = "The lease was lost", body = super::schema::ErrorBody),
        (status = 429, description = "Over the caller's rate (see Retry-After)", body = super::schema::ErrorBody),
        (status = 503, description = "The store is unavailable; retry", body = super::schema::ErrorBody),
    )
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(job_id): Path<String>,
) -> Response {
    let result = async {
        rate_limit(&state, &caller)?;
        refuse_server_owner(&caller)?;
        require_agent(&state, &caller, None, "heartbeat", Some(&job_id)).await?;
        let now = Utc::now();
        let before = state
            .store
            .job(&job_id)
            .await
            .map_err(|e| lease_error(e, "the job could not be read"))?;
        if before.lease_owner.as_deref() != Some(caller.id.as_str()) {
            return Err(ApiError::not_found());
        }
        let job = state
            .store
            .extend_lease(&job_id, &caller.id, state.lease_secs, now)
            .await
            .map_err(|e| lease_error(e, "the lease could not be extended"))?;
        if before.status == JobStatus::Picked {
            audit_step(
                &state,
                execution_event(
                    &job,
                    &caller.id,
                    "executing",
                    &format!("agent {} started it", caller.id),
                ),
            )
            .await;
            state.notify_job(&job);
        }
        Ok(Json(LeaseAnswer {
            status: job.status.as_str().to_string(),
            job_id: job.job_id,
            lease_expires_at: job.lease_expires_at,
        })
        .into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// How a run went, as an agent or a tool server reports it (and as the server's own executors
/// record it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunReport {
    /// `success`, `failure` or `timeout`.
    pub status: String,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// What the run printed (at most 64 KiB is kept).
    #[serde(default)]
    pub output: Option<String>,
    /// SHA-256 of the complete output.
    #[serde(default)]
    pub output_digest: Option<String>,
    /// The complete output's length, when more was printed than was kept.
    #[serde(default)]
    pub output_bytes: Option<u64>,
    /// What changed, like `service:nginx:restarted`, `package:openssl:upgraded`.
    #[serde(default)]
    pub side_effects: Vec<String>,
    #[serde(default)]
    pub error: Option<String>,
}

impl RunReport {
    pub fn job_status(&self) -> Option<JobStatus> {
        match self.status.as_str() {
            "success" => Some(JobStatus::Completed),
            "failure" => Some(JobStatus::Failed),
            "timeout" => Some(JobStatus::Timeout),
            _ => None,
        }
    }
}

async fn read_report(body: Body) -> Result<(RunReport, JobStatus, String), ApiError> {
    let bytes = axum::body::to_bytes(body, BODY_LIMIT + OUTPUT_KEEP)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the report is too large (keep output to 64 KiB and send its digest)",
            )
        })?;
    let report: RunReport = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("not a run report: {e}"),
        )
    })?;
    let status = report.job_status().ok_or_else(|| {
        ApiError::bad_request(
            "invalid_value",
            "status",
            "`status` must be success, failure or timeout",
        )
    })?;
    if report.side_effects.len() > 1_000 || report.side_effects.iter().any(|s| s.len() > 512) {
        return Err(ApiError::bad_request(
            "invalid_value",
            "side_effects",
            "at most 1000 side effects of at most 512 characters each",
        ));
    }
    let hash = enforcer::sha256_hex(&bytes);
    Ok((report, status, hash))
}

/// At most [`OUTPUT_KEEP`] bytes of `text`, cut at a character boundary.
pub(crate) fn cap_output(text: &str) -> String {
    let mut end = text.len().min(OUTPUT_KEEP);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

fn kept_output(output: Option<&str>) -> Option<String> {
    output.map(cap_output)
}

fn report_event(event: &mut NewAuditEvent, report: &RunReport) {
    event.execution_duration_ms = report.duration_ms.and_then(|d| i64::try_from(d).ok());
    event.side_effects = Some(json!(report.side_effects).to_string());
    event.error = report.error.clone();
}

/// End a leased job with a run's report: the job's row, then the audit trail, then waiters.
pub(crate) async fn record_result(
    state: &AppState,
    job_id: &str,
    owner: &str,
    report: &RunReport,
    status: JobStatus,
    reason: &str,
) -> Result<Job, StoreError> {
    let outcome = JobOutcome {
        status,
        result: Some(
            json!({
                "exit_code": report.exit_code,
                "duration_ms": report.duration_ms,
                "output": kept_output(report.output.as_deref()),
                "output_digest": report.output_digest,
                "output_bytes": report.output_bytes,
                "side_effects": report.side_effects,
            })
            .to_string(),
        ),
        error: report.error.clone(),
    };
    let job = state
        .store
        .finish(job_id, owner, &outcome, Utc::now())
        .await?;
    let mut event = execution_event(&job, owner, &report.status, reason);
    report_event(&mut event, report);
    event.context =
        json!({ "exit_code": report.exit_code, "output_digest": report.output_digest }).to_string();
    audit_step(state, event).await;
    state.notify_job(&job);
    Ok(job)
}

/// `POST /api/v1/jobs/{id}/result`: the agent holding the lease ends the job.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/result",
    tag = "agents",
    summary = "Report how a leased job ran; ends it",
    params(("id" = String, Path, description = "Job id")),
    request_body = RunReport,
    responses(
        (status = 200, description = "The job ended", body = super::schema::JobEnded),
        (status = 400, description = "Not a run report", body = super::schema::ErrorBody),
        (status = 401, description = "No valid bearer token", body = super::schema::ErrorBody),
        (status = 403, description = "Not an execution agent's token", body = super::schema::ErrorBody),
        (status = 404, description = "Not leased to this agent", body = super::schema::ErrorBody),
        (status = 409, description = "The lease was lost", body = super::schema::ErrorBody),
        (status = 413, description = "Report too large", body = super::schema::ErrorBody),
        (status = 429, description = "Over the caller's rate (see Retry-After)", body = super::schema::ErrorBody),
        (status = 503, description = "The store is unavailable; retry", body = super::schema::ErrorBody),
    )
)]
pub async fn job_result(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(job_id): Path<String>,
    body: Body,
) -> Response {
    let result = async {
        rate_limit(&state, &caller)?;
        refuse_server_owner(&caller)?;
        require_agent(&state, &caller, None, "result", Some(&job_id)).await?;
        let (report, status, _) = read_report(body).await?;
        // A job not leased to this agent is one it cannot see: 404, as everywhere else, and
        // nothing about its state.
        let leased = state
            .store
            .job(&job_id)
            .await
            .map_err(|e| lease_error(e, "the job could not be read"))?;
        if leased.lease_owner.as_deref() != Some(caller.id.as_str()) {
            return Err(ApiError::not_found());
        }
        let job = record_result(
            &state,
            &job_id,
            &caller.id,
            &report,
            status,
            &format!("agent {} reported {}", caller.id, report.status),
        )
        .await
        .map_err(|e| lease_error(e, "the result could not be recorded"))?;
        Ok::<_, ApiError>(
            Json(JobEnded {
                status: job.status.as_str().to_string(),
                job_id: job.job_id,
            })
            .into_response(),
        )
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The parts of a decision's audit row a result report needs.
#[derive(sqlx::FromRow)]
struct DecisionRow {
    caller_id: String,
    decision_action: String,
    context: String,
    tool: String,
    operation: String,
    risk_level: String,
    /// Stored as 32 bytes (see `store::audit::hash_text`).
    call_hash: Option<Vec<u8>>,
    /// From `policy_versions`, as text.
    policy_hash: Option<String>,
}

/// `POST /api/v1/decisions/{audit_id}/result`: the tool server that asked reports how the
/// allowed call went, once.
#[utoipa::path(
    post,
    path = "/api/v1/decisions/{audit_id}/result",
    tag = "decisions",
    summary = "Report how an allowed call went (once per decision)",
    params(("audit_id" = String, Path, description = "The decision's audit id")),
    request_body = RunReport,
    responses(
        (status = 200, description = "Recorded in the audit trail", body = super::schema::AuditReceiptView),
        (status = 400, description = "Not a run report", body = super::schema::ErrorBody),
        (status = 401, description = "No valid bearer token", body = super::schema::ErrorBody),
        (status = 404, description = "No such decision of yours", body = super::schema::ErrorBody),
        (status = 409, description = "Not an allowed call, or already reported", body = super::schema::ErrorBody),
        (status = 413, description = "Report too large", body = super::schema::ErrorBody),
        (status = 429, description = "Over the caller's rate (see Retry-After)", body = super::schema::ErrorBody),
        (status = 503, description = "The store is unavailable; retry", body = super::schema::ErrorBody),
    )
)]
pub async fn decision_result(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(audit_id): Path<String>,
    body: Body,
) -> Response {
    let result = async {
        rate_limit(&state, &caller)?;
        let (report, _, body_hash) = read_report(body).await?;
                let row: Option<DecisionRow> =
            on_db!(&state.db, pool => sqlx::query_as(
                "SELECT caller_id, decision_action, context, tool, operation, risk_level, call_hash, policy_hash \
                 FROM audit_trail WHERE id = $1 AND event_kind = 'decision'",
            )
            .bind(&audit_id)
            .fetch_optional(pool)
            .await)
            .map_err(|e| ApiError::unavailable("the decision could not be read", &e))?;
                let Some(DecisionRow { caller_id: requester, decision_action: action, context, tool, operation, risk_level: risk, call_hash, policy_hash }) = row else {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such decision"));
        };
        // The context names the service that asked when it asked for someone else; otherwise
        // the caller is the requester.
        let asked_by = serde_json::from_str::<Value>(&context)
            .ok()
            .map(|c| c["caller"].as_str().map(str::to_string).unwrap_or_else(|| requester.clone()));
        if asked_by.as_deref() != Some(caller.id.as_str()) {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such decision"));
        }
        if action != "allow" {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_allowed",
                format!("the decision was {action}: only allowed calls are reported here (approved jobs report through their job)"),
            ));
        }
        let key = format!("result:{audit_id}");
        match idempotency::claim(&state.db, &caller.id, &key, &body_hash)
            .await
            .map_err(|e| ApiError::unavailable("the result could not be recorded", &e))?
        {
            idempotency::Claim::Fresh => {}
            idempotency::Claim::Replay(stored) => {
                return Ok(super::decisions::json_response(stored))
            }
            idempotency::Claim::InFlight | idempotency::Claim::Mismatch => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "result_already_reported",
                    "a result for this decision was already reported",
                ))
            }
        }
        let mut event = NewAuditEvent::new(
            EventKind::Execution,
            &requester,
            &tool,
            &operation,
            "execute",
            &format!("{} reported {}", caller.id, report.status),
            &risk,
        );
        event.execution_status = Some(report.status.clone());
        let hash_text = |hash: Option<Vec<u8>>| {
            hash.map(|bytes| crate::store::audit::hash_text(&bytes))
                .transpose()
                .map_err(|e| ApiError::unavailable("the decision could not be read", &e))
        };
        event.call_hash = hash_text(call_hash)?;
        event.policy_hash = policy_hash;
        report_event(&mut event, &report);
        event.context = json!({
            "decision_audit_id": audit_id,
            "reported_by": caller.id,
            "exit_code": report.exit_code,
            "output_digest": report.output_digest,
        })
        .to_string();
                state.metrics.execution(&report.status);
        match state.audit.append(event).await {
            Ok(receipt) => {
                let answer = serde_json::to_string(&AuditReceiptView { audit_id: receipt.id, audit_seq: receipt.seq }).unwrap_or_default();
                if let Err(error) = idempotency::complete(&state.db, &caller.id, &key, &answer).await {
                    tracing::error!(%error, "could not store a result's answer");
                }
                Ok(super::decisions::json_response(answer))
            }
            Err(error) => {
                idempotency::release(&state.db, &caller.id, &key).await;
                Err(ApiError::unavailable("the result could not be recorded", &error))
            }
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
