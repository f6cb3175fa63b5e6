//! Compliance exports: the audit trail of a period, filtered, as CSV (RFC 4180), JSON Lines (the
//! complete rows with their hashes), a PDF summary mapped to a framework's controls, or a signed
//! evidence bundle an assessor verifies offline (`countersign audit verify-export`).
//!
//! Exports stream: rows are read a page at a time in chain order and written as they come, so
//! memory stays flat whatever the period. Every export is audited before its first byte (fail
//! closed: no audit row, no export), and the rows it covers end at that audit row.

pub mod bundle;
pub mod pdf;
mod sqlite_rows;
pub mod summary;

use super::{Core, ServiceError};
use crate::store::{
    AnyStore, AuditAction, AuditFilter, AuditRecord, EventKind, NewAuditEvent, Risk, Store,
    StoreError,
};
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Duration, NaiveDate, Utc};
pub use enforcer::wire::ReportQuery;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;

message_error!(
    /// Why an export stopped before its end (logged; the download fails visibly).
    StreamError
);

/// Rows read per database round trip.
pub const PAGE: i64 = 2_000;
/// The longest period one export covers.
pub const MAX_PERIOD_DAYS: i64 = 3_660;

/// What an export is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Jsonl,
    Pdf,
    Bundle,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Csv, Format::Jsonl, Format::Pdf, Format::Bundle];

    pub fn parse(text: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Pdf => "pdf",
            Format::Bundle => "bundle",
        }
    }

    fn file_extension(self) -> &'static str {
        match self {
            Format::Bundle => "tar",
            other => other.as_str(),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8; header=present",
            Format::Jsonl => "application/jsonl; charset=utf-8",
            Format::Pdf => "application/pdf",
            Format::Bundle => "application/x-tar",
        }
    }
}

/// The compliance frameworks a report maps its evidence to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Framework {
    #[serde(rename = "pci-dss")]
    PciDss,
    #[serde(rename = "soc2")]
    Soc2,
    #[serde(rename = "iso27001")]
    Iso27001,
}

/// What part of a report is evidence for a control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// Every event recorded with who, what, when and outcome (the CSV and JSONL).
    Trail,
    /// The hash chain verifies over the period.
    Chain,
    /// Decisions by action: capability checks and dangerous-argument detection at work.
    Decisions,
    /// Approvals with their approvers and time to decision.
    Approvals,
    /// Denials and their reasons; callers over the denial alert threshold.
    Denials,
    /// Executions, failures and side effects.
    Executions,
}

/// One control of a framework and the evidence that answers it.
#[derive(Debug, Clone, Copy)]
pub struct Control {
    pub id: &'static str,
    pub title: &'static str,
    pub evidence: &'static [Evidence],
}

const PCI_DSS: &[Control] = &[
    Control {
        id: "10.2.1",
        title: "Audit logs capture all individual user access and actions",
        evidence: &[Evidence::Trail, Evidence::Decisions],
    },
    Control {
        id: "10.2.1.2",
        title: "Actions taken with administrative access are logged",
        evidence: &[Evidence::Approvals, Evidence::Executions],
    },
    Control {
        id: "10.2.2",
        title: "Each entry records user, event type, time, outcome, origin and resource",
        evidence: &[Evidence::Trail],
    },
    Control {
        id: "10.3.2",
        title: "Audit logs are protected from modification",
        evidence: &[Evidence::Chain],
    },
    Control {
        id: "10.4.1",
        title: "Security events are reviewed",
        evidence: &[Evidence::Denials],
    },
    Control {
        id: "10.7.2",
        title: "Failures of critical security controls are detected and reported",
        evidence: &[Evidence::Denials, Evidence::Executions],
    },
];

