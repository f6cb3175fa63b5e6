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

use super::caller::ApiCaller;
use super::schema::{ClaimedJob, JobEnded, LeaseAnswer};
use super::{rate_limit, ApiError, BODY_LIMIT};
use crate::services::execution::{self, RunReport, OUTPUT_KEEP};
use crate::store::{JobStatus, JobSummary};
use crate::AppState;
use axum::{
    body::Body,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::Value;
use std::collections::HashMap;

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
) -> Result<Response, ApiError> {
    rate_limit(&state, &caller)?;
    if !enforcer::executor::is_agent_id(&agent_id) {
        return Err(ApiError::bad_request(
            "invalid_value",
            "agent_id",
            "an agent id is 1 to 128 letters, digits, `-`, `_` or `.`",
        ));
    }
    execution::require_agent(&state, &caller, Some(&agent_id), "claim", None).await?;
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

/// Lease the next job for an agent and describe it, with the executor that says how to run it.
async fn try_claim(state: &AppState, agent_id: &str) -> Result<Option<Response>, ApiError> {
    let job = execution::claim(state, agent_id).await?;
    Ok(job.map(|job| {
        Json(ClaimedJob {
            args: serde_json::from_str::<Value>(&job.params).unwrap_or(Value::Null),
            executor: state
                .policy
                .executor_for(&job.tool_name, &job.operation)
                .and_then(|e| serde_json::to_value(e).ok()),
            job: JobSummary::from(&job),
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
) -> Result<Response, ApiError> {
    rate_limit(&state, &caller)?;
    let job = execution::heartbeat(&state, &caller, &job_id).await?;
    Ok(Json(LeaseAnswer {
        status: job.status,
        job_id: job.job_id,
        lease_expires_at: job.lease_expires_at,
    })
    .into_response())
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
) -> Result<Response, ApiError> {
    rate_limit(&state, &caller)?;
    // Who may report comes first: others learn nothing from how their body would be read.
    execution::admit_agent(&state, &caller, "result", &job_id).await?;
    let (report, status, _) = read_report(body).await?;
    let job = execution::agent_result(&state, &caller, &job_id, &report, status).await?;
    Ok(Json(JobEnded {
        status: job.status,
        job_id: job.job_id,
    })
    .into_response())
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
) -> Result<Response, ApiError> {
    rate_limit(&state, &caller)?;
    let (report, _, report_hash) = read_report(body).await?;
    let answer =
        execution::decision_result(&state, &caller, &audit_id, &report, &report_hash).await?;
    Ok(super::decisions::json_response(answer))
}
