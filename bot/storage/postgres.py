"""PostgreSQL backend: an asyncpg pool, numbered migrations under an advisory lock.

Concurrency model (any number of processes on one database)
  * Every write is one transaction at READ COMMITTED. A unit of work that
    moves a guild's money first locks the guild row (``SELECT … FOR UPDATE``),
    so such units serialise per guild, across processes, while different
    guilds proceed in parallel. Each later statement takes a fresh snapshot,
    so it sees everything committed before the lock was granted: the daily-cap
    subquery of the reservation counts every earlier reservation and refund.
  * Balances only move through conditional ``UPDATE`` statements; the
    reservation is one statement that checks the cap and the balance, debits,
    and writes the job and its RESERVE entry.
  * A transaction the server aborts as a deadlock or serialisation failure is
    retried (it changed nothing); so is one whose connection failed before it
    began. A unit that fails or is cancelled is rolled back.
  * Coordination between processes (``shared`` is True): an API slot is a
    session advisory lock, and so is each process's liveness (_pg_locks.py),
    each on a connection of its own, released by the server when that
    connection ends; a rate-limit key's window is written under a transaction
    advisory lock on the key's hash. The per-member limit on open jobs is
    counted inside the reservation, after the guild lock, so it holds across
    processes too.
  * Every connection asks the server for TCP keepalives (``KEEPALIVE``), so
    the locks and transactions of a client whose host vanished end within
    seconds.
  * ``lock_timeout`` bounds how long a statement waits for a lock held by
    another session (advisory locks included);
    ``idle_in_transaction_session_timeout`` frees the locks of a client that
    stalls inside a transaction.

Timestamps are timestamptz, UTC; "today" is the current UTC day. Without a test
clock the server's clock stamps every row, after the guild lock, so the order
of a guild's entries is the order in which their transactions committed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bot.storage import _pg_sql as sql
from bot.storage._pg_insight import PostgresInsight
from bot.storage._pg_locks import KEEPALIVE, LOCKS_APPLICATION, SessionLocks
from bot.storage._pg_setup import (
    DATABASE_ERRORS,
    MIGRATION_LOCK_KEY,
    MIN_SERVER_VERSION,
    PgTarget,
    connect_error,
    describe_error,
    is_connection_error,
    is_retryable,
    load_migrations,
    parse_url,
    query,
)
from bot.storage._turns import Turns
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
    NewJob,
)

__all__ = ["PostgresStorage", "load_migrations", "parse_url"]

log = logging.getLogger("bot.storage")

Clock = Callable[[], datetime]
Connection = asyncpg.Connection | PoolConnectionProxy
T = TypeVar("T")

POOL_MIN_SIZE: Final = 1
POOL_MAX_SIZE: Final = 10
CONNECT_TIMEOUT: Final = 10.0
CLOSE_TIMEOUT: Final = 10.0
MIGRATION_LOCK_TIMEOUT: Final = 60.0
IDLE_IN_TRANSACTION_TIMEOUT: Final = 60.0
_ATTEMPTS: Final = 3
_MIN_WAIT: Final = 0.001
"""take_rate_token never returns a wait below this when it refuses (a clock tie)."""


class _Abort(Exception):  # control flow only; never escapes this module
    """Roll the current unit of work back and return ``result`` instead."""

    def __init__(self, result: object) -> None:
        super().__init__("unit of work aborted")
        self.result = result


def _discard_if_broken(conn: Connection, error: BaseException) -> None:
    """A connection that failed as a connection must not go back into the pool."""
    if is_connection_error(error) and not conn.is_closed():
        conn.terminate()


class PostgresStorage(PostgresInsight):
    """:class:`~bot.storage.base.Storage` on a PostgreSQL database."""

    #: Several bot processes may share the database: they coordinate API slots
    #: and the request rate through it.
    shared: bool = True

    def __init__(
        self,
        pool: asyncpg.Pool,
        target: PgTarget,
        clock: Clock | None,
        lock_timeout: float,
        settings: dict[str, str] | None = None,
    ) -> None:
        self._pool = pool
        self._target = target
        self._clock = clock
        self._lock_timeout = lock_timeout
        self._server_settings = dict(settings or {})
        self._locks = SessionLocks(self._connect_for_locks)
        self._guild_turns = Turns()
        self._closed = False

    @classmethod
    async def open(
        cls,
        database_url: str,
        *,
        clock: Clock | None = None,
        lock_timeout: float = 5.0,
        max_connections: int = POOL_MAX_SIZE,
    ) -> PostgresStorage:
        """Connect a pool, check the server, and apply pending migrations.

        ``lock_timeout`` (seconds) is how long a write waits for a lock another
        session holds before giving up with a clear :class:`StorageError`.
        """
        if not 0 < lock_timeout <= 600:
            raise ValueError("lock_timeout must be between 0 and 600 seconds")
        target = parse_url(database_url)
        settings = {
            "application_name": "imagine-bot",
            "TimeZone": "UTC",
            "lock_timeout": f"{round(lock_timeout * 1000):d}ms",
            "idle_in_transaction_session_timeout": f"{round(IDLE_IN_TRANSACTION_TIMEOUT):d}s",
            **KEEPALIVE,
        }
        try:
            pool = await asyncpg.create_pool(
                target.dsn,
                min_size=min(POOL_MIN_SIZE, max_connections),
                max_size=max_connections,
                timeout=CONNECT_TIMEOUT,
                server_settings=settings,
            )
        except (*DATABASE_ERRORS, ValueError) as error:
            raise connect_error(error, target) from None
        storage = cls(pool, target, clock, lock_timeout, settings)
        try:
            await storage._check_server()
            await storage._migrate()
        except BaseException:
            pool.terminate()
            raise
        return storage

    @property
    def where(self) -> str:
        """The database and server (for messages and logs; never the password)."""
        return str(self._target)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._locks.close()
        try:
            await asyncio.wait_for(self._pool.close(), timeout=CLOSE_TIMEOUT)
        except (TimeoutError, asyncpg.InterfaceError, OSError):
            self._pool.terminate()

    # -- plumbing ----------------------------------------------------------------

    async def _connect_for_locks(self, tag: str) -> asyncpg.Connection:
        """A connection outside the pool, for session locks: the pool's settings, and
        a name ending in ``tag`` (see FENCE_SILENT_OWNERS)."""
        self._check_open()
        settings = {**self._server_settings, "application_name": LOCKS_APPLICATION + tag}
        try:
            return await asyncpg.connect(
                self._target.dsn, timeout=CONNECT_TIMEOUT, server_settings=settings
            )
        except DATABASE_ERRORS as error:
            raise self._error(error) from None

    def _now(self) -> datetime | None:
        """The test clock's instant, or None: the server's clock then stamps rows."""
        if self._clock is None:
            return None
        moment = self._clock()
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

    def _error(self, error: BaseException) -> StorageError:
        return StorageError(describe_error(error, self._target, self._lock_timeout))

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"The {self._target} is already closed.")

    @staticmethod
    async def _fetch(conn: Connection, statement: str, **values: object) -> list[asyncpg.Record]:
        compiled = query(statement)
        return await conn.fetch(compiled.text, *compiled.args(values))

    @staticmethod
    async def _row(conn: Connection, statement: str, **values: object) -> asyncpg.Record | None:
        compiled = query(statement)
        return await conn.fetchrow(compiled.text, *compiled.args(values))

    @staticmethod
    async def _execute(conn: Connection, statement: str, **values: object) -> int:
        """Run a statement; returns the number of rows it changed."""
        compiled = query(statement)
        status = await conn.execute(compiled.text, *compiled.args(values))
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0

    async def _read(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """A read outside any transaction; retried once on a broken connection."""
        self._check_open()
        for attempt in range(_ATTEMPTS):
            try:
                async with self._pool.acquire() as conn:
                    try:
                        return await work(conn)
                    except DATABASE_ERRORS as error:
                        _discard_if_broken(conn, error)
                        raise
            except DATABASE_ERRORS as error:
                # a pooled connection the server dropped: one more try on a fresh one
                if is_connection_error(error) and attempt == 0 and not self._closed:
                    log.warning("retrying a read on %s after: %s", self.where, type(error).__name__)
                    await self._pool.expire_connections()
                    continue
                raise self._error(error) from error
        raise AssertionError("unreachable")  # pragma: no cover

    async def _write(
        self,
        work: Callable[[Connection], Awaitable[T]],
        *,
        isolation: Literal["read_committed", "repeatable_read"] = "read_committed",
        readonly: bool = False,
    ) -> T:
        """One transaction; rolled back on any error or cancellation.

        Retried when the server aborted it as a deadlock or serialisation
        failure, or when the connection failed before COMMIT was sent: in both
        cases none of it was committed. A connection lost during COMMIT leaves
        the outcome unknown, so that is never retried.
        """
        self._check_open()
        for attempt in range(_ATTEMPTS):
            committing = False
            try:
                async with self._pool.acquire() as conn:
                    try:
                        async with conn.transaction(isolation=isolation, readonly=readonly):
                            result = await work(conn)
                            committing = True
                        return result
                    except DATABASE_ERRORS as error:
                        _discard_if_broken(conn, error)
                        raise
            except DATABASE_ERRORS as error:
                again = is_retryable(error) or (
                    is_connection_error(error) and not committing and attempt == 0
                )
                if again and attempt + 1 < _ATTEMPTS and not self._closed:
                    log.warning(
                        "retrying a transaction on %s after: %s", self.where, type(error).__name__
                    )
                    if is_connection_error(error):
                        # the server restarted or dropped us: its other idle
                        # connections in the pool are as dead as this one
                        await self._pool.expire_connections()
                    continue
                raise self._error(error) from error
        raise AssertionError("unreachable")  # pragma: no cover

    async def _check_server(self) -> None:
        async def probe(conn: Connection) -> tuple[str, bool]:
            row = await conn.fetchrow(
                "SELECT current_setting('server_version_num')::int AS version, "
                "pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on' "
                "AS read_only"
            )
            assert row is not None
            number = int(row["version"])
            return f"{number // 10000}.{number % 10000}", bool(row["read_only"])

        version, read_only = await self._read(probe)
        major = int(version.split(".")[0])
        if major < MIN_SERVER_VERSION[0]:
            raise StorageError(
                f"PostgreSQL {MIN_SERVER_VERSION[0]} or newer is required; the server at "
                f"{self._target.host} runs {version}."
            )
        if read_only:
            raise StorageError(
                f"The {self._target} is read-only (a standby, or default_transaction_read_only "
                "is on): point DATABASE_URL at the primary server."
            )

    # -- migrations ----------------------------------------------------------------

    async def _schema_version(self, conn: Connection) -> int | None:
        """The newest applied migration, or None before the first one."""
        exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not exists:
            return None
        return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"))

    def _refuse_newer(self, current: int, latest: int) -> None:
        if current > latest:
            raise StorageError(
                f"The {self._target} has schema version {current}, newer than this version of "
                f"the bot knows ({latest}): upgrade the bot or use a matching backup."
            )

    async def _migrate(self) -> None:
        """Apply pending migrations, each in its own transaction, under an advisory lock.

        Several processes starting at once: one migrates, the others wait for
        the lock and then find nothing left to do.
        """
        migrations = load_migrations()
        latest = migrations[-1].number
        self._check_open()
        try:
            async with self._pool.acquire() as conn:
                current = await self._schema_version(conn)
                if current is not None:
                    self._refuse_newer(current, latest)
                    if current == latest:
                        return
                await conn.execute(
                    f"SET lock_timeout = '{round(MIGRATION_LOCK_TIMEOUT * 1000):d}ms'"
                )
                try:
                    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
                except asyncpg.LockNotAvailableError:
                    raise StorageError(
                        f"Another process kept migrating the {self._target} for more than "
                        f"{MIGRATION_LOCK_TIMEOUT:g} s: check for a stuck process holding "
                        f"advisory lock {MIGRATION_LOCK_KEY}."
                    ) from None
                try:
                    await self._apply(conn, migrations, latest)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
                    await conn.execute("RESET lock_timeout")
        except DATABASE_ERRORS as error:
            raise self._error(error) from error

    async def _apply(self, conn: Connection, migrations: tuple[Any, ...], latest: int) -> None:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer     PRIMARY KEY CHECK (version > 0),
                name       text        NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT statement_timestamp()
            )
            """
        )
        current = await self._schema_version(conn) or 0
        self._refuse_newer(current, latest)
        for migration in migrations:
            if migration.number <= current:
                continue
            async with conn.transaction():
                await conn.execute(migration.script)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.number,
                    migration.name,
                )
            log.info("applied database migration %s to %s", migration.name, self.where)

    # -- guilds --------------------------------------------------------------------

    async def _lock_guild(
        self, conn: Connection, guild_id: int, default_credits: int, now: datetime | None
    ) -> tuple[int, bool]:
        """Inside a transaction: lock the guild's row, creating it (and its grant) if new."""
        row = await self._row(conn, sql.LOCK_GUILD, guild_id=guild_id)
        if row is not None:
            return int(row["balance"]), False
        row = await self._row(
            conn, sql.CREATE_GUILD, guild_id=guild_id, default_credits=default_credits, now=now
        )
        if row is not None:
            return int(row["balance"]), True
        # Another transaction created it between our two statements.
        row = await self._row(conn, sql.LOCK_GUILD, guild_id=guild_id)
        assert row is not None
        return int(row["balance"]), False

    async def ensure_guild(self, guild_id: int, *, default_credits: int) -> tuple[int, bool]:
        balance = await self.get_balance(guild_id)
        if balance is not None:
            return balance, False

        async def work(conn: Connection) -> tuple[int, bool]:
            return await self._lock_guild(conn, guild_id, default_credits, self._now())

        return await self._write(work)

    async def get_balance(self, guild_id: int) -> int | None:
        async def work(conn: Connection) -> int | None:
            row = await self._row(conn, sql.GET_BALANCE, guild_id=guild_id)
            return None if row is None else int(row["balance"])

        return await self._read(work)

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
        async def work(conn: Connection) -> int:
            now = self._now()
            await self._lock_guild(conn, guild_id, default_credits, now)
            row = await self._row(
                conn,
                sql.GRANT,
                guild_id=guild_id,
                amount=amount,
                max_balance=max_balance,
                actor_id=actor_id,
                note=sql.clean_text(note),
                now=now,
            )
            if row is None:
                raise _Abort(None)  # rolls back the guild's creation too
            return int(row["balance"])

        try:
            return await self._write(work)
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
        async def work(conn: Connection) -> tuple[int, int]:
            now = self._now()
            old, _ = await self._lock_guild(conn, guild_id, default_credits, now)
            row = await self._row(
                conn,
                sql.SET_BALANCE,
                guild_id=guild_id,
                amount=amount,
                old=old,
                actor_id=actor_id,
                note=sql.clean_text(note),
                now=now,
            )
            assert row is not None
            return old, int(row["balance"])

        return await self._write(work)

    # -- jobs ----------------------------------------------------------------------

    async def reserve_job(
        self, job: NewJob, *, default_credits: int, note: str | None
    ) -> Reserved | ReserveRejected:
        cost = job.cost
        params_json = json.dumps(job.params, ensure_ascii=False, allow_nan=False)

        async def work(conn: Connection) -> Reserved:
            now = self._now()
            balance, _ = await self._lock_guild(conn, job.guild_id, default_credits, now)
            if job.admit is not None:
                refusal = job.admit(await self._settings(conn, job.guild_id))
                if refusal is not None:
                    # Raising rolls back the default grant too if the guild was new.
                    raise _Abort(
                        ReserveRejected("refused", balance=balance, cost=cost, message=refusal)
                    )
            values: dict[str, object] = {
                "guild_id": job.guild_id,
                "user_id": job.user_id,
                "cost": cost,
                "parent_job_id": job.parent_job_id,
                "now": now,
            }
            # After the guild lock: every reservation of this guild committed
            # before it is counted against max_active, and none can follow
            # until this transaction ends.
            row = await self._row(
                conn,
                sql.RESERVE,
                **values,
                max_active=job.max_active,
                owner=job.owner,
                channel_id=job.channel_id,
                params=params_json,
                units_per_image=job.units_per_image,
                images_total=job.images_total,
                note=sql.clean_text(note),
            )
            if row is None:
                # Raising rolls back the default grant too if the guild was new:
                # a refused request changes nothing at all.
                raise _Abort(await self._refusal(conn, values, cost, job.max_active))
            return Reserved(sql.job_from_row(row), int(row["balance"]))

        try:
            # A guild's reservations wait for the guild's row one after another anyway:
            # from this process they wait here, holding two pooled connections, not all.
            async with self._guild_turns.turn(job.guild_id):
                return await self._write(work)
        except _Abort as abort:
            if isinstance(abort.result, ReserveRejected):
                return abort.result
            raise

    async def _refusal(
        self, conn: Connection, values: dict[str, object], cost: int, max_active: int | None
    ) -> ReserveRejected:
        row = await self._row(conn, sql.RESERVE_REFUSAL, **values)
        assert row is not None
        balance = int(row["balance"])
        if not row["parent_ok"]:
            return ReserveRejected("unknown_parent", balance=balance, cost=cost)
        active = int(row["active"])
        if max_active is not None and active >= max_active:
            return ReserveRejected("too_many_jobs", balance=balance, cost=cost, used=active)
        cap = row["cap"]
        used = int(row["used"])
        if cap is not None and used + cost > cap:
            return ReserveRejected("daily_cap", balance, cost, cap=int(cap), used=used)
        return ReserveRejected(
            "insufficient", balance, cost, cap=None if cap is None else int(cap), used=used
        )

    async def start_job(self, job_id: int) -> JobRecord | None:
        async def work(conn: Connection) -> JobRecord | None:
            row = await self._row(conn, sql.START_JOB, job_id=job_id, now=self._now())
            if row is None:
                row = await self._row(conn, sql.GET_JOB, job_id=job_id)
            return None if row is None else sql.job_from_row(row)

        return await self._write(work)

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

        async def work(conn: Connection) -> Settled | None:
            locked = await self._row(conn, sql.LOCK_JOB_GUILD, job_id=job_id)
            if locked is None:
                return None
            row = await self._row(
                conn,
                sql.FINISH_JOB,
                job_id=job_id,
                status=status.value,
                delivered=images_delivered,
                committed=committed,
                refunded=refunded,
                error=sql.clean_text(error),
                commit_note=sql.clean_text(commit_note),
                refund_note=sql.clean_text(refund_note),
                balance=int(locked["balance"]),
                now=self._now(),
            )
            if row is None:
                return None
            return Settled(sql.job_from_row(row), int(row["balance"]))

        return await self._write(work)

    async def mark_delivering(self, job_id: int) -> JobRecord | None:
        async def work(conn: Connection) -> JobRecord | None:
            row = await self._row(conn, sql.MARK_DELIVERING, job_id=job_id, now=self._now())
            return None if row is None else sql.job_from_row(row)

        return await self._write(work)

    async def set_job_message(self, job_id: int, message_id: int) -> bool:
        async def work(conn: Connection) -> bool:
            changed = await self._execute(
                conn, sql.SET_JOB_MESSAGE, job_id=job_id, message_id=message_id, now=self._now()
            )
            return changed == 1

        return await self._write(work)

    async def get_job(self, job_id: int) -> JobRecord | None:
        async def work(conn: Connection) -> JobRecord | None:
            row = await self._row(conn, sql.GET_JOB, job_id=job_id)
            return None if row is None else sql.job_from_row(row)

        return await self._read(work)

    async def list_jobs(
        self, *, statuses: Collection[JobStatus], guild_id: int | None = None
    ) -> list[JobRecord]:
        values = sorted({JobStatus(status).value for status in statuses})
        if not values:
            return []

        async def work(conn: Connection) -> list[JobRecord]:
            rows = await self._fetch(conn, sql.LIST_JOBS, statuses=values, guild_id=guild_id)
            return [sql.job_from_row(row) for row in rows]

        return await self._read(work)

    async def usage_today(self, guild_id: int, user_id: int) -> int:
        async def work(conn: Connection) -> int:
            row = await self._row(
                conn, sql.USAGE, guild_id=guild_id, user_id=user_id, now=self._now()
            )
            return 0 if row is None else int(row[0])

        return await self._read(work)

    # -- ledger --------------------------------------------------------------------

    async def ledger_entries(self, guild_id: int, *, limit: int, offset: int) -> list[LedgerEntry]:
        async def work(conn: Connection) -> list[LedgerEntry]:
            rows = await self._fetch(
                conn, sql.LEDGER_ENTRIES, guild_id=guild_id, limit=limit, offset=offset
            )
            return [sql.entry_from_row(row) for row in rows]

        return await self._read(work)

    async def count_ledger_entries(self, guild_id: int) -> int:
        async def work(conn: Connection) -> int:
            row = await self._row(conn, sql.COUNT_LEDGER, guild_id=guild_id)
            return 0 if row is None else int(row[0])

        return await self._read(work)

    async def audit(self, guild_id: int | None = None) -> list[Discrepancy]:
        async def work(conn: Connection) -> list[Discrepancy]:
            problems: list[Discrepancy] = []
            for row in await self._fetch(conn, sql.AUDIT_BALANCES, guild_id=guild_id):
                problems.append(
                    Discrepancy(
                        row["guild_id"],
                        f"balance {row['balance']} but the ledger sums to {int(row['total'])}",
                    )
                )
            for row in await self._fetch(conn, sql.AUDIT_JOBS, guild_id=guild_id):
                problems.append(
                    Discrepancy(
                        row["guild_id"],
                        f"job {row['id']} ({row['status']}, cost {row['cost']}) has reserve "
                        f"{row['reserve']}, refund {row['refund']}, commit entry "
                        f"{'yes' if row['commit_id'] else 'no'}",
                    )
                )
            return problems

        # one snapshot for both queries
        return await self._write(work, isolation="repeatable_read", readonly=True)

    # -- settings and state ----------------------------------------------------------

    async def _settings(self, conn: Connection, guild_id: int) -> GuildSettings:
        row = await self._row(conn, sql.GET_SETTINGS, guild_id=guild_id)
        return GuildSettings(guild_id) if row is None else sql.settings_from_row(row)

    async def get_settings(self, guild_id: int) -> GuildSettings:
        return await self._read(lambda conn: self._settings(conn, guild_id))

    async def update_settings(
        self, guild_id: int, changes: SettingsChanges, *, default_credits: int
    ) -> GuildSettings:
        given: dict[str, object] = dict(changes)
        names = sorted(given)
        statement = sql.upsert_settings(names)  # refuses names outside the whitelist
        values = {name: sql.settings_value(name, given[name]) for name in names}

        async def work(conn: Connection) -> GuildSettings:
            now = self._now()
            await self._lock_guild(conn, guild_id, default_credits, now)
            row = await self._row(conn, statement, guild_id=guild_id, now=now, **values)
            assert row is not None
            await self._execute(conn, sql.REARM_NOTICE, guild_id=guild_id)
            return sql.settings_from_row(row)

        return await self._write(work)

    async def claim_low_balance_notice(self, guild_id: int) -> bool:
        async def work(conn: Connection) -> bool:
            if await self._row(conn, sql.LOCK_GUILD, guild_id=guild_id) is None:
                return False
            return await self._execute(conn, sql.CLAIM_NOTICE, guild_id=guild_id) == 1

        return await self._write(work)

    async def get_state(self, key: str) -> str | None:
        async def work(conn: Connection) -> str | None:
            row = await self._row(conn, sql.GET_STATE, key=key)
            return None if row is None else str(row["value"])

        return await self._read(work)

    async def set_state(self, key: str, value: str) -> None:
        async def work(conn: Connection) -> None:
            await self._execute(conn, sql.SET_STATE, key=key, value=value, now=self._now())

        await self._write(work)

    # -- processes sharing the database ----------------------------------------------

    async def heartbeat(self, owner: str) -> None:
        """Record that ``owner`` is alive; its first heartbeat (or the first after its
        lock connection was lost) takes its liveness lock and forgets dead owners."""
        self._check_open()
        try:
            key = await self._locks.owner_key(owner)
            fresh = key is None
            if key is None:
                key = await self._locks.hold_owner(owner)
        except DATABASE_ERRORS as error:
            raise self._error(error) from None

        async def work(conn: Connection) -> None:
            await self._execute(conn, sql.HEARTBEAT, owner=owner, lock_key=key, now=self._now())
            if fresh:
                await self._execute(conn, sql.FORGET_DEAD_OWNERS)

        await self._write(work)

    async def release_owner(self, owner: str) -> None:
        self._check_open()
        try:
            await self._locks.release_owner_slots(owner)
            await self._locks.drop_owner(owner)
        except DATABASE_ERRORS as error:
            raise self._error(error) from None

        async def work(conn: Connection) -> None:
            await self._execute(conn, sql.FORGET_OWNER, owner=owner)

        await self._write(work)

    async def recoverable_jobs(self, owner: str | None, *, stale_after: float) -> list[JobRecord]:
        """As the protocol says; with an ``owner`` (a process sharing the database), first
        end the lock sessions of processes frozen for ``stale_after`` (their slots free up)."""

        async def work(conn: Connection) -> list[JobRecord]:
            if owner is not None:
                fenced = await self._row(
                    conn,
                    sql.FENCE_SILENT_OWNERS,
                    owner=owner,
                    stale_after=float(stale_after),
                    app_prefix=LOCKS_APPLICATION,
                    now=self._now(),
                )
                if fenced is not None and fenced[0]:
                    log.warning(
                        "ended %d database session(s) of processes silent for %ds",
                        fenced[0],
                        stale_after,
                    )
            rows = await self._fetch(
                conn,
                sql.RECOVERABLE_JOBS,
                owner=owner,
                stale_after=float(stale_after),
                now=self._now(),
            )
            return [sql.job_from_row(row) for row in rows]

        return await self._read(work)

    async def acquire_slot(self, owner: str, *, limit: int, ttl: float) -> int | None:
        """Take one of ``limit`` slots as a session lock: it is held until released
        or until this process's connection ends, so ``ttl`` (for leases) is unused."""
        if limit < 0 or not ttl > 0:
            raise ValueError("acquire_slot needs limit >= 0 and ttl > 0")
        self._check_open()
        try:
            return await self._locks.take_slot(owner, limit)
        except DATABASE_ERRORS as error:
            raise self._error(error) from None

    async def release_slot(self, owner: str, slot: int) -> None:
        await self._locks.release_slot(owner, slot)

    async def take_rate_token(self, key: str, *, limit: int, period: float) -> float:
        if limit < 1 or not period > 0:
            raise ValueError("take_rate_token needs limit >= 1 and period > 0")

        async def work(conn: Connection) -> float:
            # Callers of one key queue here, across every process.
            await self._execute(conn, sql.LOCK_RATE_KEY, key=key)
            row = await self._row(
                conn,
                sql.TAKE_RATE_TOKEN,
                key=key,
                limit=limit,
                period=float(period),
                now=self._now(),
            )
            assert row is not None
            if row["granted"]:
                return 0.0
            return max(float(row["wait"]), _MIN_WAIT)

        return await self._write(work)
