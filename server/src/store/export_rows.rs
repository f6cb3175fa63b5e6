//! Audit rows for the CSV and JSON Lines exports, in the form they are written, and the fast
//! way to read them from a SQLite file.
//!
//! sqlx's SQLite driver hands every row from its worker thread to the async side as a fresh
//! copy of each value, one message per row: a 1,000,000-row export spent about 90 % of its
//! 28 s there. [`read_sqlite`] opens a read-only connection on the caller's (blocking) thread,
//! steps the statement and hands each row's borrowed text to the caller. The rows are the ones
//! the store path gives ([`ExportRow::from`] an [`AuditRecord`]); a test holds the two equal.

use super::{audit, format_ts, parse_ts, AuditFilter, AuditRecord, EventKind, NewAuditEvent};
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OpenFlags, Row};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

message_error!(
    /// Why the rows of an export could not be read from the SQLite file.
    ReadError
);

/// Rows per statement. Each page reads its own snapshot, so a slow download never holds one
/// read transaction (and the WAL checkpoint behind it) for the whole export.
const PAGE: usize = 20_000;

/// How long a page waits for a lock (a checkpoint) before the export gives up.
const BUSY: Duration = Duration::from_secs(10);

/// The CSV columns, in order (the field names of [`ExportRow`]).
pub const CSV_COLUMNS: [&str; 24] = [
    "seq",
    "id",
    "timestamp",
    "event_kind",
    "caller_id",
    "tool",
    "operation",
    "decision_action",
    "decision_reason",
    "risk_level",
    "requires_approval",
    "execution_status",
    "execution_duration_ms",
    "side_effects",
    "error",
    "approver",
    "approved_at",
    "context",
    "decision",
    "job_id",
    "policy_hash",
    "call_hash",
    "prev_hash",
    "row_hash",
];

/// An RFC 3339 time in UTC with milliseconds, as every export writes times.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One audit row as the CSV and JSON Lines exports write it: every column, hashes included.
/// Owned text by default; the SQLite export writes rows that borrow the database's text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportRow<S = String> {
    pub seq: i64,
    pub id: S,
    pub timestamp: S,
    pub event_kind: S,
    pub caller_id: S,
    pub tool: S,
    pub operation: S,
    pub decision_action: S,
    pub decision_reason: S,
    pub risk_level: S,
    pub requires_approval: bool,
    pub execution_status: Option<S>,
    pub execution_duration_ms: Option<i64>,
    pub side_effects: Option<S>,
    pub error: Option<S>,
    pub approver: Option<S>,
    pub approved_at: Option<S>,
    pub context: S,
    pub decision: S,
    pub job_id: Option<S>,
    pub policy_hash: Option<S>,
    pub call_hash: Option<S>,
    pub prev_hash: S,
    pub row_hash: S,
}

impl From<&AuditRecord> for ExportRow {
    fn from(r: &AuditRecord) -> ExportRow {
        let e = &r.event;
        ExportRow {
            seq: r.seq,
            id: r.id.clone(),
            timestamp: rfc3339(e.timestamp),
            event_kind: e.kind.as_str().to_string(),
            caller_id: e.caller_id.clone(),
            tool: e.tool.clone(),
            operation: e.operation.clone(),
            decision_action: e.decision_action.clone(),
            decision_reason: e.decision_reason.clone(),
            risk_level: e.risk_level.clone(),
            requires_approval: e.requires_approval,
            execution_status: e.execution_status.clone(),
            execution_duration_ms: e.execution_duration_ms,
            side_effects: e.side_effects.clone(),
            error: e.error.clone(),
            approver: e.approver.clone(),
            approved_at: e.approved_at.map(rfc3339),
            context: e.context.clone(),
            decision: e.decision.clone(),
            job_id: e.job_id.clone(),
            policy_hash: e.policy_hash.clone(),
            call_hash: e.call_hash.clone(),
            prev_hash: r.prev_hash.clone(),
            row_hash: r.row_hash.clone(),
        }
    }
}

