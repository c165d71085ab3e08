"""What ``/credits`` says: amounts, ledger lines and the limits summary, in the reader's locale."""

from __future__ import annotations

import discord

from bot.credits import GuildSettings, LedgerEntry
from bot.i18n import _N, LocaleLike, t, tn

__all__ = ["COST_TABLE", "credit_amount", "entry_line", "limits_text"]

COST_TABLE = _N(
    "1 credit per 512×512 image · 2 per 512×1024 or 1024×512 · 4 per 1024×1024. "
    "`samples` multiplies the cost."
)
_SIGNS = {"grant": "🪙", "set": "✏️", "reserve": "⏳", "refund": "↩️", "commit": "✅"}


def credit_amount(count: int, locale: LocaleLike) -> str:
    return tn(locale, "{count} credit", "{count} credits", count)


def entry_line(entry: LedgerEntry, locale: LocaleLike = None) -> str:
    when = f"<t:{int(entry.created_at.timestamp())}:R>"
    delta = f"{entry.delta:+,}" if entry.delta else "±0"
    parts = [f"{_SIGNS.get(entry.kind.value, '•')} `{delta:>6}` {entry.kind.value}", when]
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