const SOC2: &[Control] = &[
    Control {
        id: "CC6.1",
        title: "Logical access security over protected information assets",
        evidence: &[Evidence::Decisions, Evidence::Trail],
    },
    Control {
        id: "CC6.3",
        title: "Access is authorised, with least privilege and segregation of duties",
        evidence: &[Evidence::Approvals, Evidence::Denials],
    },
    Control {
        id: "CC7.2",
        title: "System components are monitored for anomalies and security events",
        evidence: &[Evidence::Denials, Evidence::Executions, Evidence::Chain],
    },
];

const ISO_27001: &[Control] = &[
    Control {
        id: "A.8.15",
        title: "Logging: activities and events are recorded, protected and analysed",
        evidence: &[Evidence::Trail, Evidence::Chain],
    },
    Control {
        id: "A.8.16",
        title: "Monitoring activities: anomalous behaviour is detected and acted upon",
        evidence: &[Evidence::Denials, Evidence::Executions],
    },
    Control {
        id: "A.5.18",
        title: "Access rights are provisioned, reviewed and removed per policy",
        evidence: &[Evidence::Decisions, Evidence::Approvals],
    },
];

impl Framework {
    pub const ALL: [Framework; 3] = [Framework::PciDss, Framework::Soc2, Framework::Iso27001];

    pub fn parse(text: &str) -> Option<Framework> {
        Framework::ALL.into_iter().find(|f| f.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Framework::PciDss => "pci-dss",
            Framework::Soc2 => "soc2",
            Framework::Iso27001 => "iso27001",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Framework::PciDss => "PCI DSS v4.0, requirement 10",
            Framework::Soc2 => "SOC 2 (CC6.1, CC6.3, CC7.2)",
            Framework::Iso27001 => "ISO/IEC 27001:2022 (A.8.15, A.8.16, A.5.18)",
        }
    }

    pub fn controls(self) -> &'static [Control] {
        match self {
            Framework::PciDss => PCI_DSS,
            Framework::Soc2 => SOC2,
            Framework::Iso27001 => ISO_27001,
        }
    }
}

/// An export request as it arrives (query string or form): the report's period and filters, the
/// format, and a progress token. [`ExportSpec::parse`] checks it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportQuery {
    /// `csv` (default), `jsonl`, `pdf` or `bundle`.
    pub format: Option<String>,
    #[serde(flatten)]
    pub report: ReportQuery,
    /// A token the Reports page picks so that it can show how far the download has got.
    pub progress: Option<String>,
}

/// A checked export request: what, which period, which rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportSpec {
    pub format: Format,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub framework: Option<Framework>,
    pub tool: Option<String>,
    pub caller: Option<String>,
    pub risk: Option<Risk>,
    pub action: Option<AuditAction>,
}

/// A bad export request: the field at fault and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> SpecError {
    SpecError {
        field,
        message: message.into(),
    }
}

/// `YYYY-MM-DD` (a whole UTC day: `from` its start, `to` its end) or an RFC 3339 time.
fn parse_time(
    field: &'static str,
    text: &str,
    end_of_day: bool,
) -> Result<DateTime<Utc>, SpecError> {
    let text = text.trim();
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let day = if end_of_day {
            day.succ_opt()
        } else {
            Some(day)
        };
        if let Some(start) = day.and_then(|d| d.and_hms_opt(0, 0, 0)) {
            return Ok(start.and_utc());
        }
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            bad(
                field,
                format!("{field} must be a date (YYYY-MM-DD) or an RFC 3339 time, not {text:?}"),
            )
        })
}

