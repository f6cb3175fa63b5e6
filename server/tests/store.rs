//! The store conformance suite: every scenario runs against SQLite and PostgreSQL.
//! PostgreSQL tests use a fresh schema on CS_TEST_POSTGRES_URL (default: the local
//! server's `test` database) and drop it afterwards.

use chrono::{Duration, Utc};
use enforcer::Verdict;
use server::store::{
    audit, postgres::PgStore, sqlite::SqliteStore, Attempt, AuditAction, AuditWriter, Claim,
    EventKind, GrantRecord, IdempotencyStore, IdentityStore, IntegrationStore, JobOutcome,
    JobStatus, NewAuditEvent, NewJob, NewOutboxMessage, NewUser, OpenCallScope, Priority, Risk,
    Store, StoreError, TokenRow, VoteRecord,
};

mod common;
use common::{PgSchema, VotePlain};

struct Sqlite {
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

/// A fresh SQLite database file, not migrated yet.
async fn sqlite_db() -> (server::Database, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = server::Config {
        database_url: format!("sqlite://{}", dir.path().join("store.db").display()),
        ..server::Config::default()
    };
    let db = server::Database::connect(&config).await.expect("sqlite");
    (db, dir)
}

async fn sqlite() -> Sqlite {
    let (db, dir) = sqlite_db().await;
    db.migrate().await.expect("migrate");
    let server::Database::Sqlite(pool) = db else {
        panic!("sqlite expected")
    };
    Sqlite {
        store: SqliteStore::new(pool),
        _dir: dir,
    }
}

/// A PostgreSQL store in a schema of its own; dropped when the value is.
struct Pg {
    store: PgStore,
    _schema: PgSchema,
}

/// A pool on a PostgreSQL schema of its own (dropped with the schema value), not migrated yet.
async fn pg_pool() -> (sqlx::PgPool, PgSchema) {
    let schema = PgSchema::create("cs_test").await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect_with(schema.options())
        .await
        .expect("pool");
    (pool, schema)
}

async fn postgres() -> Pg {
    let (pool, schema) = pg_pool().await;
    server::Database::Postgres(pool.clone())
        .migrate()
        .await
        .expect("migrate");
    Pg {
        store: PgStore::new(pool),
        _schema: schema,
    }
}

fn event(n: usize) -> NewAuditEvent {
    let mut e = NewAuditEvent::new(
        EventKind::Decision,
        &format!("caller-{}", n % 3),
        "ssh-exec",
        "executeCommand",
        AuditAction::Allow,
        "ok",
        Risk::High,
    );
    e.context = format!(r#"{{"n":{n}}}"#);
    e
}

fn new_job(quorum: i32) -> NewJob {
    let now = Utc::now();
    NewJob {
        job_id: None,
        tool_name: "ssh-exec".into(),
        operation: "executeSudoCommand".into(),
        params: r#"{"command":"systemctl restart nginx"}"#.into(),
        requested_capabilities: vec!["ssh-linux".into(), "local-sudo".into()],
        target: Some("web-01".into()),
        target_agent_id: None,
        priority: server::store::Priority::High,
        requester: "alice".into(),
        requester_reason: Some("nginx is stuck".into()),
        risk: server::store::Risk::Critical,
        call_hash: "ab".repeat(32),
        policy_hash: Some("cd".repeat(32)),
        approvals_required: quorum,
        created_at: now,
        expires_at: now + Duration::hours(1),
        approval_window_secs: 900,
        max_retries: 1,
        decision_audit_id: None,
        submitted_by: None,
    }
}

fn vote(job_id: &str, who: &str, verdict: Verdict) -> VoteRecord {
    VoteRecord {
        job_id: job_id.into(),
        approver: who.into(),
        verdict,
        reason: Some(format!("{who} says so")),
        created_at: Utc::now(),
    }
}

// ------------------------------------------------------------------------------------------
// Scenarios, generic over the store.

async fn chain_appends_and_verifies<S: Store>(store: &S) {
    let first = store
        .append_audit(&[event(1), event(2)])
        .await
        .expect("append");
    assert_eq!(first.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
    let second = store.append_audit(&[event(3)]).await.expect("append");
    assert_eq!(second[0].seq, 3);
    let report = audit::verify(store, None).await.expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.rows, report.head_seq), (3, 3));
    assert_eq!(report.head_hash, second[0].row_hash);
    let rows = store.audit_page(0, 10).await.expect("page");
    assert_eq!(rows[1].prev_hash, rows[0].row_hash);
    assert_eq!(rows[0].event.context, r#"{"n":1}"#);
}

async fn group_commit_writer<S: Store>(store: &S) {
    let writer = AuditWriter::spawn(store.clone(), None);
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.append(event(n)).await })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.expect("join").expect("durable").seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    assert!(audit::verify(store, None).await.expect("verify").ok());
}

async fn job_lifecycle_with_quorum<S: Store>(store: &S) {
    let job = store.insert_job(&new_job(2)).await.expect("insert");
    assert_eq!(job.status, JobStatus::Queued);
    let id = job.job_id.clone();
    let after_one = store
        .vote_plain(&vote(&id, "bob", Verdict::Approve))
        .await
        .expect("first approval");
    assert_eq!(
        after_one.status,
        JobStatus::Queued,
        "quorum of 2 not yet reached"
    );
    let dup = store.vote_plain(&vote(&id, "bob", Verdict::Approve)).await;
    assert!(matches!(dup, Err(StoreError::Conflict { .. })), "{dup:?}");
    let approved = store
        .vote_plain(&vote(&id, "carol", Verdict::Approve))
        .await
        .expect("second approval");
    assert_eq!(approved.status, JobStatus::Approved);
    assert!(approved.approval_expires_at.is_some() && approved.approved_at.is_some());
    assert_eq!(store.votes(&id).await.expect("votes").len(), 2);
    let late = store.vote_plain(&vote(&id, "dave", Verdict::Approve)).await;
    assert!(matches!(late, Err(StoreError::Conflict { .. })));

    let now = Utc::now();
    let picked = store
        .claim("agent-1", 60, now)
        .await
        .expect("claim")
        .expect("a job");
    assert_eq!(
        (picked.job_id.as_str(), picked.status),
        (id.as_str(), JobStatus::Picked)
    );
    assert_eq!(picked.lease_owner.as_deref(), Some("agent-1"));
    assert!(
        store
            .claim("agent-2", 60, now)
            .await
            .expect("claim")
            .is_none(),
        "nothing left to claim"
    );
    assert!(
        matches!(
            store.start(&id, "agent-2", now).await,
            Err(StoreError::Conflict { .. })
        ),
        "not the lease owner"
    );
    let running = store.start(&id, "agent-1", now).await.expect("start");
    assert_eq!(running.status, JobStatus::Executing);
    let outcome = JobOutcome {
        status: JobStatus::Completed,
        result: Some("ok".into()),
        error: None,
    };
    let done = store
        .finish(&id, "agent-1", &outcome, now)
        .await
        .expect("finish");
    assert_eq!(done.status, JobStatus::Completed);
    assert!(matches!(
        store.finish(&id, "agent-1", &outcome, now).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store.cancel(&id, "alice", now).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store.job("no-such-job").await,
        Err(StoreError::NotFound)
    ));
}

async fn denial_and_cancel<S: Store>(store: &S) {
    let job = store.insert_job(&new_job(2)).await.expect("insert");
    let denied = store
        .vote_plain(&vote(&job.job_id, "bob", Verdict::Deny))
        .await
        .expect("deny");
    assert_eq!(denied.status, JobStatus::Denied);
    assert!(matches!(
        store
            .vote_plain(&vote(&job.job_id, "carol", Verdict::Approve))
            .await,
        Err(StoreError::Conflict { .. })
    ));

    let other = store.insert_job(&new_job(1)).await.expect("insert");
    assert!(
        matches!(
            store.cancel(&other.job_id, "mallory", Utc::now()).await,
            Err(StoreError::Conflict { .. })
        ),
        "only the requester"
    );
    assert_eq!(
        store
            .cancel(&other.job_id, "alice", Utc::now())
            .await
            .expect("cancel")
            .status,
        JobStatus::Cancelled
    );
}

/// The `mcp` executor's work: approved gateway jobs no call has collected, approved before the
/// given time, with their approval window still open; never queued, claimed or other
/// executors' jobs.
async fn unattended_gateway_jobs_are_approved_and_uncollected<S: Store>(store: &S) {
    let gateway_job = |id: &str| {
        let mut job = new_job(1);
        job.job_id = Some(id.into());
        job.target_agent_id = Some(format!("mcp:{id}"));
        job
    };
    let approve = |id: &str| vote(id, "bob", Verdict::Approve);
    let left = store
        .insert_job(&gateway_job("gw-left"))
        .await
        .expect("insert");
    store
        .vote_plain(&approve(&left.job_id))
        .await
        .expect("approve");
    store
        .insert_job(&gateway_job("gw-queued"))
        .await
        .expect("insert");
    let collected = store
        .insert_job(&gateway_job("gw-collected"))
        .await
        .expect("insert");
    store
        .vote_plain(&approve(&collected.job_id))
        .await
        .expect("approve");
    assert!(store
        .claim("mcp:gw-collected", 60, Utc::now())
        .await
        .expect("claim")
        .is_some());
    let mut executor_job = new_job(1);
    executor_job.target_agent_id = Some("executor:deploy".into());
    let executor_job = store.insert_job(&executor_job).await.expect("insert");
    store
        .vote_plain(&approve(&executor_job.job_id))
        .await
        .expect("approve");

    let now = Utc::now();
    let ids =
        |jobs: Vec<server::store::Job>| jobs.into_iter().map(|j| j.job_id).collect::<Vec<_>>();
    let found = store
        .unattended_gateway_jobs(now + Duration::seconds(1), now, 10)
        .await
        .expect("read");
    assert_eq!(ids(found), ["gw-left"]);
    // Approved just now: a waiting call may still collect it.
    let found = store
        .unattended_gateway_jobs(now - Duration::minutes(5), now, 10)
        .await
        .expect("read");
    assert!(found.is_empty());
    // The approval window (15 minutes) has closed.
    let later = now + Duration::hours(1);
    let found = store
        .unattended_gateway_jobs(later, later, 10)
        .await
        .expect("read");
    assert!(found.is_empty());
}

