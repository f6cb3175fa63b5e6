//! `countersign audit verify|purge` and `countersign import`, run as an operator would, on a
//! SQLite database, with IT-MCP databases built from the exact schemas of its note.

use sqlx::{Connection, Executor, SqliteConnection};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const KEY: &str = "a-long-random-audit-key-for-tests-0123456789";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("countersign.db")
    }

    fn run(&self, args: &[&str], key: bool) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_countersign"));
        cmd.args(args)
            .env(
                "COUNTERSIGN_DATABASE_URL",
                format!("sqlite://{}", self.db().display()),
            )
            .env("COUNTERSIGN_LOG_LEVEL", "warn")
            .env_remove("COUNTERSIGN_AUDIT_KEY")
            .env_remove("COUNTERSIGN_CONFIG");
        if key {
            cmd.env("COUNTERSIGN_AUDIT_KEY", KEY);
        }
        cmd.output().expect("binary runs")
    }

    async fn sql(&self) -> SqliteConnection {
        SqliteConnection::connect(&format!("sqlite://{}", self.db().display()))
            .await
            .expect("open")
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// IT-MCP's audit table, as its note creates it.
macro_rules! audit_table {
    () => {
        "CREATE TABLE audit_logs (
            id TEXT PRIMARY KEY, timestamp TEXT NOT NULL, caller_id TEXT NOT NULL, tool TEXT NOT NULL,
            operation TEXT NOT NULL, decision_action TEXT NOT NULL, decision_reason TEXT NOT NULL,
            risk_level TEXT NOT NULL, requires_approval BOOLEAN NOT NULL, execution_status TEXT,
            execution_duration_ms INTEGER, side_effects TEXT, error TEXT, approver TEXT, approved_at TEXT,
            context TEXT NOT NULL, decision TEXT NOT NULL)"
    };
}

/// IT-MCP's command queue table, as its note creates it.
macro_rules! queue_table {
    () => {
        "CREATE TABLE command_queue (
            job_id TEXT PRIMARY KEY, tool_name TEXT NOT NULL, params TEXT NOT NULL, requested_capabilities TEXT NOT NULL,
            target_agent_id TEXT, status TEXT NOT NULL, priority TEXT NOT NULL, created_at TEXT NOT NULL,
            picked_at TEXT, completed_at TEXT, result TEXT, error TEXT, retry_count INTEGER DEFAULT 0,
            max_retries INTEGER DEFAULT 3)"
    };
}

