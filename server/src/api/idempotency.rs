//! `Idempotency-Key`: a client that retries a decision request with the same key gets the first
//! answer again instead of a second decision (and a second job). The first request with a key
//! claims it (a row with no answer yet); a retry while it is in flight gets 409, a retry after
//! it gets the stored answer, and the same key with a different body gets 422. A request that
//! fails releases its key so that the retry can succeed. Keys are kept for [`KEEP_SECS`].

use crate::store::Database;

/// How long answers are kept for replay.
pub const KEEP_SECS: i64 = 24 * 3_600;

/// Longest accepted key.
pub const MAX_KEY_LEN: usize = 255;

/// What a key means for a new request.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key is new: answer the request, then [`complete`] (or [`release`] on failure).
    Fresh,
    /// The same request was answered before: this is the answer.
    Replay(String),
    /// The same key is being answered right now.
    InFlight,
    /// The key was used for a different request.
    Mismatch,
}

/// A key must be 1..=255 visible ASCII characters.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Claim `key` for `caller`'s request with hash `request_hash`.
pub async fn claim(
    db: &Database,
    caller: &str,
    key: &str,
    request_hash: &str,
) -> Result<Claim, sqlx::Error> {
    let now = chrono::Utc::now().timestamp();
    let inserted = on_db!(db, pool => sqlx::query(
        "INSERT INTO api_idempotency (caller_id, idempotency_key, request_hash, response, created_unix) \
         VALUES ($1, $2, $3, NULL, $4) ON CONFLICT (caller_id, idempotency_key) DO NOTHING",
    )
    .bind(caller)
    .bind(key)
    .bind(request_hash)
    .bind(now)
    .execute(pool)
    .await?
    .rows_affected());
    if inserted == 1 {
        return Ok(Claim::Fresh);
    }
    let row: Option<(String, Option<String>, i64)> = on_db!(db, pool => sqlx::query_as(
        "SELECT request_hash, response, created_unix FROM api_idempotency \
         WHERE caller_id = $1 AND idempotency_key = $2",
    )
    .bind(caller)
    .bind(key)
    .fetch_optional(pool)
    .await?);
    Ok(match row {
        // Released between our insert and this read: the caller may simply retry.
        None => Claim::InFlight,
        Some((hash, _, _)) if hash != request_hash => Claim::Mismatch,
        Some((_, Some(response), _)) => Claim::Replay(response),
        Some((_, None, _)) => Claim::InFlight,
    })
}

/// Store the answer to a claimed key.
pub async fn complete(
    db: &Database,
    caller: &str,
    key: &str,
    response: &str,
) -> Result<(), sqlx::Error> {
    on_db!(db, pool => sqlx::query(
        "UPDATE api_idempotency SET response = $1 WHERE caller_id = $2 AND idempotency_key = $3",
    )
    .bind(response)
    .bind(caller)
    .bind(key)
    .execute(pool)
    .await
    .map(|_| ()))
}

/// Give a claimed key back after a failure, so a retry is answered afresh.
pub async fn release(db: &Database, caller: &str, key: &str) {
    let result = on_db!(db, pool => sqlx::query(
        "DELETE FROM api_idempotency WHERE caller_id = $1 AND idempotency_key = $2 AND response IS NULL",
    )
        .bind(caller)
    .bind(key)
    .execute(pool)
    .await
    .map(|_| ()));
    if let Err(error) = result {
        tracing::error!(%error, "could not release an idempotency key");
    }
}

/// Forget answers older than [`KEEP_SECS`] (run by maintenance).
pub async fn purge_old(db: &Database) -> Result<u64, sqlx::Error> {
    let cutoff = chrono::Utc::now().timestamp() - KEEP_SECS;
    Ok(
        on_db!(db, pool => sqlx::query("DELETE FROM api_idempotency WHERE created_unix < $1")
        .bind(cutoff)
        .execute(pool)
        .await?
        .rows_affected()),
    )
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
