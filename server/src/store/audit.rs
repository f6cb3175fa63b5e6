//! The audit chain: row hashing, the group-commit writer, and verification.

use super::{format_ts, AuditReceipt, Job, NewAuditEvent, NewJob, Store, StoreError, GENESIS};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

/// The hash of a row: SHA-256 over its content, its sequence number and the previous row's
/// hash, fed field by field in a fixed order, each as its name, a NUL, then the value's length
/// (8 bytes, little-endian) and bytes, or eight 0xFF bytes when the value is absent. Changing any
/// stored column, reordering or removing a row breaks it. (Streaming the fields keeps the hash
/// cheap: no intermediate document is built.)
pub fn row_hash(id: &str, seq: i64, event: &NewAuditEvent, prev_hash: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"countersign-audit-row-v1");
    let mut field = |name: &str, value: Option<&[u8]>| {
        h.update(name.as_bytes());
        h.update([0u8]);
        match value {
            Some(bytes) => {
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(bytes);
            }
            None => h.update([0xffu8; 8]),
        }
    };
    let text = |v: &Option<String>| v.as_ref().map(|s| s.as_bytes().to_vec());
    field("id", Some(id.as_bytes()));
    field("seq", Some(&seq.to_le_bytes()));
    field("prev_hash", Some(prev_hash.as_bytes()));
    field("timestamp", Some(format_ts(event.timestamp).as_bytes()));
    field("event_kind", Some(event.kind.as_str().as_bytes()));
    field("caller_id", Some(event.caller_id.as_bytes()));
    field("tool", Some(event.tool.as_bytes()));
    field("operation", Some(event.operation.as_bytes()));
    field("decision_action", Some(event.decision_action.as_bytes()));
    field("decision_reason", Some(event.decision_reason.as_bytes()));
    field("risk_level", Some(event.risk_level.as_bytes()));
    field(
        "requires_approval",
        Some(&[u8::from(event.requires_approval)]),
    );
    field("execution_status", text(&event.execution_status).as_deref());
    field(
        "execution_duration_ms",
        event
            .execution_duration_ms
            .map(i64::to_le_bytes)
            .as_ref()
            .map(|b| b.as_slice()),
    );
    field("side_effects", text(&event.side_effects).as_deref());
    field("error", text(&event.error).as_deref());
    field("approver", text(&event.approver).as_deref());
    field(
        "approved_at",
        event
            .approved_at
            .map(format_ts)
            .as_ref()
            .map(|s| s.as_bytes()),
    );
    field("context", Some(event.context.as_bytes()));
    field("decision", Some(event.decision.as_bytes()));
    field("job_id", text(&event.job_id).as_deref());
    field("policy_hash", text(&event.policy_hash).as_deref());
    field("call_hash", text(&event.call_hash).as_deref());
    hex(&h.finalize())
}

/// What is wrong with a row read in chain order after `previous` (its sequence number and
/// hash; none for the first row of a segment whose predecessor is not at hand), if anything.
pub fn row_problem(
    row: &super::AuditRecord,
    previous: Option<(i64, &str)>,
) -> Option<&'static str> {
    if let Some((seq, hash)) = previous {
        if row.seq != seq + 1 {
            return Some(
                "its sequence number does not follow the previous row's (rows were removed)",
            );
        }
        if row.prev_hash != hash {
            return Some(
                "its prev_hash does not match the previous row's hash (a row was removed or replaced)",
            );
        }
    }
    if row_hash(&row.id, row.seq, &row.event, &row.prev_hash) != row.row_hash {
        return Some("its content does not match its hash (the row was changed)");
    }
    None
}

/// A new row's place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chained {
    pub id: String,
    pub seq: i64,
    pub prev_hash: String,
    pub row_hash: String,
}

