//! `GET /api/v1/jobs/{id}?wait=SECONDS` (long-poll until the job changes state) and
//! `POST /api/v1/jobs/{id}/cancel`. A job is visible to its requester, to the service that
//! submitted it, and to approvers, auditors and admins; to anyone else it does not exist.

use super::schema::{JobView, VoteView};
use super::{rate_limit, ApiError};
use crate::api::caller::ApiCaller;
use crate::store::{Job, JobSummary, Store, StoreError};
use crate::AppState;
use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// Longest long-poll.
pub const MAX_WAIT_SECS: u64 = 60;
/// While waiting, the job is also re-read this often (changes made by another replica).
const RECHECK: Duration = Duration::from_secs(1);

async fn load(state: &AppState, id: &str, caller: &ApiCaller) -> Result<Job, ApiError> {
    match state.store.job(id).await {
        Ok(job)
            if crate::services::approvals::may_see(
                &job,
                &caller.id,
                &caller.roles,
                &state.policy.approvals.approver_role,
            ) =>
        {
            Ok(job)
        }
        Ok(_) | Err(StoreError::NotFound) => Err(ApiError::not_found()),
        Err(error) => Err(ApiError::unavailable("the job could not be read", &error)),
    }
}

/// The job as the API shows it, with its votes and, on denial, the reviewer's reason.
async fn view(state: &AppState, job: &Job) -> Result<JobView, ApiError> {
    let votes = state
        .store
        .votes(&job.job_id)
        .await
        .map_err(|e| ApiError::unavailable("the job's votes could not be read", &e))?;
    let denial_reason = votes
        .iter()
        .find(|v| v.verdict == enforcer::Verdict::Deny)
        .and_then(|v| v.reason.clone());
    let views: Vec<VoteView> = votes
        .iter()
        .map(|v| VoteView {
            approver: v.approver.clone(),
            verdict: v.verdict,
            reason: v.reason.clone(),
            at: v.created_at,
        })
        .collect();
    Ok(JobView {
        job: JobSummary::from(job),
        status: job.status,
        is_final: job.status.is_final(),
        submitted_by: job.submitted_by.clone(),
        approvals: views.clone(),
        votes: views,
        denial_reason,
        approved_at: job.approved_at,
        approval_expires_at: job.approval_expires_at,
        picked_at: job.picked_at,
        completed_at: job.completed_at,
        result: job.result.clone(),
        error: job.error.clone(),
        decision_audit_id: job.decision_audit_id.clone(),
    })
}

/// `GET /api/v1/jobs/{id}?wait=N`: the job now, or (with `wait`) as soon as its status differs
/// from what it was when the request arrived, at most N seconds (≤ 60) later.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}",
    tag = "jobs",
    summary = "A job's status, votes and denial reason; long-polls with `wait`",
    params(
        ("id" = String, Path, description = "Job id"),
        ("wait" = Option<u64>, Query, description = "Seconds (≤ 60) to wait for the status to change"),
    ),
    responses(
        (status = 200, description = "The job", body = super::schema::JobView),
        (status = 400, description = "Bad `wait`", body = super::schema::ErrorBody),
        (status = 404, description = "No such job (or not yours to see)", body = super::schema::ErrorBody),
        (status = 401, description = "No valid bearer token", body = super::schema::ErrorBody),
        (status = 503, description = "The store (or the identity provider) is unavailable; retry", body = super::schema::ErrorBody),
    )
)]
pub async fn status(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    rate_limit(&state, &caller)?;
    let wait = match query.get("wait") {
        None => 0,
        Some(text) => text.parse::<u64>().map_err(|_| {
            ApiError::bad_request("invalid_value", "wait", "`wait` must be whole seconds")
        })?,
    }
    .min(MAX_WAIT_SECS);
    // Subscribe before reading, so a change between the read and the wait is not missed.
    let mut changes = state.job_events.subscribe();
    let job = load(&state, &id, &caller).await?;
    let initial = job.status;
    let mut current = job;
    if wait > 0 && !initial.is_final() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            let tick = (deadline - now).min(RECHECK);
            let changed = tokio::select! {
                message = changes.recv() => match message {
                    Ok((job_id, status)) => job_id == id && status != initial,
                    // Missed messages or shutting down: read the job to be sure.
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => true,
                },
                () = tokio::time::sleep(tick) => true,
            };
            if changed {
                current = load(&state, &id, &caller).await?;
                if current.status != initial {
                    break;
                }
            }
        }
    }
    Ok(Json(view(&state, &current).await?).into_response())
}

