"""Storage: DATABASE_URL forms, migrations, connection settings, failures, schema rules.

Tests that take ``database_url`` run twice: on a real SQLite file in a temporary
folder, and on a fresh database of a real PostgreSQL server (``tests/pg.py``;
skipped with the reason when none can be started). The rest are about one backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc

from bot.credits import CreditLedger, NewJob
from bot.insight import Insight
from bot.storage import Storage, StorageError, open_storage
from bot.storage._migrate import head
from bot.storage._pg_setup import describe_error, parse_url
from bot.storage._sqlite_setup import sqlite_path
from bot.storage.sql import SQLStorage
from tests.pg import PgServer

GUILD = 111_111_111_111_111_111
OTHER_GUILD = 222_222_222_222_222_222
CHANNEL = 333_333_333_333_333_333
USER = 444_444_444_444_444_444


def url_for(path: Path) -> str:
    """``sqlite:///`` + an absolute path = the four-slash form."""
    return f"sqlite:///{path}"


def raw(path: Path) -> sqlite3.Connection:
    """A plain connection to the same file, for looking behind the interface."""
    return sqlite3.connect(path, isolation_level=None, timeout=5)


def job(guild: int = GUILD, *, units: int = 1, images: int = 1) -> NewJob:
    return NewJob(guild, CHANNEL, USER, {"prompt": "a fox"}, units, images)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def latest(url: str) -> str:
    return head()


async def raw_execute(url: str, statement: str, *args: object) -> None:
    """One statement straight on the database, behind the interface (``?`` parameters)."""
    if is_sqlite(url):
        with contextlib.closing(raw(Path(sqlite_path(url)))) as other:
            other.execute("PRAGMA foreign_keys = ON")
            other.execute(statement, args)
        return
    numbered = iter(range(1, len(args) + 1))
    statement = re.sub(r"\?", lambda _: f"${next(numbered)}", statement)
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement, *args)
    finally:
        await connection.close()


async def schema_version(url: str) -> str:
    """The Alembic revision the database is at."""
    if is_sqlite(url):
        with contextlib.closing(raw(Path(sqlite_path(url)))) as other:
            return str(other.execute("SELECT version_num FROM alembic_version").fetchone()[0])
    connection = await asyncpg.connect(url)
    try:
        return str(await connection.fetchval("SELECT version_num FROM alembic_version"))
    finally:
        await connection.close()


async def table_names(url: str) -> set[str]:
    if is_sqlite(url):
        with contextlib.closing(raw(Path(sqlite_path(url)))) as other:
            rows = other.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            return {name for (name,) in rows}
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
        return {row["tablename"] for row in rows}
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def guilds_locked(url: str) -> AsyncIterator[asyncpg.Connection | sqlite3.Connection]:
    """Another session holds the lock every write needs until the block ends."""
    if is_sqlite(url):
        other = raw(Path(sqlite_path(url)))
        try:
            other.execute("BEGIN IMMEDIATE")
            yield other
        finally:
            with contextlib.suppress(sqlite3.Error):
                other.execute("ROLLBACK")
            other.close()
        return
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("BEGIN; LOCK TABLE guilds IN EXCLUSIVE MODE")
        yield connection
        await connection.execute("ROLLBACK")  # a warning only, if already committed
    finally:
        await connection.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "imagine.db"


# -- helpers shared with test_cli ---------------------------------------------------


def _writes_blocked(path: Path) -> bool:
    try:
        if path.is_dir():
            probe = path / ".write-probe"
            probe.touch()
            probe.unlink()
        else:
            with path.open("ab"):
                pass
    except OSError:
        return True
    return False


@contextlib.contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    """Make files and folders unwritable for this process, or skip the test.

    Permission bits first; root ignores those, so then the immutable attribute
    (``chattr +i``). Everything is restored afterwards.
    """
    modes = {path: stat.S_IMODE(path.stat().st_mode) for path in paths}
    immutable: list[Path] = []
    try:
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
        for path in paths:
            if _writes_blocked(path):
                continue
            chattr = shutil.which("chattr")
            if chattr is None:
                pytest.skip("cannot make a file read-only here (root, and no chattr)")
            done = subprocess.run([chattr, "+i", str(path)], capture_output=True, check=False)
            if done.returncode != 0 or not _writes_blocked(path):
                pytest.skip("cannot make a file read-only here (root, chattr refused)")
            immutable.append(path)
        yield
    finally:
        for path in immutable:
            subprocess.run([shutil.which("chattr") or "chattr", "-i", str(path)], check=False)
        for path, mode in modes.items():
            path.chmod(mode)


