// The store's SQL, shared by both dialects. Included by `sqlite.rs` and `postgres.rs`, which
// define what differs: `Db`, `DbRow`, `Pool`, the `DialectStore` type, timestamp encoding
// (`ts`, `read_ts`, `read_opt_ts`), the row lock (`lock!()`, `CLAIM_LOCK`) and how a write
// transaction begins (`DialectStore::write`). Not a module of its own: it is compiled once per
// dialect, so each gets the concrete sqlx types it needs.

/// A hash column (stored as 32 bytes) as lowercase hex.
fn read_hash(row: &DbRow, column: &str) -> Result<String, StoreError> {
    audit::hash_text(&row.try_get::<Vec<u8>, _>(column)?)
}

fn read_opt_hash(row: &DbRow, column: &str) -> Result<Option<String>, StoreError> {
    row.try_get::<Option<Vec<u8>>, _>(column)?
        .map(|bytes| audit::hash_text(&bytes))
        .transpose()
}

/// The `policy_versions` id of each policy hash `events` name. A hash not kept yet (a policy
/// `policy_versions::record` never saw: an import, another replica's older policy) is kept by
/// hash alone, inside the caller's transaction, so it stands or falls with the rows.
async fn policy_ids<'e>(
    tx: &mut Transaction<'static, Db>,
    events: &'e [NewAuditEvent],
) -> Result<std::collections::HashMap<&'e str, i32>, StoreError> {
    let mut ids = std::collections::HashMap::new();
    for event in events {
        let Some(hash) = event.policy_hash.as_deref() else {
            continue;
        };
        if ids.contains_key(hash) {
            continue;
        }
        audit::hash_bytes(hash)?;
        let find = || {
            sqlx::query_scalar::<Db, i32>("SELECT id FROM policy_versions WHERE policy_hash = $1")
        };
        let id = match find().bind(hash).fetch_optional(&mut **tx).await? {
            Some(id) => id,
            None => {
                sqlx::query(
                    "INSERT INTO policy_versions (policy_hash, first_used_at) VALUES ($1, $2) \
                     ON CONFLICT (policy_hash) DO NOTHING",
                )
                .bind(hash)
                .bind(ts(event.timestamp))
                .execute(&mut **tx)
                .await?;
                find().bind(hash).fetch_one(&mut **tx).await?
            }
        };
        ids.insert(hash, id);
    }
    Ok(ids)
}

fn audit_row(row: &DbRow) -> Result<AuditRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let kind: String = row.try_get("event_kind")?;
    Ok(AuditRecord {
        seq: row.try_get("seq")?,
        prev_hash: read_hash(row, "prev_hash")?,
        row_hash: read_hash(row, "row_hash")?,
        event: NewAuditEvent {
            id: Some(id.clone()),
            timestamp: read_ts(row, "timestamp")?,
            kind: EventKind::parse(&kind)
                .ok_or_else(|| StoreError::Invalid(format!("unknown event kind {kind:?}")))?,
            caller_id: row.try_get("caller_id")?,
            tool: row.try_get("tool")?,
            operation: row.try_get("operation")?,
            decision_action: row.try_get("decision_action")?,
            decision_reason: row.try_get("decision_reason")?,
            risk_level: row.try_get("risk_level")?,
            requires_approval: row.try_get("requires_approval")?,
            execution_status: row.try_get("execution_status")?,
            execution_duration_ms: row.try_get("execution_duration_ms")?,
            side_effects: row.try_get("side_effects")?,
            error: row.try_get("error")?,
            approver: row.try_get("approver")?,
            approved_at: read_opt_ts(row, "approved_at")?,
            context: row.try_get("context")?,
            decision: row.try_get("decision")?,
            job_id: row.try_get("job_id")?,
            policy_hash: row.try_get("policy_hash")?,
            call_hash: read_opt_hash(row, "call_hash")?,
        },
        id,
    })
}

/// A column holding one of a vocabulary's words; any other text is a damaged row.
fn read_word<T>(
    row: &DbRow,
    column: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T, StoreError> {
    let text: String = row.try_get(column)?;
    parse(&text).ok_or_else(|| StoreError::Invalid(format!("unknown job {column} {text:?}")))
}

fn grant_row(row: &DbRow) -> Result<super::GrantRecord, StoreError> {
    let approvers: String = row.try_get("approvers")?;
    Ok(super::GrantRecord {
        id: row.try_get("id")?,
        tool: row.try_get("tool")?,
        operation: row.try_get("operation")?,
        scope: row.try_get("scope")?,
        subject_kind: row.try_get("subject_kind")?,
        subject: row.try_get("subject")?,
        job_id: row.try_get("job_id")?,
        approvals_needed: row.try_get("approvals_needed")?,
        approvers: serde_json::from_str(&approvers)
            .map_err(|e| StoreError::Invalid(format!("a grant's approvers are damaged: {e}")))?,
        created_at: read_ts(row, "created_at")?,
        expires_at: read_ts(row, "expires_at")?,
        max_uses: row.try_get("max_uses")?,
        uses: row.try_get("uses")?,
        last_used_at: read_opt_ts(row, "last_used_at")?,
        revoked_at: read_opt_ts(row, "revoked_at")?,
        revoked_by: row.try_get("revoked_by")?,
    })
}

async fn load_grant(
    tx: &mut Transaction<'static, Db>,
    id: &str,
) -> Result<super::GrantRecord, StoreError> {
    let row = sqlx::query(concat!("SELECT * FROM grants WHERE id = $1", lock!()))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound)?;
    grant_row(&row)
}

fn job_row(row: &DbRow) -> Result<Job, StoreError> {
    let caps: String = row.try_get("requested_capabilities")?;
    Ok(Job {
        job_id: row.try_get("job_id")?,
        tool_name: row.try_get("tool_name")?,
        operation: row.try_get("operation")?,
        params: row.try_get("params")?,
        requested_capabilities: serde_json::from_str(&caps).unwrap_or_default(),
        target: row.try_get("target")?,
        target_agent_id: row.try_get("target_agent_id")?,
        status: read_word(row, "status", JobStatus::parse)?,
        priority: read_word(row, "priority", Priority::parse)?,
        requester: row.try_get("requester")?,
        requester_reason: row.try_get("requester_reason")?,
        risk: read_word(row, "risk", Risk::parse)?,
        call_hash: row.try_get("call_hash")?,
        policy_hash: row.try_get("policy_hash")?,
        approvals_required: row.try_get("approvals_required")?,
        approval_window_secs: row.try_get("approval_window_secs")?,
        created_at: read_ts(row, "created_at")?,
        expires_at: read_opt_ts(row, "expires_at")?,
        approved_at: read_opt_ts(row, "approved_at")?,
        approval_expires_at: read_opt_ts(row, "approval_expires_at")?,
        picked_at: read_opt_ts(row, "picked_at")?,
        completed_at: read_opt_ts(row, "completed_at")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at: read_opt_ts(row, "lease_expires_at")?,
        retry_count: row.try_get::<Option<i32>, _>("retry_count")?.unwrap_or(0),
        max_retries: row.try_get::<Option<i32>, _>("max_retries")?.unwrap_or(3),
        result: row.try_get("result")?,
        error: row.try_get("error")?,
        decision_audit_id: row.try_get("decision_audit_id")?,
        submitted_by: row.try_get("submitted_by")?,
    })
}

