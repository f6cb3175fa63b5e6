//! The MCP gateway against real peers: the official Rust SDK (`rmcp`) as the assistant's client,
//! starting `countersign mcp` over stdio as a desktop client does, and the official filesystem
//! server from npm (`@modelcontextprotocol/server-filesystem`, installed by
//! `scripts/setup.sh e2e`) as the upstream. Approvers vote in this process, through the same
//! service the portal uses, on the same database.

use rmcp::model::{CallToolRequestParams, CallToolResult, ProgressNotificationParam};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{json, Map, Value};
use server::config::Config;
use server::store::{JobStatus, Store};
use server::{AppState, Database};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::npm_mcp::{everything_over_http, everything_server, filesystem_server, free_port};

const POLICY: &str = r#"
name = "mcp-gateway-test"
capabilities = ["files-read", "files-write"]

[approvals.risk.CRITICAL]
quorum = 1
request_ttl = "1h"
approval_window = "15m"

[tools.files]
description = "Files, through an MCP file server"
[tools.files.operations.read]
risk = "LOW"
requires = ["files-read"]
description = "Read a file"
path_args = ["path"]
[tools.files.operations.list]
risk = "LOW"
requires = ["files-read"]
description = "List a folder"
[tools.files.operations.write]
risk = "CRITICAL"
requires = ["files-write"]
description = "Write a file"
path_args = ["path"]

[tools.demo]
description = "The MCP reference server's demonstration tools"
[tools.demo.operations.echo]
risk = "LOW"
requires = ["files-read"]
description = "Echo a message"
[tools.demo.operations.slow]
risk = "LOW"
requires = ["files-read"]
description = "A long-running operation"

[mcp.upstreams.everything.tools.echo]
tool = "demo"
operation = "echo"
[mcp.upstreams.everything.tools.trigger-long-running-operation]
tool = "demo"
operation = "slow"

[mcp.upstreams.remote.tools.echo]
tool = "demo"
operation = "echo"

[mcp.upstreams.fs.tools.read_text_file]
tool = "files"
operation = "read"
[mcp.upstreams.fs.tools.list_directory]
tool = "files"
operation = "list"
[mcp.upstreams.fs.tools.write_file]
tool = "files"
operation = "write"
target_arg = "path"
"#;

/// The processes whose parent is `pid` (read from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let parent = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .map(str::trim);
        if parent == Some(pid.to_string().as_str()) {
            out.push(child);
        }
    }
    out
}

/// Counts the progress notifications the gateway sends.
#[derive(Clone, Default)]
struct Assistant {
    progress: Arc<AtomicUsize>,
    last_message: Arc<std::sync::Mutex<String>>,
}

impl ClientHandler for Assistant {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.fetch_add(1, Ordering::SeqCst);
        if let (Some(message), Ok(mut last)) = (params.message, self.last_message.lock()) {
            *last = message;
        }
    }
}

struct Env {
    dir: tempfile::TempDir,
    state: AppState,
    client: RunningService<RoleClient, Assistant>,
    assistant: Assistant,
    /// The `countersign mcp` process.
    gateway_pid: u32,
}

/// How a test's gateway is set up, beyond the defaults.
#[derive(Default)]
struct Setup<'a> {
    /// More configuration (more upstreams, settings).
    config: &'a str,
    /// Environment variables for the `countersign mcp` process.
    env: Vec<(&'a str, String)>,
    /// `--on-behalf-of`.
    on_behalf_of: Option<&'a str>,
}

impl Env {
    async fn start(hold_secs: u64) -> Env {
        Env::start_with(hold_secs, "fs").await
    }

    /// A gateway in front of the upstream `upstream` (`fs` or `everything`).
    async fn start_with(hold_secs: u64, upstream: &str) -> Env {
        Env::start_setup(hold_secs, upstream, Setup::default())
            .await
            .expect("the gateway completes the MCP handshake")
    }

