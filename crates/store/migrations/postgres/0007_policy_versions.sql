-- Policy packages (Cedar or Rego), append-only: every upload or rollback is a new version; the
-- highest version of a package is the one in force. Keep logically identical to SQLite.
CREATE TABLE policy_versions (
    package         TEXT    NOT NULL,
    version         BIGINT  NOT NULL CHECK (version >= 1),
    language        TEXT    NOT NULL CHECK (language IN ('cedar', 'rego')),
    entrypoint      TEXT    NULL,
    files_json      TEXT    NOT NULL,
    content_sha256  TEXT    NOT NULL,
    created_unix_ms BIGINT  NOT NULL,
    created_by      TEXT    NOT NULL,
    note            TEXT    NULL,
    CONSTRAINT policy_versions_pkey PRIMARY KEY (package, version)
);
