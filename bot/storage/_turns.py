"""A few turns at a time per key, within this process.

A guild's reservations wait for their turn here rather than each holding a
pooled connection while the database serialises them on the guild's row.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass

__all__ = ["Turns"]


@dataclass
class _Turn:
    gate: asyncio.Semaphore
    users: int = 0  # holding or waiting; the entry goes when it drops to 0


class Turns:
    """``async with turns.turn(key):`` runs ``width`` holders per key at a time, in
    arrival order."""

    def __init__(self, width: int = 2) -> None:
        self._width = width
        self._turns: dict[Hashable, _Turn] = {}

    @contextlib.asynccontextmanager
    async def turn(self, key: Hashable) -> AsyncIterator[None]:
        entry = self._turns.get(key)
        if entry is None:
            entry = self._turns[key] = _Turn(asyncio.Semaphore(self._width))
        entry.users += 1
        try:
            async with entry.gate:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._turns[key]

    def __len__(self) -> int:
        """Keys with a holder or a waiter (memory stays bounded by what is in progress)."""
        return len(self._turns)
