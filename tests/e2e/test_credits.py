"""/credits end to end: balance, history pages, limits, owners' grants and the low-balance notice.

The real bot and discord.py client against the fake Discord and fake Segmind; who may
do what is decided by the bot's own checks (the commands are visible to everyone).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import World
from tests.fakes.fake_discord import (
    CommandUnavailableError,
    FakeChannel,
    FakeMember,
    InteractionRecord,
    StoredMessage,
)

pytestmark = pytest.mark.timeout(60)

SUBCOMMAND = 1
OWNERS_ONLY = "Only the bot's owners"
NEEDS_MANAGE_SERVER = "Manage Server permission"


@pytest.fixture(autouse=True)
def no_unexpected_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every answer here is an expected one: nothing may end in the apology path."""
    caplog.set_level(logging.INFO)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def credits(
    world: World,
    sub: str,
    options: dict[str, Any] | None = None,
    *,
    user: Any = None,
    channel: FakeChannel | None = None,
) -> InteractionRecord:
    return await world.discord.slash(f"credits {sub}", options, user=user, channel=channel)


async def answer(world: World, call: InteractionRecord, *, timeout: float = 10.0) -> StoredMessage:
    """The bot's (first, finished) private answer to ``call``; it must be ephemeral."""
    message = await world.discord.wait_for_followup(call, timeout=timeout)
    assert message.ephemeral, message.payload
    assert "Traceback" not in message.content
    return message


async def imagine_done(world: World, user: Any, **options: Any) -> None:
    """One /imagine that succeeds: waits for its result to be posted and the job to settle."""
    channel = options.pop("channel", None)
    before = len(world.results(channel))
    call = await world.imagine({"prompt": "a lamp", **options}, user=user, channel=channel)
    await world.reply(call, "Done!")
    await world.discord.wait_for(
        lambda: len(world.results(channel)) > before, timeout=10.0, what="the result"
    )


def description_lines(message: StoredMessage) -> list[str]:
    [embed] = message.embeds
    return str(embed.get("description", "")).splitlines()


def footer(message: StoredMessage) -> str:
    [embed] = message.embeds
    return str(embed["footer"]["text"])


def button_states(message: StoredMessage) -> dict[str, bool]:
    return {str(b["label"]): bool(b.get("disabled")) for b in message.buttons()}


# -- the command group -----------------------------------------------------------------


async def test_credits_group_is_synced_for_servers_only(world: World) -> None:
    discord = world.discord
    async with world.running():
        [group] = [c for c in discord.commands_for() if c["name"] == "credits"]
        with pytest.raises(CommandUnavailableError, match="not available in DMs"):
            await credits(world, "balance", channel=discord.dm_channel)
    subcommands = {o["name"] for o in group["options"] if o["type"] == SUBCOMMAND}
    assert subcommands == {"balance", "history", "usage", "limits", "grant", "set"}
    assert group.get("contexts") == [0] or group.get("dm_permission") is False
    assert all(o.get("description") for o in group["options"])


# -- balance -----------------------------------------------------------------------------


async def test_balance_shows_the_server_balance_usage_and_costs(world: World) -> None:
    discord = world.discord
    async with world.running() as bot:
        first = await answer(world, await credits(world, "balance", user=discord.member))
        assert "100 credits" in first.content
        assert "0 credits today" in first.content and "no daily cap" in first.content
        assert "512×512" in first.content and "1024×1024" in first.content

        await imagine_done(world, discord.member)
        second = await answer(world, await credits(world, "balance", user=discord.member))
        assert "99 credits" in second.content
        assert "used 1 credit today" in second.content

        await answer(
            world, await credits(world, "limits", {"daily_cap": 5}, user=discord.moderator)
        )
        capped = await answer(world, await credits(world, "balance", user=discord.member))
        assert "used 1 of your 5 daily credits" in capped.content
        assert "4 left" in capped.content

        # Another member's usage is their own.
        other = await answer(world, await credits(world, "balance", user=discord.moderator))
        assert "used 0 of your 5" in other.content
        assert await bot.ledger.verify()
    discord.assert_no_pings()


# -- history -----------------------------------------------------------------------------


async def test_history_is_refused_for_plain_members(world: World) -> None:
    discord = world.discord
    async with world.running():
        reply = await answer(world, await credits(world, "history", user=discord.member))
    assert NEEDS_MANAGE_SERVER in reply.content
    assert reply.embeds == [] and reply.buttons() == []
    discord.assert_no_pings()


