//! What the integrations keep: worker leases (`integration_leases`), reader cursors
//! (`integration_cursors`), the job changes they read (`job_transitions`) and the notification
//! outbox (`notification_outbox`). Times are Unix milliseconds, as the integrations count them.

use super::StoreError;
use std::future::Future;

/// One job status change, as the notifier reads them: (id, job id, status, Unix ms).
pub type TransitionRow = (i64, String, String, i64);

/// A message waiting in the outbox.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub idempotency_key: String,
    pub sink: String,
    pub event_type: String,
    pub job_id: Option<String>,
    pub payload: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    pub created_ms: i64,
}

/// A message to put in the outbox (skipped when its key is there already).
#[derive(Debug, Clone)]
pub struct NewOutboxMessage<'a> {
    pub key: &'a str,
    pub sink: &'a str,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub job_id: &'a str,
    pub payload: &'a str,
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// Failed: `dead` when no retry follows; otherwise retried at `next_attempt_ms`.
    Failed {
        dead: bool,
        next_attempt_ms: i64,
        error: String,
    },
}

pub trait IntegrationStore: Send + Sync {
    /// Take or renew the lease `name` for `owner` until `expires_ms`: taken when free, lapsed
    /// (before `now_ms`) or already `owner`'s. Whether `owner` holds it now.
    fn hold_lease(
        &self,
        name: &str,
        owner: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Where the reader `name` has got to, if it has started.
    fn cursor(&self, name: &str) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;
    /// Move the reader `name` to `position`.
    fn set_cursor(
        &self,
        name: &str,
        position: i64,
        now_ms: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Job changes after `after`, oldest first, at most `limit`.
    fn transitions_after(
        &self,
        after: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<TransitionRow>, StoreError>> + Send;
    /// The newest job change's id.
    fn last_transition(&self) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;
    /// Store `messages` and, when given, move a cursor, in one transaction.
    fn enqueue(
        &self,
        messages: &[NewOutboxMessage<'_>],
        cursor_to: Option<(&str, i64)>,
        now_ms: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Whether a message with this key is in the outbox.
    fn outbox_has(&self, key: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// The oldest pending message of `sink`.
    fn outbox_head(
        &self,
        sink: &str,
    ) -> impl Future<Output = Result<Option<OutboxRow>, StoreError>> + Send;
    /// Record attempt number `attempts` of the pending message `id`.
    fn record_attempt(
        &self,
        id: i64,
        attempts: i32,
        attempt: &Attempt,
        now_ms: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Forget messages delivered before `delivered_before_ms` and job changes before
    /// `transitions_before_ms`; how many rows went.
    fn purge_integrations(
        &self,
        delivered_before_ms: i64,
        transitions_before_ms: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Messages per (sink, status).
    fn outbox_counts(
        &self,
    ) -> impl Future<Output = Result<Vec<(String, String, i64)>, StoreError>> + Send;
    /// The newest dead letters, at most `limit`.
    fn dead_letters(
        &self,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<OutboxRow>, StoreError>> + Send;
    /// Put a dead letter back in the queue, due at `now_ms`; the row when there was one.
    fn retry_dead_letter(
        &self,
        id: i64,
        now_ms: i64,
    ) -> impl Future<Output = Result<Option<OutboxRow>, StoreError>> + Send;
}

pub(crate) const OUTBOX_COLUMNS: &str =
    "id, idempotency_key, sink, event_type, job_id, payload, status, attempts, \
     next_attempt_ms, last_error, created_ms";
