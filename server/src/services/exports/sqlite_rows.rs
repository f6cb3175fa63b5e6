//! CSV and JSON Lines read straight from the SQLite file.
//!
//! sqlx's SQLite driver hands every row from its worker thread to the async side as a fresh
//! copy of each value, one message per row: a 1,000,000-row export spent about 90 % of its
//! 28 s there. Here a read-only connection on a blocking thread steps the statement and writes
//! each row's borrowed text into the output. The rows and the bytes are the ones the store
//! path writes (`stream_rows`, which PostgreSQL and in-memory SQLite use); a test holds the
//! two equal.

use super::{csv_row, csv_writer, rfc3339, ExportRow, Format, Tracker, CSV_COLUMNS};
use crate::store::{parse_ts, AuditFilter};
use bytes::Bytes;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OpenFlags, Row};
use std::borrow::Cow;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Rows per statement. Each page reads its own snapshot, so a slow download never holds one
/// read transaction (and the WAL checkpoint behind it) for the whole export.
const PAGE: usize = 20_000;

/// Bytes handed to the response body at a time.
const CHUNK: usize = 256 * 1024;

/// How long a page waits for a lock (a checkpoint) before the export gives up.
const BUSY: Duration = Duration::from_secs(10);

/// The response body, fed in chunks from this (blocking) thread.
struct Chunks {
    buf: Vec<u8>,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl Chunks {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK + 4_096));
        self.tx.blocking_send(Ok(Bytes::from(chunk))).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl Write for Chunks {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Where the rows go.
enum Out {
    Csv(Box<csv::Writer<Chunks>>),
    Jsonl(Chunks),
}

impl Out {
    fn row(&mut self, row: &ExportRow<Cow<'_, str>>) -> Result<(), String> {
        match self {
            Out::Csv(writer) => writer.serialize(csv_row(row)).map_err(|e| e.to_string()),
            Out::Jsonl(chunks) => {
                serde_json::to_writer(&mut *chunks, row).map_err(|e| e.to_string())?;
                chunks.write_all(b"\n").map_err(|e| e.to_string())
            }
        }
    }

    /// The end: a CSV with no rows still has its header.
    fn finish(self, rows: u64) -> Result<(), String> {
        match self {
            Out::Csv(mut writer) => {
                if rows == 0 {
                    writer
                        .write_record(CSV_COLUMNS)
                        .map_err(|e| e.to_string())?;
                }
                writer.flush().map_err(|e| e.to_string())
            }
            Out::Jsonl(mut chunks) => chunks.flush().map_err(|e| e.to_string()),
        }
    }
}

/// Write the export's rows: those of `period` (its time range and equality filters) between
/// the sequence numbers `bounds` (the period's first and last rows; `None` when it has none),
/// in chain order, as CSV or JSON Lines into `tx`.
pub fn write(
    file: &Path,
    period: &AuditFilter,
    bounds: Option<(i64, i64)>,
    format: Format,
    progress: Option<&Tracker>,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), String> {
    let started = Instant::now();
    let chunks = Chunks {
        buf: Vec::with_capacity(CHUNK + 4_096),
        tx,
    };
    let mut out = match format {
        Format::Csv => Out::Csv(Box::new(csv_writer(chunks, true))),
        _ => Out::Jsonl(chunks),
    };
    let mut rows = 0u64;
    if let Some((first, last)) = bounds {
        let db = Connection::open_with_flags(
            file,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| format!("opening the database to export: {e}"))?;
        db.busy_timeout(BUSY).map_err(|e| e.to_string())?;
        let (sql, mut params) = query(period, last);
        let mut statement = db.prepare(&sql).map_err(|e| e.to_string())?;
        let mut after = first - 1;
        loop {
            params[0] = Value::Integer(after);
            let mut page = statement
                .query(rusqlite::params_from_iter(params.iter()))
                .map_err(|e| e.to_string())?;
            let mut read = 0usize;
            while let Some(row) = page.next().map_err(|e| e.to_string())? {
                let row = export_row(row)?;
                out.row(&row)?;
                after = row.seq;
                read += 1;
            }
            rows += read as u64;
            if let Some(progress) = progress {
                progress.advance(read);
            }
            if read < PAGE {
                break;
            }
        }
    }
    out.finish(rows)?;
    tracing::debug!(rows, elapsed = ?started.elapsed(), "export read from the SQLite file");
    Ok(())
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
        params.push(Value::Text(crate::store::format_ts(from)));
    }
    if let Some(to) = period.to {
        sql.push_str(" AND +timestamp < ?");
        params.push(Value::Text(crate::store::format_ts(to)));
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
fn export_row<'r>(row: &'r Row<'_>) -> Result<ExportRow<Cow<'r, str>>, String> {
    let seq = integer(row, 0)?.ok_or("a row without a sequence number")?;
    let text = |i: usize| -> Result<Cow<'r, str>, String> {
        optional_text(row, i, seq)?.ok_or_else(|| format!("row {seq}: {} is NULL", CSV_COLUMNS[i]))
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
fn optional_hash<'r>(row: &'r Row<'_>, i: usize, seq: i64) -> Result<Option<Cow<'r, str>>, String> {
    match row.get_ref(i).map_err(|e| e.to_string())? {
        ValueRef::Null => Ok(None),
        ValueRef::Blob(bytes) => crate::store::audit::hash_text(bytes)
            .map(|hex| Some(Cow::Owned(hex)))
            .map_err(|e| format!("row {seq}: {}: {e}", CSV_COLUMNS[i])),
        _ => Err(format!(
            "row {seq}: {} is not a stored hash",
            CSV_COLUMNS[i]
        )),
    }
}

fn optional_text<'r>(row: &'r Row<'_>, i: usize, seq: i64) -> Result<Option<Cow<'r, str>>, String> {
    match row.get_ref(i).map_err(|e| e.to_string())? {
        ValueRef::Null => Ok(None),
        ValueRef::Text(bytes) => std::str::from_utf8(bytes)
            .map(|t| Some(Cow::Borrowed(t)))
            .map_err(|_| format!("row {seq}: {} is not UTF-8", CSV_COLUMNS[i])),
        _ => Err(format!("row {seq}: {} is not text", CSV_COLUMNS[i])),
    }
}

fn integer(row: &Row<'_>, i: usize) -> Result<Option<i64>, String> {
    match row.get_ref(i).map_err(|e| e.to_string())? {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(n) => Ok(Some(n)),
        _ => Err(format!("{} is not an integer", CSV_COLUMNS[i])),
    }
}

/// A stored time as the exports write it. The store writes `YYYY-MM-DD HH:MM:SS.mmmZ`; the
/// export's RFC 3339 form differs only by the `T`. Anything else is parsed and written anew.
fn export_time(stored: Cow<'_, str>, seq: i64) -> Result<Cow<'static, str>, String> {
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
        .map_err(|_| format!("row {seq}: a time is not RFC 3339"))
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
            .contains("row 7"));
    }
}
