-- An audit row names the policy it was decided under by that policy's small `policy_versions`
-- id instead of repeating its 32-byte hash: one byte or two a row instead of 33. Every hash a
-- row held is kept in `policy_versions` (as lowercase hex, the text the chain hashes); a hash
-- seen only in the trail (rows written before policies were kept, imports) is kept by hash alone,
-- without a name or text. The view `audit_trail` joins the hash back in (the store reads rows
-- through it), so the chain, its hashes, the exports and every API are unchanged; a row whose
-- policy entry were removed or changed no longer verifies.
--
-- SQLite cannot change a column in place: both tables are rebuilt, with the same columns in the
-- same order (`policy_id` where `policy_hash` was), their indexes and the append-only trigger.

CREATE TABLE policy_versions_ids (
    id INTEGER PRIMARY KEY,
    policy_hash TEXT NOT NULL UNIQUE,
    name TEXT,
    source TEXT,
    first_used_at TEXT NOT NULL
);

INSERT INTO policy_versions_ids (policy_hash, name, source, first_used_at)
SELECT policy_hash, name, source, first_used_at FROM policy_versions ORDER BY first_used_at;

DROP TABLE policy_versions;
ALTER TABLE policy_versions_ids RENAME TO policy_versions;

INSERT INTO policy_versions (policy_hash, first_used_at)
SELECT lower(hex(policy_hash)), MIN(timestamp) FROM audit_logs
WHERE policy_hash IS NOT NULL
GROUP BY policy_hash
ON CONFLICT (policy_hash) DO NOTHING;

CREATE TABLE audit_logs_ids (
    id TEXT NOT NULL UNIQUE,
    timestamp TEXT NOT NULL,
    caller_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    operation TEXT NOT NULL,
    decision_action TEXT NOT NULL,
    decision_reason TEXT NOT NULL,
    risk_level TEXT NOT NULL,
    requires_approval BOOLEAN NOT NULL,
    execution_status TEXT,
    execution_duration_ms INTEGER,
    side_effects TEXT,
    error TEXT,
    approver TEXT,
    approved_at TEXT,
    context TEXT NOT NULL,
    decision TEXT NOT NULL,
    seq INTEGER PRIMARY KEY,
    event_kind TEXT NOT NULL,
    job_id TEXT,
    policy_id INTEGER,
    call_hash BLOB CHECK (call_hash IS NULL OR length(call_hash) = 32),
    prev_hash BLOB NOT NULL CHECK (length(prev_hash) = 32),
    row_hash BLOB NOT NULL CHECK (length(row_hash) = 32)
);

INSERT INTO audit_logs_ids
SELECT a.id, a.timestamp, a.caller_id, a.tool, a.operation, a.decision_action, a.decision_reason,
       a.risk_level, a.requires_approval, a.execution_status, a.execution_duration_ms,
       a.side_effects, a.error, a.approver, a.approved_at, a.context, a.decision, a.seq,
       a.event_kind, a.job_id, v.id, a.call_hash, a.prev_hash, a.row_hash
FROM audit_logs a
LEFT JOIN policy_versions v ON v.policy_hash = lower(hex(a.policy_hash))
ORDER BY a.seq;

DROP TABLE audit_logs;
ALTER TABLE audit_logs_ids RENAME TO audit_logs;

CREATE INDEX audit_logs_denials ON audit_logs (timestamp) WHERE decision_action = 'deny';
CREATE INDEX audit_logs_job ON audit_logs (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX audit_logs_tool_seq ON audit_logs (tool, seq);
CREATE INDEX audit_logs_caller_seq ON audit_logs (caller_id, seq);
CREATE INDEX audit_logs_action_seq ON audit_logs (decision_action, seq);
CREATE INDEX audit_logs_risk_seq ON audit_logs (risk_level, seq);

CREATE TRIGGER audit_logs_append_only BEFORE UPDATE ON audit_logs
BEGIN
    SELECT RAISE(ABORT, 'audit_logs is append-only');
END;

-- audit_logs as it reads with each row's policy hash, for the store and for SQL users alike.
CREATE VIEW audit_trail AS
SELECT a.*, v.policy_hash
FROM audit_logs a
LEFT JOIN policy_versions v ON v.id = a.policy_id;
