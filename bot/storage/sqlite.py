"""SQLite backend: one connection per process on its own thread, WAL, numbered migrations.

Concurrency model
  * Every Storage operation is one plain synchronous function (one transaction,
    or one read statement) run on a dedicated thread that owns the process's
    only ``sqlite3`` connection (see :mod:`bot.storage._sqlite_thread`). It is
    handed over with one await and comes back with one: a reserve + commit
    pair costs two thread hops (three when the caller passes a job id rather
    than its record), not the ~ten per-statement hops of aiosqlite.
  * No lock in the process: the thread runs the functions one at a time, in
    the order they were submitted, each from ``BEGIN`` to ``COMMIT`` before the
    next starts, so two operations never interleave statements on the
    connection. (The asyncio.Lock of the aiosqlite version existed only
    because there each statement was a separate await.)
  * Between processes (the bot and any number of operator CLIs), every write
    runs in ``BEGIN IMMEDIATE``: it takes SQLite's write lock up front, so
    writers queue (for up to ``busy_timeout``) instead of failing half-way or
    losing an update. Balances only move through conditional ``UPDATE``
    statements, never "read, compute, write back".
  * The coordination methods (job owners, API slots, rate windows, the
    per-member limit on open jobs) are writes like any other, so BEGIN
    IMMEDIATE makes them correct across processes too; ``shared`` is still
    False, as one bot process is expected per SQLite file.
  * A transaction that fails is rolled back before the next one starts.
    Cancelling the awaiting coroutine never cuts a transaction in half: once
    started it runs to its COMMIT or ROLLBACK on the thread, and the caller
    just stops waiting (as before, a cancelled caller cannot tell whether a
    started write happened); one not yet started is skipped entirely.

WAL checkpoints
  A checkpoint fsyncs the WAL, copies its pages into the database file and
  fsyncs that: about 4 ms here, more the longer the WAL. SQLite's automatic
  checkpoint (every 1,000 WAL pages) runs inside the COMMIT of whichever write
  crosses the mark, which added some 80 to 100 µs to the average reserve +
  commit pair, a fifth of it. A file database therefore gets a second
  connection on its own thread that runs a PASSIVE checkpoint every
  :data:`_CHECKPOINT_EVERY` writes; PASSIVE neither waits for nor blocks the
  writer. The WAL is synced about as often as before (100 of this backend's
  writes are 300 to 1,000 pages), so a power cut can lose about as many of
  the latest commits as it could before; WAL at synchronous=NORMAL stays
  atomic and consistent either way. A checkpoint that overlaps writes cannot
  rewind the WAL to its start, so under writes that never pause it keeps
  growing: the writing connection keeps its own automatic checkpoint at
  :data:`_WAL_BACKSTOP_PAGES` pages as the backstop (also for when the
  checkpoint connection could not be opened: then at SQLite's 1,000).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
import weakref
from collections.abc import Callable, Collection, Sequence
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from bot.storage import _sqlite_sql as sql
from bot.storage._sqlite_insight import SQLiteInsight
from bot.storage._sqlite_setup import (
    MIN_SQLITE_VERSION,
    day_start,
    describe_error,
    load_migrations,
    parse_timestamp,
    sqlite_path,
    timestamp,
    utcnow,
)
from bot.storage._sqlite_thread import ConnectionThread
from bot.storage.base import (
    Discrepancy,
    Reserved,
    ReserveRejected,
    SettingsChanges,
    Settled,
    StorageError,
)
from bot.storage.records import (
    OPEN_STATUSES,
    GuildSettings,
    JobRecord,
    JobStatus,
    LedgerEntry,
    LedgerKind,
    NewJob,
)

__all__ = ["SQLiteStorage", "load_migrations", "sqlite_path"]

log = logging.getLogger("bot.storage")

T = TypeVar("T")
Clock = Callable[[], datetime]
Params = dict[str, Any] | Sequence[Any]
Mode = Literal["IMMEDIATE", "DEFERRED", "NONE"]
Db = sqlite3.Connection

_MIN_WAIT = 0.001
"""take_rate_token never returns a wait below this when it refuses (a clock tie)."""

_CHECKPOINT_EVERY: Final = 100
"""Writes between two background checkpoints: 300 to 1,000 WAL pages (a reserve
writes 8, a settle 6, a heartbeat 1 or 2), against SQLite's default of 1,000."""