async def test_history_lists_entries_newest_first(world: World) -> None:
    discord = world.discord
    async with world.running() as bot:
        await imagine_done(world, discord.member)
        reply = await answer(world, await credits(world, "history", user=discord.moderator))
        assert await bot.ledger.verify()
    lines = description_lines(reply)
    assert len(lines) == 3, lines
    assert "commit" in lines[0] and f"<@{discord.member.id}>" in lines[0]
    assert "reserve" in lines[1] and "-1" in lines[1]
    assert "grant" in lines[2] and "+100" in lines[2]
    assert footer(reply) == "Balance 99 · page 1/1 · 3 entries"
    assert button_states(reply) == {"Newer": True, "Older": True}
    discord.assert_no_pings()


async def test_history_answers_when_discord_took_the_defer_but_answered_502(world: World) -> None:
    # discord.py retries the defer and hears "already acknowledged": the defer stands.
    world.discord.fail_next("POST", r"^/interactions/\d+/[^/]+/callback$", 502, after=True)
    async with world.running():
        reply = await answer(world, await credits(world, "history", user=world.discord.moderator))
    assert footer(reply) == "Balance 100 · page 1/1 · 0 entries"


async def test_history_pages_work_after_a_restart_and_only_for_moderators(world: World) -> None:
    discord = world.discord
    manage_server = 1 << 5
    moderator = discord.add_member(
        discord.guild, "pager", permissions=manage_server, role_name="Pagers"
    )
    async with world.running() as bot:
        for number in range(1, 13):
            await bot.ledger.grant(discord.guild.id, 1, actor_id=None, note=f"top-up {number}")
        call = await credits(world, "history", user=moderator)
        first = await answer(world, call)
    lines = description_lines(first)
    assert len(lines) == 10
    assert "top-up 12" in lines[0] and "top-up 3" in lines[9]
    assert footer(first) == "Balance 112 · page 1/2 · 13 entries"
    assert button_states(first) == {"Newer": True, "Older": False}

    # A new process on the same database: the page buttons still answer.
    async with world.running() as bot:
        older = await discord.click(first, "Older", user=moderator)
        await discord.wait_for(
            lambda: "page 2/2" in footer(discord.get_message(first.id)),
            timeout=10.0,
            what="page 2",
        )
        page2 = discord.get_message(first.id)
        assert older.ack_latency is not None and older.ack_latency < 3
        lines = description_lines(page2)
        assert len(lines) == 3
        assert "top-up 2" in lines[0] and "top-up 1" in lines[1] and "+100" in lines[2]
        assert button_states(page2) == {"Newer": False, "Older": True}

        await discord.click(page2, "Newer", user=moderator)
        await discord.wait_for(
            lambda: "page 1/2" in footer(discord.get_message(first.id)),
            timeout=10.0,
            what="page 1 again",
        )
        assert "top-up 12" in description_lines(discord.get_message(first.id))[0]

        # Lose Manage Server (roles changed since): the buttons refuse, the page stays.
        moderator.roles.clear()
        refused = await discord.click(first, "Older", user=moderator)
        reply = await answer(world, refused)
        assert NEEDS_MANAGE_SERVER in reply.content
        assert "page 1/2" in footer(discord.get_message(first.id))
        assert await bot.insight.count_history(discord.guild.id) == 13
    discord.assert_no_pings()


# -- limits ------------------------------------------------------------------------------


async def test_limits_are_refused_for_plain_members(world: World) -> None:
    discord = world.discord
    async with world.running() as bot:
        before = await bot.guild_settings.get(discord.guild.id)
        shown = await answer(world, await credits(world, "limits", user=discord.member))
        changed = await answer(
            world,
            await credits(
                world, "limits", {"daily_cap": 1, "block_word": "cats"}, user=discord.member
            ),
        )
        assert await bot.guild_settings.get(discord.guild.id) == before
    for reply in (shown, changed):
        assert NEEDS_MANAGE_SERVER in reply.content
        assert "Daily cap" not in reply.content


