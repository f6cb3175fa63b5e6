//! The configured store, whichever database it is: delegates to the backend.

use super::{
    audit, postgres::PgStore, sqlite::SqliteStore, AuditReceipt, AuditRecord, ImportSession,
    ImportedJob, Job, JobFilter, JobOutcome, NewAuditEvent, NewJob, OpenCallScope, Store,
    StoreError, VoteRecord,
};
use crate::store::Database;
use chrono::{DateTime, Utc};

#[derive(Debug, Clone)]
pub enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl AnyStore {
    pub fn new(db: &Database) -> AnyStore {
        match db {
            Database::Sqlite(pool) => AnyStore::Sqlite(SqliteStore::new(pool.clone())),
            Database::Postgres(pool) => AnyStore::Postgres(PgStore::new(pool.clone())),
        }
    }
}

impl AnyStore {
    /// The SQLite database's file when the store is a SQLite file (for readers that open it
    /// themselves); `None` for PostgreSQL and in-memory SQLite.
    pub async fn sqlite_file(&self) -> Result<Option<std::path::PathBuf>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.database_file().await,
            AnyStore::Postgres(_) => Ok(None),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($store) => $call.await,
            AnyStore::Postgres($store) => $call.await,
        }
    };
}

impl Store for AnyStore {
    type Import = AnyImport;

