//! Running what was allowed or approved, and hearing how it went: the rules every executor
//! (agents through the API, the server's own executors, tool servers reporting a result) goes
//! through.
//!
//! - Just before a job is handed out it is checked again ([`recheck`]): the approval window is
//!   open, the arguments still hash to the approved call, and the policy (if it changed) still
//!   permits it. A job that fails the check is not run: it ends failed, with the reason.
//! - Claims, heartbeats and results come only from an agent acting as itself
//!   ([`require_agent`]); refusals are audited.
//! - Every step is written to the job and the audit trail.

use super::idempotency::{self, Claim};
use super::{Caller, Core, ServiceError};
use crate::services::identity::api_tokens::AGENT_ROLE;
use crate::store::{
    AuditAction, EventKind, Job, JobOutcome, JobStatus, NewAuditEvent, Risk, Store, StoreError,
    MCP_GATEWAY_PREFIX, SERVER_EXECUTOR_PREFIX,
};
use chrono::{DateTime, Utc};
use enforcer::{Action, ExecutorKind, PolicySet, Principal, Request};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

message_error!(
    /// Why an approved job must not run now (it ends failed, with this reason).
    Refusal
);

/// Who should run a job of this operation: `executor:NAME` for the server's own executors, an
/// agent's id, or `None` for any agent.
pub fn assignment(policy: &PolicySet, tool: &str, operation: &str) -> Option<String> {
    let executor = policy.executor_for(tool, operation)?;
    match executor.kind {
        ExecutorKind::Process | ExecutorKind::Webhook => {
            Some(format!("{SERVER_EXECUTOR_PREFIX}{}", executor.name))
        }
        ExecutorKind::Agent => executor.agent.clone(),
    }
}

/// Jobs failing the re-check that one claim clears before giving up for now.
const MAX_SKIPS: usize = 16;
/// Output kept in the job's result; the rest is represented by its digest.
pub const OUTPUT_KEEP: usize = 64 * 1024;

/// Check an approved job again just before it runs. `Err` says why it must not.
pub fn recheck(policy: &PolicySet, job: &Job, now: DateTime<Utc>) -> Result<(), Refusal> {
    if job.approval_expires_at.is_some_and(|t| t <= now) {
        return Err("the approval window has closed".into());
    }
    let args: Map<String, Value> = serde_json::from_str(&job.params)
        .map_err(|_| "the job's arguments are not a JSON object".to_string())?;
    let request = Request {
        tool: job.tool_name.clone(),
        operation: job.operation.clone(),
        args,
        target: job.target.clone(),
    };
    if enforcer::call_hash(&request) != job.call_hash {
        return Err("the job's arguments differ from the call that was approved".into());
    }
    if job.policy_hash.as_deref() != Some(policy.hash()) {
        // The policy changed since the decision: decide again with what was granted then.
        let principal = Principal {
            id: job.requester.clone(),
            roles: Default::default(),
            capabilities: job.requested_capabilities.iter().cloned().collect(),
        };
        let decision = enforcer::evaluate(&request, &principal, policy);
        match decision.action {
            Action::Deny => {
                return Err(format!(
                    "the policy changed and now denies this call: {}",
                    decision.reasons.join("; ")
                )
                .into())
            }
            Action::RequireApproval
                if i64::from(decision.approvals_required) > i64::from(job.approvals_required) =>
            {
                return Err(format!(
                    "the policy changed and now needs {} approvals",
                    decision.approvals_required
                )
                .into())
            }
            _ => {}
        }
    }
    Ok(())
}

pub fn execution_event(job: &Job, actor: &str, status: &str, reason: &str) -> NewAuditEvent {
    let mut event = NewAuditEvent::new(
        EventKind::Execution,
        actor,
        &job.tool_name,
        &job.operation,
        AuditAction::Execute,
        reason,
        job.risk,
    );
    event.execution_status = Some(status.to_string());
    event.job_id = Some(job.job_id.clone());
    event.call_hash = Some(job.call_hash.clone());
    event.policy_hash = job.policy_hash.clone();
    event
}

/// Write an execution step to the audit trail. A job step is already in the job's row, so a
/// failed audit write is logged loudly rather than undoing it.
pub async fn audit_step(core: &Core, event: NewAuditEvent) {
    if let Some(status) = &event.execution_status {
        core.metrics.execution(status);
    }
    if let Err(error) = core.audit.append(event).await {
        tracing::error!(%error, "could not audit an execution step");
    }
}

