//! Countersign's one typed configuration.
//!
//! Sources, later ones winning: built-in defaults, an optional TOML file (`--config FILE`),
//! `LEPTOS_SITE_ROOT`, then `COUNTERSIGN_*` environment variables (`COUNTERSIGN_BIND` sets
//! `bind`, and so on). Unknown keys are refused so that a typo never silently falls back to a
//! default. [`Config::load`] validates everything and names the setting at fault.

pub mod values;

pub use values::TrustedProxies;

use figment::{
    providers::{Env, Format, Serialized, Toml},
    Figment,
};
use serde::{Deserialize, Serialize};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};
use thiserror::Error;

/// The prefix of every environment variable Countersign reads.
pub const ENV_PREFIX: &str = "COUNTERSIGN_";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub bind: SocketAddr,
    /// `sqlite://PATH` (the embedded default) or `postgres://...` for several replicas.
    pub database_url: String,
    /// Upper bound on pooled database connections.
    pub database_max_connections: u32,
    /// Folder holding the built site (`pkg/countersign.{js,wasm,css}` and public assets).
    pub site_root: PathBuf,
    /// `text` for people, `json` for log shippers.
    pub log_format: LogFormat,
    /// A `tracing` filter such as `info` or `info,countersign=debug`.
    pub log_level: String,
    /// Policy file (TOML); unset means the built-in default policy for IT-MCP's tools.
    pub policy_file: Option<PathBuf>,
    /// Secret for the audit chain's keyed checkpoints (HMAC-SHA256). Without it, truncation of
    /// the newest rows cannot be detected and `audit purge` is refused.
    pub audit_key: Option<Secret>,
    /// Ed25519 private key (the 32-byte seed, base64) that signs evidence bundles; its public
    /// half is served at `/api/v1/audit/public-key`. `countersign audit keygen` makes one.
    pub export_signing_key: Option<Secret>,
    /// Write a keyed checkpoint after this many audit rows...
    pub audit_checkpoint_rows: u64,
    /// ...or after this many seconds with new rows, whichever comes first.
    pub audit_checkpoint_secs: u64,
    /// Delete audit rows older than this once a day (e.g. `90d`); unset keeps everything.
    pub audit_retention: Option<String>,
    /// How often queued jobs are expired and lapsed leases reaped, in seconds.
    pub maintenance_interval_secs: u64,
    /// How long a connection may take to send a request's headers, counted from when the server
    /// starts waiting for them (so it also bounds an idle keep-alive connection), in seconds.
    pub header_read_timeout_secs: u64,
    /// How long an executor's claim on a job lasts without a heartbeat, in seconds (agents
    /// heartbeat every third of it). A crashed agent's job returns to the queue, or fails once
    /// its retries are spent, this long after its last heartbeat.
    pub job_lease_secs: u64,
    /// Password for the first local `admin` account, used only when no account exists yet
    /// (otherwise one is generated and printed once).
    pub admin_password: Option<Secret>,
    /// A session ends after this many minutes without a request...
    pub session_idle_minutes: u64,
    /// ...and this many hours after sign-in in any case.
    pub session_lifetime_hours: u64,
    /// The address people use to reach the portal (e.g. `https://countersign.example.com`).
    /// With `https://`, the session cookie is `Secure` and `__Host-` prefixed.
    pub public_url: Option<String>,
    /// Reverse proxies (IP addresses and CIDR ranges, comma-separated) whose `X-Forwarded-For`
    /// names the client for the sign-in throttle and the audit trail; from any other peer the
    /// header is ignored. Unset: nobody's.
    pub trusted_proxies: Option<String>,
    /// OpenID Connect issuer, exactly as the provider names itself (Keycloak:
    /// `https://HOST/realms/REALM`). Unset: people sign in with local accounts.
    pub oidc_issuer: Option<String>,
    /// The portal's client id at the provider (also the audience API tokens must carry).
    pub oidc_client_id: String,
    /// The portal's client secret (a confidential client).
    pub oidc_client_secret: Option<Secret>,
    /// Where the provider sends people back; default `PUBLIC_URL/auth/callback`.
    pub oidc_redirect_url: Option<String>,
    /// Scopes asked for at sign-in, space-separated.
    pub oidc_scopes: String,
    /// Further audiences accepted on bearer tokens, comma-separated (the client id always is).
    pub oidc_audiences: Option<String>,
    /// Provider roles that mean a portal role, e.g. `it-approvers=approver,secops=auditor`.
    /// A provider role named like a portal role (viewer, approver, auditor, admin) or like a
    /// policy capability always counts as that.
    pub oidc_role_map: Option<String>,
    /// The provider's name on the sign-in button.
    pub oidc_provider_name: String,
    /// Username/password sign-in with local accounts. Default: on without an issuer, off with one.
    pub local_sign_in: Option<bool>,
    /// API callers (token names or client ids) that may act for a person (`on_behalf_of`),
    /// comma-separated.
    pub api_delegating_callers: Option<String>,
    /// Requests per second each API caller may make on average (0: no limit)...
    pub api_rate_limit_per_sec: u32,
    /// ...and in a burst.
    pub api_rate_limit_burst: u32,
    /// Most requests for approval a caller may have waiting for one requester at once; the next
    /// is refused with 429 `pending_limit` (0: no limit). A repeated call joins its open request
    /// and does not count twice.
    pub max_pending_requests: u32,
    /// Seconds a verified API token is remembered before the database is asked again (so a
    /// revocation takes effect within this); 0 asks every time.
    pub api_token_cache_secs: u64,
    /// Refusals of unauthenticated requests (bad tokens, forged cookies, cross-origin posts,
    /// failed sign-ins) audited one by one per minute; the rest of the minute are counted in one
    /// summary row. 0: every one.
    pub audit_refusals_per_minute: u32,
    /// Notifications: a generic webhook that receives every event as signed JSON...
    pub notify_webhook_url: Option<String>,
    /// ...and the HMAC-SHA256 key its signatures use (required with the URL).
    pub notify_webhook_secret: Option<Secret>,
    /// A Slack-compatible incoming webhook (the URL holds a token, so it is a secret).
    pub notify_slack_url: Option<Secret>,
    /// E-mail: the SMTP server (`smtp://[USER:PASSWORD@]HOST[:PORT][?tls=required]` or
    /// `smtps://...`)...
    pub notify_smtp_url: Option<Secret>,
    /// ...the sender address...
    pub notify_email_from: Option<String>,
    /// ...and the approvers, comma-separated: `ADDRESS` (every job) or `ADDRESS:CAP+CAP` (jobs
    /// needing only those capabilities).
    pub notify_email_to: Option<String>,
    /// Which events are sent, comma-separated (default all): job.queued, job.approved,
    /// job.denied, job.executed, job.failed, job.expiring, job.expired, job.cancelled.
    pub notify_events: Option<String>,
    /// Put the call's arguments (and a failed run's error) in messages; off by default: they
    /// carry the call hash, and the approval page shows the arguments.
    pub notify_include_args: bool,
    /// `job.expiring` is sent this many seconds before a queued request expires.
    pub notify_expiry_warning_secs: u64,
    /// Attempts before a message is dead-lettered...
    pub notify_max_attempts: u32,
    /// ...with this pause before the first retry, doubling each time (at most ten minutes).
    pub notify_retry_base_ms: u64,
    /// SIEM feed as JSON Lines: a file path, or `stdout`.
    pub siem_jsonl: Option<String>,
    /// The file is rotated (to FILE.1, FILE.2 ...) when it would grow past this many bytes...
    pub siem_jsonl_max_bytes: u64,
    /// ...and this many rotated files are kept.
    pub siem_jsonl_keep: u32,
    /// SIEM feed as RFC 5424 syslog: `udp://HOST[:514]`, `tcp://HOST[:601]` or
    /// `tls://HOST[:6514]`.
    pub siem_syslog_url: Option<String>,
    /// CA certificates (PEM) that sign the collector's TLS certificate; default: the system's.
    pub siem_syslog_ca_file: Option<PathBuf>,
    /// What each SIEM record holds: `json` (the export's row) or `cef`.
    pub siem_format: SiemFormat,
    /// Where a new feed starts: `beginning` (the whole trail) or `now` (new rows only).
    pub siem_start: SiemStart,
    /// MCP gateway: how long a tool call that needs approval is held open (with progress
    /// notifications) before its result says where it waits, in seconds.
    pub mcp_hold_secs: u64,
    /// ...and how often a held call reports progress, in seconds.
    pub mcp_progress_secs: u64,
    /// The MCP tool servers the gateway passes calls to (`[[mcp_upstreams]]` in the file).
    pub mcp_upstreams: Vec<McpUpstream>,
    /// The person `countersign mcp` makes calls for by default (its token's holder must be in
    /// `api_delegating_callers`); `--on-behalf-of` overrides it.
    pub mcp_on_behalf_of: Option<String>,
}

