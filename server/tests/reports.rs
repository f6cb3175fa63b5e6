//! Compliance exports through the router: CSV and JSON Lines equal the database rows for the
//! filters, the PDF's text (pdftotext) holds the totals, evidence bundles verify (library and
//! CLI) and fail, naming what, once tampered with; exports are audited and refused to viewers.

use axum::{
    body::Body,
    http::{HeaderMap, Request, StatusCode},
    Router,
};
use chrono::{Duration, Utc};
use http_body_util::BodyExt;
use server::config::Secret;
use server::services::exports::{self as reports, bundle, ExportRow};
use server::store::{AuditAction, AuditFilter, AuditRecord, EventKind, NewAuditEvent, Risk, Store};
use server::{app, AppState, Config, Database};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use tower::ServiceExt;

struct Env {
    router: Router,
    state: AppState,
    db: Database,
    dir: tempfile::TempDir,
    public_key: String,
}

async fn env(with_key: bool) -> Env {
    env_on(with_key, None).await
}

/// A SQLite file by default (CSV and JSON Lines are read from the file directly), or the
/// database at `database_url` (an in-memory SQLite database goes through the store).
async fn env_on(with_key: bool, database_url: Option<&str>) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public_key) = reports::generate_key().expect("key");
    let config = Config {
        database_url: database_url.map_or_else(
            || format!("sqlite://{}", dir.path().join("reports.db").display()),
            str::to_string,
        ),
        export_signing_key: with_key.then(|| Secret::new(private)),
        ..Config::default()
    };
    let db = Database::connect(&config).await.expect("sqlite");
    db.migrate().await.expect("migrate");
    let policy = Arc::new(enforcer::default_policy().expect("policy"));
    let state = AppState::new(&config, db.clone(), policy).expect("state");
    Env {
        router: app(state.clone()),
        state,
        db,
        dir,
        public_key,
    }
}

impl Env {
    async fn token(&self, name: &str, roles: &[&str]) -> String {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        server::services::identity::api_tokens::create(&self.db.store(), name, &roles, &[])
            .await
            .expect("token")
            .1
    }

