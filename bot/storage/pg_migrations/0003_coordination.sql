-- 0003 (PostgreSQL): what several processes (shards) on one database share
-- besides job owners (0002): the API-call slots, the request rate, and the
-- per-member limit on open jobs.
--
--   * api_slots: a fixed set of numbered API-call slots, each held by one owner
--     until it is released or its expires_at passes. Taken under a transaction
--     advisory lock, so two processes never hold the same slot.
--   * api_calls: one row per recent API request under a rate-limit key (a
--     sliding window), written under an advisory lock per key; rows older than
--     the window are deleted as calls come in.

CREATE TABLE api_slots (
    slot       integer     PRIMARY KEY CHECK (slot >= 0),
    owner      text        CHECK (length(owner) BETWEEN 1 AND 200),
    expires_at timestamptz,
    -- a slot is free (both NULL) or held until a given time
    CHECK ((owner IS NULL) = (expires_at IS NULL))
);

CREATE INDEX api_slots_owner ON api_slots (owner) WHERE owner IS NOT NULL;

CREATE TABLE api_calls (
    id  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key text        NOT NULL CHECK (length(key) > 0),
    at  timestamptz NOT NULL
);

CREATE INDEX api_calls_key_at ON api_calls (key, at);

-- the per-member limit on open jobs (NewJob.max_active), counted under the guild lock
CREATE INDEX jobs_open_member ON jobs (guild_id, user_id) WHERE status IN ('queued', 'running');
