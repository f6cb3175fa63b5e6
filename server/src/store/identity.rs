//! Local accounts (`users`) and API tokens (`api_tokens`): the store's half. Hashing,
//! validation, throttling and caching are the identity service's. Times are Unix seconds;
//! role and capability lists are JSON text.

use super::StoreError;
use std::future::Future;

/// An account as stored, without its password hash.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserRow {
    pub username: String,
    pub display_name: String,
    pub roles: String,
    pub capabilities: String,
    pub disabled: bool,
}

/// What a password check reads.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Credentials {
    pub password_hash: String,
    pub disabled: bool,
    pub failed_attempts: i32,
    pub locked_until: Option<i64>,
}

/// A new account.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    pub username: &'a str,
    pub password_hash: &'a str,
    pub roles: &'a str,
    pub capabilities: &'a str,
    pub created_at: i64,
}

/// An API token as stored (the secret only as its SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub roles: String,
    pub capabilities: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

pub trait IdentityStore: Send + Sync {
    fn count_users(&self) -> impl Future<Output = Result<i64, StoreError>> + Send;
    /// Add an account; [`StoreError::Duplicate`] when the name is taken.
    fn insert_user(
        &self,
        user: &NewUser<'_>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn user(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<Option<UserRow>, StoreError>> + Send;
    fn credentials(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<Option<Credentials>, StoreError>> + Send;
    /// Set a password hash and clear failures and locks; whether the account exists.
    fn set_password_hash(
        &self,
        username: &str,
        hash: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Whether the account exists.
    fn set_disabled(
        &self,
        username: &str,
        disabled: bool,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Record failed sign-ins in a row and the lock they earned (0 and `None` clear them).
    fn set_failures(
        &self,
        username: &str,
        failures: i32,
        locked_until: Option<i64>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Add a token; [`StoreError::Duplicate`] when the name is taken.
    fn insert_token(
        &self,
        token: &TokenRow,
        secret_sha256: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Every token, by name.
    fn tokens(&self) -> impl Future<Output = Result<Vec<TokenRow>, StoreError>> + Send;
    /// A token and its secret's SHA-256, by id.
    fn token_with_secret(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<(TokenRow, String)>, StoreError>> + Send;
    /// Revoke the live token `name` at `at`; whether there was one.
    fn revoke_token(
        &self,
        name: &str,
        at: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Record that the token `id` was used at `at`.
    fn token_used(&self, id: &str, at: i64) -> impl Future<Output = Result<(), StoreError>> + Send;
}