async def test_moderator_sets_limits_and_they_are_enforced(world: World) -> None:
    discord = world.discord
    art = discord.art_channel
    async with world.running() as bot:
        call = await credits(
            world,
            "limits",
            {
                "daily_cap": 2,
                "allow_channel": art,
                "block_word": "Gore",
                "low_balance_alert": 50,
                "alert_channel": art,
            },
            user=discord.moderator,
        )
        updated = await answer(world, call)
        assert "Limits updated" in updated.content
        assert "**Daily cap per member:** 2 credits" in updated.content
        assert f"**Allowed channels:** <#{art.id}>" in updated.content
        assert "**Blocked words:** `gore`" in updated.content
        assert f"below 50 credits in <#{art.id}>" in updated.content
        shown = await answer(world, await credits(world, "limits", user=discord.moderator))
        assert "Current limits" in shown.content
        assert shown.content.split("\n", 1)[1] == updated.content.split("\n", 1)[1]

        elsewhere = await world.imagine({"prompt": "a cat"}, user=discord.member)
        await world.reply(elsewhere, "turned off in this channel")
        blocked = await world.imagine({"prompt": "GORE"}, user=discord.member, channel=art)
        await world.reply(blocked, "blocked")

        await imagine_done(world, discord.member, channel=art)
        over = await world.imagine(
            {"prompt": "two", "samples": 2}, user=discord.member, channel=art
        )
        refusal = await world.reply(over, "daily credits")
        assert "used 1 of your 2 daily credits" in refusal.content and "costs 2" in refusal.content
        assert await bot.ledger.balance(discord.guild.id) == 99
        assert world.segmind.calls == 1

        reset = await answer(
            world,
            await credits(
                world, "limits", {"all_channels": True, "daily_cap": 0}, user=discord.moderator
            ),
        )
        assert "**Allowed channels:** every channel" in reset.content
        assert "**Daily cap per member:** no cap" in reset.content
        await imagine_done(world, discord.member, samples=2)
        assert await bot.ledger.balance(discord.guild.id) == 97

        off = await answer(
            world,
            await credits(
                world,
                "limits",
                {"unblock_word": "  GORE ", "low_balance_alert": 0},
                user=discord.moderator,
            ),
        )
        assert "**Blocked words:** none" in off.content
        assert "**Low-balance alert:** off" in off.content
        settings = await bot.guild_settings.get(discord.guild.id)
        assert settings.daily_user_cap is None and settings.allowed_channel_ids == ()
        assert settings.blocked_words == () and settings.low_balance_threshold is None
        assert await bot.ledger.verify()
    discord.assert_no_pings()


async def test_limits_say_when_the_alert_cannot_be_posted(world: World) -> None:
    discord = world.discord
    async with world.running() as bot:
        no_channel = await answer(
            world, await credits(world, "limits", {"low_balance_alert": 10}, user=discord.moderator)
        )
        assert "below 10 credits, but no channel is set" in no_channel.content
        assert "`alert_channel`" in no_channel.content
        locked = discord.locked_channel
        call = await credits(world, "limits", {"alert_channel": locked}, user=discord.moderator)
        warned = await answer(world, call)
        assert f"below 10 credits in <#{locked.id}>" in warned.content
        assert f"I can't send messages in <#{locked.id}>" in warned.content
        blank = await answer(
            world, await credits(world, "limits", {"block_word": "   "}, user=discord.moderator)
        )
        assert blank.content.startswith("Current limits")
        settings = await bot.guild_settings.get(discord.guild.id)
        assert (settings.low_balance_threshold, settings.notice_channel_id) == (10, locked.id)
        assert settings.blocked_words == ()
    discord.assert_no_pings()


# -- grant and set ----------------------------------------------------------------------


@pytest.mark.parametrize("who", ["member", "moderator"])
async def test_grant_and_set_are_refused_for_non_owners(world: World, who: str) -> None:
    discord = world.discord
    user: FakeMember = getattr(discord, who)
    async with world.running() as bot:
        granted = await answer(world, await credits(world, "grant", {"amount": 500}, user=user))
        set_ = await answer(world, await credits(world, "set", {"amount": 0}, user=user))
        remote = await answer(
            world,
            await credits(
                world, "grant", {"amount": 5, "guild_id": str(discord.guild2.id)}, user=user
            ),
        )
        assert await bot.ledger.balance(discord.guild.id) == 100
        assert await bot.insight.count_history(discord.guild.id) == 1
        assert await bot.insight.count_history(discord.guild2.id) == 0
    for reply in (granted, set_, remote):
        assert OWNERS_ONLY in reply.content
    discord.assert_no_pings()


async def test_application_owner_grants_and_sets(world: World) -> None:
    discord = world.discord
    owner = discord.app_owner_member
    guild_id = discord.guild.id
    async with world.running() as bot:
        granted = await answer(
            world, await credits(world, "grant", {"amount": 50, "note": "launch"}, user=owner)
        )
        assert "Granted 50 credits. This server now has 150 credits." in granted.content
        assert await bot.ledger.balance(guild_id) == 150

        set_ = await answer(world, await credits(world, "set", {"amount": 10}, user=owner))
        assert "10 credits" in set_.content
        assert await bot.ledger.balance(guild_id) == 10

        [latest, grant] = (await bot.insight.history(guild_id, limit=3))[:2]
        assert (latest.kind.value, latest.delta, latest.actor_id) == ("set", -140, owner.id)
        assert (grant.kind.value, grant.delta, grant.note) == ("grant", 50, "launch")
        assert await bot.ledger.verify()
    discord.assert_no_pings()


