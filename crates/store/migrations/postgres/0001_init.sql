-- Warden store, initial schema (PostgreSQL).
-- Keep logically identical to migrations/sqlite/0001_init.sql, and portable to
-- CockroachDB / YugabyteDB: plain tables, B-tree indexes, named constraints, nothing exotic.
-- Constraint names are referenced by the store's error mapping; do not rename them.

CREATE TABLE ledger_entries (
    seq          BIGINT NOT NULL,
    leaf_hash    BYTEA  NOT NULL,
    leaf         BYTEA  NOT NULL,
    time_unix_ms BIGINT NOT NULL,
    actor        TEXT   NOT NULL,
    action       TEXT   NOT NULL,
    CONSTRAINT ledger_entries_pkey PRIMARY KEY (seq),
    CONSTRAINT ledger_entries_seq_check CHECK (seq >= 0),
    CONSTRAINT ledger_entries_leaf_hash_check CHECK (octet_length(leaf_hash) = 32)
);

CREATE INDEX ledger_entries_actor_idx ON ledger_entries (actor);
CREATE INDEX ledger_entries_action_idx ON ledger_entries (action);
CREATE INDEX ledger_entries_time_idx ON ledger_entries (time_unix_ms);

CREATE TABLE ledger_checkpoints (
    tree_size       BIGINT NOT NULL,
    root            BYTEA  NOT NULL,
    note            TEXT   NOT NULL,
    created_unix_ms BIGINT NOT NULL,
    CONSTRAINT ledger_checkpoints_pkey PRIMARY KEY (tree_size),
    CONSTRAINT ledger_checkpoints_tree_size_check CHECK (tree_size >= 0),
    CONSTRAINT ledger_checkpoints_root_check CHECK (octet_length(root) = 32)
);

CREATE TABLE api_tokens (
    id              TEXT   NOT NULL,
    name            TEXT   NOT NULL,
    role            TEXT   NOT NULL,
    token_hash      BYTEA  NOT NULL,
    created_unix_ms BIGINT NOT NULL,
    revoked_unix_ms BIGINT NULL,
    CONSTRAINT api_tokens_pkey PRIMARY KEY (id),
    CONSTRAINT api_tokens_name_key UNIQUE (name),
    CONSTRAINT api_tokens_token_hash_key UNIQUE (token_hash),
    CONSTRAINT api_tokens_token_hash_check CHECK (octet_length(token_hash) = 32)
);

CREATE TABLE meta (
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    CONSTRAINT meta_pkey PRIMARY KEY (key)
);
