//! Faults on the real binary over loopback: what was acknowledged survives a crash, and what
//! cannot be recorded is refused until it can be again. Bounded in count and time.

mod common;

use common::{pg_url, PgSchema};
use server::store::Store;
use server::{Config, Database};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A tool call the default policy allows for the test's token, varied per request.
fn decision(n: usize) -> String {
    format!(
        r#"{{"tool":"ssh-exec","operation":"executeCommand","args":{{"command":"systemctl status nginx -n {n}"}},"target":"web-01","reason":"fault test"}}"#
    )
}

struct Env {
    dir: tempfile::TempDir,
    url: String,
    token: String,
    /// The PostgreSQL schema the test owns (dropped with the value).
    schema: Option<PgSchema>,
}

impl Env {
    /// A migrated SQLite file and a service token allowed to ask for ssh-exec calls.
    async fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("faults.db").display());
        Env::on(dir, url, None).await
    }

    /// The same in a fresh schema of the test PostgreSQL database.
    async fn postgres() -> Env {
        let schema = PgSchema::create("cs_fault").await;
        let url = schema.url_via(&pg_url());
        Env::on(tempfile::tempdir().expect("tempdir"), url, Some(schema)).await
    }

    async fn on(dir: tempfile::TempDir, url: String, schema: Option<PgSchema>) -> Env {
        let db = Database::connect(&Config {
            database_url: url.clone(),
            ..Config::default()
        })
        .await
        .expect("connect");
        db.migrate().await.expect("migrate");
        let (_, token) = server::auth::api_tokens::create(
            &db,
            "it-mcp",
            &[],
            &[
                "ssh-linux".into(),
                "remote-exec".into(),
                "local-shell".into(),
            ],
        )
        .await
        .expect("token");
        db.close().await;
        // The server needs a site folder; an empty bundle is enough for the API.
        std::fs::create_dir_all(dir.path().join("site/pkg")).expect("site");
        std::fs::write(dir.path().join("site/pkg/countersign.js"), "").expect("bundle");
        Env {
            dir,
            url,
            token,
            schema,
        }
    }

    fn db_file(&self) -> PathBuf {
        self.dir.path().join("faults.db")
    }

    /// `countersign serve` on a free loopback port, once it answers `/healthz`.
    async fn serve(&self) -> Server {
        self.serve_with(&self.url, &[]).await
    }

    /// The same against the database at `url` (the test's database, reached another way).
    async fn serve_on(&self, url: &str) -> Server {
        self.serve_with(url, &[]).await
    }

    /// The same with more settings.
    async fn serve_with(&self, url: &str, settings: &[(&str, String)]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_countersign"))
            .arg("serve")
            .env("COUNTERSIGN_DATABASE_URL", url)
            .env("COUNTERSIGN_BIND", format!("127.0.0.1:{port}"))
            .env("COUNTERSIGN_SITE_ROOT", self.dir.path().join("site"))
            .env("COUNTERSIGN_LOG_LEVEL", "error")
            .env("COUNTERSIGN_ADMIN_PASSWORD", "fault test admin password")
            .envs(settings.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start countersign");
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = server.http.get(server.url("/healthz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "the server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    /// `countersign audit verify` on the database: whether it passed, and what it printed.
    fn verify(&self) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_countersign"))
            .args(["audit", "verify"])
            .env("COUNTERSIGN_DATABASE_URL", &self.url)
            .env("COUNTERSIGN_LOG_LEVEL", "error")
            .output()
            .expect("audit verify");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// The audit rows' ids, read from the file.
    async fn audit_ids(&self) -> std::collections::HashSet<String> {
        let db = Database::connect(&Config {
            database_url: self.url.clone(),
            ..Config::default()
        })
        .await
        .expect("connect");
        let store = server::store::AnyStore::new(&db);
        let (mut ids, mut after) = (std::collections::HashSet::new(), 0);
        loop {
            let page = store.audit_page(after, 5_000).await.expect("audit page");
            let Some(last) = page.last() else { break };
            after = last.seq;
            ids.extend(page.into_iter().map(|r| r.id));
        }
        db.close().await;
        ids
    }
}

struct Server {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Ask for a decision: the HTTP status and the answer's JSON (or none).
    async fn decide(&self, token: &str, n: usize) -> Result<(u16, serde_json::Value), String> {
        let answer = self
            .http
            .post(self.url("/api/v1/decisions"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(decision(n))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = answer.status().as_u16();
        let body = answer.json().await.unwrap_or(serde_json::Value::Null);
        Ok((status, body))
    }

    async fn ready(&self) -> (u16, serde_json::Value) {
        let answer = self
            .http
            .get(self.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or_default())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

    // The database refuses every audit insert, as a full disk would (a trigger raising
    // SQLite's own message; remounting a filesystem read-only needs privileges tests lack).
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

    // The trail holds the two acknowledged decisions and the recovery, none of the refused
    // ones, and verifies.
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

/// A TCP relay to PostgreSQL that the test can cut, as a restart looks to the server: every
/// open connection drops, and new ones are closed at once until it is restored.
struct Relay {
    port: u16,
    up: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(upstream: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (up, state) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !*state.borrow() {
                    continue;
                }
                let (mut state, upstream) = (state.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = state.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Relay { port, up }
    }

    fn cut(&self) {
        self.up.send_replace(false);
    }

    fn restore(&self) {
        self.up.send_replace(true);
    }
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
    let server = Arc::new(env.serve_on(&schema.url_via(through.as_str())).await);

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

/// A CRITICAL `deploy mark` job runs on agent-7 and notes in a file when it starts and ends.
const MARKER_POLICY: &str = r#"
name = "fault-test"
[approvals.risk.CRITICAL]
quorum = 1

[tools.deploy]
description = "a job that notes when it starts and ends"
[tools.deploy.operations.mark]
risk = "CRITICAL"
requires = ["local-shell"]
executor = "agent-7"

[executors.agent-7]
kind = "agent"
agent = "agent-7"
argv = ["/bin/sh", "-c", "echo start >> \"$0\"; sleep 1; echo end >> \"$0\"", "{args.file}"]
shell = true
timeout = "20s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_agent_is_killed_mid_run_is_leased_again_and_never_runs_twice_at_once() {
    let env = Env::new().await;
    let policy_file = env.dir.path().join("policy.toml");
    std::fs::write(&policy_file, MARKER_POLICY).expect("policy");
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
    let answer: serde_json::Value = server
        .http
        .post(server.url("/api/v1/decisions"))
        .bearer_auth(&env.token)
        .json(&serde_json::json!({
            "tool": "deploy", "operation": "mark", "args": {"file": marker.display().to_string()}
        }))
        .send()
        .await
        .expect("decide")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["action"], "require_approval", "{answer}");
    let job_id = answer["job_id"].as_str().expect("job id").to_string();

    // dave approves (in this process, on the same database), and agent-7 gets a token.
    let config = Config {
        database_url: env.url.clone(),
        policy_file: Some(policy_file.clone()),
        ..Config::default()
    };
    let db = Database::connect(&config).await.expect("connect");
    let policy =
        enforcer::PolicySet::load("policy.toml", MARKER_POLICY).expect("the test policy loads");
    let state = server::AppState::new(&config, db.clone(), Arc::new(policy)).expect("state");
    let dave = enforcer::Principal {
        id: "dave".into(),
        roles: ["approver".to_string()].into(),
        capabilities: ["local-shell".to_string()].into(),
    };
    server::approvals::vote(
        &state,
        &dave,
        &job_id,
        enforcer::Verdict::Approve,
        Some("CHG-7"),
    )
    .await
    .expect("approve");
    let (_, agent_token) = server::auth::api_tokens::create(&db, "agent-7", &[], &[])
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
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let job: serde_json::Value = server
            .http
            .get(server.url(&format!("/api/v1/jobs/{job_id}?wait=5")))
            .bearer_auth(&env.token)
            .send()
            .await
            .expect("poll")
            .json()
            .await
            .expect("json");
        let status = job["status"].as_str().unwrap_or_default();
        if server::store::JobStatus::parse(status).is_some_and(server::store::JobStatus::is_final) {
            break job;
        }
        assert!(Instant::now() < deadline, "the job did not end: {job}");
    };
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
    let picked = state
        .store
        .audit_page(0, 1_000)
        .await
        .expect("audit")
        .into_iter()
        .filter(|r| r.event.job_id.as_deref() == Some(job_id.as_str()))
        .filter(|r| r.event.execution_status.as_deref() == Some("picked"))
        .count();
    assert_eq!(picked, 2, "picked by the first agent, then by the second");
    db.close().await;
    drop(server);
    let (ok, report) = env.verify();
    assert!(ok, "{report}");
}
