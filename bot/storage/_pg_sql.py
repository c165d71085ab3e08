"""The PostgreSQL backend's statements and how its rows become records.

Statements use ``:name`` parameters (compiled to ``$n`` by
:func:`bot.storage._pg_setup.query`); the only text ever formatted into SQL is
constant (column lists, fragments below) or whitelisted column names.

Time: ``:now`` is the test clock's instant, or NULL for the server's clock
(``statement_timestamp()``). Every statement that writes a ledger entry runs
after its transaction locked the guild row, so a guild's entries are stamped in
the order their transactions commit.
"""

from __future__ import annotations

import json
from typing import Final

import asyncpg

from bot.storage.records import GuildSettings, JobRecord, JobStatus, LedgerEntry, LedgerKind

NOW: Final = "COALESCE(:now::timestamptz, statement_timestamp())"
TODAY: Final = f"(date_trunc('day', {NOW} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"

JOB_COLUMNS: Final = (
    "id, guild_id, channel_id, user_id, params, cost, units_per_image, images_total, "
    "images_delivered, status, message_id, error, parent_job_id, created_at, updated_at, owner, "
    "delivering_at"
)
LEDGER_COLUMNS: Final = (
    "id, guild_id, user_id, job_id, delta, kind, actor_id, note, created_at, balance_after"
)
SETTINGS_COLUMNS: Final = (
    "guild_id, daily_user_cap, allowed_channel_ids, blocked_words, "
    "low_balance_threshold, notice_channel_id"
)
WRITABLE_SETTINGS: Final = frozenset(
    {
        "daily_user_cap",
        "allowed_channel_ids",
        "blocked_words",
        "low_balance_threshold",
        "notice_channel_id",
    }
)
SETTINGS_TYPES: Final = {
    "daily_user_cap": "bigint",
    "allowed_channel_ids": "bigint[]",
    "blocked_words": "text[]",
    "low_balance_threshold": "bigint",
    "notice_channel_id": "bigint",
}

# -- guilds ----------------------------------------------------------------------------

GET_BALANCE: Final = "SELECT balance FROM guilds WHERE guild_id = :guild_id"

# Every unit of work that moves a guild's money starts here: the row lock
# serialises them, and the statements after it see everything committed before.
LOCK_GUILD: Final = "SELECT balance FROM guilds WHERE guild_id = :guild_id FOR UPDATE"

# A new guild and its default GRANT, in one statement. Concurrent creators wait
# on the primary key; the losers get no row and lock the winner's row instead.
CREATE_GUILD: Final = f"""
    WITH g AS (
        INSERT INTO guilds (guild_id, balance, created_at, updated_at)
        VALUES (:guild_id, :default_credits, {NOW}, {NOW})
        ON CONFLICT (guild_id) DO NOTHING
        RETURNING guild_id, balance, created_at
    ), e AS (
        INSERT INTO ledger (guild_id, delta, kind, note, balance_after, created_at)
        SELECT guild_id, balance, 'grant', 'default credits for a new guild', balance, created_at
          FROM g
    )
    SELECT balance FROM g
"""


def _rearm(balance: str) -> str:
    """A CTE re-arming the low-balance notice once ``balance`` is back at/above the threshold."""
    return f"""
    n AS (
        UPDATE guild_settings SET low_balance_notified = false
         WHERE guild_id = :guild_id AND low_balance_notified
           AND ({balance}) IS NOT NULL
           AND (low_balance_threshold IS NULL OR ({balance}) >= low_balance_threshold)
    )"""


GRANT: Final = f"""
    WITH g AS (
        UPDATE guilds SET balance = balance + :amount::bigint, updated_at = {NOW}
         WHERE guild_id = :guild_id AND balance + :amount::bigint <= :max_balance::bigint
        RETURNING balance, updated_at
    ), e AS (
        INSERT INTO ledger (guild_id, delta, kind, actor_id, note, balance_after, created_at)
        SELECT :guild_id, :amount::bigint, 'grant', :actor_id::bigint, :note::text,
               balance, updated_at
          FROM g
    ), {_rearm("SELECT balance FROM g")}
    SELECT balance FROM g
"""

