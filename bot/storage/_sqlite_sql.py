"""The SQLite backend's statements and how its rows become records.

Named parameters (``:guild_id``) throughout; the only text ever formatted into
SQL is constant (column lists) or whitelisted column names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from bot.storage._sqlite_setup import parse_timestamp
from bot.storage.records import GuildSettings, JobRecord, JobStatus, LedgerEntry, LedgerKind

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
LIST_SETTINGS: Final = frozenset({"allowed_channel_ids", "blocked_words"})

# What a member's jobs created since :since cost, net of refunds.
USAGE: Final = """
    SELECT COALESCE(-SUM(l.delta), 0)
      FROM jobs AS j
      JOIN ledger AS l ON l.job_id = j.id AND l.kind IN ('reserve', 'refund')
     WHERE j.guild_id = :guild_id AND j.user_id = :user_id AND j.created_at >= :since
"""

# The reservation itself: one conditional statement that checks the daily cap
# and the balance and debits, or matches no row and changes nothing.
DEBIT: Final = f"""
    UPDATE guilds
       SET balance = balance - :cost, updated_at = :now
     WHERE guild_id = :guild_id
       AND balance >= :cost
       AND NOT EXISTS (
            SELECT 1 FROM guild_settings AS s
             WHERE s.guild_id = :guild_id
               AND s.daily_user_cap IS NOT NULL
               AND :cost + ({USAGE}) > s.daily_user_cap)
    RETURNING balance
"""

CAP_AND_USAGE: Final = f"""
    SELECT (SELECT daily_user_cap FROM guild_settings WHERE guild_id = :guild_id), ({USAGE})
"""

# The member's open jobs in the guild, for NewJob.max_active (any owner). A job
# whose result is posted (message_id set) no longer counts, though not yet settled.
OPEN_JOBS_OF_MEMBER: Final = """
    SELECT COUNT(*) FROM jobs
     WHERE guild_id = :guild_id AND user_id = :user_id AND status IN ('queued', 'running')
       AND message_id IS NULL
"""

# Record that the result is about to be posted; only an open job may be delivered.
MARK_DELIVERING: Final = f"""
    UPDATE jobs SET delivering_at = :now, updated_at = :now
     WHERE id = :job_id AND status IN ('queued', 'running')
    RETURNING {JOB_COLUMNS}
"""

INSERT_JOB: Final = f"""
    INSERT INTO jobs (guild_id, channel_id, user_id, params, cost, units_per_image,
                      images_total, status, parent_job_id, created_at, updated_at, owner)
    VALUES (:guild_id, :channel_id, :user_id, :params, :cost, :units_per_image,
            :images_total, 'queued', :parent_job_id, :now, :now, :owner)
    RETURNING {JOB_COLUMNS}
"""

INSERT_LEDGER: Final = """
    INSERT INTO ledger (guild_id, user_id, job_id, delta, kind, actor_id, note,
                        balance_after, created_at)
    VALUES (:guild_id, :user_id, :job_id, :delta, :kind, :actor_id, :note,
            :balance_after, :now)
"""

# A COMMIT entry (delta 0) records the balance as it stands.
INSERT_COMMIT_ENTRY: Final = """
    INSERT INTO ledger (guild_id, user_id, job_id, delta, kind, actor_id, note,
                        balance_after, created_at)
    VALUES (:guild_id, :user_id, :job_id, 0, 'commit', NULL, :note,
            (SELECT balance FROM guilds WHERE guild_id = :guild_id), :now)
    RETURNING balance_after
"""

# Re-arm the low-balance notice once the balance is back at/above the threshold.
REARM_NOTICE: Final = """
    UPDATE guild_settings SET low_balance_notified = 0
     WHERE guild_id = :guild_id AND low_balance_notified = 1
       AND (low_balance_threshold IS NULL
            OR (SELECT balance FROM guilds WHERE guild_id = :guild_id) >= low_balance_threshold)
"""

FINISH_JOB: Final = f"""
    UPDATE jobs
       SET status = :status, images_delivered = :delivered, error = :error,
           updated_at = :now, finished_at = :now
     WHERE id = :job_id
       AND status IN ('queued', 'running')
       AND cost = :committed + :refunded
       AND units_per_image * :delivered = :committed
    RETURNING {JOB_COLUMNS}
