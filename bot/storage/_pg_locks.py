"""PostgreSQL session advisory locks that live exactly as long as this process.

API slots and each process's liveness are session locks, one per dedicated raw
asyncpg connection (outside the SQLAlchemy pool): the server frees them when that
connection ends (exit, crash, kill -9, or a lost host through TCP keepalives).
An owner's connections share one application_name tag, so a frozen owner's can
be ended by another process.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final, TypeVar
from weakref import WeakValueDictionary

import asyncpg
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.storage._engine import Database
from bot.storage._pg_setup import DATABASE_ERRORS, PgDatabase, ServerClock
from bot.storage._rows import scalar
from bot.storage.base import Reserved, ReserveRejected, SlotReleases, StorageError
from bot.storage.records import JobRecord, NewJob
from bot.storage.sql import SQLStorage

__all__ = ["API_SLOT_LOCK_CLASS", "LOCKS_APPLICATION", "OWNER_LOCK_CLASS", "PgStorage"]

log = logging.getLogger("bot.storage")
T = TypeVar("T")

#: The application_name of the lock connections, before their owner's own tag.
LOCKS_APPLICATION: Final = "imagine-bot locks "
_KEY_ATTEMPTS: Final = 20

# Advisory lock classes (the two-int4 form): API slots and owners' liveness are
# session locks here; the rate windows' are transaction locks (_settings.py).
API_SLOT_LOCK_CLASS: Final = int.from_bytes(b"apis", "big")
OWNER_LOCK_CLASS: Final = int.from_bytes(b"ownr", "big")
SLOT_TURN_LOCK_CLASS: Final = int.from_bytes(b"turn", "big")
#: Notified at every slot release, so the process whose turn it is tries again at once.
SLOT_FREED: Final = "imagine_api_slot_freed"

# The held advisory locks of OWNER_LOCK_CLASS in this database: key, holder.
_HELD_OWNER_KEYS: Final = f"""
    SELECT l.objid::bigint AS objid, l.pid FROM pg_locks AS l
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
       AND l.classid = {OWNER_LOCK_CLASS:d}::oid
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
# On the dedicated lock connections ($1). The lowest free slot in [0, $1): the
# Limit above the scan stops at the first lock granted, so no other is taken.
TRY_SLOT: Final = f"""
    SELECT n FROM generate_series(0, $1::integer - 1) AS n
     WHERE pg_try_advisory_lock({API_SLOT_LOCK_CLASS:d}, n)
     LIMIT 1
"""
UNLOCK_SLOT: Final = f"""
    SELECT pg_advisory_unlock({API_SLOT_LOCK_CLASS:d}, $1::integer)
      FROM pg_notify('{SLOT_FREED}', '')
"""
# The server grants a blocked advisory lock in the order it was asked for.
TAKE_TURN: Final = f"SELECT pg_advisory_lock({SLOT_TURN_LOCK_CLASS:d}, 0)"
LEAVE_TURN: Final = f"SELECT pg_advisory_unlock({SLOT_TURN_LOCK_CLASS:d}, 0)"
TRY_OWNER_LOCK: Final = f"SELECT pg_try_advisory_lock({OWNER_LOCK_CLASS:d}, $1::integer)"
UNLOCK_OWNER: Final = f"SELECT pg_advisory_unlock({OWNER_LOCK_CLASS:d}, $1::integer)"
HOLDS_OWNER_LOCK: Final = f"""
    SELECT EXISTS (SELECT 1 FROM ({_HELD_OWNER_KEYS}) AS held
                    WHERE held.objid = $1::bigint AND held.pid = pg_backend_pid())
"""
# An owner holding its liveness lock but silent since :cutoff is frozen: end its lock
# sessions (named :prefix + tag) to free its API slots, sparing :owner; the count ended.
FENCE_SILENT_OWNERS: Final = text(f"""
    WITH silent AS (
        SELECT h.pid FROM job_owners AS o
          JOIN ({_HELD_OWNER_KEYS}) AS h ON h.objid = o.lock_key::bigint
         WHERE o.heartbeat_at < :cutoff AND o.owner <> :owner
    ), tags AS (
        SELECT a.application_name FROM pg_stat_activity AS a JOIN silent USING (pid)
         WHERE starts_with(a.application_name, :prefix)
    )
    SELECT COUNT(*) FILTER (WHERE pg_terminate_backend(a.pid)) FROM pg_stat_activity AS a
     WHERE a.datname = current_database()
       AND a.application_name IN (SELECT application_name FROM tags)
""")


