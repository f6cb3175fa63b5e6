//! A mixed load run through the real binary over loopback: decisions, approvals, long-polls
//! woken by those approvals, and dashboard page loads by a signed-in person, all at once, for a
//! fixed time. Prints per kind the count, rate, p50 / p99 and errors (goal: 0), the server
//! process's CPU and peak memory, and checks that the audit trail verifies afterwards. Runs on a
//! SQLite file, then on PostgreSQL (a schema created and dropped by the run). People sign in
//! and vote with tokens from the test OpenID provider (tests/common/provider.rs).
//!
//!     cargo bench -p server --bench mixed_load
//!     MIXED_SECS=30 MIXED_DECISION_CLIENTS=16 cargo bench -p server --bench mixed_load
//!
//! The client runs on the same 2 cores as the server, so the figures are a floor.

// A benchmark reports by printing its figures.
#![allow(clippy::print_stdout)]

#[path = "../tests/common/mod.rs"]
mod shared;

use shared::binary::Env;
use shared::provider::{self, Provider};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the decision clients ask, in turn: mostly allowed calls, one in ten needing approval
/// (`sudo`, HIGH, one approval), one in ten denied.
fn body(n: usize) -> String {
    match n % 10 {
        0..=7 => format!(
            r#"{{"tool":"ssh-exec","operation":"executeCommand","args":{{"command":"systemctl status nginx --no-pager -n {n}"}},"target":"web-01","reason":"mixed load"}}"#
        ),
        8 => format!(
            r#"{{"tool":"ssh-exec","operation":"executeCommand","args":{{"command":"sudo ls /root/{n}"}},"target":"web-02","reason":"mixed load"}}"#
        ),
        _ => r#"{"tool":"no-such-tool","operation":"x"}"#.to_string(),
    }
}

/// Latencies and errors of one kind of request.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
}

type Shared = Arc<Mutex<Tally>>;

fn record(tally: &Shared, outcome: Result<Duration, String>) {
    if let Ok(mut t) = tally.lock() {
        match outcome {
            Ok(latency) => t.latencies.push(latency),
            Err(error) => {
                t.errors += 1;
                t.first_error.get_or_insert(error);
            }
        }
    }
}

/// CPU seconds the process has used (user + system).
fn cpu_seconds(process: &Child) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", process.id())).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 12th, 13th.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / clock_ticks()
}

