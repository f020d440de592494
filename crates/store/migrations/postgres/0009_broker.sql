-- The credential broker: leases, holds, dynamic-database connections and role templates,
-- and upstream secrets in custody. Keep logically identical to the SQLite migration.

-- Every credential handed out. `handle` is what the engine knows it by (a token's jti, a
-- database role's name). `state`: active → revoking → revoked, or active → expired.
CREATE TABLE leases (
    id              TEXT    NOT NULL PRIMARY KEY,
    agent           TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    task            TEXT,
    engine          TEXT    NOT NULL,
    scope           TEXT    NOT NULL,
    parent          TEXT,
    handle          TEXT    NOT NULL,
    issued_ms       BIGINT NOT NULL,
    expires_ms      BIGINT NOT NULL,
    max_expires_ms  BIGINT NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('active', 'revoking', 'revoked', 'expired')),
    revoke_reason   TEXT,
    revoked_ms      BIGINT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT,
    last_error      TEXT,
    alerted         BIGINT NOT NULL DEFAULT 0
);
-- Issuance is the hot path: an insert touches the agent, subject, handle and expiry
-- indexes; the others are partial and skip rows they do not need.
CREATE INDEX leases_agent ON leases (agent, state);
CREATE INDEX leases_subject ON leases (subject, state);
CREATE INDEX leases_handle ON leases (engine, handle);
CREATE INDEX leases_expiry ON leases (expires_ms) WHERE state = 'active';
CREATE INDEX leases_task ON leases (task) WHERE task IS NOT NULL;
CREATE INDEX leases_parent ON leases (parent) WHERE parent IS NOT NULL;
CREATE INDEX leases_attempt ON leases (next_attempt_ms) WHERE state = 'revoking';
CREATE INDEX leases_revoked ON leases (revoked_ms, id) WHERE revoked_ms IS NOT NULL;

-- Holds (kill switch): an agent (SPIFFE ID), a task id, or a vendor (registration owner).
CREATE TABLE holds (
    kind            TEXT    NOT NULL CHECK (kind IN ('agent', 'task', 'vendor')),
    value           TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    created_unix_ms BIGINT NOT NULL,
    created_by      TEXT    NOT NULL,
    PRIMARY KEY (kind, value)
);

-- Target databases of the dynamic PostgreSQL engine; the admin DSN is sealed under the KEK.
CREATE TABLE db_connections (
    name            TEXT    NOT NULL PRIMARY KEY,
    dsn_sealed      BYTEA   NOT NULL,
    created_unix_ms BIGINT NOT NULL,
    created_by      TEXT    NOT NULL
);

-- Role templates: what a lease of this role is granted on which connection.
CREATE TABLE db_roles (
    name            TEXT    NOT NULL PRIMARY KEY,
    connection      TEXT    NOT NULL REFERENCES db_connections (name),
    template        TEXT    NOT NULL,
    default_ttl_s   BIGINT NOT NULL,
    max_ttl_s       BIGINT NOT NULL,
    created_unix_ms BIGINT NOT NULL,
    created_by      TEXT    NOT NULL
);

-- Upstream secrets, envelope-encrypted: a data key per version sealed under the KEK, the
-- value sealed under the data key. Versions are kept for rotation.
CREATE TABLE secrets (
    name            TEXT    NOT NULL,
    version         BIGINT NOT NULL,
    dek_sealed      BYTEA   NOT NULL,
    value_sealed    BYTEA   NOT NULL,
    created_unix_ms BIGINT NOT NULL,
    created_by      TEXT    NOT NULL,
    PRIMARY KEY (name, version)
);
