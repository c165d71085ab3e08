"""Balances, reservations and settlements: every statement that moves credits.

Each method is one transaction. It first locks the guild's row (``FOR UPDATE``
on PostgreSQL; on SQLite the transaction already holds the write lock), so the
checks that follow see every earlier change of that guild's money and no other
can interleave. The debit itself is one conditional ``UPDATE … WHERE balance >=
cost RETURNING balance``, never a balance read and written back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any, Final, TypedDict, Unpack

from sqlalchemy import Row, Select, Update, and_, bindparam, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.storage._rows import (
    Abort,
    Ops,
    scalar,
    upsert,
)
from bot.storage._schema import OPEN, guild_settings, guilds, jobs, ledger
from bot.storage.base import Reserved, ReserveRejected
from bot.storage.records import JobRecord, JobStatus, LedgerKind, NewJob

__all__ = ["MoneyOps"]

NEW_GUILD_NOTE = "default credits for a new guild"


def day_start(moment: datetime) -> datetime:
    """Midnight UTC of ``moment``'s day: daily caps reset then."""
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


async def rearm_notice(conn: AsyncConnection, guild_id: int, balance: int) -> None:
    """Re-arm the low-balance notice once ``balance`` is back at or above the threshold."""
    s = guild_settings.c
    await conn.execute(
        update(guild_settings)
        .where(
            s.guild_id == guild_id,
            s.low_balance_notified.is_(True),
            or_(s.low_balance_threshold.is_(None), s.low_balance_threshold <= balance),
        )
        .values(low_balance_notified=False)
    )


async def guild_balance(conn: AsyncConnection, guild_id: int) -> int | None:
    """The balance, with the guild's row locked until the transaction ends."""
    return (await conn.execute(_LOCK_GUILD, {"g": guild_id})).scalar_one_or_none()


async def add_entry(conn: AsyncConnection, **values: Any) -> None:
    values = {"user_id": None, "job_id": None, "actor_id": None, "note": None, **values}
    await conn.execute(_INSERT_ENTRY, values)


async def lock_guild(
    conn: AsyncConnection,
    guild_id: int,
    default_credits: int,
    clock: Callable[[], datetime],
) -> tuple[int, bool]:
    """Lock the guild's row, creating it with a GRANT of ``default_credits`` if new:
    ``(balance, created)``. Callers read the clock after this, so that a guild's
    entries are stamped in commit order."""
    balance = await guild_balance(conn, guild_id)
    if balance is not None:
        return balance, False
    now = clock()
    created = await conn.execute(
        upsert(conn, guilds)
        .values(guild_id=guild_id, balance=default_credits, created_at=now, updated_at=now)
        .on_conflict_do_nothing()
        .returning(guilds.c.balance)
    )
    fresh = created.first() is not None  # else another process created it meanwhile
    if fresh:
        await add_entry(
            conn,
            guild_id=guild_id,
            delta=default_credits,
            kind=LedgerKind.GRANT.value,
            note=NEW_GUILD_NOTE,
            balance_after=default_credits,
            created_at=now,
        )
    balance = await guild_balance(conn, guild_id)
    assert balance is not None
    return balance, fresh


def _usage(guild_id: int, user_id: int, since: datetime) -> Any:
    """What the member's jobs created since ``since`` cost, net of refunds."""
    paid = and_(ledger.c.job_id == jobs.c.id, ledger.c.kind.in_(("reserve", "refund")))
    return (
        select(func.coalesce(-func.sum(ledger.c.delta), 0))
        .select_from(jobs.join(ledger, paid))
        .where(jobs.c.guild_id == guild_id, jobs.c.user_id == user_id, jobs.c.created_at >= since)
    )


class Change(TypedDict):
    """Who changed a balance and why, and what a guild seen for the first time gets."""

    actor_id: int | None
    note: str | None
    default_credits: int


