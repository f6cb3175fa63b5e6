//! `POST /api/v1/decisions`: a tool server asks whether a call may run. The enforcer decides;
//! the decision is in the audit trail (durable) before the answer leaves, and a call that needs
//! approval becomes a queued job. If the audit write fails, the answer is 503 and nothing is
//! allowed (fail closed).

use super::schema::DecisionAnswer;
use super::{rate_limit, ApiError, BODY_LIMIT};
use crate::api::caller::ApiCaller;
use crate::services::decisions::{self, Decided};
use crate::services::idempotency;
use crate::AppState;
use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use enforcer::wire::DecisionInput;
use std::collections::BTreeSet;

/// Header carrying the person's own access token when a service acts for them.
pub const PERSON_TOKEN_HEADER: &str = "x-on-behalf-of-token";

/// Parse and check a request body (see [`enforcer::wire`]). Every refusal names its field.
pub fn parse(body: &[u8]) -> Result<DecisionInput, ApiError> {
    enforcer::wire::parse_decision(body).map_err(|e| match &e.field {
        Some(field) => ApiError::bad_request(e.code, field, e.message),
        None => ApiError::new(StatusCode::BAD_REQUEST, e.code, e.message),
    })
}

/// Who the decision is for: the caller, or the person a delegating service names. Returns the
/// requester and the capabilities to check.
async fn requester(
    state: &AppState,
    caller: &ApiCaller,
    input: &DecisionInput,
    headers: &HeaderMap,
) -> Result<(String, BTreeSet<String>), ApiError> {
    let mut capabilities: BTreeSet<String> = caller.capabilities.iter().cloned().collect();
    let Some(person) = &input.on_behalf_of else {
        return Ok((caller.id.clone(), capabilities));
    };
    decisions::may_act_for(&state.core, caller, person).map_err(|error| ApiError {
        field: Some("on_behalf_of".into()),
        ..ApiError::from(error)
    })?;
    if let Some(token) = headers.get(PERSON_TOKEN_HEADER) {
        let Some(oidc) = &state.oidc else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "person_token_unsupported",
                "a person's token can only be checked with an identity provider configured",
            ));
        };
        let token = token.to_str().unwrap_or_default();
        let (_, identity) = oidc.verify_bearer(token).await.map_err(|_| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "person_token_invalid",
                "the person's token was refused",
            )
        })?;
        if identity.is_service || &identity.id != person {
            return Err(ApiError {
                field: Some("on_behalf_of".into()),
                ..ApiError::new(
                    StatusCode::FORBIDDEN,
                    "person_token_mismatch",
                    "the person's token names someone else",
                )
            });
        }
        // The service may only do what the person may do too.
        capabilities.retain(|c| identity.capabilities.contains(c));
    }
    Ok((person.clone(), capabilities))
}

/// Ask whether a tool call may run.
///
/// The enforcer decides allow, deny or require_approval and says why; the audit row is durable
/// before the answer. `require_approval` queues a job: long-poll its `status_url`. An
/// `Idempotency-Key` header makes retries return the first answer.
#[utoipa::path(
    post,
    path = "/api/v1/decisions",
    tag = "decisions",
    request_body = super::schema::DecisionRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key and body get the same answer"),
        ("X-On-Behalf-Of-Token" = Option<String>, Header, description = "The person's own access token, narrowing a delegating service's capabilities to theirs"),
    ),
    responses(
        (status = 200, description = "The decision", body = super::schema::DecisionAnswer),
        (status = 400, description = "Bad input", body = super::schema::ErrorBody),
        (status = 401, description = "No valid bearer token", body = super::schema::ErrorBody),
        (status = 403, description = "Not allowed to act for that person", body = super::schema::ErrorBody),
        (status = 409, description = "The same Idempotency-Key is still in flight", body = super::schema::ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = super::schema::ErrorBody),
        (status = 415, description = "Not application/json", body = super::schema::ErrorBody),
        (status = 422, description = "Idempotency-Key reused with another body", body = super::schema::ErrorBody),
        (status = 429, description = "Over the caller's rate, or (`pending_limit`) too many of its requests already wait for approval for this requester (see Retry-After)", body = super::schema::ErrorBody),
        (status = 503, description = "The store is unavailable; retry", body = super::schema::ErrorBody),
    )
)]
pub async fn decide(
    State(state): State<AppState>,
    caller: ApiCaller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    decide_inner(&state, &caller, &headers, body).await
}

