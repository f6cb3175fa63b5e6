//! Running approved jobs on the server: the `process` and `webhook` executors, and the `mcp`
//! executor, which runs approved MCP gateway calls that no call collected (the assistant's
//! client stopped waiting) through the server's own connection to the upstream.
//!
//! A job is assigned when it is queued ([`assignment`]): to `executor:NAME` when the policy's
//! executor for its operation runs on the server, to the named agent (or to any agent) when it
//! is an `agent` executor. The [`Dispatcher`] listens to job changes on this replica and leases a
//! job the moment it is approved (an event, not a poll); a slower sweep picks up approvals made
//! on other replicas and jobs returned by lapsed leases. Each job is leased through the same
//! re-check as an agent's claim (window open, call hash, policy), heartbeats while it runs, and
//! every step goes to the job and the audit trail.

pub mod process;
pub mod webhook;

use crate::services::execution::{
    audit_step, execution_event, lease_next, record_result, RunReport,
};
use crate::services::gateway;
use crate::store::{Job, JobStatus, Store, SERVER_EXECUTOR_PREFIX};
use crate::AppState;
use enforcer::executor::TemplateError;
use enforcer::{Executor, ExecutorKind, JobCall, PolicySet};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast::error::RecvError, OwnedSemaphorePermit, Semaphore};

/// Jobs the server runs at once (further approved jobs wait for a slot).
pub const SLOTS: usize = 8;
/// Approved MCP calls the `mcp` executor runs at once, apart from the other executors' slots.
pub const MCP_SLOTS: usize = 8;
/// Approved MCP calls looked at per sweep.
const MCP_BATCH: i64 = 200;
/// How often approved jobs are looked for without an event (other replicas, retries).
const SWEEP: Duration = Duration::from_secs(5);

pub use crate::services::execution::assignment;

/// Fill an executor's argv for a job.
pub fn command_for(executor: &Executor, job: &Job) -> Result<Vec<String>, TemplateError> {
    let args: Map<String, Value> = serde_json::from_str(&job.params)
        .map_err(|_| TemplateError("the job's arguments are not a JSON object".into()))?;
    executor.command(&JobCall {
        job_id: &job.job_id,
        tool: &job.tool_name,
        operation: &job.operation,
        target: job.target.as_deref(),
        args: &args,
    })
}

/// Warn at start-up about webhook executors whose signing secret is not set (their jobs would
/// fail, unsent).
pub fn check_secrets(policy: &PolicySet) {
    for executor in policy.executors.values() {
        if let Some(var) = &executor.secret_env {
            if !std::env::var(var).is_ok_and(|v| !v.is_empty()) {
                tracing::warn!(executor = %executor.name, variable = %var, "webhook executor has no signing secret; its approved jobs will fail without being sent");
            }
        }
    }
}

/// Where webhook signing secrets come from (the environment, unless a test says otherwise).
pub type SecretLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Leases and runs the server's own approved jobs.
#[derive(Clone)]
pub struct Dispatcher {
    state: AppState,
    client: reqwest::Client,
    slots: Arc<Semaphore>,
    mcp_slots: Arc<Semaphore>,
    secrets: SecretLookup,
}

