//! Sign-in through an OpenID Connect provider (Keycloak), with the `openidconnect` crate.
//!
//! - Discovery runs in the background at start-up and retries with back-off while the provider
//!   is down (`/readyz` reports it); sign-in waits for it, local sessions and API tokens do not.
//! - Authorization code flow with PKCE (S256); `state`, `nonce` and the PKCE verifier stay on the
//!   server, in the session, and are used once. The ID token's signature, issuer, audience,
//!   expiry (with clock-skew leeway) and nonce are verified by `openidconnect`; roles come from
//!   the access token, which Keycloak issues as a JWT signed by the realm's keys and which is
//!   verified like any bearer token (see [`super::tokens`]).
//! - One key set serves both: fetched from `jwks_uri`, refreshed when a token names an unknown
//!   key (at most once per [`JWKS_MIN_REFRESH`]), so bearer tokens keep verifying from the cached
//!   keys while the provider is down.
//! - Once discovered, the provider is probed every [`PROBE_INTERVAL`] (and before a sign-in when
//!   the last probe is older than [`PROBE_FRESH`]): while it does not answer, `/readyz` reports
//!   it, new sign-ins get a clear message instead of a redirect to a dead page, and sessions,
//!   API tokens and bearer tokens (from the cached keys) keep working.
//! - Sign-out ends the local session and sends the browser to the provider's
//!   `end_session_endpoint` (RP-initiated logout).

use super::tokens::{self, Claims, Identity, RoleMapping, TokenError, Verifier};
use crate::config::{Config, ConfigError};
use jsonwebtoken::jwk::JwkSet;
use openidconnect::{
    core::{CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreJsonWebKeySet},
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, LogoutRequest, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadataWithLogout, RedirectUrl, Scope,
    TokenResponse,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Clock skew tolerated on the ID token's expiry.
const CLOCK_SKEW_SECS: i64 = 60;
/// The key set is fetched again for an unknown `kid` at most this often.
pub const JWKS_MIN_REFRESH: Duration = Duration::from_secs(10);
/// Discovery retries start here and double up to [`DISCOVERY_MAX_DELAY`].
const DISCOVERY_FIRST_DELAY: Duration = Duration::from_secs(1);
const DISCOVERY_MAX_DELAY: Duration = Duration::from_secs(60);
/// How long a started sign-in may take at the provider.
pub const PENDING_TTL_SECS: i64 = 600;
/// Sign-ins started in parallel (several tabs) that are remembered per session.
const MAX_PENDING: usize = 4;
/// Every call to the provider gives up after this long.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the discovered provider is checked in the background.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(10);
/// A sign-in trusts a probe this recent; an older one is repeated first.
pub const PROBE_FRESH: Duration = Duration::from_secs(3);
/// A probe that takes longer than this counts as the provider being down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Why a sign-in or token check through the provider did not succeed. The `Display` text is
/// for logs and the audit trail; people see a generic message.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider has not been reached yet")]
    NotReady,
    #[error("the identity provider could not be reached: {0}")]
    Unreachable(String),
    #[error("unknown, expired or already used sign-in state")]
    State,
    #[error("the provider reported an error: {0}")]
    Provider(String),
    #[error("the provider's answer was refused: {0}")]
    Refused(String),
    #[error("bearer token refused: {0}")]
    Token(#[from] TokenError),
}

/// A sign-in started at `/auth/login`, kept in the session until its callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub next: String,
    pub started_at: i64,
}

/// Remember `pending` among the session's other unfinished sign-ins (newest few, unexpired).
pub fn remember(mut list: Vec<Pending>, pending: Pending, now: i64) -> Vec<Pending> {
    list.retain(|p| now - p.started_at <= PENDING_TTL_SECS);
    list.push(pending);
    if list.len() > MAX_PENDING {
        let excess = list.len() - MAX_PENDING;
        list.drain(..excess);
    }
    list
}

/// Take the sign-in whose `state` came back (constant-time compare); each state works once.
pub fn take(list: &mut Vec<Pending>, state: &str, now: i64) -> Option<Pending> {
    let index = list
        .iter()
        .position(|p| super::constant_time_eq(p.state.as_bytes(), state.as_bytes()))?;
    let pending = list.remove(index);
    (now - pending.started_at <= PENDING_TTL_SECS).then_some(pending)
}

/// A person signed in through the provider.
#[derive(Debug, Clone)]
pub struct SignedInPerson {
    pub identity: Identity,
    /// Kept for the logout request's `id_token_hint`.
    pub id_token: String,
    pub subject: String,
}

struct Discovered {
    metadata: ProviderMetadataWithLogout,
    verifier: Verifier,
}

