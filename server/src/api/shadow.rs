//! `GET /api/v1/shadow?days=N`: what shadow mode let through that enforcing would have held
//! (auditors and admins), as the dashboard shows it.

use super::{rate_limit, ApiError};
use crate::api::caller::ApiCaller;
use crate::services::shadow::{self, ShadowReport};
use crate::AppState;
use axum::{
    extract::{Query, State},
    Json,
};
use std::collections::HashMap;

/// Days a report looks back when the query does not say.
const DEFAULT_DAYS: u32 = 7;

#[utoipa::path(
    get,
    path = "/api/v1/shadow",
    tag = "audit",
    summary = "What shadow mode allowed that enforcing would have held (auditors and admins)",
    params(
        ("days" = Option<u32>, Query, description = "How many days back, 1 to 90; default 7"),
    ),
    responses(
        (status = 200, description = "The figures", body = ShadowReport),
        (status = 400, description = "`days` out of range", body = super::schema::ErrorBody),
        (status = 401, description = "No valid bearer token", body = super::schema::ErrorBody),
        (status = 403, description = "Not an auditor or admin", body = super::schema::ErrorBody),
        (status = 429, description = "Over the caller's rate (see Retry-After)", body = super::schema::ErrorBody),
        (status = 503, description = "The store is unavailable; retry", body = super::schema::ErrorBody),
    )
)]
pub async fn report(
    State(state): State<AppState>,
    caller: ApiCaller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<ShadowReport>, ApiError> {
    rate_limit(&state, &caller)?;
    let days = match query.get("days") {
        None => DEFAULT_DAYS,
        Some(text) => text.trim().parse::<u32>().map_err(|_| {
            ApiError::bad_request(
                "invalid_days",
                "days",
                "`days` must be a whole number from 1 to 90",
            )
        })?,
    };
    Ok(Json(shadow::report(&state, &caller.roles, days).await?))
}
