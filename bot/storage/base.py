"""The storage interface the rest of the bot uses (bot.storage.sql implements it once,
for SQLite and PostgreSQL).

Each method is one atomic unit of work: it either happens completely or not at
all, and no two of them interleave. Methods that change a balance always write
the matching ledger entry in the same transaction, so ``sum(ledger) == balance``
holds by construction. Business rules (what may be spent, what the messages
say) live in :mod:`bot.credits`; a backend only guarantees atomicity, the
conditions it is asked to check, and that it never double-counts.

Timestamps are taken by the backend inside the transaction, in UTC, so the
order of a guild's entries follows the order in which they were committed; a
database server's clock would do just as well. "Today" means the current UTC day.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal, Protocol, TypedDict

from bot.storage.records import (
    GuildSettings,
    JobRecord,
    JobStatus,
    LedgerEntry,
    NewJob,
    UsageSummary,
)

__all__ = [
    "Discrepancy",
    "ReserveRejected",
    "Reserved",
    "SettingsChanges",
    "Settled",
    "Storage",
    "StorageError",
]


class StorageError(Exception):
    """The database cannot be used: the message says what is wrong and what to check."""


@dataclass(frozen=True)
class Reserved:
    """Credits were taken and the job recorded; ``balance`` is what the guild has left."""

    job: JobRecord
    balance: int


@dataclass(frozen=True)
class ReserveRejected:
    """Nothing changed. ``reason`` says which condition failed; the figures explain it."""

    reason: Literal["insufficient", "daily_cap", "unknown_parent", "too_many_jobs", "refused"]
    balance: int
    cost: int
    cap: int | None = None
    used: int = 0  # daily_cap: credits used today; too_many_jobs: the member's open jobs
    message: str | None = None  # refused: what ``NewJob.admit`` said


@dataclass(frozen=True)
class Settled:
    """A job left the open states; ``balance`` is the guild's balance afterwards."""

    job: JobRecord
    balance: int


@dataclass(frozen=True)
class Discrepancy:
    """Something the audit found that should never happen."""

    guild_id: int
    problem: str


class SettingsChanges(TypedDict, total=False):
    """Only the keys present are written; absent keys keep their stored value."""

    daily_user_cap: int | None
    allowed_channel_ids: tuple[int, ...]
    blocked_words: tuple[str, ...]
    low_balance_threshold: int | None
    notice_channel_id: int | None


