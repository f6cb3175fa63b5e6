-- Countersign store, PostgreSQL dialect: the same tables and columns as the SQLite dialect
-- (IT-MCP's `audit_logs` and `command_queue` as a compatible superset), with native types.

CREATE TABLE audit_logs (
    id TEXT NOT NULL UNIQUE,              -- IT-MCP's primary key; still unique
    timestamp TIMESTAMPTZ NOT NULL,
    caller_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    operation TEXT NOT NULL,
    decision_action TEXT NOT NULL,
    decision_reason TEXT NOT NULL,
    risk_level TEXT NOT NULL,
    requires_approval BOOLEAN NOT NULL,
    execution_status TEXT,
    execution_duration_ms BIGINT,
    side_effects TEXT,
    error TEXT,
    approver TEXT,
    approved_at TIMESTAMPTZ,
    context TEXT NOT NULL,
    decision TEXT NOT NULL,
    seq BIGINT PRIMARY KEY,
    event_kind TEXT NOT NULL,
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

CREATE FUNCTION audit_logs_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_logs is append-only';
END;
$$;
CREATE TRIGGER audit_logs_append_only BEFORE UPDATE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_append_only();

CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    row_hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, row_hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Keyed checkpoints: HMAC-SHA256 (COUNTERSIGN_AUDIT_KEY) over a chain position. `periodic`
-- ones are written every N rows / minutes, so cutting off the newest rows is detected; a `purge`
-- one anchors the chain at the last deleted row so verification starts from the new first row.
CREATE TABLE audit_checkpoints (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('periodic', 'purge')),
    seq BIGINT NOT NULL,
    row_hash TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    mac TEXT NOT NULL
);

CREATE TABLE command_queue (
    job_id TEXT PRIMARY KEY,
    tool_name TEXT NOT NULL,
    params TEXT NOT NULL,
    requested_capabilities TEXT NOT NULL,
    target_agent_id TEXT,
    status TEXT NOT NULL CHECK (status IN ('queued', 'approved', 'picked', 'executing', 'completed',
                                           'failed', 'timeout', 'denied', 'expired', 'cancelled')),
    priority TEXT NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    created_at TIMESTAMPTZ NOT NULL,
    picked_at TIMESTAMPTZ,
    completed_at TIMESTAMPTZ,
    result TEXT,
    error TEXT,
    retry_count INTEGER DEFAULT 0,
    max_retries INTEGER DEFAULT 3,
    operation TEXT NOT NULL DEFAULT '',
    target TEXT,
    requester TEXT NOT NULL DEFAULT '',
    requester_reason TEXT,
    risk TEXT NOT NULL DEFAULT 'HIGH',
    call_hash TEXT NOT NULL DEFAULT '',
    policy_hash TEXT,
    approvals_required INTEGER NOT NULL DEFAULT 1,
    approval_window_secs BIGINT NOT NULL DEFAULT 3600,   -- how long an approved job may wait
    expires_at TIMESTAMPTZ,
    approved_at TIMESTAMPTZ,
    approval_expires_at TIMESTAMPTZ,
    lease_owner TEXT,
    lease_expires_at TIMESTAMPTZ,
    decision_audit_id TEXT,
    updated_at TIMESTAMPTZ
);
CREATE INDEX command_queue_status ON command_queue (status, priority, created_at);

CREATE TABLE approvals (
    id BIGSERIAL PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES command_queue (job_id),
    approver TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('approve', 'deny')),
    reason TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (job_id, approver)
);
