//! API tokens (`cs_<id>_<secret>`) for tool servers and agents in deployments without an
//! identity provider. Created by `countersign token create`, shown once, stored as a hash,
//! revocable.

use crate::store::{IdentityStore, StoreError, TokenRow};
use argon2::password_hash::rand_core::{OsRng, RngCore};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub roles: Vec<String>,
    pub capabilities: Vec<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenStoreError {
    #[error("{0}")]
    Invalid(String),
    #[error("no token named `{0}`")]
    NotFound(String),
    #[error("invalid or revoked API token")]
    Refused,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The role of an execution agent's token (`countersign token create --agent NAME`): it may
/// claim the jobs for the agent its name names (or for any agent), keep their leases and report
/// their runs, and nothing else. Tokens only: people are never agents.
pub const AGENT_ROLE: &str = "agent";

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// Create a token; returns it with the full token text, which is not stored anywhere.
pub async fn create(
    store: &impl IdentityStore,
    name: &str,
    roles: &[String],
    capabilities: &[String],
) -> Result<(ApiToken, String), TokenStoreError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(TokenStoreError::Invalid(
            "token names are 1–64 letters, digits, '-', '_' or '.'".into(),
        ));
    }
    if let Some(bad) = roles
        .iter()
        .find(|r| !super::accounts::ROLES.contains(&r.as_str()) && *r != AGENT_ROLE)
    {
        return Err(TokenStoreError::Invalid(format!("unknown role `{bad}`")));
    }
    if roles.iter().any(|r| r == AGENT_ROLE) && (roles.len() > 1 || !capabilities.is_empty()) {
        return Err(TokenStoreError::Invalid(
            "an agent token has the `agent` role alone, without capabilities".into(),
        ));
    }
    let id = random_hex(6);
    let secret = random_hex(32);
    let now = chrono::Utc::now().timestamp();
    let json = |l: &[String]| serde_json::to_string(l).unwrap_or_else(|_| "[]".into());
    let row = TokenRow {
        id: id.clone(),
        name: name.into(),
        roles: json(roles),
        capabilities: json(capabilities),
        created_at: now,
        revoked_at: None,
        last_used_at: None,
    };
    match store
        .insert_token(&row, &enforcer::sha256_hex(secret.as_bytes()))
        .await
    {
        Ok(()) => {}
        Err(StoreError::Duplicate(_)) => {
            return Err(TokenStoreError::Invalid(format!(
                "a token named `{name}` already exists"
            )))
        }
        Err(e) => return Err(e.into()),
    }
    let token = token(row);
    Ok((token, format!("cs_{id}_{secret}")))
}

fn token(row: TokenRow) -> ApiToken {
    ApiToken {
        id: row.id,
        name: row.name,
        roles: list(&row.roles),
        capabilities: list(&row.capabilities),
        created_at: row.created_at,
        revoked_at: row.revoked_at,
        last_used_at: row.last_used_at,
    }
}

pub async fn list_all(store: &impl IdentityStore) -> Result<Vec<ApiToken>, TokenStoreError> {
    Ok(store.tokens().await?.into_iter().map(token).collect())
}

pub async fn revoke(store: &impl IdentityStore, name: &str) -> Result<(), TokenStoreError> {
    let revoked = store
        .revoke_token(name, chrono::Utc::now().timestamp())
        .await?;
    if !revoked {
        return Err(TokenStoreError::NotFound(name.into()));
    }
    Ok(())
}

/// How stale `last_used_at` may be before a request refreshes it.
const LAST_USED_PRECISION_SECS: i64 = 60;

/// Whether `token`'s recorded last use is older than the precision kept.
fn use_is_stale(token: &ApiToken, now: i64) -> bool {
    token
        .last_used_at
        .is_none_or(|at| now - at >= LAST_USED_PRECISION_SECS)
}