/// Peak resident memory in MiB.
fn peak_mib(process: &Child) -> f64 {
    std::fs::read_to_string(format!("/proc/{}/status", process.id()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

async fn run(label: &str, env: Env) {
    let seconds = env_or("MIXED_SECS", 20) as u64;
    let decision_clients = env_or("MIXED_DECISION_CLIENTS", 16);
    let flow_workers = env_or("MIXED_APPROVERS", 4);
    let page_clients = env_or("MIXED_PAGE_CLIENTS", 2);

    let provider = Provider::start().await;
    let server = env
        .serve_with(
            &env.url,
            &provider.settings(&[("COUNTERSIGN_API_RATE_LIMIT_PER_SEC", "0".into())]),
        )
        .await;
    let (base, token) = (server.base.clone(), env.token.clone());
    let web = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let ready = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = web.get(format!("{base}/readyz")).send().await {
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            if body["checks"]["identity_provider"] == "ok" {
                break;
            }
        }
        assert!(Instant::now() < ready, "the server did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let session = provider::sign_in(&web, &base, &provider, "carol").await;
    let voters: Arc<Vec<String>> = Arc::new(
        ["alice", "dave"]
            .iter()
            .map(|who| provider.person_token(who, &["approver", "ssh-linux", "remote-exec"]))
            .collect(),
    );

    let (decisions, votes, wakes, pages) = (
        Shared::default(),
        Shared::default(),
        Shared::default(),
        Shared::default(),
    );
    let (jobs_tx, jobs_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let jobs_rx = Arc::new(tokio::sync::Mutex::new(jobs_rx));
    let cpu_before = cpu_seconds(&server.child);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();

    for c in 0..decision_clients {
        let (web, base, token, tally, jobs) = (
            web.clone(),
            base.clone(),
            token.clone(),
            decisions.clone(),
            jobs_tx.clone(),
        );
        tasks.spawn(async move {
            let mut n = c;
            while Instant::now() < deadline {
                let t = Instant::now();
                let answer = web
                    .post(format!("{base}/api/v1/decisions"))
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body(n))
                    .send()
                    .await;
                n += decision_clients;
                let outcome = match answer {
                    Ok(r) if r.status().is_success() => {
                        let value: serde_json::Value = r.json().await.unwrap_or_default();
                        if let Some(job) = value["job_id"].as_str() {
                            let _ = jobs.send(job.to_string());
                        }
                        Ok(t.elapsed())
                    }
                    Ok(r) => Err(format!("decision: HTTP {}", r.status())),
                    Err(e) => Err(format!("decision: {e}")),
                };
                record(&tally, outcome);
            }
        });
    }
    drop(jobs_tx);

    // Each queued job: a long-poll waits on it, an approver approves it, and the long-poll must
    // wake with the new status.
    for w in 0..flow_workers {
        let (web, base, token, voters, jobs) = (
            web.clone(),
            base.clone(),
            token.clone(),
            voters.clone(),
            jobs_rx.clone(),
        );
        let (votes, wakes) = (votes.clone(), wakes.clone());
        tasks.spawn(async move {
            let mut turn = w;
            loop {
                let next = tokio::select! {
                    job = async { jobs.lock().await.recv().await } => job,
                    _ = tokio::time::sleep_until(deadline.into()) => None,
                };
                let Some(job) = next else { break };
                let poll = web
                    .get(format!("{base}/api/v1/jobs/{job}?wait=20"))
                    .bearer_auth(&token)
                    .send();
                let poll = tokio::spawn(poll);
                // Let the long-poll subscribe before the vote lands.
                tokio::time::sleep(Duration::from_millis(20)).await;
                turn += 1;
                // Approvers vote until the job is approved: one for HIGH, two for the CRITICAL
                // ones (the policy reads some of these paths as CRITICAL), each with a comment.
                let mut t = Instant::now();
                let mut vote_ok = false;
                for voter in 0..voters.len() {
                    t = Instant::now();
                    let voted = web
                        .post(format!("{base}/api/v1/jobs/{job}/votes"))
                        .bearer_auth(&voters[(turn + voter) % voters.len()])
                        .json(&serde_json::json!({ "verdict": "approve", "reason": "CHG-4711" }))
                        .send()
                        .await;
                    let outcome = match voted {
                        Ok(r) if r.status().is_success() => {
                            let value: serde_json::Value = r.json().await.unwrap_or_default();
                            vote_ok = value["status"] == "approved";
                            Ok(t.elapsed())
                        }
                        Ok(r) => Err(format!(
                            "vote: HTTP {} {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        )),
                        Err(e) => Err(format!("vote: {e}")),
                    };
                    let failed = outcome.is_err();
                    record(&votes, outcome);
                    if vote_ok || failed {
                        break;
                    }
                }
                let woke = poll
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                let outcome = match woke {
                    Ok(r) if r.status().is_success() => {
                        let value: serde_json::Value = r.json().await.unwrap_or_default();
                        if value["status"] == "approved" || !vote_ok {
                            Ok(t.elapsed())
                        } else {
                            Err(format!("long-poll woke with status {}", value["status"]))
                        }
                    }
                    Ok(r) => Err(format!("long-poll: HTTP {}", r.status())),
                    Err(e) => Err(format!("long-poll: {e}")),
                };
                record(&wakes, outcome);
            }
        });
    }

    for _ in 0..page_clients {
        let (web, base, session, tally) =
            (web.clone(), base.clone(), session.clone(), pages.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let t = Instant::now();
                let answer = web
                    .get(format!("{base}/"))
                    .header(reqwest::header::COOKIE, &session)
                    .send()
                    .await;
                let outcome = match answer {
                    Ok(r) if r.status().is_success() => match r.text().await {
                        Ok(html) if html.contains("</html>") => Ok(t.elapsed()),
                        Ok(_) => Err("dashboard: incomplete page".to_string()),
                        Err(e) => Err(format!("dashboard: {e}")),
                    },
                    Ok(r) => Err(format!("dashboard: HTTP {}", r.status())),
                    Err(e) => Err(format!("dashboard: {e}")),
                };
                record(&tally, outcome);
            }
        });
    }
    let bound = deadline + Duration::from_secs(40);
    while tokio::time::timeout_at(bound.into(), tasks.join_next())
        .await
        .ok()
        .flatten()
        .is_some()
    {}
    tasks.abort_all();
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(&server.child) - cpu_before;
    let peak = peak_mib(&server.child);

    println!("\n{label}: {seconds} s, {decision_clients} decision clients, {flow_workers} approvers with long-polls, {page_clients} dashboard readers");
    println!(
        "{:<10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "kind", "count", "per s", "p50 ms", "p99 ms", "max ms", "errors"
    );
    let mut errors = 0;
    for (name, tally) in [
        ("decision", &decisions),
        ("approval", &votes),
        ("long-poll", &wakes),
        ("dashboard", &pages),
    ] {
        let Ok(mut t) = tally.lock() else { continue };
        t.latencies.sort();
        let pct = |p: f64| {
            t.latencies
                .get(
                    ((t.latencies.len() as f64 * p) as usize)
                        .min(t.latencies.len().saturating_sub(1)),
                )
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        println!(
            "{name:<10} {:>8} {:>9.0} {:>9.2} {:>9.2} {:>9.2} {:>7}",
            t.latencies.len(),
            t.latencies.len() as f64 / elapsed,
            pct(0.50),
            pct(0.99),
            t.latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
            t.errors
        );
        if let Some(first) = &t.first_error {
            println!("           first error: {first}");
        }
        errors += t.errors;
    }
    println!(
        "server CPU {:.0} % of one core ({cpu:.1} s over {elapsed:.1} s), peak resident memory {peak:.0} MiB, errors {errors}",
        cpu / elapsed * 100.0
    );
    drop(server);
    let (ok, report) = env.verify();
    println!(
        "audit verify: {}",
        if ok {
            "passed".to_string()
        } else {
            format!("FAILED {report}")
        }
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        run("SQLite", Env::new().await).await;
        if sqlx::Connection::connect(&shared::pg_url())
            .await
            .map(|c: sqlx::PgConnection| drop(c))
            .is_err()
        {
            println!("\nPostgreSQL skipped: {} unreachable", shared::pg_url());
            return;
        }
        run("PostgreSQL", Env::postgres().await).await;
    });
}
