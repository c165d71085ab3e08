"""/imagine awaits its private defer before it reserves anything or calls the API, so every
later word is a follow-up; after a defer Discord refuses (too late: 10062) the job still runs,
and its result or refusal is posted in the channel."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bot.credit_errors import InsufficientCredits
from bot.i18n import render
from tests.e2e.conftest import World, is_result
from tests.fakes.fake_discord import RequestRecord

pytestmark = pytest.mark.timeout(60)

CALLBACK = r"^/interactions/\d+/[^/]+/callback$"
COG_LOGGER = "cogs.imagine._cog"


async def balance(world: World, bot: Any) -> int:
    return int(await bot.ledger.balance(world.discord.guild.id))


def interaction_webhooks(world: World) -> list[RequestRecord]:
    """Follow-ups and edits of interaction responses (everything after the first response)."""
    return [r for r in world.discord.requests if r.path.startswith("/webhooks/")]


def reject_the_defer(world: World) -> None:
    world.discord.fail_next("POST", CALLBACK, 404, 10062, "Unknown interaction")


async def test_nothing_is_reserved_or_called_before_discord_answers_the_defer(
    world: World,
) -> None:
    held = world.discord.delay_next("POST", CALLBACK, 10.0)
    async with world.running() as bot:
        call = await world.imagine({"prompt": "after the defer"})
        await world.discord.wait_for(lambda: held.holding == 1, what="the defer on its way")
        with pytest.raises(TimeoutError):
            await world.segmind.wait_for_requests(1, timeout=0.3)
        assert await bot.ledger.active_jobs() == [] and await balance(world, bot) == 100
        held.release()
        done = await world.reply(call, "Done!")
        assert done.ephemeral and "1 credit spent" in done.content
        await bot.jobs.wait_idle()
        assert await balance(world, bot) == 99
    [callback] = call.callbacks
    assert (callback.type, callback.status) == (5, 200)
    assert all(r.at >= callback.at for r in interaction_webhooks(world))
    assert world.segmind.billed_calls == 1


@pytest.mark.parametrize("reason", ["blocked word", "not enough credits"])
async def test_a_refusal_is_a_private_followup_after_a_slow_defer(
    world: World, reason: str
) -> None:
    world.discord.delay_next("POST", CALLBACK, 0.3)  # Discord being slow to answer
    async with world.running() as bot:
        guild_id = world.discord.guild.id
        if reason == "blocked word":
            await bot.guild_settings.update(guild_id, blocked_words=("gore",))
            call = await world.imagine({"prompt": "lots of gore"})
            reply = await world.reply(call, "blocked")
        else:
            await bot.ledger.set_balance(guild_id, 3, actor_id=None)
            call = await world.imagine({"prompt": "big", "img_width": 1024, "img_height": 1024})
            reply = await world.reply(call, "credits")
        before = 100 if reason == "blocked word" else 3
        assert await balance(world, bot) == before
        assert await bot.ledger.verify()
    assert reply.ephemeral
    # One callback, the defer; the refusal went out as a follow-up once it was answered.
    [callback] = call.callbacks
    assert (callback.type, callback.status) == (5, 200)
    webhooks = interaction_webhooks(world)
    assert webhooks and all(r.at >= callback.at for r in webhooks)
    assert world.segmind.calls == 0


async def test_a_rejected_defer_still_delivers_and_charges_in_the_channel(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=COG_LOGGER)
    reject_the_defer(world)
    async with world.running() as bot:
        call = await world.imagine({"prompt": "still wanted"})
        result = await world.result()
        await bot.jobs.wait_idle()
        assert await balance(world, bot) == 99
        assert await bot.ledger.verify()
        assert await bot.ledger.active_jobs() == []
        entries = await bot.insight.history(world.discord.guild.id, limit=2)
        assert [(e.kind, e.delta) for e in entries] == [("commit", 0), ("reserve", -1)]
    assert not call.acknowledged
    assert str(world.discord.member.id) in result.content
    # Nothing more on the dead token: no status edits, no follow-ups.
    assert interaction_webhooks(world) == []
    assert [r.injected for r in world.discord.requests_to("POST", CALLBACK)] == [True]
    [warning] = [r for r in caplog.records if r.name == COG_LOGGER]
    assert warning.levelno == logging.WARNING and warning.exc_info is None
    assert "could not acknowledge" in warning.getMessage() and "404 10062" in warning.getMessage()
    assert getattr(warning, "guild_id", None) == world.discord.guild.id
    assert getattr(warning, "user_id", None) == world.discord.member.id


async def test_a_refusal_after_a_rejected_defer_is_said_in_the_channel(world: World) -> None:
    reject_the_defer(world)
    async with world.running() as bot:
        await bot.guild_settings.update(world.discord.guild.id, blocked_words=("gore",))
        call = await world.imagine({"prompt": "lots of gore"})
        notice = await world.discord.wait_for_message(
            world.discord.channel, lambda m: "blocked" in m.content
        )
        assert await balance(world, bot) == 100
        assert await bot.ledger.active_jobs() == []
        assert await bot.ledger.verify()
    assert not call.acknowledged
    assert notice.content.startswith(f"<@{world.discord.member.id}>")
    assert "Nothing was charged" in notice.content
    assert interaction_webhooks(world) == []
    assert world.discord.ephemeral_messages() == []
    assert world.segmind.calls == 0


async def test_a_refusal_said_in_the_channel_is_in_the_servers_language(world: World) -> None:
    reject_the_defer(world)
    world.discord.guild.preferred_locale = "de"
    async with world.running() as bot:
        await bot.ledger.set_balance(world.discord.guild.id, 0, actor_id=None)
        await world.imagine({"prompt": "a cat"}, locale="ja")
        notice = await world.discord.wait_for_message(
            world.discord.channel, lambda m: m.content.startswith(f"<@{world.discord.member.id}>")
        )
    expected = render("de", InsufficientCredits(0, 1).user_message)
    assert expected != InsufficientCredits(0, 1).user_message  # there is a German text
    assert notice.content == f"<@{world.discord.member.id}> {expected}"
    assert world.segmind.calls == 0


async def test_an_unexpected_error_is_apologised_for_after_the_defer(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.discord.delay_next("POST", CALLBACK, 0.3)
    async with world.running() as bot:

        async def broken(job: Any) -> Any:
            raise RuntimeError("the database is on fire")

        monkeypatch.setattr(bot.ledger, "reserve", broken)
        call = await world.imagine({"prompt": "a cat"})
        reply = await world.reply(call, "Sorry")
        assert await balance(world, bot) == 100
    assert reply.ephemeral
    assert "on fire" not in reply.content and "Traceback" not in reply.content
    # The tree's error handler answered as a follow-up: the defer was the one callback.
    [callback] = call.callbacks
    assert (callback.type, callback.status) == (5, 200)
    assert world.segmind.calls == 0


async def test_a_defer_taken_but_answered_with_a_502_is_treated_as_taken(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # Discord acknowledges, answers 502; discord.py retries and hears "already acknowledged".
    world.discord.fail_next("POST", CALLBACK, 502, after=True)
    caplog.set_level(logging.INFO, logger="bot.replies")
    async with world.running() as bot:
        await bot.ledger.set_balance(world.discord.guild.id, 0, actor_id=None)
        refused = await world.imagine({"prompt": "no credits"})
        reply = await world.reply(refused, "credits")
        await bot.ledger.set_balance(world.discord.guild.id, 5, actor_id=None)
        world.discord.fail_next("POST", CALLBACK, 502, after=True)
        call = await world.imagine({"prompt": "still wanted"})
        done = await world.reply(call, "Done!")
        await world.result()
        await bot.jobs.wait_idle()
        assert await balance(world, bot) == 4
    # The member hears both privately, on the "thinking…" line; the channel only sees the result.
    assert reply.ephemeral and done.ephemeral
    answers = [(r.status, r.error_code) for r in world.discord.requests_to("POST", CALLBACK)]
    # The refusal's own first-response attempt also hears 40060, then goes out as a follow-up.
    taken = [(502, 0), (400, 40060)]
    assert answers == [*taken, (400, 40060), *taken]
    assert refused.acknowledged and call.acknowledged
    channel = world.discord.channel_messages(world.discord.channel)
    assert [m for m in channel if not is_result(m)] == []
    assert any("already acknowledged" in r.getMessage() for r in caplog.records)
