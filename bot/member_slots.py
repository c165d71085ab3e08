"""How many jobs each member has queued or running in this process (``MAX_QUEUED_PER_USER``).

The database counts a member's jobs across processes at reservation; this count
answers at once, before any await, so two quick commands cannot both pass.
"""

from __future__ import annotations

from bot.i18n import _NP
from bot.job_model import QueueFull

__all__ = ["MemberSlots"]

Member = tuple[int, int]  # (guild id, user id)


class MemberSlots:
    """Each member's jobs in progress, capped at ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._load: dict[Member, int] = {}

    def load(self, member: Member) -> int:
        return self._load.get(member, 0)

    def take(self, member: Member) -> None:
        """Count one more job for ``member``, or raise :class:`QueueFull` at the limit."""
        load = self._load.get(member, 0)
        if load >= self.limit:
            raise QueueFull(
                _NP(
                    "You already have {count} image job in progress "
                    "(the limit is {limit}). Try again when one has finished.",
                    "You already have {count} image jobs in progress "
                    "(the limit is {limit}). Try again when one has finished.",
                    load,
                    limit=self.limit,
                )
            )
        self._load[member] = load + 1

    def release(self, member: Member) -> None:
        remaining = self._load.get(member, 0) - 1
        if remaining > 0:
            self._load[member] = remaining
        else:
            self._load.pop(member, None)