/// `POST /api/v1/jobs/{id}/cancel`: the requester (or the service that submitted the job for
/// them) withdraws a job that has not started.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/cancel",
    tag = "jobs",
    summary = "Withdraw a job that has not started (its requester only)",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The cancelled job", body = super::schema::JobView),
        (status = 404, description = "No such job (or not yours to see)", body = super::schema::ErrorBody),
        (status = 409, description = "The job has already started or ended", body = super::schema::ErrorBody),
        (status = 401, description = "No valid bearer token", body = super::schema::ErrorBody),
        (status = 503, description = "The store (or the identity provider) is unavailable; retry", body = super::schema::ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    rate_limit(&state, &caller)?;
    // A job the caller may not see is not found (not forbidden).
    load(&state, &id, &caller).await?;
    let cancelled = crate::services::approvals::withdraw(&state, &caller.id, &id).await?;
    Ok(Json(view(&state, &cancelled).await?).into_response())
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoteInput {
    #[schema(example = "approve")]
    pub verdict: enforcer::Verdict,
    /// Required for a denial (the assistant is told it) and to approve CRITICAL operations.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /api/v1/jobs/{id}/votes`: a person (signed in at the identity provider, calling with
/// their own access token) approves or denies. Services and API tokens cannot vote.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/votes",
    tag = "jobs",
    summary = "Approve or deny a job (people only; never your own request, never twice)",
    params(("id" = String, Path, description = "Job id")),
    request_body = VoteInput,
    responses(
        (status = 200, description = "The job after the vote", body = super::schema::JobView),
        (status = 400, description = "Bad input, or a reason is required", body = super::schema::ErrorBody),
        (status = 401, description = "No valid bearer token", body = super::schema::ErrorBody),
        (status = 403, description = "Not allowed to vote on this job", body = super::schema::ErrorBody),
        (status = 404, description = "No such job", body = super::schema::ErrorBody),
        (status = 409, description = "The job is no longer pending", body = super::schema::ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = super::schema::ErrorBody),
        (status = 429, description = "Over the caller's rate (see Retry-After)", body = super::schema::ErrorBody),
        (status = 503, description = "The vote could not be recorded; nothing changed", body = super::schema::ErrorBody),
    )
)]
pub async fn vote(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<String>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    use crate::services::approvals::VoteError;
    rate_limit(&state, &caller)?;
    if caller.kind != "person" {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "people_only",
            "only people vote: call with your own access token from the identity provider",
        ));
    }
    let bytes = axum::body::to_bytes(body, super::BODY_LIMIT)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the body must be at most 64 KiB",
            )
        })?;
    let input: VoteInput = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("not a vote: {e}"),
        )
    })?;
    let voter = enforcer::Principal {
        id: caller.id.clone(),
        roles: caller.roles.iter().cloned().collect(),
        capabilities: caller.capabilities.iter().cloned().collect(),
    };
    // A job the caller may not see does not exist for them; the attempt is audited.
    if let Err(error) = load(&state, &id, &caller).await {
        if error.status == StatusCode::NOT_FOUND {
            crate::services::approvals::refused_unseen(&state, &caller.id, &id, input.verdict)
                .await;
        }
        return Err(error);
    }
    let job = crate::services::approvals::vote(
        &state,
        &voter,
        &id,
        input.verdict,
        input.reason.as_deref(),
    )
    .await
    .map_err(|error| match error {
        VoteError::NotFound => ApiError::not_found(),
        VoteError::NotQueued(_) => {
            ApiError::new(StatusCode::CONFLICT, "conflict", error.to_string())
        }
        VoteError::ReasonRequired(_) | VoteError::ReasonTooLong => {
            ApiError::bad_request("invalid_value", "reason", error.to_string())
        }
        VoteError::NotEligible(_) => {
            ApiError::new(StatusCode::FORBIDDEN, "not_eligible", error.to_string())
        }
        VoteError::Unavailable(e) => ApiError::unavailable("the vote could not be recorded", &e),
    })?;
    Ok(Json(view(&state, &job).await?).into_response())
}