    /// A gateway as `setup` says; the error when it does not come up.
    async fn start_setup(hold_secs: u64, upstream: &str, setup: Setup<'_>) -> Result<Env, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = dir.path().join("files");
        std::fs::create_dir(&files).expect("files dir");
        std::fs::write(files.join("hello.txt"), "hello from the upstream\n").expect("file");
        let policy_path = dir.path().join("policy.toml");
        std::fs::write(&policy_path, POLICY).expect("policy");
        let config_path = dir.path().join("countersign.toml");
        let config_text = format!(
            r#"
database_url = "sqlite://{db}"
policy_file = "{policy}"
mcp_hold_secs = {hold_secs}
mcp_progress_secs = 1
log_level = "warn"

[[mcp_upstreams]]
name = "fs"
command = "node"
args = ["{server}", "{files}"]
env = ["PATH", "HOME"]

[[mcp_upstreams]]
name = "everything"
command = "node"
args = ["{everything}", "stdio"]
env = ["PATH", "HOME"]
{extra}
"#,
            extra = setup.config,
            db = dir.path().join("countersign.db").display(),
            policy = policy_path.display(),
            server = filesystem_server().display(),
            files = files.display(),
            everything = everything_server().display(),
        );
        std::fs::write(&config_path, config_text).expect("config");
        let config = Config::load(Some(&config_path)).expect("config loads");
        let db = Database::connect(&config).await.expect("sqlite opens");
        db.migrate().await.expect("migrations apply");
        let (_, token) = server::services::identity::api_tokens::create(
            &db.store(),
            "assistant",
            &[],
            &["files-read".into(), "files-write".into()],
        )
        .await
        .expect("token");
        let policy = enforcer::PolicySet::load("policy.toml", POLICY).expect("policy loads");
        let state = AppState::new(&config, db, Arc::new(policy)).expect("state");
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"));
        command
            .arg("--config")
            .arg(&config_path)
            .args(["mcp", "--upstream", upstream])
            .env("COUNTERSIGN_MCP_TOKEN", token)
            .envs(setup.env);
        if let Some(person) = setup.on_behalf_of {
            command.args(["--on-behalf-of", person]);
        }
        let assistant = Assistant::default();
        let transport = rmcp::transport::TokioChildProcess::builder(command)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn gateway");
        let (transport, stderr) = transport;
        let gateway_pid = transport.id().expect("the gateway's pid");
        match assistant.clone().serve(transport).await {
            Ok(client) => {
                // What the gateway logs goes on to the test's output (and never fills the pipe).
                if let Some(mut stderr) = stderr {
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut stderr, &mut tokio::io::stderr()).await;
                    });
                }
                Ok(Env {
                    dir,
                    state,
                    client,
                    assistant,
                    gateway_pid,
                })
            }
            Err(error) => {
                let mut said = String::new();
                if let Some(mut stderr) = stderr {
                    use tokio::io::AsyncReadExt;
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        stderr.read_to_string(&mut said),
                    )
                    .await;
                }
                Err(format!("{error}: {said}"))
            }
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join("files").join(name)
    }

    async fn call(&self, tool: &str, arguments: Value) -> CallToolResult {
        let arguments: Map<String, Value> = arguments.as_object().cloned().unwrap_or_default();
        tokio::time::timeout(
            Duration::from_secs(60),
            self.client
                .peer()
                .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(arguments)),
        )
        .await
        .expect("the gateway answers in time")
        .expect("a tool result")
    }

    /// The one job waiting for approval (waits for the gateway to queue it).
    async fn pending_job(&self) -> server::store::Job {
        for _ in 0..100 {
            let pending = self.state.store.pending_jobs(10).await.expect("pending");
            if let Some(job) = pending.into_iter().next() {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no job was queued");
    }

    /// The assistant's audit rows, oldest first.
    async fn assistants_rows(&self) -> Vec<server::store::AuditRecord> {
        self.state
            .store
            .audit_search(
                &server::store::AuditFilter {
                    caller_id: Some("assistant".into()),
                    after_seq: Some(0),
                    ..Default::default()
                },
                100,
            )
            .await
            .expect("audit")
    }

    /// The statuses of the assistant's execution rows, oldest first, once there are at least
    /// `count` of them (or after 5 s).
    async fn execution_statuses(&self, count: usize) -> Vec<Option<String>> {
        let mut statuses = Vec::new();
        for _ in 0..50 {
            statuses = self
                .assistants_rows()
                .await
                .iter()
                .filter(|r| r.event.kind == server::store::EventKind::Execution)
                .map(|r| r.event.execution_status.clone())
                .collect();
            if statuses.len() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        statuses
    }

    async fn vote(&self, job_id: &str, verdict: enforcer::Verdict, reason: &str) {
        let dave = enforcer::Principal {
            id: "dave".into(),
            roles: ["approver".to_string()].into(),
            capabilities: ["files-write".to_string()].into(),
        };
        server::services::approvals::vote(&self.state.core, &dave, job_id, verdict, Some(reason))
            .await
            .expect("the vote counts");
    }
}

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_list_shows_what_the_policy_knows_with_its_risk() {
    let env = Env::start(30).await;
    let tools = env
        .client
        .peer()
        .list_all_tools()
        .await
        .expect("tools/list");
    let mut names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(names, ["list_directory", "read_text_file", "write_file"]);
    let write = tools
        .iter()
        .find(|t| t.name == "write_file")
        .expect("write_file");
    let meta = write.meta.as_ref().expect("_meta");
    assert_eq!(meta.get("countersign/risk"), Some(&json!("CRITICAL")));
    let description = write.description.as_deref().unwrap_or_default();
    assert!(description.contains("risk CRITICAL"), "{description}");
    // The upstream's own description and schema pass through.
    assert!(write.input_schema.contains_key("properties"));
    assert!(description.len() > 60, "{description}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_call_returns_the_upstreams_result_unchanged_and_is_audited() {
    let env = Env::start(30).await;
    let path = env.file("hello.txt").display().to_string();
    let through = env.call("read_text_file", json!({ "path": path })).await;
    assert_ne!(through.is_error, Some(true), "{}", text(&through));
    assert!(text(&through).contains("hello from the upstream"));

    // The same call made to the filesystem server directly gives the same result.
    let mut direct = tokio::process::Command::new("node");
    direct
        .arg(filesystem_server())
        .arg(env.dir.path().join("files"));
    let direct =
        ().serve(rmcp::transport::TokioChildProcess::new(direct).expect("spawn"))
            .await
            .expect("handshake");
    let arguments = json!({ "path": path })
        .as_object()
        .cloned()
        .unwrap_or_default();
    let straight = direct
        .peer()
        .call_tool(CallToolRequestParams::new("read_text_file").with_arguments(arguments))
        .await
        .expect("direct call");
    assert_eq!(
        serde_json::to_value(&through).expect("json"),
        serde_json::to_value(&straight).expect("json")
    );
    let _ = direct.cancel().await;

    // The decision and the run are in the audit trail (the run's row is written beside the
    // answer, so it may land a moment later).
    let mut rows = env.assistants_rows().await;
    for _ in 0..50 {
        if rows.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        rows = env.assistants_rows().await;
    }
    let kinds: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.event.kind.as_str(), r.event.decision_action.as_str()))
        .collect();
    assert_eq!(kinds, [("decision", "allow"), ("execution", "execute")]);
    assert_eq!(rows[1].event.execution_status.as_deref(), Some("success"));
    assert_eq!(rows[0].event.tool, "files");
    assert_eq!(rows[0].event.operation, "read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_the_policy_does_not_know_is_denied_with_the_reason() {
    let env = Env::start(30).await;
    let moved = env
        .call(
            "move_file",
            json!({ "source": env.file("hello.txt"), "destination": env.file("gone.txt") }),
        )
        .await;
    assert_eq!(moved.is_error, Some(true));
    assert!(
        text(&moved).contains("does not know the tool `move_file`"),
        "{}",
        text(&moved)
    );
    assert!(env.file("hello.txt").exists(), "nothing was moved");
    let rows = env.assistants_rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event.decision_action, "deny");
    assert_eq!(rows[0].event.tool, "mcp:fs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_call_waits_with_progress_and_runs_once_approved() {
    let env = Env::start(30).await;
    let target = env.file("notes.txt");
    let call = env.call(
        "write_file",
        json!({ "path": target, "content": "approved text\n" }),
    );
    let approve = async {
        let job = env.pending_job().await;
        assert_eq!(job.tool_name, "files");
        assert_eq!(job.operation, "write");
        assert_eq!(
            job.target.as_deref(),
            Some(target.to_str().unwrap_or_default())
        );
        // Let it report progress first.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert!(!target.exists(), "nothing runs before the approval");
        env.vote(&job.job_id, enforcer::Verdict::Approve, "looks right")
            .await;
        job
    };
    let (result, job) = tokio::join!(call, approve);
    assert_ne!(result.is_error, Some(true), "{}", text(&result));
    assert_eq!(
        std::fs::read_to_string(&target).expect("written"),
        "approved text\n"
    );
    assert!(env.assistant.progress.load(Ordering::SeqCst) >= 2);
    let message = env
        .assistant
        .last_message
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    assert!(
        message.contains("waiting for 1 of 1 approvals") && message.contains(&job.job_id),
        "{message}"
    );
    let done = env.state.store.job(&job.job_id).await.expect("job");
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(
        done.lease_owner.as_deref(),
        Some(format!("mcp:{}", job.job_id).as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_hold_is_continued_by_the_same_call_never_asked_twice() {
    let env = Env::start(2).await;
    let target = env.file("later.txt");
    let arguments = json!({ "path": target, "content": "second try\n" });
    let first = env.call("write_file", arguments.clone()).await;
    assert_eq!(first.is_error, Some(true));
    let said = text(&first);
    assert!(
        said.contains("waiting for people") && said.contains("same arguments"),
        "{said}"
    );
    let job = env.pending_job().await;

    // The retry attaches to the same request; approving it while the retry waits runs it.
    let again = env.call("write_file", arguments.clone());
    let approve = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        env.vote(&job.job_id, enforcer::Verdict::Approve, "fine")
            .await;
    };
    let (again, ()) = tokio::join!(again, approve);
    assert_ne!(again.is_error, Some(true), "{}", text(&again));
    assert_eq!(
        std::fs::read_to_string(&target).expect("written"),
        "second try\n"
    );
    let jobs = env
        .state
        .store
        .jobs_page(&server::store::JobFilter::default(), 10)
        .await
        .expect("jobs");
    assert_eq!(jobs.len(), 1, "one request for one call");

    // A third identical call finds it ran and does not run it again.
    std::fs::write(&target, "changed since\n").expect("rewrite");
    let third = env.call("write_file", arguments).await;
    assert_eq!(
        std::fs::read_to_string(&target).expect("file"),
        "changed since\n",
        "an approved call runs once"
    );
    // It is a new call (the old job is final), so it asks again.
    assert_eq!(third.is_error, Some(true));
    assert!(
        text(&third).contains("waiting for people"),
        "{}",
        text(&third)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_call_tells_the_assistant_the_reviewers_reason() {
    let env = Env::start(30).await;
    let target = env.file("denied.txt");
    let call = env.call("write_file", json!({ "path": target, "content": "no\n" }));
    let deny = async {
        let job = env.pending_job().await;
        env.vote(&job.job_id, enforcer::Verdict::Deny, "not on a Friday")
            .await;
    };
    let (result, ()) = tokio::join!(call, deny);
    assert_eq!(result.is_error, Some(true));
    assert!(
        text(&result).contains("not on a Friday"),
        "{}",
        text(&result)
    );
    assert!(!target.exists());
}

/// Over Streamable HTTP at `/mcp`: no token, no entry (with the challenge the MCP
/// authorization spec describes); with one, the MCP handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_endpoint_asks_for_a_bearer_token_and_then_speaks_mcp() {
    use http_body_util::BodyExt;
    use tower::ServiceExt as _;
    let env = Env::start(30).await;
    let router = server::app(env.state.clone());
    let initialize = json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": { "name": "test", "version": "1" }
        }
    });
    let request = |token: Option<&str>| {
        let mut builder = axum::http::Request::builder()
            .method("POST")
            .uri("/mcp")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        builder
            .body(axum::body::Body::from(initialize.to_string()))
            .expect("request")
    };
    let refused = router.clone().oneshot(request(None)).await.expect("answer");
    assert_eq!(refused.status(), 401);
    let challenge = refused
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        challenge.contains("resource_metadata=")
            && challenge.contains("/.well-known/oauth-protected-resource/mcp\""),
        "{challenge}"
    );

    let (_, token) = server::services::identity::api_tokens::create(
        &env.state.db.store(),
        "remote-assistant",
        &[],
        &["files-read".into()],
    )
    .await
    .expect("token");
    let answer = router
        .clone()
        .oneshot(request(Some(&token)))
        .await
        .expect("answer");
    assert_eq!(answer.status(), 200);
    let body = answer.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&body);
    // An SSE stream (its first event may be an empty priming one) or plain JSON.
    let message: Value = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:").map(str::trim))
        .chain([text.trim()])
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find(|m| m.get("id").is_some())
        .unwrap_or_else(|| panic!("a JSON-RPC answer in {text:?}"));
    assert_eq!(
        message["result"]["serverInfo"]["name"], "countersign",
        "{message}"
    );

    // Where the challenge points (RFC 9728: the resource's path after the well-known one); other
    // metadata a client may probe for is not found, never a sign-in page.
    let get = |uri: &str| {
        axum::http::Request::builder()
            .uri(uri)
            .body(axum::body::Body::empty())
            .expect("request")
    };
    let missing = router
        .clone()
        .oneshot(get("/.well-known/oauth-authorization-server"))
        .await
        .expect("answer");
    assert_eq!(missing.status(), 404);
    let bare = router
        .clone()
        .oneshot(get("/.well-known/oauth-protected-resource"))
        .await
        .expect("answer");
    assert_eq!(bare.status(), 200);
    let metadata = router
        .oneshot(get("/.well-known/oauth-protected-resource/mcp"))
        .await
        .expect("answer");
    assert_eq!(metadata.status(), 200);
    let body = metadata
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let document: Value = serde_json::from_slice(&body).expect("json");
    assert!(
        document["resource"]
            .as_str()
            .is_some_and(|r| r.ends_with("/mcp")),
        "{document}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_dies_mid_call_gives_a_failed_result_and_is_started_again() {
    let env = Env::start_with(30, "everything").await;
    let echoed = env
        .call("echo", json!({ "message": "before the crash" }))
        .await;
    assert!(
        text(&echoed).contains("before the crash"),
        "{}",
        text(&echoed)
    );
    let first = children_of(env.gateway_pid);
    assert_eq!(first.len(), 1, "one upstream process: {first:?}");

    // A slow call; the upstream is killed while it runs.
    let slow = env.call(
        "trigger-long-running-operation",
        json!({ "duration": 30, "steps": 30 }),
    );
    let kill = async {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let killed = std::process::Command::new("kill")
            .args(["-9", &first[0].to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
    };
    let started = std::time::Instant::now();
    let (result, ()) = tokio::join!(slow, kill);
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the call ended when its upstream died, not when the operation would have"
    );
    assert_eq!(result.is_error, Some(true), "{}", text(&result));
    assert!(
        text(&result).contains("stopped or failed during the call"),
        "{}",
        text(&result)
    );

    // The next call starts the upstream again and goes through.
    let again = env
        .call("echo", json!({ "message": "after the crash" }))
        .await;
    assert_ne!(again.is_error, Some(true), "{}", text(&again));
    assert!(text(&again).contains("after the crash"), "{}", text(&again));
    let second = children_of(env.gateway_pid);
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second, first, "a new upstream process");

    // Killed again while idle, soon after its start: the gateway notices, and as it keeps
    // failing the next start waits a second, which the assistant is told at once.
    let killed = std::process::Command::new("kill")
        .args(["-9", &second[0].to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paused = env.call("echo", json!({ "message": "too soon" })).await;
    assert_eq!(paused.is_error, Some(true), "{}", text(&paused));
    assert!(
        text(&paused).contains("started again in") && text(&paused).contains("did not run"),
        "{}",
        text(&paused)
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let later = env
        .call("echo", json!({ "message": "after the pause" }))
        .await;
    assert!(text(&later).contains("after the pause"), "{}", text(&later));
    let third = children_of(env.gateway_pid);
    assert_eq!(third.len(), 1, "{third:?}");
    assert_ne!(third, second, "a new upstream process");

    // Every run is in the trail, the failed one as a failure (an allowed call's run is
    // recorded beside its answer, so the last may land a moment later).
    let statuses = env.execution_statuses(5).await;
    assert_eq!(
        statuses,
        [
            Some("success".to_string()),
            Some("failure".to_string()),
            Some("success".to_string()),
            Some("failure".to_string()),
            Some("success".to_string())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_identical_calls_at_once_make_one_request_and_it_runs_once() {
    let env = Env::start(3).await;
    let target = env.file("twice.txt");
    let arguments = json!({ "path": target, "content": "once\n" });
    // Both arrive together and wait out the hold: one request, both pointing at it.
    let (first, second) = tokio::join!(
        env.call("write_file", arguments.clone()),
        env.call("write_file", arguments.clone())
    );
    let pending = env.state.store.pending_jobs(10).await.expect("pending");
    assert_eq!(pending.len(), 1, "one request for two identical calls");
    let job = &pending[0];
    for result in [&first, &second] {
        assert_eq!(result.is_error, Some(true));
        assert!(text(result).contains(&job.job_id), "{}", text(result));
    }
    // Each call has its decision row, both naming the one job; the second says it joined it.
    let decisions: Vec<_> = env
        .assistants_rows()
        .await
        .into_iter()
        .filter(|r| r.event.kind == server::store::EventKind::Decision)
        .collect();
    assert_eq!(decisions.len(), 2, "a row for each call");
    assert!(decisions
        .iter()
        .all(|r| r.event.job_id.as_deref() == Some(job.job_id.as_str())));
    let attached = decisions
        .iter()
        .filter(|r| {
            serde_json::from_str::<serde_json::Value>(&r.event.context)
                .is_ok_and(|c| c["attached"] == true)
        })
        .count();
    assert_eq!(
        attached, 1,
        "the second call attached to the first's request"
    );

    // Approved, then collected by two calls at once: it runs once, and both hear how it went.
    env.vote(&job.job_id, enforcer::Verdict::Approve, "fine")
        .await;
    let (a, b) = tokio::join!(
        env.call("write_file", arguments.clone()),
        env.call("write_file", arguments.clone())
    );
    let rows = env
        .state
        .store
        .audit_for_job(&job.job_id)
        .await
        .expect("job rows");
    let runs: Vec<_> = rows
        .iter()
        .filter(|r| r.event.kind == server::store::EventKind::Execution)
        .map(|r| {
            (
                r.event.decision_action.clone(),
                r.event.execution_status.clone(),
            )
        })
        .collect();
    // One claim and one result: a single run.
    assert_eq!(
        runs,
        [
            ("execute".to_string(), Some("picked".to_string())),
            ("execute".to_string(), Some("success".to_string()))
        ],
        "{} / {}",
        text(&a),
        text(&b)
    );
    // The call that did not run it heard how the run went.
    let (ran, heard) = if text(&a).contains("already ran once") {
        (&b, &a)
    } else {
        (&a, &b)
    };
    assert_ne!(ran.is_error, Some(true), "{}", text(ran));
    assert!(text(heard).contains("already ran once"), "{}", text(heard));
    assert_ne!(heard.is_error, Some(true), "{}", text(heard));
    assert_eq!(std::fs::read_to_string(&target).expect("written"), "once\n");
    let done = env.state.store.job(&job.job_id).await.expect("job");
    assert_eq!(done.status, JobStatus::Completed);
}

/// The configuration of the upstream `remote`, reached over Streamable HTTP at 127.0.0.1:`port`
/// with a header from the file and `Authorization` from `REMOTE_MCP_AUTH`.
fn remote_upstream(port: u16) -> String {
    format!(
        "[[mcp_upstreams]]\nname = \"remote\"\nurl = \"http://127.0.0.1:{port}/mcp\"\n\
         headers = {{ X-Team = \"ops\" }}\nheaders_env = {{ Authorization = \"REMOTE_MCP_AUTH\" }}\n"
    )
}

/// A gateway setup with `config`, and `REMOTE_MCP_AUTH` set to `authorization` when given.
fn remote_setup<'a>(config: &'a str, authorization: Option<&str>) -> Setup<'a> {
    Setup {
        config,
        env: authorization
            .map(|value| ("REMOTE_MCP_AUTH", value.to_string()))
            .into_iter()
            .collect(),
        ..Setup::default()
    }
}

/// An upstream reached by URL (Streamable HTTP): its tools are listed and called through the
/// gateway like a started one's, and its answer comes back unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_reached_over_http_is_listed_and_called() {
    let port = free_port();
    let _upstream = everything_over_http(port).await;
    let config = remote_upstream(port);
    let env = Env::start_setup(
        30,
        "remote",
        remote_setup(&config, Some("Bearer reference-server-ignores-it")),
    )
    .await
    .expect("the gateway starts");
    let tools = env
        .client
        .peer()
        .list_all_tools()
        .await
        .expect("tools/list");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["echo"], "only the mapped tool is shown");
    let echoed = env.call("echo", json!({ "message": "over http" })).await;
    assert_ne!(echoed.is_error, Some(true), "{}", text(&echoed));
    assert!(text(&echoed).contains("over http"), "{}", text(&echoed));
    let rows = env.assistants_rows().await;
    assert!(
        rows.iter()
            .any(|r| r.event.decision_action == "allow" && r.event.tool == "demo"),
        "the allowed call is audited"
    );
}

/// The headers reach the upstream (the credential from the environment, not the file), and an
/// upstream whose credential is missing is a tool error, never a call without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_upstream_gets_its_headers_and_a_missing_credential_is_a_tool_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let port = listener.local_addr().expect("address").port();
    // A server that writes down each request's head and refuses it.
    let heads = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut buffer = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => head.extend_from_slice(&buffer[..read]),
                }
            }
            if let Ok(mut heads) = seen.lock() {
                heads.push(String::from_utf8_lossy(&head).to_ascii_lowercase());
            }
            let _ = socket
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    let config = remote_upstream(port);
    let env = Env::start_setup(
        30,
        "remote",
        remote_setup(&config, Some("Bearer s3cret-from-the-environment")),
    )
    .await
    .expect("the gateway starts");
    let failed = env.call("echo", json!({ "message": "x" })).await;
    assert_eq!(failed.is_error, Some(true));
    assert!(
        text(&failed).contains("could not be started"),
        "{}",
        text(&failed)
    );
    let head = heads
        .lock()
        .expect("heads")
        .first()
        .cloned()
        .expect("the upstream was asked");
    assert!(head.starts_with("post /mcp "), "{head}");
    assert!(
        head.contains("authorization: bearer s3cret-from-the-environment"),
        "{head}"
    );
    assert!(head.contains("x-team: ops"), "{head}");
    // This gateway goes away (and any retry of its own with it) before the next one starts.
    drop(env);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = heads.lock().expect("heads").len();

    // Without the variable the gateway does not connect at all: the call says why, and the
    // secret's absence is named by the variable, not guessed at.
    let unset = Env::start_setup(30, "remote", remote_setup(&config, None))
        .await
        .expect("the gateway starts");
    let failed = unset.call("echo", json!({ "message": "x" })).await;
    assert_eq!(failed.is_error, Some(true));
    assert!(
        text(&failed).contains("could not be started"),
        "{}",
        text(&failed)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        heads.lock().expect("heads").len(),
        asked,
        "no request goes out without its credential"
    );
}

