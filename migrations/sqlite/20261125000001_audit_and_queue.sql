-- Countersign store, SQLite dialect. A compatible superset of IT-MCP's `audit_logs` and
-- `command_queue` (same table and column names, meanings and status words), so IT-MCP's
-- monitoring SQL runs unchanged. Timestamps are UTC RFC 3339 text with a space separator and
-- millisecond precision ('2026-11-25 11:42:07.123Z'): that form compares correctly with SQLite's
-- own datetime('now', ...) strings, which IT-MCP's queries use.

CREATE TABLE audit_logs (
    id TEXT NOT NULL UNIQUE,              -- IT-MCP's primary key; still unique
    timestamp TEXT NOT NULL,
    caller_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    operation TEXT NOT NULL,
    decision_action TEXT NOT NULL,          -- allow, deny, require_approval
    decision_reason TEXT NOT NULL,
    risk_level TEXT NOT NULL,               -- LOW, MEDIUM, HIGH, CRITICAL
    requires_approval BOOLEAN NOT NULL,
    execution_status TEXT,                  -- success, failure, timeout
    execution_duration_ms INTEGER,
    side_effects TEXT,                      -- JSON array
    error TEXT,
    approver TEXT,
    approved_at TEXT,
    context TEXT NOT NULL,                  -- full JSON context
    decision TEXT NOT NULL,                 -- full JSON decision
    -- Countersign's additions
    seq INTEGER PRIMARY KEY,                -- position in the hash chain, from 1 (the rowid: appends stay in order)
    event_kind TEXT NOT NULL,               -- decision, approval, denial, execution, expiry, sign-in, ...
    job_id TEXT,
    policy_hash TEXT,
    call_hash TEXT,
    prev_hash TEXT NOT NULL,
    row_hash TEXT NOT NULL
);
CREATE INDEX audit_logs_timestamp ON audit_logs (timestamp);
CREATE INDEX audit_logs_caller ON audit_logs (caller_id, timestamp);
-- Denials are what the alerting query scans; allows need no index of their own.
CREATE INDEX audit_logs_denials ON audit_logs (timestamp) WHERE decision_action = 'deny';
CREATE INDEX audit_logs_job ON audit_logs (job_id) WHERE job_id IS NOT NULL;

-- The audit trail is append-only: rows are never changed.
CREATE TRIGGER audit_logs_append_only BEFORE UPDATE ON audit_logs
BEGIN
    SELECT RAISE(ABORT, 'audit_logs is append-only');
END;

-- The chain's head, one row: the last sequence number and its hash. Writers take it under the
-- write lock, so the chain never forks.
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    row_hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, row_hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Keyed checkpoints: HMAC-SHA256 (COUNTERSIGN_AUDIT_KEY) over a chain position. `periodic`
-- ones are written every N rows / minutes, so cutting off the newest rows is detected; a `purge`
-- one anchors the chain at the last deleted row so verification starts from the new first row.
CREATE TABLE audit_checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('periodic', 'purge')),
    seq INTEGER NOT NULL,
    row_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    mac TEXT NOT NULL
);

CREATE TABLE command_queue (
    job_id TEXT PRIMARY KEY,
    tool_name TEXT NOT NULL,
    params TEXT NOT NULL,
    requested_capabilities TEXT NOT NULL,   -- JSON array
    target_agent_id TEXT,
    status TEXT NOT NULL CHECK (status IN ('queued', 'approved', 'picked', 'executing', 'completed',
                                           'failed', 'timeout', 'denied', 'expired', 'cancelled')),
    priority TEXT NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    created_at TEXT NOT NULL,
    picked_at TEXT,
    completed_at TEXT,
    result TEXT,
    error TEXT,
    retry_count INTEGER DEFAULT 0,
    max_retries INTEGER DEFAULT 3,
    -- Countersign's additions
    operation TEXT NOT NULL DEFAULT '',
    target TEXT,
    requester TEXT NOT NULL DEFAULT '',
    requester_reason TEXT,
    risk TEXT NOT NULL DEFAULT 'HIGH',
    call_hash TEXT NOT NULL DEFAULT '',
    policy_hash TEXT,
    approvals_required INTEGER NOT NULL DEFAULT 1,
    approval_window_secs INTEGER NOT NULL DEFAULT 3600,   -- how long an approved job may wait
    expires_at TEXT,
    approved_at TEXT,
    approval_expires_at TEXT,
    lease_owner TEXT,
    lease_expires_at TEXT,
    decision_audit_id TEXT,
    updated_at TEXT
);
CREATE INDEX command_queue_status ON command_queue (status, priority, created_at);

CREATE TABLE approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES command_queue (job_id),
    approver TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('approve', 'deny')),
    reason TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (job_id, approver)
);
