-- Relationship-based access (Zanzibar / OpenFGA). Keep logically identical to PostgreSQL.
-- A relationship store (tenant) exists once it has a model; its revision counts write batches.
CREATE TABLE rebac_stores (
    store           TEXT    NOT NULL PRIMARY KEY,
    revision        INTEGER NOT NULL DEFAULT 0 CHECK (revision >= 0),
    created_unix_ms INTEGER NOT NULL
) STRICT;

-- Authorization models, append-only: the highest version of a store is the one in force.
CREATE TABLE rebac_models (
    store           TEXT    NOT NULL,
    version         INTEGER NOT NULL CHECK (version >= 1),
    model_id        TEXT    NOT NULL,
    dsl             TEXT    NOT NULL,
    created_unix_ms INTEGER NOT NULL,
    created_by      TEXT    NOT NULL,
    PRIMARY KEY (store, version)
) STRICT;

-- The tuples in force: object#relation@subject, optionally expiring (invisible once past).
CREATE TABLE rebac_tuples (
    store           TEXT    NOT NULL,
    object          TEXT    NOT NULL,
    relation        TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    expires_at_ms   INTEGER NULL,
    PRIMARY KEY (store, object, relation, subject)
) STRICT;

-- The change feed: every write and delete, by revision (one per batch) and position.
CREATE TABLE rebac_changes (
    store           TEXT    NOT NULL,
    revision        INTEGER NOT NULL CHECK (revision >= 1),
    position        INTEGER NOT NULL CHECK (position >= 0),
    operation       TEXT    NOT NULL CHECK (operation IN ('write', 'delete')),
    object          TEXT    NOT NULL,
    relation        TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    expires_at_ms   INTEGER NULL,
    at_unix_ms      INTEGER NOT NULL,
    actor           TEXT    NOT NULL,
    PRIMARY KEY (store, revision, position)
) STRICT;