/// IT-MCP's two databases, with its note's exact CREATE TABLE statements.
async fn it_mcp_databases(dir: &Path, bad_status: bool) -> (PathBuf, PathBuf) {
    let audit = dir.join("mcp_audit.db");
    let queue = dir.join("mcp_command_queue.db");
    let mut a = SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", audit.display()))
        .await
        .expect("audit db");
    a.execute(
        concat!(audit_table!(), ";
         INSERT INTO audit_logs VALUES ('a-1', '2025-11-02T10:00:00.000Z', 'claude', 'system-overview', 'overview',
            'allow', 'LOW risk', 'LOW', 0, 'success', 120, '[]', NULL, NULL, NULL, '{}', '{}');
         INSERT INTO audit_logs VALUES ('a-2', '2025-11-02T10:05:00.000Z', 'claude', 'ubuntu-admin', 'restartService',
            'deny', 'Missing required capabilities', 'HIGH', 0, NULL, NULL, NULL, NULL, NULL, NULL, '{}', '{}');
         INSERT INTO audit_logs VALUES ('a-3', '2025-11-02 10:10:00', 'claude', 'ssh-exec', 'executeSudoCommand',
            'require_approval', 'CRITICAL', 'CRITICAL', 1, 'success', 900, '[\"service:postgresql:restarted\"]', NULL,
            'alex', '2025-11-02T10:12:00.000Z', '{}', '{}');"),
    )
    .await
    .expect("audit rows");
    let mut q = SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", queue.display()))
        .await
        .expect("queue db");
    q.execute(
        concat!(queue_table!(), ";
         INSERT INTO command_queue VALUES ('7784b583-dd73-4b58-bf5c-f10323131697', 'ssh-exec',
            '{\"operation\":\"executeSudoCommand\",\"command\":\"sudo systemctl restart postgresql\"}',
            '[\"ssh-linux\",\"remote-exec\",\"local-sudo\"]', NULL, 'queued', 'urgent', '2025-11-02T10:10:00.000Z',
            NULL, NULL, NULL, NULL, 0, 3);
         INSERT INTO command_queue VALUES ('job-2', 'ubuntu-admin', '{\"operation\":\"restartService\"}', '[]', 'agent-1',
            'executing', 'normal', '2025-11-02T09:00:00.000Z', '2025-11-02T09:01:00.000Z', NULL, NULL, NULL, 0, 3);
         INSERT INTO command_queue VALUES ('job-3', 'system-overview', '{}', '[]', NULL, 'completed', 'low',
            '2025-11-02T08:00:00.000Z', '2025-11-02T08:00:01.000Z', '2025-11-02T08:00:02.000Z', 'ok', NULL, 0, 3);"),
    )
    .await
    .expect("queue rows");
    if bad_status {
        q.execute("INSERT INTO command_queue VALUES ('job-4', 'x', '{}', '[]', NULL, 'paused', 'low', '2025-11-02T08:00:00Z', NULL, NULL, NULL, NULL, 0, 3)")
            .await
            .expect("bad row");
    }
    (audit, queue)
}

#[tokio::test]
async fn import_keeps_ids_chains_rows_and_is_idempotent() {
    let env = Env::new();
    let (audit, queue) = it_mcp_databases(env.dir.path(), false).await;
    let (audit, queue) = (audit.to_str().expect("path"), queue.to_str().expect("path"));

    let out = env.run(&["import", "--audit-db", audit, "--queue-db", queue], false);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("imported 3 of 3 audit rows and 3 of 3 jobs"),
        "{}",
        stdout(&out)
    );

    let again = env.run(&["import", "--audit-db", audit, "--queue-db", queue], false);
    assert!(again.status.success());
    assert!(
        stdout(&again).contains("imported 0 of 3 audit rows and 0 of 3 jobs"),
        "{}",
        stdout(&again)
    );

    let mut db = env.sql().await;
    let ids: Vec<(String, String, String)> =
        sqlx::query_as("SELECT id, event_kind, timestamp FROM audit_logs ORDER BY seq")
            .fetch_all(&mut db)
            .await
            .expect("rows");
    assert_eq!(
        ids.iter().take(3).map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["a-1", "a-2", "a-3"]
    );
    assert_eq!(ids[0].2, "2025-11-02 10:00:00.000Z", "timestamps kept");
    assert_eq!(
        ids.iter().filter(|r| r.1 == "import").count(),
        2,
        "each run is audited"
    );
    let jobs: Vec<(String, String, String, i32)> = sqlx::query_as(
        "SELECT job_id, status, risk, approvals_required FROM command_queue ORDER BY job_id",
    )
    .fetch_all(&mut db)
    .await
    .expect("jobs");
    assert_eq!(jobs.len(), 3);
    let pending = jobs
        .iter()
        .find(|j| j.0.starts_with("7784"))
        .expect("queued job");
    assert_eq!(
        (pending.1.as_str(), pending.2.as_str(), pending.3),
        ("queued", "CRITICAL", 2),
        "pending approval per policy"
    );
    assert_eq!(
        jobs.iter().find(|j| j.0 == "job-2").map(|j| j.1.as_str()),
        Some("failed"),
        "in-flight job is not re-run"
    );
    assert_eq!(
        jobs.iter().find(|j| j.0 == "job-3").map(|j| j.1.as_str()),
        Some("completed")
    );

    let verify = env.run(&["audit", "verify"], false);
    assert!(verify.status.success(), "{}", stdout(&verify));
    assert!(
        stdout(&verify).starts_with("ok: 5 rows verified"),
        "{}",
        stdout(&verify)
    );
}

#[tokio::test]
async fn a_malformed_or_missing_file_imports_nothing() {
    let env = Env::new();
    let (audit, queue) = it_mcp_databases(env.dir.path(), true).await;
    let out = env.run(
        &[
            "import",
            "--audit-db",
            audit.to_str().expect("p"),
            "--queue-db",
            queue.to_str().expect("p"),
        ],
        false,
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("job job-4, status: unknown status \"paused\""),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("nothing was imported"));
    let mut db = env.sql().await;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_logs")
        .fetch_one(&mut db)
        .await
        .expect("count");
    let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM command_queue")
        .fetch_one(&mut db)
        .await
        .expect("count");
    assert_eq!((rows, jobs), (0, 0));

    let missing = env.run(
        &["import", "--audit-db", "/nonexistent/mcp_audit.db"],
        false,
    );
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("/nonexistent/mcp_audit.db: no such file"),
        "{}",
        stderr(&missing)
    );

    let not_sqlite = env.dir.path().join("notes.txt");
    std::fs::write(&not_sqlite, "hello").expect("write");
    let out = env.run(
        &["import", "--audit-db", not_sqlite.to_str().expect("p")],
        false,
    );
    assert!(!out.status.success());
}