    async fn get(&self, uri: &str, token: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
        let response = self
            .router
            .clone()
            .oneshot(
                Request::builder()
                    .uri(uri)
                    .header("authorization", format!("Bearer {token}"))
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("answer");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        (status, headers, body)
    }

    /// A varied trail over the last three days: decisions of every action and risk, votes,
    /// executions with side effects, a sign-in; reasons with commas, quotes and new lines.
    async fn seed(&self) {
        let now = Utc::now();
        let mut events = Vec::new();
        let tools = ["ssh-exec", "ubuntu-admin", "firewall", "system-overview"];
        let actions = [
            AuditAction::Allow,
            AuditAction::Deny,
            AuditAction::RequireApproval,
        ];
        let risks = Risk::ALL;
        for i in 0..120i64 {
            let mut e = NewAuditEvent::new(
                EventKind::Decision,
                if i % 5 == 0 { "mallory" } else { "it-mcp" },
                tools[(i % 4) as usize],
                "executeCommand",
                actions[(i % 3) as usize],
                &format!("reason {i}, with \"quotes\",\nand a new line"),
                risks[(i / 3 % 4) as usize],
            );
            e.timestamp = now - Duration::minutes(60 * 72 - i * 30);
            // The first half under a policy kept by hash alone, the rest under the loaded one.
            e.policy_hash = Some(if i < 60 {
                "0".repeat(64)
            } else {
                self.state.policy.hash().to_string()
            });
            if actions[(i % 3) as usize] == AuditAction::RequireApproval {
                e.job_id = Some(format!("job-{i}"));
            }
            events.push(e);
            if i % 3 == 2 {
                let mut vote = NewAuditEvent::new(
                    EventKind::Approval,
                    "dave",
                    tools[(i % 4) as usize],
                    "executeCommand",
                    AuditAction::Approve,
                    "approved; the quorum is reached",
                    risks[(i / 3 % 4) as usize],
                );
                vote.timestamp = now - Duration::minutes(60 * 72 - i * 30 - 7);
                vote.job_id = Some(format!("job-{i}"));
                vote.approver = Some("dave".into());
                vote.approved_at = Some(vote.timestamp);
                events.push(vote);
                let mut run = NewAuditEvent::new(
                    EventKind::Execution,
                    "it-mcp",
                    tools[(i % 4) as usize],
                    "executeCommand",
                    AuditAction::Execute,
                    "agent-1 reported",
                    risks[(i / 3 % 4) as usize],
                );
                run.timestamp = now - Duration::minutes(60 * 72 - i * 30 - 9);
                run.job_id = Some(format!("job-{i}"));
                let failed = i % 4 == 0;
                run.execution_status = Some(if failed { "failure" } else { "success" }.into());
                run.execution_duration_ms = Some(1_200 + i);
                run.error = failed.then(|| "exit status 1".to_string());
                run.side_effects = Some(r#"["service:nginx:restarted"]"#.into());
                events.push(run);
            }
        }
        let mut sign_in = NewAuditEvent::new(
            EventKind::SignIn,
            "bob",
            "countersign",
            "sign-in",
            AuditAction::Allow,
            "signed in",
            Risk::Low,
        );
        sign_in.timestamp = now - Duration::minutes(5);
        events.push(sign_in);
        server::services::policy_versions::record(&self.db.store(), &self.state.policy)
            .await
            .expect("record the policy");
        self.state.store.append_audit(&events).await.expect("seed");
    }

    /// Every stored row matching `filter`, in chain order.
    async fn rows(&self, filter: AuditFilter) -> Vec<AuditRecord> {
        self.state
            .store
            .audit_search(
                &AuditFilter {
                    after_seq: Some(0),
                    ..filter
                },
                100_000,
            )
            .await
            .expect("rows")
    }
}

fn ssh_high() -> AuditFilter {
    AuditFilter {
        tool: Some("ssh-exec".into()),
        risk: Some(Risk::High),
        ..AuditFilter::default()
    }
}

#[tokio::test]
async fn csv_and_jsonl_equal_the_database_rows_for_the_filters() {
    // Read from the SQLite file, and through the store (what PostgreSQL uses).
    for database_url in [None, Some("sqlite::memory:")] {
        let env = env_on(false, database_url).await;
        let file = env.state.store.sqlite_file().await.expect("database file");
        assert_eq!(file.is_some(), database_url.is_none(), "{database_url:?}");
        exports_equal_the_rows(&env).await;
    }
}

async fn exports_equal_the_rows(env: &Env) {
    env.seed().await;
    let token = env.token("bob", &["auditor"]).await;
    let expected = env.rows(ssh_high()).await;
    assert!(expected.len() > 5, "the filter must select several rows");

    let (status, headers, body) = env
        .get(
            "/api/v1/audit/export?format=csv&tool=ssh-exec&risk=high",
            &token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert!(headers["content-type"]
        .to_str()
        .expect("type")
        .starts_with("text/csv"));
    assert!(headers["content-disposition"]
        .to_str()
        .expect("disposition")
        .contains(".csv"));
    let mut reader = csv::Reader::from_reader(body.as_slice());
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(header, reports::CSV_COLUMNS);
    let from_csv: Vec<AuditRecord> = reader
        .deserialize::<ExportRow>()
        .map(|row| row.expect("csv row").to_record().expect("record"))
        .collect();
    assert_eq!(from_csv, expected);
    // Byte for byte what the CSV writer makes of the stored rows.
    assert_eq!(
        String::from_utf8_lossy(&body),
        String::from_utf8_lossy(&reports::csv_page(&expected, true).expect("csv"))
    );
    assert!(from_csv[0]
        .event
        .decision_reason
        .contains("\"quotes\",\nand"));

    let (status, _, body) = env
        .get(
            "/api/v1/audit/export?format=jsonl&tool=ssh-exec&risk=HIGH",
            &token,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let from_jsonl: Vec<AuditRecord> = body
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            serde_json::from_slice::<ExportRow>(line)
                .expect("json row")
                .to_record()
                .expect("record")
        })
        .collect();
    assert_eq!(from_jsonl, expected);
    assert_eq!(
        String::from_utf8_lossy(&body),
        String::from_utf8_lossy(&reports::jsonl_page(&expected).expect("jsonl"))
    );
    // A filter nothing matches: the CSV header alone, and an empty JSON Lines file.
    for (format, want) in [
        ("csv", reports::csv_page(&[], true).expect("header")),
        ("jsonl", Vec::new()),
    ] {
        let (status, _, body) = env
            .get(
                &format!("/api/v1/audit/export?format={format}&tool=no-such-tool"),
                &token,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, want, "{format}");
    }

    // With a progress token, the page can follow the download: rows read, then done.
    let (status, _, _) = env
        .get(
            "/api/v1/audit/export?format=csv&tool=ssh-exec&risk=HIGH&progress=tok-12345678",
            &token,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let progress = env
        .state
        .export_progress
        .get("bob", "tok-12345678")
        .expect("tracked");
    assert_eq!(progress.rows, expected.len() as u64);
    assert!(progress.done && !progress.failed);
    assert!(
        env.state
            .export_progress
            .get("carol", "tok-12345678")
            .is_none(),
        "per person"
    );

    // A period narrows too: the last day only.
    let from = (Utc::now() - Duration::days(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let (status, _, body) = env
        .get(
            &format!("/api/v1/audit/export?format=jsonl&from={from}&action=deny"),
            &token,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let lines = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    let expected = env
        .rows(AuditFilter {
            from: Some(
                chrono::DateTime::parse_from_rfc3339(&from)
                    .expect("time")
                    .into(),
            ),
            action: Some(AuditAction::Deny),
            ..AuditFilter::default()
        })
        .await;
    assert!(!expected.is_empty());
    assert_eq!(lines, expected.len());
}

#[tokio::test]
async fn every_export_is_audited_and_only_auditors_may_export() {
    let env = env(false).await;
    env.seed().await;
    let auditor = env.token("bob", &["auditor"]).await;
    let viewer = env.token("carol", &["viewer"]).await;
    let approver = env.token("dave", &["approver"]).await;
    for token in [&viewer, &approver] {
        let (status, _, body) = env.get("/api/v1/audit/export?format=csv", token).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    for (query, field) in [
        ("format=xls", "format"),
        ("from=yesterday", "from"),
        ("from=2026-11-02&to=2026-11-01", "from"),
        ("risk=SEVERE", "risk"),
        ("framework=hipaa", "framework"),
        ("progress=%3Cscript%3E", "progress"),
    ] {
        let (status, _, body) = env
            .get(&format!("/api/v1/audit/export?{query}"), &auditor)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    // Without a signing key there are no bundles (and no public key).
    let (status, _, body) = env
        .get("/api/v1/audit/export?format=bundle", &auditor)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("COUNTERSIGN_EXPORT_SIGNING_KEY"));
    let (status, _, _) = env.get("/api/v1/audit/public-key", &auditor).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _, body) = env
        .get(
            "/api/v1/audit/export?format=jsonl&tool=firewall&framework=soc2",
            &auditor,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.is_empty());
    let exports = env
        .rows(AuditFilter {
            kind: Some(EventKind::Export),
            ..AuditFilter::default()
        })
        .await;
    assert_eq!(exports.len(), 1, "refused exports are not exports");
    let e = &exports[0].event;
    assert_eq!(e.caller_id, "bob");
    let context: serde_json::Value = serde_json::from_str(&e.context).expect("context");
    assert_eq!(context["format"], "jsonl");
    assert_eq!(context["framework"], "soc2");
    assert_eq!(context["filters"]["tool"], "firewall");
}

fn pdftotext(pdf: &[u8], dir: &Path) -> String {
    let path = dir.join("summary.pdf");
    std::fs::write(&path, pdf).expect("write pdf");
    let out = std::process::Command::new("pdftotext")
        .args(["-layout"])
        .arg(&path)
        .arg("-")
        .output()
        .expect("pdftotext (Debian's poppler-utils; scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "pdftotext: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test]
async fn the_pdf_summary_is_a_valid_pdf_holding_the_totals() {
    let env = env(false).await;
    env.seed().await;
    let token = env.token("bob", &["auditor"]).await;
    let all = env.rows(AuditFilter::default()).await;
    let (status, headers, pdf) = env
        .get("/api/v1/audit/export?format=pdf&framework=pci-dss", &token)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/pdf");
    assert!(pdf.starts_with(b"%PDF-"));
    let text = pdftotext(&pdf, env.dir.path());
    let count = |kind: EventKind| all.iter().filter(|r| r.event.kind == kind).count();
    let denials = all
        .iter()
        .filter(|r| r.event.decision_action == "deny" && r.event.kind == EventKind::Decision)
        .count();
    let failures = all
        .iter()
        .filter(|r| r.event.execution_status.as_deref() == Some("failure"))
        .count();
    for expected in [
        "Countersign audit evidence report".to_string(),
        // The period ends when the export was asked for: its own audit row is not in it.
        format!("Audit events: {}", all.len()),
        format!("Decisions: {}", count(EventKind::Decision)),
        format!("Approvals: {}", count(EventKind::Approval)),
        format!("Denials: {denials}"),
        format!(
            "Executions: {} ({failures} failed)",
            count(EventKind::Execution)
        ),
        "PCI DSS v4.0, requirement 10".to_string(),
        "10.3.2 Audit logs are protected from modification".to_string(),
        "service:nginx:restarted".to_string(),
        "verified: rows 1 to".to_string(),
    ] {
        assert!(
            text.contains(&expected),
            "the PDF lacks {expected:?}:\n{text}"
        );
    }
    assert!(
        !text.contains("SOC 2"),
        "only the chosen framework's controls"
    );
}

/// Rewrite a tar, changing one file's content.
fn tamper(bundle: &Path, out: &Path, name: &str, change: impl Fn(&mut Vec<u8>)) {
    let mut archive = tar::Archive::new(std::fs::File::open(bundle).expect("open"));
    let mut builder = tar::Builder::new(std::fs::File::create(out).expect("create"));
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read");
        if path == name {
            change(&mut bytes);
        }
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, &path, bytes.as_slice())
            .expect("append");
    }
    builder
        .into_inner()
        .expect("finish")
        .flush()
        .expect("flush");
}

/// One file of a tar.
fn read_member(bundle: &Path, name: &str) -> Vec<u8> {
    let mut archive = tar::Archive::new(std::fs::File::open(bundle).expect("open"));
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        if entry.path().expect("path").to_string_lossy() == name {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).expect("read");
            return bytes;
        }
    }
    panic!("{name} is not in the bundle")
}

fn cli_verify(bundle: &Path, key: Option<&str>) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"));
    cmd.args(["audit", "verify-export"]).arg(bundle);
    if let Some(key) = key {
        cmd.args(["--public-key", key]);
    }
    let out = cmd.output().expect("run countersign");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn evidence_bundles_verify_and_tampering_is_named() {
    let env = env(true).await;
    env.seed().await;
    let token = env.token("bob", &["auditor"]).await;
    let (status, _, body) = env.get("/api/v1/audit/public-key", "").await;
    assert_eq!(status, StatusCode::OK, "the public key is public");
    let served: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(served["public_key"], env.public_key);
    assert_eq!(served["algorithm"], "Ed25519");

    let (status, headers, body) = env
        .get(
            "/api/v1/audit/export?format=bundle&tool=ssh-exec&framework=iso27001",
            &token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/x-tar");
    let path = env.dir.path().join("bundle.tar");
    std::fs::write(&path, &body).expect("write");
    let key = bundle::read_public_key(&env.public_key).expect("key");
    let verified = bundle::verify(&path, Some(&key)).expect("a fresh bundle verifies");
    let expected = env
        .rows(AuditFilter {
            tool: Some("ssh-exec".into()),
            ..AuditFilter::default()
        })
        .await;
    let m = &verified.manifest;
    assert_eq!(m.events, expected.len() as u64);
    assert_eq!(m.generated_by, "bob");
    assert_eq!(m.framework.as_deref(), Some("iso27001"));
    assert_eq!(m.filters.get("tool").map(String::as_str), Some("ssh-exec"));
    let chain = m.chain.as_ref().expect("chain");
    assert_eq!(chain.first_seq, 1);
    assert!(chain.verified);
    let names: Vec<&str> = m.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "summary.pdf",
            "events.csv",
            "events.jsonl",
            "chain.jsonl",
            "policies.jsonl"
        ]
    );
    // The policies the rows name (sorted by hash): one kept by hash alone, the loaded one with
    // its text.
    let policies: Vec<bundle::PolicyEntry> =
        String::from_utf8(read_member(&path, "policies.jsonl"))
            .expect("UTF-8")
            .lines()
            .map(|line| serde_json::from_str(line).expect("a policy"))
            .collect();
    let policy = &env.state.policy;
    assert_eq!(
        policies,
        [
            bundle::PolicyEntry {
                policy_hash: "0".repeat(64),
                name: None,
                source: None
            },
            bundle::PolicyEntry {
                policy_hash: policy.hash().to_string(),
                name: Some(policy.name.clone()),
                source: Some(policy.source().to_string())
            }
        ]
    );

    // The CLI agrees, with the key as text or as the JSON the API serves.
    let key_file = env.dir.path().join("key.json");
    std::fs::write(&key_file, served.to_string()).expect("key file");
    let (ok, out) = cli_verify(&path, Some(key_file.to_str().expect("path")));
    assert!(ok, "{out}");
    assert!(out.starts_with("ok: "), "{out}");
    let (ok, out) = cli_verify(&path, None);
    assert!(ok && out.contains("pass --public-key"), "{out}");

    // Tampering with any file, the manifest or the signer fails, naming what.
    let bad = env.dir.path().join("tampered.tar");
    tamper(&path, &bad, "events.csv", |b| {
        let at = b.len() / 2;
        b[at] = if b[at] == b'1' { b'2' } else { b'1' };
    });
    let why = bundle::verify(&bad, Some(&key)).expect_err("a changed CSV fails");
    assert!(why.0.starts_with("events.csv:"), "{why}");
    let (ok, out) = cli_verify(&bad, Some(&env.public_key));
    assert!(!ok && out.contains("FAILED: events.csv"), "{out}");

    tamper(&path, &bad, "chain.jsonl", |b| {
        let text = String::from_utf8_lossy(b).replacen("\"it-mcp\"", "\"someone\"", 1);
        *b = text.into_bytes();
    });
    let why = bundle::verify(&bad, Some(&key)).expect_err("a changed chain fails");
    assert!(why.0.starts_with("chain.jsonl"), "{why}");

    tamper(&path, &bad, "policies.jsonl", |b| {
        let text = String::from_utf8_lossy(b).replacen("approver_role", "approver_rolE", 1);
        *b = text.into_bytes();
    });
    let why = bundle::verify(&bad, Some(&key)).expect_err("a changed policy text fails");
    assert!(
        why.0.starts_with("policies.jsonl: the text of policy"),
        "{why}"
    );

    tamper(&path, &bad, "manifest.json", |b| {
        let text = String::from_utf8_lossy(b).replacen("\"bob\"", "\"alice\"", 1);
        *b = text.into_bytes();
    });
    let why = bundle::verify(&bad, Some(&key)).expect_err("a changed manifest fails");
    assert!(why.0.starts_with("signature:"), "{why}");

    let (_, other) = reports::generate_key().expect("key");
    let other = bundle::read_public_key(&other).expect("other key");
    let why = bundle::verify(&path, Some(&other)).expect_err("another signer fails");
    assert!(
        why.0.contains("not signed by the given public key"),
        "{why}"
    );
}

#[tokio::test]
async fn the_export_api_streams_a_large_trail_in_order() {
    let env = env(false).await;
    let now = Utc::now();
    let events: Vec<NewAuditEvent> = (0..5_000i64)
        .map(|i| {
            let mut e = NewAuditEvent::new(
                EventKind::Decision,
                "it-mcp",
                "dns-lookup",
                "lookup",
                AuditAction::Allow,
                "ok",
                Risk::Low,
            );
            e.timestamp = now - Duration::seconds(10_000 - i);
            e
        })
        .collect();
    for chunk in events.chunks(1_000) {
        env.state.store.append_audit(chunk).await.expect("seed");
    }
    let token = env.token("bob", &["auditor"]).await;
    let (status, _, body) = env.get("/api/v1/audit/export?format=csv", &token).await;
    assert_eq!(status, StatusCode::OK);
    let mut reader = csv::Reader::from_reader(body.as_slice());
    let seqs: Vec<i64> = reader
        .deserialize::<ExportRow>()
        .map(|r| r.expect("row").seq)
        .collect();
    // Every seeded row in chain order across pages (the export's own row comes after its
    // period's end).
    assert_eq!(
        seqs.len(),
        5_000,
        "first {:?} last {:?}",
        seqs.first(),
        seqs.last()
    );
    assert!(seqs.iter().enumerate().all(|(i, seq)| *seq == i as i64 + 1));
}

#[tokio::test]
async fn csv_cells_a_spreadsheet_would_run_are_neutralised_and_jsonl_keeps_them_exact() {
    const TOOL: &str = r#"=HYPERLINK("http://x","y")"#;
    // Read from the SQLite file, and through the store (what PostgreSQL uses).
    for database_url in [None, Some("sqlite::memory:")] {
        let env = env_on(false, database_url).await;
        let mut e = NewAuditEvent::new(
            EventKind::Decision,
            "@mallory",
            TOOL,
            "+cmd|' /C calc'!A0",
            AuditAction::Allow,
            "-1 looks like a number",
            Risk::Low,
        );
        e.context = r#"{"on_behalf_of":"=1+1"}"#.into();
        e.execution_duration_ms = Some(-3);
        env.state.store.append_audit(&[e]).await.expect("seed");
        let token = env.token("bob", &["auditor"]).await;

        let (status, _, body) = env.get("/api/v1/audit/export?format=csv", &token).await;
        assert_eq!(status, StatusCode::OK, "{database_url:?}");
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains(r#""'=HYPERLINK(""http://x"",""y"")""#),
            "{database_url:?}: {text}"
        );
        let mut reader = csv::Reader::from_reader(body.as_slice());
        let rows: Vec<ExportRow> = reader
            .deserialize::<ExportRow>()
            .map(|row| row.expect("csv row"))
            .collect();
        let row = rows
            .iter()
            .find(|r| r.event_kind == "decision")
            .expect("the decision");
        assert_eq!(row.tool, format!("'{TOOL}"));
        assert_eq!(row.operation, "'+cmd|' /C calc'!A0");
        assert_eq!(row.caller_id, "'@mallory");
        assert_eq!(row.decision_reason, "'-1 looks like a number");
        // A JSON text starts with `{`: nothing to neutralise, whatever it holds.
        assert_eq!(row.context, r#"{"on_behalf_of":"=1+1"}"#);
        // Numbers stay numbers.
        assert_eq!(row.execution_duration_ms, Some(-3));
        assert!(row.seq > 0);

        let (status, _, body) = env.get("/api/v1/audit/export?format=jsonl", &token).await;
        assert_eq!(status, StatusCode::OK);
        let stored = env
            .rows(AuditFilter {
                kind: Some(EventKind::Decision),
                ..AuditFilter::default()
            })
            .await;
        assert_eq!(stored.len(), 1);
        let from_jsonl: Vec<AuditRecord> = body
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                serde_json::from_slice::<ExportRow>(line)
                    .expect("json row")
                    .to_record()
                    .expect("record")
            })
            .filter(|r| r.event.kind == EventKind::Decision)
            .collect();
        assert_eq!(from_jsonl, stored, "{database_url:?}");
        assert_eq!(from_jsonl[0].event.tool, TOOL);
        assert_eq!(from_jsonl[0].event.operation, "+cmd|' /C calc'!A0");
    }
}