/// A repeated call finds the requester's open job for it: queued or approved, never a final
/// one, never another requester's or another call's; the newest when there are several.
async fn repeated_calls_find_their_open_job<S: Store>(store: &S) {
    let hash = "ef".repeat(32);
    let for_call = |requester: &str, hash: &str| {
        let mut job = new_job(1);
        job.requester = requester.into();
        job.call_hash = hash.into();
        job.submitted_by = Some("assistant".into());
        job.target_agent_id = Some(format!("mcp:{}", uuid::Uuid::now_v7()));
        job
    };
    assert!(store
        .open_job_for_call(
            "alice",
            "assistant",
            &hash,
            OpenCallScope::Gateway,
            Utc::now()
        )
        .await
        .expect("none yet")
        .is_none());
    let older = store
        .insert_job(&for_call("alice", &hash))
        .await
        .expect("insert");
    let mut newer = for_call("alice", &hash);
    newer.created_at = older.created_at + Duration::seconds(1);
    let newer = store.insert_job(&newer).await.expect("insert");
    store
        .insert_job(&for_call("bob", &hash))
        .await
        .expect("insert");
    store
        .insert_job(&for_call("alice", &"01".repeat(32)))
        .await
        .expect("insert");
    // Another caller's request for alice, and a job the policy's executor runs, are not joined.
    let mut other_caller = for_call("alice", &hash);
    other_caller.submitted_by = Some("another-assistant".into());
    store.insert_job(&other_caller).await.expect("insert");
    let mut not_the_gateways = for_call("alice", &hash);
    not_the_gateways.target_agent_id = Some("executor:deploy".into());
    store.insert_job(&not_the_gateways).await.expect("insert");
    async fn found<S: Store>(store: &S, hash: &str) -> Option<(String, JobStatus)> {
        store
            .open_job_for_call(
                "alice",
                "assistant",
                hash,
                OpenCallScope::Gateway,
                Utc::now(),
            )
            .await
            .expect("read")
            .map(|j| (j.job_id, j.status))
    }
    assert_eq!(
        found(store, &hash).await,
        Some((newer.job_id.clone(), JobStatus::Queued))
    );
    // Approved still counts (it waits to be run); a final job does not.
    store
        .vote_plain(&vote(&newer.job_id, "bob", Verdict::Approve))
        .await
        .expect("approve");
    assert_eq!(
        found(store, &hash).await,
        Some((newer.job_id.clone(), JobStatus::Approved))
    );
    store
        .cancel(&newer.job_id, "alice", Utc::now())
        .await
        .expect("cancel");
    assert_eq!(
        found(store, &hash).await,
        Some((older.job_id.clone(), JobStatus::Queued))
    );
    store
        .vote_plain(&vote(&older.job_id, "bob", Verdict::Deny))
        .await
        .expect("deny");
    assert_eq!(found(store, &hash).await, None);
    // A job being run still counts: a repeated call hears its outcome instead of asking again.
    let running = store
        .insert_job(&for_call("alice", &hash))
        .await
        .expect("insert");
    store
        .vote_plain(&vote(&running.job_id, "bob", Verdict::Approve))
        .await
        .expect("approve");
    let owner = running.target_agent_id.clone().expect("the gateway's job");
    let leased = store
        .claim(&owner, 60, Utc::now())
        .await
        .expect("claim")
        .expect("a job to run");
    assert_eq!(leased.job_id, running.job_id);
    assert_eq!(
        found(store, &hash).await,
        Some((running.job_id.clone(), JobStatus::Picked))
    );
}

/// A repeated decision API call joins the same caller's request for the same requester and
/// call while it waits for people (queued), never a gateway job, a decided one, or another
/// caller's; the pending count is per caller and requester, queued jobs only.
async fn repeated_api_calls_find_their_pending_job<S: Store>(store: &S) {
    let hash = "5a".repeat(32);
    let for_call = |submitted_by: &str, requester: &str, hash: &str| {
        let mut job = new_job(1);
        job.requester = requester.into();
        job.call_hash = hash.into();
        job.submitted_by = Some(submitted_by.into());
        job.target_agent_id = Some("executor:deploy".into());
        job
    };
    let found = |hash: String| async move {
        store
            .open_job_for_call("carol", "it-mcp", &hash, OpenCallScope::Pending, Utc::now())
            .await
            .expect("read")
            .map(|j| j.job_id)
    };
    let pending = || async {
        store
            .pending_requests("it-mcp", "carol", Utc::now())
            .await
            .expect("count")
    };
    assert_eq!(found(hash.clone()).await, None);
    assert_eq!(pending().await, 0);
    // Not joined: another caller's, another requester's, another call's, the gateway's.
    store
        .insert_job(&for_call("other-service", "carol", &hash))
        .await
        .expect("insert");
    store
        .insert_job(&for_call("it-mcp", "dave", &hash))
        .await
        .expect("insert");
    let other_call = store
        .insert_job(&for_call("it-mcp", "carol", &"6b".repeat(32)))
        .await
        .expect("insert");
    let mut gateway = for_call("it-mcp", "carol", &hash);
    gateway.target_agent_id = Some(format!("mcp:{}", uuid::Uuid::now_v7()));
    store.insert_job(&gateway).await.expect("insert");
    // Expired but not swept yet: neither joined nor counted.
    let mut expired = for_call("it-mcp", "carol", &hash);
    expired.created_at = Utc::now() - Duration::hours(2);
    expired.expires_at = Utc::now() - Duration::hours(1);
    store.insert_job(&expired).await.expect("insert");
    assert_eq!(found(hash.clone()).await, None);
    assert_eq!(pending().await, 2, "the other call's job and the gateway's");
    // An unassigned job (any agent) is joined while it waits.
    let mut unassigned = for_call("it-mcp", "carol", &hash);
    unassigned.target_agent_id = None;
    let unassigned = store.insert_job(&unassigned).await.expect("insert");
    assert_eq!(found(hash.clone()).await, Some(unassigned.job_id.clone()));
    assert_eq!(pending().await, 3);
    // Approved is no longer pending: a new request is made (and counted) instead.
    store
        .vote_plain(&vote(&unassigned.job_id, "bob", Verdict::Approve))
        .await
        .expect("approve");
    assert_eq!(found(hash.clone()).await, None);
    assert_eq!(pending().await, 2);
    store
        .vote_plain(&vote(&other_call.job_id, "bob", Verdict::Deny))
        .await
        .expect("deny");
    assert_eq!(pending().await, 1);
}

async fn expiry_and_leases<S: Store>(store: &S) {
    let now = Utc::now();
    let mut stale = new_job(1);
    stale.expires_at = now - Duration::seconds(1);
    let stale = store.insert_job(&stale).await.expect("insert");
    let fresh = store.insert_job(&new_job(1)).await.expect("insert");
    let expired = store.expire_due(now).await.expect("expire");
    assert_eq!(
        expired
            .iter()
            .map(|j| j.job_id.as_str())
            .collect::<Vec<_>>(),
        [stale.job_id.as_str()]
    );
    assert_eq!(
        store.job(&stale.job_id).await.expect("job").status,
        JobStatus::Expired
    );

    // Approved but not executed within the window → expired.
    let approved = store
        .vote_plain(&vote(&fresh.job_id, "bob", Verdict::Approve))
        .await
        .expect("approve");
    let window_end = approved.approval_expires_at.expect("window");
    assert!(store
        .expire_due(window_end - Duration::seconds(1))
        .await
        .expect("expire")
        .is_empty());
    assert_eq!(store.expire_due(window_end).await.expect("expire").len(), 1);

    // A lapsed lease returns the job (retry_count + 1) until retries run out (max_retries = 1).
    let job = store.insert_job(&new_job(1)).await.expect("insert");
    store
        .vote_plain(&vote(&job.job_id, "bob", Verdict::Approve))
        .await
        .expect("approve");
    store
        .claim("agent-1", 5, now)
        .await
        .expect("claim")
        .expect("job");
    assert!(
        store.reap_leases(now).await.expect("reap").is_empty(),
        "lease still valid"
    );
    // A heartbeat by the owner marks it executing and moves the lease; nobody else's does.
    assert!(matches!(
        store.extend_lease(&job.job_id, "agent-2", 5, now).await,
        Err(StoreError::Conflict { .. })
    ));
    let beat = store
        .extend_lease(&job.job_id, "agent-1", 5, now + Duration::seconds(3))
        .await
        .expect("heartbeat");
    assert_eq!(beat.status, JobStatus::Executing);
    assert!(
        store
            .reap_leases(now + Duration::seconds(6))
            .await
            .expect("reap")
            .is_empty(),
        "the heartbeat moved the lease to now + 8 s"
    );
    // A lease that already lapsed cannot be revived.
    assert!(store
        .extend_lease(&job.job_id, "agent-1", 5, now + Duration::seconds(9))
        .await
        .is_err());
    let returned = store
        .reap_leases(now + Duration::seconds(9))
        .await
        .expect("reap");
    assert_eq!(returned[0].status, JobStatus::Approved);
    assert_eq!(returned[0].retry_count, 1);
    store
        .claim("agent-2", 5, now)
        .await
        .expect("claim")
        .expect("job again");
    let gave_up = store
        .reap_leases(now + Duration::seconds(6))
        .await
        .expect("reap");
    assert_eq!(gave_up[0].status, JobStatus::Timeout);
}

/// Many jobs, two concurrent votes each where one suffices: exactly one vote wins per job.
async fn concurrent_approvals_have_one_winner<S: Store>(store: &S) {
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(store.insert_job(&new_job(1)).await.expect("insert").job_id);
    }
    let mut tasks = Vec::new();
    for id in &ids {
        for who in ["bob", "carol"] {
            let (store, id) = (store.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                store.vote_plain(&vote(&id, who, Verdict::Approve)).await
            }));
        }
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.expect("join") {
            Ok(job) => {
                assert_eq!(job.status, JobStatus::Approved);
                wins += 1;
            }
            Err(StoreError::Conflict { .. }) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(wins, ids.len());
    for id in &ids {
        assert_eq!(store.votes(id).await.expect("votes").len(), 1);
    }
}

/// The audit row the approval service would write: the tally as the store decided it.
fn tally_row(
    job: &server::store::Job,
    who: &str,
    tally: &server::store::VoteTally,
) -> NewAuditEvent {
    let mut e = NewAuditEvent::new(
        EventKind::Approval,
        who,
        &job.tool_name,
        &job.operation,
        AuditAction::Approve,
        &format!(
            "{} of {} ({})",
            tally.approvals,
            tally.required,
            tally.status.as_str()
        ),
        job.risk,
    );
    e.job_id = Some(job.job_id.clone());
    e
}

