"""Storage: DATABASE_URL forms, migrations, connection settings, failures, schema rules.

Every test uses a real SQLite file in a temporary folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.credits import CreditLedger, NewJob
from bot.storage import Storage, StorageError, open_storage
from bot.storage._sqlite_setup import split_statements
from bot.storage.sqlite import SQLiteStorage, load_migrations, sqlite_path

GUILD = 111_111_111_111_111_111
OTHER_GUILD = 222_222_222_222_222_222
CHANNEL = 333_333_333_333_333_333
USER = 444_444_444_444_444_444
LATEST = load_migrations()[-1].number


def url_for(path: Path) -> str:
    """``sqlite:///`` + an absolute path = the four-slash form."""
    return f"sqlite:///{path}"


def raw(path: Path) -> sqlite3.Connection:
    """A plain connection to the same file, for looking behind the interface."""
    return sqlite3.connect(path, isolation_level=None, timeout=5)


def job(guild: int = GUILD, *, units: int = 1, images: int = 1) -> NewJob:
    return NewJob(guild, CHANNEL, USER, {"prompt": "a fox"}, units, images)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "imagine.db"


@pytest.fixture
async def storage(db_path: Path) -> AsyncIterator[Storage]:
    opened = await open_storage(url_for(db_path))
    yield opened
    await opened.close()


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
        ("postgresql://bot:s3cret@db.example/imagine", "PostgreSQL support is not available yet"),
        ("postgres://bot:s3cret@db.example/imagine", "PostgreSQL support is not available yet"),
        ("postgresql+asyncpg://bot:s3cret@db/imagine", "PostgreSQL support is not available yet"),
        ("mysql://bot:s3cret@db.example/imagine", "scheme 'mysql' is not supported"),
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


async def test_url_naming_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not a file"):
        await open_storage(url_for(tmp_path))


async def test_file_that_is_not_a_database_is_refused(db_path: Path) -> None:
    await asyncio.to_thread(db_path.write_bytes, b"this is not a database, just text " * 100)
    with pytest.raises(StorageError, match="damaged or is not a SQLite database"):
        await open_storage(url_for(db_path))


# -- connection settings and migrations -------------------------------------------------


