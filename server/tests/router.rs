//! The router driven in-process (`oneshot`), on SQLite and PostgreSQL.

mod common;

use axum::{
    body::Body,
    http::{Request, StatusCode},
    Router,
};
use http_body_util::BodyExt;
use server::store::{AuditAction, Risk};
use server::{app, AppState, Config, Database};
use std::sync::Arc;
use tower::ServiceExt;

/// Page-rendering tests run one at a time: Leptos's reactive runtime is process-global, and
/// server-side renders from several test runtimes at once can leave a resource's task on another
/// test's (finished) runtime, so a page never completes. The server itself has one runtime.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PASSWORD: &str = "correct horse battery staple";

fn policy() -> Arc<enforcer::PolicySet> {
    Arc::new(enforcer::default_policy().expect("default policy loads"))
}

struct TestApp {
    router: Router,
    state: AppState,
    store: server::store::AnyStore,
    _dir: tempfile::TempDir,
}

async fn sqlite_app() -> TestApp {
    sqlite_app_with(|_| {}).await
}

/// The same with some settings changed.
async fn sqlite_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config {
        database_url: format!("sqlite://{}", dir.path().join("test.db").display()),
        ..Config::default()
    };
    configure(&mut config);
    let db = Database::connect(&config).await.expect("sqlite opens");
    db.migrate().await.expect("migrations apply");
    server::services::identity::accounts::add(
        &db.store(),
        "alice",
        PASSWORD,
        &["approver".into()],
        &["ssh-linux".into()],
    )
    .await
    .expect("alice");
    let state = AppState::new(&config, db, policy()).expect("state");
    TestApp {
        store: state.store.clone(),
        router: app(state.clone()),
        state,
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
    status_and_text(response).await
}

/// Sign in through the form endpoint; returns the session cookie (`name=value`).
async fn sign_in(
    router: &Router,
    user: &str,
    password: &str,
) -> (StatusCode, Option<String>, String) {
    sign_in_from(router, user, password, None, None, "%2Faudit").await
}

