-- Decisions per hour, action, risk and tool: what the dashboard's 24-hour chart, 7-day trend and
-- top tools read, so they cost the same at a million audit rows as at a thousand. Derived data
-- (not part of the hash chain): the audit writer adds to it in the same transaction as the rows.
CREATE TABLE audit_hourly (
    hour TEXT NOT NULL,                     -- 'YYYY-MM-DD HH' (UTC)
    decision_action TEXT NOT NULL,
    risk_level TEXT NOT NULL,
    tool TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (hour, decision_action, risk_level, tool)
) WITHOUT ROWID;

INSERT INTO audit_hourly (hour, decision_action, risk_level, tool, n)
SELECT substr(timestamp, 1, 13), decision_action, risk_level, tool, COUNT(*)
FROM audit_logs WHERE event_kind = 'decision'
GROUP BY 1, 2, 3, 4;
