//! The MCP gateway's cost, measured against the same upstream reached directly:
//!
//! - **stdio**: the official Rust SDK's client starts `countersign mcp` (which starts the npm
//!   reference server, `@modelcontextprotocol/server-everything`, over stdio) versus the client
//!   starting the reference server itself;
//! - **HTTP**: the client speaks Streamable HTTP to `countersign serve` at `/mcp` (which reaches the
//!   reference server over Streamable HTTP) versus the client reaching the reference server directly.
//!
//! Each sends `MCP_BENCH_CALLS` (default 500) `echo` calls one after another (`MCP_BENCH_PAUSE_MS`
//! apart, default 0: back to back) after a warm-up and
//! prints p50 / p90 / p99 and the p50 the gateway adds (its decision, the audit row made durable,
//! and the run's report included: the policy allows `echo`). Then **held calls**: `MCP_BENCH_HELD`
//! (default 1,000) calls that need approval, all sent at once through one stdio gateway; it prints
//! how long until every one is a queued job, that each came back as "waiting for approval" once
//! the hold ended, with no error, and the gateway process's peak memory.
//!
//!     cargo bench -p server --bench mcp_gateway
//!
//! Needs the npm packages of `end2end/` (`bash scripts/setup.sh e2e`). The client, the gateway and
//! the upstream share the machine's cores, so these are floors.

// A benchmark reports by printing its figures.
#![allow(clippy::print_stdout)]

#[path = "../tests/common/mod.rs"]
mod shared;

use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Map};
use server::store::Store;
use shared::npm_mcp::{everything_over_http, everything_server as everything, free_port};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const POLICY: &str = r#"
name = "mcp-gateway-bench"
capabilities = ["local-shell"]

[approvals.risk.CRITICAL]
quorum = 1
request_ttl = "1h"
approval_window = "15m"

[tools.demo]
description = "The MCP reference server's demonstration tools"
[tools.demo.operations.echo]
risk = "LOW"
requires = ["local-shell"]
description = "Echo a message"
[tools.demo.operations.echo-held]
risk = "CRITICAL"
requires = ["local-shell"]
description = "Echo a message, once a person approves"

[mcp.upstreams.everything.tools.echo]
tool = "demo"
operation = "echo"
[mcp.upstreams.held.tools.echo]
tool = "demo"
operation = "echo-held"
[mcp.upstreams.remote.tools.echo]
tool = "demo"
operation = "echo"
"#;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

type Client = RunningService<RoleClient, ()>;

async fn echo(client: &Client, n: usize) -> Result<(), String> {
    let mut arguments = Map::new();
    arguments.insert("message".into(), json!(format!("bench {n}")));
    let result = client
        .peer()
        .call_tool(CallToolRequestParams::new("echo").with_arguments(arguments))
        .await
        .map_err(|e| e.to_string())?;
    if result.is_error == Some(true) {
        return Err(format!("{:?}", result.content));
    }
    Ok(())
}

/// Sequential echo calls, `pause` apart (not timed): their latencies, sorted.
async fn timed(client: &Client, calls: usize, pause: Duration) -> Vec<Duration> {
    for n in 0..20 {
        echo(client, n).await.expect("warm-up call");
    }
    let mut out = Vec::with_capacity(calls);
    for n in 0..calls {
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        let started = Instant::now();
        echo(client, n).await.expect("echo");
        out.push(started.elapsed());
    }
    out.sort();
    out
}

fn at(sorted: &[Duration], q: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1_000.0)
}

fn row(path: &str, sorted: &[Duration]) {
    println!(
        "| {path} | {} | {} | {} | {} |",
        sorted.len(),
        ms(at(sorted, 0.5)),
        ms(at(sorted, 0.9)),
        ms(at(sorted, 0.99)),
    );
}

/// The gateway's setup: a migrated database with a token (`it-mcp`, capability local-shell),
/// the policy and a configuration naming the upstreams.
struct Setup {
    env: shared::binary::Env,
    config: PathBuf,
    policy: PathBuf,
}

impl Setup {
    async fn new(http_port: u16, hold_secs: u64) -> Setup {
        let env = shared::binary::Env::new().await;
        let policy = env.dir.path().join("policy.toml");
        std::fs::write(&policy, POLICY).expect("policy");
        let config = env.dir.path().join("countersign.toml");
        let everything = everything();
        std::fs::write(
            &config,
            format!(
                "mcp_hold_secs = {hold_secs}\nmcp_progress_secs = 5\n\
                 [[mcp_upstreams]]\nname = \"everything\"\ncommand = \"node\"\nargs = [\"{e}\", \"stdio\"]\nenv = [\"PATH\", \"HOME\"]\n\
                 [[mcp_upstreams]]\nname = \"held\"\ncommand = \"node\"\nargs = [\"{e}\", \"stdio\"]\nenv = [\"PATH\", \"HOME\"]\nprefix = \"held.\"\n\
                 [[mcp_upstreams]]\nname = \"remote\"\nurl = \"http://127.0.0.1:{http_port}/mcp\"\n",
                e = everything.display()
            ),
        )
        .expect("config");
        Setup {
            env,
            config,
            policy,
        }
    }

    fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("COUNTERSIGN_CONFIG", self.config.display().to_string()),
            ("COUNTERSIGN_POLICY_FILE", self.policy.display().to_string()),
        ]
    }

    /// `countersign mcp` for the token's holder, in front of `upstreams`.
    async fn stdio_gateway(&self, upstreams: &[&str]) -> (Client, u32) {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"));
        command
            .arg("mcp")
            .env("COUNTERSIGN_DATABASE_URL", &self.env.url)
            .env("COUNTERSIGN_LOG_LEVEL", "error")
            .env("COUNTERSIGN_MCP_TOKEN", &self.env.token)
            .envs(self.settings());
        for upstream in upstreams {
            command.args(["--upstream", upstream]);
        }
        let transport = rmcp::transport::TokioChildProcess::new(command).expect("spawn gateway");
        let pid = transport.id().expect("pid");
        let client = ().serve(transport).await.expect("the gateway greets");
        (client, pid)
    }
}

