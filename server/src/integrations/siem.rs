//! The SIEM feed: the audit trail, in chain order, written continuously to a JSON Lines file
//! (rotated by size) or stdout, and sent as RFC 5424 syslog to a collector. Each line is the
//! compliance export's row (every column, hashes included, so the SIEM can check the chain), or
//! a CEF record with `siem_format = "cef"`.
//!
//! Each feed keeps its place in `integration_cursors` (`siem:jsonl`, `siem:syslog`: the last
//! `seq` written) and moves it only after a batch is written (and, for the file, synced). A
//! restart resumes after the last batch that was acknowledged: delivery is at-least-once, and
//! `seq` (unique, increasing) lets the SIEM drop a repeat.

use super::{cursor, set_cursor, syslog, Backoff, Lease};
use crate::config::{Config, SiemFormat, SiemStart};
use crate::reports::ExportRow;
use crate::store::{AnyStore, AuditRecord, Store};
use crate::Database;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Rows per batch.
const BATCH: i64 = 500;
/// How often a caught-up feed looks for new rows.
const POLL: Duration = Duration::from_millis(500);

/// One audit row as a JSON line (the JSON Lines export's row).
pub fn json_line(row: &AuditRecord) -> String {
    serde_json::to_string(&ExportRow::from(row)).unwrap_or_default()
}

/// A CEF header field: `\` and `|` escaped.
fn cef_header(text: &str) -> String {
    text.replace('\\', "\\\\").replace('|', "\\|")
}

/// A CEF extension value: `\`, `=` and line breaks escaped.
fn cef_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace('\r', "\\r")
        .replace('\n', "\\n")
}

/// CEF severity (0-10) from the risk level; a denial is one step more severe.
fn cef_severity(row: &AuditRecord) -> u8 {
    let base = match row.event.risk_level.as_str() {
        "LOW" => 3,
        "MEDIUM" => 5,
        "HIGH" => 7,
        "CRITICAL" => 9,
        _ => 5,
    };
    if row.event.decision_action == "deny" {
        base + 1
    } else {
        base
    }
}

/// One audit row as a CEF record.
pub fn cef_line(row: &AuditRecord) -> String {
    let e = &row.event;
    let mut ext = vec![
        ("rt", e.timestamp.timestamp_millis().to_string()),
        ("externalId", row.id.clone()),
        ("suser", e.caller_id.clone()),
        ("act", e.decision_action.clone()),
        ("reason", e.decision_reason.clone()),
        ("cs1Label", "tool".into()),
        ("cs1", e.tool.clone()),
        ("cs2Label", "operation".into()),
        ("cs2", e.operation.clone()),
        ("cs3Label", "risk".into()),
        ("cs3", e.risk_level.clone()),
        ("cn1Label", "seq".into()),
        ("cn1", row.seq.to_string()),
        ("cs6Label", "rowHash".into()),
        ("cs6", row.row_hash.clone()),
    ];
    if let Some(job) = &e.job_id {
        ext.push(("cs4Label", "jobId".into()));
        ext.push(("cs4", job.clone()));
    }
    if let Some(hash) = &e.call_hash {
        ext.push(("cs5Label", "callHash".into()));
        ext.push(("cs5", hash.clone()));
    }
    if let Some(status) = &e.execution_status {
        ext.push(("outcome", status.clone()));
    }
    if let Some(approver) = &e.approver {
        ext.push(("duser", approver.clone()));
    }
    let extension = ext
        .into_iter()
        .map(|(k, v)| format!("{k}={}", cef_value(&v)))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "CEF:0|Countersign|Countersign|{}|{}|{}|{}|{extension}",
        cef_header(env!("CARGO_PKG_VERSION")),
        cef_header(&format!("{}:{}", e.kind.as_str(), e.decision_action)),
        cef_header(&format!(
            "{} {}: {} {}",
            e.kind.as_str(),
            e.decision_action,
            e.tool,
            e.operation
        )),
        cef_severity(row),
    )
}

fn render(format: SiemFormat, row: &AuditRecord) -> String {
    match format {
        SiemFormat::Json => json_line(row),
        SiemFormat::Cef => cef_line(row),
    }
}

/// A file that is renamed to `FILE.1` (and older ones to `.2` …) when it would grow past
/// `max_bytes`; `keep` rotated files are kept.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<std::fs::File>,
    size: u64,
}