/// A vote's audit row is written in the vote's transaction from the store's tally: concurrent
/// votes where one suffices leave exactly one approval row per job, stating the quorum reached;
/// on a quorum of two, the rows say 1 of 2 then 2 of 2 whatever the timing; a refused vote writes
/// nothing; and a row that cannot be written means the vote does not count (fail closed).
async fn votes_audit_what_the_store_decided<S: Store>(store: &S) {
    let mut singles = Vec::new();
    for _ in 0..20 {
        singles.push(store.insert_job(&new_job(1)).await.expect("insert").job_id);
    }
    let mut doubles = Vec::new();
    for _ in 0..10 {
        doubles.push(store.insert_job(&new_job(2)).await.expect("insert").job_id);
    }
    let mut tasks = Vec::new();
    for id in singles.iter().chain(&doubles) {
        for who in ["bob", "carol"] {
            let (store, id) = (store.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                store
                    .vote(
                        &vote(&id, who, Verdict::Approve),
                        move |job: &server::store::Job, t: &server::store::VoteTally| {
                            Some(tally_row(job, who, t))
                        },
                    )
                    .await
            }));
        }
    }
    for task in tasks {
        match task.await.expect("join") {
            Ok(_) | Err(StoreError::Conflict { .. }) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    // The approval rows of a job, as their summaries.
    let approval_rows = |id: String| async move {
        let rows = store.audit_for_job(&id).await.expect("rows");
        rows.into_iter()
            .filter(|r| r.event.kind == EventKind::Approval)
            .map(|r| r.event.decision_reason)
            .collect::<Vec<String>>()
    };
    for id in &singles {
        let reasons = approval_rows(id.clone()).await;
        assert_eq!(reasons, ["1 of 1 (approved)"], "job {id}");
        assert_eq!(store.votes(id).await.expect("votes").len(), 1);
    }
    for id in &doubles {
        let reasons = approval_rows(id.clone()).await;
        assert_eq!(
            reasons,
            ["1 of 2 (queued)", "2 of 2 (approved)"],
            "job {id}"
        );
        assert_eq!(
            store.job(id).await.expect("job").status,
            JobStatus::Approved
        );
    }
    // A vote on a decided job: refused, and no row.
    let before = store.audit_head().await.expect("head").0;
    let late = store
        .vote(
            &vote(&singles[0], "dave", Verdict::Approve),
            |job: &server::store::Job, t: &server::store::VoteTally| {
                Some(tally_row(job, "dave", t))
            },
        )
        .await;
    assert!(matches!(late, Err(StoreError::Conflict { .. })), "{late:?}");
    assert_eq!(store.audit_head().await.expect("head").0, before);
    // A row that cannot be written (a malformed call hash): the vote does not count.
    let fresh = store.insert_job(&new_job(1)).await.expect("insert");
    let failed = store
        .vote(
            &vote(&fresh.job_id, "bob", Verdict::Approve),
            |job: &server::store::Job, t: &server::store::VoteTally| {
                let mut row = tally_row(job, "bob", t);
                row.call_hash = Some("not a hash".into());
                Some(row)
            },
        )
        .await;
    assert!(failed.is_err(), "{failed:?}");
    assert!(store.votes(&fresh.job_id).await.expect("votes").is_empty());
    assert_eq!(
        store.job(&fresh.job_id).await.expect("job").status,
        JobStatus::Queued
    );
    assert_eq!(store.audit_head().await.expect("head").0, before);
    assert!(audit::verify(store, None).await.expect("verify").ok());
}

/// An import joins batches into one transaction: rolled back, none of it is there; committed,
/// all of it is, chained after what was there; repeated, it adds nothing.
async fn imports_land_in_batches_all_or_nothing<S: Store>(store: &S) {
    use server::store::{ImportSession, ImportedJob};
    store.append_audit(&[event(0)]).await.expect("a row before");
    let imported = |n: usize| {
        let mut e = event(n);
        e.id = Some(format!("it-mcp-{n}"));
        e
    };
    let job = |n: usize| {
        let mut job = new_job(1);
        job.job_id = Some(format!("it-mcp-job-{n}"));
        ImportedJob {
            job,
            status: JobStatus::Completed,
            picked_at: None,
            completed_at: None,
            result: Some("ok".into()),
            error: None,
            retry_count: 0,
        }
    };
    let first: Vec<_> = (1..=3).map(imported).collect();
    let second: Vec<_> = (4..=5).map(imported).collect();

    let mut session = store.begin_import().await.expect("begin");
    session.add(&first, &[job(1)]).await.expect("first batch");
    session.add(&second, &[]).await.expect("second batch");
    session.rollback().await;
    assert_eq!(store.audit_head().await.expect("head").0, 1, "rolled back");
    assert!(matches!(
        store.job("it-mcp-job-1").await,
        Err(StoreError::NotFound)
    ));

    let mut session = store.begin_import().await.expect("begin");
    assert_eq!(session.add(&first, &[job(1)]).await.expect("first"), (3, 1));
    assert_eq!(
        session.add(&second, &[job(2)]).await.expect("second"),
        (2, 1)
    );
    session.commit().await.expect("commit");
    assert_eq!(store.audit_head().await.expect("head").0, 6);
    assert_eq!(
        store.job("it-mcp-job-2").await.expect("job").status,
        JobStatus::Completed
    );

    let mut session = store.begin_import().await.expect("begin");
    let all: Vec<_> = (1..=5).map(imported).collect();
    assert_eq!(
        session.add(&all, &[job(1), job(2)]).await.expect("again"),
        (0, 0)
    );
    session.commit().await.expect("commit");
    assert_eq!(
        store.audit_head().await.expect("head").0,
        6,
        "nothing twice"
    );
    assert!(audit::verify(store, None).await.expect("verify").ok());
}

/// Several agents claiming at once: every job is claimed exactly once.
/// Jobs assigned to one of the server's executors go only to it; unassigned jobs go only to
/// agents; a job assigned to an agent goes only to that agent.
async fn claims_respect_assignments<S: Store>(store: &S) {
    let now = Utc::now();
    let mut ids = Vec::new();
    for target in [Some("executor:hook"), None, Some("agent-7")] {
        let mut job = new_job(1);
        job.target_agent_id = target.map(str::to_string);
        let job = store.insert_job(&job).await.expect("insert");
        store
            .vote_plain(&vote(&job.job_id, "dave", Verdict::Approve))
            .await
            .expect("approve");
        ids.push(job.job_id);
    }
    let claimed = |who: &'static str| async move {
        store
            .claim(who, 60, now)
            .await
            .expect("claim")
            .map(|j| j.job_id)
    };
    assert_eq!(claimed("executor:other").await, None);
    assert_eq!(
        claimed("mcp:someone-else").await,
        None,
        "the MCP gateway claims only its own job"
    );
    assert!(
        store.pending_jobs(10).await.expect("pending").is_empty(),
        "approved jobs are no longer pending"
    );
    assert_eq!(claimed("agent-8").await.as_ref(), Some(&ids[1]));
    assert_eq!(
        claimed("agent-8").await,
        None,
        "agent-7's job is not agent-8's"
    );
    assert_eq!(claimed("executor:hook").await.as_ref(), Some(&ids[0]));
    assert_eq!(claimed("agent-7").await.as_ref(), Some(&ids[2]));
}

/// The approvals page's list: queued jobs only, urgent first, then oldest.
async fn pending_jobs_are_urgent_first_then_oldest<S: Store>(store: &S) {
    let mut ids = Vec::new();
    for (priority, minutes_ago) in [("normal", 30), ("urgent", 5), ("normal", 60), ("high", 1)] {
        let mut job = new_job(1);
        job.priority = Priority::parse(priority).expect("a priority");
        job.created_at = Utc::now() - Duration::minutes(minutes_ago);
        ids.push(store.insert_job(&job).await.expect("insert").job_id);
    }
    let decided = store.insert_job(&new_job(1)).await.expect("insert");
    store
        .vote_plain(&vote(&decided.job_id, "dave", Verdict::Deny))
        .await
        .expect("deny");
    let pending: Vec<String> = store
        .pending_jobs(10)
        .await
        .expect("pending")
        .into_iter()
        .map(|j| j.job_id)
        .collect();
    assert_eq!(
        pending,
        [
            ids[1].clone(),
            ids[3].clone(),
            ids[2].clone(),
            ids[0].clone()
        ]
    );
    assert_eq!(store.pending_jobs(2).await.expect("pending").len(), 2);
}

/// The job list: newest first, filtered, and paged by keyset without gaps or repeats.
async fn jobs_are_paged_newest_first_by_keyset<S: Store>(store: &S) {
    let base = Utc::now() - Duration::hours(1);
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut job = new_job(1);
        // Two jobs share each timestamp: the job id breaks the tie.
        job.created_at = base + Duration::minutes(i / 2);
        job.requester = if i % 3 == 0 {
            "carol".into()
        } else {
            "alice".into()
        };
        ids.push(store.insert_job(&job).await.expect("insert"));
    }
    store
        .vote_plain(&vote(&ids[6].job_id, "dave", Verdict::Deny))
        .await
        .expect("deny");
    let mut seen = Vec::new();
    let mut filter = server::store::JobFilter::default();
    loop {
        let page = store.jobs_page(&filter, 3).await.expect("page");
        if page.is_empty() {
            break;
        }
        let last = page.last().expect("last");
        filter.before = Some((last.created_at, last.job_id.clone()));
        seen.extend(page);
    }
    assert_eq!(seen.len(), 7, "every job once");
    assert!(seen
        .windows(2)
        .all(|w| (w[0].created_at, &w[0].job_id) > (w[1].created_at, &w[1].job_id)));
    let denied = store
        .jobs_page(
            &server::store::JobFilter {
                status: Some(JobStatus::Denied),
                ..Default::default()
            },
            10,
        )
        .await
        .expect("denied");
    assert_eq!(denied.len(), 1);
    let carols = store
        .jobs_page(
            &server::store::JobFilter {
                requester: Some("carol".into()),
                ..Default::default()
            },
            10,
        )
        .await
        .expect("carol");
    assert_eq!(carols.len(), 3);
    let counts = store.job_counts().await.expect("counts");
    assert_eq!(
        counts,
        vec![("denied".to_string(), 1), ("queued".to_string(), 6)]
    );
}

