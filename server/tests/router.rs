//! The router driven in-process (`oneshot`), on SQLite and PostgreSQL.

use axum::{
    body::Body,
    http::{Request, StatusCode},
    Router,
};
use http_body_util::BodyExt;
use server::{app, AppState, Config, Database};
use std::sync::Arc;
use tower::ServiceExt;

fn policy() -> Arc<enforcer::PolicySet> {
    Arc::new(enforcer::default_policy().expect("default policy loads"))
}

struct TestApp {
    router: Router,
    store: server::store::AnyStore,
    _dir: tempfile::TempDir,
}

async fn sqlite_app() -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        database_url: format!("sqlite://{}", dir.path().join("test.db").display()),
        ..Config::default()
    };
    let db = Database::connect(&config).await.expect("sqlite opens");
    db.migrate().await.expect("migrations apply");
    let state = AppState::new(&config, db, policy());
    TestApp {
        store: state.store.clone(),
        router: app(state),
        _dir: dir,
    }
}

async fn get(router: &Router, uri: &str) -> (StatusCode, String) {
    let response = router
        .clone()
        .oneshot(
            Request::builder()
                .uri(uri)
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("router answers");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn healthz_says_ok() {
    let test = sqlite_app().await;
    assert_eq!(
        get(&test.router, "/healthz").await,
        (StatusCode::OK, "ok".to_string())
    );
}

#[tokio::test]
async fn readyz_reports_a_reachable_database() {
    let test = sqlite_app().await;
    let (status, body) = get(&test.router, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, r#"{"checks":{"database":"ok"},"status":"ready"}"#);
}

#[tokio::test]
async fn readyz_fails_when_the_database_is_gone() {
    let test = sqlite_app().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        database_url: format!("sqlite://{}", dir.path().join("x.db").display()),
        ..Config::default()
    };
    let db = Database::connect(&config).await.expect("opens");
    db.close().await; // a closed pool answers nothing, like a database that went away
    let router = app(AppState::new(&config, db, policy()));
    let (status, body) = get(&router, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        r#"{"checks":{"database":"unreachable"},"status":"unavailable"}"#
    );
    // The live app is unaffected.
    assert_eq!(get(&test.router, "/readyz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_shell_is_server_rendered_with_navigation_and_hydration_scripts() {
    let test = sqlite_app().await;
    let (status, html) = get(&test.router, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    for section in [
        "Dashboard",
        "Approvals",
        "Jobs",
        "Audit",
        "Reports",
        "Policies",
    ] {
        assert!(
            html.contains(&format!(">{section}</a>")),
            "missing nav link {section}"
        );
    }
    assert!(html.contains("<h1>Dashboard</h1>"));
    assert!(
        html.contains("/pkg/countersign.js"),
        "hydration script is linked"
    );
    assert!(
        html.contains("/pkg/countersign.wasm"),
        "wasm is named countersign.wasm"
    );
    assert!(html.contains("/pkg/countersign.css"));
}

#[tokio::test]
async fn every_section_renders_and_unknown_pages_are_404() {
    let test = sqlite_app().await;
    for (path, title) in [
        ("/approvals", "Approvals"),
        ("/jobs", "Jobs"),
        ("/audit", "Audit"),
        ("/reports", "Reports"),
        ("/policies", "Policies"),
    ] {
        let (status, html) = get(&test.router, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(html.contains(&format!("<h1>{title}</h1>")), "{path}");
    }
    let (status, html) = get(&test.router, "/definitely-not-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("Not found"));
}

/// PostgreSQL: the same probes against the server on 127.0.0.1:5432 (see scripts/test.sh).
#[tokio::test]
async fn readyz_on_postgres() {
    let url = std::env::var("CS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let config = Config {
        database_url: url,
        ..Config::default()
    };
    let db = Database::connect(&config)
        .await
        .expect("postgres reachable on 127.0.0.1:5432");
    let router = app(AppState::new(&config, db, policy()));
    assert_eq!(get(&router, "/readyz").await.0, StatusCode::OK);
}

async fn request(router: &Router, req: Request<Body>) -> axum::response::Response {
    router.clone().oneshot(req).await.expect("router answers")
}

#[tokio::test]
async fn pages_carry_a_nonce_csp_and_security_headers() {
    let test = sqlite_app().await;
    let response = request(
        &test.router,
        Request::builder()
            .uri("/")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    let headers = response.headers().clone();
    let csp = headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .expect("csp")
        .to_string();
    assert!(
        csp.contains("script-src 'self' 'nonce-")
            && csp.contains("'wasm-unsafe-eval'")
            && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(
        headers.get("x-content-type-options").map(|v| v.as_bytes()),
        Some(b"nosniff".as_slice())
    );
    assert!(headers.contains_key("referrer-policy"));
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let html = String::from_utf8_lossy(&body);
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .expect("nonce");
    assert!(
        html.contains(&format!("nonce=\"{nonce}\"")),
        "the inline hydration script carries the nonce"
    );

    let probe = request(
        &test.router,
        Request::builder()
            .uri("/healthz")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    let csp = probe
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
}

#[tokio::test]
async fn cross_origin_posts_are_refused_and_audited() {
    let test = sqlite_app().await;
    let post = |origin: &'static str| {
        Request::builder()
            .method("POST")
            .uri("/api/anything")
            .header("host", "127.0.0.1:3000")
            .header("origin", origin)
            .header("cookie", "id=abc")
            .body(Body::empty())
            .expect("req")
    };
    let refused = request(&test.router, post("http://evil.example")).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let allowed = request(&test.router, post("http://127.0.0.1:3000")).await;
    assert_ne!(allowed.status(), StatusCode::FORBIDDEN);
    let rows = server::store::Store::audit_page(&test.store, 0, 10)
        .await
        .expect("audit");
    assert_eq!(rows.len(), 1, "exactly the refusal is audited");
    assert_eq!(
        (
            rows[0].event.operation.as_str(),
            rows[0].event.decision_action.as_str()
        ),
        ("csrf.refused", "deny")
    );
}
