"""The channel notice when a server's balance falls below its admins' threshold."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord

from bot.guild_settings import GuildSettings
from bot.i18n import tn
from bot.logs import job_context

if TYPE_CHECKING:
    from bot.app import ImagineBot

__all__ = ["low_balance_notice"]

log = logging.getLogger(__name__)


async def low_balance_notice(
    bot: ImagineBot, guild: discord.Guild, settings: GuildSettings
) -> None:
    """Post one notice per crossing below the admins' threshold, mentioning nobody."""
    if settings.low_balance_threshold is None or settings.notice_channel_id is None:
        return
    channel = guild.get_channel(settings.notice_channel_id)
    if not isinstance(channel, discord.abc.Messageable):
        return
    if not await bot.guild_settings.claim_low_balance_notice(guild.id):
        return
    balance = await bot.ledger.balance(guild.id)
    try:
        await channel.send(
            tn(
                guild.preferred_locale,
                "⚠️ This server has {count} image credit left (alert threshold: {threshold}). "
                "A bot owner can add more with `/credits grant`.",
                "⚠️ This server has {count} image credits left (alert threshold: {threshold}). "
                "A bot owner can add more with `/credits grant`.",
                balance,
                threshold=settings.low_balance_threshold,
            ),
            allowed_mentions=discord.AllowedMentions.none(),
        )
    except discord.HTTPException as error:
        log.warning(
            "could not post the low-balance notice (%s %s)",
            error.status,
            error.code,
            extra=job_context(guild_id=guild.id),
        )
