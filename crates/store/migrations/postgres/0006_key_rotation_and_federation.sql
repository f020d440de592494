-- Signing-key rotation (prepared -> active -> retired) and federated trust domains.
-- Keep logically identical to the SQLite migration.

ALTER TABLE signing_keys ADD COLUMN activated_unix_ms BIGINT NULL;
ALTER TABLE signing_keys ADD COLUMN retired_unix_ms BIGINT NULL;
-- Set when an operator withdraws a key from the bundle at once (a compromised key).
ALTER TABLE signing_keys ADD COLUMN revoked_unix_ms BIGINT NULL;

-- Before this migration the active key was named by the meta pointer
-- `identity.<kind>.active`; a replica that lost the first-start race could have left a second,
-- never-used row marked active. Retire those, then let the database keep at most one active and
-- one prepared key per kind.
UPDATE signing_keys SET state = 'retired', retired_unix_ms = created_unix_ms
 WHERE state = 'active'
   AND id NOT IN (SELECT value FROM meta WHERE key = 'identity.' || signing_keys.kind || '.active');
UPDATE signing_keys SET activated_unix_ms = created_unix_ms WHERE state = 'active';
DELETE FROM meta WHERE key IN ('identity.x509-ca.active', 'identity.jwt.active');

CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (kind) WHERE state = 'active';
CREATE UNIQUE INDEX signing_keys_one_prepared ON signing_keys (kind) WHERE state = 'prepared';

-- Other trust domains whose SVIDs this install accepts: their SPIFFE bundle, set from a file
-- (bundle_url NULL) or fetched from their bundle endpoint and refreshed.
CREATE TABLE federations (
    trust_domain      TEXT    NOT NULL,
    bundle_url        TEXT    NULL,
    endpoint_ca_pem   TEXT    NULL,
    bundle_json       TEXT    NOT NULL,
    created_unix_ms   BIGINT  NOT NULL,
    refreshed_unix_ms BIGINT  NOT NULL,
    last_error        TEXT    NULL,
    CONSTRAINT federations_pkey PRIMARY KEY (trust_domain)
);