_WAL_BACKSTOP_PAGES: Final = 4000
"""wal_autocheckpoint of the writing connection when checkpoints run in the
background: the WAL stays under about 16 MB even when writes never pause."""


class _Abort(Exception):  # control flow only; never escapes this module
    """Roll the current transaction back and return ``result`` instead."""

    def __init__(self, result: object) -> None:
        super().__init__("unit of work aborted")
        self.result = result


# -- statement helpers (run on the connection's thread) -----------------------------
# fetchall() even for one row: it steps every statement (INSERT/UPDATE … RETURNING
# included) to completion, so none is left in progress at COMMIT.


def _rows(db: Db, statement: str, params: Params = ()) -> list[Any]:
    return db.execute(statement, params).fetchall()


def _one(db: Db, statement: str, params: Params = ()) -> Any | None:
    rows = db.execute(statement, params).fetchall()
    return rows[0] if rows else None


def _execute(db: Db, statement: str, params: Params = ()) -> int:
    return int(db.execute(statement, params).rowcount)


def _stop_threads(threads: list[ConnectionThread]) -> None:
    for thread in threads:
        thread.stop()


def _rollback(db: Db, where: str) -> None:
    try:
        db.execute("ROLLBACK")
    except sqlite3.OperationalError as error:
        # "no transaction is active": SQLite already rolled back. Clean.
        if db.in_transaction:
            log.error("rollback failed on %s: %s", where, error)


# -- the backend -------------------------------------------------------------------


