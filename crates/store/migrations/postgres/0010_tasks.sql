-- Tasks, their agents, the grants they carry, just-in-time grant requests, and operator-set
-- risk scores. Keep logically identical to the SQLite migration.

-- `state`: open → completed | failed | cancelled | expired (deadline passed).
CREATE TABLE tasks (
    id              TEXT    NOT NULL PRIMARY KEY,
    kind            TEXT    NOT NULL,
    owner           TEXT    NOT NULL,
    resources       TEXT    NOT NULL,
    attributes      TEXT    NOT NULL,
    deadline_ms     BIGINT NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('open', 'completed', 'failed', 'cancelled', 'expired')),
    created_ms      BIGINT NOT NULL,
    created_by      TEXT    NOT NULL,
    ended_ms        BIGINT,
    end_reason      TEXT,
    -- Set once everything the task carried (grants, leases) has been ended after it ended.
    cleaned         BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX tasks_state ON tasks (state, deadline_ms);

CREATE TABLE task_agents (
    task            TEXT    NOT NULL REFERENCES tasks (id),
    agent           TEXT    NOT NULL,
    role            TEXT    NOT NULL,
    assigned_ms     BIGINT NOT NULL,
    assigned_by     TEXT    NOT NULL,
    PRIMARY KEY (task, agent)
);
CREATE INDEX task_agents_agent ON task_agents (agent);

-- A grant: an agent may `permission` on `resource` for a task, until `expires_ms` (never past
-- the task's deadline). It is also a relationship tuple `resource#permission@agent:…`.
CREATE TABLE grants (
    id              TEXT    NOT NULL PRIMARY KEY,
    task            TEXT    NOT NULL REFERENCES tasks (id),
    agent           TEXT    NOT NULL,
    resource        TEXT    NOT NULL,
    permission      TEXT    NOT NULL,
    expires_ms      BIGINT NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('active', 'ended')),
    source          TEXT    NOT NULL,
    created_ms      BIGINT NOT NULL,
    created_by      TEXT    NOT NULL,
    ended_ms        BIGINT
);
CREATE INDEX grants_task ON grants (task, state);
CREATE INDEX grants_agent ON grants (agent, state);

-- Just-in-time requests: `state` pending → approved | denied | expired, or allowed at once.
CREATE TABLE grant_requests (
    id              TEXT    NOT NULL PRIMARY KEY,
    task            TEXT    NOT NULL REFERENCES tasks (id),
    agent           TEXT    NOT NULL,
    resource        TEXT    NOT NULL,
    permission      TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    ttl_s           BIGINT NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'allowed', 'approved', 'denied', 'expired')),
    decision_id     TEXT    NOT NULL,
    created_ms      BIGINT NOT NULL,
    expires_ms      BIGINT NOT NULL,
    decided_by      TEXT,
    decided_ms      BIGINT,
    decision_reason TEXT,
    grant_id        TEXT
);
CREATE INDEX grant_requests_state ON grant_requests (state, expires_ms);

-- Risk scores set by an operator (monitoring will set them later), 0-1000 per mille.
CREATE TABLE agent_risk (
    agent           TEXT    NOT NULL PRIMARY KEY,
    score_milli     BIGINT NOT NULL CHECK (score_milli BETWEEN 0 AND 1000),
    reason          TEXT    NOT NULL,
    set_ms          BIGINT NOT NULL,
    set_by          TEXT    NOT NULL
);