SET_BALANCE: Final = f"""
    WITH g AS (
        UPDATE guilds SET balance = :amount::bigint, updated_at = {NOW}
         WHERE guild_id = :guild_id
        RETURNING balance, updated_at
    ), e AS (
        INSERT INTO ledger (guild_id, delta, kind, actor_id, note, balance_after, created_at)
        SELECT :guild_id, :amount::bigint - :old::bigint, 'set', :actor_id::bigint, :note::text,
               balance, updated_at
          FROM g
    ), {_rearm("SELECT balance FROM g")}
    SELECT balance FROM g
"""

# -- jobs ------------------------------------------------------------------------------

# What a member's jobs created since midnight UTC cost, net of refunds.
USAGE: Final = f"""
    SELECT COALESCE(-SUM(l.delta), 0)::bigint
      FROM jobs AS j
      JOIN ledger AS l ON l.job_id = j.id AND l.kind IN ('reserve', 'refund')
     WHERE j.guild_id = :guild_id AND j.user_id = :user_id AND j.created_at >= {TODAY}
"""

# The member's open jobs in the guild (any owner), for NewJob.max_active. A job
# whose result is posted (message_id set) no longer counts, though not yet settled.
OPEN_JOBS_OF_MEMBER: Final = """
    SELECT COUNT(*) FROM jobs
     WHERE guild_id = :guild_id AND user_id = :user_id::bigint
       AND status IN ('queued', 'running') AND message_id IS NULL
"""

# The reservation: ONE conditional UPDATE checks the parent, the member's open
# jobs (when :max_active is not NULL), the daily cap and the balance and debits
# (or matches no row and changes nothing); the job and its RESERVE entry are
# written by the same statement. It runs after LOCK_GUILD, so its snapshot
# already holds every earlier reservation, refund and settled job of the guild.
RESERVE: Final = f"""
    WITH d AS (
        UPDATE guilds SET balance = balance - :cost::bigint, updated_at = {NOW}
         WHERE guild_id = :guild_id
           AND balance >= :cost::bigint
           AND (:parent_job_id::bigint IS NULL
                OR EXISTS (SELECT 1 FROM jobs WHERE id = :parent_job_id::bigint))
           AND (:max_active::bigint IS NULL
                OR ({OPEN_JOBS_OF_MEMBER}) < :max_active::bigint)
           AND NOT EXISTS (
                SELECT 1 FROM guild_settings AS s
                 WHERE s.guild_id = :guild_id
                   AND s.daily_user_cap IS NOT NULL
                   AND :cost::bigint + ({USAGE}) > s.daily_user_cap)
        RETURNING balance
    ), j AS (
        INSERT INTO jobs (guild_id, channel_id, user_id, params, cost, units_per_image,
                          images_total, status, parent_job_id, created_at, updated_at, owner)
        SELECT :guild_id, :channel_id::bigint, :user_id::bigint, :params::json, :cost::bigint,
               :units_per_image::bigint, :images_total::bigint, 'queued',
               :parent_job_id::bigint, {NOW}, {NOW}, :owner::text
          FROM d
        RETURNING {JOB_COLUMNS}
    ), e AS (
        INSERT INTO ledger (guild_id, user_id, job_id, delta, kind, note, balance_after,
                            created_at)
        SELECT j.guild_id, j.user_id, j.id, -j.cost, 'reserve', :note::text, d.balance,
               j.created_at
          FROM j CROSS JOIN d
    )
    SELECT d.balance AS balance, j.* FROM j CROSS JOIN d
"""

# Why RESERVE matched nothing (same transaction, guild still locked).
RESERVE_REFUSAL: Final = f"""
    SELECT (SELECT balance FROM guilds WHERE guild_id = :guild_id) AS balance,
           (:parent_job_id::bigint IS NULL
            OR EXISTS (SELECT 1 FROM jobs WHERE id = :parent_job_id::bigint)) AS parent_ok,
           ({OPEN_JOBS_OF_MEMBER}) AS active,
           (SELECT daily_user_cap FROM guild_settings WHERE guild_id = :guild_id) AS cap,
           ({USAGE}) AS used
"""

