//! The OpenID Connect sign-in flow through the router, against a small standards-following
//! provider run in-process on loopback (discovery, JWKS, token endpoint with PKCE checking).
//! The provider signs with the test-only EC key in tests/fixtures; each test decides what it
//! puts in its tokens, so the refusals (wrong nonce, replayed state, mix-up, another person's
//! access token, rotated keys) can be provoked. The end-to-end suite signs in through the
//! `oidc-provider` package instead, in a real browser.

use axum::{
    body::Body,
    extract::{Form, State},
    http::{header, Request, StatusCode},
    routing::{get, post},
    Json, Router,
};
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use server::{app, AppState, Config, Database};
use sha2::Digest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

/// Page-rendering tests run one at a time: Leptos's reactive runtime is process-global, and
/// server-side renders from several test runtimes at once can leave a resource's task on another
/// test's (finished) runtime, so a page never completes. The server itself has one runtime.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const K1: &str = include_str!("fixtures/test-only-es256-k1.pem");
const X: &str = "TKYMIGNIO5N43GoMvGL4LDkIiVSnSE9fqfu3LHm_Qzw";
const Y: &str = "0MbQdv3UQZCqbWR7bufMeWRgNTI3arZfkN5yXdS_iOA";
const CLIENT: &str = "countersign";
const SECRET: &str = "test-client-secret-0123456789";

/// What the provider puts in the next tokens it issues.
#[derive(Clone)]
struct Issue {
    user: String,
    nonce_override: Option<String>,
    access_sub_override: Option<String>,
}

#[derive(Default)]
struct ProviderState {
    issuer: String,
    /// The `kid` the key set currently publishes the key under (changing it = rotation).
    kid: String,
    /// The `kid` put in issued tokens.
    signing_kid: String,
    jwks_fetches: usize,
    /// code → (nonce, PKCE challenge, what to issue)
    codes: HashMap<String, (String, String, Issue)>,
}

type Shared = Arc<Mutex<ProviderState>>;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn sign(kid: &str, claims: &Value) -> String {
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
            "realm_access": { "roles": ["approver", "ssh-linux", "default-roles-t"] },
        }),
    );
    Ok(Json(json!({
        "access_token": access_token, "token_type": "Bearer", "expires_in": 300, "id_token": id_token,
    })))
}

struct Provider {
    state: Shared,
    issuer: String,
}

impl Provider {
    async fn start() -> Provider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let issuer = format!(
            "http://127.0.0.1:{}/realms/t",
            listener.local_addr().expect("addr").port()
        );
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