@contextlib.contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Another connection holds the database's write lock until the block ends."""
    other = raw(path)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


# -- DATABASE_URL --------------------------------------------------------------------


def test_sqlite_url_forms() -> None:
    assert sqlite_path("sqlite:///data/imagine.db") == "data/imagine.db"
    assert sqlite_path("sqlite:////srv/bot/imagine.db") == "/srv/bot/imagine.db"
    assert sqlite_path("sqlite:///:memory:") == ":memory:"
    # Taken as written: a file made by an earlier release under this name stays the one opened.
    assert sqlite_path("sqlite:///data/my%20db.db") == "data/my%20db.db"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("sqlite://", "three or four slashes"),
        ("sqlite://host/file.db", "three or four slashes"),
        ("sqlite:///", "no file name"),
        ("sqlite:///data/", "no file name"),
        ("sqlite:///data.db?mode=ro", "options"),
    ],
)
def test_malformed_sqlite_urls(url: str, fragment: str) -> None:
    with pytest.raises(StorageError, match=fragment):
        sqlite_path(url)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("mysql://bot:s3cret@db.example/imagine", "scheme 'mysql' is not supported"),
        ("postgresql+psycopg2://bot:s3cret@db/imagine", "is not supported"),
        ("postgresql:/bot:s3cret@db/imagine", "not a database URL"),
        ("postgresql://bot:s3cret@127.0.0.1:port/imagine", "port is not a number"),
        ("postgresql://bot:s3cret@127.0.0.1:5432/db?sslmode=bogus", "not a valid PostgreSQL URL"),
        ("postgresql://bot:s3cret@Horse-s3cret@db.example:5432/imagine", "write an '@'"),
        ("imagine.db", "not a database URL"),
        ("", "not a database URL"),
    ],
)
async def test_unsupported_urls_are_refused_without_echoing_secrets(
    url: str, fragment: str
) -> None:
    with pytest.raises(StorageError, match=fragment) as caught:
        await open_storage(url)
    assert "s3cret" not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_postgres_url_forms() -> None:
    target = parse_url("postgresql://bot:p%40ss@db.example:6543/imagine?sslmode=require")
    assert (target.host, target.database, target.user) == ("db.example:6543", "imagine", "bot")
    assert str(target) == "PostgreSQL database 'imagine' at db.example:6543"
    assert target.redact("password p@ss and p%40ss") == "password *** and ***"
    assert parse_url("postgres://bot@db/imagine").dsn == "postgresql://bot@db/imagine"
    assert parse_url("postgresql+asyncpg://bot:x@db/imagine").dsn == "postgresql://bot:x@db/imagine"
    local = parse_url("postgresql:///imagine?host=/run/postgresql&port=5433")
    assert (local.host, local.database, local.user) == ("/run/postgresql", "imagine", None)
    secret = parse_url("postgresql://db/imagine?password=s3cret&user=bot")
    assert secret.user == "bot"
    assert "s3cret" not in secret.redact(f"failed for {secret.dsn} (password s3cret)")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        # a bad option is the URL's fault, though asyncpg raises it as an interface error
        (
            asyncpg.ClientConfigurationError("sslmode is invalid"),
            "DATABASE_URL is not a valid PostgreSQL URL (sslmode is invalid).",
        ),
        # an unknown host is an OSError, not a timeout or a server message
        (
            socket.gaierror(-2, "Name or service not known"),
            "Cannot reach the PostgreSQL server at db.example:6543 (Name or service not known): "
            "check that it is running and that DATABASE_URL names the right host and port.",
        ),
        (
            asyncpg.LockNotAvailableError("lock timeout"),
            "The PostgreSQL database 'imagine' at db.example:6543 stayed locked by another "
            "process for more than 2.5 s; try again, and check that nothing keeps a "
            "transaction open on it.",
        ),
        # anything else: the server's own words, in one line, without the password
        (
            asyncpg.DiskFullError("could not extend file\nfor p@ss"),
            "Database error on the PostgreSQL database 'imagine' at db.example:6543: "
            "could not extend file for ***.",
        ),
    ],
)
def test_postgres_errors_are_described_in_one_line(error: BaseException, expected: str) -> None:
    target = parse_url("postgresql://bot:p%40ss@db.example:6543/imagine")
    assert describe_error(error, target, 2.5) == expected


