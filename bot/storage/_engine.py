"""The async engine for either database, its units of work, and its error messages.

SQLite runs through aiosqlite on one pooled connection: writers queue for it in
the process and, across processes, every write begins ``BEGIN IMMEDIATE`` so
it holds SQLite's write lock from its first statement. PostgreSQL runs through
asyncpg at READ COMMITTED; a unit of work that moves money locks its guild row
first (``FOR UPDATE``, which SQLite's compiler leaves out).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar

from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from bot.storage._sqlite_setup import MIN_SQLITE_VERSION, sqlite_path
from bot.storage._sqlite_setup import describe_error as describe_sqlite
from bot.storage.base import StorageError

__all__ = ["Database", "open_engine"]

log = logging.getLogger("bot.storage")

T = TypeVar("T")
Clock = Callable[[], datetime]
Work = Callable[[AsyncConnection], Awaitable[T]]

_ATTEMPTS: Final = 3
_READ_ONLY: Final = "imagine_read"  # execution option: a read begins without the write lock


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Database:
    """An engine, where it points (for messages), and how to run a unit of work on it.

    This class is SQLite's; PostgreSQL's (``bot.storage._pg_setup.PgDatabase``) adds its
    error messages, retries and session-lock connections, and is loaded only for it.
    """

    engine: AsyncEngine
    where: str
    lock_timeout: float
    clock: Clock
    closed: bool = False
    _orphans: set[asyncio.Future[Any]] = field(default_factory=set)

    #: The driver's own exceptions, which may surface outside SQLAlchemy's wrappers.
    driver_errors: ClassVar[tuple[type[BaseException], ...]] = (sqlite3.Error,)
    read_options: ClassVar[dict[str, Any]] = {_READ_ONLY: True}

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def now(self) -> datetime:
        moment = self.clock()
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

    async def write(self, work: Work[T]) -> T:
        """``work`` as one transaction, rolled back on any error or cancellation; run
        again (up to three times) when the database says it changed nothing and may."""
        for attempt in range(_ATTEMPTS):
            try:
                return await self._run(work, {})
            except StorageError as error:
                cause = error.__cause__
                if not (cause is not None and self.retryable(cause) and attempt + 1 < _ATTEMPTS):
                    raise
                log.warning("retrying a transaction on %s after: %s", self.where, cause)
        raise AssertionError("unreachable")  # pragma: no cover

    async def read(self, work: Work[T]) -> T:
        """``work`` on one snapshot, without taking SQLite's write lock."""
        return await self._run(work, self.read_options)

    async def _run(self, work: Work[T], options: dict[str, Any]) -> T:
        """Cancelling the caller never cuts a transaction in half: once started it runs
        to its COMMIT or ROLLBACK, and the caller just stops waiting."""
        if self.closed:
            raise StorageError(f"The database {self.where} is already closed.")
        unit = asyncio.ensure_future(self._unit(work, options))
        try:
            return await asyncio.shield(unit)
        except asyncio.CancelledError:
            self._orphans.add(unit)
            unit.add_done_callback(self._orphan_done)
            raise

    def _orphan_done(self, unit: asyncio.Future[Any]) -> None:
        self._orphans.discard(unit)
        if not unit.cancelled() and unit.exception() is not None:
            log.warning("a cancelled caller's unit of work failed: %s", unit.exception())

    async def _unit(self, work: Work[T], options: dict[str, Any]) -> T:
        # exc.TimeoutError: no pooled connection came free in time (a stalled server).
        failures: tuple[type[BaseException], ...] = (
            exc.DBAPIError,
            exc.TimeoutError,
            OSError,
            *self.driver_errors,
        )
        try:
            async with self.engine.connect() as conn:
                if options:
                    await conn.execution_options(**options)
                async with conn.begin():
                    return await work(conn)
        except failures as error:
            raise self.error(error) from self.cause(error)

    def cause(self, error: BaseException) -> BaseException:
        """The driver's own exception under SQLAlchemy's wrappers."""
        if isinstance(error, exc.DBAPIError) and error.orig is not None:
            error = error.orig
        inner = error.__cause__
        return inner if isinstance(inner, self.driver_errors) else error

    def retryable(self, cause: BaseException) -> bool:
        """Whether a failed transaction changed nothing and may simply run again."""
        return False

    def error(self, error: BaseException) -> StorageError:
        cause = self.cause(error)
        if isinstance(cause, sqlite3.Error):
            return StorageError(describe_sqlite(cause, self.where, self.lock_timeout))
        return StorageError(f"Database error on {self.where}: {cause}.")

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await asyncio.gather(*self._orphans, return_exceptions=True)
            await self.engine.dispose()


