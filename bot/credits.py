"""The credit ledger: what a guild may spend, and the record of every credit.

Credits are money to the people who run the bot, so the rules are strict:

* A job's cost is reserved before any API call (:meth:`CreditLedger.reserve`),
  then either committed for the images actually delivered, with the rest
  refunded (:meth:`~CreditLedger.commit`), or refunded in full
  (:meth:`~CreditLedger.refund`). Settling is idempotent: a job is settled at
  most once, whoever calls and however often.
* A balance never goes below zero, and every change is a ledger entry in the
  same transaction, so ``sum(ledger deltas) == balance`` for every guild
  (:meth:`~CreditLedger.verify` checks it).
* Refusals change nothing and say why with the figures (:class:`CreditError`
  subclasses carry a short ``user_message``).

Storage does the atomic work; this module owns the rules and the wording.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from types import EllipsisType
from typing import Final

from bot.amount_texts import AMOUNT_TEXTS, MAX_CREDITS
from bot.errors import UserFacingError
from bot.i18n import _N, _NP
from bot.storage import Storage, StorageError
from bot.storage.base import Delivering, Reserved, SettingsChanges
from bot.storage.records import (
    OPEN_STATUSES,
    GuildSettings,
    JobRecord,
    JobStatus,
    LedgerEntry,
    LedgerKind,
    NewJob,
)

__all__ = [
    "MAX_CREDITS",
    "CommitResult",
    "CreditError",
    "CreditLedger",
    "DailyCapReached",
    "GuildSettings",
    "InsufficientCredits",
    "InvalidAmount",
    "InvalidSetting",
    "JobNotActive",
    "JobRecord",
    "JobStatus",
    "LedgerEntry",
    "LedgerKind",
    "NewJob",
    "RequestRefused",
    "StorageError",
    "TooManyJobs",
    "UnknownJob",
]

log = logging.getLogger("bot.credits")

_NOBODY = "(no live process)"

MAX_HISTORY_PAGE: Final = 1000
MAX_NOTE_LENGTH: Final = 500
MAX_CHANNELS: Final = 500
MAX_BLOCKED_WORDS: Final = 500
MAX_BLOCKED_WORD_LENGTH: Final = 100
RECOVERY_REASON: Final = "interrupted by a restart"
_MAX_SNOWFLAKE: Final = 2**63 - 1  # SQLite and PostgreSQL BIGINT hold ids up to here


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


# -- errors ----------------------------------------------------------------------


class CreditError(UserFacingError):
    """A refusal the user should see; ``message(locale)`` is short and specific."""


class InsufficientCredits(CreditError):
    """The guild's balance does not cover the cost."""

    def __init__(self, balance: int, cost: int, images: int = 1) -> None:
        if images == 1:
            message = _NP(
                "This server has {count} credit left; this image costs {cost}.",
                "This server has {count} credits left; this image costs {cost}.",
                balance,
                cost=cost,
            )
        else:
            message = _NP(
                "This server has {count} credit left; these {images} images cost {cost}.",
                "This server has {count} credits left; these {images} images cost {cost}.",
                balance,
                images=images,
                cost=cost,
            )
        super().__init__(message)
        self.balance = balance
        self.cost = cost


class DailyCapReached(CreditError):
    """The member's daily allowance in this guild does not cover the cost."""

    def __init__(self, cap: int, used: int, cost: int) -> None:
        if cap == 0:
            message = _N(
                "This server's daily limit per member is 0 credits, "
                "so images can't be generated here right now."
            )
        else:
            message = _N(
                "You've used {used} of your {cap} daily credits here; this costs {cost}. "
                "Your allowance resets at 00:00 UTC.",
                used=used,
                cap=cap,
                cost=cost,
            )
        super().__init__(message)
        self.cap = cap
        self.used = used
        self.cost = cost


class TooManyJobs(CreditError):
    """The member already has as many open jobs as allowed (counted in every process)."""

    def __init__(self, *, active: int, limit: int) -> None:
        super().__init__(
            _NP(
                "You already have {count} image job in progress "
                "(the limit is {limit}). Try again when one has finished.",
                "You already have {count} image jobs in progress "
                "(the limit is {limit}). Try again when one has finished.",
                active,
                limit=limit,
            )
        )
        self.active = active
        self.limit = limit


