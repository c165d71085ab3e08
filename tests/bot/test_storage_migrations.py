"""Storage: databases made by the bot's earlier SQL migrations move to Alembic with their data.

``tests/fixtures/legacy_sqlite`` and ``legacy_pg`` hold those migrations as they
shipped; each test builds a database with them the way the old code did
(SQLite's ``user_version``, PostgreSQL's ``schema_migrations``), fills it, and
opens it with today's code. Runs on a SQLite file and on a PostgreSQL database.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from bot.storage import StorageError, open_storage
from bot.storage._migrate import HEAD, RETIRED, head
from bot.storage._schema import iso
from bot.storage._sqlite_setup import sqlite_path
from bot.storage.base import ReserveRejected
from bot.storage.records import JobStatus, NewJob
from tests.bot.test_storage import is_sqlite, raw_execute, schema_version

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GUILD = 111_111_111_111_111_111
CHANNEL = 333_333_333_333_333_333
USER = 444_444_444_444_444_444
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _scripts(url: str, upto: int) -> list[tuple[int, str, str]]:
    folder = FIXTURES / ("legacy_sqlite" if is_sqlite(url) else "legacy_pg")
    found = sorted(folder.glob("*.sql"))[:upto]
    return [(int(path.name[:4]), path.stem, path.read_text()) for path in found]


async def build_legacy(url: str, upto: int = 99) -> None:
    """The schema the old migration runner left at version ``upto`` (default: its last)."""
    if is_sqlite(url):
        with contextlib.closing(sqlite3.connect(sqlite_path(url))) as db:
            for number, _, script in _scripts(url, upto):
                db.executescript(script)
                db.execute(f"PRAGMA user_version = {number}")
        return
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT statement_timestamp())"
        )
        for number, name, script in _scripts(url, upto):
            await connection.execute(script)
            await connection.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", number, name
            )
    finally:
        await connection.close()


async def fill(url: str) -> None:
    """A guild with a grant, a settled job and an open one, settings and state."""
    at: object = iso(T0) if is_sqlite(url) else T0
    params = json.dumps({"prompt": "old"})
    statements: list[tuple[str, tuple[object, ...]]] = [
        ("INSERT INTO guilds VALUES (?, 6, ?, ?)", (GUILD, at, at)),
        (
            "INSERT INTO ledger (guild_id, delta, kind, balance_after, created_at) "
            "VALUES (?, 10, 'grant', 10, ?)",
            (GUILD, at),
        ),
        (
            "INSERT INTO jobs (guild_id, channel_id, user_id, params, cost, units_per_image, "
            "images_total, status, images_delivered, created_at, updated_at, finished_at) "
            "VALUES (?, ?, ?, ?, 2, 1, 2, 'succeeded', 2, ?, ?, ?)",
            (GUILD, CHANNEL, USER, params, at, at, at),
        ),
        (
            "INSERT INTO jobs (guild_id, channel_id, user_id, params, cost, units_per_image, "
            "images_total, created_at, updated_at, owner) VALUES (?, ?, ?, ?, 2, 1, 2, ?, ?, 'me')",
            (GUILD, CHANNEL, USER, params, at, at),
        ),
        (
            "INSERT INTO ledger (guild_id, user_id, job_id, delta, kind, balance_after, "
            "created_at) VALUES (?, ?, 1, -2, 'reserve', 8, ?), (?, ?, 1, 0, 'commit', 8, ?), "
            "(?, ?, 2, -2, 'reserve', 6, ?)",
            (GUILD, USER, at, GUILD, USER, at, GUILD, USER, at),
        ),
        (
            "INSERT INTO guild_settings (guild_id, daily_user_cap, updated_at) VALUES (?, 50, ?)",
            (GUILD, at),
        ),
        ("INSERT INTO app_state VALUES ('command-hash', 'abc', ?)", (at,)),
    ]
    for statement, args in statements:
        await raw_execute(url, statement, *args)


async def columns(url: str) -> set[tuple[str, str]]:
    if is_sqlite(url):
        with contextlib.closing(sqlite3.connect(sqlite_path(url))) as db:
            tables = [
                name
                for (name,) in db.execute(
                    "SELECT name FROM sqlite_master "
                    "WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                )
            ]
            return {(t, row[1]) for t in tables for row in db.execute(f"PRAGMA table_info({t})")}
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema()"
        )
    finally:
        await connection.close()
    return {(row[0], row[1]) for row in rows if row[0] != "schema_migrations"}


async def test_a_legacy_database_moves_to_alembic_with_its_data(
    database_url: str, tmp_path: Path, backend: str
) -> None:
    await build_legacy(database_url)
    await fill(database_url)
    storage = await open_storage(database_url)
    try:
        assert await storage.get_balance(GUILD) == 6
        assert await storage.count_ledger_entries(GUILD) == 4
        assert await storage.audit() == []
        assert (await storage.get_settings(GUILD)).daily_user_cap == 50
        # the old settings row is change 0; the next change is numbered and can be asked for
        assert await storage.settings_version() == 0
        changed = await storage.update_settings(GUILD, {"daily_user_cap": 40}, default_credits=5)
        [seen] = await storage.settings_changed_since(0, limit=10)
        assert (seen, seen.version, changed.version) == (changed, 1, 1)
        assert await storage.get_state("command-hash") == "abc"
        [old] = await storage.list_jobs(statuses={JobStatus.QUEUED})
        assert (old.owner, old.params, old.created_at) == ("me", {"prompt": "old"}, T0)
        # today's code works on it: a reservation, the settlement of the old job
        assert await storage.reserve_job(
            NewJob(GUILD, CHANNEL, USER, {}, 1, 1, max_active=1), default_credits=5, note=None
        ) == ReserveRejected("too_many_jobs", 6, 1, used=1)
        settled = await storage.finish_job(
            old.id, status=JobStatus.REFUNDED, images_delivered=0, committed=0, refunded=2,
            error="test", commit_note=None, refund_note=None,
        )  # fmt: skip
        assert settled is not None and settled.balance == 8
        assert await storage.audit() == []
        await storage.hold_rate("segmind", 30)  # the table 0005 adds
        assert await storage.rate_held_for("segmind") > 0
    finally:
        await storage.close()
    assert await schema_version(database_url) == head()
    # the schema is the one a fresh database gets
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}" if backend == "sqlite" else database_url + "_fresh"
    if backend == "postgresql":
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute(f'CREATE DATABASE "{fresh.rsplit("/", 1)[1]}"')
        finally:
            await connection.close()
    await (await open_storage(fresh)).close()
    assert await columns(database_url) == await columns(fresh)
    # opened again: nothing left to do, data still there
    again = await open_storage(database_url)
    try:
        assert await again.get_balance(GUILD) == 8
    finally:
        await again.close()


async def test_old_code_would_refuse_a_migrated_database(database_url: str) -> None:
    await build_legacy(database_url)
    await (await open_storage(database_url)).close()
    if is_sqlite(database_url):
        with contextlib.closing(sqlite3.connect(sqlite_path(database_url))) as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
    else:
        connection = await asyncpg.connect(database_url)
        try:
            version = await connection.fetchval("SELECT MAX(version) FROM schema_migrations")
        finally:
            await connection.close()
    # the old runner refused any version above its own newest (4 or 5)
    assert version == RETIRED


async def test_an_unknown_legacy_version_is_refused(database_url: str) -> None:
    await build_legacy(database_url, upto=2)
    with pytest.raises(StorageError, match="schema version 2, which this version of the bot"):
        await open_storage(database_url)


def test_the_newest_revision_is_known_without_loading_alembic() -> None:
    assert head() == HEAD
