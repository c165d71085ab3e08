"""Syncing the command tree with Discord, only when it changed since the last sync."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import discord
from discord import app_commands

from bot.app_state import AppState

__all__ = ["command_payload", "sync_commands"]

log = logging.getLogger(__name__)


async def command_payload(
    tree: app_commands.CommandTree[Any], guild: discord.abc.Snowflake | None = None
) -> list[dict[str, Any]]:
    """What a sync would send for ``guild`` (or globally), localisations included."""
    commands = tree.get_commands(guild=guild)
    if tree.translator is None:
        return [command.to_dict(tree) for command in commands]
    return [await command.get_translated_payload(tree, tree.translator) for command in commands]


async def sync_commands(
    tree: app_commands.CommandTree[Any],
    state: AppState,
    *,
    application_id: int | None,
    dev_guild_id: int | None,
) -> bool:
    """Sync to the dev guild (if set) or globally, when the payload's hash in app state differs."""
    guild = discord.Object(dev_guild_id) if dev_guild_id else None
    if guild is not None:
        tree.copy_global_to(guild=guild)
    payload = await command_payload(tree, guild)
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    key = f"commands:{application_id}:{guild.id if guild else 'global'}"
    if await state.get(key) == digest:
        log.info("command tree unchanged; not syncing")
        return False
    try:
        await tree.sync(guild=guild)
    except discord.HTTPException as error:
        # A failed sync leaves the old commands in place; the bot still serves them.
        log.error("command sync failed (%s); will retry at next start", error.status)
        return False
    await state.set(key, digest)
    log.info(
        "synced %d command(s) %s", len(payload), f"to guild {guild.id}" if guild else "globally"
    )
    return True
