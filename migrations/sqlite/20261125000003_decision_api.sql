-- The decision API (issue: Decision API and execution).

-- Who submitted a job through the API: the service acting for `requester`, or the requester.
ALTER TABLE command_queue ADD COLUMN submitted_by TEXT;

-- Idempotency-Key: one stored answer per caller and key. `response` is NULL while the first
-- request with that key is still being answered.
CREATE TABLE api_idempotency (
    caller_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    response TEXT,
    created_unix BIGINT NOT NULL,
    PRIMARY KEY (caller_id, idempotency_key)
);
CREATE INDEX api_idempotency_created ON api_idempotency (created_unix);
