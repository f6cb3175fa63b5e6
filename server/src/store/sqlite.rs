//! The SQLite store: the embedded default. Write transactions start with `BEGIN IMMEDIATE`, so
//! one writer at a time holds the database lock and every read-check-write is atomic. They all
//! go through one dedicated connection: writers then wait their turn in the process (in order,
//! woken at once) instead of in SQLite's busy handler, which sleeps up to 100 ms between tries.
//! Reads use the shared pool (WAL: readers never wait for the writer). The SQL itself is shared
//! with PostgreSQL (`dialect.rs`).

use super::{
    audit, format_ts, parse_ts, AuditReceipt, AuditRecord, EventKind, ImportedJob, Job, JobFilter,
    JobOutcome, JobStatus, NewAuditEvent, NewJob, Store, StoreError, VoteRecord,
};
use chrono::{DateTime, Duration, Utc};
use enforcer::Verdict;
use sqlx::{sqlite::SqliteRow, Row, Sqlite, SqlitePool, Transaction};

type Db = Sqlite;
type DbRow = SqliteRow;
type DialectStore = SqliteStore;

/// SQLite keeps timestamps as RFC 3339 text (see `format_ts`).
fn ts(t: DateTime<Utc>) -> String {
    format_ts(t)
}

fn read_ts(row: &DbRow, column: &str) -> Result<DateTime<Utc>, StoreError> {
    parse_ts(&row.try_get::<String, _>(column)?)
}

fn read_opt_ts(row: &DbRow, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    row.try_get::<Option<String>, _>(column)?
        .as_deref()
        .map(parse_ts)
        .transpose()
}

/// No row locks in SQLite: the `BEGIN IMMEDIATE` write lock already serialises writers.
macro_rules! lock {
    () => {
        ""
    };
}
const CLAIM_LOCK: &str = "";

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One connection for every write transaction of the store.
    writer: SqlitePool,
}

impl SqliteStore {
    pub fn new(pool: SqlitePool) -> SqliteStore {
        let options = (*pool.connect_options()).clone();
        let writer = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(std::time::Duration::from_secs(30))
            .connect_lazy_with(options);
        SqliteStore { pool, writer }
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The main database's file, or `None` when the database lives in memory (nothing else
    /// can open it then).
    pub async fn database_file(&self) -> Result<Option<std::path::PathBuf>, StoreError> {
        let file: String =
            sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(&self.pool)
                .await?;
        Ok((!file.is_empty()).then(|| file.into()))
    }

    /// Close both the shared pool and the write connection.
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    async fn write(&self) -> Result<Transaction<'static, Db>, StoreError> {
        match self.writer.begin_with("BEGIN IMMEDIATE").await {
            Err(sqlx::Error::InvalidSavePointStatement) => {
                // A COMMIT that failed on an I/O error (a full disk, say) is rolled back by
                // SQLite, but sqlx still counts the connection as inside a transaction and
                // would refuse every later BEGIN on it: the store would never write again.
                // Replace the connection; the next write opens a fresh one.
                tracing::warn!("replacing the SQLite write connection after a failed commit");
                self.writer.acquire().await?.close().await?;
                Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
            }
            other => Ok(other?),
        }
    }
}

include!("dialect.rs");
