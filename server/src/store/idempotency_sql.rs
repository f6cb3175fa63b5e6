// The idempotency keys' SQL, shared by both databases (included by `sqlite.rs` and
// `postgres.rs` like `dialect.rs`).

impl super::idempotency::IdempotencyStore for DialectStore {
    async fn claim_key(
        &self,
        caller: &str,
        key: &str,
        request_hash: &str,
        now_unix: i64,
    ) -> Result<super::idempotency::Claim, StoreError> {
        use super::idempotency::Claim;
        let mut tx = self.write().await?;
        let inserted = sqlx::query(
            "INSERT INTO api_idempotency \
             (caller_id, idempotency_key, request_hash, response, created_unix) \
             VALUES ($1, $2, $3, NULL, $4) ON CONFLICT (caller_id, idempotency_key) DO NOTHING",
        )
        .bind(caller)
        .bind(key)
        .bind(request_hash)
        .bind(now_unix)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        if inserted == 1 {
            return Ok(Claim::Fresh);
        }
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT request_hash, response FROM api_idempotency \
             WHERE caller_id = $1 AND idempotency_key = $2",
        )
        .bind(caller)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            // Released between the insert and this read: the caller may simply retry.
            None => Claim::InFlight,
            Some((hash, _)) if hash != request_hash => Claim::Mismatch,
            Some((_, Some(response))) => Claim::Replay(response),
            Some((_, None)) => Claim::InFlight,
        })
    }

    async fn complete_key(&self, caller: &str, key: &str, response: &str) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        sqlx::query(
            "UPDATE api_idempotency SET response = $1 \
             WHERE caller_id = $2 AND idempotency_key = $3",
        )
        .bind(response)
        .bind(caller)
        .bind(key)
        .execute(&mut *tx)
        .await?;
        Ok(tx.commit().await?)
    }

    async fn release_key(&self, caller: &str, key: &str) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        sqlx::query(
            "DELETE FROM api_idempotency \
             WHERE caller_id = $1 AND idempotency_key = $2 AND response IS NULL",
        )
        .bind(caller)
        .bind(key)
        .execute(&mut *tx)
        .await?;
        Ok(tx.commit().await?)
    }

    async fn purge_keys(&self, cutoff_unix: i64) -> Result<u64, StoreError> {
        let mut tx = self.write().await?;
        let deleted = sqlx::query("DELETE FROM api_idempotency WHERE created_unix < $1")
            .bind(cutoff_unix)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }
}
