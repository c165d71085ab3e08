"""A throwaway PostgreSQL server for the test session, and a fresh database per test.

The server is started once per session from the PostgreSQL binaries on this
machine (``initdb`` on PATH, or Debian's ``/usr/lib/postgresql/*/bin``): a data
folder in a temporary directory, ``fsync`` off, TCP on 127.0.0.1 at a free port
with a random password (and its socket in that folder). ``initdb`` and the
server refuse to run as root, so under root they run as the ``postgres`` user
(or ``nobody``). A small watchdog process stops the server and deletes the
folder when the session ends, even if pytest itself is killed.

``IMAGINE_TEST_POSTGRES_URL=postgresql://user:password@host:port/postgres``
uses an existing server instead (the user needs CREATEDB). Without binaries or
a URL, every PostgreSQL test is skipped with the reason; SQLite tests still run.

Fixtures
  * ``backend`` — ``"sqlite"`` and ``"postgresql"`` (parametrises the test).
  * ``database_url`` — a fresh, empty database of that backend.
  * ``pg_server`` — the session's :class:`PgServer` (skips without one).
  * ``pg_url`` — a fresh, empty PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

__all__ = ["FAST_SETTINGS", "PgServer", "find_binaries", "start_local_server"]

URL_VARIABLE = "IMAGINE_TEST_POSTGRES_URL"
BACKENDS = ("sqlite", "postgresql")
T = TypeVar("T")

# Ends the server and removes its folder when its stdin closes, i.e. when the
# pytest process ends, however it ends. pg_ctl runs as the server's user.
_WATCHDOG = """
import shutil, signal, subprocess, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sys.stdin.buffer.read()
pg_ctl, data, base, uid, gid = sys.argv[1:6]
user = {"user": int(uid), "group": int(gid), "extra_groups": []} if uid != "-" else {}
subprocess.run([pg_ctl, "stop", "-D", data, "-m", "immediate", "-w", "-t", "30"],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, cwd=base,
               **user)
shutil.rmtree(base, ignore_errors=True)
"""


def find_binaries() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, newest version first."""
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)

    def version(folder: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", folder.parent.name)) or (0,)

    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin"):
        candidates += sorted(map(Path, glob.glob(pattern)), key=version, reverse=True)
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class _RunAs:
    """Who runs initdb and the server: this process, or an unprivileged user under root."""

    uid: int | None = None
    gid: int | None = None

    @classmethod
    def pick(cls) -> _RunAs:
        if os.geteuid() != 0:
            return cls()
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(name)
                return cls(entry.pw_uid, entry.pw_gid)
        raise RuntimeError("running as root and there is no 'postgres' or 'nobody' user")

    def options(self) -> dict[str, Any]:
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def chown(self, path: Path) -> None:
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)


class _Loop:
    """An event loop in a thread, so that sync fixtures can use asyncpg."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@dataclass
class PgServer:
    """A PostgreSQL server the tests may create and drop databases on."""

    admin_url: str  # a superuser (or CREATEDB) URL to the maintenance database
    description: str
    _loop: _Loop = field(default_factory=_Loop)
    _admin: asyncpg.Connection | None = None
    _version: int = 0
    _stop: Any = None  # called at the end of the session

    def url(self, database: str, *, user: str | None = None, password: str | None = None) -> str:
        """The URL of ``database`` on this server, optionally with other credentials."""
        parts = urlsplit(self.admin_url)
        netloc = parts.netloc
        if user is not None or password is not None:
            userinfo, _, hostinfo = netloc.rpartition("@")
            old_user, _, old_password = userinfo.partition(":")
            new_user = old_user if user is None else user
            new_password = old_password if password is None else password
            netloc = f"{new_user}:{new_password}@{hostinfo}"
        return urlunsplit((parts.scheme, netloc, f"/{database}", parts.query, ""))

    async def _connection(self) -> asyncpg.Connection:
        if self._admin is None or self._admin.is_closed():
            self._admin = await asyncpg.connect(self.admin_url, timeout=30)
            self._version = self._admin.get_server_version().major
        return self._admin

    def admin(self, sql: str, *args: object) -> str:
        """Run one statement on the maintenance database."""

        async def run() -> str:
            return await (await self._connection()).execute(sql, *args)

        return self._loop.run(run())

    def create_database(self, prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:16]}"

        async def run() -> None:
            connection = await self._connection()
            strategy = " STRATEGY FILE_COPY" if self._version >= 15 else ""
            await connection.execute(f'CREATE DATABASE "{name}" TEMPLATE template0{strategy}')

        self._loop.run(run())
        return name

    def drop_database(self, name: str) -> None:
        force = " WITH (FORCE)" if self._version >= 13 else ""
        self.admin(f'DROP DATABASE IF EXISTS "{name}"{force}')

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A fresh, empty database for one test; dropped afterwards."""
        name = self.create_database()
        try:
            yield self.url(name)
        finally:
            self.drop_database(name)

    def close(self) -> None:
        async def disconnect() -> None:
            if self._admin is not None and not self._admin.is_closed():
                await self._admin.close()

        with contextlib.suppress(Exception):
            self._loop.run(disconnect(), timeout=10)
        self._loop.close()
        if self._stop is not None:
            self._stop()


FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
}


def start_local_server(binaries: Path, *, settings: dict[str, str] | None = None) -> PgServer:
    """initdb + pg_ctl start in a temporary folder; see the module docstring.

    ``settings`` override :data:`FAST_SETTINGS` (e.g. ``fsync=on`` for a benchmark).
    """
    server_settings = {**FAST_SETTINGS, **(settings or {})}
    run_as = _RunAs.pick()
    base = Path(tempfile.mkdtemp(prefix="imagine-pg-"))
    base.chmod(0o700)
    run_as.chown(base)
    data = base / "data"
    password = secrets.token_hex(16)
    password_file = base / "password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    run_as.chown(password_file)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
    common: dict[str, Any] = {"cwd": base, "env": env, "capture_output": True, "text": True}
    common.update(run_as.options())
    try:
        watchdog = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WATCHDOG,
                str(binaries / "pg_ctl"),
                str(data),
                str(base),
                "-" if run_as.uid is None else str(run_as.uid),
                "-" if run_as.gid is None else str(run_as.gid),
            ],
            stdin=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except OSError:
        shutil.rmtree(base, ignore_errors=True)
        raise

    def stop() -> None:
        assert watchdog.stdin is not None
        watchdog.stdin.close()
        try:
            watchdog.wait(timeout=60)
        except subprocess.TimeoutExpired:
            watchdog.kill()

    try:
        initdb = subprocess.run(
            [
                str(binaries / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                f"--pwfile={password_file}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=False,
            timeout=120,
            **common,
        )
        password_file.unlink()
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {_tail(initdb.stderr or initdb.stdout)}")
        port = 0
        for _ in range(3):  # another process may grab the free port first
            port = _free_port()
            options = " ".join(
                [
                    f"-p {port}",
                    f"-k {base}",
                    "-c listen_addresses=127.0.0.1",
                    *(f"-c {name}={value}" for name, value in server_settings.items()),
                ]
            )
            started = subprocess.run(
                [
                    str(binaries / "pg_ctl"),
                    "start",
                    "-D",
                    str(data),
                    "-l",
                    str(base / "server.log"),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    options,
                ],
                check=False,
                timeout=90,
                **common,
            )
            if started.returncode == 0:
                break
        else:
            log = base / "server.log"
            detail = log.read_text(errors="replace") if log.exists() else started.stderr
            raise RuntimeError(f"pg_ctl start failed: {_tail(detail)}")
    except BaseException:
        stop()
        raise
    version = binaries.parent.name if binaries.parent.name[:1].isdigit() else "local"
    server = PgServer(
        admin_url=f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres",
        description=f"PostgreSQL {version} on 127.0.0.1:{port} ({base})",
    )
    server._stop = stop
    return server


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def _external_server(url: str) -> PgServer:
    parts = urlsplit(url)
    return PgServer(admin_url=url, description=f"PostgreSQL at {parts.hostname}:{parts.port}")


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL server, started on first use; skips without one."""
    url = os.environ.get(URL_VARIABLE)
    if url:
        server = _external_server(url)
    else:
        binaries = find_binaries()
        if binaries is None:
            pytest.skip(
                "PostgreSQL tests need initdb/pg_ctl (apt-get install postgresql) "
                f"or {URL_VARIABLE}"
            )
        try:
            server = start_local_server(binaries)
        except (OSError, RuntimeError, subprocess.SubprocessError) as error:
            pytest.skip(f"could not start a PostgreSQL server for the tests: {error}")
    try:
        server.admin("SELECT 1")
    except Exception as error:
        server.close()
        pytest.skip(f"the PostgreSQL test server does not answer: {type(error).__name__}: {error}")
    yield server
    server.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database: a file in ``tmp_path``, or a new PostgreSQL database."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'imagine.db'}"
        return
    server: PgServer = request.getfixturevalue("pg_server")
    with server.database() as url:
        yield url


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database."""
    with pg_server.database() as url:
        yield url
