//! `Idempotency-Key`: a client that retries a decision request with the same key gets the first
//! answer again instead of a second decision (and a second job). The first request with a key
//! claims it (a row with no answer yet); a retry while it is in flight gets 409, a retry after
//! it gets the stored answer, and the same key with a different body gets 422. A request that
//! fails releases its key so that the retry can succeed. Keys are kept for [`KEEP_SECS`].

use crate::store::{IdempotencyStore, StoreError};

pub use crate::store::Claim;

/// How long answers are kept for replay.
pub const KEEP_SECS: i64 = 24 * 3_600;

/// Longest accepted key.
pub const MAX_KEY_LEN: usize = 255;

/// A key must be 1..=255 visible ASCII characters.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Claim `key` for `caller`'s request with hash `request_hash`.
pub async fn claim(
    store: &impl IdempotencyStore,
    caller: &str,
    key: &str,
    request_hash: &str,
) -> Result<Claim, StoreError> {
    let now = chrono::Utc::now().timestamp();
    store.claim_key(caller, key, request_hash, now).await
}

/// Store the answer to a claimed key.
pub async fn complete(
    store: &impl IdempotencyStore,
    caller: &str,
    key: &str,
    response: &str,
) -> Result<(), StoreError> {
    store.complete_key(caller, key, response).await
}

/// Give a claimed key back after a failure, so a retry is answered afresh.
pub async fn release(store: &impl IdempotencyStore, caller: &str, key: &str) {
    if let Err(error) = store.release_key(caller, key).await {
        tracing::error!(%error, "could not release an idempotency key");
    }
}

/// Forget answers older than [`KEEP_SECS`] (run by maintenance).
pub async fn purge_old(store: &impl IdempotencyStore) -> Result<u64, StoreError> {
    store
        .purge_keys(chrono::Utc::now().timestamp() - KEEP_SECS)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_short_visible_ascii() {
        assert!(valid_key("retry-7f3a"));
        assert!(!valid_key(""));
        assert!(!valid_key("with space"));
        assert!(!valid_key(&"k".repeat(256)));
        assert!(!valid_key("naïve"));
    }
}
