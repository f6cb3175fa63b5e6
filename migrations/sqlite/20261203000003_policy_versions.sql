-- Every policy Countersign has decided under, once, by its hash. An audit row names its policy
-- by `policy_hash` and keeps only what that policy, the call and the row's own columns cannot
-- give back of the decision (usually nothing: `{}`); this table is what gives the rest back.
CREATE TABLE policy_versions (
    policy_hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    source TEXT NOT NULL,
    first_used_at TEXT NOT NULL
);
