//! The real `countersign` binary on a loopback port, for tests that run it (faults, attacks):
//! a migrated database with a service token, the server started and stopped, and requests.

use super::{pg_url, PgSchema};
use server::store::Store;
use server::{Config, Database};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A tool call the default policy allows for the test's token, varied per request.
pub fn decision(n: usize) -> String {
    format!(
        r#"{{"tool":"ssh-exec","operation":"executeCommand","args":{{"command":"systemctl status nginx -n {n}"}},"target":"web-01","reason":"fault test"}}"#
    )
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub token: String,
    /// The PostgreSQL schema the test owns (dropped with the value).
    pub schema: Option<PgSchema>,
}

impl Env {
    /// A migrated SQLite file and a service token allowed to ask for ssh-exec calls.
    pub async fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("faults.db").display());
        Env::on(dir, url, None).await
    }

    /// The same in a fresh schema of the test PostgreSQL database.
    pub async fn postgres() -> Env {
        let schema = PgSchema::create("cs_fault").await;
        let url = schema.url_via(&pg_url());
        Env::on(tempfile::tempdir().expect("tempdir"), url, Some(schema)).await
    }

    pub async fn on(dir: tempfile::TempDir, url: String, schema: Option<PgSchema>) -> Env {
        let db = Database::connect(&Config {
            database_url: url.clone(),
            ..Config::default()
        })
        .await
        .expect("connect");
        db.migrate().await.expect("migrate");
        let (_, token) = server::services::identity::api_tokens::create(
            &db.store(),
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

    pub fn db_file(&self) -> PathBuf {
        self.dir.path().join("faults.db")
    }

    /// `countersign serve` on a free loopback port, once it answers `/healthz`.
    pub async fn serve(&self) -> Server {
        self.serve_with(&self.url, &[]).await
    }

    /// The same with more settings.
    pub async fn serve_with(&self, url: &str, settings: &[(&str, String)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_countersign"));
        command.arg("serve");
        self.start(command, url, settings).await
    }

    /// `countersign serve` started through a shell that ignores SIGXFSZ and then becomes the
    /// server (same process), so a file-size limit set on it later (`prlimit --fsize`) makes its
    /// writes fail as on a full disk instead of killing it.
    pub async fn serve_ignoring_sigxfsz(&self) -> Server {
        let mut command = Command::new("/bin/sh");
        command.args([
            "-c",
            "trap '' XFSZ; exec \"$0\" serve",
            env!("CARGO_BIN_EXE_countersign"),
        ]);
        self.start(command, &self.url, &[]).await
    }

    /// The same, as `serve >> log 2>&1` at log level `info`: under a file-size limit its log
    /// writes fail too.
    pub async fn serve_ignoring_sigxfsz_logging_to(&self, log: &std::path::Path) -> Server {
        let mut command = Command::new("/bin/sh");
        command.args([
            "-c",
            "trap '' XFSZ; exec \"$0\" serve >>\"$1\" 2>&1",
            env!("CARGO_BIN_EXE_countersign"),
            &log.display().to_string(),
        ]);
        self.start(
            command,
            &self.url,
            &[("COUNTERSIGN_LOG_LEVEL", "info".into())],
        )
        .await
    }

    async fn start(&self, mut command: Command, url: &str, settings: &[(&str, String)]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = command
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
    pub fn verify(&self) -> (bool, String) {
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
    pub async fn audit_ids(&self) -> std::collections::HashSet<String> {
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

pub struct Server {
    pub child: Child,
    pub base: String,
    pub http: reqwest::Client,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Ask for a decision: the HTTP status and the answer's JSON (or none).
    pub async fn decide(&self, token: &str, n: usize) -> Result<(u16, serde_json::Value), String> {
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

    /// POST a JSON body with a bearer token: the HTTP status and the answer's JSON (or none).
    pub async fn post(
        &self,
        token: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let answer = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request");
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or_default())
    }

    /// Long-poll the job until it has ended (its final state), within `limit`.
    pub async fn final_job(&self, token: &str, job_id: &str, limit: Duration) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            let job: serde_json::Value = self
                .http
                .get(self.url(&format!("/api/v1/jobs/{job_id}?wait=5")))
                .bearer_auth(token)
                .send()
                .await
                .expect("poll")
                .json()
                .await
                .expect("json");
            let status = job["status"].as_str().unwrap_or_default();
            if server::store::JobStatus::parse(status)
                .is_some_and(server::store::JobStatus::is_final)
            {
                return job;
            }
            assert!(Instant::now() < deadline, "the job did not end: {job}");
        }
    }

    pub async fn ready(&self) -> (u16, serde_json::Value) {
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