/// Peak resident memory of a process, in MiB (from /proc).
fn peak_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let calls = env_or("MCP_BENCH_CALLS", 500);
    let held = env_or("MCP_BENCH_HELD", 1_000);
    // An assistant's calls come seconds apart (the model thinks between them); back to back,
    // each call's run report (written after its answer) is still being made durable when the
    // next call's decision must be.
    let pause = Duration::from_millis(env_or("MCP_BENCH_PAUSE_MS", 0) as u64);
    // rmcp's HTTP client takes the process's TLS provider (ring, as the server's).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http_port = free_port();
    let _http_upstream = everything_over_http(http_port).await;
    let setup = Setup::new(http_port, 30).await;

    println!("| path | calls | p50 | p90 | p99 |");
    println!("|---|---|---|---|---|");
    // stdio, direct.
    let mut command = tokio::process::Command::new("node");
    command.arg(everything()).arg("stdio");
    let direct =
        ().serve(rmcp::transport::TokioChildProcess::new(command).expect("spawn"))
            .await
            .expect("the reference server greets");
    let stdio_direct = timed(&direct, calls, pause).await;
    row("stdio, direct to the reference server", &stdio_direct);
    let _ = direct.cancel().await;
    // stdio, through `countersign mcp`.
    let (gateway, _) = setup.stdio_gateway(&["everything"]).await;
    let stdio_gateway = timed(&gateway, calls, pause).await;
    row("stdio, through `countersign mcp`", &stdio_gateway);
    let _ = gateway.cancel().await;
    // HTTP, direct.
    let direct = ()
        .serve(rmcp::transport::StreamableHttpClientTransport::from_uri(
            format!("http://127.0.0.1:{http_port}/mcp"),
        ))
        .await
        .expect("the reference server greets over HTTP");
    let http_direct = timed(&direct, calls, pause).await;
    row(
        "Streamable HTTP, direct to the reference server",
        &http_direct,
    );
    let _ = direct.cancel().await;
    // HTTP, through `countersign serve` at /mcp.
    let serving = setup
        .env
        .serve_with(&setup.env.url, &setup.settings())
        .await;
    let transport = rmcp::transport::StreamableHttpClientTransport::from_config(
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
            serving.url("/mcp"),
        )
        .auth_header(setup.env.token.clone()),
    );
    let through = ().serve(transport).await.expect("/mcp greets");
    let http_gateway = timed(&through, calls, pause).await;
    row(
        "Streamable HTTP, through `countersign serve` at /mcp",
        &http_gateway,
    );
    let _ = through.cancel().await;
    drop(serving);
    println!();
    println!(
        "p50 added by the gateway: stdio {}, Streamable HTTP {}",
        ms(at(&stdio_gateway, 0.5).saturating_sub(at(&stdio_direct, 0.5))),
        ms(at(&http_gateway, 0.5).saturating_sub(at(&http_direct, 0.5))),
    );

    // Held calls, all at once, through one stdio gateway.
    let (gateway, pid) = setup.stdio_gateway(&["held"]).await;
    let gateway = std::sync::Arc::new(gateway);
    let started = Instant::now();
    let mut calls_out = tokio::task::JoinSet::new();
    for n in 0..held {
        let gateway = gateway.clone();
        calls_out.spawn(async move {
            let mut arguments = Map::new();
            arguments.insert("message".into(), json!(format!("held {n}")));
            gateway
                .peer()
                .call_tool(CallToolRequestParams::new("held.echo").with_arguments(arguments))
                .await
        });
    }
    let db = server::Database::connect(&server::Config {
        database_url: setup.env.url.clone(),
        ..server::Config::default()
    })
    .await
    .expect("database");
    let store = db.store();
    let mut queued_after = None;
    while queued_after.is_none() && started.elapsed() < Duration::from_secs(30) {
        let counts = store.job_counts().await.expect("counts");
        let queued = counts
            .iter()
            .find(|(status, _)| status.as_str() == "queued")
            .map_or(0, |(_, n)| *n);
        if usize::try_from(queued).unwrap_or(0) >= held {
            queued_after = Some(started.elapsed());
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut waiting = 0usize;
    let mut other = Vec::new();
    while let Some(joined) = calls_out.join_next().await {
        match joined {
            Ok(Ok(result))
                if result.is_error == Some(true)
                    && format!("{:?}", result.content).contains("waiting for people") =>
            {
                waiting += 1;
            }
            Ok(Ok(result)) => other.push(format!("{:?}", result.content)),
            Ok(Err(error)) => other.push(error.to_string()),
            Err(error) => other.push(error.to_string()),
        }
    }
    println!();
    println!(
        "{held} held calls at once through `countersign mcp`: all queued after {}; \
         {waiting} answered \"waiting for approval\" when the {} s hold ended (total {:.1} s); \
         {} other answers{}; gateway peak memory {:.0} MiB",
        queued_after.map_or("(not all within 30 s)".to_string(), |d| format!(
            "{:.2} s",
            d.as_secs_f64()
        )),
        30,
        started.elapsed().as_secs_f64(),
        other.len(),
        other
            .first()
            .map(|o| format!(" (first: {o})"))
            .unwrap_or_default(),
        peak_mib(pid),
    );
    assert_eq!(waiting, held, "every held call waited and said so");
}
