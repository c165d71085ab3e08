"""Bring a database to the current schema: create it, or migrate it with Alembic.

Runs in one transaction (SQLite: under its write lock; PostgreSQL: under an
advisory lock), so processes starting together migrate once. A database made
by the bot's earlier SQL migrations carries their version (SQLite's
``user_version``, PostgreSQL's ``schema_migrations``): it is stamped with the
matching revision and upgraded, and that version is then set past anything the
earlier code knows, so an old bot refuses the database instead of using it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

from sqlalchemy import Column, Connection, MetaData, String, Table, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.storage._engine import Database
from bot.storage._pg_setup import MIGRATION_LOCK_KEY, MIN_SERVER_VERSION
from bot.storage._schema import metadata
from bot.storage.base import StorageError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["HEAD", "head", "migrate"]

log = logging.getLogger("bot.storage")

#: Version of the earlier SQL migrations -> the Alembic revision with that schema
#: (SQLite stopped at 4; PostgreSQL's 5 added the owners' lock keys).
LEGACY: Final = {3: "0001", 4: "0002", 5: "0003"}
#: The newest revision (tests check it is Alembic's head): a database already there, or a
#: fresh one, is opened without loading Alembic at all (it costs ~11 MB of memory).
HEAD: Final = "0004"
RETIRED: Final = 1000
"""The legacy version left on a database Alembic took over (newer than old code knows)."""


class SchemaTooNew(Exception):
    """The database has a revision this version of the bot does not know."""


def _config(connection: Connection | None) -> Config:
    from alembic.config import Config  # noqa: PLC0415 - loaded only to migrate

    config = Config()
    config.set_main_option("script_location", "bot.storage:alembic")
    config.attributes["connection"] = connection
    return config


alembic_version = Table("alembic_version", MetaData(), Column("version_num", String(32)))


def head() -> str:
    """The newest revision among the Alembic scripts."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    revision = ScriptDirectory.from_config(_config(None)).get_current_head()
    assert revision is not None
    return revision


def _legacy_version(connection: Connection, tables: set[str]) -> int | None:
    if connection.dialect.name == "sqlite":
        version = int(connection.exec_driver_sql("PRAGMA user_version").scalar_one())
        return version or None
    if "schema_migrations" not in tables:
        return None
    return int(
        connection.exec_driver_sql("SELECT MAX(version) FROM schema_migrations").scalar_one()
    )


def _retire_legacy(connection: Connection) -> None:
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql(f"PRAGMA user_version = {RETIRED:d}")
    else:
        connection.execute(
            text("INSERT INTO schema_migrations (version, name) VALUES (:v, 'alembic')"),
            {"v": RETIRED},
        )


def _upgrade(connection: Connection, where: str) -> str:
    """What was done (for the log). Runs inside the caller's write transaction."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY:d})")
    tables = set(inspect(connection).get_table_names())
    if "alembic_version" in tables:
        current = connection.execute(select(alembic_version.c.version_num)).scalar()
        if current != HEAD:
            _alembic(connection, None)
        # Write something even when nothing changed: a read-only file fails here, at start.
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
    revision = LEGACY.get(legacy)
    if revision is None:
        raise StorageError(
            f"The database {where} has schema version {legacy}, which this version of the "
            "bot cannot migrate: open it once with the bot release that made it, or use a backup."
        )
    _alembic(connection, revision)
    _retire_legacy(connection)
    return f"migrated from schema version {legacy}"


def _alembic(connection: Connection, stamp: str | None) -> None:
    """Stamp ``stamp`` (if given), then upgrade to the newest revision."""
    from alembic import command  # noqa: PLC0415 - loaded only to migrate
    from alembic.util.exc import CommandError  # noqa: PLC0415

    config = _config(connection)
    try:
        if stamp is not None:
            command.stamp(config, stamp)
        command.upgrade(config, "head")
    except CommandError as error:
        raise SchemaTooNew(str(error)) from None


async def _check_server(db: Database) -> None:
    async def probe(conn: AsyncConnection) -> tuple[int, bool]:
        row = (
            await conn.execute(
                text(
                    "SELECT current_setting('server_version_num')::int, pg_is_in_recovery() "
                    "OR current_setting('transaction_read_only') = 'on'"
                )
            )
        ).one()
        return int(row[0]), bool(row[1])

    version, read_only = await db.read(probe)
    if version // 10000 < MIN_SERVER_VERSION[0]:
        raise StorageError(
            f"PostgreSQL {MIN_SERVER_VERSION[0]} or newer is required; the {db.where} runs "
            f"{version // 10000}."
        )
    if read_only:
        raise StorageError(
            f"The {db.where} is read-only (a standby, or default_transaction_read_only "
            "is on): point DATABASE_URL at the primary server."
        )


async def _first_write(db: Database) -> str:
    """The migration's transaction. SQLite answers BUSY at once, without waiting, to openers
    racing on a brand-new file; they try again (it changed nothing) within the lock timeout."""
    deadline = asyncio.get_running_loop().time() + db.lock_timeout
    delay = 0.002
    while True:
        try:
            return await db.write(lambda conn: conn.run_sync(_upgrade, db.where))
        except StorageError as error:
            cause = error.__cause__
            name = getattr(cause, "sqlite_errorname", "") or ""
            if not name.startswith("SQLITE_BUSY") or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)


async def migrate(db: Database) -> None:
    """Create or migrate the schema; a :class:`StorageError` says why it cannot."""
    if db.dialect == "postgresql":
        await _check_server(db)
    try:
        done = await _first_write(db)
    except SchemaTooNew as error:
        raise StorageError(
            f"The database {db.where} has a schema newer than this version of the bot "
            f"knows ({error}): upgrade the bot or use a matching backup."
        ) from None
    if done != "upgraded":
        log.info("database %s: %s", db.where, done)