impl Dispatcher {
    pub fn new(state: AppState) -> Result<Dispatcher, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Dispatcher {
            state,
            client,
            slots: Arc::new(Semaphore::new(SLOTS)),
            mcp_slots: Arc::new(Semaphore::new(MCP_SLOTS)),
            secrets: Arc::new(|name: &str| std::env::var(name).ok()),
        })
    }

    /// Read webhook secrets from somewhere other than the environment.
    pub fn with_secrets(mut self, secrets: SecretLookup) -> Dispatcher {
        self.secrets = secrets;
        self
    }

    /// Run until the runtime stops.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut events = self.state.job_events.subscribe();
            let mut sweep = tokio::time::interval(SWEEP);
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Ok((job_id, JobStatus::Approved)) => self.on_approved(&job_id).await,
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => self.sweep().await,
                        Err(RecvError::Closed) => break,
                    },
                    _ = sweep.tick() => self.sweep().await,
                }
            }
        })
    }

    async fn on_approved(&self, job_id: &str) {
        match self.state.store.job(job_id).await {
            Ok(job) => {
                if let Some(name) = job
                    .target_agent_id
                    .as_deref()
                    .and_then(|t| t.strip_prefix(SERVER_EXECUTOR_PREFIX))
                {
                    self.drain(name).await;
                }
            }
            Err(error) => tracing::warn!(%error, job_id, "could not read an approved job"),
        }
    }

    /// Look for approved jobs of every server-side executor.
    pub async fn sweep(&self) {
        self.run_uncollected_mcp_calls().await;
        let names: Vec<String> = self
            .state
            .policy
            .executors
            .values()
            .filter(|e| e.kind != ExecutorKind::Agent)
            .map(|e| e.name.clone())
            .collect();
        for name in names {
            self.drain(&name).await;
        }
    }

    /// The `mcp` executor: approved gateway calls that came to this server's `/mcp`, that no
    /// call collected within the grace, run here once each (the claim decides who runs it),
    /// through the server's connection to the upstream, with the assistant's own arguments.
    async fn run_uncollected_mcp_calls(&self) {
        let jobs = match gateway::unattended(&self.state.core, MCP_BATCH).await {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::warn!(%error, "could not look for approved MCP calls");
                return;
            }
        };
        for job in jobs {
            let call = match gateway::upstream_call(&self.state.core, &job).await {
                Ok(call) if call.unattended && self.state.upstreams.knows(&call.upstream) => call,
                // A desktop gateway's call (a repeated call there collects it), or one from an
                // older version or for an upstream this server does not have: left alone.
                Ok(_) => continue,
                Err(error) => {
                    tracing::debug!(%error, job_id = %job.job_id, "an approved MCP call the server does not run");
                    continue;
                }
            };
            let Ok(permit) = self.mcp_slots.clone().try_acquire_owned() else {
                return; // All slots busy; the sweep comes back.
            };
            let this = self.clone();
            tokio::spawn(async move { this.run_mcp_call(job, call, permit).await });
        }
    }

    async fn run_mcp_call(
        &self,
        job: Job,
        call: gateway::UpstreamCall,
        _slot: OwnedSemaphorePermit,
    ) {
        let core = &self.state.core;
        let tool_call = gateway::ToolCall {
            upstream: &call.upstream,
            tool: &call.tool,
            arguments: &call.arguments,
            session: None,
            on_behalf_of: None,
            unattended: true,
        };
        if !gateway::same_call(core, &job, &tool_call) {
            tracing::error!(job_id = %job.job_id, "an approved MCP call's recorded arguments do not match its call hash; not run");
            return;
        }
        let claimed = match gateway::claim(core, &job).await {
            Ok(Some(claimed)) => claimed,
            Ok(None) => return, // A call collected it first, or the re-check ended it.
            Err(error) => {
                tracing::warn!(%error, job_id = %job.job_id, "could not claim an approved MCP call");
                return;
            }
        };
        let keeper = {
            let (core, job_id) = (self.state.core.clone(), claimed.job_id.clone());
            tokio::spawn(async move { gateway::keep_leased(&core, &job_id).await })
        };
        let (_, report) = self
            .state
            .upstreams
            .call(&call.upstream, &call.tool, &call.arguments)
            .await;
        keeper.abort();
        if let Err(error) =
            gateway::finish(core, &claimed, &report, gateway::Runner::Executor).await
        {
            tracing::error!(%error, job_id = %claimed.job_id, "could not record an MCP call's run");
        }
    }

    /// Lease and start this executor's approved jobs while there are free slots.
    async fn drain(&self, name: &str) {
        let owner = format!("{SERVER_EXECUTOR_PREFIX}{name}");
        loop {
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                return; // All slots busy; the sweep comes back.
            };
            match lease_next(&self.state, &owner).await {
                Ok(Some(job)) => {
                    let (this, name, owner) = (self.clone(), name.to_string(), owner.clone());
                    tokio::spawn(async move { this.run(job, &name, &owner, permit).await });
                }
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(%error, executor = name, "could not lease an approved job");
                    return;
                }
            }
        }
    }

    /// Run one leased job to its end.
    async fn run(&self, job: Job, name: &str, owner: &str, _slot: OwnedSemaphorePermit) {
        let state = &self.state;
        let Some(executor) = state.policy.executors.get(name).cloned() else {
            let report = RunReport {
                status: "failure".into(),
                error: Some(format!("executor `{name}` is no longer in the policy")),
                ..RunReport::default()
            };
            self.end(&job, owner, &report).await;
            return;
        };
        // picked → executing, audited.
        match state
            .store
            .extend_lease(&job.job_id, owner, state.lease_secs, chrono::Utc::now())
            .await
        {
            Ok(running) => {
                audit_step(
                    state,
                    execution_event(
                        &running,
                        owner,
                        "executing",
                        &format!("{} executor `{name}` started it", executor.kind.as_str()),
                    ),
                )
                .await;
                state.notify_job(&running);
            }
            Err(error) => {
                tracing::warn!(%error, job_id = %job.job_id, "lost the lease before starting");
                return;
            }
        }
        let heartbeat = {
            let (store, job_id, owner, lease) = (
                state.store.clone(),
                job.job_id.clone(),
                owner.to_string(),
                state.lease_secs,
            );
            tokio::spawn(async move {
                let period = Duration::from_secs(u64::try_from(lease / 3).unwrap_or(20).max(1));
                loop {
                    tokio::time::sleep(period).await;
                    if let Err(error) = store
                        .extend_lease(&job_id, &owner, lease, chrono::Utc::now())
                        .await
                    {
                        tracing::warn!(%error, %job_id, "could not extend a running job's lease");
                    }
                }
            })
        };
        let report = match executor.kind {
            ExecutorKind::Process => match command_for(&executor, &job) {
                Ok(argv) => process::run(&executor, &argv).await,
                Err(reason) => RunReport {
                    status: "failure".into(),
                    error: Some(format!("not run: {reason}")),
                    ..RunReport::default()
                },
            },
            ExecutorKind::Webhook => {
                let votes = state.store.votes(&job.job_id).await.unwrap_or_default();
                let secret = executor
                    .secret_env
                    .as_deref()
                    .and_then(|v| (self.secrets)(v));
                webhook::deliver(&self.client, &executor, &job, &votes, secret).await
            }
            ExecutorKind::Agent => RunReport {
                status: "failure".into(),
                error: Some(format!("executor `{name}` is for agents")),
                ..RunReport::default()
            },
        };
        heartbeat.abort();
        self.end(&job, owner, &report).await;
    }

    async fn end(&self, job: &Job, owner: &str, report: &RunReport) {
        let status = report.job_status().unwrap_or(JobStatus::Failed);
        let reason = format!("{owner} reported {}", report.status);
        if let Err(error) =
            record_result(&self.state, &job.job_id, owner, report, status, &reason).await
        {
            tracing::error!(%error, job_id = %job.job_id, "could not record a job's result");
        }
    }
}
