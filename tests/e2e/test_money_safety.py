"""Money at the edges: a kill -9 around the post, a hung API, a member's next job.

The crash tests run the bot as a real process (``python -m bot``), kill it with
SIGKILL while Discord holds the result post (stored, or not yet), then start
the bot again and read its ledger.
"""

from __future__ import annotations

import math
import signal
from pathlib import Path

import pytest

from bot.credits import CreditLedger, JobStatus
from bot.storage import open_storage
from tests.e2e.conftest import World, is_result
from tests.e2e.process import bot_environment, start_bot

pytestmark = pytest.mark.timeout(90)

RESULT_POST = r"^/channels/\d+/messages$"


async def _kill_during_the_post(world: World, tmp_path: Path, *, stored: bool) -> Path:
    """Run one /imagine in a bot process and kill it while Discord holds its result post."""
    database = tmp_path / "bot.db"
    held = world.discord.delay_next("POST", RESULT_POST, math.inf, after=stored)
    bot = await start_bot(bot_environment(world.discord, world.segmind, database), tmp_path)
    try:
        await world.discord.wait_for_sessions(1, timeout=30)
        await world.imagine({"prompt": "a lighthouse"}, user=world.discord.member)
        await world.discord.wait_for(lambda: held.holding == 1, timeout=30, what="the post")
        bot.signal(signal.SIGKILL)
        assert await bot.wait() == -signal.SIGKILL
    finally:
        await bot.stop()
    if not stored:
        # The held request dies with the connection: Discord never stores it.
        world.discord.fail_next("POST", RESULT_POST, 500)
    held.release()
    storage = await open_storage(f"sqlite:///{database}")
    try:
        [job] = await CreditLedger(storage, default_credits=100).active_jobs()
    finally:
        await storage.close()
    assert job.delivering  # recorded before the post
    return database


async def test_a_kill_after_the_post_commits_the_job_at_restart(
    world: World, tmp_path: Path
) -> None:
    # Discord stored the result, the bot never heard back: the members have the image.
    database = await _kill_during_the_post(world, tmp_path, stored=True)
    [posted] = world.results()
    async with world.running(database_url=f"sqlite:///{database}") as restarted:
        await restarted.wait_recovered()
        record = await restarted.ledger.get_job(1)
        assert record is not None
        assert (record.status, record.images_delivered) == (JobStatus.SUCCEEDED, 1)
        assert record.message_id == posted.id
        assert await restarted.ledger.balance(world.discord.guild.id) == 99
        assert await restarted.ledger.verify()
    messages = world.discord.channel_messages(world.discord.channel)
    assert not any("interrupted" in m.content for m in messages)
    assert world.results() == [posted]
    world.discord.assert_no_pings()


async def test_a_kill_before_the_post_was_stored_refunds_and_tells_the_member(
    world: World, tmp_path: Path
) -> None:
    database = await _kill_during_the_post(world, tmp_path, stored=False)
    async with world.running(database_url=f"sqlite:///{database}") as restarted:
        await restarted.wait_recovered()
        record = await restarted.ledger.get_job(1)
        assert record is not None
        assert record.status is JobStatus.REFUNDED
        assert await restarted.ledger.balance(world.discord.guild.id) == 100
        assert await restarted.ledger.verify()
    [notice] = [
        m
        for m in world.discord.channel_messages(world.discord.channel)
        if "interrupted by a restart" in m.content
    ]
    assert notice.content.startswith(f"<@{world.discord.member.id}>")
    assert "refunded" in notice.content
    assert not any(is_result(m) for m in world.discord.channel_messages(world.discord.channel))
    world.discord.assert_no_pings()


async def test_a_hung_api_is_answered_once_with_a_refund_and_not_retried(world: World) -> None:
    world.segmind.hang(times=5)
    async with world.running(segmind_timeout=1.0) as bot:
        call = await world.imagine({"prompt": "a slow lighthouse"})
        # SEGMIND_TIMEOUT + 10 s at most; the answer comes after the one timeout.
        told = await world.reply(call, "did not answer", timeout=1.0 + 10)
        assert await bot.ledger.balance(world.discord.guild.id) == 100
    assert "not retried, because the call may have been charged" in told.content
    assert "1 credit refunded" in told.content
    assert world.segmind.calls == 1  # the call that may be billed was sent once
