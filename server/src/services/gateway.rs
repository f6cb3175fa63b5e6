//! The MCP gateway's rules, free of the protocol: what a tool call from an assistant becomes
//! (a decision, or the open job of the same call), how a held call waits for people, and how
//! the gateway runs an approved call exactly once and records every run.
//!
//! The protocol edge (`crate::mcp`) speaks MCP to clients and upstreams and calls these.

use super::decisions::{self, Route};
use super::execution::{self, RunReport};
use super::{Caller, Core, ServiceError};
use crate::store::{Job, JobStatus, Store, MCP_GATEWAY_PREFIX};
use enforcer::mcp::UpstreamPolicy;
use enforcer::wire::DecisionInput;
use enforcer::Action;
use serde_json::{Map, Value};
use std::time::Duration;

/// What the gateway does with a tool call.
#[derive(Debug)]
pub enum Admission {
    /// Allowed: pass it on, then report the run against this decision.
    Run { allowed: execution::AllowedCall },
    /// Denied: tell the assistant why.
    Denied { reasons: Vec<String> },
    /// Held for people: a new job, or the open job of the same call (`attached`).
    Held { job: Box<Job>, attached: bool },
}

/// A tool call as the gateway received it.
pub struct ToolCall<'a> {
    pub upstream: &'a str,
    /// The upstream's own name of the tool.
    pub tool: &'a str,
    pub arguments: &'a Map<String, Value>,
    /// The assistant's session, kept with the audit row.
    pub session: Option<String>,
    /// The person a delegating caller makes the call for (`countersign mcp --on-behalf-of`).
    pub on_behalf_of: Option<&'a str>,
    /// Whether the server's `mcp` executor may run it once approved when no call is waiting:
    /// for calls that came to the server itself (`/mcp`), whose upstreams it serves; not for a
    /// desktop's `countersign mcp`, whose upstreams may be the desktop's own.
    pub unattended: bool,
}

impl ToolCall<'_> {
    /// Whose call it is: the person named, or the caller.
    pub fn requester<'c>(&'c self, caller: &'c Caller) -> &'c str {
        self.on_behalf_of.unwrap_or(&caller.id)
    }
}

/// The policy request a call is decided as. A tool the policy does not know becomes a request
/// for the tool `mcp:UPSTREAM`, which no policy has, so the enforcer denies it and the audit
/// trail records it like any unknown tool; `refusal` says why in the gateway's words.
pub fn policy_input(
    policy: Option<&UpstreamPolicy>,
    call: &ToolCall<'_>,
) -> (DecisionInput, Option<String>) {
    let mapped = match policy {
        None => Err(enforcer::mcp::McpRefusal::UnknownUpstream {
            upstream: call.upstream.to_string(),
        }),
        Some(upstream) => match upstream.tool(call.tool) {
            None => Err(enforcer::mcp::McpRefusal::UnknownTool {
                upstream: call.upstream.to_string(),
                tool: call.tool.to_string(),
            }),
            Some(map) => map.request(call.tool, call.arguments),
        },
    };
    let (request, refusal) = match mapped {
        Ok(request) => (request, None),
        Err(refusal) => (
            enforcer::Request {
                tool: format!("{MCP_GATEWAY_PREFIX}{}", call.upstream),
                operation: call.tool.to_string(),
                args: call.arguments.clone(),
                target: None,
            },
            Some(refusal.to_string()),
        ),
    };
    let input = DecisionInput {
        body_hash: String::new(),
        tool: request.tool,
        operation: request.operation,
        args: request.args,
        target: request.target,
        reason: None,
        on_behalf_of: call.on_behalf_of.map(str::to_string),
        session: call.session.clone(),
    };
    (input, refusal)
}

