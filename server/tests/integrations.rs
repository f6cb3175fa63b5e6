//! Notifications and the SIEM feed on the real binary, against receivers started here on
//! loopback: a webhook and Slack receiver (down at first), an SMTP server, a syslog collector
//! over TCP (and one over UDP) and the JSON Lines file. Every event arrives, in order; webhook
//! signatures verify; deliveries are retried while the receiver is down and stop once it is
//! back; nothing is sent twice across a restart of Countersign. Bounded in count and time.

mod common;

use common::binary::{Env, Server};
use common::provider::{cookies, location};
use hmac::{Hmac, Mac};
use server::store::{AuditAction, Risk, Store};
use server::{Config, Database};
use sha2::Sha256;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const SECRET: &str = "integration test webhook secret";

/// CRITICAL `deploy run` jobs (one approval, a 10 s request lifetime) that exit with the code
/// they are given, run by the server's own process executor.
const POLICY: &str = r#"
name = "integrations-test"
[approvals.risk.CRITICAL]
quorum = 1
request_ttl = "10s"

[tools.deploy]
description = "exits with the code it is given"
[tools.deploy.operations.run]
risk = "CRITICAL"
requires = ["local-shell"]
executor = "local"

[executors.local]
kind = "process"
argv = ["/bin/sh", "-c", "exit \"$0\"", "{args.code}"]
shell = true
timeout = "20s"
"#;

/// What one HTTP receiver got: (path, headers, body), in arrival order.
type Received = Arc<Mutex<Vec<(String, BTreeMap<String, String>, String)>>>;

/// The webhook and Slack receiver on `port` (not listening until started), answering each
/// request after `delay`.
async fn start_receiver(
    port: u16,
    received: Received,
    delay: Duration,
) -> tokio::task::JoinHandle<()> {
    use axum::{body::Bytes, extract::State, http::HeaderMap, routing::post, Router};
    async fn take(
        State((path, received, delay)): State<(&'static str, Received, Duration)>,
        headers: HeaderMap,
        body: Bytes,
    ) -> &'static str {
        tokio::time::sleep(delay).await;
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        received.lock().expect("lock").push((
            path.to_string(),
            headers,
            String::from_utf8_lossy(&body).into_owned(),
        ));
        "ok"
    }
    let app = Router::new()
        .route(
            "/hook",
            post(take).with_state(("hook", received.clone(), delay)),
        )
        .route("/slack", post(take).with_state(("slack", received, delay)));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("receiver port");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

/// An SMTP server that accepts every message: (recipients, message text) in arrival order.
type Mails = Arc<Mutex<Vec<(Vec<String>, String)>>>;

async fn start_smtp(mails: Mails) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("smtp port");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let mails = mails.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read);
                let _ = write.write_all(b"220 smtp.test ESMTP\r\n").await;
                let mut rcpt = Vec::new();
                let mut line = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let command = line.trim_end().to_ascii_uppercase();
                    let reply: &[u8] = if command.starts_with("EHLO") {
                        b"250-smtp.test\r\n250 8BITMIME\r\n"
                    } else if command.starts_with("RCPT TO:") {
                        rcpt.push(line.trim_end()[8..].trim_matches(['<', '>']).to_string());
                        b"250 OK\r\n"
                    } else if command == "DATA" {
                        let _ = write.write_all(b"354 go ahead\r\n").await;
                        let mut text = String::new();
                        loop {
                            line.clear();
                            if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if line == ".\r\n" {
                                break;
                            }
                            text.push_str(&line);
                        }
                        mails
                            .lock()
                            .expect("lock")
                            .push((std::mem::take(&mut rcpt), text));
                        b"250 queued\r\n"
                    } else if command == "QUIT" {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        b"250 OK\r\n"
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Read octet-counted syslog frames (`LENGTH SP MESSAGE`) until the stream ends.
async fn read_frames<S: tokio::io::AsyncRead + Unpin>(stream: S, messages: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = Vec::new();
        if reader.read_until(b' ', &mut length).await.unwrap_or(0) == 0 {
            return;
        }
        let Ok(n) = String::from_utf8_lossy(&length).trim().parse::<usize>() else {
            return;
        };
        let mut frame = vec![0; n];
        if reader.read_exact(&mut frame).await.is_err() {
            return;
        }
        messages
            .lock()
            .expect("lock")
            .push(String::from_utf8_lossy(&frame).into_owned());
    }
}

