"""The credit ledger: each guild's balance and the record of every credit that moves.

A job's cost is reserved before any API call, then committed for what was delivered and the
rest refunded, exactly once. A balance never goes below zero, and every change is a ledger
entry written with it, so ``sum(ledger deltas) == balance``. Storage does the atomic work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from bot.amount_texts import MAX_CREDITS
from bot.checks import is_int, optional_snowflake, snowflake, whole_amount
from bot.credit_errors import (
    DailyCapReached,
    InsufficientCredits,
    InvalidAmount,
    JobNotActive,
    TooManyJobs,
    UnknownJob,
)
from bot.i18n import _N
from bot.storage import Storage, StorageError
from bot.storage.base import Delivering, Reserved
from bot.storage.records import (
    OPEN_STATUSES,
    JobRecord,
    JobStatus,
    LedgerEntry,
    LedgerKind,
    NewJob,
)

__all__ = [
    "MAX_CREDITS",
    "CommitResult",
    "CreditLedger",
    "JobRecord",
    "JobStatus",
    "LedgerEntry",
    "LedgerKind",
    "NewJob",
    "StorageError",
]

log = logging.getLogger("bot.credits")

MAX_NOTE_LENGTH: Final = 500


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@dataclass(frozen=True)
class CommitResult:
    """How a job was settled: ``committed`` charged, ``refunded`` returned, new ``balance``.

    Both amounts are 0 when the job had already been settled before this call.
    """

    job: JobRecord
    committed: int
    refunded: int
    balance: int


# -- validation --------------------------------------------------------------------


def _job_size(value: object, what: str) -> int:
    """A job's sizes come from a checked request: a bad one is the caller's bug, told in English."""
    if is_int(value) and 1 <= value <= MAX_CREDITS:
        return value
    raise InvalidAmount(
        f"The {what} must be a whole number from 1 to {MAX_CREDITS}, not {value!r}."
    )


def _owner_change(
    guild_id: object, amount: object, actor_id: object, *, minimum: int, what: str
) -> tuple[int, int, int | None]:
    """A grant's or a set's guild, amount and actor, checked."""
    return (
        snowflake(guild_id, "guild_id"),
        whole_amount(amount, minimum=minimum, what=what),
        optional_snowflake(actor_id, "actor_id"),
    )


def _note(note: str | None) -> str | None:
    if note is None:
        return None
    text = " ".join(str(note).split())
    if len(text) > MAX_NOTE_LENGTH:
        text = text[: MAX_NOTE_LENGTH - 1] + "…"
    return text or None


class CreditLedger:
    """Business rules for credits on top of a :class:`~bot.storage.Storage`."""

    def __init__(self, storage: Storage, *, default_credits: int) -> None:
        if not is_int(default_credits) or not 0 <= default_credits <= MAX_CREDITS:
            raise ValueError(f"default_credits must be 0 to {MAX_CREDITS}, got {default_credits!r}")
        self._storage = storage
        self._default = default_credits

    @property
    def default_credits(self) -> int:
        return self._default

    # -- balances --------------------------------------------------------------------

    async def ensure_guild(self, guild_id: int) -> int:
        """The balance; a new guild is created with one GRANT of ``default_credits``."""
        guild_id = snowflake(guild_id, "guild_id")
        balance, created = await self._storage.ensure_guild(guild_id, default_credits=self._default)
        if created:
            log.info(
                "guild %d first seen: granted %d default credits",
                guild_id,
                self._default,
                extra={"guild_id": guild_id},
            )
        return balance

    async def balance(self, guild_id: int) -> int:
        return await self.ensure_guild(guild_id)

    async def grant(
        self, guild_id: int, amount: int, *, actor_id: int | None, note: str | None = None
    ) -> int:
        """Mint ``amount`` (>= 1) credits for the guild; returns the new balance."""
        guild_id, amount, actor_id = _owner_change(
            guild_id, amount, actor_id, minimum=1, what="amount to add"
        )
        balance = await self._storage.grant(
            guild_id,
            amount,
            actor_id=actor_id,
            note=_note(note),
            default_credits=self._default,
            max_balance=MAX_CREDITS,
        )
        if balance is None:
            raise InvalidAmount(
                _N(
                    "That would take the balance over the maximum of {maximum} credits.",
                    maximum=MAX_CREDITS,
                )
            )
        log.info(
            "granted %d credits to guild %d (actor %s); balance %d",
            amount,
            guild_id,
            actor_id,
            balance,
            extra={"guild_id": guild_id, "actor_id": actor_id},
        )
        return balance

    async def set_balance(
        self, guild_id: int, amount: int, *, actor_id: int | None, note: str | None = None
    ) -> int:
        """Set the balance to ``amount`` (>= 0) with a SET entry of ``new - old``."""
        guild_id, amount, actor_id = _owner_change(
            guild_id, amount, actor_id, minimum=0, what="new balance"
        )
        old, new = await self._storage.set_balance(
            guild_id, amount, actor_id=actor_id, note=_note(note), default_credits=self._default
        )
        log.info(
            "set guild %d balance from %d to %d (actor %s)",
            guild_id,
            old,
            new,
            actor_id,
            extra={"guild_id": guild_id, "actor_id": actor_id},
        )
        return new

    # -- jobs ------------------------------------------------------------------------

    async def reserve(self, job: NewJob) -> JobRecord:
        """Take the job's cost from the guild and record the job as queued, atomically.

        Raises :class:`DailyCapReached` or :class:`InsufficientCredits` (with the figures)
        when the member or the guild cannot afford it. A refused job changes nothing.
        """
        snowflake(job.guild_id, "guild_id")
        snowflake(job.channel_id, "channel_id")
        snowflake(job.user_id, "user_id")
        optional_snowflake(job.parent_job_id, "parent_job_id")
        units = _job_size(job.units_per_image, "cost per image")
        images = _job_size(job.images_total, "number of images")
        cost = _job_size(units * images, "cost")
        if not isinstance(job.params, dict):
            raise TypeError("NewJob.params must be a dict")
        outcome = await self._storage.reserve_job(
            job,
            default_credits=self._default,
            note=f"{_plural(images, 'image')} at {_plural(units, 'credit')} each",
        )
        ids = {"guild_id": job.guild_id, "user_id": job.user_id}
        if isinstance(outcome, Reserved):
            log.info(
                "reserved %d credits for job %d (guild %d, user %d); balance %d",
                cost,
                outcome.job.id,
                job.guild_id,
                job.user_id,
                outcome.balance,
                extra={**ids, "job_id": outcome.job.id},
            )
            return outcome.job
        log.info(
            "refused a %d-credit job in guild %d for user %d: %s (balance %d, cap %s, used %d)",
            cost,
            job.guild_id,
            job.user_id,
            outcome.reason,
            outcome.balance,
            outcome.cap,
            outcome.used,
            extra=ids,
        )
        if outcome.reason == "daily_cap":
            assert outcome.cap is not None
            raise DailyCapReached(cap=outcome.cap, used=outcome.used, cost=cost)
        if outcome.reason == "unknown_parent":
            assert job.parent_job_id is not None
            raise UnknownJob(job.parent_job_id)
        if outcome.reason == "too_many_jobs":
            raise TooManyJobs(active=outcome.used, limit=job.max_active or outcome.used)
        raise InsufficientCredits(balance=outcome.balance, cost=cost, images=images)

    async def mark_running(self, job_id: int) -> JobRecord:
        """queued -> running; a no-op when already running.

        Raises :class:`JobNotActive` for a job already settled (for example
        refunded while it waited): it must not be generated.
        """
        job = await self._storage.start_job(snowflake(job_id, "job_id"))
        if job is None:
            raise UnknownJob(job_id)
        if job.status is not JobStatus.RUNNING:
            raise JobNotActive(job)
        return job

    async def _job(self, job: int | JobRecord) -> JobRecord:
        """The job's record. A caller holding the record from ``reserve`` saves a read:
        cost and sizes never change, and the settle itself only applies to an open job."""
        if isinstance(job, JobRecord):
            return job
        job_id = snowflake(job, "job_id")
        record = await self._storage.get_job(job_id)
        if record is None:
            raise UnknownJob(job_id)
        return record

    async def commit(
        self, job: int | JobRecord, delivered: int | None = None, *, message_id: int | None = None
    ) -> CommitResult:
        """Charge for the ``delivered`` images (default: all) and refund the rest; the
        result's ``message_id`` (for /gallery) is written in the same transaction.

        ``delivered == 0`` is a full refund. Idempotent: a job already settled is
        returned unchanged with ``committed == refunded == 0``.
        """
        if delivered is not None and (not is_int(delivered) or delivered < 0):
            raise InvalidAmount("The number of delivered images must be 0 or more.")
        message_id = optional_snowflake(message_id, "message_id")
        job = await self._job(job)
        if job.status not in OPEN_STATUSES:
            return await self._unchanged(job)
        count = job.images_total if delivered is None else delivered
        if count > job.images_total:
            raise InvalidAmount(
                f"Job {job.id} asked for {job.images_total} images; {count} cannot be delivered."
            )
        committed = count * job.units_per_image
        refunded = job.cost - committed
        missing = job.images_total - count
        if count == 0:
            reason = "no images were delivered"
            return await self._settle(
                job, JobStatus.REFUNDED, 0, 0, job.cost, error=reason, refund_note=reason
            )
        return await self._settle(
            job,
            JobStatus.SUCCEEDED,
            count,
            committed,
            refunded,
            error=None,
            refund_note=f"{missing} of {_plural(job.images_total, 'image')} not delivered",
            message_id=message_id,
        )

    async def refund(self, job: int | JobRecord, reason: str) -> CommitResult:
        """Return the whole cost, exactly once; the job ends ``refunded`` with ``error=reason``."""
        job = await self._job(job)
        if job.status not in OPEN_STATUSES:
            return await self._unchanged(job)
        text = _note(reason) or "refunded"
        return await self._settle(
            job, JobStatus.REFUNDED, 0, 0, job.cost, error=text, refund_note=text
        )

    async def _settle(
        self,
        job: JobRecord,
        status: JobStatus,
        delivered: int,
        committed: int,
        refunded: int,
        *,
        error: str | None,
        refund_note: str,
        message_id: int | None = None,
    ) -> CommitResult:
        settled = await self._storage.finish_job(
            job.id,
            status=status,
            images_delivered=delivered,
            committed=committed,
            refunded=refunded,
            error=error,
            commit_note=(
                f"charged {_plural(committed, 'credit')} for {delivered} of "
                f"{_plural(job.images_total, 'image')}"
            ),
            refund_note=refund_note,
            message_id=message_id,
        )
        if settled is None:  # someone else settled it between our read and our write
            current = await self._storage.get_job(job.id)
            if current is None:
                raise UnknownJob(job.id)
            return await self._unchanged(current)
        log.info(
            "settled job %d (guild %d, user %d) as %s: committed %d, refunded %d; balance %d",
            job.id,
            job.guild_id,
            job.user_id,
            status,
            committed,
            refunded,
            settled.balance,
            extra={"guild_id": job.guild_id, "user_id": job.user_id, "job_id": job.id},
        )
        return CommitResult(settled.job, committed, refunded, settled.balance)

    async def _unchanged(self, job: JobRecord) -> CommitResult:
        balance = await self._storage.get_balance(job.guild_id)
        return CommitResult(job, 0, 0, balance or 0)

    async def mark_delivering(self, job: JobRecord) -> Delivering:
        """Record, before the result is posted, that it is being posted; the guild's
        balance comes with it, for the result to show.

        After a crash such a job is decided from the channel (:mod:`bot.recovery`),
        never refunded blindly. Raises :class:`JobNotActive` when the job was
        settled meanwhile (its credits are back): it must not be posted.
        """
        marked = await self._storage.mark_delivering(job.id)
        if marked is None:
            raise JobNotActive(await self._job(job.id))
        return marked

    async def get_job(self, job_id: int) -> JobRecord | None:
        if not is_int(job_id) or job_id <= 0:
            return None
        return await self._storage.get_job(job_id)

    async def active_jobs(self, *, guild_id: int | None = None) -> list[JobRecord]:
        """Queued and running jobs, oldest first."""
        gid = optional_snowflake(guild_id, "guild_id")
        return await self._storage.list_jobs(statuses=OPEN_STATUSES, guild_id=gid)

    async def usage_today(self, guild_id: int, user_id: int) -> int:
        """Credits the member spent in the guild today (UTC), net of refunds."""
        return await self._storage.usage_today(
            snowflake(guild_id, "guild_id"), snowflake(user_id, "user_id")
        )

    async def verify(self, guild_id: int | None = None) -> bool:
        """True when every (or this) guild's ledger sums to its balance and jobs add up."""
        problems = await self._storage.audit(optional_snowflake(guild_id, "guild_id"))
        for problem in problems:
            log.error(
                "ledger check failed for guild %d: %s",
                problem.guild_id,
                problem.problem,
                extra={"guild_id": problem.guild_id},
            )
        return not problems
