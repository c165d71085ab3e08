"""The PostgreSQL backend's read queries for insight: spending per day and per member, and
a member's own results (``/credits usage`` and ``/gallery``).

A mixin of :class:`bot.storage.postgres.PostgresStorage`, kept apart so that the
backend's money-moving module does not grow; it only reads. "Today" is the
server's UTC day, or the test clock's, as everywhere in this backend.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bot.storage._pg_sql import JOB_COLUMNS, NOW, TODAY, job_from_row
from bot.storage.records import DailySpend, JobRecord, MemberSpend, UsageSummary

__all__ = ["PostgresInsight"]

T = TypeVar("T")
Connection = asyncpg.Connection | PoolConnectionProxy

# The first instant of the period (midnight UTC, :days - 1 days ago) and its days.
PERIOD: Final = f"""
    SELECT {TODAY} - make_interval(days => :days::int - 1) AS since,
           ({TODAY} AT TIME ZONE 'UTC')::date - (:days::int - 1) AS first_day,
           ({NOW} AT TIME ZONE 'UTC')::date AS last_day
"""

# Every reservation since :since with what its job got back: a job's cost counts
# on the day it was asked for, net of its refund (at most one per job).
_SPENDING: Final = """
      FROM ledger AS r
      LEFT JOIN ledger AS f ON f.job_id = r.job_id AND f.kind = 'refund'
     WHERE r.guild_id = :guild_id AND r.kind = 'reserve' AND r.created_at >= :since
"""

SPEND_BY_DAY: Final = f"""
    SELECT (r.created_at AT TIME ZONE 'UTC')::date AS day,
           SUM(-r.delta - COALESCE(f.delta, 0))::bigint AS spent,
           SUM(COALESCE(f.delta, 0))::bigint AS refunded, COUNT(*) AS jobs
    {_SPENDING}
     GROUP BY day ORDER BY day
"""

SPEND_BY_MEMBER: Final = f"""
    SELECT r.user_id, SUM(-r.delta - COALESCE(f.delta, 0))::bigint AS spent, COUNT(*) AS jobs
    {_SPENDING}
     GROUP BY r.user_id ORDER BY spent DESC, r.user_id LIMIT :top::bigint
"""

SPENDERS: Final = f"SELECT COUNT(DISTINCT r.user_id) {_SPENDING}"

# A member's delivered results: jobs with at least one image and a result message.
_RESULTS: Final = """
      FROM jobs
     WHERE guild_id = :guild_id AND user_id = :user_id
       AND message_id IS NOT NULL AND images_delivered > 0
"""

MEMBER_RESULTS: Final = f"""
    SELECT {JOB_COLUMNS} {_RESULTS}
     ORDER BY created_at DESC, id DESC LIMIT :limit::bigint OFFSET :offset::bigint
"""

COUNT_MEMBER_RESULTS: Final = f"SELECT COUNT(*) {_RESULTS}"


class PostgresInsight:
    """Read-only queries for charts and galleries (mixed into ``PostgresStorage``)."""

    if TYPE_CHECKING:

        def _now(self) -> datetime | None: ...

        async def _read(self, work: Callable[[Connection], Awaitable[T]]) -> T: ...

        async def _write(
            self,
            work: Callable[[Connection], Awaitable[T]],
            *,
            isolation: Literal["read_committed", "repeatable_read"] = "read_committed",
            readonly: bool = False,
        ) -> T: ...

        @staticmethod
        async def _fetch(
            conn: Connection, statement: str, **values: object
        ) -> list[asyncpg.Record]: ...

        @staticmethod
        async def _row(
            conn: Connection, statement: str, **values: object
        ) -> asyncpg.Record | None: ...

    async def usage_summary(self, guild_id: int, *, days: int, top: int) -> UsageSummary:
        async def work(conn: Connection) -> UsageSummary:
            period = await self._row(conn, PERIOD, days=days, now=self._now())
            assert period is not None  # a SELECT without FROM returns one row
            values = {"guild_id": guild_id, "since": period["since"]}
            by_day = await self._fetch(conn, SPEND_BY_DAY, **values)
            by_member = await self._fetch(conn, SPEND_BY_MEMBER, top=top, **values)
            spenders = await self._row(conn, SPENDERS, **values)
            return UsageSummary(
                guild_id=guild_id,
                first_day=period["first_day"],
                last_day=period["last_day"],
                days=tuple(
                    DailySpend(row["day"], row["spent"], row["refunded"], row["jobs"])
                    for row in by_day
                ),
                top_members=tuple(
                    MemberSpend(row["user_id"], row["spent"], row["jobs"]) for row in by_member
                ),
                members=int(spenders[0]) if spenders is not None else 0,
            )

        # One snapshot for the three statements.
        return await self._write(work, isolation="repeatable_read", readonly=True)

    async def member_results(
        self, guild_id: int, user_id: int, *, limit: int, offset: int
    ) -> list[JobRecord]:
        async def work(conn: Connection) -> list[JobRecord]:
            rows = await self._fetch(
                conn,
                MEMBER_RESULTS,
                guild_id=guild_id,
                user_id=user_id,
                limit=limit,
                offset=offset,
            )
            return [job_from_row(row) for row in rows]

        return await self._read(work)

    async def count_member_results(self, guild_id: int, user_id: int) -> int:
        async def work(conn: Connection) -> int:
            row = await self._row(conn, COUNT_MEMBER_RESULTS, guild_id=guild_id, user_id=user_id)
            return 0 if row is None else int(row[0])

        return await self._read(work)
