//! `countersign agent`: the same binary as a pulling execution agent.
//!
//! It long-polls `POST /api/v1/agents/{id}/claim` for approved jobs assigned to it (or to any
//! agent), checks each job against its call hash with the shared enforcer, fills the executor's
//! argv template (sent with the job, from the server's policy), heartbeats while the program runs
//! with the `process` executor, and reports the result. When the server cannot be reached it
//! backs off (1 s doubling to 60 s) and tries again; a refused token stops it with the reason.

use crate::executors::process;
use crate::services::execution::RunReport;
use enforcer::{Executor, ExecutorKind, JobCall, Request};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::future::Future;
use std::time::Duration;

message_error!(
    /// Why the agent stopped or could not run a job.
    AgentError
);

/// How long one claim waits on the server for a job.
const CLAIM_WAIT_SECS: u64 = 30;
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What the agent needs to know.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The server's base URL, e.g. `https://countersign.example.com`.
    pub server: String,
    /// The agent's API token (its name is the agent id).
    pub token: String,
    pub id: String,
    /// Stop after this many jobs (None: run until stopped).
    pub max_jobs: Option<u64>,
}

/// A claimed job as the server describes it.
#[derive(Debug, Deserialize)]
struct Claimed {
    job_id: String,
    tool: String,
    operation: String,
    args: Value,
    target: Option<String>,
    call_hash: String,
    lease_secs: i64,
    executor: Option<Executor>,
}

struct Agent {
    client: reqwest::Client,
    base: String,
    options: AgentOptions,
}

/// Run the agent until `shutdown` completes (a job in progress is finished first) or
/// `max_jobs` are done. Errors only for what retrying cannot fix (bad options, refused token).
pub async fn run(
    options: AgentOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let base = options.server.trim_end_matches('/').to_string();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(format!("--server must be an http:// or https:// URL, not {base:?}").into());
    }
    if !enforcer::executor::is_agent_id(&options.id) {
        return Err("--id must be 1 to 128 letters, digits, `-`, `_` or `.`".into());
    }
    if options.token.trim().is_empty() {
        return Err("--token (or COUNTERSIGN_AGENT_TOKEN) is required".into());
    }
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("countersign-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let agent = Agent {
        client,
        base,
        options,
    };
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_secs(1);
    let mut done = 0u64;
    tracing::info!(agent = %agent.options.id, server = %agent.base, "agent started");
    loop {
        if agent.options.max_jobs.is_some_and(|max| done >= max) {
            return Ok(());
        }
        let claimed = tokio::select! {
            claimed = agent.claim() => claimed,
            () = &mut shutdown => return Ok(()),
        };
        let pause = match claimed {
            Ok(Some(job)) => {
                backoff = Duration::from_secs(1);
                agent.work(job).await;
                done += 1;
                continue;
            }
            Ok(None) => {
                backoff = Duration::from_secs(1);
                continue;
            }
            Err(ClaimError::Refused(message)) => return Err(message.into()),
            Err(ClaimError::RetryAfter(wait)) => wait,
            Err(ClaimError::Unavailable(message)) => {
                tracing::warn!(error = %message, retry_in = ?backoff, "cannot claim jobs");
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = &mut shutdown => return Ok(()),
        }
    }
}

enum ClaimError {
    Refused(String),
    RetryAfter(Duration),
    Unavailable(String),
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| Duration::from_secs(secs.clamp(1, 60)))
}

impl Agent {
    fn url(&self, path: &str) -> String {
        format!("{}/api/v1/{path}", self.base)
    }

    async fn claim(&self) -> Result<Option<Claimed>, ClaimError> {
        let response = self
            .client
            .post(self.url(&format!(
                "agents/{}/claim?wait={CLAIM_WAIT_SECS}",
                self.options.id
            )))
            .bearer_auth(&self.options.token)
            .timeout(Duration::from_secs(CLAIM_WAIT_SECS + 15))
            .send()
            .await
            .map_err(|e| ClaimError::Unavailable(e.to_string()))?;
        let status = response.status();
        match status.as_u16() {
            204 => Ok(None),
            200 => response
                .json::<Claimed>()
                .await
                .map(Some)
                .map_err(|e| ClaimError::Unavailable(format!("unreadable job: {e}"))),
            401 | 403 => {
                let body = response.text().await.unwrap_or_default();
                Err(ClaimError::Refused(format!(
                    "the server refused agent {:?} ({status}): {}",
                    self.options.id,
                    body.chars().take(300).collect::<String>()
                )))
            }
            429 => Err(ClaimError::RetryAfter(
                retry_after(&response).unwrap_or(Duration::from_secs(1)),
            )),
            _ => Err(ClaimError::Unavailable(format!(
                "the server answered {status}"
            ))),
        }
    }

