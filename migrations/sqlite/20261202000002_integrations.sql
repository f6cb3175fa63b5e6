-- Integrations (issue: approval notifications and a SIEM feed that loses nothing). Times are
-- Unix milliseconds.

-- Every job status change that people are told about (queued, approved, denied, completed,
-- failed, timeout, expired, cancelled), written in the same transaction as the change itself:
-- the notifier reads it, so nothing is announced that did not happen and nothing is missed.
CREATE TABLE job_transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    status TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);

-- One message per event and sink. `idempotency_key` (`EVENT-ID/SINK`) makes enqueueing
-- repeatable and is sent along, so a receiver can drop a redelivery.
CREATE TABLE notification_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    sink TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    job_id TEXT,
    payload TEXT NOT NULL,                  -- the event as JSON (arguments redacted unless configured)
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    last_error TEXT,
    created_ms BIGINT NOT NULL,
    delivered_ms BIGINT
);
CREATE INDEX notification_outbox_queue ON notification_outbox (sink, status, id);

-- How far each reader of an append-only log has got: the notifier in job_transitions, each SIEM
-- feed in audit_logs (by seq).
CREATE TABLE integration_cursors (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

-- Which replica runs each integration worker, so that several replicas never send twice.
CREATE TABLE integration_leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);
