//! Export downloads: `GET /api/v1/audit/export` for auditor and admin tokens, the same for the
//! signed-in portal (`GET /reports/export`, the Reports page's links), and the public key that
//! verifies evidence bundles. The exports service audits and produces them; this sends them.

use super::caller::ApiCaller;
use super::{rate_limit, ApiError};
use crate::services::exports::{self, Download, ExportQuery, Requester};
use crate::web::auth::SignedIn;
use crate::AppState;
use axum::{
    body::Body,
    extract::{Query, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Extension, Json,
};

/// A download as an HTTP response: streamed, named, never cached.
fn download(download: Download) -> Response {
    let stream = futures_util::stream::unfold(download.chunks, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(download.content_type),
    );
    let disposition = format!("attachment; filename=\"{}\"", download.file_name);
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn export(state: &AppState, who: &Requester, query: ExportQuery) -> Response {
    match exports::export_query(state, who, query).await {
        Ok(started) => download(started),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// `GET /api/v1/audit/export?format=csv|jsonl|pdf|bundle&from=&to=&framework=&tool=&caller=&risk=&action=`
/// for auditor and admin tokens.
#[utoipa::path(
    get,
    path = "/api/v1/audit/export",
    tag = "audit",
    summary = "Export the audit trail of a period (auditors and admins); streamed",
    params(
        ("format" = Option<String>, Query, description = "`csv` (default), `jsonl`, `pdf` or `bundle`"),
        ("from" = Option<String>, Query, description = "Start of the period: `YYYY-MM-DD` (UTC) or RFC 3339; default 30 days before `to`"),
        ("to" = Option<String>, Query, description = "End of the period, exclusive; a date means the end of that day. Default: now"),
        ("framework" = Option<String>, Query, description = "`pci-dss`, `soc2` or `iso27001`: the controls the PDF maps its evidence to"),
        ("tool" = Option<String>, Query, description = "Only this tool"),
        ("caller" = Option<String>, Query, description = "Only this caller"),
        ("risk" = Option<String>, Query, description = "LOW, MEDIUM, HIGH or CRITICAL"),
        ("action" = Option<String>, Query, description = "allow, deny, require_approval, approve, execute or cancel"),
        ("progress" = Option<String>, Query, description = "A token to follow the download's progress by"),
    ),
    responses(
        (status = 200, description = "The export: text/csv, application/jsonl, application/pdf, or an evidence bundle (application/x-tar)"),
        (status = 400, description = "A bad parameter (named in `field`)", body = super::schema::ErrorBody),
        (status = 403, description = "Not an auditor or admin", body = super::schema::ErrorBody),
        (status = 503, description = "The export could not be audited, or bundles have no signing key", body = super::schema::ErrorBody),
        (status = 401, description = "No valid bearer token", body = super::schema::ErrorBody),
    )
)]
pub async fn api_export(
    State(state): State<AppState>,
    caller: ApiCaller,
    Query(query): Query<ExportQuery>,
) -> Response {
    if let Err(e) = rate_limit(&state, &caller) {
        return e.into_response();
    }
    let who = Requester {
        id: caller.id,
        roles: caller.roles,
    };
    export(&state, &who, query).await
}

/// `GET /reports/export?...`: the same export for the signed-in portal user (the Reports page's
/// download links).
pub async fn portal_export(
    State(state): State<AppState>,
    user: Option<Extension<SignedIn>>,
    Query(query): Query<ExportQuery>,
) -> Response {
    let Some(Extension(user)) = user else {
        return (StatusCode::UNAUTHORIZED, "sign-in required").into_response();
    };
    let who = Requester {
        id: user.username,
        roles: user.roles,
    };
    export(&state, &who, query).await
}

/// `GET /api/v1/audit/public-key`: the key that verifies evidence bundles (public).
#[utoipa::path(
    get,
    path = "/api/v1/audit/public-key",
    tag = "audit",
    summary = "The Ed25519 public key that verifies evidence bundles (no token needed)",
    security(()),
    responses(
        (status = 200, description = "`{algorithm, public_key (base64), fingerprint (SHA-256 hex)}`"),
        (status = 404, description = "No signing key is configured", body = super::schema::ErrorBody),
    )
)]
pub async fn public_key(State(state): State<AppState>) -> Response {
    match exports::public_key(&state) {
        Ok(key) => Json(key).into_response(),
        Err(error) => ApiError {
            status: StatusCode::NOT_FOUND,
            ..ApiError::from(error)
        }
        .into_response(),
    }
}
