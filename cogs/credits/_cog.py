"""The ``/credits`` cog: who may do what is checked here, in code.

Everyone sees the balance; Manage Server reads the history and the usage chart and sets
limits; only the bot's owners (the application owner and ``OWNER_IDS``) grant or set
credits. Every answer is private and pings no one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import _N, LocaleLike, t
from bot.insight import DEFAULT_DAYS, MAX_DAYS
from bot.replies import defer_private, reply_private
from cogs._paging import PageButton

from ._text import (
    COST_TABLE,
    cannot_post,
    credit_amount,
    entry_line,
    limits_text,
    parse_guild_id,
    words_key,
)
from ._usage import send_usage_chart

if TYPE_CHECKING:
    from bot.app import ImagineBot

__all__ = ["CreditsCog", "HistoryPageButton"]

log = logging.getLogger(__name__)

PAGE_SIZE = 10
MAX_AMOUNT = 1_000_000_000
#: The options /credits grant and /credits set share.
OWNER_OPTIONS = {"guild_id": "Server id (default: this server).", "note": "Why, for the ledger."}
HISTORY_NEEDS_MANAGE_SERVER = _N("You need the Manage Server permission to see the history.")


async def history_page(
    bot: ImagineBot, guild_id: int, page: int, locale: LocaleLike = None
) -> tuple[discord.Embed, discord.ui.View]:
    """Page ``page`` of the guild's ledger, newest first, with its Newer/Older buttons."""
    total = await bot.insight.count_history(guild_id)
    pages = max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    page = min(max(page, 0), pages - 1)
    entries = await bot.insight.history(guild_id, limit=PAGE_SIZE, offset=page * PAGE_SIZE)
    balance = await bot.ledger.balance(guild_id)
    embed = discord.Embed(
        title=t(locale, "Credit history"),
        description="\n".join(entry_line(e, locale) for e in entries)
        or t(locale, "No entries yet."),
        colour=discord.Colour.gold(),
    )
    embed.set_footer(
        text=t(
            locale,
            "Balance {balance} · page {page}/{pages} · {total} entries",
            balance=balance,
            page=page + 1,
            pages=pages,
            total=total,
        )
    )
    return embed, HistoryPageButton.pager(guild_id, page, pages, locale)


class HistoryPageButton(PageButton, prefix="credits:history"):
    """Newer/Older in a guild's (``owner_id``) ``/credits history``, for its moderators."""

    refusal = HISTORY_NEEDS_MANAGE_SERVER

    def allows(self, interaction: discord.Interaction[Any]) -> bool:
        return interaction.guild_id == self.owner_id and interaction.permissions.manage_guild

    async def draw(
        self, interaction: discord.Interaction[Any]
    ) -> tuple[discord.Embed, discord.ui.View]:
        bot: ImagineBot = interaction.client
        return await history_page(bot, self.owner_id, self.page, interaction.locale)


