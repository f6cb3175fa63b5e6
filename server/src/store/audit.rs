//! The audit chain: row hashing, the group-commit writer, and verification.

use super::{format_ts, AuditReceipt, AuditRecord, NewAuditEvent, Store, StoreError, GENESIS};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

/// The hash of a row: SHA-256 over the canonical JSON of its content, its sequence number and
/// the previous row's hash. Changing any stored column, reordering or removing a row breaks it.
pub fn row_hash(id: &str, seq: i64, event: &NewAuditEvent, prev_hash: &str) -> String {
    let content = json!({
        "id": id,
        "seq": seq,
        "prev_hash": prev_hash,
        "timestamp": format_ts(event.timestamp),
        "event_kind": event.kind.as_str(),
        "caller_id": event.caller_id,
        "tool": event.tool,
        "operation": event.operation,
        "decision_action": event.decision_action,
        "decision_reason": event.decision_reason,
        "risk_level": event.risk_level,
        "requires_approval": event.requires_approval,
        "execution_status": event.execution_status,
        "execution_duration_ms": event.execution_duration_ms,
        "side_effects": event.side_effects,
        "error": event.error,
        "approver": event.approver,
        "approved_at": event.approved_at.map(format_ts),
        "context": event.context,
        "decision": event.decision,
        "job_id": event.job_id,
        "policy_hash": event.policy_hash,
        "call_hash": event.call_hash,
    });
    enforcer::sha256_hex(enforcer::canonical_json(&content).as_bytes())
}

/// Assign ids, sequence numbers and hashes to a batch that follows `(head_seq, head_hash)`.
pub(crate) fn chain(events: &[NewAuditEvent], head_seq: i64, head_hash: &str) -> Vec<AuditRecord> {
    let mut prev = head_hash.to_string();
    let mut out = Vec::with_capacity(events.len());
    for (offset, event) in events.iter().enumerate() {
        let seq = head_seq + 1 + i64::try_from(offset).unwrap_or(i64::MAX - head_seq - 1);
        let id = event
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut event = event.clone();
        event.timestamp = super::truncate(event.timestamp);
        event.approved_at = event.approved_at.map(super::truncate);
        event.id = Some(id.clone());
        let hash = row_hash(&id, seq, &event, &prev);
        out.push(AuditRecord {
            id,
            seq,
            event,
            prev_hash: prev.clone(),
            row_hash: hash.clone(),
        });
        prev = hash;
    }
    out
}

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub rows: i64,
    pub head_seq: i64,
    pub head_hash: String,
    /// The first row that does not verify, and why.
    pub first_bad: Option<(i64, String)>,
}

impl ChainReport {
    pub fn ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// Walk the whole chain in pages and check every link and hash, and that it ends at the head.
pub async fn verify<S: Store>(store: &S) -> Result<ChainReport, StoreError> {
    const PAGE: i64 = 1_000;
    let (head_seq, head_hash) = store.audit_head().await?;
    let mut report = ChainReport {
        rows: 0,
        head_seq,
        head_hash: head_hash.clone(),
        first_bad: None,
    };
    let mut after = 0;
    let mut expected_prev: Option<String> = None;
    let mut last_hash = GENESIS.to_string();
    let mut last_seq = 0;
    loop {
        let page = store.audit_page(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for row in &page {
            report.rows += 1;
            let problem = if expected_prev.as_ref().is_some_and(|p| *p != row.prev_hash) {
                Some("its prev_hash does not match the previous row's hash (a row was removed or reordered)")
            } else if expected_prev.is_some() && row.seq != last_seq + 1 {
                Some("its sequence number does not follow the previous row's")
            } else if row_hash(&row.id, row.seq, &row.event, &row.prev_hash) != row.row_hash {
                Some("its content does not match its hash (the row was changed)")
            } else {
                None
            };
            if let Some(problem) = problem {
                report.first_bad = Some((row.seq, problem.to_string()));
                return Ok(report);
            }
            expected_prev = Some(row.row_hash.clone());
            last_hash = row.row_hash.clone();
            last_seq = row.seq;
        }
    }
    if last_seq != head_seq || (head_seq > 0 && last_hash != head_hash) {
        report.first_bad = Some((
            last_seq + 1,
            format!("the chain ends at row {last_seq} but its head says {head_seq} (rows were truncated)"),
        ));
    }
    Ok(report)
}

type Pending = (NewAuditEvent, oneshot::Sender<Result<AuditReceipt, String>>);

/// The one audit writer: callers send events, the writer commits them in batches (group commit)
/// and answers each caller only once its row is durable. A failed batch fails every caller in it.
#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Pending>,
}

/// Most events committed in one transaction.
const MAX_BATCH: usize = 512;

impl AuditWriter {
    /// Start the writer task on `store`.
    pub fn spawn<S: Store>(store: S) -> AuditWriter {
        let (tx, mut rx) = mpsc::channel::<Pending>(MAX_BATCH * 8);
        tokio::spawn(async move {
            let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
            while let Some(first) = rx.recv().await {
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let events: Vec<NewAuditEvent> = batch.iter().map(|(e, _)| e.clone()).collect();
                match store.append_audit(&events).await {
                    Ok(receipts) => {
                        for ((_, reply), receipt) in batch.drain(..).zip(receipts) {
                            let _ = reply.send(Ok(receipt));
                        }
                    }
                    Err(error) => {
                        tracing::error!(%error, rows = batch.len(), "audit write failed; callers fail closed");
                        for (_, reply) in batch.drain(..) {
                            let _ = reply.send(Err(error.to_string()));
                        }
                    }
                }
            }
        });
        AuditWriter { tx }
    }

    /// Append one event; resolves once it is committed. An error means it was not written.
    pub async fn append(&self, event: NewAuditEvent) -> Result<AuditReceipt, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((event, reply))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        match answer.await {
            Ok(Ok(receipt)) => Ok(receipt),
            Ok(Err(message)) => Err(StoreError::Invalid(format!(
                "audit write failed: {message}"
            ))),
            Err(_) => Err(StoreError::WriterGone),
        }
    }
}