    async fn append_audit_and_jobs(
        &self,
        events: &[NewAuditEvent],
        jobs: &[NewJob],
    ) -> Result<(Vec<AuditReceipt>, Vec<Job>), StoreError> {
        delegate!(self, s => s.append_audit_and_jobs(events, jobs))
    }
    async fn audit_page(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        delegate!(self, s => s.audit_page(after, limit))
    }
    async fn audit_head(&self) -> Result<(i64, String), StoreError> {
        delegate!(self, s => s.audit_head())
    }
    async fn policy_version(&self, hash: &str) -> Result<Option<super::KeptPolicy>, StoreError> {
        delegate!(self, s => s.policy_version(hash))
    }
    async fn keep_policy(
        &self,
        hash: &str,
        name: &str,
        source: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.keep_policy(hash, name, source, at))
    }
    async fn insert_job(&self, job: &NewJob) -> Result<Job, StoreError> {
        delegate!(self, s => s.insert_job(job))
    }
    async fn job(&self, job_id: &str) -> Result<Job, StoreError> {
        delegate!(self, s => s.job(job_id))
    }
    async fn open_job_for_call(
        &self,
        requester: &str,
        submitted_by: &str,
        call_hash: &str,
        scope: OpenCallScope,
        now: DateTime<Utc>,
    ) -> Result<Option<Job>, StoreError> {
        delegate!(self, s => s.open_job_for_call(requester, submitted_by, call_hash, scope, now))
    }
    async fn pending_requests(
        &self,
        submitted_by: &str,
        requester: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        delegate!(self, s => s.pending_requests(submitted_by, requester, now))
    }
    async fn shadow_decisions(
        &self,
        since: DateTime<Utc>,
        limit: i64,
    ) -> Result<super::ShadowDecisions, StoreError> {
        delegate!(self, s => s.shadow_decisions(since, limit))
    }
    async fn create_grant(
        &self,
        grant: &super::GrantRecord,
        audit: &NewAuditEvent,
    ) -> Result<super::GrantRecord, StoreError> {
        delegate!(self, s => s.create_grant(grant, audit))
    }
    async fn add_grant_approver(
        &self,
        id: &str,
        approver: &str,
        expires_at: DateTime<Utc>,
        audit: &NewAuditEvent,
    ) -> Result<super::GrantRecord, StoreError> {
        delegate!(self, s => s.add_grant_approver(id, approver, expires_at, audit))
    }
    async fn grant(&self, id: &str) -> Result<super::GrantRecord, StoreError> {
        delegate!(self, s => s.grant(id))
    }
    async fn grants_for(
        &self,
        tool: &str,
        operation: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<super::GrantRecord>, StoreError> {
        delegate!(self, s => s.grants_for(tool, operation, now))
    }
    async fn grants_page(&self, limit: i64) -> Result<Vec<super::GrantRecord>, StoreError> {
        delegate!(self, s => s.grants_page(limit))
    }
    async fn spend_grant(&self, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        delegate!(self, s => s.spend_grant(id, now))
    }
    async fn revoke_grant(
        &self,
        id: &str,
        by: &str,
        now: DateTime<Utc>,
        audit: &NewAuditEvent,
    ) -> Result<super::GrantRecord, StoreError> {
        delegate!(self, s => s.revoke_grant(id, by, now, audit))
    }

    async fn unattended_gateway_jobs(
        &self,
        approved_before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Job>, StoreError> {
        delegate!
(self, s => s.unattended_gateway_jobs(approved_before, now, limit))
    }
    async fn votes(&self, job_id: &str) -> Result<Vec<VoteRecord>, StoreError> {
        delegate!(self, s => s.votes(job_id))
    }
    async fn jobs_page(&self, filter: &JobFilter, limit: i64) -> Result<Vec<Job>, StoreError> {
        delegate!(self, s => s.jobs_page(filter, limit))
    }
    async fn job_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        delegate!(self, s => s.job_counts())
    }
    async fn audit_row(
        &self,
        id: &str,
        kind: super::EventKind,
    ) -> Result<Option<AuditRecord>, StoreError> {
        delegate!(self, s => s.audit_row(id, kind))
    }
    async fn audit_for_job(&self, job_id: &str) -> Result<Vec<AuditRecord>, StoreError> {
        delegate!(self, s => s.audit_for_job(job_id))
    }
    async fn audit_search(
        &self,
        filter: &super::AuditFilter,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        delegate!(self, s => s.audit_search(filter, limit))
    }
    async fn audit_counts(
        &self,
        filter: &super::AuditFilter,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        delegate!(self, s => s.audit_counts(filter))
    }
    async fn dashboard_stats(
        &self,
        day_ago: DateTime<Utc>,
        week_ago: DateTime<Utc>,
        hour_ago: DateTime<Utc>,
    ) -> Result<super::DashboardStats, StoreError> {
        delegate!(self, s => s.dashboard_stats(day_ago, week_ago, hour_ago))
    }
    async fn pending_jobs(&self, limit: i64) -> Result<Vec<Job>, StoreError> {
        delegate!(self, s => s.pending_jobs(limit))
    }
    async fn vote(
        &self,
        vote: &VoteRecord,
        audit: impl super::VoteAudit,
    ) -> Result<(Job, super::VoteTally), StoreError> {
        delegate!(self, s => s.vote(vote, audit))
    }
    async fn claim(
        &self,
        agent_id: &str,
        lease_secs: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<Job>, StoreError> {
        delegate!(self, s => s.claim(agent_id, lease_secs, now))
    }
    async fn start(
        &self,
        job_id: &str,
        agent_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Job, StoreError> {
        delegate!(self, s => s.start(job_id, agent_id, now))
    }
    async fn extend_lease(
        &self,
        job_id: &str,
        agent_id: &str,
        lease_secs: i64,
        now: DateTime<Utc>,
    ) -> Result<Job, StoreError> {
        delegate!(self, s => s.extend_lease(job_id, agent_id, lease_secs, now))
    }
    async fn finish(
        &self,
        job_id: &str,
        agent_id: &str,
        outcome: &JobOutcome,
        now: DateTime<Utc>,
    ) -> Result<Job, StoreError> {
        delegate!(self, s => s.finish(job_id, agent_id, outcome, now))
    }
    async fn cancel(
        &self,
        job_id: &str,
        requester: &str,
        now: DateTime<Utc>,
    ) -> Result<Job, StoreError> {
        delegate!(self, s => s.cancel(job_id, requester, now))
    }
    async fn expire_due(&self, now: DateTime<Utc>) -> Result<Vec<Job>, StoreError> {
        delegate!(self, s => s.expire_due(now))
    }
    async fn reap_leases(&self, now: DateTime<Utc>) -> Result<Vec<Job>, StoreError> {
        delegate!(self, s => s.reap_leases(now))
    }
    async fn add_checkpoint(&self, checkpoint: &audit::Checkpoint) -> Result<(), StoreError> {
        delegate!(self, s => s.add_checkpoint(checkpoint))
    }
    async fn checkpoints(&self) -> Result<Vec<audit::Checkpoint>, StoreError> {
        delegate!(self, s => s.checkpoints())
    }
    async fn first_seq_since(&self, cutoff: DateTime<Utc>) -> Result<Option<i64>, StoreError> {
        delegate!(self, s => s.first_seq_since(cutoff))
    }
    async fn purge_batch(&self, through: i64, batch: i64) -> Result<u64, StoreError> {
        delegate!(self, s => s.purge_batch(through, batch))
    }
    async fn begin_import(&self) -> Result<AnyImport, StoreError> {
        Ok(match self {
            AnyStore::Sqlite(s) => AnyImport::Sqlite(s.begin_import().await?),
            AnyStore::Postgres(s) => AnyImport::Postgres(s.begin_import().await?),
        })
    }
}

/// The configured store's import transaction.
pub enum AnyImport {
    Sqlite(super::sqlite::Import),
    Postgres(super::postgres::Import),
}

impl ImportSession for AnyImport {
    async fn add(
        &mut self,
        events: &[NewAuditEvent],
        jobs: &[ImportedJob],
    ) -> Result<(usize, usize), StoreError> {
        match self {
            AnyImport::Sqlite(i) => i.add(events, jobs).await,
            AnyImport::Postgres(i) => i.add(events, jobs).await,
        }
    }

    async fn commit(self) -> Result<(), StoreError> {
        match self {
            AnyImport::Sqlite(i) => i.commit().await,
            AnyImport::Postgres(i) => i.commit().await,
        }
    }

    async fn rollback(self) {
        match self {
            AnyImport::Sqlite(i) => i.rollback().await,
            AnyImport::Postgres(i) => i.rollback().await,
        }
    }
}

impl super::IdempotencyStore for AnyStore {
    async fn claim_key(
        &self,
        caller: &str,
        key: &str,
        request_hash: &str,
        now_unix: i64,
    ) -> Result<super::Claim, StoreError> {
        delegate!(self, s => s.claim_key(caller, key, request_hash, now_unix))
    }
    async fn complete_key(
        &self,
        caller: &str,
        key: &str,
        response: &str,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.complete_key(caller, key, response))
    }
    async fn release_key(&self, caller: &str, key: &str) -> Result<(), StoreError> {
        delegate!(self, s => s.release_key(caller, key))
    }
    async fn purge_keys(&self, cutoff_unix: i64) -> Result<u64, StoreError> {
        delegate!(self, s => s.purge_keys(cutoff_unix))
    }
}

impl super::IntegrationStore for AnyStore {
    async fn hold_lease(
        &self,
        name: &str,
        owner: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<bool, StoreError> {
        delegate!(self, s => s.hold_lease(name, owner, now_ms, expires_ms))
    }
    async fn cursor(&self, name: &str) -> Result<Option<i64>, StoreError> {
        delegate!(self, s => s.cursor(name))
    }
    async fn set_cursor(&self, name: &str, position: i64, now_ms: i64) -> Result<(), StoreError> {
        delegate!(self, s => s.set_cursor(name, position, now_ms))
    }
    async fn transitions_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<super::TransitionRow>, StoreError> {
        delegate!(self, s => s.transitions_after(after, limit))
    }
    async fn last_transition(&self) -> Result<Option<i64>, StoreError> {
        delegate!(self, s => s.last_transition())
    }
    async fn enqueue(
        &self,
        messages: &[super::NewOutboxMessage<'_>],
        cursor_to: Option<(&str, i64)>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.enqueue(messages, cursor_to, now_ms))
    }
    async fn outbox_has(&self, key: &str) -> Result<bool, StoreError> {
        delegate!(self, s => s.outbox_has(key))
    }
    async fn outbox_head(&self, sink: &str) -> Result<Option<super::OutboxRow>, StoreError> {
        delegate!(self, s => s.outbox_head(sink))
    }
    async fn record_attempt(
        &self,
        id: i64,
        attempts: i32,
        attempt: &super::Attempt,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.record_attempt(id, attempts, attempt, now_ms))
    }
    async fn purge_integrations(
        &self,
        delivered_before_ms: i64,
        transitions_before_ms: i64,
    ) -> Result<u64, StoreError> {
        delegate!(self, s => s.purge_integrations(delivered_before_ms, transitions_before_ms))
    }
    async fn outbox_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        delegate!(self, s => s.outbox_counts())
    }
    async fn dead_letters(&self, limit: i64) -> Result<Vec<super::OutboxRow>, StoreError> {
        delegate!(self, s => s.dead_letters(limit))
    }
    async fn retry_dead_letter(
        &self,
        id: i64,
        now_ms: i64,
    ) -> Result<Option<super::OutboxRow>, StoreError> {
        delegate!(self, s => s.retry_dead_letter(id, now_ms))
    }
}