class MoneyOps(Ops):
    """Guilds, jobs and the ledger."""

    async def _change_balance(
        self, guild_id: int, new_value: Any, *, kind: str, **change: Unpack[Change]
    ) -> tuple[int, int] | None:
        """Apply ``new_value(old)`` (conditions, value) with its ledger entry: ``(old, new)``."""
        default_credits = change["default_credits"]

        async def work(conn: AsyncConnection) -> tuple[int, int]:
            old, _ = await lock_guild(conn, guild_id, default_credits, self._now)
            now = self._now()
            where, value = new_value(old)
            row = await conn.execute(
                update(guilds)
                .where(guilds.c.guild_id == guild_id, *where)
                .values(balance=value, updated_at=now)
                .returning(guilds.c.balance)
            )
            new = row.scalar_one_or_none()
            if new is None:
                raise Abort(None)  # rolls back the guild's creation too
            await add_entry(
                conn,
                guild_id=guild_id,
                delta=new - old,
                kind=kind,
                actor_id=change["actor_id"],
                note=change["note"],
                balance_after=new,
                created_at=now,
            )
            await rearm_notice(conn, guild_id, new)
            return old, new

        try:
            return await self._db.write(work)
        except Abort:
            return None

    async def ensure_guild(self, guild_id: int, *, default_credits: int) -> tuple[int, bool]:
        balance = await self.get_balance(guild_id)
        if balance is not None:
            return balance, False

        return await self._db.write(
            lambda conn: lock_guild(conn, guild_id, default_credits, self._now)
        )

    async def get_balance(self, guild_id: int) -> int | None:
        query = select(guilds.c.balance).where(guilds.c.guild_id == guild_id)
        return await self._db.read(lambda conn: scalar(conn, query))

    async def grant(
        self, guild_id: int, amount: int, *, max_balance: int, **change: Unpack[Change]
    ) -> int | None:
        """Add ``amount`` (a GRANT entry), creating the guild if new; None (nothing
        changed) when the balance would pass ``max_balance``."""

        def grown(old: int) -> tuple[list[Any], Any]:
            return [guilds.c.balance + amount <= max_balance], guilds.c.balance + amount

        changed = await self._change_balance(guild_id, grown, kind="grant", **change)
        return None if changed is None else changed[1]

    async def set_balance(
        self, guild_id: int, amount: int, **change: Unpack[Change]
    ) -> tuple[int, int]:
        """Set the balance (a SET entry of new - old): ``(old, new)``."""
        changed = await self._change_balance(
            guild_id, lambda old: ([], amount), kind="set", **change
        )
        assert changed is not None
        return changed

    async def usage_today(self, guild_id: int, user_id: int) -> int:
        query = _usage(guild_id, user_id, day_start(self._now()))
        return int(await self._db.read(lambda conn: scalar(conn, query)))

    async def reserve_job(
        self, job: NewJob, *, default_credits: int, note: str | None
    ) -> Reserved | ReserveRejected:
        cost = job.cost
        json.dumps(job.params, allow_nan=False)  # TypeError/ValueError before any write

        async def work(conn: AsyncConnection) -> Reserved:
            checks = (job.max_active is not None, job.parent_job_id is not None)
            ids = {"g": job.guild_id, "u": job.user_id, "p": job.parent_job_id}
            if conn.dialect.name == "postgresql":
                # Lock first: the debit then reads a snapshot taken after the lock.
                # (SQLite's BEGIN IMMEDIATE already holds the whole database.)
                await lock_guild(conn, job.guild_id, default_credits, self._now)
            now = self._now()
            debit: dict[str, Any] = {**ids, "cost": cost, "now": now}
            # The debit returns what the checks need; a refusal rolls it back.
            row = (await conn.execute(_debit(*checks), debit)).first()
            if row is None:
                _, created = await lock_guild(conn, job.guild_id, default_credits, self._now)
                if created:  # a new guild, with its default credits (stamped after its grant)
                    now = debit["now"] = self._now()
                    row = (await conn.execute(_debit(*checks), debit)).first()
            if row is None:  # not enough credits, unless a check says otherwise first
                view = (await conn.execute(_guild_view(*checks), ids)).one()
                refused = await self._refusal(conn, job, view, now, view.balance)
                raise Abort(refused or ReserveRejected("insufficient", view.balance, cost))
            left = int(row.balance)
            refused = await self._refusal(conn, job, row, now, left + cost)
            if refused is not None:
                # Raising rolls back the debit and a new guild's grant: nothing changes.
                raise Abort(refused)
            values: dict[str, Any] = {
                "guild_id": job.guild_id,
                "channel_id": job.channel_id,
                "user_id": job.user_id,
                "params": job.params,
                "cost": cost,
                "units_per_image": job.units_per_image,
                "images_total": job.images_total,
                "parent_job_id": job.parent_job_id,
                "created_at": now,
                "updated_at": now,
                "owner": job.owner,
            }
            inserted = await conn.execute(_INSERT_JOB, {**values, "status": JobStatus.QUEUED})
            record = JobRecord(
                id=int(inserted.inserted_primary_key[0]),  # type: ignore[index]
                images_delivered=0,
                status=JobStatus.QUEUED,
                message_id=None,
                error=None,
                **values,
            )
            await add_entry(
                conn,
                guild_id=job.guild_id,
                user_id=job.user_id,
                job_id=record.id,
                delta=-cost,
                kind=LedgerKind.RESERVE.value,
                note=note,
                balance_after=left,
                created_at=now,
            )
            return Reserved(record, left)

        try:
            return await self._db.write(work)
        except Abort as abort:
            if isinstance(abort.result, ReserveRejected):
                return abort.result
            raise

    async def _refusal(
        self, conn: AsyncConnection, job: NewJob, view: Row[Any], now: datetime, balance: int
    ) -> ReserveRejected | None:
        """Why the job may not be reserved (other than the balance), under the guild lock;
        ``balance`` is the guild's before this job."""
        cost = job.cost
        if job.parent_job_id is not None and not view.parent_ok:
            return ReserveRejected("unknown_parent", balance, cost)
        if job.max_active is not None and view.active >= job.max_active:
            return ReserveRejected("too_many_jobs", balance, cost, used=view.active)
        cap = view.daily_user_cap
        if cap is None:
            return None
        used = int(await scalar(conn, _usage(job.guild_id, job.user_id, day_start(now))))
        if used + cost > cap:
            return ReserveRejected("daily_cap", balance, cost, cap=cap, used=used)
        return None