#[tokio::test]
async fn verify_names_a_tampered_row_and_exits_1() {
    let env = Env::new();
    let (audit, _) = it_mcp_databases(env.dir.path(), false).await;
    assert!(env
        .run(&["import", "--audit-db", audit.to_str().expect("p")], false)
        .status
        .success());
    let mut db = env.sql().await;
    db.execute("DROP TRIGGER audit_logs_append_only; UPDATE audit_logs SET decision_action = 'allow', caller_id = 'someone-else' WHERE seq = 2")
        .await
        .expect("tamper");
    drop(db);
    let out = env.run(&["audit", "verify"], false);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with("FAILED at row 2: its content does not match its hash"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn purge_needs_the_key_and_keeps_verify_passing() {
    let env = Env::new();
    let (audit, _) = it_mcp_databases(env.dir.path(), false).await;
    assert!(env
        .run(&["import", "--audit-db", audit.to_str().expect("p")], true)
        .status
        .success());
    let refused = env.run(&["audit", "purge", "--older-than", "90d"], false);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("COUNTERSIGN_AUDIT_KEY"));

    // IT-MCP's rows are from 2025: older than 90 days. The import event itself is new.
    let purged = env.run(&["audit", "purge", "--older-than", "90d"], true);
    assert!(purged.status.success(), "{}", stderr(&purged));
    let verify = env.run(&["audit", "verify"], true);
    assert!(verify.status.success(), "{}", stdout(&verify));
    assert!(
        stdout(&verify).contains("rows 4..=5"),
        "{}",
        stdout(&verify)
    );
    assert!(
        stdout(&verify).contains("1 keyed checkpoints verified"),
        "{}",
        stdout(&verify)
    );
}

#[tokio::test]
async fn user_commands_manage_local_accounts_and_are_audited() {
    use std::io::Write as _;
    let env = Env::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args([
            "user",
            "add",
            "dave",
            "--role",
            "approver",
            "--capability",
            "ssh-linux",
            "--password-stdin",
        ])
        .env(
            "COUNTERSIGN_DATABASE_URL",
            format!("sqlite://{}", env.db().display()),
        )
        .env("COUNTERSIGN_LOG_LEVEL", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"a sufficiently long password\n")
        .expect("write");
    let out = child.wait_with_output().expect("exit");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "created `dave`");

    let generated = env.run(&["user", "add", "erin", "--role", "viewer"], false);
    assert!(generated.status.success(), "{}", stderr(&generated));
    assert!(stdout(&generated).contains("password (shown only now): "));

    let bad_role = env.run(&["user", "add", "frank", "--role", "superuser"], false);
    assert!(!bad_role.status.success());
    assert!(
        stderr(&bad_role).contains("unknown role `superuser`"),
        "{}",
        stderr(&bad_role)
    );

    assert!(env
        .run(&["user", "disable", "dave"], false)
        .status
        .success());
    let missing = env.run(&["user", "disable", "nobody"], false);
    assert!(stderr(&missing).contains("no such user `nobody`"));

    let config = server::Config {
        database_url: format!("sqlite://{}", env.db().display()),
        ..server::Config::default()
    };
    let db = server::Database::connect(&config).await.expect("db");
    let refused = server::services::identity::accounts::authenticate(
        &db.store(),
        "dave",
        "a sufficiently long password",
    )
    .await;
    assert!(matches!(
        refused,
        Err(server::services::identity::accounts::AccountError::Disabled)
    ));
    let mut conn = env.sql().await;
    let audited: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_logs WHERE operation = 'user'")
            .fetch_one(&mut conn)
            .await
            .expect("count");
    assert_eq!(audited, 3, "add, add, disable");
}