async def open_engine(database_url: str, clock: Clock | None, lock_timeout: float) -> Database:
    """The engine for ``DATABASE_URL`` (the scheme was checked by the caller)."""
    if not 0 < lock_timeout <= 600:
        raise ValueError("lock_timeout must be between 0 and 600 seconds")
    if database_url.lower().startswith("sqlite"):
        db = _sqlite_engine(database_url, clock or utcnow, lock_timeout)
        if db.where != ":memory:":
            await _enable_wal(db)
        return db
    # asyncpg and the PostgreSQL code are loaded only for a PostgreSQL database.
    from bot.storage._pg_setup import open_pg  # noqa: PLC0415

    return await open_pg(database_url, clock, lock_timeout)


async def _enable_wal(db: Database) -> None:
    """Switch the file to WAL (persistent; a no-op once done). On a brand-new file, openers
    racing to switch get SQLITE_BUSY at once (SQLite skips its busy handler there), so
    this retries with backoff within the lock timeout."""
    deadline = asyncio.get_running_loop().time() + db.lock_timeout
    delay = 0.002
    try:
        async with db.engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            while True:
                try:
                    await driver.execute("PRAGMA journal_mode = WAL")
                    return
                except sqlite3.OperationalError as error:
                    busy = (getattr(error, "sqlite_errorname", "") or "").startswith("SQLITE_BUSY")
                    if not busy or asyncio.get_running_loop().time() + delay > deadline:
                        raise
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.1)
    except (exc.DBAPIError, sqlite3.Error) as error:
        await db.close()
        raise db.error(error) from None


def _sqlite_engine(database_url: str, clock: Clock, lock_timeout: float) -> Database:
    if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
        wanted = ".".join(map(str, MIN_SQLITE_VERSION))
        raise StorageError(
            f"SQLite {wanted} or newer is required; this Python has {sqlite3.sqlite_version}."
        )
    target = sqlite_path(database_url)
    if target != ":memory:":
        path = Path(target)
        if not path.is_absolute():
            path = Path.cwd() / path
        if path.is_dir():
            raise StorageError(f"DATABASE_URL points at the folder {path}, not a file.")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            reason = error.strerror or str(error)
            raise StorageError(
                f"Cannot create the database folder {path.parent}: {reason}."
            ) from None
        target = str(path)
    # One connection: writers of this process queue for it instead of for the file lock.
    pool: dict[str, Any] = (
        {"poolclass": StaticPool}
        if target == ":memory:"
        else {"pool_size": 1, "max_overflow": 0, "pool_timeout": 3600}
    )
    # Every unit ends in COMMIT or ROLLBACK: no reset is needed when the connection is returned.
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{target}",
        connect_args={"timeout": lock_timeout},
        pool_reset_on_return=None,
        **pool,
    )
    busy_ms = round(lock_timeout * 1000)

    @event.listens_for(engine.sync_engine, "connect")
    def configure(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # transactions are begun below, not by the driver
        cursor = dbapi_connection.cursor()
        for pragma in (f"busy_timeout = {busy_ms:d}", "foreign_keys = ON"):
            cursor.execute(f"PRAGMA {pragma}")
        if target != ":memory:":
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def begin(conn: Any) -> None:
        reading = conn.get_execution_options().get(_READ_ONLY, False)
        sql = "BEGIN" if reading else "BEGIN IMMEDIATE"
        # Straight to aiosqlite: one trip to its thread, not a cursor's three.
        conn.connection.dbapi_connection.run_async(lambda driver: driver.execute(sql))

    return Database(engine, target, lock_timeout, clock)
