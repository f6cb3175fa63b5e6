-- Decisions shadow mode allowed although enforcing would have held them for approval: stored
-- as `allow` with `requires_approval` set. The dashboard counts them by tool, pattern and
-- category over recent days without reading every allowed call (most of the trail). Partial:
-- only those rows are in it.
CREATE INDEX audit_logs_shadow ON audit_logs (timestamp)
    WHERE decision_action = 'allow' AND requires_approval;