async def test_connection_settings(storage: Storage, db_path: Path) -> None:
    assert isinstance(storage, SQLiteStorage)
    connection = storage._conn  # looking inside on purpose: these are per-connection
    assert list(await connection.execute_fetchall("PRAGMA foreign_keys")) == [(1,)]
    assert list(await connection.execute_fetchall("PRAGMA synchronous")) == [(1,)]  # NORMAL
    assert list(await connection.execute_fetchall("PRAGMA busy_timeout")) == [(5000,)]
    with contextlib.closing(raw(db_path)) as other:
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_migrations_on_an_empty_database(storage: Storage, db_path: Path) -> None:
    with contextlib.closing(raw(db_path)) as other:
        assert other.execute("PRAGMA user_version").fetchone() == (LATEST,)
        tables = {
            name for (name,) in other.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    assert {"guilds", "ledger", "jobs", "guild_settings", "app_state"} <= tables


async def test_migrations_on_a_migrated_database_keep_data(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.storage")
    first = await open_storage(url_for(db_path))
    await CreditLedger(first, default_credits=42).grant(GUILD, 8, actor_id=None)
    await first.close()
    applied = [r for r in caplog.records if "applied database migration" in r.getMessage()]
    assert len(applied) == LATEST

    caplog.clear()
    second = await open_storage(url_for(db_path))
    try:
        assert await CreditLedger(second, default_credits=42).balance(GUILD) == 50
    finally:
        await second.close()
    assert not [r for r in caplog.records if "applied database migration" in r.getMessage()]
    with contextlib.closing(raw(db_path)) as other:
        assert other.execute("PRAGMA user_version").fetchone() == (LATEST,)


@pytest.mark.parametrize("attempt", range(5))
async def test_concurrent_first_opens_migrate_once(tmp_path: Path, attempt: int) -> None:
    # Connections racing on a brand-new file: the switch to WAL and the
    # migration must each happen once, and no opener may fail.
    db_path = tmp_path / f"race-{attempt}.db"
    results = await asyncio.wait_for(
        asyncio.gather(
            *(open_storage(url_for(db_path)) for _ in range(12)), return_exceptions=True
        ),
        timeout=30,
    )
    opened = [result for result in results if not isinstance(result, BaseException)]
    try:
        assert len(opened) == 12, [r for r in results if isinstance(r, BaseException)]
        ledgers = [CreditLedger(storage, default_credits=10) for storage in opened]
        balances = await asyncio.gather(*(ledger.balance(GUILD) for ledger in ledgers))
        assert balances == [10] * 12
        assert await ledgers[0].count_history(GUILD) == 1  # one default grant, not twelve
    finally:
        for storage in opened:
            await storage.close()
    with contextlib.closing(raw(db_path)) as other:
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert other.execute("PRAGMA user_version").fetchone() == (LATEST,)


async def test_a_newer_schema_is_refused(db_path: Path) -> None:
    await (await open_storage(url_for(db_path))).close()
    with contextlib.closing(raw(db_path)) as other:
        other.execute(f"PRAGMA user_version = {LATEST + 5}")
    with pytest.raises(StorageError, match="newer than this version of the bot"):
        await open_storage(url_for(db_path))


def test_migration_files_are_numbered_without_gaps() -> None:
    numbers = [migration.number for migration in load_migrations()]
    assert numbers == list(range(1, len(numbers) + 1))
    assert load_migrations()[0].name == "0001_initial"


def test_statement_splitter_keeps_trigger_bodies_whole() -> None:
    script = """
        -- a comment; with a semicolon
        CREATE TABLE t (x INTEGER);
        CREATE TRIGGER t_no_delete BEFORE DELETE ON t
        BEGIN
            SELECT RAISE(ABORT, 'no; really');
        END;
        -- trailing comment
    """
    statements = split_statements(script)
    assert len(statements) == 2
    assert statements[1].startswith("CREATE TRIGGER")
    assert statements[1].endswith("END;")
    with pytest.raises(ValueError, match="incomplete"):
        split_statements("CREATE TABLE t (x INTEGER)")


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


async def test_database_locked_too_long_during_a_write(db_path: Path) -> None:
    opened = await open_storage(url_for(db_path), lock_timeout=0.2)
    try:
        ledger = CreditLedger(opened, default_credits=10)
        await ledger.ensure_guild(GUILD)
        with write_locked(db_path), pytest.raises(StorageError, match=r"more than 0\.2 s"):
            await asyncio.wait_for(ledger.grant(GUILD, 5, actor_id=None), timeout=10)
        # nothing half-done, and the connection is still usable
        assert await ledger.balance(GUILD) == 10
        assert await ledger.grant(GUILD, 5, actor_id=None) == 15
        assert await ledger.verify()
    finally:
        await opened.close()


async def test_a_writer_waits_for_a_short_lock(db_path: Path) -> None:
    opened = await open_storage(url_for(db_path), lock_timeout=5)
    try:
        ledger = CreditLedger(opened, default_credits=10)
        await ledger.ensure_guild(GUILD)
        other = raw(db_path)
        other.execute("BEGIN IMMEDIATE")
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, other.execute, "COMMIT")
        assert await asyncio.wait_for(ledger.grant(GUILD, 1, actor_id=None), timeout=10) == 11
        other.close()
    finally:
        await opened.close()


async def test_closed_storage_refuses_work(db_path: Path) -> None:
    opened = await open_storage(url_for(db_path))
    await opened.close()
    await opened.close()  # closing twice is fine
    with pytest.raises(StorageError, match="already closed"):
        await opened.get_balance(GUILD)


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


async def test_ledger_is_append_only(storage: Storage, db_path: Path) -> None:
    await _one_job(storage)
    with contextlib.closing(raw(db_path)) as other:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            other.execute("UPDATE ledger SET delta = 0")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            other.execute("DELETE FROM ledger")


async def test_schema_rules(storage: Storage, db_path: Path) -> None:
    job_id = await _one_job(storage)
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
        # STRICT tables: no silent coercion of a wrong type
        with pytest.raises(sqlite3.IntegrityError, match="cannot store"):
            other.execute("UPDATE guilds SET balance = 'lots'")


async def test_timestamps_are_utc_iso_8601(storage: Storage, db_path: Path) -> None:
    await _one_job(storage)
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


async def test_verify_detects_a_tampered_balance(storage: Storage, db_path: Path) -> None:
    ledger = CreditLedger(storage, default_credits=10)
    await ledger.ensure_guild(GUILD)
    await ledger.ensure_guild(OTHER_GUILD)
    assert await ledger.verify()
    with contextlib.closing(raw(db_path)) as other:
        other.execute("UPDATE guilds SET balance = balance + 1 WHERE guild_id = ?", (GUILD,))
    assert not await ledger.verify()
    assert not await ledger.verify(GUILD)
    assert await ledger.verify(OTHER_GUILD)
    problems = await storage.audit(GUILD)
    assert [problem.guild_id for problem in problems] == [GUILD]
    assert "ledger sums to 10" in problems[0].problem


async def test_verify_detects_a_job_settled_without_its_refund(
    storage: Storage, db_path: Path
) -> None:
    job_id = await _one_job(storage)
    with contextlib.closing(raw(db_path)) as other:
        other.execute(
            "UPDATE jobs SET status = 'refunded', finished_at = updated_at WHERE id = ?",
            (job_id,),
        )
    problems = await storage.audit()
    assert len(problems) == 1
    assert f"job {job_id} (refunded" in problems[0].problem