/// The MCP gateway's settings, taken from the configuration once.
#[derive(Debug, Clone, Default)]
pub struct McpSettings {
    pub upstreams: Vec<McpUpstream>,
    /// How long a held call waits, and how often it reports progress.
    pub hold: std::time::Duration,
    pub every: std::time::Duration,
    /// Where people approve (the portal's address, no trailing `/`).
    pub portal: String,
    pub public_url: Option<String>,
}

/// One MCP tool server behind the gateway: either a command the gateway starts, speaking MCP on
/// its standard input and output, or a server the gateway reaches over Streamable HTTP at `url`.
/// The policy's `[mcp.upstreams.NAME]` says what its tools are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpUpstream {
    /// The upstream's name, as the policy and `countersign mcp --upstream` use it.
    pub name: String,
    /// The program to start, talking MCP on its standard input and output...
    #[serde(default)]
    pub command: String,
    /// ...its arguments...
    #[serde(default)]
    pub args: Vec<String>,
    /// ...and the environment variables it gets from the gateway's (no others).
    #[serde(default)]
    pub env: Vec<String>,
    /// ...or the address of a server speaking Streamable HTTP (`https://host/mcp`)...
    #[serde(default)]
    pub url: Option<String>,
    /// ...with these headers on every request (written here: nothing secret)...
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// ...and these, each read from the named environment variable (credentials such as
    /// `Authorization` belong here, never in the file).
    #[serde(default)]
    pub headers_env: std::collections::BTreeMap<String, String>,
    /// Put before each of its tool names (e.g. `it-mcp.`), to keep several upstreams' tools
    /// apart; empty keeps the names.
    #[serde(default)]
    pub prefix: String,
}

/// Headers that carry credentials: refused in `headers`, where they would sit in the file.
const CREDENTIAL_HEADERS: [&str; 9] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "x-api-token",
    "private-token",
    "x-access-token",
];

