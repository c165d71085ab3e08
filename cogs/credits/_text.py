"""The text ``/credits`` shows: ledger lines, limits, the cost table; and the parsing of
what owners type (server ids, blocked words)."""

from __future__ import annotations

import re

import discord

from bot.credits import GuildSettings, LedgerEntry

__all__ = [
    "COST_TABLE",
    "cannot_post",
    "entry_line",
    "limits_text",
    "parse_guild_id",
    "plural",
    "words_key",
]

COST_TABLE = (
    "1 credit per 512×512 image · 2 per 512×1024 or 1024×512 · 4 per 1024×1024. "
    "`samples` multiplies the cost."
)
_SNOWFLAKE = re.compile(r"[0-9]{15,20}")
_MAX_SNOWFLAKE = 2**63 - 1  # what the ledger (SQLite / PostgreSQL BIGINT) can hold
_SIGNS = {"grant": "🪙", "set": "✏️", "reserve": "⏳", "refund": "↩️", "commit": "✅"}


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def entry_line(entry: LedgerEntry) -> str:
    when = f"<t:{int(entry.created_at.timestamp())}:R>"
    delta = f"{entry.delta:+,}" if entry.delta else "±0"
    parts = [f"{_SIGNS.get(entry.kind.value, '•')} `{delta:>6}` {entry.kind.value}", when]
    if entry.user_id:
        parts.append(f"<@{entry.user_id}>")
    if entry.job_id:
        parts.append(f"job #{entry.job_id}")
    if entry.actor_id:
        parts.append(f"by <@{entry.actor_id}>")
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


def limits_text(settings: GuildSettings) -> str:
    cap = plural(settings.daily_user_cap, "credit") if settings.daily_user_cap else "no cap"
    channels = (
        ", ".join(f"<#{cid}>" for cid in settings.allowed_channel_ids)
        if settings.allowed_channel_ids
        else "every channel"
    )
    words = ", ".join(f"`{w}`" for w in settings.blocked_words) or "none"
    if settings.low_balance_threshold is None:
        alert = "off"
    elif settings.notice_channel_id is None:
        alert = (
            f"below {plural(settings.low_balance_threshold, 'credit')}, but no channel is set: "
            "choose one with `alert_channel`"
        )
    else:
        alert = (
            f"below {plural(settings.low_balance_threshold, 'credit')} "
            f"in <#{settings.notice_channel_id}>"
        )
    return (
        f"**Daily cap per member:** {cap}\n**Allowed channels:** {channels}\n"
        f"**Blocked words:** {words}\n**Low-balance alert:** {alert}"
    )