START_JOB: Final = f"""
    UPDATE jobs SET status = 'running', updated_at = {NOW}
     WHERE id = :job_id AND status = 'queued'
    RETURNING {JOB_COLUMNS}
"""

GET_JOB: Final = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = :job_id"

LIST_JOBS: Final = f"""
    SELECT {JOB_COLUMNS} FROM jobs
     WHERE status = ANY (:statuses::text[])
       AND (:guild_id::bigint IS NULL OR guild_id = :guild_id::bigint)
     ORDER BY id
"""

# Lock the guild of a job before settling it (no row: no such job).
LOCK_JOB_GUILD: Final = """
    SELECT g.balance
      FROM jobs AS j JOIN guilds AS g ON g.guild_id = j.guild_id
     WHERE j.id = :job_id
       FOR UPDATE OF g
"""

# Settle an open job: the conditions are checked by the UPDATE of the job; the
# COMMIT entry (delta 0) and the REFUND entry (crediting :refunded back) are
# inserted in that order, and only when their amount is > 0. :balance is the
# guild's balance read under the lock.
FINISH_JOB: Final = f"""
    WITH f AS (
        UPDATE jobs
           SET status = :status, images_delivered = :delivered::bigint, error = :error::text,
               updated_at = {NOW}, finished_at = {NOW}
         WHERE id = :job_id
           AND status IN ('queued', 'running')
           AND cost = :committed::bigint + :refunded::bigint
           AND units_per_image * :delivered::bigint = :committed::bigint
        RETURNING {JOB_COLUMNS}
    ), g AS (
        UPDATE guilds SET balance = balance + :refunded::bigint, updated_at = {NOW}
         WHERE :refunded::bigint > 0 AND guild_id = (SELECT guild_id FROM f)
        RETURNING balance
    ), e AS (
        INSERT INTO ledger (guild_id, user_id, job_id, delta, kind, note, balance_after,
                            created_at)
        SELECT f.guild_id, f.user_id, f.id, v.delta, v.kind, v.note, v.balance_after,
               f.updated_at
          FROM f CROSS JOIN (VALUES
                (1, 0::bigint, 'commit', :commit_note::text, :balance::bigint),
                (2, :refunded::bigint, 'refund', :refund_note::text,
                 :balance::bigint + :refunded::bigint)
               ) AS v (position, delta, kind, note, balance_after)
         WHERE (v.position = 1 AND :committed::bigint > 0)
            OR (v.position = 2 AND :refunded::bigint > 0)
         ORDER BY v.position
    ), n AS (
        UPDATE guild_settings SET low_balance_notified = false
         WHERE :refunded::bigint > 0 AND guild_id = (SELECT guild_id FROM f)
           AND low_balance_notified
           AND (low_balance_threshold IS NULL
                OR :balance::bigint + :refunded::bigint >= low_balance_threshold)
    )
    SELECT f.*, :balance::bigint + :refunded::bigint AS balance FROM f
"""

# Record that the result is about to be posted; only an open job may be delivered.
MARK_DELIVERING: Final = f"""
    UPDATE jobs SET delivering_at = {NOW}, updated_at = {NOW}
     WHERE id = :job_id AND status IN ('queued', 'running')
    RETURNING {JOB_COLUMNS}
"""

SET_JOB_MESSAGE: Final = f"""
    UPDATE jobs SET message_id = :message_id::bigint, updated_at = {NOW} WHERE id = :job_id
"""

# -- processes sharing the database ---------------------------------------------------

# Advisory locks, in the two-int4 form (the migration lock uses a bigint key):
# a class per use. The rate windows' locks are transaction locks; the API slots
# and the owners' liveness locks are session locks (see _pg_locks.py), in
# classes of their own so they never meet the transaction locks of older code.
RATE_LOCK_CLASS: Final = int.from_bytes(b"rate", "big")
API_SLOT_LOCK_CLASS: Final = int.from_bytes(b"apis", "big")
OWNER_LOCK_CLASS: Final = int.from_bytes(b"ownr", "big")