async fn load_job(tx: &mut Transaction<'static, Db>, job_id: &str) -> Result<Job, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT * FROM command_queue WHERE job_id = $1",
        lock!()
    ))
    .bind(job_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound)?;
    job_row(&row)
}

/// After a conditional UPDATE: the job as it now is, or why the change did not apply.
async fn changed(
    tx: &mut Transaction<'static, Db>,
    job_id: &str,
    action: &'static str,
    rows: u64,
) -> Result<Job, StoreError> {
    if rows != 1 {
        return Err(conflict(tx, job_id, action).await);
    }
    load_job(tx, job_id).await
}

/// After a conditional UPDATE matched no row: say why (missing job or wrong state).
async fn conflict(
    tx: &mut Transaction<'static, Db>,
    job_id: &str,
    action: &'static str,
) -> StoreError {
    match load_job(tx, job_id).await {
        Ok(job) => StoreError::Conflict {
            job_id: job_id.to_string(),
            actual: job.status.as_str().to_string(),
            action,
        },
        Err(e) => e,
    }
}

/// Chain and insert `events` after the current head, inside the caller's transaction.
/// Rows per multi-row INSERT (24 columns each; well under the bind-parameter limits).
const INSERT_CHUNK: usize = 40;

async fn append_in(
    tx: &mut Transaction<'static, Db>,
    events: &[NewAuditEvent],
) -> Result<Vec<AuditReceipt>, StoreError> {
    let head = sqlx::query(concat!(
        "SELECT seq, row_hash FROM audit_head WHERE id = 1",
        lock!()
    ))
    .fetch_one(&mut **tx)
    .await?;
    let records = audit::chain(
        events,
        head.try_get("seq")?,
        &head.try_get::<String, _>("row_hash")?,
    );
    // The three hashes are stored as their bytes; all of them are checked before any is
    // written. The policy is stored as its `policy_versions` id.
    let hashes = records
        .iter()
        .zip(events)
        .map(|(r, e)| {
            let opt = |hash: &Option<String>| hash.as_deref().map(audit::hash_bytes).transpose();
            Ok::<_, StoreError>([
                opt(&e.call_hash)?,
                Some(audit::hash_bytes(&r.prev_hash)?),
                Some(audit::hash_bytes(&r.row_hash)?),
            ])
        })
        .collect::<Result<Vec<_>, _>>()?;
    let policies = policy_ids(tx, events).await?;
    // Multi-row INSERTs: one statement per chunk instead of one per row.
    for ((chunk, rows), hashes) in records
        .chunks(INSERT_CHUNK)
        .zip(events.chunks(INSERT_CHUNK))
        .zip(hashes.chunks(INSERT_CHUNK))
    {
        let mut insert = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO audit_logs (id, timestamp, caller_id, tool, operation, decision_action, decision_reason, \
             risk_level, requires_approval, execution_status, execution_duration_ms, side_effects, error, approver, \
             approved_at, context, decision, seq, event_kind, job_id, policy_id, call_hash, prev_hash, row_hash) ",
        );
        insert.push_values(
            chunk.iter().zip(rows).zip(hashes),
            |mut row, ((r, e), h)| {
                row.push_bind(&r.id)
                    .push_bind(ts(e.timestamp))
                    .push_bind(&e.caller_id)
                    .push_bind(&e.tool)
                    .push_bind(&e.operation)
                    .push_bind(&e.decision_action)
                    .push_bind(&e.decision_reason)
                    .push_bind(&e.risk_level)
                    .push_bind(e.requires_approval)
                    .push_bind(&e.execution_status)
                    .push_bind(e.execution_duration_ms)
                    .push_bind(&e.side_effects)
                    .push_bind(&e.error)
                    .push_bind(&e.approver)
                    .push_bind(e.approved_at.map(ts))
                    .push_bind(&e.context)
                    .push_bind(&e.decision)
                    .push_bind(r.seq)
                    .push_bind(e.kind.as_str())
                    .push_bind(&e.job_id)
                    .push_bind(
                        e.policy_hash
                            .as_deref()
                            .and_then(|hash| policies.get(hash))
                            .copied(),
                    );
                for hash in h {
                    row.push_bind(hash.as_ref().map(|bytes| bytes.as_slice()));
                }
            },
        );
        insert.build().execute(&mut **tx).await?;
    }
    add_to_hourly(tx, events).await?;
    let mut hours: std::collections::BTreeMap<String, (i64, i64)> =
        std::collections::BTreeMap::new();
    for (r, e) in records.iter().zip(events) {
        let range = hours
            .entry(super::hour_bucket(e.timestamp))
            .or_insert((r.seq, r.seq));
        range.0 = range.0.min(r.seq);
        range.1 = range.1.max(r.seq);
    }
    for (hour, (first, last)) in hours {
        sqlx::query(
            "INSERT INTO audit_hours (hour, first_seq, last_seq) VALUES ($1, $2, $3) \
             ON CONFLICT (hour) DO UPDATE SET \
             first_seq = CASE WHEN excluded.first_seq < audit_hours.first_seq \
                 THEN excluded.first_seq ELSE audit_hours.first_seq END, \
             last_seq = CASE WHEN excluded.last_seq > audit_hours.last_seq \
                 THEN excluded.last_seq ELSE audit_hours.last_seq END",
        )
        .bind(hour)
        .bind(first)
        .bind(last)
        .execute(&mut **tx)
        .await?;
    }
    if let Some(last) = records.last() {
        sqlx::query("UPDATE audit_head SET seq = $1, row_hash = $2 WHERE id = 1")
            .bind(last.seq)
            .bind(&last.row_hash)
            .execute(&mut **tx)
            .await?;
    }
    Ok(records
        .into_iter()
        .map(|r| AuditReceipt {
            id: r.id,
            seq: r.seq,
            row_hash: r.row_hash,
        })
        .collect())
}

/// Keys per `audit_hourly` upsert (5 parameters each).
const HOURLY_CHUNK: usize = 500;

