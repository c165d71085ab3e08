-- 0001 (PostgreSQL): guild balances, the append-only credit ledger, jobs, guild
-- settings, app state. The same tables and rules as migrations/0001_initial.sql
-- for SQLite, in PostgreSQL terms.
--
-- Conventions
--   * Every timestamp is timestamptz (UTC instants).
--   * Discord ids (snowflakes) are positive bigints.
--   * The ledger is append-only (trigger below); a guild's balance always
--     equals the sum of its ledger deltas.
--   * Applied in one transaction by bot/storage/postgres.py, which records it in
--     schema_migrations under an advisory lock.

CREATE TABLE guilds (
    guild_id   bigint      PRIMARY KEY CHECK (guild_id > 0),
    balance    bigint      NOT NULL CHECK (balance >= 0),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE jobs (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    guild_id         bigint      NOT NULL REFERENCES guilds (guild_id),
    channel_id       bigint      NOT NULL CHECK (channel_id > 0),
    user_id          bigint      NOT NULL CHECK (user_id > 0),
    -- json, not jsonb: kept exactly as written, like the SQLite text column
    params           json        NOT NULL CHECK (json_typeof(params) = 'object'),
    cost             bigint      NOT NULL CHECK (cost > 0),
    units_per_image  bigint      NOT NULL CHECK (units_per_image > 0),
    images_total     bigint      NOT NULL CHECK (images_total > 0),
    images_delivered bigint      NOT NULL DEFAULT 0,
    status           text        NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'refunded')),
    message_id       bigint      CHECK (message_id > 0),
    error            text,
    parent_job_id    bigint      REFERENCES jobs (id),
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    CHECK (cost = units_per_image * images_total),
    CHECK (images_delivered BETWEEN 0 AND images_total),
    -- open jobs have no finish time, settled jobs always have one
    CHECK ((status IN ('queued', 'running')) = (finished_at IS NULL)),
    CHECK (status <> 'succeeded' OR images_delivered > 0),
    CHECK (status <> 'refunded' OR images_delivered = 0)
);

-- recovery and the per-user queue limit look for open (queued/running) jobs
CREATE INDEX jobs_open ON jobs (id) WHERE status IN ('queued', 'running');
-- daily caps: a member's jobs in a guild since midnight UTC
CREATE INDEX jobs_guild_user_time ON jobs (guild_id, user_id, created_at);

CREATE TABLE ledger (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    guild_id      bigint      NOT NULL REFERENCES guilds (guild_id),
    user_id       bigint      CHECK (user_id > 0),
    job_id        bigint      REFERENCES jobs (id),
    delta         bigint      NOT NULL,
    kind          text        NOT NULL CHECK (kind IN ('grant', 'set', 'reserve', 'refund', 'commit')),
    actor_id      bigint      CHECK (actor_id > 0),
    note          text,
    balance_after bigint      NOT NULL CHECK (balance_after >= 0),
    created_at    timestamptz NOT NULL,
    -- what each kind of entry may look like
    CHECK (CASE kind
        WHEN 'grant'   THEN delta >= 0 AND job_id IS NULL
        WHEN 'set'     THEN job_id IS NULL
        WHEN 'reserve' THEN delta < 0 AND job_id IS NOT NULL
        WHEN 'refund'  THEN delta > 0 AND job_id IS NOT NULL
        WHEN 'commit'  THEN delta = 0 AND job_id IS NOT NULL
    END)
);

-- a guild's statement, newest first
CREATE INDEX ledger_guild_time ON ledger (guild_id, created_at, id);
-- a job is reserved, committed and refunded at most once each
CREATE UNIQUE INDEX ledger_job_kind ON ledger (job_id, kind) WHERE job_id IS NOT NULL;

CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are append-only'
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$;

CREATE TRIGGER ledger_no_update_or_delete BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();

CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

CREATE TABLE guild_settings (
    guild_id              bigint      PRIMARY KEY REFERENCES guilds (guild_id),
    daily_user_cap        bigint      CHECK (daily_user_cap >= 0),
    allowed_channel_ids   bigint[]    NOT NULL DEFAULT '{}'
                          CHECK (coalesce(array_ndims(allowed_channel_ids), 1) = 1
                                 AND array_position(allowed_channel_ids, NULL) IS NULL
                                 AND 0 < ALL (allowed_channel_ids)),
    blocked_words         text[]      NOT NULL DEFAULT '{}'
                          CHECK (coalesce(array_ndims(blocked_words), 1) = 1
                                 AND array_position(blocked_words, NULL) IS NULL),
    low_balance_threshold bigint      CHECK (low_balance_threshold >= 0),
    notice_channel_id     bigint      CHECK (notice_channel_id > 0),
    low_balance_notified  boolean     NOT NULL DEFAULT false,
    updated_at            timestamptz NOT NULL
);

CREATE TABLE app_state (
    key        text        PRIMARY KEY CHECK (length(key) > 0),
    value      text        NOT NULL,
    updated_at timestamptz NOT NULL
);
