-- One-time join tokens for agents on other hosts (only the SHA-256 of the secret is kept).
-- Keep logically identical to the SQLite migration.
CREATE TABLE join_tokens (
    token_hash      BYTEA   NOT NULL CHECK (length(token_hash) = 32),
    spiffe_id       TEXT    NOT NULL,
    created_unix_ms BIGINT  NOT NULL,
    expires_unix_ms BIGINT  NOT NULL,
    used_unix_ms    BIGINT  NULL,
    CONSTRAINT join_tokens_pkey PRIMARY KEY (token_hash)
);
