-- Identity signing keys (the trust domain CA, JWT-SVID keys), private halves sealed with the
-- install's key-encryption key. Keep logically identical to the SQLite migration.
CREATE TABLE signing_keys (
    id                TEXT    NOT NULL,
    kind              TEXT    NOT NULL CHECK (kind IN ('x509-ca', 'jwt')),
    state             TEXT    NOT NULL CHECK (state IN ('prepared', 'active', 'retired')),
    cert_der          BYTEA   NULL,
    key_sealed        BYTEA   NOT NULL,
    created_unix_ms   BIGINT  NOT NULL,
    not_after_unix_ms BIGINT  NULL,
    CONSTRAINT signing_keys_pkey PRIMARY KEY (id)
);

CREATE INDEX signing_keys_kind_idx ON signing_keys (kind, state);