/// Decide a tool call for `caller` (or for the person it names, when the caller may act for
/// people), or attach it to the open job of the same call (same requester, same call hash): an
/// assistant's retry never queues a second request.
pub async fn admit(
    core: &Core,
    caller: &Caller,
    call: &ToolCall<'_>,
) -> Result<Admission, ServiceError> {
    if let Some(person) = call.on_behalf_of {
        decisions::may_act_for(core, caller, person)?;
    }
    let requester = call.requester(caller);
    let (input, refusal) = policy_input(core.policy.mcp.get(call.upstream), call);
    let capabilities = caller.capabilities.iter().cloned().collect();
    let decided = decisions::decide(
        core,
        caller,
        &input,
        requester,
        capabilities,
        Route::McpGateway {
            upstream: call.upstream,
            tool: call.tool,
            arguments: call.arguments,
            unattended: call.unattended,
        },
    )
    .await?;
    Ok(match (decided.decision.action, decided.job) {
        (Action::Allow, _) => Admission::Run {
            allowed: execution::AllowedCall {
                audit_id: decided.receipt.id,
                requester: requester.to_string(),
                tool: input.tool.clone(),
                operation: input.operation.clone(),
                risk: decided.decision.risk,
                call_hash: Some(decided.decision.call_hash.clone()),
                policy_hash: Some(decided.decision.policy_hash.clone()),
            },
        },
        (Action::RequireApproval, Some(job)) => Admission::Held {
            job: Box::new(job),
            attached: decided.attached,
        },
        (Action::RequireApproval, None) => {
            return Err(ServiceError::unavailable(
                "the request for approval could not be queued",
                &"a require_approval decision came back without its job",
            ))
        }
        (Action::Deny, _) => Admission::Denied {
            reasons: refusal
                .into_iter()
                .chain(decided.decision.reasons.iter().cloned())
                .collect(),
        },
    })
}

/// Where a held call stands.
#[derive(Debug)]
pub enum Waiting {
    /// Approved: the gateway may claim and run it now.
    Approved(Job),
    /// It ended without running here: denied, expired, cancelled, or already run or running
    /// (by another call that collected it).
    Ended(Job),
    /// Still waiting for people after the hold; `approvals` counted so far.
    StillQueued { job: Job, approvals: u32 },
}

/// The job as it is now.
pub async fn current(core: &Core, job_id: &str) -> Result<Job, ServiceError> {
    core.store
        .job(job_id)
        .await
        .map_err(|e| ServiceError::unavailable("the job could not be read", &e))
}

/// The reviewer's reason, when a job was denied.
pub async fn denial_reason(core: &Core, job_id: &str) -> Option<String> {
    let votes = core.store.votes(job_id).await.ok()?;
    votes
        .into_iter()
        .find(|v| v.verdict == enforcer::Verdict::Deny)
        .and_then(|v| v.reason)
}

/// How many approvals a queued job has.
pub async fn approvals_of(core: &Core, job_id: &str) -> Result<u32, ServiceError> {
    let votes = core
        .store
        .votes(job_id)
        .await
        .map_err(|e| ServiceError::unavailable("the votes could not be read", &e))?;
    let approvals = votes
        .iter()
        .filter(|v| v.verdict == enforcer::Verdict::Approve)
        .count();
    Ok(u32::try_from(approvals).unwrap_or(u32::MAX))
}

/// Wait until the job is no longer queued or `hold` has passed, calling `progress` with the
/// approvals so far every `every`. Status changes on this replica wake it at once; other
/// replicas' (and other processes') are seen by reading the job again each second.
pub async fn wait<F, Fut>(
    core: &Core,
    job_id: &str,
    hold: Duration,
    every: Duration,
    mut progress: F,
) -> Result<Waiting, ServiceError>
where
    F: FnMut(Job, u32) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let deadline = tokio::time::Instant::now() + hold;
    let mut next_progress = tokio::time::Instant::now();
    let mut events = core.job_events.subscribe();
    loop {
        let job = core
            .store
            .job(job_id)
            .await
            .map_err(|e| ServiceError::unavailable("the job could not be read", &e))?;
        match job.status {
            JobStatus::Queued => {}
            JobStatus::Approved => return Ok(Waiting::Approved(job)),
            _ => return Ok(Waiting::Ended(job)),
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            let approvals = approvals_of(core, job_id).await?;
            return Ok(Waiting::StillQueued { job, approvals });
        }
        if now >= next_progress {
            let approvals = approvals_of(core, job_id).await?;
            progress(job, approvals).await;
            next_progress = now + every;
        }
        let pause = Duration::from_secs(1)
            .min(deadline.saturating_duration_since(now))
            .min(
                next_progress
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(50)),
            );
        job_changed(&mut events, job_id, pause).await;
    }
}

