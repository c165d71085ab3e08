"""One daemon thread that owns one ``sqlite3`` connection and runs whole transactions on it.

Why not aiosqlite: it hops to its thread and back once per *statement*
(~60 to 80 µs each on a small VM), and a reserve + commit pair is about ten
statements, which capped the ledger near 1,000 pairs per second. Here a
Storage operation is one plain synchronous function, handed to the thread in
one hop and run there from ``BEGIN`` to ``COMMIT``.

Properties the SQLite backend relies on:

* **One at a time, in order.** Submitted functions run strictly one after
  another, first submitted first run, on the same thread and connection.
  Statements of two operations therefore never interleave, with no lock.
* **Runs to completion.** Once a function has started it always finishes on
  the thread, whatever happens to the coroutine that submitted it; a caller
  cancelled while waiting just stops waiting. A function whose caller was
  cancelled before it started is skipped (nothing of it happened).
* **Never keeps the process alive.** The thread is a daemon: an unclosed
  connection cannot hang interpreter exit. :meth:`stop` (used when the owner
  is garbage-collected or fails to open) and :meth:`close` let it finish the
  queued work, close the connection and end.

:meth:`post` queues work nobody waits for (the SQLite backend's background
WAL checkpoints): it takes its turn like the rest, and its errors are logged.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, TypeVar

__all__ = ["ConnectionThread"]

log = logging.getLogger("bot.storage")

T = TypeVar("T")
Params = dict[str, Any] | Sequence[Any]

# (function, the loop of the coroutine waiting, the future it waits on); the
# loop and the future are None for posted work, which nobody waits for
_Job = tuple[Callable[[], Any], asyncio.AbstractEventLoop | None, "asyncio.Future[Any] | None"]


def _settle(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    """On the waiting coroutine's loop: hand over the outcome unless nobody waits any more."""
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class ConnectionThread:
    """Runs functions on one ``sqlite3.Connection``, one at a time, on its own daemon thread."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._connection: sqlite3.Connection | None = None  # only touched on the thread
        self._accepting = True
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    # -- the event-loop side ----------------------------------------------------------

    async def connect(self, connect: Callable[[], sqlite3.Connection]) -> None:
        """Open the connection on the thread: ``sqlite3`` objects stay where they were made."""
        await self._submit(lambda: self._open(connect))

    async def run(self, function: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``function(connection)`` on the thread: one hop there and one back."""
        return await self._submit(lambda: function(self._require()))

    def post(self, function: Callable[[sqlite3.Connection], object]) -> None:
        """Queue ``function(connection)`` without waiting for it; safe from any thread.

        It runs in its turn like any other operation. What it raises is logged,
        since nobody is there to receive it. Ignored once the thread is closing.
        """
        if self._accepting:
            self._jobs.put((lambda: function(self._require()), None, None))

    async def execute_fetchall(self, sql: str, params: Params = ()) -> list[Any]:
        """One statement, all its rows (for small reads and for looking inside in tests)."""
        return await self.run(lambda db: db.execute(sql, params).fetchall())

    async def close(self) -> None:
        """Finish the work already queued, close the connection, end the thread. Idempotent.

        If the caller is cancelled while waiting, the thread still closes the
        connection and ends on its own.
        """
        if not self._accepting:
            return
        waiter = self._submit(self._close_connection)
        self.stop()
        await waiter

    def stop(self) -> None:
        """Without waiting: finish the queued work, close the connection, end the thread.

        Safe from any thread and from garbage-collection callbacks.
        """
        if self._accepting:
            self._accepting = False
            self._jobs.put(None)

    @property
    def name(self) -> str:
        return self._thread.name

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _submit(self, function: Callable[[], T]) -> asyncio.Future[T]:
        if not self._accepting:
            raise RuntimeError(f"the SQLite thread {self.name} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((function, loop, future))
        return future

    # -- the thread side ----------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                self._handle(job)
                # Drop the finished job now: an idle thread must not keep its
                # owner (captured by the function) from being garbage-collected.
                del job
        finally:
            self._close_connection()

    def _handle(self, job: _Job) -> None:
        function, loop, future = job
        if loop is None or future is None:
            self._run_posted(function)
            return
        if future.cancelled():  # the caller gave up before it started: skip it whole
            return
        result: object = None
        error: BaseException | None = None
        try:
            result = function()
        except BaseException as raised:  # noqa: BLE001 - handed to the caller, not lost here
            error = raised
        with suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, future, result, error)
        # A traceback keeps this frame alive: drop what it would otherwise keep
        # (the function holds the storage; see _serve).
        del function, job, result, error

    def _run_posted(self, function: Callable[[], object]) -> None:
        try:
            function()
        except Exception:
            log.exception("background work on the SQLite thread %s failed", self.name)

    def _open(self, connect: Callable[[], sqlite3.Connection]) -> None:
        if self._connection is not None:
            raise RuntimeError("the SQLite connection is already open")
        self._connection = connect()

    def _require(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RuntimeError("the SQLite connection is not open")
        return self._connection

    def _close_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
