"""The SQLite backend's read queries for insight: spending per day and per member, and a
member's own results (``/credits usage`` and ``/gallery``).

A mixin of :class:`bot.storage.sqlite.SQLiteStorage`, kept apart so that the
backend's money-moving module does not grow; it only reads.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal, TypeVar

from bot.storage._sqlite_setup import day_start
from bot.storage._sqlite_sql import JOB_COLUMNS, job_from_row
from bot.storage.records import DailySpend, JobRecord, MemberSpend, UsageSummary

__all__ = ["SQLiteInsight"]

T = TypeVar("T")

# Every reservation since :since with what its job got back: a job's cost counts
# on the day it was asked for, net of its refund (at most one per job).
_SPENDING: Final = """
      FROM ledger AS r
      LEFT JOIN ledger AS f ON f.job_id = r.job_id AND f.kind = 'refund'
     WHERE r.guild_id = :guild_id AND r.kind = 'reserve' AND r.created_at >= :since
"""

SPEND_BY_DAY: Final = f"""
    SELECT substr(r.created_at, 1, 10) AS day,
           SUM(-r.delta - COALESCE(f.delta, 0)), SUM(COALESCE(f.delta, 0)), COUNT(*)
    {_SPENDING}
     GROUP BY day ORDER BY day
"""

SPEND_BY_MEMBER: Final = f"""
    SELECT r.user_id, SUM(-r.delta - COALESCE(f.delta, 0)) AS spent, COUNT(*)
    {_SPENDING}
     GROUP BY r.user_id ORDER BY spent DESC, r.user_id LIMIT :top
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
     ORDER BY created_at DESC, id DESC LIMIT :limit OFFSET :offset
"""

COUNT_MEMBER_RESULTS: Final = f"SELECT COUNT(*) {_RESULTS}"


class SQLiteInsight:
    """Read-only queries for charts and galleries (mixed into ``SQLiteStorage``)."""

    if TYPE_CHECKING:

        async def _unit(
            self,
            mode: Literal["IMMEDIATE", "DEFERRED", "NONE"],
            body: Callable[[sqlite3.Connection], T],
        ) -> T: ...

        def _now(self) -> datetime: ...

    async def usage_summary(self, guild_id: int, *, days: int, top: int) -> UsageSummary:
        now = self._now()
        last_day = now.date()
        first_day = last_day - timedelta(days=days - 1)
        params = {"guild_id": guild_id, "since": day_start(now - timedelta(days=days - 1))}

        def body(db: sqlite3.Connection) -> UsageSummary:
            by_day = db.execute(SPEND_BY_DAY, params).fetchall()
            by_member = db.execute(SPEND_BY_MEMBER, {**params, "top": top}).fetchall()
            (spenders,) = db.execute(SPENDERS, params).fetchone()
            return UsageSummary(
                guild_id=guild_id,
                first_day=first_day,
                last_day=last_day,
                days=tuple(
                    DailySpend(date.fromisoformat(day), int(spent), int(back), int(jobs))
                    for day, spent, back, jobs in by_day
                ),
                top_members=tuple(
                    MemberSpend(int(user), int(spent), int(jobs)) for user, spent, jobs in by_member
                ),
                members=int(spenders),
            )

        # DEFERRED: the three statements read one snapshot.
        return await self._unit("DEFERRED", body)

    async def member_results(
        self, guild_id: int, user_id: int, *, limit: int, offset: int
    ) -> list[JobRecord]:
        params = {"guild_id": guild_id, "user_id": user_id, "limit": limit, "offset": offset}
        rows = await self._unit("NONE", lambda db: db.execute(MEMBER_RESULTS, params).fetchall())
        return [job_from_row(row) for row in rows]

    async def count_member_results(self, guild_id: int, user_id: int) -> int:
        params = {"guild_id": guild_id, "user_id": user_id}
        row = await self._unit(
            "NONE", lambda db: db.execute(COUNT_MEMBER_RESULTS, params).fetchone()
        )
        return int(row[0])
