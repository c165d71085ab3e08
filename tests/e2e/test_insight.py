"""Insight end to end: the /credits usage chart, the member's /gallery, the watch on the
bot's Segmind balance and the 406 status line.

The real bot and discord.py client against the fake Discord and fake Segmind.
"""

from __future__ import annotations

import asyncio
import io
import math

import pytest
from PIL import Image

from bot.balance_watch import STATE_KEY
from tests.e2e.conftest import World, is_result
from tests.e2e.test_credits import (  # no_unexpected_errors: autouse here too
    answer,
    credits,
    imagine_done,
    no_unexpected_errors,  # noqa: F401
)
from tests.fakes.fake_discord import FakeChannel, StoredMessage

pytestmark = pytest.mark.timeout(90)


# -- /credits usage -----------------------------------------------------------------------


async def test_usage_answers_admins_with_a_png_chart(world: World) -> None:
    discord = world.discord
    async with world.running():
        await imagine_done(world, discord.member)
        await imagine_done(world, discord.member, samples=2)
        await imagine_done(world, discord.moderator, img_width=1024)
        call = await credits(world, "usage", {"days": 7}, user=discord.moderator)
        reply = await answer(world, call)
    assert reply.content == "5 credits spent in the last 7 days by 2 members (3 jobs)."
    [upload] = reply.files.values()
    assert upload.filename == "credits-usage.png"
    assert [a["filename"] for a in reply.attachments] == ["credits-usage.png"]
    with Image.open(io.BytesIO(upload.data)) as image:
        assert image.format == "PNG"
        assert image.width >= 800 and image.height >= 400
    discord.assert_no_pings()


async def test_usage_defaults_to_30_days_and_is_refused_to_plain_members(world: World) -> None:
    discord = world.discord
    async with world.running():
        refused = await answer(world, await credits(world, "usage", user=discord.member))
        empty = await answer(world, await credits(world, "usage", user=discord.moderator))
    assert "Manage Server permission" in refused.content and not refused.files
    assert empty.content == "No credits spent in the last 30 days."
    assert len(empty.files) == 1


async def test_usage_period_is_limited_to_1_to_90_days(world: World) -> None:
    async with world.running():
        [group] = [c for c in world.discord.commands_for() if c["name"] == "credits"]
        [usage] = [o for o in group["options"] if o["name"] == "usage"]
        [days] = usage["options"]
        assert (days["min_value"], days["max_value"]) == (1, 90)
        with pytest.raises(ValueError, match="outside"):
            await credits(world, "usage", {"days": 91}, user=world.discord.moderator)


# -- /gallery -------------------------------------------------------------------------------


def _entries(message: StoredMessage) -> list[str]:
    [embed] = message.embeds
    return [block for block in str(embed["description"]).split("\n\n") if block]


async def test_gallery_pages_through_the_members_own_results(world: World) -> None:
    discord = world.discord
    member = discord.member
    async with world.running():
        for seed in range(100, 107):
            await imagine_done(world, member, prompt=f"lamp number {seed}", seed=seed)
        await imagine_done(world, discord.moderator, prompt="not the member's")
        first = await answer(world, await discord.slash("gallery", user=member))
    results = {
        m.embeds[0]["description"]: m
        for m in discord.channel_messages(discord.channel)
        if is_result(m)
    }
    entries = _entries(first)
    assert len(entries) == 5
    assert "lamp number 106" in entries[0] and "lamp number 102" in entries[4]
    newest = results["lamp number 106"]
    jump = f"https://discord.com/channels/{discord.guild.id}/{discord.channel.id}/{newest.id}"
    assert jump in entries[0] and "seed 106" in entries[0] and "1 credit" in entries[0]
    assert first.embeds[0]["footer"]["text"] == "Page 1/2 · 7 results"
    assert {b["label"]: bool(b.get("disabled")) for b in first.buttons()} == {
        "Newer": True,
        "Older": False,
    }
    assert all(str(member.id) in b["custom_id"] for b in first.buttons())

    # A new process: the buttons still work (only the member sees them: tests/cogs).
    async with world.running():
        await discord.click(first, "Older", user=member)
        await discord.wait_for(
            lambda: "Page 2/2" in discord.get_message(first).embeds[0]["footer"]["text"],
            timeout=10.0,
            what="the second page",
        )
    second = discord.get_message(first)
    entries = _entries(second)
    assert len(entries) == 2
    assert "lamp number 101" in entries[0] and "lamp number 100" in entries[1]
    assert not any("not the member's" in e for e in entries)
    assert {b["label"]: bool(b.get("disabled")) for b in second.buttons()} == {
        "Newer": False,
        "Older": True,
    }
    discord.assert_no_pings()


async def test_gallery_is_empty_for_a_new_member_and_skips_refunded_jobs(world: World) -> None:
    discord = world.discord
    world.segmind.fail(400, times=1)
    async with world.running():
        call = await world.imagine({"prompt": "rejected"}, user=discord.member)
        await world.reply(call, "refunded")
        reply = await answer(world, await discord.slash("gallery", user=discord.member))
    assert "no images in this server yet" in reply.embeds[0]["description"]
    assert reply.embeds[0]["footer"]["text"] == "Page 1/1 · 0 results"


