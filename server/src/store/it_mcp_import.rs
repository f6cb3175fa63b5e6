//! `countersign import`: bring an existing IT-MCP installation's SQLite databases
//! (`mcp_audit.db`, `mcp_command_queue.db`, the schemas of IT-MCP's policy-enforcement note)
//! into Countersign's store. Ids and timestamps are kept, every imported row is chained,
//! `queued` jobs become pending approvals, the import is audited, and it is all one
//! transaction: a malformed file imports nothing. Running it again adds nothing new. IT-MCP's
//! schemas are the compatibility contract, so reading them is the store's: this is the one
//! place that queries a database Countersign did not make.

use super::{
    any::AnyImport, parse_ts, AnyStore, AuditAction, EventKind, ImportSession, ImportedJob,
    JobStatus, NewAuditEvent, NewJob, Priority, Risk, Store, StoreError,
};
use chrono::{DateTime, Duration, Utc};
use enforcer::{Action, PolicySet};
use rusqlite::{Connection as Source, OpenFlags, Row as SourceRow};
use serde_json::{json, Map, Value};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {message}")]
    Source { path: String, message: String },
    #[error("{0}")]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    pub audit_rows_read: usize,
    pub audit_rows_added: usize,
    pub jobs_read: usize,
    pub jobs_added: usize,
}

