//! What the PDF summary and the evidence bundle say about a period: totals, approvals, denials,
//! executions, side effects, policy versions, and whether the period's chain segment verifies.
//!
//! The summary reads the period's whole chain segment (every row from the first to the last of
//! the period, in chain order) once: it checks the links and hashes of every row and counts the
//! rows that pass the export's filters. Lists are capped so that the report stays readable and
//! memory stays flat; the totals are always complete.

use super::StreamError;
use super::{Job, Rows};
use crate::store::audit::row_problem;
use crate::store::{AuditAction, AuditFilter, AuditRecord, EventKind, Store, StoreError};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};

/// Entries a list in the report shows at most (the CSV has them all).
pub const LIST_CAP: usize = 200;

#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalLine {
    pub at: DateTime<Utc>,
    pub job_id: String,
    pub tool: String,
    pub operation: String,
    pub risk: String,
    pub approver: String,
    /// From the request (the `require_approval` decision) to this approval, when both are in
    /// the period.
    pub secs_to_decision: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DenialLine {
    pub at: DateTime<Utc>,
    pub caller: String,
    pub tool: String,
    pub operation: String,
    pub risk: String,
    /// The enforcer's reason, or the reviewer's.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FailureLine {
    pub at: DateTime<Utc>,
    pub job_id: Option<String>,
    pub tool: String,
    pub operation: String,
    pub status: String,
    pub error: String,
}

/// A policy version seen in the period.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySeen {
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    pub rows: u64,
}

/// The period's chain segment and what checking it found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainCheck {
    pub first_seq: i64,
    pub last_seq: i64,
    /// The hash the segment's first row links to.
    pub prev_hash: String,
    /// The segment's last row hash.
    pub last_hash: String,
    pub rows: u64,
    /// The first problem, if any: row and sentence.
    pub problem: Option<(i64, String)>,
}

impl ChainCheck {
    /// Take the next row of the segment, checking its link, sequence and hash.
    pub fn push(&mut self, row: &AuditRecord) {
        let previous = (self.rows > 0).then_some((self.last_seq, self.last_hash.as_str()));
        if self.rows == 0 {
            self.first_seq = row.seq;
            self.prev_hash = row.prev_hash.clone();
        }
        if self.problem.is_none() {
            if let Some(why) = row_problem(row, previous) {
                self.problem = Some((row.seq, why.to_string()));
            }
        }
        self.last_seq = row.seq;
        self.last_hash = row.row_hash.clone();
        self.rows += 1;
    }

    pub fn verified(&self) -> bool {
        self.problem.is_none()
    }

    /// One sentence for the report.
    pub fn describe(&self) -> String {
        match &self.problem {
            _ if self.rows == 0 => "no rows in the period".to_string(),
            None => format!(
                "verified: rows {} to {} ({} rows) link and hash correctly; last hash {}",
                self.first_seq, self.last_seq, self.rows, self.last_hash
            ),
            Some((seq, why)) => format!("FAILED at row {seq}: {why}"),
        }
    }
}

/// Everything the PDF reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub spec: Option<super::ExportSpec>,
    pub generated_by: String,
    pub generated_at: Option<DateTime<Utc>>,
    pub current_policy: String,
    /// Rows that pass the filters.
    pub events: u64,
    pub by_kind: BTreeMap<String, u64>,
    /// Decisions by action, by risk and by tool.
    pub decisions: u64,
    pub by_action: BTreeMap<String, u64>,
    pub by_risk: BTreeMap<String, u64>,
    pub by_tool: BTreeMap<String, u64>,
    pub approvals_total: u64,
    pub approvals: Vec<ApprovalLine>,
    pub denials_total: u64,
    pub denials: Vec<DenialLine>,
    pub denial_reasons: BTreeMap<String, u64>,
    pub executions: BTreeMap<String, u64>,
    pub failures_total: u64,
    pub failures: Vec<FailureLine>,
    pub side_effects: BTreeMap<String, u64>,
    pub policies: BTreeMap<String, PolicySeen>,
    pub sign_ins: u64,
    pub exports: u64,
    pub chain: ChainCheck,
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    *map.entry(key.to_string()).or_default() += 1;
}