/// The configured provider: settings, discovered metadata and keys.
pub struct Oidc {
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: ClientSecret,
    redirect: RedirectUrl,
    scopes: Vec<String>,
    post_logout: Option<PostLogoutRedirectUrl>,
    audiences: Vec<String>,
    mapping: RoleMapping,
    provider_name: String,
    http: reqwest::Client,
    discovered: RwLock<Option<Arc<Discovered>>>,
    last_jwks_fetch: Mutex<Option<Instant>>,
    refreshing: tokio::sync::Mutex<()>,
    /// Whether the provider answered its last probe (true right after discovery).
    reachable: AtomicBool,
    /// When the last probe ended; one probe runs at a time.
    probe: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.issuer.as_str())
            .field("client_id", &self.client_id.as_str())
            .field("ready", &self.is_ready())
            .field("reachable", &self.is_reachable())
            .finish_non_exhaustive()
    }
}

impl Oidc {
    /// The provider named by the configuration, or `None` without an issuer.
    pub fn from_config(
        config: &Config,
        capabilities: BTreeSet<String>,
    ) -> Result<Option<Oidc>, ConfigError> {
        let Some(issuer) = &config.oidc_issuer else {
            return Ok(None);
        };
        let bad =
            |setting: &'static str, message: String| ConfigError::Invalid { setting, message };
        let issuer = IssuerUrl::new(issuer.clone())
            .map_err(|e| bad("oidc_issuer", format!("not a URL: {e}")))?;
        let secret = config
            .oidc_client_secret
            .as_ref()
            .ok_or_else(|| bad("oidc_client_secret", "is required with oidc_issuer".into()))?;
        let redirect = config
            .oidc_redirect_url()
            .ok_or_else(|| bad("oidc_redirect_url", "is required with oidc_issuer".into()))?;
        let redirect = RedirectUrl::new(redirect)
            .map_err(|e| bad("oidc_redirect_url", format!("not a URL: {e}")))?;
        // After sign-out the provider sends people back to our sign-in page.
        let post_logout = url::Url::parse(redirect.as_str())
            .ok()
            .and_then(|u| u.join("/sign-in?signed_out=1").ok())
            .map(PostLogoutRedirectUrl::from_url);
        let http = reqwest::Client::builder()
            // Following redirects would let a provider point token requests elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(|e| bad("oidc_issuer", format!("cannot build an HTTP client: {e}")))?;
        let roles: HashMap<String, String> = config.oidc_role_map()?.into_iter().collect();
        Ok(Some(Oidc {
            issuer,
            client_id: ClientId::new(config.oidc_client_id.clone()),
            client_secret: ClientSecret::new(secret.expose().to_string()),
            redirect,
            scopes: config
                .oidc_scopes
                .split_whitespace()
                .filter(|s| *s != "openid")
                .map(str::to_string)
                .collect(),
            post_logout,
            audiences: config.oidc_audiences(),
            mapping: RoleMapping {
                client_id: config.oidc_client_id.clone(),
                roles,
                capabilities,
            },
            provider_name: config.oidc_provider_name.clone(),
            http,
            discovered: RwLock::new(None),
            last_jwks_fetch: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            reachable: AtomicBool::new(false),
            probe: tokio::sync::Mutex::new(None),
        }))
    }

    pub fn provider_name(&self) -> &str {
        &self.provider_name
    }

    pub fn issuer(&self) -> &str {
        self.issuer.as_str()
    }

    /// The provider's origin (`scheme://host:port`), which forms may be redirected to.
    pub fn origin(&self) -> String {
        self.issuer.url().origin().ascii_serialization()
    }

    /// Whether discovery has succeeded (so people can sign in).
    pub fn is_ready(&self) -> bool {
        self.discovered.read().map(|d| d.is_some()).unwrap_or(false)
    }

    /// Whether discovery has succeeded and the provider answered its last probe.
    pub fn is_reachable(&self) -> bool {
        self.is_ready() && self.reachable.load(Ordering::Acquire)
    }

    /// Whether people can sign in through the provider now: the last probe if it is recent
    /// (or another probe is running), else a new probe.
    pub async fn check_reachable(&self) -> bool {
        if !self.is_ready() {
            return false;
        }
        let Ok(mut last) = self.probe.try_lock() else {
            return self.is_reachable();
        };
        if last.is_some_and(|t| t.elapsed() < PROBE_FRESH) {
            return self.is_reachable();
        }
        let up = self.answers().await;
        *last = Some(Instant::now());
        let was = self.reachable.swap(up, Ordering::AcqRel);
        match (was, up) {
            (true, false) => tracing::warn!(
                issuer = %self.issuer.as_str(),
                "identity provider unreachable; new sign-ins wait, sessions and tokens keep working"
            ),
            (false, true) => {
                tracing::info!(issuer = %self.issuer.as_str(), "identity provider reachable again");
            }
            _ => {}
        }
        up
    }