# The held advisory locks of OWNER_LOCK_CLASS in this database: key, holder.
_HELD_OWNER_KEYS: Final = f"""
    SELECT l.objid::bigint AS objid, l.pid FROM pg_locks AS l
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
       AND l.classid = {OWNER_LOCK_CLASS:d}::oid
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""

# A heartbeat also records the key of the owner's liveness lock.
HEARTBEAT: Final = f"""
    INSERT INTO job_owners (owner, started_at, heartbeat_at, lock_key)
    VALUES (:owner, {NOW}, {NOW}, :lock_key::integer)
    ON CONFLICT (owner) DO UPDATE
       SET heartbeat_at = excluded.heartbeat_at, lock_key = excluded.lock_key
"""

FORGET_OWNER: Final = "DELETE FROM job_owners WHERE owner = :owner"

# Owners with a liveness lock that nobody holds are dead: forget them (their
# open jobs stay recoverable: a job whose owner has no row is nobody's).
FORGET_DEAD_OWNERS: Final = f"""
    DELETE FROM job_owners
     WHERE lock_key IS NOT NULL
       AND lock_key::bigint NOT IN (SELECT objid FROM ({_HELD_OWNER_KEYS}) AS held)
"""

# Open jobs no live process works on: ours, unowned, or of an owner that is not
# live. Live: a heartbeat within :stale_after seconds and, for an owner with a
# liveness lock (job_owners.lock_key), that lock still held (its connection is
# open). :owner NULL: every open job.
RECOVERABLE_JOBS: Final = f"""
    WITH held AS ({_HELD_OWNER_KEYS}),
    live AS (
        SELECT o.owner FROM job_owners AS o
         WHERE o.heartbeat_at >= {NOW} - make_interval(secs => :stale_after::float8)
           AND (o.lock_key IS NULL OR o.lock_key::bigint IN (SELECT objid FROM held))
    )
    SELECT {JOB_COLUMNS} FROM jobs AS j
     WHERE j.status IN ('queued', 'running')
       AND (:owner::text IS NULL OR j.owner IS NULL OR j.owner = :owner::text
            OR j.owner NOT IN (SELECT owner FROM live))
     ORDER BY j.id
"""

# An owner that holds its liveness lock but sent no heartbeat for :stale_after
# seconds is frozen (its connections live on, its loop does not): end every
# session of its lock connections (named :app_prefix plus the owner's own tag),
# so the API slots it holds are free again. :owner (the caller) is spared.
# Returns how many sessions were ended.
FENCE_SILENT_OWNERS: Final = f"""
    WITH silent AS (
        SELECT h.pid FROM job_owners AS o
          JOIN ({_HELD_OWNER_KEYS}) AS h ON h.objid = o.lock_key::bigint
         WHERE o.heartbeat_at < {NOW} - make_interval(secs => :stale_after::float8)
           AND o.owner <> :owner::text
    ), tags AS (
        SELECT a.application_name FROM pg_stat_activity AS a JOIN silent USING (pid)
         WHERE starts_with(a.application_name, :app_prefix::text)
    )
    SELECT COUNT(*) FILTER (WHERE pg_terminate_backend(a.pid)) FROM pg_stat_activity AS a
     WHERE a.datname = current_database()
       AND a.application_name IN (SELECT application_name FROM tags)
       AND pg_has_role(a.usesysid, 'MEMBER')  -- whose sessions we may end: else an error
"""

# Session locks, run as they are on the dedicated lock connections ($1).
# The lowest free slot in [0, $1): the Limit above the scan stops at the first
# lock granted, so no other slot is taken.
TRY_SLOT: Final = f"""
    SELECT n FROM generate_series(0, $1::integer - 1) AS n
     WHERE pg_try_advisory_lock({API_SLOT_LOCK_CLASS:d}, n)
     LIMIT 1
