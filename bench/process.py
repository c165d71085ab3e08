"""The bot in its own process, against the fakes served by the benchmark's process.

The child runs ``python -m bench.child``: the bot's real entry point
(``bot.__main__``) with an event-loop lag sampler and a GC timer added. Used where
a figure must be the bot's alone: peak RSS (``VmHWM`` in ``/proc/<pid>/status``),
CPU seconds (``/proc/<pid>/stat``), the lag of the bot's own event loop and its
garbage-collection pauses. The
fake Discord and fake Segmind stay in the parent, so their memory and CPU are
not counted. The child reads its settings from the environment, exactly as in
production, in an empty folder so that no ``.env`` is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import BENCH_CREDITS, Harness

__all__ = ["BotProcess", "ProcessStats"]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class ProcessStats:
    """The child's memory (bytes) and CPU (seconds) at one moment."""

    rss: int
    peak_rss: int
    cpu: float


class BotProcess:
    """``python -m bot`` pointed at a :class:`~bench.harness.Harness`'s fakes."""

    def __init__(self, harness: Harness, env: Mapping[str, str] | None = None) -> None:
        self.harness = harness
        self.extra_env = dict(env or {})  # more settings (e.g. SEGMIND_RPM), as in production
        self.process: asyncio.subprocess.Process | None = None
        self.log_path = harness.folder / "bot.log"
        self.lag_path = harness.folder / "observed.json"
        self._observed: dict[str, Any] | None = None

    def environment(self) -> dict[str, str]:
        harness, config = self.harness, self.harness.config
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DISCORD_", "SEGMIND_", "DATABASE_", "MAX_", "LOG_", "EVENT_"))
        }
        env.update(
            {
                "DISCORD_TOKEN": harness.discord.token,
                "DISCORD_API_URL": harness.discord.api_url,
                "DISCORD_GATEWAY_URL": harness.discord.gateway_url,
                "SEGMIND_API_KEY": harness.segmind.api_key,
                "SEGMIND_BASE_URL": harness.segmind.url,
                "SEGMIND_TIMEOUT": "120",
                "DATABASE_URL": harness.database_url,
                "DEFAULT_GUILD_CREDITS": str(BENCH_CREDITS),
                "MAX_CONCURRENT_JOBS": str(config.max_concurrent_jobs),
                "MAX_QUEUED_PER_USER": str(config.max_queued_per_user),
                "GUILD_READY_TIMEOUT": "0.05",
                "SHUTDOWN_GRACE_SECONDS": "10",
                "LOG_LEVEL": "WARNING",
                "EVENT_LOOP": config.event_loop,
                "BENCH_LAG_FILE": str(self.lag_path),
                "PYTHONPATH": os.pathsep.join(
                    [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")]
                ).rstrip(os.pathsep),
                **self.extra_env,
            }
        )
        return env

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, harness: Harness, *, timeout: float = 30.0, env: Mapping[str, str] | None = None
    ) -> AsyncIterator[BotProcess]:
        """Start the child, wait until it is connected and has the guild; stop it on exit."""
        child = cls(harness, env)
        await child.start(timeout)
        try:
            yield child
        finally:
            await child.stop()

    async def start(self, timeout: float) -> None:
        workdir = self.harness.folder / "bot"
        workdir.mkdir(exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.child",
                cwd=workdir,
                env=self.environment(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        fake, guild_id = self.harness.discord, self.harness.discord.guild.id

        def guild_sent() -> bool:
            if self.process is not None and self.process.returncode is not None:
                raise RuntimeError(f"the bot exited at start-up:\n{self.log()}")
            return any(
                event == "GUILD_CREATE" and int(data["id"]) == guild_id
                for session in fake.gateway.sessions
                for event, data in session.events
            )

        try:
            await fake.wait_for(guild_sent, timeout=timeout, what="the bot to connect")
        except BaseException:
            await self.stop()
            raise

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    async def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (graceful shutdown), then SIGKILL after ``timeout``; the exit code."""
        process = self.process
        if process is None or process.returncode is not None:
            return None if process is None else process.returncode
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            return await process.wait()

    def _observations(self) -> dict[str, Any]:
        if self._observed is None:
            try:
                self._observed = json.loads(self.lag_path.read_text())
            except (OSError, ValueError):
                self._observed = {"times": [], "lags": [], "gc": []}
        return self._observed

    def loop_lag(self, start: float, end: float) -> list[float]:
        """The bot's event-loop lag samples taken from ``start`` to ``end`` (monotonic
        seconds, the same clock in both processes); available once the child exited."""
        seen = self._observations()
        return [
            lag for at, lag in zip(seen["times"], seen["lags"], strict=True) if start <= at <= end
        ]

    def gc_pauses(self, start: float, end: float) -> list[tuple[int, float]]:
        """``(generation, seconds)`` of the bot's garbage collections in that window."""
        return [(gen, pause) for at, gen, pause in self._observations()["gc"] if start <= at <= end]

    def stats(self) -> ProcessStats:
        """RSS, peak RSS and CPU time of the child (Linux ``/proc``)."""
        if self.process is None:
            raise RuntimeError("the bot process is not running")
        pid = self.process.pid
        fields: dict[str, int] = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in {"VmRSS", "VmHWM"}:
                fields[name] = int(value.split()[0]) * 1024
        # /proc/<pid>/stat: the command may contain spaces; fields resume after ")".
        stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        cpu = (int(stat[11]) + int(stat[12])) / _TICKS  # utime + stime
        return ProcessStats(rss=fields["VmRSS"], peak_rss=fields["VmHWM"], cpu=cpu)
