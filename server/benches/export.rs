//! CSV (and JSON Lines) export of a large audit trail through the real binary.
//!
//! Seeds `EXPORT_ROWS` audit rows (default 1,000,000) into a fresh SQLite file, starts
//! `countersign serve` on a loopback port against it, downloads
//! `GET /api/v1/audit/export?format=csv` (then `jsonl`) for the whole period with an auditor
//! token, and prints the time to the last byte, the size, the rows received, and the server
//! process's resident memory before and at its peak (`VmHWM` from `/proc/PID/status`).
//!
//!     cargo bench -p server --bench export
//!     EXPORT_ROWS=100000 EXPORT_FORMATS=csv,jsonl,pdf cargo bench -p server --bench export

// A benchmark reports by printing its figures.
#![allow(clippy::print_stdout)]

mod common;

use server::{Config, Database};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server process's resident memory now and at its peak, in MiB.
fn memory(child: &Child) -> (f64, f64) {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let rows = common::env_or("EXPORT_ROWS", 1_000_000);
        let formats = std::env::var("EXPORT_FORMATS").unwrap_or_else(|_| "csv,jsonl".into());
        let dir = tempfile::tempdir().expect("tempdir");
        let database_url = format!("sqlite://{}", dir.path().join("export.db").display());
        let config = Config {
            database_url: database_url.clone(),
            ..Config::default()
        };
        let db = Database::connect(&config).await.expect("connect");
        db.migrate().await.expect("migrate");
        common::seed(&db, rows).await;
        let token = server::services::identity::api_tokens::create(
            &db.store(),
            "bench-auditor",
            &["auditor".into()],
            &[],
        )
        .await
        .expect("token")
        .1;
        db.close().await;

        // The server needs a site folder; an empty bundle file is enough for the API.
        let site = dir.path().join("site");
        std::fs::create_dir_all(site.join("pkg")).expect("site");
        std::fs::write(site.join("pkg").join("countersign.js"), "").expect("bundle");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_countersign"))
            .arg("serve")
            .env("COUNTERSIGN_DATABASE_URL", &database_url)
            .env("COUNTERSIGN_BIND", format!("127.0.0.1:{port}"))
            .env("COUNTERSIGN_SITE_ROOT", &site)
            .env(
                "COUNTERSIGN_LOG_LEVEL",
                std::env::var("EXPORT_SERVER_LOG").unwrap_or_else(|_| "error".into()),
            )
            .env("COUNTERSIGN_ADMIN_PASSWORD", "bench admin password")
            .stdout(Stdio::null())
            .spawn()
            .expect("start countersign");
        let server = Server(child);
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "the server did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (rss, _) = memory(&server.0);
        println!("\nSQLite, {rows} audit rows; server resident memory when ready: {rss:.0} MiB");
        println!(
            "{:<7} {:>9} {:>10} {:>11} {:>12} {:>14}",
            "format", "seconds", "MiB", "rows", "rows/s", "peak RSS MiB"
        );
        let from = (chrono::Utc::now() - chrono::Duration::days(400)).format("%Y-%m-%d");
        for format in formats.split(',') {
            let started = Instant::now();
            let mut response = client
                .get(format!(
                    "{base}/api/v1/audit/export?format={format}&from={from}"
                ))
                .bearer_auth(&token)
                .send()
                .await
                .expect("export");
            assert!(
                response.status().is_success(),
                "{format}: {}",
                response.status()
            );
            let (mut bytes, mut lines) = (0usize, 0usize);
            while let Some(chunk) = response.chunk().await.expect("body") {
                bytes += chunk.len();
                lines += chunk.iter().filter(|b| **b == b'\n').count();
            }
            let seconds = started.elapsed().as_secs_f64();
            let (_, peak) = memory(&server.0);
            // CSV: a header line, then one line per row (seeded reasons have no new lines).
            let rows_received = match format {
                "csv" => lines.saturating_sub(1),
                "jsonl" => lines,
                _ => 0,
            };
            if format == "csv" || format == "jsonl" {
                // The seeded rows, and the server's own from its start (account bootstrap).
                assert!(
                    rows_received >= rows,
                    "{format}: {rows_received} of {rows} rows arrived"
                );
            }
            println!(
                "{:<7} {:>9.2} {:>10.1} {:>11} {:>12.0} {:>14.0}",
                format,
                seconds,
                bytes as f64 / 1_048_576.0,
                rows_received,
                rows_received as f64 / seconds,
                peak
            );
        }
        drop(server);
    });
}
