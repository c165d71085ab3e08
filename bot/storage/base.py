"""What storage operations return, and the error they raise."""

from __future__ import annotations

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


class SettingsChanges(TypedDict, total=False):
    """Only the keys present are written; absent keys keep their stored value."""

    daily_user_cap: int | None
    allowed_channel_ids: tuple[int, ...]
    blocked_words: tuple[str, ...]
    low_balance_threshold: int | None
    notice_channel_id: int | None