impl ExportRow {
    /// The stored row back (to recompute its hash offline).
    pub fn to_record(&self) -> Result<AuditRecord, ReadError> {
        let time = |field: &str, text: &str| {
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| format!("row {}: {field} is not an RFC 3339 time", self.seq))
        };
        let kind = EventKind::parse(&self.event_kind)
            .ok_or_else(|| format!("row {}: unknown event kind {:?}", self.seq, self.event_kind))?;
        Ok(AuditRecord {
            id: self.id.clone(),
            seq: self.seq,
            event: NewAuditEvent {
                id: Some(self.id.clone()),
                timestamp: time("timestamp", &self.timestamp)?,
                kind,
                caller_id: self.caller_id.clone(),
                tool: self.tool.clone(),
                operation: self.operation.clone(),
                decision_action: self.decision_action.clone(),
                decision_reason: self.decision_reason.clone(),
                risk_level: self.risk_level.clone(),
                requires_approval: self.requires_approval,
                execution_status: self.execution_status.clone(),
                execution_duration_ms: self.execution_duration_ms,
                side_effects: self.side_effects.clone(),
                error: self.error.clone(),
                approver: self.approver.clone(),
                approved_at: self
                    .approved_at
                    .as_deref()
                    .map(|t| time("approved_at", t))
                    .transpose()?,
                context: self.context.clone(),
                decision: self.decision.clone(),
                job_id: self.job_id.clone(),
                policy_hash: self.policy_hash.clone(),
                call_hash: self.call_hash.clone(),
            },
            prev_hash: self.prev_hash.clone(),
            row_hash: self.row_hash.clone(),
        })
    }
}

/// Read the rows of `period` (its time range and equality filters) between the sequence
/// numbers `bounds` (the period's first and last rows) from the SQLite database `file`, in
/// chain order: each row goes to `row`, and `page` hears how many rows each page held. Returns
/// how many rows were read.
pub fn read_sqlite(
    file: &Path,
    period: &AuditFilter,
    (first, last): (i64, i64),
    mut row: impl FnMut(&ExportRow<Cow<'_, str>>) -> Result<(), ReadError>,
    mut page: impl FnMut(usize),
) -> Result<u64, ReadError> {
    let db = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("opening the database to export: {e}"))?;
    db.busy_timeout(BUSY).map_err(|e| e.to_string())?;
    let (sql, mut params) = query(period, last);
    let mut statement = db.prepare(&sql).map_err(|e| e.to_string())?;
    let mut after = first - 1;
    let mut rows = 0u64;
    loop {
        params[0] = Value::Integer(after);
        let mut cursor = statement
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(|e| e.to_string())?;
        let mut read = 0usize;
        while let Some(next) = cursor.next().map_err(|e| e.to_string())? {
            let next = export_row(next)?;
            row(&next)?;
            after = next.seq;
            read += 1;
        }
        rows += read as u64;
        page(read);
        if read < PAGE {
            return Ok(rows);
        }
    }
}

/// The page query: the columns in export order, after a sequence number (the first
/// parameter, set per page), up to `last`, with the period and the filters. The time range is
/// checked per row (`+timestamp`: never through an index on time, which would sort the whole
/// period for every page); an equality filter may use its (column, seq) index.
fn query(period: &AuditFilter, last: i64) -> (String, Vec<Value>) {
    // Through `audit_trail`: a row names its policy by `policy_versions` id, the view gives
    // its hash.
    let mut sql = format!(
        "SELECT {} FROM audit_trail WHERE seq > ? AND seq <= ?",
        CSV_COLUMNS.join(", ")
    );
    let mut params = vec![Value::Integer(0), Value::Integer(last)];
    if let Some(from) = period.from {
        sql.push_str(" AND +timestamp >= ?");
        params.push(Value::Text(format_ts(from)));
    }
    if let Some(to) = period.to {
        sql.push_str(" AND +timestamp < ?");
        params.push(Value::Text(format_ts(to)));
    }
    if let Some(before) = period.before_seq {
        sql.push_str(" AND seq < ?");
        params.push(Value::Integer(before));
    }
    for (column, value) in period.equalities() {
        sql.push_str(&format!(" AND {column} = ?"));
        params.push(Value::Text(value.to_string()));
    }
    sql.push_str(&format!(" ORDER BY seq LIMIT {PAGE}"));
    (sql, params)
}

