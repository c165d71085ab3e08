-- 0002 (PostgreSQL): which process runs each job, for crash recovery with several
-- processes (shards) on one database.
--
-- A process picks an owner id when it starts (host, pid and a random part),
-- stamps it on the jobs it reserves and keeps job_owners.heartbeat_at fresh.
-- Recovery at start-up then refunds only open jobs that are its own, that have
-- no owner (written before this migration, or by a single-process setup), or
-- whose owner has not sent a heartbeat for a while: a live shard's running jobs
-- are left alone. Unused until the Storage interface passes an owner; NULL
-- (no owner) keeps today's single-process behaviour.

ALTER TABLE jobs ADD COLUMN owner text CHECK (length(owner) BETWEEN 1 AND 200);

CREATE TABLE job_owners (
    owner        text        PRIMARY KEY CHECK (length(owner) BETWEEN 1 AND 200),
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL
);

-- recovery: open jobs by owner
CREATE INDEX jobs_open_owner ON jobs (owner) WHERE status IN ('queued', 'running');
