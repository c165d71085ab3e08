"""SQLite plumbing: DATABASE_URL parsing, timestamps, migrations, error messages."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Final

from bot.storage.base import StorageError

__all__ = [
    "MIN_SQLITE_VERSION",
    "Migration",
    "day_start",
    "describe_error",
    "load_migrations",
    "parse_timestamp",
    "split_statements",
    "sqlite_path",
    "timestamp",
    "utcnow",
]

MIN_SQLITE_VERSION: Final = (3, 37, 0)  # STRICT tables; RETURNING needs 3.35
_URL_PREFIX: Final = "sqlite:///"
_MIGRATION_NAME: Final = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def utcnow() -> datetime:
    return datetime.now(UTC)


def timestamp(moment: datetime) -> str:
    """Fixed-width UTC ISO-8601 (``2024-05-01T12:34:56.123456+00:00``): text order is time order."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def day_start(moment: datetime) -> str:
    """Midnight UTC of ``moment``'s day: daily caps reset then."""
    utc = moment.astimezone(UTC) if moment.tzinfo is not None else moment
    return timestamp(utc.replace(hour=0, minute=0, second=0, microsecond=0))


def parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text)


# -- DATABASE_URL ----------------------------------------------------------------


def sqlite_path(database_url: str) -> str:
    """The file path in a ``sqlite:///`` URL (``:memory:`` for an in-memory database).

    ``sqlite:///data/imagine.db`` is relative to the working directory,
    ``sqlite:////srv/imagine.db`` (four slashes) is absolute.
    """
    if not database_url.startswith(_URL_PREFIX):
        raise StorageError(
            "DATABASE_URL must look like sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db (three or four slashes)."
        )
    rest = database_url[len(_URL_PREFIX) :]
    if "?" in rest or "#" in rest:
        raise StorageError(
            "DATABASE_URL options (after '?') are not supported for SQLite: "
            "use sqlite:///path/to/file.db."
        )
    if rest == ":memory:":
        return rest
    if not rest.strip() or rest.endswith("/"):
        raise StorageError(
            "DATABASE_URL has no file name: use e.g. sqlite:///data/imagine.db "
            "or sqlite:////absolute/path/imagine.db."
        )
    return rest


# -- migrations ------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    statements: tuple[str, ...]


def split_statements(script: str) -> list[str]:
    """Split a SQL script into statements (trigger bodies stay whole)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    leftover = [
        line for line in buffer.splitlines() if line.strip() and not line.strip().startswith("--")
    ]
    if leftover:
        raise ValueError(f"incomplete SQL statement at the end: {leftover[0]!r}")
    return statements


@cache
def load_migrations() -> tuple[Migration, ...]:
    """The packaged ``migrations/NNNN_name.sql`` files, numbered 1, 2, 3… without gaps."""
    folder = resources.files("bot.storage").joinpath("migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match is None:
            continue
        found.append(
            Migration(
                number=int(match.group(1)),
                name=entry.name.removesuffix(".sql"),
                statements=tuple(split_statements(entry.read_text(encoding="utf-8"))),
            )
        )
    found.sort(key=lambda migration: migration.number)
    numbers = [migration.number for migration in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1, 2, 3… without gaps, found {numbers}")
    return tuple(found)


def describe_error(error: sqlite3.Error, where: str, lock_timeout: float) -> str:
    """One actionable line for an SQLite error (``lock_timeout`` in seconds, for BUSY)."""
    name = getattr(error, "sqlite_errorname", "") or ""
    seconds = f"{lock_timeout:g}"
    if name.startswith("SQLITE_READONLY") or name == "SQLITE_PERM":
        return (
            f"The database {where} is read-only: make the file and its folder "
            "writable by the user running the bot."
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return (
            f"The database {where} stayed locked by another process for more than "
            f"{seconds} s; try again, and check that nothing keeps a transaction open on it."
        )
    if name.startswith("SQLITE_CANTOPEN"):
        return (
            f"Cannot open the database {where}: check that the path names a file "
            "(not a folder) and that its folder exists and is writable."
        )
    if name in {"SQLITE_CORRUPT", "SQLITE_NOTADB"} or name.startswith("SQLITE_CORRUPT"):
        return f"The file {where} is damaged or is not a SQLite database."
    if name == "SQLITE_FULL":
        return f"The disk holding the database {where} is full."
    if name.startswith("SQLITE_IOERR"):
        return f"Disk I/O error on the database {where} ({error})."
    if isinstance(error, sqlite3.IntegrityError):
        return f"The database {where} refused a change that breaks its rules ({error})."
    return f"Database error on {where}: {error}."