/// One row of the page query, borrowing its text.
fn export_row<'r>(row: &'r Row<'_>) -> Result<ExportRow<Cow<'r, str>>, ReadError> {
    let seq = integer(row, 0)?.ok_or("a row without a sequence number")?;
    let text = |i: usize| -> Result<Cow<'r, str>, ReadError> {
        optional_text(row, i, seq)?
            .ok_or_else(|| ReadError(format!("row {seq}: {} is NULL", CSV_COLUMNS[i])))
    };
    let opt = |i: usize| optional_text(row, i, seq);
    Ok(ExportRow {
        seq,
        id: text(1)?,
        timestamp: export_time(text(2)?, seq)?,
        event_kind: text(3)?,
        caller_id: text(4)?,
        tool: text(5)?,
        operation: text(6)?,
        decision_action: text(7)?,
        decision_reason: text(8)?,
        risk_level: text(9)?,
        requires_approval: integer(row, 10)?.is_some_and(|b| b != 0),
        execution_status: opt(11)?,
        execution_duration_ms: integer(row, 12)?,
        side_effects: opt(13)?,
        error: opt(14)?,
        approver: opt(15)?,
        approved_at: opt(16)?.map(|t| export_time(t, seq)).transpose()?,
        context: text(17)?,
        decision: text(18)?,
        job_id: opt(19)?,
        policy_hash: opt(20)?,
        call_hash: optional_hash(row, 21, seq)?,
        prev_hash: optional_hash(row, 22, seq)?
            .ok_or_else(|| format!("row {seq}: prev_hash is NULL"))?,
        row_hash: optional_hash(row, 23, seq)?
            .ok_or_else(|| format!("row {seq}: row_hash is NULL"))?,
    })
}

/// A hash column: stored as 32 bytes, exported as lowercase hex.
fn optional_hash<'r>(
    row: &'r Row<'_>,
    i: usize,
    seq: i64,
) -> Result<Option<Cow<'r, str>>, ReadError> {
    match row.get_ref(i).map_err(|e| e.to_string())? {
        ValueRef::Null => Ok(None),
        ValueRef::Blob(bytes) => audit::hash_text(bytes)
            .map(|hex| Some(Cow::Owned(hex)))
            .map_err(|e| ReadError(format!("row {seq}: {}: {e}", CSV_COLUMNS[i]))),
        _ => Err(format!("row {seq}: {} is not a stored hash", CSV_COLUMNS[i]).into()),
    }
}

fn optional_text<'r>(
    row: &'r Row<'_>,
    i: usize,
    seq: i64,
) -> Result<Option<Cow<'r, str>>, ReadError> {
    match row.get_ref(i).map_err(|e| e.to_string())? {
        ValueRef::Null => Ok(None),
        ValueRef::Text(bytes) => std::str::from_utf8(bytes)
            .map(|t| Some(Cow::Borrowed(t)))
            .map_err(|_| ReadError(format!("row {seq}: {} is not UTF-8", CSV_COLUMNS[i]))),
        _ => Err(format!("row {seq}: {} is not text", CSV_COLUMNS[i]).into()),
    }
}

fn integer(row: &Row<'_>, i: usize) -> Result<Option<i64>, ReadError> {
    match row.get_ref(i).map_err(|e| e.to_string())? {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(n) => Ok(Some(n)),
        _ => Err(format!("{} is not an integer", CSV_COLUMNS[i]).into()),
    }
}

/// A stored time as the exports write it. The store writes `YYYY-MM-DD HH:MM:SS.mmmZ`; the
/// export's RFC 3339 form differs only by the `T`. Anything else is parsed and written anew.
fn export_time(stored: Cow<'_, str>, seq: i64) -> Result<Cow<'static, str>, ReadError> {
    const SHAPE: &[u8; 24] = b"0000-00-00 00:00:00.000Z";
    let bytes = stored.as_bytes();
    let stored_form = bytes.len() == SHAPE.len()
        && bytes.iter().zip(SHAPE).all(|(b, s)| match s {
            b'0' => b.is_ascii_digit(),
            _ => b == s,
        });
    if stored_form {
        let mut text = stored.into_owned();
        text.replace_range(10..11, "T");
        return Ok(Cow::Owned(text));
    }
    parse_ts(&stored)
        .map(|t| Cow::Owned(rfc3339(t)))
        .map_err(|_| ReadError(format!("row {seq}: a time is not RFC 3339")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_times_become_rfc3339_as_the_store_path_writes_them() {
        for stored in [
            "2026-12-01 18:35:12.042Z",
            "2026-12-01T18:35:12Z",
            "2026-12-01T19:35:12.5+01:00",
        ] {
            let parsed = parse_ts(stored).expect("time");
            assert_eq!(
                export_time(Cow::Borrowed(stored), 1).expect("export"),
                rfc3339(parsed),
                "{stored}"
            );
        }
        assert!(export_time(Cow::Borrowed("yesterday"), 7)
            .expect_err("not a time")
            .0
            .contains("row 7"));
    }
}