/// Claims, heartbeats and results come only from an execution agent's own identity: the
/// `agent` role ([`AGENT_ROLE`]), acting as the agent it is named after (for claims, the agent in
/// the path). Anyone else gets 403, and the attempt is audited (the refusal stands whether or not
/// the row could be written).
pub async fn require_agent(
    core: &Core,
    caller: &Caller,
    agent_id: Option<&str>,
    what: &str,
    job_id: Option<&str>,
) -> Result<(), ServiceError> {
    let is_agent = caller.roles.iter().any(|r| r == AGENT_ROLE);
    let same = agent_id.is_none_or(|id| id == caller.id);
    // Names the server's executors and the MCP gateway claim under are never an agent's.
    let reserved = [SERVER_EXECUTOR_PREFIX, MCP_GATEWAY_PREFIX]
        .iter()
        .any(|prefix| caller.id.starts_with(prefix));
    if is_agent && same && !reserved {
        return Ok(());
    }
    let why = if reserved {
        "that name is reserved for the server's own executors and the MCP gateway"
    } else if is_agent {
        "an agent claims jobs as itself (its token's name)"
    } else {
        "only an execution agent's token (`countersign token create --agent NAME`) may do this"
    };
    let mut event = NewAuditEvent::new(
        EventKind::PortalAction,
        &caller.id,
        "countersign",
        "agent.refused",
        AuditAction::Deny,
        &format!("{what} refused: {why}"),
        Risk::Medium,
    );
    event.job_id = job_id.map(|id| id.chars().take(64).collect());
    event.context = json!({
        "attempt": what,
        "agent_id": agent_id.map(|id| id.chars().take(128).collect::<String>()),
        "caller_kind": caller.kind,
    })
    .to_string();
    if let Err(error) = core.audit.append(event).await {
        tracing::error!(%error, "could not audit a refused agent call");
    }
    let code = if is_agent {
        "not_this_agent"
    } else {
        "not_an_agent"
    };
    Err(ServiceError::forbidden(code, why))
}

/// Lease the next approved job for `owner` that passes the re-check, and audit the pick; jobs
/// that fail the re-check end failed (audited) and the next one is tried. Shared by agents'
/// claims and the server's own executors.
pub async fn lease_next(core: &Core, owner: &str) -> Result<Option<Job>, StoreError> {
    for _ in 0..MAX_SKIPS {
        let now = Utc::now();
        let Some(job) = core.store.claim(owner, core.lease_secs, now).await? else {
            return Ok(None);
        };
        match recheck(&core.policy, &job, now) {
            Ok(()) => {
                audit_step(
                    core,
                    execution_event(&job, owner, "picked", &format!("picked by {owner}")),
                )
                .await;
                core.notify_job(&job);
                return Ok(Some(job));
            }
            Err(reason) => {
                let outcome = JobOutcome {
                    status: JobStatus::Failed,
                    result: None,
                    error: Some(format!("not run: {reason}")),
                };
                let ended = core.store.finish(&job.job_id, owner, &outcome, now).await?;
                let mut event = execution_event(
                    &ended,
                    crate::services::maintenance::SYSTEM_CALLER,
                    "failed",
                    &format!("not run: {reason}"),
                );
                event.decision_action = AuditAction::Deny.as_str().into();
                event.error = Some(reason.0);
                audit_step(core, event).await;
                core.notify_job(&ended);
            }
        }
    }
    Ok(None)
}

/// How a run went, as an agent or a tool server reports it (and as the server's own executors
/// record it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunReport {
    /// `success`, `failure` or `timeout`.
    pub status: String,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// What the run printed (at most 64 KiB is kept).
    #[serde(default)]
    pub output: Option<String>,
    /// SHA-256 of the complete output.
    #[serde(default)]
    pub output_digest: Option<String>,
    /// The complete output's length, when more was printed than was kept.
    #[serde(default)]
    pub output_bytes: Option<u64>,
    /// What changed, like `service:nginx:restarted`, `package:openssl:upgraded`.
    #[serde(default)]
    pub side_effects: Vec<String>,
    #[serde(default)]
    pub error: Option<String>,
}

impl RunReport {
    pub fn job_status(&self) -> Option<JobStatus> {
        match self.status.as_str() {
            "success" => Some(JobStatus::Completed),
            "failure" => Some(JobStatus::Failed),
            "timeout" => Some(JobStatus::Timeout),
            _ => None,
        }
    }
}

