//! CSV and JSON Lines written straight from the SQLite file: the store reads the rows on this
//! blocking thread ([`export_rows::read_sqlite`]) and each row's borrowed text is written into
//! the output. The bytes are the ones the store path writes (`stream_rows`, which PostgreSQL
//! and in-memory SQLite use); a test holds the two equal.

use super::StreamError;
use super::{csv_row, csv_writer, ExportRow, Format, Tracker, CSV_COLUMNS};
use crate::store::export_rows::{self, ReadError};
use crate::store::AuditFilter;
use bytes::Bytes;
use std::borrow::Cow;
use std::io::Write;
use std::path::Path;
use std::time::Instant;
use tokio::sync::mpsc;

/// Bytes handed to the response body at a time.
const CHUNK: usize = 256 * 1024;

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
    fn row(&mut self, row: &ExportRow<Cow<'_, str>>) -> Result<(), StreamError> {
        match self {
            Out::Csv(writer) => writer
                .serialize(csv_row(row))
                .map_err(|e| e.to_string().into()),
            Out::Jsonl(chunks) => {
                serde_json::to_writer(&mut *chunks, row).map_err(|e| e.to_string())?;
                chunks.write_all(b"\n").map_err(|e| e.to_string().into())
            }
        }
    }

    /// The end: a CSV with no rows still has its header.
    fn finish(self, rows: u64) -> Result<(), StreamError> {
        match self {
            Out::Csv(mut writer) => {
                if rows == 0 {
                    writer
                        .write_record(CSV_COLUMNS)
                        .map_err(|e| e.to_string())?;
                }
                writer.flush().map_err(|e| e.to_string().into())
            }
            Out::Jsonl(mut chunks) => chunks.flush().map_err(|e| e.to_string().into()),
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
) -> Result<(), StreamError> {
    let started = Instant::now();
    let chunks = Chunks {
        buf: Vec::with_capacity(CHUNK + 4_096),
        tx,
    };
    let mut out = match format {
        Format::Csv => Out::Csv(Box::new(csv_writer(chunks, true))),
        _ => Out::Jsonl(chunks),
    };
    let rows = match bounds {
        Some(bounds) => export_rows::read_sqlite(
            file,
            period,
            bounds,
            |row| out.row(row).map_err(|e| ReadError(e.0)),
            |read| {
                if let Some(progress) = progress {
                    progress.advance(read);
                }
            },
        )
        .map_err(|e| StreamError(e.0))?,
        None => 0,
    };
    out.finish(rows)?;
    tracing::debug!(rows, elapsed = ?started.elapsed(), "export read from the SQLite file");
    Ok(())
}
