"""Operations: graceful shutdown, crash recovery, health and metrics, JSON logs, sharding.

The shutdown and crash tests run the bot as a real process (``python -m bot``)
and send it real signals, then read the ledger back from its database (SQLite
and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import socket
from pathlib import Path

import aiohttp
import pytest

from bot.credits import CreditLedger
from bot.storage import open_storage
from tests.e2e.conftest import World
from tests.e2e.process import bot_environment, start_bot

pytestmark = pytest.mark.timeout(90)


async def read_ledger(database: str) -> tuple[CreditLedger, object]:
    storage = await open_storage(database)
    return CreditLedger(storage, default_credits=100), storage


async def test_sigterm_lets_a_running_job_finish_and_exits_0(world: World, tmp_path: Path) -> None:
    database = world.settings.database_url
    world.segmind.latency = 1.0
    env = bot_environment(
        world.discord, world.segmind, database, SHUTDOWN_GRACE_SECONDS="20", LOG_FORMAT="json"
    )
    bot = await start_bot(env, tmp_path)
    try:
        await world.discord.wait_for_sessions(1, timeout=30)
        await world.imagine({"prompt": "finish me"})
        await world.segmind.wait_for_requests(1, timeout=10)
        bot.signal(signal.SIGTERM)
        result = await world.result(timeout=20)
        assert await bot.wait() == 0
    finally:
        await bot.stop()
    assert result.attachments
    ledger, storage = await read_ledger(database)
    try:
        assert await ledger.balance(world.discord.guild.id) == 99
        assert await ledger.active_jobs() == []
        assert await ledger.verify()
    finally:
        await storage.close()  # type: ignore[attr-defined]
    # LOG_FORMAT=json: every line is a JSON object, and no secret is in any of them.
    assert bot.lines
    for line in bot.lines:
        record = json.loads(line)
        assert {"time", "level", "logger", "message"} <= record.keys()
    assert world.discord.token not in bot.output
    assert world.segmind.api_key not in bot.output
    assert any(json.loads(line).get("job_id") == 1 for line in bot.lines)


async def test_sigterm_refunds_what_cannot_finish_in_the_grace_period(
    world: World, tmp_path: Path
) -> None:
    database = world.settings.database_url
    world.segmind.hang(times=2)
    env = bot_environment(world.discord, world.segmind, database, SHUTDOWN_GRACE_SECONDS="0.5")
    bot = await start_bot(env, tmp_path)
    try:
        await world.discord.wait_for_sessions(1, timeout=30)
        call = await world.imagine({"prompt": "too slow", "samples": 2})
        await world.segmind.wait_for_requests(2, timeout=10)
        bot.signal(signal.SIGTERM)
        assert await bot.wait() == 0
    finally:
        await bot.stop()
    told = await world.reply(call, "restarted")
    assert "2 credits refunded" in told.content
    ledger, storage = await read_ledger(database)
    try:
        assert await ledger.balance(world.discord.guild.id) == 100
        assert await ledger.verify()
    finally:
        await storage.close()  # type: ignore[attr-defined]


async def test_kill_9_then_restart_refunds_exactly_once_and_tells_the_requester(
    world: World, tmp_path: Path
) -> None:
    database = world.settings.database_url
    world.segmind.hang(times=10)
    env = bot_environment(world.discord, world.segmind, database)
    bot = await start_bot(env, tmp_path)
    try:
        await world.discord.wait_for_sessions(1, timeout=30)
        await world.imagine({"prompt": "crash one", "samples": 2}, user=world.discord.member)
        await world.imagine({"prompt": "crash two"}, user=world.discord.moderator)
        await world.segmind.wait_for_requests(3, timeout=10)
        bot.signal(signal.SIGKILL)
        assert await bot.wait() == -signal.SIGKILL
    finally:
        await bot.stop()
    ledger, storage = await read_ledger(database)
    try:
        assert await ledger.balance(world.discord.guild.id) == 97  # reserved, never settled
        assert len(await ledger.active_jobs()) == 2
    finally:
        await storage.close()  # type: ignore[attr-defined]
    world.segmind.reset()
    # The next start refunds both jobs and tells each requester, pinging nobody.
    async with world.running() as restarted:

        def restart_notices() -> list[object] | None:
            found = [
                m
                for m in world.discord.channel_messages(world.discord.channel)
                if "interrupted by a restart" in m.content
            ]
            return found if len(found) == 2 else None

        notices = await world.discord.wait_for(restart_notices, what="two restart notices")
        assert await restarted.ledger.balance(world.discord.guild.id) == 100
        assert await restarted.ledger.active_jobs() == []
        assert await restarted.ledger.verify()
    assert {f"<@{world.discord.member.id}>", f"<@{world.discord.moderator.id}>"} == {
        m.content.split()[0]  # type: ignore[attr-defined]
        for m in notices
    }
    world.discord.assert_no_pings()
    # A second restart refunds nothing more.
    async with world.running() as again:
        assert await again.ledger.balance(world.discord.guild.id) == 100
        assert await again.ledger.verify()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_healthz_and_metrics(world: World) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with world.running(health_port=port) as bot, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
            body = await response.json()
        assert body["gateway"] == "connected"
        assert body["database"] == "ok"
        await world.imagine({"prompt": "count me"})
        await world.result()
        await bot.jobs.wait_idle()
        async with http.get(f"{base}/metrics") as response:
            metrics = await response.text()
        assert 'imagine_jobs_total{outcome="succeeded"} 1.0' in metrics
        assert "imagine_images_generated_total 1.0" in metrics
        assert "imagine_credits_spent_total 1.0" in metrics
        assert "imagine_segmind_request_seconds_count 1.0" in metrics
        assert 'imagine_interactions_total{type="command"} 1.0' in metrics
        assert "imagine_queue_depth 0.0" in metrics
        # The gateway goes down (and stays down): health turns 503.
        await world.discord.drop_gateway(refuse_for=math.inf)
        await world.discord.wait_for(lambda: not world.discord.connected_sessions, what="the drop")

        async def unhealthy() -> dict[str, object]:
            while True:
                async with http.get(f"{base}/healthz") as response:
                    if response.status == 503:
                        return dict(await response.json())
                await asyncio.sleep(0.05)  # polling an HTTP endpoint, bounded by wait_for

        body = await asyncio.wait_for(unhealthy(), 10)
        assert body["gateway"] == "disconnected"
        world.discord.allow_gateway()
        await world.discord.wait_for_sessions(1, timeout=30)


async def test_api_errors_are_counted(world: World) -> None:
    port = free_port()
    world.segmind.fail(401)
    async with world.running(health_port=port) as bot, aiohttp.ClientSession() as http:
        call = await world.imagine({"prompt": "denied"})
        await world.reply(call, "refunded")
        await bot.jobs.wait_idle()
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            metrics = await response.text()
    assert 'imagine_segmind_errors_total{kind="unauthorized",status="401"} 1.0' in metrics
    assert 'imagine_jobs_total{outcome="failed"} 1.0' in metrics
    assert "imagine_credits_refunded_total 1.0" in metrics


async def test_new_commands_during_shutdown_are_refused_without_charge(world: World) -> None:
    world.segmind.hang(times=1)
    async with world.running(shutdown_grace_seconds=5, segmind_timeout=5) as bot:
        await world.imagine({"prompt": "in flight"}, user=world.discord.member)
        await world.segmind.wait_for_requests(1)
        closing = asyncio.get_running_loop().create_task(bot.jobs.shutdown(5))
        late = await world.imagine({"prompt": "too late"}, user=world.discord.moderator)
        reply = await world.reply(late, "restarting")
        assert "Nothing was charged" in reply.content
        closing.cancel()
        await asyncio.gather(closing, return_exceptions=True)
    assert world.segmind.calls == 1


async def test_two_shards_connect_and_serve(world: World) -> None:
    async with world.running(shard_count=2, shard_ids=[0, 1]) as bot:
        await world.discord.wait_for_sessions(2)
        assert sorted(bot.shards) == [0, 1]
        await world.imagine({"prompt": "sharded"})
        await world.result()
        shards = sorted((s.shard_id, s.shard_count) for s in world.discord.connected_sessions)
    assert shards == [(0, 2), (1, 2)]
