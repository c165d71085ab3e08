"""The Discord side of a job: the requester's private status line and the public result.

The result is a channel message, not an interaction reply, so it is posted even after the
interaction token's 15 minutes. Everything shown comes from the queue: no ledger here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import discord

from bot.credits import CommitResult
from bot.i18n import _NP, render, t, tn
from bot.image_store import HeldImage
from bot.job_model import TRANSPORT_ERRORS, UnclearDelivery
from bot.jobs import Delivered, Job, JobProgress
from bot.recovery import delivery_nonce

from ._buttons import result_view
from ._render import PreparedFile, pack_files, prepare_files, result_embed, status_text

__all__ = ["ChannelDelivery", "StatusMessage", "tell_in_channel"]

log = logging.getLogger(__name__)

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


async def tell_in_channel(
    channel: discord.abc.Messageable, user_id: int, locale: discord.Locale | None, text: str
) -> None:
    """``text`` for the member, in the channel: Discord no longer takes a private answer."""
    await channel.send(
        f"<@{user_id}> {render(locale, text)}", allowed_mentions=discord.AllowedMentions.none()
    )


class StatusMessage:
    """The requester's private status line (the deferred response), edited at most once per
    ``min_interval``: only the newest text goes out, and the final text always does."""

    def __init__(self, interaction: discord.Interaction[Any], *, min_interval: float = 1.0) -> None:
        self._interaction = interaction
        self._min_interval = min_interval
        self._pending: str | None = None
        self._last_edit = 0.0
        self._task: asyncio.Task[None] | None = None
        self.alive = True

    @property
    def editable(self) -> bool:
        """False once Discord refused an edit or the 15-minute token is over."""
        return self.alive and not self._interaction.is_expired()

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
        while self._pending is not None and self.alive:
            wait = self._last_edit + self._min_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # throttling, not synchronisation
            text, self._pending = self._pending, None
            if self._interaction.is_expired():
                # Past the token's 15 minutes: Discord would refuse it; save the request.
                self.alive = False
                break
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
        interaction: discord.Interaction[Any],
        channel: discord.abc.Messageable,
        *,
        acknowledged: bool,
    ) -> None:
        """``acknowledged``: the interaction was deferred, its response is the status line;
        else Discord refused it as too late, and what the member must hear goes to the channel."""
        self._channel = channel
        self._status = StatusMessage(interaction)
        self._status.alive = acknowledged
        # The requester reads the status line; everyone in the channel reads the result.
        self._locale = interaction.locale
        self._guild_locale = interaction.guild_locale
        guild = interaction.guild
        self._upload_limit = guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT
        self._message: discord.Message | None = None
        self._note = ""
        #: The images posted when a later part of the result failed (None: all went out).
        self._posted: int | None = None

    @property
    def shows_progress(self) -> bool:
        return self._status.editable

    async def progress(self, job: Job, progress: JobProgress) -> None:
        self._status.show(status_text(progress, job.record.cost, self._locale))

    async def deliver(self, job: Job, images: Sequence[HeldImage], balance: int) -> Delivered:
        files = await prepare_files(images, self._upload_limit)
        groups = pack_files(files, self._upload_limit)
        missing = job.total - len(images)
        refund_to_come = missing * job.record.units_per_image

        def embed_for(shown: Sequence[PreparedFile], refunded: int) -> discord.Embed:
            return result_embed(
                job_id=job.id,
                request=job.request,
                seeds=[file.seed for file in shown if file.seed is not None],
                cost=job.record.cost - refunded,
                balance=balance + refunded - refund_to_come,
                requester_id=job.record.user_id,
                locale=self._guild_locale,
            )

        embed = embed_for(files, refund_to_come)
        content = f"🎨 <@{job.record.user_id}>"
        if missing:
            self._note = _NP(
                "{made} of {total} images were made; {count} credit for the rest was refunded.",
                "{made} of {total} images were made; {count} credits for the rest were refunded.",
                refund_to_come,
                made=len(images),
                total=job.total,
            )
            content += f" {render(self._guild_locale, self._note)}"
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
                        view=result_view(job.id, self._guild_locale),
                        allowed_mentions=discord.AllowedMentions.none(),
                        nonce=nonce,
                    )
                    self._message = message
                elif self._message is not None:
                    await self._channel.send(
                        t(
                            self._guild_locale,
                            "Job #{job_id}, continued ({part}/{parts})",
                            job_id=str(job.id),
                            part=number + 1,
                            parts=len(groups),
                        ),
                        files=[file.to_file() for file in group],
                        allowed_mentions=discord.AllowedMentions.none(),
                        reference=self._message,
                        mention_author=False,
                        nonce=nonce,
                    )
            except (discord.HTTPException, *TRANSPORT_ERRORS) as error:
                if delivered == 0:
                    if isinstance(error, discord.HTTPException):
                        raise  # Discord answered: nothing was posted
                    raise UnclearDelivery() from error
                # What went out is the member's (with its buttons): keep it, refund the rest.
                log.warning(
                    "could not post part %d of the result",
                    number + 1,
                    exc_info=True,
                    extra=job.context,
                )
                self._posted = delivered
                break
            delivered += len(group)
        if self._posted is not None and self._message is not None:
            # The result showed every image as charged: it now shows what went out.
            shown = [file for group in groups[:number] for file in group]
            refunded = refund_to_come + (len(images) - delivered) * job.record.units_per_image
            try:
                await self._message.edit(
                    embed=embed_for(shown, refunded),
                    allowed_mentions=discord.AllowedMentions.none(),
                )
            except (discord.HTTPException, *TRANSPORT_ERRORS):
                log.warning("could not correct the result's cost", exc_info=True, extra=job.context)
        return Delivered(delivered, self._message.id if self._message is not None else None)

    async def finished(self, job: Job, result: CommitResult) -> None:
        link = f" {self._message.jump_url}" if self._message is not None else ""
        text = tn(
            self._locale,
            "✅ Done!{link} {count} credit spent, {balance} left.",
            "✅ Done!{link} {count} credits spent, {balance} left.",
            result.committed,
            link=link,
            balance=result.balance,
        )
        if self._posted is not None:
            text += " " + tn(
                self._locale,
                "Only {posted} of {total} images could be posted; {count} credit for the rest "
                "was refunded.",
                "Only {posted} of {total} images could be posted; {count} credits for the rest "
                "were refunded.",
                result.refunded,
                posted=self._posted,
                total=job.total,
            )
        elif self._note:
            text += f" {render(self._locale, self._note)}"
        await self._status.final(text)

    async def failed(self, job: Job, message: str, refunded: int) -> None:
        if await self._status.final(self._failure(job, message, refunded, self._locale)):
            return
        # No private status (token expired, or never acknowledged): tell them in the channel.
        text = self._failure(job, message, refunded, self._guild_locale)
        await tell_in_channel(self._channel, job.record.user_id, self._guild_locale, text)

    @staticmethod
    def _failure(job: Job, message: str, refunded: int, locale: discord.Locale | None) -> str:
        reason = render(locale, message)
        if refunded:
            return tn(
                locale,
                "❌ {reason} {count} credit refunded. (job #{job_id})",
                "❌ {reason} {count} credits refunded. (job #{job_id})",
                refunded,
                reason=reason,
                job_id=str(job.id),
            )
        return t(locale, "❌ {reason} (job #{job_id})", reason=reason, job_id=str(job.id))
