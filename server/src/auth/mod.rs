//! Who is signed in. People sign in with a local account (the embedded default) and get a
//! server-side session (tower-sessions, stored in the database). Pages need a session; the
//! sign-in page, static files and probes do not. Every sign-in, refusal and sign-out is audited.

pub mod accounts;
pub mod api_tokens;
pub mod oidc;
pub mod tokens;

use crate::store::{EventKind, NewAuditEvent};
use crate::AppState;
use axum::{
    extract::{ConnectInfo, Request, State},
    http::{header, StatusCode},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
    Form,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower_sessions::Session;

/// The session key holding the signed-in person.
const USER_KEY: &str = "countersign.user";
/// Sign-ins started at the identity provider and not finished yet.
const PENDING_KEY: &str = "countersign.oidc.pending";
/// The provider's ID token, for the logout request's `id_token_hint`.
const ID_TOKEN_KEY: &str = "countersign.oidc.id_token";

/// Who is signed in, as kept in the session and handed to handlers and pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedIn {
    pub username: String,
    pub display_name: String,
    pub roles: Vec<String>,
    pub capabilities: Vec<String>,
    /// Unix seconds; the session ends this long after sign-in whatever the activity.
    pub signed_in_at: i64,
}

/// Failed sign-ins per client address, to slow down guessing across accounts.
#[derive(Clone, Default)]
pub struct AddressThrottle {
    inner: Arc<Mutex<HashMap<String, (u32, Instant)>>>,
}

const ADDRESS_WINDOW: Duration = Duration::from_secs(300);
const ADDRESS_MAX_FAILURES: u32 = 20;

impl AddressThrottle {
    fn blocked(&self, addr: &str) -> bool {
        let Ok(map) = self.inner.lock() else {
            return false;
        };
        map.get(addr).is_some_and(|(n, since)| {
            *n >= ADDRESS_MAX_FAILURES && since.elapsed() < ADDRESS_WINDOW
        })
    }

    fn failed(&self, addr: &str) {
        if let Ok(mut map) = self.inner.lock() {
            map.retain(|_, (_, since)| since.elapsed() < ADDRESS_WINDOW);
            let entry = map.entry(addr.to_string()).or_insert((0, Instant::now()));
            entry.0 += 1;
        }
    }
}

/// Paths anyone may reach without signing in.
fn is_public(path: &str) -> bool {
    path == "/sign-in"
        || path.starts_with("/auth/")
        // The JSON API authenticates each request by bearer token instead (see `ApiCaller`).
        || path.starts_with("/api/v1/")
        || path.starts_with("/pkg/")
        || matches!(
            path,
            "/healthz" | "/readyz" | "/metrics" | "/favicon.ico" | "/favicon.svg"
        )
}

/// Load the signed-in person (ending sessions past their absolute lifetime), then let public
/// paths through, send people without a session to the sign-in page, and refuse other
/// anonymous requests with 401.
pub async fn gate(
    State(state): State<AppState>,
    session: Session,
    mut request: Request,
    next: Next,
) -> Response {
    let mut user: Option<SignedIn> = session.get(USER_KEY).await.ok().flatten();
    if let Some(u) = &user {
        if chrono::Utc::now().timestamp() - u.signed_in_at > state.session_lifetime_secs {
            let _ = session.flush().await;
            user = None;
        }
    }
    let path = request.uri().path().to_string();
    if user.is_none()
        && !is_public(&path)
        && carries_session_cookie(request.headers())
        && session.is_empty().await
    {
        // A session cookie that is no session: expired, signed out (a replay) or forged.
        audit(
            &state,
            EventKind::PortalAction,
            "anonymous",
            "deny",
            "request refused: its session cookie is no session (expired, signed out or forged)",
            serde_json::json!({ "path": path, "method": request.method().as_str() }),
        )
        .await;
    }
    match user {
        Some(u) => {
            request.extensions_mut().insert(u);
            next.run(request).await
        }
        None if is_public(&path) => next.run(request).await,
        None if request.method() == axum::http::Method::GET && !path.starts_with("/api/") => {
            let target = request
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            Redirect::to(&format!("/sign-in?next={}", app::encode_query(&target))).into_response()
        }
        None => (StatusCode::UNAUTHORIZED, "sign-in required").into_response(),
    }
}