/// A syslog collector over TCP (octet-counted frames): the messages, in arrival order.
async fn start_syslog_tcp(messages: Arc<Mutex<Vec<String>>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("syslog port");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let messages = messages.clone();
            tokio::spawn(async move {
                read_frames(stream, &messages).await;
            });
        }
    });
    port
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Wait until `done` holds, within `limit`.
async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A state on the server's database (another process), for votes and reads.
async fn side_state(env: &Env, policy_file: &Path) -> (server::AppState, Database) {
    let config = Config {
        database_url: env.url.clone(),
        policy_file: Some(policy_file.to_path_buf()),
        ..Config::default()
    };
    let db = Database::connect(&config).await.expect("connect");
    let policy = enforcer::PolicySet::load("policy.toml", POLICY).expect("the test policy loads");
    let state = server::AppState::new(&config, db.clone(), Arc::new(policy)).expect("state");
    (state, db)
}

/// Ask for `deploy run` exiting with `code`: the job id.
async fn ask(server: &Server, env: &Env, code: u8) -> String {
    let (status, answer) = server
        .post(
            &env.token,
            "/api/v1/decisions",
            &serde_json::json!({ "tool": "deploy", "operation": "run", "args": { "code": code.to_string() } }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["action"], "require_approval", "{answer}");
    answer["job_id"].as_str().expect("job id").to_string()
}

async fn vote(state: &server::AppState, job_id: &str, approve: bool) {
    let dave = enforcer::Principal {
        id: "dave".into(),
        roles: ["approver".to_string()].into(),
        capabilities: ["local-shell".to_string()].into(),
    };
    let verdict = if approve {
        enforcer::Verdict::Approve
    } else {
        enforcer::Verdict::Deny
    };
    server::services::approvals::vote(state, &dave, job_id, verdict, Some("CHG-42"))
        .await
        .expect("vote");
}

fn verify_signature(headers: &BTreeMap<String, String>, body: &str) -> bool {
    let (Some(timestamp), Some(signature)) = (
        headers.get("x-countersign-timestamp"),
        headers.get("x-countersign-signature"),
    ) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()) else {
        return false;
    };
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    signature == &format!("sha256={expected}")
}

/// The `seq` of a syslog message (from its structured data).
fn syslog_seq(message: &str) -> i64 {
    let start = message.find("seq=\"").expect("seq") + 5;
    let end = start + message[start..].find('"').expect("end of seq");
    message[start..end].parse().expect("a number")
}