/// Assign ids, sequence numbers and hashes to a batch that follows `(head_seq, head_hash)`.
pub(crate) fn chain(events: &[NewAuditEvent], head_seq: i64, head_hash: &str) -> Vec<Chained> {
    let mut prev = head_hash.to_string();
    let mut out = Vec::with_capacity(events.len());
    for (offset, event) in events.iter().enumerate() {
        let seq = head_seq + 1 + i64::try_from(offset).unwrap_or(i64::MAX - head_seq - 1);
        let id = event
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let hash = row_hash(&id, seq, event, &prev);
        out.push(Chained {
            id,
            seq,
            prev_hash: std::mem::replace(&mut prev, hash.clone()),
            row_hash: hash,
        });
    }
    out
}

/// What a keyed checkpoint marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointKind {
    /// Written every N rows / seconds: the chain reached at least this row.
    Periodic,
    /// Written by a purge: rows up to and including this one were deleted on purpose.
    Purge,
}

impl CheckpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointKind::Periodic => "periodic",
            CheckpointKind::Purge => "purge",
        }
    }

    pub fn parse(text: &str) -> Option<CheckpointKind> {
        match text {
            "periodic" => Some(CheckpointKind::Periodic),
            "purge" => Some(CheckpointKind::Purge),
            _ => None,
        }
    }
}

/// A chain position vouched for with the audit key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checkpoint {
    pub kind: CheckpointKind,
    pub seq: i64,
    pub row_hash: String,
    pub created_at: DateTime<Utc>,
    pub mac: String,
}

type HmacSha256 = Hmac<Sha256>;

fn checkpoint_message(
    kind: CheckpointKind,
    seq: i64,
    row_hash: &str,
    created_at: DateTime<Utc>,
) -> String {
    format!(
        "countersign-checkpoint-v1|{}|{seq}|{row_hash}|{}",
        kind.as_str(),
        format_ts(created_at)
    )
}

impl Checkpoint {
    /// A checkpoint of `(seq, row_hash)` signed with `key`.
    pub fn sign(
        key: &[u8],
        kind: CheckpointKind,
        seq: i64,
        row_hash: &str,
        created_at: DateTime<Utc>,
    ) -> Checkpoint {
        let created_at = super::truncate(created_at);
        let mac = HmacSha256::new_from_slice(key)
            .map(|mut mac| {
                mac.update(checkpoint_message(kind, seq, row_hash, created_at).as_bytes());
                hex(&mac.finalize().into_bytes())
            })
            .unwrap_or_default();
        Checkpoint {
            kind,
            seq,
            row_hash: row_hash.to_string(),
            created_at,
            mac,
        }
    }

    /// Whether the MAC is right for `key` (compared in constant time).
    pub fn verify(&self, key: &[u8]) -> bool {
        let Some(given) = unhex(&self.mac) else {
            return false;
        };
        match HmacSha256::new_from_slice(key) {
            Ok(mut mac) => {
                mac.update(
                    checkpoint_message(self.kind, self.seq, &self.row_hash, self.created_at)
                        .as_bytes(),
                );
                mac.verify_slice(&given).is_ok()
            }
            Err(_) => false,
        }
    }
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// A SHA-256 hash as the audit table stores it, its 32 bytes, from the 64 lowercase hex
/// characters it is everywhere else. Anything else is refused: it would not read back as the
/// same text, and the row's own hash covers that text.
pub fn hash_bytes(text: &str) -> Result<[u8; 32], StoreError> {
    let mut out = [0u8; 32];
    if text.bytes().any(|b| b.is_ascii_uppercase()) || !decode_hex(text, &mut out) {
        return Err(StoreError::Invalid(
            "an audit hash must be 64 lowercase hexadecimal characters".into(),
        ));
    }
    Ok(out)
}

/// Decode hexadecimal `text` into `out`, which it must fill exactly.
fn decode_hex(text: &str, out: &mut [u8]) -> bool {
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let raw = text.as_bytes();
    if raw.len() != out.len() * 2 {
        return false;
    }
    for (slot, pair) in out.iter_mut().zip(raw.chunks_exact(2)) {
        match (digit(pair[0]), digit(pair[1])) {
            (Some(high), Some(low)) => *slot = high << 4 | low,
            _ => return false,
        }
    }
    true
}

/// A stored hash (32 bytes) as the lowercase hex text the rest of Countersign uses.
pub fn hash_text(bytes: &[u8]) -> Result<String, StoreError> {
    if bytes.len() == 32 {
        Ok(hex(bytes))
    } else {
        Err(StoreError::Invalid(format!(
            "a stored audit hash has {} bytes, not 32",
            bytes.len()
        )))
    }
}

/// Refuse an event whose policy or call hash could not be stored (before it joins a batch,
/// so it fails alone).
pub(crate) fn check_hashes(event: &NewAuditEvent) -> Result<(), StoreError> {
    for hash in [&event.policy_hash, &event.call_hash].into_iter().flatten() {
        hash_bytes(hash)?;
    }
    Ok(())
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let mut out = vec![0u8; text.len() / 2];
    decode_hex(text, &mut out).then_some(out)
}

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub rows: i64,
    /// The first row verified (1, or the row after the last purge).
    pub first_seq: i64,
    pub head_seq: i64,
    pub head_hash: String,
    /// Keyed checkpoints whose MAC and chain position were checked (0 without a key).
    pub checkpoints_verified: usize,
    pub keyed: bool,
    /// The first row that does not verify, and why.
    pub first_bad: Option<(i64, String)>,
}

