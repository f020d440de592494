-- Revoked identities and credentials, consulted by every verification path.
-- Keep logically identical to the PostgreSQL migration.
CREATE TABLE denylist (
    kind            TEXT    NOT NULL CHECK (kind IN ('spiffe_id', 'jti', 'serial')),
    value           TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    created_unix_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, value)
) STRICT;
