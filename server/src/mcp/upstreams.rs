//! The tool servers behind the gateway (the upstreams), shared by every MCP session and by the
//! server's `mcp` executor: each is started (a child process on stdio) or connected (Streamable
//! HTTP) on first use, started again when it stops, and called with every failure turned into a
//! tool error and a failed run, never a hang.

use super::{failed, report_of};
use crate::config::McpUpstream;
use crate::services::execution::RunReport;
use rmcp::model::{CallToolRequestParams, CallToolResult, Tool};
use rmcp::service::{Peer, RunningService};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

/// Longest an allowed or approved call may run upstream before the gateway gives up on it.
const UPSTREAM_CALL_LIMIT: Duration = Duration::from_secs(600);
/// Longest an upstream may take to start and complete the MCP handshake.
const UPSTREAM_START_LIMIT: Duration = Duration::from_secs(60);
/// Longest pause before starting again an upstream that keeps failing.
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(30);
/// An upstream that ran this long before it stopped counts as healthy: its next start is at once.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// Longest the gateway waits, when it shuts down, for an upstream to close (a child process is
/// asked to exit, then sent SIGTERM, then killed).
const UPSTREAM_STOP_LIMIT: Duration = Duration::from_secs(15);

/// Why the gateway could not start or reach an upstream.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("no MCP upstream is named `{0}` in the configuration (mcp_upstreams)")]
    UnknownUpstream(String),
    #[error("the MCP upstream `{name}` could not be started: {reason}")]
    Start { name: String, reason: String },
    #[error("the MCP upstream `{name}` stopped and is started again in {secs} s")]
    Restarting { name: String, secs: u64 },
    #[error("the MCP client could not be served: {0}")]
    Serve(String),
    #[error("{0}")]
    Refused(String),
}

/// One tool server behind the gateway: started on first use and started again when it stops.
/// Each failed start, and each stop soon after a start, makes the next start wait longer (at
/// once, then 1, 2, 4 … at most 30 s), so a server that cannot run is not restarted in a tight
/// loop; calls meanwhile are answered at once with a tool error saying so. (Calls to an upstream
/// that is being started wait for that start, at most a minute.)
struct Upstream {
    config: McpUpstream,
    slot: tokio::sync::Mutex<Slot>,
}

/// The running server, when it was started, and which start it was.
struct Running {
    service: RunningService<RoleClient, ()>,
    started: Instant,
    generation: u64,
}

#[derive(Default)]
struct Slot {
    running: Option<Running>,
    /// Starts so far (each running server's number).
    starts: u64,
    /// Failed starts and early stops in a row.
    failures: u32,
    /// No start before this.
    not_before: Option<Instant>,
}

impl Slot {
    /// The running server stopped: forget it and say when the next start may be.
    fn stopped(&mut self, name: &str) {
        let ran = self
            .running
            .take()
            .map_or(Duration::ZERO, |running| running.started.elapsed());
        tracing::warn!(
            upstream = %name,
            ran_secs = ran.as_secs(),
            "an MCP upstream stopped; it is started again"
        );
        if ran >= HEALTHY_AFTER {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.not_before = Some(Instant::now() + restart_pause(self.failures));
    }
}

/// The pause before the next start after `failures` failures in a row.
fn restart_pause(failures: u32) -> Duration {
    match failures {
        0 | 1 => Duration::ZERO,
        n => Duration::from_secs(1u64 << (n - 2).min(5)).min(MAX_RESTART_PAUSE),
    }
}

impl Upstream {
    fn new(config: McpUpstream) -> Upstream {
        Upstream {
            config,
            slot: tokio::sync::Mutex::new(Slot::default()),
        }
    }

    /// The running server's peer and its start's number, starting it (again) when it is not
    /// running. (A server that exited leaves its transport closed; `is_closed` alone does not
    /// say so.)
    async fn peer(&self) -> Result<(Peer<RoleClient>, u64), GatewayError> {
        let mut slot = self.slot.lock().await;
        if let Some(running) = &slot.running {
            if !running.service.is_closed() && !running.service.peer().is_transport_closed() {
                return Ok((running.service.peer().clone(), running.generation));
            }
            slot.stopped(&self.config.name);
        }
        if let Some(at) = slot.not_before {
            let now = Instant::now();
            if at > now {
                return Err(GatewayError::Restarting {
                    name: self.config.name.clone(),
                    secs: (at - now).as_secs().max(1),
                });
            }
        }
        let started = tokio::time::timeout(UPSTREAM_START_LIMIT, start(&self.config))
            .await
            .unwrap_or_else(|_| {
                Err(GatewayError::Start {
                    name: self.config.name.clone(),
                    reason: format!(
                        "it did not complete the MCP handshake within {} s",
                        UPSTREAM_START_LIMIT.as_secs()
                    ),
                })
            });
        match started {
            Ok(service) => {
                let peer = service.peer().clone();
                slot.starts += 1;
                let generation = slot.starts;
                slot.running = Some(Running {
                    service,
                    started: Instant::now(),
                    generation,
                });
                slot.not_before = None;
                Ok((peer, generation))
            }
            Err(error) => {
                slot.failures = slot.failures.saturating_add(1);
                slot.not_before = Some(Instant::now() + restart_pause(slot.failures));
                Err(error)
            }
        }
    }

