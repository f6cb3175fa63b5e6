//! Executors on a real port with a real HTTP client: a `process` job runs the moment its
//! approval lands (no shell, timeout enforced), a `webhook` job is signed, retried and recorded
//! by a receiver started here, and the `countersign agent` binary claims, runs and reports a
//! job assigned to it. Every step is in the job and the audit trail.

use axum::{extract::State, http::HeaderMap, routing::post, Router};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use server::executors::Dispatcher;
use server::store::{JobStatus, Store};
use server::{app, AppState, Config, Database};
use sha2::Sha256;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "webhook-test-secret";

fn policy_text(hook_port: u16) -> String {
    format!(
        r#"
name = "execution-test"
[approvals.risk.CRITICAL]
quorum = 1

[tools.deploy]
description = "test tool"
[tools.deploy.operations.echo]
risk = "CRITICAL"
requires = ["local-shell"]
executor = "echo"
[tools.deploy.operations.slow]
risk = "CRITICAL"
requires = ["local-shell"]
executor = "slow"
[tools.deploy.operations.notify]
risk = "CRITICAL"
requires = ["local-shell"]
executor = "hook"
[tools.deploy.operations.unsigned]
risk = "CRITICAL"
requires = ["local-shell"]
executor = "hook-without-secret"
[tools.deploy.operations.remote]
risk = "CRITICAL"
requires = ["local-shell"]
executor = "agent-seven"

[executors.echo]
kind = "process"
argv = ["/bin/echo", "{{args.message}}"]
timeout = "20s"

[executors.slow]
kind = "process"
argv = ["/bin/sleep", "{{args.secs}}"]
timeout = "1s"

[executors.hook]
kind = "webhook"
url = "http://127.0.0.1:{hook_port}/hook"
secret_env = "TEST_HOOK_SECRET"
timeout = "10s"
attempts = 3

[executors.hook-without-secret]
kind = "webhook"
url = "http://127.0.0.1:{hook_port}/hook"
secret_env = "TEST_HOOK_SECRET_UNSET"

[executors.agent-seven]
kind = "agent"
agent = "agent-7"
argv = ["/bin/echo", "ran", "{{args.message}}"]
timeout = "20s"
"#
    )
}

/// What the webhook receiver saw: (delivery id, signature verified, body).
type Seen = Arc<Mutex<Vec<(String, bool, Value)>>>;

async fn receiver(
    State(seen): State<Seen>,
    headers: HeaderMap,
    body: String,
) -> (axum::http::StatusCode, String) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let timestamp = header("x-countersign-timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let fresh = timestamp
        .parse::<i64>()
        .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() < 60);
    let verified = fresh && header("x-countersign-signature") == format!("sha256={expected}");
    let value: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let first = {
        let mut seen = seen.lock().expect("lock");
        seen.push((header("x-countersign-delivery"), verified, value));
        seen.len() == 1
    };
    if first {
        // The first delivery meets a tool server that is restarting.
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "restarting".into(),
        );
    }
    if !verified {
        return (axum::http::StatusCode::UNAUTHORIZED, "bad signature".into());
    }
    (
        axum::http::StatusCode::OK,
        json!({"status": "success", "output": "nginx restarted", "side_effects": ["service:nginx:restarted"]}).to_string(),
    )
}

struct Harness {
    state: AppState,
    base: String,
    http: reqwest::Client,
    caller_token: String,
    seen: Seen,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let seen: Seen = Arc::default();
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook_port = hook.local_addr().expect("addr").port();
    let hook_app = Router::new()
        .route("/hook", post(receiver))
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(hook, hook_app).await });

    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        database_url: format!("sqlite://{}", dir.path().join("exec.db").display()),
        ..Config::default()
    };
    let db = Database::connect(&config).await.expect("sqlite");
    db.migrate().await.expect("migrate");
    let policy =
        enforcer::PolicySet::load("execution-test.toml", &policy_text(hook_port)).expect("policy");
    let state = AppState::new(&config, db.clone(), Arc::new(policy)).expect("state");
    Dispatcher::new(state.clone())
        .expect("dispatcher")
        .with_secrets(Arc::new(|name: &str| {
            (name == "TEST_HOOK_SECRET").then(|| SECRET.to_string())
        }))
        .spawn();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let router = app(state.clone());
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let caller_token = server::services::identity::api_tokens::create(
        &db.store(),
        "it-mcp",
        &[],
        &["local-shell".to_string()],
    )
    .await
    .expect("token")
    .1;
    Harness {
        state,
        base,
        http: reqwest::Client::new(),
        caller_token,
        seen,
        _dir: dir,
    }
}

