"""Reroll, Edit and Delete: persistent buttons that keep working after restarts.

Each button is a :class:`discord.ui.DynamicItem` whose ``custom_id`` carries the
job id (``imagine:reroll:42``); everything else is read from the jobs table when
the button is clicked, so no state lives in memory and old messages keep working.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import discord

from bot.credits import JobRecord
from bot.logs import job_context
from bot.replies import APOLOGY, describe_error, reply_private
from bot.segmind import PROMPT_MAX_LENGTH

if TYPE_CHECKING:
    from ._cog import ImagineCog

__all__ = [
    "DYNAMIC_ITEMS",
    "DeleteButton",
    "EditButton",
    "EditModal",
    "RerollButton",
    "result_view",
]

log = logging.getLogger(__name__)

UNKNOWN_JOB = (
    "I can't find the settings of that image any more (it may come from another bot "
    "or an older database). Start a new one with /imagine."
)


def _cog(interaction: discord.Interaction[Any]) -> ImagineCog:
    cog = interaction.client.get_cog("Imagine")  # type: ignore[attr-defined]
    if cog is None:
        raise RuntimeError("the imagine extension is not loaded")
    return cast("ImagineCog", cog)


async def _guarded(
    interaction: discord.Interaction[Any], job_id: int, action: Callable[[], Awaitable[None]]
) -> None:
    """Run a button action; an unexpected error is logged and answered, never silent."""
    try:
        await action()
    except Exception as error:
        message = describe_error(error)
        if message is not None:
            await reply_private(interaction, message)
            return
        log.exception(
            "button failed",
            extra=job_context(
                guild_id=interaction.guild_id, user_id=interaction.user.id, job_id=job_id
            ),
        )
        await reply_private(interaction, APOLOGY)


class RerollButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"imagine:reroll:(?P<job>[0-9]{1,19})"
):
    """Same parameters, new random seed, billed to whoever clicks."""

    def __init__(self, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Reroll",
                emoji="🎲",
                style=discord.ButtonStyle.primary,
                custom_id=f"imagine:reroll:{job_id}",
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Button[Any],
        match: re.Match[str],
        /,
    ) -> RerollButton:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _guarded(
            interaction, self.job_id, lambda: _cog(interaction).reroll(interaction, self.job_id)
        )


class EditButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"imagine:edit:(?P<job>[0-9]{1,19})"
):
    """Opens a modal with the prompts pre-filled; submitting starts a new job."""

    def __init__(self, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Edit",
                emoji="✏️",
                style=discord.ButtonStyle.secondary,
                custom_id=f"imagine:edit:{job_id}",
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Button[Any],
        match: re.Match[str],
        /,
    ) -> EditButton:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        async def open_editor() -> None:
            job = await _cog(interaction).bot.ledger.get_job(self.job_id)
            if job is None:
                await reply_private(interaction, UNKNOWN_JOB)
                return
            await interaction.response.send_modal(EditModal(job))

        await _guarded(interaction, self.job_id, open_editor)


class DeleteButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"imagine:delete:(?P<job>[0-9]{1,19})"
):
    """The requester, or anyone with Manage Messages, removes the result."""

    def __init__(self, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Delete",
                emoji="🗑️",
                style=discord.ButtonStyle.danger,
                custom_id=f"imagine:delete:{job_id}",
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Button[Any],
        match: re.Match[str],
        /,
    ) -> DeleteButton:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _guarded(
            interaction,
            self.job_id,
            lambda: _cog(interaction).delete_result(interaction, self.job_id),
        )


class EditModal(discord.ui.Modal, title="Edit and generate again"):
    """Prompt and negative prompt, pre-filled from the original job."""

    def __init__(self, job: JobRecord) -> None:
        super().__init__(timeout=15 * 60)
        self.job_id = job.id
        self.prompt: discord.ui.TextInput[EditModal] = discord.ui.TextInput(
            label="Prompt",
            style=discord.TextStyle.paragraph,
            default=str(job.params.get("prompt") or "")[:PROMPT_MAX_LENGTH],
            max_length=PROMPT_MAX_LENGTH,
            required=True,
        )
        self.negative_prompt: discord.ui.TextInput[EditModal] = discord.ui.TextInput(
            label="Negative prompt",
            style=discord.TextStyle.paragraph,
            default=str(job.params.get("negative_prompt") or "")[:PROMPT_MAX_LENGTH] or None,
            max_length=PROMPT_MAX_LENGTH,
            required=False,
        )
        self.add_item(self.prompt)
        self.add_item(self.negative_prompt)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:  # type: ignore[override]
        await _guarded(
            interaction,
            self.job_id,
            lambda: _cog(interaction).edit(
                interaction, self.job_id, self.prompt.value, self.negative_prompt.value
            ),
        )

    async def on_error(  # type: ignore[override]
        self, interaction: discord.Interaction[Any], error: Exception
    ) -> None:
        log.error(
            "edit modal failed",
            exc_info=error,
            extra=job_context(
                guild_id=interaction.guild_id, user_id=interaction.user.id, job_id=self.job_id
            ),
        )
        await reply_private(interaction, APOLOGY)


DYNAMIC_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (
    RerollButton,
    EditButton,
    DeleteButton,
)


def result_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(RerollButton(job_id))
    view.add_item(EditButton(job_id))
    view.add_item(DeleteButton(job_id))
    return view
