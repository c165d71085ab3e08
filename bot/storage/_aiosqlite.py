"""Fewer trips to aiosqlite's thread for each statement SQLAlchemy runs.

SQLAlchemy's adapter opens, runs, fetches and closes an aiosqlite cursor per
statement: four round trips to the connection's thread. This cursor uses
aiosqlite's public ``Connection.execute`` (cursor and statement in one trip),
fetches rows in a second trip only when there are any, and lets the sqlite3
cursor close when it is collected. It relies on SQLAlchemy 2.1's adapter layout
(``connectors/asyncio.py``), hence the version pin in pyproject.toml.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
)

__all__ = ["use_one_trip_cursors"]


class _Cursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ()

    def _make_new_cursor(self, connection: Any) -> Any:
        return None  # made by the first execute

    def _aenter_cursor(self, cursor: Any) -> Any:
        return cursor

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        async with self._adapt_connection._execute_mutex:
            self._cursor = await self._connection.execute(operation, parameters or ())
            if self._cursor.description:
                self._rows = collections.deque(await self._cursor.fetchall())
            return self._cursor

    async def _executemany_async(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        async with self._adapt_connection._execute_mutex:
            self._cursor = await self._connection.executemany(operation, seq_of_parameters)
            return self._cursor

    async def _async_soft_close(self) -> None:
        return None  # the rows are fetched already; nothing waits on the thread

    def close(self) -> None:
        self._rows.clear()


class _Connection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = _Cursor


def use_one_trip_cursors(dbapi_connection: Any) -> None:
    """Give a freshly opened adapted connection the cursor above."""
    if type(dbapi_connection) is AsyncAdapt_aiosqlite_connection:
        dbapi_connection.__class__ = _Connection
