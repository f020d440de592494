-- Registration entries: which SPIFFE ID a workload matching these selectors gets.
-- Keep logically identical to migrations/postgres/0002_registration_entries.sql.
CREATE TABLE registration_entries (
    id               TEXT    NOT NULL PRIMARY KEY,
    spiffe_id        TEXT    NOT NULL,
    -- Canonical form: the selectors sorted and joined with '\n'.
    selectors        TEXT    NOT NULL,
    x509_ttl_secs    INTEGER NULL CHECK (x509_ttl_secs > 0),
    jwt_ttl_secs     INTEGER NULL CHECK (jwt_ttl_secs > 0),
    agent_kind       TEXT    NULL,
    owner            TEXT    NULL,
    description      TEXT    NULL,
    created_unix_ms  INTEGER NOT NULL,
    CONSTRAINT registration_entries_id_selectors_key UNIQUE (spiffe_id, selectors)
) STRICT;

CREATE INDEX registration_entries_spiffe_id_idx ON registration_entries (spiffe_id);