impl ChainReport {
    pub fn ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// Walk the whole chain in pages and check every link and hash, that it ends at the head, and,
/// with the audit key, that every checkpoint is genuine and still matches the chain (so rows
/// cut off the end are found even if the head was rewritten too).
pub async fn verify<S: Store>(store: &S, key: Option<&[u8]>) -> Result<ChainReport, StoreError> {
    const PAGE: i64 = 1_000;
    let (head_seq, head_hash) = store.audit_head().await?;
    let mut report = ChainReport {
        rows: 0,
        first_seq: 1,
        head_seq,
        head_hash: head_hash.clone(),
        checkpoints_verified: 0,
        keyed: key.is_some(),
        first_bad: None,
    };
    let mut periodic = std::collections::BTreeMap::new();
    let mut anchor: Option<(i64, String)> = None;
    if let Some(key) = key {
        for cp in store.checkpoints().await? {
            if !cp.verify(key) {
                report.first_bad = Some((
                    cp.seq,
                    format!(
                        "the {} checkpoint at row {} has a bad MAC (forged, or another key)",
                        cp.kind.as_str(),
                        cp.seq
                    ),
                ));
                return Ok(report);
            }
            report.checkpoints_verified += 1;
            match cp.kind {
                CheckpointKind::Periodic => {
                    periodic.insert(cp.seq, cp.row_hash);
                }
                CheckpointKind::Purge => {
                    if anchor.as_ref().is_none_or(|(seq, _)| cp.seq > *seq) {
                        anchor = Some((cp.seq, cp.row_hash));
                    }
                }
            }
        }
    }
    // Verification starts after the last purge, from that purge's anchor.
    let (mut last_seq, mut last_hash) = anchor.clone().unwrap_or((0, GENESIS.to_string()));
    report.first_seq = last_seq + 1;
    let mut after = last_seq;
    loop {
        let page = store.audit_page(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for row in &page {
            let problem = if report.rows == 0 && row.seq != last_seq + 1 {
                Some(format!(
                    "rows {} to {} are missing and no purge checkpoint covers them",
                    last_seq + 1,
                    row.seq - 1
                ))
            } else if let Some(why) = row_problem(row, Some((last_seq, &last_hash))) {
                Some(why.to_string())
            } else if periodic.get(&row.seq).is_some_and(|h| *h != row.row_hash) {
                Some("its hash differs from the keyed checkpoint taken at this row (the chain was rewritten)".to_string())
            } else {
                None
            };
            if let Some(problem) = problem {
                report.first_bad = Some((row.seq, problem));
                return Ok(report);
            }
            report.rows += 1;
            last_seq = row.seq;
            last_hash = row.row_hash.clone();
        }
    }
    if let Some((&seq, _)) = periodic.range(last_seq + 1..).next() {
        report.first_bad = Some((
            last_seq + 1,
            format!("a keyed checkpoint vouches for row {seq} but the chain ends at row {last_seq} (the newest rows were removed)"),
        ));
    } else if last_seq != head_seq || last_hash != head_hash && head_seq > 0 {
        report.first_bad = Some((
            last_seq + 1,
            format!("the chain ends at row {last_seq} but its head says {head_seq} (rows were truncated)"),
        ));
    }
    Ok(report)
}

/// Delete audit rows older than `cutoff` (a prefix of the chain), anchoring the chain at the
/// last deleted row with a keyed purge checkpoint first. Returns (rows deleted, anchor seq).
pub async fn purge<S: Store>(
    store: &S,
    key: &[u8],
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(u64, i64), StoreError> {
    const BATCH: i64 = 5_000;
    let (head_seq, _) = store.audit_head().await?;
    let through = match store.first_seq_since(cutoff).await? {
        Some(first_kept) => first_kept - 1,
        None => head_seq,
    };
    let anchored = store
        .checkpoints()
        .await?
        .into_iter()
        .filter(|c| c.kind == CheckpointKind::Purge && c.verify(key))
        .map(|c| c.seq)
        .max()
        .unwrap_or(0);
    if through <= anchored {
        return Ok((0, anchored));
    }
    let row = store.audit_page(through - 1, 1).await?;
    let Some(row) = row.first().filter(|r| r.seq == through) else {
        return Err(StoreError::Invalid(format!(
            "row {through} is missing; run `countersign audit verify`"
        )));
    };
    store
        .add_checkpoint(&Checkpoint::sign(
            key,
            CheckpointKind::Purge,
            through,
            &row.row_hash,
            now,
        ))
        .await?;
    let mut deleted = 0;
    loop {
        let n = store.purge_batch(through, BATCH).await?;
        deleted += n;
        if n == 0 {
            break;
        }
    }
    Ok((deleted, through))
}

/// One caller's event, and where its answer goes.
struct Pending {
    event: NewAuditEvent,
    reply: Reply,
}

/// Why a batch could not be written, told to every caller waiting on it (so it is cloned).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WriteFailed(pub String);

/// What a caller waits for: its row's receipt, or the receipt and the job its decision queued
/// (committed in the same transaction).
enum Reply {
    Row(oneshot::Sender<Result<AuditReceipt, WriteFailed>>),
    WithJob(
        Box<NewJob>,
        oneshot::Sender<Result<(AuditReceipt, Job), WriteFailed>>,
    ),
}

/// Where a reply goes once the batch is committed (the job has moved into the batch).
enum Answer {
    Row(oneshot::Sender<Result<AuditReceipt, WriteFailed>>),
    WithJob(oneshot::Sender<Result<(AuditReceipt, Job), WriteFailed>>),
}

impl Answer {
    /// A caller that stopped waiting needs no answer, so a closed channel is not an error.
    fn fail(self, message: WriteFailed) {
        match self {
            Answer::Row(reply) => {
                let _ = reply.send(Err(message));
            }
            Answer::WithJob(reply) => {
                let _ = reply.send(Err(message));
            }
        }
    }
}

/// The writer's loop: take what is queued (up to a batch), commit it in one transaction, answer
/// each caller, and take keyed checkpoints when due. Ends when every sender is gone.
async fn write_batches<S: Store>(
    store: S,
    checkpoints: Option<CheckpointPolicy>,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    rx: std::sync::Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>,
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    // Held for the writer's life; a writer that panics drops it for the next one.
    let mut rx = rx.lock().await;
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    let mut since_checkpoint: u64 = 0;
    // The newest row a checkpoint of this writer's vouches for.
    let mut last_signed: i64 = 0;
    let mut last_checkpoint = tokio::time::Instant::now();
    let idle = checkpoints
        .as_ref()
        .map_or(std::time::Duration::from_secs(3_600), |c| c.every);
    loop {
        let first = tokio::select! {
            next = rx.recv() => match next {
                Some(first) => Some(first),
                None => break,
            },
            () = tokio::time::sleep_until(last_checkpoint + idle) => None,
        };
        if let Some(first) = first {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let mut events = Vec::with_capacity(batch.len());
            let mut jobs = Vec::new();
            let mut replies = Vec::with_capacity(batch.len());
            for pending in batch.drain(..) {
                events.push(pending.event);
                replies.push(match pending.reply {
                    Reply::Row(reply) => Answer::Row(reply),
                    Reply::WithJob(job, reply) => {
                        jobs.push(*job);
                        Answer::WithJob(reply)
                    }
                });
            }
            #[cfg(test)]
            if events
                .iter()
                .any(|e| e.caller_id == tests::PANIC_THE_WRITER)
            {
                panic!("the writer panics, as the supervisor's test asks");
            }
            let started = std::time::Instant::now();
            match store.append_audit_and_jobs(&events, &jobs).await {
                Ok((receipts, stored)) => {
                    failed.store(false, std::sync::atomic::Ordering::Relaxed);
                    if let Some(m) = &metrics {
                        m.audit_batch(receipts.len(), started.elapsed());
                    }
                    since_checkpoint += receipts.len() as u64;
                    // The store answers in the order it was given events and jobs.
                    let mut stored = stored.into_iter();
                    for (answer, receipt) in replies.into_iter().zip(receipts) {
                        match answer {
                            Answer::Row(reply) => {
                                let _ = reply.send(Ok(receipt));
                            }
                            Answer::WithJob(reply) => {
                                let _ = reply.send(
                                    stored.next().map(|job| (receipt, job)).ok_or_else(|| {
                                        WriteFailed(
                                            "the store returned fewer jobs than it was given"
                                                .to_string(),
                                        )
                                    }),
                                );
                            }
                        }
                    }
                }
                Err(error) => {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    tracing::error!(%error, rows = replies.len(), "audit write failed; callers fail closed");
                    for answer in replies {
                        answer.fail(WriteFailed(error.to_string()));
                    }
                }
            }
        }
        let Some(policy) = &checkpoints else { continue };
        let due =
            since_checkpoint >= policy.every_rows || last_checkpoint.elapsed() >= policy.every;
        if due {
            last_checkpoint = tokio::time::Instant::now();
            // The chain's head, not this writer's last row: votes append their rows in their own
            // transactions, and a writer started again after a panic knows no earlier receipt.
            match store.audit_head().await {
                Ok((seq, hash)) if seq > last_signed => {
                    let cp = Checkpoint::sign(
                        &policy.key,
                        CheckpointKind::Periodic,
                        seq,
                        &hash,
                        Utc::now(),
                    );
                    match store.add_checkpoint(&cp).await {
                        Ok(()) => {
                            since_checkpoint = 0;
                            last_signed = seq;
                        }
                        Err(error) => {
                            tracing::error!(%error, "could not write an audit checkpoint")
                        }
                    }
                }
                Ok(_) => since_checkpoint = 0,
                Err(error) => {
                    tracing::error!(%error, "could not read the audit head for a checkpoint")
                }
            }
        }
    }
}

/// When the writer takes keyed checkpoints.
#[derive(Clone)]
pub struct CheckpointPolicy {
    pub key: Vec<u8>,
    pub every_rows: u64,
    pub every: std::time::Duration,
}

/// The one audit writer: callers send events, the writer commits them in batches (group commit)
/// and answers each caller only once its row is durable. A failed batch fails every caller in it.
#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Pending>,
    /// Whether the last batch failed (cleared by the next one that commits).
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Most events committed in one transaction.
const MAX_BATCH: usize = 512;

impl AuditWriter {
    /// Start the writer task on `store`, taking keyed checkpoints when a policy is given.
    pub fn spawn<S: Store>(store: S, checkpoints: Option<CheckpointPolicy>) -> AuditWriter {
        Self::spawn_with_metrics(store, checkpoints, None)
    }

    /// [`AuditWriter::spawn`], also counting batch sizes and commit times into `metrics`.
    ///
    /// The writer runs under a supervisor: should it ever stop other than by every sender being
    /// dropped (a panic), the batch it held fails (its callers fail closed), `is_failing` says
    /// so, and a new writer takes over the same queue.
    pub fn spawn_with_metrics<S: Store>(
        store: S,
        checkpoints: Option<CheckpointPolicy>,
        metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    ) -> AuditWriter {
        let (tx, rx) = mpsc::channel::<Pending>(MAX_BATCH * 8);
        let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let failed = failing.clone();
        tokio::spawn(async move {
            loop {
                let run = tokio::spawn(write_batches(
                    store.clone(),
                    checkpoints.clone(),
                    metrics.clone(),
                    rx.clone(),
                    failed.clone(),
                ));
                match run.await {
                    Ok(()) => break,
                    Err(error) => {
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                        tracing::error!(%error, "the audit writer stopped; starting it again");
                        // Not a hot loop should it fail at once again.
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        });
        AuditWriter { tx, failing }
    }

    /// Whether the last write failed: nothing is allowed until one commits again.
    pub fn is_failing(&self) -> bool {
        self.failing.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Append one event; resolves once it is committed. An error means it was not written.
    pub async fn append(&self, event: NewAuditEvent) -> Result<AuditReceipt, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit(event, Reply::Row(reply), answer).await
    }

    /// Append a decision's event and queue its job in the same transaction (batched with other
    /// callers' events like [`AuditWriter::append`]): both are committed, or neither.
    pub async fn append_with_job(
        &self,
        event: NewAuditEvent,
        job: NewJob,
    ) -> Result<(AuditReceipt, Job), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit(event, Reply::WithJob(Box::new(job), reply), answer)
            .await
    }

    async fn submit<T>(
        &self,
        event: NewAuditEvent,
        reply: Reply,
        answer: oneshot::Receiver<Result<T, WriteFailed>>,
    ) -> Result<T, StoreError> {
        check_hashes(&event)?;
        self.tx
            .send(Pending { event, reply })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        match answer.await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(message)) => Err(StoreError::Invalid(format!(
                "audit write failed: {message}"
            ))),
            Err(_) => Err(StoreError::WriterGone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{sqlite::SqliteStore, AuditAction, EventKind, Risk};

    /// An event from this caller makes the writer panic (tests only).
    pub(super) const PANIC_THE_WRITER: &str = "test:panic-the-writer";

    fn event(caller: &str) -> NewAuditEvent {
        NewAuditEvent::new(
            EventKind::Decision,
            caller,
            "ssh-exec",
            "executeCommand",
            AuditAction::Allow,
            "ok",
            Risk::Low,
        )
    }

    /// A writer that dies mid-batch fails that batch's callers (closed, never allowed), says it
    /// is failing, and is started again: the next event is written and the chain verifies.
    #[tokio::test]
    async fn a_writer_that_panics_is_started_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = crate::config::Config {
            database_url: format!("sqlite://{}", dir.path().join("w.db").display()),
            ..crate::config::Config::default()
        };
        let db = crate::store::Database::connect(&config)
            .await
            .expect("sqlite");
        db.migrate().await.expect("migrate");
        let crate::store::Database::Sqlite(pool) = db else {
            panic!("sqlite expected")
        };
        let store = SqliteStore::new(pool);
        let writer = AuditWriter::spawn(store.clone(), None);
        writer.append(event("before")).await.expect("first row");
        let lost = writer.append(event(PANIC_THE_WRITER)).await;
        assert!(lost.is_err(), "{lost:?}");
        assert!(writer.is_failing());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match writer.append(event("after")).await {
                Ok(_) => break,
                Err(error) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "not restarted: {error}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
        assert!(!writer.is_failing());
        let report = verify(&store, None).await.expect("verify");
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.rows, 2);
    }
}
