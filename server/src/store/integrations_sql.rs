// The integrations' SQL, shared by both databases (included by `sqlite.rs` and `postgres.rs`
// like `dialect.rs`). Every write is a transaction from `write()`: on SQLite, the writer.

impl super::integrations::IntegrationStore for DialectStore {
    async fn hold_lease(
        &self,
        name: &str,
        owner: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let rows = sqlx::query(
            "INSERT INTO integration_leases (name, owner, expires_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms \
             WHERE integration_leases.owner = excluded.owner OR integration_leases.expires_ms < $4",
        )
        .bind(name)
        .bind(owner)
        .bind(expires_ms)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(rows == 1)
    }

    async fn cursor(&self, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT position FROM integration_cursors WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn set_cursor(&self, name: &str, position: i64, now_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        set_cursor_in(&mut tx, name, position, now_ms).await?;
        Ok(tx.commit().await?)
    }

    async fn transitions_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<super::integrations::TransitionRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, job_id, status, at_ms FROM job_transitions WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn last_transition(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar("SELECT MAX(id) FROM job_transitions")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn enqueue(
        &self,
        messages: &[super::integrations::NewOutboxMessage<'_>],
        cursor_to: Option<(&str, i64)>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        for m in messages {
            sqlx::query(
                "INSERT INTO notification_outbox (idempotency_key, sink, event_id, event_type, job_id, payload, \
                 status, attempts, next_attempt_ms, created_ms) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7) \
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )
            .bind(m.key)
            .bind(m.sink)
            .bind(m.event_id)
            .bind(m.event_type)
            .bind(m.job_id)
            .bind(m.payload)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        if let Some((name, position)) = cursor_to {
            set_cursor_in(&mut tx, name, position, now_ms).await?;
        }
        Ok(tx.commit().await?)
    }

    async fn outbox_has(&self, key: &str) -> Result<bool, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM notification_outbox WHERE idempotency_key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    async fn outbox_head(
        &self,
        sink: &str,
    ) -> Result<Option<super::integrations::OutboxRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM notification_outbox WHERE sink = $1 AND status = 'pending' \
             ORDER BY id LIMIT 1",
            super::integrations::OUTBOX_COLUMNS
        );
        Ok(sqlx::query_as(&sql)
            .bind(sink)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn record_attempt(
        &self,
        id: i64,
        attempts: i32,
        attempt: &super::integrations::Attempt,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        use super::integrations::Attempt;
        let mut tx = self.write().await?;
        match attempt {
            Attempt::Delivered => {
                sqlx::query(
                    "UPDATE notification_outbox SET status = 'delivered', attempts = $1, delivered_ms = $2, \
                     last_error = NULL WHERE id = $3 AND status = 'pending'",
                )
                .bind(attempts)
                .bind(now_ms)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            Attempt::Failed {
                dead,
                next_attempt_ms,
                error,
            } => {
                sqlx::query(
                    "UPDATE notification_outbox SET status = $1, attempts = $2, next_attempt_ms = $3, \
                     last_error = $4 WHERE id = $5 AND status = 'pending'",
                )
                .bind(if *dead { "dead" } else { "pending" })
                .bind(attempts)
                .bind(next_attempt_ms)
                .bind(error)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
        }
        Ok(tx.commit().await?)
    }

    async fn purge_integrations(
        &self,
        delivered_before_ms: i64,
        transitions_before_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.write().await?;
        let delivered = sqlx::query(
            "DELETE FROM notification_outbox WHERE status = 'delivered' AND delivered_ms < $1",
        )
        .bind(delivered_before_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let transitions = sqlx::query("DELETE FROM job_transitions WHERE at_ms < $1")
            .bind(transitions_before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(delivered + transitions)
    }

    async fn outbox_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT sink, status, COUNT(*) FROM notification_outbox \
             GROUP BY sink, status ORDER BY sink, status",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn dead_letters(
        &self,
        limit: i64,
    ) -> Result<Vec<super::integrations::OutboxRow>, StoreError> {
        let sql = format!(
            "SELECT {} FROM notification_outbox WHERE status = 'dead' ORDER BY id DESC LIMIT $1",
            super::integrations::OUTBOX_COLUMNS
        );
        Ok(sqlx::query_as(&sql).bind(limit).fetch_all(&self.pool).await?)
    }

    async fn retry_dead_letter(
        &self,
        id: i64,
        now_ms: i64,
    ) -> Result<Option<super::integrations::OutboxRow>, StoreError> {
        let sql = format!(
            "UPDATE notification_outbox SET status = 'pending', attempts = 0, next_attempt_ms = $1 \
             WHERE id = $2 AND status = 'dead' RETURNING {}",
            super::integrations::OUTBOX_COLUMNS
        );
        let mut tx = self.write().await?;
        let row = sqlx::query_as(&sql)
            .bind(now_ms)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row)
    }
}

async fn set_cursor_in(
    tx: &mut Transaction<'static, Db>,
    name: &str,
    position: i64,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO integration_cursors (name, position, updated_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_ms = excluded.updated_ms",
    )
    .bind(name)
    .bind(position)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
