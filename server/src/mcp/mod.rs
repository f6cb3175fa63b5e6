//! The MCP gateway's protocol edge: Countersign speaks MCP to assistants (over stdio for
//! `countersign mcp`, or Streamable HTTP at `/mcp`) and to the tool servers behind it (the
//! upstreams: child processes on stdio, or servers reached over Streamable HTTP), with the
//! official Rust SDK (`rmcp`).
//!
//! `tools/list` shows the upstreams' tools the policy knows (with their risk); `tools/call` is
//! decided by [`crate::services::gateway`]: allowed calls go upstream and their results come
//! back unchanged; denied ones come back as a tool error with the reasons; calls that need
//! approval are held open with progress notifications until people decide, then run once.

pub mod upstreams;

pub use upstreams::{GatewayError, Upstreams};

use crate::config::{McpSettings, McpUpstream};
use crate::services::execution::RunReport;
use crate::services::gateway::{self, Admission, ToolCall, Waiting};
use crate::services::{Caller, ServiceError};
use crate::store::{Job, JobStatus};
use crate::AppState;
use enforcer::mcp::OperationSource;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, MetaObject, PaginatedRequestParams, ProgressNotificationParam,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The gateway: what every MCP session shares (cheap to clone: one per HTTP session).
#[derive(Clone)]
pub struct Gateway {
    state: AppState,
    /// The upstreams this gateway passes calls to (their connections are the state's).
    upstreams: Arc<Vec<McpUpstream>>,
    /// The caller of a stdio session (a desktop client's token); HTTP sessions carry theirs.
    caller: Option<Caller>,
    /// The person a stdio session's caller acts for (`--on-behalf-of`), through the delegation
    /// rules: the requester of its calls.
    on_behalf_of: Option<Arc<str>>,
    portal: Arc<str>,
    hold: Duration,
    every: Duration,
    /// Held calls run as tasks (for clients that take tasks), shared by all sessions.
    tasks: Arc<TaskBook>,
}

impl Gateway {
    /// A stdio gateway to the upstreams `names` (every configured one when empty) for `caller`,
    /// acting for the person `on_behalf_of` when given (the caller must be allowed to act for
    /// people: `api_delegating_callers`).
    pub fn new(
        state: AppState,
        settings: &McpSettings,
        names: &[String],
        caller: Caller,
        on_behalf_of: Option<&str>,
    ) -> Result<Gateway, GatewayError> {
        for name in names {
            if !settings.upstreams.iter().any(|u| &u.name == name) {
                return Err(GatewayError::UnknownUpstream(name.clone()));
            }
        }
        if let Some(person) = on_behalf_of {
            crate::services::decisions::may_act_for(&state.core, &caller, person)
                .map_err(|e| GatewayError::Refused(format!("--on-behalf-of {person}: {e}")))?;
        }
        let mut gateway = Gateway::from_settings(state, settings, names, Some(caller));
        gateway.on_behalf_of = on_behalf_of.map(Arc::from);
        Ok(gateway)
    }

    fn from_settings(
        state: AppState,
        settings: &McpSettings,
        names: &[String],
        caller: Option<Caller>,
    ) -> Gateway {
        let upstreams = settings
            .upstreams
            .iter()
            .filter(|u| names.is_empty() || names.contains(&u.name))
            .cloned()
            .collect();
        Gateway {
            state,
            upstreams: Arc::new(upstreams),
            caller,
            on_behalf_of: None,
            portal: settings.portal.as_str().into(),
            hold: settings.hold,
            every: settings.every,
            tasks: Arc::default(),
        }
    }

    /// Serve one client on standard input and output until it goes away.
    pub async fn serve_stdio(self) -> Result<(), GatewayError> {
        let running = self
            .clone()
            // Non-blocking pipes (as desktop clients start it): no hand-off to a blocking
            // thread for each message; a terminal or file falls back to the blocking handles.
            .serve(rmcp::transport::stdio_pipes())
            .await
            .map_err(|e| GatewayError::Serve(e.to_string()))?;
        running
            .waiting()
            .await
            .map_err(|e| GatewayError::Serve(e.to_string()))?;
        self.shut_down().await;
        Ok(())
    }

    /// Stop the upstreams this process started.
    pub async fn shut_down(&self) {
        self.state.upstreams.stop_all().await;
    }

    fn approval_url(&self, job_id: &str) -> String {
        format!("{}/approvals/{job_id}", self.portal)
    }