"""
UNLOCK_SLOT: Final = f"SELECT pg_advisory_unlock({API_SLOT_LOCK_CLASS:d}, $1::integer)"
TRY_OWNER_LOCK: Final = f"SELECT pg_try_advisory_lock({OWNER_LOCK_CLASS:d}, $1::integer)"
UNLOCK_OWNER: Final = f"SELECT pg_advisory_unlock({OWNER_LOCK_CLASS:d}, $1::integer)"
HOLDS_OWNER_LOCK: Final = f"""
    SELECT EXISTS (SELECT 1 FROM ({_HELD_OWNER_KEYS}) AS held
                    WHERE held.objid = $1::bigint AND held.pid = pg_backend_pid())
"""

LOCK_RATE_KEY: Final = f"SELECT pg_advisory_xact_lock({RATE_LOCK_CLASS:d}, hashtext(:key::text))"

# Under LOCK_RATE_KEY, one statement: forget the key's calls that left the
# window, and record this one if fewer than :limit remain. (The CTEs share one
# snapshot, so the count skips the rows being deleted by itself.) ``wait``: the
# seconds until the oldest call in the window leaves it.
TAKE_RATE_TOKEN: Final = f"""
    WITH c AS (
        SELECT {NOW} AS now, {NOW} - make_interval(secs => :period::float8) AS cutoff
    ), gone AS (
        DELETE FROM api_calls WHERE key = :key::text AND at <= (SELECT cutoff FROM c)
    ), w AS (
        SELECT COUNT(*) AS used, MIN(a.at) AS oldest
          FROM api_calls AS a, c
         WHERE a.key = :key::text AND a.at > c.cutoff
    ), added AS (
        INSERT INTO api_calls (key, at)
        SELECT :key::text, c.now FROM c, w WHERE w.used < :limit::bigint
        RETURNING id
    )
    SELECT EXISTS (SELECT 1 FROM added) AS granted,
           EXTRACT(EPOCH FROM (w.oldest + make_interval(secs => :period::float8) - c.now))::float8
             AS wait
      FROM w, c
"""

# -- ledger ----------------------------------------------------------------------------

LEDGER_ENTRIES: Final = f"""
    SELECT {LEDGER_COLUMNS} FROM ledger WHERE guild_id = :guild_id
     ORDER BY created_at DESC, id DESC LIMIT :limit::bigint OFFSET :offset::bigint
"""

COUNT_LEDGER: Final = "SELECT COUNT(*) FROM ledger WHERE guild_id = :guild_id"

AUDIT_BALANCES: Final = """
    SELECT guild_id, balance, total FROM (
        SELECT g.guild_id, g.balance,
               COALESCE((SELECT SUM(l.delta) FROM ledger AS l WHERE l.guild_id = g.guild_id), 0)
                 AS total
          FROM guilds AS g
         WHERE :guild_id::bigint IS NULL OR g.guild_id = :guild_id::bigint) AS sums
     WHERE total <> balance
     ORDER BY guild_id
"""

# A job's entries must match its state: one reserve of -cost; open jobs have
# nothing else; settled jobs refunded exactly what they did not charge.
AUDIT_JOBS: Final = """
    SELECT j.id, j.guild_id, j.status, j.cost, r.delta AS reserve, f.delta AS refund,
           c.id AS commit_id
      FROM jobs AS j
      LEFT JOIN ledger AS r ON r.job_id = j.id AND r.kind = 'reserve'
      LEFT JOIN ledger AS f ON f.job_id = j.id AND f.kind = 'refund'
      LEFT JOIN ledger AS c ON c.job_id = j.id AND c.kind = 'commit'
     WHERE (:guild_id::bigint IS NULL OR j.guild_id = :guild_id::bigint)
       AND NOT COALESCE(
            r.delta = -j.cost
            AND CASE
                WHEN j.status IN ('queued', 'running') THEN f.id IS NULL AND c.id IS NULL
                WHEN j.status = 'succeeded' THEN c.id IS NOT NULL
                     AND COALESCE(f.delta, 0) = j.cost - j.units_per_image * j.images_delivered
                WHEN j.status = 'refunded' THEN c.id IS NULL AND f.delta = j.cost
                ELSE COALESCE(f.delta, 0) <= j.cost
            END, false)
     ORDER BY j.id