/// The dashboard's figures: the reference note's queries, counted by the database.
async fn dashboard_counts_the_last_day_week_and_hour<S: Store>(store: &S) {
    let now = Utc::now();
    let at = |minutes_ago: i64, action: &str, risk: &str, tool: &str, caller: &str| {
        let action = AuditAction::parse(action).expect("an action");
        let risk = Risk::parse(risk).expect("a risk");
        let mut e = NewAuditEvent::new(EventKind::Decision, caller, tool, "op", action, "r", risk);
        e.timestamp = now - Duration::minutes(minutes_ago);
        e
    };
    let mut events = vec![
        at(60 * 30, "allow", "LOW", "dns-lookup", "a"), // 30 h ago: the week only
        at(60 * 24 * 9, "allow", "LOW", "dns-lookup", "a"), // 9 days ago: nothing
        at(90, "allow", "LOW", "dns-lookup", "a"),
        at(80, "require_approval", "HIGH", "ssh-exec", "a"),
        // Either side of the 24-hour edge, inside the first (partial) hour's bucket or the one
        // before: the counts come from whole hours plus the rows of the partial hour.
        at(60 * 24 - 10, "allow", "MEDIUM", "edge-tool", "a"),
        at(60 * 24 + 10, "allow", "MEDIUM", "edge-tool", "a"),
    ];
    for _ in 0..6 {
        events.push(at(10, "deny", "HIGH", "ssh-exec", "mallory"));
    }
    let mut approval = at(5, "approve", "HIGH", "ssh-exec", "dave");
    approval.kind = EventKind::Approval;
    events.push(approval);
    store.append_audit(&events).await.expect("append");
    let stats = store
        .dashboard_stats(
            now - Duration::hours(24),
            now - Duration::days(7),
            now - Duration::hours(1),
        )
        .await
        .expect("stats");
    assert_eq!(
        stats.by_action_risk,
        vec![
            ("allow".to_string(), "LOW".to_string(), 1),
            ("allow".to_string(), "MEDIUM".to_string(), 1),
            ("deny".to_string(), "HIGH".to_string(), 6),
            ("require_approval".to_string(), "HIGH".to_string(), 1),
        ]
    );
    let week_total: i64 = stats.daily.iter().map(|(_, _, n)| n).sum();
    assert_eq!(week_total, 11, "{:?}", stats.daily);
    assert!(stats.daily.iter().all(|(day, _, _)| day.len() == 10));
    assert_eq!(
        stats.denial_alerts,
        vec![(
            "mallory".to_string(),
            "ssh-exec".to_string(),
            "op".to_string(),
            6
        )]
    );
    assert_eq!(stats.top_tools[0], ("ssh-exec".to_string(), 7));
    assert_eq!(stats.recent.len(), 10);
    assert_eq!(
        stats.recent[0].event.kind,
        EventKind::Approval,
        "newest first"
    );
}

/// The audit explorer's search: every filter narrows, pages by sequence number.
/// Time ranges are answered through `audit_hours` (each hour's seq range): rows whose times are
/// out of chain order (as imports write them) are still found by every range, exactly as the
/// filter's own per-row check finds them, before and after the oldest rows are purged.
/// Shadow mode's rows (`allow` with `requires_approval`) are counted per operation and risk and
/// read newest first; other decisions, other kinds of row and older rows are not.
async fn shadow_decisions_are_counted_and_read_newest_first<S: Store>(store: &S) {
    let now = Utc::now();
    let row =
        |minutes_ago: i64, operation: &str, action: AuditAction, shadow: bool, decision: &str| {
            let mut e = NewAuditEvent::new(
                EventKind::Decision,
                "it-mcp",
                "ssh-exec",
                operation,
                action,
                "r",
                Risk::High,
            );
            e.timestamp = now - Duration::minutes(minutes_ago);
            e.requires_approval = shadow || action == AuditAction::RequireApproval;
            e.decision = decision.to_string();
            e
        };
    let mut approval = row(3, "executeCommand", AuditAction::Approve, true, "{}");
    approval.kind = EventKind::Approval;
    store
        .append_audit(&[
            row(
                30,
                "executeCommand",
                AuditAction::Allow,
                true,
                r#"{"n":1,"would_block":true}"#,
            ),
            row(
                20,
                "executeCommand",
                AuditAction::Allow,
                true,
                r#"{"n":2,"would_block":true}"#,
            ),
            row(
                10,
                "restart",
                AuditAction::Allow,
                true,
                r#"{"n":3,"would_block":true}"#,
            ),
            // The same shape from elsewhere (an imported IT-MCP row): not shadow mode's.
            row(
                8,
                "executeCommand",
                AuditAction::Allow,
                true,
                r#"{"imported":true}"#,
            ),
            row(5, "executeCommand", AuditAction::Allow, false, "{}"),
            row(
                4,
                "executeCommand",
                AuditAction::RequireApproval,
                false,
                "{}",
            ),
            row(
                60 * 24 * 3,
                "executeCommand",
                AuditAction::Allow,
                true,
                r#"{"n":0,"would_block":true}"#,
            ),
            approval,
        ])
        .await
        .expect("append");
    let found = store
        .shadow_decisions(now - Duration::days(1), 2)
        .await
        .expect("shadow rows");
    assert_eq!(
        found.counts,
        vec![
            (
                "ssh-exec".to_string(),
                "executeCommand".to_string(),
                "HIGH".to_string(),
                2
            ),
            (
                "ssh-exec".to_string(),
                "restart".to_string(),
                "HIGH".to_string(),
                1
            ),
        ]
    );
    let newest: Vec<&str> = found.newest.iter().map(|(_, _, d)| d.as_str()).collect();
    assert_eq!(
        newest,
        vec![
            r#"{"n":3,"would_block":true}"#,
            r#"{"n":2,"would_block":true}"#
        ]
    );
    let week = store
        .shadow_decisions(now - Duration::days(7), 10)
        .await
        .expect("shadow rows");
    assert_eq!(week.newest.len(), 4);
}

fn grant_record(id: &str, needed: i32, max_uses: Option<i32>, expires_in: Duration) -> GrantRecord {
    let now = Utc::now();
    GrantRecord {
        id: id.to_string(),
        tool: "ssh-exec".into(),
        operation: "executeCommand".into(),
        scope: r#"{"tool":"ssh-exec"}"#.into(),
        subject_kind: "person".into(),
        subject: "alice".into(),
        job_id: format!("job-{id}"),
        approvals_needed: needed,
        approvers: vec!["dave".into()],
        created_at: now,
        expires_at: now + expires_in,
        max_uses,
        uses: 0,
        last_used_at: None,
        revoked_at: None,
        revoked_by: None,
    }
}

fn grant_audit(what: &str) -> NewAuditEvent {
    NewAuditEvent::new(
        EventKind::PortalAction,
        "dave",
        "ssh-exec",
        "executeCommand",
        AuditAction::Approve,
        what,
        Risk::High,
    )
}

