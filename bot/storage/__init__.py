"""Persistence: every SQL statement of the bot lives in this package.

``open_storage(DATABASE_URL)`` picks the backend from the URL (``sqlite:///…``
or ``postgresql://…``) and returns a :class:`Storage`; the rest of the bot only
sees that interface.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from bot.storage._engine import open_engine
from bot.storage._migrate import migrate
from bot.storage.base import StorageError
from bot.storage.sql import SQLStorage

Storage = SQLStorage
"""The storage interface the rest of the bot uses (one implementation, either database)."""

__all__ = ["DEFAULT_LOCK_TIMEOUT", "Storage", "StorageError", "open_storage"]

DEFAULT_LOCK_TIMEOUT = 5.0
"""Seconds a write waits for another process holding the database."""


async def open_storage(
    database_url: str,
    *,
    clock: Callable[[], datetime] | None = None,
    lock_timeout: float | None = None,
) -> Storage:
    """Open (and migrate) the database named by ``DATABASE_URL``.

    ``clock`` (tests only) replaces the UTC wall clock used for timestamps and
    for what "today" means. ``lock_timeout`` defaults to
    :data:`DEFAULT_LOCK_TIMEOUT` seconds. Raises :class:`StorageError` with a one-line,
    actionable message that never shows a password.
    """
    timeout = DEFAULT_LOCK_TIMEOUT if lock_timeout is None else lock_timeout
    db = await open_engine(database_url.strip(), clock, timeout)
    try:
        await migrate(db)
    except BaseException:
        await db.close()
        raise
    if db.dialect != "postgresql":
        return SQLStorage(db)
    from bot.storage._pg_locks import PgStorage  # noqa: PLC0415 - loaded only for PostgreSQL

    return PgStorage(db)