async def test_a_result_deleted_with_its_button_leaves_the_gallery(world: World) -> None:
    discord = world.discord
    async with world.running() as bot:
        for prompt in ("kept", "deleted"):
            await imagine_done(world, discord.member, prompt=prompt)
        [gone] = [m for m in world.results() if m.embeds[0]["description"] == "deleted"]
        await discord.click(gone, "Delete", user=discord.member)
        await discord.wait_for(lambda: discord.get_message(gone.id).deleted, what="the delete")
        for _ in range(100):  # the gallery is updated once Discord confirmed the delete
            page = await bot.insight.gallery(discord.guild.id, discord.member.id, 0)
            if page.total == 1:
                break
            await asyncio.sleep(0.05)
        reply = await answer(world, await discord.slash("gallery", user=discord.member))
    [entry] = _entries(reply)
    assert "kept" in entry
    assert reply.embeds[0]["footer"]["text"] == "Page 1/1 · 1 result"


# -- the Segmind balance ------------------------------------------------------------------


def _said(world: World, channel: FakeChannel, words: str) -> list[StoredMessage]:
    return [m for m in world.discord.channel_messages(channel) if words in m.content]


async def test_owners_hear_once_when_the_balance_runs_low_and_once_when_refilled(
    world: World,
) -> None:
    discord = world.discord
    operator = discord.add_member(discord.guild, "operator")
    dms = [discord.dm_channel_for(discord.app_owner), discord.dm_channel_for(operator.user)]
    world.segmind.remaining_credits = 1.02  # each image costs the fake $0.01
    async with world.running(owner_ids=[operator.id], segmind_balance_alert=1.0) as bot:
        for _ in range(2):  # $1.01, $1.00: not below $1 yet
            await imagine_done(world, discord.member)
        assert all(_said(world, dm, "Segmind") == [] for dm in dms)
        await imagine_done(world, discord.member)  # $0.99
        for dm in dms:
            await discord.wait_for(
                lambda dm=dm: _said(world, dm, "running low"), timeout=10.0, what="a notice"
            )
        await imagine_done(world, discord.member)  # $0.98: already told
        assert bot.metrics.segmind_balance._value.get() == pytest.approx(0.98)
        assert "imagine_segmind_balance_dollars 0.98" in bot.metrics.render().decode()
    # After a restart, a balance that is still low is not news.
    async with world.running(owner_ids=[operator.id], segmind_balance_alert=1.0) as bot:
        assert await bot.state.get(STATE_KEY) == "low"
        await imagine_done(world, discord.member)  # $0.97
        world.segmind.remaining_credits = 25.0  # the operator tops the account up
        await imagine_done(world, discord.member)  # $24.99
        for dm in dms:
            await discord.wait_for(
                lambda dm=dm: _said(world, dm, "topped up"), timeout=10.0, what="a notice"
            )
        await imagine_done(world, discord.member)
    for dm in dms:
        [low] = _said(world, dm, "running low")
        [refilled] = _said(world, dm, "topped up")
        assert "$0.99 left" in low.content and "$24.99 left" in refilled.content
        assert not low.pings and not refilled.pings
    assert _said(world, discord.channel, "Segmind account") == []


async def test_a_crossing_another_process_announced_is_not_announced_again(
    world: World,
) -> None:
    discord = world.discord
    dm = discord.dm_channel_for(discord.app_owner)
    world.segmind.remaining_credits = 1.00
    async with world.running(segmind_balance_alert=1.0) as bot:
        # Another process sharing the database saw the balance run low and told the owners.
        assert await bot.state.set(STATE_KEY, "low")
        await imagine_done(world, discord.member)  # $0.99: news to this process only
        world.segmind.remaining_credits = 25.0
        await imagine_done(world, discord.member)  # $24.99: refilled, told once, by this one
        await discord.wait_for(lambda: _said(world, dm, "topped up"), timeout=10.0, what="notice")
        assert await bot.state.get(STATE_KEY) == "ok"
    assert _said(world, dm, "running low") == []


async def test_the_balance_notice_goes_to_the_alert_channel_when_set(world: World) -> None:
    discord = world.discord
    alerts = discord.art_channel
    world.segmind.remaining_credits = 0.5
    async with world.running(segmind_alert_channel_id=alerts.id, segmind_balance_alert=2.5):
        await imagine_done(world, discord.member)
        await imagine_done(world, discord.member)
        await discord.wait_for(
            lambda: _said(world, alerts, "running low"), timeout=10.0, what="a notice"
        )
    [notice] = _said(world, alerts, "running low")
    assert "$0.49 left (alert below $2.50)" in notice.content
    assert _said(world, discord.dm_channel_for(discord.app_owner), "Segmind") == []


async def test_balance_gauge_is_unknown_until_segmind_reports_and_alert_off_at_zero(
    world: World,
) -> None:
    discord = world.discord
    world.segmind.remaining_credits = 0.2
    async with world.running(segmind_balance_alert=0) as bot:
        assert math.isnan(bot.metrics.segmind_balance._value.get())
        await imagine_done(world, discord.member)
        assert bot.metrics.segmind_balance._value.get() == pytest.approx(0.19)
    assert _said(world, discord.dm_channel_for(discord.app_owner), "Segmind") == []


async def test_a_406_says_the_bots_own_segmind_account_is_empty(world: World) -> None:
    world.segmind.fail(406, times=3)
    async with world.running() as bot:
        call = await world.imagine({"prompt": "no money upstream"})
        reply = await world.reply(call, "refunded")
        assert await bot.ledger.balance(world.discord.guild.id) == 100
    assert "bot's own Segmind account is out of API credits" in reply.content
    assert "this server's credits are not the problem" in reply.content
    assert "operator" in reply.content
