-- Capstan's engine schema on PostgreSQL: the same tables, columns and rules as the SQLite
-- schema (migrations/sqlite, 0001 to 0003 together), in PostgreSQL's types. Times are Unix
-- milliseconds (UTC, BIGINT); JSON is stored as TEXT, as the SQLite store keeps it, so both
-- stores hand the engine the same rows.

-- Marks the database as Capstan's, so `serve` refuses one that belongs to something else.
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
    params           TEXT NOT NULL,
    state            TEXT NOT NULL,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    deadline_at      BIGINT,
    concurrency      BIGINT NOT NULL,
    schedule_id      TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    next_run_at      BIGINT,
    lease_owner      TEXT,
    lease_until      BIGINT,
    fence            BIGINT NOT NULL DEFAULT 0,
    operator_seq     BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX jobs_due ON jobs (next_run_at) WHERE next_run_at IS NOT NULL AND lease_owner IS NULL;
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE lease_owner IS NOT NULL;
CREATE INDEX jobs_by_tenant ON jobs (tenant, id);
CREATE INDEX jobs_by_cluster ON jobs (cluster, id);

CREATE TABLE node_tasks (
    job_id         TEXT NOT NULL REFERENCES jobs (id),
    name           TEXT NOT NULL,
    seq            BIGINT NOT NULL,
    spec           TEXT NOT NULL,
    state          TEXT NOT NULL,
    status         TEXT NOT NULL,
    attempt        BIGINT NOT NULL DEFAULT 0,
    attempts_total BIGINT NOT NULL DEFAULT 0,
    entered_at     BIGINT NOT NULL,
    wake_at        BIGINT,
    wait_reason    TEXT,
    failure_class  TEXT,
    last_error     TEXT,
    external_ids   TEXT NOT NULL DEFAULT '{}',
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (job_id, name)
);

CREATE TABLE events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     TEXT NOT NULL,
    at         BIGINT NOT NULL,
    node       TEXT,
    kind       TEXT NOT NULL,
    from_state TEXT,
    to_state   TEXT,
    attempt    BIGINT,
    class      TEXT,
    message    TEXT,
    data       TEXT
);
CREATE INDEX events_by_job ON events (job_id, id);
CREATE FUNCTION capstan_events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END;
$$;
CREATE TRIGGER events_are_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION capstan_events_are_append_only();
CREATE TRIGGER events_are_append_only_t BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION capstan_events_are_append_only();

CREATE TABLE node_locks (
    cluster     TEXT NOT NULL,
    node        TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    acquired_at BIGINT NOT NULL,
    PRIMARY KEY (cluster, node)
);

CREATE TABLE idempotency_keys (
    tenant     TEXT NOT NULL,
    owner      TEXT NOT NULL,
    key        TEXT NOT NULL,
    request    TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, owner, key)
);

CREATE TABLE schedules (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    owner         TEXT NOT NULL,
    name          TEXT NOT NULL,
    cron          TEXT NOT NULL,
    template      TEXT NOT NULL,
    enabled       BOOLEAN NOT NULL DEFAULT TRUE,
    next_fire_at  BIGINT NOT NULL,
    last_fired_at BIGINT,
    last_job_id   TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    last_error    TEXT,
    last_error_at BIGINT,
    UNIQUE (tenant, name)
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE enabled;
