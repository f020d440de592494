-- Registration entries: which SPIFFE ID a workload matching these selectors gets.
-- Keep logically identical to migrations/sqlite/0002_registration_entries.sql.
CREATE TABLE registration_entries (
    id               TEXT    NOT NULL,
    spiffe_id        TEXT    NOT NULL,
    -- Canonical form: the selectors sorted and joined with '\n'.
    selectors        TEXT    NOT NULL,
    x509_ttl_secs    BIGINT  NULL CHECK (x509_ttl_secs > 0),
    jwt_ttl_secs     BIGINT  NULL CHECK (jwt_ttl_secs > 0),
    agent_kind       TEXT    NULL,
    owner            TEXT    NULL,
    description      TEXT    NULL,
    created_unix_ms  BIGINT  NOT NULL,
    CONSTRAINT registration_entries_pkey PRIMARY KEY (id),
    CONSTRAINT registration_entries_id_selectors_key UNIQUE (spiffe_id, selectors)
);

CREATE INDEX registration_entries_spiffe_id_idx ON registration_entries (spiffe_id);
