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

pub mod message;
pub mod notify;
pub mod siem;
pub mod sinks;
pub mod syslog;

use crate::store::{AnyStore, IntegrationStore, StoreError};
use std::time::Duration;

message_error!(
    /// Why an integration (notifications, the SIEM feed) could not start or do its work.
    IntegrationError
);

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
    store: AnyStore,
    name: String,
    owner: String,
    /// Until when this process is known to hold the lease (Unix ms; 0: not held).
    held_until: std::sync::atomic::AtomicI64,
}

impl Lease {
    pub fn new(store: &AnyStore, name: &str, owner: &str) -> Lease {
        Lease {
            store: store.clone(),
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
        let held = match self
            .store
            .hold_lease(&self.name, &self.owner, now, now + LEASE_MS)
            .await
        {
            Ok(held) => held,
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
pub async fn cursor(store: &AnyStore, name: &str) -> Result<Option<i64>, StoreError> {
    store.cursor(name).await
}

/// Move the reader `name` to `position`.
pub async fn set_cursor(store: &AnyStore, name: &str, position: i64) -> Result<(), StoreError> {
    store.set_cursor(name, position, now_ms()).await
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
pub async fn start(
    core: &std::sync::Arc<crate::services::Core>,
    config: &crate::config::Config,
) -> Result<(), IntegrationError> {
    let owner = owner_id();
    notify::start(core, config, &owner).await?;
    siem::start(core, config, &owner).await?;
    Ok(())
}

/// How Countersign signs what it posts to a webhook (notifications and the webhook executor):
/// `sha256=<hex>` over `"{timestamp}.{body}"`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    use hmac::Mac;
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}
