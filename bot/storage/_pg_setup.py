"""PostgreSQL plumbing: what DATABASE_URL names, the engine over asyncpg, and one-line
errors that never show a password. Loaded only when DATABASE_URL is PostgreSQL's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final
from urllib.parse import quote

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import create_async_engine

from bot.storage._engine import Clock, Database, utcnow
from bot.storage.base import StorageError

__all__ = [
    "DATABASE_ERRORS",
    "KEEPALIVE",
    "PG_POOL_SIZE",
    "PgDatabase",
    "PgTarget",
    "ServerClock",
    "connect_error",
    "describe_error",
    "is_retryable",
    "open_pg",
    "parse_url",
]

log = logging.getLogger("bot.storage")

PG_POOL_SIZE: Final = 10
#: A host clock this far off the server's (or moved this far since) is worth a warning.
CLOCK_WARNING: Final = timedelta(seconds=1)
CONNECT_TIMEOUT: Final = 10.0
IDLE_IN_TRANSACTION_TIMEOUT: Final = 60
#: Server-side TCP keepalives (seconds): after 3 unanswered probes the server ends a silent
#: peer's session, and with it its locks and open transaction.
KEEPALIVE: Final = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "1",
    "tcp_keepalives_count": "3",
}

_DRIVERS: Final = frozenset({"postgresql", "postgres", "postgresql+asyncpg"})
_USAGE: Final = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db "
    "or postgresql://user:password@host:5432/database"
)
_SECRET_OPTIONS: Final = ("password", "passfile", "sslpassword")


@dataclass(frozen=True)
class PgTarget:
    """A parsed ``postgresql://`` URL: what asyncpg gets, and what messages may show."""

    dsn: str
    host: str
    database: str
    user: str | None
    secrets: tuple[str, ...]

    def __str__(self) -> str:
        return f"PostgreSQL database {self.database!r} at {self.host}"

    def redact(self, text: str) -> str:
        """``text`` with every secret of the URL (and the URL itself) blanked out."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


def parse_url(database_url: str) -> PgTarget:
    """Check a DATABASE_URL that is not SQLite's: ``postgresql://user:password@host:port/db``.

    ``postgres://`` and ``postgresql+asyncpg://`` are accepted too; libpq's query
    options (``host=/socket``, ``sslmode``…) go to asyncpg as given.
    """
    try:
        url = make_url(database_url.strip())
    except ArgumentError:
        raise StorageError(f"DATABASE_URL is not a database URL: use {_USAGE}.") from None
    except ValueError:  # the port
        raise StorageError("DATABASE_URL is not a valid URL: its port is not a number.") from None
    if url.drivername.lower() not in _DRIVERS:
        raise StorageError(
            f"DATABASE_URL scheme {url.drivername!r} is not supported: use {_USAGE}."
        )
    if database_url.partition("://")[2].split("/", 1)[0].count("@") > 1:
        # Read as host, the rest of the password would reach every message about the server.
        raise StorageError(
            "DATABASE_URL has more than one '@' before the host: write an '@' in the user "
            "name or password as %40."
        )
    query = {key: url.normalized_query[key][0] for key in url.normalized_query}
    user = url.username or query.get("user")
    host = url.host or query.get("host") or "the local server"
    port = url.port or query.get("port")
    if port and not host.startswith("/") and ":" not in host:
        host = f"{host}:{port}"
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    secrets = [database_url.strip(), dsn, *(query.get(key) for key in _SECRET_OPTIONS)]
    if url.password:
        secrets += [url.password, quote(url.password, safe="")]
    database = url.database or query.get("dbname") or user or "?"
    return PgTarget(dsn, host, database, user, tuple(secret for secret in secrets if secret))


DATABASE_ERRORS: Final = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
"""What talking to the server can raise (all become a one-line StorageError)."""

# The first entry whose classes match describes an error; others show the server's own words.
_MESSAGES: Final[dict[tuple[type[BaseException], ...], str]] = {
    (asyncpg.InvalidPasswordError,): (
        "The PostgreSQL server at {host} refused the password for user {user!r}: "
        "check the user name and password in DATABASE_URL."
    ),
    (asyncpg.InvalidCatalogNameError,): (
        "The PostgreSQL database {name!r} does not exist on {host}: create it "
        "(createdb {name}) or fix the database name in DATABASE_URL."
    ),
    (asyncpg.InvalidAuthorizationSpecificationError,): (
        "The PostgreSQL server at {host} refused user {user!r} for database {name!r}: "
        "check the user in DATABASE_URL and the server's pg_hba.conf."
    ),
    (asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError): (
        "The PostgreSQL server at {host} is starting up or shutting down; try again."
    ),
    (asyncpg.ClientConfigurationError, ValueError): (
        "DATABASE_URL is not a valid PostgreSQL URL ({error})."
    ),
    (TimeoutError,): (
        "The PostgreSQL server at {host} did not answer in time: check that it is running "
        "and reachable from this host."
    ),
    (
        OSError,  # refused, reset, unreachable, unknown host, TLS
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,  # protocol state left behind by a lost connection
        asyncpg.CrashShutdownError,
        asyncpg.IdleInTransactionSessionTimeoutError,
    ): (
        "Cannot reach the PostgreSQL server at {host} ({reason}): check that it is running "
        "and that DATABASE_URL names the right host and port."
    ),
    (asyncpg.LockNotAvailableError,): (
        "The {target} stayed locked by another process for more than {seconds} s; "
        "try again, and check that nothing keeps a transaction open on it."
    ),
    (asyncpg.ReadOnlySQLTransactionError,): (
        "The {target} is read-only (a standby, or default_transaction_read_only is on): "
        "point DATABASE_URL at the primary server."
    ),
    (asyncpg.PostgresError,): "Database error on the {target}: {error}.",
}


def is_retryable(error: BaseException) -> bool:
    """The server rolled the transaction back and asks for it to be run again."""
    return isinstance(error, asyncpg.SerializationError | asyncpg.DeadlockDetectedError)


def describe_error(error: BaseException, target: PgTarget, lock_timeout: float) -> str:
    """One actionable line for a failure to connect or during a unit of work."""
    template = next(
        (text for kinds, text in _MESSAGES.items() if isinstance(error, kinds)),
        "Database error on the {target}: {kind}: {error}.",
    )
    reason = (error.strerror if isinstance(error, OSError) else None) or str(error)
    text = template.format(
        host=target.host,
        name=target.database,
        user=target.user or "the default user",
        target=target,
        seconds=f"{lock_timeout:g}",
        error=error,
        reason=reason or type(error).__name__,
        kind=type(error).__name__,
    )
    return " ".join(target.redact(text).split())


def connect_error(error: BaseException, target: PgTarget) -> StorageError:
    """One actionable line for a failure to open the database."""
    return StorageError(describe_error(error, target, 0))


@dataclass
class PgDatabase(Database):
    """A PostgreSQL database: asyncpg's errors, retried deadlocks, and a way to open a
    connection outside the pool (session locks, see _pg_locks.py)."""

    target: PgTarget = field(kw_only=True)
    #: A connection outside the pool, named as given.
    raw_connect: Callable[[str], Awaitable[asyncpg.Connection]] = field(kw_only=True)

    driver_errors: ClassVar[tuple[type[BaseException], ...]] = (
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
    )
    read_options: ClassVar[dict[str, Any]] = {"isolation_level": "REPEATABLE READ"}

    def retryable(self, cause: BaseException) -> bool:
        return is_retryable(cause)

    def error(self, error: BaseException) -> StorageError:
        return StorageError(describe_error(self.cause(error), self.target, self.lock_timeout))


class ServerClock:
    """This host's UTC clock set to the server's, which every process sharing the database
    reads: heartbeats stamped on one host are then judged fairly on another."""

    def __init__(self, target: PgTarget) -> None:
        self._local = utcnow  # looked up now: a test skews this host's clock by replacing it
        self._target = target
        self._offset: timedelta | None = None

    def __call__(self) -> datetime:
        return self._local() + (self._offset or timedelta(0))

    async def measure(self, server_now: Callable[[], Awaitable[datetime]]) -> None:
        """Measure the offset to the server: when the database is opened, and again on each
        heartbeat, since a host's clock may be stepped while the bot runs."""
        before = self._local()
        server = await server_now()
        offset = server - (before + (self._local() - before) / 2)
        previous, self._offset = self._offset, offset
        if previous is None and abs(offset) >= CLOCK_WARNING:
            log.warning(
                "this host's clock is %.1f s %s the %s's; the bot stamps with the server's time",
                abs(offset.total_seconds()),
                "behind" if offset > timedelta(0) else "ahead of",
                self._target,
            )
        elif previous is not None and abs(offset - previous) >= CLOCK_WARNING:
            log.warning(
                "this host's clock moved %.1f s against the %s's; the bot follows the server's",
                abs((offset - previous).total_seconds()),
                self._target,
            )


