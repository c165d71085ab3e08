-- 0002: several processes on one database. The same tables as PostgreSQL's
-- pg_migrations/0002_job_owners.sql and 0003_coordination.sql, in SQLite terms
-- (a SQLite database is normally used by one bot process, but operator CLIs
-- and a second process on the same host must still see consistent state).
--
--   * jobs.owner: the process that runs the job; job_owners: when each process
--     last sent a heartbeat. Recovery refunds open jobs whose owner is itself,
--     missing, or silent; a live process's jobs are left alone. NULL (no owner)
--     keeps the single-process behaviour.
--   * api_slots: a fixed set of numbered API-call slots, each held by one owner
--     until it is released or its expires_at passes.
--   * api_calls: one row per recent API request under a rate-limit key (a
--     sliding window); rows older than the window are deleted as calls come in.

ALTER TABLE jobs ADD COLUMN owner TEXT CHECK (length(owner) BETWEEN 1 AND 200);

CREATE TABLE job_owners (
    owner        TEXT PRIMARY KEY CHECK (length(owner) BETWEEN 1 AND 200),
    started_at   TEXT NOT NULL CHECK (started_at LIKE '____-__-__T__:__:__.______+00:00'),
    heartbeat_at TEXT NOT NULL CHECK (heartbeat_at LIKE '____-__-__T__:__:__.______+00:00')
) STRICT;

-- recovery: open jobs by owner
CREATE INDEX jobs_open_owner ON jobs (owner) WHERE status IN ('queued', 'running');
-- the per-member limit on open jobs (NewJob.max_active)
CREATE INDEX jobs_open_member ON jobs (guild_id, user_id) WHERE status IN ('queued', 'running');

CREATE TABLE api_slots (
    slot       INTEGER PRIMARY KEY CHECK (slot >= 0),
    owner      TEXT    CHECK (length(owner) BETWEEN 1 AND 200),
    expires_at TEXT    CHECK (expires_at LIKE '____-__-__T__:__:__.______+00:00'),
    -- a slot is free (both NULL) or held until a given time
    CHECK ((owner IS NULL) = (expires_at IS NULL))
) STRICT;

CREATE INDEX api_slots_owner ON api_slots (owner) WHERE owner IS NOT NULL;

CREATE TABLE api_calls (
    id  INTEGER PRIMARY KEY,
    key TEXT NOT NULL CHECK (length(key) > 0),
    at  TEXT NOT NULL CHECK (at LIKE '____-__-__T__:__:__.______+00:00')
) STRICT;

CREATE INDEX api_calls_key_at ON api_calls (key, at);