#[tokio::test]
async fn token_commands_print_once_list_and_revoke() {
    let env = Env::new();
    let created = env.run(
        &[
            "token",
            "create",
            "--name",
            "it-mcp",
            "--capability",
            "ssh-linux",
            "--capability",
            "remote-exec",
        ],
        false,
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let token = stdout(&created).trim().to_string();
    assert!(token.starts_with("cs_") && token.len() > 70, "{token}");
    let listed = env.run(&["token", "list"], false);
    assert!(
        stdout(&listed).starts_with("it-mcp\t"),
        "{}",
        stdout(&listed)
    );
    assert!(
        !stdout(&listed).contains(&token[16..]),
        "the secret is never shown again"
    );
    let mut db = env.sql().await;
    let stored: String = sqlx::query_scalar("SELECT secret_sha256 FROM api_tokens")
        .fetch_one(&mut db)
        .await
        .expect("row");
    assert_eq!(stored.len(), 64, "only a hash is kept");
    assert!(env
        .run(&["token", "revoke", "it-mcp"], false)
        .status
        .success());
    assert!(stdout(&env.run(&["token", "list"], false)).contains("\trevoked\t"));
    assert!(
        !env.run(&["token", "revoke", "it-mcp"], false)
            .status
            .success(),
        "already revoked"
    );
}

/// More rows and jobs than one batch: written in several batches inside the one transaction, in
/// time order whatever the file's row order and timestamp spelling; a malformed row in the last
/// batch's range stops the import before anything is written; a second run adds nothing.
#[tokio::test]
async fn a_history_larger_than_a_batch_is_imported_in_time_order_all_or_nothing() {
    const ROWS: usize = 4_500;
    const JOBS: usize = 2_300;
    let env = Env::new();
    let audit = env.dir.path().join("big_audit.db");
    let queue = env.dir.path().join("big_queue.db");
    let mut a = SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", audit.display()))
        .await
        .expect("audit db");
    a.execute(audit_table!()).await.expect("audit table");
    // Rows go in newest first, every other one in SQLite's spelling: neither the file's order
    // nor the text order of the timestamps is time order.
    let mut insert = String::from("BEGIN;");
    for n in (0..ROWS).rev() {
        let (h, m, s) = (n / 3600, (n / 60) % 60, n % 60);
        let at = if n % 2 == 0 {
            format!("2025-11-02T{h:02}:{m:02}:{s:02}.000Z")
        } else {
            format!("2025-11-02 {h:02}:{m:02}:{s:02}")
        };
        insert.push_str(&format!(
            "INSERT INTO audit_logs VALUES ('row-{n:05}', '{at}', 'claude', 'ssh-exec', 'executeCommand', 'allow', \
             'ok', 'LOW', 0, NULL, NULL, NULL, NULL, NULL, NULL, '{{}}', '{{}}');"
        ));
    }
    insert.push_str("COMMIT;");
    a.execute(insert.as_str()).await.expect("audit rows");
    let mut q = SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", queue.display()))
        .await
        .expect("queue db");
    q.execute(queue_table!()).await.expect("queue table");
    let mut insert = String::from("BEGIN;");
    for n in 0..JOBS {
        insert.push_str(&format!(
            "INSERT INTO command_queue VALUES ('job-{n:05}', 'system-overview', '{{}}', '[]', NULL, 'completed', 'low', \
             '2025-11-01T00:00:00.000Z', NULL, NULL, 'ok', NULL, 0, 3);"
        ));
    }
    insert.push_str("COMMIT;");
    q.execute(insert.as_str()).await.expect("jobs");
    // The last job (in import order) is malformed: nothing may be written.
    q.execute("UPDATE command_queue SET status = 'paused' WHERE job_id = 'job-02299'")
        .await
        .expect("bad job");
    let args = [
        "import",
        "--audit-db",
        audit.to_str().expect("p"),
        "--queue-db",
        queue.to_str().expect("p"),
    ];
    let out = env.run(&args, false);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("job-02299"), "{}", stderr(&out));
    let mut db = env.sql().await;
    let count = |table: &'static str| format!("SELECT COUNT(*) FROM {table}");
    let rows: i64 = sqlx::query_scalar(&count("audit_logs"))
        .fetch_one(&mut db)
        .await
        .unwrap_or(0);
    assert_eq!(rows, 0, "nothing imported");

    q.execute("UPDATE command_queue SET status = 'completed' WHERE job_id = 'job-02299'")
        .await
        .expect("fixed");
    let out = env.run(&args, false);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!(
            "imported {ROWS} of {ROWS} audit rows and {JOBS} of {JOBS} jobs"
        )),
        "{}",
        stdout(&out)
    );
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM audit_logs WHERE event_kind = 'decision' ORDER BY seq")
            .fetch_all(&mut db)
            .await
            .expect("ids");
    let want: Vec<String> = (0..ROWS).map(|n| format!("row-{n:05}")).collect();
    assert_eq!(ids, want, "chained in time order");
    let jobs: i64 = sqlx::query_scalar(&count("command_queue"))
        .fetch_one(&mut db)
        .await
        .expect("jobs");
    assert_eq!(jobs, JOBS as i64);
    drop(db);
    let again = env.run(&args, false);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains(&format!(
            "imported 0 of {ROWS} audit rows and 0 of {JOBS} jobs"
        )),
        "{}",
        stdout(&again)
    );
    let verified = env.run(&["audit", "verify"], false);
    assert!(verified.status.success(), "{}", stdout(&verified));
}