/// Whether the request presents a Countersign session cookie (either name, see the session
/// layer in `lib.rs`).
fn carries_session_cookie(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, _)| name == "countersign" || name == "__Host-countersign")
}

/// Compare two secrets (hashes, `state` values) in time that depends only on their length.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Only local, absolute paths are followed after sign-in (no open redirect).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/",
    }
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub next: Option<String>,
}

fn client_address(request_addr: Option<&ConnectInfo<SocketAddr>>) -> String {
    request_addr.map_or_else(|| "unknown".to_string(), |c| c.0.ip().to_string())
}

async fn audit(
    state: &AppState,
    kind: EventKind,
    who: &str,
    action: &str,
    reason: &str,
    context: serde_json::Value,
) {
    let mut event = NewAuditEvent::new(
        kind,
        who,
        "countersign",
        kind.as_str(),
        action,
        reason,
        "LOW",
    );
    event.context = context.to_string();
    // Anyone can make these happen: within the refusal budget.
    if action == "deny" && (who == "anonymous" || kind == EventKind::SignIn) {
        crate::security::append_refusal(state, event).await;
    } else if let Err(error) = state.audit.append(event).await {
        tracing::error!(%error, "could not audit a sign-in event");
    }
}

/// `POST /auth/login`: check a local account; on success start a fresh session.
pub async fn sign_in(
    State(state): State<AppState>,
    session: Session,
    addr: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    Form(form): Form<SignInForm>,
) -> Response {
    let address = client_address(addr.as_ref().map(|a| &a.0));
    let next = safe_next(form.next.as_deref()).to_string();
    let back = |error: &str| {
        Redirect::to(&format!(
            "/sign-in?error={error}&next={}",
            app::encode_query(&next)
        ))
        .into_response()
    };
    if !state.local_sign_in {
        audit(
            &state,
            EventKind::SignIn,
            &form.username,
            "deny",
            "sign-in refused: local accounts are switched off (sign in through the identity provider)",
            serde_json::json!({ "address": address }),
        )
        .await;
        return back("local_disabled");
    }
    if state.throttle.blocked(&address) {
        audit(
            &state,
            EventKind::SignIn,
            &form.username,
            "deny",
            "sign-in refused: too many failures from this address",
            serde_json::json!({ "address": address }),
        )
        .await;
        return back("throttled");
    }
    match accounts::authenticate(&state.db, &form.username, &form.password).await {
        Ok(account) => {
            let user = SignedIn {
                username: account.username.clone(),
                display_name: account.display_name,
                roles: account.roles,
                capabilities: account.capabilities,
                signed_in_at: chrono::Utc::now().timestamp(),
            };
            if let Err(response) = start_session(&session, &user, None).await {
                return response;
            }
            audit(
                &state,
                EventKind::SignIn,
                &account.username,
                "allow",
                "signed in with a local account",
                serde_json::json!({ "address": address, "roles": user.roles }),
            )
            .await;
            Redirect::to(&next).into_response()
        }
        Err(error) => {
            state.throttle.failed(&address);
            let (code, reason) = match &error {
                accounts::AccountError::Locked(_) => ("locked", error.to_string()),
                accounts::AccountError::Disabled => ("invalid", "account disabled".to_string()),
                accounts::AccountError::BadCredentials => ("invalid", error.to_string()),
                other => {
                    tracing::error!(error = %other, "sign-in failed");
                    ("unavailable", "sign-in unavailable".to_string())
                }
            };
            audit(
                &state,
                EventKind::SignIn,
                &form.username,
                "deny",
                &format!("sign-in refused: {reason}"),
                serde_json::json!({ "address": address }),
            )
            .await;
            back(code)
        }
    }
}