impl Harness {
    /// Ask for a decision; returns the job id it queued.
    async fn queue(&self, operation: &str, args: Value) -> String {
        let answer: Value = self
            .http
            .post(format!("{}/api/v1/decisions", self.base))
            .bearer_auth(&self.caller_token)
            .json(&json!({"tool": "deploy", "operation": operation, "args": args}))
            .send()
            .await
            .expect("decide")
            .json()
            .await
            .expect("json");
        assert_eq!(answer["action"], "require_approval", "{answer}");
        answer["job_id"].as_str().expect("job id").to_string()
    }

    async fn approve(&self, job_id: &str) {
        let voter = enforcer::Principal {
            id: "alice".into(),
            roles: ["approver".to_string()].into(),
            capabilities: ["local-shell".to_string()].into(),
        };
        server::services::approvals::vote(
            &self.state,
            &voter,
            job_id,
            enforcer::Verdict::Approve,
            Some("change ticket CHG-1"),
        )
        .await
        .expect("approve");
    }

    /// Long-poll the job through the API until it is final (bounded).
    async fn final_state(&self, job_id: &str) -> Value {
        for _ in 0..20 {
            let job: Value = self
                .http
                .get(format!("{}/api/v1/jobs/{job_id}?wait=5", self.base))
                .bearer_auth(&self.caller_token)
                .send()
                .await
                .expect("poll")
                .json()
                .await
                .expect("json");
            let status = job["status"].as_str().unwrap_or_default();
            if JobStatus::parse(status).is_some_and(JobStatus::is_final) {
                return job;
            }
        }
        panic!("job {job_id} did not finish");
    }

