//! The `countersign` command line: its arguments (clap) and what each command does. The
//! binary (`main.rs`) only runs [`run`].

use crate::store::{audit, AnyStore, AuditAction, AuditWriter, EventKind, NewAuditEvent, Risk};
use crate::{
    app, checkpoint_policy, cli::evaluate, config::Config, services::maintenance::Maintenance,
    telemetry, AppState, Database,
};
use clap::{Args, Parser, Subcommand};
use std::io::{BufReader, Read, Write};
use std::{path::PathBuf, process::ExitCode, sync::Arc};

#[derive(Debug, Parser)]
#[command(
    name = "countersign",
    version,
    about = "Approval portal and policy enforcer for IT-MCP"
)]
struct Cli {
    /// TOML configuration file; COUNTERSIGN_* environment variables override it.
    #[arg(long, global = true, env = "COUNTERSIGN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the portal and the API (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Decide one request (JSON on stdin or --request FILE) and print the decision as JSON.
    Evaluate(EvaluateArgs),
    /// Work with policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Check or maintain the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Manage local accounts (used when no OpenID provider is configured).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API tokens for tool servers and agents.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Remembered approvals (standing grants): list them, revoke one.
    #[command(subcommand)]
    Grants(GrantsCommand),
    /// What shadow mode let through that enforcing would have held, by operation, pattern and
    /// category.
    Shadow {
        /// How many days back, 1 to 90.
        #[arg(long, default_value_t = 7)]
        days: u32,
    },
    /// Run as an execution agent: claim approved jobs, run them, report the results.
    Agent(AgentArgs),
    /// Be an MCP server on standard input and output (what a desktop MCP client starts) that
    /// passes every tool call of the upstream tool servers through Countersign.
    Mcp(McpArgs),
    /// Import an existing IT-MCP installation's SQLite databases (idempotent, all or nothing).
    Import {
        /// IT-MCP's audit database (mcp_audit.db).
        #[arg(long, value_name = "FILE")]
        audit_db: Option<PathBuf>,
        /// IT-MCP's command queue database (mcp_command_queue.db).
        #[arg(long, value_name = "FILE")]
        queue_db: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct AgentArgs {
    /// The Countersign server's base URL.
    #[arg(long, env = "COUNTERSIGN_AGENT_SERVER", value_name = "URL")]
    server: String,
    /// The agent's API token (`countersign token create --agent ID`); prefer the environment
    /// variable, which other users cannot read from the process list.
    #[arg(
        long,
        env = "COUNTERSIGN_AGENT_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: String,
    /// The agent's id: the name its token was created with (`--agent ID`).
    #[arg(long, env = "COUNTERSIGN_AGENT_ID", value_name = "NAME")]
    id: String,
    /// Stop after this many jobs (default: run until stopped).
    #[arg(long, value_name = "N")]
    max_jobs: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token; it is printed once and only its hash is kept.
    Create {
        /// The token's name (the caller id it acts as); with --agent, the agent's id.
        #[arg(long, required_unless_present = "agent", conflicts_with = "agent")]
        name: Option<String>,
        /// An execution agent's token: named NAME, with the `agent` role alone, so it may claim
        /// the jobs for agent NAME (or any agent) and report their runs, and nothing else.
        #[arg(long, value_name = "NAME")]
        agent: Option<String>,
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        #[arg(long = "capability", value_name = "CAPABILITY")]
        capabilities: Vec<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by name.
    Revoke { name: String },
}

#[derive(Debug, Subcommand)]
enum GrantsCommand {
    /// Every grant, newest first: what it covers, for whom, its uses, and whether it stands.
    List,
    /// Revoke a grant at once (audited under the name given).
    Revoke {
        id: String,
        /// Who revokes it, as the audit trail should name them.
        #[arg(long = "by", value_name = "NAME")]
        by: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add an account. The password is read from standard input when --password-stdin is
    /// given; otherwise one is generated and printed once.
    Add {
        name: String,
        /// viewer, approver, auditor or admin (repeatable)
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// An enforcer capability such as ssh-linux (repeatable)
        #[arg(long = "capability", value_name = "CAPABILITY")]
        capabilities: Vec<String>,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password, read from standard input.
    Passwd { name: String },
    /// Disable an account: it can no longer sign in.
    Disable { name: String },
    /// Enable a disabled account.
    Enable { name: String },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk the hash chain (and keyed checkpoints); exit 1 naming the first row that fails.
    Verify,
    /// Verify an evidence bundle offline: its signature, every file's hash, and its chain
    /// segment; exit 1 naming what failed.
    VerifyExport {
        /// The bundle (.tar) downloaded from the Reports page or `/api/v1/audit/export`.
        bundle: PathBuf,
        /// The signer's public key: base64, or a file holding it (or the JSON that
        /// `/api/v1/audit/public-key` serves). Without it the key inside the bundle is used,
        /// which proves integrity but not who signed.
        #[arg(long, value_name = "KEY")]
        public_key: Option<String>,
    },
    /// Make a new bundle-signing key (for COUNTERSIGN_EXPORT_SIGNING_KEY) and print it with
    /// its public half.
    Keygen,
    /// Delete rows older than a period, anchoring the chain so `verify` still passes.
    Purge {
        /// e.g. 90d, 2160h
        #[arg(long, value_name = "DURATION")]
        older_than: String,
    },
}

#[derive(Debug, Args)]
struct EvaluateArgs {
    /// Read the request from FILE instead of standard input.
    #[arg(long, value_name = "FILE")]
    request: Option<PathBuf>,
    /// Policy file to decide with (default: the configured policy, else the built-in default).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// One JSON request per line in, one decision per line out.
    #[arg(long)]
    jsonl: bool,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate a policy file; errors name the file, line and field.
    Check {
        /// The policy file.
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
struct McpArgs {
    /// An upstream from `mcp_upstreams` to pass calls to (repeat for several; default all).
    #[arg(long = "upstream", value_name = "NAME")]
    upstreams: Vec<String>,
    /// The caller's API token (`countersign token create`); calls are decided for its holder.
    #[arg(
        long,
        env = "COUNTERSIGN_MCP_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: String,
    /// The person the calls are made for (the token's holder must be allowed to act for people:
    /// `api_delegating_callers`); default `mcp_on_behalf_of` from the configuration.
    #[arg(long, env = "COUNTERSIGN_MCP_ON_BEHALF_OF", value_name = "PERSON")]
    on_behalf_of: Option<String>,
}

/// Parse the arguments and run the command; the process's exit status.
pub async fn run() -> ExitCode {
    let cli = Cli::parse();
    // Offline commands need no configuration beyond their arguments.
    match &cli.command {
        Some(Command::Evaluate(args)) => return run_evaluate(args, cli.config.as_deref()),
        Some(Command::Policy(PolicyCommand::Check { file })) => return policy_check(file),
        Some(Command::Audit(AuditCommand::VerifyExport { bundle, public_key })) => {
            return verify_export(bundle, public_key.as_deref())
        }
        Some(Command::Audit(AuditCommand::Keygen)) => return keygen(),
        _ => {}
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("countersign: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Migrate => migrate(config).await,
        Command::Audit(AuditCommand::Verify) => return audit_verify(config).await,
        Command::Audit(AuditCommand::Purge { older_than }) => {
            audit_purge(config, &older_than).await
        }
        Command::Import { audit_db, queue_db } => import(config, audit_db, queue_db).await,
        Command::User(command) => user(config, command).await,
        Command::Token(command) => token(config, command).await,
        Command::Grants(command) => grants(config, command).await,
        Command::Shadow { days } => shadow(config, days).await,
        Command::Mcp(args) => mcp(config, args).await,
        Command::Agent(args) => crate::agent::run(
            crate::agent::AgentOptions {
                server: args.server,
                token: args.token,
                id: args.id,
                max_jobs: args.max_jobs,
            },
            shutdown_signal(),
        )
        .await
        .map_err(Failure::from),
        Command::Evaluate(_)
        | Command::Policy(_)
        | Command::Audit(AuditCommand::VerifyExport { .. } | AuditCommand::Keygen) => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            tracing::error!("{message}");
            eprintln!("countersign: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Why a command failed: the sentence `countersign` prints before it exits. Any error turns
/// into one with `?` (it is deliberately not an error type itself, so that blanket conversion
/// is possible).
#[derive(Debug)]
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(error: E) -> Failure {
        Failure(error.to_string())
    }
}

/// Exit status for bad input (malformed request, invalid policy).
const EXIT_INVALID: u8 = 2;

fn run_evaluate(args: &EvaluateArgs, config_file: Option<&std::path::Path>) -> ExitCode {
    let fail = |message: String| {
        eprintln!("countersign: {message}");
        ExitCode::from(EXIT_INVALID)
    };
    let policy_path = match &args.policy {
        Some(path) => Some(path.clone()),
        None => match Config::load(config_file) {
            Ok(config) => config.policy_file,
            Err(error) => return fail(error.to_string()),
        },
    };
    let policy = match evaluate::load_policy(policy_path.as_deref()) {
        Ok(policy) => policy,
        Err(error) => return fail(error.to_string()),
    };
    let input: Box<dyn Read> = match &args.request {
        Some(path) => match std::fs::File::open(path) {
            Ok(file) => Box::new(file),
            Err(error) => return fail(format!("cannot read {}: {error}", path.display())),
        },
        None => Box::new(std::io::stdin()),
    };
    let mut stdout = std::io::stdout().lock();
    let result = if args.jsonl {
        evaluate::evaluate_lines(
            &policy,
            BufReader::new(input),
            &mut stdout,
            &mut std::io::stderr(),
        )
        .map(|_| ())
    } else {
        let mut text = String::new();
        match BufReader::new(input).read_to_string(&mut text) {
            Ok(_) => evaluate::evaluate_one(&policy, &text, &mut stdout),
            Err(error) => return fail(format!("cannot read the request: {error}")),
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // --jsonl has already reported each bad line.
        Err(_) if args.jsonl => ExitCode::from(EXIT_INVALID),
        Err(error) => fail(error.to_string()),
    }
}

fn policy_check(file: &std::path::Path) -> ExitCode {
    match evaluate::load_policy(Some(file)) {
        Ok(policy) => {
            let line = evaluate::describe_policy(&file.display().to_string(), &policy);
            if writeln!(std::io::stdout(), "{line}").is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("countersign: {error}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

async fn open_database(config: &Config) -> Result<Database, Failure> {
    let db = Database::connect(config)
        .await
        .map_err(|e| format!("cannot open database (setting database_url): {e}"))?;
    db.migrate()
        .await
        .map_err(|e| format!("cannot apply migrations: {e}"))?;
    Ok(db)
}

fn audit_key(config: &Config) -> Option<Vec<u8>> {
    config
        .audit_key
        .as_ref()
        .map(|k| k.expose().as_bytes().to_vec())
}

async fn audit_verify(config: Config) -> ExitCode {
    let db = match open_database(&config).await {
        Ok(db) => db,
        Err(Failure(message)) => {
            eprintln!("countersign: {message}");
            return ExitCode::FAILURE;
        }
    };
    let store = AnyStore::new(&db);
    let key = audit_key(&config);
    let report = match audit::verify(&store, key.as_deref()).await {
        Ok(report) => report,
        Err(error) => {
            eprintln!("countersign: cannot read the audit trail: {error}");
            return ExitCode::FAILURE;
        }
    };
    db.close().await;
    let mut out = std::io::stdout();
    let written = match &report.first_bad {
        None => writeln!(
            out,
            "ok: {} rows verified (rows {}..={}), head {}, {} keyed checkpoints verified{}",
            report.rows,
            report.first_seq,
            report.head_seq,
            report.head_hash,
            report.checkpoints_verified,
            if report.keyed {
                ""
            } else {
                " (no COUNTERSIGN_AUDIT_KEY: truncation of the newest rows cannot be detected)"
            }
        ),
        Some((seq, why)) => writeln!(out, "FAILED at row {seq}: {why}"),
    };
    if written.is_err() || !report.ok() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn verify_export(bundle: &std::path::Path, public_key: Option<&str>) -> ExitCode {
    use crate::services::exports::bundle;
    let key = match public_key.map(bundle::read_public_key).transpose() {
        Ok(key) => key,
        Err(error) => {
            eprintln!("countersign: --public-key: {error}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout();
    let written = match bundle::verify(bundle, key.as_ref()) {
        Ok(verified) => {
            let m = &verified.manifest;
            let chain = m
                .chain
                .as_ref()
                .map_or("no rows in the period".to_string(), |c| {
                    format!(
                        "rows {} to {}, last hash {}",
                        c.first_seq, c.last_seq, c.last_hash
                    )
                });
            writeln!(
                out,
                "ok: signature, {} file hashes and the chain segment verify\n  period {} to {}, {} events, generated {} by {}\n  chain: {chain}\n  signed by {}{}",
                m.files.len(),
                m.from,
                m.to,
                m.events,
                m.generated_at,
                m.generated_by,
                m.public_key,
                if verified.trusted_key {
                    " (the given key)"
                } else {
                    " (the key inside the bundle: pass --public-key to check who signed)"
                }
            )
            .map(|()| true)
        }
        Err(why) => writeln!(out, "FAILED: {why}").map(|()| false),
    };
    match written {
        Ok(true) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

fn keygen() -> ExitCode {
    match crate::services::exports::generate_key() {
        Ok((private, public)) => {
            let mut out = std::io::stdout();
            if writeln!(
                out,
                "COUNTERSIGN_EXPORT_SIGNING_KEY={private}\n# public key (give it to assessors): {public}"
            )
            .is_err()
            {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("countersign: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn audit_purge(config: Config, older_than: &str) -> Result<(), Failure> {
    let secs = enforcer::policy::parse_duration(older_than)
        .ok_or_else(|| format!("--older-than {older_than:?} is not a duration (use e.g. 90d)"))?;
    let key = audit_key(&config)
        .ok_or("purging needs COUNTERSIGN_AUDIT_KEY: the purge anchor must be keyed")?;
    let db = open_database(&config).await?;
    let store = AnyStore::new(&db);
    let now = chrono::Utc::now();
    let cutoff = now - chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 2));
    let (deleted, anchor) = audit::purge(&store, &key, cutoff, now)
        .await
        .map_err(|e| format!("purge failed: {e}"))?;
    audit_cli_action(
        &config,
        &store,
        "audit.purge",
        &format!("{deleted} rows older than {cutoff} purged; chain anchored at row {anchor}"),
        serde_json::json!({ "deleted": deleted, "anchor": anchor, "older_than": older_than }),
    )
    .await
    .map_err(|Failure(e)| format!("purged, but {e}"))?;
    tracing::info!(deleted, anchor, "audit rows purged");
    db.close().await;
    Ok(())
}

async fn import(
    config: Config,
    audit_db: Option<PathBuf>,
    queue_db: Option<PathBuf>,
) -> Result<(), Failure> {
    if audit_db.is_none() && queue_db.is_none() {
        return Err("nothing to import: give --audit-db and/or --queue-db".into());
    }
    let policy = evaluate::load_policy(config.policy_file.as_deref()).map_err(|e| e.to_string())?;
    let db = open_database(&config).await?;
    let store = AnyStore::new(&db);
    let report = crate::store::it_mcp_import::import(
        &store,
        &policy,
        audit_db.as_deref(),
        queue_db.as_deref(),
        &operator(),
    )
    .await
    .map_err(|e| format!("import failed, nothing was imported: {e}"))?;
    db.close().await;
    let line = format!(
        "imported {} of {} audit rows and {} of {} jobs (the rest were already here)",
        report.audit_rows_added, report.audit_rows_read, report.jobs_added, report.jobs_read
    );
    Ok(writeln!(std::io::stdout(), "{line}")?)
}

fn read_password() -> Result<String, Failure> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password: {e}"))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

async fn user(config: Config, command: UserCommand) -> Result<(), Failure> {
    use crate::services::identity::accounts;
    let db = open_database(&config).await?;
    let store = AnyStore::new(&db);
    let (summary, context) = match command {
        UserCommand::Add {
            name,
            roles,
            capabilities,
            password_stdin,
        } => {
            let (password, generated) = if password_stdin {
                (read_password()?, false)
            } else {
                (accounts::generate_password(), true)
            };
            let account = accounts::add(&store, &name, &password, &roles, &capabilities)
                .await
                .map_err(|e| e.to_string())?;
            let mut out = std::io::stdout();
            if generated {
                writeln!(
                    out,
                    "created `{}`; password (shown only now): {password}",
                    account.username
                )
                .map_err(|e| e.to_string())?;
            } else {
                writeln!(out, "created `{}`", account.username).map_err(|e| e.to_string())?;
            }
            (
                format!("account {name} added"),
                serde_json::json!({ "username": name, "roles": roles, "capabilities": capabilities }),
            )
        }
        UserCommand::Passwd { name } => {
            accounts::set_password(&store, &name, &read_password()?)
                .await
                .map_err(|e| e.to_string())?;
            (
                format!("password of {name} changed"),
                serde_json::json!({ "username": name }),
            )
        }
        UserCommand::Disable { name } => {
            accounts::set_disabled(&store, &name, true)
                .await
                .map_err(|e| e.to_string())?;
            (
                format!("account {name} disabled"),
                serde_json::json!({ "username": name }),
            )
        }
        UserCommand::Enable { name } => {
            accounts::set_disabled(&store, &name, false)
                .await
                .map_err(|e| e.to_string())?;
            (
                format!("account {name} enabled"),
                serde_json::json!({ "username": name }),
            )
        }
    };
    audit_cli_action(&config, &store, "user", &summary, context)
        .await
        .map_err(|Failure(e)| format!("done, but {e}"))?;
    db.close().await;
    Ok(())
}

async fn token(config: Config, command: TokenCommand) -> Result<(), Failure> {
    use crate::services::identity::api_tokens;
    let db = open_database(&config).await?;
    let store = AnyStore::new(&db);
    let mut out = std::io::stdout();
    let audit_note = match command {
        TokenCommand::Create {
            name,
            agent,
            mut roles,
            capabilities,
        } => {
            let name = match (name, agent) {
                (_, Some(agent)) => {
                    if !roles.is_empty() || !capabilities.is_empty() {
                        return Err(
                            "an agent token has the `agent` role alone: drop --role and --capability"
                                .into(),
                        );
                    }
                    roles = vec![api_tokens::AGENT_ROLE.to_string()];
                    agent
                }
                (Some(name), None) => name,
                (None, None) => return Err("give --name or --agent".into()),
            };
            let (created, text) = api_tokens::create(&store, &name, &roles, &capabilities)
                .await
                .map_err(|e| e.to_string())?;
            writeln!(out, "{text}").map_err(|e| e.to_string())?;
            eprintln!("token `{}` created; it is shown only now", created.name);
            Some((
                format!("API token {name} created"),
                serde_json::json!({ "name": name, "id": created.id, "roles": roles, "capabilities": capabilities }),
            ))
        }
        TokenCommand::List => {
            for t in api_tokens::list_all(&store)
                .await
                .map_err(|e| e.to_string())?
            {
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                writeln!(
                    out,
                    "{}\t{}\t{state}\troles={}\tcapabilities={}",
                    t.name,
                    t.id,
                    t.roles.join(","),
                    t.capabilities.join(",")
                )
                .map_err(|e| e.to_string())?;
            }
            None
        }
        TokenCommand::Revoke { name } => {
            api_tokens::revoke(&store, &name)
                .await
                .map_err(|e| e.to_string())?;
            Some((
                format!("API token {name} revoked"),
                serde_json::json!({ "name": name }),
            ))
        }
    };
    if let Some((summary, context)) = audit_note {
        audit_cli_action(&config, &store, "token", &summary, context)
            .await
            .map_err(|Failure(e)| format!("done, but {e}"))?;
    }
    db.close().await;
    Ok(())
}

/// Record an operator's command-line action in the audit trail.
async fn audit_cli_action(
    config: &Config,
    store: &AnyStore,
    operation: &str,
    summary: &str,
    context: serde_json::Value,
) -> Result<(), Failure> {
    let writer = AuditWriter::spawn(store.clone(), checkpoint_policy(config));
    let mut event = NewAuditEvent::new(
        EventKind::PortalAction,
        &operator(),
        "countersign",
        operation,
        AuditAction::Allow,
        summary,
        Risk::Low,
    );
    event.context = context.to_string();
    writer
        .append(event)
        .await
        .map(|_| ())
        .map_err(|e| Failure(format!("could not audit it: {e}")))
}

/// Who runs a command-line action, for the audit trail.
fn operator() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

async fn migrate(config: Config) -> Result<(), Failure> {
    let db = open_database(&config).await?;
    tracing::info!(database = ?db.kind(), "migrations applied");
    db.close().await;
    Ok(())
}

/// `countersign mcp`: the gateway on stdio, deciding in this process against the same database
/// as the server (which shows the held calls to approvers).
/// The services over the configured database and policy, for commands that use them.
async fn services(config: &Config) -> Result<AppState, Failure> {
    let policy = evaluate::load_policy(config.policy_file.as_deref()).map_err(|e| e.to_string())?;
    let db = open_database(config).await?;
    AppState::new(config, db, Arc::new(policy)).map_err(|e| e.to_string().into())
}

async fn grants(config: Config, command: GrantsCommand) -> Result<(), Failure> {
    use crate::services::grants;
    let state = services(&config).await?;
    // Whoever runs this on the database's host administers Countersign.
    let operator = |name: &str| enforcer::Principal {
        id: name.to_string(),
        roles: ["admin".to_string()].into(),
        capabilities: Default::default(),
    };
    let mut out = std::io::stdout();
    match command {
        GrantsCommand::List => {
            let now = chrono::Utc::now();
            let all = grants::list(&state, &["admin".to_string()])
                .await
                .map_err(|e| e.to_string())?;
            if all.is_empty() {
                eprintln!("no standing grants");
            }
            for g in all {
                let state_word = grants::state_of(&g, now);
                writeln!(
                    out,
                    "{}  {state_word}  {}.{}  {}  for {} {}  uses {}{}  until {}  by {}",
                    g.id,
                    g.tool,
                    g.operation,
                    g.scope,
                    g.subject_kind,
                    g.subject,
                    g.uses,
                    g.max_uses.map(|m| format!("/{m}")).unwrap_or_default(),
                    g.expires_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    g.approvers.join(", "),
                )
                .map_err(|e| e.to_string())?;
            }
        }
        GrantsCommand::Revoke { id, by } => {
            let revoked = grants::revoke(&state, &operator(&by), &id)
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("grant {} revoked by {by}", revoked.id);
        }
    }
    Ok(())
}

async fn shadow(config: Config, days: u32) -> Result<(), Failure> {
    let state = services(&config).await?;
    let report = crate::services::shadow::report(&state, &["admin".to_string()], days)
        .await
        .map_err(|e| e.to_string())?;
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    writeln!(std::io::stdout(), "{text}").map_err(|e| e.to_string())?;
    Ok(())
}

async fn mcp(config: Config, args: McpArgs) -> Result<(), Failure> {
    let state = services(&config).await?;
    crate::services::policy_versions::record(&state.store, &state.policy)
        .await
        .map_err(|e| format!("cannot record the policy in the database: {e}"))?;
    let caller = crate::mcp::authenticate(&state, &args.token).await?;
    let on_behalf_of = args.on_behalf_of.or(config.mcp_on_behalf_of.clone());
    let gateway = crate::mcp::Gateway::new(
        state,
        &config.mcp_settings(),
        &args.upstreams,
        caller,
        on_behalf_of.as_deref(),
    )?;
    gateway.serve_stdio().await?;
    Ok(())
}

async fn serve(config: Config) -> Result<(), Failure> {
    config.check_site_root().map_err(|e| e.to_string())?;
    let policy = evaluate::load_policy(config.policy_file.as_deref()).map_err(|e| e.to_string())?;
    tracing::info!(policy = %policy.name, hash = %policy.hash(), "policy loaded");
    let db = open_database(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|e| format!("cannot listen on {} (setting bind): {e}", config.bind))?;
    if config.audit_key.is_none() {
        tracing::warn!("COUNTERSIGN_AUDIT_KEY is not set: no keyed checkpoints, so cutting off the newest audit rows would go unnoticed");
    }
    let state = AppState::new(&config, db.clone(), Arc::new(policy)).map_err(|e| e.to_string())?;
    // Audit rows keep only what their policy cannot give back, so the policy is kept first.
    crate::services::policy_versions::record(&state.store, &state.policy)
        .await
        .map_err(|e| format!("cannot record the policy in the database: {e}"))?;
    Maintenance {
        store: state.store.clone(),
        writer: state.audit.clone(),
        interval: std::time::Duration::from_secs(config.maintenance_interval_secs),
        audit_key: audit_key(&config),
        retention_secs: config.retention_secs().map_err(|e| e.to_string())?,
    }
    .spawn();
    crate::web::auth::bootstrap_admin(&state, config.admin_password.as_ref().map(|p| p.expose()))
        .await?;
    crate::executors::check_secrets(&state.policy);
    crate::executors::Dispatcher::new(state.clone())?.spawn();
    crate::services::notifications::start(&state.core, &config).await?;
    crate::web::security::spawn_refusal_summaries(&state);
    let upstreams = state.upstreams.clone();
    let router = app(state);
    tracing::info!(
        address = %config.bind,
        database = ?db.kind(),
        site_root = %config.site_root.display(),
        "countersign listening on http://{}",
        config.bind
    );
    crate::listener::serve(
        listener,
        router,
        std::time::Duration::from_secs(config.header_read_timeout_secs),
        shutdown_signal(),
    )
    .await;
    // The MCP upstreams this server started exit with it.
    upstreams.stop_all().await;
    db.close().await;
    tracing::info!("countersign stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
