-- OAuth access tokens get their own signing key (kind `access-token`, RFC 8725 §3.12), kept
-- and rotated like the JWT-SVID key; and each federated trust domain gets its limits (longest
-- JWT-SVID lifetime, pinned issuer, agent routes open to it) as a JSON document.
-- Keep logically identical to the PostgreSQL migration.

-- SQLite cannot change a CHECK constraint in place: the table is rebuilt with the same rows.
CREATE TABLE signing_keys_new (
    id                TEXT    NOT NULL PRIMARY KEY,
    kind              TEXT    NOT NULL CHECK (kind IN ('x509-ca', 'jwt', 'access-token')),
    state             TEXT    NOT NULL CHECK (state IN ('prepared', 'active', 'retired')),
    cert_der          BLOB    NULL,
    key_sealed        BLOB    NOT NULL,
    created_unix_ms   INTEGER NOT NULL,
    not_after_unix_ms INTEGER NULL,
    activated_unix_ms INTEGER NULL,
    retired_unix_ms   INTEGER NULL,
    revoked_unix_ms   INTEGER NULL
) STRICT;
INSERT INTO signing_keys_new (id, kind, state, cert_der, key_sealed, created_unix_ms,
        not_after_unix_ms, activated_unix_ms, retired_unix_ms, revoked_unix_ms)
    SELECT id, kind, state, cert_der, key_sealed, created_unix_ms, not_after_unix_ms,
           activated_unix_ms, retired_unix_ms, revoked_unix_ms
      FROM signing_keys;
DROP TABLE signing_keys;
ALTER TABLE signing_keys_new RENAME TO signing_keys;
CREATE INDEX signing_keys_kind_idx ON signing_keys (kind, state);
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (kind) WHERE state = 'active';
CREATE UNIQUE INDEX signing_keys_one_prepared ON signing_keys (kind) WHERE state = 'prepared';

-- NULL: the defaults (one hour, no issuer pinned, no agent route open).
ALTER TABLE federations ADD COLUMN limits_json TEXT NULL;
