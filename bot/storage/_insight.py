"""Read-only queries: spending per day and per member (``/credits usage``), a member's
results (``/gallery``), and the audit of balances against the ledger."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from bot.storage._money import day_start
from bot.storage._rows import JOB_COLUMNS, LEDGER_COLUMNS, Ops, entry_from_row, job_from_row, scalar
from bot.storage._schema import OPEN, guilds, jobs, ledger, utc_day
from bot.storage.base import Discrepancy
from bot.storage.records import DailySpend, JobRecord, LedgerEntry, MemberSpend, UsageSummary

__all__ = ["InsightOps"]


def _job_problem(row: Any) -> str | None:
    """What is wrong with a job's entries: one reserve of -cost; open jobs have nothing
    else; settled jobs refunded exactly what they did not charge."""
    refund = row.refund or 0
    if row.status in OPEN:
        fine = row.refund is None and row.commit_id is None
    elif row.status == "succeeded":
        fine = row.commit_id is not None and refund == row.cost - row.charged
    elif row.status == "refunded":
        fine = row.commit_id is None and refund == row.cost
    else:
        fine = refund <= row.cost
    if row.reserve == -row.cost and fine:
        return None
    commit = "yes" if row.commit_id is not None else "no"
    return (
        f"job {row.id} ({row.status}, cost {row.cost}) has reserve {row.reserve}, "
        f"refund {row.refund}, commit entry {commit}"
    )


class InsightOps(Ops):
    """Charts, galleries and the audit."""

    async def ledger_entries(self, guild_id: int, *, limit: int, offset: int) -> list[LedgerEntry]:
        query = (
            select(*LEDGER_COLUMNS)
            .where(ledger.c.guild_id == guild_id)
            .order_by(ledger.c.created_at.desc(), ledger.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return await self._all(query, entry_from_row)

    async def count_ledger_entries(self, guild_id: int) -> int:
        query = select(func.count()).select_from(ledger).where(ledger.c.guild_id == guild_id)
        return int(await self._db.read(lambda conn: scalar(conn, query)))

    async def usage_summary(self, guild_id: int, *, days: int, top: int) -> UsageSummary:
        now = self._now()
        first_day = now.date() - timedelta(days=days - 1)
        # Every reservation of the period with what its job got back (at most one refund).
        r, f = aliased(ledger), aliased(ledger)
        back = func.coalesce(f.c.delta, 0)
        spent = func.sum(-r.c.delta - back)
        source = (
            select()
            .select_from(r.outerjoin(f, and_(f.c.job_id == r.c.job_id, f.c.kind == "refund")))
            .where(
                r.c.guild_id == guild_id,
                r.c.kind == "reserve",
                r.c.created_at >= day_start(now - timedelta(days=days - 1)),
            )
        )
        day = utc_day(r.c.created_at)
        by_day = source.add_columns(day, spent, func.sum(back), func.count())
        by_member = source.add_columns(r.c.user_id, spent.label("spent"), func.count())
        spenders = source.add_columns(func.count(func.distinct(r.c.user_id)))

        async def work(conn: AsyncConnection) -> UsageSummary:
            days_rows = await conn.execute(by_day.group_by(day).order_by(day))
            members = await conn.execute(
                by_member.group_by(r.c.user_id).order_by(spent.desc(), r.c.user_id).limit(top)
            )
            return UsageSummary(
                guild_id=guild_id,
                first_day=first_day,
                last_day=now.date(),
                days=tuple(DailySpend(d, int(s), int(b), int(n)) for d, s, b, n in days_rows),
                top_members=tuple(MemberSpend(int(u), int(s), int(n)) for u, s, n in members),
                members=int(await scalar(conn, spenders)),
            )

        return await self._db.read(work)

    def _results(self, guild_id: int, user_id: int) -> Any:
        """A member's delivered results: jobs with at least one image and a result message."""
        return (
            jobs.c.guild_id == guild_id,
            jobs.c.user_id == user_id,
            and_(jobs.c.message_id.is_not(None), jobs.c.images_delivered > 0),
        )

    async def member_results(
        self, guild_id: int, user_id: int, *, limit: int, offset: int
    ) -> list[JobRecord]:
        query = (
            select(*JOB_COLUMNS)
            .where(*self._results(guild_id, user_id))
            .order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return await self._all(query, job_from_row)

    async def count_member_results(self, guild_id: int, user_id: int) -> int:
        query = select(func.count()).select_from(jobs).where(*self._results(guild_id, user_id))
        return int(await self._db.read(lambda conn: scalar(conn, query)))

    async def audit(self, guild_id: int | None = None) -> list[Discrepancy]:
        total = (
            select(func.coalesce(func.sum(ledger.c.delta), 0))
            .where(ledger.c.guild_id == guilds.c.guild_id)
            .scalar_subquery()
        )
        balances = select(guilds.c.guild_id, guilds.c.balance, total).where(
            total != guilds.c.balance
        )
        entries = {kind: aliased(ledger) for kind in ("reserve", "refund", "commit")}
        source = jobs
        for kind, entry in entries.items():
            on = and_(entry.c.job_id == jobs.c.id, entry.c.kind == kind)
            source = source.outerjoin(entry, on)  # type: ignore[assignment]
        job_rows = select(
            jobs.c.id,
            jobs.c.guild_id,
            jobs.c.status,
            jobs.c.cost,
            (jobs.c.units_per_image * jobs.c.images_delivered).label("charged"),
            entries["reserve"].c.delta.label("reserve"),
            entries["refund"].c.delta.label("refund"),
            entries["commit"].c.id.label("commit_id"),
        ).select_from(source)
        if guild_id is not None:
            balances = balances.where(guilds.c.guild_id == guild_id)
            job_rows = job_rows.where(jobs.c.guild_id == guild_id)

        async def work(conn: AsyncConnection) -> list[Discrepancy]:
            problems = [
                Discrepancy(gid, f"balance {balance} but the ledger sums to {int(summed)}")
                for gid, balance, summed in await conn.execute(balances.order_by(guilds.c.guild_id))
            ]
            for row in await conn.execute(job_rows.order_by(jobs.c.id)):
                problem = _job_problem(row)
                if problem is not None:
                    problems.append(Discrepancy(row.guild_id, problem))
            return problems

        return await self._db.read(work)
