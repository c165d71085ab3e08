"""The ``/imagine`` command and the shared path every new job takes (command, Reroll, Edit).

Checks that need nothing answer at once; then the private defer goes out inside
Discord's 3 seconds, the server's rules are checked against its cached settings, and
only then are credits reserved and the job queued. Nothing is spent until every
check has passed.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.credits import JobRecord
from bot.errors import UserFacingError
from bot.guild_settings import GuildSettings
from bot.i18n import _N, _NP, Message
from bot.jobs import QueueBusy
from bot.logs import job_context
from bot.permission_names import permission_names
from bot.replies import defer_private, reply_private
from bot.segmind import MAX_SEED, InvalidRequest, Txt2ImgRequest, build_request
from bot.storage import StorageError

from ._buttons import DYNAMIC_ITEMS
from ._delivery import ChannelDelivery, tell_in_channel
from ._notices import low_balance_notice

if TYPE_CHECKING:
    from bot.app import ImagineBot

__all__ = ["ImagineCog"]

log = logging.getLogger(__name__)

DM_MESSAGE = _N(
    "🖼️ /imagine works in servers: image credits belong to each server. "
    "Use it in a server channel where I'm present."
)

#: The request parameters a job stores and a Reroll or Edit copies.
REQUEST_FIELDS = (
    "prompt",
    "negative_prompt",
    "scheduler",
    "samples",
    "num_inference_steps",
    "guidance_scale",
    "seed",
    "img_width",
    "img_height",
)


def _missing_bot_permissions(interaction: discord.Interaction[Any]) -> list[str]:
    perms = interaction.app_permissions
    in_thread = isinstance(interaction.channel, discord.Thread)
    # Flags, named as Discord names them in the member's language at reply time.
    send = "send_messages_in_threads" if in_thread else "send_messages"
    wanted = ("view_channel", send, "attach_files", "embed_links")
    return [flag for flag in wanted if not getattr(perms, flag)]


@functools.lru_cache(maxsize=256)
def _blocked_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    """One pattern for a server's whole list, compiled once per list: one search per request,
    and up to 500 words would overflow ``re``'s own cache. Longest first: "blood bath" wins."""
    alternatives = "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def _blocked_word(settings: GuildSettings, request: Txt2ImgRequest) -> str | None:
    """A blocked word found (as a whole word, any case) in the prompts, as the server wrote it."""
    if not settings.blocked_words:
        return None
    text = f"{request.prompt}\n{request.negative_prompt or ''}"
    found = _blocked_pattern(settings.blocked_words).search(text)
    if found is None:
        return None
    matched = found.group(0).casefold()
    return next((w for w in settings.blocked_words if w.casefold() == matched), found.group(0))


def server_rules_refusal(
    settings: GuildSettings, channel: discord.abc.Messageable, request: Txt2ImgRequest
) -> Message | None:
    """Why the server's own rules (allowed channels, blocked words) refuse this request."""
    allowed = settings.allowed_channel_ids
    # A thread counts as the channel it lives in.
    here = {getattr(channel, "id", None), getattr(channel, "parent_id", None)}
    if allowed and not here & set(allowed):
        where = ", ".join(f"<#{cid}>" for cid in allowed[:10])
        return _N("Image generation is turned off in this channel. Try {channels}.", channels=where)
    word = _blocked_word(settings, request)
    if word is not None:
        return _N(
            "Your prompt contains “{word}”, which this server has blocked. Nothing was charged.",
            word=word,
        )
    return None


async def _defer(interaction: discord.Interaction[Any]) -> bool:
    """Defer ``interaction`` privately; False (logged) if Discord refused, usually as too late."""
    if interaction.response.is_done():
        return True
    try:
        await defer_private(interaction)
    except discord.HTTPException as error:
        context = job_context(guild_id=interaction.guild_id, user_id=interaction.user.id)
        log.warning(
            "could not acknowledge /imagine (%s %s)", error.status, error.code, extra=context
        )
        return False
    return True