/// Record that `token` was used at `now`. `last_used_at` is for people reviewing tokens; minute
/// precision is plenty (see [`TokenCache`]), and writing it on every request would put a
/// database write in front of every API call. Best effort: a store that cannot write (a full
/// disk) does not make a valid token invalid; what the request then does is refused on its own
/// if it must write.
async fn record_use(store: &impl IdentityStore, token: &ApiToken, now: i64) {
    if let Err(error) = store.token_used(&token.id, now).await {
        tracing::warn!(%error, token = %token.name, "could not record when an API token was last used");
    }
}

/// Check a presented token against the database, writing nothing. Unknown, malformed, wrong or
/// revoked tokens get the same refusal.
async fn verify(store: &impl IdentityStore, presented: &str) -> Result<ApiToken, TokenStoreError> {
    let mut parts = presented.splitn(3, '_');
    let (Some("cs"), Some(id), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(TokenStoreError::Refused);
    };
    let Some((row, stored)) = store.token_with_secret(id).await? else {
        return Err(TokenStoreError::Refused);
    };
    let presented_hash = enforcer::sha256_hex(secret.as_bytes());
    let same = super::constant_time_eq(stored.as_bytes(), presented_hash.as_bytes());
    if !same || row.revoked_at.is_some() {
        return Err(TokenStoreError::Refused);
    }
    Ok(token(row))
}

/// Verified API tokens, remembered for a few seconds so that a busy caller does not cost a
/// database read per request. Only successes are kept (a new token works at once); a revocation
/// takes effect within the time to live. Keys are SHA-256 of the presented token.
///
/// A token's use is recorded off the request's path, once per token and minute: on SQLite that
/// UPDATE is a second writer beside the audit writer, and the many requests that miss the cache
/// together (a client's first burst, or each time an entry expires) used to wait in SQLite's busy
/// handler for the write lock the audit writer hardly ever lets go, each of them — up to seconds.
pub struct TokenCache {
    ttl: std::time::Duration,
    entries: std::sync::Mutex<std::collections::HashMap<String, (ApiToken, std::time::Instant)>>,
    /// When this process last set out to record each token's use (by token id).
    recording: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

/// Entries kept at most; past it the cache starts afresh.
const CACHE_CAP: usize = 10_000;

impl TokenCache {
    pub fn new(ttl_secs: u64) -> TokenCache {
        TokenCache {
            ttl: std::time::Duration::from_secs(ttl_secs),
            entries: Default::default(),
            recording: Default::default(),
        }
    }

    /// Record `token`'s use in the background, unless it is fresh or this process set out to
    /// record it less than the precision ago.
    fn record_use_later<S: IdentityStore + Clone + 'static>(&self, store: &S, token: &ApiToken) {
        let now = chrono::Utc::now().timestamp();
        if !use_is_stale(token, now) {
            return;
        }
        let Ok(mut recording) = self.recording.lock() else {
            return;
        };
        if recording
            .get(&token.id)
            .is_some_and(|at| now - at < LAST_USED_PRECISION_SECS)
        {
            return;
        }
        if recording.len() >= CACHE_CAP {
            recording.clear();
        }
        recording.insert(token.id.clone(), now);
        let (store, token) = (store.clone(), token.clone());
        tokio::spawn(async move { record_use(&store, &token, now).await });
    }

    /// Check a presented token, answered from memory while a success is fresh, and record its
    /// use (in the background).
    pub async fn authenticate<S: IdentityStore + Clone + 'static>(
        &self,
        store: &S,
        presented: &str,
    ) -> Result<ApiToken, TokenStoreError> {
        if self.ttl.is_zero() {
            let token = verify(store, presented).await?;
            self.record_use_later(store, &token);
            return Ok(token);
        }
        let key = enforcer::sha256_hex(presented.as_bytes());
        if let Ok(entries) = self.entries.lock() {
            if let Some((token, at)) = entries.get(&key) {
                if at.elapsed() < self.ttl {
                    return Ok(token.clone());
                }
            }
        }
        let token = verify(store, presented).await?;
        self.record_use_later(store, &token);
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CACHE_CAP {
                entries.clear();
            }
            entries.insert(key, (token.clone(), std::time::Instant::now()));
        }
        Ok(token)
    }

    /// Forget every remembered token (after a revocation on this replica).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }
}