    /// The connection to start number `generation` broke during a call: stop it, to be started
    /// again (unless it has been already: a newer server is left alone).
    async fn lost(&self, generation: u64) {
        let mut slot = self.slot.lock().await;
        if let Some(running) = &slot.running {
            if running.generation == generation {
                running.service.cancellation_token().cancel();
                slot.stopped(&self.config.name);
            }
        }
    }

    /// Stop the server, if it runs, and wait until it has (a child process has exited).
    async fn stop(&self) {
        let running = self.slot.lock().await.running.take();
        if let Some(mut running) = running {
            match running
                .service
                .close_with_timeout(UPSTREAM_STOP_LIMIT)
                .await
            {
                Ok(Some(_)) => {}
                Ok(None) => tracing::warn!(
                    upstream = %self.config.name,
                    "an MCP upstream did not stop in time; it is left to be killed"
                ),
                Err(error) => {
                    tracing::warn!(%error, upstream = %self.config.name, "an MCP upstream's connection ended badly")
                }
            }
        }
    }
}

/// Start an upstream (its command, or a connection to its URL) and greet it.
async fn start(config: &McpUpstream) -> Result<RunningService<RoleClient, ()>, GatewayError> {
    match &config.url {
        Some(url) => start_http(config, url).await,
        None => start_stdio(config).await,
    }
}

/// Start an upstream's command with only the allowed environment, and greet it.
async fn start_stdio(config: &McpUpstream) -> Result<RunningService<RoleClient, ()>, GatewayError> {
    let fail = |reason: String| GatewayError::Start {
        name: config.name.clone(),
        reason,
    };
    let program = config.command.as_str();
    let mut command = tokio::process::Command::new(program);
    command.args(&config.args).env_clear();
    for name in &config.env {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    let transport = rmcp::transport::TokioChildProcess::new(command)
        .map_err(|e| fail(format!("`{program}`: {e}")))?;
    ().serve(transport)
        .await
        .map_err(|e| fail(format!("it did not complete the MCP handshake: {e}")))
}

/// Connect to an upstream over Streamable HTTP with its headers (credentials read from the
/// environment, marked sensitive so they are never logged), and greet it.
async fn start_http(
    config: &McpUpstream,
    url: &str,
) -> Result<RunningService<RoleClient, ()>, GatewayError> {
    use axum::http::{HeaderName, HeaderValue};
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let fail = |reason: String| GatewayError::Start {
        name: config.name.clone(),
        reason,
    };
    let mut headers = std::collections::HashMap::new();
    let header_name = |name: &str| {
        HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| fail(format!("{name:?} is not a header name")))
    };
    for (name, value) in &config.headers {
        let value = HeaderValue::from_str(value)
            .map_err(|_| fail(format!("the value of {name} is not a header value")))?;
        headers.insert(header_name(name)?, value);
    }
    for (name, variable) in &config.headers_env {
        let value = std::env::var(variable).map_err(|_| {
            fail(format!(
                "the environment variable {variable} (for the header {name}) is not set"
            ))
        })?;
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            fail(format!(
                "the environment variable {variable} (for the header {name}) is not a header value"
            ))
        })?;
        value.set_sensitive(true);
        headers.insert(header_name(name)?, value);
    }
    // The HTTP client's TLS uses the process's crypto provider (ring, as the rest of the
    // server); installing it again is a no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let transport = rmcp::transport::StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url).custom_headers(headers),
    );
    ().serve(transport).await.map_err(|e| {
        fail(without_query(
            url,
            format!("it did not complete the MCP handshake: {e}"),
        ))
    })
}

/// `text` (an error, which may quote the URL) without the URL's query string, which may hold a
/// token: errors are logged and shown.
fn without_query(url: &str, text: String) -> String {
    // As configured, and as the URL parser writes it back (which errors quote).
    let raw = url
        .split_once('?')
        .map(|(_, rest)| rest.split('#').next().unwrap_or_default().to_string());
    let parsed = url::Url::parse(url)
        .ok()
        .and_then(|u| u.query().map(str::to_string));
    [raw, parsed]
        .into_iter()
        .flatten()
        .filter(|query| !query.is_empty())
        .fold(text, |text, query| text.replace(&query, "…"))
}

/// Every configured upstream, by name: one connection each, whoever calls.
pub struct Upstreams {
    list: Vec<Upstream>,
}

