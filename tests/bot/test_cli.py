"""The operator CLI: ``credits GUILD_ID [--add N | --set N] [--note] [--history [--limit K]]``.

In-process through ``run([...])`` and as real processes (``python -m bot.cli``),
against real SQLite files and, for the tests taking ``db``, real PostgreSQL
databases too (``tests/pg.py``).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from bot import cli
from bot.config import Settings
from bot.credits import CreditLedger
from bot.insight import Insight
from bot.storage import open_storage
from tests.bot.test_storage import read_only, write_locked
from tests.pg import PgServer

GUILD = "123456789012345678"
REPO = Path(__file__).resolve().parents[2]


def _clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("DISCORD_TOKEN", "SEGMIND_API_KEY", "DEFAULT_GUILD_CREDITS", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def db_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder with DATABASE_URL pointing at a file there, and no secrets."""
    _clean_environment(tmp_path, monkeypatch)
    path = tmp_path / "data" / "imagine.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{path}")
    return path


@pytest.fixture
def db(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Like ``db_path``, for each backend: DATABASE_URL names a fresh, empty database."""
    _clean_environment(tmp_path, monkeypatch)
    monkeypatch.setenv("DATABASE_URL", database_url)
    return database_url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.run(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def url_of(target: Path | str) -> str:
    return f"sqlite:///{target}" if isinstance(target, Path) else target


def state(target: Path | str, guild: int = int(GUILD)) -> tuple[int | None, int]:
    """(balance or None, number of ledger entries) straight from the database."""

    async def read() -> tuple[int | None, int]:
        storage = await open_storage(url_of(target))
        try:
            return await storage.get_balance(guild), await Insight(storage).count_history(guild)
        finally:
            await storage.close()

    return asyncio.run(read())


def child_env(database_url: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DISCORD_TOKEN", "SEGMIND_API_KEY", "DEFAULT_GUILD_CREDITS"}
    }
    env.update({"DATABASE_URL": database_url, "PYTHONPATH": str(REPO)})
    return env


# -- happy paths ---------------------------------------------------------------------------


def test_prints_the_balance_of_a_new_guild_as_the_bot_would(
    db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEFAULT_GUILD_CREDITS", "25")
    code, out, err = run(capsys, "credits", GUILD)
    assert (code, err) == (0, "")
    assert out == f"Guild {GUILD}: 25 credits\n"
    assert state(db) == (25, 1)


def test_defaults_are_the_bots(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = cli.load_cli_settings(None)
    assert settings.default_guild_credits == Settings.model_fields["default_guild_credits"].default
    assert settings.default_guild_credits == 100
    monkeypatch.delenv("DATABASE_URL")
    assert cli.load_cli_settings(None).database_url == "sqlite:///data/imagine.db"


def test_add_and_set_go_through_the_ledger(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "credits", GUILD, "--add", "20", "--note", "monthly top-up")
    assert code == 0
    assert out == f"Guild {GUILD}: 120 credits (+20 added)\n"
    code, out, _ = run(capsys, "credits", GUILD, "--set=1")
    assert code == 0
    assert out == f"Guild {GUILD}: 1 credit (set)\n"
    assert state(db) == (1, 3)

    async def entries() -> list[tuple[str, int, int | None, str | None]]:
        storage = await open_storage(db)
        try:
            ledger = CreditLedger(storage, default_credits=0)
            assert await ledger.verify()
            return [
                (e.kind.value, e.delta, e.actor_id, e.note)
                for e in await Insight(storage).history(int(GUILD))
            ]
        finally:
            await storage.close()

    assert asyncio.run(entries()) == [
        ("set", -119, None, "cli"),
        ("grant", 20, None, "cli: monthly top-up"),
        ("grant", 100, None, "default credits for a new guild"),
    ]


def test_history_is_an_aligned_table(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    for amount in ("5", "70", "1000"):
        run(capsys, "credits", GUILD, "--add", amount)
    code, out, err = run(capsys, "credits", GUILD, "--history", "--limit", "3")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"Guild {GUILD}: 1175 credits"
    assert lines[1] == ""
    assert lines[2] == "Ledger (3 of 4 entries, newest first):"
    header, *rows = lines[3:]
    assert header.split() == [
        "ID",
        "Time",
        "(UTC)",
        "Kind",
        "Delta",
        "Balance",
        "Job",
        "User",
        "Actor",
        "Note",
    ]
    assert len(rows) == 3
    assert [row.split()[4] for row in rows] == ["+1000", "+70", "+5"]
    # columns line up: every row has its Kind and Note where the header has them
    for column in ("Kind", "Note"):
        start = header.index(column)
        assert all(row[start - 1] == " " and row[start] != " " for row in rows)
    # numbers are right-aligned under their header
    delta_end = header.index("Delta") + len("Delta")
    assert all(row[delta_end - 1].isdigit() for row in rows)

    code, out, _ = run(capsys, "credits", GUILD, "--history")
    assert "Ledger (all 4 entries, newest first):" in out
    assert "default credits for a new guild" in out


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "credits", "--help")
    assert code == 0
    assert "--add N" in out
    assert "--set N" in out


def test_reads_dotenv_without_needing_the_bots_secrets(
    db_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DATABASE_URL")
    (tmp_path / ".env").write_text(
        "DATABASE_URL=sqlite:///from-dotenv.db\nDEFAULT_GUILD_CREDITS=7\nLOG_LEVEL=LOUD\n"
    )
    code, out, _ = run(capsys, "credits", GUILD)
    assert code == 0
    assert out == f"Guild {GUILD}: 7 credits\n"
    assert (tmp_path / "from-dotenv.db").is_file()


# -- bad input: one clear line, the right exit code, nothing changed --------------------------


@pytest.mark.parametrize(
    ("argv", "code", "fragment"),
    [
        (["credits", GUILD, "--add", "-5"], 2, "--add must be at least 1 credit (got -5)"),
        (["credits", GUILD, "--add", "0"], 2, "--add must be at least 1 credit (got 0)"),
        (["credits", GUILD, "--add", "1.5"], 2, "--add needs a whole number of credits"),
        (["credits", GUILD, "--add", "ten"], 2, "--add needs a whole number of credits"),
        (["credits", GUILD, "--add", "1e3"], 2, "--add needs a whole number of credits"),
        (["credits", GUILD, "--add", "10000000000001"], 2, "--add can be at most"),
        (["credits", GUILD, "--set", "-1"], 2, "--set cannot be negative (got -1)"),
        (["credits", GUILD, "--set", ""], 2, "--set needs a whole number of credits"),
        (["credits", GUILD, "--add", "1", "--set", "2"], 2, "not allowed with argument"),
        (["credits", GUILD, "--note", "why"], 2, "--note only applies to --add or --set"),
        (["credits", GUILD, "--limit", "5"], 2, "--limit only applies to --history"),
        (["credits", GUILD, "--history", "--limit", "0"], 2, "--limit must be at least 1"),
        (["credits", GUILD, "--add", "1", "--note", "x" * 600], 2, "--note can be at most"),
        (["credits", "12345"], 2, "GUILD_ID must be a Discord server id (17 to 20 digits)"),
        (["credits", "abc"], 2, "GUILD_ID must be a Discord server id"),
        (["credits", "-123456789012345678"], 2, "GUILD_ID must be a Discord server id"),
        (["credits", "012345678901234567"], 2, "GUILD_ID must be a Discord server id"),
        (["credits", "99999999999999999999"], 2, "larger than any Discord id"),
        (["credits"], 2, "the following arguments are required: GUILD_ID"),
        ([], 2, "the following arguments are required: COMMAND"),
        (["refund", GUILD], 2, "invalid choice"),
        (["credits", GUILD, "--bogus"], 2, "unrecognized arguments"),
    ],
)
def test_bad_usage(
    db: str,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: int,
    fragment: str,
) -> None:
    run(capsys, "credits", GUILD)  # the guild exists with 100 credits
    before = state(db)
    got, out, err = run(capsys, *argv)
    assert got == code
    assert out == ""
    assert fragment in err
    assert err.count("\n") == 1
    assert err.startswith("python -m bot: error: ")
    assert state(db) == before


def test_a_grant_past_the_maximum_is_refused(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "credits", GUILD, "--set", "1000000000000")
    code, out, err = run(capsys, "credits", GUILD, "--add", "1")
    assert (code, out) == (1, "")
    assert "over the maximum" in err
    assert state(db) == (10**12, 2)


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"DEFAULT_GUILD_CREDITS": "-1"}, "DEFAULT_GUILD_CREDITS is invalid"),
        ({"DEFAULT_GUILD_CREDITS": "lots"}, "DEFAULT_GUILD_CREDITS is invalid"),
        (
            {"DATABASE_URL": "postgresql://bot:pw@127.0.0.1:1/imagine"},
            "Cannot reach the PostgreSQL server at 127.0.0.1:1",
        ),
        ({"DATABASE_URL": "postgresql://bot:pw@127.0.0.1:x/imagine"}, "port is not a number"),
        ({"DATABASE_URL": "mysql://db/imagine"}, "scheme 'mysql' is not supported"),
        ({"DATABASE_URL": "sqlite:///"}, "no file name"),
    ],
)
def test_bad_configuration(
    db_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    fragment: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, out, err = run(capsys, "credits", GUILD, "--add", "1")
    assert (code, out) == (1, "")
    assert fragment in err
    assert err.count("\n") == 1
    assert "pw@" not in err


def test_read_only_database(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "credits", GUILD)
    before = state(db_path)
    with read_only(db_path):
        code, out, err = run(capsys, "credits", GUILD, "--add", "5")
    assert (code, out) == (1, "")
    assert "read-only" in err
    assert str(db_path) in err
    assert err.count("\n") == 1
    assert state(db_path) == before


def test_unreadable_database(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"definitely not sqlite " * 200)
    code, out, err = run(capsys, "credits", GUILD)
    assert (code, out) == (1, "")
    assert "damaged or is not a SQLite database" in err


def test_locked_database(
    db_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run(capsys, "credits", GUILD)
    before = state(db_path)
    monkeypatch.setattr("bot.storage.DEFAULT_LOCK_TIMEOUT", 0.2)
    with write_locked(db_path):
        code, out, err = run(capsys, "credits", GUILD, "--add", "5")
    assert (code, out) == (1, "")
    assert "locked by another process for more than 0.2 s" in err
    assert state(db_path) == before


def test_postgres_connection_problems(
    pg_server: PgServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _clean_environment(tmp_path, monkeypatch)
    for url, fragment in (
        (pg_server.url("postgres", password="pw-wrong"), "refused the password for user"),
        (pg_server.url("missing_db"), "'missing_db' does not exist"),
    ):
        monkeypatch.setenv("DATABASE_URL", url)
        code, out, err = run(capsys, "credits", GUILD, "--add", "1")
        assert (code, out) == (1, "")
        assert fragment in err
        assert err.count("\n") == 1
        assert "pw-wrong" not in err
        real_password = urlsplit(pg_server.admin_url).password
        assert real_password
        assert real_password not in err


def test_locked_postgres_database(
    pg_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _clean_environment(tmp_path, monkeypatch)
    monkeypatch.setenv("DATABASE_URL", pg_url)
    run(capsys, "credits", GUILD)
    before = state(pg_url)
    monkeypatch.setattr("bot.storage.DEFAULT_LOCK_TIMEOUT", 0.2)

    async def attempt() -> tuple[int, str, str]:
        other = await asyncpg.connect(pg_url)
        try:
            await other.execute("BEGIN; LOCK TABLE guilds IN EXCLUSIVE MODE")
            return await asyncio.to_thread(run, capsys, "credits", GUILD, "--add", "5")
        finally:
            await other.close()

    code, out, err = asyncio.run(attempt())
    assert (code, out) == (1, "")
    assert "locked by another process for more than 0.2 s" in err
    assert state(pg_url) == before


# -- real processes ----------------------------------------------------------------------------


async def _cli_process(database_url: str, cwd: Path, *argv: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",  # the operator entry point: python -m bot credits ...
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=child_env(database_url),
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=90)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _balance_and_check(url: str) -> tuple[int | None, int]:
    storage = await open_storage(url)
    try:
        ledger = CreditLedger(storage, default_credits=0)
        assert await ledger.verify()
        entries = await Insight(storage).count_history(int(GUILD))
        return await storage.get_balance(int(GUILD)), entries
    finally:
        await storage.close()


def _shared_url(backend: str, path: Path, request: pytest.FixtureRequest) -> str:
    """A SQLite file at ``path``, or a fresh PostgreSQL database."""
    if backend == "sqlite":
        return f"sqlite:///{path}"
    return str(request.getfixturevalue("pg_url"))


async def test_twenty_parallel_processes_lose_no_update(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _shared_url(backend, tmp_path / "shared.db", request)
    code, out, _ = await _cli_process(url, tmp_path, "credits", GUILD)
    assert (code, out) == (0, f"Guild {GUILD}: 100 credits\n")
    results = await asyncio.gather(
        *(_cli_process(url, tmp_path, "credits", GUILD, "--add", "1") for _ in range(20))
    )
    assert [code for code, _, _ in results] == [0] * 20, [err for _, _, err in results]
    assert sorted(int(out.split()[2]) for _, out, _ in results) == list(range(101, 121))
    assert await _balance_and_check(url) == (120, 21)


async def test_parallel_processes_on_a_brand_new_database(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _shared_url(backend, tmp_path / "new" / "fresh.db", request)
    results = await asyncio.gather(
        *(_cli_process(url, tmp_path, "credits", GUILD, "--add", "2") for _ in range(8))
    )
    assert [code for code, _, _ in results] == [0] * 8, [err for _, _, err in results]
    assert await _balance_and_check(url) == (116, 9)


async def test_a_process_never_prints_a_traceback(tmp_path: Path, unused_tcp_port: int) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    for argv, expected in (
        (("credits", "not-a-guild"), 2),
        (("credits", GUILD, "--set", "-4"), 2),
        (("credits", GUILD, "--add"), 2),
    ):
        code, out, err = await _cli_process(url, tmp_path, *argv)
        assert code == expected
        assert out == ""
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
    for bad_url in ("ftp://nowhere", f"postgresql://bot:pw@127.0.0.1:{unused_tcp_port}/imagine"):
        code, _, err = await _cli_process(bad_url, tmp_path, "credits", GUILD)
        assert code == 1
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
        assert ":pw@" not in err