async def test_an_unreachable_postgres_server(unused_tcp_port: int) -> None:
    url = f"postgresql://bot:s3cret@127.0.0.1:{unused_tcp_port}/imagine"
    with pytest.raises(StorageError) as caught:
        await asyncio.wait_for(open_storage(url), timeout=30)
    message = str(caught.value)
    assert message.startswith(f"Cannot reach the PostgreSQL server at 127.0.0.1:{unused_tcp_port}")
    assert "s3cret" not in message
    assert "\n" not in message


async def test_postgres_refuses_bad_credentials_and_missing_databases(
    pg_server: PgServer,
) -> None:
    with pytest.raises(StorageError, match="refused the password for user 'postgres'") as caught:
        await open_storage(pg_server.url("postgres", password="s3cret-but-wrong"))
    assert "s3cret" not in str(caught.value)
    with pytest.raises(StorageError, match="refused the password for user 'nobody_here'"):
        await open_storage(pg_server.url("postgres", user="nobody_here", password="s3cret"))
    with pytest.raises(StorageError, match="'no_such_db' does not exist") as caught:
        await open_storage(pg_server.url("no_such_db"))
    password = parse_url(pg_server.admin_url).secrets
    assert not any(secret in str(caught.value) for secret in password)


async def test_relative_url_is_relative_to_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    opened = await open_storage("sqlite:///nested/deeper/imagine.db")
    try:
        await CreditLedger(opened, default_credits=7).ensure_guild(GUILD)
    finally:
        await opened.close()
    assert (tmp_path / "nested" / "deeper" / "imagine.db").is_file()


