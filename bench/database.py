"""The database a benchmark's bot runs on: a SQLite file, or a throwaway PostgreSQL server.

``--database postgresql`` (``python -m bench.soak``, ``python -m bench.backlog``)
starts a local server from this machine's PostgreSQL binaries exactly as the
tests do (tests/pg.py: fsync off, 127.0.0.1, a random password) and drops it at
the end.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.pg import find_binaries, start_local_server

__all__ = ["DATABASES", "throwaway_database"]

DATABASES = ("sqlite", "postgresql")


@contextlib.contextmanager
def throwaway_database(kind: str, folder: Path) -> Iterator[str]:
    """The URL of a fresh database of ``kind``: a file in ``folder``, or a new server's;
    ``kind`` may also be the URL of an existing empty database (the tests' server)."""
    if "://" in kind:
        yield kind
        return
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'bench.db'}"
        return
    binaries = find_binaries()
    if binaries is None:
        raise SystemExit("--database postgresql needs initdb/pg_ctl (PostgreSQL installed)")
    server = start_local_server(binaries)
    try:
        with server.database() as url:
            yield url
    finally:
        server.close()
