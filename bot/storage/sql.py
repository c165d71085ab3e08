"""The one storage backend: SQLAlchemy Core over aiosqlite (SQLite) or asyncpg (PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import select

from bot.storage._engine import Database
from bot.storage._insight import InsightOps
from bot.storage._money import MoneyOps
from bot.storage._settings import SettingsOps

__all__ = ["SQLStorage"]


class SQLStorage(MoneyOps, SettingsOps, InsightOps):
    """:class:`~bot.storage.base.Storage` on SQLite or PostgreSQL."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        #: Several bot processes may share a PostgreSQL database (see Storage.shared).
        self.shared = db.dialect == "postgresql"

    @property
    def where(self) -> str:
        """The database (for messages and logs; never a password)."""
        return self._db.where

    @property
    def dialect(self) -> str:
        return self._db.dialect

    async def ping(self) -> None:
        """One round trip to the database (the health check)."""
        await self._db.read(lambda conn: conn.execute(select(1)))

    async def close(self) -> None:
        await self._db.close()