impl Upstreams {
    pub fn new(configs: &[McpUpstream]) -> Upstreams {
        Upstreams {
            list: configs.iter().cloned().map(Upstream::new).collect(),
        }
    }

    /// Whether an upstream is configured as `name`.
    pub fn knows(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn get(&self, name: &str) -> Option<&Upstream> {
        self.list.iter().find(|u| u.config.name == name)
    }

    /// The upstream `name`'s tools (all pages); `None` when it cannot be reached now (logged).
    pub async fn tools(&self, name: &str) -> Option<Vec<Tool>> {
        let upstream = self.get(name)?;
        let (peer, generation) = match upstream.peer().await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, "an MCP upstream's tools could not be listed");
                return None;
            }
        };
        match tokio::time::timeout(UPSTREAM_CALL_LIMIT, peer.list_all_tools()).await {
            Ok(Ok(tools)) => Some(tools),
            Ok(Err(error)) => {
                tracing::warn!(%error, upstream = %name, "an MCP upstream's tools could not be listed");
                if connection_broke(&error) {
                    upstream.lost(generation).await;
                }
                None
            }
            Err(_) => {
                tracing::warn!(upstream = %name, "an MCP upstream did not list its tools in time");
                None
            }
        }
    }

    /// Call `tool` on the upstream `name`: its result and the run's report. An upstream that
    /// cannot be started, fails during the call or does not answer in time gives a tool error
    /// saying so (and a failed run).
    pub async fn call(
        &self,
        name: &str,
        tool: &str,
        arguments: &Map<String, Value>,
    ) -> (CallToolResult, RunReport) {
        let started = Instant::now();
        let Some(upstream) = self.get(name) else {
            return failed(
                format!("No tool server is configured as `{name}`; the call did not run."),
                "failure",
                started,
            );
        };
        let (peer, generation) = match upstream.peer().await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, "an MCP call could not reach its upstream");
                let message = match error {
                    GatewayError::Restarting { .. } => format!("{error}; the call did not run."),
                    _ => format!(
                        "The tool server `{name}` could not be started; the call did not run."
                    ),
                };
                return failed(message, "failure", started);
            }
        };
        let params = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments.clone());
        match tokio::time::timeout(UPSTREAM_CALL_LIMIT, peer.call_tool(params)).await {
            Err(_) => failed(
                format!(
                    "The tool server `{name}` did not answer within {} s; the call may or may not have taken effect.",
                    UPSTREAM_CALL_LIMIT.as_secs()
                ),
                "timeout",
                started,
            ),
            Ok(Err(error)) => {
                tracing::warn!(%error, upstream = %name, "an MCP upstream failed during a call");
                if connection_broke(&error) {
                    upstream.lost(generation).await;
                }
                failed(
                    format!(
                        "The tool server `{name}` stopped or failed during the call; it may or may not have taken effect."
                    ),
                    "failure",
                    started,
                )
            }
            Ok(Ok(result)) => {
                let report = report_of(&result, started.elapsed());
                (result, report)
            }
        }
    }

    /// Stop every upstream that runs (all at once), and wait until they have.
    pub async fn stop_all(&self) {
        futures_util::future::join_all(self.list.iter().map(Upstream::stop)).await;
    }
}

/// Whether a failed request means the connection to the upstream is gone (not just this call).
fn connection_broke(error: &rmcp::ServiceError) -> bool {
    matches!(
        error,
        rmcp::ServiceError::TransportClosed | rmcp::ServiceError::TransportSend(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_error_never_shows_the_urls_query() {
        let url = "https://tools.example.test/mcp?token=s3cr%C3%A9t&x=1";
        let error = format!(
            "error sending request for url ({})",
            url::Url::parse(url)
                .map(|u| u.to_string())
                .unwrap_or_default()
        );
        let shown = without_query(url, error);
        assert!(!shown.contains("s3cr"), "{shown}");
        assert!(
            shown.contains("https://tools.example.test/mcp?…"),
            "{shown}"
        );
        assert_eq!(
            without_query("http://127.0.0.1:9/mcp", "refused".into()),
            "refused"
        );
        // Written as configured (the parser would encode the space and the quote).
        let raw = "https://tools.example.test/mcp?key=a b\"c#frag";
        let shown = without_query(raw, format!("bad url {raw}"));
        assert!(!shown.contains("a b"), "{shown}");
    }

    #[test]
    fn restarts_back_off_up_to_thirty_seconds() {
        assert_eq!(restart_pause(1), Duration::ZERO);
        assert_eq!(restart_pause(2), Duration::from_secs(1));
        assert_eq!(restart_pause(4), Duration::from_secs(4));
        assert_eq!(restart_pause(40), MAX_RESTART_PAUSE);
    }
}