/// Headers the MCP transport sets itself: refused in `headers` and `headers_env`.
const TRANSPORT_HEADERS: [&str; 5] = [
    "accept",
    "content-type",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];

impl McpUpstream {
    /// Check one upstream's transport settings; the message names what is wrong.
    fn check(&self, name: &str) -> Result<(), String> {
        let stdio = !self.command.trim().is_empty();
        match (stdio, &self.url) {
            (true, Some(_)) => {
                return Err(format!(
                    "`{name}`: give either command (a program to start) or url (a server to reach), not both"
                ))
            }
            (false, None) => {
                return Err(format!(
                    "`{name}`: command is empty (the program to start), and no url is given"
                ))
            }
            (false, Some(url)) => {
                let parsed = url::Url::parse(url)
                    .map_err(|e| format!("`{name}`: url is not a URL: {e}"))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(format!("`{name}`: url must start with http:// or https://"));
                }
                if !parsed.username().is_empty() || parsed.password().is_some() {
                    return Err(format!(
                        "`{name}`: url must not hold credentials; put them in headers_env"
                    ));
                }
                let loopback = match parsed.host() {
                    Some(url::Host::Domain(host)) => host == "localhost",
                    Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                    Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                    None => false,
                };
                if parsed.scheme() == "http" && !loopback && !self.headers_env.is_empty() {
                    return Err(format!(
                        "`{name}`: credentials (headers_env) go only over https:// (or http:// to this machine)"
                    ));
                }
                if !self.args.is_empty() || !self.env.is_empty() {
                    return Err(format!(
                        "`{name}`: args and env are for upstreams started by command, not reached by url"
                    ));
                }
            }
            (true, None) => {
                if !self.headers.is_empty() || !self.headers_env.is_empty() {
                    return Err(format!(
                        "`{name}`: headers are for upstreams reached by url, not started by command"
                    ));
                }
            }
        }
        for header in self.headers.keys().chain(self.headers_env.keys()) {
            if TRANSPORT_HEADERS.contains(&header.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "`{name}`: the header {header} is set by the MCP transport itself"
                ));
            }
        }
        for (header, value) in &self.headers {
            if CREDENTIAL_HEADERS.contains(&header.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "`{name}`: the header {header} carries a credential; name the environment variable holding it in headers_env instead"
                ));
            }
            axum::http::HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| format!("`{name}`: {header:?} is not a header name"))?;
            axum::http::HeaderValue::from_str(value)
                .map_err(|_| format!("`{name}`: the value of {header} is not a header value"))?;
        }
        for (header, variable) in &self.headers_env {
            axum::http::HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| format!("`{name}`: {header:?} is not a header name"))?;
            if variable.is_empty()
                || !variable
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(format!(
                    "`{name}`: {variable:?} (for {header}) is not an environment variable's name"
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SiemFormat {
    Json,
    Cef,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SiemStart {
    Beginning,
    Now,
}

/// A secret setting: usable by the code, never shown by `Debug` (so never logged).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 3000)),
            database_url: "sqlite://countersign.db".to_string(),
            database_max_connections: 8,
            site_root: PathBuf::from("target/site"),
            log_format: LogFormat::Text,
            log_level: "info".to_string(),
            policy_file: None,
            audit_key: None,
            export_signing_key: None,
            audit_checkpoint_rows: 1_000,
            audit_checkpoint_secs: 300,
            audit_retention: None,
            maintenance_interval_secs: 10,
            header_read_timeout_secs: 15,
            job_lease_secs: 60,
            admin_password: None,
            session_idle_minutes: 30,
            session_lifetime_hours: 12,
            public_url: None,
            trusted_proxies: None,
            oidc_issuer: None,
            oidc_client_id: "countersign".to_string(),
            oidc_client_secret: None,
            oidc_redirect_url: None,
            oidc_scopes: "openid profile email".to_string(),
            oidc_audiences: None,
            oidc_role_map: None,
            oidc_provider_name: "Keycloak".to_string(),
            local_sign_in: None,
            api_delegating_callers: None,
            api_rate_limit_per_sec: 1_000,
            api_rate_limit_burst: 2_000,
            max_pending_requests: 50,
            api_token_cache_secs: 5,
            audit_refusals_per_minute: 600,
            notify_webhook_url: None,
            notify_webhook_secret: None,
            notify_slack_url: None,
            notify_smtp_url: None,
            notify_email_from: None,
            notify_email_to: None,
            notify_events: None,
            notify_include_args: false,
            notify_expiry_warning_secs: 600,
            notify_max_attempts: 12,
            notify_retry_base_ms: 2_000,
            siem_jsonl: None,
            siem_jsonl_max_bytes: 100 * 1024 * 1024,
            siem_jsonl_keep: 10,
            siem_syslog_url: None,
            siem_syslog_ca_file: None,
            siem_format: SiemFormat::Json,
            siem_start: SiemStart::Beginning,
            mcp_hold_secs: 50,
            mcp_progress_secs: 5,
            mcp_upstreams: Vec::new(),
            mcp_on_behalf_of: None,
        }
    }
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("configuration file {path} does not exist")]
    MissingFile { path: PathBuf },
    #[error("invalid configuration: {0}")]
    Source(String),
    #[error("invalid setting {setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