async def test_absolute_url_with_four_slashes_creates_missing_folders(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "imagine.db"
    url = f"sqlite:////{str(target).lstrip('/')}"
    assert url.startswith("sqlite:////")
    opened = await open_storage(url)
    await opened.close()
    assert target.is_file()


async def test_memory_database_works() -> None:
    opened = await open_storage("sqlite:///:memory:")
    try:
        ledger = CreditLedger(opened, default_credits=5)
        assert await ledger.balance(GUILD) == 5
        assert await ledger.verify()
    finally:
        await opened.close()


def test_a_sqlite_bot_never_loads_the_postgresql_driver(tmp_path: Path) -> None:
    # asyncpg and the PostgreSQL code are a few MB the default setup has no use for.
    script = (
        "import asyncio, sys\n"
        "import bot.app\n"
        "from bot.storage import open_storage\n"
        "async def main():\n"
        f"    storage = await open_storage('sqlite:///{tmp_path / 'solo.db'}')\n"
        "    await storage.ping()\n"
        "    await storage.close()\n"
        "asyncio.run(main())\n"
        "loaded = [m for m in ('asyncpg', 'bot.storage._pg_setup', 'bot.storage._pg_locks')"
        " if m in sys.modules]\n"
        "print(loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


async def test_no_pooled_connection_in_time_is_a_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = await open_storage(f"sqlite:///{tmp_path / 'pool.db'}")
    engine = opened._db.engine  # looking inside on purpose

    def exhausted(self: Any) -> Any:
        raise sa_exc.TimeoutError("QueuePool limit of size 10 overflow 0 reached")

    monkeypatch.setattr(type(engine), "connect", exhausted)
    try:
        with pytest.raises(StorageError, match="QueuePool limit"):
            await opened.ping()
    finally:
        monkeypatch.undo()
        await opened.close()


async def test_url_naming_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not a file"):
        await open_storage(url_for(tmp_path))


async def test_file_that_is_not_a_database_is_refused(db_path: Path) -> None:
    await asyncio.to_thread(db_path.write_bytes, b"this is not a database, just text " * 100)
    with pytest.raises(StorageError, match="damaged or is not a SQLite database"):
        await open_storage(url_for(db_path))


# -- connection settings and migrations -------------------------------------------------


async def _setting(storage: Storage, statement: str) -> object:
    assert isinstance(storage, SQLStorage)
    async with storage._db.engine.connect() as connection:  # looking inside on purpose
        return (await connection.exec_driver_sql(statement)).scalar()


async def test_connection_settings(db_path: Path) -> None:
    storage = await open_storage(url_for(db_path))
    try:
        assert await _setting(storage, "PRAGMA foreign_keys") == 1
        assert await _setting(storage, "PRAGMA synchronous") == 1  # NORMAL
        assert await _setting(storage, "PRAGMA busy_timeout") == 5000
    finally:
        await storage.close()
    with contextlib.closing(raw(db_path)) as other:
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_sqlite_runs_on_aiosqlite_without_threads_of_its_own(db_path: Path) -> None:
    before = set(threading.enumerate())
    storage = await open_storage(url_for(db_path))
    try:
        assert isinstance(storage, SQLStorage)
        assert storage._db.engine.dialect.driver == "aiosqlite"  # looking inside on purpose
        await CreditLedger(storage, default_credits=3).ensure_guild(GUILD)
        # the only new threads are aiosqlite's own connection threads
        started = set(threading.enumerate()) - before
        assert started
        assert all("_connection_worker_thread" in thread.name for thread in started)
    finally:
        await storage.close()


async def test_postgres_connection_settings(pg_url: str) -> None:
    storage = await open_storage(pg_url, lock_timeout=2.5)
    try:
        assert await _setting(storage, "SHOW lock_timeout") == "2500ms"
        assert await _setting(storage, "SHOW TimeZone") == "UTC"
        assert await _setting(storage, "SHOW idle_in_transaction_session_timeout") == "1min"
        assert await _setting(storage, "SHOW application_name") == "imagine-bot"
    finally:
        await storage.close()


async def test_migrations_on_an_empty_database(storage: Storage, database_url: str) -> None:
    assert await schema_version(database_url) == latest(database_url)
    tables = await table_names(database_url)
    assert {"guilds", "ledger", "jobs", "guild_settings", "app_state"} <= tables
    assert {"job_owners", "alembic_version"} <= tables


async def test_migrations_on_a_migrated_database_keep_data(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.storage")
    first = await open_storage(database_url)
    await CreditLedger(first, default_credits=42).grant(GUILD, 8, actor_id=None)
    await first.close()
    assert [r for r in caplog.records if r.getMessage().endswith(": created")]

    caplog.clear()
    second = await open_storage(database_url)
    try:
        assert await CreditLedger(second, default_credits=42).balance(GUILD) == 50
    finally:
        await second.close()
    assert not [r for r in caplog.records if r.name == "bot.storage"]
    assert await schema_version(database_url) == latest(database_url)


@pytest.mark.parametrize("attempt", range(5))
async def test_concurrent_first_opens_migrate_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, attempt: int
) -> None:
    # Connections racing on a brand-new database: the switch to WAL (SQLite) and
    # the migrations must each happen once, and no opener may fail.
    if backend == "sqlite":
        url = url_for(tmp_path / f"race-{attempt}.db")
    else:
        url = request.getfixturevalue("pg_url")
    results = await asyncio.wait_for(
        asyncio.gather(*(open_storage(url) for _ in range(12)), return_exceptions=True),
        timeout=60,
    )
    opened = [result for result in results if not isinstance(result, BaseException)]
    try:
        assert len(opened) == 12, [r for r in results if isinstance(r, BaseException)]
        ledgers = [CreditLedger(storage, default_credits=10) for storage in opened]
        balances = await asyncio.gather(*(ledger.balance(GUILD) for ledger in ledgers))
        assert balances == [10] * 12
        assert await Insight(opened[0]).count_history(GUILD) == 1  # one default grant, not twelve
    finally:
        for storage in opened:
            await storage.close()
    assert await schema_version(url) == latest(url)
    if backend == "sqlite":
        with contextlib.closing(raw(tmp_path / f"race-{attempt}.db")) as other:
            assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_a_newer_schema_is_refused(database_url: str) -> None:
    await (await open_storage(database_url)).close()
    await raw_execute(database_url, "UPDATE alembic_version SET version_num = 'f00d'")
    with pytest.raises(StorageError, match="newer than this version of the bot"):
        await open_storage(database_url)


# -- failures become clear StorageErrors ------------------------------------------------


async def test_read_only_database_file(db_path: Path) -> None:
    await (await open_storage(url_for(db_path))).close()
    with read_only(db_path), pytest.raises(StorageError, match="read-only"):
        await open_storage(url_for(db_path))


async def test_read_only_folder_for_a_new_database(tmp_path: Path) -> None:
    folder = tmp_path / "locked-down"
    folder.mkdir()
    with read_only(folder), pytest.raises(StorageError, match="Cannot open the database"):
        await open_storage(url_for(folder / "imagine.db"))


async def test_missing_folder_inside_a_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "locked-down"
    folder.mkdir()
    with read_only(folder), pytest.raises(StorageError, match="Cannot create the database folder"):
        await open_storage(url_for(folder / "sub" / "imagine.db"))


async def test_database_locked_too_long_at_open(db_path: Path) -> None:
    await (await open_storage(url_for(db_path))).close()
    with write_locked(db_path), pytest.raises(StorageError, match="locked by another process"):
        await asyncio.wait_for(open_storage(url_for(db_path), lock_timeout=0.2), timeout=10)


async def test_database_locked_too_long_during_a_write(database_url: str) -> None:
    opened = await open_storage(database_url, lock_timeout=0.2)
    try:
        ledger = CreditLedger(opened, default_credits=10)
        await ledger.ensure_guild(GUILD)
        async with guilds_locked(database_url):
            with pytest.raises(StorageError, match=r"more than 0\.2 s"):
                await asyncio.wait_for(ledger.grant(GUILD, 5, actor_id=None), timeout=10)
        # nothing half-done, and the connection is still usable
        assert await ledger.balance(GUILD) == 10
        assert await ledger.grant(GUILD, 5, actor_id=None) == 15
        assert await ledger.verify()
    finally:
        await opened.close()


async def test_a_writer_waits_for_a_short_lock(database_url: str) -> None:
    opened = await open_storage(database_url, lock_timeout=5)
    try:
        ledger = CreditLedger(opened, default_credits=10)
        await ledger.ensure_guild(GUILD)

        async def release_later(other: asyncpg.Connection | sqlite3.Connection) -> None:
            await asyncio.sleep(0.2)
            if isinstance(other, sqlite3.Connection):
                other.execute("COMMIT")
            else:
                await other.execute("COMMIT")

        async with guilds_locked(database_url) as other:
            releasing = asyncio.ensure_future(release_later(other))
            assert await asyncio.wait_for(ledger.grant(GUILD, 1, actor_id=None), timeout=10) == 11
            await releasing
    finally:
        await opened.close()


async def test_closed_storage_refuses_work(database_url: str) -> None:
    opened = await open_storage(database_url)
    await opened.close()
    await opened.close()  # closing twice is fine
    with pytest.raises(StorageError, match="already closed"):
        await opened.get_balance(GUILD)
    with pytest.raises(StorageError, match="already closed"):
        await opened.set_state("key", "value")


async def test_postgres_read_only_database(pg_server: PgServer, pg_url: str) -> None:
    await (await open_storage(pg_url)).close()
    name = pg_url.rsplit("/", 1)[1]
    pg_server.admin(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    with pytest.raises(StorageError, match="is read-only"):
        await open_storage(pg_url)


async def test_postgres_survives_dropped_connections(
    pg_server: PgServer, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The server ends every session (a restart, a failover, an admin): the next
    # read and the next write get fresh connections instead of failing.
    caplog.set_level(logging.WARNING, logger="bot.storage")
    opened = await open_storage(pg_url)
    try:
        ledger = CreditLedger(opened, default_credits=10)
        await ledger.ensure_guild(GUILD)
        name = pg_url.rsplit("/", 1)[1]
        for operation in ("read", "write"):
            pg_server.admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            if operation == "read":
                assert await ledger.balance(GUILD) == 10
            else:
                assert await ledger.grant(GUILD, 1, actor_id=None) == 11
        assert await ledger.verify()
    finally:
        await opened.close()


async def test_cancellation_at_any_point_leaves_the_ledger_consistent(storage: Storage) -> None:
    ledger = CreditLedger(storage, default_credits=1000)
    await ledger.ensure_guild(GUILD)
    for step in range(40):
        task = asyncio.ensure_future(ledger.reserve(job()))
        await asyncio.sleep(step * 0.00005)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # the connection is never left inside a transaction
        assert await ledger.grant(GUILD, 1, actor_id=None) > 0
    assert await ledger.verify()
    for record in await ledger.active_jobs():
        await ledger.refund(record.id, "test")
    assert await ledger.balance(GUILD) == 1040
    assert await ledger.verify()


# -- the schema guards the money even against direct SQL -----------------------------------


async def _one_job(storage: Storage) -> int:
    ledger = CreditLedger(storage, default_credits=10)
    return (await ledger.reserve(job(units=2, images=2))).id


async def test_ledger_is_append_only(storage: Storage, database_url: str) -> None:
    await _one_job(storage)
    if is_sqlite(database_url):
        errors: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)
        statements = ["UPDATE ledger SET delta = 0", "DELETE FROM ledger"]
    else:
        errors = (asyncpg.IntegrityConstraintViolationError,)
        statements = ["UPDATE ledger SET delta = 0", "DELETE FROM ledger", "TRUNCATE ledger"]
    for statement in statements:
        with pytest.raises(errors, match="append-only"):
            await raw_execute(database_url, statement)


@pytest.fixture
async def sqlite_storage(db_path: Path) -> AsyncIterator[Storage]:
    opened = await open_storage(url_for(db_path))
    yield opened
    await opened.close()


async def test_schema_rules(sqlite_storage: Storage, db_path: Path) -> None:
    job_id = await _one_job(sqlite_storage)
    now = "2024-01-01T00:00:00.000000+00:00"
    with contextlib.closing(raw(db_path)) as other:
        other.execute("PRAGMA foreign_keys = ON")
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            other.execute("UPDATE guilds SET balance = -1")
        # a second refund for the same job
        other.execute(
            "INSERT INTO ledger (guild_id, job_id, delta, kind, balance_after, created_at) "
            "VALUES (?, ?, 4, 'refund', 10, ?)",
            (GUILD, job_id, now),
        )
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            other.execute(
                "INSERT INTO ledger (guild_id, job_id, delta, kind, balance_after, created_at) "
                "VALUES (?, ?, 4, 'refund', 10, ?)",
                (GUILD, job_id, now),
            )
        # a reserve must take credits, a commit moves none
        for kind, delta in (("reserve", 3), ("commit", -1), ("bonus", 1)):
            with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
                other.execute(
                    "INSERT INTO ledger (guild_id, job_id, delta, kind, balance_after, "
                    "created_at) VALUES (?, ?, ?, ?, 10, ?)",
                    (GUILD, job_id, delta, kind, now),
                )
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            other.execute("UPDATE jobs SET cost = 5")  # cost = units x images
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            other.execute(
                "INSERT INTO ledger (guild_id, delta, kind, balance_after, created_at) "
                "VALUES (?, 1, 'grant', 1, ?)",
                (OTHER_GUILD, now),
            )
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            other.execute("UPDATE guilds SET created_at = '2024-01-01 00:00:00'")
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            other.execute("UPDATE jobs SET params = '[1, 2]'")  # an object, not a list


async def test_postgres_schema_rules(pg_url: str) -> None:
    storage = await open_storage(pg_url)
    try:
        job_id = await _one_job(storage)
    finally:
        await storage.close()
    now = datetime(2024, 1, 1, tzinfo=UTC)
    other = await asyncpg.connect(pg_url)
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await other.execute("UPDATE guilds SET balance = -1")
        refund = (
            "INSERT INTO ledger (guild_id, job_id, delta, kind, balance_after, created_at) "
            "VALUES ($1, $2, 4, 'refund', 10, $3)"
        )
        await other.execute(refund, GUILD, job_id, now)
        with pytest.raises(asyncpg.UniqueViolationError):  # a second refund for the same job
            await other.execute(refund, GUILD, job_id, now)
        # a reserve must take credits, a commit moves none
        for kind, delta in (("reserve", 3), ("commit", -1), ("bonus", 1)):
            with pytest.raises(asyncpg.CheckViolationError):
                await other.execute(
                    "INSERT INTO ledger (guild_id, job_id, delta, kind, balance_after, "
                    "created_at) VALUES ($1, $2, $3, $4, 10, $5)",
                    GUILD,
                    job_id,
                    delta,
                    kind,
                    now,
                )
        with pytest.raises(asyncpg.CheckViolationError):
            await other.execute("UPDATE jobs SET cost = 5")  # cost = units x images
        with pytest.raises(asyncpg.CheckViolationError):
            await other.execute("UPDATE jobs SET status = 'succeeded'")  # no finish time
        with pytest.raises(asyncpg.CheckViolationError):
            await other.execute("UPDATE jobs SET params = '[1, 2]'")  # an object, not a list
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await other.execute(
                "INSERT INTO ledger (guild_id, delta, kind, balance_after, created_at) "
                "VALUES ($1, 1, 'grant', 1, $2)",
                OTHER_GUILD,
                now,
            )
        with pytest.raises(asyncpg.CheckViolationError):
            await other.execute(
                "INSERT INTO guild_settings (guild_id, allowed_channel_ids, blocked_words, "
                "updated_at) VALUES ($1, '{1, NULL}', '{}', $2)",
                GUILD,
                now,
            )
        with pytest.raises(asyncpg.NotNullViolationError):
            await other.execute("UPDATE guilds SET created_at = NULL")
        with pytest.raises(asyncpg.InvalidTextRepresentationError):  # no silent coercion
            await other.execute("UPDATE guilds SET balance = 'lots'")
        with pytest.raises(asyncpg.GeneratedAlwaysError):  # ids come from the database
            await other.execute(
                "INSERT INTO ledger (id, guild_id, delta, kind, balance_after, created_at) "
                "VALUES (999, $1, 1, 'grant', 1, $2)",
                GUILD,
                now,
            )
    finally:
        await other.close()


async def test_timestamps_are_utc_iso_8601(sqlite_storage: Storage, db_path: Path) -> None:
    await _one_job(sqlite_storage)
    with contextlib.closing(raw(db_path)) as other:
        stamps = [
            value
            for (value,) in other.execute(
                "SELECT created_at FROM ledger UNION ALL SELECT created_at FROM jobs "
                "UNION ALL SELECT created_at FROM guilds"
            )
        ]
    assert stamps
    for value in stamps:
        assert len(value) == 32
        assert value.endswith("+00:00")
        assert value[10] == "T"


async def test_postgres_timestamps_are_timestamptz(pg_url: str) -> None:
    storage = await open_storage(pg_url)
    try:
        before = datetime.now(UTC) - timedelta(seconds=5)
        job_id = await _one_job(storage)
        record = await storage.get_job(job_id)
        after = datetime.now(UTC) + timedelta(seconds=5)
    finally:
        await storage.close()
    assert record is not None
    assert record.created_at.utcoffset() == timedelta(0)
    assert before < record.created_at <= record.updated_at < after
    other = await asyncpg.connect(pg_url)
    try:
        types = {
            (row["table_name"], row["column_name"]): row["data_type"]
            for row in await other.fetch(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND column_name LIKE '%\\_at'"
            )
        }
    finally:
        await other.close()
    assert ("ledger", "created_at") in types
    assert set(types.values()) == {"timestamp with time zone"}


async def test_verify_detects_a_tampered_balance(storage: Storage, database_url: str) -> None:
    ledger = CreditLedger(storage, default_credits=10)
    await ledger.ensure_guild(GUILD)
    await ledger.ensure_guild(OTHER_GUILD)
    assert await ledger.verify()
    await raw_execute(
        database_url, "UPDATE guilds SET balance = balance + 1 WHERE guild_id = ?", GUILD
    )
    assert not await ledger.verify()
    assert not await ledger.verify(GUILD)
    assert await ledger.verify(OTHER_GUILD)
    problems = await storage.audit(GUILD)
    assert [problem.guild_id for problem in problems] == [GUILD]
    assert "ledger sums to 10" in problems[0].problem


async def test_verify_detects_a_job_settled_without_its_refund(
    storage: Storage, database_url: str
) -> None:
    job_id = await _one_job(storage)
    await raw_execute(
        database_url,
        "UPDATE jobs SET status = 'refunded', finished_at = updated_at WHERE id = ?",
        job_id,
    )
    problems = await storage.audit()
    assert len(problems) == 1
    assert f"job {job_id} (refunded" in problems[0].problem
