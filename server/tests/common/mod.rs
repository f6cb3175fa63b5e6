//! What the integration tests share: the test PostgreSQL server and a schema of its own for
//! each test, a relay that can be cut, and an OpenID provider. Each test binary uses part of it.
#![allow(dead_code)]

pub mod binary;
pub mod npm_mcp;
pub mod provider;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor};
use std::str::FromStr;

/// The PostgreSQL server tests use (trust auth): `CS_TEST_POSTGRES_URL`, or the local `test`
/// database.
pub fn pg_url() -> String {
    std::env::var("CS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A fresh schema in the test database; dropped (with everything in it) with the value.
pub struct PgSchema {
    pub name: String,
}

impl PgSchema {
    pub async fn create(prefix: &str) -> PgSchema {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&pg_url())
            .await
            .expect("postgres reachable");
        admin
            .execute(format!("CREATE SCHEMA {name}").as_str())
            .await
            .expect("create schema");
        PgSchema { name }
    }

    /// Connection options for a pool working in the schema.
    pub fn options(&self) -> PgConnectOptions {
        PgConnectOptions::from_str(&pg_url())
            .expect("url")
            .options([("search_path", self.name.as_str())])
    }

    /// `url` (the test server, perhaps reached another way) working in the schema, for a
    /// process that takes a database URL.
    pub fn url_via(&self, url: &str) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}options=-c%20search_path%3D{}", self.name)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        // Drop cannot await, and the test's runtime may be gone: a thread of its own.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async move {
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_url()).await {
                        let _ = conn
                            .execute(format!("DROP SCHEMA {name} CASCADE").as_str())
                            .await;
                    }
                });
            }
        })
        .join();
    }
}

/// A TCP relay (to PostgreSQL, an identity provider) that a test can cut, as a restart or an
/// outage looks to the server: every open connection drops, and new ones are closed at once
/// until it is restored.
pub struct Relay {
    pub port: u16,
    up: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    pub async fn start(upstream: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (up, state) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !*state.borrow() {
                    continue;
                }
                let (mut state, upstream) = (state.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = state.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Relay { port, up }
    }

    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

/// A vote without an audit row, answering the job as it is after the vote: the store tests
/// drive the job machine; the approval service always writes the vote's row in its transaction.
pub trait VotePlain {
    fn vote_plain(
        &self,
        vote: &server::store::VoteRecord,
    ) -> impl std::future::Future<Output = Result<server::store::Job, server::store::StoreError>> + Send;
}

impl<S: server::store::Store> VotePlain for S {
    async fn vote_plain(
        &self,
        vote: &server::store::VoteRecord,
    ) -> Result<server::store::Job, server::store::StoreError> {
        self.vote(
            vote,
            |_: &server::store::Job, _: &server::store::VoteTally| None,
        )
        .await
        .map(|(job, _)| job)
    }
}
