//! The PostgreSQL store, for several replicas sharing one database. Rows that a transaction
//! reads and then changes are locked (`FOR UPDATE`); claims skip rows other agents hold
//! (`FOR UPDATE SKIP LOCKED`); the audit head row serialises chain appends across replicas. The
//! SQL itself is shared with SQLite (`dialect.rs`).

use super::{
    audit, truncate, AuditReceipt, AuditRecord, EventKind, ImportedJob, Job, JobFilter, JobOutcome,
    JobStatus, NewAuditEvent, NewJob, OpenCallScope, Store, StoreError, VoteRecord,
};
use chrono::{DateTime, Duration, Utc};
use enforcer::{Priority, Risk, Verdict};
use sqlx::{postgres::PgRow, PgPool, Postgres, Row, Transaction};

type Db = Postgres;
type DbRow = PgRow;
type DialectStore = PgStore;

/// PostgreSQL keeps `timestamptz`, at the store's millisecond precision.
fn ts(t: DateTime<Utc>) -> DateTime<Utc> {
    truncate(t)
}

fn read_ts(row: &DbRow, column: &str) -> Result<DateTime<Utc>, StoreError> {
    Ok(row.try_get(column)?)
}

fn read_opt_ts(row: &DbRow, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(row.try_get(column)?)
}

/// Lock what a transaction reads before it changes it; claims skip rows others hold.
macro_rules! lock {
    () => {
        " FOR UPDATE"
    };
}
const CLAIM_LOCK: &str = " FOR UPDATE SKIP LOCKED";

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub fn new(pool: PgPool) -> PgStore {
        PgStore { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn write(&self) -> Result<Transaction<'static, Db>, StoreError> {
        Ok(self.pool.begin().await?)
    }
}

include!("dialect.rs");
include!("idempotency_sql.rs");
include!("integrations_sql.rs");
include!("identity_sql.rs");