/// Wait until `job_id` changes on this replica (or events were missed), at most `pause`.
async fn job_changed(
    events: &mut tokio::sync::broadcast::Receiver<(String, JobStatus)>,
    job_id: &str,
    pause: Duration,
) {
    let _ = tokio::time::timeout(pause, async {
        loop {
            match events.recv().await {
                Ok((id, _)) if id == job_id => return,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    std::future::pending::<()>().await
                }
            }
        }
    })
    .await;
}

/// Whether `job` is a gateway call `caller` made for `requester`: the only jobs a caller's
/// tasks and input-required retries may name (any other is as good as not there).
pub fn is_callers(job: &Job, caller: &Caller, requester: &str) -> bool {
    job.submitted_by.as_deref() == Some(caller.id.as_str())
        && job.requester == requester
        && job
            .target_agent_id
            .as_deref()
            .is_some_and(|a| a.starts_with(MCP_GATEWAY_PREFIX))
}

/// Wait, as long as it takes, until people have decided `job_id` (it is no longer queued): the
/// job as it is then. Woken at once by a change on this replica; others' changes are read every
/// `poll` (for a task's runner, which may wait hours: a few seconds, not every second).
pub async fn until_decided(core: &Core, job_id: &str, poll: Duration) -> Result<Job, ServiceError> {
    let mut events = core.job_events.subscribe();
    loop {
        let job = current(core, job_id).await?;
        if job.status != JobStatus::Queued {
            return Ok(job);
        }
        job_changed(&mut events, job_id, poll).await;
    }
}

/// Wait until a job that another call is running has ended, or `limit` has passed: the job as
/// it is then.
pub async fn until_ended(core: &Core, job_id: &str, limit: Duration) -> Result<Job, ServiceError> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut events = core.job_events.subscribe();
    loop {
        let job = current(core, job_id).await?;
        if job.status.is_final() || tokio::time::Instant::now() >= deadline {
            return Ok(job);
        }
        // Woken by a change of this job on this replica; other processes' changes are read
        // every 500 ms.
        job_changed(&mut events, job_id, Duration::from_millis(500)).await;
    }
}

/// Claim an approved job for this gateway to run: exactly one claim wins, whichever call (or
/// gateway process) collects it. `None`: someone else claimed it, or the re-check refused it
/// (then it ended failed, audited).
pub async fn claim(core: &Core, job: &Job) -> Result<Option<Job>, ServiceError> {
    let owner = owner(&job.job_id);
    if job.target_agent_id.as_deref() != Some(owner.as_str()) {
        return Err(ServiceError::Conflict {
            code: "not_the_gateways",
            message: "this request is run by an executor or agent, not by the MCP gateway".into(),
        });
    }
    let claimed = execution::lease_next(core, &owner)
        .await
        .map_err(|e| ServiceError::unavailable("the job could not be claimed", &e))?;
    Ok(claimed.filter(|claimed| claimed.job_id == job.job_id))
}

/// Keep the gateway's lease on a job it is running (renewed every third of the lease) for as
/// long as this future runs: a long upstream call is not taken for a dead runner, so the job is
/// never handed out again while it runs.
pub async fn keep_leased(core: &Core, job_id: &str) {
    let owner = owner(job_id);
    let every = Duration::from_secs(u64::try_from(core.lease_secs / 3).unwrap_or(1).max(1));
    loop {
        tokio::time::sleep(every).await;
        if let Err(error) = core
            .store
            .extend_lease(job_id, &owner, core.lease_secs, chrono::Utc::now())
            .await
        {
            tracing::warn!(%error, job = %job_id, "the MCP gateway could not extend its lease");
        }
    }
}

/// The lease owner the gateway runs a job as.
pub fn owner(job_id: &str) -> String {
    format!("{MCP_GATEWAY_PREFIX}{job_id}")
}

/// Check that the call in hand is the approved one before running it.
pub fn same_call(core: &Core, job: &Job, call: &ToolCall<'_>) -> bool {
    let (input, refusal) = policy_input(core.policy.mcp.get(call.upstream), call);
    refusal.is_none() && enforcer::call_hash(&input.request()) == job.call_hash
}