class ImagineCog(commands.Cog, name="Imagine"):
    """``/imagine`` and its persistent result buttons."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*DYNAMIC_ITEMS)
        self.bot.imagine = self

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*DYNAMIC_ITEMS)
        self.bot.imagine = None

    @app_commands.command(
        name="imagine", description="Turn a prompt into images with Kandinsky 2.1."
    )
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=True)
    @app_commands.allowed_installs(guilds=True, users=False)
    @app_commands.describe(
        prompt="What to draw (up to 1000 characters).",
        negative_prompt="What to keep out of the image.",
        scheduler="Sampling scheduler (default DDIM).",
        samples="How many images, 1-8 (default 1). Each costs credits.",
        num_inference_steps="Denoising steps, 10-40 (default 25): more is slower but finer.",
        guidance_scale="How closely to follow the prompt, 1-20 (default 7.5).",
        seed="Seed for a reproducible image, 0-4294967295 (default: random).",
        img_width="Width in pixels (default 512). 1024 costs more.",
        img_height="Height in pixels (default 512). 1024 costs more.",
    )
    async def imagine(
        self,
        interaction: discord.Interaction[Any],
        prompt: app_commands.Range[str, 1, 1000],
        negative_prompt: app_commands.Range[str, 1, 1000] | None = None,
        scheduler: Literal["DDIM", "P-Sampler"] | None = None,
        samples: app_commands.Range[int, 1, 8] | None = None,
        num_inference_steps: app_commands.Range[int, 10, 40] | None = None,
        guidance_scale: app_commands.Range[float, 1.0, 20.0] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        img_width: Literal[512, 1024] | None = None,
        img_height: Literal[512, 1024] | None = None,
    ) -> None:
        self.bot.metrics.interactions.labels(type="command").inc()
        values = {
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            "scheduler": scheduler,
            "samples": samples,
            "num_inference_steps": num_inference_steps,
            "guidance_scale": guidance_scale,
            "seed": seed,
            "img_width": img_width,
            "img_height": img_height,
        }
        await self.launch(interaction, values)

    # -- the one path to a new job -------------------------------------------

    async def launch(
        self,
        interaction: discord.Interaction[Any],
        values: Mapping[str, object],
        *,
        parent_job_id: int | None = None,
    ) -> None:
        """Validate, defer (awaited), check the server's rules, reserve and queue a job."""
        guild = interaction.guild
        channel = interaction.channel
        if guild is None or channel is None or not isinstance(channel, discord.abc.Messageable):
            await reply_private(interaction, DM_MESSAGE)
            return
        try:
            request = build_request(**{k: v for k, v in values.items() if v is not None})
        except InvalidRequest as error:
            await reply_private(
                interaction, _N("That request can't be made: {reason}", reason=error.user_message)
            )
            return
        missing = _missing_bot_permissions(interaction)
        if missing:
            names = permission_names(missing, interaction.locale)
            await reply_private(
                interaction,
                _NP(
                    "I need the {permissions} permission in this channel to post images. "
                    "Ask a server admin to grant it. Nothing was charged.",
                    "I need the {permissions} permissions in this channel to post images. "
                    "Ask a server admin to grant them. Nothing was charged.",
                    len(missing),
                    permissions=names,
                ),
            )
            return
        if not self.bot.accepting_jobs:
            await reply_private(
                interaction,
                _N("The bot is restarting. Nothing was charged; please try again in a minute."),
            )
            return
        try:
            # Over the bot-wide cap: say so at once, as the first response; nothing is spent.
            self.bot.jobs.backlog.check_room(request.samples)
        except QueueBusy as error:
            await reply_private(interaction, error.user_message)
            return
        # Refused (usually as too late): the job still runs and the channel hears the rest.
        deferred = await _defer(interaction)
        settings = await self.bot.guild_settings.get(guild.id)
        refusal: str | None = server_rules_refusal(settings, channel, request)
        if refusal is None:
            delivery = ChannelDelivery(interaction, channel, acknowledged=deferred)
            refusal = await self._queue(
                interaction, guild, delivery, request, settings, parent_job_id
            )
        if refusal is not None and not (deferred and await reply_private(interaction, refusal)):
            await tell_in_channel(channel, interaction.user.id, interaction.guild_locale, refusal)

    async def _queue(
        self,
        interaction: discord.Interaction[Any],
        guild: discord.Guild,
        delivery: ChannelDelivery,
        request: Txt2ImgRequest,
        settings: GuildSettings,
        parent_job_id: int | None,
    ) -> str | None:
        """Reserve and queue; the refusal to send privately, if any."""
        try:
            await self.bot.jobs.enqueue(
                guild_id=guild.id,
                channel_id=interaction.channel_id or 0,
                user_id=interaction.user.id,
                request=request,
                delivery=delivery,
                parent_job_id=parent_job_id,
            )
        except UserFacingError as error:
            # Rendered where it is sent: privately in the member's language, else the server's.
            return error.user_message
        try:
            await low_balance_notice(self.bot, guild, settings)
        except StorageError as error:
            # The job is queued and will run: an unchecked notice must not become an apology.
            log.warning(
                "could not check the low-balance notice: %s",
                error,
                extra=job_context(guild_id=guild.id),
            )
        return None

    # -- button actions ------------------------------------------------------

    @staticmethod
    def _request_of(job: JobRecord) -> dict[str, object]:
        return {name: job.params.get(name) for name in REQUEST_FIELDS}

    async def reroll(self, interaction: discord.Interaction[Any], job: JobRecord) -> None:
        self.bot.metrics.interactions.labels(type="reroll").inc()
        values = self._request_of(job)
        values["seed"] = None  # a reroll draws a new seed
        await self.launch(interaction, values, parent_job_id=job.id)

    async def edit(
        self,
        interaction: discord.Interaction[Any],
        job: JobRecord,
        prompt: str,
        negative_prompt: str,
    ) -> None:
        self.bot.metrics.interactions.labels(type="edit").inc()
        values = self._request_of(job)
        values["prompt"] = prompt
        values["negative_prompt"] = negative_prompt or None
        await self.launch(interaction, values, parent_job_id=job.id)

    async def delete_result(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        self.bot.metrics.interactions.labels(type="delete").inc()
        if interaction.message is None:
            await reply_private(interaction, _N("That message is already gone."))
            return
        await defer_private(interaction, thinking=False)
        context = job_context(
            guild_id=interaction.guild_id, user_id=interaction.user.id, job_id=job_id
        )
        try:
            await interaction.message.delete()
        except discord.NotFound:
            pass  # already deleted by someone else: the outcome the member wanted
        except discord.HTTPException as error:
            log.warning(
                "could not delete a result (%s %s)", error.status, error.code, extra=context
            )
            await reply_private(
                interaction, _N("I couldn't delete that message. Please try again.")
            )
            return
        try:
            await self.bot.insight.forget_result(job_id, interaction.message.id)
        except StorageError as error:
            # The message is gone; only the gallery keeps a dead link to it.
            log.warning(
                "could not drop a deleted result from the gallery: %s", error, extra=context
            )