/// Empty text means "not given".
fn given(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl ExportSpec {
    /// Check a request. The period defaults to the 30 days before `now`; `to` is exclusive.
    pub fn parse(query: ExportQuery, now: DateTime<Utc>) -> Result<ExportSpec, SpecError> {
        let ExportQuery {
            format,
            report: query,
            ..
        } = query;
        let format = match given(format) {
            None => Format::Csv,
            Some(f) => Format::parse(&f)
                .ok_or_else(|| bad("format", "format must be csv, jsonl, pdf or bundle"))?,
        };
        let to = match given(query.to) {
            Some(t) => parse_time("to", &t, true)?,
            None => now,
        };
        let from = match given(query.from) {
            Some(f) => parse_time("from", &f, false)?,
            None => to - Duration::days(30),
        };
        if from >= to {
            return Err(bad("from", "the period must start before it ends"));
        }
        if to - from > Duration::days(MAX_PERIOD_DAYS) {
            return Err(bad(
                "from",
                format!("one export covers at most {MAX_PERIOD_DAYS} days"),
            ));
        }
        let framework =
            match given(query.framework) {
                None => None,
                Some(f) => Some(Framework::parse(&f).ok_or_else(|| {
                    bad("framework", "framework must be pci-dss, soc2 or iso27001")
                })?),
            };
        let risk = match given(query.risk) {
            None => None,
            Some(r) => Some(
                Risk::parse(&r.to_ascii_uppercase())
                    .ok_or_else(|| bad("risk", "risk must be LOW, MEDIUM, HIGH or CRITICAL"))?,
            ),
        };
        let action = match given(query.action) {
            None => None,
            Some(a) => Some(AuditAction::parse(&a).ok_or_else(|| {
                bad(
                    "action",
                    "action must be allow, deny, require_approval, approve, execute or cancel",
                )
            })?),
        };
        Ok(ExportSpec {
            format,
            from,
            to,
            framework,
            tool: given(query.tool),
            caller: given(query.caller),
            risk,
            action,
        })
    }

    /// The rows this export covers.
    pub fn filter(&self) -> AuditFilter {
        AuditFilter {
            from: Some(self.from),
            to: Some(self.to),
            caller_id: self.caller.clone(),
            tool: self.tool.clone(),
            action: self.action,
            risk: self.risk,
            ..AuditFilter::default()
        }
    }

    /// The filters as `name=value` pairs (for the manifest, the report and the audit row).
    pub fn filters(&self) -> Vec<(&'static str, String)> {
        [
            ("tool", self.tool.clone()),
            ("caller", self.caller.clone()),
            ("risk", self.risk.map(|r| r.as_str().to_string())),
            ("action", self.action.map(|a| a.as_str().to_string())),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
        .collect()
    }

    /// The download's file name, e.g. `countersign-audit-20261101-20261201.csv`.
    pub fn file_name(&self) -> String {
        format!(
            "countersign-audit-{}-{}.{}",
            self.from.format("%Y%m%d"),
            self.to.format("%Y%m%d"),
            self.format.file_extension()
        )
    }
}

pub use crate::store::export_rows::{rfc3339, ExportRow, CSV_COLUMNS};

/// Reads the rows of a filter in chain order, a page at a time.
pub struct Rows<'a, S: Store> {
    store: &'a S,
    filter: AuditFilter,
    done: bool,
}

impl<'a, S: Store> Rows<'a, S> {
    /// `filter`'s rows from the start of the chain (its own `after_seq` is the starting point
    /// when set).
    pub fn new(store: &'a S, mut filter: AuditFilter) -> Rows<'a, S> {
        filter.after_seq = Some(filter.after_seq.unwrap_or(0));
        Rows {
            store,
            filter,
            done: false,
        }
    }

    pub async fn next_page(&mut self) -> Result<Option<Vec<AuditRecord>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let page = self.store.audit_search(&self.filter, PAGE).await?;
        self.done = page.len() < usize::try_from(PAGE).unwrap_or(usize::MAX);
        match page.last() {
            None => Ok(None),
            Some(last) => {
                self.filter.after_seq = Some(last.seq);
                Ok(Some(page))
            }
        }
    }
}

/// The CSV header and one page of rows as CSV text.
pub fn csv_page(rows: &[AuditRecord], header: bool) -> Result<Vec<u8>, StreamError> {
    let mut writer = csv_writer(Vec::with_capacity(rows.len() * 512), header);
    if header && rows.is_empty() {
        writer
            .write_record(CSV_COLUMNS)
            .map_err(|e| e.to_string())?;
    }
    for row in rows {
        writer
            .serialize(csv_row(&ExportRow::from(row)))
            .map_err(|e| e.to_string())?;
    }
    writer.into_inner().map_err(|e| e.to_string().into())
}

/// A CSV cell a spreadsheet will not run as a formula: text starting with `=`, `+`, `-`, `@`,
/// a tab or a carriage return gets a leading `'` (OWASP's rule against CSV injection; the CSV
/// writer then quotes the cell as RFC 4180 requires). Other text is unchanged.
pub fn csv_cell(text: &str) -> Cow<'_, str> {
    match text.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => Cow::Owned(format!("'{text}")),
        _ => Cow::Borrowed(text),
    }
}