class InvalidAmount(CreditError):
    """An amount is not a whole number in the allowed range."""


class InvalidSetting(CreditError):
    """A guild setting other than an amount (channels, words) is malformed."""


class RequestRefused(CreditError):
    """The guild's own rules (``NewJob.admit``) refused the job; nothing was spent."""


class UnknownJob(CreditError):
    """No job has this id."""

    def __init__(self, job_id: int) -> None:
        super().__init__(_N("That image request no longer exists."))
        self.job_id = job_id


class JobNotActive(CreditError):
    """The job was already settled (done, refunded or cancelled), so it must not run."""

    def __init__(self, job: JobRecord) -> None:
        super().__init__(_N("That image request has already finished."))
        self.job = job


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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _amount(value: object, *, minimum: int, what: str) -> int:
    texts = AMOUNT_TEXTS[what]
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidAmount(texts.not_whole)
    if value < minimum:
        raise InvalidAmount(texts.too_small)
    if value > MAX_CREDITS:
        raise InvalidAmount(texts.too_large)
    return value


def _snowflake(value: object, what: str) -> int:
    """Ids come from Discord; a bad one is a bug in the caller, not a user error."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_SNOWFLAKE:
        return value
    raise ValueError(f"{what} must be a positive 64-bit integer, got {value!r}")


def _optional_snowflake(value: object, what: str) -> int | None:
    return None if value is None else _snowflake(value, what)


def _note(note: str | None) -> str | None:
    if note is None:
        return None
    text = " ".join(str(note).split())
    if len(text) > MAX_NOTE_LENGTH:
        text = text[: MAX_NOTE_LENGTH - 1] + "…"
    return text or None


def _channel_ids(value: object) -> tuple[int, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidSetting(_N("Allowed channels must be a list of channel ids."))
    channels: list[int] = []
    for item in value:
        if not _is_int(item) or not 0 < item <= _MAX_SNOWFLAKE:
            raise InvalidSetting(_N("{item} is not a channel id.", item=repr(item)))
        if item not in channels:
            channels.append(item)
    if len(channels) > MAX_CHANNELS:
        raise InvalidSetting(_N("At most {limit} channels can be allowed.", limit=MAX_CHANNELS))
    return tuple(channels)


def _blocked_words(value: object) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidSetting(_N("Blocked words must be a list of words."))
    words: list[str] = []
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, str):
            raise InvalidSetting(_N("{item} is not a word.", item=repr(item)))
        word = " ".join(item.split())
        if not word or word.casefold() in seen:
            continue
        if len(word) > MAX_BLOCKED_WORD_LENGTH:
            raise InvalidSetting(
                _N(
                    "Blocked words can be at most {limit} characters long.",
                    limit=MAX_BLOCKED_WORD_LENGTH,
                )
            )
        seen.add(word.casefold())
        words.append(word)
    if len(words) > MAX_BLOCKED_WORDS:
        raise InvalidSetting(_N("At most {limit} words can be blocked.", limit=MAX_BLOCKED_WORDS))
    return tuple(words)


# -- the service -------------------------------------------------------------------


class CreditLedger:
    """Business rules for credits on top of a :class:`~bot.storage.Storage`."""

    def __init__(self, storage: Storage, *, default_credits: int) -> None:
        if not _is_int(default_credits) or not 0 <= default_credits <= MAX_CREDITS:
            raise ValueError(f"default_credits must be 0 to {MAX_CREDITS}, got {default_credits!r}")
        self._storage = storage
        self._default = default_credits

    @property
    def default_credits(self) -> int:
        return self._default

    # -- balances --------------------------------------------------------------------

    async def ensure_guild(self, guild_id: int) -> int:
        """The balance; a new guild is created with one GRANT of ``default_credits``."""
        guild_id = _snowflake(guild_id, "guild_id")
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
        guild_id = _snowflake(guild_id, "guild_id")
        amount = _amount(amount, minimum=1, what="amount to add")
        actor_id = _optional_snowflake(actor_id, "actor_id")
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
        guild_id = _snowflake(guild_id, "guild_id")
        amount = _amount(amount, minimum=0, what="new balance")
        actor_id = _optional_snowflake(actor_id, "actor_id")
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

        ``job.admit`` (the guild's own rules) sees the guild's settings inside the same
        transaction; its refusal raises :class:`RequestRefused`. Raises
        :class:`DailyCapReached` or :class:`InsufficientCredits` (with the figures)
        when the member or the guild cannot afford it. A refused job changes nothing.
        """
        _snowflake(job.guild_id, "guild_id")
        _snowflake(job.channel_id, "channel_id")
        _snowflake(job.user_id, "user_id")
        _optional_snowflake(job.parent_job_id, "parent_job_id")
        units = _amount(job.units_per_image, minimum=1, what="cost per image")
        images = _amount(job.images_total, minimum=1, what="number of images")
        cost = _amount(units * images, minimum=1, what="cost")
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
        if outcome.reason == "refused":
            assert outcome.message is not None
            raise RequestRefused(outcome.message)
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
        job = await self._storage.start_job(_snowflake(job_id, "job_id"))
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
        job_id = _snowflake(job, "job_id")
        record = await self._storage.get_job(job_id)
        if record is None:
            raise UnknownJob(job_id)
        return record

    async def commit(self, job: int | JobRecord, delivered: int | None = None) -> CommitResult:
        """Charge for the ``delivered`` images (default: all) and refund the rest.

        ``delivered == 0`` is a full refund. Idempotent: a job already settled is
        returned unchanged with ``committed == refunded == 0``.
        """
        if delivered is not None and (not _is_int(delivered) or delivered < 0):
            raise InvalidAmount("The number of delivered images must be 0 or more.")
        job = await self._job(job)
        job_id = job.id
        if job.status not in OPEN_STATUSES:
            return await self._unchanged(job)
        count = job.images_total if delivered is None else delivered
        if count > job.images_total:
            raise InvalidAmount(
                f"Job {job_id} asked for {job.images_total} images; {count} cannot be delivered."
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

    async def set_message(self, job_id: int, message_id: int) -> None:
        job_id = _snowflake(job_id, "job_id")
        if not await self._storage.set_job_message(job_id, _snowflake(message_id, "message_id")):
            raise UnknownJob(job_id)

    async def get_job(self, job_id: int) -> JobRecord | None:
        if not _is_int(job_id) or job_id <= 0:
            return None
        return await self._storage.get_job(job_id)

    async def active_jobs(self, *, guild_id: int | None = None) -> list[JobRecord]:
        """Queued and running jobs, oldest first."""
        gid = _optional_snowflake(guild_id, "guild_id")
        return await self._storage.list_jobs(statuses=OPEN_STATUSES, guild_id=gid)

    async def recover(
        self, owner: str | None = None, *, stale_after: float = 60.0
    ) -> list[JobRecord]:
        """Refund every job a dead run left queued or running, exactly once.

        ``owner`` None: every open job (one process owns the database). Otherwise
        only this process's own earlier jobs, unowned ones, and those of processes
        silent for ``stale_after`` seconds: a live process's running jobs are left
        alone. Returns the jobs refunded now, so the bot can tell their requesters.
        Jobs whose result was being posted are left open: their channel decides
        (see :meth:`interrupted_deliveries` and :mod:`bot.recovery`).
        """
        refunded: list[JobRecord] = []
        for job in await self._storage.recoverable_jobs(owner, stale_after=stale_after):
            if job.delivering:
                continue
            result = await self.refund(job, RECOVERY_REASON)
            if result.refunded:
                refunded.append(result.job)
        if refunded:
            log.warning(
                "refunded %s interrupted by a restart: %s",
                _plural(len(refunded), "job"),
                ", ".join(str(job.id) for job in refunded),
            )
        else:
            log.info("no interrupted jobs to refund")
        return refunded

    async def interrupted_deliveries(
        self, owner: str | None = None, *, stale_after: float = 60.0
    ) -> list[JobRecord]:
        """Open jobs a dead run was posting (the same jobs :meth:`recover` looks at),
        oldest first: whether the result reached the channel decides their fate."""
        jobs = await self._storage.recoverable_jobs(owner, stale_after=stale_after)
        return [job for job in jobs if job.delivering]

    async def recover_stale(self, *, stale_after: float) -> list[JobRecord]:
        """Refund the open jobs of processes silent for ``stale_after`` seconds (a shard
        that died and did not come back); live processes' jobs, ours included, stay."""
        # No process is named like this, so only unowned and stale jobs match.
        return await self.recover(_NOBODY, stale_after=stale_after)

    async def stale_deliveries(self, *, stale_after: float) -> list[JobRecord]:
        """The deliveries of processes silent for ``stale_after`` seconds (see
        :meth:`recover_stale`), for the channel to decide."""
        return await self.interrupted_deliveries(_NOBODY, stale_after=stale_after)

    async def usage_today(self, guild_id: int, user_id: int) -> int:
        """Credits the member spent in the guild today (UTC), net of refunds."""
        return await self._storage.usage_today(
            _snowflake(guild_id, "guild_id"), _snowflake(user_id, "user_id")
        )

    # -- statements ------------------------------------------------------------------

    async def history(
        self, guild_id: int, *, limit: int = 10, offset: int = 0
    ) -> list[LedgerEntry]:
        """Ledger entries, newest first."""
        guild_id = _snowflake(guild_id, "guild_id")
        if not _is_int(limit) or not 1 <= limit <= MAX_HISTORY_PAGE:
            raise InvalidAmount(f"The page size must be 1 to {MAX_HISTORY_PAGE}.")
        if not _is_int(offset) or offset < 0:
            raise InvalidAmount("The page offset cannot be negative.")
        return await self._storage.ledger_entries(guild_id, limit=limit, offset=offset)

    async def count_history(self, guild_id: int) -> int:
        return await self._storage.count_ledger_entries(_snowflake(guild_id, "guild_id"))

    async def verify(self, guild_id: int | None = None) -> bool:
        """True when every (or this) guild's ledger sums to its balance and jobs add up."""
        problems = await self._storage.audit(_optional_snowflake(guild_id, "guild_id"))
        for problem in problems:
            log.error(
                "ledger check failed for guild %d: %s",
                problem.guild_id,
                problem.problem,
                extra={"guild_id": problem.guild_id},
            )
        return not problems

    # -- settings --------------------------------------------------------------------

    async def get_settings(self, guild_id: int) -> GuildSettings:
        return await self._storage.get_settings(_snowflake(guild_id, "guild_id"))

    async def update_settings(
        self,
        guild_id: int,
        *,
        daily_user_cap: int | EllipsisType | None = ...,
        allowed_channel_ids: Iterable[int] | EllipsisType = ...,
        blocked_words: Iterable[str] | EllipsisType = ...,
        low_balance_threshold: int | EllipsisType | None = ...,
        notice_channel_id: int | EllipsisType | None = ...,
    ) -> GuildSettings:
        """Change only the settings passed (``...`` = leave as is); returns the result."""
        guild_id = _snowflake(guild_id, "guild_id")
        changes: SettingsChanges = {}
        if daily_user_cap is not ...:
            changes["daily_user_cap"] = (
                None
                if daily_user_cap is None
                else _amount(daily_user_cap, minimum=0, what="daily limit")
            )
        if allowed_channel_ids is not ...:
            changes["allowed_channel_ids"] = _channel_ids(allowed_channel_ids)
        if blocked_words is not ...:
            changes["blocked_words"] = _blocked_words(blocked_words)
        if low_balance_threshold is not ...:
            changes["low_balance_threshold"] = (
                None
                if low_balance_threshold is None
                else _amount(low_balance_threshold, minimum=0, what="low-balance threshold")
            )
        if notice_channel_id is not ...:
            if notice_channel_id is not None and (
                not _is_int(notice_channel_id) or not 0 < notice_channel_id <= _MAX_SNOWFLAKE
            ):
                raise InvalidSetting(
                    _N("{item} is not a channel id.", item=repr(notice_channel_id))
                )
            changes["notice_channel_id"] = notice_channel_id
        settings = await self._storage.update_settings(
            guild_id, changes, default_credits=self._default
        )
        if changes:
            log.info(
                "guild %d settings changed: %s",
                guild_id,
                ", ".join(sorted(changes)),
                extra={"guild_id": guild_id},
            )
        return settings

    async def claim_low_balance_notice(self, guild_id: int) -> bool:
        """True exactly once each time the balance falls below the guild's threshold."""
        return await self._storage.claim_low_balance_notice(_snowflake(guild_id, "guild_id"))
