-- Where each UTC hour's audit rows lie in the chain: the smallest and largest `seq` of the rows
-- whose timestamp falls in that hour (`YYYY-MM-DD HH`), kept by the writer in the same
-- transaction as the rows. A time range becomes a `seq` range, which the row table (seq is its
-- key) and every (column, seq) index answer directly; so the index on `timestamp` (37 bytes a
-- row) is dropped. Rows whose times are out of chain order (imports) only widen their hour's
-- range; the time condition is still checked on every row.
CREATE TABLE audit_hours (
    hour TEXT PRIMARY KEY,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL
);

INSERT INTO audit_hours (hour, first_seq, last_seq)
SELECT replace(substr(timestamp, 1, 13), 'T', ' '), MIN(seq), MAX(seq)
FROM audit_logs
GROUP BY replace(substr(timestamp, 1, 13), 'T', ' ');

DROP INDEX audit_logs_timestamp;