/// A row as the CSV exports write it: every text cell through [`csv_cell`]; the numbers
/// (`seq`, `execution_duration_ms`) and the flag as they are. The JSON Lines exports, the
/// evidence bundle's JSON Lines files and the hashes use the row itself.
pub fn csv_row<S: AsRef<str>>(row: &ExportRow<S>) -> ExportRow<Cow<'_, str>> {
    fn text<S: AsRef<str>>(value: &S) -> Cow<'_, str> {
        csv_cell(value.as_ref())
    }
    fn optional<S: AsRef<str>>(value: Option<&S>) -> Option<Cow<'_, str>> {
        value.map(|v| csv_cell(v.as_ref()))
    }
    ExportRow {
        seq: row.seq,
        id: text(&row.id),
        timestamp: text(&row.timestamp),
        event_kind: text(&row.event_kind),
        caller_id: text(&row.caller_id),
        tool: text(&row.tool),
        operation: text(&row.operation),
        decision_action: text(&row.decision_action),
        decision_reason: text(&row.decision_reason),
        risk_level: text(&row.risk_level),
        requires_approval: row.requires_approval,
        execution_status: optional(row.execution_status.as_ref()),
        execution_duration_ms: row.execution_duration_ms,
        side_effects: optional(row.side_effects.as_ref()),
        error: optional(row.error.as_ref()),
        approver: optional(row.approver.as_ref()),
        approved_at: optional(row.approved_at.as_ref()),
        context: text(&row.context),
        decision: text(&row.decision),
        job_id: optional(row.job_id.as_ref()),
        policy_hash: optional(row.policy_hash.as_ref()),
        call_hash: optional(row.call_hash.as_ref()),
        prev_hash: text(&row.prev_hash),
        row_hash: text(&row.row_hash),
    }
}

/// The exports' CSV dialect: RFC 4180 with CRLF line ends; the header from [`ExportRow`]'s
/// field names when `header` is set.
fn csv_writer<W: std::io::Write>(out: W, header: bool) -> csv::Writer<W> {
    csv::WriterBuilder::new()
        .has_headers(header)
        .terminator(csv::Terminator::CRLF)
        .from_writer(out)
}

/// One page of rows as JSON Lines.
pub fn jsonl_page(rows: &[AuditRecord]) -> Result<Vec<u8>, StreamError> {
    let mut out = Vec::with_capacity(rows.len() * 768);
    for row in rows {
        serde_json::to_writer(&mut out, &ExportRow::from(row)).map_err(|e| e.to_string())?;
        out.push(b'\n');
    }
    Ok(out)
}

/// Who asked for an export.
#[derive(Debug, Clone)]
pub struct Requester {
    pub id: String,
    pub roles: Vec<String>,
}

impl Requester {
    /// Exports are for auditors and admins.
    pub fn may_export(&self) -> bool {
        self.roles.iter().any(|r| r == "auditor" || r == "admin")
    }
}

/// The preview of an export: how many rows match, by kind and action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    pub total: i64,
    pub by_kind: Vec<(String, i64)>,
    pub by_action: Vec<(String, i64)>,
}