class Storage(Protocol):
    """Persistence for balances, the ledger, jobs, guild settings and small state."""

    #: True when several processes may share this database (PostgreSQL): the bot
    #: then coordinates API slots and the request rate through it.
    shared: bool

    async def close(self) -> None:
        """Finish pending work and release the connection. Safe to call twice."""

    async def ping(self) -> None:
        """One round trip to the database (the health check)."""

    # -- balances -------------------------------------------------------------

    async def ensure_guild(self, guild_id: int, *, default_credits: int) -> tuple[int, bool]:
        """Create the guild with a GRANT of ``default_credits`` unless it exists.

        Returns ``(balance, created)``. Concurrent callers create it exactly once.
        """
        ...

    async def get_balance(self, guild_id: int) -> int | None:
        """The balance, or None for a guild never seen."""
        ...

    async def grant(
        self,
        guild_id: int,
        amount: int,
        *,
        actor_id: int | None,
        note: str | None,
        default_credits: int,
        max_balance: int,
    ) -> int | None:
        """Add ``amount`` (a GRANT entry), creating the guild first if needed.

        Returns the new balance, or None (nothing changed) if it would exceed
        ``max_balance``.
        """
        ...

    async def set_balance(
        self,
        guild_id: int,
        amount: int,
        *,
        actor_id: int | None,
        note: str | None,
        default_credits: int,
    ) -> tuple[int, int]:
        """Set the balance (a SET entry whose delta is new - old). Returns ``(old, new)``."""
        ...

    # -- jobs -----------------------------------------------------------------

    async def reserve_job(
        self, job: NewJob, *, default_credits: int, note: str | None
    ) -> Reserved | ReserveRejected:
        """Ensure the guild, apply ``job.admit`` to its settings, check the member's
        daily cap and the balance, then debit; all in one transaction.

        Records the job (queued) and a RESERVE entry of ``-job.cost``. The daily
        usage is what the member's jobs created today cost, net of refunds.
        """
        ...

    async def start_job(self, job_id: int) -> JobRecord | None:
        """Move a queued job to running. Returns the job as it now is (None: unknown)."""
        ...

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
    ) -> Settled | None:
        """Settle an open job: a COMMIT entry (delta 0) when ``committed`` > 0 and a
        REFUND entry crediting ``refunded`` back when it is > 0.

        Only succeeds if the job is still queued or running and
        ``committed + refunded == cost`` and ``committed == images_delivered *
        units_per_image``; otherwise returns None and changes nothing.
        """
        ...

    async def mark_delivering(self, job_id: int) -> JobRecord | None:
        """Record that the open job's result is about to be posted (``delivering_at``).

        Returns the job as it now is, or None (nothing changed) when it is unknown or
        no longer open: its credits were settled elsewhere, so it must not be posted.
        """
        ...

    async def set_job_message(self, job_id: int, message_id: int) -> bool:
        """Remember the result message. False: no such job."""
        ...

    async def get_job(self, job_id: int) -> JobRecord | None: ...

    async def list_jobs(
        self, *, statuses: Collection[JobStatus], guild_id: int | None = None
    ) -> list[JobRecord]:
        """Jobs in the given states, oldest first."""
        ...

    async def usage_today(self, guild_id: int, user_id: int) -> int:
        """Credits the member's jobs created today (UTC) cost, net of refunds."""
        ...

    # -- ledger ---------------------------------------------------------------

    async def ledger_entries(self, guild_id: int, *, limit: int, offset: int) -> list[LedgerEntry]:
        """Newest first."""
        ...

    async def count_ledger_entries(self, guild_id: int) -> int: ...

    # -- insight (read only) ------------------------------------------------------

    async def usage_summary(self, guild_id: int, *, days: int, top: int) -> UsageSummary:
        """Spending over the last ``days`` UTC days (today included): per day, the
        ``top`` biggest spenders, and how many members spent. A job counts on the day
        it was reserved, net of its refund; open jobs count what they reserved."""
        ...

    async def member_results(
        self, guild_id: int, user_id: int, *, limit: int, offset: int
    ) -> list[JobRecord]:
        """The member's jobs in the guild that delivered images and have a result
        message, newest first."""
        ...

    async def count_member_results(self, guild_id: int, user_id: int) -> int: ...

    async def audit(self, guild_id: int | None = None) -> list[Discrepancy]:
        """Check ``sum(ledger.delta) == balance`` per guild and each job's entries."""
        ...

    # -- settings and state ---------------------------------------------------

    async def get_settings(self, guild_id: int) -> GuildSettings:
        """Stored settings, or the defaults for a guild without any."""
        ...

    async def update_settings(
        self, guild_id: int, changes: SettingsChanges, *, default_credits: int
    ) -> GuildSettings:
        """Write only the given fields (creating the guild if needed); returns the result."""
        ...

    async def claim_low_balance_notice(self, guild_id: int) -> bool:
        """True once per fall below the guild's low-balance threshold.

        Re-armed whenever the balance is back at or above the threshold after a
        grant, a set, a refund or a change of the threshold.
        """
        ...

    async def get_state(self, key: str) -> str | None: ...

    async def set_state(self, key: str, value: str) -> None: ...

    # -- processes sharing the database ----------------------------------------

    async def heartbeat(self, owner: str) -> None:
        """Record that process ``owner`` is alive now (creating its row)."""
        ...

    async def release_owner(self, owner: str) -> None:
        """A clean shutdown: forget ``owner`` and free the API slots it holds."""
        ...

    async def recoverable_jobs(self, owner: str | None, *, stale_after: float) -> list[JobRecord]:
        """Open (queued or running) jobs that no live process is working on, oldest first.

        ``owner`` None: every open job (one process owns the database). Otherwise
        the open jobs of ``owner`` itself (its previous run died), jobs without an
        owner, and jobs whose owner sent no heartbeat for ``stale_after`` seconds
        (or never did); a live process's jobs are left alone.
        """
        ...

    async def acquire_slot(self, owner: str, *, limit: int, ttl: float) -> int | None:
        """Take one of ``limit`` API-call slots shared by every process, for ``ttl``
        seconds (a slot whose time ran out is free again). Returns its number, or
        None when all ``limit`` are taken."""
        ...

    async def release_slot(self, owner: str, slot: int) -> None:
        """Give back a slot taken by ``owner`` (nothing happens if it expired and moved on)."""
        ...

    async def take_rate_token(self, key: str, *, limit: int, period: float) -> float:
        """One request under ``key``, if fewer than ``limit`` were made in the last
        ``period`` seconds by any process: record it and return 0. Otherwise record
        nothing and return the seconds until the oldest one leaves the window."""
        ...