"""

# -- processes sharing the database ---------------------------------------------------

HEARTBEAT: Final = """
    INSERT INTO job_owners (owner, started_at, heartbeat_at) VALUES (:owner, :now, :now)
    ON CONFLICT (owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at
"""

# The open jobs, through the partial index that holds only them. Named: without
# statistics the planner prefers walking all of jobs in id order to sorting the
# few open ones, and a dropped index must fail loudly, not become a full scan.
OPEN_JOBS_INDEX: Final = "INDEXED BY jobs_open_member"
OPEN_JOBS_WHERE: Final = "status IN ('queued', 'running')"

# Open jobs no live process works on: ours, unowned, or of an owner whose last
# heartbeat is older than :cutoff (or who never sent one). :owner NULL: all.
RECOVERABLE_JOBS: Final = f"""
    SELECT {JOB_COLUMNS} FROM jobs AS j {OPEN_JOBS_INDEX}
     WHERE j.status IN ('queued', 'running')
       AND (:owner IS NULL OR j.owner IS NULL OR j.owner = :owner
            OR NOT EXISTS (SELECT 1 FROM job_owners AS o
                            WHERE o.owner = j.owner AND o.heartbeat_at >= :cutoff))
     ORDER BY j.id
"""

# Slots in [0, :limit) that are held and not expired.
HELD_SLOTS: Final = """
    SELECT slot FROM api_slots
     WHERE slot < :limit AND owner IS NOT NULL AND expires_at > :now
"""

TAKE_SLOT: Final = """
    INSERT INTO api_slots (slot, owner, expires_at) VALUES (:slot, :owner, :expires_at)
    ON CONFLICT (slot) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
"""

RELEASE_SLOT: Final = """
    UPDATE api_slots SET owner = NULL, expires_at = NULL WHERE slot = :slot AND owner = :owner
"""

RELEASE_OWNER_SLOTS: Final = """
    UPDATE api_slots SET owner = NULL, expires_at = NULL WHERE owner = :owner
"""

# Sliding window: forget calls at or before :cutoff, then look at what is left.
FORGET_CALLS: Final = "DELETE FROM api_calls WHERE key = :key AND at <= :cutoff"
CALLS_IN_WINDOW: Final = "SELECT COUNT(*), MIN(at) FROM api_calls WHERE key = :key"
RECORD_CALL: Final = "INSERT INTO api_calls (key, at) VALUES (:key, :now)"

AUDIT_BALANCES: Final = """
    SELECT guild_id, balance, total FROM (
        SELECT g.guild_id, g.balance,
               COALESCE((SELECT SUM(l.delta) FROM ledger AS l WHERE l.guild_id = g.guild_id), 0)
                 AS total
          FROM guilds AS g
         WHERE :guild_id IS NULL OR g.guild_id = :guild_id)
     WHERE total <> balance
"""

# A job's entries must match its state: one reserve of -cost; open jobs have
# nothing else; settled jobs refunded exactly what they did not charge.
AUDIT_JOBS: Final = """
    SELECT j.id, j.guild_id, j.status, j.cost, r.delta, f.delta, c.id
      FROM jobs AS j
      LEFT JOIN ledger AS r ON r.job_id = j.id AND r.kind = 'reserve'
      LEFT JOIN ledger AS f ON f.job_id = j.id AND f.kind = 'refund'
      LEFT JOIN ledger AS c ON c.job_id = j.id AND c.kind = 'commit'
     WHERE (:guild_id IS NULL OR j.guild_id = :guild_id)
       AND NOT COALESCE(
            r.delta = -j.cost
            AND CASE
                WHEN j.status IN ('queued', 'running') THEN f.id IS NULL AND c.id IS NULL
                WHEN j.status = 'succeeded' THEN c.id IS NOT NULL
                     AND COALESCE(f.delta, 0) = j.cost - j.units_per_image * j.images_delivered
                WHEN j.status = 'refunded' THEN c.id IS NULL AND f.delta = j.cost
                ELSE COALESCE(f.delta, 0) <= j.cost
            END, 0)
"""


def job_from_row(row: Sequence[Any]) -> JobRecord:
    return JobRecord(
        id=row[0],
        guild_id=row[1],
        channel_id=row[2],
        user_id=row[3],
        params=json.loads(row[4]),
        cost=row[5],
        units_per_image=row[6],
        images_total=row[7],
        images_delivered=row[8],
        status=JobStatus(row[9]),
        message_id=row[10],
        error=row[11],
        parent_job_id=row[12],
        created_at=parse_timestamp(row[13]),
        updated_at=parse_timestamp(row[14]),
        owner=row[15],
        delivering_at=None if row[16] is None else parse_timestamp(row[16]),
    )


def entry_from_row(row: Sequence[Any]) -> LedgerEntry:
    return LedgerEntry(
        id=row[0],
        guild_id=row[1],
        user_id=row[2],
        job_id=row[3],
        delta=row[4],
        kind=LedgerKind(row[5]),
        actor_id=row[6],
        note=row[7],
        created_at=parse_timestamp(row[8]),
        balance_after=row[9],
    )


def settings_from_row(row: Sequence[Any]) -> GuildSettings:
    return GuildSettings(
        guild_id=row[0],
        daily_user_cap=row[1],
        allowed_channel_ids=tuple(int(value) for value in json.loads(row[2])),
        blocked_words=tuple(str(value) for value in json.loads(row[3])),
        low_balance_threshold=row[4],
        notice_channel_id=row[5],
    )


def settings_value(name: str, value: object) -> object:
    if name in LIST_SETTINGS:
        assert isinstance(value, tuple | list)
        return json.dumps(list(value), ensure_ascii=False)
    return value