/// Standing grants: kept with their audit row, active once every approver needed remembered
/// them, listed for their operation while they stand, spent one use at a time (the last use
/// once, however many spend it at the same moment), and revoked once.
async fn grants_are_kept_spent_once_and_revoked<S: Store>(store: &S) {
    let now = Utc::now();
    let rows_before = store.audit_page(0, 10_000).await.expect("audit").len();
    let single = store
        .create_grant(
            &grant_record("g-single", 1, Some(1), Duration::hours(1)),
            &grant_audit("created"),
        )
        .await
        .expect("create");
    assert!(single.active());
    assert_eq!(single.approvers, vec!["dave".to_string()]);
    let pair = store
        .create_grant(
            &grant_record("g-pair", 2, None, Duration::hours(1)),
            &grant_audit("created"),
        )
        .await
        .expect("create");
    assert!(!pair.active());
    // Not standing yet: nothing to spend.
    assert!(!store.spend_grant("g-pair", now).await.expect("spend"));
    assert!(matches!(
        store
            .add_grant_approver(
                "g-pair",
                "dave",
                now + Duration::hours(1),
                &grant_audit("again")
            )
            .await,
        Err(StoreError::Invalid(_))
    ));
    let pair = store
        .add_grant_approver(
            "g-pair",
            "erin",
            now + Duration::minutes(30),
            &grant_audit("second"),
        )
        .await
        .expect("second approver");
    assert!(pair.active());
    assert_eq!(pair.approvers, vec!["dave".to_string(), "erin".to_string()]);
    // The second approver's shorter time wins.
    assert!(pair.expires_at <= now + Duration::minutes(30) + Duration::seconds(1));
    store
        .create_grant(
            &grant_record("g-old", 1, None, Duration::seconds(-5)),
            &grant_audit("created"),
        )
        .await
        .expect("create");
    let standing: Vec<String> = store
        .grants_for("ssh-exec", "executeCommand", now)
        .await
        .expect("grants")
        .into_iter()
        .map(|g| g.id)
        .collect();
    assert!(standing.contains(&"g-single".to_string()) && standing.contains(&"g-pair".to_string()));
    assert!(
        !standing.contains(&"g-old".to_string()),
        "expired grants are not offered"
    );
    assert!(store
        .grants_for("ssh-exec", "other", now)
        .await
        .expect("grants")
        .is_empty());
    assert!(
        !store.spend_grant("g-old", now).await.expect("spend"),
        "expired"
    );

    // The last use, spent by eight at once: one wins.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.spend_grant("g-single", Utc::now()).await
        }));
    }
    let mut spent = 0;
    for task in tasks {
        if task.await.expect("join").expect("spend") {
            spent += 1;
        }
    }
    assert_eq!(spent, 1);
    let single = store.grant("g-single").await.expect("grant");
    assert_eq!(single.uses, 1);
    assert!(single.last_used_at.is_some());

    let revoked = store
        .revoke_grant("g-pair", "erin", now, &grant_audit("revoked"))
        .await
        .expect("revoke");
    assert_eq!(revoked.revoked_by.as_deref(), Some("erin"));
    assert!(
        !store
            .spend_grant("g-pair", Utc::now())
            .await
            .expect("spend"),
        "revoked"
    );
    assert!(matches!(
        store
            .revoke_grant("g-pair", "erin", now, &grant_audit("again"))
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store
            .revoke_grant("g-none", "erin", now, &grant_audit("none"))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(store
        .grants_for("ssh-exec", "executeCommand", now)
        .await
        .expect("grants")
        .iter()
        .all(|g| g.id != "g-pair"));
    assert_eq!(store.grants_page(10).await.expect("page").len(), 3);
    // Every change wrote its row: three creations, one second approver, one revocation.
    let rows = store.audit_page(0, 10_000).await.expect("audit").len();
    assert_eq!(rows - rows_before, 5);
    assert!(
        audit::verify(store, None).await.expect("verify").ok(),
        "the chain still verifies"
    );
}

async fn time_ranges_find_rows_written_out_of_order<S: Store>(store: &S) {
    // Whole milliseconds: the store keeps times (and compares bounds) to the millisecond.
    let base = chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("now")
        - Duration::days(2);
    // Minutes from `base`, in chain order: forwards, then back by hours and days, then forwards.
    let minutes = [0, 5, 61, 62, -180, -1500, 125, 59, 60, 600, 30, -1, 240];
    let events: Vec<NewAuditEvent> = minutes
        .iter()
        .enumerate()
        .map(|(n, m)| {
            let mut e = event(n);
            e.timestamp = base + Duration::minutes(*m);
            e
        })
        .collect();
    // Two batches, so an hour's range is widened by a later transaction too.
    store.append_audit(&events[..7]).await.expect("append");
    store.append_audit(&events[7..]).await.expect("append");
    let check = |rows: Vec<server::store::AuditRecord>| async move {
        let edges: Vec<i64> = [
            -1501, -1500, -181, -2, -1, 0, 29, 30, 59, 60, 61, 120, 125, 241, 601,
        ]
        .to_vec();
        for from in edges
            .iter()
            .map(|m| Some(base + Duration::minutes(*m)))
            .chain([None])
        {
            for to in edges
                .iter()
                .map(|m| Some(base + Duration::minutes(*m)))
                .chain([None])
            {
                let filter = server::store::AuditFilter {
                    from,
                    to,
                    ..Default::default()
                };
                let mut want: Vec<i64> = rows
                    .iter()
                    .filter(|r| filter.matches(r))
                    .map(|r| r.seq)
                    .collect();
                want.reverse();
                let got: Vec<i64> = store
                    .audit_search(&filter, 100)
                    .await
                    .expect("search")
                    .iter()
                    .map(|r| r.seq)
                    .collect();
                assert_eq!(got, want, "from {from:?} to {to:?}");
                let counted: i64 = store
                    .audit_counts(&filter)
                    .await
                    .expect("counts")
                    .iter()
                    .map(|(_, _, n)| n)
                    .sum();
                assert_eq!(counted, want.len() as i64, "counts from {from:?} to {to:?}");
                if let (Some(from), None) = (from, to) {
                    assert_eq!(
                        store.first_seq_since(from).await.expect("first since"),
                        want.last().copied(),
                        "first since {from:?}"
                    );
                }
            }
        }
    };
    check(store.audit_page(0, 100).await.expect("rows")).await;
    // Purging the oldest rows (by chain order) leaves every range right for the rest.
    store.purge_batch(5, 100).await.expect("purge");
    check(store.audit_page(0, 100).await.expect("rows")).await;
}

async fn audit_search_filters_and_pages<S: Store>(store: &S) {
    let events: Vec<NewAuditEvent> = (0..12).map(event).collect();
    store.append_audit(&events).await.expect("append");
    let mut denial = NewAuditEvent::new(
        EventKind::Denial,
        "dave",
        "ssh-exec",
        "executeSudoCommand",
        AuditAction::Deny,
        "no",
        Risk::Critical,
    );
    denial.timestamp = Utc::now() - Duration::days(3);
    store.append_audit(&[denial]).await.expect("append");
    let all = server::store::AuditFilter::default();
    let mut seen = Vec::new();
    let mut filter = all.clone();
    loop {
        let page = store.audit_search(&filter, 5).await.expect("search");
        let Some(last) = page.last() else { break };
        filter.before_seq = Some(last.seq);
        seen.extend(page.iter().map(|r| r.seq));
    }
    assert_eq!(seen, (1..=13).rev().collect::<Vec<i64>>());
    let caller = server::store::AuditFilter {
        caller_id: Some("caller-1".into()),
        ..all.clone()
    };
    assert_eq!(
        store
            .audit_search(&caller, 100)
            .await
            .expect("caller")
            .len(),
        4
    );
    let denials = server::store::AuditFilter {
        kind: Some(EventKind::Denial),
        risk: Some(Risk::Critical),
        action: Some(AuditAction::Deny),
        ..all.clone()
    };
    let found = store.audit_search(&denials, 100).await.expect("denials");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].event.caller_id, "dave");
    let recent = server::store::AuditFilter {
        from: Some(Utc::now() - Duration::days(1)),
        ..all.clone()
    };
    assert_eq!(
        store
            .audit_search(&recent, 100)
            .await
            .expect("recent")
            .len(),
        12
    );
    let older = server::store::AuditFilter {
        to: Some(Utc::now() - Duration::days(1)),
        ..all.clone()
    };
    assert_eq!(
        store.audit_search(&older, 100).await.expect("older").len(),
        1
    );
    // Forward pages (exports): oldest first after the cursor.
    let mut forward = server::store::AuditFilter {
        after_seq: Some(0),
        ..all.clone()
    };
    let mut seen = Vec::new();
    loop {
        let page = store.audit_search(&forward, 5).await.expect("forward");
        let Some(last) = page.last() else { break };
        forward.after_seq = Some(last.seq);
        seen.extend(page.iter().map(|r| r.seq));
    }
    assert_eq!(seen, (1..=13).collect::<Vec<i64>>());
    // The in-memory filter agrees with the database's for every filter above.
    let every = store.audit_search(&all, 100).await.expect("all");
    for filter in [&caller, &denials, &recent, &older] {
        let mut db: Vec<i64> = store
            .audit_search(filter, 100)
            .await
            .expect("search")
            .iter()
            .map(|r| r.seq)
            .collect();
        db.sort_unstable();
        let mut mem: Vec<i64> = every
            .iter()
            .filter(|r| filter.matches(r))
            .map(|r| r.seq)
            .collect();
        mem.sort_unstable();
        assert_eq!(db, mem, "{filter:?}");
    }
    // Counts by kind and action.
    let counts = store.audit_counts(&caller).await.expect("counts");
    assert_eq!(counts.iter().map(|(_, _, n)| n).sum::<i64>(), 4);
    let counts = store.audit_counts(&denials).await.expect("counts");
    assert_eq!(counts, vec![("denial".to_string(), "deny".to_string(), 1)]);
}

async fn concurrent_claims_have_one_winner<S: Store>(store: &S) {
    let mut ids = Vec::new();
    for _ in 0..30 {
        let job = store.insert_job(&new_job(1)).await.expect("insert");
        store
            .vote_plain(&vote(&job.job_id, "bob", Verdict::Approve))
            .await
            .expect("approve");
        ids.push(job.job_id);
    }
    let mut tasks = Vec::new();
    for agent in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                match store.claim(&format!("agent-{agent}"), 60, Utc::now()).await {
                    Ok(Some(job)) => mine.push(job.job_id),
                    Ok(None) => break,
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(other) => panic!("claim failed: {other:?}"),
                }
            }
            mine
        }));
    }
    let mut claimed = Vec::new();
    for task in tasks {
        claimed.extend(task.await.expect("join"));
    }
    claimed.sort();
    ids.sort();
    assert_eq!(claimed, ids, "each job exactly once");
}

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef-test-key";

fn checkpoint_policy(every_rows: u64) -> audit::CheckpointPolicy {
    audit::CheckpointPolicy {
        key: KEY.to_vec(),
        every_rows,
        every: std::time::Duration::from_secs(3_600),
    }
}

/// Keyed checkpoints catch the newest rows being cut off, even when the head is rewritten too.
async fn checkpoints_catch_truncation<S: Store + Tamper>(store: &S) {
    let writer = AuditWriter::spawn(store.clone(), Some(checkpoint_policy(10)));
    let mut receipts = Vec::new();
    for n in 0..25 {
        receipts.push(writer.append(event(n)).await.expect("append"));
    }
    // The writer takes its checkpoint after the commit that crosses the threshold.
    for _ in 0..50 {
        if store.checkpoints().await.expect("checkpoints").len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let checkpoints = store.checkpoints().await.expect("checkpoints");
    assert_eq!(
        checkpoints.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [10, 20]
    );
    let report = audit::verify(store, Some(KEY)).await.expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.checkpoints_verified, 2);
    let other_key = audit::verify(
        store,
        Some(b"another key of sufficient length!!".as_slice()),
    )
    .await
    .expect("verify");
    assert!(other_key.first_bad.is_some_and(|b| b.1.contains("bad MAC")));

    // An attacker deletes rows 16..25 and points the head at row 15.
    let kept = &receipts[14];
    assert_eq!(kept.seq, 15);
    store.purge_tail_for_test(15, &kept.row_hash).await;
    let unkeyed = audit::verify(store, None).await.expect("verify");
    assert!(
        unkeyed.ok(),
        "without the key the cut is invisible: that is what checkpoints are for"
    );
    let keyed = audit::verify(store, Some(KEY)).await.expect("verify");
    let bad = keyed.first_bad.expect("truncation found");
    assert_eq!(bad.0, 16);
    assert!(bad.1.contains("newest rows were removed"), "{}", bad.1);
}

/// Purging old rows anchors the chain so verification still passes from the new first row.
async fn purge_keeps_the_chain_verifiable<S: Store>(store: &S) {
    let now = Utc::now();
    let old: Vec<NewAuditEvent> = (0..10)
        .map(|n| {
            let mut e = event(n);
            e.timestamp = now - Duration::days(100);
            e
        })
        .collect();
    store.append_audit(&old).await.expect("old rows");
    store
        .append_audit(&(10..15).map(event).collect::<Vec<_>>())
        .await
        .expect("new rows");
    let (deleted, anchor) = audit::purge(store, KEY, now - Duration::days(90), now)
        .await
        .expect("purge");
    assert_eq!((deleted, anchor), (10, 10));
    let report = audit::verify(store, Some(KEY)).await.expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!(
        (report.first_seq, report.rows, report.head_seq),
        (11, 5, 15)
    );
    // Purging again finds nothing more to do.
    assert_eq!(
        audit::purge(store, KEY, now - Duration::days(90), now)
            .await
            .expect("purge")
            .0,
        0
    );
    // Rows are appended after a purge as before.
    store.append_audit(&[event(99)]).await.expect("append");
    assert!(audit::verify(store, Some(KEY)).await.expect("verify").ok());
}

/// Every status change people are told about is logged in `job_transitions` with the change
/// itself (what the notifier reads); claims, starts, heartbeats and retries are not news.
async fn status_changes_are_logged_with_them<S: Store + Transitions>(store: &S) {
    let now = Utc::now();
    let runs = store.insert_job(&new_job(1)).await.expect("insert");
    store
        .vote_plain(&vote(&runs.job_id, "bob", Verdict::Approve))
        .await
        .expect("approve");
    store
        .claim("agent-1", 5, now)
        .await
        .expect("claim")
        .expect("job");
    store
        .start(&runs.job_id, "agent-1", now)
        .await
        .expect("start");
    let outcome = JobOutcome {
        status: JobStatus::Completed,
        result: Some("ok".into()),
        error: None,
    };
    store
        .finish(&runs.job_id, "agent-1", &outcome, now)
        .await
        .expect("finish");
    let denied = store.insert_job(&new_job(2)).await.expect("insert");
    store
        .vote_plain(&vote(&denied.job_id, "bob", Verdict::Approve))
        .await
        .expect("first of two");
    store
        .vote_plain(&vote(&denied.job_id, "carol", Verdict::Deny))
        .await
        .expect("deny");
    let cancelled = store.insert_job(&new_job(1)).await.expect("insert");
    store
        .cancel(&cancelled.job_id, "alice", now)
        .await
        .expect("cancel");
    let mut stale = new_job(1);
    stale.expires_at = now - Duration::seconds(1);
    let stale = store.insert_job(&stale).await.expect("insert");
    store.expire_due(now).await.expect("expire");
    let reaped = store.insert_job(&new_job(1)).await.expect("insert");
    store
        .vote_plain(&vote(&reaped.job_id, "bob", Verdict::Approve))
        .await
        .expect("approve");
    for _ in 0..2 {
        store
            .claim("agent-1", 1, now)
            .await
            .expect("claim")
            .expect("job");
        store
            .reap_leases(now + Duration::seconds(2))
            .await
            .expect("reap");
    }
    // A refused change leaves no trace.
    assert!(store.cancel(&runs.job_id, "alice", now).await.is_err());

    let id = |job: &server::store::Job| job.job_id.clone();
    let expected: Vec<(String, &str)> = vec![
        (id(&runs), "queued"),
        (id(&runs), "approved"),
        (id(&runs), "completed"),
        (id(&denied), "queued"),
        (id(&denied), "denied"),
        (id(&cancelled), "queued"),
        (id(&cancelled), "cancelled"),
        (id(&stale), "queued"),
        (id(&stale), "expired"),
        (id(&reaped), "queued"),
        (id(&reaped), "approved"),
        (id(&reaped), "timeout"),
    ];
    let logged = store.transitions().await;
    assert_eq!(
        logged
            .iter()
            .map(|(job, status)| (job.clone(), status.as_str()))
            .collect::<Vec<_>>(),
        expected
    );
}

