-- Capstan's engine schema. Times are Unix milliseconds (UTC); JSON is stored as TEXT.

-- Marks the file as Capstan's, so `serve` refuses a database that belongs to something else.
CREATE TABLE capstan_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO capstan_meta (key, value) VALUES ('schema', 'capstan');

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,        -- UUIDv7: time-ordered, so it doubles as the paging cursor
    kind             TEXT NOT NULL,
    tenant           TEXT NOT NULL,
    owner            TEXT NOT NULL,
    cluster          TEXT NOT NULL,
    params           TEXT NOT NULL,           -- the request's kind-specific fields
    state            TEXT NOT NULL,           -- model::JobState
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    deadline_at      INTEGER,
    concurrency      INTEGER NOT NULL,
    schedule_id      TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    -- Scheduling and leases. next_run_at NULL: nothing to do until an operator acts.
    next_run_at      INTEGER,
    lease_owner      TEXT,
    lease_until      INTEGER,
    fence            INTEGER NOT NULL DEFAULT 0,  -- bumped on every claim; stale workers' writes fail
    operator_seq     INTEGER NOT NULL DEFAULT 0   -- bumped by cancel/resume/amend, so a lease holder reloads
);
-- Claims look for due jobs nobody holds, then for leases that lapsed under a dead worker;
-- held jobs stay out of the first index, so a claim never walks past them.
CREATE INDEX jobs_due ON jobs (next_run_at) WHERE next_run_at IS NOT NULL AND lease_owner IS NULL;
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE lease_owner IS NOT NULL;
CREATE INDEX jobs_by_tenant ON jobs (tenant, id);
CREATE INDEX jobs_by_cluster ON jobs (cluster, id);

CREATE TABLE node_tasks (
    job_id        TEXT NOT NULL REFERENCES jobs (id),
    name          TEXT NOT NULL,
    seq           INTEGER NOT NULL,            -- order given in the request
    spec          TEXT NOT NULL,               -- JSON; amended by PATCH while needs_input
    state         TEXT NOT NULL,               -- the workflow state name
    status        TEXT NOT NULL,               -- model::NodeStatus
    attempt       INTEGER NOT NULL DEFAULT 0,  -- failed attempts in the current state
    attempts_total INTEGER NOT NULL DEFAULT 0, -- step runs across the node's life
    entered_at    INTEGER NOT NULL,            -- when the node entered its current state
    wake_at       INTEGER,
    wait_reason   TEXT,
    failure_class TEXT,
    last_error    TEXT,
    external_ids  TEXT NOT NULL DEFAULT '{}',  -- what the node's steps created, recorded before moving on
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (job_id, name)
);

CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     TEXT NOT NULL,
    at         INTEGER NOT NULL,
    node       TEXT,
    kind       TEXT NOT NULL,                 -- model::EventKind
    from_state TEXT,
    to_state   TEXT,
    attempt    INTEGER,
    class      TEXT,                          -- model::FailureClass
    message    TEXT,
    data       TEXT                           -- JSON
);
CREATE INDEX events_by_job ON events (job_id, id);
CREATE TRIGGER events_are_append_only_u BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_are_append_only_d BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

-- One row per node some job is acting on: two jobs never act on the same node at once.
CREATE TABLE node_locks (
    cluster     TEXT NOT NULL,
    node        TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    acquired_at INTEGER NOT NULL,
    PRIMARY KEY (cluster, node)
);

-- Keys are each user's own: another user's key never returns (or reveals) your job.
CREATE TABLE idempotency_keys (
    tenant     TEXT NOT NULL,
    owner      TEXT NOT NULL,
    key        TEXT NOT NULL,
    request    TEXT NOT NULL,                 -- canonical JSON of the first request
    job_id     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, owner, key)
);

CREATE TABLE schedules (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    owner         TEXT NOT NULL,
    name          TEXT NOT NULL,
    cron          TEXT NOT NULL,
    template      TEXT NOT NULL,              -- a job request, as POST /v1/jobs takes it
    enabled       INTEGER NOT NULL DEFAULT 1,
    next_fire_at  INTEGER NOT NULL,
    last_fired_at INTEGER,
    last_job_id   TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (tenant, name)
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE enabled = 1;