/// Every `seq` in the JSON Lines file and its rotated predecessors, oldest first.
fn jsonl_seqs(path: &Path) -> Vec<i64> {
    let mut files: Vec<std::path::PathBuf> = (1..=50)
        .rev()
        .map(|n| path.with_extension(format!("jsonl.{n}")))
        .filter(|p| p.exists())
        .collect();
    files.push(path.to_path_buf());
    files
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .map(|line| {
                    serde_json::from_str::<serde_json::Value>(line).expect("a JSON line")["seq"]
                        .as_i64()
                        .expect("seq")
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The webhook deliveries' event types per job, in arrival order.
fn events_by_job(received: &Received) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, _, body) in received.lock().expect("lock").iter() {
        if path == "hook" {
            let event: serde_json::Value = serde_json::from_str(body).expect("JSON");
            out.entry(event["job_id"].as_str().unwrap_or_default().to_string())
                .or_default()
                .push(event["type"].as_str().unwrap_or_default().to_string());
        }
    }
    out
}

fn count(received: &Received, path: &str) -> usize {
    received
        .lock()
        .expect("lock")
        .iter()
        .filter(|(p, _, _)| p == path)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_in_order_once_through_outages_and_restarts() {
    let env = Env::new().await;
    let policy_file = env.dir.path().join("policy.toml");
    std::fs::write(&policy_file, POLICY).expect("policy");
    let received: Received = Arc::default();
    let mails: Mails = Arc::default();
    let syslog: Arc<Mutex<Vec<String>>> = Arc::default();
    let receiver_port = free_port();
    let smtp_port = start_smtp(mails.clone()).await;
    let syslog_port = start_syslog_tcp(syslog.clone()).await;
    let jsonl = env.dir.path().join("siem/audit.jsonl");
    std::fs::create_dir_all(jsonl.parent().expect("folder")).expect("siem folder");
    let settings = [
        ("COUNTERSIGN_POLICY_FILE", policy_file.display().to_string()),
        ("COUNTERSIGN_MAINTENANCE_INTERVAL_SECS", "1".into()),
        ("COUNTERSIGN_PUBLIC_URL", "http://countersign.test".into()),
        (
            "COUNTERSIGN_NOTIFY_WEBHOOK_URL",
            format!("http://127.0.0.1:{receiver_port}/hook"),
        ),
        ("COUNTERSIGN_NOTIFY_WEBHOOK_SECRET", SECRET.into()),
        (
            "COUNTERSIGN_NOTIFY_SLACK_URL",
            format!("http://127.0.0.1:{receiver_port}/slack"),
        ),
        (
            "COUNTERSIGN_NOTIFY_SMTP_URL",
            format!("smtp://127.0.0.1:{smtp_port}"),
        ),
        (
            "COUNTERSIGN_NOTIFY_EMAIL_FROM",
            "countersign@example.com".into(),
        ),
        (
            "COUNTERSIGN_NOTIFY_EMAIL_TO",
            "approvers@example.com:local-shell, windows@example.com:windows-admin".into(),
        ),
        ("COUNTERSIGN_NOTIFY_RETRY_BASE_MS", "200".into()),
        ("COUNTERSIGN_NOTIFY_MAX_ATTEMPTS", "1000".into()),
        ("COUNTERSIGN_NOTIFY_EXPIRY_WARNING_SECS", "6".into()),
        ("COUNTERSIGN_SIEM_JSONL", jsonl.display().to_string()),
        ("COUNTERSIGN_SIEM_JSONL_MAX_BYTES", "4096".into()),
        ("COUNTERSIGN_SIEM_JSONL_KEEP", "50".into()),
        (
            "COUNTERSIGN_SIEM_SYSLOG_URL",
            format!("tcp://127.0.0.1:{syslog_port}"),
        ),
    ];
    let mut server = env.serve_with(&env.url, &settings).await;
    let (state, db) = side_state(&env, &policy_file).await;

    // Four jobs while the webhook and Slack receiver is down: one runs, one fails, one is
    // denied, one is left to expire.
    let runs = ask(&server, &env, 0).await;
    vote(&state, &runs, true).await;
    let fails = ask(&server, &env, 3).await;
    vote(&state, &fails, true).await;
    let denied = ask(&server, &env, 0).await;
    vote(&state, &denied, false).await;
    let expires = ask(&server, &env, 0).await;
    assert_eq!(
        server
            .final_job(&env.token, &runs, Duration::from_secs(60))
            .await["status"],
        "completed"
    );
    assert_eq!(
        server
            .final_job(&env.token, &fails, Duration::from_secs(60))
            .await["status"],
        "failed"
    );
    assert_eq!(
        server
            .final_job(&env.token, &expires, Duration::from_secs(60))
            .await["status"],
        "expired"
    );

    // The head message has been tried again and again, and waits.
    let pool = match &db {
        Database::Sqlite(pool) => pool.clone(),
        Database::Postgres(_) => unreachable!("this test runs on SQLite"),
    };
    let head = || async {
        sqlx::query_as::<_, (String, i32, Option<String>)>(
            "SELECT status, attempts, last_error FROM notification_outbox WHERE sink = 'webhook' ORDER BY id LIMIT 1",
        )
        .fetch_one(&pool)
        .await
        .expect("outbox head")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, attempts, error) = head().await;
        if attempts >= 3 {
            assert_eq!(status, "pending", "still queued while the receiver is down");
            assert!(
                error
                    .as_deref()
                    .is_some_and(|e| e.contains("could not reach")),
                "{error:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no retries seen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(&received, "hook"), 0);

    // The receiver comes up: everything arrives, in order, and the retries stop.
    let receiver = start_receiver(receiver_port, received.clone(), Duration::ZERO).await;
    until("eleven webhook deliveries", Duration::from_secs(30), || {
        count(&received, "hook") >= 11 && count(&received, "slack") >= 11
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&received, "hook"),
        11,
        "no more once delivered: {:?}",
        events_by_job(&received)
    );
    assert_eq!(count(&received, "slack"), 11);
    let by_job = events_by_job(&received);
    assert_eq!(
        by_job[&runs],
        ["job.queued", "job.approved", "job.executed"]
    );
    assert_eq!(by_job[&fails], ["job.queued", "job.approved", "job.failed"]);
    assert_eq!(by_job[&denied], ["job.queued", "job.denied"]);
    assert_eq!(
        by_job[&expires],
        ["job.queued", "job.expiring", "job.expired"]
    );
    let outbox_order: Vec<String> = sqlx::query_scalar(
        "SELECT idempotency_key FROM notification_outbox WHERE sink = 'webhook' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("outbox");
    let arrival_order: Vec<String> = received
        .lock()
        .expect("lock")
        .iter()
        .filter(|(p, _, _)| p == "hook")
        .map(|(_, h, _)| h["x-countersign-delivery"].clone())
        .collect();
    assert_eq!(arrival_order, outbox_order, "delivered in the order queued");
    for (path, headers, body) in received.lock().expect("lock").iter() {
        if path == "hook" {
            assert!(verify_signature(headers, body), "signature of {body}");
            let event: serde_json::Value = serde_json::from_str(body).expect("JSON");
            assert_eq!(event["args"], serde_json::Value::Null, "arguments redacted");
            assert_eq!(event["args_redacted"], true);
            assert_eq!(event["call_hash"].as_str().map(str::len), Some(64));
            assert_eq!(
                headers["x-countersign-event"],
                event["type"].as_str().unwrap_or_default()
            );
        } else {
            let text = serde_json::from_str::<serde_json::Value>(body).expect("JSON")["text"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(
                text.contains("deploy · run") && text.contains("Risk: CRITICAL"),
                "{text}"
            );
            assert!(text.contains("Requested by: it-mcp"), "{text}");
            if text.contains("approval needed") {
                assert!(text.contains("Time left:"), "{text}");
                assert!(
                    text.contains("<http://countersign.test/approvals/")
                        && text.contains("|Review and decide>"),
                    "{text}"
                );
            }
        }
    }
    // The forged-signature check really checks.
    let (_, headers, body) = received.lock().expect("lock")[0].clone();
    assert!(!verify_signature(&headers, &body.replace("job.", "jab.")));

    // E-mail went to the approvers who hold local-shell, never to the Windows team.
    until("eleven e-mails", Duration::from_secs(20), || {
        mails.lock().expect("lock").len() >= 11
    })
    .await;
    {
        let mails = mails.lock().expect("lock");
        assert_eq!(mails.len(), 11);
        assert!(mails.iter().all(|(to, _)| to == &["approvers@example.com"]));
        assert!(mails.iter().any(|(_, text)| text
            .contains("Subject: [Countersign] CRITICAL approval needed: deploy run")));
        let ids: HashSet<&str> = mails
            .iter()
            .filter_map(|(_, text)| text.lines().find(|l| l.starts_with("Message-ID:")))
            .collect();
        assert_eq!(ids.len(), 11, "one Message-ID per event");
    }

    // The SIEM feeds have the whole trail, in order, once.
    let audit_head = || async { state.store.audit_head().await.expect("head").0 };
    let head_seq = audit_head().await;
    until("the SIEM feeds catch up", Duration::from_secs(20), || {
        jsonl_seqs(&jsonl).last() == Some(&head_seq)
            && syslog.lock().expect("lock").last().map(|m| syslog_seq(m)) == Some(head_seq)
    })
    .await;

    // Countersign is killed and started again; a new job is denied. The kill is made to land
    // between a record and its newline: the file ends in a torn record, which the feed cuts
    // back to the last newline when it opens the file again (or the next batch would be
    // appended onto it, `{…}{…}` on one line).
    server.child.kill().expect("kill");
    server.child.wait().expect("reaped");
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&jsonl)
            .expect("the SIEM file");
        file.write_all(br#"{"seq":1000000,"id":"torn-by-a-crash","#)
            .expect("a torn record");
    }
    let server = env.serve_with(&env.url, &settings).await;
    let late = ask(&server, &env, 0).await;
    vote(&state, &late, false).await;
    until("the late job's two events", Duration::from_secs(30), || {
        count(&received, "hook") >= 13
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&received, "hook"),
        13,
        "nothing sent twice after the restart"
    );
    assert_eq!(
        events_by_job(&received)[&late],
        ["job.queued", "job.denied"]
    );
    let keys: HashSet<String> = received
        .lock()
        .expect("lock")
        .iter()
        .map(|(p, h, _)| format!("{p}:{}", h["x-countersign-delivery"]))
        .collect();
    assert_eq!(
        keys.len(),
        received.lock().expect("lock").len(),
        "unique deliveries"
    );

    let head_seq = audit_head().await;
    until(
        "the SIEM feeds catch up after the restart",
        Duration::from_secs(20),
        || {
            jsonl_seqs(&jsonl).last() == Some(&head_seq)
                && syslog.lock().expect("lock").last().map(|m| syslog_seq(m)) == Some(head_seq)
        },
    )
    .await;
    let every: Vec<i64> = (1..=head_seq).collect();
    assert_eq!(
        jsonl_seqs(&jsonl),
        every,
        "the file holds every row once, in order"
    );
    let syslog_seqs: Vec<i64> = syslog
        .lock()
        .expect("lock")
        .iter()
        .map(|m| syslog_seq(m))
        .collect();
    assert_eq!(
        syslog_seqs, every,
        "the collector got every row once, in order"
    );
    assert!(
        jsonl.with_extension("jsonl.1").exists(),
        "the file was rotated on the way"
    );
    assert!(syslog
        .lock()
        .expect("lock")
        .iter()
        .all(|m| m.starts_with('<') && m.contains(">1 ") && m.contains("[countersign@32473 ")));

    receiver.abort();
    drop(server);
    db.close().await;
    let (ok, report) = env.verify();
    assert!(ok, "{report}");
}

/// A webhook receiver that refuses everything with 400: the message is dead-lettered at once,
/// shown on an admin's dashboard and queued again from there (audited). The SIEM feed here is
/// CEF over UDP, from the rows written after it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_is_dead_lettered_shown_and_retried_on_sqlite() {
    dead_letters_and_cef_over_udp(Env::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_is_dead_lettered_shown_and_retried_on_postgres() {
    dead_letters_and_cef_over_udp(Env::postgres().await).await;
}

async fn dead_letters_and_cef_over_udp(env: Env) {
    use axum::{http::StatusCode, routing::post, Router};
    let policy_file = env.dir.path().join("policy.toml");
    std::fs::write(&policy_file, POLICY).expect("policy");
    let (state, db) = side_state(&env, &policy_file).await;
    let mut before = server::store::NewAuditEvent::new(
        server::store::EventKind::PortalAction,
        "test",
        "countersign",
        "before.siem",
        AuditAction::Allow,
        "a row written before the SIEM feed starts",
        Risk::Low,
    );
    before.context = "{}".into();
    state.audit.append(before).await.expect("a row before");
    let head_before = state.store.audit_head().await.expect("head").0;

    let refusing = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("port");
    let refusing_port = refusing.local_addr().expect("address").port();
    let refusals = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = Router::new().route(
        "/hook",
        post({
            let refusals = refusals.clone();
            move || async move {
                refusals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                (StatusCode::BAD_REQUEST, "no")
            }
        }),
    );
    let receiver = tokio::spawn(async move {
        let _ = axum::serve(refusing, app).await;
    });
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp");
    let udp_port = udp.local_addr().expect("address").port();
    let datagrams: Arc<Mutex<Vec<String>>> = Arc::default();
    let collector = {
        let datagrams = datagrams.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0; 65_536];
            while let Ok(n) = udp.recv(&mut buffer).await {
                datagrams
                    .lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&buffer[..n]).into_owned());
            }
        })
    };
    let settings = [
        ("COUNTERSIGN_POLICY_FILE", policy_file.display().to_string()),
        (
            "COUNTERSIGN_NOTIFY_WEBHOOK_URL",
            format!("http://127.0.0.1:{refusing_port}/hook"),
        ),
        ("COUNTERSIGN_NOTIFY_WEBHOOK_SECRET", SECRET.into()),
        ("COUNTERSIGN_NOTIFY_EVENTS", "job.queued".into()),
        (
            "COUNTERSIGN_SIEM_SYSLOG_URL",
            format!("udp://127.0.0.1:{udp_port}"),
        ),
        ("COUNTERSIGN_SIEM_FORMAT", "cef".into()),
        ("COUNTERSIGN_SIEM_START", "now".into()),
    ];
    let server = env.serve_with(&env.url, &settings).await;
    let job = ask(&server, &env, 0).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let letter = loop {
        let dead = server::services::notifications::notify::dead_letters(
            &server::store::AnyStore::new(&db),
            10,
        )
        .await
        .expect("outbox");
        if let Some(letter) = dead.into_iter().next() {
            break letter;
        }
        assert!(Instant::now() < deadline, "not dead-lettered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let id = letter.id;
    assert_eq!(letter.job_id.as_deref(), Some(job.as_str()));
    assert_eq!(letter.event_type, "job.queued");
    assert_eq!(letter.attempts, 1, "a 400 is not retried");
    assert_eq!(
        letter.last_error.as_deref(),
        Some("the receiver answered 400 Bad Request")
    );

    // An admin sees it on the dashboard and queues it again.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let signed_in = http
        .post(server.url("/auth/login"))
        .header("origin", &server.base)
        .form(&[
            ("username", "admin"),
            ("password", "fault test admin password"),
            ("next", "/"),
        ])
        .send()
        .await
        .expect("sign in");
    let cookie = cookies(&signed_in);
    assert!(
        cookie.starts_with("countersign="),
        "a session cookie: {cookie}"
    );
    let page = http
        .get(server.url("/"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("dashboard")
        .text()
        .await
        .expect("html");
    assert!(page.contains("data-testid=\"dead-letters\""), "{page}");
    assert!(page.contains("the receiver answered 400 Bad Request"));
    assert!(page.contains(&format!("/jobs/{job}")));
    assert!(
        page.contains("webhook: 0 delivered, 0 pending, 1 dead"),
        "{page}"
    );
    let retried = http
        .post(server.url("/api/retry_delivery"))
        .header("origin", &server.base)
        .header("cookie", &cookie)
        .form(&[("id", id.to_string())])
        .send()
        .await
        .expect("retry");
    assert_eq!(location(&retried), format!("/?retried={id}#deliveries"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while refusals.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "not sent again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let audited = state
        .store
        .audit_page(0, 1_000)
        .await
        .expect("audit")
        .into_iter()
        .filter(|r| r.event.operation == "notification.retry")
        .map(|r| r.event.caller_id)
        .collect::<Vec<_>>();
    assert_eq!(audited, ["admin"], "the retry is audited with who asked");

    // CEF over UDP, only rows written after the feed started.
    let head = state.store.audit_head().await.expect("head").0;
    until("the datagrams", Duration::from_secs(20), || {
        datagrams
            .lock()
            .expect("lock")
            .last()
            .map(|m| syslog_seq(m))
            == Some(head)
    })
    .await;
    let datagrams = datagrams.lock().expect("lock").clone();
    let seqs: Vec<i64> = datagrams.iter().map(|m| syslog_seq(m)).collect();
    assert!(
        seqs[0] > head_before,
        "started at the end of the trail: {seqs:?}"
    );
    assert_eq!(seqs, (seqs[0]..=head).collect::<Vec<_>>());
    assert!(datagrams
        .iter()
        .all(|m| m.contains(" CEF:0|Countersign|Countersign|") && m.contains("cn1Label=seq")));
    assert!(datagrams
        .iter()
        .any(|m| m.contains("|decision:require_approval|") && m.contains("cs1=deploy")));

    receiver.abort();
    collector.abort();
    drop(server);
    db.close().await;
}

/// A syslog collector over TLS with a fresh self-signed certificate for `localhost`: the frames
/// it received, the port, and the certificate (PEM).
async fn start_syslog_tls(messages: Arc<Mutex<Vec<String>>>) -> (u16, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let cert_pem = certified.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("tls port");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, messages) = (acceptor.clone(), messages.clone());
            tokio::spawn(async move {
                // A client that does not trust the certificate hangs up here.
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                read_frames(stream, &messages).await;
            });
        }
    });
    (port, cert_pem)
}

/// Syslog over TLS checks the collector's certificate: against the wrong CA nothing is sent
/// (and the position does not move); with the right one every row arrives, from the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_over_tls_sends_only_to_a_collector_it_trusts() {
    let env = Env::new().await;
    let messages: Arc<Mutex<Vec<String>>> = Arc::default();
    let (port, cert_pem) = start_syslog_tls(messages.clone()).await;
    let right_ca = env.dir.path().join("collector-ca.pem");
    std::fs::write(&right_ca, &cert_pem).expect("ca");
    let wrong_ca = env.dir.path().join("other-ca.pem");
    let other =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    std::fs::write(&wrong_ca, other.cert.pem()).expect("ca");
    let settings = |ca: &Path| {
        [
            (
                "COUNTERSIGN_SIEM_SYSLOG_URL",
                format!("tls://localhost:{port}"),
            ),
            ("COUNTERSIGN_SIEM_SYSLOG_CA_FILE", ca.display().to_string()),
        ]
    };

    let mut server = env.serve_with(&env.url, &settings(&wrong_ca)).await;
    for n in 0..3 {
        let (status, _) = server.decide(&env.token, n).await.expect("decision");
        assert_eq!(status, 200);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        messages.lock().expect("lock").is_empty(),
        "nothing goes to a collector whose certificate the CA does not sign"
    );
    server.child.kill().expect("kill");
    server.child.wait().expect("reaped");

    let server = env.serve_with(&env.url, &settings(&right_ca)).await;
    let config = Config {
        database_url: env.url.clone(),
        ..Config::default()
    };
    let db = Database::connect(&config).await.expect("connect");
    let store = server::store::AnyStore::new(&db);
    let head = store.audit_head().await.expect("head").0;
    assert!(head >= 3, "three decisions at least");
    until("every row over TLS", Duration::from_secs(20), || {
        messages.lock().expect("lock").last().map(|m| syslog_seq(m)) == Some(head)
    })
    .await;
    let seqs: Vec<i64> = messages
        .lock()
        .expect("lock")
        .iter()
        .map(|m| syslog_seq(m))
        .collect();
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>());
    assert!(messages
        .lock()
        .expect("lock")
        .iter()
        .all(|m| m.contains("\"seq\":") && m.contains("\"row_hash\":")));
    drop(server);
    db.close().await;
}

/// Two replicas on one PostgreSQL database, both configured with the same webhook, which takes
/// its time to answer: the lease gives each worker to one of them, so every event is delivered
/// once (without it, both would send the message at the head of the queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_send_each_event_once() {
    let env = Env::postgres().await;
    let policy_file = env.dir.path().join("policy.toml");
    std::fs::write(&policy_file, POLICY).expect("policy");
    let received: Received = Arc::default();
    let port = free_port();
    let receiver = start_receiver(port, received.clone(), Duration::from_millis(700)).await;
    let settings = [
        ("COUNTERSIGN_POLICY_FILE", policy_file.display().to_string()),
        (
            "COUNTERSIGN_NOTIFY_WEBHOOK_URL",
            format!("http://127.0.0.1:{port}/hook"),
        ),
        ("COUNTERSIGN_NOTIFY_WEBHOOK_SECRET", SECRET.into()),
        ("COUNTERSIGN_NOTIFY_EVENTS", "job.queued,job.denied".into()),
    ];
    let first = env.serve_with(&env.url, &settings).await;
    let second = env.serve_with(&env.url, &settings).await;
    let (state, db) = side_state(&env, &policy_file).await;
    let mut jobs = Vec::new();
    for n in 0..6 {
        let replica = if n % 2 == 0 { &first } else { &second };
        let job = ask(replica, &env, 0).await;
        vote(&state, &job, false).await;
        jobs.push(job);
    }
    until("twelve deliveries", Duration::from_secs(60), || {
        count(&received, "hook") >= 12
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&received, "hook"),
        12,
        "{:?}",
        events_by_job(&received)
    );
    let by_job = events_by_job(&received);
    for job in &jobs {
        assert_eq!(by_job[job], ["job.queued", "job.denied"]);
    }
    receiver.abort();
    drop((first, second));
    db.close().await;
}

