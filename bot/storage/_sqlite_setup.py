"""SQLite plumbing: DATABASE_URL parsing and one-line error messages."""

from __future__ import annotations

import sqlite3
from typing import Final

from bot.storage.base import StorageError

__all__ = ["MIN_SQLITE_VERSION", "describe_error", "sqlite_path"]

MIN_SQLITE_VERSION: Final = (3, 35, 0)  # RETURNING
_URL_PREFIX: Final = "sqlite:///"


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
