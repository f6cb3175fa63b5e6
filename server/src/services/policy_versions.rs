//! The policies decisions were made under, kept once each by hash (`policy_versions`), so that
//! an audit row's compact decision can be expanded whatever policy is loaded now. Audit rows
//! name their policy by its id in this table.

use crate::store::{Store, StoreError};
use enforcer::PolicySet;

/// Keep `policy` (idempotent). The server does this before it decides anything. A policy first
/// seen by the audit writer is kept by hash alone (see `policy_ids` in the store); its name and
/// text are filled in here, never changed once set.
pub async fn record<S: Store>(store: &S, policy: &PolicySet) -> Result<(), StoreError> {
    store
        .keep_policy(
            policy.hash(),
            &policy.name,
            policy.source(),
            chrono::Utc::now(),
        )
        .await
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