impl RotatingFile {
    pub fn new(path: PathBuf, max_bytes: u64, keep: u32) -> RotatingFile {
        RotatingFile {
            path,
            max_bytes,
            keep,
            file: None,
            size: 0,
        }
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        let _ = std::fs::remove_file(self.rotated(self.keep));
        for n in (1..self.keep).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        self.size = 0;
        Ok(())
    }

    fn open(&mut self) -> std::io::Result<&mut std::fs::File> {
        if self.file.is_none() {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.size = file.metadata()?.len();
            self.file = Some(file);
        }
        self.file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("file not open"))
    }

    /// Append `lines` (each followed by a newline) and sync them to disk.
    pub fn write_lines(&mut self, lines: &[String]) -> std::io::Result<()> {
        let result = self.try_write(lines);
        if result.is_err() {
            // Reopen (and re-measure) next time.
            self.file = None;
        }
        result
    }

    fn try_write(&mut self, lines: &[String]) -> std::io::Result<()> {
        for line in lines {
            let len = line.len() as u64 + 1;
            self.open()?;
            if self.size > 0 && self.size + len > self.max_bytes {
                if let Some(file) = &self.file {
                    file.sync_data()?;
                }
                self.rotate()?;
            }
            let file = self.open()?;
            file.write_all(line.as_bytes())?;
            file.write_all(b"\n")?;
            self.size += len;
        }
        if let Some(file) = &self.file {
            file.sync_data()?;
        }
        Ok(())
    }
}

enum Output {
    Stdout,
    File(Option<RotatingFile>),
    Syslog {
        client: Box<syslog::Client>,
        hostname: String,
    },
}

impl Output {
    async fn write(&mut self, format: SiemFormat, rows: &[AuditRecord]) -> Result<(), String> {
        match self {
            Output::Stdout => {
                use tokio::io::AsyncWriteExt;
                let mut text = String::new();
                for row in rows {
                    text.push_str(&render(format, row));
                    text.push('\n');
                }
                let mut out = tokio::io::stdout();
                out.write_all(text.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                out.flush().await.map_err(|e| e.to_string())
            }
            Output::File(slot) => {
                let mut file = slot.take().ok_or("the feed's file is busy")?;
                let lines: Vec<String> = rows.iter().map(|r| render(format, r)).collect();
                let (file, result) = tokio::task::spawn_blocking(move || {
                    let result = file.write_lines(&lines);
                    (file, result)
                })
                .await
                .map_err(|e| e.to_string())?;
                *slot = Some(file);
                result.map_err(|e| e.to_string())
            }
            Output::Syslog { client, hostname } => {
                let pid = std::process::id();
                let messages: Vec<String> = rows
                    .iter()
                    .map(|r| syslog::message(r, hostname, pid, &render(format, r)))
                    .collect();
                client.send(&messages).await.map_err(|e| e.to_string())
            }
        }
    }
}

/// One feed: a cursor, an output and a lease.
struct Feed {
    name: &'static str,
    store: AnyStore,
    db: Database,
    output: Output,
    format: SiemFormat,
    start: SiemStart,
    lease: Lease,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Feed {
    fn cursor_name(&self) -> String {
        format!("siem:{}", self.name)
    }

    /// Where to continue: the saved cursor, or (first run) the start the configuration names.
    async fn position(&self) -> Result<i64, String> {
        if let Some(position) = cursor(&self.db, &self.cursor_name())
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(position);
        }
        let position = match self.start {
            SiemStart::Beginning => 0,
            SiemStart::Now => self.store.audit_head().await.map_err(|e| e.to_string())?.0,
        };
        set_cursor(&self.db, &self.cursor_name(), position)
            .await
            .map_err(|e| e.to_string())?;
        Ok(position)
    }

    /// Write the next batch: how many rows went (0: caught up).
    async fn step(&mut self) -> Result<usize, String> {
        let position = self.position().await?;
        let rows = self
            .store
            .audit_page(position, BATCH)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = rows.last().map(|r| r.seq) else {
            return Ok(0);
        };
        self.output.write(self.format, &rows).await?;
        set_cursor(&self.db, &self.cursor_name(), last)
            .await
            .map_err(|e| e.to_string())?;
        self.metrics.siem_written(self.name, rows.len());
        Ok(rows.len())
    }

