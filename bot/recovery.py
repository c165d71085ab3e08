"""After a crash, settle the jobs whose result was being posted, from the channel itself.

A result's post carries the job id twice (its nonce and its buttons' custom ids), and the job is
marked delivering before it. Such a job left open is committed for the images found in the
channel, or refunded when there are none: never both, never neither.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import discord

from bot.credits import CommitResult, CreditLedger, JobRecord, JobStatus
from bot.job_model import TRANSPORT_ERRORS
from bot.logs import job_context

__all__ = [
    "RECOVERY_REASON",
    "delivery_nonce",
    "result_job_id",
    "settle_deliveries",
    "settle_delivery",
]

log = logging.getLogger(__name__)

#: The namespace of the result buttons' custom ids; the job id is their last part.
RESULT_ID_PREFIX: Final = "imagine:"
#: Read the channel from a little before the earliest delivery (clock skew with
#: Discord), and at most this many messages: recovery must not read a whole channel.
HISTORY_SLACK: Final = timedelta(seconds=2)
HISTORY_LIMIT: Final = 1000
#: Why a job a stopped run left open was refunded (its ``error``).
RECOVERY_REASON: Final = "interrupted by a restart"
NOT_FOUND_REASON: Final = f"{RECOVERY_REASON}; its result was not found in the channel"


def delivery_nonce(job_id: int, part: int = 0) -> str:
    """The nonce of part ``part`` (0: the message with the buttons) of a job's result.

    Derived from the job id alone, so a retried post carries the same nonce and
    Discord (``enforce_nonce``) returns the first message instead of a second one.
    At most 25 characters, Discord's limit, for any 64-bit job id and part < 10.
    """
    return f"im{job_id}p{part}"


def result_job_id(message: discord.Message) -> int | None:
    """The job whose result ``message`` is (its nonce or a button's custom id), if any."""
    nonce = message.nonce
    if isinstance(nonce, str) and re.fullmatch(r"im[0-9]{1,19}p0", nonce):
        return int(nonce[2:-2])
    for row in message.components:
        for child in getattr(row, "children", ()):
            custom_id = getattr(child, "custom_id", None)
            if isinstance(custom_id, str) and custom_id.startswith(RESULT_ID_PREFIX):
                last = custom_id.rsplit(":", 1)[-1]
                if last.isdigit():
                    return int(last)
    return None


@dataclass
class _Found:
    """What the channel shows of one job's result."""

    message_id: int
    images: int


async def _channel(client: discord.Client, channel_id: int) -> discord.abc.Messageable | None:
    """The channel (None: not one that holds messages); raises NotFound when it is gone."""
    channel: Any = client.get_channel(channel_id)
    if channel is None:
        channel = await client.fetch_channel(channel_id)
    return channel if isinstance(channel, discord.abc.Messageable) else None


async def _look(
    client: discord.Client, channel: discord.abc.Messageable, jobs: Sequence[JobRecord]
) -> dict[int, _Found]:
    """The results of ``jobs`` (all of this channel) that the bot's own messages show."""
    assert client.user is not None
    wanted = {job.id for job in jobs}
    since = min(job.delivering_at for job in jobs if job.delivering_at is not None)
    found: dict[int, _Found] = {}
    parts: dict[int, int] = {}  # main message id -> job id, for the continuations
    async for message in channel.history(
        limit=HISTORY_LIMIT, after=since - HISTORY_SLACK, oldest_first=True
    ):
        if message.author.id != client.user.id:
            continue
        job_id = result_job_id(message)
        if job_id in wanted and job_id not in found:
            found[job_id] = _Found(message.id, len(message.attachments))
            parts[message.id] = job_id
            continue
        reference = message.reference
        if reference is not None and reference.message_id in parts:
            found[parts[reference.message_id]].images += len(message.attachments)
    return found


async def settle_deliveries(
    client: discord.Client, ledger: CreditLedger, jobs: Sequence[JobRecord]
) -> list[JobRecord]:
    """Commit each job whose result is in its channel, refund the others.

    Returns the jobs refunded now, for the caller to tell their requesters. A
    channel that cannot be read for a passing reason (Discord down) leaves its
    jobs open for the next start; a channel that is gone or hidden from the bot
    holds no result anyone can see, so its jobs are refunded.
    """
    by_channel: dict[int, list[JobRecord]] = defaultdict(list)
    for job in jobs:
        if job.delivering:
            by_channel[job.channel_id].append(job)
    refunded: list[JobRecord] = []
    for channel_id, group in by_channel.items():
        for result in (await _settle_channel(client, ledger, channel_id, group)).values():
            if result.job.status is JobStatus.REFUNDED and result.refunded:
                refunded.append(result.job)
    return refunded


async def settle_delivery(
    client: discord.Client, ledger: CreditLedger, job: JobRecord
) -> CommitResult | None:
    """Settle one job marked delivering from its channel, as :func:`settle_deliveries`
    does; None when the channel cannot be read now (the job stays open)."""
    return (await _settle_channel(client, ledger, job.channel_id, [job])).get(job.id)


async def _settle_channel(
    client: discord.Client, ledger: CreditLedger, channel_id: int, group: Sequence[JobRecord]
) -> dict[int, CommitResult]:
    """Settle ``group`` (all of ``channel_id``); nothing when the channel cannot be read now."""
    try:
        channel = await _channel(client, channel_id)
        found = {} if channel is None else await _look(client, channel, group)
    except (discord.NotFound, discord.Forbidden) as error:
        log.warning("channel %d cannot be read (%s): refunding", channel_id, error.status)
        found = {}
    except (discord.HTTPException, *TRANSPORT_ERRORS) as error:
        log.error(
            "could not read channel %d (%s); %d delivery(ies) left for the next start",
            channel_id,
            getattr(error, "status", type(error).__name__),
            len(group),
        )
        return {}
    settled: dict[int, CommitResult] = {}
    for job in group:
        context = job_context(guild_id=job.guild_id, user_id=job.user_id, job_id=job.id)
        evidence = found.get(job.id)
        if evidence is None:
            settled[job.id] = await ledger.refund(job, NOT_FOUND_REASON)
            log.warning("interrupted delivery not in the channel: refunded", extra=context)
            continue
        images = min(max(evidence.images, 1), job.images_total)
        settled[job.id] = await ledger.commit(job, images, message_id=evidence.message_id)
        log.warning(
            "interrupted delivery found in the channel: committed %d image(s)",
            images,
            extra=context,
        )
    return settled