/// Count what an export of `spec` would hold.
pub async fn preview<S: Store>(store: &S, spec: &ExportSpec) -> Result<Preview, StoreError> {
    let counts = store.audit_counts(&spec.filter()).await?;
    let mut by_kind = std::collections::BTreeMap::<String, i64>::new();
    let mut by_action = std::collections::BTreeMap::<String, i64>::new();
    for (kind, action, n) in counts {
        *by_kind.entry(kind).or_default() += n;
        *by_action.entry(action).or_default() += n;
    }
    Ok(Preview {
        total: by_kind.values().sum(),
        by_kind: by_kind.into_iter().collect(),
        by_action: by_action.into_iter().collect(),
    })
}

pub use crate::config::values::signing_key;

/// A public key as the API serves it and the verifier takes it: base64 of its 32 bytes.
pub fn public_key_text(key: &ed25519_dalek::VerifyingKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
}

/// An export under way, for an edge to send: its type, file name, and the chunks as they come
/// (an error chunk when it stopped before its end, so the download fails visibly).
pub struct Download {
    pub content_type: &'static str,
    pub file_name: String,
    pub chunks: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

/// Check an export request as it arrived (API or portal) and start it.
pub async fn export_query(
    core: &Core,
    who: &Requester,
    mut query: ExportQuery,
) -> Result<Download, ServiceError> {
    let progress = progress_token(query.progress.take())?;
    let spec = ExportSpec::parse(query, Utc::now())
        .map_err(|e| ServiceError::invalid("invalid_export", e.field, e.message))?;
    export(core, who, spec, progress).await
}

/// Audit the export (fail closed), then stream it. The rows end at the export's own audit row.
pub async fn export(
    core: &Core,
    who: &Requester,
    spec: ExportSpec,
    progress: Option<String>,
) -> Result<Download, ServiceError> {
    if !who.may_export() {
        return Err(ServiceError::forbidden(
            "forbidden",
            "exports are for auditors and admins",
        ));
    }
    let key = match spec.format {
        Format::Bundle => Some(core.export_key.clone().ok_or_else(|| {
            ServiceError::NotConfigured {
                message: "evidence bundles need a signing key (COUNTERSIGN_EXPORT_SIGNING_KEY)"
                    .to_string(),
            }
        })?),
        _ => None,
    };
    let filters: serde_json::Map<String, serde_json::Value> = spec
        .filters()
        .into_iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
        .collect();
    let mut event = NewAuditEvent::new(
        EventKind::Export,
        &who.id,
        "countersign",
        "export",
        AuditAction::Allow,
        &format!(
            "exported the audit trail as {} for {} to {}",
            spec.format.as_str(),
            rfc3339(spec.from),
            rfc3339(spec.to)
        ),
        Risk::Low,
    );
    event.context = serde_json::json!({
        "format": spec.format.as_str(),
        "from": rfc3339(spec.from),
        "to": rfc3339(spec.to),
        "framework": spec.framework.map(Framework::as_str),
        "filters": filters,
    })
    .to_string();
    let receipt = core
        .audit
        .append(event)
        .await
        .map_err(|e| ServiceError::unavailable("the export could not be audited", &e))?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let store = core.store.clone();
    let policy_hash = core.policy.hash().to_string();
    let file_name = spec.file_name();
    let format = spec.format;
    let job = Job {
        spec,
        last_seq: receipt.seq,
        generated_by: who.id.clone(),
        generated_at: Utc::now(),
        policy_hash,
        progress: progress.map(|token| core.export_progress.start(&who.id, &token)),
    };
    tokio::spawn(async move {
        let result = match format {
            Format::Csv | Format::Jsonl => stream_table(&store, &job, &tx).await,
            Format::Pdf => match summary::summarise(&store, &job).await {
                Ok(summary) => send(&tx, pdf::render(&summary)).await,
                Err(e) => Err(e),
            },
            Format::Bundle => match key {
                Some(key) => bundle::stream(&store, &job, &key, &tx).await,
                None => Err("no signing key".to_string().into()),
            },
        };
        if let Some(t) = &job.progress {
            t.end(result.is_ok());
        }
        if let Err(error) = result {
            tracing::error!(%error, "an export stopped before its end");
            // The download fails visibly instead of ending as if it were complete.
            let _ = tx
                .send(Err(std::io::Error::other("the export stopped")))
                .await;
        }
    });
    Ok(Download {
        content_type: format.content_type(),
        file_name,
        chunks: rx,
    })
}

/// The key that verifies evidence bundles: `{algorithm, public_key, fingerprint}`.
pub fn public_key(core: &Core) -> Result<serde_json::Value, ServiceError> {
    let key = core
        .export_key
        .as_ref()
        .ok_or_else(|| ServiceError::NotConfigured {
            message: "no bundle-signing key is configured (COUNTERSIGN_EXPORT_SIGNING_KEY)"
                .to_string(),
        })?;
    let public = key.verifying_key();
    Ok(serde_json::json!({
        "algorithm": "Ed25519",
        "public_key": public_key_text(&public),
        "fingerprint": crate::store::audit::hex(&<sha2::Sha256 as sha2::Digest>::digest(public.as_bytes())),
    }))
}

/// How far one export has got: rows read, and whether it ended (well or not).
#[derive(Debug, Clone)]
pub struct Tracker {
    rows: Arc<AtomicU64>,
    state: Arc<AtomicU8>,
    started: Instant,
}

// `state`: 0 while running, then one of these.
const DONE: u8 = 1;
const FAILED: u8 = 2;

impl Tracker {
    fn new() -> Tracker {
        Tracker {
            rows: Arc::default(),
            state: Arc::default(),
            started: Instant::now(),
        }
    }