/// Test-only read of the job status change log.
trait Transitions {
    async fn transitions(&self) -> Vec<(String, String)>;
}

impl Transitions for SqliteStore {
    async fn transitions(&self) -> Vec<(String, String)> {
        sqlx::query_as("SELECT job_id, status FROM job_transitions ORDER BY id")
            .fetch_all(self.pool())
            .await
            .expect("transitions")
    }
}

impl Transitions for PgStore {
    async fn transitions(&self) -> Vec<(String, String)> {
        sqlx::query_as("SELECT job_id, status FROM job_transitions ORDER BY id")
            .fetch_all(self.pool())
            .await
            .expect("transitions")
    }
}

/// Test-only access for simulating an attacker (deletes the tail and rewrites the head).
trait Tamper {
    async fn purge_tail_for_test(&self, keep_through: i64, head_hash: &str);
}

impl Tamper for SqliteStore {
    async fn purge_tail_for_test(&self, keep_through: i64, head_hash: &str) {
        sqlx::query("DELETE FROM audit_logs WHERE seq > $1")
            .bind(keep_through)
            .execute(self.pool())
            .await
            .expect("delete");
        sqlx::query("UPDATE audit_head SET seq = $1, row_hash = $2")
            .bind(keep_through)
            .bind(head_hash)
            .execute(self.pool())
            .await
            .expect("head");
    }
}

impl Tamper for PgStore {
    async fn purge_tail_for_test(&self, keep_through: i64, head_hash: &str) {
        sqlx::query("DELETE FROM audit_logs WHERE seq > $1")
            .bind(keep_through)
            .execute(self.pool())
            .await
            .expect("delete");
        sqlx::query("UPDATE audit_head SET seq = $1, row_hash = $2")
            .bind(keep_through)
            .bind(head_hash)
            .execute(self.pool())
            .await
            .expect("head");
    }
}

// ------------------------------------------------------------------------------------------
// What the services keep beside the audit trail and the queue: idempotency keys, integration
// leases, cursors and the outbox, accounts and tokens, kept policies, rows by id.

async fn idempotency_keys_claim_replay_and_release<S: Store + IdempotencyStore>(store: &S) {
    let now = 1_700_000_000;
    assert_eq!(
        store
            .claim_key("it-mcp", "k1", "h1", now)
            .await
            .expect("claim"),
        Claim::Fresh
    );
    assert_eq!(
        store
            .claim_key("it-mcp", "k1", "h1", now)
            .await
            .expect("again"),
        Claim::InFlight,
        "no answer yet"
    );
    assert_eq!(
        store
            .claim_key("it-mcp", "k1", "h2", now)
            .await
            .expect("other body"),
        Claim::Mismatch
    );
    assert_eq!(
        store
            .claim_key("other", "k1", "h2", now)
            .await
            .expect("other caller"),
        Claim::Fresh,
        "keys are per caller"
    );
    store
        .complete_key("it-mcp", "k1", "{\"answer\":1}")
        .await
        .expect("complete");
    assert_eq!(
        store
            .claim_key("it-mcp", "k1", "h1", now)
            .await
            .expect("replay"),
        Claim::Replay("{\"answer\":1}".into())
    );
    // A released key (no answer) is fresh again; an answered one is not released.
    store.release_key("other", "k1").await.expect("release");
    store
        .release_key("it-mcp", "k1")
        .await
        .expect("release answered");
    assert_eq!(
        store
            .claim_key("other", "k1", "h3", now)
            .await
            .expect("claim"),
        Claim::Fresh
    );
    assert!(matches!(
        store
            .claim_key("it-mcp", "k1", "h1", now)
            .await
            .expect("replay"),
        Claim::Replay(_)
    ));
    store
        .claim_key("old", "k0", "h", now - 100_000)
        .await
        .expect("old key");
    assert_eq!(store.purge_keys(now - 50_000).await.expect("purge"), 1);
    assert_eq!(
        store.claim_key("old", "k0", "h", now).await.expect("claim"),
        Claim::Fresh
    );
}

async fn integrations_keep_leases_cursors_and_the_outbox<S: Store + IntegrationStore>(store: &S) {
    // Leases: one owner at a time; the holder renews; a lapsed one is taken over.
    assert!(store
        .hold_lease("notify", "a", 1_000, 16_000)
        .await
        .expect("take"));
    assert!(!store
        .hold_lease("notify", "b", 2_000, 17_000)
        .await
        .expect("held"));
    assert!(store
        .hold_lease("notify", "a", 3_000, 18_000)
        .await
        .expect("renew"));
    assert!(store
        .hold_lease("notify", "b", 18_001, 33_000)
        .await
        .expect("lapsed"));
    // Cursors.
    assert_eq!(store.cursor("siem:jsonl").await.expect("cursor"), None);
    store.set_cursor("siem:jsonl", 7, 1).await.expect("set");
    store.set_cursor("siem:jsonl", 9, 2).await.expect("move");
    assert_eq!(store.cursor("siem:jsonl").await.expect("cursor"), Some(9));
    // Job changes are logged as jobs move, and read in order.
    assert_eq!(store.last_transition().await.expect("last"), None);
    let job = store.insert_job(&new_job(1)).await.expect("job");
    let changes = store.transitions_after(0, 10).await.expect("changes");
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].1.as_str(), changes[0].2.as_str()),
        (job.job_id.as_str(), "queued")
    );
    assert_eq!(
        store.last_transition().await.expect("last"),
        Some(changes[0].0)
    );
    // The outbox: keys are unique; the cursor moves with the messages.
    let message = |key: &'static str, sink: &'static str| NewOutboxMessage {
        key,
        sink,
        event_id: "transition-1",
        event_type: "job.queued",
        job_id: "j-1",
        payload: "{}",
    };
    let batch = [
        message("e1/webhook", "webhook"),
        message("e1/email", "email"),
    ];
    store
        .enqueue(&batch, Some(("notify", changes[0].0)), 5_000)
        .await
        .expect("enqueue");
    store
        .enqueue(&batch[..1], None, 6_000)
        .await
        .expect("again: skipped");
    assert_eq!(
        store.cursor("notify").await.expect("cursor"),
        Some(changes[0].0)
    );
    assert!(store.outbox_has("e1/webhook").await.expect("has"));
    assert!(!store.outbox_has("e2/webhook").await.expect("has not"));
    let head = store
        .outbox_head("webhook")
        .await
        .expect("head")
        .expect("a message");
    assert_eq!((head.status.as_str(), head.attempts), ("pending", 0));
    let failed = Attempt::Failed {
        dead: false,
        next_attempt_ms: 9_000,
        error: "refused".into(),
    };
    store
        .record_attempt(head.id, 1, &failed, 7_000)
        .await
        .expect("failed");
    let again = store
        .outbox_head("webhook")
        .await
        .expect("head")
        .expect("still pending");
    assert_eq!(
        (
            again.attempts,
            again.next_attempt_ms,
            again.last_error.as_deref()
        ),
        (1, 9_000, Some("refused"))
    );
    let dead = Attempt::Failed {
        dead: true,
        next_attempt_ms: 0,
        error: "gone".into(),
    };
    store
        .record_attempt(head.id, 2, &dead, 9_500)
        .await
        .expect("dead");
    assert!(store.outbox_head("webhook").await.expect("head").is_none());
    let letters = store.dead_letters(10).await.expect("dead letters");
    assert_eq!(letters.iter().map(|l| l.id).collect::<Vec<_>>(), [head.id]);
    let retried = store
        .retry_dead_letter(head.id, 10_000)
        .await
        .expect("retry");
    assert_eq!(
        retried.map(|r| (r.status, r.attempts)),
        Some(("pending".into(), 0))
    );
    assert!(store
        .retry_dead_letter(head.id, 10_000)
        .await
        .expect("retry")
        .is_none());
    store
        .record_attempt(head.id, 1, &Attempt::Delivered, 11_000)
        .await
        .expect("delivered");
    let counts = store.outbox_counts().await.expect("counts");
    assert_eq!(
        counts,
        [
            ("email".to_string(), "pending".to_string(), 1),
            ("webhook".to_string(), "delivered".to_string(), 1)
        ]
    );
    // Purging: delivered messages and old job changes go, pending ones stay.
    let now_ms = chrono::Utc::now().timestamp_millis();
    let purged = store
        .purge_integrations(11_001, now_ms + 1)
        .await
        .expect("purge");
    assert_eq!(purged, 2, "one delivered message and one job change");
    assert_eq!(store.outbox_counts().await.expect("counts").len(), 1);
}

