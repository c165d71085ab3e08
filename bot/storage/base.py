"""What storage operations return, and the error they raise."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Literal, TypedDict

from bot.storage.records import JobRecord

__all__ = [
    "Delivering",
    "Discrepancy",
    "ReserveRejected",
    "Reserved",
    "SettingsChanges",
    "Settled",
    "SlotReleases",
    "StorageError",
]


class StorageError(Exception):
    """The database cannot be used: the message says what is wrong and what to check."""


@dataclass(frozen=True)
class _JobWrite:
    job: JobRecord
    balance: int


class Reserved(_JobWrite):
    """Credits were taken and the job recorded; ``balance`` is what the guild has left."""


@dataclass(frozen=True)
class ReserveRejected:
    """Nothing changed. ``reason`` says which condition failed; the figures explain it."""

    reason: Literal["insufficient", "daily_cap", "unknown_parent", "too_many_jobs"]
    balance: int
    cost: int
    cap: int | None = None
    used: int = 0  # daily_cap: credits used today; too_many_jobs: the member's open jobs


class Settled(_JobWrite):
    """A job left the open states; ``balance`` is the guild's balance afterwards."""


@dataclass(frozen=True)
class Delivering:
    """A job marked as being posted; ``balance`` is the guild's balance at that moment."""

    job: JobRecord
    balance: int


@dataclass(frozen=True)
class Discrepancy:
    """Something the audit found that should never happen."""

    guild_id: int
    problem: str


class SlotReleases:
    """API slots released, counted for the one waiter whose turn it is (see ``slot_turn``)."""

    def __init__(self) -> None:
        self.count = 0
        self._heard = asyncio.Event()

    def note(self, *_: object) -> None:
        """A slot was released (the arguments of an asyncpg notification are ignored)."""
        self.count += 1
        self._heard.set()

    async def wait(self, seen: int, at_most: float) -> None:
        """Until a release after the first ``seen``, or ``at_most`` seconds."""
        if self.count != seen:
            return
        self._heard.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most):
                await self._heard.wait()


class SettingsChanges(TypedDict, total=False):
    """Only the keys present are written; absent keys keep their stored value."""

    daily_user_cap: int | None
    allowed_channel_ids: tuple[int, ...]
    blocked_words: tuple[str, ...]
    low_balance_threshold: int | None
    notice_channel_id: int | None
