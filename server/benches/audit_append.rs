//! Audit append throughput through the group-commit writer, and bytes per row on disk, on
//! SQLite (file, WAL, synchronous=FULL) and PostgreSQL. Prints figures; asserts nothing.
//!
//!     cargo bench -p server --bench audit_append            # 20,000 rows, 64 concurrent writers
//!     AUDIT_BENCH_ROWS=100000 AUDIT_BENCH_WRITERS=256 cargo bench -p server --bench audit_append
//!
//! PostgreSQL is CS_TEST_POSTGRES_URL (default: the local server's `test` database), in a
//! schema created and dropped by the run.
//!
//! `AUDIT_BENCH_WITHOUT_EXPLORER_INDEXES=1` drops the audit explorer's four (column, seq)
//! indexes after migrating, to measure what they cost the writer.

// A benchmark reports by printing its figures.
#![allow(clippy::print_stdout)]

mod common;

use server::store::{AnyStore, AuditWriter, NewAuditEvent};
use sqlx::{Connection, Executor};
use std::time::Instant;

/// Each writer's rows, made before the clock starts: the rows the decision API writes for
/// `decision_load`'s request mix (allowed, needing approval, denied), by the API's own code.
fn rows_for(writers: usize, per_writer: usize) -> Vec<Vec<NewAuditEvent>> {
    let policy = enforcer::default_policy().expect("default policy");
    (0..writers)
        .map(|w| {
            (0..per_writer)
                .map(|i| common::decision_row(&policy, w * per_writer + i))
                .collect()
        })
        .collect()
}

async fn run(label: &str, store: AnyStore, rows: usize, writers: usize) -> f64 {
    let writer = AuditWriter::spawn(store, None);
    let per_writer = rows / writers;
    let batches = rows_for(writers, per_writer);
    let start = Instant::now();
    let tasks: Vec<_> = batches
        .into_iter()
        .map(|events| {
            let writer = writer.clone();
            tokio::spawn(async move {
                for mut event in events {
                    // Stamped when appended, as the API does: times follow the chain's order.
                    event.timestamp = chrono::Utc::now();
                    writer.append(event).await.expect("durable append");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer task");
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = (per_writer * writers) as f64 / secs;
    println!("{label}: {} rows in {secs:.2} s = {rate:.0} durable appends/s ({writers} concurrent writers)", per_writer * writers);
    rate
}

#[tokio::main]
async fn main() {
    let rows: usize = std::env::var("AUDIT_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let writers: usize = std::env::var("AUDIT_BENCH_WRITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);

    // SQLite
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.db");
    let config = server::Config {
        database_url: format!("sqlite://{}", path.display()),
        ..server::Config::default()
    };
    let db = server::Database::connect(&config).await.expect("sqlite");
    db.migrate().await.expect("migrate");
    common::drop_explorer_indexes(&db, "AUDIT_BENCH_WITHOUT_EXPLORER_INDEXES").await;
    run("sqlite", AnyStore::new(&db), rows, writers).await;
    if let server::Database::Sqlite(pool) = &db {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(pool)
            .await
            .expect("checkpoint");
        let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(pool)
            .await
            .expect("page size");
        let pages: i64 = sqlx::query_scalar("SELECT SUM(pgsize) / $1 FROM dbstat WHERE name LIKE 'audit_logs%' OR name LIKE 'sqlite_autoindex_audit_logs%'")
            .bind(page_size)
            .fetch_one(pool)
            .await
            .unwrap_or(0);
        let (context, decision, reason): (f64, f64, f64) = sqlx::query_as(
            "SELECT avg(length(context)), avg(length(decision)), avg(length(decision_reason)) \
             FROM audit_logs",
        )
        .fetch_one(pool)
        .await
        .expect("lengths");
        println!(
            "sqlite: average text per row: context {context:.0} B, decision {decision:.0} B, \
             decision_reason {reason:.0} B"
        );
        let file = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let rows_stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_logs")
            .fetch_one(pool)
            .await
            .expect("count");
        let table_bytes = pages * page_size;
        if table_bytes > 0 {
            println!(
                "sqlite: audit_logs with its indexes {} B / {rows_stored} rows = {} B per row",
                table_bytes,
                table_bytes / rows_stored.max(1)
            );
            let parts: Vec<(String, i64)> = sqlx::query_as(
                "SELECT name, SUM(pgsize) FROM dbstat WHERE name LIKE 'audit_logs%' \
                 OR name LIKE 'sqlite_autoindex_audit_logs%' GROUP BY name ORDER BY 2 DESC",
            )
            .fetch_all(pool)
            .await
            .unwrap_or_default();
            let parts: Vec<String> = parts
                .iter()
                .map(|(name, bytes)| format!("{name} {}", bytes / rows_stored.max(1)))
                .collect();
            println!("sqlite: B per row by table and index: {}", parts.join(", "));
        }
        println!(
            "sqlite: whole database file {file} B / {rows_stored} rows = {} B per row",
            file as i64 / rows_stored.max(1)
        );
    }
    db.close().await;

    // PostgreSQL
    let url = std::env::var("CS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("cs_bench_{}", std::process::id());
    let Ok(mut admin) = sqlx::PgConnection::connect(&url).await else {
        println!("postgres: not reachable at {url}; skipped");
        return;
    };
    admin
        .execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .expect("schema");
    let options = url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .expect("url")
        .options([("search_path", schema.as_str())]);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .expect("pool");
    let db = server::Database::Postgres(pool.clone());
    db.migrate().await.expect("migrate");
    common::drop_explorer_indexes(&db, "AUDIT_BENCH_WITHOUT_EXPLORER_INDEXES").await;
    run("postgres", AnyStore::new(&db), rows, writers).await;
    let bytes: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('audit_logs')")
        .fetch_one(&pool)
        .await
        .expect("size");
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_logs")
        .fetch_one(&pool)
        .await
        .expect("count");
    println!(
        "postgres: audit_logs with indexes and TOAST {bytes} B / {count} rows = {} B per row",
        bytes / count.max(1)
    );
    pool.close().await;
    admin
        .execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
        .await
        .expect("drop schema");
}