async fn accounts_and_tokens_are_kept<S: Store + IdentityStore>(store: &S) {
    assert_eq!(store.count_users().await.expect("count"), 0);
    let user = NewUser {
        username: "alice",
        password_hash: "$argon2id$hash",
        roles: "[\"approver\"]",
        capabilities: "[]",
        created_at: 1,
    };
    store.insert_user(&user).await.expect("insert");
    assert!(matches!(
        store.insert_user(&user).await,
        Err(StoreError::Duplicate(name)) if name == "alice"
    ));
    assert_eq!(store.count_users().await.expect("count"), 1);
    let row = store.user("alice").await.expect("user").expect("alice");
    assert_eq!(
        (row.display_name.as_str(), row.roles.as_str(), row.disabled),
        ("alice", "[\"approver\"]", false)
    );
    assert!(store.user("bob").await.expect("user").is_none());
    store
        .set_failures("alice", 5, Some(99))
        .await
        .expect("failures");
    let creds = store
        .credentials("alice")
        .await
        .expect("creds")
        .expect("alice");
    assert_eq!((creds.failed_attempts, creds.locked_until), (5, Some(99)));
    assert!(store
        .set_password_hash("alice", "$argon2id$new")
        .await
        .expect("password"));
    let creds = store
        .credentials("alice")
        .await
        .expect("creds")
        .expect("alice");
    assert_eq!(
        (
            creds.password_hash.as_str(),
            creds.failed_attempts,
            creds.locked_until
        ),
        ("$argon2id$new", 0, None),
        "a new password clears the lock"
    );
    assert!(!store.set_password_hash("bob", "x").await.expect("no bob"));
    assert!(store.set_disabled("alice", true).await.expect("disable"));
    assert!(
        store
            .credentials("alice")
            .await
            .expect("creds")
            .expect("alice")
            .disabled
    );
    // Tokens.
    let token = TokenRow {
        id: "0a1b2c".into(),
        name: "it-mcp".into(),
        roles: "[]".into(),
        capabilities: "[\"ssh-linux\"]".into(),
        created_at: 10,
        revoked_at: None,
        last_used_at: None,
    };
    store.insert_token(&token, "sha").await.expect("token");
    assert!(matches!(
        store
            .insert_token(
                &TokenRow {
                    id: "ffffff".into(),
                    ..token.clone()
                },
                "sha"
            )
            .await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(
        store.token_with_secret("0a1b2c").await.expect("token"),
        Some((token.clone(), "sha".to_string()))
    );
    store.token_used("0a1b2c", 20).await.expect("used");
    assert!(store.revoke_token("it-mcp", 30).await.expect("revoke"));
    assert!(!store
        .revoke_token("it-mcp", 31)
        .await
        .expect("revoked once"));
    let listed = store.tokens().await.expect("tokens");
    assert_eq!(
        listed
            .iter()
            .map(|t| (t.name.as_str(), t.last_used_at, t.revoked_at))
            .collect::<Vec<_>>(),
        [("it-mcp", Some(20), Some(30))]
    );
}

async fn audit_rows_are_found_by_id<S: Store>(store: &S) {
    let receipts = store
        .append_audit(&[event(1), event(2)])
        .await
        .expect("append");
    let row = store
        .audit_row(&receipts[1].id, EventKind::Decision)
        .await
        .expect("row")
        .expect("found");
    assert_eq!(
        (row.seq, row.event.caller_id.as_str()),
        (receipts[1].seq, "caller-2")
    );
    assert!(store
        .audit_row("no-such-row", EventKind::Decision)
        .await
        .expect("row")
        .is_none());
    assert!(
        store
            .audit_row(&receipts[1].id, EventKind::Execution)
            .await
            .expect("row")
            .is_none(),
        "a row of another kind is not found"
    );
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = sqlite().await;
                    super::$name(&db.store).await;
                }
            )*
        }
        mod on_postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = postgres().await;
                    super::$name(&db.store).await;
                }
            )*
        }
    };
}

conformance!(
    chain_appends_and_verifies,
    group_commit_writer,
    job_lifecycle_with_quorum,
    denial_and_cancel,
    expiry_and_leases,
    concurrent_approvals_have_one_winner,
    votes_audit_what_the_store_decided,
    imports_land_in_batches_all_or_nothing,
    concurrent_claims_have_one_winner,
    claims_respect_assignments,
    pending_jobs_are_urgent_first_then_oldest,
    jobs_are_paged_newest_first_by_keyset,
    dashboard_counts_the_last_day_week_and_hour,
    shadow_decisions_are_counted_and_read_newest_first,
    grants_are_kept_spent_once_and_revoked,
    audit_search_filters_and_pages,
    time_ranges_find_rows_written_out_of_order,
    checkpoints_catch_truncation,
    purge_keeps_the_chain_verifiable,
    status_changes_are_logged_with_them,
    idempotency_keys_claim_replay_and_release,
    integrations_keep_leases_cursors_and_the_outbox,
    accounts_and_tokens_are_kept,
    audit_rows_are_found_by_id,
    repeated_calls_find_their_open_job,
    repeated_api_calls_find_their_pending_job,
    unattended_gateway_jobs_are_approved_and_uncollected,
);

// ------------------------------------------------------------------------------------------
// Tampering and truncation are found, on both databases.

#[tokio::test]
async fn sqlite_tampering_names_the_row() {
    let db = sqlite().await;
    db.store
        .append_audit(&(1..=5).map(event).collect::<Vec<_>>())
        .await
        .expect("append");
    let pool = db.store.pool();
    // An attacker with write access to the file: drops the guard trigger and edits row 3.
    sqlx::query("DROP TRIGGER audit_logs_append_only")
        .execute(pool)
        .await
        .expect("drop trigger");
    sqlx::query(
        "UPDATE audit_logs SET decision_action = 'allow', caller_id = 'mallory' WHERE seq = 3",
    )
    .execute(pool)
    .await
    .expect("tamper");
    let report = audit::verify(&db.store, None).await.expect("verify");
    assert_eq!(
        report.first_bad.as_ref().map(|b| b.0),
        Some(3),
        "{report:?}"
    );
    assert!(report
        .first_bad
        .as_ref()
        .is_some_and(|b| b.1.contains("changed")));
}

#[tokio::test]
async fn sqlite_rows_cannot_be_updated() {
    let db = sqlite().await;
    db.store.append_audit(&[event(1)]).await.expect("append");
    let err = sqlx::query("UPDATE audit_logs SET caller_id = 'x'")
        .execute(db.store.pool())
        .await
        .expect_err("append-only");
    assert!(err.to_string().contains("append-only"));
}

/// The salts in a WAL file's header: SQLite changes them each time it starts the log over.
fn wal_salts(wal: &std::path::Path) -> Option<Vec<u8>> {
    std::fs::read(wal).ok()?.get(16..24).map(<[u8]>::to_vec)
}

#[tokio::test]
async fn sqlite_wal_starts_over_while_the_writer_never_pauses() {
    let db = sqlite().await;
    let wal = db._dir.path().join("store.db-wal");
    db.store.append_audit(&[event(0)]).await.expect("append");
    let first = wal_salts(&wal).expect("a WAL file");
    // Back-to-back appends: the write connection never pauses, yet the store's checkpoints must
    // let the log start over, or the WAL grows for as long as the load lasts.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut n = 1;
    while wal_salts(&wal).as_ref() == Some(&first) {
        assert!(
            std::time::Instant::now() < deadline,
            "the WAL did not start over in 30 s of writes"
        );
        let batch: Vec<_> = (n..n + 20).map(event).collect();
        db.store.append_audit(&batch).await.expect("append");
        n += 20;
    }
    let report = audit::verify(&db.store, None).await.expect("verify");
    assert!(report.first_bad.is_none(), "{report:?}");
    assert_eq!(report.rows, n as i64, "{report:?}");
}

#[tokio::test]
async fn sqlite_truncation_and_removal_are_found() {
    let db = sqlite().await;
    db.store
        .append_audit(&(1..=6).map(event).collect::<Vec<_>>())
        .await
        .expect("append");
    sqlx::query("DELETE FROM audit_logs WHERE seq = 6")
        .execute(db.store.pool())
        .await
        .expect("truncate");
    let report = audit::verify(&db.store, None).await.expect("verify");
    assert!(
        report
            .first_bad
            .as_ref()
            .is_some_and(|b| b.1.contains("truncated")),
        "{report:?}"
    );
    sqlx::query("DELETE FROM audit_logs WHERE seq = 2")
        .execute(db.store.pool())
        .await
        .expect("remove");
    let report = audit::verify(&db.store, None).await.expect("verify");
    assert_eq!(
        report.first_bad.as_ref().map(|b| b.0),
        Some(3),
        "{report:?}"
    );
}

#[tokio::test]
async fn postgres_tampering_names_the_row() {
    let db = postgres().await;
    db.store
        .append_audit(&(1..=5).map(event).collect::<Vec<_>>())
        .await
        .expect("append");
    let pool = db.store.pool();
    sqlx::query("ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_append_only")
        .execute(pool)
        .await
        .expect("disable trigger");
    sqlx::query("UPDATE audit_logs SET risk_level = 'LOW' WHERE seq = 4")
        .execute(pool)
        .await
        .expect("tamper");
    let report = audit::verify(&db.store, None).await.expect("verify");
    assert_eq!(report.first_bad.map(|b| b.0), Some(4));
}

#[tokio::test]
async fn a_failing_database_fails_the_writer_closed() {
    let db = sqlite().await;
    let writer = AuditWriter::spawn(db.store.clone(), None);
    writer
        .append(event(1))
        .await
        .expect("works while the database does");
    db.store.close().await;
    assert!(
        writer.append(event(2)).await.is_err(),
        "no acknowledgement without a durable row"
    );
}

/// IT-MCP's monitoring SQL (from its policy-enforcement note) runs unchanged on our SQLite
/// database and gives the right answers.
#[tokio::test]
async fn it_mcp_monitoring_queries_run_unchanged() {
    let db = sqlite().await;
    let now = Utc::now();
    let mut events = Vec::new();
    for (minutes_ago, caller, action, risk) in [
        (5, "ai-1", "allow", "LOW"),
        (10, "ai-1", "require_approval", "CRITICAL"),
        (20, "ai-2", "deny", "HIGH"),
        (30 * 60, "ai-1", "allow", "LOW"), // 30 hours ago: outside the 24 h window
    ] {
        let mut e = NewAuditEvent::new(
            EventKind::Decision,
            caller,
            "ssh-exec",
            "executeCommand",
            AuditAction::parse(action).expect("an action"),
            "r",
            Risk::parse(risk).expect("a risk"),
        );
        e.timestamp = now - Duration::minutes(minutes_ago);
        events.push(e);
    }
    for n in 0..6 {
        let mut e = NewAuditEvent::new(
            EventKind::Decision,
            "ai-3",
            "ubuntu-admin",
            "stopService",
            AuditAction::Deny,
            "missing required capabilities",
            Risk::Critical,
        );
        e.timestamp = now - Duration::minutes(n + 1);
        events.push(e);
    }
    db.store.append_audit(&events).await.expect("append");
    for priority in ["high", "urgent", "low"] {
        let mut job = new_job(1);
        job.priority = Priority::parse(priority).expect("a priority");
        db.store.insert_job(&job).await.expect("job");
    }
    let pool = db.store.pool();

    let stats: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT DATE(timestamp) as date, decision_action, risk_level, COUNT(*) as count FROM audit_logs \
         WHERE timestamp > datetime('now', '-24 hours') GROUP BY date, decision_action, risk_level",
    )
    .fetch_all(pool)
    .await
    .expect("audit statistics query");
    let total: i64 = stats.iter().map(|s| s.3).sum();
    assert_eq!(
        total, 9,
        "the 30-hour-old row is outside the window: {stats:?}"
    );

    let denied: Vec<(String, String, String, String, i64)> = sqlx::query_as(
        "SELECT caller_id, tool, operation, decision_reason, COUNT(*) as denied_count FROM audit_logs \
         WHERE decision_action = 'deny' AND timestamp > datetime('now', '-1 hour') \
         GROUP BY caller_id, tool, operation HAVING COUNT(*) > 5",
    )
    .fetch_all(pool)
    .await
    .expect("denied operations query");
    assert_eq!(denied.len(), 1);
    assert_eq!((denied[0].0.as_str(), denied[0].4), ("ai-3", 6));

    let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) as pending FROM command_queue WHERE status = 'queued' AND priority IN ('high', 'urgent')")
        .fetch_one(pool)
        .await
        .expect("pending approvals query");
    assert_eq!(pending, 2);

    let by_action: Vec<(String, i64)> = sqlx::query_as(
        "SELECT decision_action, COUNT(*) as count FROM audit_logs GROUP BY decision_action",
    )
    .fetch_all(pool)
    .await
    .expect("statistics query");
    assert_eq!(by_action.iter().map(|r| r.1).sum::<i64>(), 10);
}

