-- Identity signing keys (the trust domain CA, JWT-SVID keys), private halves sealed with the
-- install's key-encryption key. Keep logically identical to the PostgreSQL migration.
CREATE TABLE signing_keys (
    id                TEXT    NOT NULL PRIMARY KEY,
    kind              TEXT    NOT NULL CHECK (kind IN ('x509-ca', 'jwt')),
    state             TEXT    NOT NULL CHECK (state IN ('prepared', 'active', 'retired')),
    cert_der          BLOB    NULL,
    key_sealed        BLOB    NOT NULL,
    created_unix_ms   INTEGER NOT NULL,
    not_after_unix_ms INTEGER NULL
) STRICT;

CREATE INDEX signing_keys_kind_idx ON signing_keys (kind, state);
