// Accounts' and API tokens' SQL, shared by both databases (included by `sqlite.rs` and
// `postgres.rs` like `dialect.rs`). Every write is a transaction from `write()`: on SQLite, the
// writer.

/// A unique constraint refused the row: the name is taken.
fn duplicate_or(error: sqlx::Error, what: &str) -> StoreError {
    match &error {
        sqlx::Error::Database(e) if e.is_unique_violation() => {
            StoreError::Duplicate(what.to_string())
        }
        _ => StoreError::Database(error),
    }
}

/// Run one statement in a write transaction; the rows it changed.
async fn write_one<'q>(
    tx: &mut Transaction<'static, Db>,
    query: sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments<'q>>,
) -> Result<u64, sqlx::Error> {
    Ok(query.execute(&mut **tx).await?.rows_affected())
}

impl super::identity::IdentityStore for DialectStore {
    async fn count_users(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn insert_user(&self, user: &super::identity::NewUser<'_>) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let query = sqlx::query(
            "INSERT INTO users (username, password_hash, display_name, roles, capabilities, \
             disabled, failed_attempts, created_at) VALUES ($1, $2, $1, $3, $4, FALSE, 0, $5)",
        )
        .bind(user.username)
        .bind(user.password_hash)
        .bind(user.roles)
        .bind(user.capabilities)
        .bind(user.created_at);
        write_one(&mut tx, query)
            .await
            .map_err(|e| duplicate_or(e, user.username))?;
        Ok(tx.commit().await?)
    }

    async fn user(&self, username: &str) -> Result<Option<super::identity::UserRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT username, display_name, roles, capabilities, disabled FROM users \
             WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn credentials(
        &self,
        username: &str,
    ) -> Result<Option<super::identity::Credentials>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT password_hash, disabled, failed_attempts, locked_until FROM users \
             WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn set_password_hash(&self, username: &str, hash: &str) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let query = sqlx::query(
            "UPDATE users SET password_hash = $1, failed_attempts = 0, locked_until = NULL \
             WHERE username = $2",
        )
        .bind(hash)
        .bind(username);
        let changed = write_one(&mut tx, query).await?;
        tx.commit().await?;
        Ok(changed > 0)
    }

    async fn set_disabled(&self, username: &str, disabled: bool) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let query = sqlx::query("UPDATE users SET disabled = $1 WHERE username = $2")
            .bind(disabled)
            .bind(username);
        let changed = write_one(&mut tx, query).await?;
        tx.commit().await?;
        Ok(changed > 0)
    }

    async fn set_failures(
        &self,
        username: &str,
        failures: i32,
        locked_until: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let query = sqlx::query(
            "UPDATE users SET failed_attempts = $1, locked_until = $2 WHERE username = $3",
        )
        .bind(failures)
        .bind(locked_until)
        .bind(username);
        write_one(&mut tx, query).await?;
        Ok(tx.commit().await?)
    }

    async fn insert_token(
        &self,
        token: &super::identity::TokenRow,
        secret_sha256: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let query = sqlx::query(
            "INSERT INTO api_tokens (id, name, secret_sha256, roles, capabilities, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&token.id)
        .bind(&token.name)
        .bind(secret_sha256)
        .bind(&token.roles)
        .bind(&token.capabilities)
        .bind(token.created_at);
        write_one(&mut tx, query)
            .await
            .map_err(|e| duplicate_or(e, &token.name))?;
        Ok(tx.commit().await?)
    }

    async fn tokens(&self) -> Result<Vec<super::identity::TokenRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, name, roles, capabilities, created_at, revoked_at, last_used_at \
             FROM api_tokens ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn token_with_secret(
        &self,
        id: &str,
    ) -> Result<Option<(super::identity::TokenRow, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, roles, capabilities, created_at, revoked_at, last_used_at, \
             secret_sha256 FROM api_tokens WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let token = <super::identity::TokenRow as sqlx::FromRow<DbRow>>::from_row(&row)?;
        Ok(Some((token, row.try_get("secret_sha256")?)))
    }

    async fn revoke_token(&self, name: &str, at: i64) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let query = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(name);
        let changed = write_one(&mut tx, query).await?;
        tx.commit().await?;
        Ok(changed > 0)
    }

    async fn token_used(&self, id: &str, at: i64) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let query = sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id);
        write_one(&mut tx, query).await?;
        Ok(tx.commit().await?)
    }
}