impl Config {
    /// Load from the process environment and an optional TOML file, then validate.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::from_figment(Self::figment(file)?)
    }

    /// The layered sources, exposed so tests can substitute the environment.
    pub fn figment(file: Option<&Path>) -> Result<Figment, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile {
                    path: path.to_path_buf(),
                });
            }
            figment = figment.merge(Toml::file(path));
        }
        Ok(figment
            .merge(
                Env::raw()
                    .only(&["LEPTOS_SITE_ROOT"])
                    .map(|_| "site_root".into()),
            )
            // COUNTERSIGN_CONFIG names the file itself and COUNTERSIGN_AGENT_* configure
            // `countersign agent`; the command line reads those, they are not settings.
            .merge(Env::prefixed(ENV_PREFIX).ignore(&[
                "config",
                "agent_server",
                "agent_token",
                "agent_id",
                "mcp_token",
            ])))
    }

    pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|errors| {
            ConfigError::Source(
                errors
                    .into_iter()
                    .map(|e| describe(&e))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.database_kind()?;
        if self.database_max_connections == 0 {
            return Err(invalid("database_max_connections", "must be at least 1"));
        }
        if self.log_level.trim().is_empty() {
            return Err(invalid("log_level", "must not be empty (try `info`)"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| invalid("log_level", format!("not a valid filter: {e}")))?;
        if let Some(key) = &self.audit_key {
            if key.expose().len() < 32 {
                return Err(invalid(
                    "audit_key",
                    "must be at least 32 characters (use a random secret)",
                ));
            }
        }
        if let Some(key) = &self.export_signing_key {
            values::signing_key(key.expose()).map_err(|e| invalid("export_signing_key", e))?;
        }
        if self.audit_checkpoint_rows == 0 || self.audit_checkpoint_secs == 0 {
            return Err(invalid(
                "audit_checkpoint_rows",
                "checkpoint intervals must be at least 1",
            ));
        }
        if self.session_idle_minutes == 0 || self.session_lifetime_hours == 0 {
            return Err(invalid(
                "session_idle_minutes",
                "session timeouts must be at least 1",
            ));
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid("public_url", "must start with http:// or https://"));
            }
        }
        if let Some(password) = &self.admin_password {
            if password.expose().chars().count() < 12 {
                return Err(invalid("admin_password", "must be at least 12 characters"));
            }
        }
        if !(3..=3_600).contains(&self.job_lease_secs) {
            return Err(invalid(
                "job_lease_secs",
                "must be between 3 and 3600 seconds",
            ));
        }
        if self.maintenance_interval_secs == 0 {
            return Err(invalid("maintenance_interval_secs", "must be at least 1"));
        }
        if !(1..=300).contains(&self.header_read_timeout_secs) {
            return Err(invalid(
                "header_read_timeout_secs",
                "must be between 1 and 300 seconds",
            ));
        }
        self.retention_secs()?;
        self.trusted_proxies()?;
        self.validate_oidc()?;
        self.validate_integrations()?;
        self.validate_mcp()?;
        Ok(())
    }

    fn validate_mcp(&self) -> Result<(), ConfigError> {
        if !(1..=3600).contains(&self.mcp_hold_secs) {
            return Err(invalid(
                "mcp_hold_secs",
                "must be between 1 and 3600 seconds",
            ));
        }
        if !(1..=60).contains(&self.mcp_progress_secs) {
            return Err(invalid(
                "mcp_progress_secs",
                "must be between 1 and 60 seconds",
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for upstream in &self.mcp_upstreams {
            let name = upstream.name.trim();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(invalid(
                    "mcp_upstreams",
                    format!(
                        "{:?} is not a name (letters, digits, `-`, `_`, `.`)",
                        upstream.name
                    ),
                ));
            }
            if !names.insert(name) {
                return Err(invalid("mcp_upstreams", format!("`{name}` is named twice")));
            }
            upstream
                .check(name)
                .map_err(|message| invalid("mcp_upstreams", message))?;
        }
        Ok(())
    }

    /// What the MCP gateway needs from the configuration.
    pub fn mcp_settings(&self) -> McpSettings {
        McpSettings {
            upstreams: self.mcp_upstreams.clone(),
            hold: std::time::Duration::from_secs(self.mcp_hold_secs),
            every: std::time::Duration::from_secs(self.mcp_progress_secs),
            portal: self
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", self.bind))
                .trim_end_matches('/')
                .to_string(),
            public_url: self.public_url.clone(),
        }
    }

    fn validate_integrations(&self) -> Result<(), ConfigError> {
        let http_url = |setting: &'static str, text: &str| {
            let url =
                url::Url::parse(text).map_err(|e| invalid(setting, format!("not a URL: {e}")))?;
            if matches!(url.scheme(), "http" | "https") {
                Ok(())
            } else {
                Err(invalid(setting, "must start with http:// or https://"))
            }
        };
        if let Some(url) = &self.notify_webhook_url {
            http_url("notify_webhook_url", url)?;
            if self
                .notify_webhook_secret
                .as_ref()
                .is_none_or(|s| s.expose().len() < 16)
            {
                return Err(invalid(
                    "notify_webhook_secret",
                    "is required with notify_webhook_url, at least 16 characters",
                ));
            }
        }
        if let Some(url) = &self.notify_slack_url {
            // The URL holds a token: the message never quotes it.
            http_url("notify_slack_url", url.expose())
                .map_err(|_| invalid("notify_slack_url", "must be an http:// or https:// URL"))?;
        }
        if let Some(url) = &self.notify_smtp_url {
            if !(url.expose().starts_with("smtp://") || url.expose().starts_with("smtps://")) {
                return Err(invalid(
                    "notify_smtp_url",
                    "must start with smtp:// or smtps://",
                ));
            }
            let from = self
                .notify_email_from
                .as_deref()
                .ok_or_else(|| invalid("notify_email_from", "is required with notify_smtp_url"))?;
            from.parse::<lettre::message::Mailbox>()
                .map_err(|e| invalid("notify_email_from", format!("not an e-mail address: {e}")))?;
            let to = self
                .notify_email_to
                .as_deref()
                .ok_or_else(|| invalid("notify_email_to", "is required with notify_smtp_url"))?;
            let recipients =
                values::parse_recipients(to).map_err(|e| invalid("notify_email_to", e))?;
            if recipients.is_empty() {
                return Err(invalid("notify_email_to", "names no address"));
            }
        }
        self.notify_event_types()?;
        if self.notify_max_attempts == 0 {
            return Err(invalid("notify_max_attempts", "must be at least 1"));
        }
        if self.notify_retry_base_ms == 0 {
            return Err(invalid("notify_retry_base_ms", "must be at least 1"));
        }
        if let Some(target) = &self.siem_jsonl {
            if target.trim().is_empty() {
                return Err(invalid("siem_jsonl", "must be a file path or stdout"));
            }
        }
        if self.siem_jsonl_max_bytes < 1_024 {
            return Err(invalid("siem_jsonl_max_bytes", "must be at least 1024"));
        }
        if self.siem_jsonl_keep == 0 {
            return Err(invalid("siem_jsonl_keep", "must be at least 1"));
        }
        if let Some(url) = &self.siem_syslog_url {
            values::parse_target(url).map_err(|e| invalid("siem_syslog_url", e))?;
        }
        if let Some(path) = &self.siem_syslog_ca_file {
            if !path.is_file() {
                return Err(invalid(
                    "siem_syslog_ca_file",
                    format!("{} is not a file", path.display()),
                ));
            }
        }
        Ok(())
    }

    /// The notification events to send (all when `notify_events` is unset).
    pub fn notify_event_types(
        &self,
    ) -> Result<std::collections::BTreeSet<crate::vocab::EventType>, ConfigError> {
        use crate::vocab::EventType;
        let Some(text) = &self.notify_events else {
            return Ok(EventType::ALL.into_iter().collect());
        };
        text.split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                EventType::parse(e).ok_or_else(|| {
                    invalid(
                        "notify_events",
                        format!(
                            "`{e}` is not one of {}",
                            EventType::ALL.map(EventType::as_str).join(", ")
                        ),
                    )
                })
            })
            .collect()
    }

    fn validate_oidc(&self) -> Result<(), ConfigError> {
        self.oidc_role_map()?;
        let Some(issuer) = &self.oidc_issuer else {
            return Ok(());
        };
        let issuer_url = url::Url::parse(issuer)
            .map_err(|e| invalid("oidc_issuer", format!("not a URL: {e}")))?;
        if !matches!(issuer_url.scheme(), "http" | "https") {
            return Err(invalid(
                "oidc_issuer",
                "must start with http:// or https://",
            ));
        }
        if self.oidc_client_id.trim().is_empty() {
            return Err(invalid("oidc_client_id", "must not be empty"));
        }
        if self.oidc_client_secret.is_none() {
            return Err(invalid(
                "oidc_client_secret",
                "is required with oidc_issuer (the portal is a confidential client)",
            ));
        }
        let redirect = self.oidc_redirect_url().ok_or_else(|| {
            invalid(
                "oidc_redirect_url",
                "is required with oidc_issuer (or set public_url)",
            )
        })?;
        url::Url::parse(&redirect)
            .map_err(|e| invalid("oidc_redirect_url", format!("not a URL: {e}")))?;
        if !self.oidc_scopes.split_whitespace().any(|s| s == "openid") {
            return Err(invalid("oidc_scopes", "must include openid"));
        }
        Ok(())
    }

    /// Where the provider sends people back after sign-in.
    pub fn oidc_redirect_url(&self) -> Option<String> {
        self.oidc_redirect_url.clone().or_else(|| {
            self.public_url
                .as_deref()
                .map(|u| format!("{}/auth/callback", u.trim_end_matches('/')))
        })
    }

    /// API callers allowed to act for people.
    pub fn delegating_callers(&self) -> std::collections::BTreeSet<String> {
        self.api_delegating_callers
            .iter()
            .flat_map(|list| list.split(','))
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Whether people may sign in with local accounts.
    pub fn local_sign_in(&self) -> bool {
        self.local_sign_in.unwrap_or(self.oidc_issuer.is_none())
    }

    /// Audiences accepted on bearer tokens: the client id and any configured others.
    pub fn oidc_audiences(&self) -> Vec<String> {
        let mut out = vec![self.oidc_client_id.clone()];
        out.extend(
            self.oidc_audiences
                .iter()
                .flat_map(|a| a.split(','))
                .map(str::trim)
                .filter(|a| !a.is_empty() && *a != self.oidc_client_id)
                .map(str::to_string),
        );
        out
    }

    /// `provider-role=portal-role` pairs of `oidc_role_map`.
    pub fn oidc_role_map(&self) -> Result<Vec<(String, String)>, ConfigError> {
        let Some(text) = &self.oidc_role_map else {
            return Ok(Vec::new());
        };
        text.split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (from, to) = pair.split_once('=').ok_or_else(|| {
                    invalid(
                        "oidc_role_map",
                        format!("`{pair}` is not provider-role=portal-role"),
                    )
                })?;
                let (from, to) = (from.trim(), to.trim());
                if from.is_empty() || !crate::vocab::ROLES.contains(&to) {
                    return Err(invalid(
                        "oidc_role_map",
                        format!(
                            "`{pair}`: the portal role must be one of {}",
                            crate::vocab::ROLES.join(", ")
                        ),
                    ));
                }
                Ok((from.to_string(), to.to_string()))
            })
            .collect()
    }

    /// The database named by `database_url`.
    pub fn database_kind(&self) -> Result<DatabaseKind, ConfigError> {
        let url = self.database_url.as_str();
        if url.starts_with("sqlite:") {
            if url
                .trim_start_matches("sqlite:")
                .trim_start_matches("//")
                .is_empty()
            {
                return Err(invalid(
                    "database_url",
                    "a sqlite URL needs a file name, e.g. sqlite://countersign.db",
                ));
            }
            Ok(DatabaseKind::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseKind::Postgres)
        } else {
            Err(invalid(
                "database_url",
                "must start with sqlite:// or postgres://",
            ))
        }
    }

    /// The reverse proxies whose `X-Forwarded-For` is believed (`trusted_proxies`).
    pub fn trusted_proxies(&self) -> Result<TrustedProxies, ConfigError> {
        TrustedProxies::parse(self.trusted_proxies.as_deref().unwrap_or(""))
            .map_err(|e| invalid("trusted_proxies", e))
    }

    /// Whether the portal is served over https (secure, `__Host-` session cookies).
    pub fn https(&self) -> bool {
        self.public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
    }

    /// The retention period in seconds, when one is configured.
    pub fn retention_secs(&self) -> Result<Option<u64>, ConfigError> {
        match &self.audit_retention {
            None => Ok(None),
            Some(text) => enforcer::policy::parse_duration(text)
                .map(Some)
                .ok_or_else(|| invalid("audit_retention", "not a duration (use e.g. 90d, 2160h)")),
        }
    }

    /// Check that the built site is where the server will look for it.
    pub fn check_site_root(&self) -> Result<(), ConfigError> {
        let bundle = self.site_root.join("pkg").join("countersign.js");
        if bundle.is_file() {
            Ok(())
        } else {
            Err(invalid(
                "site_root",
                format!(
                    "{} has no pkg/countersign.js; build the site (scripts/build-site.sh) or point \
                     LEPTOS_SITE_ROOT / COUNTERSIGN_SITE_ROOT at it",
                    self.site_root.display()
                ),
            ))
        }
    }
}