    /// One probe: the provider serves its discovery document in time.
    async fn answers(&self) -> bool {
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.as_str().trim_end_matches('/')
        );
        let Ok(url) = url::Url::parse(&discovery) else {
            return false;
        };
        self.http
            .get(url)
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    fn current(&self) -> Option<Arc<Discovered>> {
        self.discovered.read().ok().and_then(|d| d.clone())
    }

    /// Discover in the background until it succeeds, backing off between attempts; then probe
    /// the provider every [`PROBE_INTERVAL`].
    pub fn spawn_discovery(self: &Arc<Self>) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut delay = DISCOVERY_FIRST_DELAY;
            loop {
                match this.discover().await {
                    Ok(()) => {
                        tracing::info!(issuer = %this.issuer.as_str(), "identity provider discovered");
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(
                            issuer = %this.issuer.as_str(),
                            %error,
                            retry_in_secs = delay.as_secs(),
                            "identity provider unavailable; sign-in through it waits, retrying"
                        );
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(DISCOVERY_MAX_DELAY);
                    }
                }
            }
            let mut every = tokio::time::interval(PROBE_INTERVAL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                this.check_reachable().await;
            }
        });
    }

    /// Fetch the provider's metadata and keys once.
    pub async fn discover(&self) -> Result<(), OidcError> {
        let metadata = ProviderMetadataWithLogout::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| OidcError::Unreachable(describe(&e)))?;
        let (jwks, core) = self.fetch_jwks(metadata.jwks_uri().url()).await?;
        let metadata = metadata.set_jwks(core);
        let verifier = Verifier::new(self.issuer.as_str(), self.audiences.clone(), jwks);
        if let Ok(mut slot) = self.discovered.write() {
            *slot = Some(Arc::new(Discovered { metadata, verifier }));
        }
        self.reachable.store(true, Ordering::Release);
        Ok(())
    }

    async fn fetch_jwks(&self, uri: &url::Url) -> Result<(JwkSet, CoreJsonWebKeySet), OidcError> {
        if let Ok(mut last) = self.last_jwks_fetch.lock() {
            *last = Some(Instant::now());
        }
        let body = self
            .http
            .get(uri.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| OidcError::Unreachable(format!("key set: {e}")))?
            .bytes()
            .await
            .map_err(|e| OidcError::Unreachable(format!("key set: {e}")))?;
        let jwks: JwkSet = serde_json::from_slice(&body)
            .map_err(|e| OidcError::Refused(format!("key set is not a JWK set: {e}")))?;
        let core: CoreJsonWebKeySet = serde_json::from_slice(&body)
            .map_err(|e| OidcError::Refused(format!("key set is not a JWK set: {e}")))?;
        Ok((jwks, core))
    }

    /// Fetch the key set again (the provider rotated its keys), unless that happened just now.
    async fn refresh_keys(&self) -> Result<bool, OidcError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let recent = self
            .last_jwks_fetch
            .lock()
            .ok()
            .and_then(|l| *l)
            .is_some_and(|t| t.elapsed() < JWKS_MIN_REFRESH);
        if recent {
            return Ok(false);
        }
        let Some(current) = self.current() else {
            return Err(OidcError::NotReady);
        };
        let (jwks, core) = self.fetch_jwks(current.metadata.jwks_uri().url()).await?;
        let mut verifier = current.verifier.clone();
        verifier.set_keys(jwks);
        let metadata = current.metadata.clone().set_jwks(core);
        if let Ok(mut slot) = self.discovered.write() {
            *slot = Some(Arc::new(Discovered { metadata, verifier }));
        }
        tracing::info!(issuer = %self.issuer.as_str(), "identity provider keys refreshed");
        Ok(true)
    }

    /// Verify a bearer JWT from the provider (a service's client-credentials token or a
    /// person's access token) and map its claims.
    pub async fn verify_bearer(&self, token: &str) -> Result<(Claims, Identity), OidcError> {
        let current = self.current().ok_or(OidcError::NotReady)?;
        let claims = match current.verifier.verify(token) {
            Err(TokenError::UnknownKey(kid)) => {
                if !self.refresh_keys().await.unwrap_or(false) {
                    return Err(TokenError::UnknownKey(kid).into());
                }
                let current = self.current().ok_or(OidcError::NotReady)?;
                current.verifier.verify(token)?
            }
            other => other?,
        };
        let identity = tokens::identity(&claims, &self.mapping);
        Ok((claims, identity))
    }

    fn client(&self, discovered: &Discovered) -> Client {
        CoreClient::from_provider_metadata(
            discovered.metadata.clone(),
            self.client_id.clone(),
            Some(self.client_secret.clone()),
        )
        .set_redirect_uri(self.redirect.clone())
    }

    /// Start a sign-in: the provider's authorization URL and what to keep until the callback.
    pub fn begin(&self, next: &str) -> Result<(url::Url, Pending), OidcError> {
        let discovered = self.current().ok_or(OidcError::NotReady)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let client = self.client(&discovered);
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &self.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        Ok((
            url,
            Pending {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                pkce_verifier: verifier.secret().clone(),
                next: next.to_string(),
                started_at: chrono::Utc::now().timestamp(),
            },
        ))
    }

    /// Finish a sign-in: exchange the code (with the PKCE verifier), verify the ID token and
    /// its nonce, verify the access token and read the person's roles from it.
    pub async fn finish(
        &self,
        pending: &Pending,
        code: &str,
        issuer_param: Option<&str>,
    ) -> Result<SignedInPerson, OidcError> {
        // RFC 9207: a response naming another issuer is a mix-up attack.
        if issuer_param.is_some_and(|iss| iss != self.issuer.as_str()) {
            return Err(OidcError::Refused(
                "the response names another issuer".into(),
            ));
        }
        let discovered = self.current().ok_or(OidcError::NotReady)?;
        let client = self.client(&discovered);
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Refused(format!("no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Provider(describe(&e)))?;
        let id_token = response
            .id_token()
            .ok_or_else(|| OidcError::Refused("the provider returned no ID token".into()))?;
        let subject = match self.check_id_token(&client, id_token, &pending.nonce) {
            Ok(subject) => subject,
            // A key we have not seen: the provider may have rotated its keys since discovery.
            Err(first) => {
                if !self.refresh_keys().await.unwrap_or(false) {
                    return Err(first);
                }
                let discovered = self.current().ok_or(OidcError::NotReady)?;
                self.check_id_token(&self.client(&discovered), id_token, &pending.nonce)?
            }
        };
        let (claims, identity) = self.verify_bearer(response.access_token().secret()).await?;
        if claims.sub.as_deref().is_some_and(|s| s != subject) {
            return Err(OidcError::Refused(
                "the access token and the ID token name different people".into(),
            ));
        }
        if identity.is_service {
            return Err(OidcError::Refused(
                "a service account cannot sign in".into(),
            ));
        }
        Ok(SignedInPerson {
            identity,
            id_token: id_token.to_string(),
            subject,
        })
    }

    fn check_id_token(
        &self,
        client: &Client,
        id_token: &CoreIdToken,
        nonce: &str,
    ) -> Result<String, OidcError> {
        let verifier = client
            .id_token_verifier()
            .set_time_fn(|| chrono::Utc::now() - chrono::Duration::seconds(CLOCK_SKEW_SECS));
        let claims = id_token
            .claims(&verifier, &Nonce::new(nonce.to_string()))
            .map_err(|e| OidcError::Refused(format!("ID token: {e}")))?;
        Ok(claims.subject().as_str().to_string())
    }

    /// Where to send the browser after the local session ended: the provider's end-session
    /// endpoint when it has one.
    pub fn logout_url(&self, id_token: &str) -> Option<url::Url> {
        let discovered = self.current()?;
        let endpoint = discovered
            .metadata
            .additional_metadata()
            .end_session_endpoint
            .clone()?;
        let mut request = LogoutRequest::from(endpoint).set_client_id(self.client_id.clone());
        if let Ok(token) = CoreIdToken::from_str(id_token) {
            request = request.set_id_token_hint(&token);
        }
        if let Some(after) = &self.post_logout {
            request = request.set_post_logout_redirect_uri(after.clone());
        }
        Some(request.http_get_url())
    }
}

/// An error and its sources on one line (openidconnect's errors keep the detail in `source`).
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(state: &str, at: i64) -> Pending {
        Pending {
            state: state.into(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            next: "/".into(),
            started_at: at,
        }
    }

    #[test]
    fn a_state_is_taken_once() {
        let mut list = remember(Vec::new(), pending("s1", 100), 100);
        list = remember(list, pending("s2", 101), 101);
        assert_eq!(
            take(&mut list, "s1", 102).map(|p| p.state),
            Some("s1".into())
        );
        assert!(take(&mut list, "s1", 102).is_none(), "replayed state");
        assert!(take(&mut list, "nope", 102).is_none());
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn old_and_excess_sign_ins_are_forgotten() {
        let mut list = Vec::new();
        for i in 0..10 {
            list = remember(list, pending(&format!("s{i}"), 1_000 + i), 1_000 + i);
        }
        assert_eq!(list.len(), MAX_PENDING);
        assert!(take(&mut list, "s0", 1_010).is_none());
        assert!(
            take(&mut list, "s9", 1_010 + PENDING_TTL_SECS + 1).is_none(),
            "expired"
        );
    }
}
