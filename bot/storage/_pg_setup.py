"""PostgreSQL plumbing: DATABASE_URL parsing and one-line error messages (never the password)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from bot.storage.base import StorageError

__all__ = [
    "DATABASE_ERRORS",
    "MIGRATION_LOCK_KEY",
    "MIN_SERVER_VERSION",
    "PgTarget",
    "connect_error",
    "describe_error",
    "is_connection_error",
    "is_retryable",
    "parse_url",
]

MIN_SERVER_VERSION: Final = (12, 0)
MIGRATION_LOCK_KEY: Final = int.from_bytes(b"imagine", "big")
"""``pg_advisory_lock`` key held while migrating: concurrent starters migrate once."""

_SCHEMES: Final = {"postgresql": "postgresql", "postgres": "postgresql", "postgresql+asyncpg": ""}


# -- DATABASE_URL ----------------------------------------------------------------


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
            if secret:
                text = text.replace(secret, "***")
        return text


def parse_url(database_url: str) -> PgTarget:
    """Check a ``postgresql://user:password@host:port/database`` URL.

    ``postgres://`` and SQLAlchemy's ``postgresql+asyncpg://`` are accepted too.
    Raises :class:`StorageError` (never echoing the password) when malformed.
    """
    url = database_url.strip()
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in _SCHEMES or not rest:
        raise StorageError(
            "DATABASE_URL must look like postgresql://user:password@host:5432/database."
        )
    dsn = f"postgresql://{rest}"
    try:
        parts = urlsplit(dsn)
        query_values = parse_qs(parts.query, keep_blank_values=True)
    except ValueError:
        raise StorageError(
            "DATABASE_URL is not a valid PostgreSQL URL: use "
            "postgresql://user:password@host:5432/database."
        ) from None
    netloc = parts.netloc
    userinfo, at, hostinfo = netloc.rpartition("@")
    if not at:
        userinfo, hostinfo = "", netloc
    user_text, colon, password_text = userinfo.partition(":")
    secrets = [dsn, url, database_url]
    if colon:
        secrets += [password_text, unquote(password_text)]
    for name in ("password", "passfile", "sslpassword"):
        secrets += query_values.get(name, [])
    user = unquote(user_text) or _first(query_values, "user")
    host = unquote(hostinfo) or _first(query_values, "host") or "the local server"
    port = _first(query_values, "port")
    if port and ":" not in host and "," not in host and not host.startswith("/"):
        host = f"{host}:{port}"
    database = unquote(parts.path.lstrip("/")) or _first(query_values, "dbname") or user or "?"
    return PgTarget(
        dsn=dsn,
        host=host,
        database=database,
        user=user,
        secrets=tuple(secret for secret in secrets if secret),
    )


def _first(values: Mapping[str, list[str]], name: str) -> str | None:
    found = values.get(name)
    return found[0] if found else None


# -- errors ------------------------------------------------------------------------

DATABASE_ERRORS: Final = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
"""What talking to the server can raise (all become a one-line StorageError)."""

_CONNECTION_ERRORS: Final = (
    OSError,  # refused, reset, unreachable, DNS (socket.gaierror)
    TimeoutError,
    asyncpg.PostgresConnectionError,  # 08xxx
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # protocol state left behind by a lost connection
    asyncpg.AdminShutdownError,  # 57P01: the server is shutting down
    asyncpg.CannotConnectNowError,  # 57P03: starting up or in recovery
    asyncpg.CrashShutdownError,
    asyncpg.IdleInTransactionSessionTimeoutError,
)


def is_connection_error(error: BaseException) -> bool:
    """The connection itself failed: nothing can have been written after this."""
    return isinstance(error, _CONNECTION_ERRORS) and not isinstance(
        error, asyncpg.ClientConfigurationError
    )


def is_retryable(error: BaseException) -> bool:
    """The server rolled the transaction back and asks for it to be run again."""
    return isinstance(error, asyncpg.SerializationError | asyncpg.DeadlockDetectedError)


def connect_error(error: BaseException, target: PgTarget) -> StorageError:
    """One actionable line for a failure to open the database (never the password)."""
    where = target.host
    name = target.database
    user = target.user or "the default user"
    if isinstance(error, asyncpg.InvalidPasswordError):
        text = (
            f"The PostgreSQL server at {where} refused the password for user {user!r}: "
            "check the user name and password in DATABASE_URL."
        )
    elif isinstance(error, asyncpg.InvalidCatalogNameError):
        text = (
            f"The PostgreSQL database {name!r} does not exist on {where}: create it "
            f"(createdb {name}) or fix the database name in DATABASE_URL."
        )
    elif isinstance(error, asyncpg.InvalidAuthorizationSpecificationError):
        text = (
            f"The PostgreSQL server at {where} refused user {user!r} for database "
            f"{name!r}: check the user in DATABASE_URL and the server's pg_hba.conf."
        )
    elif isinstance(error, asyncpg.TooManyConnectionsError):
        text = (
            f"The PostgreSQL server at {where} has no free connection slot: "
            "raise max_connections or close idle clients."
        )
    elif isinstance(error, asyncpg.CannotConnectNowError | asyncpg.AdminShutdownError):
        text = f"The PostgreSQL server at {where} is starting up or shutting down; try again."
    elif isinstance(error, asyncpg.ClientConfigurationError | ValueError):
        text = f"DATABASE_URL is not a valid PostgreSQL URL ({error})."
    elif isinstance(error, socket.gaierror):
        text = f"Cannot find the PostgreSQL server {where}: check the host name in DATABASE_URL."
    elif isinstance(error, ssl.SSLError):
        text = f"TLS to the PostgreSQL server at {where} failed ({error})."
    elif isinstance(error, TimeoutError):
        text = (
            f"The PostgreSQL server at {where} did not answer in time: check that it is "
            "running and reachable from this host."
        )
    elif isinstance(error, OSError):
        reason = error.strerror or type(error).__name__
        text = (
            f"Cannot reach the PostgreSQL server at {where} ({reason}): check that it is "
            "running and that DATABASE_URL names the right host and port."
        )
    elif isinstance(error, asyncpg.PostgresError | asyncpg.InterfaceError):
        text = f"Cannot open the {target}: {error}."
    else:
        text = f"Cannot open the {target}: {type(error).__name__}."
    return StorageError(_one_line(target.redact(text)))


def describe_error(error: BaseException, target: PgTarget, lock_timeout: float) -> str:
    """One actionable line for a failure during a unit of work (``lock_timeout`` in s)."""
    seconds = f"{lock_timeout:g}"
    if isinstance(error, asyncpg.LockNotAvailableError):
        text = (
            f"The {target} stayed locked by another process for more than {seconds} s; "
            "try again, and check that nothing keeps a transaction open on it."
        )
    elif isinstance(error, asyncpg.ReadOnlySQLTransactionError):
        text = (
            f"The {target} is read-only (a standby, or default_transaction_read_only "
            "is on): point DATABASE_URL at the primary server."
        )
    elif isinstance(error, asyncpg.InsufficientPrivilegeError):
        text = (
            f"The PostgreSQL user lacks a privilege on the {target} ({error}): "
            "grant it, or use the database's owner."
        )
    elif isinstance(error, asyncpg.IntegrityConstraintViolationError):
        text = f"The {target} refused a change that breaks its rules ({error})."
    elif isinstance(error, asyncpg.DiskFullError):
        text = f"The disk holding the {target} is full."
    elif isinstance(error, asyncpg.UndefinedTableError):
        text = f"The {target} is missing the bot's tables ({error}): restart the bot to migrate."
    elif is_connection_error(error):
        text = (
            f"Lost the connection to the {target} ({_reason(error)}): check that the "
            "server is running."
        )
    elif isinstance(error, asyncpg.PostgresError):
        text = f"Database error on the {target}: {error}."
    else:
        text = f"Database error on the {target}: {type(error).__name__}: {error}."
    return _one_line(target.redact(text))


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())
