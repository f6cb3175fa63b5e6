//! The SIEM feed: the audit trail, in chain order, written continuously to a JSON Lines file
//! (rotated by size) or stdout, and sent as RFC 5424 syslog to a collector. Each line is the
//! compliance export's row (every column, hashes included, so the SIEM can check the chain), or
//! a CEF record with `siem_format = "cef"`.
//!
//! Each feed keeps its place in `integration_cursors` (`siem:jsonl`, `siem:syslog`: the last
//! `seq` written) and moves it only after a batch is written (and, for the file, synced). A
//! restart resumes after the last batch that was acknowledged: delivery is at-least-once, and
//! `seq` (unique, increasing) lets the SIEM drop a repeat.
//!
//! The file gets a batch in one write (each record with its newline), and a final line a crash
//! tore (no newline) is cut off when the file is opened, before anything is appended: the next
//! batch starts on a line of its own, and the torn rows come again from the cursor.

use super::IntegrationError;
use super::{cursor, set_cursor, syslog, Backoff, Lease};
use crate::config::{Config, SiemFormat, SiemStart};
use crate::services::exports::ExportRow;
use crate::store::{AnyStore, AuditAction, AuditRecord, Risk, Store};
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
    serde_json::to_string(&ExportRow::from(row))
        .expect("an export row is plain text and numbers and always serialises")
}