class CreditsCog(commands.Cog, name="Credits"):
    """The ``/credits`` command group."""

    credits = app_commands.Group(
        name="credits",
        description="This server's image credits.",
        guild_only=True,
    )

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(HistoryPageButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(HistoryPageButton)

    # -- everyone ------------------------------------------------------------

    @credits.command(name="balance", description="How many credits this server and you have left.")
    async def balance(self, interaction: discord.Interaction[Any]) -> None:
        guild_id = interaction.guild_id
        if guild_id is None:
            await reply_private(interaction, _N("Credits belong to servers: use this in a server."))
            return
        ledger = self.bot.ledger
        balance = await ledger.balance(guild_id)
        settings = await self.bot.guild_settings.get(guild_id)
        used = await ledger.usage_today(guild_id, interaction.user.id)
        locale = interaction.locale
        amount = credit_amount(balance, locale)
        lines = [t(locale, "💰 This server has **{amount}**.", amount=amount)]
        if settings.daily_user_cap:
            left, cap = max(settings.daily_user_cap - used, 0), settings.daily_user_cap
            today = _N(
                "You've used {used} of your {cap} daily credits "
                "({left} left; resets at 00:00 UTC).",
                used=used,
                cap=cap,
                left=left,
            )
        else:
            amount = credit_amount(used, locale)
            today = _N("You've used {amount} today (no daily cap).", amount=amount)
        lines.append(today.render(locale))
        lines.append(COST_TABLE.render(locale))
        await reply_private(interaction, "\n".join(lines))

    # -- Manage Server -------------------------------------------------------

    @credits.command(name="history", description="Recent credit movements (Manage Server).")
    async def history(self, interaction: discord.Interaction[Any]) -> None:
        if interaction.guild_id is None or not interaction.permissions.manage_guild:
            await reply_private(interaction, HISTORY_NEEDS_MANAGE_SERVER)
            return
        await defer_private(interaction)
        embed, view = await history_page(self.bot, interaction.guild_id, 0, interaction.locale)
        await interaction.followup.send(
            embed=embed, view=view, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )

    @credits.command(name="usage", description="A chart of credits spent per day and by whom.")
    @app_commands.describe(days=f"How many days back, 1-{MAX_DAYS} (default {DEFAULT_DAYS}).")
    async def usage(
        self,
        interaction: discord.Interaction[Any],
        days: app_commands.Range[int, 1, MAX_DAYS] = DEFAULT_DAYS,
    ) -> None:
        guild_id = interaction.guild_id
        if guild_id is None or not interaction.permissions.manage_guild:
            await reply_private(
                interaction, _N("You need the Manage Server permission to see the usage.")
            )
            return
        await send_usage_chart(self.bot, interaction, days)

    @credits.command(name="limits", description="Show or change members' limits (Manage Server).")
    @app_commands.describe(
        daily_cap="Credits each member may spend per UTC day (0 removes the cap).",
        allow_channel="Allow /imagine in this channel (once any is allowed, only those are).",
        disallow_channel="Remove a channel from the allowed list.",
        all_channels="Allow /imagine in every channel again.",
        block_word="Refuse prompts containing this word or phrase.",
        unblock_word="Stop refusing this word or phrase.",
        low_balance_alert="Post a notice when the balance drops below this (0 turns it off).",
        alert_channel="Where the low-balance notice goes.",
    )
    async def limits(
        self,
        interaction: discord.Interaction[Any],
        daily_cap: app_commands.Range[int, 0, MAX_AMOUNT] | None = None,
        allow_channel: discord.TextChannel | None = None,
        disallow_channel: discord.TextChannel | None = None,
        all_channels: bool | None = None,
        block_word: app_commands.Range[str, 1, 100] | None = None,
        unblock_word: app_commands.Range[str, 1, 100] | None = None,
        low_balance_alert: app_commands.Range[int, 0, MAX_AMOUNT] | None = None,
        alert_channel: discord.TextChannel | None = None,
    ) -> None:
        guild_id = interaction.guild_id
        if guild_id is None or not interaction.permissions.manage_guild:
            await reply_private(
                interaction, _N("You need the Manage Server permission to see or change limits.")
            )
            return
        service = self.bot.guild_settings
        current = await service.get(guild_id)
        changes: dict[str, Any] = {}
        if daily_cap is not None:
            changes["daily_user_cap"] = daily_cap or None
        channels = list(current.allowed_channel_ids)
        if all_channels:
            channels = []
        if allow_channel is not None and allow_channel.id not in channels:
            channels.append(allow_channel.id)
        if disallow_channel is not None and disallow_channel.id in channels:
            channels.remove(disallow_channel.id)
        if tuple(channels) != current.allowed_channel_ids:
            changes["allowed_channel_ids"] = tuple(channels)
        words = list(current.blocked_words)
        keys = [words_key(w) for w in words]
        if block_word is not None and words_key(block_word) and words_key(block_word) not in keys:
            words.append(words_key(block_word))
        if unblock_word is not None and words_key(unblock_word) in keys:
            words.pop(keys.index(words_key(unblock_word)))
        if tuple(words) != current.blocked_words:
            changes["blocked_words"] = tuple(words)
        if low_balance_alert is not None:
            changes["low_balance_threshold"] = low_balance_alert or None
        if alert_channel is not None:
            changes["notice_channel_id"] = alert_channel.id
        settings = await service.update(guild_id, **changes) if changes else current
        if changes:
            log.info(
                "limits changed: %s",
                sorted(changes),
                extra={"guild_id": guild_id, "user_id": interaction.user.id},
            )
        locale = interaction.locale
        head = t(locale, "✅ Limits updated.") if changes else t(locale, "Current limits:")
        lines = [head, limits_text(settings, locale)]
        if allow_channel is not None and cannot_post(allow_channel):
            lines.append(
                t(
                    locale,
                    "⚠️ I can't send messages in {channel}, so I can't post images there: "
                    "give me View Channel and Send Messages in it.",
                    channel=allow_channel.mention,
                )
            )
        if alert_channel is not None and cannot_post(alert_channel):
            lines.append(
                t(
                    locale,
                    "⚠️ I can't send messages in {channel}, so I can't post the alert there: "
                    "give me View Channel and Send Messages in it.",
                    channel=alert_channel.mention,
                )
            )
        await reply_private(interaction, "\n".join(lines))

    # -- bot owners ------------------------------------------------------------

    async def _owner_target(
        self, interaction: discord.Interaction[Any], guild_id: str | None, refusal: str
    ) -> int | None:
        """The server an owner's command changes; None when there is none (the user is told)."""
        user = interaction.user
        if user.id not in self.bot.settings.owner_ids and not await self.bot.is_owner(user):
            await reply_private(interaction, refusal)
            return None
        if guild_id is None:
            return interaction.guild_id
        target = parse_guild_id(guild_id)
        if target is None:
            shown = discord.utils.escape_markdown(guild_id.strip()[:30]) or "(blank)"
            await reply_private(
                interaction,
                _N(
                    "“{shown}” is not a server id. A server id is a number of 15–20 digits "
                    "(with Developer Mode on, right-click the server → Copy Server ID). "
                    "Nothing was changed.",
                    shown=shown,
                ),
            )
        return target

    def _now_has(self, interaction: discord.Interaction[Any], guild_id: int, balance: int) -> str:
        """'<server> now has N credits.', saying so when the bot can't see that server."""
        credits = credit_amount(balance, interaction.locale)
        guild = self.bot.get_guild(guild_id)
        if guild_id == interaction.guild_id:
            text = _N("This server now has {credits}.", credits=credits)
        elif guild is not None:
            name, gid = discord.utils.escape_markdown(guild.name), str(guild_id)
            text = _N("**{name}** (`{gid}`) now has {amount}.", name=name, gid=gid, amount=credits)
        else:
            text = _N(
                "Server `{gid}` now has {credits}. I can't see that server from here "
                "(not added yet, or on another shard); its credits are kept for it.",
                gid=str(guild_id),
                credits=credits,
            )
        return text.render(interaction.locale)

    @credits.command(name="grant", description="Add credits to a server (bot owners only).")
    @app_commands.describe(amount="Credits to add.", **OWNER_OPTIONS)
    async def grant(
        self,
        interaction: discord.Interaction[Any],
        amount: app_commands.Range[int, 1, MAX_AMOUNT],
        guild_id: str | None = None,
        note: app_commands.Range[str, 1, 200] | None = None,
    ) -> None:
        refusal = _N("Only the bot's owners can grant credits.")
        target = await self._owner_target(interaction, guild_id, refusal)
        if target is None:
            return
        balance = await self.bot.ledger.grant(
            target, amount, actor_id=interaction.user.id, note=note
        )
        now_has = self._now_has(interaction, target, balance)
        granted = credit_amount(amount, interaction.locale)
        await reply_private(
            interaction,
            t(
                interaction.locale,
                "🪙 Granted {credits}. {now_has}",
                credits=granted,
                now_has=now_has,
            ),
        )

    @credits.command(name="set", description="Set a server's balance (bot owners only).")
    @app_commands.describe(amount="The new balance.", **OWNER_OPTIONS)
    async def set_balance(
        self,
        interaction: discord.Interaction[Any],
        amount: app_commands.Range[int, 0, MAX_AMOUNT],
        guild_id: str | None = None,
        note: app_commands.Range[str, 1, 200] | None = None,
    ) -> None:
        refusal = _N("Only the bot's owners can set balances.")
        target = await self._owner_target(interaction, guild_id, refusal)
        if target is None:
            return
        balance = await self.bot.ledger.set_balance(
            target, amount, actor_id=interaction.user.id, note=note
        )
        await reply_private(interaction, f"✏️ {self._now_has(interaction, target, balance)}")
