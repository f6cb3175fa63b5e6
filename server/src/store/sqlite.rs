//! The SQLite store: the embedded default. Write transactions start with `BEGIN IMMEDIATE`, so
//! one writer at a time holds the database lock and every read-check-write is atomic. They all
//! go through one dedicated connection: writers then wait their turn in the process (in order,
//! woken at once) instead of in SQLite's busy handler, which sleeps up to 100 ms between tries.
//! Reads use the shared pool (WAL: readers never wait for the writer). The SQL itself is shared
//! with PostgreSQL (`dialect.rs`).

use super::{
    audit, format_ts, parse_ts, AuditReceipt, AuditRecord, EventKind, ImportedJob, Job, JobFilter,
    JobOutcome, JobStatus, NewAuditEvent, NewJob, OpenCallScope, Store, StoreError, VoteRecord,
};
use chrono::{DateTime, Duration, Utc};
use enforcer::{Priority, Risk, Verdict};
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
        SqliteStore::open(pool, true)
    }

    /// A store for one short piece of work beside the server's (a test's setup, a command
    /// line tool's few rows): SQLite's own automatic checkpoints stay on and no background
    /// task is started.
    pub fn brief(pool: SqlitePool) -> SqliteStore {
        SqliteStore::open(pool, false)
    }

    fn open(pool: SqlitePool, own_checkpoints: bool) -> SqliteStore {
        let mut options = (*pool.connect_options()).clone();
        // Without a runtime (nothing to run the checkpoints on) SQLite's own stay on.
        let runtime = tokio::runtime::Handle::try_current()
            .ok()
            .filter(|_| own_checkpoints);
        if runtime.is_some() {
            // The write connection does not copy the WAL into the database itself (SQLite's
            // automatic checkpoint runs inside the COMMIT that crosses 1,000 pages, and every
            // caller waiting on that batch waited for it too); `checkpoint_wal` does, off the
            // writer's path but for its last few frames.
            options = options.pragma("wal_autocheckpoint", "0");
        }
        let writer = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(std::time::Duration::from_secs(30))
            .connect_lazy_with(options);
        // The store that turns SQLite's own checkpoints off runs their replacement, whoever made
        // it: the server, or a CLI command (an import writes as much as a busy hour). The task
        // ends when the store is closed (or the runtime stops).
        if let Some(runtime) = runtime {
            runtime.spawn(checkpoint_wal(pool.clone(), writer.clone()));
        }
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

/// How often the background task copies the WAL into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Checkpoint the WAL in the background until the pools close, in two steps. First a PASSIVE
/// checkpoint on a reading connection copies the bulk of the WAL into the database while the
/// writer goes on committing (it blocks nobody). Then one on the write connection, between two
/// of its transactions, copies the few frames committed meanwhile: with no write under way it
/// completes, and the next transaction starts the WAL over from its beginning. (Passive
/// checkpoints alone never catch up with a writer that never pauses, and the WAL would grow
/// without bound.) The writer waits only for that short second step, a quarter second apart.
async fn checkpoint_wal(pool: SqlitePool, writer: SqlitePool) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() || writer.is_closed() {
            return;
        }
        for connection in [&pool, &writer] {
            if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(connection)
                .await
            {
                if pool.is_closed() || writer.is_closed() {
                    return;
                }
                tracing::warn!(%error, "could not checkpoint the SQLite WAL");
            }
        }
    }
}

include!("dialect.rs");
include!("idempotency_sql.rs");
include!("integrations_sql.rs");
include!("identity_sql.rs");