/// Who ran an approved gateway job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// The call that collected the approval (the waiting client's, or a repeated one).
    Call,
    /// The server's `mcp` executor: no call collected the approval in time.
    Executor,
}

/// Record how an approved job's run went, and end the job.
pub async fn finish(
    core: &Core,
    job: &Job,
    report: &RunReport,
    runner: Runner,
) -> Result<Job, ServiceError> {
    let status = report.job_status().unwrap_or(JobStatus::Failed);
    let owner = owner(&job.job_id);
    let by = match runner {
        Runner::Call => "the MCP gateway ran it upstream for the waiting call",
        Runner::Executor => "the mcp executor ran it upstream (no call was waiting)",
    };
    execution::record_result(
        core,
        &job.job_id,
        &owner,
        report,
        status,
        &format!("{by}: {}", report.status),
    )
    .await
    .map_err(|e| ServiceError::unavailable("the run could not be recorded", &e))
}

/// How long an approved gateway job waits for a call to collect it before the server's `mcp`
/// executor runs it instead.
pub const COLLECT_GRACE: Duration = Duration::from_secs(5);

/// Approved gateway jobs no call has collected within [`COLLECT_GRACE`], never retried (at
/// most `limit`).
pub async fn unattended(core: &Core, limit: i64) -> Result<Vec<Job>, ServiceError> {
    let now = chrono::Utc::now();
    let grace =
        chrono::Duration::from_std(COLLECT_GRACE).unwrap_or_else(|_| chrono::Duration::zero());
    core.store
        .unattended_gateway_jobs(now - grace, now, limit)
        .await
        .map_err(|e| ServiceError::unavailable("the approved MCP calls could not be read", &e))
}

/// An approved gateway call as the server's `mcp` executor runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamCall {
    pub upstream: String,
    pub tool: String,
    /// The assistant's arguments as it sent them.
    pub arguments: Map<String, Value>,
    /// Whether the call came to the server itself, so the server may run it unattended.
    pub unattended: bool,
}

/// The MCP call an approved gateway job stands for (from the job's decision row, as the
/// gateway recorded it).
pub async fn upstream_call(core: &Core, job: &Job) -> Result<UpstreamCall, ServiceError> {
    let missing = || ServiceError::Conflict {
        code: "not_an_mcp_call",
        message: "the job's decision does not name the MCP tool it was asked for".into(),
    };
    let audit_id = job.decision_audit_id.as_deref().ok_or_else(missing)?;
    let row = core
        .store
        .audit_row(audit_id, crate::store::EventKind::Decision)
        .await
        .map_err(|e| ServiceError::unavailable("the job's decision could not be read", &e))?
        .ok_or_else(missing)?;
    let context: Value = serde_json::from_str(&row.event.context).map_err(|_| missing())?;
    let (upstream, tool, arguments, unattended) =
        decisions::mcp_call_of(&context).ok_or_else(missing)?;
    Ok(UpstreamCall {
        upstream: upstream.to_string(),
        tool: tool.to_string(),
        arguments: arguments.clone(),
        unattended,
    })
}

/// Record the run of a call the gateway allowed and ran (see
/// [`execution::record_allowed_run`]).
pub async fn report_allowed(
    core: &Core,
    caller: &Caller,
    allowed: &execution::AllowedCall,
    report: &RunReport,
) -> Result<(), ServiceError> {
    execution::record_allowed_run(core, &caller.id, allowed, report).await
}

/// A run's report from an upstream's answer: its text (digested, at most 64 KiB kept), how
/// long it took, and whether the upstream said it failed.
pub fn run_report(output: &str, failed: bool, took: Duration) -> RunReport {
    RunReport {
        status: if failed { "failure" } else { "success" }.to_string(),
        duration_ms: Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX)),
        exit_code: None,
        output: Some(execution::cap_output(output)),
        output_digest: Some(enforcer::sha256_hex(output.as_bytes())),
        output_bytes: (output.len() > execution::OUTPUT_KEEP)
            .then(|| u64::try_from(output.len()).unwrap_or(u64::MAX)),
        side_effects: Vec::new(),
        error: None,
    }
}
