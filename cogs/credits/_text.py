"""The text ``/credits`` shows, in the reader's locale: amounts, ledger lines, limits, the cost
table; and the parsing of what owners type (server ids, blocked words)."""

from __future__ import annotations

import re

import discord

from bot.credits import LedgerEntry
from bot.guild_settings import GuildSettings
from bot.i18n import _N, LocaleLike, render, t, tn

__all__ = [
    "COST_TABLE",
    "cannot_post",
    "credit_amount",
    "entry_line",
    "limits_text",
    "parse_guild_id",
    "words_key",
]

COST_TABLE = _N(
    "1 credit per 512×512 image · 2 per 512×1024 or 1024×512 · 4 per 1024×1024. "
    "`samples` multiplies the cost."
)
_SNOWFLAKE = re.compile(r"[0-9]{15,20}")
_MAX_SNOWFLAKE = 2**63 - 1  # what the ledger (SQLite / PostgreSQL BIGINT) can hold
_SIGNS = {"grant": "🪙", "set": "✏️", "reserve": "⏳", "refund": "↩️", "commit": "✅"}
#: The ledger's entry kinds as a reader sees them (the stored kind stays English).
_KINDS = {
    "grant": _N("grant"),
    "set": _N("set"),
    "reserve": _N("reserve"),
    "refund": _N("refund"),
    "commit": _N("commit"),
}


def credit_amount(count: int, locale: LocaleLike) -> str:
    return tn(locale, "{count} credit", "{count} credits", count)


def entry_line(entry: LedgerEntry, locale: LocaleLike = None) -> str:
    when = f"<t:{int(entry.created_at.timestamp())}:R>"
    delta = f"{entry.delta:+,}" if entry.delta else "±0"
    kind = entry.kind.value
    shown = render(locale, _KINDS.get(kind, kind))
    parts = [f"{_SIGNS.get(kind, '•')} `{delta:>6}` {shown}", when]
    if entry.user_id:
        parts.append(f"<@{entry.user_id}>")
    if entry.job_id:
        parts.append(t(locale, "job #{job_id}", job_id=str(entry.job_id)))
    if entry.actor_id:
        actor = f"<@{entry.actor_id}>"
        parts.append(t(locale, "by {member}", member=actor))
    if entry.note:
        parts.append(discord.utils.escape_markdown(entry.note[:80]))
    return " · ".join(parts)


def words_key(word: str) -> str:
    """How blocked words compare: case-insensitive, runs of spaces as one (as the ledger does)."""
    return " ".join(word.split()).casefold()


def parse_guild_id(text: str) -> int | None:
    """A server id typed by an owner, or None when it cannot be one."""
    text = text.strip()
    if not _SNOWFLAKE.fullmatch(text):
        return None
    value = int(text)
    return value if 0 < value <= _MAX_SNOWFLAKE else None


def cannot_post(channel: discord.abc.GuildChannel) -> bool:
    me: discord.Member | None = channel.guild.me  # None while the guild is not cached yet
    if me is None:
        return False
    permissions = channel.permissions_for(me)
    return not (permissions.view_channel and permissions.send_messages)


def limits_text(settings: GuildSettings, locale: LocaleLike = None) -> str:
    cap = (
        credit_amount(settings.daily_user_cap, locale)
        if settings.daily_user_cap
        else t(locale, "no cap")
    )
    channels = (
        ", ".join(f"<#{cid}>" for cid in settings.allowed_channel_ids)
        if settings.allowed_channel_ids
        else t(locale, "every channel")
    )
    words = ", ".join(f"`{w}`" for w in settings.blocked_words) or t(locale, "none")
    if settings.low_balance_threshold is None:
        alert = t(locale, "off")
    elif settings.notice_channel_id is None:
        alert = t(
            locale,
            "below {credits}, but no channel is set: choose one with `alert_channel`",
            credits=credit_amount(settings.low_balance_threshold, locale),
        )
    else:
        channel = f"<#{settings.notice_channel_id}>"
        alert = t(
            locale,
            "below {credits} in {channel}",
            credits=credit_amount(settings.low_balance_threshold, locale),
            channel=channel,
        )
    return t(
        locale,
        "**Daily cap per member:** {cap}\n**Allowed channels:** {channels}\n"
        "**Blocked words:** {words}\n**Low-balance alert:** {alert}",
        cap=cap,
        channels=channels,
        words=words,
        alert=alert,
    )
