"""SQLite plumbing: the file a DATABASE_URL names, and one-line error messages."""

from __future__ import annotations

import sqlite3
from typing import Final

from bot.storage.base import StorageError

__all__ = ["MIN_SQLITE_VERSION", "describe_error", "sqlite_path"]

MIN_SQLITE_VERSION: Final = (3, 35, 0)  # RETURNING

# By SQLite's error name (its prefix); {where} is the file, {seconds} the lock timeout.
_MESSAGES: Final = {
    ("SQLITE_READONLY", "SQLITE_PERM"): (
        "The database {where} is read-only: make the file and its folder writable by the user "
        "running the bot."
    ),
    ("SQLITE_BUSY", "SQLITE_LOCKED"): (
        "The database {where} stayed locked by another process for more than {seconds} s; "
        "try again, and check that nothing keeps a transaction open on it."
    ),
    ("SQLITE_CANTOPEN",): (
        "Cannot open the database {where}: check that the path names a file (not a folder) "
        "and that its folder exists and is writable."
    ),
    ("SQLITE_CORRUPT", "SQLITE_NOTADB"): "The file {where} is damaged or is not a SQLite database.",
}


def sqlite_path(database_url: str) -> str:
    """The file path in a ``sqlite:///`` URL (``:memory:`` for an in-memory database).

    ``sqlite:///data/imagine.db`` is relative to the working directory,
    ``sqlite:////srv/imagine.db`` (four slashes) is absolute. The path is taken as
    written (no %-decoding), so an existing file keeps being the one opened.
    """
    scheme, slashes, path = database_url.partition(":///")
    if scheme.lower() != "sqlite" or not slashes:
        raise StorageError(
            "DATABASE_URL must look like sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db (three or four slashes)."
        )
    if "?" in path or "#" in path:
        raise StorageError("DATABASE_URL options (after '?') are not supported for SQLite.")
    if not path.strip() or path.endswith("/"):
        raise StorageError(
            "DATABASE_URL has no file name: use e.g. sqlite:///data/imagine.db "
            "or sqlite:////absolute/path/imagine.db."
        )
    return path


def describe_error(error: sqlite3.Error, where: str, lock_timeout: float) -> str:
    """One actionable line for an SQLite error (``lock_timeout`` in seconds, for BUSY)."""
    name = getattr(error, "sqlite_errorname", "") or ""
    template = next(
        (text for prefixes, text in _MESSAGES.items() if name.startswith(prefixes)),
        "Database error on {where}: {error}.",
    )
    return template.format(where=where, seconds=f"{lock_timeout:g}", error=error)
