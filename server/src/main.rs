//! `countersign`: the approval portal and policy enforcer for IT-MCP.

use clap::{Parser, Subcommand};
use server::{app, config::Config, telemetry, AppState, Database};
use std::{path::PathBuf, process::ExitCode};

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
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
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
    let db = open_database(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|e| format!("cannot listen on {} (setting bind): {e}", config.bind))?;
    let router = app(AppState::new(&config, db.clone()));
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