/// A response's status and its body as text.
async fn status_and_text(response: axum::response::Response) -> (StatusCode, String) {
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get_as(router: &Router, uri: &str, cookie: &str) -> (StatusCode, String) {
    let cookie = cookie.split(';').next().unwrap_or_default().to_string();
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
    status_and_text(response).await
}

async fn alice(router: &Router) -> String {
    let (status, cookie, _) = sign_in(router, "alice", PASSWORD).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    cookie.expect("a session cookie")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_says_ok() {
    let _serial = SERIAL.lock().await;
    let test = sqlite_app().await;
    assert_eq!(
        get(&test.router, "/healthz").await,
        (StatusCode::OK, "ok".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_a_reachable_database() {
    let _serial = SERIAL.lock().await;
    let test = sqlite_app().await;
    let (status, body) = get(&test.router, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, r#"{"checks":{"database":"ok"},"status":"ready"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_when_the_database_is_gone() {
    let _serial = SERIAL.lock().await;
    let test = sqlite_app().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        database_url: format!("sqlite://{}", dir.path().join("x.db").display()),
        ..Config::default()
    };
    let db = Database::connect(&config).await.expect("opens");
    db.close().await; // a closed pool answers nothing, like a database that went away
    let router = app(AppState::new(&config, db, policy()).expect("state"));
    let (status, body) = get(&router, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        r#"{"checks":{"database":"unreachable"},"status":"unavailable"}"#
    );
    // The live app is unaffected.
    assert_eq!(get(&test.router, "/readyz").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_is_server_rendered_with_navigation_and_hydration_scripts() {
    let _serial = SERIAL.lock().await;
    let test = sqlite_app().await;
    let cookie = alice(&test.router).await;
    let (status, html) = get_as(&test.router, "/", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(
        html.contains("data-testid=\"current-user\""),
        "the header shows who is signed in"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_section_renders_and_unknown_pages_are_404() {
    let _serial = SERIAL.lock().await;
    let test = sqlite_app().await;
    let cookie = alice(&test.router).await;
    for (path, title) in [
        ("/approvals", "Approvals"),
        ("/jobs", "Jobs"),
        ("/audit", "Audit"),
        ("/reports", "Reports"),
        ("/policies", "Policies"),
    ] {
        let (status, html) = get_as(&test.router, path, &cookie).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(html.contains(&format!("<h1>{title}</h1>")), "{path}");
    }
    let (status, html) = get_as(&test.router, "/definitely-not-here", &cookie).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("Not found"));
}

/// PostgreSQL: the same probes against the server on 127.0.0.1:5432 (see scripts/test.sh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_on_postgres() {
    let _serial = SERIAL.lock().await;
    let url = std::env::var("CS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let config = Config {
        database_url: url,
        ..Config::default()
    };
    let db = Database::connect(&config)
        .await
        .expect("postgres reachable on 127.0.0.1:5432");
    let router = app(AppState::new(&config, db, policy()).expect("state"));
    assert_eq!(get(&router, "/readyz").await.0, StatusCode::OK);
}

async fn request(router: &Router, req: Request<Body>) -> axum::response::Response {
    router.clone().oneshot(req).await.expect("router answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_carry_a_nonce_csp_and_security_headers() {
    let _serial = SERIAL.lock().await;
    let test = sqlite_app().await;
    let cookie = alice(&test.router).await;
    let cookie = cookie.split(';').next().unwrap_or_default().to_string();
    let response = request(
        &test.router,
        Request::builder()
            .uri("/")
            .header("cookie", cookie)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_posts_are_refused_and_audited() {
    let _serial = SERIAL.lock().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_visitors_are_sent_to_sign_in() {
    let _serial = SERIAL.lock().await;
    let test = sqlite_app().await;
    let response = request(
        &test.router,
        Request::builder()
            .uri("/audit?from=1")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok()),
        Some("/sign-in?next=/audit%3Ffrom%3D1")
    );
    let (status, html) = get(&test.router, "/sign-in").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("action=\"/auth/login\""));
    let (status, _) = get(&test.router, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_sign_out_and_refusals_are_audited() {
    let _serial = SERIAL.lock().await;
    let test = sqlite_app().await;
    let (status, cookie, location) = sign_in(&test.router, "alice", "wrong password!").await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/sign-in?error=invalid&next=/audit")
    );
    assert!(cookie.is_none(), "no session for a failed sign-in");
    let (_, _, location) = sign_in(&test.router, "nobody", PASSWORD).await;
    assert!(
        location.contains("error=invalid"),
        "unknown users look the same as wrong passwords"
    );

    let (status, cookie, location) = sign_in(&test.router, "alice", PASSWORD).await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/audit")
    );
    let cookie = cookie.expect("cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain http on loopback");
    assert_eq!(
        get_as(&test.router, "/jobs", &cookie).await.0,
        StatusCode::OK
    );

    let session = cookie.split(';').next().unwrap_or_default().to_string();
    let out = request(
        &test.router,
        Request::builder()
            .method("POST")
            .uri("/auth/logout")
            .header("cookie", session.clone())
            .header("sec-fetch-site", "same-origin")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        get_as(&test.router, "/jobs", &session).await.0,
        StatusCode::SEE_OTHER,
        "the session is gone"
    );

    let rows = server::store::Store::audit_page(&test.store, 0, 50)
        .await
        .expect("audit");
    let events: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r.event.kind.as_str(),
                r.event.caller_id.as_str(),
                r.event.decision_action.as_str(),
            )
        })
        .collect();
    assert!(events.contains(&("sign-in", "alice", "deny")), "{events:?}");
    assert!(
        events.contains(&("sign-in", "nobody", "deny")),
        "{events:?}"
    );
    assert!(
        events.contains(&("sign-in", "alice", "allow")),
        "{events:?}"
    );
    assert!(
        events.contains(&("sign-out", "alice", "allow")),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_lock_the_account() {
    let _serial = SERIAL.lock().await;
    let test = sqlite_app().await;
    for _ in 0..5 {
        sign_in(&test.router, "alice", "wrong password!").await;
    }
    let (_, cookie, location) = sign_in(&test.router, "alice", PASSWORD).await;
    assert!(
        cookie.is_none(),
        "even the right password waits out the lock"
    );
    assert!(location.contains("error=locked"), "{location}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_takes_api_tokens_and_refuses_everything_else() {
    let _serial = SERIAL.lock().await;
    let test = sqlite_app().await;
    let db = match &test.store {
        server::store::AnyStore::Sqlite(s) => Database::Sqlite(s.pool().clone()),
        server::store::AnyStore::Postgres(s) => Database::Postgres(s.pool().clone()),
    };
    let (_, token) = server::services::identity::api_tokens::create(
        &db.store(),
        "it-mcp",
        &[],
        &["ssh-linux".into(), "remote-exec".into()],
    )
    .await
    .expect("token");
    let whoami = |auth: Option<String>| {
        let mut req = Request::builder().uri("/api/v1/whoami");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.body(Body::empty()).expect("req")
    };
    let ok = request(&test.router, whoami(Some(format!("Bearer {token}")))).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let body = ok.into_body().collect().await.expect("body").to_bytes();
    let caller: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(caller["id"], "it-mcp");
    assert_eq!(
        caller["capabilities"],
        serde_json::json!(["ssh-linux", "remote-exec"])
    );

    for bad in [
        None,
        Some("Bearer cs_000000000000_nope".to_string()),
        Some(format!("Bearer {token}x")),
        Some("Bearer eyJhbGciOiJub25lIn0.e30.".to_string()),
    ] {
        let refused = request(&test.router, whoami(bad.clone())).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{bad:?}");
        assert_eq!(
            refused
                .headers()
                .get("www-authenticate")
                .map(|v| v.as_bytes()),
            Some(b"Bearer".as_slice())
        );
    }
    server::services::identity::api_tokens::revoke(&db.store(), "it-mcp")
        .await
        .expect("revoke");
    // A verified token is remembered for `api_token_cache_secs` (tests/api.rs covers that);
    // once forgotten, the revocation is seen.
    test.state.token_cache.clear();
    assert_eq!(
        request(&test.router, whoami(Some(format!("Bearer {token}"))))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let rows = server::store::Store::audit_page(&test.store, 0, 50)
        .await
        .expect("audit");
    assert!(
        rows.iter()
            .filter(|r| r.event.decision_reason.starts_with("API request refused"))
            .count()
            >= 4
    );
}

/// Queue a job as `bob` would have through the API (HIGH, a dangerous command).
async fn queue_job(test: &TestApp) -> String {
    let now = chrono::Utc::now();
    let args = serde_json::json!({"command": "cd /srv && rm -rf /var/www"});
    let job = server::store::NewJob {
        job_id: None,
        tool_name: "ssh-exec".into(),
        operation: "executeCommand".into(),
        params: enforcer::canonical_json(&args),
        requested_capabilities: vec!["ssh-linux".into()],
        target: Some("web-01".into()),
        target_agent_id: None,
        priority: server::store::Priority::High,
        requester: "bob".into(),
        requester_reason: Some("clean the old site".into()),
        risk: server::store::Risk::High,
        call_hash: "ab".repeat(32),
        policy_hash: None,
        approvals_required: 1,
        created_at: now,
        expires_at: now + chrono::Duration::hours(1),
        approval_window_secs: 3_600,
        max_retries: 1,
        decision_audit_id: None,
        submitted_by: Some("it-mcp".into()),
    };
    server::store::Store::insert_job(&test.store, &job)
        .await
        .expect("job")
        .job_id
}

async fn post_form(router: &Router, uri: &str, cookie: &str, body: &str) -> (StatusCode, String) {
    let cookie = cookie.split(';').next().unwrap_or_default().to_string();
    let response = router
        .clone()
        .oneshot(
            Request::builder()
                .method("POST")
                .uri(uri)
                .header("host", "127.0.0.1:3000")
                .header("origin", "http://127.0.0.1:3000")
                .header("cookie", cookie)
                // What a browser's form submission sends (no WASM involved).
                .header("accept", "text/html")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(body.to_string()))
                .expect("request"),
        )
        .await
        .expect("router answers");
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (response.status(), location)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_listed_explained_and_voted_on_without_wasm() {
    let _serial = SERIAL.lock().await;
    let test = sqlite_app().await;
    let job_id = queue_job(&test).await;
    let earlier = server::store::NewAuditEvent::new(
        server::store::EventKind::Decision,
        "carol",
        "ssh-exec",
        "executeCommand",
        AuditAction::Deny,
        "an earlier try without capabilities",
        Risk::High,
    );
    server::store::Store::append_audit(&test.store, &[earlier])
        .await
        .expect("append");
    let cookie = alice(&test.router).await;

    let (status, html) = get_as(&test.router, "/approvals", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(&format!("data-job=\"{job_id}\"")), "{html}");
    assert!(html.contains("web-01") && html.contains("bob") && html.contains("0/1"));

    let page = format!("/approvals/{job_id}");
    let (status, html) = get_as(&test.router, &page, &cookie).await;
    assert_eq!(status, StatusCode::OK);
    // The dangerous part of the command is marked with the pattern that matched it.
    assert!(
        html.contains("data-pattern=\"rm-recursive-force\""),
        "{html}"
    );
    assert!(!html.contains("missing required capabilities"), "{html}");
    assert!(html.contains(">rm -rf /var/www</mark>"), "{html}");
    assert!(html.contains("clean the old site"));
    assert!(html.contains("data-testid=\"approve\"") && html.contains("data-testid=\"deny\""));
    // Context: recent decisions on the same tool and operation.
    assert!(
        html.contains("carol asked; deny (HIGH): an earlier try without capabilities"),
        "{html}"
    );

    // A denial without a reason is refused and nothing changes.
    let body = format!("job_id={job_id}&verdict=deny&reason=");
    let (status, location) = post_form(&test.router, "/api/cast_vote", &cookie, &body).await;
    assert!(status.is_redirection(), "{status}");
    assert!(
        location.starts_with(&format!("/approvals/{job_id}?error=")),
        "{location}"
    );
    let job = server::store::Store::job(&test.store, &job_id)
        .await
        .expect("job");
    assert_eq!(job.status, server::store::JobStatus::Queued);

    let body = format!("job_id={job_id}&verdict=approve&reason=checked+with+bob");
    let (status, location) = post_form(&test.router, "/api/cast_vote", &cookie, &body).await;
    assert!(status.is_redirection(), "{status}");
    assert_eq!(location, format!("/approvals/{job_id}?voted=approve"));
    let job = server::store::Store::job(&test.store, &job_id)
        .await
        .expect("job");
    assert_eq!(job.status, server::store::JobStatus::Approved);
    let rows = server::store::Store::audit_page(&test.store, 0, 100)
        .await
        .expect("audit");
    assert!(rows
        .iter()
        .any(|r| r.event.kind == server::store::EventKind::Approval
            && r.event.approver.as_deref() == Some("alice")
            && r.event.job_id.as_deref() == Some(job_id.as_str())));

    // Decided requests leave the list; the page says why no one may vote now.
    let (_, html) = get_as(&test.router, "/approvals", &cookie).await;
    assert!(html.contains("data-testid=\"no-approvals\""), "{html}");
    let (_, html) = get_as(&test.router, &page, &cookie).await;
    assert!(html.contains("data-testid=\"cannot-vote\"") && html.contains("approved"));

    // The jobs pages: filtered by status, and the job's timeline from its audit rows.
    let (status, html) = get_as(&test.router, "/jobs", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(&format!("data-job=\"{job_id}\"")), "{html}");
    assert!(html.contains("approved (1)"), "{html}");
    let (_, html) = get_as(&test.router, "/jobs?status=approved", &cookie).await;
    assert!(html.contains(&format!("data-job=\"{job_id}\"")));
    let (_, html) = get_as(&test.router, "/jobs?status=queued", &cookie).await;
    assert!(html.contains("data-testid=\"no-jobs\""), "{html}");
    let (_, html) = get_as(&test.router, "/jobs?status=bogus", &cookie).await;
    assert!(html.contains("unknown status"), "{html}");
    let (status, html) = get_as(&test.router, &format!("/jobs/{job_id}"), &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("data-testid=\"timeline\""), "{html}");
    assert!(html.contains("data-kind=\"approval\""), "{html}");
    assert!(html.contains("rm -rf /var/www"));

    // Signed out, the vote endpoint refuses.
    let (status, _) = post_form(&test.router, "/api/cast_vote", "", &body).await;
    assert!(
        status.is_client_error() || status.is_redirection(),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_counts_and_charts_on_the_server() {
    let _serial = SERIAL.lock().await;
    let test = sqlite_app().await;
    let job_id = queue_job(&test).await;
    let mut events = Vec::new();
    for (action, risk) in [
        (AuditAction::Allow, Risk::Low),
        (AuditAction::Allow, Risk::High),
        (AuditAction::Deny, Risk::Critical),
    ] {
        events.push(server::store::NewAuditEvent::new(
            server::store::EventKind::Decision,
            "it-mcp",
            "ssh-exec",
            "executeCommand",
            action,
            "test",
            risk,
        ));
    }
    server::store::Store::append_audit(&test.store, &events)
        .await
        .expect("append");
    let cookie = alice(&test.router).await;
    let (status, html) = get_as(&test.router, "/", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("data-testid=\"pending-count\" class=\"figure\">1<"),
        "{html}"
    );
    assert!(
        html.contains("data-testid=\"decisions-24h\" class=\"figure\">3<"),
        "{html}"
    );
    assert!(html.contains(&format!("/approvals/{job_id}")));
    // The chart is SVG from the server: one segment per action and risk seen.
    assert!(
        html.contains("data-action=\"deny\" data-risk=\"CRITICAL\""),
        "{html}"
    );
    assert!(html.contains("data-action=\"allow\" data-risk=\"LOW\""));
    assert!(html.contains("ssh-exec: 3"), "top tools");
    assert!(html.contains("queued: 1"), "queue depth");

    // The profile: who am I, roles and capabilities.
    let (status, html) = get_as(&test.router, "/profile", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("data-testid=\"profile-username\">alice<"),
        "{html}"
    );
    assert!(html.contains("<code>approver</code>") && html.contains("<code>ssh-linux</code>"));

    // The policies page shows the active policy and its hash (the simulator loads the same text).
    let (status, html) = get_as(&test.router, "/policies", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(test.state.policy.hash()), "{html}");
    assert!(html.contains("executeSudoCommand") && html.contains("rm-recursive-force"));
    assert!(html.contains("data-testid=\"simulate\""));

    // Live updates: an event stream for signed-in people only.
    let cookie_header = cookie.split(';').next().unwrap_or_default().to_string();
    let response = test
        .router
        .clone()
        .oneshot(
            Request::builder()
                .uri("/events")
                .header("cookie", cookie_header)
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    drop(response);
    let anonymous = request(
        &test.router,
        Request::builder()
            .uri("/events")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
}

/// What the hydrated pages call when navigating in the browser: every portal server function
/// answers a signed-in person with 200 (a server function's error would be a 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_server_functions_answer_browser_calls() {
    let _serial = SERIAL.lock().await;
    let test = sqlite_app().await;
    let job_id = queue_job(&test).await;
    let cookie = alice(&test.router).await;
    let cookie = cookie.split(';').next().unwrap_or_default().to_string();
    for (path, body) in [
        ("/api/dashboard", String::new()),
        ("/api/pending_approvals", String::new()),
        ("/api/list_jobs", String::new()),
        ("/api/list_jobs", "status=queued".to_string()),
        ("/api/approval_detail", format!("job_id={job_id}")),
        ("/api/get_job", format!("job_id={job_id}")),
    ] {
        let (status, answer) = server_fn(&test.router, path, &cookie, &body).await;
        assert_eq!(status, StatusCode::OK, "{path} {body}: {answer}");
    }
}

/// Call a portal server function as the hydrated page does (same origin, form body, JSON
/// answer) with the session `cookie`: the status and the answer's text.
async fn server_fn(router: &Router, path: &str, cookie: &str, body: &str) -> (StatusCode, String) {
    let cookie = cookie.split(';').next().unwrap_or_default();
    let response = router
        .clone()
        .oneshot(
            Request::builder()
                .method("POST")
                .uri(path)
                .header("host", "127.0.0.1:3000")
                .header("origin", "http://127.0.0.1:3000")
                .header("cookie", cookie)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("accept", "application/json")
                .body(Body::from(body.to_string()))
                .expect("request"),
        )
        .await
        .expect("answer");
    status_and_text(response).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_explorer_filters_pages_and_verifies_rows_for_auditors() {
    let _serial = SERIAL.lock().await;
    let test = sqlite_app().await;
    server::services::identity::accounts::add(
        &test.state.store,
        "bob",
        PASSWORD,
        &["auditor".into()],
        &[],
    )
    .await
    .expect("bob");
    let events: Vec<_> = (0..60)
        .map(|i| {
            server::store::NewAuditEvent::new(
                server::store::EventKind::Decision,
                "it-mcp",
                if i % 2 == 0 { "dns-lookup" } else { "ssh-exec" },
                "op",
                AuditAction::Allow,
                &format!("row {i}"),
                Risk::Low,
            )
        })
        .collect();
    server::store::Store::append_audit(&test.store, &events)
        .await
        .expect("append");
    let (status, cookie, _) = sign_in(&test.router, "bob", PASSWORD).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = cookie.expect("cookie");

    let (status, html) = get_as(&test.router, "/audit", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("data-testid=\"older-rows\""),
        "more than one page"
    );
    let (_, html) = get_as(&test.router, "/audit?tool=dns-lookup", &cookie).await;
    assert!(
        html.contains(">row 58<") && !html.contains(">row 59<"),
        "{html}"
    );
    assert!(
        !html.contains("data-testid=\"older-rows\""),
        "30 rows fit one page"
    );
    let (_, html) = get_as(&test.router, "/audit?kind=bogus", &cookie).await;
    assert!(html.contains("unknown event kind"), "{html}");
    let (_, html) = get_as(&test.router, "/audit?from=yesterday", &cookie).await;
    assert!(html.contains("from: not a date or time"), "{html}");

    let (status, html) = get_as(&test.router, "/audit/2", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("The chain verifies at this row."), "{html}");

    // What the hydrated page sends when the filters change in the browser.
    let bob_cookie = cookie.split(';').next().unwrap_or_default().to_string();
    for (path, content_type, body) in [
        ("/api/search_audit", "application/json", r#"{"query":{}}"#),
        (
            "/api/search_audit",
            "application/json",
            r#"{"query":{"tool":"ssh-exec"}}"#,
        ),
        (
            "/api/audit_row",
            "application/x-www-form-urlencoded",
            "seq=1",
        ),
    ] {
        let response = test
            .router
            .clone()
            .oneshot(
                Request::builder()
                    .method("POST")
                    .uri(path)
                    .header("host", "127.0.0.1:3000")
                    .header("origin", "http://127.0.0.1:3000")
                    .header("cookie", &bob_cookie)
                    .header("content-type", content_type)
                    .header("accept", "application/json")
                    .body(Body::from(body))
                    .expect("request"),
            )
            .await
            .expect("answer");
        assert_eq!(response.status(), StatusCode::OK, "{path} {body}");
    }

    // Not for approvers.
    let alice = alice(&test.router).await;
    let (_, html) = get_as(&test.router, "/audit", &alice).await;
    assert!(html.contains("for auditors and admins"), "{html}");
}

/// POST the sign-in form as `user` from the peer `peer` if given (perhaps through a proxy that says it
/// forwards `forwarded`), with `next` (form-encoded already): the status, the session cookie
/// if one was set, and where it redirects.
async fn sign_in_from(
    router: &Router,
    user: &str,
    password: &str,
    peer: Option<&str>,
    forwarded: Option<&str>,
    next: &str,
) -> (StatusCode, Option<String>, String) {
    let mut builder = Request::builder()
        .method("POST")
        .uri("/auth/login")
        .header("host", "127.0.0.1:3000")
        .header("origin", "http://127.0.0.1:3000")
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(peer) = peer {
        builder = builder.extension(axum::extract::ConnectInfo(
            peer.parse::<std::net::SocketAddr>().expect("peer address"),
        ));
    }
    if let Some(forwarded) = forwarded {
        builder = builder.header("x-forwarded-for", forwarded);
    }
    let body = format!(
        "username={user}&password={}&next={next}",
        password.replace(' ', "+")
    );
    let response = request(router, builder.body(Body::from(body)).expect("req")).await;
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.contains("countersign="))
        .map(String::from);
    (response.status(), cookie, location)
}

/// A CR/LF, a tab or a second slash smuggled into `next` never leaves the site and never
/// breaks the redirect: the person signs in and lands on `/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_returns_only_to_local_paths() {
    let _serial = SERIAL.lock().await;
    let test = sqlite_app().await;
    for (next, to) in [
        // Form-encoded: `/<CR><LF>Location: https://evil.example`.
        ("%2F%0D%0ALocation%3A+https%3A%2F%2Fevil.example", "/"),
        ("%2F%0Aevil", "/"),
        // `/<TAB>/evil.example/x`, which a browser reads as `//evil.example/x`.
        ("%2F%09%2Fevil.example%2Fx", "/"),
        // `/%09/evil.example/x`: the same once more decoded.
        ("%2F%2509%2Fevil.example%2Fx", "/"),
        ("%2F%2Fevil.example", "/"),
        ("%2F%5Cevil.example", "/"),
        ("%2F%255Cevil.example", "/"),
        ("%2F%252F%2Fevil.example", "/"),
        ("https%3A%2F%2Fevil.example", "/"),
        ("%2Fapprovals%3Fx%3D1", "/approvals?x=1"),
        ("%2Fapprovals%2Fabc", "/approvals/abc"),
    ] {
        let (status, cookie, location) = sign_in_from(
            &test.router,
            "alice",
            PASSWORD,
            Some("192.0.2.1:5000"),
            None,
            next,
        )
        .await;
        assert_eq!(
            (status, location.as_str()),
            (StatusCode::SEE_OTHER, to),
            "next={next}"
        );
        assert!(cookie.is_some(), "signed in: next={next}");
    }
}

/// Unknown user names get exactly the answers real accounts get: the same message and status,
/// and the lock after the same number of failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_are_answered_and_locked_like_real_ones() {
    let _serial = SERIAL.lock().await;
    let test = sqlite_app().await;
    let mut answers = Vec::new();
    for attempt in 0..8 {
        let real = sign_in(&test.router, "alice", "wrong password!").await;
        let unknown = sign_in(&test.router, "nobody", "wrong password!").await;
        assert!(real.1.is_none() && unknown.1.is_none(), "no session");
        assert_eq!(
            (real.0, &real.2),
            (unknown.0, &unknown.2),
            "attempt {attempt}"
        );
        answers.push(real.2);
    }
    assert!(
        answers[..5].iter().all(|a| a.contains("error=invalid")),
        "{answers:?}"
    );
    assert!(
        answers[5..].iter().all(|a| a.contains("error=locked")),
        "{answers:?}"
    );
    // The right password waits out the lock as well.
    let (_, cookie, location) = sign_in(&test.router, "alice", PASSWORD).await;
    assert!(cookie.is_none() && location.contains("error=locked"));
    // The audit trail tells them apart (it names the user), the answers do not.
    let rows = server::store::Store::audit_page(&test.store, 0, 100)
        .await
        .expect("audit");
    let locked = |who: &str| {
        rows.iter()
            .filter(|r| {
                r.event.caller_id == who && r.event.decision_reason.contains("too many failed")
            })
            .count()
    };
    assert_eq!((locked("alice"), locked("nobody")), (4, 3));
}

/// With `https://` as the public URL every response carries Strict-Transport-Security (pages,
/// probes, refusals, unknown paths); over plain http none does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_transport_security_is_sent_only_over_https() {
    let _serial = SERIAL.lock().await;
    let requests = || {
        [
            Request::builder()
                .uri("/healthz")
                .body(Body::empty())
                .expect("req"),
            Request::builder()
                .uri("/sign-in")
                .body(Body::empty())
                .expect("req"),
            Request::builder()
                .uri("/approvals")
                .body(Body::empty())
                .expect("req"),
            Request::builder()
                .uri("/no/such/file.txt")
                .body(Body::empty())
                .expect("req"),
            Request::builder()
                .method("POST")
                .uri("/auth/logout")
                .header("host", "countersign.example.com")
                .header("origin", "https://evil.example")
                .body(Body::empty())
                .expect("req"),
            Request::builder()
                .uri("/api/v1/whoami")
                .body(Body::empty())
                .expect("req"),
        ]
    };
    let https = sqlite_app_with(|c| {
        c.public_url = Some("https://countersign.example.com".into());
    })
    .await;
    for req in requests() {
        let path = req.uri().path().to_string();
        let response = request(&https.router, req).await;
        assert_eq!(
            response
                .headers()
                .get("strict-transport-security")
                .and_then(|v| v.to_str().ok()),
            Some("max-age=31536000"),
            "{path}: {}",
            response.status()
        );
    }
    let http = sqlite_app_with(|c| {
        c.public_url = Some("http://127.0.0.1:3000".into());
    })
    .await;
    for req in requests() {
        let path = req.uri().path().to_string();
        let response = request(&http.router, req).await;
        assert!(
            !response.headers().contains_key("strict-transport-security"),
            "{path}"
        );
    }
    let unset = sqlite_app().await;
    for req in requests() {
        let response = request(&unset.router, req).await;
        assert!(!response.headers().contains_key("strict-transport-security"));
    }
}

/// Behind a trusted reverse proxy each forwarded client has its own sign-in budget; from any
/// other peer X-Forwarded-For is ignored, so a client cannot escape its budget by inventing
/// addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let _serial = SERIAL.lock().await;
    let test = sqlite_app_with(|c| c.trusted_proxies = Some("10.0.0.0/8, fd00::/8".into())).await;
    let attempt = |name: String, peer: &'static str, forwarded: Option<String>| {
        let router = test.router.clone();
        async move {
            sign_in_from(
                &router,
                &name,
                "wrong password!",
                Some(peer),
                forwarded.as_deref(),
                "%2F",
            )
            .await
            .2
        }
    };
    // Twenty failures (the budget) from one client that claims to forward for others.
    for n in 0..20 {
        let location = attempt(
            format!("ghost-{n}"),
            "198.51.100.7:5000",
            Some(format!("203.0.113.{n}")),
        )
        .await;
        assert!(location.contains("error=invalid"), "{n}: {location}");
    }
    let location = attempt(
        "ghost-x".into(),
        "198.51.100.7:5000",
        Some("203.0.113.200".into()),
    )
    .await;
    assert!(
        location.contains("error=throttled"),
        "a spoofed X-Forwarded-For is ignored: {location}"
    );
    // Behind the proxy: one client spends its budget...
    for n in 0..20 {
        let location = attempt(
            format!("phantom-{n}"),
            "10.0.0.2:443",
            Some("192.0.2.10".into()),
        )
        .await;
        assert!(location.contains("error=invalid"), "{n}: {location}");
    }
    let location = attempt(
        "phantom-x".into(),
        "10.0.0.2:443",
        Some("192.0.2.10".into()),
    )
    .await;
    assert!(location.contains("error=throttled"), "{location}");
    // ...and the next client behind the same proxy (through a second proxy too) has its own.
    for (peer, forwarded) in [
        ("10.0.0.2:443", Some("192.0.2.11")),
        ("10.0.0.2:443", Some("192.0.2.10, 192.0.2.12, 10.7.7.7")),
        ("[fd00::2]:443", Some("2001:db8::5")),
        ("10.0.0.2:443", None),
    ] {
        let location = attempt("phantom-y".into(), peer, forwarded.map(String::from)).await;
        assert!(
            location.contains("error=invalid"),
            "{peer} {forwarded:?}: {location}"
        );
    }
    // The audit trail names the client, as forwarded by the proxy.
    let rows = server::store::Store::audit_page(&test.store, 0, 200)
        .await
        .expect("audit");
    let addresses: std::collections::BTreeSet<String> = rows
        .iter()
        .filter_map(|r| serde_json::from_str::<serde_json::Value>(&r.event.context).ok())
        .filter_map(|c| c["address"].as_str().map(String::from))
        .collect();
    assert!(
        addresses.contains("192.0.2.10")
            && addresses.contains("192.0.2.12")
            && addresses.contains("2001:db8::5")
            && addresses.contains("198.51.100.7")
            && !addresses.iter().any(|a| a.starts_with("203.0.113.")),
        "{addresses:?}"
    );
}

async fn session_expiry(pool: &sqlx::SqlitePool) -> time::OffsetDateTime {
    sqlx::query_scalar("SELECT expiry_date FROM tower_sessions")
        .fetch_one(pool)
        .await
        .expect("one session")
}

async fn set_session_expiry(pool: &sqlx::SqlitePool, at: time::OffsetDateTime) {
    sqlx::query("UPDATE tower_sessions SET expiry_date = ?")
        .bind(at)
        .execute(pool)
        .await
        .expect("session updated");
}

/// A session in use slides: its idle deadline is pushed back (written at most once a refresh
/// interval, a twentieth of the idle limit: 3 s here), and the cookie is sent again with it; a
/// session left idle past its deadline ends. The wait of a whole idle limit is played by moving
/// the stored deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_in_use_outlives_its_idle_limit_and_an_idle_one_ends() {
    let _serial = SERIAL.lock().await;
    let test = sqlite_app_with(|c| c.session_idle_minutes = 1).await;
    let pool = match &test.state.db {
        Database::Sqlite(pool) => pool.clone(),
        Database::Postgres(_) => unreachable!("a SQLite app"),
    };
    let cookie = alice(&test.router).await;
    let session = cookie.split(';').next().unwrap_or_default().to_string();
    let use_it = || {
        let (router, session) = (test.router.clone(), session.clone());
        async move {
            request(
                &router,
                Request::builder()
                    .uri("/jobs")
                    .header("cookie", session)
                    .body(Body::empty())
                    .expect("req"),
            )
            .await
        }
    };
    let set_cookie = |r: &axum::response::Response| {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("countersign="))
            .map(String::from)
    };
    let signed_in = session_expiry(&pool).await;
    let now = time::OffsetDateTime::now_utc();
    assert!(
        signed_in > now + time::Duration::seconds(50)
            && signed_in <= now + time::Duration::seconds(61),
        "the idle limit from sign-in: {signed_in} (now {now})"
    );
    // Used again at once: nothing is written, no cookie is sent.
    let r = use_it().await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(set_cookie(&r), None, "no write on every request");
    assert_eq!(session_expiry(&pool).await, signed_in);

    // As if it had been idle for 55 s: its deadline is 5 s away. Used after the refresh
    // interval, it moves a whole idle limit on, and the cookie says so.
    let old_deadline = time::OffsetDateTime::now_utc() + time::Duration::seconds(5);
    set_session_expiry(&pool, old_deadline).await;
    tokio::time::sleep(std::time::Duration::from_millis(3_500)).await;
    let r = use_it().await;
    assert_eq!(r.status(), StatusCode::OK);
    let again = set_cookie(&r).expect("the cookie is sent again with the new deadline");
    assert!(again.contains("Max-Age="), "{again}");
    let moved = session_expiry(&pool).await;
    assert!(
        moved > time::OffsetDateTime::now_utc() + time::Duration::seconds(50),
        "{moved}"
    );
    // Past the old deadline, the session still works.
    let wait = old_deadline - time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    tokio::time::sleep(std::time::Duration::try_from(wait).unwrap_or_default()).await;
    assert!(time::OffsetDateTime::now_utc() > old_deadline);
    assert_eq!(
        use_it().await.status(),
        StatusCode::OK,
        "a session in use lives on"
    );

    // Left idle past its deadline, it ends: the next request is sent to sign in.
    set_session_expiry(
        &pool,
        time::OffsetDateTime::now_utc() - time::Duration::seconds(1),
    )
    .await;
    let r = use_it().await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        r.headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|l| l.starts_with("/sign-in")),
        "an idle session ends"
    );
}

/// Replicas started together on an empty database all try to create the first `admin`: one
/// does, and the others take that account and serve (none fails to start).
async fn replicas_share_the_first_admin(url: &str) {
    let config = Config {
        database_url: url.to_string(),
        ..Config::default()
    };
    let first = Database::connect(&config).await.expect("database");
    first.migrate().await.expect("migrations apply");
    let mut replicas = vec![AppState::new(&config, first, policy()).expect("state")];
    for _ in 0..3 {
        let db = Database::connect(&config).await.expect("database");
        replicas.push(AppState::new(&config, db, policy()).expect("state"));
    }
    let started = futures_util::future::join_all(
        replicas
            .iter()
            .map(|state| server::web::auth::bootstrap_admin(state, Some(PASSWORD))),
    )
    .await;
    for result in &started {
        assert_eq!(result, &Ok(()), "every replica starts");
    }
    let db = &replicas[0].db;
    assert_eq!(
        server::services::identity::accounts::count(&db.store())
            .await
            .expect("count"),
        1,
        "one admin"
    );
    assert!(
        server::services::identity::accounts::authenticate(&db.store(), "admin", PASSWORD)
            .await
            .is_ok(),
        "it signs in"
    );
    // A replica that finds the account created under it goes on too.
    assert!(
        !server::services::identity::accounts::add_first_admin(&db.store(), PASSWORD)
            .await
            .expect("another replica's admin is accepted"),
        "not created twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_share_the_first_admin_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    replicas_share_the_first_admin(&format!(
        "sqlite://{}",
        dir.path().join("replicas.db").display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_share_the_first_admin_on_postgres() {
    let schema = common::PgSchema::create("cs_admin").await;
    replicas_share_the_first_admin(&schema.url_via(&common::pg_url())).await;
}

/// The dashboard's newest audit rows are the trail's: a viewer (refused on `/audit`) gets none
/// from the page or from its server function; an auditor gets them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_audit_rows_only_to_those_who_may_read_the_trail() {
    let _serial = SERIAL.lock().await;
    let test = sqlite_app().await;
    for (name, role) in [("vic", "viewer"), ("bob", "auditor")] {
        server::services::identity::accounts::add(
            &test.state.store,
            name,
            PASSWORD,
            &[role.into()],
            &[],
        )
        .await
        .expect("account");
    }
    let secret = server::store::NewAuditEvent::new(
        server::store::EventKind::Decision,
        "it-mcp",
        "ssh-exec",
        "secret-operation-name",
        AuditAction::Deny,
        "test",
        Risk::Critical,
    );
    server::store::Store::append_audit(&test.store, &[secret])
        .await
        .expect("append");
    let dashboard = |cookie: String| {
        let router = test.router.clone();
        async move {
            let (status, answer) = server_fn(&router, "/api/dashboard", &cookie, "").await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            answer
        }
    };
    let (_, viewer, _) = sign_in(&test.router, "vic", PASSWORD).await;
    let viewer = viewer.expect("viewer cookie");
    let (status, html) = get_as(&test.router, "/", &viewer).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!html.contains("secret-operation-name"), "{html}");
    assert!(!html.contains("data-testid=\"recent\""), "{html}");
    let answer = dashboard(viewer).await;
    assert!(!answer.contains("secret-operation-name"), "{answer}");

    let (_, auditor, _) = sign_in(&test.router, "bob", PASSWORD).await;
    let auditor = auditor.expect("auditor cookie");
    let (_, html) = get_as(&test.router, "/", &auditor).await;
    assert!(html.contains("secret-operation-name"), "{html}");
    assert!(dashboard(auditor).await.contains("secret-operation-name"));
}
