//! Integrations: approval notifications and a SIEM feed.
//!
//! - **Notifications** ([`notify`]): every job status change people care about is written to
//!   `job_transitions` in the transaction that makes it. The notifier reads that log with a
//!   persisted cursor and puts one message per event and sink in `notification_outbox` (in one
//!   transaction with the cursor, idempotency key `EVENT-ID/SINK`), plus `job.expiring` warnings
//!   for queued jobs about to expire. One deliverer per sink sends its messages in order, retries
//!   with exponential back-off and dead-letters a message after the last attempt; dead letters
//!   are listed on the portal's dashboard and can be retried there. Sinks ([`sinks`]): a signed
//!   JSON webhook, a Slack-compatible incoming webhook and e-mail over SMTP.
//! - **SIEM feed** ([`siem`]): the audit trail, in chain order, as JSON Lines (a rotated file or
//!   stdout) and as RFC 5424 syslog over UDP, TCP or TLS, optionally CEF-formatted. Each feed
//!   keeps a cursor (the last `seq` it wrote) and moves it only after a batch is written, so a
//!   restart resumes where it stopped: at-least-once, with `seq` for de-duplication.
//!
//! With several replicas (PostgreSQL), a lease in `integration_leases` gives each worker to one
//! replica at a time.

pub mod notify;
pub mod siem;
pub mod sinks;
pub mod syslog;

use crate::store::Database;
use std::time::Duration;

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// How long a worker's lease lasts without renewal; workers renew it every loop.
const LEASE_MS: i64 = 15_000;

/// One replica at a time runs a worker: the holder renews the lease, others take it over once
/// it has lapsed.
#[derive(Debug)]
pub struct Lease {
    db: Database,
    name: String,
    owner: String,
    /// Until when this process is known to hold the lease (Unix ms; 0: not held).
    held_until: std::sync::atomic::AtomicI64,
}

impl Lease {
    pub fn new(db: &Database, name: &str, owner: &str) -> Lease {
        Lease {
            db: db.clone(),
            name: name.to_string(),
            owner: owner.to_string(),
            held_until: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Take or renew the lease; whether this process holds it now. A lease with more than half
    /// its time left is not renewed (no write to the database).
    pub async fn hold(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = now_ms();
        if self.held_until.load(Ordering::Relaxed) - now > LEASE_MS / 2 {
            return true;
        }
        let result = on_db!(&self.db, pool => sqlx::query(
            "INSERT INTO integration_leases (name, owner, expires_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms \
             WHERE integration_leases.owner = excluded.owner OR integration_leases.expires_ms < $4",
        )
        .bind(&self.name)
        .bind(&self.owner)
        .bind(now + LEASE_MS)
        .bind(now)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()));
        let held = match result {
            Ok(rows) => rows == 1,
            Err(error) => {
                tracing::warn!(%error, worker = %self.name, "integration lease unavailable");
                false
            }
        };
        self.held_until
            .store(if held { now + LEASE_MS } else { 0 }, Ordering::Relaxed);
        held
    }
}

/// Where the reader `name` has got to, if it has started.
pub async fn cursor(db: &Database, name: &str) -> Result<Option<i64>, sqlx::Error> {
    on_db!(db, pool => sqlx::query_scalar("SELECT position FROM integration_cursors WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await)
}

/// Move the reader `name` to `position`.
pub async fn set_cursor(db: &Database, name: &str, position: i64) -> Result<(), sqlx::Error> {
    on_db!(db, pool => sqlx::query(
        "INSERT INTO integration_cursors (name, position, updated_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_ms = excluded.updated_ms",
    )
    .bind(name)
    .bind(position)
    .bind(now_ms())
    .execute(pool)
    .await
    .map(|_| ()))
}

/// The machine's host name (empty when it cannot be read).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// This process's name in leases: host and a random part.
pub fn owner_id() -> String {
    let host = Some(hostname())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "countersign".to_string());
    format!("{host}/{}", uuid::Uuid::new_v4())
}

/// Pause between tries while something is failing: doubles from 1 s up to 30 s.
#[derive(Debug)]
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff(Duration::from_secs(1))
    }

    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(30));
    }

    pub(crate) fn reset(&mut self) {
        self.0 = Duration::from_secs(1);
    }
}

/// Start every configured integration (none when nothing is configured).
pub async fn start(state: &crate::AppState, config: &crate::config::Config) -> Result<(), String> {
    let owner = owner_id();
    notify::start(state, config, &owner).await?;
    siem::start(state, config, &owner).await?;
    Ok(())
}