/// `--on-behalf-of`: a caller allowed to act for people makes the person the requester (the
/// held request is theirs, audited with the caller); one that is not allowed does not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_behalf_of_makes_the_person_the_requester_only_for_a_delegating_caller() {
    let refused = Env::start_setup(
        30,
        "fs",
        Setup {
            on_behalf_of: Some("erin"),
            ..Setup::default()
        },
    )
    .await
    .err()
    .expect("a caller that may not act for people is refused");
    assert!(
        refused.contains("may not act on behalf of people"),
        "{refused}"
    );

    let env = Env::start_setup(
        1,
        "fs",
        Setup {
            on_behalf_of: Some("erin"),
            env: vec![("COUNTERSIGN_API_DELEGATING_CALLERS", "assistant".into())],
            ..Setup::default()
        },
    )
    .await
    .expect("a delegating caller starts");
    let target = env.file("for-erin.txt");
    let arguments = json!({ "path": target.display().to_string(), "content": "x" });
    let held = env.call("write_file", arguments.clone()).await;
    assert_eq!(held.is_error, Some(true), "{}", text(&held));
    let job = env.pending_job().await;
    assert_eq!(job.requester, "erin", "the person is the requester");
    let again = env.call("write_file", arguments).await;
    assert!(text(&again).contains("attached"), "{}", text(&again));
    assert_eq!(
        env.state
            .store
            .pending_jobs(10)
            .await
            .expect("pending")
            .len(),
        1
    );
    // The audit row is erin's (IT-MCP's `caller_id` is the requester) and names the caller.
    let rows = env
        .state
        .store
        .audit_search(
            &server::store::AuditFilter {
                caller_id: Some("erin".into()),
                after_seq: Some(0),
                ..Default::default()
            },
            100,
        )
        .await
        .expect("audit");
    let decision = rows
        .iter()
        .find(|r| r.event.decision_action == "require_approval")
        .expect("the decision row");
    let context: Value = serde_json::from_str(&decision.event.context).expect("context");
    assert_eq!(context["caller"], "assistant", "{context}");
    assert!(!target.exists());
}

