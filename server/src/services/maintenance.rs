//! Background work: expire jobs past their TTL or approval window, return lapsed leases, and
//! (when configured) purge audit rows past the retention period. Every change is audited.

use crate::store::{
    audit, AnyStore, AuditAction, AuditWriter, EventKind, Job, JobStatus, NewAuditEvent, Risk,
    Store,
};
use chrono::{Duration, Utc};
use std::time::Duration as StdDuration;

/// The system's own identity in the audit trail.
pub const SYSTEM_CALLER: &str = "countersign";

pub struct Maintenance {
    pub store: AnyStore,
    pub writer: AuditWriter,
    pub interval: StdDuration,
    pub audit_key: Option<Vec<u8>>,
    pub retention_secs: Option<u64>,
}

impl Maintenance {
    /// Run forever (until the runtime stops).
    pub fn spawn(self) {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(self.interval);
            let mut last_purge: Option<tokio::time::Instant> = None;
            loop {
                ticker.tick().await;
                if let Err(error) = self.tick().await {
                    tracing::warn!(%error, "maintenance pass failed; retrying at the next tick");
                }
                let purge_due =
                    last_purge.is_none_or(|at| at.elapsed() >= StdDuration::from_secs(86_400));
                if let (Some(secs), Some(key), true) =
                    (self.retention_secs, &self.audit_key, purge_due)
                {
                    last_purge = Some(tokio::time::Instant::now());
                    let now = Utc::now();
                    let cutoff =
                        now - Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 2));
                    match audit::purge(&self.store, key, cutoff, now).await {
                        Ok((0, _)) => {}
                        Ok((deleted, anchor)) => {
                            tracing::info!(deleted, anchor, "audit retention: old rows purged");
                            let mut event = NewAuditEvent::new(
                                EventKind::PortalAction,
                                SYSTEM_CALLER,
                                "countersign",
                                "audit.purge",
                                AuditAction::Allow,
                                &format!("retention: {deleted} rows older than {cutoff} purged; chain anchored at row {anchor}"),
                                Risk::Low,
                            );
                            event.context = serde_json::json!({ "deleted": deleted, "anchor": anchor, "cutoff": cutoff }).to_string();
                            if let Err(error) = self.writer.append(event).await {
                                tracing::error!(%error, "could not audit the purge");
                            }
                        }
                        Err(error) => tracing::error!(%error, "audit retention purge failed"),
                    }
                }
            }
        });
    }

    /// One pass: expire what is due and reap lapsed leases, auditing each job.
    pub async fn tick(&self) -> Result<(), crate::store::StoreError> {
        let now = Utc::now();
        for job in self.store.expire_due(now).await? {
            let reason = if job.approved_at.is_some() {
                "approved job was not executed within its approval window"
            } else {
                "request expired before it was approved"
            };
            self.writer
                .append(job_event(&job, EventKind::Expiry, reason, None))
                .await?;
        }
        if let Err(error) = super::idempotency::purge_old(&self.store).await {
            tracing::warn!(%error, "could not purge old idempotency keys");
        }
        if let Err(error) = super::notifications::notify::purge_old(&self.store).await {
            tracing::warn!(%error, "could not purge old notifications");
        }
        for job in self.store.reap_leases(now).await? {
            let (reason, status) = if job.status == JobStatus::Approved {
                (
                    format!(
                        "lease of {} lapsed; returned for retry {}",
                        job.lease_owner.as_deref().unwrap_or("an agent"),
                        job.retry_count
                    ),
                    None,
                )
            } else {
                (
                    "lease lapsed and retries are exhausted".to_string(),
                    Some("timeout".to_string()),
                )
            };
            self.writer
                .append(job_event(&job, EventKind::Execution, &reason, status))
                .await?;
        }
        Ok(())
    }
}

fn job_event(
    job: &Job,
    kind: EventKind,
    reason: &str,
    execution_status: Option<String>,
) -> NewAuditEvent {
    let mut event = NewAuditEvent::new(
        kind,
        SYSTEM_CALLER,
        &job.tool_name,
        &job.operation,
        AuditAction::Deny,
        reason,
        job.risk,
    );
    event.requires_approval = true;
    event.job_id = Some(job.job_id.clone());
    event.call_hash = Some(job.call_hash.clone());
    event.policy_hash = job.policy_hash.clone();
    event.execution_status = execution_status;
    event.context = serde_json::json!({ "job_id": job.job_id, "status": job.status, "requester": job.requester }).to_string();
    event
}