    /// The execution statuses audited for a job, in order, once the final one is written (the
    /// job's row can show the end a moment before its audit row is committed).
    async fn audited_steps(&self, job_id: &str) -> Vec<String> {
        let mut steps = Vec::new();
        for _ in 0..50 {
            let rows = self.state.store.audit_page(0, 1_000).await.expect("audit");
            steps = rows
                .into_iter()
                .filter(|r| {
                    r.event.job_id.as_deref() == Some(job_id)
                        && r.event.kind == server::store::EventKind::Execution
                })
                .filter_map(|r| r.event.execution_status)
                .collect::<Vec<_>>();
            if steps
                .last()
                .is_some_and(|s| matches!(s.as_str(), "success" | "failure" | "timeout" | "failed"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        steps
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_job_runs_when_approved_without_a_shell_and_is_audited() {
    let h = harness().await;
    let job_id = h
        .queue("echo", json!({"message": "hi; id $(whoami)"}))
        .await;
    h.approve(&job_id).await;
    let job = h.final_state(&job_id).await;
    assert_eq!(job["status"], "completed", "{job}");
    let stored = h.state.store.job(&job_id).await.expect("job");
    assert_eq!(stored.lease_owner.as_deref(), Some("executor:echo"));
    let result: Value =
        serde_json::from_str(stored.result.as_deref().unwrap_or("null")).expect("result");
    assert_eq!(result["output"], "hi; id $(whoami)\n");
    assert_eq!(result["exit_code"], 0);
    assert_eq!(
        h.audited_steps(&job_id).await,
        ["picked", "executing", "success"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_job_past_its_timeout_ends_timeout() {
    let h = harness().await;
    let job_id = h.queue("slow", json!({"secs": "30"})).await;
    h.approve(&job_id).await;
    let job = h.final_state(&job_id).await;
    assert_eq!(job["status"], "timeout", "{job}");
    assert_eq!(
        h.audited_steps(&job_id).await,
        ["picked", "executing", "timeout"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_job_is_signed_retried_and_its_answer_recorded() {
    let h = harness().await;
    let job_id = h.queue("notify", json!({"service": "nginx"})).await;
    h.approve(&job_id).await;
    let job = h.final_state(&job_id).await;
    assert_eq!(job["status"], "completed", "{job}");
    let seen = h.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "one refused delivery, then one accepted");
    assert!(seen
        .iter()
        .all(|(delivery, verified, _)| delivery == &job_id && *verified));
    let body = &seen[1].2;
    assert_eq!(
        (body["tool"].as_str(), body["args"]["service"].as_str()),
        (Some("deploy"), Some("nginx"))
    );
    assert_eq!(body["approvals"][0]["approver"], "alice");
    assert_eq!(
        h.audited_steps(&job_id).await,
        ["picked", "executing", "success"]
    );
    let rows = h.state.store.audit_page(0, 1_000).await.expect("audit");
    let done = rows
        .iter()
        .rev()
        .find(|r| r.event.job_id.as_deref() == Some(job_id.as_str()))
        .expect("result row");
    assert_eq!(done.event.execution_status.as_deref(), Some("success"));
    assert_eq!(
        done.event.side_effects.as_deref(),
        Some(r#"["service:nginx:restarted"]"#)
    );

    // Without its secret a webhook executor sends nothing and the job fails, saying why.
    let unsigned = h.queue("unsigned", json!({})).await;
    h.approve(&unsigned).await;
    let job = h.final_state(&unsigned).await;
    assert_eq!(job["status"], "failed", "{job}");
    let stored = h.state.store.job(&unsigned).await.expect("job");
    assert!(
        stored
            .error
            .as_deref()
            .is_some_and(|e| e.contains("TEST_HOOK_SECRET_UNSET")),
        "{:?}",
        stored.error
    );
    assert_eq!(
        h.seen.lock().expect("lock").len(),
        2,
        "nothing more was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_binary_runs_the_jobs_assigned_to_it() {
    let h = harness().await;
    let agent_token = server::services::identity::api_tokens::create(
        &h.state.store,
        "agent-7",
        &["agent".to_string()],
        &[],
    )
    .await
    .expect("token")
    .1;
    let other_token = server::services::identity::api_tokens::create(
        &h.state.store,
        "agent-8",
        &["agent".to_string()],
        &[],
    )
    .await
    .expect("token")
    .1;
    let job_id = h
        .queue("remote", json!({"message": "hello; rm -rf /"}))
        .await;
    h.approve(&job_id).await;
    // Assigned to agent-7: another agent finds nothing to claim.
    let other = h
        .http
        .post(format!("{}/api/v1/agents/agent-8/claim", h.base))
        .bearer_auth(&other_token)
        .send()
        .await
        .expect("claim");
    assert_eq!(other.status(), reqwest::StatusCode::NO_CONTENT);

    let mut agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args([
            "agent",
            "--server",
            &h.base,
            "--id",
            "agent-7",
            "--max-jobs",
            "1",
        ])
        .env("COUNTERSIGN_AGENT_TOKEN", &agent_token)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("agent");
    let job = h.final_state(&job_id).await;
    assert_eq!(job["status"], "completed", "{job}");
    let exit = tokio::time::timeout(Duration::from_secs(30), agent.wait())
        .await
        .expect("the agent stops after --max-jobs")
        .expect("exit");
    assert!(exit.success());
    let stored = h.state.store.job(&job_id).await.expect("job");
    assert_eq!(stored.lease_owner.as_deref(), Some("agent-7"));
    let result: Value =
        serde_json::from_str(stored.result.as_deref().unwrap_or("null")).expect("result");
    assert_eq!(result["output"], "ran hello; rm -rf /\n");
    assert_eq!(
        h.audited_steps(&job_id).await,
        ["picked", "executing", "success"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_stops_with_a_clear_error_when_its_token_is_refused() {
    let h = harness().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["agent", "--server", &h.base, "--id", "agent-9"])
        .env("COUNTERSIGN_AGENT_TOKEN", "cs_not_a_real_token")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("the agent gives up on a refused token")
        .expect("output");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refused agent \"agent-9\""), "{stderr}");
}