    /// Who is calling: the stdio session's token holder, or the HTTP request's (the `/mcp`
    /// route lets no request through without one).
    fn caller(&self, context: &RequestContext<RoleServer>) -> Result<Caller, McpError> {
        if let Some(caller) = &self.caller {
            return Ok(caller.clone());
        }
        context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Caller>())
            .cloned()
            .ok_or_else(|| McpError::invalid_request("a bearer token is required", None))
    }

    /// Every upstream's tools that the policy knows, under the names clients see, with the
    /// upstream and its own name for each. An upstream that cannot be reached lists nothing
    /// (logged); the others still do.
    async fn catalogue(&self) -> Vec<(usize, Tool)> {
        let mut out = Vec::new();
        for (index, upstream) in self.upstreams.iter().enumerate() {
            let Some(tools) = self.state.upstreams.tools(&upstream.name).await else {
                continue;
            };
            let policy = self.state.policy.mcp.get(&upstream.name);
            for tool in tools {
                if policy.and_then(|p| p.tool(&tool.name)).is_some() {
                    out.push((index, tool));
                }
            }
        }
        out
    }

    /// The upstream and upstream tool name a client's tool name stands for.
    fn route(&self, name: &str) -> Option<(usize, String)> {
        self.upstreams
            .iter()
            .enumerate()
            .find_map(|(index, upstream)| {
                let own = name.strip_prefix(upstream.prefix.as_str())?;
                let policy = self.state.policy.mcp.get(&upstream.name)?;
                policy.tool(own).map(|_| (index, own.to_string()))
            })
    }

    /// Pass a call upstream: its result and the run's report (failures are tool errors and
    /// failed runs, see [`Upstreams::call`]); only the client's own cancellation is a protocol
    /// error.
    async fn forward(
        &self,
        index: usize,
        tool: &str,
        arguments: &Map<String, Value>,
        cancelled: impl std::future::Future<Output = ()>,
    ) -> Result<(CallToolResult, RunReport), McpError> {
        let name = &self.upstreams[index].name;
        tokio::select! {
            done = self.state.upstreams.call(name, tool, arguments) => Ok(done),
            () = cancelled => Err(McpError::internal_error("the call was cancelled", None)),
        }
    }

    /// Tell the client how a held call is doing, when it asked for progress.
    async fn progress(
        &self,
        context: &RequestContext<RoleServer>,
        step: u32,
        job: &Job,
        approvals: u32,
    ) {
        let Some(token) = context.meta.get_progress_token() else {
            return;
        };
        let required = u32::try_from(job.approvals_required.max(1)).unwrap_or(1);
        let message = format!(
            "waiting for {} of {required} approvals — {}",
            required.saturating_sub(approvals),
            self.approval_url(&job.job_id)
        );
        let param = ProgressNotificationParam::new(token, f64::from(step)).with_message(message);
        if let Err(error) = context.peer.notify_progress(param).await {
            tracing::debug!(%error, "a progress notification could not be sent");
        }
    }

    /// A held call: wait for people, then run it here once, or say why not.
    async fn held(
        &self,
        index: usize,
        call: &ToolCall<'_>,
        job: Job,
        attached: bool,
        round: &Round,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if matches!(job.status, JobStatus::Picked | JobStatus::Executing) {
            // Another call is running it now: wait for that run and tell its outcome.
            return Ok(self.outcome_of_run(&job.job_id).await?.into());
        }
        // A client that takes tasks gets one at once: it polls `tasks/get` while people decide,
        // and this gateway runs the call once it is approved.
        if context
            .client_capabilities()
            .is_some_and(|c| c.supports_tasks())
            && matches!(job.status, JobStatus::Queued | JobStatus::Approved)
        {
            self.run_as_task(index, call, &job);
            let approvals = gateway::approvals_of(&self.state.core, &job.job_id)
                .await
                .map_err(service_error)?;
            return Ok(CallToolResponse::Task(rmcp::model::CreateTaskResult::new(
                self.task_of(&job, approvals),
            )));
        }
        let channel = LinkChannel::of(context);
        if channel == LinkChannel::InputRequired && job.status == JobStatus::Queued {
            if round.declined {
                // The person chose not to open the link: the call stops waiting here.
                return Ok(self.still_queued(call, &job, 0, attached).into());
            }
            if round.request_state.as_deref() != Some(job.job_id.as_str()) {
                // First round: the link at once, for the client to show its person.
                return Ok(CallToolResponse::InputRequired(
                    self.approval_input(call, &job),
                ));
            }
        }
        // A client that can open a link for its user (URL elicitation) is offered the approval
        // page as well; what the user answers changes nothing: people decide in the portal.
        let link = if channel == LinkChannel::Elicitation {
            self.offer_link(call, &job, context)
        } else {
            None
        };
        let mut step = 0u32;
        let waited = tokio::select! {
            waited = gateway::wait(&self.state.core, &job.job_id, self.hold, self.every, |job, approvals| {
                step += 1;
                let step = step;
                async move { self.progress(context, step, &job, approvals).await }
            }) => waited.map_err(service_error)?,
            () = context.ct.cancelled() => {
                return Err(McpError::internal_error("the call was cancelled; the request for approval stays open", None));
            }
        };
        if !matches!(waited, Waiting::StillQueued { .. }) {
            // People decided: the link's interaction is over.
            if let Some(link) = link {
                link.completed(context).await;
            }
        }
        Ok(match waited {
            Waiting::Approved(job) => self
                .run_approved(index, call, job, context.ct.cancelled())
                .await?
                .into(),
            Waiting::Ended(job)
                if matches!(job.status, JobStatus::Picked | JobStatus::Executing) =>
            {
                // Another call collected it meanwhile: wait for that run and tell its outcome.
                self.outcome_of_run(&job.job_id).await?.into()
            }
            Waiting::Ended(job) => self.ended(&job).await.into(),
            // A client that takes input-required results carries on by itself: the link again,
            // and its retry (the same call) waits for the same request.
            Waiting::StillQueued { job, .. } if channel == LinkChannel::InputRequired => {
                CallToolResponse::InputRequired(self.approval_input(call, &job))
            }
            Waiting::StillQueued { job, approvals } => {
                self.still_queued(call, &job, approvals, attached).into()
            }
        })
    }

    /// What a call is told when the hold ends before people decide.
    fn still_queued(
        &self,
        call: &ToolCall<'_>,
        job: &Job,
        approvals: u32,
        attached: bool,
    ) -> CallToolResult {
        text_error(format!(
                "This call needs approval and is waiting for people ({approvals} of {} approvals so far): {}. \
                 It has not run. Calling this tool again with the same arguments waits for this same request \
                 (it is not asked for twice){}{}",
                job.approvals_required,
                self.approval_url(&job.job_id),
                if attached { "; this call was attached to the open request" } else { "" },
                if call.unattended {
                    "; if it is approved while nobody waits, Countersign runs it then, once, and its result is on that page."
                } else {
                    "; once approved, it runs when this tool is called again with the same arguments."
                }
            ))
    }

    /// The approval page as an input-required result (MCP 2026-07-28): a URL elicitation the
    /// client shows its person, and the job as the state the client sends back with its retry
    /// (only a marker that the link was shown: the retry is decided again, and joins the job by
    /// its call hash, never by this state).
    fn approval_input(&self, call: &ToolCall<'_>, job: &Job) -> rmcp::model::InputRequiredResult {
        use rmcp::model::{ElicitRequest, ElicitRequestParams, InputRequest, InputRequests};
        let mut requests = InputRequests::new();
        requests.insert(
            APPROVAL_INPUT.to_string(),
            InputRequest::Elicitation(ElicitRequest::new(
                ElicitRequestParams::UrlElicitationParams {
                    meta: None,
                    message: approval_message(call, job),
                    url: self.approval_url(&job.job_id),
                    elicitation_id: format!("countersign-{}", job.job_id),
                },
            )),
        );
        rmcp::model::InputRequiredResult::new(Some(requests), Some(job.job_id.clone()))
    }

    /// Offer the held call's approval page to a client that declared URL elicitation: an
    /// `elicitation/create` request (mode `url`) sent beside the wait, which it does not hold
    /// up. `None` when the client cannot take it (it gets the link in progress notifications and
    /// in the result, as every client does).
    fn offer_link(
        &self,
        call: &ToolCall<'_>,
        job: &Job,
        context: &RequestContext<RoleServer>,
    ) -> Option<LinkOffer> {
        if job.status != JobStatus::Queued {
            return None;
        }
        let url = url::Url::parse(&self.approval_url(&job.job_id)).ok()?;
        let id = format!(
            "countersign-{}-{}",
            job.job_id,
            uuid::Uuid::new_v4().simple()
        );
        let message = approval_message(call, job);
        let peer = context.peer.clone();
        let hold = self.hold;
        let elicitation_id = id.clone();
        let offer = tokio::spawn(async move {
            match peer
                .elicit_url_with_timeout(message, url, elicitation_id, Some(hold))
                .await
            {
                Ok(action) => tracing::debug!(?action, "the client answered the approval link"),
                Err(error) => tracing::debug!(%error, "the approval link was not shown"),
            }
        });
        Some(LinkOffer {
            id,
            _offer: AbortOnDrop(offer),
        })
    }

    /// Run an approved job upstream, exactly once, and record the run.
    async fn run_approved(
        &self,
        index: usize,
        call: &ToolCall<'_>,
        job: Job,
        cancelled: impl std::future::Future<Output = ()>,
    ) -> Result<CallToolResult, McpError> {
        if !gateway::same_call(&self.state.core, &job, call) {
            return Ok(text_error(
                "The approved request is for other arguments than this call; it was not run."
                    .into(),
            ));
        }
        let Some(claimed) = gateway::claim(&self.state.core, &job)
            .await
            .map_err(service_error)?
        else {
            // Another call collected it first (wait for its run and tell its outcome), or the
            // re-check refused it: say how it ended.
            return self.outcome_of_run(&job.job_id).await;
        };
        self.run_claimed(index, call, claimed, cancelled).await
    }

    /// Run a job this gateway has claimed: upstream, once, with its lease kept while it runs,
    /// and record the run.
    async fn run_claimed(
        &self,
        index: usize,
        call: &ToolCall<'_>,
        claimed: Job,
        cancelled: impl std::future::Future<Output = ()>,
    ) -> Result<CallToolResult, McpError> {
        let keeper = {
            let core = self.state.core.clone();
            let job_id = claimed.job_id.clone();
            AbortOnDrop(tokio::spawn(async move {
                gateway::keep_leased(&core, &job_id).await;
            }))
        };
        let forwarded = self
            .forward(index, call.tool, call.arguments, cancelled)
            .await;
        drop(keeper);
        let report = match &forwarded {
            Ok((_, report)) => report.clone(),
            Err(error) => RunReport {
                status: "failure".into(),
                error: Some(error.message.to_string()),
                ..RunReport::default()
            },
        };
        if let Err(error) =
            gateway::finish(&self.state.core, &claimed, &report, gateway::Runner::Call).await
        {
            tracing::error!(%error, job = %claimed.job_id, "the MCP gateway could not record a run");
        }
        forwarded.map(|(result, _)| result)
    }

    /// The ended request an input-required retry (`round`) names, when it is this caller's
    /// gateway request for this very call (the state the client echoes is checked, never
    /// trusted: another caller's or another call's job is ignored).
    async fn ended_round(
        &self,
        round: &Round,
        caller: &Caller,
        call: &ToolCall<'_>,
    ) -> Option<Job> {
        let job_id = round.request_state.as_deref()?;
        let job = gateway::current(&self.state.core, job_id).await.ok()?;
        let ours = gateway::is_callers(&job, caller, call.requester(caller))
            && gateway::same_call(&self.state.core, &job, call);
        (ours && job.status.is_final()).then_some(job)
    }

    /// Run a held call as a task: in the background, wait for people (as long as the request
    /// lives), run it here once approved, and keep its result for `tasks/get`. One runner per
    /// job in this process; the claim makes sure it runs once whoever else collects it.
    fn run_as_task(&self, index: usize, call: &ToolCall<'_>, job: &Job) {
        let job_id = job.job_id.clone();
        if !self.tasks.start(&job_id) {
            return;
        }
        let gateway = self.clone();
        let (upstream, tool, arguments) = (
            call.upstream.to_string(),
            call.tool.to_string(),
            call.arguments.clone(),
        );
        let (on_behalf_of, unattended) = (call.on_behalf_of.map(str::to_string), call.unattended);
        tokio::spawn(async move {
            let call = ToolCall {
                upstream: &upstream,
                tool: &tool,
                arguments: &arguments,
                session: None,
                on_behalf_of: on_behalf_of.as_deref(),
                unattended,
            };
            let mut failures = 0u32;
            let result = loop {
                match gateway::until_decided(&gateway.state.core, &job_id, TASK_POLL).await {
                    Ok(job) if job.status == JobStatus::Approved => {
                        break gateway.run_for_task(index, &call, job).await
                    }
                    Ok(_) => break None,
                    // The store is unreachable: try again a little later (a `tasks/get` starts
                    // a new runner if this one gives up).
                    Err(error) if failures < TASK_RETRIES => {
                        failures += 1;
                        tracing::warn!(%error, job = %job_id, "an MCP task could not read its job; trying again");
                        tokio::time::sleep(Duration::from_secs(u64::from(failures.min(6)) * 5))
                            .await;
                    }
                    Err(error) => {
                        tracing::error!(%error, job = %job_id, "an MCP task stopped waiting for its job");
                        break None;
                    }
                }
            };
            gateway.tasks.finish(&job_id, result);
        });
    }

    /// Run an approved job for its task: `Some` with the upstream's result only when this
    /// runner ran it (not when another call or the executor collected it, or it was refused).
    async fn run_for_task(
        &self,
        index: usize,
        call: &ToolCall<'_>,
        job: Job,
    ) -> Option<CallToolResult> {
        if !gateway::same_call(&self.state.core, &job, call) {
            return None;
        }
        let claimed = gateway::claim(&self.state.core, &job)
            .await
            .ok()
            .flatten()?;
        self.run_claimed(index, call, claimed, std::future::pending())
            .await
            .ok()
    }

    /// Start a runner for an open task none runs in this process (this gateway was started
    /// again, or its runner gave up), from the call its decision row keeps.
    async fn resume_task(&self, job: &Job) {
        let Ok(upstream) = gateway::upstream_call(&self.state.core, job).await else {
            return;
        };
        let Some(index) = self
            .upstreams
            .iter()
            .position(|u| u.name == upstream.upstream)
        else {
            return;
        };
        let call = ToolCall {
            upstream: &upstream.upstream,
            tool: &upstream.tool,
            arguments: &upstream.arguments,
            session: None,
            on_behalf_of: self.on_behalf_of.as_deref(),
            unattended: upstream.unattended,
        };
        self.run_as_task(index, &call, job);
    }

    /// A task's state, from its job (`tasks/get`): working while people decide or it runs;
    /// completed with the upstream's result (or the tool error that says why it did not run);
    /// cancelled when the request was withdrawn.
    fn task_of(&self, job: &Job, approvals: u32) -> rmcp::model::Task {
        use rmcp::model::{Task, TaskStatus};
        let status = match job.status {
            JobStatus::Cancelled => TaskStatus::Cancelled,
            status if status.is_final() => TaskStatus::Completed,
            _ => TaskStatus::Working,
        };
        let message = match job.status {
            JobStatus::Queued => {
                let required = u32::try_from(job.approvals_required.max(1)).unwrap_or(1);
                format!(
                    "waiting for {} of {required} approvals — {}",
                    required.saturating_sub(approvals),
                    self.approval_url(&job.job_id)
                )
            }
            JobStatus::Approved | JobStatus::Picked | JobStatus::Executing => {
                "approved; running".to_string()
            }
            status => status.to_string(),
        };
        let task = Task::new(
            job.job_id.clone(),
            status,
            job.created_at.to_rfc3339(),
            chrono::Utc::now().to_rfc3339(),
        )
        .with_status_message(message)
        .with_poll_interval_ms(TASK_POLL_MS);
        // Kept as long as the request for approval lives.
        match job
            .expires_at
            .and_then(|at| u64::try_from((at - job.created_at).num_milliseconds()).ok())
        {
            Some(ttl) => task.with_ttl_ms(ttl),
            None => task,
        }
    }

    /// The job behind task `task_id`, if it is one of this caller's gateway calls (others are
    /// not found, as on the API).
    async fn task_job(&self, task_id: &str, caller: &Caller) -> Result<Job, McpError> {
        let not_found = || McpError::invalid_params("no such task", None);
        let job = match gateway::current(&self.state.core, task_id).await {
            Ok(job) => job,
            Err(ServiceError::NotFound { .. }) => return Err(not_found()),
            Err(error) => return Err(service_error(error)),
        };
        let requester = self.on_behalf_of.as_deref().unwrap_or(&caller.id);
        if gateway::is_callers(&job, caller, requester) {
            Ok(job)
        } else {
            Err(not_found())
        }
    }

    /// Wait (up to the hold) for the run another call or the executor is making of `job_id`,
    /// and tell how it went.
    async fn outcome_of_run(&self, job_id: &str) -> Result<CallToolResult, McpError> {
        let now = gateway::until_ended(&self.state.core, job_id, self.hold)
            .await
            .map_err(service_error)?;
        Ok(self.ended(&now).await)
    }

    /// What a call that found its job ended is told.
    async fn ended(&self, job: &Job) -> CallToolResult {
        let url = self.approval_url(&job.job_id);
        match job.status {
            JobStatus::Denied => {
                let reason = gateway::denial_reason(&self.state.core, &job.job_id)
                    .await
                    .unwrap_or_else(|| "no reason given".into());
                text_error(format!("A reviewer denied this call: {reason}. It did not run ({url})."))
            }
            JobStatus::Expired => text_error(format!(
                "The request for approval expired before anyone decided; the call did not run ({url})."
            )),
            JobStatus::Cancelled => text_error(format!(
                "The request for approval was withdrawn; the call did not run ({url})."
            )),
            JobStatus::Completed | JobStatus::Failed | JobStatus::Timeout => {
                let output = job
                    .result
                    .as_deref()
                    .and_then(|r| serde_json::from_str::<Value>(r).ok())
                    .and_then(|r| r["output"].as_str().map(str::to_string))
                    .unwrap_or_default();
                let what = format!(
                    "This approved call already ran once ({}), for an earlier call with the same arguments; it is not run twice.",
                    job.status
                );
                let text = if output.is_empty() { what } else { format!("{what}\n\n{output}") };
                if job.status == JobStatus::Completed {
                    CallToolResult::success(vec![ContentBlock::text(text)])
                } else {
                    text_error(text)
                }
            }
            _ => text_error(format!(
                "The approved call is being run by another call right now; it is not run twice ({url})."
            )),
        }
    }
}