/// The server's `/mcp` on a loopback port (in this process, on the test's state), and an
/// assistant's client of it holding a token of its own.
async fn http_client(env: &Env) -> RunningService<RoleClient, Assistant> {
    http_client_with(env, Assistant::default(), None).await
}

/// An MCP client (MCP 2026-07-28, rmcp's default) that can show its person a link (URL
/// elicitation): it keeps the links it is given and answers them with `answer`.
#[derive(Clone)]
struct LinkTaker {
    links: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    answer: rmcp::model::ElicitationAction,
}

impl LinkTaker {
    fn new(answer: rmcp::model::ElicitationAction) -> LinkTaker {
        LinkTaker {
            links: Arc::default(),
            answer,
        }
    }

    fn links(&self) -> Vec<(String, String)> {
        self.links.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl ClientHandler for LinkTaker {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        let capabilities: rmcp::model::ClientCapabilities =
            serde_json::from_value(json!({ "elicitation": { "url": {} } })).expect("capabilities");
        rmcp::model::ClientConfig::new(
            capabilities,
            rmcp::model::Implementation::new("link-taker", "1.0.0"),
        )
    }

    async fn create_elicitation(
        &self,
        request: rmcp::model::ElicitRequestParams,
        _context: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::ElicitResult, rmcp::ErrorData> {
        if let rmcp::model::ElicitRequestParams::UrlElicitationParams { url, message, .. } = request
        {
            if let Ok(mut links) = self.links.lock() {
                links.push((url, message));
            }
        }
        Ok(rmcp::model::ElicitResult::new(self.answer.clone()))
    }
}

/// A client that can show links, on MCP 2026-07-28 (where servers send no requests), gets the
/// held call's approval page at once as an input-required result; its retries (the SDK makes
/// them) wait for the same request, never a second one, and the last one returns the upstream's
/// result once it is approved. A client whose person dismisses the link is told the call waits.
/// On MCP 2025-11-25 the link comes as an elicitation request beside the hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_taking_input_required_results_gets_the_link_and_continues_by_itself() {
    let env = Env::start(2).await;
    let taker = LinkTaker::new(rmcp::model::ElicitationAction::Accept);
    // The SDK's high-level `call_tool` drives the input-required rounds.
    let client = Arc::new(http_client_with(&env, taker.clone(), modern()).await);
    let target = env.file("linked.txt");
    let call = {
        let (client, params) = (client.clone(), write_call(&target, "linked\n"));
        tokio::spawn(async move { client.call_tool(params).await })
    };
    // The link comes at once, before any hold.
    let mut waited = 0;
    while taker.links().is_empty() && waited < 50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    let job = env.pending_job().await;
    let (url, message) = taker.links().first().cloned().expect("the approval link");
    assert!(
        url.ends_with(&format!("/approvals/{}", job.job_id)),
        "{url}"
    );
    assert!(message.contains("write_file"), "{message}");
    // Past a hold (2 s), the client has been given the link again and asked again: still one job.
    let mut waited = 0;
    while taker.links().len() < 2 && waited < 100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    if taker.links().len() < 2 && call.is_finished() {
        panic!("the call ended after one link: {:?}", call.await);
    }
    assert!(taker.links().len() >= 2, "{:?}", taker.links());
    assert!(taker.links().iter().all(|(u, _)| u == &url));
    let pending = env.state.store.pending_jobs(10).await.expect("pending");
    assert_eq!(pending.len(), 1, "one request, however many rounds");
    assert!(!target.exists());

    env.vote(&job.job_id, enforcer::Verdict::Approve, "fine")
        .await;
    let result = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("the call ends")
        .expect("joined")
        .expect("a tool result");
    assert_ne!(result.is_error, Some(true), "{}", text(&result));
    assert_eq!(
        std::fs::read_to_string(&target).expect("written"),
        "linked\n"
    );
    assert_eq!(
        env.state.store.job(&job.job_id).await.expect("job").status,
        JobStatus::Completed
    );

    // A person who dismisses the link: the call stops waiting and says where the request is.
    let dismisser = LinkTaker::new(rmcp::model::ElicitationAction::Cancel);
    let client = http_client_with(&env, dismisser.clone(), modern()).await;
    let other = env.file("dismissed.txt");
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        client.call_tool(write_call(&other, "no\n")),
    )
    .await
    .expect("answered without a hold")
    .expect("a tool result");
    assert_eq!(dismisser.links().len(), 1);
    assert_eq!(result.is_error, Some(true));
    assert!(
        text(&result).contains("waiting for people"),
        "{}",
        text(&result)
    );
    assert!(!other.exists());

