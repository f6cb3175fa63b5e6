-- Local accounts: the embedded default when no OpenID provider is configured. Passwords are
-- argon2id hashes (PHC strings). Times are Unix seconds.
CREATE TABLE users (
    username TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    display_name TEXT NOT NULL,
    roles TEXT NOT NULL,                    -- JSON array: viewer, approver, auditor, admin
    capabilities TEXT NOT NULL,             -- JSON array of enforcer capabilities
    disabled BOOLEAN NOT NULL DEFAULT FALSE,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    locked_until BIGINT,
    created_at BIGINT NOT NULL
);

-- API tokens for tool servers and agents when no identity provider is configured. The token is
-- shown once; only the SHA-256 of its secret part is kept (the secret is 256 random bits, so a
-- fast hash is enough).
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,                    -- the token's public part
    name TEXT NOT NULL UNIQUE,
    secret_sha256 TEXT NOT NULL,
    roles TEXT NOT NULL,                    -- JSON array
    capabilities TEXT NOT NULL,             -- JSON array
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    last_used_at BIGINT
);
