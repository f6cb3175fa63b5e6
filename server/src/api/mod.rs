//! The JSON API under `/api/v1` that IT-MCP, other tool servers and agents call. Every request
//! is authenticated by a bearer token ([`crate::api::caller::ApiCaller`]), limited per caller (token
//! bucket, 429 with `Retry-After`), and answered with JSON; errors carry a stable `error` code,
//! a sentence, and the offending `field` where there is one. Nothing internal reaches a response.

pub mod caller;
pub mod decisions;
pub mod execution;
pub mod exports;
pub mod grants;
pub mod jobs;
pub mod openapi;
pub mod schema;
pub mod shadow;

use crate::api::caller::ApiCaller;
use crate::services::ServiceError;
use crate::AppState;
use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Largest request body the API reads.
pub const BODY_LIMIT: usize = 64 * 1024;

/// An API error: status, stable code, a sentence for people, and the field at fault.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub retry_after: Option<u64>,
    /// For a decision refused without one (fail closed): `deny`.
    pub action: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            action: None,
        }
    }

    pub fn bad_request(code: &'static str, field: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            field: Some(field.to_string()),
            ..ApiError::new(StatusCode::BAD_REQUEST, code, message)
        }
    }

    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such job")
    }

    /// The store could not be reached or refused a write: the caller should retry later. The
    /// detail goes to the log, not the response.
    pub fn unavailable(what: &str, detail: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(%detail, "{what}");
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("{what}; try again shortly"),
            )
        }
    }
}

/// A service's refusal as the API answers it: the kind picks the status, the words stay.
impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> ApiError {
        match error {
            ServiceError::NotFound { message } => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
            }
            ServiceError::Forbidden { code, reason } => {
                ApiError::new(StatusCode::FORBIDDEN, code, reason)
            }
            ServiceError::Conflict { code, message } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            ServiceError::Invalid {
                code,
                field,
                message,
            } => ApiError {
                field,
                ..ApiError::new(StatusCode::BAD_REQUEST, code, message)
            },
            ServiceError::NotConfigured { message } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_configured", message)
            }
            ServiceError::Limit { code, message } => ApiError {
                retry_after: Some(60),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message)
            },
            ServiceError::Unavailable { what } => ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("{what}; try again shortly"),
                )
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = schema::ErrorBody {
            error: self.code.to_string(),
            message: self.message,
            field: self.field,
            action: self.action.map(str::to_string),
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// Token buckets per caller: `rate` requests per second on average, bursts up to `burst`.
#[derive(Clone)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Arc<Mutex<HashMap<String, (f64, Instant)>>>,
}

impl RateLimiter {
    /// `rate` 0 turns limiting off.
    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: Arc::default(),
        }
    }

    /// Take one token for `caller`, or say how many seconds until one is there.
    pub fn check(&self, caller: &str) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        if buckets.len() > 10_000 {
            // Forget callers whose buckets are full again (idle ones).
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets
            .entry(caller.to_string())
            .or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            // At least 1 s: Retry-After is in whole seconds.
            Err(((1.0 - *tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

/// Refuse a caller over its rate with 429 and `Retry-After`.
pub fn rate_limit(state: &AppState, caller: &ApiCaller) -> Result<(), ApiError> {
    state
        .rate_limiter
        .check(&caller.id)
        .map_err(|secs| ApiError {
            retry_after: Some(secs),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests; slow down",
            )
        })
}

/// The API's routes (mounted by [`crate::app`]).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/whoami", get(crate::api::caller::api_whoami))
        .route("/api/v1/decisions", post(decisions::decide))
        .route("/api/v1/jobs/{id}", get(jobs::status))
        .route("/api/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/api/v1/jobs/{id}/votes", post(jobs::vote))
        .route(
            "/api/v1/decisions/{audit_id}/result",
            post(execution::decision_result),
        )
        .route("/api/v1/agents/{agent_id}/claim", post(execution::claim))
        .route("/api/v1/jobs/{id}/heartbeat", post(execution::heartbeat))
        .route("/api/v1/jobs/{id}/result", post(execution::job_result))
        .route("/api/v1/audit/export", get(exports::api_export))
        .route("/api/v1/audit/public-key", get(exports::public_key))
        .route("/api/v1/shadow", get(shadow::report))
        .route("/api/v1/jobs/{id}/remember", post(grants::remember))
        .route("/api/v1/grants", get(grants::list))
        .route("/api/v1/grants/{id}/revoke", post(grants::revoke))
        .route("/api/v1/openapi.json", get(openapi::openapi_json))
        .route("/api/v1/docs", get(openapi::docs_page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_with_a_wait() {
        let limiter = RateLimiter::new(1, 3);
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        assert_eq!(limiter.check("a"), Err(1));
        assert!(limiter.check("b").is_ok(), "callers have their own buckets");
        assert!(RateLimiter::new(0, 0).check("a").is_ok(), "0 turns it off");
    }
}