fn source_err(path: &Path, message: impl Into<String>) -> ImportError {
    ImportError::Source {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// A read-only connection to one of IT-MCP's files, inside a read transaction so both passes
/// see the same rows. The files are read with rusqlite on blocking threads: sqlx's driver copies
/// every value of every row across threads, which made reading a large history the import's
/// slowest part.
fn open(path: &Path) -> Result<Source, ImportError> {
    if !path.is_file() {
        return Err(source_err(path, "no such file"));
    }
    let conn = Source::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| source_err(path, format!("cannot open as SQLite: {e}")))?;
    conn.execute_batch("BEGIN")
        .map_err(|e| source_err(path, format!("cannot read: {e}")))?;
    Ok(conn)
}

/// A column of a source row, with errors naming it.
fn column<T: rusqlite::types::FromSql>(
    path: &Path,
    row: &SourceRow<'_>,
    name: &str,
) -> Result<T, ImportError> {
    row.get::<_, T>(name)
        .map_err(|e| source_err(path, format!("column {name}: {e}")))
}

/// IT-MCP wrote timestamps from JavaScript (`2025-11-02T10:00:00.000Z`) or SQLite (`2025-11-02 10:00:00`).
fn timestamp(path: &Path, what: &str, text: &str) -> Result<DateTime<Utc>, ImportError> {
    parse_ts(text)
        .or_else(|_| parse_ts(&format!("{}Z", text.trim())))
        .map_err(|_| source_err(path, format!("{what}: {text:?} is not a timestamp")))
}

fn optional_ts(
    path: &Path,
    what: &str,
    text: Option<String>,
) -> Result<Option<DateTime<Utc>>, ImportError> {
    text.filter(|t| !t.trim().is_empty())
        .map(|t| timestamp(path, what, &t))
        .transpose()
}

fn sha256_file(path: &Path) -> Result<String, ImportError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| source_err(path, e.to_string()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| source_err(path, e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(super::audit::hex(&hasher.finalize()))
}

/// IT-MCP's audit columns, and the row's own id in its file (`cs_rowid`).
const AUDIT_COLUMNS: &str = "rowid AS cs_rowid, id, timestamp, caller_id, tool, operation, decision_action, \
     decision_reason, risk_level, requires_approval, execution_status, execution_duration_ms, side_effects, error, \
     approver, approved_at, context, decision";

/// Rows and jobs handed to the store at a time.
const BATCH: usize = 2_000;

/// One IT-MCP audit row, checked and converted.
fn audit_event(path: &Path, row: &SourceRow<'_>) -> Result<NewAuditEvent, ImportError> {
    let get = |name: &str| column::<Option<String>>(path, row, name);
    let required = |column: &str| -> Result<String, ImportError> {
        get(column)?.ok_or_else(|| source_err(path, format!("column {column} is empty")))
    };
    let id = required("id")?;
    let what = |column: &str| format!("audit row {id}, {column}");
    let action = required("decision_action")?;
    if Action::parse(&action).is_none() {
        return Err(source_err(
            path,
            format!(
                "{}: {action:?} is not allow, deny or require_approval",
                what("decision_action")
            ),
        ));
    }
    let risk = required("risk_level")?;
    if Risk::parse(&risk).is_none() {
        return Err(source_err(
            path,
            format!("{}: {risk:?} is not a risk level", what("risk_level")),
        ));
    }
    let requires_approval = row
        .get::<_, Option<bool>>("requires_approval")
        .map_err(|e| source_err(path, format!("{}: {e}", what("requires_approval"))))?
        .unwrap_or(action == Action::RequireApproval.as_str());
    let duration = row
        .get::<_, Option<i64>>("execution_duration_ms")
        .map_err(|e| source_err(path, format!("{}: {e}", what("execution_duration_ms"))))?;
    Ok(NewAuditEvent {
        id: Some(id.clone()),
        timestamp: timestamp(path, &what("timestamp"), &required("timestamp")?)?,
        kind: EventKind::Decision,
        caller_id: required("caller_id")?,
        tool: required("tool")?,
        operation: required("operation")?,
        decision_action: action,
        decision_reason: get("decision_reason")?.unwrap_or_default(),
        risk_level: risk,
        requires_approval,
        execution_status: get("execution_status")?,
        execution_duration_ms: duration,
        side_effects: get("side_effects")?,
        error: get("error")?,
        approver: get("approver")?,
        approved_at: optional_ts(path, &what("approved_at"), get("approved_at")?)?,
        context: get("context")?.unwrap_or_else(|| "{}".into()),
        decision: get("decision")?.unwrap_or_else(|| "{}".into()),
        job_id: None,
        policy_hash: None,
        call_hash: None,
    })
}

/// Where one audit row goes in time order: its time, then its row in the file (rows with the
/// same time keep the file's order). Plain numbers: a million keys are 24 MB, and nothing the
/// first pass keeps is allocated row by row between the rows' own short-lived strings.
type AuditKey = (DateTime<Utc>, i64);

/// Check every audit row without keeping it, and return the rows' keys in the order they are
/// chained. IT-MCP mixed timestamp spellings, so SQL's text order is not time order: the keys
/// are sorted here, and the rows are read again in that order when they are written.
fn plan_audit(path: &Path, conn: &Source) -> Result<Vec<AuditKey>, ImportError> {
    let not_audit =
        |e: rusqlite::Error| source_err(path, format!("not an IT-MCP audit database: {e}"));
    let mut statement = conn
        .prepare(&format!("SELECT {AUDIT_COLUMNS} FROM audit_logs"))
        .map_err(not_audit)?;
    let mut rows = statement.query([]).map_err(not_audit)?;
    // Sized once: a growing vector of a million keys would briefly hold two copies.
    let count: i64 = conn
        .query_row("SELECT COUNT(*) FROM audit_logs", [], |row| row.get(0))
        .map_err(not_audit)?;
    let mut keys = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    while let Some(row) = rows.next().map_err(not_audit)? {
        let event = audit_event(path, row)?;
        let rowid: i64 = column(path, row, "cs_rowid")?;
        keys.push((event.timestamp, rowid));
    }
    keys.sort_unstable();
    Ok(keys)
}

/// The audit rows of `keys`, in `keys`' order.
fn audit_rows(
    path: &Path,
    conn: &Source,
    keys: &[AuditKey],
) -> Result<Vec<NewAuditEvent>, ImportError> {
    let again =
        |e: rusqlite::Error| source_err(path, format!("cannot read the audit rows again: {e}"));
    let rowids: Vec<i64> = keys.iter().map(|(_, rowid)| *rowid).collect();
    let list = serde_json::to_string(&rowids).map_err(|e| source_err(path, e.to_string()))?;
    let mut statement = conn
        .prepare_cached(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_logs WHERE rowid IN (SELECT value FROM json_each(?1))"
        ))
        .map_err(again)?;
    let mut rows = statement.query([list]).map_err(again)?;
    let mut by_rowid = std::collections::HashMap::with_capacity(keys.len());
    while let Some(row) = rows.next().map_err(again)? {
        let rowid: i64 = column(path, row, "cs_rowid")?;
        by_rowid.insert(rowid, audit_event(path, row)?);
    }
    keys.iter()
        .map(|(_, rowid)| {
            by_rowid
                .remove(rowid)
                .ok_or_else(|| source_err(path, "the file changed during the import"))
        })
        .collect()
}

/// IT-MCP's command queue, in the order its jobs are imported.
const QUEUE_QUERY: &str = "SELECT job_id, tool_name, params, requested_capabilities, target_agent_id, status, priority, \
     created_at, picked_at, completed_at, result, error, retry_count, max_retries FROM command_queue \
     ORDER BY created_at, job_id";

/// One IT-MCP job, checked and converted.
fn queued_job(
    path: &Path,
    row: &SourceRow<'_>,
    policy: &PolicySet,
    now: DateTime<Utc>,
) -> Result<ImportedJob, ImportError> {
    let get = |name: &str| column::<Option<String>>(path, row, name);
    let job_id = get("job_id")?.ok_or_else(|| source_err(path, "a job has no job_id"))?;
    let what = |column: &str| format!("job {job_id}, {column}");
    let tool = get("tool_name")?
        .ok_or_else(|| source_err(path, format!("{} is empty", what("tool_name"))))?;
    let params_text = get("params")?.unwrap_or_else(|| "{}".into());
    let params: Value = serde_json::from_str(&params_text)
        .map_err(|e| source_err(path, format!("{}: not JSON: {e}", what("params"))))?;
    let caps_text = get("requested_capabilities")?.unwrap_or_else(|| "[]".into());
    let capabilities: Vec<String> = serde_json::from_str(&caps_text).map_err(|e| {
        source_err(
            path,
            format!(
                "{}: not a JSON list of strings: {e}",
                what("requested_capabilities")
            ),
        )
    })?;
    let status_text = get("status")?.unwrap_or_default();
    let priority_text = get("priority")?.unwrap_or_default();
    let Some(priority) = Priority::parse(&priority_text) else {
        return Err(source_err(
            path,
            format!(
                "{}: {priority_text:?} is not low, normal, high or urgent",
                what("priority")
            ),
        ));
    };
    // IT-MCP's in-flight states cannot be resumed here: they end as failed, never re-run.
    let (status, error_note) = match status_text.as_str() {
        "queued" => (JobStatus::Queued, None),
        "picked" | "executing" => (
            JobStatus::Failed,
            Some("was in flight in IT-MCP when imported; not re-run".to_string()),
        ),
        "completed" => (JobStatus::Completed, None),
        "failed" => (JobStatus::Failed, None),
        "timeout" => (JobStatus::Timeout, None),
        other => {
            return Err(source_err(
                path,
                format!("{}: unknown status {other:?}", what("status")),
            ))
        }
    };
    let operation = params
        .get("operation")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let args: Map<String, Value> = params.as_object().cloned().unwrap_or_default();
    let request = enforcer::Request {
        tool: tool.clone(),
        operation: operation.clone(),
        args,
        target: None,
    };
    // Risk and quorum from the active policy; an operation it does not know waits for two people.
    let risk = policy
        .operation(&tool, &operation)
        .map_or(enforcer::Risk::Critical, |op| op.risk);
    let rule = policy.approvals.for_risk(risk);
    let created_at = timestamp(
        path,
        &what("created_at"),
        &get("created_at")?.unwrap_or_default(),
    )?;
    let error = match (get("error")?, error_note) {
        (Some(e), Some(note)) => Some(format!("{e}; {note}")),
        (e, note) => e.or(note),
    };
    Ok(ImportedJob {
        job: NewJob {
            job_id: Some(job_id.clone()),
            tool_name: tool,
            operation,
            params: params_text,
            requested_capabilities: capabilities,
            target: None,
            target_agent_id: get("target_agent_id")?,
            priority,
            requester: "it-mcp (imported)".into(),
            requester_reason: None,
            risk,
            call_hash: enforcer::call_hash(&request),
            policy_hash: Some(policy.hash().to_string()),
            approvals_required: i32::try_from(rule.quorum).unwrap_or(2),
            created_at,
            // A pending request imported now gets a full TTL from now.
            expires_at: now
                + Duration::seconds(i64::try_from(rule.request_ttl_secs).unwrap_or(3_600)),
            approval_window_secs: i64::try_from(rule.approval_window_secs).unwrap_or(900),
            max_retries: row
                .get::<_, Option<i32>>("max_retries")
                .ok()
                .flatten()
                .unwrap_or(3),
            decision_audit_id: None,
            submitted_by: None,
        },
        status,
        picked_at: optional_ts(path, &what("picked_at"), get("picked_at")?)?,
        completed_at: optional_ts(path, &what("completed_at"), get("completed_at")?)?
            .or_else(|| (status == JobStatus::Failed && status_text != "failed").then_some(now)),
        result: get("result")?,
        error,
        retry_count: row
            .get::<_, Option<i32>>("retry_count")
            .ok()
            .flatten()
            .unwrap_or(0),
    })
}

/// Read the queue in import order, checked and converted, handing `each` a batch of up to
/// [`BATCH`] jobs at a time; returns how many were read. Stops at the first error, `each`'s
/// included.
fn queue_batches(
    path: &Path,
    conn: &Source,
    policy: &PolicySet,
    now: DateTime<Utc>,
    mut each: impl FnMut(Vec<ImportedJob>) -> Result<(), ImportError>,
) -> Result<usize, ImportError> {
    let not_queue =
        |e: rusqlite::Error| source_err(path, format!("not an IT-MCP command queue database: {e}"));
    let mut statement = conn.prepare(QUEUE_QUERY).map_err(not_queue)?;
    let mut rows = statement.query([]).map_err(not_queue)?;
    let (mut read, mut batch) = (0, Vec::with_capacity(BATCH));
    while let Some(row) = rows.next().map_err(not_queue)? {
        batch.push(queued_job(path, row, policy, now)?);
        read += 1;
        if batch.len() == BATCH {
            each(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))?;
        }
    }
    if !batch.is_empty() {
        each(batch)?;
    }
    Ok(read)
}