/// At most [`OUTPUT_KEEP`] bytes of `text`, cut at a character boundary.
pub fn cap_output(text: &str) -> String {
    let mut end = text.len().min(OUTPUT_KEEP);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

fn kept_output(output: Option<&str>) -> Option<String> {
    output.map(cap_output)
}

/// An allowed call whose run is reported: what its decision row says of it.
#[derive(Debug, Clone)]
pub struct AllowedCall {
    /// The decision's audit row.
    pub audit_id: String,
    pub requester: String,
    pub tool: String,
    pub operation: String,
    pub risk: Risk,
    pub call_hash: Option<String>,
    pub policy_hash: Option<String>,
}

impl AllowedCall {
    /// The execution row of its run, as `reported_by` reported it.
    fn run_event(&self, reported_by: &str, report: &RunReport) -> NewAuditEvent {
        let mut event = NewAuditEvent::new(
            EventKind::Execution,
            &self.requester,
            &self.tool,
            &self.operation,
            AuditAction::Execute,
            &format!("{reported_by} reported {}", report.status),
            self.risk,
        );
        event.execution_status = Some(report.status.clone());
        event.call_hash = self.call_hash.clone();
        event.policy_hash = self.policy_hash.clone();
        report_event(&mut event, report);
        event.context = json!({
            "decision_audit_id": self.audit_id,
            "reported_by": reported_by,
            "exit_code": report.exit_code,
            "output_digest": report.output_digest,
        })
        .to_string();
        event
    }
}

/// Record the run of a call this process allowed and ran itself (the MCP gateway): one
/// execution row, like [`decision_result`]'s, from what the gateway already knows of the
/// decision. Nothing is read first and no idempotency key is kept: the gateway reports each of
/// its runs exactly once, so the row goes to the audit writer's next batch, beside the next
/// call's decision, instead of four transactions in a row on the one write connection.
pub async fn record_allowed_run(
    core: &Core,
    reported_by: &str,
    allowed: &AllowedCall,
    report: &RunReport,
) -> Result<(), ServiceError> {
    core.metrics.execution(&report.status);
    core.audit
        .append(allowed.run_event(reported_by, report))
        .await
        .map(|_| ())
        .map_err(|e| ServiceError::unavailable("the result could not be recorded", &e))
}

fn report_event(event: &mut NewAuditEvent, report: &RunReport) {
    event.execution_duration_ms = report.duration_ms.and_then(|d| i64::try_from(d).ok());
    event.side_effects = Some(json!(report.side_effects).to_string());
    event.error = report.error.clone();
}

/// End a leased job with a run's report: the job's row, then the audit trail, then waiters.
pub async fn record_result(
    core: &Core,
    job_id: &str,
    owner: &str,
    report: &RunReport,
    status: JobStatus,
    reason: &str,
) -> Result<Job, StoreError> {
    let outcome = JobOutcome {
        status,
        result: Some(
            json!({
                "exit_code": report.exit_code,
                "duration_ms": report.duration_ms,
                "output": kept_output(report.output.as_deref()),
                "output_digest": report.output_digest,
                "output_bytes": report.output_bytes,
                "side_effects": report.side_effects,
            })
            .to_string(),
        ),
        error: report.error.clone(),
    };
    let job = core
        .store
        .finish(job_id, owner, &outcome, Utc::now())
        .await?;
    let mut event = execution_event(&job, owner, &report.status, reason);
    report_event(&mut event, report);
    event.context =
        json!({ "exit_code": report.exit_code, "output_digest": report.output_digest }).to_string();
    audit_step(core, event).await;
    core.notify_job(&job);
    Ok(job)
}

/// Leases held by the server's own executors are never touched from outside (whatever a
/// caller's identity provider lets it be called): such a job is one the caller cannot see.
fn refuse_server_owner(caller: &Caller) -> Result<(), ServiceError> {
    if caller.id.starts_with(SERVER_EXECUTOR_PREFIX) || caller.id.starts_with(MCP_GATEWAY_PREFIX) {
        return Err(no_such_job());
    }
    Ok(())
}

fn no_such_job() -> ServiceError {
    ServiceError::not_found("no such job")
}

/// A lease operation's store error in the agent's words.
fn lease_error(error: StoreError, what: &'static str) -> ServiceError {
    match error {
        StoreError::NotFound => no_such_job(),
        StoreError::Conflict { actual, .. } => ServiceError::Conflict {
            code: "lease_lost",
            message: format!("the job is {actual} and not leased to this agent"),
        },
        other => ServiceError::unavailable(what, &other),
    }
}

/// Admit an agent's call about job `job_id` (`what`: heartbeat, result) before anything else is
/// read: never a lease of the server's own executors, and only an agent acting as itself
/// (refusals audited).
pub async fn admit_agent(
    core: &Core,
    caller: &Caller,
    what: &str,
    job_id: &str,
) -> Result<(), ServiceError> {
    refuse_server_owner(caller)?;
    require_agent(core, caller, None, what, Some(job_id)).await
}

/// The job `job_id` when `caller` (an agent acting as itself) holds its lease.
async fn leased_to(
    core: &Core,
    caller: &Caller,
    job_id: &str,
    what: &str,
) -> Result<Job, ServiceError> {
    admit_agent(core, caller, what, job_id).await?;
    // A job not leased to this agent is one it cannot see: not found, and nothing about its
    // state.
    let job = core
        .store
        .job(job_id)
        .await
        .map_err(|e| lease_error(e, "the job could not be read"))?;
    if job.lease_owner.as_deref() != Some(caller.id.as_str()) {
        return Err(no_such_job());
    }
    Ok(job)
}

/// Lease the next approved job for agent `agent_id` (the caller, acting as itself).
pub async fn claim(core: &Core, agent_id: &str) -> Result<Option<Job>, ServiceError> {
    lease_next(core, agent_id)
        .await
        .map_err(|e| ServiceError::unavailable("no job could be claimed", &e))
}

/// The agent is at work: extend its lease (the first heartbeat marks the job executing).
pub async fn heartbeat(core: &Core, caller: &Caller, job_id: &str) -> Result<Job, ServiceError> {
    let before = leased_to(core, caller, job_id, "heartbeat").await?;
    let job = core
        .store
        .extend_lease(job_id, &caller.id, core.lease_secs, Utc::now())
        .await
        .map_err(|e| lease_error(e, "the lease could not be extended"))?;
    if before.status == JobStatus::Picked {
        audit_step(
            core,
            execution_event(
                &job,
                &caller.id,
                "executing",
                &format!("agent {} started it", caller.id),
            ),
        )
        .await;
        core.notify_job(&job);
    }
    Ok(job)
}

/// The agent holding the lease ends the job with its run's report.
pub async fn agent_result(
    core: &Core,
    caller: &Caller,
    job_id: &str,
    report: &RunReport,
    status: JobStatus,
) -> Result<Job, ServiceError> {
    leased_to(core, caller, job_id, "result").await?;
    record_result(
        core,
        job_id,
        &caller.id,
        report,
        status,
        &format!("agent {} reported {}", caller.id, report.status),
    )
    .await
    .map_err(|e| lease_error(e, "the result could not be recorded"))
}

/// The tool server that asked for decision `audit_id` reports how the allowed call went, once:
/// the decision must be its own and an `allow`. Returns the answer's JSON text (`audit_id`,
/// `audit_seq` of the execution row); a retry with the same report gets the same answer, any
/// other second report a conflict.
pub async fn decision_result(
    core: &Core,
    caller: &Caller,
    audit_id: &str,
    report: &RunReport,
    report_hash: &str,
) -> Result<String, ServiceError> {
    let no_such_decision = || ServiceError::not_found("no such decision");
    let row = core
        .store
        .audit_row(audit_id, EventKind::Decision)
        .await
        .map_err(|e| ServiceError::unavailable("the decision could not be read", &e))?
        .ok_or_else(no_such_decision)?;
    let decision = row.event;
    // The context names the service that asked when it asked for someone else; otherwise the
    // caller is the requester.
    let asked_by = serde_json::from_str::<Value>(&decision.context)
        .ok()
        .map(|c| {
            c["caller"]
                .as_str()
                .map_or_else(|| decision.caller_id.clone(), str::to_string)
        });
    if asked_by.as_deref() != Some(caller.id.as_str()) {
        return Err(no_such_decision());
    }
    if decision.action() != Some(AuditAction::Allow) {
        return Err(ServiceError::Conflict {
            code: "not_allowed",
            message: format!(
                "the decision was {}: only allowed calls are reported here (approved jobs report through their job)",
                decision.decision_action
            ),
        });
    }
    let key = format!("result:{audit_id}");
    let unavailable = |e: &dyn std::fmt::Display| {
        ServiceError::unavailable("the result could not be recorded", e)
    };
    match idempotency::claim(&core.store, &caller.id, &key, report_hash)
        .await
        .map_err(|e| unavailable(&e))?
    {
        Claim::Fresh => {}
        Claim::Replay(answer) => return Ok(answer),
        Claim::InFlight | Claim::Mismatch => {
            return Err(ServiceError::Conflict {
                code: "result_already_reported",
                message: "a result for this decision was already reported".to_string(),
            })
        }
    }
    let allowed = AllowedCall {
        // Decision rows hold one of the four levels (imports are checked); a damaged one is
        // recorded at the top.
        risk: decision.risk().unwrap_or(Risk::Critical),
        audit_id: audit_id.to_string(),
        requester: decision.caller_id,
        tool: decision.tool,
        operation: decision.operation,
        call_hash: decision.call_hash,
        policy_hash: decision.policy_hash,
    };
    let event = allowed.run_event(&caller.id, report);
    core.metrics.execution(&report.status);
    match core.audit.append(event).await {
        Ok(receipt) => {
            let answer = json!({ "audit_id": receipt.id, "audit_seq": receipt.seq }).to_string();
            if let Err(error) = idempotency::complete(&core.store, &caller.id, &key, &answer).await
            {
                tracing::error!(%error, "could not store a result's answer");
            }
            Ok(answer)
        }
        Err(error) => {
            idempotency::release(&core.store, &caller.id, &key).await;
            Err(unavailable(&error))
        }
    }
}
