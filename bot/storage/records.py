"""The records that travel between the ledger service and a storage backend.

They are re-exported by :mod:`bot.credits`, which is where the rest of the bot
imports them from. They live here so that a backend never imports the service.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

__all__ = [
    "OPEN_STATUSES",
    "DailySpend",
    "GuildSettings",
    "JobRecord",
    "JobStatus",
    "LedgerEntry",
    "LedgerKind",
    "MemberSpend",
    "NewJob",
    "UsageSummary",
]


class JobStatus(StrEnum):
    """Where a job is in its life: queued -> running -> succeeded | failed | refunded."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUNDED = "refunded"

    @property
    def is_open(self) -> bool:
        """True while the job's credits are reserved and not yet settled."""
        return self in OPEN_STATUSES


OPEN_STATUSES: frozenset[JobStatus] = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})


class LedgerKind(StrEnum):
    """Why a ledger entry exists. Only ``grant``, ``set``, ``reserve`` and ``refund`` move money."""

    GRANT = "grant"
    SET = "set"
    RESERVE = "reserve"
    REFUND = "refund"
    COMMIT = "commit"


@dataclass(frozen=True)
class JobRecord:
    """One ``/imagine`` request and what it cost (``cost = units_per_image * images_total``)."""

    id: int
    guild_id: int
    channel_id: int
    user_id: int
    params: dict[str, Any]
    cost: int
    units_per_image: int
    images_total: int
    images_delivered: int
    status: JobStatus
    message_id: int | None
    error: str | None
    parent_job_id: int | None
    created_at: datetime
    updated_at: datetime
    owner: str | None = None
    #: When the bot began posting the result (None: not yet). An open job with it
    #: set is being delivered: recovery decides it from the channel (bot.recovery).
    delivering_at: datetime | None = None

    @property
    def delivering(self) -> bool:
        return self.status.is_open and self.delivering_at is not None


@dataclass(frozen=True)
class LedgerEntry:
    """One append-only line of a guild's statement; the deltas sum to the balance.

    ``balance_after`` is the guild's balance right after this entry was written.
    """

    id: int
    guild_id: int
    user_id: int | None
    job_id: int | None
    delta: int
    kind: LedgerKind
    actor_id: int | None
    note: str | None
    created_at: datetime
    balance_after: int | None = None


@dataclass(frozen=True)
class GuildSettings:
    """Limits a guild's admins set for their members. Empty ``allowed_channel_ids`` = all."""

    guild_id: int
    daily_user_cap: int | None = None
    allowed_channel_ids: tuple[int, ...] = ()
    blocked_words: tuple[str, ...] = ()
    low_balance_threshold: int | None = None
    notice_channel_id: int | None = None
    #: Which change of the guild's settings this is (0: never changed); newer is larger.
    version: int = field(default=0, compare=False)


@dataclass(frozen=True)
class NewJob:
    """A job to reserve credits for. Its cost is ``units_per_image * images_total``."""

    guild_id: int
    channel_id: int
    user_id: int
    params: dict[str, Any]
    units_per_image: int
    images_total: int
    parent_job_id: int | None = None
    #: The process that runs the job (see Storage.recoverable_jobs); None: unowned.
    owner: str | None = None
    #: Refuse the reservation when the member already has this many open jobs in
    #: the guild, across every process sharing the database. None: no limit.
    max_active: int | None = None

    @property
    def cost(self) -> int:
        return self.units_per_image * self.images_total


@dataclass(frozen=True)
class DailySpend:
    """One UTC day of a guild's spending: jobs created that day and what they cost.

    ``credits`` is net of refunds (what was reserved minus what came back).
    """

    day: date
    credits: int
    refunded: int
    jobs: int


@dataclass(frozen=True)
class MemberSpend:
    """What one member's jobs over a period cost, net of refunds."""

    user_id: int
    credits: int
    jobs: int


@dataclass(frozen=True)
class UsageSummary:
    """A guild's spending from ``first_day`` to ``last_day`` (UTC days, both included).

    ``days`` holds only the days with jobs, oldest first; ``top_members`` the
    biggest spenders, biggest first; ``members`` how many members spent at all.
    """

    guild_id: int
    first_day: date
    last_day: date
    days: tuple[DailySpend, ...]
    top_members: tuple[MemberSpend, ...]
    members: int

    @property
    def credits(self) -> int:
        return sum(day.credits for day in self.days)

    @property
    def refunded(self) -> int:
        return sum(day.refunded for day in self.days)

    @property
    def jobs(self) -> int:
        return sum(day.jobs for day in self.days)

    def every_day(self) -> list[DailySpend]:
        """One entry per day of the period, days without jobs as zeros."""
        known = {day.day: day for day in self.days}
        count = (self.last_day - self.first_day).days + 1
        dates = (self.first_day + timedelta(days=n) for n in range(count))
        return [known.get(d) or DailySpend(d, 0, 0, 0) for d in dates]
