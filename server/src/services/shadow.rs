//! What shadow mode let through: the calls an operation in shadow mode allowed although
//! enforcing would have held them for approval (audit rows `allow` with `requires_approval`),
//! counted by tool and operation, by dangerous pattern and by the pattern's category, so an
//! administrator can switch an operation to enforce with the figures in hand.

use super::{Core, ServiceError};
use crate::store::Store;
use enforcer::policy::Mode;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The most days a report looks back.
pub const MAX_DAYS: u32 = 90;
/// How many of the newest rows are read for their patterns (the per-operation counts are of
/// every row).
pub const ROWS_READ: i64 = 20_000;

/// How often shadow mode allowed what enforcing would have held, over the last `days`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ShadowReport {
    pub days: u32,
    /// Calls shadow mode let through that enforcing would have held.
    pub total: i64,
    /// Per tool, operation and risk, most first.
    pub by_operation: Vec<ShadowCount>,
    /// Per dangerous pattern (id and category), most first, of the newest `rows_read` rows.
    pub by_pattern: Vec<PatternCount>,
    /// Per category of pattern, most first, of the same rows.
    pub by_category: Vec<CategoryCount>,
    /// Of those rows, the ones held for no pattern (the operation's risk, interactive rule or
    /// what its commands do).
    pub without_pattern: i64,
    /// How many rows the pattern figures were read from (all of them unless over
    /// [`ROWS_READ`]).
    pub rows_read: i64,
    /// The operations the active policy has in shadow mode (`tool.operation`).
    pub in_shadow: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ShadowCount {
    pub tool: String,
    pub operation: String,
    pub risk: String,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PatternCount {
    pub pattern: String,
    pub category: String,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CategoryCount {
    pub category: String,
    pub count: i64,
}

/// Shadow mode's figures are the audit trail's: auditors and admins read them.
pub fn may_read(roles: &[String]) -> Result<(), ServiceError> {
    if roles.iter().any(|r| r == "auditor" || r == "admin") {
        Ok(())
    } else {
        Err(ServiceError::forbidden(
            "not_auditor",
            "shadow mode's figures are for auditors and admins",
        ))
    }
}

/// The operations of `policy` in shadow mode, as `tool.operation`.
pub fn operations_in_shadow(policy: &enforcer::PolicySet) -> Vec<String> {
    policy
        .tools
        .iter()
        .flat_map(|(tool, t)| {
            t.operations
                .iter()
                .filter(|(_, op)| op.mode == Mode::Shadow)
                .map(move |(name, _)| format!("{tool}.{name}"))
        })
        .collect()
}

/// The report over the last `days` (1 to [`MAX_DAYS`]) for someone with `roles`.
pub async fn report(
    core: &Core,
    roles: &[String],
    days: u32,
) -> Result<ShadowReport, ServiceError> {
    may_read(roles)?;
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ServiceError::invalid(
            "invalid_days",
            "days",
            format!("days must be a whole number from 1 to {MAX_DAYS}"),
        ));
    }
    let since = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
    let found = core
        .store
        .shadow_decisions(since, ROWS_READ)
        .await
        .map_err(|e| ServiceError::unavailable("shadow mode's figures could not be read", &e))?;
    let mut report = summarise(&found, &core.policy);
    report.days = days;
    Ok(report)
}

/// The figures from what the store found; a pattern's category comes from the stored decision
/// (a whole one names it) or else from `policy` (`unknown` for a pattern it no longer has).
pub fn summarise(
    found: &crate::store::ShadowDecisions,
    policy: &enforcer::PolicySet,
) -> ShadowReport {
    let mut patterns: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut categories: BTreeMap<String, i64> = BTreeMap::new();
    let mut without_pattern = 0;
    for (_, _, stored) in &found.newest {
        let decision: Value = serde_json::from_str(stored).unwrap_or(Value::Null);
        let mut seen = BTreeSet::new();
        for hit in decision["matched_patterns"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let Some(id) = hit["id"].as_str() else {
                continue;
            };
            let category = hit["category"]
                .as_str()
                .map(str::to_string)
                .or_else(|| {
                    policy
                        .patterns
                        .iter()
                        .find(|p| p.id == id)
                        .and_then(|p| serde_json::to_value(p.category).ok())
                        .and_then(|v| v.as_str().map(str::to_string))
                })
                .unwrap_or_else(|| "unknown".to_string());
            seen.insert((id.to_string(), category));
        }
        if seen.is_empty() {
            without_pattern += 1;
        }
        let row_categories: BTreeSet<&String> = seen.iter().map(|(_, c)| c).collect();
        for category in row_categories {
            *categories.entry(category.clone()).or_default() += 1;
        }
        for key in seen {
            *patterns.entry(key).or_default() += 1;
        }
    }
    let mut by_pattern: Vec<PatternCount> = patterns
        .into_iter()
        .map(|((pattern, category), count)| PatternCount {
            pattern,
            category,
            count,
        })
        .collect();
    by_pattern.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.pattern.cmp(&b.pattern))
    });
    let mut by_category: Vec<CategoryCount> = categories
        .into_iter()
        .map(|(category, count)| CategoryCount { category, count })
        .collect();
    by_category.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.category.cmp(&b.category))
    });
    ShadowReport {
        days: 0,
        total: found.counts.iter().map(|(_, _, _, n)| n).sum(),
        by_operation: found
            .counts
            .iter()
            .map(|(tool, operation, risk, count)| ShadowCount {
                tool: tool.clone(),
                operation: operation.clone(),
                risk: risk.clone(),
                count: *count,
            })
            .collect(),
        by_pattern,
        by_category,
        without_pattern,
        rows_read: i64::try_from(found.newest.len()).unwrap_or(i64::MAX),
        in_shadow: operations_in_shadow(policy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ShadowDecisions;

    #[test]
    fn patterns_are_counted_once_a_row_with_their_category() {
        let policy = enforcer::default_policy().expect("policy");
        let sudo = policy
            .patterns
            .iter()
            .find(|p| p.category == enforcer::Category::PrivilegeEscalation)
            .expect("a sudo pattern");
        let row = |decision: &str| ("ssh-exec".into(), "executeCommand".into(), decision.into());
        let found = ShadowDecisions {
            counts: vec![("ssh-exec".into(), "executeCommand".into(), "HIGH".into(), 5)],
            newest: vec![
                // Compact: the category comes from the policy; one row, one count.
                row(&format!(
                    r#"{{"matched_patterns":[{{"id":"{0}","argument":"command","span":[0,4]}},{{"id":"{0}","argument":"command","span":[8,12]}}]}}"#,
                    sudo.id
                )),
                // Whole: it names its category.
                row(
                    r#"{"action":"allow","matched_patterns":[{"id":"gone","category":"destructive"}]}"#,
                ),
                // A pattern the policy no longer has, stored compact.
                row(r#"{"matched_patterns":[{"id":"retired","argument":"command","span":[0,1]}]}"#),
                row("{}"),
                row("not json"),
            ],
        };
        let report = summarise(&found, &policy);
        assert_eq!(report.total, 5);
        assert_eq!(report.rows_read, 5);
        assert_eq!(report.without_pattern, 2);
        let categories: Vec<(&str, i64)> = report
            .by_category
            .iter()
            .map(|c| (c.category.as_str(), c.count))
            .collect();
        assert_eq!(
            categories,
            vec![
                ("destructive", 1),
                ("privilege-escalation", 1),
                ("unknown", 1)
            ]
        );
        assert!(report
            .by_pattern
            .iter()
            .any(|p| p.pattern == sudo.id && p.count == 1));
        assert!(report.in_shadow.is_empty());
    }
}