/// The migrations before the hash columns became bytes, from the same files the server embeds.
async fn migrate_before_hash_blobs(dialect: &str, db: &server::Database) {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../migrations/{dialect}"));
    let mut migrator = sqlx::migrate::Migrator::new(dir).await.expect("migrations");
    migrator.migrations = migrator
        .migrations
        .iter()
        .filter(|m| m.version < 20261203000002)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    match db {
        server::Database::Sqlite(pool) => migrator.run(pool).await,
        server::Database::Postgres(pool) => migrator.run(pool).await,
    }
    .expect("the earlier migrations");
}

/// Three chained rows as the earlier schema held them: every hash as 64 hex characters.
async fn write_hex_rows(db: &server::Database) -> String {
    let mut prev = server::store::GENESIS.to_string();
    for seq in 1..=3i64 {
        let mut e = event(seq as usize);
        e.policy_hash = Some("cd".repeat(32));
        e.call_hash = (seq != 2).then(|| format!("{seq:064x}"));
        let id = format!("old-{seq}");
        let hash = audit::row_hash(&id, seq, &e, &prev);
        let insert = "INSERT INTO audit_logs (id, timestamp, caller_id, tool, operation, \
             decision_action, decision_reason, risk_level, requires_approval, context, decision, \
             seq, event_kind, policy_hash, call_hash, prev_hash, row_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)";
        macro_rules! run {
            ($pool:expr, $timestamp:expr) => {{
                sqlx::query(insert)
                    .bind(&id)
                    .bind($timestamp)
                    .bind(&e.caller_id)
                    .bind(&e.tool)
                    .bind(&e.operation)
                    .bind(&e.decision_action)
                    .bind(&e.decision_reason)
                    .bind(&e.risk_level)
                    .bind(e.requires_approval)
                    .bind(&e.context)
                    .bind(&e.decision)
                    .bind(seq)
                    .bind(e.kind.as_str())
                    .bind(&e.policy_hash)
                    .bind(&e.call_hash)
                    .bind(&prev)
                    .bind(&hash)
                    .execute($pool)
                    .await
                    .expect("an old-style row");
                sqlx::query("UPDATE audit_head SET seq = $1, row_hash = $2")
                    .bind(seq)
                    .bind(&hash)
                    .execute($pool)
                    .await
                    .expect("head");
            }};
        }
        match db {
            server::Database::Sqlite(pool) => run!(pool, server::store::format_ts(e.timestamp)),
            server::Database::Postgres(pool) => run!(pool, e.timestamp),
        };
        prev = hash;
    }
    prev
}

/// Rows written before the hashes were stored as bytes still verify after the migration, read
/// back as the same hex, and the chain goes on from them.
async fn hex_rows_survive_the_hash_migration<S: Store>(
    db: &server::Database,
    dialect: &str,
    store: impl Fn() -> S,
) {
    migrate_before_hash_blobs(dialect, db).await;
    let head = write_hex_rows(db).await;
    db.migrate().await.expect("the hash migration");
    let store = store();
    let report = audit::verify(&store, None).await.expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.rows, report.head_hash.as_str()), (3, head.as_str()));
    let rows = store.audit_page(0, 10).await.expect("rows");
    assert_eq!(
        rows[0].event.policy_hash.as_deref(),
        Some("cd".repeat(32).as_str())
    );
    assert_eq!(rows[1].event.call_hash, None);
    assert_eq!(rows[2].event.call_hash, Some(format!("{:064x}", 3)));
    assert_eq!(rows[2].row_hash, head);
    store.append_audit(&[event(4)]).await.expect("append");
    assert!(audit::verify(&store, None).await.expect("verify").ok());
    // The rows from before the audit-hours migration are found by time (it filled their hours).
    let since = server::store::AuditFilter {
        from: rows.iter().map(|r| r.event.timestamp).min(),
        ..Default::default()
    };
    assert_eq!(
        store.audit_search(&since, 10).await.expect("search").len(),
        4
    );
}

#[tokio::test]
async fn sqlite_hex_rows_survive_the_hash_migration() {
    let (db, _dir) = sqlite_db().await;
    let server::Database::Sqlite(pool) = db.clone() else {
        panic!("sqlite expected")
    };
    hex_rows_survive_the_hash_migration(&db, "sqlite", || SqliteStore::new(pool.clone())).await;
}

#[tokio::test]
async fn postgres_hex_rows_survive_the_hash_migration() {
    let (pool, _schema) = pg_pool().await;
    let db = server::Database::Postgres(pool.clone());
    hex_rows_survive_the_hash_migration(&db, "postgres", || PgStore::new(pool.clone())).await;
}

/// A hash that could not be stored as 32 bytes (and read back as the same text) is refused, for
/// that caller alone, and nothing of it is written.
async fn malformed_hashes_are_refused<S: Store>(store: S) {
    let writer = AuditWriter::spawn(store.clone(), None);
    for bad in [
        "AB".repeat(32),
        "ab".repeat(31),
        "zz".repeat(32),
        "not a hash".into(),
    ] {
        let mut e = event(1);
        e.call_hash = Some(bad.clone());
        let refused = writer.append(e.clone()).await;
        assert!(
            matches!(refused, Err(StoreError::Invalid(_))),
            "{bad}: {refused:?}"
        );
        let direct = store.append_audit(&[event(2), e]).await;
        assert!(
            matches!(direct, Err(StoreError::Invalid(_))),
            "{bad}: {direct:?}"
        );
    }
    writer
        .append(event(3))
        .await
        .expect("a good row still goes in");
    assert_eq!(store.audit_head().await.expect("head").0, 1);
}

#[tokio::test]
async fn sqlite_malformed_hashes_are_refused() {
    let db = sqlite().await;
    malformed_hashes_are_refused(db.store.clone()).await;
}

#[tokio::test]
async fn postgres_malformed_hashes_are_refused() {
    let db = postgres().await;
    malformed_hashes_are_refused(db.store.clone()).await;
}

/// The policy a row was decided under is kept once and found again by its hash: the loaded one
/// as it is, an earlier one loaded from its kept text, an unknown one not at all. A row naming
/// a policy never recorded keeps that hash (the policy is kept by hash alone until recorded).
async fn policy_versions_are_kept_once_and_found_by_hash<S: Store>(
    db: server::Database,
    store: impl Fn() -> S,
) {
    db.migrate().await.expect("migrate");
    let store = store();
    let current = std::sync::Arc::new(enforcer::default_policy().expect("default policy"));
    let earlier = enforcer::PolicySet::load(
        "earlier.toml",
        &current.source().replace("name = \"", "name = \"earlier "),
    )
    .expect("earlier policy");
    assert_ne!(earlier.hash(), current.hash());
    let mut row = event(1);
    row.policy_hash = Some(earlier.hash().to_string());
    store.append_audit(&[row]).await.expect("append");
    assert!(
        server::services::policy_versions::find(&store, &current, earlier.hash())
            .await
            .expect("find")
            .is_none(),
        "kept by hash alone: no text to load yet"
    );
    for policy in [&earlier, &current, &earlier] {
        server::services::policy_versions::record(&store, policy)
            .await
            .expect("record");
    }
    let count = "SELECT COUNT(*) FROM policy_versions";
    let kept: i64 = match &db {
        server::Database::Sqlite(pool) => sqlx::query_scalar(count).fetch_one(pool).await,
        server::Database::Postgres(pool) => sqlx::query_scalar(count).fetch_one(pool).await,
    }
    .expect("count");
    assert_eq!(kept, 2, "each policy once");
    let found = server::services::policy_versions::find(&store, &current, current.hash())
        .await
        .expect("find")
        .expect("the loaded policy");
    assert!(std::sync::Arc::ptr_eq(&found, &current));
    let found = server::services::policy_versions::find(&store, &current, earlier.hash())
        .await
        .expect("find")
        .expect("the earlier policy");
    assert_eq!(
        (found.hash(), found.name.as_str()),
        (earlier.hash(), earlier.name.as_str())
    );
    assert!(
        server::services::policy_versions::find(&store, &current, &"0".repeat(64))
            .await
            .expect("find")
            .is_none()
    );
    // Rows of either policy read back with their hashes, and the chain holds.
    let mut row = event(2);
    row.policy_hash = Some(current.hash().to_string());
    store.append_audit(&[row, event(3)]).await.expect("append");
    let hashes: Vec<Option<String>> = store
        .audit_page(0, 10)
        .await
        .expect("rows")
        .into_iter()
        .map(|r| r.event.policy_hash)
        .collect();
    assert_eq!(
        hashes,
        [
            Some(earlier.hash().to_string()),
            Some(current.hash().to_string()),
            None
        ]
    );
    assert!(audit::verify(&store, None).await.expect("verify").ok());
}

#[tokio::test]
async fn sqlite_policy_versions_are_kept_once_and_found_by_hash() {
    let (db, _dir) = sqlite_db().await;
    let server::Database::Sqlite(pool) = db.clone() else {
        panic!("sqlite expected")
    };
    policy_versions_are_kept_once_and_found_by_hash(db, || SqliteStore::new(pool.clone())).await;
}

#[tokio::test]
async fn postgres_policy_versions_are_kept_once_and_found_by_hash() {
    let (pool, _schema) = pg_pool().await;
    let db = server::Database::Postgres(pool.clone());
    policy_versions_are_kept_once_and_found_by_hash(db, || PgStore::new(pool.clone())).await;
}
