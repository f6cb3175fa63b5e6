-- Local accounts: the embedded default when no OpenID provider is configured. Passwords are
-- argon2id hashes (PHC strings). Times are Unix seconds.
CREATE TABLE users (
    username TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    display_name TEXT NOT NULL,
    roles TEXT NOT NULL,                    -- JSON array: viewer, approver, auditor, admin
    capabilities TEXT NOT NULL,             -- JSON array of enforcer capabilities
    disabled BOOLEAN NOT NULL DEFAULT 0,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER,
    created_at INTEGER NOT NULL
);
