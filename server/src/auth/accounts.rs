//! Local accounts (the embedded default): argon2id password hashes, roles and capabilities,
//! disabling, and per-account throttling of failed sign-ins.

use crate::Database;
use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use serde::{Deserialize, Serialize};

/// The portal roles.
pub const ROLES: [&str; 4] = ["viewer", "approver", "auditor", "admin"];

/// Failures before an account is locked for a while, and the longest lock.
const FREE_FAILURES: i32 = 5;
const MAX_LOCK_SECS: i64 = 15 * 60;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub username: String,
    pub display_name: String,
    pub roles: Vec<String>,
    pub capabilities: Vec<String>,
    pub disabled: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("unknown user or wrong password")]
    BadCredentials,
    #[error("too many failed sign-ins; try again in {0} s")]
    Locked(i64),
    #[error("the account is disabled")]
    Disabled,
    #[error("{0}")]
    Invalid(String),
    #[error("no such user `{0}`")]
    NoSuchUser(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

pub fn hash_password(password: &str) -> Result<String, AccountError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Invalid(format!("cannot hash the password: {e}")))
}

fn check_password(password: &str) -> Result<(), AccountError> {
    if password.chars().count() < 12 {
        return Err(AccountError::Invalid(
            "a password needs at least 12 characters".into(),
        ));
    }
    Ok(())
}

fn check_name(username: &str) -> Result<(), AccountError> {
    let ok = !username.is_empty()
        && username.len() <= 64
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'));
    if ok {
        Ok(())
    } else {
        Err(AccountError::Invalid(
            "user names are 1–64 letters, digits, '.', '-', '_' or '@'".into(),
        ))
    }
}

fn check_roles(roles: &[String], capabilities: &[String]) -> Result<(), AccountError> {
    if let Some(bad) = roles.iter().find(|r| !ROLES.contains(&r.as_str())) {
        return Err(AccountError::Invalid(format!(
            "unknown role `{bad}` (use {})",
            ROLES.join(", ")
        )));
    }
    if let Some(bad) = capabilities
        .iter()
        .find(|c| c.is_empty() || c.contains(char::is_whitespace))
    {
        return Err(AccountError::Invalid(format!(
            "`{bad}` is not a capability name"
        )));
    }
    Ok(())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn json(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

pub async fn count(db: &Database) -> Result<i64, AccountError> {
    Ok(on_db!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(pool).await?))
}

pub async fn add(
    db: &Database,
    username: &str,
    password: &str,
    roles: &[String],
    capabilities: &[String],
) -> Result<Account, AccountError> {
    check_name(username)?;
    check_password(password)?;
    check_roles(roles, capabilities)?;
    let hash = hash_password(password)?;
    let insert = on_db!(db, pool => sqlx::query(
        "INSERT INTO users (username, password_hash, display_name, roles, capabilities, disabled, failed_attempts, created_at) \
         VALUES ($1, $2, $1, $3, $4, FALSE, 0, $5)",
    )
    .bind(username)
    .bind(&hash)
    .bind(json(roles))
    .bind(json(capabilities))
    .bind(now())
    .execute(pool)
    .await
    .map(|r| r.rows_affected()));
    match insert {
        Ok(_) => get(db, username).await,
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(AccountError::Invalid(
            format!("user `{username}` already exists"),
        )),
        Err(e) => Err(e.into()),
    }
}

pub async fn get(db: &Database, username: &str) -> Result<Account, AccountError> {
    let row: Option<(String, String, String, String, bool)> = on_db!(db, pool => sqlx::query_as(
        "SELECT username, display_name, roles, capabilities, disabled FROM users WHERE username = $1",
    )
    .bind(username)
    .fetch_optional(pool)
    .await?);
    let (username, display_name, roles, capabilities, disabled) =
        row.ok_or_else(|| AccountError::NoSuchUser(username.to_string()))?;
    let list = |text: &str| serde_json::from_str::<Vec<String>>(text).unwrap_or_default();
    Ok(Account {
        username,
        display_name,
        roles: list(&roles),
        capabilities: list(&capabilities),
        disabled,
    })
}

pub async fn set_password(
    db: &Database,
    username: &str,
    password: &str,
) -> Result<(), AccountError> {
    check_password(password)?;
    let hash = hash_password(password)?;
    let done = on_db!(db, pool => sqlx::query("UPDATE users SET password_hash = $1, failed_attempts = 0, locked_until = NULL WHERE username = $2")
        .bind(&hash)
        .bind(username)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())?);
    if done == 0 {
        return Err(AccountError::NoSuchUser(username.to_string()));
    }
    Ok(())
}

pub async fn set_disabled(
    db: &Database,
    username: &str,
    disabled: bool,
) -> Result<(), AccountError> {
    let done = on_db!(db, pool => sqlx::query("UPDATE users SET disabled = $1 WHERE username = $2")
        .bind(disabled)
        .bind(username)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())?);
    if done == 0 {
        return Err(AccountError::NoSuchUser(username.to_string()));
    }
    Ok(())
}

/// Check a password. Failures count against the account; after a few, it is locked for a
/// growing while (30 s, 60 s, ... up to 15 min). An unknown user costs the same hashing time.
pub async fn authenticate(
    db: &Database,
    username: &str,
    password: &str,
) -> Result<Account, AccountError> {
    let row: Option<(String, bool, i32, Option<i64>)> = on_db!(db, pool => sqlx::query_as(
        "SELECT password_hash, disabled, failed_attempts, locked_until FROM users WHERE username = $1",
    )
    .bind(username)
    .fetch_optional(pool)
    .await?);
    let Some((hash, disabled, failures, locked_until)) = row else {
        // Spend the time a real check would, so response times do not reveal who exists.
        let _ = verify(password, DUMMY_HASH);
        return Err(AccountError::BadCredentials);
    };
    let now = now();
    if let Some(until) = locked_until.filter(|u| *u > now) {
        return Err(AccountError::Locked(until - now));
    }
    if !verify(password, &hash) {
        let failures = failures.saturating_add(1);
        let lock = (failures >= FREE_FAILURES).then(|| {
            let steps = u32::try_from(failures - FREE_FAILURES)
                .unwrap_or(16)
                .min(16);
            now + (30_i64 << steps).min(MAX_LOCK_SECS)
        });
        on_db!(db, pool => sqlx::query("UPDATE users SET failed_attempts = $1, locked_until = $2 WHERE username = $3")
            .bind(failures)
            .bind(lock)
            .bind(username)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())?);
        return Err(AccountError::BadCredentials);
    }
    if disabled {
        return Err(AccountError::Disabled);
    }
    on_db!(db, pool => sqlx::query("UPDATE users SET failed_attempts = 0, locked_until = NULL WHERE username = $1")
        .bind(username)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())?);
    get(db, username).await
}

fn verify(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// An argon2id hash of a random password nobody knows, for timing-equal refusals.
#[cfg(test)]
pub(crate) const DUMMY_HASH_FOR_TESTS: &str = DUMMY_HASH;
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$8wKwKp3RSXpJTq9m8bRrj6v0H1mN0t2L3b4c5d6e7f0";

/// A random password for the first admin when none is configured: 24 characters.
pub fn generate_password() -> String {
    use argon2::password_hash::rand_core::RngCore;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 24];
    OsRng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}