    pub fn advance(&self, rows: usize) {
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
    }

    fn end(&self, ok: bool) {
        self.state
            .store(if ok { DONE } else { FAILED }, Ordering::Relaxed);
    }
}

/// A download's progress as the Reports page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressView {
    pub rows: u64,
    pub done: bool,
    pub failed: bool,
}

/// The exports under way on this replica, by (person, token the page chose); forgotten after
/// an hour.
#[derive(Debug, Default)]
pub struct ProgressBoard {
    inner: Mutex<HashMap<(String, String), Tracker>>,
}

impl ProgressBoard {
    fn start(&self, owner: &str, token: &str) -> Tracker {
        let tracker = Tracker::new();
        if let Ok(mut map) = self.inner.lock() {
            map.retain(|_, t| t.started.elapsed().as_secs() < 3_600);
            if map.len() < 10_000 {
                map.insert((owner.to_string(), token.to_string()), tracker.clone());
            }
        }
        tracker
    }

    /// The progress of `owner`'s export `token`, if it is known here.
    pub fn get(&self, owner: &str, token: &str) -> Option<ProgressView> {
        let map = self.inner.lock().ok()?;
        let t = map.get(&(owner.to_string(), token.to_string()))?;
        let state = t.state.load(Ordering::Relaxed);
        Some(ProgressView {
            rows: t.rows.load(Ordering::Relaxed),
            done: state == DONE,
            failed: state == FAILED,
        })
    }
}

/// A progress token: 8 to 64 letters, digits or dashes.
fn progress_token(token: Option<String>) -> Result<Option<String>, ServiceError> {
    match given(token) {
        None => Ok(None),
        Some(t)
            if (8..=64).contains(&t.len())
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
        {
            Ok(Some(t))
        }
        Some(_) => Err(ServiceError::invalid(
            "invalid_export",
            "progress",
            "progress must be 8 to 64 letters, digits or dashes",
        )),
    }
}

/// An export under way: what was asked, by whom, and the last row it may include.
#[derive(Debug, Clone)]
pub struct Job {
    pub spec: ExportSpec,
    pub last_seq: i64,
    pub generated_by: String,
    pub generated_at: DateTime<Utc>,
    pub policy_hash: String,
    pub progress: Option<Tracker>,
}

impl Job {
    /// Count rows read (for the page's progress).
    pub fn advance(&self, rows: usize) {
        if let Some(t) = &self.progress {
            t.advance(rows);
        }
    }

