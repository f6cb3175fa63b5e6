//! A small standards-following OpenID provider run in-process on loopback (discovery, JWKS,
//! token endpoint with PKCE checking), shaped like a Keycloak realm. It signs with the test-only
//! EC key in tests/fixtures; each test decides what goes in its tokens. Standalone, so the
//! benches include it too.

use axum::{
    extract::{Form, State},
    http::{header, StatusCode},
    routing::{get, post},
    Json, Router,
};
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::Digest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub const K1: &str = include_str!("../fixtures/test-only-es256-k1.pem");
pub const X: &str = "TKYMIGNIO5N43GoMvGL4LDkIiVSnSE9fqfu3LHm_Qzw";
pub const Y: &str = "0MbQdv3UQZCqbWR7bufMeWRgNTI3arZfkN5yXdS_iOA";
pub const CLIENT: &str = "countersign";
pub const SECRET: &str = "test-client-secret-0123456789";

/// What the provider puts in the next tokens it issues.
#[derive(Clone)]
pub struct Issue {
    pub user: String,
    pub nonce_override: Option<String>,
    pub access_sub_override: Option<String>,
    /// The realm roles in the access token.
    pub roles: Vec<String>,
}

impl Issue {
    /// Tokens for `user` as the provider would issue them, nothing overridden.
    pub fn person(user: &str) -> Issue {
        Issue {
            user: user.into(),
            nonce_override: None,
            access_sub_override: None,
            roles: vec![
                "approver".into(),
                "ssh-linux".into(),
                "default-roles-t".into(),
            ],
        }
    }

    /// Tokens for `user` with these realm roles.
    pub fn with_roles(user: &str, roles: &[&str]) -> Issue {
        Issue {
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ..Issue::person(user)
        }
    }
}

#[derive(Default)]
pub struct ProviderState {
    pub issuer: String,
    /// The `kid` the key set currently publishes the key under (changing it = rotation).
    pub kid: String,
    /// The `kid` put in issued tokens.
    pub signing_kid: String,
    pub jwks_fetches: usize,
    /// code → (nonce, PKCE challenge, what to issue)
    pub codes: HashMap<String, (String, String, Issue)>,
}

pub type Shared = Arc<Mutex<ProviderState>>;

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn sign(kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    encode(
        &header,
        claims,
        &EncodingKey::from_ec_pem(K1.as_bytes()).expect("key"),
    )
    .expect("sign")
}

async fn discovery(State(s): State<Shared>) -> Json<Value> {
    let issuer = s.lock().expect("lock").issuer.clone();
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/protocol/openid-connect/auth"),
        "token_endpoint": format!("{issuer}/protocol/openid-connect/token"),
        "jwks_uri": format!("{issuer}/protocol/openid-connect/certs"),
        "end_session_endpoint": format!("{issuer}/protocol/openid-connect/logout"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

async fn certs(State(s): State<Shared>) -> Json<Value> {
    let mut state = s.lock().expect("lock");
    state.jwks_fetches += 1;
    Json(json!({ "keys": [{
        "kty": "EC", "crv": "P-256", "kid": state.kid, "use": "sig", "alg": "ES256", "x": X, "y": Y
    }]}))
}

async fn token(
    State(s): State<Shared>,
    headers: axum::http::HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    let bad = |e: &str| (StatusCode::BAD_REQUEST, Json(json!({ "error": e })));
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT}:{SECRET}"))
    );
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(basic.as_str())
    {
        return Err(bad("invalid_client"));
    }
    let mut state = s.lock().expect("lock");
    let code = form.get("code").cloned().unwrap_or_default();
    let (nonce, challenge, issue) = state
        .codes
        .remove(&code)
        .ok_or_else(|| bad("invalid_grant"))?;
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if b64(&sha2::Sha256::digest(verifier.as_bytes())) != challenge {
        return Err(bad("invalid_grant"));
    }
    let issuer = state.issuer.clone();
    let kid = state.signing_kid.clone();
    let id_token = sign(
        &kid,
        &json!({
            "iss": issuer, "sub": issue.user, "aud": CLIENT, "exp": now() + 300, "iat": now(),
            "nonce": issue.nonce_override.clone().unwrap_or(nonce), "preferred_username": issue.user,
        }),
    );
    let access_token = sign(
        &kid,
        &json!({
            "iss": issuer, "sub": issue.access_sub_override.clone().unwrap_or_else(|| issue.user.clone()),
            "aud": ["countersign", "account"], "azp": CLIENT, "exp": now() + 300, "iat": now(),
            "preferred_username": issue.user, "name": "Alice Anders",
            "realm_access": { "roles": issue.roles },
        }),
    );
    Ok(Json(json!({
        "access_token": access_token, "token_type": "Bearer", "expires_in": 300, "id_token": id_token,
    })))
}