async def test_owner_funds_a_server_the_bot_has_not_seen(world: World) -> None:
    discord = world.discord
    unseen = discord.ids.next()
    async with world.running() as bot:
        call = await credits(
            world, "grant", {"amount": 25, "guild_id": str(unseen)}, user=discord.app_owner_member
        )
        reply = await answer(world, call)
        assert f"Server `{unseen}` now has 125 credits" in reply.content
        assert "can't see that server" in reply.content
        entries = await bot.insight.history(unseen)
        assert [(e.kind.value, e.delta) for e in entries] == [("grant", 25), ("grant", 100)]
        assert entries[0].actor_id == discord.app_owner.id
        assert await bot.ledger.balance(discord.guild.id) == 100  # this server untouched

        set_other = await answer(
            world,
            await credits(
                world,
                "set",
                {"amount": 7, "guild_id": f" {discord.guild2.id} "},
                user=discord.app_owner_member,
            ),
        )
        assert f"**Second Guild** (`{discord.guild2.id}`) now has 7 credits" in set_other.content
        assert await bot.ledger.balance(discord.guild2.id) == 7
        assert await bot.ledger.verify()


@pytest.mark.parametrize(
    "bad_id",
    ["not-a-server", "123", "<#12345678901234567>", "99999999999999999999", "0000000000000000"],
)
async def test_malformed_guild_id_is_explained_and_changes_nothing(
    world: World, bad_id: str
) -> None:
    discord = world.discord
    owner = discord.app_owner_member
    async with world.running() as bot:
        for sub, amount in (("grant", 5), ("set", 0)):
            call = await credits(world, sub, {"amount": amount, "guild_id": bad_id}, user=owner)
            reply = await answer(world, call)
            assert "is not a server id" in reply.content, reply.content
            assert "Sorry" not in reply.content
        assert await bot.ledger.balance(discord.guild.id) == 100
        assert await bot.insight.count_history(discord.guild.id) == 1
        digits = "".join(ch for ch in bad_id if ch.isdigit())
        if digits and 0 < int(digits) < 2**63:
            assert await bot.insight.count_history(int(digits)) == 0
        assert await bot.ledger.verify()
    discord.assert_no_pings()


async def test_owner_ids_may_grant_too(world: World) -> None:
    discord = world.discord
    operator = discord.add_member(discord.guild, "operator")
    async with world.running(owner_ids=[operator.id]) as bot:
        reply = await answer(world, await credits(world, "grant", {"amount": 5}, user=operator))
        assert "105" in reply.content
        refused = await answer(
            world, await credits(world, "grant", {"amount": 5}, user=discord.member)
        )
        assert OWNERS_ONLY in refused.content
        # The application owner stays an owner alongside OWNER_IDS.
        also = await answer(
            world, await credits(world, "set", {"amount": 42}, user=discord.app_owner_member)
        )
        assert "42 credits" in also.content
        assert await bot.ledger.balance(discord.guild.id) == 42
        assert await bot.ledger.verify()


# -- the low-balance notice ----------------------------------------------------------------


def notices(world: World, channel: FakeChannel) -> list[StoredMessage]:
    return [m for m in world.discord.channel_messages(channel) if "alert threshold" in m.content]


async def test_low_balance_notice_is_posted_once_per_crossing(world: World) -> None:
    discord = world.discord
    alerts = discord.art_channel
    owner = discord.app_owner_member
    async with world.running() as bot:
        await answer(
            world,
            await credits(
                world,
                "limits",
                {"low_balance_alert": 95, "alert_channel": alerts},
                user=discord.moderator,
            ),
        )
        await answer(world, await credits(world, "set", {"amount": 96}, user=owner))

        await imagine_done(world, discord.member)  # 96 -> 95: not below 95 yet
        await imagine_done(world, discord.member)  # 95 -> 94: below
        first = await discord.wait_for_message(
            alerts, lambda m: "alert threshold" in m.content, timeout=10.0
        )
        assert "94 image credits left" in first.content and "/credits grant" in first.content
        await imagine_done(world, discord.member)  # 94 -> 93: already told
        assert len(notices(world, alerts)) == 1

        await answer(world, await credits(world, "grant", {"amount": 3}, user=owner))  # 96
        await imagine_done(world, discord.member)  # 95
        await imagine_done(world, discord.member)  # 94: re-armed, told again
        await discord.wait_for(
            lambda: len(notices(world, alerts)) == 2, timeout=10.0, what="a second notice"
        )
        await imagine_done(world, discord.member)  # 93
        assert await bot.ledger.balance(discord.guild.id) == 93
        assert await bot.ledger.verify()
    found = notices(world, alerts)
    assert len(found) == 2
    assert not any(m.pings for m in found)
    assert notices(world, discord.channel) == []
    discord.assert_no_pings()
