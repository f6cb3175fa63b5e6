-- Where each UTC hour's audit rows lie in the chain: the smallest and largest `seq` of the rows
-- whose timestamp falls in that hour (`YYYY-MM-DD HH`), kept by the writer in the same
-- transaction as the rows. A time range becomes a `seq` range, which the primary key and every
-- (column, seq) index answer directly; so the index on `timestamp` is dropped. Rows whose times
-- are out of chain order (imports) only widen their hour's range; the time condition is still
-- checked on every row.
CREATE TABLE audit_hours (
    hour TEXT PRIMARY KEY,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL
);

INSERT INTO audit_hours (hour, first_seq, last_seq)
SELECT to_char(timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24'), MIN(seq), MAX(seq)
FROM audit_logs
GROUP BY 1;

DROP INDEX audit_logs_timestamp;
