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
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        database_url: format!("sqlite://{}", dir.path().join("test.db").display()),
        ..Config::default()
    };
    let db = Database::connect(&config).await.expect("sqlite opens");
    db.migrate().await.expect("migrations apply");
    server::auth::accounts::add(
        &db,
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
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Sign in through the form endpoint; returns the session cookie (`name=value`).
async fn sign_in(
    router: &Router,
    user: &str,
    password: &str,
) -> (StatusCode, Option<String>, String) {
    let body = format!(
        "username={user}&password={}&next=%2Faudit",
        password.replace(' ', "+")
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
        .find(|c| c.starts_with("countersign="))
        .map(String::from);
    (response.status(), cookie, location)
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
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
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
    let (_, token) = server::auth::api_tokens::create(
        &db,
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
    server::auth::api_tokens::revoke(&db, "it-mcp")
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
        priority: "high".into(),
        requester: "bob".into(),
        requester_reason: Some("clean the old site".into()),
        risk: "HIGH".into(),
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
        "deny",
        "an earlier try without capabilities",
        "HIGH",
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
    for (action, risk) in [("allow", "LOW"), ("allow", "HIGH"), ("deny", "CRITICAL")] {
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
        let response = test
            .router
            .clone()
            .oneshot(
                Request::builder()
                    .method("POST")
                    .uri(path)
                    .header("host", "127.0.0.1:3000")
                    .header("origin", "http://127.0.0.1:3000")
                    .header("cookie", &cookie)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("accept", "application/json")
                    .body(Body::from(body.clone()))
                    .expect("request"),
            )
            .await
            .expect("answer");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(
            status,
            StatusCode::OK,
            "{path} {body}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_explorer_filters_pages_and_verifies_rows_for_auditors() {
    let _serial = SERIAL.lock().await;
    let test = sqlite_app().await;
    server::auth::accounts::add(&test.state.db, "bob", PASSWORD, &["auditor".into()], &[])
        .await
        .expect("bob");
    let events: Vec<_> = (0..60)
        .map(|i| {
            server::store::NewAuditEvent::new(
                server::store::EventKind::Decision,
                "it-mcp",
                if i % 2 == 0 { "dns-lookup" } else { "ssh-exec" },
                "op",
                "allow",
                &format!("row {i}"),
                "LOW",
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
    assert!(html.contains("is not a date or time"), "{html}");

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
