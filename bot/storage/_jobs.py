"""A job's life after its reservation: running, being delivered, settled; and lookups."""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta
from typing import Final

from sqlalchemy import BigInteger, bindparam, exists, func, literal_column, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.storage._money import add_entry, rearm_notice
from bot.storage._rows import JOB_COLUMNS, Ops, job_from_row, scalar
from bot.storage._schema import OPEN, guilds, job_owners, jobs
from bot.storage.base import Delivering, Settled
from bot.storage.records import JobRecord, JobStatus

__all__ = ["JobOps"]

# Lock the guild of a job before settling it (no row: no such job).
_LOCK_JOB_GUILD: Final = (
    select(guilds.c.balance)
    .join_from(jobs, guilds)
    .where(jobs.c.id == bindparam("job"))
    .with_for_update(of=guilds)
)
# The guild's balance, beside a job's columns in a RETURNING (written out: SQLAlchemy
# leaves RETURNING's columns unqualified on SQLite).
_GUILD_BALANCE: Final = literal_column(
    "(SELECT g.balance FROM guilds AS g WHERE g.guild_id = jobs.guild_id)", BigInteger
).label("balance")
# Settle an open job, if the amounts add up.
_FINISH: Final = (
    update(jobs)
    .where(
        jobs.c.id == bindparam("job"),
        jobs.c.status.in_(OPEN),
        jobs.c.cost == bindparam("total"),
        jobs.c.units_per_image * bindparam("delivered") == bindparam("committed"),
    )
    .values(
        status=bindparam("new_status"),
        images_delivered=bindparam("delivered"),
        error=bindparam("reason"),
        updated_at=bindparam("now"),
        finished_at=bindparam("now"),
        message_id=func.coalesce(bindparam("message_id", type_=BigInteger), jobs.c.message_id),
    )
    .returning(*JOB_COLUMNS, _GUILD_BALANCE)
)
# Queued -> running; and the "being posted" mark of an open job.
_START: Final = (
    update(jobs)
    .where(jobs.c.id == bindparam("job"), jobs.c.status == JobStatus.QUEUED.value)
    .values(status=JobStatus.RUNNING.value, updated_at=bindparam("now"))
    .returning(*JOB_COLUMNS)
)
_DELIVERING: Final = (
    update(jobs)
    .where(jobs.c.id == bindparam("job"), jobs.c.status.in_(OPEN))
    .values(delivering_at=bindparam("now"), updated_at=bindparam("now"))
    .returning(*JOB_COLUMNS, _GUILD_BALANCE)
)
_REFUND: Final = (
    update(guilds)
    .where(guilds.c.guild_id == bindparam("g"))
    .values(balance=guilds.c.balance + bindparam("refunded"), updated_at=bindparam("now"))
)


class JobOps(Ops):
    """Jobs from queued to settled."""

    async def start_job(self, job_id: int) -> JobRecord | None:
        async def work(conn: AsyncConnection) -> JobRecord | None:
            started = await conn.execute(_START, {"job": job_id, "now": self._now()})
            row = started.first()
            if row is None:
                row = (await conn.execute(select(*JOB_COLUMNS).where(jobs.c.id == job_id))).first()
            return None if row is None else job_from_row(row)

        return await self._db.write(work)

    async def finish_job(
        self,
        job_id: int,
        *,
        status: JobStatus,
        images_delivered: int,
        committed: int,
        refunded: int,
        error: str | None,
        commit_note: str | None,
        refund_note: str | None,
        message_id: int | None = None,
    ) -> Settled | None:
        if status.is_open:
            raise ValueError(f"finish_job needs a final status, not {status}")
        if committed < 0 or refunded < 0:
            raise ValueError("committed and refunded cannot be negative")

        async def work(conn: AsyncConnection) -> Settled | None:
            if conn.dialect.name == "postgresql":
                # Lock the guild first, so that its entries are stamped in commit order.
                # (SQLite's BEGIN IMMEDIATE already holds the whole database.)
                await conn.execute(_LOCK_JOB_GUILD, {"job": job_id})
            now = self._now()
            finished = await conn.execute(
                _FINISH,
                {
                    "job": job_id,
                    "total": committed + refunded,
                    "delivered": images_delivered,
                    "committed": committed,
                    "new_status": status.value,
                    "reason": error,
                    "now": now,
                    "message_id": message_id,
                },
            )
            row = finished.first()
            if row is None:
                return None
            balance = int(row.balance)
            job = job_from_row(row)
            ids = {"guild_id": job.guild_id, "user_id": job.user_id, "job_id": job.id}
            if committed > 0:
                # delta 0: the credits already left the balance at reservation time
                await add_entry(
                    conn, **ids, delta=0, kind="commit", note=commit_note,
                    balance_after=balance, created_at=now,
                )  # fmt: skip
            if refunded > 0:
                balance += refunded
                await conn.execute(_REFUND, {"g": job.guild_id, "refunded": refunded, "now": now})
                await add_entry(
                    conn, **ids, delta=refunded, kind="refund", note=refund_note,
                    balance_after=balance, created_at=now,
                )  # fmt: skip
                await rearm_notice(conn, job.guild_id, balance)
            return Settled(job, balance)

        return await self._db.write(work)

    async def mark_delivering(self, job_id: int) -> Delivering | None:
        values = {"job": job_id, "now": self._now()}

        async def work(conn: AsyncConnection) -> Delivering | None:
            row = (await conn.execute(_DELIVERING, values)).first()
            return None if row is None else Delivering(job_from_row(row), int(row.balance))

        return await self._db.write(work)

    async def forget_message(self, job_id: int, message_id: int) -> bool:
        """The job's result message was deleted: it no longer counts as a result (/gallery)."""
        query = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.message_id == message_id)
            .values(message_id=None, updated_at=self._now())
            .returning(jobs.c.id)
        )
        return await self._db.write(lambda conn: scalar(conn, query)) is not None

    async def get_job(self, job_id: int) -> JobRecord | None:
        rows = await self._all(select(*JOB_COLUMNS).where(jobs.c.id == job_id), job_from_row)
        return rows[0] if rows else None

    async def list_jobs(
        self, *, statuses: Collection[JobStatus], guild_id: int | None = None
    ) -> list[JobRecord]:
        query = select(*JOB_COLUMNS).where(jobs.c.status.in_([str(s) for s in statuses]))
        if guild_id is not None:
            query = query.where(jobs.c.guild_id == guild_id)
        return await self._all(query.order_by(jobs.c.id), job_from_row)

    async def recoverable_jobs(self, owner: str | None, *, stale_after: float) -> list[JobRecord]:
        query = select(*JOB_COLUMNS).where(jobs.c.status.in_(OPEN)).order_by(jobs.c.id)

        async def work(conn: AsyncConnection) -> list[JobRecord]:
            found = query
            if owner is not None:
                # Live: a recent heartbeat and, for an owner with a liveness lock, that lock held.
                o = job_owners.c
                alive = exists().where(
                    o.owner == jobs.c.owner,
                    o.heartbeat_at >= self._now() - timedelta(seconds=stale_after),
                    or_(o.lock_key.is_(None), o.lock_key.in_(await self._held_owner_keys(conn))),
                )
                found = query.where(or_(jobs.c.owner.is_(None), jobs.c.owner == owner, ~alive))
            return [job_from_row(row) for row in await conn.execute(found)]

        return await self._db.read(work)
