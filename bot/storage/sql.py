"""The storage the bot uses: SQLAlchemy Core over aiosqlite (SQLite) or asyncpg (PostgreSQL).

Each method is one transaction: it happens completely or not at all. A method
that changes a balance writes the matching ledger entry in the same
transaction, so ``sum(ledger) == balance`` by construction. Business rules and
wording live in :mod:`bot.credits`. Timestamps are UTC, taken after the
guild's row is locked; "today" is the current UTC day.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import select

from bot.storage._engine import Database
from bot.storage._insight import InsightOps
from bot.storage._jobs import JobOps
from bot.storage._money import MoneyOps
from bot.storage._settings import SettingsOps
from bot.storage.base import SlotReleases

__all__ = ["SQLStorage"]


class SQLStorage(MoneyOps, JobOps, SettingsOps, InsightOps):
    """Balances, the ledger, jobs, guild settings and small state, on either database."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        #: Processes sharing a PostgreSQL database coordinate API slots and the rate through it.
        self.shared = db.dialect == "postgresql"
        self._slot_turn = asyncio.Lock()
        self._slot_releases = SlotReleases()

    @asynccontextmanager
    async def slot_turn(self, owner: str) -> AsyncIterator[SlotReleases]:
        """The turn to wait for an API slot, one waiter at a time in order; the releases it
        yields wake it. Here within this process; PgStorage lines up every process."""
        async with self._slot_turn:
            yield self._slot_releases

    async def release_slot(self, owner: str, slot: int) -> None:
        await super().release_slot(owner, slot)
        self._slot_releases.note()

    async def ping(self) -> None:
        """One round trip to the database (the health check)."""
        await self._db.read(lambda conn: conn.execute(select(1)))

    async def close(self) -> None:
        await self._db.close()