    /// The filtered rows of the export, up to its own audit row.
    pub fn filter(&self) -> AuditFilter {
        AuditFilter {
            before_seq: Some(self.last_seq + 1),
            ..self.spec.filter()
        }
    }
}

async fn send(
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    bytes: Vec<u8>,
) -> Result<(), StreamError> {
    tx.send(Ok(Bytes::from(bytes)))
        .await
        .map_err(|_| "the client went away".to_string().into())
}

/// CSV or JSON Lines: straight from the file on SQLite, through the store otherwise.
async fn stream_table(
    store: &AnyStore,
    job: &Job,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), StreamError> {
    // The period's first and last rows once (its hours' `seq` range from `audit_hours`, then
    // the rows at either end); then pages by sequence number (the primary key, or a filter's
    // (column, seq) index) with the period checked per row.
    let bounds = summary::segment_bounds(store, job)
        .await
        .map_err(|e| e.to_string())?;
    match store.sqlite_file().await.map_err(|e| e.to_string())? {
        Some(file) => {
            let (period, format) = (job.filter(), job.spec.format);
            let (progress, tx) = (job.progress.clone(), tx.clone());
            tokio::task::spawn_blocking(move || {
                sqlite_rows::write(&file, &period, bounds, format, progress.as_ref(), tx)
            })
            .await
            .map_err(|e| e.to_string())?
        }
        None => stream_rows(store, job, bounds, tx).await,
    }
}

/// CSV or JSON Lines through the store, a page at a time.
async fn stream_rows<S: Store>(
    store: &S,
    job: &Job,
    bounds: Option<(i64, i64)>,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), StreamError> {
    let period = job.filter();
    let mut rows = match bounds {
        Some((first, last)) => Some(Rows::new(
            store,
            AuditFilter {
                from: None,
                to: None,
                after_seq: Some(first - 1),
                before_seq: Some(last + 1),
                ..period.clone()
            },
        )),
        None => None,
    };
    let mut first = true;
    let (mut reading, mut writing, mut sending) = (
        std::time::Duration::ZERO,
        std::time::Duration::ZERO,
        std::time::Duration::ZERO,
    );
    loop {
        let started = Instant::now();
        let page = match rows.as_mut() {
            Some(rows) => rows.next_page().await.map_err(|e| e.to_string())?,
            None => None,
        };
        reading += started.elapsed();
        let Some(page) = page else {
            if first {
                send(tx, csv_or_nothing(job.spec.format)?).await?;
            }
            tracing::debug!(?reading, ?writing, ?sending, "export finished");
            return Ok(());
        };
        let started = Instant::now();
        job.advance(page.len());
        let page: Vec<AuditRecord> = page.into_iter().filter(|r| period.matches(r)).collect();
        let bytes = match job.spec.format {
            Format::Csv => csv_page(&page, first)?,
            _ => jsonl_page(&page)?,
        };
        first = false;
        writing += started.elapsed();
        let started = Instant::now();
        if !bytes.is_empty() {
            send(tx, bytes).await?;
        }
        sending += started.elapsed();
    }
}

/// What an export with no rows holds: the CSV header, or nothing.
fn csv_or_nothing(format: Format) -> Result<Vec<u8>, StreamError> {
    match format {
        Format::Csv => csv_page(&[], true),
        _ => Ok(Vec::new()),
    }
}

