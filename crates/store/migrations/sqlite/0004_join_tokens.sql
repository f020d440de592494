-- One-time join tokens for agents on other hosts (only the SHA-256 of the secret is kept).
-- Keep logically identical to the PostgreSQL migration.
CREATE TABLE join_tokens (
    token_hash      BLOB    NOT NULL PRIMARY KEY CHECK (length(token_hash) = 32),
    spiffe_id       TEXT    NOT NULL,
    created_unix_ms INTEGER NOT NULL,
    expires_unix_ms INTEGER NOT NULL,
    used_unix_ms    INTEGER NULL
) STRICT;
