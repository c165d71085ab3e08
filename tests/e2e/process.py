"""Run the bot as a real process (``python -m bot``) against the fakes, as an operator would.

The fakes run in the test's event loop, so the test keeps awaiting while the bot
process talks to them; the bot's stderr is collected line by line so logs can be
checked (and the pipe never fills up).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_segmind import FakeSegmind

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class BotProcess:
    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.lines.append(line.decode(errors="replace").rstrip("\n"))

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    async def wait(self, timeout: float = 30.0) -> int:
        code = await asyncio.wait_for(self.process.wait(), timeout)
        if self.reader is not None:
            await asyncio.wait_for(self.reader, timeout)
        return code

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.wait()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def bot_environment(
    discord: FakeDiscord, segmind: FakeSegmind, database: Path | str, **extra: str
) -> dict[str, str]:
    """The bot's environment; ``database`` is a SQLite file, or a ``DATABASE_URL`` string."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "DISCORD_TOKEN": discord.token,
        "SEGMIND_API_KEY": segmind.api_key,
        "SEGMIND_BASE_URL": segmind.url,
        "DATABASE_URL": database if isinstance(database, str) else f"sqlite:///{database}",
        "DISCORD_API_URL": discord.api_url,
        "DISCORD_GATEWAY_URL": discord.gateway_url,
        "GUILD_READY_TIMEOUT": "0.05",
        "LOG_LEVEL": "INFO",
    }
    env.update(extra)
    return env


async def start_bot(env: dict[str, str], cwd: Path) -> BotProcess:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    bot = BotProcess(process)
    bot.reader = asyncio.get_running_loop().create_task(bot._read())
    return bot
