"""Limits that hold across every process sharing one database.

With several processes on one PostgreSQL database, an API call also takes a shared slot and a
shared rate token from the database, so ``MAX_CONCURRENT_JOBS``, ``SEGMIND_RPM`` and a 429's
wait hold for the whole bot. A slot lives with its holder's database session: a crash frees it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from typing import Protocol

from bot.segmind import SegmindRateLimited
from bot.storage import Storage, StorageError

__all__ = [
    "HeldElsewhere",
    "LocalSlots",
    "Presence",
    "SharedRateLimiter",
    "SharedSlots",
    "SlotPool",
    "owner_name",
]

log = logging.getLogger(__name__)

#: The lease of a slot in a store that keeps leases (PostgreSQL ignores it: its
#: slots are session locks that end with the holder's connection).
SLOT_TTL = 15 * 60.0
#: How often a waiter looks again unwoken: a slot freed by a crash or an ended lease sends no word.
_RECHECK = 1.0
#: The name the API's request window and 429 holds are kept under.
RATE_KEY = "segmind"


def owner_name(shard_ids: list[int] | None) -> str:
    """This run's name: unique per start (host, shards, pid and a random part), so
    two processes, or a process and its restarted self, never share a lease. A
    dead run's jobs are recovered because its liveness lock is gone, not by name."""
    shards = "-".join(map(str, shard_ids)) if shard_ids else "all"
    return f"{socket.gethostname()}:shards-{shards}:{os.getpid()}:{secrets.token_hex(4)}"


class HeldElsewhere(SegmindRateLimited):
    """A 429 another process heard and already shared: wait, without sharing it again."""


class SlotPool(Protocol):
    """Where an API call waits for permission to run."""

    #: Whether other processes share the slots, so that ``acquire`` may wait.
    shared: bool

    async def acquire(self) -> int | None:
        """A slot; raises HeldElsewhere while a 429 another process heard holds the API."""

    async def release(self, slot: int | None) -> None: ...

    async def hold(self, seconds: float) -> None:
        """The API answered 429: calls that have not started wait ``seconds``."""


class LocalSlots:
    """One process: the queue's own in-memory limit and pace are the whole story."""

    shared = False

    async def acquire(self) -> int | None:
        return None

    async def release(self, slot: int | None) -> None:
        return None

    async def hold(self, seconds: float) -> None:
        return None


class SharedSlots:
    """``limit`` API-call slots shared by every process, taken in turn, held in the database."""

    shared = True

    def __init__(self, storage: Storage, owner: str, limit: int, ttl: float = SLOT_TTL):
        self._storage = storage
        self._owner = owner
        self._limit = limit
        self._ttl = ttl

    async def acquire(self) -> int | None:
        slot: int | None = None
        try:
            # Waiters take turns across processes: one that just released a slot queues anew.
            async with self._storage.slot_turn(self._owner) as releases:
                while slot is None:
                    # The API's 429 is for its key: another process's 429 holds this queue as
                    # its own would. Asked on every try: a hold may come while slots are busy.
                    held = await self._storage.rate_held_for(RATE_KEY)
                    if held > 0:
                        raise HeldElsewhere(status=429, retry_after=held)
                    seen = releases.count
                    slot = await self._storage.acquire_slot(
                        self._owner, limit=self._limit, ttl=self._ttl
                    )
                    if slot is None:
                        await releases.wait(seen, _RECHECK)
        except BaseException:
            await self.release(slot)  # taken, but the turn ended in an error
            raise
        return slot

    async def release(self, slot: int | None) -> None:
        if slot is not None:
            await self._storage.release_slot(self._owner, slot)

    async def hold(self, seconds: float) -> None:
        try:
            await self._storage.hold_rate(RATE_KEY, seconds)
        except StorageError as error:
            # This process's queue holds anyway; the others will hear their own 429.
            log.warning("could not share the API's 429 wait with other processes: %s", error)


class SharedRateLimiter:
    """``limit`` requests per ``period`` seconds across every process (``SEGMIND_RPM``)."""

    def __init__(self, storage: Storage, limit: int, period: float = 60.0) -> None:
        self._storage = storage
        self._limit = limit
        self._period = period

    async def acquire(self) -> None:
        while True:
            wait = await self._storage.take_rate_token(
                RATE_KEY, limit=self._limit, period=self._period
            )
            if wait <= 0:
                return
            log.debug("shared Segmind rate limit reached; waiting %.2fs", wait)
            await asyncio.sleep(min(wait, self._period))


class Presence:
    """This process's heartbeat in a shared database, so others leave its jobs alone."""

    def __init__(self, storage: Storage, owner: str) -> None:
        self._storage = storage
        self.owner = owner

    async def beat(self) -> None:
        await self._storage.heartbeat(self.owner)

    async def leave(self) -> None:
        """A clean shutdown: forget this process and free the API slots it holds."""
        await self._storage.release_owner(self.owner)