    /// POST to the job's endpoint; the status code, or why it could not be sent.
    async fn post(&self, path: &str, body: Option<&Value>) -> Result<u16, AgentError> {
        let mut request = self
            .client
            .post(self.url(path))
            .bearer_auth(&self.options.token)
            .timeout(Duration::from_secs(30));
        if let Some(body) = body {
            request = request.json(body);
        }
        request
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string().into())
    }

    /// Check, run and report one job.
    async fn work(&self, job: Claimed) {
        let job_id = job.job_id.clone();
        let report = match self.prepare(&job) {
            Err(reason) => {
                tracing::warn!(%job_id, %reason, "job not run");
                RunReport {
                    status: "failure".into(),
                    error: Some(format!("not run by agent {}: {reason}", self.options.id)),
                    ..RunReport::default()
                }
            }
            Ok((executor, argv)) => {
                // The first heartbeat marks the job executing; a lost lease means someone else
                // may have it, so it is not run here.
                match self.post(&format!("jobs/{job_id}/heartbeat"), None).await {
                    Ok(200) => {}
                    outcome => {
                        tracing::warn!(%job_id, ?outcome, "lease lost before starting; not run");
                        return;
                    }
                }
                tracing::info!(%job_id, program = %argv[0], "running job");
                let beats = {
                    let agent = Agent {
                        client: self.client.clone(),
                        base: self.base.clone(),
                        options: self.options.clone(),
                    };
                    let (job_id, period) = (
                        job_id.clone(),
                        Duration::from_secs(u64::try_from(job.lease_secs / 3).unwrap_or(20).max(1)),
                    );
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(period).await;
                            if let Err(error) =
                                agent.post(&format!("jobs/{job_id}/heartbeat"), None).await
                            {
                                tracing::warn!(%job_id, %error, "heartbeat failed");
                            }
                        }
                    })
                };
                let report = process::run(&executor, &argv).await;
                beats.abort();
                report
            }
        };
        self.report(&job_id, &report).await;
    }

    /// The executor and filled argv, after checking the job against its call hash.
    fn prepare(&self, job: &Claimed) -> Result<(Executor, Vec<String>), AgentError> {
        let args: Map<String, Value> = job
            .args
            .as_object()
            .cloned()
            .ok_or("the job's arguments are not a JSON object")?;
        let request = Request {
            tool: job.tool.clone(),
            operation: job.operation.clone(),
            args,
            target: job.target.clone(),
        };
        if enforcer::call_hash(&request) != job.call_hash {
            return Err("the job does not match the call hash that was approved".into());
        }
        let executor = job
            .executor
            .clone()
            .filter(|e| e.kind == ExecutorKind::Agent)
            .ok_or("the policy names no agent executor for this operation")?;
        let argv = executor
            .command(&JobCall {
                job_id: &job.job_id,
                tool: &request.tool,
                operation: &request.operation,
                target: request.target.as_deref(),
                args: &request.args,
            })
            .map_err(|e| AgentError(e.0))?;
        Ok((executor, argv))
    }

    /// Send the result, retrying while the server is unreachable (the lease keeps the job ours
    /// for a while; after that the server's retry rules decide).
    async fn report(&self, job_id: &str, report: &RunReport) {
        let body =
            serde_json::to_value(report).expect("a run report is plain data and always serialises");
        let mut backoff = Duration::from_secs(1);
        for _ in 0..8 {
            match self
                .post(&format!("jobs/{job_id}/result"), Some(&body))
                .await
            {
                Ok(200) => {
                    tracing::info!(%job_id, status = %report.status, "job reported");
                    return;
                }
                Ok(code @ (404 | 409)) => {
                    tracing::warn!(%job_id, code, "the server no longer holds this job for us");
                    return;
                }
                outcome => tracing::warn!(%job_id, ?outcome, "could not report; retrying"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        tracing::error!(%job_id, "gave up reporting; the lease will lapse and the server decides");
    }
}