/// A CEF header field: `\` and `|` escaped, and line breaks (which CEF allows in extension
/// values only, and which would split the record's line) written as `\r` and `\n`.
fn cef_header(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('\r', "\\r")
        .replace('\n', "\\n")
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
    let base = match row.event.risk() {
        Some(Risk::Low) => 3,
        Some(Risk::Medium) => 5,
        Some(Risk::High) => 7,
        Some(Risk::Critical) => 9,
        _ => 5,
    };
    if row.event.action() == Some(AuditAction::Deny) {
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

/// A batch as one text: each record followed by its newline (written with one write, so a
/// record is never apart from its newline).
fn render_batch(format: SiemFormat, rows: &[AuditRecord]) -> String {
    let mut text = String::new();
    for row in rows {
        text.push_str(&render(format, row));
        text.push('\n');
    }
    text
}

/// How `lines` go to a file now `size` bytes long that rotates past `max_bytes`: one buffer per
/// file, the current file's first (empty if it must rotate before the first line), each next
/// one after a rotation. Every line is in one buffer with its newline.
fn file_buffers(lines: &[String], size: u64, max_bytes: u64) -> Vec<Vec<u8>> {
    let mut buffers = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let mut size = size;
    for line in lines {
        let len = line.len() as u64 + 1;
        let filled = size + current.len() as u64;
        if filled > 0 && filled + len > max_bytes {
            buffers.push(std::mem::take(&mut current));
            size = 0;
        }
        current.extend_from_slice(line.as_bytes());
        current.push(b'\n');
    }
    buffers.push(current);
    buffers
}

/// Bytes read at a time when looking back for the last newline.
const TAIL_BLOCK: u64 = 64 * 1024;

/// Cut a torn final line (one a crash left without its newline) back to the last newline, or
/// the file to nothing if it has none; its rows are sent again from the saved cursor. Returns
/// the file's length afterwards. A file that is empty or ends with a newline is only read (its
/// last byte).
fn cut_torn_tail(file: &mut std::fs::File) -> std::io::Result<u64> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(len);
    }
    // The last byte is not a newline: look for one before it, a block at a time.
    let mut block = vec![0u8; TAIL_BLOCK as usize];
    let mut end = len - 1;
    let mut keep = 0;
    while end > 0 {
        let start = end.saturating_sub(TAIL_BLOCK);
        let chunk = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            keep = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    file.set_len(keep)?;
    file.sync_all()?;
    Ok(keep)
}

/// A file that is renamed to `FILE.1` (and older ones to `.2` …) when it would grow past
/// `max_bytes`; `keep` rotated files are kept. Opening it (the first time, and again after a
/// rotation or an error) cuts a torn final line off before anything is appended.
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
            // Before appending: cut what a crash (or a failed write) left of a final line.
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.path)
            {
                Ok(mut existing) => {
                    let before = existing.metadata()?.len();
                    let after = cut_torn_tail(&mut existing)?;
                    if after < before {
                        tracing::warn!(
                            path = %self.path.display(),
                            removed_bytes = before - after,
                            "SIEM feed: cut a torn final line off the file; its rows are resent"
                        );
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
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
            // Reopen (re-measure, and cut what a failed write left) next time.
            self.file = None;
        }
        result
    }

    fn try_write(&mut self, lines: &[String]) -> std::io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        self.open()?;
        let buffers = file_buffers(lines, self.size, self.max_bytes);
        for (n, buffer) in buffers.into_iter().enumerate() {
            if n > 0 {
                if let Some(file) = &self.file {
                    file.sync_data()?;
                }
                self.rotate()?;
            }
            let file = self.open()?;
            // One write per file: the records and their newlines together.
            file.write_all(&buffer)?;
            self.size += buffer.len() as u64;
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
    async fn write(
        &mut self,
        format: SiemFormat,
        rows: &[AuditRecord],
    ) -> Result<(), IntegrationError> {
        match self {
            Output::Stdout => {
                use tokio::io::AsyncWriteExt;
                let text = render_batch(format, rows);
                let mut out = tokio::io::stdout();
                out.write_all(text.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                out.flush().await.map_err(|e| e.to_string().into())
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
                result.map_err(|e| e.to_string().into())
            }
            Output::Syslog { client, hostname } => {
                let pid = std::process::id();
                let messages: Vec<String> = rows
                    .iter()
                    .map(|r| syslog::message(r, hostname, pid, &render(format, r)))
                    .collect();
                client
                    .send(&messages)
                    .await
                    .map_err(|e| e.to_string().into())
            }
        }
    }
}

/// One feed: a cursor, an output and a lease.
struct Feed {
    name: &'static str,
    store: AnyStore,
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
    async fn position(&self) -> Result<i64, IntegrationError> {
        if let Some(position) = cursor(&self.store, &self.cursor_name())
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(position);
        }
        let position = match self.start {
            SiemStart::Beginning => 0,
            SiemStart::Now => self.store.audit_head().await.map_err(|e| e.to_string())?.0,
        };
        set_cursor(&self.store, &self.cursor_name(), position)
            .await
            .map_err(|e| e.to_string())?;
        Ok(position)
    }

    /// Write the next batch: how many rows went (0: caught up).
    async fn step(&mut self) -> Result<usize, IntegrationError> {
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
        set_cursor(&self.store, &self.cursor_name(), last)
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
pub async fn start(
    state: &std::sync::Arc<crate::services::Core>,
    config: &Config,
    owner: &str,
) -> Result<(), IntegrationError> {
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
            output,
            format: config.siem_format,
            start: config.siem_start,
            lease: Lease::new(&state.store, &format!("siem:{name}"), owner),
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
            AuditAction::Allow,
            "ran: a=b | c\\d\nnext",
            Risk::Critical,
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
    fn a_cef_record_stays_on_one_line_whatever_the_tool_name() {
        let mut record = row(4);
        record.event.tool = "evil\nCEF:0|forged|x\r".into();
        record.event.operation = "op\nnext".into();
        let line = cef_line(&record);
        assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
        assert!(
            line.contains("|execution allow: evil\\nCEF:0\\|forged\\|x\\r op\\nnext|"),
            "{line}"
        );
        assert!(line.contains("cs1=evil\\nCEF:0|forged|x\\r "), "{line}");
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

    /// Every line of a JSON Lines file, parsed (a line that does not parse fails the test).
    fn parsed_lines(path: &std::path::Path) -> Vec<ExportRow> {
        let text = std::fs::read_to_string(path).expect("read the feed file");
        assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
        text.lines()
            .map(|line| serde_json::from_str(line).expect("every line is one JSON record"))
            .collect()
    }

    #[test]
    fn a_torn_final_record_is_cut_back_to_the_last_newline_when_the_file_is_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        // Two whole records, then a crash between a record and its newline left half of one.
        let whole = format!("{}\n{}\n", json_line(&row(1)), json_line(&row(2)));
        let torn = json_line(&row(3));
        let torn = &torn[..torn.len() / 2];
        std::fs::write(&path, format!("{whole}{torn}")).expect("write the torn file");

        // After the restart the feed resends from its cursor (after seq 2).
        let mut file = RotatingFile::new(path.clone(), 1 << 20, 2);
        let batch: Vec<String> = (3..=4).map(|seq| json_line(&row(seq))).collect();
        file.write_lines(&batch).expect("write");

        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with(&whole), "{text}");
        assert!(!text.contains("}{"), "{text}");
        let seqs: Vec<i64> = parsed_lines(&path).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
    }

    #[test]
    fn a_torn_tail_longer_than_a_block_is_cut_to_the_last_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let whole = format!("{}\n", json_line(&row(1)));
        // A torn tail spanning several read blocks, with no newline in it.
        let torn = "x".repeat(TAIL_BLOCK as usize * 2 + 17);
        std::fs::write(&path, format!("{whole}{torn}")).expect("write the torn file");

        let mut file = RotatingFile::new(path.clone(), 1 << 30, 2);
        file.write_lines(&[json_line(&row(2))]).expect("write");
        let seqs: Vec<i64> = parsed_lines(&path).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2]);
    }

    #[test]
    fn a_file_without_any_newline_is_emptied_when_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let torn = json_line(&row(1));
        std::fs::write(&path, &torn[..torn.len() - 3]).expect("write the torn file");

        let line = json_line(&row(1));
        let mut file = RotatingFile::new(path.clone(), 1 << 20, 2);
        file.write_lines(std::slice::from_ref(&line))
            .expect("write");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            format!("{line}\n")
        );

        // The cut alone: nothing is left of a file without a newline.
        std::fs::write(&path, "{\"seq\":7").expect("write the torn file");
        let mut handle = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        assert_eq!(cut_torn_tail(&mut handle).expect("cut"), 0);
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 0);
    }

    #[test]
    fn a_whole_file_is_left_as_it_is_when_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let whole = format!("{}\n{}\n", json_line(&row(1)), json_line(&row(2)));
        std::fs::write(&path, &whole).expect("write");
        let mut handle = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        assert_eq!(cut_torn_tail(&mut handle).expect("cut"), whole.len() as u64);
        std::fs::write(&path, "").expect("empty it");
        assert_eq!(cut_torn_tail(&mut handle).expect("cut"), 0);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "");
    }

    #[test]
    fn a_batch_is_one_buffer_with_every_record_followed_by_its_newline() {
        let rows: Vec<AuditRecord> = (1..=3).map(row).collect();
        for format in [SiemFormat::Json, SiemFormat::Cef] {
            let text = render_batch(format, &rows);
            assert!(text.ends_with('\n'));
            let records: Vec<&str> = text.split_terminator('\n').collect();
            assert_eq!(records.len(), rows.len(), "{text}");
            for (record, r) in records.iter().zip(&rows) {
                assert_eq!(*record, render(format, r));
            }
        }

        // The file: one buffer for the whole batch when it fits.
        let lines: Vec<String> = rows.iter().map(json_line).collect();
        let buffers = file_buffers(&lines, 100, 1 << 20);
        assert_eq!(buffers.len(), 1);
        let expected: String = lines.iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(buffers[0], expected.into_bytes());
    }

    #[test]
    fn a_rotation_splits_a_batch_between_records_never_inside_one() {
        let lines: Vec<String> = (0..5).map(|i| format!("line-{i}-xxxxx")).collect();
        // 13-byte lines into 30-byte files, the current one already 20 bytes long: it must
        // rotate before the first line, then two lines per file.
        let buffers = file_buffers(&lines, 20, 30);
        let texts: Vec<String> = buffers
            .iter()
            .map(|b| String::from_utf8(b.clone()).expect("utf-8"))
            .collect();
        assert_eq!(
            texts,
            [
                "",
                "line-0-xxxxx\nline-1-xxxxx\n",
                "line-2-xxxxx\nline-3-xxxxx\n",
                "line-4-xxxxx\n",
            ]
        );
    }
}
