"""``/credits usage``: the chart of a server's spending, sent privately as a PNG."""

from __future__ import annotations

import asyncio
import io
from typing import TYPE_CHECKING, Any

import discord

from bot.charts import render_usage_chart, usage_summary_line
from bot.insight import InvalidPeriod
from bot.replies import defer_private, reply_private

if TYPE_CHECKING:
    from bot.app import ImagineBot

__all__ = ["send_usage_chart"]

FILENAME = "credits-usage.png"


async def send_usage_chart(
    bot: ImagineBot, interaction: discord.Interaction[Any], days: int
) -> None:
    """Defer privately, read the spending, draw it off the event loop and send it."""
    guild_id, guild = interaction.guild_id, interaction.guild
    assert guild_id is not None  # the command is guild-only and checked by the cog
    await defer_private(interaction)
    try:
        summary = await bot.insight.usage(guild_id, days)
    except InvalidPeriod as error:
        await reply_private(interaction, error.user_message)
        return
    names = {
        m.user_id: await _display_name(guild, m.user_id) if guild is not None else None
        for m in summary.top_members
    }
    png = await asyncio.to_thread(render_usage_chart, summary, names, interaction.locale)
    await interaction.followup.send(
        usage_summary_line(summary, interaction.locale),
        file=discord.File(io.BytesIO(png), filename=FILENAME),
        ephemeral=True,
        allowed_mentions=discord.AllowedMentions.none(),
    )


async def _display_name(guild: discord.Guild, user_id: int) -> str | None:
    """A member's name for the chart (one request each for the few top members, who are
    not cached: the bot has no members intent); None when they left."""
    member = guild.get_member(user_id)
    if member is None:
        try:
            member = await guild.fetch_member(user_id)
        except discord.HTTPException:
            return None
    return member.display_name
