//! Faults on the real binary over loopback: what was acknowledged survives a crash, and what
//! cannot be recorded is refused until it can be again. Bounded in count and time.

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
}

impl Env {
    /// A migrated SQLite file and a service token allowed to ask for ssh-exec calls.
    async fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("faults.db").display());
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
            &["ssh-linux".into(), "remote-exec".into()],
        )
        .await
        .expect("token");
        db.close().await;
        // The server needs a site folder; an empty bundle is enough for the API.
        std::fs::create_dir_all(dir.path().join("site/pkg")).expect("site");
        std::fs::write(dir.path().join("site/pkg/countersign.js"), "").expect("bundle");
        Env { dir, url, token }
    }

    fn db_file(&self) -> PathBuf {
        self.dir.path().join("faults.db")
    }

    /// `countersign serve` on a free loopback port, once it answers `/healthz`.
    async fn serve(&self) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_countersign"))
            .arg("serve")
            .env("COUNTERSIGN_DATABASE_URL", &self.url)
            .env("COUNTERSIGN_BIND", format!("127.0.0.1:{port}"))
            .env("COUNTERSIGN_SITE_ROOT", self.dir.path().join("site"))
            .env("COUNTERSIGN_LOG_LEVEL", "error")
            .env("COUNTERSIGN_ADMIN_PASSWORD", "fault test admin password")
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
