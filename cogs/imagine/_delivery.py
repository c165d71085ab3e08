"""The Discord side of a job: a throttled private status line and the public result message.

The command is deferred ephemerally, so the status ("Queued: #3 in line",
"Generating 2/4…") and any error are seen by the requester only, while the
result is posted to the channel for everyone. The result is a channel message,
not an interaction reply, so it is delivered even when the job ends after the
interaction token's 15 minutes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import discord

from bot.credits import CommitResult
from bot.image_store import HeldImage
from bot.jobs import Job, JobProgress
from bot.recovery import delivery_nonce

from ._buttons import result_view
from ._render import pack_files, plural, prepare_files, result_embed, status_text

if TYPE_CHECKING:
    from bot.app import ImagineBot

__all__ = ["ChannelDelivery", "StatusMessage", "acknowledged"]

log = logging.getLogger(__name__)

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


async def acknowledged(defer: asyncio.Future[bool]) -> bool:
    """Wait for the interaction's defer; True if Discord accepted it."""
    if not defer.done():
        # asyncio.wait, unlike await, leaves the defer running if the waiter is
        # cancelled: a queued job's status line still waits on it.
        await asyncio.wait((defer,))
    return not defer.cancelled() and defer.exception() is None and defer.result()


class StatusMessage:
    """The requester's private status line, edited at most once per ``min_interval``.

    Only the newest text matters, so updates that arrive while an edit is
    throttled replace each other; the final text always goes out.

    The line is the interaction's deferred response, and the job starts while
    that defer is still in flight: ``acknowledged`` (the defer's outcome, None
    for already answered) is awaited before the first edit. When it reports
    False there never was a line to edit: the status is dead from the start
    (``alive`` False), as after the token's 15 minutes, so failures are told in
    the channel instead.
    """

    def __init__(
        self,
        interaction: discord.Interaction[Any],
        acknowledged: asyncio.Future[bool] | None = None,
        *,
        min_interval: float = 1.0,
    ) -> None:
        self._interaction = interaction
        self._acknowledged = acknowledged
        self._min_interval = min_interval
        self._pending: str | None = None
        self._last_edit = 0.0
        self._task: asyncio.Task[None] | None = None
        self.alive = True

    def show(self, text: str) -> None:
        self._pending = text
        if self.alive and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def final(self, text: str) -> bool:
        """Show ``text`` now (after any edit in progress); False if Discord refused it."""
        self.show(text)
        if self._task is not None:
            await self._task
        return self.alive

    async def _flush(self) -> None:
        # Before the defer's answer there is no message to edit yet (Unknown Webhook, which
        # would kill the line); after a failed defer there never will be.
        if self._acknowledged is not None and not await acknowledged(self._acknowledged):
            self.alive = False
            return
        while self._pending is not None and self.alive:
            wait = self._last_edit + self._min_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # throttling, not synchronisation
            text, self._pending = self._pending, None
            try:
                await self._interaction.edit_original_response(
                    content=text, allowed_mentions=discord.AllowedMentions.none()
                )
            except discord.HTTPException as error:
                # Usually the 15-minute token expiring; later notices go to the channel.
                log.info("status message no longer editable (%s %s)", error.status, error.code)
                self.alive = False
            self._last_edit = time.monotonic()


class ChannelDelivery:
    """Implements :class:`bot.jobs.JobDelivery` for a job started from an interaction."""

    def __init__(
        self,
        bot: ImagineBot,
        interaction: discord.Interaction[Any],
        channel: discord.abc.Messageable,
        *,
        acknowledged: asyncio.Future[bool] | None = None,
    ) -> None:
        """``acknowledged``: the interaction's defer, possibly still in flight (see
        :class:`StatusMessage`)."""
        self._bot = bot
        self._channel = channel
        self._status = StatusMessage(interaction, acknowledged)
        guild = interaction.guild
        self._upload_limit = guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT
        self._message: discord.Message | None = None
        self._note = ""
        self._shown_progress = False

    async def progress(self, job: Job, progress: JobProgress) -> None:
        if progress.state == "generating" and progress.done == 0 and not self._shown_progress:
            # Started at once: Discord's own "thinking…" already says it; one edit saved.
            return
        self._shown_progress = True
        self._status.show(status_text(progress, job.record.cost))

    async def deliver(self, job: Job, images: Sequence[HeldImage]) -> int:
        files = await prepare_files(images, self._upload_limit)
        groups = pack_files(files, self._upload_limit)
        missing = job.total - len(images)
        refund_to_come = missing * job.record.units_per_image
        balance = await self._bot.ledger.balance(job.record.guild_id) + refund_to_come
        seeds = [file.seed for file in files if file.seed is not None]
        embed = result_embed(
            job_id=job.id,
            request=job.request,
            seeds=seeds,
            cost=job.record.cost - refund_to_come,
            balance=balance,
            requester_id=job.record.user_id,
        )
        content = f"🎨 <@{job.record.user_id}>"
        if missing:
            self._note = (
                f"{len(images)} of {job.total} images were made; "
                f"{plural(refund_to_come, 'credit')} for the rest "
                f"{'was' if refund_to_come == 1 else 'were'} refunded."
            )
            content += f" {self._note}"
        delivered = 0
        for number, group in enumerate(groups):
            # The same nonce on a retried post (discord.py retries 5xx) makes Discord
            # return the first message, with enforce_nonce, instead of posting twice.
            nonce = delivery_nonce(job.id, number)
            try:
                if number == 0:
                    message = await self._channel.send(
                        content,
                        embed=embed,
                        files=[file.to_file() for file in group],
                        view=result_view(job.id),
                        allowed_mentions=discord.AllowedMentions.none(),
                        nonce=nonce,
                    )
                    self._message = message
                elif self._message is not None:
                    await self._channel.send(
                        f"Job #{job.id}, continued ({number + 1}/{len(groups)})",
                        files=[file.to_file() for file in group],
                        allowed_mentions=discord.AllowedMentions.none(),
                        reference=self._message,
                        mention_author=False,
                        nonce=nonce,
                    )
            except discord.HTTPException:
                if delivered == 0:
                    raise
                log.warning(
                    "could not post part %d of the result",
                    number + 1,
                    exc_info=True,
                    extra=job.context,
                )
                break
            delivered += len(group)
        if self._message is not None:
            try:
                await self._bot.ledger.set_message(job.id, self._message.id)
            except Exception:  # the buttons carry the job id, so this is only bookkeeping
                log.warning(
                    "could not record the result message id", exc_info=True, extra=job.context
                )
        return delivered

    async def finished(self, job: Job, result: CommitResult) -> None:
        link = f" {self._message.jump_url}" if self._message is not None else ""
        text = f"✅ Done!{link} {plural(result.committed, 'credit')} spent, {result.balance} left."
        if self._note:
            text += f" {self._note}"
        await self._status.final(text)

    async def failed(self, job: Job, message: str, refunded: int) -> None:
        refund = f" {plural(refunded, 'credit')} refunded." if refunded else ""
        text = f"❌ {message}{refund} (job #{job.id})"
        if await self._status.final(text):
            return
        # The private status is gone (token expired): tell the requester in the channel.
        await self._channel.send(
            f"<@{job.record.user_id}> {text}", allowed_mentions=discord.AllowedMentions.none()
        )