_SERVER_NOW: Final = select(func.clock_timestamp())


@dataclass
class _Turn:
    """An owner's place among the processes waiting for an API slot, on a connection of its own."""

    local: asyncio.Lock = field(default_factory=asyncio.Lock)
    releases: SlotReleases = field(default_factory=SlotReleases)
    conn: asyncpg.Connection | None = None

    def drop_connection(self) -> None:
        if self.conn is not None:
            self.conn.terminate()  # the server frees the turn with it
            self.conn = None


class SessionLocks:
    """Advisory locks on dedicated connections: API slots and owner liveness locks."""

    def __init__(self, connect: Callable[[str], Awaitable[asyncpg.Connection]]) -> None:
        self._connect = connect
        self._tags: dict[str, str] = {}
        self._idle: dict[str, list[asyncpg.Connection]] = {}
        self._slots: dict[tuple[str, int], asyncpg.Connection] = {}
        self._owners: dict[str, tuple[int, asyncpg.Connection]] = {}
        self._turns: dict[str, _Turn] = {}

    # -- API slots ---------------------------------------------------------------

    async def take_slot(self, owner: str, limit: int) -> int | None:
        """The lowest free slot in ``[0, limit)``, locked for ``owner``; None if all are held."""
        if limit <= 0:
            return None
        # A connection popped from the idle list is this attempt's alone.
        idle = self._idle.setdefault(owner, [])
        conn = idle.pop() if idle else await self._connect(self._tag(owner))
        try:
            slot = await conn.fetchval(TRY_SLOT, limit)
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
            await self._give_back(owner, conn, UNLOCK_SLOT, slot)

    async def release_owner_slots(self, owner: str) -> None:
        for holder, slot in list(self._slots):
            if holder == owner:
                await self.release_slot(owner, slot)

    async def take_turn(self, owner: str) -> _Turn:
        """Wait for ``owner``'s turn among every process's waiters; it hears every release."""
        turn = self._turns.setdefault(owner, _Turn())
        await turn.local.acquire()
        try:
            if turn.conn is None or turn.conn.is_closed():
                turn.conn = await self._connect(self._tag(owner))
                # Its wait lasts as long as every slot is busy, and a retry would lose its place.
                await turn.conn.execute("SET lock_timeout = 0")
                await turn.conn.add_listener(SLOT_FREED, turn.releases.note)
            await turn.conn.fetchval(TAKE_TURN)
        except BaseException:
            turn.drop_connection()  # cancelled while queued, it may still get the lock
            turn.local.release()
            raise
        return turn

    async def leave_turn(self, turn: _Turn) -> None:
        """End a turn. A failure is logged: closing the connection ends the turn too."""
        try:
            if turn.conn is not None:
                await turn.conn.fetchval(LEAVE_TURN)
        except DATABASE_ERRORS as error:
            log.warning("could not end a turn for an API slot (%s); closing its connection", error)
            turn.drop_connection()
        except BaseException:
            turn.drop_connection()
            raise
        finally:
            turn.local.release()

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
            if not conn.is_closed() and await conn.fetchval(HOLDS_OWNER_LOCK, key):
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
                if await conn.fetchval(TRY_OWNER_LOCK, key):
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
            await self._give_back(owner, conn, UNLOCK_OWNER, key)

    # -- shutdown ----------------------------------------------------------------

    async def close(self) -> None:
        """Close every connection: whatever they still hold is released with them."""
        conns = [
            *(conn for idle in self._idle.values() for conn in idle),
            *self._slots.values(),
            *(conn for _, conn in self._owners.values()),
            *(turn.conn for turn in self._turns.values() if turn.conn is not None),
        ]
        self._turns.clear()
        self._idle.clear()
        self._slots.clear()
        self._owners.clear()
        for conn in conns:
            try:
                await asyncio.wait_for(conn.close(), timeout=5)
            except (TimeoutError, asyncpg.InterfaceError, OSError):
                conn.terminate()


