//! Who is signed in. People sign in with a local account (the embedded default) and get a
//! server-side session (tower-sessions, stored in the database). Pages need a session; the
//! sign-in page, static files and probes do not. A session in use slides: its idle deadline is
//! pushed back as it is used (written at most once a refresh interval), never past its absolute
//! lifetime. Every sign-in, refusal and sign-out is audited.

use crate::services::identity::{accounts, oidc};
use crate::store::{AuditAction, EventKind, NewAuditEvent, Risk};
use crate::AppState;
use axum::{
    extract::{ConnectInfo, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
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
/// When the session's idle deadline was last pushed back (unix seconds).
const REFRESHED_KEY: &str = "countersign.refreshed";

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

/// Failed sign-ins per client address, to slow down guessing across accounts; and per name
/// that is no account (see [`accounts::UnknownNames`]). The client address is the peer's, or
/// behind a trusted reverse proxy the one it forwarded (see
/// [`crate::config::TrustedProxies`]).
#[derive(Clone, Default)]
pub struct AddressThrottle {
    inner: Arc<Mutex<HashMap<String, (u32, Instant)>>>,
    proxies: Arc<crate::config::TrustedProxies>,
    unknown: Arc<accounts::UnknownNames>,
}

const ADDRESS_WINDOW: Duration = Duration::from_secs(300);
const ADDRESS_MAX_FAILURES: u32 = 20;

impl AddressThrottle {
    /// A throttle that believes `X-Forwarded-For` from these proxies (setting
    /// `trusted_proxies`; [`AddressThrottle::default`] believes nobody's).
    pub fn new(proxies: crate::config::TrustedProxies) -> AddressThrottle {
        AddressThrottle {
            proxies: Arc::new(proxies),
            ..AddressThrottle::default()
        }
    }

    /// The address a request comes from, as the throttle and the audit trail name it.
    pub fn client_address(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> String {
        peer.map_or_else(
            || "unknown".to_string(),
            |peer| self.proxies.client(peer.ip(), headers).to_string(),
        )
    }

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
        // So is the MCP gateway (see `mcp::routes`).
        || path == "/mcp"
        || path.starts_with("/mcp/")
        // Metadata for clients that have not signed in yet (others are not found, never a
        // sign-in page: a client reading metadata follows no redirect to a form).
        || path.starts_with("/.well-known/")
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
        let now = chrono::Utc::now().timestamp();
        if now - u.signed_in_at > state.session_lifetime_secs {
            let _ = session.flush().await;
            user = None;
        } else {
            keep_alive(&session, u, now, &state).await;
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
            AuditAction::Deny,
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

/// A session used at `now`: push its idle deadline back if it is time to (see
/// [`extended_deadline`]). The session layer then saves it with the new deadline and sends the
/// cookie again with the new `Max-Age`; between refreshes nothing is written.
async fn keep_alive(session: &Session, user: &SignedIn, now: i64, state: &AppState) {
    let last: i64 = session
        .get(REFRESHED_KEY)
        .await
        .ok()
        .flatten()
        .unwrap_or(user.signed_in_at);
    let Some(deadline) = extended_deadline(
        now,
        last,
        user.signed_in_at,
        state.session_idle_secs,
        state.session_lifetime_secs,
    ) else {
        return;
    };
    set_deadline(session, deadline);
    if let Err(error) = session.insert(REFRESHED_KEY, now).await {
        tracing::warn!(%error, "could not extend the session");
    }
}

/// How often, at most, a session in use is written again to push its idle deadline back: a
/// twentieth of the idle limit, at least a second and at most a minute. A session therefore
/// ends between `idle - interval` and `idle` after its last use.
pub(crate) fn refresh_interval(idle_secs: i64) -> i64 {
    (idle_secs / 20).clamp(1, 60)
}

/// The new deadline of a session used at `now` whose deadline was last set at `last_refresh`
/// (sign-in, or the last refresh), if it should be written: when at least
/// [`refresh_interval`] has passed since then and the deadline moves. It is `idle` after `now`,
/// but never past the absolute lifetime (`lifetime` after sign-in).
pub(crate) fn extended_deadline(
    now: i64,
    last_refresh: i64,
    signed_in_at: i64,
    idle: i64,
    lifetime: i64,
) -> Option<i64> {
    let end = signed_in_at.saturating_add(lifetime);
    let current = last_refresh.saturating_add(idle).min(end);
    let extended = now.saturating_add(idle).min(end);
    (now.saturating_sub(last_refresh) >= refresh_interval(idle) && extended > current)
        .then_some(extended)
}

/// Make the session (its stored record and its cookie) end at `deadline` (unix seconds).
fn set_deadline(session: &Session, deadline: i64) {
    if let Ok(at) = time::OffsetDateTime::from_unix_timestamp(deadline) {
        session.set_expiry(Some(tower_sessions::Expiry::AtDateTime(at)));
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

/// Where to go after sign-in: `next` when it is a local path, else `/` (no open redirect).
/// Followed only, in its normalised form: a path that starts with one `/` (not `//`, not
/// `/\`), holds no backslash and no control character (tab, CR, LF, ...) as written nor once
/// percent-decoded (`/%09/evil.example` is `/\t/evil.example`, which a browser reads as
/// `//evil.example`), and stays on this site when resolved.
pub(crate) fn safe_next(next: Option<&str>) -> String {
    next.and_then(local_path).unwrap_or_else(|| "/".to_string())
}

/// The longest `next` followed.
const MAX_NEXT_LEN: usize = 2_048;

fn local_path(next: &str) -> Option<String> {
    if next.len() > MAX_NEXT_LEN {
        return None;
    }
    let base = url::Url::parse("http://countersign.invalid/").ok()?;
    // As written and decoded, layer by layer (`%2509` is `%09` once decoded): each must be a
    // path that stays here. The answer is the first, normalised.
    let mut layer = next.to_string();
    let mut normalised: Option<String> = None;
    for _ in 0..4 {
        let resolved = resolve_local(&base, &layer)?;
        if normalised.is_none() {
            normalised = Some(resolved);
        }
        let decoded = percent_decode(&layer);
        if decoded == layer {
            return normalised;
        }
        layer = decoded;
    }
    None
}

/// `path` resolved against this site (dot segments gone, anything unusual percent-encoded), if
/// it is a path that stays here.
fn resolve_local(base: &url::Url, path: &str) -> Option<String> {
    if !path.starts_with('/') || leaves_the_site(path) {
        return None;
    }
    let url = base.join(path).ok()?;
    if url.origin() != base.origin() {
        return None;
    }
    let mut resolved = url.path().to_string();
    if let Some(query) = url.query() {
        resolved.push('?');
        resolved.push_str(query);
    }
    if let Some(fragment) = url.fragment() {
        resolved.push('#');
        resolved.push_str(fragment);
    }
    (resolved.starts_with('/')
        && !leaves_the_site(&resolved)
        && HeaderValue::from_str(&resolved).is_ok())
    .then_some(resolved)
}

/// Whether a browser could read this path as another site's, or it holds what has no place
/// in a `Location` header: `//`, a backslash (`/\` is `//` to browsers), a control character.
fn leaves_the_site(path: &str) -> bool {
    path.starts_with("//") || path.chars().any(|c| c.is_control() || c == '\\')
}

/// `%XX` sequences decoded (others left as they are); invalid UTF-8 is replaced.
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// A 303 to a local path (`/` should it not make a valid header).
fn see_other(location: &str) -> Response {
    let location =
        HeaderValue::from_str(location).unwrap_or_else(|_| HeaderValue::from_static("/"));
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub next: Option<String>,
}

pub(crate) async fn audit(
    state: &AppState,
    kind: EventKind,
    who: &str,
    action: AuditAction,
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
        Risk::Low,
    );
    event.context = context.to_string();
    // Anyone can make these happen: within the refusal budget.
    if action == AuditAction::Deny && (who == "anonymous" || kind == EventKind::SignIn) {
        crate::web::security::append_refusal(state, event).await;
    } else if let Err(error) = state.audit.append(event).await {
        tracing::error!(%error, "could not audit a sign-in event");
    }
}

/// `POST /auth/login`: check a local account; on success start a fresh session.
pub async fn sign_in(
    State(state): State<AppState>,
    session: Session,
    addr: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let address = state
        .throttle
        .client_address(addr.map(|a| (a.0).0), &headers);
    let next = safe_next(form.next.as_deref());
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
            AuditAction::Deny,
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
            AuditAction::Deny,
            "sign-in refused: too many failures from this address",
            serde_json::json!({ "address": address }),
        )
        .await;
        return back("throttled");
    }
    match accounts::authenticate_guarded(
        &state.store,
        &form.username,
        &form.password,
        &state.throttle.unknown,
    )
    .await
    {
        Ok(account) => {
            let user = SignedIn {
                username: account.username.clone(),
                display_name: account.display_name,
                roles: account.roles,
                capabilities: account.capabilities,
                signed_in_at: chrono::Utc::now().timestamp(),
            };
            if let Err(response) = start_session(&state, &session, &user, None).await {
                return response;
            }
            audit(
                &state,
                EventKind::SignIn,
                &account.username,
                AuditAction::Allow,
                "signed in with a local account",
                serde_json::json!({ "address": address, "roles": user.roles }),
            )
            .await;
            see_other(&next)
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
                AuditAction::Deny,
                &format!("sign-in refused: {reason}"),
                serde_json::json!({ "address": address }),
            )
            .await;
            back(code)
        }
    }
}

/// Start a signed-in session: a new session id (a session fixed before sign-in is worthless
/// after it), its first idle deadline, then the person (and the provider's ID token, for
/// sign-out).
async fn start_session(
    state: &AppState,
    session: &Session,
    user: &SignedIn,
    id_token: Option<&str>,
) -> Result<(), Response> {
    let fail = |error: tower_sessions::session::Error| {
        tracing::error!(%error, "could not store the session");
        (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
    };
    session.cycle_id().await.map_err(fail)?;
    set_deadline(
        session,
        user.signed_in_at
            .saturating_add(state.session_idle_secs.min(state.session_lifetime_secs)),
    );
    session.insert(USER_KEY, user).await.map_err(fail)?;
    session
        .insert(REFRESHED_KEY, user.signed_in_at)
        .await
        .map_err(fail)?;
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
    let next = safe_next(query.next.as_deref());
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
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<CallbackQuery>,
) -> Response {
    let address = state
        .throttle
        .client_address(addr.map(|a| (a.0).0), &headers);
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
                AuditAction::Deny,
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
            if let Err(response) =
                start_session(&state, &session, &user, Some(&person.id_token)).await
            {
                return response;
            }
            audit(
                &state,
                EventKind::SignIn,
                &user.username,
                AuditAction::Allow,
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
            // Checked when the sign-in began, and again: a session may hold a sign-in begun
            // before this check was as strict.
            see_other(&safe_next(Some(pending.next.as_str())))
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
            AuditAction::Allow,
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

message_error!(
    /// Why the first admin account could not be made (the server does not start).
    BootstrapError
);

/// With no account at all, create `admin` from COUNTERSIGN_ADMIN_PASSWORD, or with a generated
/// password printed once on standard error (never logged).
pub async fn bootstrap_admin(
    state: &AppState,
    configured: Option<&str>,
) -> Result<(), BootstrapError> {
    if accounts::count(&state.store)
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
    // Replicas starting together on an empty database race here: one creates `admin`, and the
    // others take that one and serve.
    let created = accounts::add_first_admin(&state.store, &password)
        .await
        .map_err(|e| format!("cannot create the first admin (setting admin_password): {e}"))?;
    if !created {
        tracing::info!("the first admin account was created by another replica");
        return Ok(());
    }
    audit(
        state,
        EventKind::PortalAction,
        "countersign",
        AuditAction::Allow,
        "first admin account created",
        serde_json::json!({ "username": "admin", "generated_password": generated }),
    )
    .await;
    if generated {
        // Not `eprintln!`, which panics when standard error cannot be written.
        use std::io::Write;
        let shown = writeln!(
            std::io::stderr(),
            "\n  First start: created the local account `admin` with password\n\n      {password}\n\n  It is shown only this once. Change it with `countersign user passwd admin`.\n"
        );
        if shown.is_err() {
            return Err(
                "created the first admin but could not show its password on standard error; \
                 set it with `countersign user passwd admin`"
                    .into(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        for kept in [
            "/",
            "/approvals?x=1",
            "/ok?x=1",
            "/approvals/abc",
            "/audit?from=1&caller=alice",
            "/jobs/0193a2b4-7c1d-7e5f-9a0b-123456789abc",
            "/reports?q=100%25",
            "/a/b#section",
        ] {
            assert_eq!(safe_next(Some(kept)), kept, "{kept}");
        }
        let refused = [
            // Scheme-relative, and everything a browser turns into it.
            "//evil.example",
            "///evil.example",
            "/\\evil.example",
            "\\/evil.example",
            "/%5Cevil.example",
            "/%5cevil.example",
            "/%2F/evil.example",
            "/%2f%2fevil.example",
            "/.//evil.example",
            "/./%2F/evil.example",
            // Tab, CR, LF and other control characters, as written or percent-encoded (once
            // or twice); a browser drops tabs and newlines, so `/<TAB>/x` is `//x` to it.
            "/%09/evil.example/x",
            "/\t/evil.example",
            "/%2509/evil.example",
            "/\r\nLocation: https://evil.example",
            "/%0d%0aSet-Cookie:%20x=1",
            "/%0D%0ASet-Cookie: x=1",
            "/ok\n",
            "/ok?x=%0A",
            "/\u{0}x",
            "/%00x",
            "/\u{7f}",
            "/\u{85}",
            // Not a path.
            "https://evil.example",
            "http:/evil.example",
            "javascript:alert(1)",
            "evil.example",
            " /ok",
            "",
        ];
        for next in refused {
            assert_eq!(safe_next(Some(next)), "/", "{next:?}");
        }
        assert_eq!(safe_next(None), "/");
        assert_eq!(
            safe_next(Some(format!("/{}", "a".repeat(3_000)).as_str())),
            "/"
        );
        // Normalised: dot segments resolved, what is unusual percent-encoded.
        assert_eq!(safe_next(Some("/a/../approvals")), "/approvals");
        assert_eq!(safe_next(Some("/audit?caller=a b")), "/audit?caller=a%20b");
        assert_eq!(safe_next(Some("/jobs/é")), "/jobs/%C3%A9");
        // Every answer makes a valid Location header.
        for next in refused.iter().chain(["/a b", "/é?ü=1"].iter()) {
            assert!(
                HeaderValue::from_str(&safe_next(Some(*next))).is_ok(),
                "{next:?}"
            );
        }
    }

    #[test]
    fn a_session_in_use_slides_and_an_idle_one_ends() {
        // Injected clock: what the store would hold as the session's deadline as it is used.
        let (idle, lifetime, signed_in) = (60, 3_600, 1_000_i64);
        assert_eq!(refresh_interval(idle), 3);
        assert_eq!(refresh_interval(30 * 60), 60, "at most once a minute");
        assert_eq!(refresh_interval(10), 1);
        let (mut deadline, mut last, mut writes) = (signed_in + idle, signed_in, 0);
        // Used every 10 s for five times the idle limit: never ends.
        for now in (signed_in + 10..=signed_in + 5 * idle).step_by(10) {
            assert!(now < deadline, "alive at {now} (deadline {deadline})");
            if let Some(next) = extended_deadline(now, last, signed_in, idle, lifetime) {
                assert_eq!(next, now + idle);
                (deadline, last, writes) = (next, now, writes + 1);
            }
        }
        assert!(deadline > signed_in + 5 * idle);
        assert_eq!(writes, 30);
        // Used every second: written only once an interval, not on every request.
        let mut requests = 0;
        writes = 0;
        let start = last;
        for now in start + 1..=start + 120 {
            assert!(now < deadline);
            requests += 1;
            if let Some(next) = extended_deadline(now, last, signed_in, idle, lifetime) {
                (deadline, last, writes) = (next, now, writes + 1);
            }
        }
        assert_eq!((requests, writes), (120, 40));
        // Then idle: the deadline passes.
        assert!(last + idle + 1 > deadline, "an idle session ends");
        assert_eq!(
            extended_deadline(last + 1, last, signed_in, idle, lifetime),
            None,
            "too soon to write again"
        );
        // Never past the absolute lifetime: the deadline stops there, and so do the writes.
        let end = signed_in + lifetime;
        assert_eq!(
            extended_deadline(end - 30, end - 90, signed_in, idle, lifetime),
            Some(end)
        );
        assert_eq!(
            extended_deadline(end - 20, end - 30, signed_in, idle, lifetime),
            None,
            "the deadline would not move"
        );
        // A refresh recorded in the future (another replica's clock): nothing is written.
        assert_eq!(
            extended_deadline(2_000, 2_100, signed_in, idle, lifetime),
            None
        );
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
        assert!(argon2::password_hash::PasswordHash::new(
            crate::services::identity::accounts::DUMMY_HASH_FOR_TESTS
        )
        .is_ok());
    }
}
