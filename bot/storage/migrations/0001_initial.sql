-- 0001: guild balances, the append-only credit ledger, jobs, guild settings, app state.
--
-- Conventions
--   * Every timestamp is UTC ISO-8601 text with microseconds and an explicit
--     offset, e.g. 2024-05-01T12:34:56.123456+00:00, so text order is time order.
--   * Tables are STRICT: a value of the wrong type is an error, never coerced.
--   * Discord ids (snowflakes) are positive 64-bit integers.
--   * The ledger is append-only (triggers below); a guild's balance always
--     equals the sum of its ledger deltas.

CREATE TABLE guilds (
    guild_id   INTEGER PRIMARY KEY CHECK (guild_id > 0),
    balance    INTEGER NOT NULL CHECK (balance >= 0),
    created_at TEXT    NOT NULL CHECK (created_at LIKE '____-__-__T__:__:__.______+00:00'),
    updated_at TEXT    NOT NULL CHECK (updated_at LIKE '____-__-__T__:__:__.______+00:00')
) STRICT;

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id         INTEGER NOT NULL REFERENCES guilds (guild_id),
    channel_id       INTEGER NOT NULL CHECK (channel_id > 0),
    user_id          INTEGER NOT NULL CHECK (user_id > 0),
    params           TEXT    NOT NULL CHECK (json_valid(params) AND json_type(params) = 'object'),
    cost             INTEGER NOT NULL CHECK (cost > 0),
    units_per_image  INTEGER NOT NULL CHECK (units_per_image > 0),
    images_total     INTEGER NOT NULL CHECK (images_total > 0),
    images_delivered INTEGER NOT NULL DEFAULT 0,
    status           TEXT    NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'refunded')),
    message_id       INTEGER CHECK (message_id > 0),
    error            TEXT,
    parent_job_id    INTEGER REFERENCES jobs (id),
    created_at       TEXT    NOT NULL CHECK (created_at LIKE '____-__-__T__:__:__.______+00:00'),
    updated_at       TEXT    NOT NULL CHECK (updated_at LIKE '____-__-__T__:__:__.______+00:00'),
    finished_at      TEXT    CHECK (finished_at LIKE '____-__-__T__:__:__.______+00:00'),
    CHECK (cost = units_per_image * images_total),
    CHECK (images_delivered BETWEEN 0 AND images_total),
    -- open jobs have no finish time, settled jobs always have one
    CHECK ((status IN ('queued', 'running')) = (finished_at IS NULL)),
    CHECK (status <> 'succeeded' OR images_delivered > 0),
    CHECK (status <> 'refunded' OR images_delivered = 0)
) STRICT;

-- recovery and the per-user queue limit look for open (queued/running) jobs
CREATE INDEX jobs_status ON jobs (status);
-- daily caps: a member's jobs in a guild since midnight UTC
CREATE INDEX jobs_guild_user_time ON jobs (guild_id, user_id, created_at);

CREATE TABLE ledger (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id      INTEGER NOT NULL REFERENCES guilds (guild_id),
    user_id       INTEGER CHECK (user_id > 0),
    job_id        INTEGER REFERENCES jobs (id),
    delta         INTEGER NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('grant', 'set', 'reserve', 'refund', 'commit')),
    actor_id      INTEGER CHECK (actor_id > 0),
    note          TEXT,
    balance_after INTEGER NOT NULL CHECK (balance_after >= 0),
    created_at    TEXT    NOT NULL CHECK (created_at LIKE '____-__-__T__:__:__.______+00:00'),
    -- what each kind of entry may look like
    CHECK (CASE kind
        WHEN 'grant'   THEN delta >= 0 AND job_id IS NULL
        WHEN 'set'     THEN job_id IS NULL
        WHEN 'reserve' THEN delta < 0 AND job_id IS NOT NULL
        WHEN 'refund'  THEN delta > 0 AND job_id IS NOT NULL
        WHEN 'commit'  THEN delta = 0 AND job_id IS NOT NULL
    END)
) STRICT;

-- a guild's statement, newest first
CREATE INDEX ledger_guild_time ON ledger (guild_id, created_at);
-- a job is reserved, committed and refunded at most once each
CREATE UNIQUE INDEX ledger_job_kind ON ledger (job_id, kind) WHERE job_id IS NOT NULL;

CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'ledger entries are append-only');
END;

CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'ledger entries are append-only');
END;

CREATE TABLE guild_settings (
    guild_id              INTEGER PRIMARY KEY REFERENCES guilds (guild_id),
    daily_user_cap        INTEGER CHECK (daily_user_cap >= 0),
    allowed_channel_ids   TEXT    NOT NULL DEFAULT '[]'
                          CHECK (json_valid(allowed_channel_ids) AND json_type(allowed_channel_ids) = 'array'),
    blocked_words         TEXT    NOT NULL DEFAULT '[]'
                          CHECK (json_valid(blocked_words) AND json_type(blocked_words) = 'array'),
    low_balance_threshold INTEGER CHECK (low_balance_threshold >= 0),
    notice_channel_id     INTEGER CHECK (notice_channel_id > 0),
    low_balance_notified  INTEGER NOT NULL DEFAULT 0 CHECK (low_balance_notified IN (0, 1)),
    updated_at            TEXT    NOT NULL CHECK (updated_at LIKE '____-__-__T__:__:__.______+00:00')
) STRICT;

CREATE TABLE app_state (
    key        TEXT PRIMARY KEY CHECK (length(key) > 0),
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL CHECK (updated_at LIKE '____-__-__T__:__:__.______+00:00')
) STRICT;
