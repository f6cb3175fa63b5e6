//! The background pass expires and reaps jobs, and audits each change.

use chrono::{Duration, Utc};
use server::services::maintenance::Maintenance;
use server::store::{AnyStore, AuditWriter, JobStatus, NewJob, Store, VoteRecord};

#[tokio::test]
async fn expired_requests_and_lapsed_leases_are_handled_and_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = server::Config {
        database_url: format!("sqlite://{}", dir.path().join("m.db").display()),
        ..server::Config::default()
    };
    let db = server::Database::connect(&config).await.expect("db");
    db.migrate().await.expect("migrate");
    let store = AnyStore::new(&db);
    let writer = AuditWriter::spawn(store.clone(), None);
    let now = Utc::now();
    let job = |expires_in: i64| NewJob {
        job_id: None,
        tool_name: "ssh-exec".into(),
        operation: "executeCommand".into(),
        params: "{}".into(),
        requested_capabilities: vec![],
        target: None,
        target_agent_id: None,
        priority: server::store::Priority::Normal,
        requester: "alice".into(),
        requester_reason: None,
        risk: server::store::Risk::High,
        call_hash: "00".repeat(32),
        policy_hash: None,
        approvals_required: 1,
        created_at: now,
        expires_at: now + Duration::seconds(expires_in),
        approval_window_secs: 600,
        max_retries: 0,
        decision_audit_id: None,
        submitted_by: None,
    };
    let stale = store.insert_job(&job(-5)).await.expect("insert");
    let leased = store.insert_job(&job(3_600)).await.expect("insert");
    store
        .vote(
            &VoteRecord {
                job_id: leased.job_id.clone(),
                approver: "bob".into(),
                verdict: enforcer::Verdict::Approve,
                reason: None,
                created_at: now,
            },
            no_audit,
        )
        .await
        .map(|(job, _)| job)
        .expect("approve");
    store
        .claim("agent-1", -1, now)
        .await
        .expect("claim")
        .expect("job"); // a lease that has already lapsed

    let maintenance = Maintenance {
        store: store.clone(),
        writer,
        interval: std::time::Duration::from_secs(60),
        audit_key: None,
        retention_secs: None,
    };
    maintenance.tick().await.expect("tick");

    assert_eq!(
        store.job(&stale.job_id).await.expect("job").status,
        JobStatus::Expired
    );
    assert_eq!(
        store.job(&leased.job_id).await.expect("job").status,
        JobStatus::Timeout,
        "no retries left"
    );
    let rows = store.audit_page(0, 10).await.expect("rows");
    let kinds: Vec<(&str, Option<&str>)> = rows
        .iter()
        .map(|r| (r.event.kind.as_str(), r.event.job_id.as_deref()))
        .collect();
    assert!(
        kinds.contains(&("expiry", Some(stale.job_id.as_str()))),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("execution", Some(leased.job_id.as_str()))),
        "{kinds:?}"
    );
    assert!(rows
        .iter()
        .any(|r| r.event.execution_status.as_deref() == Some("timeout")));
}

/// A vote without an audit row: these tests drive the job machine, not the approval service
/// (which always writes one).
fn no_audit(
    _: &server::store::Job,
    _: &server::store::VoteTally,
) -> Option<server::store::NewAuditEvent> {
    None
}
