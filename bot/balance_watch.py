"""A watch on the bot's own Segmind balance (the API's ``x-remaining-credits``, dollars).

:class:`BalanceWatch` (pure) turns every reported balance into at most one notice per
crossing of ``SEGMIND_BALANCE_ALERT``, down or back up; :func:`tell_owners` sends it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

import discord

from bot.i18n import t

__all__ = ["STATE_KEY", "BalanceNotice", "BalanceState", "BalanceWatch", "tell_owners"]

log = logging.getLogger(__name__)

#: The app-state key holding the last state across restarts.
STATE_KEY: Final = "segmind:balance_state"


class BalanceState(StrEnum):
    UNKNOWN = "unknown"  # nothing reported yet since start-up (and nothing stored)
    OK = "ok"
    LOW = "low"


@dataclass(frozen=True)
class BalanceNotice:
    """What the owners are told: the balance fell below the threshold, or was refilled."""

    kind: Literal["low", "refilled"]
    balance: float
    threshold: float

    @property
    def text(self) -> str:
        # Owners read English (no locale): their DMs are not tied to a server.
        balance, threshold = f"{self.balance:,.2f}", f"{self.threshold:,.2f}"
        if self.kind == "low":
            return t(
                None,
                "⚠️ The bot's Segmind account is running low: ${balance} left "
                "(alert below ${threshold}). Top it up in your Segmind account, "
                "or /imagine will stop working when it is empty.",
                balance=balance,
                threshold=threshold,
            )
        return t(
            None,
            "✅ The bot's Segmind account was topped up: ${balance} left "
            "(alert below ${threshold}).",
            balance=balance,
            threshold=threshold,
        )


class BalanceWatch:
    """The low/refilled decision; ``threshold`` 0 turns the watch off."""

    def __init__(self, threshold: float, state: BalanceState = BalanceState.UNKNOWN) -> None:
        self.threshold = threshold
        self.state = state

    def observe(self, balance: float) -> BalanceNotice | None:
        """Record a reported balance; a notice when it crossed the threshold, else None."""
        if self.threshold <= 0:
            return None
        if balance < self.threshold:
            if self.state is BalanceState.LOW:
                return None
            self.state = BalanceState.LOW
            return BalanceNotice("low", balance, self.threshold)
        was_low = self.state is BalanceState.LOW
        self.state = BalanceState.OK
        return BalanceNotice("refilled", balance, self.threshold) if was_low else None


async def tell_owners(
    client: discord.Client, owner_ids: Iterable[int], channel_id: int | None, text: str
) -> int:
    """Send ``text`` in ``channel_id`` when set, else by DM to each owner: the
    application's owner (or its team) and ``owner_ids``.

    Returns how many messages were sent; a failure is logged (DMs closed, channel gone)
    and the others still go out.
    """
    if channel_id is not None:
        try:
            channel = client.get_channel(channel_id) or await client.fetch_channel(channel_id)
            if not isinstance(channel, discord.abc.Messageable):
                log.warning("SEGMIND_ALERT_CHANNEL_ID %d is not a text channel", channel_id)
                return 0
            await channel.send(text, allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException as error:
            log.warning(
                "could not post the Segmind balance notice in channel %d (%s)",
                channel_id,
                error.status,
            )
            return 0
        return 1
    sent = 0
    for user_id in await _owners(client, owner_ids):
        try:
            user = client.get_user(user_id) or await client.fetch_user(user_id)
            await user.send(text, allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException as error:
            log.warning(
                "could not DM the Segmind balance notice to owner %d (%s)", user_id, error.status
            )
            continue
        sent += 1
    return sent


async def _owners(client: discord.Client, owner_ids: Iterable[int]) -> list[int]:
    owners = list(owner_ids)
    try:
        info = await client.application_info()
    except discord.HTTPException as error:
        log.warning("could not look up the application's owner (%s)", error.status)
    else:
        owners += [m.id for m in info.team.members] if info.team else [info.owner.id]
    return list(dict.fromkeys(owners))
