-- `(caller_id, timestamp)` predates the audit explorer's `(caller_id, seq)`, which serves every
-- query that filters by caller: the explorer and the exports walk the chain in `seq` order,
-- and the alerting query reads denials through their own partial index. Each index is one more
-- entry per audit row on disk (about 66 bytes on SQLite) and one more b-tree for the writer.
DROP INDEX IF EXISTS audit_logs_caller;
