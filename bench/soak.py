"""Soak run: the real bot process through the fakes, with API faults and kill -9 restarts.

``python -m bench.soak`` runs ``python -m bot`` (tests/e2e/process.py) against the
fake Discord and a fake Segmind that misbehaves on a share of its calls (429,
500, 502, 504, a hang, a dropped connection), members across several guilds
sending ``/imagine``, and kills the bot with SIGKILL at random moments, starting
it again each time. At the end the bot is stopped cleanly and the money is audited
from its database and the channels:

* for every guild ``sum(ledger) == balance`` and the balance is >= 0;
* every job is settled exactly once (none left open);
* no job is both delivered (a result message in a channel) and refunded;
* images delivered equal credits committed (per unit), job by job.

It prints its figures and, with ``--write``, puts them in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.database import throwaway_database
from bot.credits import CreditLedger, JobRecord, JobStatus
from bot.storage import open_storage
from tests.e2e.process import BotProcess, bot_environment, start_bot
from tests.fakes.fake_discord import FakeChannel, FakeDiscord, FakeMember
from tests.fakes.fake_segmind import FakeSegmind

README = Path(__file__).with_name("README.md")
SECTIONS = {
    "sqlite": "## Soak: money under faults and kill -9",
    "postgresql": "## Soak on PostgreSQL: two processes, faults and kill -9",
}
CREDITS = 10**9
LEGEND = (
    "*refused*: commands that reserved nothing (the member's open-job cap, or sent while the "
    "bot was being restarted). *refunded* includes *interrupted*: refunded at a restart "
    "(queued or running when killed, or being posted and not found in the channel). *lost*: "
    "jobs still open at the end. *delivered twice* and *delivered and refunded* compare the "
    "result messages in the channels with the jobs table; *images vs credits mismatches* "
    "counts jobs whose posted images differ from the credits committed for them. Faults not "
    "retried (500, 504, a hang, a drop: two thirds of the 20 %) are most of the refunds."
)
_DATABASES = {"sqlite": "SQLite, one process", "postgresql": "PostgreSQL, two processes"}


@dataclass(frozen=True)
class SoakConfig:
    jobs: int = 10_000
    kills: int = 3
    fault_rate: float = 0.2
    guilds: int = 4
    members: int = 5  # per guild
    rate: float = 40.0  # /imagine per second
    latency: float = 0.02  # the fake API's seconds per call
    concurrent: int = 16
    seed: int = 1
    database: str = "sqlite"  # or "postgresql": two processes (shards 0 and 1 of 2)


@dataclass(frozen=True)
class SoakReport:
    submitted: int
    delivered: int
    refused: int
    refunded: int
    interrupted: int
    lost: int
    delivered_twice: int
    delivered_and_refunded: int
    images_vs_credits_mismatches: int
    ledger_ok: bool
    seconds: float
    kills: int
    api_calls: int

    @property
    def clean(self) -> bool:
        return (
            self.ledger_ok
            and self.lost == 0
            and self.delivered_twice == 0
            and self.delivered_and_refunded == 0
            and self.images_vs_credits_mismatches == 0
        )


def _result_job(payload: dict[str, Any]) -> int | None:
    for row in payload.get("components") or []:
        for item in row.get("components") or []:
            custom_id = str(item.get("custom_id") or "")
            if custom_id.startswith("imagine:") and custom_id.rsplit(":", 1)[-1].isdigit():
                return int(custom_id.rsplit(":", 1)[-1])
    return None


def _posted_images(discord: FakeDiscord, channels: list[FakeChannel]) -> dict[int, list[int]]:
    """Job id -> attachments of each result message (continuations added to theirs)."""
    posted: dict[int, list[int]] = {}
    owner_of: dict[int, tuple[int, int]] = {}
    for channel in channels:
        for message in discord.channel_messages(channel):
            if int(message.payload["author"]["id"]) != discord.bot_user.id:
                continue
            count = len(message.payload.get("attachments") or [])
            job_id = _result_job(message.payload)
            if job_id is not None:
                posted.setdefault(job_id, []).append(count)
                owner_of[message.id] = (job_id, len(posted[job_id]) - 1)
                continue
            reference = (message.payload.get("message_reference") or {}).get("message_id")
            if reference is not None and int(reference) in owner_of:
                job_id, index = owner_of[int(reference)]
                posted[job_id][index] += count
    return posted


async def _audit(
    url: str, discord: FakeDiscord, channels: list[FakeChannel], submitted: int
) -> dict[str, Any]:
    storage = await open_storage(url)
    try:
        ledger = CreditLedger(storage, default_credits=CREDITS)
        jobs: list[JobRecord] = await storage.list_jobs(statuses=set(JobStatus))
        ledger_ok = await ledger.verify()
        for guild_id in {job.guild_id for job in jobs}:
            ledger_ok = ledger_ok and (await storage.get_balance(guild_id) or 0) >= 0
    finally:
        await storage.close()
    posted = _posted_images(discord, channels)
    refunded = {job.id for job in jobs if job.status is JobStatus.REFUNDED}
    mismatches = 0
    for job in jobs:
        shown = sum(posted.get(job.id, [])) if job.status is JobStatus.SUCCEEDED else 0
        if shown * job.units_per_image != job.images_delivered * job.units_per_image:
            mismatches += 1
    return {
        "submitted": submitted,
        "delivered": sum(job.status is JobStatus.SUCCEEDED for job in jobs),
        "refused": submitted - len(jobs),
        "refunded": len(refunded),
        "interrupted": sum("interrupted" in (job.error or "") for job in jobs),
        "lost": sum(job.status.is_open for job in jobs),
        "delivered_twice": sum(len(counts) > 1 for counts in posted.values()),
        "delivered_and_refunded": len(refunded & posted.keys()),
        "images_vs_credits_mismatches": mismatches,
        "ledger_ok": ledger_ok,
    }


def _world(discord: FakeDiscord, config: SoakConfig) -> list[tuple[FakeMember, FakeChannel]]:
    guilds = [discord.guild] + [
        discord.add_guild(f"soak-{n}", shard=(n % 2, 2)) for n in range(1, config.guilds)
    ]
    seats: list[tuple[FakeMember, FakeChannel]] = []
    for guild in guilds:
        channel = guild.text_channels()[0]
        seats += [(discord.add_member(guild, f"soak-{n}"), channel) for n in range(config.members)]
    return seats


async def run_soak(config: SoakConfig, folder: Path, url: str | None = None) -> SoakReport:
    """The soak on ``url`` (a database of ``config.database``), or on a throwaway one."""
    if url is not None:
        return await _run(config, folder, url)
    with throwaway_database(config.database, folder) as fresh:
        return await _run(config, folder, fresh)


async def _run(config: SoakConfig, folder: Path, url: str) -> SoakReport:
    rng = random.Random(config.seed)
    shards = [None] if config.database == "sqlite" else [0, 1]
    async with (
        FakeDiscord(validate=True, recommended_shards=len(shards)) as discord,
        FakeSegmind(latency=config.latency) as segmind,
    ):
        seats = _world(discord, config)
        channels = list({channel.id: channel for _, channel in seats}.values())
        segmind.inject_faults(config.fault_rate, seed=config.seed)
        envs = [_environment(discord, segmind, folder, url, config, shard) for shard in shards]
        kill_at = set(rng.sample(range(1, config.jobs), min(config.kills, config.jobs - 1)))
        started = time.monotonic()
        bots = [await _start(env, discord) for env in envs]
        kills = 0
        try:
            for number in range(config.jobs):
                if number in kill_at:
                    # Anywhere in a job's life: the next start must settle it.
                    await asyncio.sleep(rng.uniform(0, 0.5))
                    victim = rng.randrange(len(bots))
                    bots[victim].signal(signal.SIGKILL)
                    await bots[victim].wait()
                    kills += 1
                    bots[victim] = await _start(envs[victim], discord)
                member, channel = seats[number % len(seats)]
                await discord.slash(
                    "imagine", {"prompt": f"soak {number}"}, user=member, channel=channel
                )
                await asyncio.sleep(1 / config.rate)
            # Let the last jobs end (a hang lasts SEGMIND_TIMEOUT), then stop cleanly.
            await asyncio.sleep(5)
            for bot in bots:
                bot.signal(signal.SIGTERM)
            for bot in bots:
                await bot.wait(timeout=60)
        finally:
            for bot in bots:
                await bot.stop()
        seconds = time.monotonic() - started
        figures = await _audit(url, discord, channels, config.jobs)
        return SoakReport(**figures, seconds=seconds, kills=kills, api_calls=segmind.calls)


def _environment(
    discord: FakeDiscord,
    segmind: FakeSegmind,
    folder: Path,
    url: str,
    config: SoakConfig,
    shard: int | None,
) -> dict[str, str]:
    shard_folder = folder / f"shard-{shard}"
    shard_folder.mkdir(exist_ok=True)
    env = bot_environment(
        discord,
        segmind,
        folder / "unused.db",
        DATABASE_URL=url,
        SEGMIND_TIMEOUT="1",
        SEGMIND_RETRY_BUDGET="5",
        MAX_CONCURRENT_JOBS=str(config.concurrent),
        DEFAULT_GUILD_CREDITS=str(CREDITS),
        LOG_LEVEL="ERROR",
        SOAK_FOLDER=str(shard_folder),
    )
    if shard is not None:
        env.update(SHARD_COUNT="2", SHARD_IDS=str(shard))
    return env


async def _start(env: dict[str, str], discord: FakeDiscord) -> BotProcess:
    """Start a bot process and wait for its new gateway session (an old one may linger)."""
    before = len(discord.gateway.sessions)
    bot = await start_bot(env, Path(env["SOAK_FOLDER"]))
    await discord.wait_for(
        lambda: len(discord.gateway.sessions) > before and discord.gateway.sessions[-1].connected,
        timeout=60,
        what="the bot connected",
    )
    return bot


def render(config: SoakConfig, report: SoakReport) -> str:
    rows = "\n".join(
        f"| {key.replace('_', ' ')} | {value:.0f} s |"
        if key == "seconds"
        else f"| {key.replace('_', ' ')} | {value} |"
        for key, value in asdict(report).items()
    )
    return (
        f"{SECTIONS[config.database]}\n\n"
        f"`python -m bench.soak --jobs {config.jobs} --kills {config.kills}"
        f"{'' if config.database == 'sqlite' else ' --database ' + config.database}` "
        f"({config.guilds} guilds × {config.members} members, "
        f"{config.fault_rate:.0%} API faults, fake API latency {config.latency * 1000:.0f} ms, "
        f"MAX_CONCURRENT_JOBS={config.concurrent}, {config.rate:g} /imagine per second, "
        f"{_DATABASES[config.database]}). "
        f"Audit: **{'clean' if report.clean else 'FAILED'}**.\n\n"
        f"| figure | value |\n|---|---|\n{rows}\n\n{LEGEND}\n"
    )


def write_readme(text: str, section: str, path: Path = README) -> None:
    """Put ``text`` in place of ``section`` (up to the next ``## ``), or at the end."""
    current = path.read_text()
    if section in current:
        head, _, tail = current.partition(section)
        rest = tail.split("\n## ", 1)
        current = head + text + ("\n## " + rest[1] if len(rest) > 1 else "")
    else:
        current = current.rstrip("\n") + "\n\n" + text
    path.write_text(current)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    defaults = SoakConfig()
    for name, value in asdict(defaults).items():
        choices = list(SECTIONS) if name == "database" else None
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=type(value), default=value, choices=choices
        )
    parser.add_argument("--write", action="store_true", help="put the figures in bench/README.md")
    options = vars(parser.parse_args(argv))
    write = options.pop("write")
    config = SoakConfig(**options)
    with tempfile.TemporaryDirectory(prefix="soak-") as folder:
        report = asyncio.run(run_soak(config, Path(folder)))
    text = render(config, report)
    print(text)
    if write:
        write_readme(text, SECTIONS[config.database])
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
