//! The OpenID Connect sign-in flow through the router, against the small standards-following
//! provider in tests/common/provider.rs, run in-process on loopback. Each test decides what it
//! puts in its tokens, so the refusals (wrong nonce, replayed state, mix-up, another person's
//! access token, rotated keys) can be provoked. The end-to-end suite signs in through the
//! `oidc-provider` package instead, in a real browser.

mod common;

use axum::{
    body::Body,
    http::{header, Request, StatusCode},
    Router,
};
use common::provider::{now, sign, Issue, Provider, SECRET};
use serde_json::{json, Value};
use server::{app, AppState, Config, Database};
use std::sync::Arc;
use tower::ServiceExt;

/// Page-rendering tests run one at a time: Leptos's reactive runtime is process-global, and
/// server-side renders from several test runtimes at once can leave a resource's task on another
/// test's (finished) runtime, so a page never completes. The server itself has one runtime.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    Issue::person("alice")
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
    tokio::time::sleep(server::services::identity::oidc::JWKS_MIN_REFRESH).await;
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

/// The `next` of a sign-in through the provider: only a local path is followed after the
/// callback; anything a browser would take off the site (`/<TAB>/evil.example` is
/// `//evil.example` to it) or that cannot make a `Location` header (CR, LF) lands on `/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_returns_only_to_local_paths() {
    let _serial = SERIAL.lock().await;
    let provider = Provider::start().await;
    let test = app_for(&provider).await;
    for (next, to) in [
        ("/%09/evil.example/x", "/"),
        ("%2F%2509%2Fevil.example", "/"),
        ("/%0D%0ALocation:%20https://evil.example", "/"),
        ("//evil.example", "/"),
        ("/%5Cevil.example", "/"),
        ("/%252F/evil.example", "/"),
        ("https://evil.example", "/"),
        ("/approvals%3Fx%3D1", "/approvals?x=1"),
    ] {
        let r = send(&test.router, &format!("/auth/login?next={next}"), None).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{next}");
        let session = cookie(&r).expect("a session holds the state");
        let (code, state) = provider.authorize(&location(&r), alice());
        let back = send(
            &test.router,
            &format!("/auth/callback?code={code}&state={state}"),
            Some(&session),
        )
        .await;
        assert_eq!(
            (back.status(), location(&back).as_str()),
            (StatusCode::SEE_OTHER, to),
            "next={next}"
        );
        assert!(cookie(&back).is_some(), "signed in: next={next}");
    }
}