    async fn run(mut self) {
        let mut backoff = Backoff::new();
        loop {
            if !self.lease.hold().await {
                tokio::time::sleep(POLL * 4).await;
                continue;
            }
            match self.step().await {
                Ok(0) => {
                    backoff.reset();
                    tokio::time::sleep(POLL).await;
                }
                Ok(_) => backoff.reset(),
                Err(error) => {
                    tracing::warn!(feed = self.name, %error, "SIEM feed: batch not written; retrying");
                    backoff.wait().await;
                }
            }
        }
    }
}

/// Start the configured feeds (each has its position before the server takes requests).
pub async fn start(state: &crate::AppState, config: &Config, owner: &str) -> Result<(), String> {
    let hostname = super::hostname();
    let mut outputs: Vec<(&'static str, Output)> = Vec::new();
    if let Some(target) = &config.siem_jsonl {
        let output = if target == "stdout" || target == "-" {
            Output::Stdout
        } else {
            Output::File(Some(RotatingFile::new(
                PathBuf::from(target),
                config.siem_jsonl_max_bytes,
                config.siem_jsonl_keep,
            )))
        };
        outputs.push(("jsonl", output));
    }
    if let Some(url) = &config.siem_syslog_url {
        let target = syslog::parse_target(url).map_err(|e| format!("siem_syslog_url: {e}"))?;
        let client = syslog::Client::new(target, config.siem_syslog_ca_file.as_deref())?;
        outputs.push((
            "syslog",
            Output::Syslog {
                client: Box::new(client),
                hostname: hostname.clone(),
            },
        ));
    }
    for (name, output) in outputs {
        tracing::info!(feed = name, "SIEM feed on");
        let feed = Feed {
            name,
            store: state.store.clone(),
            db: state.db.clone(),
            output,
            format: config.siem_format,
            start: config.siem_start,
            lease: Lease::new(&state.db, &format!("siem:{name}"), owner),
            metrics: state.metrics.clone(),
        };
        feed.position()
            .await
            .map_err(|e| format!("SIEM feed {name}: {e}"))?;
        tokio::spawn(feed.run());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EventKind, NewAuditEvent};

    fn row(seq: i64) -> AuditRecord {
        let mut event = NewAuditEvent::new(
            EventKind::Execution,
            "agent-1",
            "ssh-exec",
            "executeCommand",
            "allow",
            "ran: a=b | c\\d\nnext",
            "CRITICAL",
        );
        event.job_id = Some("job-9".into());
        event.execution_status = Some("failure".into());
        AuditRecord {
            id: format!("row-{seq}"),
            seq,
            event,
            prev_hash: "0".repeat(64),
            row_hash: "e".repeat(64),
        }
    }

    #[test]
    fn cef_records_escape_their_fields() {
        let line = cef_line(&row(3));
        assert!(line.starts_with("CEF:0|Countersign|Countersign|"), "{line}");
        assert!(line.contains("|execution:allow|execution allow: ssh-exec executeCommand|9|"));
        assert!(
            line.contains("reason=ran: a\\=b | c\\\\d\\nnext "),
            "{line}"
        );
        assert!(line.contains("cn1Label=seq cn1=3"), "{line}");
        assert!(line.contains("cs4=job-9") && line.contains("outcome=failure"));
        assert!(!line.contains('\n'));
    }

    #[test]
    fn json_lines_are_the_export_rows() {
        let line = json_line(&row(5));
        let parsed: ExportRow = serde_json::from_str(&line).expect("an export row");
        assert_eq!(parsed.seq, 5);
        let back = parsed.to_record().expect("back to a record");
        assert_eq!(back.row_hash, "e".repeat(64));
        assert_eq!(back.event.job_id.as_deref(), Some("job-9"));
    }

    #[test]
    fn the_file_rotates_by_size_and_keeps_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut file = RotatingFile::new(path.clone(), 25, 2);
        let lines: Vec<String> = (0..7).map(|i| format!("line-{i}-xxxxx")).collect();
        for chunk in lines.chunks(2) {
            file.write_lines(chunk).expect("write");
        }
        let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
        // 13-byte lines, 25-byte files: one line per file; the oldest beyond two are gone.
        assert_eq!(read(&path), "line-6-xxxxx\n");
        assert_eq!(read(&dir.path().join("audit.jsonl.1")), "line-5-xxxxx\n");
        assert_eq!(read(&dir.path().join("audit.jsonl.2")), "line-4-xxxxx\n");
        assert!(!dir.path().join("audit.jsonl.3").exists());
    }
}
