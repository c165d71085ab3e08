"""PostgreSQL session advisory locks that live exactly as long as this process.

An API slot, and a process's own liveness, is a session-level advisory lock
held on a connection of its own: the server releases it the moment that
connection ends (a clean exit, a crash, a kill -9, or, through the TCP
keepalives set on every connection, a lost host), so nothing a dead process
held outlives it by more than a few seconds.

Session locks belong to one connection and stack within it, so each held lock
has a dedicated connection, and a connection goes back to its owner's idle list
only after its lock was released (one whose unlock failed is closed instead).
An owner's connections all carry one tag of its own (their application_name),
so that another process can end them all if this one freezes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Final

import asyncpg

from bot.storage import _pg_sql as sql
from bot.storage._pg_setup import DATABASE_ERRORS

__all__ = ["KEEPALIVE", "LOCKS_APPLICATION", "SessionLocks"]

log = logging.getLogger("bot.storage")

Connect = Callable[[str], Awaitable[asyncpg.Connection]]
"""Opens a connection tagged with the given string."""

#: Server-side TCP keepalives (seconds), asked for on every connection: a silent
#: peer is probed after 5 s, then every second; after 3 unanswered probes the
#: server ends its session, and with it its locks and open transaction.
KEEPALIVE: Final = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "1",
    "tcp_keepalives_count": "3",
}
#: The application_name of the lock connections, before their owner's own tag.
LOCKS_APPLICATION: Final = "imagine-bot locks "
_KEY_ATTEMPTS: Final = 20


class SessionLocks:
    """Advisory locks on dedicated connections: API slots and owner liveness locks."""

    def __init__(self, connect: Connect) -> None:
        self._connect = connect
        self._tags: dict[str, str] = {}
        self._idle: dict[str, list[asyncpg.Connection]] = {}
        self._slots: dict[tuple[str, int], asyncpg.Connection] = {}
        self._owners: dict[str, tuple[int, asyncpg.Connection]] = {}

    # -- API slots ---------------------------------------------------------------

    async def take_slot(self, owner: str, limit: int) -> int | None:
        """The lowest free slot in ``[0, limit)``, locked for ``owner``; None if all are held."""
        if limit <= 0:
            return None
        # A connection popped from the idle list is this attempt's alone.
        idle = self._idle.setdefault(owner, [])
        conn = idle.pop() if idle else await self._connect(self._tag(owner))
        try:
            slot = await conn.fetchval(sql.TRY_SLOT, limit)
        except BaseException:
            conn.terminate()  # its state is unknown: it may hold the lock
            raise
        if slot is None:
            self._idle.setdefault(owner, []).append(conn)
            return None
        self._slots[(owner, int(slot))] = conn
        return int(slot)

    async def release_slot(self, owner: str, slot: int) -> None:
        """Unlock ``owner``'s ``slot`` (nothing happens if it does not hold it)."""
        conn = self._slots.pop((owner, slot), None)
        if conn is not None:
            await self._give_back(owner, conn, sql.UNLOCK_SLOT, slot)

    async def release_owner_slots(self, owner: str) -> None:
        for owner_name, slot in [key for key in self._slots if key[0] == owner]:
            await self.release_slot(owner_name, slot)

    def _tag(self, owner: str) -> str:
        return self._tags.setdefault(owner, secrets.token_hex(8))

    async def _give_back(self, owner: str, conn: asyncpg.Connection, unlock: str, key: int) -> None:
        """Unlock on ``conn`` and keep it idle, or close it if the lock may remain."""
        try:
            unlocked = bool(await conn.fetchval(unlock, key))
        except DATABASE_ERRORS as error:
            # The connection is as good as gone; closing it frees its locks on the server.
            log.warning("could not release an advisory lock (%s); closing its connection", error)
            conn.terminate()
            return
        except BaseException:
            conn.terminate()  # cancelled mid-unlock: the lock may remain, so the connection goes
            raise
        if unlocked and not conn.is_closed():
            self._idle.setdefault(owner, []).append(conn)
        else:
            conn.terminate()

    # -- owner liveness ----------------------------------------------------------

    async def owner_key(self, owner: str) -> int | None:
        """The key of ``owner``'s liveness lock if this process still holds it (asked of
        the server: a connection cut without a word looks open from this side)."""
        held = self._owners.get(owner)
        if held is None:
            return None
        key, conn = held
        try:
            if not conn.is_closed() and await conn.fetchval(sql.HOLDS_OWNER_LOCK, key):
                return key
        except DATABASE_ERRORS as error:
            log.warning("the liveness lock's connection failed (%s); locking again", error)
        del self._owners[owner]
        conn.terminate()
        return None

    async def hold_owner(self, owner: str) -> int:
        """Take a fresh liveness lock for ``owner`` on a connection of its own; its key."""
        conn = await self._connect(self._tag(owner))
        try:
            for _ in range(_KEY_ATTEMPTS):
                key = secrets.randbelow(2**31)
                if await conn.fetchval(sql.TRY_OWNER_LOCK, key):
                    self._owners[owner] = (key, conn)
                    return key
        except BaseException:
            conn.terminate()
            raise
        conn.terminate()
        raise RuntimeError("no free owner lock key found")  # 2**31 keys: never in practice

    async def drop_owner(self, owner: str) -> None:
        held = self._owners.pop(owner, None)
        if held is not None:
            key, conn = held
            await self._give_back(owner, conn, sql.UNLOCK_OWNER, key)

    # -- shutdown ----------------------------------------------------------------

    async def close(self) -> None:
        """Close every connection: whatever they still hold is released with them."""
        conns = [
            *(conn for idle in self._idle.values() for conn in idle),
            *self._slots.values(),
            *(conn for _, conn in self._owners.values()),
        ]
        self._idle.clear()
        self._slots.clear()
        self._owners.clear()
        for conn in conns:
            try:
                await asyncio.wait_for(conn.close(), timeout=5)
            except (TimeoutError, asyncpg.InterfaceError, OSError):
                conn.terminate()