/// Count `events`' decisions into `audit_hourly` (one count per hour, action, risk and tool).
async fn add_to_hourly(
    tx: &mut Transaction<'static, Db>,
    events: &[NewAuditEvent],
) -> Result<(), StoreError> {
    let mut counts: std::collections::BTreeMap<(String, &str, &str, &str), i64> =
        std::collections::BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == EventKind::Decision) {
        let key = (
            super::hour_bucket(e.timestamp),
            e.decision_action.as_str(),
            e.risk_level.as_str(),
            e.tool.as_str(),
        );
        *counts.entry(key).or_default() += 1;
    }
    // One statement per chunk of keys, usually one for the batch (the keys are distinct, as
    // PostgreSQL's upsert requires; an import's many hours take several).
    let counts: Vec<_> = counts.into_iter().collect();
    for chunk in counts.chunks(HOURLY_CHUNK) {
        let mut upsert = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO audit_hourly (hour, decision_action, risk_level, tool, n) ",
        );
        upsert.push_values(chunk, |mut row, ((hour, action, risk, tool), n)| {
            row.push_bind(hour.as_str())
                .push_bind(*action)
                .push_bind(*risk)
                .push_bind(*tool)
                .push_bind(*n);
        });
        upsert.push(
            " ON CONFLICT (hour, decision_action, risk_level, tool) \
             DO UPDATE SET n = audit_hourly.n + excluded.n",
        );
        upsert.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Where the rows of a time range can lie in the chain: the `seq` range of the hours it
/// touches (from `audit_hours`), `None` when no row falls in those hours.
async fn seq_range<'e, E: sqlx::Executor<'e, Database = Db>>(
    executor: E,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<Option<(i64, i64)>, StoreError> {
    // Hour buckets sort as text; the hour of `to` may hold rows before it.
    let (first, last): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT MIN(first_seq), MAX(last_seq) FROM audit_hours WHERE hour >= $1 AND hour <= $2",
    )
    .bind(from.map(super::hour_bucket).unwrap_or_default())
    .bind(to.map_or_else(|| "~".to_string(), super::hour_bucket))
    .fetch_one(executor)
    .await?;
    Ok(first.zip(last))
}

/// The `seq` range a filter's time range allows: unbounded without one.
enum SeqRange {
    Any,
    Within(i64, i64),
    Nothing,
}

impl SeqRange {
    async fn of(
        pool: &sqlx::Pool<Db>,
        filter: &super::AuditFilter,
    ) -> Result<SeqRange, StoreError> {
        if filter.from.is_none() && filter.to.is_none() {
            return Ok(SeqRange::Any);
        }
        Ok(match seq_range(pool, filter.from, filter.to).await? {
            Some((first, last)) => SeqRange::Within(first, last),
            None => SeqRange::Nothing,
        })
    }
}

/// The `WHERE` clause of an audit search: every set field of `filter` narrows; its time range
/// also as the `seq` range `range` (see `audit_hours`), which the indexes can use.
fn push_audit_filter(
    query: &mut sqlx::QueryBuilder<'_, Db>,
    filter: &super::AuditFilter,
    range: &SeqRange,
) {
    query.push(" WHERE 1 = 1");
    match range {
        SeqRange::Any => {}
        SeqRange::Within(first, last) => {
            query
                .push(" AND seq >= ")
                .push_bind(*first)
                .push(" AND seq <= ")
                .push_bind(*last);
        }
        SeqRange::Nothing => {
            query.push(" AND 1 = 0");
        }
    }
    if let Some(from) = filter.from {
        query.push(" AND timestamp >= ").push_bind(ts(from));
    }
    if let Some(to) = filter.to {
        query.push(" AND timestamp < ").push_bind(ts(to));
    }
    for (column, value) in filter.equalities() {
        query
            .push(format!(" AND {column} = "))
            .push_bind(value.to_string());
    }
    if let Some(before) = filter.before_seq {
        query.push(" AND seq < ").push_bind(before);
    }
    if let Some(after) = filter.after_seq {
        query.push(" AND seq > ").push_bind(after);
    }
}

/// A new job's id (its own, or a fresh time-ordered one) and its capabilities as JSON text.
fn prepare_job(job: &NewJob) -> Result<(String, String), StoreError> {
    let job_id = job
        .job_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let caps = serde_json::to_string(&job.requested_capabilities)
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    Ok((job_id, caps))
}

/// Insert a queued job inside the caller's transaction.
async fn insert_job_in(
    tx: &mut Transaction<'static, Db>,
    job: &NewJob,
    job_id: &str,
    caps: &str,
) -> Result<Job, StoreError> {
    sqlx::query(
            "INSERT INTO command_queue (job_id, tool_name, params, requested_capabilities, target_agent_id, status, priority, \
             created_at, retry_count, max_retries, operation, target, requester, requester_reason, risk, call_hash, policy_hash, \
                          approvals_required, expires_at, approval_window_secs, decision_audit_id, submitted_by, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, 0, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $7)",
        )
        .bind(job_id)
        .bind(&job.tool_name)
        .bind(&job.params)
        .bind(caps)
        .bind(&job.target_agent_id)
        .bind(job.priority.as_str())
        .bind(ts(job.created_at))
        .bind(job.max_retries)
        .bind(&job.operation)
        .bind(&job.target)
        .bind(&job.requester)
        .bind(&job.requester_reason)
        .bind(job.risk.as_str())
        .bind(&job.call_hash)
        .bind(&job.policy_hash)
        .bind(job.approvals_required)
        .bind(ts(job.expires_at))
        .bind(job.approval_window_secs)
                .bind(&job.decision_audit_id)
        .bind(&job.submitted_by)
        .execute(&mut **tx)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(ref d) if d.is_unique_violation() => StoreError::Invalid(format!("job {job_id} already exists")),
            other => other.into(),
        })?;
    let stored = load_job(tx, job_id).await?;
    Ok::<_, StoreError>(stored)
}