/// Side effects as stored: a JSON array of strings (`service:nginx:restarted`), or free text.
fn side_effect_items(text: &str) -> Vec<String> {
    match serde_json::from_str::<Vec<String>>(text) {
        Ok(items) => items,
        Err(_) if text.trim().is_empty() || text.trim() == "[]" => Vec::new(),
        Err(_) => vec![text.trim().to_string()],
    }
}

impl Summary {
    /// Count one row that passes the filters. `requested` holds when jobs were asked for.
    fn add(&mut self, row: &AuditRecord, requested: &HashMap<String, DateTime<Utc>>) {
        let e = &row.event;
        self.events += 1;
        bump(&mut self.by_kind, e.kind.as_str());
        if let Some(hash) = &e.policy_hash {
            let seen = self.policies.entry(hash.clone()).or_insert(PolicySeen {
                first: e.timestamp,
                last: e.timestamp,
                rows: 0,
            });
            seen.first = seen.first.min(e.timestamp);
            seen.last = seen.last.max(e.timestamp);
            seen.rows += 1;
        }
        match e.kind {
            EventKind::Decision => {
                self.decisions += 1;
                bump(&mut self.by_action, &e.decision_action);
                bump(&mut self.by_risk, &e.risk_level);
                bump(&mut self.by_tool, &e.tool);
                if e.action() == Some(AuditAction::Deny) {
                    self.deny(row, &e.decision_reason);
                }
            }
            // Only counted votes: trails written before votes were audited in the store's
            // transaction also hold `error` rows of these kinds for votes that did not count.
            // An older trail's `error` row takes back the same voter's `approve` row before it.
            EventKind::Approval if e.decision_action == "error" => {
                let voter = e.approver.as_deref().unwrap_or(&e.caller_id);
                let job = e.job_id.as_deref().unwrap_or_default();
                self.approvals_total = self.approvals_total.saturating_sub(1);
                if let Some(at) = self
                    .approvals
                    .iter()
                    .rposition(|a| a.approver == voter && a.job_id == job)
                {
                    self.approvals.remove(at);
                }
            }
            EventKind::Approval if e.action() == Some(AuditAction::Approve) => {
                self.approvals_total += 1;
                if self.approvals.len() < LIST_CAP {
                    let secs = e
                        .job_id
                        .as_ref()
                        .and_then(|j| requested.get(j))
                        .map(|at| (e.timestamp - *at).num_seconds());
                    self.approvals.push(ApprovalLine {
                        at: e.timestamp,
                        job_id: e.job_id.clone().unwrap_or_default(),
                        tool: e.tool.clone(),
                        operation: e.operation.clone(),
                        risk: e.risk_level.clone(),
                        approver: e.approver.clone().unwrap_or_else(|| e.caller_id.clone()),
                        secs_to_decision: secs,
                    });
                }
            }
            EventKind::Denial if e.action() == Some(AuditAction::Deny) => {
                let reason = e
                    .decision_reason
                    .strip_prefix("denied: ")
                    .unwrap_or(&e.decision_reason)
                    .to_string();
                self.deny(row, &format!("reviewer: {reason}"));
            }
            EventKind::Execution => {
                let status = e.execution_status.as_deref().unwrap_or("unknown");
                bump(&mut self.executions, status);
                if status != "success" {
                    self.failures_total += 1;
                    if self.failures.len() < LIST_CAP {
                        self.failures.push(FailureLine {
                            at: e.timestamp,
                            job_id: e.job_id.clone(),
                            tool: e.tool.clone(),
                            operation: e.operation.clone(),
                            status: status.to_string(),
                            error: e.error.clone().unwrap_or_default(),
                        });
                    }
                }
                if let Some(effects) = &e.side_effects {
                    for item in side_effect_items(effects) {
                        bump(&mut self.side_effects, &item);
                    }
                }
            }
            EventKind::SignIn => self.sign_ins += 1,
            EventKind::Export => self.exports += 1,
            _ => {}
        }
    }

    fn deny(&mut self, row: &AuditRecord, reason: &str) {
        let e = &row.event;
        self.denials_total += 1;
        let short: String = reason.chars().take(120).collect();
        if self.denial_reasons.len() < LIST_CAP || self.denial_reasons.contains_key(&short) {
            bump(&mut self.denial_reasons, &short);
        }
        if self.denials.len() < LIST_CAP {
            self.denials.push(DenialLine {
                at: e.timestamp,
                caller: e.caller_id.clone(),
                tool: e.tool.clone(),
                operation: e.operation.clone(),
                risk: e.risk_level.clone(),
                reason: reason.to_string(),
            });
        }
    }
}

