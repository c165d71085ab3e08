"""Start-up: extensions, command sync only when the tree changed, intents and mention defaults."""

from __future__ import annotations

import discord

from bot.app import EXTENSIONS
from tests.e2e.conftest import World


async def test_every_extension_loads_and_registers_its_commands(world: World) -> None:
    async with world.running() as bot:
        assert set(bot.extensions) == set(EXTENSIONS)
        names = {command.qualified_name for command in bot.tree.walk_commands()}
    assert {
        "imagine",
        "credits",
        "credits balance",
        "credits history",
        "credits limits",
        "credits grant",
        "credits set",
        "credits usage",
        "gallery",
    } <= names


async def test_commands_sync_once_and_not_again_on_restart(world: World) -> None:
    async with world.running():
        pass
    async with world.running():
        pass
    syncs = world.discord.command_syncs
    assert len(syncs) == 1
    assert syncs[0].guild_id is None
    assert {c["name"] for c in syncs[0].payload} == {"imagine", "credits", "gallery"}


async def test_dev_guild_gets_the_commands_instantly(world: World) -> None:
    guild_id = world.discord.guild.id
    async with world.running(dev_guild_id=guild_id):
        pass
    [sync] = world.discord.command_syncs
    assert sync.guild_id == guild_id
    assert {c["name"] for c in sync.payload} == {"imagine", "credits", "gallery"}


async def test_a_failed_sync_is_retried_at_the_next_start(world: World) -> None:
    world.discord.fail_next("PUT", r"/applications/\d+/commands", 403, 50001, "Missing Access")
    async with world.running():
        pass
    async with world.running():
        pass
    assert len(world.discord.command_syncs) == 1
    assert len(world.discord.requests_to("PUT", r"/applications/\d+/commands")) == 2


async def test_minimal_intents_and_no_mentions_by_default(world: World) -> None:
    bot = world.make_bot()  # never started: nothing to close
    assert bot.intents == discord.Intents(guilds=True)
    assert not bot.intents.members
    assert not bot.intents.message_content
    assert not bot.intents.presences
    mentions = bot.allowed_mentions
    assert mentions is not None
    assert mentions.to_dict() == {"parse": []}