/// Note a job status change that people are told about (`job_transitions`), inside the
/// transaction that makes it: the notifier reads these, so an announced change always happened
/// and a change that happened is always announced.
async fn transition(
    tx: &mut Transaction<'static, Db>,
    job_id: &str,
    status: JobStatus,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO job_transitions (job_id, status, at_ms) VALUES ($1, $2, $3)")
        .bind(job_id)
        .bind(status.as_str())
        .bind(at.timestamp_millis())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The body of an import, inside the caller's transaction.
/// Ids looked up in one statement when an import checks which rows it already has.
const IMPORT_LOOKUP_CHUNK: usize = 500;

async fn import_in(
    tx: &mut Transaction<'static, Db>,
    events: &[NewAuditEvent],
    jobs: &[ImportedJob],
) -> Result<(usize, usize), StoreError> {
    // Which of the rows are here already, asked a chunk of ids at a time.
    let mut present = std::collections::HashSet::new();
    let ids: Vec<&str> = events.iter().filter_map(|e| e.id.as_deref()).collect();
    for chunk in ids.chunks(IMPORT_LOOKUP_CHUNK) {
        let mut query = sqlx::QueryBuilder::<Db>::new("SELECT id FROM audit_logs WHERE id IN (");
        let mut list = query.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        query.push(")");
        let found: Vec<String> = query.build_query_scalar().fetch_all(&mut **tx).await?;
        present.extend(found);
    }
    let fresh: Vec<NewAuditEvent> = events
        .iter()
        .filter(|e| e.id.as_ref().is_none_or(|id| !present.contains(id)))
        .cloned()
        .collect();
    let rows = if fresh.is_empty() {
        0
    } else {
        append_in(tx, &fresh).await?.len()
    };
    let mut added = 0;
    for imported in jobs {
        let job_id = imported
            .job
            .job_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        if sqlx::query("SELECT 1 FROM command_queue WHERE job_id = $1")
            .bind(&job_id)
            .fetch_optional(&mut **tx)
            .await?
            .is_some()
        {
            continue;
        }
        let caps = serde_json::to_string(&imported.job.requested_capabilities)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        insert_job_in(tx, &imported.job, &job_id, &caps).await?;
        sqlx::query(
            "UPDATE command_queue SET status = $1, picked_at = $2, completed_at = $3, result = $4, error = $5, \
             retry_count = $6 WHERE job_id = $7",
        )
        .bind(imported.status.as_str())
        .bind(imported.picked_at.map(ts))
        .bind(imported.completed_at.map(ts))
        .bind(&imported.result)
        .bind(&imported.error)
        .bind(imported.retry_count)
        .bind(&job_id)
        .execute(&mut **tx)
        .await?;
        added += 1;
    }
    Ok((rows, added))
}

/// Commit when the work succeeded, roll back when it failed. Rolling back explicitly matters: a
/// dropped transaction is only rolled back when its connection is next used, and until then it
/// keeps its row locks (PostgreSQL) or the write lock (SQLite).
async fn finish<T>(
    tx: Transaction<'static, Db>,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    match result {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(error) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(%rollback, "rollback failed");
            }
            Err(error)
        }
    }
}

const PRIORITY_ORDER: &str =
    "CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2 ELSE 3 END";

impl Store for DialectStore {
    type Import = Import;

    async fn append_audit_and_jobs(
        &self,
        events: &[NewAuditEvent],
        jobs: &[NewJob],
    ) -> Result<(Vec<AuditReceipt>, Vec<Job>), StoreError> {
        if events.is_empty() && jobs.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut prepared = Vec::with_capacity(jobs.len());
        for job in jobs {
            prepared.push(prepare_job(job)?);
        }
        let mut tx = self.write().await?;
        let result = async {
            let receipts = append_in(&mut tx, events).await?;
            let mut stored = Vec::with_capacity(jobs.len());
            for (job, (job_id, caps)) in jobs.iter().zip(&prepared) {
                stored.push(insert_job_in(&mut tx, job, job_id, caps).await?);
                transition(&mut tx, job_id, JobStatus::Queued, job.created_at).await?;
            }
            Ok::<_, StoreError>((receipts, stored))
        }
        .await;
        finish(tx, result).await
    }

