"""Two bot processes (shards 0 and 1 of 2) on one PostgreSQL database and one fake Discord.

The guild under test is given to both shards by the fake, so commands reach both
processes and they spend from one budget; real Discord sends a guild's
interactions to one shard, but the guarantees tested here (one budget, one
concurrency limit, one 429 wait, per-member caps, crash recovery per process) are the same.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.coordination import RATE_KEY
from bot.credits import CreditLedger, JobStatus
from bot.storage import open_storage
from tests.e2e.conftest import World
from tests.e2e.process import BotProcess, bot_environment, start_bot

pytestmark = [pytest.mark.timeout(120), pytest.mark.bots_on_postgresql]

# A command's private reply once it is settled: done, failed, or refused up front.
FINAL_MARKS = ("✅ Done!", "❌", "left; this image costs", "in progress")


async def start_shard(
    world: World, tmp_path: Path, database_url: str, shard: int, **extra: str
) -> BotProcess:
    """Shard ``shard`` of 2 as a process of its own (started again after a crash too)."""
    env = bot_environment(
        world.discord,
        world.segmind,
        tmp_path / "unused.db",
        DATABASE_URL=database_url,
        SHARD_COUNT="2",
        SHARD_IDS=str(shard),
        SHUTDOWN_GRACE_SECONDS="1",
        **extra,
    )
    folder = tmp_path / f"shard{shard}"
    folder.mkdir(exist_ok=True)
    return await start_bot(env, folder)


async def start_shards(
    world: World, tmp_path: Path, database_url: str, **extra: str
) -> list[BotProcess]:
    processes = [await start_shard(world, tmp_path, database_url, n, **extra) for n in (0, 1)]
    await world.discord.wait_for_sessions(2, timeout=60)
    return processes


async def stop_all(processes: list[BotProcess]) -> None:
    for process in processes:
        if process.process.returncode is None:
            process.signal(signal.SIGTERM)
    for process in processes:
        try:
            await process.wait(timeout=30)
        finally:
            await process.stop()


@pytest.fixture
async def ledger(pg_url: str) -> AsyncIterator[CreditLedger]:
    storage = await open_storage(pg_url)
    yield CreditLedger(storage, default_credits=100)
    await storage.close()


async def test_two_processes_share_one_budget_and_one_concurrency_limit(
    world: World, tmp_path: Path, pg_url: str, ledger: CreditLedger
) -> None:
    discord = world.discord
    discord.guild.on_every_shard = True
    world.segmind.latency = 0.2
    members = [discord.add_member(discord.guild, f"member{i}") for i in range(10)]
    await ledger.set_balance(discord.guild.id, 10, actor_id=None)
    processes = await start_shards(
        world, tmp_path, pg_url, MAX_CONCURRENT_JOBS="3", MAX_QUEUED_PER_USER="3"
    )
    try:
        calls = await asyncio.gather(
            *(
                discord.slash(
                    "imagine", {"prompt": f"shared {i}"}, user=members[i % 10], shard=i % 2
                )
                for i in range(30)
            )
        )
        for call in calls:
            await discord.wait_for_followup(
                call, lambda m: any(mark in m.content for mark in FINAL_MARKS), timeout=60
            )
        await world.discord.wait_for(
            lambda: len(world.results()) == 10 or None, timeout=60, what="ten results"
        )
    finally:
        await stop_all(processes)
    assert all(call.acknowledged for call in calls)
    assert world.segmind.billed_calls == 10
    assert world.segmind.peak_in_flight <= 3  # MAX_CONCURRENT_JOBS for the whole bot
    assert await ledger.balance(discord.guild.id) == 0
    assert await ledger.verify()
    # Both processes did some of the work.
    assert {call.payload["id"] for call in calls}
    assert sum("Done!" in m.content for c in calls for m in c.messages) == 10


async def test_kill_9_of_one_process_refunds_only_its_own_jobs(
    world: World, tmp_path: Path, pg_url: str, ledger: CreditLedger
) -> None:
    discord = world.discord
    discord.guild.on_every_shard = True
    world.segmind.hang(times=2)
    processes = await start_shards(world, tmp_path, pg_url)
    try:
        await discord.slash("imagine", {"prompt": "on shard 0"}, user=discord.member, shard=0)
        await discord.slash("imagine", {"prompt": "on shard 1"}, user=discord.moderator, shard=1)
        await world.segmind.wait_for_requests(2, timeout=30)
        processes[0].signal(signal.SIGKILL)
        await processes[0].wait()
        # Shard 0 comes back under a new name; its dead run's lock is gone, so it
        # refunds that run's job at once.
        processes[0] = await start_shard(world, tmp_path, pg_url, 0)
        await world.discord.wait_for(
            lambda: (
                any(
                    "interrupted by a restart" in m.content
                    for m in discord.channel_messages(discord.channel)
                )
                or None
            ),
            timeout=60,
            what="the restart notice",
        )
        jobs = {job.params["prompt"]: job for job in await ledger.active_jobs()}
        assert set(jobs) == {"on shard 1"}  # shard 1's job is still running, untouched
        assert jobs["on shard 1"].status is JobStatus.RUNNING
        assert await ledger.balance(discord.guild.id) == 99
    finally:
        await stop_all(processes)
    # Shard 1 shut down cleanly: its hung job was refunded by its own shutdown.
    assert await ledger.balance(discord.guild.id) == 100
    assert await ledger.active_jobs() == []
    assert await ledger.verify()


async def test_kill_9_of_the_process_holding_every_api_slot_stalls_nobody(
    world: World, tmp_path: Path, pg_url: str, ledger: CreditLedger
) -> None:
    discord = world.discord
    discord.guild.on_every_shard = True
    members = [discord.add_member(discord.guild, f"member{i}") for i in range(4)]
    world.segmind.hang(times=2)
    processes = await start_shards(world, tmp_path, pg_url, MAX_CONCURRENT_JOBS="2")
    try:
        # Shard 0 holds both API slots of the whole bot, its calls in flight.
        for member in members[:2]:
            await discord.slash("imagine", {"prompt": "stuck"}, user=member, shard=0)
        await world.segmind.wait_for_requests(2, timeout=30)
        processes[0].signal(signal.SIGKILL)
        await processes[0].wait()

        # Shard 1 gets the slots at once: its job is delivered within 10 s.
        call = await discord.slash("imagine", {"prompt": "after"}, user=members[2], shard=1)
        await discord.wait_for_followup(call, lambda m: "Done!" in m.content, timeout=10)

        # Shard 0 restarts under a new name, refunds its dead run's jobs and serves.
        processes[0] = await start_shard(world, tmp_path, pg_url, 0, MAX_CONCURRENT_JOBS="2")
        await world.discord.wait_for(
            lambda: (
                sum(
                    "interrupted by a restart" in m.content
                    for m in discord.channel_messages(discord.channel)
                )
                == 2
                or None
            ),
            timeout=60,
            what="the two restart notices",
        )
        call = await discord.slash("imagine", {"prompt": "back"}, user=members[3], shard=0)
        await discord.wait_for_followup(call, lambda m: "Done!" in m.content, timeout=10)
    finally:
        await stop_all(processes)
    assert world.segmind.billed_calls == 2
    assert await ledger.balance(discord.guild.id) == 100 - 2
    assert await ledger.active_jobs() == []
    assert await ledger.verify()


async def test_a_429_heard_by_one_process_holds_the_other(
    world: World, tmp_path: Path, pg_url: str, ledger: CreditLedger
) -> None:
    discord = world.discord
    discord.guild.on_every_shard = True
    segmind = world.segmind
    segmind.fail(429, headers={"Retry-After": "3"})
    processes = await start_shards(world, tmp_path, pg_url)
    try:
        await discord.slash("imagine", {"prompt": "heard"}, user=discord.member, shard=0)
        await segmind.wait_for_requests(1, timeout=30)
        storage = await open_storage(pg_url)
        try:
            async with asyncio.timeout(30):
                # Shard 0 records the API's wait in the database; nothing else signals it.
                while not await storage.rate_held_for(RATE_KEY):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        finally:
            await storage.close()
        await discord.slash("imagine", {"prompt": "held"}, user=discord.moderator, shard=1)
        await world.discord.wait_for(
            lambda: len(world.results()) == 2 or None, timeout=60, what="both results"
        )
    finally:
        await stop_all(processes)
    first, *after = segmind.requests
    assert first.status == 429 and len(after) == 2
    # Neither process called the API again before the 3 s it asked for were over.
    assert all(request.received_at - first.received_at > 2.5 for request in after)
    assert await ledger.verify()