    /// The person signs in at the provider: a code for this authorization request.
    fn authorize(&self, location: &str, issue: Issue) -> (String, String) {
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

struct TestApp {
    router: Router,
    store: server::store::AnyStore,
    _dir: tempfile::TempDir,
}

async fn app_for(provider: &Provider) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        database_url: format!("sqlite://{}", dir.path().join("t.db").display()),
        public_url: Some("http://127.0.0.1:9".into()),
        oidc_issuer: Some(provider.issuer.clone()),
        oidc_client_secret: Some(server::config::Secret::new(SECRET)),
        ..Config::default()
    };
    let db = Database::connect(&config).await.expect("db");
    db.migrate().await.expect("migrate");
    let policy = Arc::new(enforcer::default_policy().expect("policy"));
    let state = AppState::new(&config, db, policy).expect("state");
    // Discovery runs in the background from start-up; wait for it (it needs one round trip).
    let oidc = state.oidc.clone().expect("oidc configured");
    for _ in 0..100 {
        if oidc.is_ready() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(oidc.is_ready(), "discovery succeeded");
    TestApp {
        store: state.store.clone(),
        router: app(state),
        _dir: dir,
    }
}

fn alice() -> Issue {
    Issue {
        user: "alice".into(),
        nonce_override: None,
        access_sub_override: None,
    }
}

async fn send(router: &Router, uri: &str, cookie: Option<&str>) -> axum::response::Response {
    let mut req = Request::builder().uri(uri);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    router
        .clone()
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("router answers")
}

fn location(r: &axum::response::Response) -> String {
    r.headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn cookie(r: &axum::response::Response) -> Option<String> {
    r.headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
}

/// Start a sign-in: the session cookie, the code and the state that come back.
async fn start(test: &TestApp, provider: &Provider, issue: Issue) -> (String, String, String) {
    let r = send(&test.router, "/auth/login?next=%2Fapprovals", None).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = location(&r);
    assert!(to.starts_with(&provider.issuer), "{to}");
    let session = cookie(&r).expect("a session holds the state");
    let (code, state) = provider.authorize(&to, issue);
    (session, code, state)
}

async fn audit_reasons(store: &server::store::AnyStore) -> Vec<(String, String, String)> {
    server::store::Store::audit_page(store, 0, 100)
        .await
        .expect("audit")
        .into_iter()
        .map(|r| {
            (
                r.event.caller_id,
                r.event.decision_action,
                r.event.decision_reason,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_and_the_state_works_once() {
    let _serial = SERIAL.lock().await;
    let provider = Provider::start().await;
    let test = app_for(&provider).await;
    let (session, code, state) = start(&test, &provider, alice()).await;
    let callback = format!("/auth/callback?code={code}&state={state}");
    let r = send(&test.router, &callback, Some(&session)).await;
    assert_eq!(
        (r.status(), location(&r).as_str()),
        (StatusCode::SEE_OTHER, "/approvals")
    );
    let signed_in = cookie(&r).expect("a new session id at sign-in");
    assert_ne!(signed_in, session);
    let page = send(&test.router, "/approvals", Some(&signed_in)).await;
    assert_eq!(page.status(), StatusCode::OK);

    // The same callback again (replayed): refused, in this session and without one.
    let again = send(&test.router, &callback, Some(&signed_in)).await;
    assert_eq!(location(&again), "/sign-in?error=oidc");
    let stranger = send(&test.router, &callback, None).await;
    assert_eq!(location(&stranger), "/sign-in?error=oidc");

    // Sign-out goes to the provider's end-session endpoint with the ID token as hint.
    let out = test
        .router
        .clone()
        .oneshot(
            Request::builder()
                .method("POST")
                .uri("/auth/logout")
                .header(header::COOKIE, &signed_in)
                .header("sec-fetch-site", "same-origin")
                .body(Body::empty())
                .expect("req"),
        )
        .await
        .expect("logout");
    let to = location(&out);
    assert!(
        to.starts_with(&format!(
            "{}/protocol/openid-connect/logout?",
            provider.issuer
        )) && to.contains("id_token_hint=")
            && to.contains("post_logout_redirect_uri="),
        "{to}"
    );

    let audit = audit_reasons(&test.store).await;
    assert!(
        audit.iter().any(|(who, action, why)| who == "alice"
            && action == "allow"
            && why.contains("signed in through Keycloak")),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .filter(
                |(_, action, why)| action == "deny" && why.contains("already used sign-in state")
            )
            .count()
            >= 2,
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|(who, _, why)| who == "alice" && why == "signed out"),
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_nonce_is_refused() {
    let _serial = SERIAL.lock().await;
    let provider = Provider::start().await;
    let test = app_for(&provider).await;
    let issue = Issue {
        nonce_override: Some("not-the-nonce-we-sent".into()),
        ..alice()
    };
    let (session, code, state) = start(&test, &provider, issue).await;
    let r = send(
        &test.router,
        &format!("/auth/callback?code={code}&state={state}"),
        Some(&session),
    )
    .await;
    assert_eq!(location(&r), "/sign-in?error=oidc");
    let audit = audit_reasons(&test.store).await;
    assert!(
        audit
            .iter()
            .any(|(_, a, why)| a == "deny" && why.contains("ID token")),
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_from_another_issuer_is_refused() {
    let _serial = SERIAL.lock().await;
    let provider = Provider::start().await;
    let test = app_for(&provider).await;
    let (session, code, state) = start(&test, &provider, alice()).await;
    let r = send(
        &test.router,
        &format!("/auth/callback?code={code}&state={state}&iss=https%3A%2F%2Fevil.example"),
        Some(&session),
    )
    .await;
    assert_eq!(location(&r), "/sign-in?error=oidc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_token_for_someone_else_is_refused() {
    let _serial = SERIAL.lock().await;
    let provider = Provider::start().await;
    let test = app_for(&provider).await;
    let issue = Issue {
        access_sub_override: Some("mallory".into()),
        ..alice()
    };
    let (session, code, state) = start(&test, &provider, issue).await;
    let r = send(
        &test.router,
        &format!("/auth/callback?code={code}&state={state}"),
        Some(&session),
    )
    .await;
    assert_eq!(location(&r), "/sign-in?error=oidc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_reporting_an_error_is_refused_and_audited() {
    let _serial = SERIAL.lock().await;
    let provider = Provider::start().await;
    let test = app_for(&provider).await;
    let (session, _code, state) = start(&test, &provider, alice()).await;
    let r = send(
        &test.router,
        &format!("/auth/callback?error=access_denied&error_description=no&state={state}"),
        Some(&session),
    )
    .await;
    assert_eq!(location(&r), "/sign-in?error=oidc_denied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_are_fetched_again_once_for_an_unknown_kid() {
    let _serial = SERIAL.lock().await;
    let provider = Provider::start().await;
    let test = app_for(&provider).await;
    let token = |kid: &str| {
        sign(
            kid,
            &json!({
                "iss": provider.issuer, "sub": "svc", "aud": "countersign", "azp": "it-mcp",
                "client_id": "it-mcp", "preferred_username": "service-account-it-mcp",
                "exp": now() + 300, "realm_access": { "roles": ["ssh-linux"] },
            }),
        )
    };
    let whoami = |t: String| {
        let router = test.router.clone();
        async move {
            router
                .oneshot(
                    Request::builder()
                        .uri("/api/v1/whoami")
                        .header(header::AUTHORIZATION, format!("Bearer {t}"))
                        .body(Body::empty())
                        .expect("req"),
                )
                .await
                .expect("answer")
        }
    };
    let r = whoami(token("k-one")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = axum::body::to_bytes(r.into_body(), 1 << 16)
        .await
        .expect("body");
    let caller: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        (caller["id"].as_str(), caller["kind"].as_str()),
        (Some("it-mcp"), Some("service"))
    );

    // The provider rotates its key; the first token under the new kid makes Countersign fetch
    // the key set again.
    {
        let mut s = provider.state.lock().expect("lock");
        s.kid = "k-two".into();
        s.signing_kid = "k-two".into();
    }
    let fetches = provider.state.lock().expect("lock").jwks_fetches;
    // Too soon after the last fetch: refused without asking the provider.
    assert_eq!(
        whoami(token("k-two")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(provider.state.lock().expect("lock").jwks_fetches, fetches);
    tokio::time::sleep(server::auth::oidc::JWKS_MIN_REFRESH).await;
    assert_eq!(whoami(token("k-two")).await.status(), StatusCode::OK);
    assert_eq!(
        provider.state.lock().expect("lock").jwks_fetches,
        fetches + 1
    );
    // A kid nobody publishes does not make it fetch again and again.
    assert_eq!(
        whoami(token("k-unknown")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        whoami(token("k-unknown")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        provider.state.lock().expect("lock").jwks_fetches,
        fetches + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_waits_for_an_unreachable_provider_and_says_so() {
    let _serial = SERIAL.lock().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener); // nothing listens there now
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        database_url: format!("sqlite://{}", dir.path().join("t.db").display()),
        public_url: Some("http://127.0.0.1:9".into()),
        oidc_issuer: Some(format!("http://127.0.0.1:{port}/realms/t")),
        oidc_client_secret: Some(server::config::Secret::new(SECRET)),
        ..Config::default()
    };
    let db = Database::connect(&config).await.expect("db");
    db.migrate().await.expect("migrate");
    let state = AppState::new(
        &config,
        db,
        Arc::new(enforcer::default_policy().expect("policy")),
    )
    .expect("state");
    assert!(
        !config.local_sign_in(),
        "with an issuer, password sign-in is off by default"
    );
    let router = app(state);
    let r = send(&router, "/auth/login", None).await;
    assert_eq!(location(&r), "/sign-in?error=idp_unavailable&next=/");
    let ready = send(&router, "/readyz", None).await;
    assert_eq!(ready.status(), StatusCode::OK);
    let body = axum::body::to_bytes(ready.into_body(), 1 << 16)
        .await
        .expect("body");
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["checks"]["identity_provider"], "unreachable");
}
