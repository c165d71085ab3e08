"""Bring a database to the current schema: create it, or migrate it with Alembic.

It runs in one transaction (SQLite: under its write lock; PostgreSQL: under an
advisory lock), so processes starting together migrate once. A database made by
the bot's earlier SQL migrations (SQLite's ``user_version``, PostgreSQL's
``schema_migrations``) is stamped with the matching revision and upgraded; that
old version is then set past anything the old code knows, so an old bot refuses it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

from sqlalchemy import Column, Connection, MetaData, String, Table, inspect, select, text

from bot.storage._engine import Database
from bot.storage._schema import metadata
from bot.storage.base import StorageError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["HEAD", "head", "migrate"]

log = logging.getLogger("bot.storage")

#: Version of the earlier SQL migrations -> the Alembic revision with that schema.
LEGACY: Final = {3: "0001", 4: "0002", 5: "0003"}
#: The newest revision (a test checks it is Alembic's head): a current or fresh database
#: is opened without loading Alembic at all.
HEAD: Final = "0005"
RETIRED: Final = 1000
"""The legacy version left on a database Alembic took over (newer than old code knows)."""
MIN_SERVER_VERSION: Final = (12, 0)  # PostgreSQL's
MIGRATION_LOCK_KEY: Final = int.from_bytes(b"imagine", "big")
"""``pg_advisory_xact_lock`` key held while migrating: concurrent starters migrate once."""

alembic_version = Table("alembic_version", MetaData(), Column("version_num", String(32)))


def _config(connection: Connection | None) -> Config:
    from alembic.config import Config  # noqa: PLC0415 - loaded only to migrate

    config = Config()
    config.set_main_option("script_location", "bot.storage:alembic")
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision among the Alembic scripts."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    revision = ScriptDirectory.from_config(_config(None)).get_current_head()
    assert revision is not None
    return revision


def _legacy_version(connection: Connection, tables: set[str]) -> int | None:
    if connection.dialect.name == "sqlite":
        return int(connection.exec_driver_sql("PRAGMA user_version").scalar_one()) or None
    if "schema_migrations" not in tables:
        return None
    return int(
        connection.exec_driver_sql("SELECT MAX(version) FROM schema_migrations").scalar_one()
    )


def _retire_legacy(connection: Connection) -> None:
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql(f"PRAGMA user_version = {RETIRED:d}")
    else:
        insert = "INSERT INTO schema_migrations (version, name) VALUES (:v, 'alembic')"
        connection.execute(text(insert), {"v": RETIRED})


def _upgrade(connection: Connection, where: str) -> str:
    """What was done (for the log). Runs inside the caller's write transaction."""
    if connection.dialect.name == "postgresql":
        version = connection.dialect.server_version_info or ()
        if version < MIN_SERVER_VERSION:
            raise StorageError(
                f"PostgreSQL {MIN_SERVER_VERSION[0]} or newer is required; the {where} runs "
                f"{'.'.join(map(str, version))}."
            )
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY:d})")
    tables = set(inspect(connection).get_table_names())
    if "alembic_version" in tables:
        if connection.execute(select(alembic_version.c.version_num)).scalar() != HEAD:
            _alembic(connection, where, None)
        # Write something even when nothing changed: a read-only database fails here, at start.
        connection.execute(
            alembic_version.update().values(version_num=alembic_version.c.version_num)
        )
        return "upgraded"
    legacy = _legacy_version(connection, tables)
    if legacy is None:
        metadata.create_all(connection)
        alembic_version.create(connection)
        connection.execute(alembic_version.insert().values(version_num=HEAD))
        return "created"
    if legacy not in LEGACY:
        raise StorageError(
            f"The database {where} has schema version {legacy}, which this version of the "
            "bot cannot migrate: open it once with the bot release that made it, or use a backup."
        )
    _alembic(connection, where, LEGACY[legacy])
    _retire_legacy(connection)
    return f"migrated from schema version {legacy}"


def _alembic(connection: Connection, where: str, stamp: str | None) -> None:
    """Stamp ``stamp`` (if given), then upgrade to the newest revision."""
    from alembic import command  # noqa: PLC0415 - loaded only to migrate
    from alembic.util.exc import CommandError  # noqa: PLC0415

    config = _config(connection)
    try:
        if stamp is not None:
            command.stamp(config, stamp)
        command.upgrade(config, "head")
    except CommandError as error:
        raise StorageError(
            f"The database {where} has a schema newer than this version of the bot "
            f"knows ({error}): upgrade the bot or use a matching backup."
        ) from None


async def migrate(db: Database) -> None:
    """Create or migrate the schema; a :class:`StorageError` says why it cannot.

    SQLite answers BUSY at once, without waiting, to openers racing on a brand-new
    file: they try again (it changed nothing) within the lock timeout.
    """
    deadline = asyncio.get_running_loop().time() + db.lock_timeout
    delay = 0.002
    while True:
        try:
            done = await db.write(lambda conn: conn.run_sync(_upgrade, db.where))
            break
        except StorageError as error:
            name = getattr(error.__cause__, "sqlite_errorname", "") or ""
            if not name.startswith("SQLITE_BUSY") or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
    if done != "upgraded":
        log.info("database %s: %s", db.where, done)
