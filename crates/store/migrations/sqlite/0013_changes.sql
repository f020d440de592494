-- The change feed: one row for every change to state that servers cache (registration
-- entries, holds, the denylist, tasks and their agents, risk scores, policy packages), written
-- in the same transaction as the change. A server applies the rows past the revision it holds
-- instead of re-reading everything. Old rows are pruned; `change_floor` keeps the highest
-- pruned revision, so a server that fell further behind knows to reload in full.
-- Keep logically identical to the PostgreSQL migration.

-- `rev` is assigned under SQLite's single writer, so revisions commit in order.
CREATE TABLE changes (
    rev    INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    kind   TEXT    NOT NULL,
    key    TEXT    NOT NULL,
    op     TEXT    NOT NULL CHECK (op IN ('put', 'delete')),
    at_ms  INTEGER NOT NULL
) STRICT;
CREATE INDEX changes_kind ON changes (kind, rev);
CREATE INDEX changes_at ON changes (at_ms);

CREATE TABLE change_floor (
    id  INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    rev INTEGER NOT NULL
) STRICT;
INSERT INTO change_floor (id, rev) VALUES (1, 0);

-- The task sweeper's questions, answered from an index whatever the number of tasks.
CREATE INDEX tasks_uncleaned ON tasks (ended_ms) WHERE state <> 'open' AND cleaned = 0;
