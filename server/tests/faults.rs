//! Faults on the real binary over loopback: what was acknowledged survives a crash, and what
//! cannot be recorded is refused until it can be again. Bounded in count and time.

mod common;

use common::binary::{Env, Server};
use common::provider::{self, location, Provider};
use common::{pg_url, Relay};
use server::store::Store;
use server::{Config, Database};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_decision_survives_a_kill_9_during_load() {
    let env = Env::new().await;
    let server = Arc::new(env.serve().await);
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    // 16 clients ask for decisions until the server dies under them.
    let clients: Vec<_> = (0..16)
        .map(|c| {
            let (server, acknowledged, stop) = (server.clone(), acknowledged.clone(), stop.clone());
            let token = env.token.clone();
            tokio::spawn(async move {
                let mut refused = 0usize;
                for i in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match server.decide(&token, c * 100_000 + i).await {
                        Ok((200, answer)) => {
                            let id = answer["audit_id"].as_str().expect("audit id").to_string();
                            acknowledged.lock().expect("lock").push(id);
                        }
                        // Not acknowledged: nothing is promised for it.
                        Ok(_) | Err(_) => refused += 1,
                    }
                }
                refused
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.lock().expect("lock").len() < 500 {
        assert!(Instant::now() < deadline, "the load did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SIGKILL in the middle of the load: no shutdown, no flush.
    let pid = server.child.id();
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut refused = 0;
    for client in clients {
        refused += client.await.expect("client");
    }
    assert!(refused > 0, "the kill must have cut requests off");
    let acknowledged = acknowledged.lock().expect("lock").clone();

    // Every acknowledged decision is in the trail, and the chain verifies.
    let ids = env.audit_ids().await;
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !ids.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged decisions are missing, e.g. {:?}",
        missing.len(),
        acknowledged.len(),
        missing.first()
    );
    let (ok, report) = env.verify();
    assert!(ok, "audit verify after the crash: {report}");

    // The restarted server takes decisions again on the same file.
    let restarted = env.serve().await;
    let (status, answer) = restarted.decide(&env.token, 1).await.expect("decision");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(restarted.ready().await.0, 200);
    drop(restarted);
    let (ok, report) = env.verify();
    assert!(ok, "audit verify after the restart: {report}");
}

/// Run one statement on the database file from outside the server.
fn sql(file: &Path, statement: &str) {
    let db = rusqlite::Connection::open(file).expect("open");
    db.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    db.execute_batch(statement).expect("statement");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_audit_writes_fail_every_decision_is_denied_and_service_resumes_by_itself() {
    let env = Env::new().await;
    let server = env.serve().await;
    let (status, _) = server.decide(&env.token, 0).await.expect("decision");
    assert_eq!(status, 200);
    assert_eq!(server.ready().await.0, 200);

    // The database refuses every audit insert (a trigger raising SQLite's own full-disk
    // message; remounting a filesystem read-only needs privileges tests lack). The next test
    // fills the "disk" for real, with a file-size limit.
    sql(
        &env.db_file(),
        "CREATE TRIGGER fault_audit_full BEFORE INSERT ON audit_logs \
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    );
    for n in 1..=20 {
        let (status, answer) = server.decide(&env.token, n).await.expect("decision");
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["action"], "deny", "{answer}");
        assert_eq!(answer["error"], "unavailable", "{answer}");
        let message = answer["message"].as_str().expect("message");
        assert!(message.contains("denied"), "{message}");
        assert!(
            !message.contains("disk"),
            "nothing internal leaks: {message}"
        );
    }
    let (status, ready) = server.ready().await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["checks"]["audit"], "failing", "{ready}");

    // Writable again: readiness and decisions come back without a restart.
    sql(&env.db_file(), "DROP TRIGGER fault_audit_full;");
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.ready().await.0 != 200 {
        assert!(Instant::now() < deadline, "readiness did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, answer) = server.decide(&env.token, 21).await.expect("decision");
    assert_eq!(status, 200, "{answer}");
    drop(server);
    the_trail_shows_two_decisions_around_the_recovery(&env).await;
}

/// After an audit outage: the trail holds the two acknowledged decisions and the recovery, none
/// of the refused ones, and verifies.
async fn the_trail_shows_two_decisions_around_the_recovery(env: &Env) {
    let db = Database::connect(&Config {
        database_url: env.url.clone(),
        ..Config::default()
    })
    .await
    .expect("connect");
    let rows = server::store::AnyStore::new(&db)
        .audit_page(0, 1_000)
        .await
        .expect("audit");
    db.close().await;
    let operations: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.event.kind.as_str(), r.event.operation.as_str()))
        .filter(|(kind, operation)| *kind == "decision" || *operation == "audit.resumed")
        .collect();
    assert_eq!(
        operations,
        [
            ("decision", "executeCommand"),
            ("portal-action", "audit.resumed"),
            ("decision", "executeCommand"),
        ],
        "{rows:#?}"
    );
    let (ok, report) = env.verify();
    assert!(ok, "{report}");
}

/// Set the server process's file-size limit (`prlimit`; bytes or `unlimited`).
fn file_size_limit(server: &Server, limit: &str) {
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &server.child.id().to_string(),
            &format!("--fsize={limit}:unlimited"),
        ])
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success(), "prlimit --fsize={limit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_disk_is_full_every_decision_is_denied_and_service_resumes_by_itself() {
    let env = Env::new().await;
    // `serve >> log 2>&1`: the log fills up with the rest (a failed log write once panicked the
    // audit writer, which then stayed down until a restart).
    let log = env.dir.path().join("serve.log");
    let server = env.serve_ignoring_sigxfsz_logging_to(&log).await;
    let (status, _) = server.decide(&env.token, 0).await.expect("decision");
    assert_eq!(status, 200);
    assert_eq!(server.ready().await.0, 200);
    // A second token, not used yet: its first use would record when it was used.
    let db = Database::connect(&Config {
        database_url: env.url.clone(),
        ..Config::default()
    })
    .await
    .expect("connect");
    let (_, unused) = server::services::identity::api_tokens::create(
        &db.store(),
        "it-mcp-2",
        &[],
        &["ssh-linux".into()],
    )
    .await
    .expect("token");
    db.close().await;

    // The kernel refuses every write past the first byte of any file (RLIMIT_FSIZE): what
    // SQLite sees on a full disk.
    file_size_limit(&server, "1");
    for n in 1..=10 {
        // A valid token stays valid (not 401): the outage is the store's, and says so.
        let token = if n % 2 == 0 { &env.token } else { &unused };
        let (status, answer) = server.decide(token, n).await.expect("decision");
        assert_eq!(status, 503, "{answer}");
        assert_eq!(
            (answer["action"].as_str(), answer["error"].as_str()),
            (Some("deny"), Some("unavailable")),
            "{answer}"
        );
    }
    let (status, ready) = server.ready().await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["checks"]["audit"], "failing", "{ready}");

    // Space again: readiness and decisions come back without a restart.
    file_size_limit(&server, "unlimited");
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.ready().await.0 != 200 {
        assert!(Instant::now() < deadline, "readiness did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, answer) = server.decide(&env.token, 11).await.expect("decision");
    assert_eq!(status, 200, "{answer}");
    drop(server);
    the_trail_shows_two_decisions_around_the_recovery(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_outage_during_load_fails_requests_cleanly_and_loses_nothing() {
    let env = Env::postgres().await;
    let direct = url::Url::parse(&pg_url()).expect("postgres url");
    let upstream = format!(
        "{}:{}",
        direct.host_str().unwrap_or("127.0.0.1"),
        direct.port().unwrap_or(5432)
    );
    let relay = Relay::start(upstream).await;
    let mut through = direct.clone();
    through.set_host(Some("127.0.0.1")).expect("host");
    through.set_port(Some(relay.port)).expect("port");
    let schema = env.schema.as_ref().expect("schema");
    // Refused requests come back fast and the clients retry at once: no rate limit, so every
    // answer is about the database.
    let server = Arc::new(
        env.serve_with(
            &schema.url_via(through.as_str()),
            &[("COUNTERSIGN_API_RATE_LIMIT_PER_SEC", "0".into())],
        )
        .await,
    );

    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let answers = Arc::new(Mutex::new(
        std::collections::BTreeMap::<String, usize>::new(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (server, acknowledged, answers, stop) = (
                server.clone(),
                acknowledged.clone(),
                answers.clone(),
                stop.clone(),
            );
            let token = env.token.clone();
            tokio::spawn(async move {
                for i in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let answer = server.decide(&token, c * 100_000 + i).await;
                    let kind = match &answer {
                        Ok((200, body)) => {
                            let id = body["audit_id"].as_str().expect("audit id").to_string();
                            acknowledged.lock().expect("lock").push(id);
                            "200".to_string()
                        }
                        Ok((status, body)) => format!("{status} {}", body["error"]),
                        Err(error) => format!("no answer: {error}"),
                    };
                    *answers.lock().expect("lock").entry(kind).or_default() += 1;
                }
            })
        })
        .collect();
    let acked = || acknowledged.lock().expect("lock").len();
    let wait_for = |count: usize| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked() < count {
            assert!(
                Instant::now() < deadline,
                "stuck below {count} acknowledged decisions"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    wait_for(200).await;
    relay.cut();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = answers.lock().expect("lock").clone();
    relay.restore();
    let after_outage = acked();
    wait_for(after_outage + 200).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client");
    }
    let answers = answers.lock().expect("lock").clone();
    // The server kept answering: decisions or a clean 503, never anything else.
    assert!(
        answers
            .keys()
            .all(|k| k == "200" || k == "503 \"unavailable\""),
        "{answers:?}"
    );
    assert!(
        during.contains_key("503 \"unavailable\""),
        "the outage must have refused requests: {during:?}"
    );

    let ids = env.audit_ids().await;
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let missing = acknowledged.iter().filter(|id| !ids.contains(*id)).count();
    assert_eq!(missing, 0, "of {} acknowledged", acknowledged.len());
    drop(server);
    let (ok, report) = env.verify();
    assert!(ok, "{report}");
}

/// An agent process, killed if the test ends first.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A CRITICAL `deploy mark` job (one approval) that notes in a file when it starts and ends,
/// run by the executor `name`, whose kind (and agent) `kind` gives.
fn marker_policy(name: &str, kind: &str) -> String {
    format!(
        r#"
name = "fault-test"
[approvals.risk.CRITICAL]
quorum = 1

[tools.deploy]
description = "a job that notes when it starts and ends"
[tools.deploy.operations.mark]
risk = "CRITICAL"
requires = ["local-shell"]
executor = "{name}"

[executors.{name}]
{kind}
argv = ["/bin/sh", "-c", "echo start >> \"$0\"; sleep 1; echo end >> \"$0\"", "{{args.file}}"]
shell = true
timeout = "20s"
"#
    )
}

/// A CRITICAL `deploy mark` job asked for under `policy` (the file the server enforces), noting
/// its runs in `runs.log`, and dave's approval given in this process on the same database: the
/// job id, and a state and database for reading the store.
async fn ask_and_approve(
    env: &Env,
    server: &Server,
    policy_file: &Path,
    policy: &str,
) -> (String, server::AppState, Database) {
    let marker = env.dir.path().join("runs.log");
    let (_, answer) = server
        .post(
            &env.token,
            "/api/v1/decisions",
            &serde_json::json!({
                "tool": "deploy", "operation": "mark", "args": {"file": marker.display().to_string()}
            }),
        )
        .await;
    assert_eq!(answer["action"], "require_approval", "{answer}");
    let job_id = answer["job_id"].as_str().expect("job id").to_string();
    let config = Config {
        database_url: env.url.clone(),
        policy_file: Some(policy_file.to_path_buf()),
        ..Config::default()
    };
    let db = Database::connect(&config).await.expect("connect");
    let policy = enforcer::PolicySet::load("policy.toml", policy).expect("the test policy loads");
    let state = server::AppState::new(&config, db.clone(), Arc::new(policy)).expect("state");
    let dave = enforcer::Principal {
        id: "dave".into(),
        roles: ["approver".to_string()].into(),
        capabilities: ["local-shell".to_string()].into(),
    };
    server::services::approvals::vote(
        &state,
        &dave,
        &job_id,
        enforcer::Verdict::Approve,
        Some("CHG-7"),
    )
    .await
    .expect("approve");
    (job_id, state, db)
}

/// How often the job's runs were picked up, from the audit trail.
async fn picked(state: &server::AppState, job_id: &str) -> usize {
    state
        .store
        .audit_page(0, 1_000)
        .await
        .expect("audit")
        .into_iter()
        .filter(|r| r.event.job_id.as_deref() == Some(job_id))
        .filter(|r| r.event.execution_status.as_deref() == Some("picked"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_agent_is_killed_mid_run_is_leased_again_and_never_runs_twice_at_once() {
    let env = Env::new().await;
    let policy_file = env.dir.path().join("policy.toml");
    let policy = marker_policy("agent-7", "kind = \"agent\"\nagent = \"agent-7\"");
    std::fs::write(&policy_file, &policy).expect("policy");
    let marker = env.dir.path().join("runs.log");
    let server = env
        .serve_with(
            &env.url,
            &[
                ("COUNTERSIGN_POLICY_FILE", policy_file.display().to_string()),
                // Short, but long enough that a loaded machine's heartbeats (every 2 s) keep a
                // live agent's lease.
                ("COUNTERSIGN_JOB_LEASE_SECS", "6".into()),
                ("COUNTERSIGN_MAINTENANCE_INTERVAL_SECS", "1".into()),
            ],
        )
        .await;
    let (job_id, state, db) = ask_and_approve(&env, &server, &policy_file, &policy).await;
    let (_, agent_token) = server::services::identity::api_tokens::create(
        &db.store(),
        "agent-7",
        &["agent".to_string()],
        &[],
    )
    .await
    .expect("agent token");
    let agent = |max_jobs: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_countersign"));
        command
            .args(["agent", "--server", &server.base, "--id", "agent-7"])
            .env("COUNTERSIGN_AGENT_TOKEN", &agent_token)
            .env("COUNTERSIGN_LOG_LEVEL", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(n) = max_jobs {
            command.args(["--max-jobs", n]);
        }
        Agent(command.spawn().expect("agent"))
    };
    let runs = || std::fs::read_to_string(&marker).unwrap_or_default();

    // The first agent starts the job and dies with SIGKILL mid-run.
    let mut first = agent(None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !runs().contains("start") {
        assert!(Instant::now() < deadline, "the job did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.0.kill().expect("kill -9 the agent");
    first.0.wait().expect("reaped");

    // Its lease lapses, the job returns to the queue (a retry), and a new agent finishes it.
    let mut second = agent(Some("1"));
    let job = server
        .final_job(&env.token, &job_id, Duration::from_secs(60))
        .await;
    let _ = second.0.wait();
    assert_eq!(job["status"], "completed", "{job}\nruns: {:?}", runs());
    let stored = state.store.job(&job_id).await.expect("job");
    assert_eq!(stored.retry_count, 1, "re-leased exactly once");
    // Two runs, one after the other: the second started only once the first had ended (the
    // lease outlives the killed agent's orphaned child, which finishes on its own).
    assert_eq!(
        runs().lines().collect::<Vec<_>>(),
        ["start", "end", "start", "end"]
    );
    assert_eq!(
        picked(&state, &job_id).await,
        2,
        "picked by the first agent, then by the second"
    );
    db.close().await;
    drop(server);
    let (ok, report) = env.verify();
    assert!(ok, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_server_is_killed_mid_run_is_leased_again_after_restart() {
    let env = Env::new().await;
    let policy_file = env.dir.path().join("policy.toml");
    let policy = marker_policy("local", "kind = \"process\"");
    std::fs::write(&policy_file, &policy).expect("policy");
    let marker = env.dir.path().join("runs.log");
    let settings = [
        ("COUNTERSIGN_POLICY_FILE", policy_file.display().to_string()),
        ("COUNTERSIGN_JOB_LEASE_SECS", "6".into()),
        ("COUNTERSIGN_MAINTENANCE_INTERVAL_SECS", "1".into()),
    ];
    let mut server = env.serve_with(&env.url, &settings).await;
    let (job_id, state, db) = ask_and_approve(&env, &server, &policy_file, &policy).await;
    let runs = || std::fs::read_to_string(&marker).unwrap_or_default();

    // The server's sweep finds the approval (made by another process) and starts the job; the
    // server dies with SIGKILL mid-run.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !runs().contains("start") {
        assert!(Instant::now() < deadline, "the job did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().expect("kill -9 the server");
    server.child.wait().expect("reaped");
    let stranded = state.store.job(&job_id).await.expect("job");
    assert!(
        !stranded.status.is_final(),
        "a job whose runner died is not over: {stranded:?}"
    );

    // After a restart its lease lapses, it returns as a retry, and the server runs it again.
    let server = env.serve_with(&env.url, &settings).await;
    let job = server
        .final_job(&env.token, &job_id, Duration::from_secs(60))
        .await;
    assert_eq!(job["status"], "completed", "{job}\nruns: {:?}", runs());
    let stored = state.store.job(&job_id).await.expect("job");
    assert_eq!(stored.retry_count, 1, "re-leased exactly once");
    assert_eq!(
        runs().lines().collect::<Vec<_>>(),
        ["start", "end", "start", "end"],
        "the second run started only after the first had ended"
    );
    assert_eq!(picked(&state, &job_id).await, 2, "picked before and after");
    db.close().await;
    drop(server);
    let (ok, report) = env.verify();
    assert!(ok, "{report}");
}

/// Poll `/readyz` until the identity provider check says `want`.
async fn provider_check_becomes(server: &Server, want: &str) -> (u16, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (status, body) = server.ready().await;
        if body["checks"]["identity_provider"] == want {
            return (status, body);
        }
        assert!(
            Instant::now() < deadline,
            "readyz never said the provider is {want}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_identity_provider_is_down_sessions_and_tokens_work_and_sign_in_says_so() {
    let env = Env::new().await;
    // The provider is reached through a relay the test cuts.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let own = listener.local_addr().expect("addr").port();
    let relay = Relay::start(format!("127.0.0.1:{own}")).await;
    let provider = Provider::serve(listener, relay.port);
    let server = env.serve_with(&env.url, &provider.settings(&[])).await;
    provider_check_becomes(&server, "ok").await;
    let web = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let get = |path: &str, cookie: &str| {
        let mut request = web.get(server.url(path));
        if !cookie.is_empty() {
            request = request.header(reqwest::header::COOKIE, cookie);
        }
        async move { request.send().await.expect("answer") }
    };

    // alice signs in through the provider and gets a session.
    let session = provider::sign_in(&web, &server.base, &provider, "alice").await;
    assert_eq!(get("/approvals", &session).await.status(), 200);
    // A job waits for approval.
    let (_, pending) = server
        .post(
            &env.token,
            "/api/v1/decisions",
            &serde_json::json!({ "tool": "ssh-exec", "operation": "executeCommand",
                "args": { "command": "sudo ls /root" }, "target": "web-1" }),
        )
        .await;
    assert_eq!(pending["action"], "require_approval", "{pending}");
    let job_id = pending["job_id"].as_str().expect("job id");

    // The provider goes down.
    relay.cut();
    let (status, ready) = provider_check_becomes(&server, "unreachable").await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("degraded")));
    // A new sign-in gets a clear message instead of a redirect to a dead provider.
    let refused = get("/auth/login?next=%2F", "").await;
    let to = location(&refused);
    assert!(to.starts_with("/sign-in?error=idp_unavailable"), "{to}");
    let page = get(&to, "").await.text().await.expect("page");
    assert!(
        page.contains("The identity provider cannot be reached right now"),
        "{page}"
    );
    // alice's session keeps working.
    let page = get("/approvals", &session).await;
    assert_eq!(page.status(), 200, "the session still works");
    // Her access token verifies from the cached keys: she approves the job over the API.
    let alice = provider.person_token("alice", &["approver", "ssh-linux", "remote-exec"]);
    let (status, voted) = server
        .post(
            &alice,
            &format!("/api/v1/jobs/{job_id}/votes"),
            &serde_json::json!({ "verdict": "approve" }),
        )
        .await;
    assert_eq!(
        (status, voted["status"].as_str()),
        (200, Some("approved")),
        "{voted}"
    );
    // A token under a key the provider never published is still refused.
    let forged = provider::sign(
        "k-unknown",
        &serde_json::json!({
            "iss": provider.issuer, "sub": "mallory", "aud": "countersign", "azp": provider::CLIENT,
            "exp": provider::now() + 300, "preferred_username": "mallory",
            "realm_access": { "roles": ["approver", "admin"] },
        }),
    );
    let answer = server
        .http
        .get(server.url("/api/v1/whoami"))
        .bearer_auth(&forged)
        .send()
        .await
        .expect("whoami");
    assert_eq!(answer.status(), 401);

    // The provider comes back: readiness and sign-in follow by themselves.
    relay.restore();
    let (_, ready) = provider_check_becomes(&server, "ok").await;
    assert_eq!(ready["status"], "ready");
    let again = get("/auth/login?next=%2F", "").await;
    assert!(location(&again).starts_with(&provider.issuer));
}

/// Jobs only a pool of agents runs: each run notes the job's id in a file.
const RACE_POLICY: &str = r#"
name = "race-test"
[approvals.risk.CRITICAL]
quorum = 1

[tools.deploy]
description = "a job that notes its id"
[tools.deploy.operations.note]
risk = "CRITICAL"
requires = ["local-shell"]
executor = "pool"

[executors.pool]
kind = "agent"
argv = ["/bin/sh", "-c", "echo \"$1\" >> \"$0\"", "{args.file}", "{job_id}"]
shell = true
timeout = "20s"
"#;

const RACE_JOBS: usize = 1_000;

/// 1,000 jobs, each approved by two people at once where one approval suffices, then claimed by
/// two agents at once: one vote counts per job, and each job runs exactly once.
async fn one_vote_and_one_run_per_job(env: Env) {
    let policy_file = env.dir.path().join("policy.toml");
    std::fs::write(&policy_file, RACE_POLICY).expect("policy");
    let marker = env.dir.path().join("runs.log");
    let provider = Provider::start().await;
    let server = Arc::new(
        env.serve_with(
            &env.url,
            &provider.settings(&[
                ("COUNTERSIGN_POLICY_FILE", policy_file.display().to_string()),
                ("COUNTERSIGN_API_RATE_LIMIT_PER_SEC", "0".into()),
                // 1,000 requests of one caller wait at once.
                ("COUNTERSIGN_MAX_PENDING_REQUESTS", "0".into()),
            ]),
        )
        .await,
    );
    provider_check_becomes(&server, "ok").await;
    let token = Arc::new(env.token.clone());
    let limit = Arc::new(tokio::sync::Semaphore::new(32));

    let mut asks = tokio::task::JoinSet::new();
    // 1,000 different calls (`n`): identical ones would join one request.
    for n in 0..RACE_JOBS {
        let (server, token, limit, file) = (
            server.clone(),
            token.clone(),
            limit.clone(),
            marker.display().to_string(),
        );
        asks.spawn(async move {
            let _turn = limit.acquire_owned().await.expect("permit");
            let (status, answer) = server
                .post(
                    &token,
                    "/api/v1/decisions",
                    &serde_json::json!({ "tool": "deploy", "operation": "note", "args": { "file": file, "n": n } }),
                )
                .await;
            assert_eq!(
                (status, answer["action"].as_str()),
                (200, Some("require_approval")),
                "{answer}"
            );
            answer["job_id"].as_str().expect("job id").to_string()
        });
    }
    let mut jobs: Vec<String> = asks.join_all().await;
    jobs.sort();

    // alice and dave approve each job at the same moment.
    let voters: Arc<[String; 2]> = Arc::new(
        ["alice", "dave"].map(|who| provider.person_token(who, &["approver", "local-shell"])),
    );
    let mut votes = tokio::task::JoinSet::new();
    for job in jobs.clone() {
        let (server, voters, limit) = (server.clone(), voters.clone(), limit.clone());
        votes.spawn(async move {
            let _turn = limit.acquire_owned().await.expect("permit");
            let path = format!("/api/v1/jobs/{job}/votes");
            let body = serde_json::json!({ "verdict": "approve", "reason": "CHG-1000" });
            let (a, b) = tokio::join!(
                server.post(&voters[0], &path, &body),
                server.post(&voters[1], &path, &body)
            );
            // One vote counts; the other finds the job decided (409) or its quorum already met
            // (403 not_eligible), depending on where the two crossed.
            let lost = |(status, answer): &(u16, serde_json::Value)| {
                *status == 409
                    || (*status == 403
                        && answer["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("already has the approvals")))
            };
            assert!(
                (a.0 == 200 && lost(&b)) || (b.0 == 200 && lost(&a)),
                "one vote counts, the other is refused: {job} {a:?} {b:?}"
            );
        });
    }
    votes.join_all().await;

    // Two agents take from the same queue at once.
    let db = Database::connect(&Config {
        database_url: env.url.clone(),
        ..Config::default()
    })
    .await
    .expect("connect");
    let mut agents = Vec::new();
    for name in ["agent-a", "agent-b"] {
        let (_, agent_token) = server::services::identity::api_tokens::create(
            &db.store(),
            name,
            &["agent".to_string()],
            &[],
        )
        .await
        .expect("agent token");
        agents.push(Agent(
            Command::new(env!("CARGO_BIN_EXE_countersign"))
                .args(["agent", "--server", &server.base, "--id", name])
                .env("COUNTERSIGN_AGENT_TOKEN", &agent_token)
                .env("COUNTERSIGN_LOG_LEVEL", "error")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("agent"),
        ));
    }
    let store = server::store::AnyStore::new(&db);
    let deadline = Instant::now() + Duration::from_secs(180);
    for job in &jobs {
        loop {
            let stored = store.job(job).await.expect("job");
            if stored.status.is_final() {
                assert_eq!(
                    (stored.status, stored.retry_count),
                    (server::store::JobStatus::Completed, 0),
                    "{job}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "job {job} did not end: {stored:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(agents);

    let mut ran: Vec<String> = std::fs::read_to_string(&marker)
        .expect("runs")
        .lines()
        .map(str::to_string)
        .collect();
    ran.sort();
    assert_eq!(ran.len(), RACE_JOBS, "one run per job");
    assert_eq!(ran, jobs, "each job ran exactly once");
    // The trail agrees: one approval row per job, the one that counted and saying so, and the
    // losing vote as a refusal (never an approval row); one pick-up per job, taken by both agents
    // between them.
    let mut refusals = std::collections::HashMap::<String, i64>::new();
    let (mut approvals, mut picks, mut takers) = (
        std::collections::HashMap::<String, i64>::new(),
        std::collections::HashMap::<String, usize>::new(),
        std::collections::HashSet::new(),
    );
    let mut after = 0;
    loop {
        let page = store.audit_page(after, 5_000).await.expect("audit");
        let Some(last) = page.last() else { break };
        after = last.seq;
        for row in page {
            let Some(job) = row.event.job_id.clone() else {
                continue;
            };
            if row.event.kind == server::store::EventKind::Approval {
                assert_eq!(row.event.decision_action, "approve", "{row:?}");
                assert!(
                    row.event
                        .decision_reason
                        .starts_with("approved; the quorum is reached (1 of 1"),
                    "{row:?}"
                );
                *approvals.entry(job.clone()).or_default() += 1;
            }
            if row.event.operation == "vote.refused" {
                *refusals.entry(job.clone()).or_default() += 1;
            }
            if row.event.execution_status.as_deref() == Some("picked") {
                *picks.entry(job).or_default() += 1;
                takers.insert(row.event.caller_id.clone());
            }
        }
    }
    assert_eq!(approvals.len(), RACE_JOBS);
    assert!(
        approvals.values().all(|n| *n == 1),
        "one approval row per job"
    );
    assert!(
        refusals.values().all(|n| *n <= 1),
        "a losing vote is one refusal row: {refusals:?}"
    );
    assert_eq!(picks.len(), RACE_JOBS);
    assert!(picks.values().all(|n| *n == 1), "one pick-up per job");
    assert!(takers.len() == 2, "both agents took jobs: {takers:?}");
    db.close().await;
    drop(server);
    let (ok, report) = env.verify();
    assert!(ok, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_votes_and_claims_run_each_job_once_on_sqlite() {
    one_vote_and_one_run_per_job(Env::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_votes_and_claims_run_each_job_once_on_postgres() {
    one_vote_and_one_run_per_job(Env::postgres().await).await;
}
