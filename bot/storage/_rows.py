"""What every group of storage operations shares: the database, the clock, row mapping."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TypeVar

from sqlalchemy import Row, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.sqlite import Insert as SQLiteInsert
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.storage._engine import Database
from bot.storage._schema import guild_settings, jobs, ledger
from bot.storage.records import GuildSettings, JobRecord, LedgerEntry

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")
R = TypeVar("R", bound="DataclassInstance")

JOB_COLUMNS: Final = [jobs.c[field.name] for field in fields(JobRecord)]
LEDGER_COLUMNS: Final = [ledger.c[field.name] for field in fields(LedgerEntry)]
SETTINGS_COLUMNS: Final = [guild_settings.c[field.name] for field in fields(GuildSettings)]

_INSERTS: Final[dict[str, Callable[[Table], PgInsert | SQLiteInsert]]] = {
    "postgresql": postgresql.insert,
    "sqlite": sqlite.insert,
}


class Abort(Exception):  # control flow only; never leaves bot.storage
    """Roll the unit of work back and return ``result`` instead."""

    def __init__(self, result: object) -> None:
        super().__init__("unit of work aborted")
        self.result = result


def upsert(conn: AsyncConnection, table: Table) -> PgInsert | SQLiteInsert:
    """The dialect's INSERT, which knows ``ON CONFLICT``."""
    return _INSERTS[conn.dialect.name](table)


async def scalar(conn: AsyncConnection, query: Any) -> Any:
    """The one value a query returns (None: no row)."""
    return (await conn.execute(query)).scalar_one_or_none()


def from_row(record: type[R], row: Row[Any]) -> R:
    """The record made of the row's columns of the same names (the row may hold more)."""
    values = row._mapping
    return record(**{field.name: values[field.name] for field in fields(record)})


job_from_row: Final = partial(from_row, JobRecord)
entry_from_row: Final = partial(from_row, LedgerEntry)
settings_from_row: Final = partial(from_row, GuildSettings)


class Ops:
    """The base of each group of operations: one database, one clock."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _now(self) -> datetime:
        return self._db.now()

    async def _all(self, query: Any, convert: Callable[[Row[Any]], T]) -> list[T]:
        """Every row of a read, converted."""

        async def work(conn: AsyncConnection) -> list[T]:
            return [convert(row) for row in await conn.execute(query)]

        return await self._db.read(work)

    async def _held_owner_keys(self, conn: AsyncConnection) -> list[int]:
        """The owners' liveness locks held right now (PostgreSQL only: see _pg_locks.py)."""
        return []