/// A new bundle-signing key: (private seed, public key), both base64.
pub fn generate_key() -> Result<(String, String), StreamError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| format!("no randomness available: {e}"))?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    Ok((
        base64::engine::general_purpose::STANDARD.encode(seed),
        public_key_text(&key.verifying_key()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One record written by the exports' CSV writer, as text (without its CRLF).
    fn csv_line(cells: &[&str]) -> String {
        let mut writer = csv_writer(Vec::new(), false);
        let cells: Vec<Cow<'_, str>> = cells.iter().copied().map(csv_cell).collect();
        writer
            .write_record(cells.iter().map(|c| c.as_bytes()))
            .expect("write");
        let bytes = writer.into_inner().expect("flush");
        String::from_utf8(bytes)
            .expect("utf-8")
            .trim_end_matches("\r\n")
            .to_string()
    }

    #[test]
    fn cells_a_spreadsheet_would_run_get_a_leading_quote() {
        for text in [
            "=HYPERLINK(\"http://x\",\"y\")",
            "+cmd|' /C calc'!A0",
            "-2+3+cmd|' /C calc'!A0",
            "@SUM(1+1)*cmd|' /C calc'!A0",
            "\t=1+1",
            "\r=1+1",
        ] {
            assert_eq!(csv_cell(text), format!("'{text}"), "{text:?}");
        }
    }

    #[test]
    fn other_cells_are_unchanged() {
        for text in [
            "",
            "ssh-exec",
            "executeCommand",
            "a=b",
            "1+1",
            " =1+1",
            "'already quoted",
            "{\"on_behalf_of\":\"=x\"}",
            "2026-12-01T18:35:12.042Z",
        ] {
            assert!(
                matches!(csv_cell(text), Cow::Borrowed(t) if t == text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_neutralised_cell_is_still_quoted_as_csv_requires() {
        assert_eq!(csv_line(&["=a,b"]), "\"'=a,b\"");
        assert_eq!(csv_line(&["=a", "b"]), "'=a,b");
        assert_eq!(
            csv_line(&["=HYPERLINK(\"http://x\",\"y\")"]),
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\""
        );
        assert_eq!(csv_line(&["-1\nx", "ok"]), "\"'-1\nx\",ok");
        assert_eq!(csv_line(&["\r=1"]), "\"'\r=1\"");
    }

    #[test]
    fn the_csv_row_neutralises_text_and_keeps_numbers_and_the_json_row_exact() {
        let mut event = NewAuditEvent::new(
            EventKind::Execution,
            "@caller",
            "=HYPERLINK(\"http://x\",\"y\")",
            "+cmd|' /C calc'!A0",
            AuditAction::Allow,
            "-reason",
            Risk::Low,
        );
        event.execution_duration_ms = Some(-5);
        event.error = Some("=1+1".into());
        event.job_id = Some("job-1".into());
        let record = AuditRecord {
            id: "row-1".into(),
            seq: 7,
            event,
            prev_hash: "0".repeat(64),
            row_hash: "e".repeat(64),
        };
        let export = ExportRow::from(&record);
        let row = csv_row(&export);
        assert_eq!(row.seq, 7);
        assert_eq!(row.execution_duration_ms, Some(-5));
        assert_eq!(row.caller_id, "'@caller");
        assert_eq!(row.tool, "'=HYPERLINK(\"http://x\",\"y\")");
        assert_eq!(row.operation, "'+cmd|' /C calc'!A0");
        assert_eq!(row.decision_reason, "'-reason");
        assert_eq!(row.error.as_deref(), Some("'=1+1"));
        assert_eq!(row.job_id.as_deref(), Some("job-1"));
        assert_eq!(row.row_hash, "e".repeat(64));

        let text = csv_page(std::slice::from_ref(&record), true).expect("csv");
        let mut reader = csv::Reader::from_reader(text.as_slice());
        let parsed: Vec<ExportRow> = reader
            .deserialize::<ExportRow>()
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].tool, "'=HYPERLINK(\"http://x\",\"y\")");
        assert_eq!(parsed[0].execution_duration_ms, Some(-5));
        assert_eq!(parsed[0].seq, 7);

        // JSON Lines (and so the hashes) keep the text exactly as stored.
        let jsonl = jsonl_page(std::slice::from_ref(&record)).expect("jsonl");
        let back: ExportRow = serde_json::from_slice(&jsonl).expect("json row");
        assert_eq!(back, export);
        assert_eq!(back.tool, "=HYPERLINK(\"http://x\",\"y\")");
    }
}
