"""Money at the edges: a kill -9 around the post, a hung API, a member's next job.

The crash tests run the bot as a real process (``python -m bot``), kill it with
SIGKILL while Discord holds the result post (stored, or not yet), then start
the bot again and read its ledger. They, and recovery, run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import math
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.credits import CreditLedger, JobStatus, NewJob
from bot.storage import open_storage
from tests.e2e.conftest import World, embed_field, is_result
from tests.e2e.process import bot_environment, start_bot
from tests.fakes.discord_state import FileRecord, StoredMessage

pytestmark = pytest.mark.timeout(90)

RESULT_POST = r"^/channels/\d+/messages$"


async def _kill_during_the_post(world: World, tmp_path: Path, *, stored: bool) -> None:
    """Run one /imagine in a bot process and kill it while Discord holds its result post."""
    database = world.settings.database_url
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
    storage = await open_storage(database)
    try:
        [job] = await CreditLedger(storage, default_credits=100).active_jobs()
    finally:
        await storage.close()
    assert job.delivering  # recorded before the post


async def test_a_kill_after_the_post_commits_the_job_at_restart(
    world: World, tmp_path: Path
) -> None:
    # Discord stored the result, the bot never heard back: the members have the image.
    await _kill_during_the_post(world, tmp_path, stored=True)
    [posted] = world.results()
    async with world.running() as restarted:
        await restarted.recovery.wait_settled()
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
    await _kill_during_the_post(world, tmp_path, stored=False)
    async with world.running() as restarted:
        await restarted.recovery.wait_settled()
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


async def test_a_retried_post_is_posted_once(world: World) -> None:
    # Discord stores the result but answers 502; discord.py sends the same request
    # again, and its nonce (enforce_nonce) makes Discord return the first message.
    world.discord.fail_next("POST", RESULT_POST, 502, after=True)
    async with world.running() as bot:
        await world.imagine({"prompt": "once only"})
        result = await world.result()
        await bot.jobs.wait_idle()
        record = await bot.ledger.get_job(1)
        assert record is not None and record.status is JobStatus.SUCCEEDED
        assert record.message_id == result.id
    posts = world.discord.requests_to("POST", RESULT_POST)
    assert [post.status for post in posts] == [502, 200]
    assert {post.message_body["nonce"] for post in posts if post.message_body} == {"im1p0"}
    assert world.results() == [result]


def _bot_post(world: World, body: dict[str, Any], images: int) -> StoredMessage:
    """A message the bot posted before it died (Discord has it; the bot never heard back)."""
    files = [
        FileRecord(f"files[{n}]", f"image-{n}.png", "image/png", b"\x89PNG fake")
        for n in range(images)
    ]
    return world.discord.rest.messages.create_message(
        world.discord.channel, body, files, message_type=0
    )


async def test_recovery_counts_every_part_and_refunds_a_vanished_channel(world: World) -> None:
    storage = await open_storage(world.settings.database_url)
    try:
        ledger = CreditLedger(storage, default_credits=100)
        jobs = []
        for channel_id in (world.discord.channel.id, 4242424242424242):
            job = await ledger.reserve(
                NewJob(
                    guild_id=world.discord.guild.id,
                    channel_id=channel_id,
                    user_id=world.discord.member.id,
                    params={"prompt": "three foxes"},
                    units_per_image=1,
                    images_total=3,
                )
            )
            await ledger.mark_running(job.id)
            jobs.append((await ledger.mark_delivering(job)).job)
    finally:
        await storage.close()
    posted, vanished = jobs
    buttons = [{"type": 1, "components": [button(f"imagine:reroll:{posted.id}")]}]
    _bot_post(world, {"content": "another job", "components": []}, 1)
    main = _bot_post(world, {"content": "result", "components": buttons}, 2)
    reference = {"message_id": str(main.id), "channel_id": str(world.discord.channel.id)}
    _bot_post(world, {"content": "continued", "message_reference": reference}, 1)
    async with world.running() as bot:
        await bot.recovery.wait_settled()
        done = await bot.ledger.get_job(posted.id)
        gone = await bot.ledger.get_job(vanished.id)
        assert done is not None and gone is not None
        assert (done.status, done.images_delivered, done.message_id) == (
            JobStatus.SUCCEEDED,
            3,
            main.id,
        )
        assert gone.status is JobStatus.REFUNDED
        assert await bot.ledger.balance(world.discord.guild.id) == 97
        assert await bot.ledger.verify()


def button(custom_id: str) -> dict[str, Any]:
    return {"type": 2, "style": 2, "label": "Reroll", "custom_id": custom_id}


async def test_a_connection_lost_on_a_later_part_keeps_what_was_posted(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Part 1 (with its buttons) is in the channel when part 2's connection drops: the
    # member keeps it and pays for it, the rest is refunded, and the status line says so.
    first = world.discord.delay_next("POST", RESULT_POST, math.inf, after=True)
    async with world.running() as bot:
        # One image per message (discord.py's upload limit is never under 10 MiB: these
        # images would fit one), in the module the bot loaded (extensions are re-imported).
        delivery = sys.modules["cogs.imagine._delivery"]
        monkeypatch.setattr(delivery, "pack_files", lambda files, limit: [[f] for f in files])
        call = await world.imagine(
            {"prompt": "big", "samples": 3, "img_width": 1024, "img_height": 1024}
        )
        await world.discord.wait_for(lambda: first.holding == 1, timeout=30, what="part 1")
        world.discord.drop_next("POST", RESULT_POST)
        first.release()
        done = await world.reply(call, "Done!")
        await bot.jobs.wait_idle()
        [result] = world.results()
        posted = len(result.attachments)
        assert posted == 1
        record = await bot.ledger.get_job(1)
        assert record is not None
        assert (record.status, record.images_delivered) == (JobStatus.SUCCEEDED, posted)
        assert record.message_id == result.id
        assert await bot.ledger.balance(world.discord.guild.id) == 100 - 4 * posted
        assert await bot.ledger.verify()
    # The result itself no longer shows all three images as charged.
    assert embed_field(result, "Cost") == f"{4 * posted} credits"
    assert embed_field(result, "Balance") == f"{100 - 4 * posted} credits left"
    refunded = 4 * (3 - posted)
    assert f"Only {posted} of 3 images could be posted; {refunded} credits" in done.content
    assert "could not be posted in this channel" not in done.content
    drops = [r for r in world.discord.requests_to("POST", RESULT_POST) if r.status == 0]
    assert len(drops) == 1
    world.discord.assert_no_pings()


@pytest.mark.parametrize("stored", [True, False], ids=["stored", "lost"])
async def test_a_connection_lost_on_the_first_part_is_decided_from_the_channel(
    world: World, stored: bool
) -> None:
    # No answer to the result's post: Discord may have stored it. The channel decides,
    # as after a crash: charged if the result is there, refunded and told if not.
    world.discord.drop_next("POST", RESULT_POST, after=stored)
    async with world.running() as bot:
        call = await world.imagine({"prompt": "a lighthouse"})
        told = await world.reply(call, "Done!" if stored else "could not be posted")
        await bot.jobs.wait_idle()
        record = await bot.ledger.get_job(1)
        assert record is not None
        balance = await bot.ledger.balance(world.discord.guild.id)
        assert await bot.ledger.verify()
    if stored:
        [posted] = world.results()
        assert (record.status, record.message_id) == (JobStatus.SUCCEEDED, posted.id)
        assert balance == 99
        assert "1 credit spent" in told.content
    else:
        assert world.results() == []
        assert record.status is JobStatus.REFUNDED
        assert balance == 100
        assert "1 credit refunded" in told.content
    [post] = world.discord.requests_to("POST", RESULT_POST)
    assert post.status == 0  # sent once, never blindly again
    world.discord.assert_no_pings()