/// The first and last rows of the period (any filter aside), up to the export's own row.
pub async fn segment_bounds<S: Store>(
    store: &S,
    job: &Job,
) -> Result<Option<(i64, i64)>, StoreError> {
    let period = AuditFilter {
        from: Some(job.spec.from),
        to: Some(job.spec.to),
        before_seq: Some(job.last_seq + 1),
        ..AuditFilter::default()
    };
    let first = store
        .audit_search(
            &AuditFilter {
                after_seq: Some(0),
                ..period.clone()
            },
            1,
        )
        .await?;
    let last = store.audit_search(&period, 1).await?;
    Ok(match (first.first(), last.first()) {
        (Some(a), Some(b)) => Some((a.seq, b.seq)),
        _ => None,
    })
}

/// Walk the period's chain segment once, handing each row to `each` (with whether it passes
/// the export's filters) and building the summary.
pub async fn walk<S: Store>(
    store: &S,
    job: &Job,
    mut each: impl FnMut(&AuditRecord, bool) -> Result<(), StreamError>,
) -> Result<Summary, StreamError> {
    let mut summary = Summary {
        spec: Some(job.spec.clone()),
        generated_by: job.generated_by.clone(),
        generated_at: Some(job.generated_at),
        current_policy: job.policy_hash.clone(),
        ..Summary::default()
    };
    let Some((first, last)) = segment_bounds(store, job)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(summary);
    };
    let filter = job.filter();
    let mut requested: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut rows = Rows::new(
        store,
        AuditFilter {
            after_seq: Some(first - 1),
            before_seq: Some(last + 1),
            ..AuditFilter::default()
        },
    );
    while let Some(page) = rows.next_page().await.map_err(|e| e.to_string())? {
        job.advance(page.len());
        for row in &page {
            summary.chain.push(row);
            let e = &row.event;
            if e.kind == EventKind::Decision && e.action() == Some(AuditAction::RequireApproval) {
                if let Some(job_id) = &e.job_id {
                    requested.insert(job_id.clone(), e.timestamp);
                }
            }
            let selected = filter.matches(row);
            if selected {
                summary.add(row, &requested);
            }
            each(row, selected)?;
        }
    }
    Ok(summary)
}

/// The summary alone (for the PDF).
pub async fn summarise<S: Store>(store: &S, job: &Job) -> Result<Summary, StreamError> {
    walk(store, job, |_, _| Ok(())).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewAuditEvent, Risk};

    /// A row as stored: `action` is the column's text, which older trails hold other words in.
    fn row(seq: i64, kind: EventKind, action: &str) -> AuditRecord {
        let mut event = NewAuditEvent::new(
            kind,
            "bob",
            "ssh-exec",
            "executeCommand",
            AuditAction::Allow,
            "approved; the quorum is reached",
            Risk::High,
        );
        event.decision_action = action.to_string();
        event.job_id = Some("job-1".into());
        AuditRecord {
            id: format!("row-{seq}"),
            seq,
            event,
            prev_hash: String::new(),
            row_hash: String::new(),
        }
    }

    /// Trails written before votes were audited in the store's transaction hold, for a vote that
    /// lost a race, an `approve` row and then an `error` row of the same kind: the error takes the
    /// approval back, so only counted votes are approvals or denials.
    #[test]
    fn only_counted_votes_are_counted() {
        let mut summary = Summary::default();
        let requested = HashMap::new();
        for (seq, kind, action, voter) in [
            (1, EventKind::Approval, "approve", "bob"),
            (2, EventKind::Approval, "approve", "carol"),
            (3, EventKind::Approval, "error", "carol"),
            (4, EventKind::Denial, "deny", "dave"),
            (5, EventKind::Denial, "error", "erin"),
        ] {
            let mut r = row(seq, kind, action);
            r.event.approver = Some(voter.into());
            summary.add(&r, &requested);
        }
        assert_eq!(summary.approvals_total, 1);
        assert_eq!(summary.approvals.len(), 1);
        assert_eq!(summary.approvals[0].approver, "bob");
        assert_eq!(summary.denials_total, 1);
    }
}
