//! Votes on queued jobs: who may vote is the enforcer's rule ([`enforcer::can_approve`]: never
//! the requester, never twice, only with the approver role and every capability the operation
//! requires, never after expiry); the store makes the vote and the job's move one transaction;
//! the vote is audited and long-polls and waiting agents are woken. Used by the API
//! (`POST /api/v1/jobs/{id}/votes`) and by the portal.

use super::Core;
use crate::store::{
    AuditAction, EventKind, Job, JobStatus, NewAuditEvent, Risk, Store, StoreError, VoteRecord,
    VoteTally,
};
use chrono::Utc;
use enforcer::{Principal, Verdict};

/// Longest reason or comment kept with a vote.
pub const MAX_REASON_CHARS: usize = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum VoteError {
    #[error("no such job")]
    NotFound,
    #[error("the job is {0}; only queued jobs take votes")]
    NotQueued(String),
    #[error("{0}")]
    ReasonRequired(&'static str),
    #[error("reason or comment longer than {MAX_REASON_CHARS} characters")]
    ReasonTooLong,
    #[error("not allowed to vote: {}", .0.join("; "))]
    NotEligible(Vec<String>),
    #[error("the vote could not be recorded")]
    Unavailable(#[source] StoreError),
}

/// Whether `voter` may vote on `job` now, by the enforcer's rules (shared by the vote itself and
/// the approval page's buttons).
pub fn eligibility(
    core: &Core,
    voter: &Principal,
    job: &Job,
    votes: &[VoteRecord],
    now: chrono::DateTime<Utc>,
) -> enforcer::Eligibility {
    let votes: Vec<enforcer::Vote> = votes
        .iter()
        .map(|v| enforcer::Vote {
            approver: v.approver.clone(),
            verdict: v.verdict,
            at: v.created_at,
        })
        .collect();
    let pending = enforcer::PendingJob {
        requester: job.requester.clone(),
        required_capabilities: job.requested_capabilities.iter().cloned().collect(),
        approvals_required: u32::try_from(job.approvals_required).unwrap_or(1),
        expires_at: job.expires_at.unwrap_or(now),
    };
    enforcer::can_approve(
        voter,
        &pending,
        &votes,
        now,
        &core.policy.approvals.approver_role,
    )
}

/// Who may see a job: its requester, the service that submitted it, and approvers, auditors and
/// admins (the API and the portal apply the same rule).
pub fn may_see(job: &Job, who: &str, roles: &[String], approver_role: &str) -> bool {
    job.requester == who
        || job.submitted_by.as_deref() == Some(who)
        || roles
            .iter()
            .any(|r| r == approver_role || r == "auditor" || r == "admin")
}

/// Audit a refused vote (a vote by the requester, by someone without the role or a capability,
/// a second vote, one after expiry, on a decided job or replayed after use): a `portal-action`
/// row `vote.refused` with the job, the voter and why. The refusal stands whether or not the
/// row could be written.
async fn refused(
    core: &Core,
    voter: &Principal,
    job: &Job,
    verdict: Verdict,
    error: VoteError,
) -> VoteError {
    let mut event = refusal_event(&voter.id, verdict, &error.to_string());
    event.tool = job.tool_name.clone();
    event.risk_level = job.risk.as_str().to_string();
    event.job_id = Some(job.job_id.clone());
    event.call_hash = Some(job.call_hash.clone());
    event.context =
        serde_json::json!({ "operation": job.operation, "verdict": verdict.as_str() }).to_string();
    append_refusal(core, event).await;
    error
}

/// Audit a vote on a job that does not exist or that the voter may not see (they are told
/// "no such job" either way). The id is the caller's text, kept to its first 64 characters.
pub async fn refused_unseen(core: &Core, voter: &str, job_id: &str, verdict: Verdict) {
    let mut event = refusal_event(voter, verdict, "no such job, or not one the voter may see");
    event.job_id = Some(job_id.chars().take(64).collect());
    append_refusal(core, event).await;
}

fn refusal_event(voter: &str, verdict: Verdict, why: &str) -> NewAuditEvent {
    let mut event = NewAuditEvent::new(
        EventKind::PortalAction,
        voter,
        "countersign",
        "vote.refused",
        AuditAction::Deny,
        &format!("{} refused: {why}", verdict.as_str()),
        Risk::Low,
    );
    event.context = serde_json::json!({ "verdict": verdict.as_str() }).to_string();
    event
}

async fn append_refusal(core: &Core, event: NewAuditEvent) {
    if let Err(error) = core.audit.append(event).await {
        tracing::error!(%error, "could not audit a refused vote");
    }
}

/// The audit row of a vote the store counted, stating the quorum progress it reached.
fn vote_event(
    job: &Job,
    voter: &str,
    verdict: Verdict,
    comment: Option<&str>,
    tally: &VoteTally,
    now: chrono::DateTime<Utc>,
) -> NewAuditEvent {
    let (kind, action) = match verdict {
        Verdict::Approve => (EventKind::Approval, AuditAction::Approve),
        Verdict::Deny => (EventKind::Denial, AuditAction::Deny),
    };
    let summary = match verdict {
        Verdict::Approve if tally.status == JobStatus::Approved => format!(
            "approved; the quorum is reached ({} of {} approvals)",
            tally.approvals, tally.required
        ),
        Verdict::Approve => format!(
            "approved ({} of {} approvals)",
            tally.approvals, tally.required
        ),
        Verdict::Deny => format!("denied: {}", comment.unwrap_or_default()),
    };
    let mut event = NewAuditEvent::new(
        kind,
        voter,
        &job.tool_name,
        &job.operation,
        action,
        &summary,
        job.risk,
    );
    event.job_id = Some(job.job_id.clone());
    event.call_hash = Some(job.call_hash.clone());
    event.policy_hash = job.policy_hash.clone();
    event.approver = Some(voter.to_string());
    event.approved_at = (verdict == Verdict::Approve).then_some(now);
    event.context = serde_json::json!({
        "requester": job.requester,
        "comment": comment,
        "approvals": tally.approvals,
        "required": tally.required,
        "status": tally.status.as_str(),
    })
    .to_string();
    event
}

/// Cast `voter`'s vote on a job.
pub async fn vote(
    core: &Core,
    voter: &Principal,
    job_id: &str,
    verdict: Verdict,
    reason: Option<&str>,
) -> Result<Job, VoteError> {
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    if reason.is_some_and(|r| r.chars().count() > MAX_REASON_CHARS) {
        return Err(VoteError::ReasonTooLong);
    }
    let job = match core.store.job(job_id).await {
        Ok(job) => job,
        Err(StoreError::NotFound) => return Err(VoteError::NotFound),
        Err(error) => return Err(VoteError::Unavailable(error)),
    };
    if job.status != JobStatus::Queued {
        let error = VoteError::NotQueued(job.status.as_str().to_string());
        return Err(refused(core, voter, &job, verdict, error).await);
    }
    if verdict == Verdict::Deny && reason.is_none() {
        return Err(VoteError::ReasonRequired(
            "a denial needs a reason: it is what the AI assistant is told",
        ));
    }
    if verdict == Verdict::Approve && job.risk == Risk::Critical && reason.is_none() {
        return Err(VoteError::ReasonRequired(
            "approving a CRITICAL operation needs a comment",
        ));
    }
    let votes = core
        .store
        .votes(job_id)
        .await
        .map_err(VoteError::Unavailable)?;
    let now = Utc::now();
    let eligibility = eligibility(core, voter, &job, &votes, now);
    if !eligibility.allowed {
        let error = VoteError::NotEligible(eligibility.reasons);
        return Err(refused(core, voter, &job, verdict, error).await);
    }
    // Fail closed: the vote's audit row is written in the vote's own transaction, from what the
    // store decided (the real quorum progress), so a vote counts only with its row and a vote
    // the store refuses leaves no approval row behind.
    let comment = reason.map(str::to_string);
    let voter_id = voter.id.clone();
    let audit = move |job: &Job, tally: &VoteTally| {
        Some(vote_event(
            job,
            &voter_id,
            verdict,
            comment.as_deref(),
            tally,
            now,
        ))
    };
    let record = VoteRecord {
        job_id: job_id.to_string(),
        approver: voter.id.clone(),
        verdict,
        reason: reason.map(str::to_string),
        created_at: now,
    };
    let updated = match core.store.vote(&record, audit).await {
        Ok((updated, _)) => updated,
        Err(error) => {
            let error = match error {
                // The store's refusal of a second vote by the same person (a race the
                // eligibility check above could not see).
                StoreError::Conflict {
                    actual,
                    action: "vote again",
                    ..
                } => VoteError::NotEligible(vec![actual]),
                StoreError::Conflict { actual, .. } => VoteError::NotQueued(actual),
                StoreError::NotFound => return Err(VoteError::NotFound),
                other => return Err(VoteError::Unavailable(other)),
            };
            // Another vote decided first: audited as a refusal, not as an approval.
            return Err(refused(core, voter, &job, verdict, error).await);
        }
    };
    core.notify_job(&updated);
    Ok(updated)
}

/// Withdraw a request that has not started: only its requester, or the service that submitted
/// it for them (`caller_id`), may; audited, and waiting long-polls are woken. A job that runs or
/// ended is a conflict; one the caller may not see is not found.
pub async fn withdraw(
    core: &Core,
    caller_id: &str,
    job_id: &str,
) -> Result<Job, super::ServiceError> {
    use super::ServiceError;
    let job = match core.store.job(job_id).await {
        Ok(job) => job,
        Err(StoreError::NotFound) => return Err(ServiceError::not_found("no such job")),
        Err(error) => {
            return Err(ServiceError::unavailable(
                "the job could not be read",
                &error,
            ))
        }
    };
    if job.requester != caller_id && job.submitted_by.as_deref() != Some(caller_id) {
        return Err(ServiceError::forbidden(
            "not_requester",
            "only the requester can cancel a job",
        ));
    }
    let cancelled = match core.store.cancel(job_id, &job.requester, Utc::now()).await {
        Ok(job) => job,
        Err(StoreError::Conflict { actual, .. }) => {
            return Err(ServiceError::Conflict {
                code: "conflict",
                message: format!("the job is {actual} and can no longer be cancelled"),
            })
        }
        Err(StoreError::NotFound) => return Err(ServiceError::not_found("no such job")),
        Err(error) => {
            return Err(ServiceError::unavailable(
                "the job could not be cancelled",
                &error,
            ))
        }
    };
    let mut event = NewAuditEvent::new(
        EventKind::PortalAction,
        caller_id,
        &cancelled.tool_name,
        &cancelled.operation,
        AuditAction::Cancel,
        "job cancelled by its requester",
        cancelled.risk,
    );
    event.job_id = Some(cancelled.job_id.clone());
    event.call_hash = Some(cancelled.call_hash.clone());
    event.context = serde_json::json!({ "requester": cancelled.requester }).to_string();
    if let Err(error) = core.audit.append(event).await {
        tracing::error!(%error, "could not audit a cancellation");
    }
    core.notify_job(&cancelled);
    Ok(cancelled)
}
