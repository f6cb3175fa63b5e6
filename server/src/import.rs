//! `countersign import`: bring an existing IT-MCP installation's SQLite databases
//! (`mcp_audit.db`, `mcp_command_queue.db`, the schemas of IT-MCP's policy-enforcement note)
//! into Countersign's store. Ids and timestamps are kept, every imported row is chained,
//! `queued` jobs become pending approvals, the import is audited, and it is all one
//! transaction: a malformed file imports nothing. Running it again adds nothing new.

use crate::store::{
    parse_ts, AnyStore, EventKind, ImportedJob, JobStatus, NewAuditEvent, NewJob, Store, StoreError,
};
use chrono::{DateTime, Duration, Utc};
use enforcer::PolicySet;
use serde_json::{json, Map, Value};
use sqlx::Connection;
use sqlx::{sqlite::SqliteConnectOptions, Row, SqliteConnection};
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

async fn open(path: &Path) -> Result<SqliteConnection, ImportError> {
    if !path.is_file() {
        return Err(source_err(path, "no such file"));
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false);
    SqliteConnection::connect_with(&options)
        .await
        .map_err(|e| source_err(path, format!("cannot open as SQLite: {e}")))
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
    std::fs::read(path)
        .map(|bytes| enforcer::sha256_hex(&bytes))
        .map_err(|e| source_err(path, e.to_string()))
}

async fn read_audit(path: &Path) -> Result<Vec<NewAuditEvent>, ImportError> {
    let mut conn = open(path).await?;
    let rows = sqlx::query(
        "SELECT id, timestamp, caller_id, tool, operation, decision_action, decision_reason, risk_level, requires_approval, \
         execution_status, execution_duration_ms, side_effects, error, approver, approved_at, context, decision \
         FROM audit_logs ORDER BY timestamp, id",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(|e| source_err(path, format!("not an IT-MCP audit database: {e}")))?;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let get = |column: &str| -> Result<Option<String>, ImportError> {
            row.try_get::<Option<String>, _>(column)
                .map_err(|e| source_err(path, format!("column {column}: {e}")))
        };
        let required = |column: &str| -> Result<String, ImportError> {
            get(column)?.ok_or_else(|| source_err(path, format!("column {column} is empty")))
        };
        let id = required("id")?;
        let what = |column: &str| format!("audit row {id}, {column}");
        let action = required("decision_action")?;
        if !matches!(action.as_str(), "allow" | "deny" | "require_approval") {
            return Err(source_err(
                path,
                format!(
                    "{}: {action:?} is not allow, deny or require_approval",
                    what("decision_action")
                ),
            ));
        }
        let risk = required("risk_level")?;
        if !matches!(risk.as_str(), "LOW" | "MEDIUM" | "HIGH" | "CRITICAL") {
            return Err(source_err(
                path,
                format!("{}: {risk:?} is not a risk level", what("risk_level")),
            ));
        }
        let requires_approval = row
            .try_get::<Option<bool>, _>("requires_approval")
            .map_err(|e| source_err(path, format!("{}: {e}", what("requires_approval"))))?
            .unwrap_or(action == "require_approval");
        let duration = row
            .try_get::<Option<i64>, _>("execution_duration_ms")
            .map_err(|e| source_err(path, format!("{}: {e}", what("execution_duration_ms"))))?;
        events.push(NewAuditEvent {
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
        });
    }
    // IT-MCP mixed timestamp spellings, so SQL's text order is not time order: sort here.
    events.sort_by(|a, b| (a.timestamp, &a.id).cmp(&(b.timestamp, &b.id)));
    Ok(events)
}

async fn read_queue(
    path: &Path,
    policy: &PolicySet,
    now: DateTime<Utc>,
) -> Result<Vec<ImportedJob>, ImportError> {
    let mut conn = open(path).await?;
    let rows = sqlx::query(
        "SELECT job_id, tool_name, params, requested_capabilities, target_agent_id, status, priority, created_at, picked_at, \
         completed_at, result, error, retry_count, max_retries FROM command_queue ORDER BY created_at, job_id",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(|e| source_err(path, format!("not an IT-MCP command queue database: {e}")))?;
    let mut jobs = Vec::with_capacity(rows.len());
    for row in rows {
        let get = |column: &str| -> Result<Option<String>, ImportError> {
            row.try_get::<Option<String>, _>(column)
                .map_err(|e| source_err(path, format!("column {column}: {e}")))
        };
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
        let priority = get("priority")?.unwrap_or_default();
        if !matches!(priority.as_str(), "low" | "normal" | "high" | "urgent") {
            return Err(source_err(
                path,
                format!(
                    "{}: {priority:?} is not low, normal, high or urgent",
                    what("priority")
                ),
            ));
        }
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
        jobs.push(ImportedJob {
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
                risk: risk.as_str().into(),
                call_hash: enforcer::call_hash(&request),
                policy_hash: Some(policy.hash().to_string()),
                approvals_required: i32::try_from(rule.quorum).unwrap_or(2),
                created_at,
                // A pending request imported now gets a full TTL from now.
                expires_at: now
                    + Duration::seconds(i64::try_from(rule.request_ttl_secs).unwrap_or(3_600)),
                approval_window_secs: i64::try_from(rule.approval_window_secs).unwrap_or(900),
                max_retries: row
                    .try_get::<Option<i32>, _>("max_retries")
                    .ok()
                    .flatten()
                    .unwrap_or(3),
                decision_audit_id: None,
                submitted_by: None,
            },
            status,
            picked_at: optional_ts(path, &what("picked_at"), get("picked_at")?)?,
            completed_at: optional_ts(path, &what("completed_at"), get("completed_at")?)?.or_else(
                || (status == JobStatus::Failed && status_text != "failed").then_some(now),
            ),
            result: get("result")?,
            error,
            retry_count: row
                .try_get::<Option<i32>, _>("retry_count")
                .ok()
                .flatten()
                .unwrap_or(0),
        });
    }
    Ok(jobs)
}

/// Read both files completely (any problem stops here, before anything is written), then
/// import everything, plus an audit event describing the import, in one transaction.
pub async fn import(
    store: &AnyStore,
    policy: &PolicySet,
    audit_db: Option<&Path>,
    queue_db: Option<&Path>,
    actor: &str,
) -> Result<ImportReport, ImportError> {
    let now = Utc::now();
    let mut events = match audit_db {
        Some(path) => read_audit(path).await?,
        None => Vec::new(),
    };
    let jobs = match queue_db {
        Some(path) => read_queue(path, policy, now).await?,
        None => Vec::new(),
    };
    let mut files = Map::new();
    for path in [audit_db, queue_db].into_iter().flatten() {
        files.insert(path.display().to_string(), json!(sha256_file(path)?));
    }
    let mut report = ImportReport {
        audit_rows_read: events.len(),
        jobs_read: jobs.len(),
        ..ImportReport::default()
    };
    let mut note = NewAuditEvent::new(
        EventKind::Import,
        actor,
        "countersign",
        "import",
        "allow",
        &format!(
            "imported IT-MCP data: {} audit rows and {} jobs read",
            report.audit_rows_read, report.jobs_read
        ),
        "LOW",
    );
    note.timestamp = now;
    note.context = json!({ "files_sha256": files, "audit_rows_read": report.audit_rows_read, "jobs_read": report.jobs_read }).to_string();
    events.push(note);
    let (rows, jobs_added) = store.import_batch(&events, &jobs).await?;
    report.audit_rows_added = rows.saturating_sub(1);
    report.jobs_added = jobs_added;
    Ok(report)
}