    // MCP 2025-11-25 (an `initialize` session): the link comes as an `elicitation/create`
    // request during the hold, which goes on; after it the call says where the request waits.
    let older = LinkTaker::new(rmcp::model::ElicitationAction::Accept);
    let client = http_client_with(&env, older.clone(), None).await;
    let third = env.file("older.txt");
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        client.call_tool(write_call(&third, "older\n")),
    )
    .await
    .expect("answered after the hold")
    .expect("a tool result");
    let links = older.links();
    assert_eq!(links.len(), 1, "{links:?}");
    assert!(text(&result).contains(&links[0].0), "{}", text(&result));
    assert!(
        text(&result).contains("waiting for people"),
        "{}",
        text(&result)
    );
}

/// A client that goes away while its call is held leaves the request open: approved later, it is
/// collected by the same caller's next identical call and run once; a call after that is a new
/// request, never a second run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_while_held_leaves_the_request_to_be_collected_once() {
    let env = Env::start(30).await;
    let token = remote_token(&env).await;
    let target = env.file("after-disconnect.txt");
    let first = http_client_holding(&env, Assistant::default(), None, token.clone()).await;
    let held = {
        let peer = first.peer().clone();
        let params = write_call(&target, "once\n");
        tokio::spawn(async move { peer.call_tool(params).await })
    };
    let job = env.pending_job().await;
    // The client goes away mid-hold.
    let _ = first.cancel().await;
    let _ = tokio::time::timeout(Duration::from_secs(10), held).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        env.state.store.job(&job.job_id).await.expect("job").status,
        JobStatus::Queued,
        "the request stays open"
    );
    assert!(!target.exists());

    env.vote(&job.job_id, enforcer::Verdict::Approve, "fine")
        .await;
    let again = http_client_holding(&env, Assistant::default(), None, token).await;
    let collected = tokio::time::timeout(
        Duration::from_secs(30),
        again.peer().call_tool(write_call(&target, "once\n")),
    )
    .await
    .expect("answered")
    .expect("a tool result");
    assert_ne!(collected.is_error, Some(true), "{}", text(&collected));
    assert!(
        text(&collected).contains("Successfully wrote"),
        "{}",
        text(&collected)
    );
    assert_eq!(
        env.state.store.job(&job.job_id).await.expect("job").status,
        JobStatus::Completed
    );
    // The same call once more: a new request (waiting), not a second run.
    std::fs::write(&target, "changed since\n").expect("write");
    let third = {
        let (peer, params) = (again.peer().clone(), write_call(&target, "once\n"));
        tokio::spawn(async move { peer.call_tool(params).await })
    };
    let fresh = env.pending_job().await;
    assert_ne!(fresh.job_id, job.job_id, "a new request");
    third.abort();
    assert_eq!(
        std::fs::read_to_string(&target).expect("file"),
        "changed since\n",
        "the approved call ran once"
    );
}