fn invalid(setting: &'static str, message: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        setting,
        message: message.to_string(),
    }
}

/// One figment error as a line that names the setting and where its value came from.
fn describe(error: &figment::Error) -> String {
    let setting = error.path.join(".");
    let source = error
        .metadata
        .as_ref()
        .map(|m| match &m.source {
            Some(src) => format!(" (from {} {src})", m.name),
            None => format!(" (from {})", m.name),
        })
        .unwrap_or_default();
    if setting.is_empty() {
        format!("{}{source}", error.kind)
    } else {
        format!("setting {setting}: {}{source}", error.kind)
    }
}

#[cfg(test)]
// figment's test jail returns its own (large) error type; that is its API, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    fn load_in(
        jail_setup: impl FnOnce(&mut Jail) -> figment::error::Result<()>,
    ) -> Result<Config, String> {
        let mut out = Err(String::new());
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail_setup(jail)?;
            out = Config::load(None).map_err(|e| e.to_string());
            Ok(())
        });
        out
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = load_in(|_| Ok(())).expect("defaults load");
        assert_eq!(config.bind.to_string(), "127.0.0.1:3000");
        assert_eq!(config.database_url, "sqlite://countersign.db");
        assert_eq!(config.database_kind().ok(), Some(DatabaseKind::Sqlite));
        assert_eq!(config.site_root, PathBuf::from("target/site"));
        assert_eq!(config.log_format, LogFormat::Text);
    }

    #[test]
    fn environment_overrides_defaults() {
        let config = load_in(|jail| {
            jail.set_env("COUNTERSIGN_BIND", "127.0.0.1:4100");
            jail.set_env("COUNTERSIGN_DATABASE_URL", "postgres://localhost/test");
            jail.set_env("COUNTERSIGN_LOG_FORMAT", "json");
            jail.set_env("LEPTOS_SITE_ROOT", "/srv/site");
            Ok(())
        })
        .expect("env loads");
        assert_eq!(config.bind.port(), 4100);
        assert_eq!(config.database_kind().ok(), Some(DatabaseKind::Postgres));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.site_root, PathBuf::from("/srv/site"));
    }

    #[test]
    fn a_bad_value_names_its_setting() {
        let err = load_in(|jail| {
            jail.set_env("COUNTERSIGN_BIND", "not-an-address");
            Ok(())
        })
        .expect_err("bad bind");
        assert!(err.contains("setting bind"), "{err}");
        assert!(err.contains("COUNTERSIGN_"), "{err}");

        let err = load_in(|jail| {
            jail.set_env("COUNTERSIGN_DATABASE_URL", "mysql://x");
            Ok(())
        })
        .expect_err("bad url");
        assert!(err.contains("database_url"), "{err}");

        let err = load_in(|jail| {
            jail.set_env("COUNTERSIGN_LOG_FORMAT", "xml");
            Ok(())
        })
        .expect_err("bad format");
        assert!(err.contains("log_format"), "{err}");
    }

    #[test]
    fn the_audit_key_is_never_shown() {
        let config = load_in(|jail| {
            jail.set_env("COUNTERSIGN_AUDIT_KEY", "k".repeat(40));
            jail.set_env("COUNTERSIGN_AUDIT_RETENTION", "90d");
            Ok(())
        })
        .expect("loads");
        assert!(!format!("{config:?}").contains("kkkk"));
        assert_eq!(
            config.audit_key.as_ref().map(|k| k.expose().len()),
            Some(40)
        );
        assert_eq!(config.retention_secs().ok().flatten(), Some(90 * 86_400));
        let short = load_in(|jail| {
            jail.set_env("COUNTERSIGN_AUDIT_KEY", "short");
            Ok(())
        })
        .expect_err("short key");
        assert!(
            short.contains("audit_key") && !short.contains("short"),
            "{short}"
        );
    }

    #[test]
    fn integration_settings_are_checked_and_their_secrets_hidden() {
        let err = |vars: &[(&str, &str)]| {
            load_in(|jail| {
                for (k, v) in vars {
                    jail.set_env(k, v);
                }
                Ok(())
            })
            .expect_err("refused")
        };
        let e = err(&[("COUNTERSIGN_NOTIFY_WEBHOOK_URL", "https://hooks.example/cs")]);
        assert!(e.contains("notify_webhook_secret"), "{e}");
        let e = err(&[
            ("COUNTERSIGN_NOTIFY_WEBHOOK_URL", "ftp://hooks.example"),
            ("COUNTERSIGN_NOTIFY_WEBHOOK_SECRET", "0123456789abcdef0"),
        ]);
        assert!(e.contains("notify_webhook_url"), "{e}");
        let e = err(&[(
            "COUNTERSIGN_NOTIFY_SLACK_URL",
            "hooks.slack.com/services/T0/B0/XYZSECRET",
        )]);
        assert!(
            e.contains("notify_slack_url") && !e.contains("XYZSECRET"),
            "{e}"
        );
        let e = err(&[("COUNTERSIGN_NOTIFY_SMTP_URL", "smtp://mail.example")]);
        assert!(e.contains("notify_email_from"), "{e}");
        let e = err(&[
            ("COUNTERSIGN_NOTIFY_SMTP_URL", "smtp://mail.example"),
            ("COUNTERSIGN_NOTIFY_EMAIL_FROM", "countersign@example.com"),
            ("COUNTERSIGN_NOTIFY_EMAIL_TO", "ops@example.com, nobody"),
        ]);
        assert!(e.contains("notify_email_to") && e.contains("nobody"), "{e}");
        let e = err(&[("COUNTERSIGN_NOTIFY_EVENTS", "job.queued,job.exploded")]);
        assert!(
            e.contains("notify_events") && e.contains("job.exploded"),
            "{e}"
        );
        let e = err(&[("COUNTERSIGN_SIEM_SYSLOG_URL", "http://logs.example")]);
        assert!(e.contains("siem_syslog_url"), "{e}");
        let e = err(&[("COUNTERSIGN_SIEM_FORMAT", "xml")]);
        assert!(e.contains("siem_format"), "{e}");
        let e = err(&[("COUNTERSIGN_SIEM_SYSLOG_CA_FILE", "/nonexistent/ca.pem")]);
        assert!(e.contains("siem_syslog_ca_file"), "{e}");

        let config = load_in(|jail| {
            jail.set_env(
                "COUNTERSIGN_NOTIFY_SMTP_URL",
                "smtp://user:SMTPSECRET@mail.example:587?tls=required",
            );
            jail.set_env(
                "COUNTERSIGN_NOTIFY_EMAIL_FROM",
                "Countersign <countersign@example.com>",
            );
            jail.set_env(
                "COUNTERSIGN_NOTIFY_EMAIL_TO",
                "ops@example.com:ssh-linux+local-sudo",
            );
            jail.set_env(
                "COUNTERSIGN_NOTIFY_SLACK_URL",
                "https://hooks.slack.com/services/T0/B0/XYZSECRET",
            );
            jail.set_env("COUNTERSIGN_NOTIFY_EVENTS", "job.queued, job.expiring");
            jail.set_env("COUNTERSIGN_SIEM_SYSLOG_URL", "tls://logs.example");
            jail.set_env("COUNTERSIGN_SIEM_FORMAT", "cef");
            Ok(())
        })
        .expect("loads");
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("SMTPSECRET") && !shown.contains("XYZSECRET"),
            "{shown}"
        );
        assert_eq!(config.notify_event_types().map(|e| e.len()).ok(), Some(2));
        assert_eq!(config.siem_format, SiemFormat::Cef);
        assert_eq!(config.siem_start, SiemStart::Beginning);
    }

    #[test]
    fn trusted_proxies_are_checked_at_start_up() {
        let config = load_in(|_| Ok(())).expect("defaults load");
        assert!(config.trusted_proxies().expect("no proxies").is_empty());
        let config = load_in(|jail| {
            jail.set_env(
                "COUNTERSIGN_TRUSTED_PROXIES",
                "10.0.0.0/8, 192.168.4.20,fd00::/8",
            );
            Ok(())
        })
        .expect("a valid list loads");
        let proxies = config.trusted_proxies().expect("parsed");
        assert!(proxies.contains("10.20.30.40".parse().expect("ip")));
        assert!(proxies.contains("192.168.4.20".parse().expect("ip")));
        assert!(!proxies.contains("192.168.4.21".parse().expect("ip")));
        for bad in ["10.0.0.0/40", "proxy.internal", "10.0.0.1,nope"] {
            let err = load_in(|jail| {
                jail.set_env("COUNTERSIGN_TRUSTED_PROXIES", bad);
                Ok(())
            })
            .expect_err("refused");
            assert!(err.contains("trusted_proxies"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_misspelt_setting_is_refused() {
        let err = load_in(|jail| {
            jail.set_env("COUNTERSIGN_BINDD", "127.0.0.1:1");
            Ok(())
        })
        .expect_err("unknown key");
        assert!(err.contains("bindd"), "{err}");
    }

    #[test]
    fn the_file_is_read_and_the_environment_wins() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "countersign.toml",
                "bind = \"127.0.0.1:5000\"\nlog_level = \"debug\"\n",
            )?;
            jail.set_env("COUNTERSIGN_LOG_LEVEL", "warn");
            let config =
                Config::load(Some(Path::new("countersign.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.bind.port(), 5000);
            assert_eq!(config.log_level, "warn");
            let missing = Config::load(Some(Path::new("nope.toml"))).expect_err("missing file");
            assert!(missing.to_string().contains("nope.toml"));
            Ok(())
        });
    }

    #[test]
    fn mcp_upstreams_are_read_and_checked() {
        let load = |text: &str| {
            let mut out = Err(String::new());
            Jail::expect_with(|jail| {
                jail.clear_env();
                jail.create_file("countersign.toml", text)?;
                out = Config::load(Some(Path::new("countersign.toml"))).map_err(|e| e.to_string());
                Ok(())
            });
            out
        };
        let config = load(
            "mcp_hold_secs = 20\n[[mcp_upstreams]]\nname = \"it-mcp\"\ncommand = \"node\"\n\
             args = [\"index.js\"]\nenv = [\"PATH\"]\nprefix = \"it.\"\n",
        )
        .expect("loads");
        let settings = config.mcp_settings();
        assert_eq!(settings.hold, std::time::Duration::from_secs(20));
        assert_eq!(settings.upstreams.len(), 1);
        assert_eq!(settings.upstreams[0].prefix, "it.");
        assert_eq!(settings.portal, "http://127.0.0.1:3000");
        let remote = load(
            "[[mcp_upstreams]]\nname = \"it-mcp\"\nurl = \"https://it-mcp.example/mcp\"\n\
             headers = { X-Team = \"ops\" }\nheaders_env = { Authorization = \"IT_MCP_AUTH\" }\n",
        )
        .expect("an upstream reached by url loads");
        let upstream = &remote.mcp_settings().upstreams[0];
        assert_eq!(upstream.url.as_deref(), Some("https://it-mcp.example/mcp"));
        assert_eq!(upstream.headers_env["Authorization"], "IT_MCP_AUTH");
        for (text, says) in [
            ("[[mcp_upstreams]]\nname = \"a b\"\ncommand = \"x\"\n", "is not a name"),
            (
                "[[mcp_upstreams]]\nname = \"a\"\ncommand = \"x\"\n[[mcp_upstreams]]\nname = \"a\"\ncommand = \"y\"\n",
                "named twice",
            ),
            ("[[mcp_upstreams]]\nname = \"a\"\ncommand = \" \"\n", "command is empty"),
            ("[[mcp_upstreams]]\nname = \"a\"\ncommand = \"x\"\nurl = \"http://x\"\n", "not both"),
            ("[[mcp_upstreams]]\nname = \"a\"\nurl = \"ftp://x\"\n", "must start with http"),
            ("[[mcp_upstreams]]\nname = \"a\"\nurl = \"http://u:p@x/mcp\"\n", "must not hold credentials"),
            (
                "[[mcp_upstreams]]\nname = \"a\"\nurl = \"http://x/mcp\"\nheaders = { Authorization = \"Bearer s\" }\n",
                "headers_env instead",
            ),
            (
                "[[mcp_upstreams]]\nname = \"a\"\nurl = \"https://x/mcp\"\nheaders_env = { Authorization = \"A-B\" }\n",
                "not an environment variable",
            ),
            (
                "[[mcp_upstreams]]\nname = \"a\"\ncommand = \"x\"\nheaders = { X-Team = \"ops\" }\n",
                "reached by url",
            ),
            (
                "[[mcp_upstreams]]\nname = \"a\"\nurl = \"http://x/mcp\"\nheaders = { Private-Token = \"t\" }\n",
                "headers_env instead",
            ),
            (
                "[[mcp_upstreams]]\nname = \"a\"\nurl = \"http://x/mcp\"\nheaders = { Accept = \"*/*\" }\n",
                "set by the MCP transport",
            ),
            (
                "[[mcp_upstreams]]\nname = \"a\"\nurl = \"http://mcp.example/mcp\"\nheaders_env = { Authorization = \"T\" }\n",
                "only over https",
            ),
            (
                "[[mcp_upstreams]]\nname = \"a\"\nurl = \"https://x/mcp\"\nargs = [\"y\"]\n",
                "started by command",
            ),
            ("mcp_hold_secs = 0\n", "mcp_hold_secs"),
        ] {
            let error = load(text).expect_err(says);
            assert!(error.contains(says), "{error}");
        }
    }
}
