//! Notifications: from `job_transitions` to the outbox, and from the outbox to each sink.
//!
//! The notifier reads the transitions after its cursor, builds one [`Notification`] per event
//! and stores one outbox row per sink that wants it, together with the new cursor, in one
//! transaction: a crash before the commit repeats the batch (the idempotency key makes that a
//! no-op) and one after it never loses a row. `job.expiring` warnings come from a scan of the
//! queued jobs, once per job (its key is the job id).
//!
//! Each sink has one deliverer: it sends the oldest pending message, and only then the next, so
//! a receiver sees events in order. A failure is retried after `retry_base × 2^(attempt-1)` (at
//! most ten minutes) until `max_attempts`; then the message is dead-lettered and the next one
//! goes. A receiver's permanent refusal (a 4xx other than 408, 425 or 429) dead-letters at once.

use super::message::{Notification, NotifiedVote};
use super::sinks::{Failure, Sink};
use super::IntegrationError;
use super::{cursor, now_ms, Lease};
use crate::config::Config;
use crate::services::Core;
pub use crate::store::OutboxRow;
use crate::store::{AnyStore, Attempt, IntegrationStore, NewOutboxMessage, StoreError};
use crate::store::{Job, JobStatus, JobSummary, Store, VoteRecord};
pub use crate::vocab::EventType;
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// The notifier's cursor in `job_transitions`.
const CURSOR: &str = "notify:transitions";
/// Transitions read per pass.
const BATCH: i64 = 200;
/// Longest pause between retries.
const MAX_RETRY_MS: i64 = 10 * 60 * 1_000;
/// Longest error kept with a message.
const MAX_ERROR_CHARS: usize = 500;
/// How often workers look for work when nothing wakes them.
const POLL: Duration = Duration::from_millis(500);

/// How notifications are configured.
pub struct Settings {
    pub sinks: Vec<Arc<Sink>>,
    pub events: BTreeSet<EventType>,
    pub include_args: bool,
    pub expiry_warning_secs: i64,
    pub max_attempts: i32,
    pub retry_base_ms: i64,
    pub public_url: Option<String>,
}

impl Settings {
    pub fn from_config(config: &Config) -> Result<Settings, IntegrationError> {
        let mut sinks = Vec::new();
        if let Some(url) = &config.notify_webhook_url {
            let secret = config
                .notify_webhook_secret
                .clone()
                .ok_or("notify_webhook_secret is required with notify_webhook_url")?;
            sinks.push(Arc::new(Sink::webhook(url, secret)));
        }
        if let Some(url) = &config.notify_slack_url {
            sinks.push(Arc::new(Sink::slack(url.clone())));
        }
        if let Some(url) = &config.notify_smtp_url {
            sinks.push(Arc::new(Sink::email(
                url,
                config.notify_email_from.as_deref(),
                config.notify_email_to.as_deref(),
            )?));
        }
        Ok(Settings {
            sinks,
            events: config.notify_event_types().map_err(|e| e.to_string())?,
            include_args: config.notify_include_args,
            expiry_warning_secs: i64::try_from(config.notify_expiry_warning_secs)
                .unwrap_or(i64::MAX / 2),
            max_attempts: i32::try_from(config.notify_max_attempts).unwrap_or(i32::MAX),
            retry_base_ms: i64::try_from(config.notify_retry_base_ms).unwrap_or(1_000),
            public_url: config
                .public_url
                .as_deref()
                .map(|u| u.trim_end_matches('/').to_string()),
        })
    }
}

