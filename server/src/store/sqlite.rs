//! The SQLite store: the embedded default. Write transactions start with `BEGIN IMMEDIATE`, so
//! one writer at a time holds the database lock and every read-check-write is atomic. The SQL
//! itself is shared with PostgreSQL (`dialect.rs`).

use super::{
    audit, format_ts, parse_ts, AuditReceipt, AuditRecord, EventKind, ImportedJob, Job, JobOutcome,
    JobStatus, NewAuditEvent, NewJob, Store, StoreError, VoteRecord,
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
}

impl SqliteStore {
    pub fn new(pool: SqlitePool) -> SqliteStore {
        SqliteStore { pool }
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn write(&self) -> Result<Transaction<'static, Db>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

include!("dialect.rs");
