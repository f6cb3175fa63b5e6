-- The four SHA-256 hashes of an audit row (policy, call, previous row, this row) are stored as
-- their 32 bytes instead of 64 hexadecimal characters: 128 bytes less per row. The store reads
-- and writes lowercase hex at its boundary, so the chain, its hashes, the exports and every API
-- are unchanged. decode() refuses anything that is not hex, which stops the migration (and the
-- start-up) rather than lose a hash; every hash Countersign wrote is 64 lowercase hex characters.
-- (Changing a column's type rewrites the table; the append-only trigger does not fire for it.)

ALTER TABLE audit_logs
    ALTER COLUMN policy_hash TYPE BYTEA USING decode(policy_hash, 'hex'),
    ALTER COLUMN call_hash TYPE BYTEA USING decode(call_hash, 'hex'),
    ALTER COLUMN prev_hash TYPE BYTEA USING decode(prev_hash, 'hex'),
    ALTER COLUMN row_hash TYPE BYTEA USING decode(row_hash, 'hex');

ALTER TABLE audit_logs
    ADD CONSTRAINT audit_logs_hash_lengths CHECK (
        (policy_hash IS NULL OR length(policy_hash) = 32)
        AND (call_hash IS NULL OR length(call_hash) = 32)
        AND length(prev_hash) = 32
        AND length(row_hash) = 32
    );
