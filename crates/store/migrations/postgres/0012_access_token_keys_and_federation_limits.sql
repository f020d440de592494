-- OAuth access tokens get their own signing key (kind `access-token`, RFC 8725 §3.12), kept
-- and rotated like the JWT-SVID key; and each federated trust domain gets its limits (longest
-- JWT-SVID lifetime, pinned issuer, agent routes open to it) as a JSON document.
-- Keep logically identical to the SQLite migration.

ALTER TABLE signing_keys DROP CONSTRAINT signing_keys_kind_check;
ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_kind_check
    CHECK (kind IN ('x509-ca', 'jwt', 'access-token'));

-- NULL: the defaults (one hour, no issuer pinned, no agent route open).
ALTER TABLE federations ADD COLUMN limits_json TEXT NULL;