impl ServerHandler for Gateway {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new(
            "countersign",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(
            "Countersign passes these tools on to the tool servers behind it. Calls the policy \
                 allows run at once; some wait for people to approve them (you get progress while \
                 they wait); denied calls return the reasons.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        self.caller(&context)?;
        let mut tools = Vec::new();
        for (index, mut tool) in self.catalogue().await {
            let upstream = &self.upstreams[index];
            let risk = self
                .state
                .policy
                .mcp
                .get(&upstream.name)
                .and_then(|p| p.tool(&tool.name))
                .map(|map| risk_of(&self.state.policy, &map.tool, &map.operation))
                .unwrap_or_default();
            tool.name = format!("{}{}", upstream.prefix, tool.name).into();
            let meta = tool.meta.get_or_insert_with(MetaObject::new);
            meta.insert("countersign/risk".into(), Value::String(risk.clone()));
            meta.insert(
                "countersign/upstream".into(),
                Value::String(upstream.name.clone()),
            );
            let note =
                format!("[Countersign: risk {risk}; a call may wait for people to approve it]");
            tool.description = Some(match tool.description.as_deref() {
                Some(text) if !text.is_empty() => format!("{text}\n\n{note}").into(),
                _ => note.into(),
            });
            tools.push(tool);
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn get_task(
        &self,
        request: rmcp::model::GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetTaskResult, McpError> {
        use rmcp::model::{DetailedTask, GetTaskResult, TaskPayload, TaskStatus};
        let caller = self.caller(&context)?;
        let job = self.task_job(&request.task_id, &caller).await?;
        let approvals = gateway::approvals_of(&self.state.core, &job.job_id)
            .await
            .map_err(service_error)?;
        let mut task = self.task_of(&job, approvals);
        let (running, ran) = self.tasks.state(&job.job_id);
        if !running && matches!(job.status, JobStatus::Queued | JobStatus::Approved) {
            self.resume_task(&job).await;
        }
        if running && task.status == TaskStatus::Completed {
            // The run has ended but its runner has not handed over the result yet.
            task.status = TaskStatus::Working;
            task.status_message = Some("approved; running".into());
        }
        let payload = match task.status {
            TaskStatus::Cancelled => TaskPayload::Cancelled,
            TaskStatus::Completed => {
                // The upstream's own result when this process ran it; otherwise what the job
                // says (denied, expired, or run elsewhere).
                let result = match ran {
                    Some(result) => result,
                    None => self.ended(&job).await,
                };
                let result = match serde_json::to_value(result) {
                    Ok(Value::Object(map)) => map,
                    _ => Map::new(),
                };
                TaskPayload::Completed { result }
            }
            _ => TaskPayload::Working,
        };
        Ok(GetTaskResult::new(DetailedTask::new(task, payload)))
    }

    async fn update_task(
        &self,
        _request: rmcp::model::UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        // A gateway task asks its client for nothing: there is nothing to update.
        self.caller(&context)?;
        Ok(())
    }

    async fn cancel_task(
        &self,
        request: rmcp::model::CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let caller = self.caller(&context)?;
        let job = self.task_job(&request.task_id, &caller).await?;
        // Withdrawing the request ends the task (its runner sees the job cancelled); a call
        // that has started cannot be taken back.
        crate::services::approvals::withdraw(&self.state.core, &caller.id, &job.job_id)
            .await
            .map(|_| ())
            .map_err(service_error)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let caller = self.caller(&context)?;
        let arguments = request.arguments.clone().unwrap_or_default();
        // A tool no upstream offers under this name is put to the policy as an unknown tool of
        // the first upstream, so the refusal is decided and audited like every other.
        let (index, tool) = self
            .route(&request.name)
            .unwrap_or_else(|| (0, request.name.to_string()));
        let Some(upstream) = self.upstreams.get(index) else {
            return Ok(
                text_error("No tool server is configured behind this gateway.".into()).into(),
            );
        };
        let call = ToolCall {
            upstream: &upstream.name,
            tool: &tool,
            arguments: &arguments,
            session: None,
            on_behalf_of: self.on_behalf_of.as_deref(),
            // Calls to the server's own `/mcp` may be run by its `mcp` executor; a desktop's
            // `countersign mcp` serves upstreams the server may not have.
            unattended: self.caller.is_none(),
        };
        // An input-required round's retry whose request has ended meanwhile (denied, expired,
        // or run by the executor) hears how it ended instead of asking again.
        let round = Round::of(&request);
        if let Some(job) = self.ended_round(&round, &caller, &call).await {
            return Ok(self.ended(&job).await.into());
        }
        let admission = match gateway::admit(&self.state.core, &caller, &call).await {
            Ok(admission) => admission,
            // Too many requests waiting: the assistant is told, as a tool error, to stop asking.
            Err(ServiceError::Limit { message, .. }) => {
                return Ok(text_error(format!("Countersign did not ask again: {message}")).into())
            }
            Err(error) => return Err(service_error(error)),
        };
        let result = match admission {
            Admission::Denied { reasons } => text_error(format!(
                "Countersign denied this call: {}",
                reasons.join("; ")
            )),
            Admission::Run { allowed } => {
                let (result, report) = self
                    .forward(index, &tool, &arguments, context.ct.cancelled())
                    .await?;
                // The decision was durable before the call went upstream; how the run went is
                // recorded beside the answer, not before it.
                let core = self.state.core.clone();
                tokio::spawn(async move {
                    if let Err(error) =
                        gateway::report_allowed(&core, &caller, &allowed, &report).await
                    {
                        tracing::error!(%error, audit_id = %allowed.audit_id, "the MCP gateway could not record a run");
                    }
                });
                result
            }
            Admission::Held { job, attached } => {
                return self
                    .held(index, &call, *job, attached, &round, &context)
                    .await;
            }
        };
        Ok(result.into())
    }
}

/// How often a task's runner reads its job for changes made elsewhere (it is woken at once by a
/// change on this replica), and how often clients are asked to poll.
const TASK_POLL: Duration = Duration::from_secs(5);
const TASK_POLL_MS: u64 = 2_000;

/// Times a task's runner tries again to read its job before it gives up.
const TASK_RETRIES: u32 = 20;
/// How long a finished task's result is kept for `tasks/get`.
const TASK_KEEP: Duration = Duration::from_secs(3_600);

/// Where a task's runner in this process has got to.
enum TaskRun {
    Running,
    /// Ended at this time, with the upstream's result if it ran the call.
    Ended(Instant, Option<CallToolResult>),
}

/// The tasks this process runs (by job id) and, once run here, the upstream's results (kept
/// for an hour).
#[derive(Default)]
struct TaskBook(std::sync::Mutex<std::collections::HashMap<String, TaskRun>>);

impl TaskBook {
    fn book(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, TaskRun>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Note a runner for `job_id`: `false` when one is already at work.
    fn start(&self, job_id: &str) -> bool {
        let mut book = self.book();
        book.retain(|_, run| !matches!(run, TaskRun::Ended(at, _) if at.elapsed() > TASK_KEEP));
        if matches!(book.get(job_id), Some(TaskRun::Running)) {
            return false;
        }
        book.insert(job_id.to_string(), TaskRun::Running);
        true
    }

    /// The runner ended: keep the result it got, if it ran the call.
    fn finish(&self, job_id: &str, result: Option<CallToolResult>) {
        self.book()
            .insert(job_id.to_string(), TaskRun::Ended(Instant::now(), result));
    }

    /// Whether a runner is at work here, and the result it got if it ran the call.
    fn state(&self, job_id: &str) -> (bool, Option<CallToolResult>) {
        match self.book().get(job_id) {
            Some(TaskRun::Running) => (true, None),
            Some(TaskRun::Ended(_, result)) => (false, result.clone()),
            None => (false, None),
        }
    }
}

/// The key of the approval link in an input-required result.
const APPROVAL_INPUT: &str = "countersign_approval";

/// The sentence that comes with the approval link.
fn approval_message(call: &ToolCall<'_>, job: &Job) -> String {
    let required = job.approvals_required.max(1);
    format!(
        "Countersign holds the call to {} until {}. Open the approval page to see the request \
         and how it stands; the call continues by itself once people decide.",
        call.tool,
        if required == 1 {
            "a person approves it".to_string()
        } else {
            format!("{required} people approve it")
        },
    )
}

/// Where this client's call has got to in the input-required rounds (MCP 2026-07-28): the state
/// it sent back, and whether its person declined or dismissed the approval link.
#[derive(Debug, Default)]
struct Round {
    request_state: Option<String>,
    declined: bool,
}

impl Round {
    fn of(request: &CallToolRequestParams) -> Round {
        let declined = request
            .input_responses
            .as_ref()
            .and_then(|responses| responses.get(APPROVAL_INPUT))
            .and_then(|response| response.get("action"))
            .and_then(Value::as_str)
            .is_some_and(|action| action != "accept");
        Round {
            request_state: request.request_state.clone(),
            declined,
        }
    }
}

/// How a held call's approval link reaches the client, besides progress and the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkChannel {
    /// The client takes no links.
    None,
    /// An `elicitation/create` request in mode `url` (MCP 2025-11-25).
    Elicitation,
    /// An input-required result with a URL elicitation (MCP 2026-07-28, where servers send
    /// clients no requests).
    InputRequired,
}

impl LinkChannel {
    fn of(context: &RequestContext<RoleServer>) -> LinkChannel {
        let takes_urls = context
            .client_capabilities()
            .and_then(|c| c.elicitation)
            .is_some_and(|e| e.url.is_some());
        if !takes_urls {
            LinkChannel::None
        } else if context
            .protocol_version()
            .is_some_and(|v| v >= rmcp::model::ProtocolVersion::V_2026_07_28)
        {
            LinkChannel::InputRequired
        } else {
            LinkChannel::Elicitation
        }
    }
}

/// An approval link offered to the client by URL elicitation (the request is withdrawn when the
/// call ends).
struct LinkOffer {
    id: String,
    _offer: AbortOnDrop,
}

impl LinkOffer {
    /// Tell the client the out-of-band interaction is over (`notifications/elicitation/complete`).
    async fn completed(self, context: &RequestContext<RoleServer>) {
        let notification = rmcp::model::CustomNotification::new(
            "notifications/elicitation/complete",
            Some(serde_json::json!({ "elicitationId": self.id })),
        );
        if let Err(error) = context
            .peer
            .send_notification(rmcp::model::ServerNotification::CustomNotification(
                notification,
            ))
            .await
        {
            tracing::debug!(%error, "the end of the approval link could not be sent");
        }
    }
}

/// The risk `tools/list` shows: the operation's, or for a tool whose operation comes from an
/// argument, the range of its operations'.
fn risk_of(policy: &enforcer::PolicySet, tool: &str, operation: &OperationSource) -> String {
    match operation {
        OperationSource::Fixed(op) => policy
            .operation(tool, op)
            .map(|o| o.risk.as_str().to_string())
            .unwrap_or_default(),
        OperationSource::Argument(_) => {
            let risks: Vec<_> = policy
                .tools
                .get(tool)
                .map(|t| t.operations.values().map(|o| o.risk).collect())
                .unwrap_or_default();
            match (risks.iter().min(), risks.iter().max()) {
                (Some(low), Some(high)) if low == high => low.as_str().to_string(),
                (Some(low), Some(high)) => format!("{low}–{high} by operation"),
                _ => String::new(),
            }
        }
    }
}

/// A run's report from an upstream's result: its text content, and whether it said it failed.
fn report_of(result: &CallToolResult, took: Duration) -> RunReport {
    let text: Vec<&str> = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
        .collect();
    gateway::run_report(&text.join("\n"), result.is_error == Some(true), took)
}

/// Stops a background task when dropped (also when the call that started it is dropped).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A call the upstream did not complete: the tool error the assistant reads, and the run's report.
fn failed(message: String, status: &str, started: Instant) -> (CallToolResult, RunReport) {
    let report = RunReport {
        status: status.to_string(),
        duration_ms: Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
        error: Some(message.clone()),
        ..RunReport::default()
    };
    (text_error(message), report)
}

fn text_error(text: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

/// A service's refusal in the protocol's words (details are logged, not sent).
fn service_error(error: ServiceError) -> McpError {
    match &error {
        ServiceError::Unavailable { .. } | ServiceError::NotConfigured { .. } => {
            McpError::internal_error(format!("{error}; the call did not run"), None)
        }
        _ => McpError::invalid_request(error.to_string(), None),
    }
}

/// `/mcp`: the gateway over Streamable HTTP. Every request carries a bearer token (an API token
/// or the identity provider's access token), checked like the JSON API's; the caller rides in
/// the request to the session's handler.
pub fn routes(state: &AppState, config: &crate::config::McpSettings) -> axum::Router<AppState> {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
    let gateway = Gateway::from_settings(state.clone(), config, &[], None);
    let mut hosts = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Some(host) = config
        .public_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_string))
    {
        hosts.push(host);
    }
    let service = StreamableHttpService::new(
        move || Ok(gateway.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default().with_allowed_hosts(hosts),
    );
    axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_caller,
        ))
}

/// Let a request to `/mcp` in only with a valid bearer token; refusals are audited (by the
/// token check) and answered 401 with the challenge the MCP authorization spec asks for.
async fn require_caller(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::extract::FromRequestParts;
    use axum::response::IntoResponse;
    let (mut parts, body) = request.into_parts();
    match crate::api::caller::ApiCaller::from_request_parts(&mut parts, &state).await {
        Ok(caller) => {
            parts.extensions.insert(caller);
            next.run(axum::extract::Request::from_parts(parts, body))
                .await
        }
        Err(refusal) => {
            let mut response = refusal.into_response();
            if response.status() == axum::http::StatusCode::UNAUTHORIZED {
                if let Ok(value) = axum::http::HeaderValue::from_str(&format!(
                    "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
                    state.mcp.portal
                )) {
                    response
                        .headers_mut()
                        .insert(axum::http::header::WWW_AUTHENTICATE, value);
                }
            }
            response
        }
    }
}

/// `GET /.well-known/oauth-protected-resource`: where an MCP client gets a token for `/mcp`
/// (RFC 9728): the identity provider, when one is configured.
pub async fn protected_resource(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::Json<Value> {
    let issuer = state.oidc.as_ref().map(|o| o.issuer().to_string());
    axum::Json(serde_json::json!({
        "resource": format!("{}/mcp", state.mcp.portal),
        "authorization_servers": issuer.into_iter().collect::<Vec<_>>(),
        "bearer_methods_supported": ["header"],
        // A person's token needs the person's name and roles in it: Keycloak's profile scope.
        "scopes_supported": ["openid", "profile"],
        "resource_name": "Countersign MCP gateway",
    }))
}

/// The caller a stdio gateway acts for: its token, checked (and refusals audited) exactly as a
/// bearer token on the API is.
pub async fn authenticate(state: &AppState, token: &str) -> Result<Caller, GatewayError> {
    use axum::extract::FromRequestParts;
    // A desktop client has just started this process: a provider's token is checked once the
    // provider's keys are known (waiting for them, briefly), not refused for being early.
    if let Some(oidc) = &state.oidc {
        if !oidc.is_ready() && !token.trim().starts_with("cs_") {
            if let Ok(Err(error)) =
                tokio::time::timeout(Duration::from_secs(15), oidc.discover()).await
            {
                tracing::warn!(%error, "the identity provider could not be reached");
            }
        }
    }
    let request = axum::http::Request::builder()
        .uri("/mcp")
        .header(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {}", token.trim()),
        )
        .body(())
        .map_err(|_| GatewayError::Refused("the token is not usable as a header value".into()))?;
    let (mut parts, ()) = request.into_parts();
    crate::api::caller::ApiCaller::from_request_parts(&mut parts, state)
        .await
        .map_err(|refusal| {
            GatewayError::Refused(match refusal {
                crate::api::caller::Unauthenticated::Refused(why) => {
                    format!("the MCP token was refused: {why}")
                }
                crate::api::caller::Unauthenticated::Unavailable(why) => why.to_string(),
            })
        })
}
