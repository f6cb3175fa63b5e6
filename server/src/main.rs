//! `countersign`: the approval portal and policy enforcer for IT-MCP.

use clap::{Args, Parser, Subcommand};
use server::{app, config::Config, evaluate, telemetry, AppState, Database};
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

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Offline commands need no configuration beyond their arguments.
    match &cli.command {
        Some(Command::Evaluate(args)) => return run_evaluate(args, cli.config.as_deref()),
        Some(Command::Policy(PolicyCommand::Check { file })) => return policy_check(file),
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
        Command::Evaluate(_) | Command::Policy(_) => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("countersign: {message}");
            ExitCode::FAILURE
        }
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

async fn open_database(config: &Config) -> Result<Database, String> {
    let db = Database::connect(config)
        .await
        .map_err(|e| format!("cannot open database (setting database_url): {e}"))?;
    db.migrate()
        .await
        .map_err(|e| format!("cannot apply migrations: {e}"))?;
    Ok(db)
}

async fn migrate(config: Config) -> Result<(), String> {
    let db = open_database(&config).await?;
    tracing::info!(database = ?db.kind(), "migrations applied");
    db.close().await;
    Ok(())
}

async fn serve(config: Config) -> Result<(), String> {
    config.check_site_root().map_err(|e| e.to_string())?;
    let policy = evaluate::load_policy(config.policy_file.as_deref()).map_err(|e| e.to_string())?;
    tracing::info!(policy = %policy.name, hash = %policy.hash(), "policy loaded");
    let db = open_database(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|e| format!("cannot listen on {} (setting bind): {e}", config.bind))?;
    let router = app(AppState::new(&config, db.clone(), Arc::new(policy)));
    tracing::info!(
        address = %config.bind,
        database = ?db.kind(),
        site_root = %config.site_root.display(),
        "countersign listening on http://{}",
        config.bind
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("server error: {e}"))?;
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