class SQLiteStorage(SQLiteInsight):
    """:class:`~bot.storage.base.Storage` on one SQLite file (or ``:memory:``)."""

    #: One bot process per SQLite file: slots and the request rate stay in the
    #: process (the coordination methods still work, across processes too).
    shared: bool = False

    def __init__(
        self, connection: ConnectionThread, where: str, clock: Clock, lock_timeout: float
    ) -> None:
        self._conn = connection
        self._where = where
        self._clock = clock
        self._lock_timeout = lock_timeout
        self._closed = False
        # The connection threads: the writer, then the checkpointer once started.
        self._threads = [connection]
        self._checkpointer: ConnectionThread | None = None
        self._writes = 0  # since the last background checkpoint was asked for
        self._checkpoint_queued = False
        # Forgotten without close(): let the threads close their connections and
        # end. (They are daemons, so they could never hold up interpreter exit.)
        self._finalizer = weakref.finalize(self, _stop_threads, self._threads)
        self._finalizer.atexit = False

    @classmethod
    async def open(
        cls, database_url: str, *, clock: Clock | None = None, lock_timeout: float = 5.0
    ) -> SQLiteStorage:
        """Connect, configure the connection and apply pending migrations.

        ``lock_timeout`` (seconds) is how long a write waits for another process
        holding the database before giving up with a clear :class:`StorageError`.
        """
        if not 0 < lock_timeout <= 600:
            raise ValueError("lock_timeout must be between 0 and 600 seconds")
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

        def connect() -> sqlite3.Connection:
            try:
                return sqlite3.connect(target, isolation_level=None, timeout=lock_timeout)
            except sqlite3.Error as error:
                raise StorageError(describe_error(error, target, lock_timeout)) from None

        thread = ConnectionThread(f"sqlite {Path(target).name}")
        storage = cls(thread, target, clock or utcnow, lock_timeout)
        try:
            await thread.connect(connect)
            await thread.run(storage._set_up)
            if target != ":memory:":
                await storage._start_checkpointer(connect)
        except BaseException:
            await storage.close()  # the threads close what they opened, then end
            raise
        return storage

    @property
    def where(self) -> str:
        """The database file (for messages and logs)."""
        return self._where

    async def close(self) -> None:
        """Let the operations already submitted finish, then close the connections."""
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        # Each thread finishes and closes on its own even if this is cancelled.
        await asyncio.gather(*(thread.close() for thread in self._threads))

    # -- plumbing ----------------------------------------------------------------

    def _now(self) -> datetime:
        moment = self._clock()
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

    def _error(self, error: sqlite3.Error) -> StorageError:
        return StorageError(describe_error(error, self._where, self._lock_timeout))

    async def _unit(self, mode: Mode, body: Callable[[Db], T]) -> T:
        """Run ``body`` as one unit of work on the connection's thread (one await).

        ``IMMEDIATE`` takes the write lock at once (every write); ``DEFERRED``
        gives a consistent snapshot for multi-statement reads; ``NONE`` is for a
        single read statement.
        """
        if self._closed:
            raise StorageError(f"The database {self._where} is already closed.")
        return await self._conn.run(lambda db: self._transaction(db, mode, body))

    async def _write(self, body: Callable[[Db], T]) -> T:
        try:
            return await self._unit("IMMEDIATE", body)
        finally:
            self._writes += 1
            if self._writes >= _CHECKPOINT_EVERY:
                self._checkpoint_soon()

    async def _read(self, body: Callable[[Db], T]) -> T:
        return await self._unit("NONE", body)

    def _transaction(self, db: Db, mode: Mode, body: Callable[[Db], T]) -> T:
        """On the thread: ``body`` inside ``BEGIN mode``/``COMMIT``, rolled back on any error."""
        try:
            if mode == "NONE":
                return body(db)
            db.execute(f"BEGIN {mode}")
            try:
                result = body(db)
                db.execute("COMMIT")
            except BaseException:
                _rollback(db, self._where)
                raise
            return result
        except sqlite3.Error as error:
            raise self._error(error) from error

    def _scalar(self, db: Db, statement: str, params: Params = ()) -> int:
        """The first column of the one row a statement must return (e.g. ``RETURNING``)."""
        row = _one(db, statement, params)
        if row is None:
            raise StorageError(
                f"The database {self._where} returned no row where one was required."
            )
        return int(row[0])

    # -- background checkpoints ----------------------------------------------------

    async def _start_checkpointer(self, connect: Callable[[], sqlite3.Connection]) -> None:
        """Open the checkpoint connection; without it the writes checkpoint as before."""
        checkpointer = ConnectionThread(f"sqlite checkpoint {Path(self._where).name}")
        self._threads.append(checkpointer)  # closed with the storage from now on
        try:
            await checkpointer.connect(connect)
            # NORMAL like the writer (a checkpoint syncs the same at NORMAL and FULL).
            await checkpointer.run(lambda db: _rows(db, "PRAGMA synchronous = NORMAL"))
        except (StorageError, sqlite3.Error) as error:
            log.warning(
                "no background WAL checkpoints for %s (%s): writes will checkpoint it",
                self._where,
                error,
            )
            return
        await self._read(
            lambda db: _rows(db, f"PRAGMA wal_autocheckpoint = {_WAL_BACKSTOP_PAGES:d}")
        )
        self._checkpointer = checkpointer

    def _checkpoint_soon(self) -> None:
        """Queue a background checkpoint, unless one is still waiting for its turn."""
        self._writes = 0
        if self._checkpointer is None or self._checkpoint_queued or self._closed:
            return
        self._checkpoint_queued = True
        self._checkpointer.post(self._checkpoint)

    def _checkpoint(self, db: Db) -> None:
        """On the checkpoint thread: copy the WAL into the database file, syncing both."""
        # Cleared first: writes made during a long checkpoint queue the next one.
        self._checkpoint_queued = False
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as error:
            # The writer's backstop checkpoint still bounds the WAL.
            log.warning("background WAL checkpoint of %s failed: %s", self._where, error)

    # -- opening (on the thread) ---------------------------------------------------

    def _set_up(self, db: Db) -> None:
        self._configure(db)
        self._migrate(db)

    def _configure(self, db: Db) -> None:
        try:
            db.execute(f"PRAGMA busy_timeout = {round(self._lock_timeout * 1000):d}")
            db.execute("PRAGMA foreign_keys = ON")
            mode = self._enable_wal(db)
            if mode != "wal" and self._where != ":memory:":
                log.warning(
                    "SQLite journal mode is %s, not WAL, for %s: concurrent access will be slower",
                    mode,
                    self._where,
                )
            db.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as error:
            raise self._error(error) from None

    def _enable_wal(self, db: Db) -> str:
        """Switch the file to WAL (persistent; a no-op once done), returning the mode.

        On a brand-new file, connections racing to switch get SQLITE_BUSY at
        once (SQLite skips the busy handler there to avoid a deadlock), so
        retry with backoff within the lock timeout. (This sleeps this
        connection's own thread, never the event loop.)
        """
        deadline = time.monotonic() + self._lock_timeout
        delay = 0.002
        while True:
            try:
                rows = _rows(db, "PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as error:
                name = getattr(error, "sqlite_errorname", "") or ""
                remaining = deadline - time.monotonic()
                if not name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or remaining <= 0:
                    raise
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 0.1)
                continue
            return str(rows[0][0]).lower() if rows else "unknown"

    def _migrate(self, db: Db) -> None:
        migrations = load_migrations()
        latest = migrations[-1].number
        current = self._user_version(db)
        if current > latest:
            raise StorageError(
                f"The database {self._where} has schema version {current}, newer than this "
                f"version of the bot knows ({latest}): upgrade the bot or use a matching backup."
            )
        applied = 0
        for migration in migrations:
            if migration.number <= current:
                continue

            def apply(
                db: Db,
                number: int = migration.number,
                statements: Sequence[str] = migration.statements,
            ) -> bool:
                # Another process may have migrated while we waited for the lock.
                if self._user_version(db) >= number:
                    return False
                for statement in statements:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number:d}")
                return True

            if self._transaction(db, "IMMEDIATE", apply):
                applied += 1
                log.info("applied database migration %s to %s", migration.name, self._where)
        if applied == 0:
            self._probe_writable(db, current)

    def _probe_writable(self, db: Db, version: int) -> None:
        """Fail at start-up, not at the first purchase, when the file cannot be written."""

        def probe(db: Db) -> None:
            db.execute(f"PRAGMA user_version = {version:d}")
            raise _Abort(None)

        with suppress(_Abort):
            self._transaction(db, "IMMEDIATE", probe)

    def _user_version(self, db: Db) -> int:
        try:
            rows = _rows(db, "PRAGMA user_version")
        except sqlite3.Error as error:
            raise self._error(error) from None
        return int(rows[0][0])

    # -- shared steps (inside a write, on the thread) ---------------------------------

    def _ensure_guild(
        self, db: Db, guild_id: int, default_credits: int, now: str
    ) -> tuple[int, bool]:
        """Inside a write: create the guild with its default grant, exactly once."""
        created = _one(
            db,
            "INSERT INTO guilds (guild_id, balance, created_at, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (guild_id) DO NOTHING RETURNING balance",
            (guild_id, default_credits, now, now),
        )
        if created is not None:
            _execute(
                db,
                sql.INSERT_LEDGER,
                {
                    "guild_id": guild_id,
                    "user_id": None,
                    "job_id": None,
                    "delta": default_credits,
                    "kind": LedgerKind.GRANT.value,
                    "actor_id": None,
                    "note": "default credits for a new guild",
                    "balance_after": default_credits,
                    "now": now,
                },
            )
            return default_credits, True
        row = _one(db, "SELECT balance FROM guilds WHERE guild_id = ?", (guild_id,))
        assert row is not None  # the INSERT above conflicted, so the row exists
        return int(row[0]), False

    # -- balances ------------------------------------------------------------------

    async def ensure_guild(self, guild_id: int, *, default_credits: int) -> tuple[int, bool]:
        balance = await self.get_balance(guild_id)
        if balance is not None:
            return balance, False
        return await self._write(
            lambda db: self._ensure_guild(db, guild_id, default_credits, timestamp(self._now()))
        )

    async def get_balance(self, guild_id: int) -> int | None:
        row = await self._read(
            lambda db: _one(db, "SELECT balance FROM guilds WHERE guild_id = ?", (guild_id,))
        )
        return None if row is None else int(row[0])

    async def grant(
        self,
        guild_id: int,
        amount: int,
        *,
        actor_id: int | None,
        note: str | None,
        default_credits: int,
        max_balance: int,
    ) -> int | None:
        def body(db: Db) -> int:
            now = timestamp(self._now())
            self._ensure_guild(db, guild_id, default_credits, now)
            row = _one(
                db,
                "UPDATE guilds SET balance = balance + :amount, updated_at = :now "
                "WHERE guild_id = :guild_id AND balance + :amount <= :max RETURNING balance",
                {"amount": amount, "now": now, "guild_id": guild_id, "max": max_balance},
            )
            if row is None:
                raise _Abort(None)
            balance = int(row[0])
            _execute(
                db,
                sql.INSERT_LEDGER,
                {
                    "guild_id": guild_id,
                    "user_id": None,
                    "job_id": None,
                    "delta": amount,
                    "kind": LedgerKind.GRANT.value,
                    "actor_id": actor_id,
                    "note": note,
                    "balance_after": balance,
                    "now": now,
                },
            )
            _execute(db, sql.REARM_NOTICE, {"guild_id": guild_id})
            return balance

        try:
            return await self._write(body)
        except _Abort:
            return None

    async def set_balance(
        self,
        guild_id: int,
        amount: int,
        *,
        actor_id: int | None,
        note: str | None,
        default_credits: int,
    ) -> tuple[int, int]:
        def body(db: Db) -> tuple[int, int]:
            now = timestamp(self._now())
            old, _ = self._ensure_guild(db, guild_id, default_credits, now)
            _execute(
                db,
                "UPDATE guilds SET balance = ?, updated_at = ? WHERE guild_id = ?",
                (amount, now, guild_id),
            )
            _execute(
                db,
                sql.INSERT_LEDGER,
                {
                    "guild_id": guild_id,
                    "user_id": None,
                    "job_id": None,
                    "delta": amount - old,
                    "kind": LedgerKind.SET.value,
                    "actor_id": actor_id,
                    "note": note,
                    "balance_after": amount,
                    "now": now,
                },
            )
            _execute(db, sql.REARM_NOTICE, {"guild_id": guild_id})
            return old, amount

        return await self._write(body)

    # -- jobs ----------------------------------------------------------------------

    async def reserve_job(
        self, job: NewJob, *, default_credits: int, note: str | None
    ) -> Reserved | ReserveRejected:
        cost = job.cost
        params_json = json.dumps(job.params, ensure_ascii=False, allow_nan=False)

        def body(db: Db) -> Reserved:
            moment = self._now()
            now = timestamp(moment)
            debit = {
                "cost": cost,
                "now": now,
                "guild_id": job.guild_id,
                "user_id": job.user_id,
                "since": day_start(moment),
            }
            if job.admit is not None:
                refusal = job.admit(self._settings(db, job.guild_id))
                if refusal is not None:
                    balance, _ = self._ensure_guild(db, job.guild_id, default_credits, now)
                    raise _Abort(
                        ReserveRejected("refused", balance=balance, cost=cost, message=refusal)
                    )
            if job.parent_job_id is not None and (
                _one(db, "SELECT 1 FROM jobs WHERE id = ?", (job.parent_job_id,)) is None
            ):
                balance, _ = self._ensure_guild(db, job.guild_id, default_credits, now)
                raise _Abort(ReserveRejected("unknown_parent", balance=balance, cost=cost))
            if job.max_active is not None:
                # BEGIN IMMEDIATE holds the write lock: no other reservation can
                # slip in between this count and the insert below.
                active = self._scalar(db, sql.OPEN_JOBS_OF_MEMBER, debit)
                if active >= job.max_active:
                    balance, _ = self._ensure_guild(db, job.guild_id, default_credits, now)
                    raise _Abort(
                        ReserveRejected("too_many_jobs", balance=balance, cost=cost, used=active)
                    )
            row = _one(db, sql.DEBIT, debit)
            if row is None:
                balance, created = self._ensure_guild(db, job.guild_id, default_credits, now)
                if created:
                    row = _one(db, sql.DEBIT, debit)
            if row is None:
                figures = _one(db, sql.CAP_AND_USAGE, debit)
                cap, used = (figures[0], int(figures[1])) if figures else (None, 0)
                if cap is not None and used + cost > cap:
                    reason: Literal["daily_cap", "insufficient"] = "daily_cap"
                else:
                    reason = "insufficient"
                # Raising rolls back the default grant too if the guild was new:
                # a refused request changes nothing at all.
                raise _Abort(ReserveRejected(reason, balance, cost, cap=cap, used=used))
            balance = int(row[0])
            job_row = _one(
                db,
                sql.INSERT_JOB,
                {
                    "guild_id": job.guild_id,
                    "channel_id": job.channel_id,
                    "user_id": job.user_id,
                    "params": params_json,
                    "cost": cost,
                    "units_per_image": job.units_per_image,
                    "images_total": job.images_total,
                    "parent_job_id": job.parent_job_id,
                    "now": now,
                    "owner": job.owner,
                },
            )
            assert job_row is not None  # INSERT … RETURNING always returns the row
            record = sql.job_from_row(job_row)
            _execute(
                db,
                sql.INSERT_LEDGER,
                {
                    "guild_id": job.guild_id,
                    "user_id": job.user_id,
                    "job_id": record.id,
                    "delta": -cost,
                    "kind": LedgerKind.RESERVE.value,
                    "actor_id": None,
                    "note": note,
                    "balance_after": balance,
                    "now": now,
                },
            )
            return Reserved(record, balance)

        try:
            return await self._write(body)
        except _Abort as abort:
            if isinstance(abort.result, ReserveRejected):
                return abort.result
            raise

    async def start_job(self, job_id: int) -> JobRecord | None:
        def body(db: Db) -> Any | None:
            row = _one(
                db,
                f"UPDATE jobs SET status = 'running', updated_at = ? "
                f"WHERE id = ? AND status = 'queued' RETURNING {sql.JOB_COLUMNS}",
                (timestamp(self._now()), job_id),
            )
            if row is None:
                row = _one(db, f"SELECT {sql.JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
            return row

        row = await self._write(body)
        return None if row is None else sql.job_from_row(row)

    async def finish_job(
        self,
        job_id: int,
        *,
        status: JobStatus,
        images_delivered: int,
        committed: int,
        refunded: int,
        error: str | None,
        commit_note: str | None,
        refund_note: str | None,
    ) -> Settled | None:
        if status in OPEN_STATUSES:
            raise ValueError(f"finish_job needs a final status, not {status}")
        if committed < 0 or refunded < 0:
            raise ValueError("committed and refunded cannot be negative")

        def body(db: Db) -> Settled | None:
            now = timestamp(self._now())
            row = _one(
                db,
                sql.FINISH_JOB,
                {
                    "status": status.value,
                    "delivered": images_delivered,
                    "error": error,
                    "now": now,
                    "job_id": job_id,
                    "committed": committed,
                    "refunded": refunded,
                },
            )
            if row is None:
                return None
            job = sql.job_from_row(row)
            ids = {"guild_id": job.guild_id, "user_id": job.user_id, "job_id": job.id, "now": now}
            balance: int | None = None
            if committed > 0:
                # delta 0: the credits already left the balance at reservation time
                balance = self._scalar(db, sql.INSERT_COMMIT_ENTRY, {**ids, "note": commit_note})
            if refunded > 0:
                balance = self._scalar(
                    db,
                    "UPDATE guilds SET balance = balance + ?, updated_at = ? "
                    "WHERE guild_id = ? RETURNING balance",
                    (refunded, now, job.guild_id),
                )
                _execute(
                    db,
                    sql.INSERT_LEDGER,
                    {
                        **ids,
                        "delta": refunded,
                        "kind": LedgerKind.REFUND.value,
                        "actor_id": None,
                        "note": refund_note,
                        "balance_after": balance,
                    },
                )
                _execute(db, sql.REARM_NOTICE, {"guild_id": job.guild_id})
            # cost > 0 and committed + refunded == cost, so one of the two ran
            assert balance is not None
            return Settled(job, balance)

        return await self._write(body)

    async def mark_delivering(self, job_id: int) -> JobRecord | None:
        params = {"job_id": job_id, "now": timestamp(self._now())}
        row = await self._write(lambda db: _one(db, sql.MARK_DELIVERING, params))
        return None if row is None else sql.job_from_row(row)

    async def set_job_message(self, job_id: int, message_id: int) -> bool:
        changed = await self._write(
            lambda db: _execute(
                db,
                "UPDATE jobs SET message_id = ?, updated_at = ? WHERE id = ?",
                (message_id, timestamp(self._now()), job_id),
            )
        )
        return changed == 1

    async def get_job(self, job_id: int) -> JobRecord | None:
        row = await self._read(
            lambda db: _one(db, f"SELECT {sql.JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        )
        return None if row is None else sql.job_from_row(row)

    async def list_jobs(
        self, *, statuses: Collection[JobStatus], guild_id: int | None = None
    ) -> list[JobRecord]:
        wanted = {JobStatus(status) for status in statuses}
        values = sorted(status.value for status in wanted)
        if not values:
            return []
        marks = ", ".join("?" * len(values))
        if wanted <= OPEN_STATUSES:
            # Only open jobs (the bot's active-jobs view): read the small partial
            # index of open jobs rather than every job ever run.
            source = f"jobs {sql.OPEN_JOBS_INDEX} WHERE {sql.OPEN_JOBS_WHERE} AND"
        else:
            source = "jobs WHERE"
        query = f"SELECT {sql.JOB_COLUMNS} FROM {source} status IN ({marks})"
        params: list[object] = list(values)
        if guild_id is not None:
            query += " AND guild_id = ?"
            params.append(guild_id)
        rows = await self._read(lambda db: _rows(db, query + " ORDER BY id", params))
        return [sql.job_from_row(row) for row in rows]

    async def usage_today(self, guild_id: int, user_id: int) -> int:
        row = await self._read(
            lambda db: _one(
                db,
                sql.USAGE,
                {"guild_id": guild_id, "user_id": user_id, "since": day_start(self._now())},
            )
        )
        return 0 if row is None else int(row[0])

    # -- ledger --------------------------------------------------------------------

    async def ledger_entries(self, guild_id: int, *, limit: int, offset: int) -> list[LedgerEntry]:
        rows = await self._read(
            lambda db: _rows(
                db,
                f"SELECT {sql.LEDGER_COLUMNS} FROM ledger WHERE guild_id = ? "
                "ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
                (guild_id, limit, offset),
            )
        )
        return [sql.entry_from_row(row) for row in rows]

    async def count_ledger_entries(self, guild_id: int) -> int:
        row = await self._read(
            lambda db: _one(db, "SELECT COUNT(*) FROM ledger WHERE guild_id = ?", (guild_id,))
        )
        return 0 if row is None else int(row[0])

    async def audit(self, guild_id: int | None = None) -> list[Discrepancy]:
        def body(db: Db) -> tuple[list[Any], list[Any]]:
            return (
                _rows(db, sql.AUDIT_BALANCES, {"guild_id": guild_id}),
                _rows(db, sql.AUDIT_JOBS, {"guild_id": guild_id}),
            )

        balances, jobs = await self._unit("DEFERRED", body)
        problems: list[Discrepancy] = []
        for gid, balance, total in balances:
            problems.append(Discrepancy(gid, f"balance {balance} but the ledger sums to {total}"))
        for job_id, gid, status, cost, reserve, refund, commit in jobs:
            problems.append(
                Discrepancy(
                    gid,
                    f"job {job_id} ({status}, cost {cost}) has reserve {reserve}, "
                    f"refund {refund}, commit entry {'yes' if commit else 'no'}",
                )
            )
        return problems

    # -- settings and state ----------------------------------------------------------

    @staticmethod
    def _settings(db: Db, guild_id: int) -> GuildSettings:
        row = _one(
            db, f"SELECT {sql.SETTINGS_COLUMNS} FROM guild_settings WHERE guild_id = ?", (guild_id,)
        )
        return GuildSettings(guild_id) if row is None else sql.settings_from_row(row)

    async def get_settings(self, guild_id: int) -> GuildSettings:
        return await self._read(lambda db: self._settings(db, guild_id))

    async def update_settings(
        self, guild_id: int, changes: SettingsChanges, *, default_credits: int
    ) -> GuildSettings:
        given: dict[str, object] = dict(changes)
        unknown = set(given) - sql.WRITABLE_SETTINGS
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        names = sorted(given)  # only names from sql.WRITABLE_SETTINGS reach the SQL
        values = [sql.settings_value(name, given[name]) for name in names]
        columns = "".join(f", {name}" for name in names)
        marks = ", ?" * len(names)
        updates = "".join(f", {name} = excluded.{name}" for name in names)

        def body(db: Db) -> Any | None:
            now = timestamp(self._now())
            self._ensure_guild(db, guild_id, default_credits, now)
            _execute(
                db,
                f"INSERT INTO guild_settings (guild_id, updated_at{columns}) "
                f"VALUES (?, ?{marks}) ON CONFLICT (guild_id) "
                f"DO UPDATE SET updated_at = excluded.updated_at{updates}",
                [guild_id, now, *values],
            )
            _execute(db, sql.REARM_NOTICE, {"guild_id": guild_id})
            return _one(
                db,
                f"SELECT {sql.SETTINGS_COLUMNS} FROM guild_settings WHERE guild_id = ?",
                (guild_id,),
            )

        row = await self._write(body)
        assert row is not None
        return sql.settings_from_row(row)

    async def claim_low_balance_notice(self, guild_id: int) -> bool:
        changed = await self._write(
            lambda db: _execute(
                db,
                """
                UPDATE guild_settings SET low_balance_notified = 1
                 WHERE guild_id = :guild_id AND low_balance_notified = 0
                   AND low_balance_threshold IS NOT NULL
                   AND (SELECT balance FROM guilds WHERE guild_id = :guild_id)
                       < low_balance_threshold
                """,
                {"guild_id": guild_id},
            )
        )
        return changed == 1

    async def get_state(self, key: str) -> str | None:
        row = await self._read(
            lambda db: _one(db, "SELECT value FROM app_state WHERE key = ?", (key,))
        )
        return None if row is None else str(row[0])

    async def set_state(self, key: str, value: str) -> None:
        await self._write(
            lambda db: _execute(
                db,
                "INSERT INTO app_state (key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at",
                (key, value, timestamp(self._now())),
            )
        )

    # -- processes sharing the database ----------------------------------------------

    async def heartbeat(self, owner: str) -> None:
        await self._write(
            lambda db: _execute(db, sql.HEARTBEAT, {"owner": owner, "now": timestamp(self._now())})
        )

    async def release_owner(self, owner: str) -> None:
        def body(db: Db) -> None:
            _execute(db, "DELETE FROM job_owners WHERE owner = ?", (owner,))
            _execute(db, sql.RELEASE_OWNER_SLOTS, {"owner": owner})

        await self._write(body)

    async def recoverable_jobs(self, owner: str | None, *, stale_after: float) -> list[JobRecord]:
        cutoff = timestamp(self._now() - timedelta(seconds=stale_after))
        rows = await self._read(
            lambda db: _rows(db, sql.RECOVERABLE_JOBS, {"owner": owner, "cutoff": cutoff})
        )
        return [sql.job_from_row(row) for row in rows]

    async def acquire_slot(self, owner: str, *, limit: int, ttl: float) -> int | None:
        if limit < 0 or not ttl > 0:
            raise ValueError("acquire_slot needs limit >= 0 and ttl > 0")

        def body(db: Db) -> int | None:
            # BEGIN IMMEDIATE: one acquirer at a time, across processes too.
            moment = self._now()
            now = timestamp(moment)
            held = {int(row[0]) for row in _rows(db, sql.HELD_SLOTS, {"limit": limit, "now": now})}
            slot = next((number for number in range(limit) if number not in held), None)
            if slot is None:
                return None
            expires_at = timestamp(moment + timedelta(seconds=ttl))
            _execute(db, sql.TAKE_SLOT, {"slot": slot, "owner": owner, "expires_at": expires_at})
            return slot

        return await self._write(body)

    async def release_slot(self, owner: str, slot: int) -> None:
        await self._write(lambda db: _execute(db, sql.RELEASE_SLOT, {"slot": slot, "owner": owner}))

    async def take_rate_token(self, key: str, *, limit: int, period: float) -> float:
        if limit < 1 or not period > 0:
            raise ValueError("take_rate_token needs limit >= 1 and period > 0")

        def body(db: Db) -> float:
            # BEGIN IMMEDIATE: the window of every key changes one caller at a time.
            moment = self._now()
            window = timedelta(seconds=period)
            _execute(db, sql.FORGET_CALLS, {"key": key, "cutoff": timestamp(moment - window)})
            row = _one(db, sql.CALLS_IN_WINDOW, {"key": key})
            used, oldest = (int(row[0]), row[1]) if row is not None else (0, None)
            if used < limit or oldest is None:
                _execute(db, sql.RECORD_CALL, {"key": key, "now": timestamp(moment)})
                return 0.0
            wait = (parse_timestamp(oldest) + window - moment).total_seconds()
            return max(wait, _MIN_WAIT)

        return await self._write(body)
