//! Server-side rendering of the dashboard and the audit explorer over a large audit trail.
//!
//! Seeds `SSR_ROWS` audit rows (default 1,000,000, spread over the last ~92 days: about 11,000 a
//! day, mixed callers, tools, actions and risks) straight into a fresh database with one SQL
//! statement, points the chain head at the last row so new appends (the sign-in) continue it,
//! then renders each page `SSR_SAMPLES` times through the real router (session, role check,
//! store queries, Leptos SSR) and prints p50 / p95 / p99 per page. Bounded in samples and time
//! (`SSR_PAGE_SECS`, default 30 s per page).
//!
//!     cargo bench -p server --bench portal_ssr                       # SQLite, 1,000,000 rows
//!     SSR_DB=postgres cargo bench -p server --bench portal_ssr       # PostgreSQL
//!     SSR_ROWS=100000 SSR_SAMPLES=50 cargo bench -p server --bench portal_ssr
//!
//! PostgreSQL is CS_TEST_POSTGRES_URL (default: the local server's `test` database), in a
//! schema created and dropped by the run.

// A benchmark reports by printing its figures.
#![allow(clippy::print_stdout)]

use axum::{body::Body, http::Request, Router};
use http_body_util::BodyExt;
use server::{app, AppState, Config, Database};
use sqlx::{Connection, Executor};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

mod common;
use common::{env_or, seed};

const PASSWORD: &str = "bench password for the portal";

async fn sign_in(router: &Router) -> String {
    let body = format!(
        "username=bench&password={}&next=%2F",
        PASSWORD.replace(' ', "+")
    );
    let response = router
        .clone()
        .oneshot(
            Request::builder()
                .method("POST")
                .uri("/auth/login")
                .header("host", "127.0.0.1:3000")
                .header("origin", "http://127.0.0.1:3000")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .expect("request"),
        )
        .await
        .expect("router answers");
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("countersign="))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string()
}

/// Render `uri` once; the time to the last byte of the page.
async fn render(router: &Router, uri: &str, cookie: &str, expect: &str) -> Duration {
    let started = Instant::now();
    let response = router
        .clone()
        .oneshot(
            Request::builder()
                .uri(uri)
                .header("cookie", cookie)
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
    let elapsed = started.elapsed();
    let html = String::from_utf8_lossy(&body);
    assert!(status.is_success(), "{uri}: {status}");
    assert!(html.contains(expect), "{uri} lacks {expect:?}");
    elapsed
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

async fn run(label: &str, db: Database, config: &Config) {
    let rows = env_or("SSR_ROWS", 1_000_000);
    let samples = env_or("SSR_SAMPLES", 200).max(1);
    // A time budget per page bounds the run whatever the machine.
    let max = Duration::from_secs(env_or("SSR_PAGE_SECS", 30) as u64);
    seed(&db, rows).await;
    server::services::identity::accounts::add(
        &db.store(),
        "bench",
        PASSWORD,
        &["admin".into()],
        &[],
    )
    .await
    .expect("account");
    let policy = Arc::new(enforcer::default_policy().expect("policy"));
    let state = AppState::new(config, db.clone(), policy).expect("state");
    let router = app(state);
    let cookie = sign_in(&router).await;
    let middle = rows / 2;
    let month_ago = (chrono::Utc::now() - chrono::Duration::days(30))
        .format("%Y-%m-%d")
        .to_string();
    let month_ago_next = (chrono::Utc::now() - chrono::Duration::days(29))
        .format("%Y-%m-%d")
        .to_string();
    let pages: Vec<(&str, String, &str)> = vec![
        ("dashboard", "/".into(), "decisions-chart"),
        ("audit explorer, newest", "/audit".into(), "audit-rows"),
        (
            "audit explorer, deep page",
            format!("/audit?before={middle}"),
            "audit-rows",
        ),
        (
            "audit explorer, tool + action",
            "/audit?tool=ssh-exec&action=deny".into(),
            "audit-rows",
        ),
        (
            "audit explorer, caller + risk",
            "/audit?caller=alice&risk=CRITICAL".into(),
            "audit-rows",
        ),
        (
            "audit explorer, one day a month ago",
            format!("/audit?from={month_ago}&to={month_ago_next}"),
            "audit-rows",
        ),
        (
            "audit explorer, caller + one day",
            format!("/audit?caller=alice&from={month_ago}&to={month_ago_next}"),
            "audit-rows",
        ),
    ];
    println!("\n{label}: {rows} audit rows, {samples} renders per page (after 3 warm-up renders)");
    println!(
        "{:<38} {:>9} {:>9} {:>9}",
        "page", "p50 ms", "p95 ms", "p99 ms"
    );
    for (name, uri, expect) in &pages {
        let deadline = Instant::now() + max;
        for _ in 0..3 {
            render(&router, uri, &cookie, expect).await;
        }
        let mut times = Vec::with_capacity(samples);
        for _ in 0..samples {
            times.push(render(&router, uri, &cookie, expect).await);
            if Instant::now() > deadline {
                break;
            }
        }
        times.sort();
        println!(
            "{:<38} {:>9.2} {:>9.2} {:>9.2}",
            name,
            percentile(&times, 0.50),
            percentile(&times, 0.95),
            percentile(&times, 0.99)
        );
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let target = std::env::var("SSR_DB").unwrap_or_else(|_| "sqlite".into());
        if target == "postgres" {
            let base = std::env::var("CS_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            let schema = format!("cs_ssr_bench_{}", uuid::Uuid::new_v4().simple());
            let mut admin = sqlx::PgConnection::connect(&base).await.expect("postgres");
            admin
                .execute(format!("CREATE SCHEMA {schema}").as_str())
                .await
                .expect("schema");
            let options = <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(&base)
                .expect("url")
                .options([("search_path", schema.as_str())]);
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(8)
                .connect_with(options)
                .await
                .expect("pool");
            let db = Database::Postgres(pool);
            db.migrate().await.expect("migrate");
            let config = Config {
                database_url: base.clone(),
                ..Config::default()
            };
            run("PostgreSQL", db.clone(), &config).await;
            db.close().await;
            admin
                .execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
                .await
                .expect("drop schema");
        } else {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = Config {
                database_url: format!("sqlite://{}", dir.path().join("ssr.db").display()),
                ..Config::default()
            };
            let db = Database::connect(&config).await.expect("connect");
            db.migrate().await.expect("migrate");
            run("SQLite", db, &config).await;
        }
    });
}