    async fn audit_page(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit_trail WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_row).collect()
    }

    async fn audit_head(&self) -> Result<(i64, String), StoreError> {
        let row = sqlx::query("SELECT seq, row_hash FROM audit_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get("seq")?, row.try_get("row_hash")?))
    }

    async fn policy_version(&self, hash: &str) -> Result<Option<super::KeptPolicy>, StoreError> {
        Ok(
            sqlx::query_as("SELECT name, source FROM policy_versions WHERE policy_hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn keep_policy(
        &self,
        hash: &str,
        name: &str,
        source: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO policy_versions (policy_hash, name, source, first_used_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (policy_hash) DO UPDATE \
             SET name = excluded.name, source = excluded.source \
             WHERE policy_versions.source IS NULL",
        )
        .bind(hash)
        .bind(name)
        .bind(source)
        .bind(ts(at))
        .execute(&mut *tx)
        .await?;
        Ok(tx.commit().await?)
    }

    async fn insert_job(&self, job: &NewJob) -> Result<Job, StoreError> {
        let (job_id, caps) = prepare_job(job)?;
        let mut tx = self.write().await?;
        let result = async {
            let stored = insert_job_in(&mut tx, job, &job_id, &caps).await?;
            transition(&mut tx, &job_id, JobStatus::Queued, job.created_at).await?;
            Ok::<_, StoreError>(stored)
        }
        .await;
        finish(tx, result).await
    }

    async fn job(&self, job_id: &str) -> Result<Job, StoreError> {
        let row = sqlx::query("SELECT * FROM command_queue WHERE job_id = $1")
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        job_row(&row)
    }

    async fn open_job_for_call(
        &self,
        requester: &str,
        submitted_by: &str,
        call_hash: &str,
        scope: OpenCallScope,
        now: DateTime<Utc>,
    ) -> Result<Option<Job>, StoreError> {
        let gateway = format!("target_agent_id LIKE '{}%'", super::MCP_GATEWAY_PREFIX);
        let which = match scope {
            OpenCallScope::Gateway => gateway,
            OpenCallScope::Pending => {
                format!("status = 'queued' AND (target_agent_id IS NULL OR NOT {gateway})")
            }
        };
        // The status list is the partial index's own condition, so both databases use it.
        let row = sqlx::query(&format!(
            "SELECT * FROM command_queue WHERE submitted_by = $1 AND requester = $2 \
             AND status IN ('queued', 'approved', 'picked', 'executing') \
             AND call_hash = $3 AND {which} \
             AND (status <> 'queued' OR expires_at IS NULL OR expires_at > $4) \
             ORDER BY created_at DESC, job_id DESC LIMIT 1"
        ))
        .bind(submitted_by)
        .bind(requester)
        .bind(call_hash)
        .bind(ts(now))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(job_row).transpose()
    }

    async fn pending_requests(
        &self,
        submitted_by: &str,
        requester: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM command_queue WHERE submitted_by = $1 AND requester = $2 \
             AND status IN ('queued', 'approved', 'picked', 'executing') AND status = 'queued' \
             AND (expires_at IS NULL OR expires_at > $3)",
        )
        .bind(submitted_by)
        .bind(requester)
        .bind(ts(now))
        .fetch_one(&self.pool)
        .await?;
        Ok(count)
    }

    async fn shadow_decisions(
        &self,
        since: DateTime<Utc>,
        limit: i64,
    ) -> Result<super::ShadowDecisions, StoreError> {
        // Both queries read the partial index `audit_logs_shadow`, whose condition they repeat;
        // the stored decision saying `would_block` leaves out rows of the same shape that
        // shadow mode did not write (an imported IT-MCP history has `allow` rows that required
        // approval).
        let counts = sqlx::query_as(
            "SELECT tool, operation, risk_level, COUNT(*) FROM audit_logs \
             WHERE decision_action = 'allow' AND requires_approval AND timestamp >= $1 \
             AND event_kind = 'decision' AND decision LIKE '%\"would_block\":true%' \
             GROUP BY tool, operation, risk_level ORDER BY 4 DESC, 1, 2, 3",
        )
        .bind(ts(since))
        .fetch_all(&self.pool)
        .await?;
        let newest = sqlx::query_as(
            "SELECT tool, operation, decision FROM audit_logs \
             WHERE decision_action = 'allow' AND requires_approval AND timestamp >= $1 \
             AND event_kind = 'decision' AND decision LIKE '%\"would_block\":true%' \
             ORDER BY timestamp DESC LIMIT $2",
        )
        .bind(ts(since))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(super::ShadowDecisions { counts, newest })
    }

    async fn create_grant(
        &self,
        grant: &super::GrantRecord,
        audit: &NewAuditEvent,
    ) -> Result<super::GrantRecord, StoreError> {
        audit::check_hashes(audit)?;
        let approvers = serde_json::to_string(&grant.approvers)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut tx = self.write().await?;
        let result = async {
            sqlx::query(
                "INSERT INTO grants (id, tool, operation, scope, subject_kind, subject, job_id, \
                 approvals_needed, approvals, approvers, created_at, expires_at, max_uses, uses) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0)",
            )
            .bind(&grant.id)
            .bind(&grant.tool)
            .bind(&grant.operation)
            .bind(&grant.scope)
            .bind(&grant.subject_kind)
            .bind(&grant.subject)
            .bind(&grant.job_id)
            .bind(grant.approvals_needed)
            .bind(i32::try_from(grant.approvers.len()).unwrap_or(i32::MAX))
            .bind(&approvers)
            .bind(ts(grant.created_at))
            .bind(ts(grant.expires_at))
            .bind(grant.max_uses)
            .execute(&mut *tx)
            .await?;
            append_in(&mut tx, std::slice::from_ref(audit)).await?;
            load_grant(&mut tx, &grant.id).await
        }
        .await;
        finish(tx, result).await
    }

    async fn add_grant_approver(
        &self,
        id: &str,
        approver: &str,
        expires_at: DateTime<Utc>,
        audit: &NewAuditEvent,
    ) -> Result<super::GrantRecord, StoreError> {
        audit::check_hashes(audit)?;
        let mut tx = self.write().await?;
        let result = async {
            let mut grant = load_grant(&mut tx, id).await?;
            if grant.revoked_at.is_some() {
                return Err(StoreError::Invalid("the grant was revoked".into()));
            }
            if grant.approvers.iter().any(|a| a == approver) {
                return Err(StoreError::Invalid(format!(
                    "{approver} already remembered this grant"
                )));
            }
            grant.approvers.push(approver.to_string());
            let approvers = serde_json::to_string(&grant.approvers)
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            let expires_at = expires_at.min(grant.expires_at);
            sqlx::query(
                "UPDATE grants SET approvers = $1, approvals = $2, expires_at = $3 WHERE id = $4",
            )
            .bind(&approvers)
            .bind(i32::try_from(grant.approvers.len()).unwrap_or(i32::MAX))
            .bind(ts(expires_at))
            .bind(id)
                .execute(&mut *tx)
                .await?;
            append_in(&mut tx, std::slice::from_ref(audit)).await?;
            load_grant(&mut tx, id).await
        }
        .await;
        finish(tx, result).await
    }

    async fn grant(&self, id: &str) -> Result<super::GrantRecord, StoreError> {
        let row = sqlx::query("SELECT * FROM grants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        grant_row(&row)
    }

    async fn grants_for(
        &self,
        tool: &str,
        operation: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<super::GrantRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM grants WHERE tool = $1 AND operation = $2 AND revoked_at IS NULL \
             AND expires_at > $3 ORDER BY created_at DESC, id DESC LIMIT 100",
        )
        .bind(tool)
        .bind(operation)
        .bind(ts(now))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(grant_row)
        .collect()
    }

    async fn grants_page(&self, limit: i64) -> Result<Vec<super::GrantRecord>, StoreError> {
        sqlx::query("SELECT * FROM grants ORDER BY created_at DESC, id DESC LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(grant_row)
            .collect()
    }

    async fn spend_grant(&self, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let result = async {
            let spent = sqlx::query(
                "UPDATE grants SET uses = uses + 1, last_used_at = $2 WHERE id = $1 \
                 AND revoked_at IS NULL AND expires_at > $2 AND approvals >= approvals_needed \
                 AND (max_uses IS NULL OR uses < max_uses)",
            )
            .bind(id)
            .bind(ts(now))
            .execute(&mut *tx)
            .await?;
            Ok(spent.rows_affected() == 1)
        }
        .await;
        finish(tx, result).await
    }

    async fn revoke_grant(
        &self,
        id: &str,
        by: &str,
        now: DateTime<Utc>,
        audit: &NewAuditEvent,
    ) -> Result<super::GrantRecord, StoreError> {
        audit::check_hashes(audit)?;
        let mut tx = self.write().await?;
        let result = async {
            let revoked = sqlx::query(
                "UPDATE grants SET revoked_at = $2, revoked_by = $3 WHERE id = $1 \
                 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(ts(now))
            .bind(by)
            .execute(&mut *tx)
            .await?;
            if revoked.rows_affected() != 1 {
                load_grant(&mut tx, id).await?;
                return Err(StoreError::Invalid("the grant was already revoked".into()));
            }
            append_in(&mut tx, std::slice::from_ref(audit)).await?;
            load_grant(&mut tx, id).await
        }
        .await;
        finish(tx, result).await
    }

    async fn unattended_gateway_jobs(
        &self,


        approved_before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT * FROM command_queue WHERE status = 'approved' AND target_agent_id LIKE '{MCP_GATEWAY_PREFIX}%' \
             AND approved_at <= $1 AND (approval_expires_at IS NULL OR approval_expires_at > $2) AND retry_count = 0 \
             ORDER BY approved_at, job_id LIMIT $3",
            MCP_GATEWAY_PREFIX = super::MCP_GATEWAY_PREFIX
        ))
        .bind(ts(approved_before))
        .bind(ts(now))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_row).collect()
    }

    async fn jobs_page(&self, filter: &JobFilter, limit: i64) -> Result<Vec<Job>, StoreError> {
        let (before_ts, before_id) = match &filter.before {
            Some((at, id)) => (Some(ts(*at)), Some(id.clone())),
            None => (None, None),
        };
        let rows = sqlx::query(
            "SELECT * FROM command_queue \
             WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR requester = $2) \
             AND ($3 IS NULL OR created_at < $3 OR (created_at = $3 AND job_id < $4)) \
             ORDER BY created_at DESC, job_id DESC LIMIT $5",
        )
        .bind(filter.status.map(JobStatus::as_str))
        .bind(&filter.requester)
        .bind(before_ts)
        .bind(before_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_row).collect()
    }

    async fn job_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT status, COUNT(*) FROM command_queue GROUP BY status ORDER BY status",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn audit_row(&self, id: &str, kind: EventKind) -> Result<Option<AuditRecord>, StoreError> {
        sqlx::query("SELECT * FROM audit_trail WHERE id = $1 AND event_kind = $2")
            .bind(id)
            .bind(kind.as_str())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(audit_row)
            .transpose()
    }

    async fn audit_for_job(&self, job_id: &str) -> Result<Vec<AuditRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM audit_trail WHERE job_id = $1 ORDER BY seq LIMIT 1000")
                .bind(job_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(audit_row).collect()
    }

    async fn audit_search(
        &self,
        filter: &super::AuditFilter,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        // The page's sequence numbers first (from an index alone where the filters allow),
        // then those rows: sorting numbers, not whole rows, keeps time-range pages cheap.
        let order = if filter.after_seq.is_some() {
            " ORDER BY seq ASC"
        } else {
            " ORDER BY seq DESC"
        };
        let range = SeqRange::of(&self.pool, filter).await?;
        let mut query = sqlx::QueryBuilder::<Db>::new(
            "SELECT * FROM audit_trail WHERE seq IN (SELECT seq FROM audit_logs",
        );
        push_audit_filter(&mut query, filter, &range);
        query
            .push(order)
            .push(" LIMIT ")
            .push_bind(limit)
            .push(")")
            .push(order);
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(audit_row).collect()
    }

    async fn audit_counts(
        &self,
        filter: &super::AuditFilter,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        let range = SeqRange::of(&self.pool, filter).await?;
        let mut query = sqlx::QueryBuilder::<Db>::new(
            "SELECT event_kind, decision_action, COUNT(*) FROM audit_logs",
        );
        push_audit_filter(&mut query, filter, &range);
        query.push(" GROUP BY event_kind, decision_action ORDER BY event_kind, decision_action");
        Ok(query.build_query_as().fetch_all(&self.pool).await?)
    }

    async fn dashboard_stats(
        &self,
        day_ago: DateTime<Utc>,
        week_ago: DateTime<Utc>,
        hour_ago: DateTime<Utc>,
    ) -> Result<super::DashboardStats, StoreError> {
        // Whole hours from the hourly counts (summed by the database: per action, risk and tool
        // for the day, per UTC day and action for the week), the partial first hour from the
        // rows themselves.
        let decisions_since = |since: DateTime<Utc>, sums: &'static str| async move {
            let next_hour = super::next_hour(since);
            let mut counts: Vec<(String, String, String, String, i64)> = sqlx::query_as(sums)
                .bind(super::hour_bucket(next_hour))
                .fetch_all(&self.pool)
                .await?;
            let (first, last) = seq_range(&self.pool, Some(since), Some(since))
                .await?
                .unwrap_or((1, 0));
            let edge: Vec<(String, String, String, i64)> = sqlx::query_as(
                "SELECT decision_action, risk_level, tool, COUNT(*) FROM audit_logs \
                 WHERE seq >= $3 AND seq <= $4 \
                 AND event_kind = 'decision' AND timestamp > $1 AND timestamp < $2 \
                 GROUP BY decision_action, risk_level, tool",
            )
            .bind(ts(since))
            .bind(ts(next_hour))
            .bind(first)
            .bind(last)
            .fetch_all(&self.pool)
            .await?;
            let first_hour = super::hour_bucket(since);
            counts.extend(
                edge.into_iter()
                    .map(|(action, risk, tool, n)| (first_hour.clone(), action, risk, tool, n)),
            );
            Ok::<_, StoreError>(counts)
        };
        let day = decisions_since(
            day_ago,
            "SELECT '' AS hour, decision_action, risk_level, tool, CAST(SUM(n) AS BIGINT) \
             FROM audit_hourly WHERE hour >= $1 GROUP BY decision_action, risk_level, tool",
        )
        .await?;
        let week = decisions_since(
            week_ago,
            "SELECT substr(hour, 1, 10) AS day, decision_action, '' AS risk, '' AS tool, \
             CAST(SUM(n) AS BIGINT) FROM audit_hourly WHERE hour >= $1 \
             GROUP BY substr(hour, 1, 10), decision_action",
        )
        .await?;
        let (by_action_risk, daily, top_tools) = super::summarise_decisions(&day, &week);
        let denial_alerts = sqlx::query_as(
            "SELECT caller_id, tool, operation, COUNT(*) FROM audit_logs \
             WHERE decision_action = 'deny' AND timestamp > $1 \
             GROUP BY caller_id, tool, operation HAVING COUNT(*) > 5 ORDER BY 4 DESC",
        )
        .bind(ts(hour_ago))
        .fetch_all(&self.pool)
        .await?;
        let recent = sqlx::query("SELECT * FROM audit_trail ORDER BY seq DESC LIMIT 10")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(audit_row)
            .collect::<Result<_, _>>()?;
        Ok(super::DashboardStats {
            by_action_risk,
            daily,
            denial_alerts,
            top_tools,
            recent,
        })
    }

    async fn pending_jobs(&self, limit: i64) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT * FROM command_queue WHERE status = 'queued' ORDER BY {PRIORITY_ORDER}, created_at LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_row).collect()
    }

    async fn votes(&self, job_id: &str) -> Result<Vec<VoteRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM approvals WHERE job_id = $1 ORDER BY id")
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let verdict: String = row.try_get("verdict")?;
                Ok(VoteRecord {
                    job_id: row.try_get("job_id")?,
                    approver: row.try_get("approver")?,
                    verdict: Verdict::parse(&verdict).ok_or_else(|| {
                        StoreError::Invalid(format!("unknown vote verdict {verdict:?}"))
                    })?,
                    reason: row.try_get("reason")?,
                    created_at: read_ts(row, "created_at")?,
                })
            })
            .collect()
    }

    // `now` is text on SQLite and a (Copy) timestamp on PostgreSQL; this code serves both.
    #[allow(clippy::clone_on_copy, clippy::needless_borrows_for_generic_args)]
    async fn vote(
        &self,
        vote: &VoteRecord,
        audit: impl super::VoteAudit,
    ) -> Result<(Job, super::VoteTally), StoreError> {
        let mut tx = self.write().await?;
        let result: Result<(Job, super::VoteTally), StoreError> = async {
            let job = load_job(&mut tx, &vote.job_id).await?;
            if job.status != JobStatus::Queued {
                return Err(StoreError::Conflict {
                    job_id: job.job_id,
                    actual: job.status.as_str().into(),
                    action: "vote",
                });
            }
            let verdict = vote.verdict.as_str();
            let now = ts(vote.created_at);
            sqlx::query("INSERT INTO approvals (job_id, approver, verdict, reason, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(&vote.job_id)
                .bind(&vote.approver)
                .bind(verdict)
                .bind(&vote.reason)
                .bind(&now)
                .execute(&mut *tx)
                .await
                .map_err(|e| match e {
                    sqlx::Error::Database(ref d) if d.is_unique_violation() => StoreError::Conflict {
                        job_id: vote.job_id.clone(),
                        actual: "already voted on by this person".into(),
                        action: "vote again",
                    },
                    other => other.into(),
                })?;
            let approvals: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM approvals WHERE job_id = $1 AND verdict = 'approve'",
            )
            .bind(&vote.job_id)
            .fetch_one(&mut *tx)
            .await?;
            let next = match vote.verdict {
                Verdict::Deny => Some(JobStatus::Denied),
                Verdict::Approve if approvals >= i64::from(job.approvals_required) => {
                    Some(JobStatus::Approved)
                }
                Verdict::Approve => None,
            };
            if let Some(next) = next {
                let (approved_at, deadline) = if next == JobStatus::Approved {
                    (
                        Some(now.clone()),
                        Some(ts(
                            vote.created_at + Duration::seconds(job.approval_window_secs),
                        )),
                    )
                } else {
                    (None, None)
                };
                let done = if next == JobStatus::Denied {
                    Some(now.clone())
                } else {
                    None
                };
                let updated = sqlx::query(
                    "UPDATE command_queue SET status = $1, approved_at = $2, approval_expires_at = $3, completed_at = $4, \
                     updated_at = $5 WHERE job_id = $6 AND status = 'queued'",
                )
                .bind(next.as_str())
                .bind(approved_at)
                .bind(deadline)
                .bind(done)
                .bind(&now)
                .bind(&vote.job_id)
                .execute(&mut *tx)
                .await?;
                if updated.rows_affected() != 1 {
                    return Err(conflict(&mut tx, &vote.job_id, "vote").await);
                }
                transition(&mut tx, &vote.job_id, next, vote.created_at).await?;
            }
            let tally = super::VoteTally {
                approvals,
                required: job.approvals_required,
                status: next.unwrap_or(JobStatus::Queued),
            };
            // The row is part of the vote's transaction: no row, no vote (fail closed).
            if let Some(event) = audit(&job, &tally) {
                audit::check_hashes(&event)?;
                append_in(&mut tx, std::slice::from_ref(&event)).await?;
            }
            let updated = load_job(&mut tx, &vote.job_id).await?;
            Ok::<_, StoreError>((updated, tally))
        }
        .await;
        finish(tx, result).await
    }

    async fn claim(
        &self,
        agent_id: &str,
        lease_secs: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<Job>, StoreError> {
        let mut tx = self.write().await?;
        let result: Result<Option<Job>, StoreError> = async {
            let candidate: Option<String> = sqlx::query_scalar(&format!(
                "SELECT job_id FROM command_queue WHERE status = 'approved' \
                 AND (target_agent_id = $1 OR (target_agent_id IS NULL AND $1 NOT LIKE 'executor:%' AND $1 NOT LIKE 'mcp:%')) \
                 AND (approval_expires_at IS NULL OR approval_expires_at > $2) \
                 ORDER BY {PRIORITY_ORDER}, created_at LIMIT 1{CLAIM_LOCK}"
            ))
            .bind(agent_id)
            .bind(ts(now))
            .fetch_optional(&mut *tx)
            .await?;
            let Some(job_id) = candidate else {
                return Ok(None);
            };
            let updated = sqlx::query(
                "UPDATE command_queue SET status = 'picked', picked_at = $1, lease_owner = $2, lease_expires_at = $3, updated_at = $1 \
                 WHERE job_id = $4 AND status = 'approved'",
            )
            .bind(ts(now))
            .bind(agent_id)
            .bind(ts(now + Duration::seconds(lease_secs)))
            .bind(&job_id)
            .execute(&mut *tx)
            .await?;
            let job = changed(&mut tx, &job_id, "claim", updated.rows_affected()).await?;
            Ok::<_, StoreError>(Some(job))
        }
        .await;
        finish(tx, result).await
    }

    async fn extend_lease(
        &self,
        job_id: &str,
        agent_id: &str,
        lease_secs: i64,
        now: DateTime<Utc>,
    ) -> Result<Job, StoreError> {
        let mut tx = self.write().await?;
        let result: Result<Job, StoreError> = async {
            let updated = sqlx::query(
                "UPDATE command_queue SET status = 'executing', lease_expires_at = $1, updated_at = $2 \
                 WHERE job_id = $3 AND lease_owner = $4 AND status IN ('picked', 'executing') \
                 AND lease_expires_at > $2",
            )
            .bind(ts(now + Duration::seconds(lease_secs)))
            .bind(ts(now))
            .bind(job_id)
            .bind(agent_id)
            .execute(&mut *tx)
            .await?;
            let job = changed(&mut tx, job_id, "extend its lease", updated.rows_affected()).await?;
            Ok::<_, StoreError>(job)
        }
        .await;
        finish(tx, result).await
    }

    async fn start(
        &self,
        job_id: &str,
        agent_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Job, StoreError> {
        let mut tx = self.write().await?;
        let result: Result<Job, StoreError> = async {
            let updated = sqlx::query(
                "UPDATE command_queue SET status = 'executing', updated_at = $1 WHERE job_id = $2 AND status = 'picked' AND lease_owner = $3",
            )
            .bind(ts(now))
            .bind(job_id)
            .bind(agent_id)
            .execute(&mut *tx)
            .await?;
            let job = changed(&mut tx, job_id, "start it", updated.rows_affected()).await?;
            Ok::<_, StoreError>(job)
        }
        .await;
        finish(tx, result).await
    }

    async fn finish(
        &self,
        job_id: &str,
        agent_id: &str,
        outcome: &JobOutcome,
        now: DateTime<Utc>,
    ) -> Result<Job, StoreError> {
        if !matches!(
            outcome.status,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Timeout
        ) {
            return Err(StoreError::Invalid(format!(
                "a job cannot finish as {}",
                outcome.status.as_str()
            )));
        }
        let mut tx = self.write().await?;
        let result: Result<Job, StoreError> = async {
            let updated = sqlx::query(
                "UPDATE command_queue SET status = $1, result = $2, error = $3, completed_at = $4, updated_at = $4, \
                 lease_expires_at = NULL WHERE job_id = $5 AND status IN ('picked', 'executing') AND lease_owner = $6",
            )
            .bind(outcome.status.as_str())
            .bind(&outcome.result)
            .bind(&outcome.error)
            .bind(ts(now))
            .bind(job_id)
            .bind(agent_id)
            .execute(&mut *tx)
            .await?;
            let job = changed(&mut tx, job_id, "finish it", updated.rows_affected()).await?;
            transition(&mut tx, job_id, job.status, now).await?;
            Ok::<_, StoreError>(job)
        }
        .await;
        finish(tx, result).await
    }

    async fn cancel(
        &self,
        job_id: &str,
        requester: &str,
        now: DateTime<Utc>,
    ) -> Result<Job, StoreError> {
        let mut tx = self.write().await?;
        let result: Result<Job, StoreError> = async {
            let updated = sqlx::query(
                "UPDATE command_queue SET status = 'cancelled', completed_at = $1, updated_at = $1 \
                 WHERE job_id = $2 AND requester = $3 AND status IN ('queued', 'approved')",
            )
            .bind(ts(now))
            .bind(job_id)
            .bind(requester)
            .execute(&mut *tx)
            .await?;
            let job = changed(&mut tx, job_id, "cancel it", updated.rows_affected()).await?;
            transition(&mut tx, job_id, job.status, now).await?;
            Ok::<_, StoreError>(job)
        }
        .await;
        finish(tx, result).await
    }

    async fn expire_due(&self, now: DateTime<Utc>) -> Result<Vec<Job>, StoreError> {
        let mut tx = self.write().await?;
        let result: Result<Vec<Job>, StoreError> = async {
            let now_text = ts(now);
            let ids: Vec<String> = sqlx::query_scalar(
                "UPDATE command_queue SET status = 'expired', completed_at = $1, updated_at = $1 \
                 WHERE (status = 'queued' AND expires_at <= $1) OR (status = 'approved' AND approval_expires_at <= $1) \
                 RETURNING job_id",
            )
            .bind(now_text)
            .fetch_all(&mut *tx)
            .await?;
            let mut jobs = Vec::with_capacity(ids.len());
            for id in ids {
                transition(&mut tx, &id, JobStatus::Expired, now).await?;
                jobs.push(load_job(&mut tx, &id).await?);
            }
            Ok::<_, StoreError>(jobs)
        }
        .await;
        finish(tx, result).await
    }

    async fn reap_leases(&self, now: DateTime<Utc>) -> Result<Vec<Job>, StoreError> {
        let mut tx = self.write().await?;
        let result: Result<Vec<Job>, StoreError> = async {
            let now_text = ts(now);
            let ids: Vec<String> = sqlx::query_scalar(
                "UPDATE command_queue SET \
                   status = CASE WHEN COALESCE(retry_count, 0) < COALESCE(max_retries, 3) THEN 'approved' ELSE 'timeout' END, \
                   retry_count = COALESCE(retry_count, 0) + 1, lease_owner = NULL, lease_expires_at = NULL, \
                   completed_at = CASE WHEN COALESCE(retry_count, 0) < COALESCE(max_retries, 3) THEN NULL ELSE $1 END, \
                   error = CASE WHEN COALESCE(retry_count, 0) < COALESCE(max_retries, 3) THEN error ELSE 'lease expired; retries exhausted' END, \
                   updated_at = $1 \
                 WHERE status IN ('picked', 'executing') AND lease_expires_at <= $1 RETURNING job_id",
            )
            .bind(now_text)
            .fetch_all(&mut *tx)
            .await?;
            let mut jobs = Vec::with_capacity(ids.len());
            for id in ids {
                let job = load_job(&mut tx, &id).await?;
                // A lease returned for a retry is no news; one that ends the job is.
                if job.status.is_final() {
                    transition(&mut tx, &id, job.status, now).await?;
                }
                jobs.push(job);
            }
            Ok::<_, StoreError>(jobs)
        }
        .await;
        finish(tx, result).await
    }

    async fn add_checkpoint(&self, cp: &audit::Checkpoint) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO audit_checkpoints (kind, seq, row_hash, created_at, mac) VALUES ($1, $2, $3, $4, $5)")
            .bind(cp.kind.as_str())
            .bind(cp.seq)
            .bind(&cp.row_hash)
            .bind(ts(cp.created_at))
                        .bind(&cp.mac)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn checkpoints(&self) -> Result<Vec<audit::Checkpoint>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit_checkpoints ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let kind: String = row.try_get("kind")?;
                Ok(audit::Checkpoint {
                    kind: audit::CheckpointKind::parse(&kind).ok_or_else(|| {
                        StoreError::Invalid(format!("unknown checkpoint kind {kind:?}"))
                    })?,
                    seq: row.try_get("seq")?,
                    row_hash: row.try_get("row_hash")?,
                    created_at: read_ts(row, "created_at")?,
                    mac: row.try_get("mac")?,
                })
            })
            .collect()
    }

    async fn first_seq_since(&self, cutoff: DateTime<Utc>) -> Result<Option<i64>, StoreError> {
        // No row at or after the cutoff lies before its hour's first row; from there, the
        // first in chain order that is.
        let Some((first, _)) = seq_range(&self.pool, Some(cutoff), None).await? else {
            return Ok(None);
        };
        Ok(sqlx::query_scalar(
            "SELECT seq FROM audit_logs WHERE seq >= $1 AND timestamp >= $2 ORDER BY seq LIMIT 1",
        )
        .bind(first)
        .bind(ts(cutoff))
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn purge_batch(&self, through: i64, batch: i64) -> Result<u64, StoreError> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "DELETE FROM audit_logs WHERE seq IN (SELECT seq FROM audit_logs WHERE seq <= $1 ORDER BY seq LIMIT $2)",
        )
                .bind(through)
        .bind(batch)
        .execute(&mut *tx)
        .await?;
        // Hours whose rows are all gone.
        sqlx::query("DELETE FROM audit_hours WHERE last_seq < (SELECT MIN(seq) FROM audit_logs)")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn begin_import(&self) -> Result<Import, StoreError> {
        Ok(Import {
            tx: self.write().await?,
        })
    }
}

/// This dialect's import transaction.
pub struct Import {
    tx: Transaction<'static, Db>,
}

impl super::ImportSession for Import {
    async fn add(
        &mut self,
        events: &[NewAuditEvent],
        jobs: &[ImportedJob],
    ) -> Result<(usize, usize), StoreError> {
        import_in(&mut self.tx, events, jobs).await
    }

    async fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit().await?)
    }

    async fn rollback(self) {
        if let Err(rollback) = self.tx.rollback().await {
            tracing::warn!(%rollback, "rollback failed");
        }
    }
}