"""

# -- settings and state ----------------------------------------------------------------

GET_SETTINGS: Final = f"SELECT {SETTINGS_COLUMNS} FROM guild_settings WHERE guild_id = :guild_id"

# Re-arm the low-balance notice once the balance is back at/above the threshold
# (a statement of its own: it must see the settings just written).
REARM_NOTICE: Final = """
    UPDATE guild_settings SET low_balance_notified = false
     WHERE guild_id = :guild_id AND low_balance_notified
       AND (low_balance_threshold IS NULL
            OR (SELECT balance FROM guilds WHERE guild_id = :guild_id) >= low_balance_threshold)
"""

CLAIM_NOTICE: Final = """
    UPDATE guild_settings SET low_balance_notified = true
     WHERE guild_id = :guild_id AND NOT low_balance_notified
       AND low_balance_threshold IS NOT NULL
       AND (SELECT balance FROM guilds WHERE guild_id = :guild_id) < low_balance_threshold
"""

GET_STATE: Final = "SELECT value FROM app_state WHERE key = :key"

SET_STATE: Final = f"""
    INSERT INTO app_state (key, value, updated_at) VALUES (:key, :value, {NOW})
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
"""


def upsert_settings(names: list[str]) -> str:
    """INSERT … ON CONFLICT for the given (whitelisted) settings; returns the row."""
    unknown = set(names) - WRITABLE_SETTINGS
    if unknown:
        raise ValueError(f"unknown settings: {sorted(unknown)}")
    columns = "".join(f", {name}" for name in names)
    values = "".join(f", :{name}::{SETTINGS_TYPES[name]}" for name in names)
    updates = "".join(f", {name} = excluded.{name}" for name in names)
    return (
        f"INSERT INTO guild_settings (guild_id, updated_at{columns}) "
        f"VALUES (:guild_id, {NOW}{values}) ON CONFLICT (guild_id) "
        f"DO UPDATE SET updated_at = excluded.updated_at{updates} "
        f"RETURNING {SETTINGS_COLUMNS}"
    )


# -- rows to records ---------------------------------------------------------------------


def job_from_row(row: asyncpg.Record) -> JobRecord:
    return JobRecord(
        id=row["id"],
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        user_id=row["user_id"],
        params=json.loads(row["params"]),
        cost=row["cost"],
        units_per_image=row["units_per_image"],
        images_total=row["images_total"],
        images_delivered=row["images_delivered"],
        status=JobStatus(row["status"]),
        message_id=row["message_id"],
        error=row["error"],
        parent_job_id=row["parent_job_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        owner=row["owner"],
        delivering_at=row["delivering_at"],
    )


def entry_from_row(row: asyncpg.Record) -> LedgerEntry:
    return LedgerEntry(
        id=row["id"],
        guild_id=row["guild_id"],
        user_id=row["user_id"],
        job_id=row["job_id"],
        delta=row["delta"],
        kind=LedgerKind(row["kind"]),
        actor_id=row["actor_id"],
        note=row["note"],
        created_at=row["created_at"],
        balance_after=row["balance_after"],
    )


def settings_from_row(row: asyncpg.Record) -> GuildSettings:
    return GuildSettings(
        guild_id=row["guild_id"],
        daily_user_cap=row["daily_user_cap"],
        allowed_channel_ids=tuple(int(value) for value in row["allowed_channel_ids"]),
        blocked_words=tuple(str(value) for value in row["blocked_words"]),
        low_balance_threshold=row["low_balance_threshold"],
        notice_channel_id=row["notice_channel_id"],
    )


def clean_text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: notes, errors and words keep a visible stand-in."""
    return None if value is None else value.replace("\x00", "\ufffd")


def settings_value(name: str, value: object) -> object:
    if name == "blocked_words":
        assert isinstance(value, tuple | list)
        return [clean_text(str(word)) for word in value]
    if name == "allowed_channel_ids":
        assert isinstance(value, tuple | list)
        return list(value)
    return value
