"""Insight over storage for admins and members: a guild's ledger entries (``/credits history``),
its spending over a period (``/credits usage``) and a member's own results (``/gallery``).

Reads, and one write: a result deleted from the channel leaves the gallery. The ledger
(money) stays in :mod:`bot.credits`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from bot.checks import is_int, snowflake
from bot.credit_errors import InvalidAmount
from bot.i18n import _N
from bot.storage import Storage
from bot.storage.records import JobRecord, LedgerEntry, UsageSummary

__all__ = [
    "DEFAULT_DAYS",
    "GALLERY_PAGE_SIZE",
    "MAX_DAYS",
    "MAX_HISTORY_PAGE",
    "GalleryEntry",
    "GalleryPage",
    "Insight",
    "InvalidPeriod",
]

DEFAULT_DAYS: Final = 30
MAX_DAYS: Final = 90
TOP_MEMBERS: Final = 5
GALLERY_PAGE_SIZE: Final = 5
MAX_HISTORY_PAGE: Final = 1000


class InvalidPeriod(ValueError):
    """A period outside 1 to :data:`MAX_DAYS` days; the message says so."""

    def __init__(self, days: int) -> None:
        self.user_message = _N(
            "Choose between 1 and {max_days} days (you asked for {days}).",
            max_days=MAX_DAYS,
            days=days,
        )
        super().__init__(self.user_message)


@dataclass(frozen=True)
class GalleryEntry:
    """One delivered result, with what the gallery shows of it."""

    job_id: int
    guild_id: int
    channel_id: int
    message_id: int
    prompt: str
    seeds: tuple[int, ...]
    cost: int
    created_at_unix: int

    @property
    def jump_url(self) -> str:
        return f"https://discord.com/channels/{self.guild_id}/{self.channel_id}/{self.message_id}"

    @classmethod
    def from_job(cls, job: JobRecord) -> GalleryEntry:
        assert job.message_id is not None  # storage returns only jobs with a result message
        return cls(
            job_id=job.id,
            guild_id=job.guild_id,
            channel_id=job.channel_id,
            message_id=job.message_id,
            prompt=str(job.params.get("prompt") or ""),
            seeds=_seeds(job.params, job.images_total),
            cost=job.units_per_image * job.images_delivered,
            created_at_unix=int(job.created_at.timestamp()),
        )


def _seeds(params: dict[str, Any], count: int) -> tuple[int, ...]:
    """Image n of a job has seed ``seed + n`` (DESIGN §1); unknown when none was stored."""
    seed = params.get("seed")
    if not isinstance(seed, int):
        return ()
    return tuple((seed + n) % 2**32 for n in range(max(count, 1)))


@dataclass(frozen=True)
class GalleryPage:
    """One page of a member's results; ``page`` is 0-based and within range."""

    entries: tuple[GalleryEntry, ...]
    page: int
    pages: int
    total: int


class Insight:
    """What admins and members may look at, over the storage."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def history(
        self, guild_id: int, *, limit: int = 10, offset: int = 0
    ) -> list[LedgerEntry]:
        """The guild's ledger entries, newest first."""
        guild_id = snowflake(guild_id, "guild_id")
        if not is_int(limit) or not 1 <= limit <= MAX_HISTORY_PAGE:
            raise InvalidAmount(f"The page size must be 1 to {MAX_HISTORY_PAGE}.")
        if not is_int(offset) or offset < 0:
            raise InvalidAmount("The page offset cannot be negative.")
        return await self._storage.ledger_entries(guild_id, limit=limit, offset=offset)

    async def count_history(self, guild_id: int) -> int:
        return await self._storage.count_ledger_entries(snowflake(guild_id, "guild_id"))

    async def usage(
        self, guild_id: int, days: int = DEFAULT_DAYS, *, top: int = TOP_MEMBERS
    ) -> UsageSummary:
        """The guild's spending over the last ``days`` UTC days, today included."""
        if not 1 <= days <= MAX_DAYS:
            raise InvalidPeriod(days)
        return await self._storage.usage_summary(guild_id, days=days, top=top)

    async def gallery(
        self, guild_id: int, user_id: int, page: int, *, size: int = GALLERY_PAGE_SIZE
    ) -> GalleryPage:
        """Page ``page`` (clamped to the pages there are) of the member's results here."""
        total = await self._storage.count_member_results(guild_id, user_id)
        pages = max((total + size - 1) // size, 1)
        page = min(max(page, 0), pages - 1)
        jobs = await self._storage.member_results(guild_id, user_id, limit=size, offset=page * size)
        return GalleryPage(
            entries=tuple(GalleryEntry.from_job(job) for job in jobs),
            page=page,
            pages=pages,
            total=total,
        )

    async def forget_result(self, job_id: int, message_id: int) -> bool:
        """``message_id``, the job's result, was deleted: drop it from the member's gallery.
        False when it was not the job's result message (nothing changed)."""
        return await self._storage.forget_message(
            snowflake(job_id, "job_id"), snowflake(message_id, "message_id")
        )