pub struct Provider {
    pub state: Shared,
    pub issuer: String,
}

impl Provider {
    pub async fn start() -> Provider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        Provider::serve(listener, port)
    }

    /// A provider serving on `listener` that names itself by `public_port` (a relay in front of
    /// it, say).
    pub fn serve(listener: tokio::net::TcpListener, public_port: u16) -> Provider {
        let issuer = format!("http://127.0.0.1:{public_port}/realms/t");
        let state: Shared = Arc::new(Mutex::new(ProviderState {
            issuer: issuer.clone(),
            kid: "k-one".into(),
            signing_kid: "k-one".into(),
            ..ProviderState::default()
        }));
        let router = Router::new()
            .route("/realms/t/.well-known/openid-configuration", get(discovery))
            .route("/realms/t/protocol/openid-connect/certs", get(certs))
            .route("/realms/t/protocol/openid-connect/token", post(token))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Provider { state, issuer }
    }

    /// The settings that point a Countersign at this provider (and the rest of `more`).
    pub fn settings(&self, more: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
        let mut settings = vec![
            ("COUNTERSIGN_OIDC_ISSUER", self.issuer.clone()),
            ("COUNTERSIGN_OIDC_CLIENT_SECRET", SECRET.to_string()),
            ("COUNTERSIGN_PUBLIC_URL", "http://127.0.0.1:9".to_string()),
        ];
        settings.extend_from_slice(more);
        settings
    }

    /// A person's access token as the provider issues it (Keycloak's shape): their realm roles,
    /// valid for five minutes, signed with the published key.
    pub fn person_token(&self, user: &str, roles: &[&str]) -> String {
        sign(
            "k-one",
            &json!({
                "iss": self.issuer, "sub": user, "aud": ["countersign", "account"], "azp": CLIENT,
                "exp": now() + 300, "iat": now(), "preferred_username": user,
                "realm_access": { "roles": roles },
            }),
        )
    }

    /// The person signs in at the provider: a code for this authorization request.
    pub fn authorize(&self, location: &str, issue: Issue) -> (String, String) {
        let url = url::Url::parse(location).expect("authorization URL");
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q.get("response_type").map(String::as_str), Some("code"));
        assert_eq!(
            q.get("code_challenge_method").map(String::as_str),
            Some("S256")
        );
        assert!(q
            .get("scope")
            .is_some_and(|s| s.split(' ').any(|x| x == "openid")));
        let code = format!("code-{}", uuid::Uuid::new_v4());
        self.state.lock().expect("lock").codes.insert(
            code.clone(),
            (q["nonce"].clone(), q["code_challenge"].clone(), issue),
        );
        (code, q["state"].clone())
    }
}

/// The name=value pairs a response sets, as a `Cookie` header.
pub fn cookies(answer: &reqwest::Response) -> String {
    answer
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Where a redirect points.
pub fn location(answer: &reqwest::Response) -> String {
    answer
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// `user` signs in to the Countersign at `base` through `provider` (authorization code flow;
/// `web` must not follow redirects): the session's `Cookie` header.
pub async fn sign_in(web: &reqwest::Client, base: &str, provider: &Provider, user: &str) -> String {
    sign_in_as(web, base, provider, Issue::person(user)).await
}

/// The same with what the provider issues decided by the caller (roles, say).
pub async fn sign_in_as(
    web: &reqwest::Client,
    base: &str,
    provider: &Provider,
    issue: Issue,
) -> String {
    let started = web
        .get(format!("{base}/auth/login?next=%2Fapprovals"))
        .send()
        .await
        .expect("sign-in starts");
    assert_eq!(started.status(), 303);
    let at_provider = location(&started);
    assert!(at_provider.starts_with(&provider.issuer), "{at_provider}");
    let (code, state) = provider.authorize(&at_provider, issue);
    let back = web
        .get(format!("{base}/auth/callback?code={code}&state={state}"))
        .header(reqwest::header::COOKIE, cookies(&started))
        .send()
        .await
        .expect("callback");
    assert_eq!(
        (back.status().as_u16(), location(&back).as_str()),
        (303, "/approvals")
    );
    cookies(&back)
}