/// The filesystem server's `write_file` of `content` to `path`.
fn write_call(path: &std::path::Path, content: &str) -> CallToolRequestParams {
    CallToolRequestParams::new("write_file").with_arguments(
        json!({ "path": path.display().to_string(), "content": content })
            .as_object()
            .cloned()
            .unwrap_or_default(),
    )
}

/// An MCP client that takes tasks (the SEP-2663 extension).
#[derive(Clone, Default)]
struct TaskTaker;

impl ClientHandler for TaskTaker {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        rmcp::model::ClientConfig::new(
            rmcp::model::ClientCapabilities::builder()
                .enable_tasks()
                .build(),
            rmcp::model::Implementation::new("task-taker", "1.0.0"),
        )
    }
}

/// A client that takes tasks gets a held call back at once as a task; `tasks/get` says it waits
/// for people (with the approval page) and, once approved, that it completed with the
/// upstream's own result, run once by the gateway. Another caller cannot see the task; a task
/// whose request its client withdraws (`tasks/cancel`) ends cancelled and never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_taking_tasks_polls_a_held_call_to_its_result() {
    use rmcp::model::{CallToolResponse, CancelTaskParams, GetTaskParams, TaskStatus};
    let env = Env::start(30).await;
    let client = http_client_with(&env, TaskTaker, None).await;
    let target = env.file("tasked.txt");
    let started = std::time::Instant::now();
    let response = client
        .call_tool_once(write_call(&target, "tasked\n"))
        .await
        .expect("an answer");
    let CallToolResponse::Task(created) = response else {
        panic!("a task, not {response:?}");
    };
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "at once, not after the hold"
    );
    let job = env.pending_job().await;
    assert_eq!(created.task.task_id, job.job_id);
    assert_eq!(created.task.status, TaskStatus::Working);
    let get = |id: String| GetTaskParams::new(id);
    let working = client
        .peer()
        .get_task(get(job.job_id.clone()))
        .await
        .expect("tasks/get");
    assert_eq!(working.task.status(), TaskStatus::Working);
    let message = working.task.task.status_message.clone().unwrap_or_default();
    assert!(
        message.contains("waiting for 1 of 1 approvals") && message.contains(&job.job_id),
        "{message}"
    );
    // Another caller's client is told there is no such task.
    let stranger = http_client_with(&env, TaskTaker, None).await;
    let refused = stranger
        .peer()
        .get_task(get(job.job_id.clone()))
        .await
        .expect_err("not the stranger's task");
    assert!(refused.to_string().contains("no such task"), "{refused}");
    assert!(!target.exists());

    env.vote(&job.job_id, enforcer::Verdict::Approve, "fine")
        .await;
    let mut done = None;
    for _ in 0..100 {
        let now = client
            .peer()
            .get_task(get(job.job_id.clone()))
            .await
            .expect("tasks/get");
        if now.task.status() == TaskStatus::Completed {
            done = Some(now);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let done = done.expect("the task completes once approved");
    let rmcp::model::TaskPayload::Completed { result } = &done.task.payload else {
        panic!("a result: {done:?}");
    };
    let result: CallToolResult =
        serde_json::from_value(Value::Object(result.clone())).expect("a tool result");
    assert_ne!(result.is_error, Some(true), "{}", text(&result));
    // The upstream's own result, not the account of a run elsewhere.
    assert!(
        text(&result).starts_with("Successfully wrote") && !text(&result).contains("already ran"),
        "{}",
        text(&result)
    );
    assert_eq!(
        std::fs::read_to_string(&target).expect("written"),
        "tasked\n"
    );
    assert_eq!(
        env.state.store.job(&job.job_id).await.expect("job").status,
        JobStatus::Completed
    );

    // Withdrawn through tasks/cancel: cancelled, never run.
    let other = env.file("withdrawn.txt");
    let CallToolResponse::Task(created) = client
        .call_tool_once(write_call(&other, "never\n"))
        .await
        .expect("an answer")
    else {
        panic!("a task");
    };
    client
        .peer()
        .cancel_task(CancelTaskParams::new(created.task.task_id.clone()))
        .await
        .expect("tasks/cancel");
    let cancelled = client
        .peer()
        .get_task(get(created.task.task_id.clone()))
        .await
        .expect("tasks/get");
    assert_eq!(cancelled.task.status(), TaskStatus::Cancelled);
    assert_eq!(
        env.state
            .store
            .job(&created.task.task_id)
            .await
            .expect("job")
            .status,
        JobStatus::Cancelled
    );
    assert!(!other.exists());
}

/// [`http_client`] with another client handler, starting its session as `lifecycle` says
/// (`None`: the `initialize` handshake).
async fn http_client_with<H: ClientHandler>(
    env: &Env,
    handler: H,
    lifecycle: Option<rmcp::service::ClientLifecycleMode>,
) -> RunningService<RoleClient, H> {
    // Each client holds a token of its own.
    let token = remote_token(env).await;
    http_client_holding(env, handler, lifecycle, token).await
}

/// A new API token for an assistant reaching `/mcp` (files-read, files-write).
async fn remote_token(env: &Env) -> String {
    server::services::identity::api_tokens::create(
        &env.state.db.store(),
        &format!("remote-assistant-{}", uuid::Uuid::new_v4().simple()),
        &[],
        &["files-read".into(), "files-write".into()],
    )
    .await
    .expect("token")
    .1
}

/// [`http_client_with`] holding `token`.
async fn http_client_holding<H: ClientHandler>(
    env: &Env,
    handler: H,
    lifecycle: Option<rmcp::service::ClientLifecycleMode>,
    token: String,
) -> RunningService<RoleClient, H> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let address = listener.local_addr().expect("address");
    let router = server::app(env.state.clone());
    tokio::spawn(server::listener::serve(
        listener,
        router,
        Duration::from_secs(10),
        std::future::pending(),
    ));
    // rmcp's HTTP client takes the process's TLS provider (ring, as the server's).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let transport = rmcp::transport::StreamableHttpClientTransport::from_config(
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
            format!("http://{address}/mcp"),
        )
        .auth_header(token),
    );
    match lifecycle {
        None => handler.serve(transport).await,
        Some(lifecycle) => {
            use rmcp::service::ClientServiceExt;
            handler.serve_with_lifecycle(transport, lifecycle).await
        }
    }
    .expect("/mcp completes the MCP handshake")
}