def _checks(active: bool, parent: bool) -> list[Any]:
    """What a job's checks need: the member's daily cap, open jobs, whether the parent
    exists (``:g`` guild, ``:u`` member, ``:p`` parent job)."""
    settings = guild_settings.c
    cap = select(settings.daily_user_cap).where(settings.guild_id == bindparam("g"))
    columns: list[Any] = [cap.scalar_subquery().label("daily_user_cap")]
    if active:
        # The member's open jobs in the guild, in every process (a posted job is settled).
        count = select(func.count()).where(
            jobs.c.guild_id == bindparam("g"),
            jobs.c.user_id == bindparam("u"),
            jobs.c.status.in_(OPEN),
        )
        columns.append(count.scalar_subquery().label("active"))
    if parent:
        columns.append(exists().where(jobs.c.id == bindparam("p")).label("parent_ok"))
    return columns


@cache
def _guild_view(active: bool, parent: bool) -> Select[Any]:
    """The guild's balance and what a job's checks need."""
    return select(guilds.c.balance, *_checks(active, parent)).where(
        guilds.c.guild_id == bindparam("g")
    )


@cache
def _debit(active: bool, parent: bool) -> Update:
    """The debit: one conditional statement returning the balance left and what the
    checks need, or no row and nothing changed."""
    return (
        update(guilds)
        .where(guilds.c.guild_id == bindparam("g"), guilds.c.balance >= bindparam("cost"))
        .values(balance=guilds.c.balance - bindparam("cost"), updated_at=bindparam("now"))
        .returning(guilds.c.balance, *_checks(active, parent))
    )


_LOCK_GUILD: Final = (
    select(guilds.c.balance).where(guilds.c.guild_id == bindparam("g")).with_for_update()
)
_INSERT_JOB: Final = jobs.insert()
_INSERT_ENTRY: Final = ledger.insert()