impl super::IdentityStore for AnyStore {
    async fn count_users(&self) -> Result<i64, StoreError> {
        delegate!(self, s => s.count_users())
    }
    async fn insert_user(&self, user: &super::NewUser<'_>) -> Result<(), StoreError> {
        delegate!(self, s => s.insert_user(user))
    }
    async fn user(&self, username: &str) -> Result<Option<super::UserRow>, StoreError> {
        delegate!(self, s => s.user(username))
    }
    async fn credentials(&self, username: &str) -> Result<Option<super::Credentials>, StoreError> {
        delegate!(self, s => s.credentials(username))
    }
    async fn set_password_hash(&self, username: &str, hash: &str) -> Result<bool, StoreError> {
        delegate!(self, s => s.set_password_hash(username, hash))
    }
    async fn set_disabled(&self, username: &str, disabled: bool) -> Result<bool, StoreError> {
        delegate!(self, s => s.set_disabled(username, disabled))
    }
    async fn set_failures(
        &self,
        username: &str,
        failures: i32,
        locked_until: Option<i64>,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.set_failures(username, failures, locked_until))
    }
    async fn insert_token(
        &self,
        token: &super::TokenRow,
        secret_sha256: &str,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.insert_token(token, secret_sha256))
    }
    async fn tokens(&self) -> Result<Vec<super::TokenRow>, StoreError> {
        delegate!(self, s => s.tokens())
    }
    async fn token_with_secret(
        &self,
        id: &str,
    ) -> Result<Option<(super::TokenRow, String)>, StoreError> {
        delegate!(self, s => s.token_with_secret(id))
    }
    async fn revoke_token(&self, name: &str, at: i64) -> Result<bool, StoreError> {
        delegate!(self, s => s.revoke_token(name, at))
    }
    async fn token_used(&self, id: &str, at: i64) -> Result<(), StoreError> {
        delegate!(self, s => s.token_used(id, at))
    }
}