/// MCP 2026-07-28: `server/discover` and per-request metadata, no `initialize`.
fn modern() -> Option<rmcp::service::ClientLifecycleMode> {
    Some(rmcp::service::ClientLifecycleMode::Discover {
        preferred_versions: vec![rmcp::model::ProtocolVersion::V_2026_07_28],
    })
}

/// Approved after the call stopped waiting: the server's `mcp` executor runs a call that came
/// to its `/mcp`, once, through the server's own connection to the upstream (after a grace in
/// which a call could collect it), and records the run; a second sweep runs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_nobody_waits_for_is_run_once_by_the_mcp_executor() {
    let env = Env::start(1).await;
    let client = http_client(&env).await;
    let target = env.file("unattended.txt");
    let arguments = json!({ "path": target.display().to_string(), "content": "ran unattended\n" });
    let held = client
        .peer()
        .call_tool(
            CallToolRequestParams::new("write_file")
                .with_arguments(arguments.as_object().cloned().unwrap_or_default()),
        )
        .await
        .expect("a tool result");
    assert!(
        text(&held).contains("Countersign runs it then"),
        "{}",
        text(&held)
    );
    let job = env.pending_job().await;
    env.vote(&job.job_id, enforcer::Verdict::Approve, "fine, run it")
        .await;
    let dispatcher = server::executors::Dispatcher::new(env.state.clone()).expect("dispatcher");
    // Within the grace a waiting call would collect it: the executor leaves it alone.
    dispatcher.sweep().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        env.state.store.job(&job.job_id).await.expect("job").status,
        JobStatus::Approved
    );
    tokio::time::sleep(server::services::gateway::COLLECT_GRACE).await;
    dispatcher.sweep().await;
    let mut done = None;
    for _ in 0..300 {
        let now = env.state.store.job(&job.job_id).await.expect("job");
        if now.status.is_final() {
            done = Some(now);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = done.expect("the executor ran it");
    assert_eq!(done.status, JobStatus::Completed, "{:?}", done.error);
    assert_eq!(
        std::fs::read_to_string(&target).expect("written"),
        "ran unattended\n"
    );
    // Once: a second sweep (given time to act) runs nothing more.
    dispatcher.sweep().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let executions = env
        .state
        .store
        .audit_for_job(&job.job_id)
        .await
        .expect("audit")
        .into_iter()
        .filter(|r| r.event.kind == server::store::EventKind::Execution)
        .filter_map(|r| r.event.execution_status)
        .collect::<Vec<_>>();
    assert_eq!(
        executions
            .iter()
            .filter(|s| s.as_str() == "success")
            .count(),
        1,
        "{executions:?}"
    );
    let _ = client.cancel().await;
    env.state.upstreams.stop_all().await;
}

/// A desktop's `countersign mcp` call is not run by the server's executor (its upstreams may be
/// the desktop's own): approved while nobody waits, it stays approved until a call collects it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desktop_gateways_approval_waits_for_its_call() {
    let env = Env::start(1).await;
    let target = env.file("desktop.txt");
    let arguments = json!({ "path": target.display().to_string(), "content": "collected\n" });
    let held = env.call("write_file", arguments.clone()).await;
    assert!(
        text(&held).contains("runs when this tool is called again"),
        "{}",
        text(&held)
    );
    let job = env.pending_job().await;
    env.vote(&job.job_id, enforcer::Verdict::Approve, "fine")
        .await;
    tokio::time::sleep(server::services::gateway::COLLECT_GRACE).await;
    let dispatcher = server::executors::Dispatcher::new(env.state.clone()).expect("dispatcher");
    dispatcher.sweep().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        env.state.store.job(&job.job_id).await.expect("job").status,
        JobStatus::Approved
    );
    assert!(!target.exists());
    let collected = env.call("write_file", arguments).await;
    assert_ne!(collected.is_error, Some(true), "{}", text(&collected));
    assert_eq!(
        std::fs::read_to_string(&target).expect("written"),
        "collected\n"
    );
}
