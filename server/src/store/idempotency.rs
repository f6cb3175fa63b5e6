//! Answers kept for `Idempotency-Key` retries (`api_idempotency`): the store's half. The rules
//! (which keys are valid, when to claim, complete or release) are the decisions service's.

use super::StoreError;
use std::future::Future;

/// What a key means for a new request.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key is new: answer the request, then complete it (or release it on failure).
    Fresh,
    /// The same request was answered before: this is the answer.
    Replay(String),
    /// The same key is being answered right now.
    InFlight,
    /// The key was used for a different request.
    Mismatch,
}

/// Idempotency keys per caller. On SQLite every write goes through the store's writer.
pub trait IdempotencyStore: Send + Sync {
    /// Claim `key` for `caller`'s request with hash `request_hash`, at `now_unix`.
    fn claim_key(
        &self,
        caller: &str,
        key: &str,
        request_hash: &str,
        now_unix: i64,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;
    /// Store the answer to a claimed key.
    fn complete_key(
        &self,
        caller: &str,
        key: &str,
        response: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Give back a claimed key that has no answer yet.
    fn release_key(
        &self,
        caller: &str,
        key: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Forget keys created before `cutoff_unix`; returns how many.
    fn purge_keys(&self, cutoff_unix: i64) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