/// What the reading thread hands the writing side in the second pass.
enum Batch {
    Rows(Vec<NewAuditEvent>),
    Jobs(Vec<ImportedJob>),
}

/// Check both files in a first pass that keeps only where each audit row goes (any problem stops
/// here, before anything is written), then import everything in batches, plus an audit event
/// describing the import, in one transaction: all of it lands, or none of it.
pub async fn import(
    store: &AnyStore,
    policy: &PolicySet,
    audit_db: Option<&Path>,
    queue_db: Option<&Path>,
    actor: &str,
) -> Result<ImportReport, ImportError> {
    let now = Utc::now();
    let audit_db = audit_db.map(Path::to_path_buf);
    let queue_db = queue_db.map(Path::to_path_buf);
    let policy = std::sync::Arc::new(policy.clone());

    // First pass, on a blocking thread: check everything, keep the audit rows' places.
    let first = {
        let (audit_db, queue_db, policy) = (audit_db.clone(), queue_db.clone(), policy.clone());
        blocking(move || {
            let audit = match &audit_db {
                Some(path) => {
                    let conn = open(path)?;
                    let keys = plan_audit(path, &conn)?;
                    Some((conn, keys))
                }
                None => None,
            };
            let queue = match &queue_db {
                Some(path) => {
                    let conn = open(path)?;
                    let read = queue_batches(path, &conn, &policy, now, |_| Ok(()))?;
                    Some((conn, read))
                }
                None => None,
            };
            let mut files = Map::new();
            for path in [&audit_db, &queue_db].into_iter().flatten() {
                files.insert(path.display().to_string(), json!(sha256_file(path)?));
            }
            Ok((audit, queue, files))
        })
        .await?
    };
    let (audit, queue, files) = first;
    let report = ImportReport {
        audit_rows_read: audit.as_ref().map_or(0, |(_, keys)| keys.len()),
        jobs_read: queue.as_ref().map_or(0, |(_, read)| *read),
        ..ImportReport::default()
    };

    // Second pass: a blocking thread reads the batches in order, this task writes them.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(2);
    let reader = {
        let (audit_db, queue_db) = (audit_db.clone(), queue_db.clone());
        tokio::task::spawn_blocking(move || -> Result<(), ImportError> {
            // A send fails only when the writing side stopped (it failed): stop too.
            let gone = || source_err(Path::new("import"), "the import was stopped");
            if let (Some((conn, keys)), Some(path)) = (&audit, &audit_db) {
                for chunk in keys.chunks(BATCH) {
                    let rows = audit_rows(path, conn, chunk)?;
                    tx.blocking_send(Batch::Rows(rows)).map_err(|_| gone())?;
                }
            }
            if let (Some((conn, _)), Some(path)) = (&queue, &queue_db) {
                queue_batches(path, conn, &policy, now, |jobs| {
                    tx.blocking_send(Batch::Jobs(jobs)).map_err(|_| gone())
                })?;
            }
            Ok(())
        })
    };
    let mut session = store.begin_import().await?;
    let written = write_batches(&mut session, &mut rx).await;
    drop(rx);
    let read = reader
        .await
        .map_err(|e| source_err(Path::new("import"), format!("the reader stopped: {e}")));
    let (rows, jobs) = match (written, read) {
        (Ok(added), Ok(Ok(()))) => added,
        (Err(error), _) | (Ok(_), Ok(Err(error))) | (Ok(_), Err(error)) => {
            session.rollback().await;
            return Err(error);
        }
    };
    let mut note = NewAuditEvent::new(
        EventKind::Import,
        actor,
        "countersign",
        "import",
        AuditAction::Allow,
        &format!(
            "imported IT-MCP data: {} audit rows and {} jobs read",
            report.audit_rows_read, report.jobs_read
        ),
        Risk::Low,
    );
    note.timestamp = now;
    note.context = json!({ "files_sha256": files, "audit_rows_read": report.audit_rows_read, "jobs_read": report.jobs_read }).to_string();
    if let Err(error) = session.add(&[note], &[]).await {
        session.rollback().await;
        return Err(error.into());
    }
    session.commit().await?;
    Ok(ImportReport {
        audit_rows_added: rows,
        jobs_added: jobs,
        ..report
    })
}

/// Run `work` on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ImportError> + Send + 'static,
) -> Result<T, ImportError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| source_err(Path::new("import"), format!("the reader stopped: {e}")))?
}

/// Write what the reader sends until it is done: (rows added, jobs added).
async fn write_batches(
    session: &mut AnyImport,
    batches: &mut tokio::sync::mpsc::Receiver<Batch>,
) -> Result<(usize, usize), ImportError> {
    let (mut rows, mut jobs) = (0, 0);
    while let Some(batch) = batches.recv().await {
        match batch {
            Batch::Rows(events) => rows += session.add(&events, &[]).await?.0,
            Batch::Jobs(batch) => jobs += session.add(&[], &batch).await?.1,
        }
    }
    Ok((rows, jobs))
}
