//! The database connection: SQLite (embedded default) or PostgreSQL (several replicas).

use crate::config::{Config, DatabaseKind};
use sqlx::{
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    PgPool, SqlitePool,
};
use std::{str::FromStr, time::Duration};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// How long a request waits for a pooled connection before giving up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long SQLite waits on a lock held by another connection or process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub enum Database {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Database {
    /// A store on this database for one short piece of work beside the server's own (tests'
    /// setup, a command-line tool): see [`super::sqlite::SqliteStore::brief`]. The server
    /// itself makes one [`super::AnyStore::new`] and shares it.
    pub fn store(&self) -> super::AnyStore {
        match self {
            Database::Sqlite(pool) => {
                super::AnyStore::Sqlite(super::sqlite::SqliteStore::brief(pool.clone()))
            }
            Database::Postgres(pool) => {
                super::AnyStore::Postgres(super::postgres::PgStore::new(pool.clone()))
            }
        }
    }

    /// Open the configured database. SQLite files are created if missing and run in WAL mode
    /// with full fsync (an acknowledged audit row must survive power loss), foreign keys on.
    pub async fn connect(config: &Config) -> Result<Database, sqlx::Error> {
        let kind = config
            .database_kind()
            .map_err(|e| sqlx::Error::Configuration(e.to_string().into()))?;
        match kind {
            DatabaseKind::Sqlite => {
                let options = SqliteConnectOptions::from_str(&config.database_url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(BUSY_TIMEOUT)
                    .foreign_keys(true)
                    // Rows cross from SQLite's worker thread in larger batches: large reads
                    // (exports, pages) switch threads far less often.
                    .row_buffer_size(1_024);
                let pool = SqlitePoolOptions::new()
                    .max_connections(config.database_max_connections)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await?;
                Ok(Database::Sqlite(pool))
            }
            DatabaseKind::Postgres => {
                let options = PgConnectOptions::from_str(&config.database_url)?;
                let pool = PgPoolOptions::new()
                    .max_connections(config.database_max_connections)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await?;
                Ok(Database::Postgres(pool))
            }
        }
    }

    /// Apply pending migrations for this database's dialect.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self {
            Database::Sqlite(pool) => {
                SQLITE_MIGRATIONS.run(pool).await?;
                tower_sessions_sqlx_store::SqliteStore::new(pool.clone())
                    .migrate()
                    .await?;
            }
            Database::Postgres(pool) => {
                POSTGRES_MIGRATIONS.run(pool).await?;
                tower_sessions_sqlx_store::PostgresStore::new(pool.clone())
                    .migrate()
                    .await?;
            }
        }
        Ok(())
    }

    /// A round trip to the database, as `/readyz` uses it.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        match self {
            Database::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()),
            Database::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()),
        }
    }

    pub fn kind(&self) -> DatabaseKind {
        match self {
            Database::Sqlite(_) => DatabaseKind::Sqlite,
            Database::Postgres(_) => DatabaseKind::Postgres,
        }
    }

    pub async fn close(&self) {
        match self {
            Database::Sqlite(pool) => pool.close().await,
            Database::Postgres(pool) => pool.close().await,
        }
    }
}
