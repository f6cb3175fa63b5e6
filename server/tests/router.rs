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
    TestApp {
        router: app(AppState::new(&config, db, policy())),
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
