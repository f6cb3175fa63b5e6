-- Remembered approvals (standing grants): an approver's "approve this, and the next calls like
-- it", for a requester or a group, on a target or pattern, for a while and a number of uses.
-- What a grant covers is the enforcer's `GrantScope` as JSON. A grant made from a job that
-- needed N approvals is active once N distinct approvers have remembered it (`approvers`, a
-- JSON array in order, and its length `approvals`). Uses are spent one at a time by a
-- conditional update, so the last use cannot be spent twice. Grants are revoked, never deleted.
CREATE TABLE grants (
    id TEXT PRIMARY KEY,
    tool TEXT NOT NULL,
    operation TEXT NOT NULL,
    scope TEXT NOT NULL,
    subject_kind TEXT NOT NULL CHECK (subject_kind IN ('person', 'group')),
    subject TEXT NOT NULL,
    job_id TEXT NOT NULL,
    approvals_needed INTEGER NOT NULL CHECK (approvals_needed >= 1),
    approvals INTEGER NOT NULL CHECK (approvals >= 1),
    approvers TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    max_uses INTEGER CHECK (max_uses IS NULL OR max_uses >= 1),
    uses INTEGER NOT NULL DEFAULT 0,
    last_used_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ,
    revoked_by TEXT
);
-- The grants a call may use: those of its tool and operation not revoked, newest first.
CREATE INDEX grants_for_operation ON grants (tool, operation, expires_at) WHERE revoked_at IS NULL;
CREATE INDEX grants_created ON grants (created_at);
