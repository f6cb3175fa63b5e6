//! Remembered approvals over the API: `POST /api/v1/jobs/{id}/remember` (an approver who
//! approved the job, with their own token), `GET /api/v1/grants` (approvers, auditors, admins)
//! and `POST /api/v1/grants/{id}/revoke` (approvers, admins). The grants service decides; this
//! reads the body and answers.

use super::{rate_limit, ApiError};
use crate::api::caller::ApiCaller;
use crate::services::grants::{self, RememberRequest};
use crate::store::GrantRecord;
use crate::AppState;
use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

/// A standing grant as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GrantView {
    pub id: String,
    pub tool: String,
    pub operation: String,
    /// What it covers: `{"tool", "operation", "covers": {"kind": "call" | "shape", ...}, "target"}`.
    #[schema(value_type = Object)]
    pub scope: Value,
    /// `{"kind": "person" | "group", "name": ...}`.
    #[schema(value_type = Object)]
    pub subject: Value,
    /// The approved request it was made from.
    pub job_id: String,
    /// Whether it allows calls now (enough approvers, not revoked, not expired, uses left).
    pub standing: bool,
    pub approvals_needed: i32,
    pub approvers: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<i32>,
    pub uses: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
}

impl GrantView {
    pub fn of(grant: GrantRecord, now: DateTime<Utc>) -> GrantView {
        let standing = grants::state_of(&grant, now) == "standing";
        GrantView {
            scope: serde_json::from_str(&grant.scope).unwrap_or(Value::Null),
            subject: serde_json::json!({ "kind": grant.subject_kind, "name": grant.subject }),
            standing,
            id: grant.id,
            tool: grant.tool,
            operation: grant.operation,
            job_id: grant.job_id,
            approvals_needed: grant.approvals_needed,
            approvers: grant.approvers,
            created_at: grant.created_at,
            expires_at: grant.expires_at,
            max_uses: grant.max_uses,
            uses: grant.uses,
            last_used_at: grant.last_used_at,
            revoked_at: grant.revoked_at,
            revoked_by: grant.revoked_by,
        }
    }
}

fn person(caller: &ApiCaller) -> Result<enforcer::Principal, ApiError> {
    if caller.kind != "person" {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "people_only",
            "only people remember or revoke approvals: call with your own access token from the identity provider",
        ));
    }
    Ok(enforcer::Principal {
        id: caller.id.clone(),
        roles: caller.roles.iter().cloned().collect(),
        capabilities: caller.capabilities.iter().cloned().collect(),
    })
}

/// `POST /api/v1/jobs/{id}/remember`
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/remember",
    tag = "jobs",
    summary = "Remember an approval you gave: this exact call, or calls of its shape, for a while",
    params(("id" = String, Path, description = "The approved job")),
    request_body = RememberRequest,
    responses(
        (status = 200, description = "The grant (standing once every approver the job needed remembered it)", body = GrantView),
        (status = 400, description = "Bad input, named by `field` (ttl_secs over 7 days is refused, not shortened)", body = super::schema::ErrorBody),
        (status = 401, description = "No valid bearer token", body = super::schema::ErrorBody),
        (status = 403, description = "Not your approval, or never remembered (CRITICAL, interactive-only, never_remember effects)", body = super::schema::ErrorBody),
        (status = 404, description = "No such job", body = super::schema::ErrorBody),
        (status = 409, description = "The job is not approved", body = super::schema::ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = super::schema::ErrorBody),
        (status = 429, description = "Over the caller's rate (see Retry-After)", body = super::schema::ErrorBody),
        (status = 503, description = "The grant could not be written; nothing changed", body = super::schema::ErrorBody),
    )
)]
pub async fn remember(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<GrantView>, ApiError> {
    rate_limit(&state, &caller)?;
    let who = person(&caller)?;
    if body.len() > super::BODY_LIMIT {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the body must be at most 64 KiB",
        ));
    }
    let ask: RememberRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RememberRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("not a request to remember: {e}"),
            )
        })?
    };
    let grant = grants::remember(&state, &who, &id, &ask).await?;
    Ok(Json(GrantView::of(grant, Utc::now())))
}

/// `GET /api/v1/grants`
#[utoipa::path(
    get,
    path = "/api/v1/grants",
    tag = "jobs",
    summary = "Standing grants, newest first (approvers, auditors and admins)",
    responses(
        (status = 200, description = "The grants, with their uses", body = [GrantView]),
        (status = 401, description = "No valid bearer token", body = super::schema::ErrorBody),
        (status = 403, description = "Not an approver, auditor or admin", body = super::schema::ErrorBody),
        (status = 429, description = "Over the caller's rate (see Retry-After)", body = super::schema::ErrorBody),
        (status = 503, description = "The store is unavailable; retry", body = super::schema::ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: ApiCaller,
) -> Result<Json<Vec<GrantView>>, ApiError> {
    rate_limit(&state, &caller)?;
    let now = Utc::now();
    let grants = grants::list(&state, &caller.roles).await?;
    Ok(Json(
        grants.into_iter().map(|g| GrantView::of(g, now)).collect(),
    ))
}

/// `POST /api/v1/grants/{id}/revoke`
#[utoipa::path(
    post,
    path = "/api/v1/grants/{id}/revoke",
    tag = "jobs",
    summary = "Revoke a standing grant at once (approvers and admins)",
    params(("id" = String, Path, description = "The grant")),
    responses(
        (status = 200, description = "The grant, revoked", body = GrantView),
        (status = 401, description = "No valid bearer token", body = super::schema::ErrorBody),
        (status = 403, description = "Not an approver or admin", body = super::schema::ErrorBody),
        (status = 404, description = "No such grant", body = super::schema::ErrorBody),
        (status = 409, description = "Already revoked", body = super::schema::ErrorBody),
        (status = 429, description = "Over the caller's rate (see Retry-After)", body = super::schema::ErrorBody),
        (status = 503, description = "The revocation could not be written; nothing changed", body = super::schema::ErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<String>,
) -> Result<Json<GrantView>, ApiError> {
    rate_limit(&state, &caller)?;
    let who = person(&caller)?;
    let grant = grants::revoke(&state, &who, &id).await?;
    Ok(Json(GrantView::of(grant, Utc::now())))
}