/// `siem_jsonl = "stdout"`: the trail as JSON Lines on standard output (logs go to stderr).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_can_go_to_stdout() {
    let env = Env::new().await;
    let port = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .arg("serve")
        .env("COUNTERSIGN_DATABASE_URL", &env.url)
        .env("COUNTERSIGN_BIND", format!("127.0.0.1:{port}"))
        .env("COUNTERSIGN_SITE_ROOT", env.dir.path().join("site"))
        .env("COUNTERSIGN_ADMIN_PASSWORD", "fault test admin password")
        .env("COUNTERSIGN_SIEM_JSONL", "stdout")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start countersign");
    let stdout = child.stdout.take().expect("stdout");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = http
            .post(format!("{base}/api/v1/decisions"))
            .bearer_auth(&env.token)
            .header("content-type", "application/json")
            .body(common::binary::decision(1))
            .send()
            .await;
        if answer.is_ok_and(|a| a.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut lines = BufReader::new(stdout).lines();
    let mut seqs = Vec::new();
    let mut decision_seen = false;
    while !decision_seen {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a line within 20 s")
            .expect("stdout")
            .expect("not closed");
        let row: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        seqs.push(row["seq"].as_i64().expect("seq"));
        decision_seen = row["event_kind"] == "decision" && row["tool"] == "ssh-exec";
    }
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    let _ = child.kill().await;
}