/// Start a signed-in session: a new session id (a session fixed before sign-in is worthless
/// after it), then the person (and the provider's ID token, for sign-out).
async fn start_session(
    session: &Session,
    user: &SignedIn,
    id_token: Option<&str>,
) -> Result<(), Response> {
    let fail = |error: tower_sessions::session::Error| {
        tracing::error!(%error, "could not store the session");
        (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
    };
    session.cycle_id().await.map_err(fail)?;
    session.insert(USER_KEY, user).await.map_err(fail)?;
    if let Some(token) = id_token {
        session.insert(ID_TOKEN_KEY, token).await.map_err(fail)?;
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    pub next: Option<String>,
}

/// `GET /auth/login`: with an identity provider, send the browser there (PKCE, state and nonce
/// kept in the session); with local accounts only, show the sign-in form.
pub async fn login_page(
    State(state): State<AppState>,
    session: Session,
    axum::extract::Query(query): axum::extract::Query<LoginQuery>,
) -> Response {
    let next = safe_next(query.next.as_deref()).to_string();
    let Some(oidc) = &state.oidc else {
        return Redirect::to(&format!("/sign-in?next={}", app::encode_query(&next)))
            .into_response();
    };
    // A provider that stopped answering gets a clear message here, not a browser error there.
    let begun = if oidc.check_reachable().await {
        oidc.begin(&next)
    } else {
        Err(oidc::OidcError::Unreachable(
            "no answer to the last probe".into(),
        ))
    };
    match begun {
        Ok((url, pending)) => {
            let now = chrono::Utc::now().timestamp();
            let list: Vec<oidc::Pending> = session
                .get(PENDING_KEY)
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
            if let Err(error) = session
                .insert(PENDING_KEY, oidc::remember(list, pending, now))
                .await
            {
                tracing::error!(%error, "could not store the sign-in state");
                return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
            }
            (StatusCode::SEE_OTHER, [(header::LOCATION, url.as_str())]).into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "sign-in through the identity provider is not possible yet");
            Redirect::to(&format!(
                "/sign-in?error=idp_unavailable&next={}",
                app::encode_query(&next)
            ))
            .into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub error_description: Option<String>,
}

/// `GET /auth/callback`: the provider sends the browser back here with a code (or an error).
/// The state must be one this session started and not used yet; the rest is checked by
/// [`oidc::Oidc::finish`]. Success and every refusal are audited.
pub async fn callback(
    State(state): State<AppState>,
    session: Session,
    addr: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    axum::extract::Query(query): axum::extract::Query<CallbackQuery>,
) -> Response {
    let address = client_address(addr.as_ref().map(|a| &a.0));
    let Some(oidc) = state.oidc.clone() else {
        return Redirect::to("/sign-in").into_response();
    };
    let refuse = |reason: String, code: &'static str| {
        let state = state.clone();
        let address = address.clone();
        async move {
            audit(
                &state,
                EventKind::SignIn,
                "anonymous",
                "deny",
                &format!("sign-in through the identity provider refused: {reason}"),
                serde_json::json!({ "address": address, "issuer": oidc_issuer(&state) }),
            )
            .await;
            Redirect::to(&format!("/sign-in?error={code}")).into_response()
        }
    };
    let now = chrono::Utc::now().timestamp();
    let mut list: Vec<oidc::Pending> = session
        .get(PENDING_KEY)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let pending = query
        .state
        .as_deref()
        .and_then(|s| oidc::take(&mut list, s, now));
    // Whatever happens next, this state cannot be used again.
    if let Err(error) = session.insert(PENDING_KEY, &list).await {
        tracing::error!(%error, "could not update the sign-in state");
        return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
    }
    let Some(pending) = pending else {
        return refuse(oidc::OidcError::State.to_string(), "oidc").await;
    };
    if let Some(error) = &query.error {
        let detail = query.error_description.as_deref().unwrap_or("");
        let code = if error == "access_denied" {
            "oidc_denied"
        } else {
            "oidc"
        };
        return refuse(
            oidc::OidcError::Provider(format!("{error} {detail}").trim().to_string()).to_string(),
            code,
        )
        .await;
    }
    let Some(code) = query.code.as_deref() else {
        return refuse("the response carries no code".into(), "oidc").await;
    };
    match oidc.finish(&pending, code, query.iss.as_deref()).await {
        Ok(person) => {
            let user = SignedIn {
                username: person.identity.id.clone(),
                display_name: person.identity.display_name.clone(),
                roles: person.identity.roles.iter().cloned().collect(),
                capabilities: person.identity.capabilities.iter().cloned().collect(),
                signed_in_at: now,
            };
            if let Err(response) = start_session(&session, &user, Some(&person.id_token)).await {
                return response;
            }
            audit(
                &state,
                EventKind::SignIn,
                &user.username,
                "allow",
                &format!("signed in through {}", oidc.provider_name()),
                serde_json::json!({
                    "address": address,
                    "issuer": oidc.issuer(),
                    "subject": person.subject,
                    "roles": user.roles,
                    "capabilities": user.capabilities,
                }),
            )
            .await;
            Redirect::to(&pending.next).into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "sign-in through the identity provider failed");
            let code = match error {
                oidc::OidcError::NotReady | oidc::OidcError::Unreachable(_) => "idp_unavailable",
                _ => "oidc",
            };
            refuse(error.to_string(), code).await
        }
    }
}

fn oidc_issuer(state: &AppState) -> Option<String> {
    state.oidc.as_ref().map(|o| o.issuer().to_string())
}

/// `POST /auth/logout`: end the session, then (with an identity provider) end the provider's
/// session too (RP-initiated logout).
pub async fn sign_out(State(state): State<AppState>, session: Session) -> Response {
    let id_token: Option<String> = session.get(ID_TOKEN_KEY).await.ok().flatten();
    if let Ok(Some(user)) = session.get::<SignedIn>(USER_KEY).await {
        audit(
            &state,
            EventKind::SignOut,
            &user.username,
            "allow",
            "signed out",
            serde_json::json!({}),
        )
        .await;
    }
    let _ = session.flush().await;
    // Only a session that came from the provider ends there too.
    let target = state
        .oidc
        .as_ref()
        .zip(id_token.as_deref())
        .and_then(|(o, token)| o.logout_url(token))
        .map_or_else(|| "/sign-in?signed_out=1".to_string(), |u| u.to_string());
    (StatusCode::SEE_OTHER, [(header::LOCATION, target)]).into_response()
}

/// With no account at all, create `admin` from COUNTERSIGN_ADMIN_PASSWORD, or with a generated
/// password printed once on standard error (never logged).
pub async fn bootstrap_admin(state: &AppState, configured: Option<&str>) -> Result<(), String> {
    if accounts::count(&state.db)
        .await
        .map_err(|e| e.to_string())?
        > 0
    {
        return Ok(());
    }
    let (password, generated) = match configured {
        Some(p) => (p.to_string(), false),
        None => (accounts::generate_password(), true),
    };
    accounts::add(&state.db, "admin", &password, &["admin".to_string()], &[])
        .await
        .map_err(|e| format!("cannot create the first admin (setting admin_password): {e}"))?;
    audit(
        state,
        EventKind::PortalAction,
        "countersign",
        "allow",
        "first admin account created",
        serde_json::json!({ "username": "admin", "generated_password": generated }),
    )
    .await;
    if generated {
        eprintln!(
            "\n  First start: created the local account `admin` with password\n\n      {password}\n\n  It is shown only this once. Change it with `countersign user passwd admin`.\n"
        );
    }
    Ok(())
}

/// A caller of the JSON API (`/api/v1/...`), authenticated by `Authorization: Bearer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiCaller {
    pub id: String,
    pub kind: &'static str,
    pub roles: Vec<String>,
    pub capabilities: Vec<String>,
}

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
            Unauthenticated::Unavailable(message) => crate::api::ApiError {
                retry_after: Some(5),
                action: Some("deny"),
                ..crate::api::ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
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
                    "deny",
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
        match state.token_cache.authenticate(&state.db, &presented).await {
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
        (status = 200, description = "The caller", body = crate::api::schema::CallerView),
        (status = 401, description = "No valid bearer token", body = crate::api::schema::ErrorBody),
        (status = 503, description = "The store (or the identity provider) is unavailable; retry", body = crate::api::schema::ErrorBody),
    )
)]
pub async fn api_whoami(caller: ApiCaller) -> axum::Json<ApiCaller> {
    axum::Json(caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(safe_next(Some("/approvals?x=1")), "/approvals?x=1");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn public_paths() {
        assert!(
            is_public("/sign-in") && is_public("/pkg/countersign.wasm") && is_public("/healthz")
        );
        assert!(!is_public("/") && !is_public("/audit") && !is_public("/api/whoami"));
    }

    #[test]
    fn the_dummy_hash_is_a_real_argon2_hash() {
        assert!(
            argon2::password_hash::PasswordHash::new(super::accounts::DUMMY_HASH_FOR_TESTS).is_ok()
        );
    }
}
