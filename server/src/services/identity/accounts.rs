//! Local accounts (the embedded default): argon2id password hashes, roles and capabilities,
//! disabling, and per-account throttling of failed sign-ins. A name that is no account is
//! throttled the same way (in memory, [`UnknownNames`]), so the answers never tell who exists.

use crate::store::{Credentials, IdentityStore, NewUser, StoreError};
use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;

pub use crate::vocab::ROLES;

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
    #[error("user `{0}` already exists")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
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

pub async fn count(store: &impl IdentityStore) -> Result<i64, AccountError> {
    Ok(store.count_users().await?)
}

pub async fn add(
    store: &impl IdentityStore,
    username: &str,
    password: &str,
    roles: &[String],
    capabilities: &[String],
) -> Result<Account, AccountError> {
    check_name(username)?;
    check_password(password)?;
    check_roles(roles, capabilities)?;
    let hash = hash_password(password)?;
    let inserted = store
        .insert_user(&NewUser {
            username,
            password_hash: &hash,
            roles: &json(roles),
            capabilities: &json(capabilities),
            created_at: now(),
        })
        .await;
    match inserted {
        Ok(()) => get(store, username).await,
        Err(StoreError::Duplicate(_)) => Err(AccountError::Exists(username.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// The first account, `admin`, when the database has none. Several replicas starting at once
/// on an empty database all try; the first insert wins and the others find its admin there and
/// go on. `Ok(true)`: this call created it; `Ok(false)`: another process had.
pub async fn add_first_admin(
    store: &impl IdentityStore,
    password: &str,
) -> Result<bool, AccountError> {
    match add(store, "admin", password, &["admin".to_string()], &[]).await {
        Ok(_) => Ok(true),
        Err(AccountError::Exists(_)) => get(store, "admin").await.map(|_| false),
        Err(error) => Err(error),
    }
}

pub async fn get(store: &impl IdentityStore, username: &str) -> Result<Account, AccountError> {
    let row = store
        .user(username)
        .await?
        .ok_or_else(|| AccountError::NoSuchUser(username.to_string()))?;
    let list = |text: &str| serde_json::from_str::<Vec<String>>(text).unwrap_or_default();
    Ok(Account {
        roles: list(&row.roles),
        capabilities: list(&row.capabilities),
        username: row.username,
        display_name: row.display_name,
        disabled: row.disabled,
    })
}

pub async fn set_password(
    store: &impl IdentityStore,
    username: &str,
    password: &str,
) -> Result<(), AccountError> {
    check_password(password)?;
    let hash = hash_password(password)?;
    if !store.set_password_hash(username, &hash).await? {
        return Err(AccountError::NoSuchUser(username.to_string()));
    }
    Ok(())
}

pub async fn set_disabled(
    store: &impl IdentityStore,
    username: &str,
    disabled: bool,
) -> Result<(), AccountError> {
    if !store.set_disabled(username, disabled).await? {
        return Err(AccountError::NoSuchUser(username.to_string()));
    }
    Ok(())
}

/// Check a password. Failures count against the account; after a few, it is locked for a
/// growing while (30 s, 60 s, ... up to 15 min). An unknown user costs the same hashing time,
/// but its failures are not remembered: the sign-in form uses [`authenticate_guarded`].
pub async fn authenticate(
    store: &impl IdentityStore,
    username: &str,
    password: &str,
) -> Result<Account, AccountError> {
    authenticate_guarded(store, username, password, &UnknownNames::default()).await
}

/// [`authenticate`], with the failures of names that are no account counted in `unknown` and
/// locked on the same schedule, so that a name that does not exist gets exactly the answers
/// an account would (the same message, the lock after the same number of failures, for as
/// long), and every answer costs one password hash.
pub async fn authenticate_guarded(
    store: &impl IdentityStore,
    username: &str,
    password: &str,
    unknown: &UnknownNames,
) -> Result<Account, AccountError> {
    let row = store.credentials(username).await?;
    let now = now();
    let Some(Credentials {
        password_hash: hash,
        disabled,
        failed_attempts: failures,
        locked_until,
    }) = row
    else {
        // Spend the time a real check would, so response times do not reveal who exists: the
        // password hash, and the same statement a real account's failure runs (it matches no
        // row here).
        let _ = verify(password, DUMMY_HASH);
        let error = unknown.failed(username, now);
        if matches!(error, AccountError::BadCredentials) {
            store.set_failures(username, 1, None).await?;
        }
        return Err(error);
    };
    if let Some(until) = locked_until.filter(|u| *u > now) {
        // A locked account answers as slowly as any other attempt.
        let _ = verify(password, DUMMY_HASH);
        return Err(AccountError::Locked(until - now));
    }
    if !verify(password, &hash) {
        let failures = failures.saturating_add(1);
        let lock = lock_after(failures, now);
        store.set_failures(username, failures, lock).await?;
        return Err(AccountError::BadCredentials);
    }
    if disabled {
        return Err(AccountError::Disabled);
    }
    store.set_failures(username, 0, None).await?;
    get(store, username).await
}

/// Until when a name is locked after its `failures`-th failure in a row at `now`: not before
/// the fifth, then 30 s doubling up to 15 min.
fn lock_after(failures: i32, now: i64) -> Option<i64> {
    (failures >= FREE_FAILURES).then(|| {
        let steps = u32::try_from(failures - FREE_FAILURES)
            .unwrap_or(16)
            .min(16);
        now + (30_i64 << steps).min(MAX_LOCK_SECS)
    })
}

/// How many names that are no account are remembered at most, and for how long after their
/// last failure. A real account's count lasts until its next success; a forgotten name starts
/// again from zero, which only someone who waited this long could notice.
const UNKNOWN_NAMES_MAX: usize = 10_000;
const UNKNOWN_NAME_MEMORY_SECS: i64 = 24 * 3_600;
/// Longer names are no account (names are at most 64 characters): kept by their first 128.
const UNKNOWN_NAME_KEY_CHARS: usize = 128;

/// Failed sign-ins of names that are no account, counted and locked as an account's are (in
/// memory, bounded), so the lock-out does not tell which accounts exist.
#[derive(Debug, Default)]
pub struct UnknownNames {
    names: Mutex<HashMap<String, NameFailures>>,
}

#[derive(Debug, Clone, Copy)]
struct NameFailures {
    failures: i32,
    locked_until: Option<i64>,
    last_seen: i64,
}

impl UnknownNames {
    /// A failed sign-in as `name` (no account) at `now`: the error an account would give.
    pub fn failed(&self, name: &str, now: i64) -> AccountError {
        let key: String = name.chars().take(UNKNOWN_NAME_KEY_CHARS).collect();
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if !names.contains_key(&key) && names.len() >= UNKNOWN_NAMES_MAX {
            names.retain(|_, n| now - n.last_seen < UNKNOWN_NAME_MEMORY_SECS);
            if names.len() >= UNKNOWN_NAMES_MAX {
                // The oldest name that is not locked goes first: a spray of new names must not
                // free a locked one (which an account's lock, kept in the database, never is).
                let oldest = names
                    .iter()
                    .min_by_key(|(_, n)| (n.locked_until.is_some_and(|u| u > now), n.last_seen))
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    names.remove(&oldest);
                }
            }
        }
        let entry = names.entry(key).or_insert(NameFailures {
            failures: 0,
            locked_until: None,
            last_seen: now,
        });
        if now - entry.last_seen >= UNKNOWN_NAME_MEMORY_SECS {
            entry.failures = 0;
            entry.locked_until = None;
        }
        entry.last_seen = now;
        if let Some(until) = entry.locked_until.filter(|u| *u > now) {
            return AccountError::Locked(until - now);
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.locked_until = lock_after(entry.failures, now);
        AccountError::BadCredentials
    }

    /// How many names are remembered.
    pub fn len(&self) -> usize {
        self.names.lock().map_or(0, |names| names.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The answers a real account gives to failures in a row at `times`, computed as the
    /// database path does, and the ones an unknown name gets.
    fn account_answers(times: &[i64]) -> Vec<String> {
        let (mut failures, mut locked_until) = (0_i32, None::<i64>);
        times
            .iter()
            .map(|&now| {
                if let Some(until) = locked_until.filter(|u| *u > now) {
                    return AccountError::Locked(until - now).to_string();
                }
                failures += 1;
                locked_until = lock_after(failures, now);
                AccountError::BadCredentials.to_string()
            })
            .collect()
    }

    #[test]
    fn an_unknown_name_is_locked_exactly_like_an_account() {
        let unknown = UnknownNames::default();
        // Ten failures a second apart, then more after the first lock ran out, then later still.
        let times: Vec<i64> = (0..10)
            .map(|i| 1_000 + i)
            .chain([1_040, 1_041, 1_200, 5_000])
            .collect();
        let answers: Vec<String> = times
            .iter()
            .map(|&now| unknown.failed("nobody", now).to_string())
            .collect();
        assert_eq!(answers, account_answers(&times));
        assert_eq!(answers[4], "unknown user or wrong password");
        assert!(
            answers[5].starts_with("too many failed sign-ins"),
            "{answers:?}"
        );
        // Another name has its own count.
        assert_eq!(
            unknown.failed("somebody-else", 1_010).to_string(),
            "unknown user or wrong password"
        );
        assert_eq!(unknown.len(), 2);
    }

    #[test]
    fn unknown_names_are_bounded_and_forgotten() {
        let unknown = UnknownNames::default();
        for i in 0..UNKNOWN_NAMES_MAX {
            let _ = unknown.failed(&format!("ghost-{i}"), 1_000);
        }
        assert_eq!(unknown.len(), UNKNOWN_NAMES_MAX);
        let _ = unknown.failed("one-more", 1_001);
        assert_eq!(unknown.len(), UNKNOWN_NAMES_MAX, "the oldest made room");
        // A day later the old names are gone at the next newcomer.
        let _ = unknown.failed("next-day", 1_001 + UNKNOWN_NAME_MEMORY_SECS);
        assert!(unknown.len() <= 3, "{}", unknown.len());
        // A very long name is kept by its beginning.
        let long = "x".repeat(10_000);
        let _ = unknown.failed(&long, 2_000);
        assert!(unknown
            .names
            .lock()
            .map(|names| names
                .keys()
                .all(|k| k.chars().count() <= UNKNOWN_NAME_KEY_CHARS))
            .unwrap_or(false));
    }

    /// A spray of new names makes room by forgetting unlocked names, never a locked one.
    #[test]
    fn a_spray_of_names_does_not_unlock_a_locked_name() {
        let unknown = UnknownNames::default();
        for _ in 0..FREE_FAILURES {
            let _ = unknown.failed("ghost", 1_000);
        }
        assert!(matches!(
            unknown.failed("ghost", 1_001),
            AccountError::Locked(_)
        ));
        for i in 0..UNKNOWN_NAMES_MAX + 50 {
            let _ = unknown.failed(&format!("spray-{i}"), 1_002);
        }
        assert_eq!(unknown.len(), UNKNOWN_NAMES_MAX);
        assert!(matches!(
            unknown.failed("ghost", 1_003),
            AccountError::Locked(_)
        ));
    }
}
