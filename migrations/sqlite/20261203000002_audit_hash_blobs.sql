-- The four SHA-256 hashes of an audit row (policy, call, previous row, this row) are stored as
-- their 32 bytes instead of 64 hexadecimal characters: 128 bytes less per row. The store reads
-- and writes lowercase hex at its boundary, so the chain, its hashes, the exports and every API
-- are unchanged. SQLite cannot change a column's type in place: the table is rebuilt, with the
-- same columns in the same order, its indexes and its append-only trigger.
--
-- Every hash Countersign wrote is 64 lowercase hex characters; unhex() of anything else is NULL,
-- and the NOT NULL / CHECK constraints then stop the migration (and the start-up) rather than
-- lose a hash.

CREATE TABLE audit_logs_blob (
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
    policy_hash BLOB CHECK (policy_hash IS NULL OR length(policy_hash) = 32),
    call_hash BLOB CHECK (call_hash IS NULL OR length(call_hash) = 32),
    prev_hash BLOB NOT NULL CHECK (length(prev_hash) = 32),
    row_hash BLOB NOT NULL CHECK (length(row_hash) = 32)
);

INSERT INTO audit_logs_blob
SELECT id, timestamp, caller_id, tool, operation, decision_action, decision_reason, risk_level,
       requires_approval, execution_status, execution_duration_ms, side_effects, error, approver,
       approved_at, context, decision, seq, event_kind, job_id,
       CASE WHEN policy_hash IS NULL THEN NULL
            WHEN policy_hash = lower(policy_hash) THEN unhex(policy_hash) END,
       CASE WHEN call_hash IS NULL THEN NULL
            WHEN call_hash = lower(call_hash) THEN unhex(call_hash) END,
       CASE WHEN prev_hash = lower(prev_hash) THEN unhex(prev_hash) END,
       CASE WHEN row_hash = lower(row_hash) THEN unhex(row_hash) END
FROM audit_logs;

DROP TABLE audit_logs;
ALTER TABLE audit_logs_blob RENAME TO audit_logs;

CREATE INDEX audit_logs_timestamp ON audit_logs (timestamp);
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
