//! The policies decisions were made under, kept once each by hash (`policy_versions`), so that
//! an audit row's compact decision can be expanded whatever policy is loaded now. Audit rows
//! name their policy by its id in this table.

use crate::store::Database;
use crate::store::{Store, StoreError};
use enforcer::PolicySet;

// A policy first seen by the audit writer is kept by hash alone (see `policy_ids` in the store);
// its name and text are filled in here, never changed once set.
const RECORD: &str = "INSERT INTO policy_versions (policy_hash, name, source, first_used_at) \
                      VALUES ($1, $2, $3, $4) ON CONFLICT (policy_hash) DO UPDATE \
                      SET name = excluded.name, source = excluded.source \
                      WHERE policy_versions.source IS NULL";

/// Keep `policy` (idempotent). The server does this before it decides anything.
pub async fn record(db: &Database, policy: &PolicySet) -> Result<(), StoreError> {
    let now = chrono::Utc::now();
    let (hash, name, source) = (policy.hash(), &policy.name, policy.source());
    // One statement; the time is text on SQLite, TIMESTAMPTZ on PostgreSQL.
    match db {
        Database::Sqlite(pool) => {
            let query = sqlx::query(RECORD).bind(hash).bind(name).bind(source);
            query
                .bind(crate::store::format_ts(now))
                .execute(pool)
                .await?;
        }
        Database::Postgres(pool) => {
            let query = sqlx::query(RECORD).bind(hash).bind(name).bind(source);
            query.bind(now).execute(pool).await?;
        }
    }
    Ok(())
}

/// The policy with this hash: `current` when it is that one, else the kept text, loaded again.
/// `None` when no such policy was kept (or its text no longer loads).
pub async fn find<S: Store>(
    store: &S,
    current: &std::sync::Arc<PolicySet>,
    hash: &str,
) -> Result<Option<std::sync::Arc<PolicySet>>, StoreError> {
    if current.hash() == hash {
        return Ok(Some(current.clone()));
    }
    // No row, or a policy known by hash alone (no text): nothing to load.
    let source = store
        .policy_version(hash)
        .await?
        .and_then(|(_, source)| source);
    Ok(source
        .and_then(|text| PolicySet::load(&format!("policy {hash}"), &text).ok())
        .filter(|policy| policy.hash() == hash)
        .map(std::sync::Arc::new))
}