class PgStorage(SQLStorage):
    """The shared query layer, with API slots and liveness as session locks."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        # A guild's reservations queue here, two at a time, rather than each holding a
        # pooled connection while the database serialises them on the guild's row.
        self._guild_turns: WeakValueDictionary[int, asyncio.Semaphore] = WeakValueDictionary()
        assert isinstance(db, PgDatabase)
        raw_connect = db.raw_connect
        self._locks = SessionLocks(lambda tag: raw_connect(LOCKS_APPLICATION + tag))

    async def close(self) -> None:
        await self._locks.close()
        await super().close()

    async def _guarded(self, work: Awaitable[T]) -> T:
        if self._db.closed:
            raise StorageError(f"The database {self._db.where} is already closed.")
        try:
            return await work
        except DATABASE_ERRORS as error:
            raise self._db.error(error) from None

    async def reserve_job(
        self, job: NewJob, *, default_credits: int, note: str | None
    ) -> Reserved | ReserveRejected:
        async with self._guild_turns.setdefault(job.guild_id, asyncio.Semaphore(2)):
            return await super().reserve_job(job, default_credits=default_credits, note=note)

    async def _held_owner_keys(self, conn: AsyncConnection) -> list[int]:
        rows = await conn.execute(text(f"SELECT objid FROM ({_HELD_OWNER_KEYS}) AS held"))
        return [int(row[0]) for row in rows]

    async def heartbeat(self, owner: str) -> None:
        """The first heartbeat (or the first after its lock connection was lost) takes
        the owner's liveness lock and forgets the owners whose lock is gone. Each one
        measures the host clock against the server's again."""
        clock = self._db.clock
        if isinstance(clock, ServerClock):  # not a test's own clock
            # Timed inside the transaction: a wait for a pooled connection must not skew it.
            await self._db.read(lambda conn: clock.measure(lambda: scalar(conn, _SERVER_NOW)))
        key = await self._guarded(self._locks.owner_key(owner))
        if key is None:
            key = await self._guarded(self._locks.hold_owner(owner))
            await self._beat(owner, key, forget_dead=True)
        else:
            await self._beat(owner, key, forget_dead=False)

    async def release_owner(self, owner: str) -> None:
        await self._guarded(self._locks.release_owner_slots(owner))
        await self._guarded(self._locks.drop_owner(owner))
        await super().release_owner(owner)

    async def recoverable_jobs(self, owner: str | None, *, stale_after: float) -> list[JobRecord]:
        """First end the lock sessions of processes frozen for ``stale_after`` seconds."""
        if owner is not None:
            values = {
                "owner": owner,
                "cutoff": self._now() - timedelta(seconds=stale_after),
                "prefix": LOCKS_APPLICATION,
            }

            async def fence(conn: AsyncConnection) -> int:
                return int((await conn.execute(FENCE_SILENT_OWNERS, values)).scalar_one())

            fenced = await self._db.write(fence)
            if fenced:
                log.warning(
                    "ended %d database session(s) of processes silent for %gs", fenced, stale_after
                )
        return await super().recoverable_jobs(owner, stale_after=stale_after)

    async def acquire_slot(self, owner: str, *, limit: int, ttl: float) -> int | None:
        """A slot is held until released or until this process's connection ends, so
        ``ttl`` (for leases) is unused."""
        if limit < 0 or not ttl > 0:
            raise ValueError("acquire_slot needs limit >= 0 and ttl > 0")
        return await self._guarded(self._locks.take_slot(owner, limit))

    async def release_slot(self, owner: str, slot: int) -> None:
        await self._guarded(self._locks.release_slot(owner, slot))

    @asynccontextmanager
    async def slot_turn(self, owner: str) -> AsyncIterator[SlotReleases]:
        """Waiters for an API slot line up across processes, woken by any process's release."""
        turn = await self._guarded(self._locks.take_turn(owner))
        try:
            yield turn.releases
        finally:
            await self._locks.leave_turn(turn)