/// The notification for `event` about `job`.
pub fn build(
    settings: &Settings,
    id: String,
    event: EventType,
    status: JobStatus,
    at: DateTime<Utc>,
    job: &Job,
    votes: &[VoteRecord],
) -> Notification {
    let url = settings.public_url.as_ref().map(|base| {
        if event.asks_for_a_vote() {
            format!("{base}/approvals/{}", job.job_id)
        } else {
            format!("{base}/jobs/{}", job.job_id)
        }
    });
    Notification {
        id,
        event,
        occurred_at: at,
        job: JobSummary::from(job),
        status: status.as_str().to_string(),
        required_capabilities: job.requested_capabilities.clone(),
        policy_hash: job.policy_hash.clone(),
        args: settings
            .include_args
            .then(|| serde_json::from_str(&job.params).unwrap_or(serde_json::Value::Null)),
        args_redacted: !settings.include_args,
        votes: votes
            .iter()
            .map(|v| NotifiedVote {
                approver: v.approver.clone(),
                verdict: v.verdict.as_str().to_string(),
                reason: v.reason.clone(),
                at: v.created_at,
            })
            .collect(),
        error: if settings.include_args && event == EventType::Failed {
            job.error
                .as_deref()
                .map(|e| e.chars().take(MAX_ERROR_CHARS).collect())
        } else {
            None
        },
        url,
    }
}

/// One outbox row to add.
struct Outgoing {
    key: String,
    sink: &'static str,
    /// Shared by the rows of every sink of one event.
    notification: Arc<Notification>,
    payload: Arc<str>,
}

/// Store `messages` (skipping keys already there) and, when given, move the cursor, in one
/// transaction.
async fn enqueue(
    store: &AnyStore,
    messages: &[Outgoing],
    cursor_to: Option<i64>,
) -> Result<(), StoreError> {
    let rows: Vec<NewOutboxMessage<'_>> = messages
        .iter()
        .map(|m| NewOutboxMessage {
            key: &m.key,
            sink: m.sink,
            event_id: &m.notification.id,
            event_type: m.notification.event.as_str(),
            job_id: &m.notification.job.job_id,
            payload: &m.payload,
        })
        .collect();
    store
        .enqueue(&rows, cursor_to.map(|p| (CURSOR, p)), now_ms())
        .await
}

/// The outbox rows for one notification: one per sink that wants it.
fn outgoing(
    settings: &Settings,
    notification: Notification,
) -> Result<Vec<Outgoing>, IntegrationError> {
    let payload: Arc<str> = serde_json::to_string(&notification)
        .map_err(|e| e.to_string())?
        .into();
    let notification = Arc::new(notification);
    Ok(settings
        .sinks
        .iter()
        .filter(|sink| sink.wants(&notification))
        .map(|sink| Outgoing {
            key: format!("{}/{}", notification.id, sink.name()),
            sink: sink.name(),
            notification: Arc::clone(&notification),
            payload: Arc::clone(&payload),
        })
        .collect())
}

/// Turns job changes into outbox rows.
pub struct Notifier {
    pub core: Arc<Core>,
    pub settings: Arc<Settings>,
}

impl Notifier {
    /// One pass over new transitions: returns how many were read (0: caught up).
    pub async fn pump(&self) -> Result<usize, IntegrationError> {
        let store = &self.core.store;
        let after = cursor(store, CURSOR)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or(0);
        let rows = store
            .transitions_after(after, BATCH)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = rows.last().map(|r| r.0) else {
            return Ok(0);
        };
        let mut messages = Vec::new();
        for (id, job_id, status, at_ms) in &rows {
            let Some(status) = JobStatus::parse(status) else {
                continue;
            };
            let Some(event) = EventType::for_status(status) else {
                continue;
            };
            if !self.settings.events.contains(&event) {
                continue;
            }
            let job = match self.core.store.job(job_id).await {
                Ok(job) => job,
                Err(crate::store::StoreError::NotFound) => continue,
                Err(error) => return Err(error.to_string().into()),
            };
            let votes = self
                .core
                .store
                .votes(job_id)
                .await
                .map_err(|e| e.to_string())?;
            let at = DateTime::from_timestamp_millis(*at_ms).unwrap_or_else(Utc::now);
            let notification = build(
                &self.settings,
                format!("transition-{id}"),
                event,
                status,
                at,
                &job,
                &votes,
            );
            messages.extend(outgoing(&self.settings, notification)?);
        }
        enqueue(store, &messages, Some(last))
            .await
            .map_err(|e| e.to_string())?;
        Ok(rows.len())
    }

