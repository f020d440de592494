-- The change feed: one row for every change to state that servers cache (registration
-- entries, holds, the denylist, tasks and their agents, risk scores, policy packages), written
-- in the same transaction as the change. A server applies the rows past the revision it holds
-- instead of re-reading everything. Old rows are pruned; `change_floor` keeps the highest
-- pruned revision, so a server that fell further behind knows to reload in full.
-- Keep logically identical to the SQLite migration.

-- `rev` is taken from the sequence under a transaction-scoped advisory lock held to commit,
-- so revisions become visible in order (a reader never sees revision n+1 without n).
CREATE TABLE changes (
    rev    BIGSERIAL NOT NULL PRIMARY KEY,
    kind   TEXT      NOT NULL,
    key    TEXT      NOT NULL,
    op     TEXT      NOT NULL CHECK (op IN ('put', 'delete')),
    at_ms  BIGINT    NOT NULL
);
CREATE INDEX changes_kind ON changes (kind, rev);
CREATE INDEX changes_at ON changes (at_ms);

CREATE TABLE change_floor (
    id  BIGINT NOT NULL PRIMARY KEY CHECK (id = 1),
    rev BIGINT NOT NULL
);
INSERT INTO change_floor (id, rev) VALUES (1, 0);

-- The task sweeper's questions, answered from an index whatever the number of tasks.
CREATE INDEX tasks_uncleaned ON tasks (ended_ms) WHERE state <> 'open' AND cleaned = 0;
