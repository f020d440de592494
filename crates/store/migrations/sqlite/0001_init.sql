-- Warden store, initial schema (SQLite).
-- Keep logically identical to migrations/postgres/0001_init.sql.
-- `seq INTEGER PRIMARY KEY` makes seq the rowid (64-bit), so the ledger needs no extra index.

CREATE TABLE ledger_entries (
    seq          INTEGER PRIMARY KEY CHECK (seq >= 0),
    leaf_hash    BLOB    NOT NULL CHECK (length(leaf_hash) = 32),
    leaf         BLOB    NOT NULL,
    time_unix_ms INTEGER NOT NULL,
    actor        TEXT    NOT NULL,
    action       TEXT    NOT NULL
) STRICT;

CREATE INDEX ledger_entries_actor_idx ON ledger_entries (actor);
CREATE INDEX ledger_entries_action_idx ON ledger_entries (action);
CREATE INDEX ledger_entries_time_idx ON ledger_entries (time_unix_ms);

CREATE TABLE ledger_checkpoints (
    tree_size       INTEGER PRIMARY KEY CHECK (tree_size >= 0),
    root            BLOB    NOT NULL CHECK (length(root) = 32),
    note            TEXT    NOT NULL,
    created_unix_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE api_tokens (
    id              TEXT    NOT NULL PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    role            TEXT    NOT NULL,
    token_hash      BLOB    NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_unix_ms INTEGER NOT NULL,
    revoked_unix_ms INTEGER NULL
) STRICT;

CREATE TABLE meta (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