async def open_pg(database_url: str, clock: Clock | None, lock_timeout: float) -> PgDatabase:
    """The engine for a ``postgresql://`` DATABASE_URL, once a first connection worked.
    ``clock`` (tests only) replaces the server's clock."""
    target = parse_url(database_url)
    settings = {
        "application_name": "imagine-bot",
        "TimeZone": "UTC",
        "lock_timeout": f"{round(lock_timeout * 1000):d}ms",
        "idle_in_transaction_session_timeout": f"{IDLE_IN_TRANSACTION_TIMEOUT:d}s",
        **KEEPALIVE,
    }

    async def connect(name: str = "imagine-bot") -> asyncpg.Connection:
        # asyncpg reads the libpq-style URL itself (host=/socket, sslmode, passfile…).
        named = {**settings, "application_name": name}
        return await asyncpg.connect(target.dsn, timeout=CONNECT_TIMEOUT, server_settings=named)

    try:
        # Fail early, with a clear message, rather than on the first query.
        first = await asyncio.wait_for(connect(), CONNECT_TIMEOUT * 2)
        try:
            if clock is None:
                clock = ServerClock(target)
                await clock.measure(lambda: first.fetchval("SELECT clock_timestamp()"))
        finally:
            await first.close()
    except (*DATABASE_ERRORS, ValueError) as error:
        raise connect_error(error, target) from None
    engine = create_async_engine(
        "postgresql+asyncpg://",
        async_creator=connect,
        pool_size=PG_POOL_SIZE,
        max_overflow=0,
        pool_pre_ping=True,  # a connection the server dropped is replaced, not used
    )
    return PgDatabase(engine, str(target), lock_timeout, clock, target=target, raw_connect=connect)