    /// Warn about queued jobs that expire within the warning time (once per job).
    pub async fn expiring(&self) -> Result<usize, IntegrationError> {
        if !self.settings.events.contains(&EventType::Expiring) {
            return Ok(0);
        }
        let now = Utc::now();
        let horizon = now + chrono::Duration::seconds(self.settings.expiry_warning_secs);
        let jobs = self
            .core
            .store
            .pending_jobs(1_000)
            .await
            .map_err(|e| e.to_string())?;
        let mut messages = Vec::new();
        for job in jobs {
            let Some(expires) = job.expires_at else {
                continue;
            };
            if job.status != JobStatus::Queued || expires <= now || expires > horizon {
                continue;
            }
            let id = format!("expiring-{}", job.job_id);
            // Warned at an earlier scan: nothing to read or write again.
            if self.queued_before(&id).await.map_err(|e| e.to_string())? {
                continue;
            }
            let votes = self
                .core
                .store
                .votes(&job.job_id)
                .await
                .map_err(|e| e.to_string())?;
            let notification = build(
                &self.settings,
                id,
                EventType::Expiring,
                JobStatus::Queued,
                now,
                &job,
                &votes,
            );
            messages.extend(outgoing(&self.settings, notification)?);
        }
        let count = messages.len();
        if count > 0 {
            enqueue(&self.core.store, &messages, None)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(count)
    }

    /// Whether the event `id` is already in the outbox for one of the sinks (by its unique key).
    async fn queued_before(&self, id: &str) -> Result<bool, StoreError> {
        for sink in &self.settings.sinks {
            let key = format!("{id}/{}", sink.name());
            if self.core.store.outbox_has(&key).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The pause before retry number `attempts` (after that many failures).
pub fn retry_delay_ms(base_ms: i64, attempts: i32) -> i64 {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    base_ms.saturating_mul(1_i64 << exponent).min(MAX_RETRY_MS)
}

/// Record how one attempt went.
async fn record(
    store: &AnyStore,
    row: &OutboxRow,
    result: &Result<(), Failure>,
    settings: &Settings,
) -> Result<(), StoreError> {
    let now = now_ms();
    let attempts = row.attempts.saturating_add(1);
    let attempt = match result {
        Ok(()) => Attempt::Delivered,
        Err(failure) => Attempt::Failed {
            dead: failure.permanent || attempts >= settings.max_attempts,
            next_attempt_ms: now + retry_delay_ms(settings.retry_base_ms, attempts),
            error: failure.message.chars().take(MAX_ERROR_CHARS).collect(),
        },
    };
    store.record_attempt(row.id, attempts, &attempt, now).await
}

/// Sends one sink's messages, oldest first.
struct Deliverer {
    store: AnyStore,
    sink: Arc<Sink>,
    settings: Arc<Settings>,
    http: reqwest::Client,
    lease: Lease,
    wake: Arc<tokio::sync::Notify>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Deliverer {
    async fn run(self) {
        loop {
            let pause = self.step().await;
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// Deliver what is due; how long to wait before looking again.
    async fn step(&self) -> Duration {
        if !self.lease.hold().await {
            return POLL * 4;
        }
        // A bounded burst per step, so the lease is renewed regularly.
        for _ in 0..100 {
            let row = match self.store.outbox_head(self.sink.name()).await {
                Ok(Some(row)) => row,
                Ok(None) => return POLL,
                Err(error) => {
                    tracing::warn!(%error, sink = self.sink.name(), "outbox unavailable");
                    return POLL * 4;
                }
            };
            let wait = row.next_attempt_ms - now_ms();
            if wait > 0 {
                return Duration::from_millis(u64::try_from(wait).unwrap_or(0)).min(POLL * 4);
            }
            let result = match serde_json::from_str::<Notification>(&row.payload) {
                Ok(notification) => {
                    self.sink
                        .send(&self.http, &row.idempotency_key, &notification)
                        .await
                }
                Err(error) => Err(Failure::permanent(format!("unreadable message: {error}"))),
            };
            match &result {
                Ok(()) => self.metrics.notification_sent(self.sink.name(), true),
                Err(failure) => {
                    self.metrics.notification_sent(self.sink.name(), false);
                    tracing::warn!(
                        sink = self.sink.name(),
                        key = %row.idempotency_key,
                        attempt = row.attempts + 1,
                        error = %failure.message,
                        "notification not delivered"
                    );
                }
            }
            if let Err(error) = record(&self.store, &row, &result, &self.settings).await {
                tracing::warn!(%error, "could not record a delivery attempt");
                return POLL * 4;
            }
            if result.is_err() {
                return POLL;
            }
        }
        Duration::ZERO
    }
}

/// On the first start with a sink, the notifier begins at the newest job change: it announces
/// what changes from then on, not the history. (Before the server takes requests.)
async fn init_cursor(store: &AnyStore) -> Result<(), IntegrationError> {
    if cursor(store, CURSOR)
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Ok(());
    }
    let last = store.last_transition().await.map_err(|e| e.to_string())?;
    super::set_cursor(store, CURSOR, last.unwrap_or(0))
        .await
        .map_err(|e| e.to_string().into())
}

/// Start the notifier and one deliverer per sink (nothing without sinks).
pub async fn start(core: &Arc<Core>, config: &Config, owner: &str) -> Result<(), IntegrationError> {
    let settings = Arc::new(Settings::from_config(config)?);
    if settings.sinks.is_empty() {
        return Ok(());
    }
    init_cursor(&core.store)
        .await
        .map_err(|e| format!("notifications: {e}"))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("notifications: HTTP client: {e}"))?;
    let wake = Arc::new(tokio::sync::Notify::new());
    for sink in &settings.sinks {
        let deliverer = Deliverer {
            store: core.store.clone(),
            sink: sink.clone(),
            settings: settings.clone(),
            http: http.clone(),
            lease: Lease::new(&core.store, &format!("notify:{}", sink.name()), owner),
            wake: wake.clone(),
            metrics: core.metrics.clone(),
        };
        tokio::spawn(deliverer.run());
    }
    let notifier = Notifier {
        core: core.clone(),
        settings: settings.clone(),
    };
    let lease = Lease::new(&core.store, "notify:outbox", owner);
    let mut changes = core.job_events.subscribe();
    tracing::info!(
        sinks = %settings.sinks.iter().map(|s| s.name()).collect::<Vec<_>>().join(","),
        "notifications on"
    );
    tokio::spawn(async move {
        let mut last_scan: Option<tokio::time::Instant> = None;
        loop {
            if lease.hold().await {
                loop {
                    match notifier.pump().await {
                        Ok(0) => break,
                        Ok(_) => wake.notify_waiters(),
                        Err(error) => {
                            tracing::warn!(%error, "notifier: pass failed; retrying");
                            break;
                        }
                    }
                }
                if last_scan.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
                    last_scan = Some(tokio::time::Instant::now());
                    match notifier.expiring().await {
                        Ok(0) => {}
                        Ok(_) => wake.notify_waiters(),
                        Err(error) => tracing::warn!(%error, "notifier: expiry scan failed"),
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = changes.recv() => {}
            }
        }
    });
    Ok(())
}

/// How long delivered messages and read job transitions are kept.
const KEEP_DELIVERED_MS: i64 = 30 * 86_400_000;
const KEEP_TRANSITIONS_MS: i64 = 7 * 86_400_000;

/// Forget delivered messages after 30 days and job transitions after 7 (maintenance runs it,
/// with or without sinks); dead letters stay until retried. Returns the rows deleted.
pub async fn purge_old(store: &AnyStore) -> Result<u64, StoreError> {
    let now = now_ms();
    store
        .purge_integrations(now - KEEP_DELIVERED_MS, now - KEEP_TRANSITIONS_MS)
        .await
}

/// Counts of messages per sink and status, for the dashboard and `/metrics`.
pub async fn outbox_counts(store: &AnyStore) -> Result<Vec<(String, String, i64)>, StoreError> {
    store.outbox_counts().await
}

/// The newest dead letters, at most `limit`.
pub async fn dead_letters(store: &AnyStore, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
    store.dead_letters(limit).await
}

/// Put a dead letter back in the queue, due now; the row when there was one with that id.
pub async fn retry(store: &AnyStore, id: i64) -> Result<Option<OutboxRow>, StoreError> {
    store.retry_dead_letter(id, now_ms()).await
}