async fn decide_inner(
    state: &AppState,
    caller: &ApiCaller,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    rate_limit(state, caller)?;
    if let Some(kind) = headers.get(header::CONTENT_TYPE) {
        let kind = kind.to_str().unwrap_or_default().to_ascii_lowercase();
        if !kind.starts_with("application/json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the request as application/json",
            ));
        }
    }
    let bytes = axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body must be at most {} KiB", BODY_LIMIT / 1024),
        )
    })?;
    let input = parse(&bytes)?;
    let (requester, capabilities) = requester(state, caller, &input, headers).await?;

    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            let key = value.to_str().unwrap_or_default();
            if !idempotency::valid_key(key) {
                return Err(ApiError::bad_request(
                    "invalid_idempotency_key",
                    "Idempotency-Key",
                    "Idempotency-Key must be 1 to 255 visible ASCII characters",
                ));
            }
            Some(key.to_string())
        }
    };
    if let Some(key) = &key {
        let claim = idempotency::claim(&state.store, &caller.id, key, &input.body_hash)
            .await
            .map_err(|e| ApiError::unavailable("the decision could not be recorded", &e))?;
        match claim {
            idempotency::Claim::Fresh => {}
            idempotency::Claim::Replay(stored) => {
                let mut response = json_response(stored);
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return Ok(response);
            }
            idempotency::Claim::InFlight => {
                return Err(ApiError {
                    retry_after: Some(1),
                    ..ApiError::new(
                        StatusCode::CONFLICT,
                        "idempotency_in_progress",
                        "a request with this Idempotency-Key is being answered; retry shortly",
                    )
                })
            }
            idempotency::Claim::Mismatch => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used for a different request",
                ))
            }
        }
    }
    let answer = record(state, caller, &input, requester, capabilities, started).await;
    match (&key, answer) {
        (Some(key), Ok(body)) => {
            if let Err(error) = idempotency::complete(&state.store, &caller.id, key, &body).await {
                // The decision is recorded; only a replay of it is not. Say so in the log.
                tracing::error!(%error, "could not store the answer for an Idempotency-Key");
                idempotency::release(&state.store, &caller.id, key).await;
            }
            Ok(json_response(body))
        }
        (None, Ok(body)) => Ok(json_response(body)),
        (Some(key), Err(error)) => {
            idempotency::release(&state.store, &caller.id, key).await;
            Err(error)
        }
        (None, Err(error)) => Err(error),
    }
}

/// A JSON answer already serialized (stored for replays, or built once).
pub(super) fn json_response(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Decide, write the audit row (and queue the job), and return the answer's JSON text.
async fn record(
    state: &AppState,
    caller: &ApiCaller,
    input: &DecisionInput,
    requester: String,
    capabilities: BTreeSet<String>,
    started: std::time::Instant,
) -> Result<String, ApiError> {
    let decided = decisions::decide(
        state,
        caller,
        input,
        &requester,
        capabilities,
        decisions::Route::Policy,
    )
    .await
    .map_err(|e| ApiError {
        action: Some("deny"),
        ..ApiError::from(e)
    })?;
    let Decided {
        decision,
        receipt,
        job,
        attached,
        grant,
    } = decided;
    let mut answer = DecisionAnswer {
        action: decision.action,
        risk: decision.risk,
        reasons: decision.reasons.clone(),
        decision: serde_json::to_value(&decision)
            .expect("a decision is plain data and always serialises"),
        audit_id: receipt.id,
        audit_seq: receipt.seq,
        requester,
        caller: caller.id.clone(),
        job_id: None,
        status: None,
        status_url: None,
        expires_at: None,
        approvals_required: None,
        attached,
        would_block: decision.would_block,
        grant_id: grant,
    };

    if let Some(stored) = job {
        answer.status = Some(stored.status);
        answer.status_url = Some(format!("/api/v1/jobs/{}", stored.job_id));
        answer.expires_at = stored.expires_at;
        answer.approvals_required = Some(stored.approvals_required);
        answer.job_id = Some(stored.job_id);
    }
    state
        .metrics
        .decision(decision.action, decision.risk, started.elapsed());
    Ok(serde_json::to_string(&answer).expect("an answer is plain data and always serialises"))
}
