-- Revoked identities and credentials, consulted by every verification path.
-- Keep logically identical to the SQLite migration.
CREATE TABLE denylist (
    kind            TEXT    NOT NULL CHECK (kind IN ('spiffe_id', 'jti', 'serial')),
    value           TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    created_unix_ms BIGINT  NOT NULL,
    CONSTRAINT denylist_pkey PRIMARY KEY (kind, value)
);
