-- The audit explorer's and the exports' filters, each in chain order: a page filtered by tool,
-- caller, action or risk reads its rows newest (or oldest) first from one of these instead of
-- sorting every match. Together with the time index they keep any page cheap at millions of rows.
CREATE INDEX audit_logs_tool_seq ON audit_logs (tool, seq);
CREATE INDEX audit_logs_caller_seq ON audit_logs (caller_id, seq);
CREATE INDEX audit_logs_action_seq ON audit_logs (decision_action, seq);
CREATE INDEX audit_logs_risk_seq ON audit_logs (risk_level, seq);
