//! Who calls the JSON API: `Authorization: Bearer` with an API token Countersign issued
//! (`cs_…`) or an access token from the identity provider. Every refusal is audited.

use crate::services::identity::{api_tokens, oidc, tokens};
use crate::store::{AuditAction, EventKind};
use crate::web::auth::audit;
use crate::AppState;
use axum::{
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};

/// A caller of the JSON API (`/api/v1/...`), authenticated by `Authorization: Bearer`.
pub use crate::services::Caller as ApiCaller;

/// Why an API request was not let in: 401 with a `WWW-Authenticate` challenge and a stable
/// error code, nothing about which part failed; or, when the credentials could not be checked
/// at all (the store or the identity provider is unreachable), 503 and a retry, so a caller
/// does not mistake an outage for a bad token. Both refuse (fail closed).
pub enum Unauthenticated {
    Refused(&'static str),
    Unavailable(&'static str),
}

impl IntoResponse for Unauthenticated {
    fn into_response(self) -> Response {
        match self {
            Unauthenticated::Refused(message) => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(serde_json::json!({ "error": "unauthenticated", "message": message })),
            )
                .into_response(),
            Unauthenticated::Unavailable(message) => super::ApiError {
                retry_after: Some(5),
                action: Some("deny"),
                ..super::ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            .into_response(),
        }
    }
}

impl axum::extract::FromRequestParts<AppState> for ApiCaller {
    type Rejection = Unauthenticated;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(|v| v.trim().to_string())
            .ok_or(Unauthenticated::Refused("a bearer token is required"))?;
        let path = parts.uri.path().to_string();
        let refusal = |reason: &'static str| {
            let path = path.clone();
            async move {
                audit(
                    state,
                    EventKind::PortalAction,
                    "anonymous",
                    AuditAction::Deny,
                    &format!("API request refused: {reason}"),
                    serde_json::json!({ "path": path }),
                )
                .await;
                Unauthenticated::Refused(reason)
            }
        };
        if !presented.starts_with("cs_") {
            let Some(oidc) = &state.oidc else {
                return Err(refusal(
                    "identity-provider tokens are not accepted: no issuer is configured",
                )
                .await);
            };
            return match oidc.verify_bearer(&presented).await {
                Ok((_, identity)) => Ok(ApiCaller {
                    id: identity.id,
                    kind: if identity.is_service {
                        "service"
                    } else {
                        "person"
                    },
                    roles: identity.roles.into_iter().collect(),
                    capabilities: identity.capabilities.into_iter().collect(),
                }),
                Err(oidc::OidcError::Token(error)) => Err(refusal(token_refusal(&error)).await),
                Err(error) => {
                    tracing::warn!(%error, "bearer token cannot be verified");
                    Err(Unauthenticated::Unavailable(
                        "identity-provider tokens cannot be verified right now; try again shortly",
                    ))
                }
            };
        }
        match state
            .token_cache
            .authenticate(&state.store, &presented)
            .await
        {
            Ok(token) => Ok(ApiCaller {
                id: token.name,
                kind: "api-token",
                roles: token.roles,
                capabilities: token.capabilities,
            }),
            Err(api_tokens::TokenStoreError::Refused) => {
                Err(refusal("invalid or revoked API token").await)
            }
            Err(error) => {
                tracing::error!(%error, "API token check failed");
                Err(Unauthenticated::Unavailable(
                    "authentication is unavailable; try again shortly",
                ))
            }
        }
    }
}

/// A refused token's reason, as told to the caller and written to the audit trail.
fn token_refusal(error: &tokens::TokenError) -> &'static str {
    use tokens::TokenError as E;
    match error {
        E::Malformed => "the bearer token is not a well-formed JWT",
        E::Algorithm(_) => "the token's algorithm is not accepted",
        E::NoKeyId | E::UnknownKey(_) | E::KeyMismatch => "the token is not signed by a known key",
        E::Signature => "the token's signature is invalid",
        E::Expired => "the token has expired",
        E::NotYetValid => "the token is not valid yet",
        E::Issuer => "the token is from another issuer",
        E::Audience => "the token is not meant for Countersign",
    }
}

/// `GET /api/v1/whoami`: who the presented token speaks for.
#[utoipa::path(
    get,
    path = "/api/v1/whoami",
    summary = "Who the presented token speaks for",
    responses(
        (status = 200, description = "The caller", body = super::schema::CallerView),
        (status = 401, description = "No valid bearer token", body = super::schema::ErrorBody),
        (status = 503, description = "The store (or the identity provider) is unavailable; retry", body = super::schema::ErrorBody),
    )
)]
pub async fn api_whoami(caller: ApiCaller) -> axum::Json<ApiCaller> {
    axum::Json(caller)
}
