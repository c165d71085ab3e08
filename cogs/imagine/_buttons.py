"""Reroll, Edit and Delete: persistent buttons that keep working after restarts.

The buttons are one :class:`discord.ui.DynamicItem` whose ``custom_id`` carries the
action and the job id (``imagine:reroll:42``); everything else is read from the jobs table when
the button is clicked, so no state lives in memory and old messages keep working.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, cast

import discord

from bot.credits import JobRecord
from bot.i18n import _N, LocaleLike, render, t
from bot.logs import job_context
from bot.replies import APOLOGY, describe_error, reply_private
from bot.segmind import PROMPT_MAX_LENGTH

if TYPE_CHECKING:
    from ._cog import ImagineCog

__all__ = ["DYNAMIC_ITEMS", "EditModal", "JobButton", "result_view"]

log = logging.getLogger(__name__)

UNKNOWN_JOB = _N(
    "I can't find the settings of that image any more (it may come from another bot "
    "or an older database). Start a new one with /imagine."
)


def _cog(interaction: discord.Interaction[Any]) -> ImagineCog:
    cog = interaction.client.get_cog("Imagine")
    if cog is None:
        raise RuntimeError("the imagine extension is not loaded")
    return cast("ImagineCog", cog)


async def _guarded(
    interaction: discord.Interaction[Any], job_id: int, action: Awaitable[None]
) -> None:
    """Run a button action; an unexpected error is logged and answered, never silent."""
    try:
        await action
    except Exception as error:
        message = describe_error(error, interaction.locale)
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


_ACTIONS: dict[str, tuple[str, str, discord.ButtonStyle]] = {
    "reroll": (_N("Reroll"), "🎲", discord.ButtonStyle.primary),
    "edit": (_N("Edit"), "✏️", discord.ButtonStyle.secondary),
    "delete": (_N("Delete"), "🗑️", discord.ButtonStyle.danger),
}


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"imagine:(?P<action>reroll|edit|delete):(?P<job>[0-9]{1,19})",
):
    """Reroll (same parameters, new seed, billed to whoever clicks), Edit (a modal with the
    prompts pre-filled) or Delete (the requester or Manage Messages) for one job."""

    def __init__(self, action: str, job_id: int, locale: LocaleLike = None) -> None:
        """``locale``: the language of the label (the server's: everyone sees the buttons)."""
        label, emoji, style = _ACTIONS[action]
        super().__init__(
            discord.ui.Button(
                label=render(locale, label),
                emoji=emoji,
                style=style,
                custom_id=f"imagine:{action}:{job_id}",
            )
        )
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> JobButton:
        return cls(match["action"], int(match["job"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        cog = _cog(interaction)
        if self.action == "reroll":
            action = cog.reroll(interaction, self.job_id)
        elif self.action == "edit":
            action = self._open_editor(interaction, cog)
        else:
            action = cog.delete_result(interaction, self.job_id)
        await _guarded(interaction, self.job_id, action)

    async def _open_editor(self, interaction: discord.Interaction[Any], cog: ImagineCog) -> None:
        job = await cog.bot.ledger.get_job(self.job_id)
        if job is None:
            await reply_private(interaction, UNKNOWN_JOB)
            return
        await interaction.response.send_modal(EditModal(job, interaction.locale))


class EditModal(discord.ui.Modal, title="Edit and generate again"):
    """Prompt and negative prompt, pre-filled from the original job, in the member's language."""

    def __init__(self, job: JobRecord, locale: LocaleLike = None) -> None:
        super().__init__(title=t(locale, "Edit and generate again"), timeout=15 * 60)
        self.job_id = job.id
        self.prompt: discord.ui.TextInput[EditModal] = discord.ui.TextInput(
            label=t(locale, "Prompt"),
            style=discord.TextStyle.paragraph,
            default=str(job.params.get("prompt") or "")[:PROMPT_MAX_LENGTH],
            max_length=PROMPT_MAX_LENGTH,
            required=True,
        )
        self.negative_prompt: discord.ui.TextInput[EditModal] = discord.ui.TextInput(
            label=t(locale, "Negative prompt"),
            style=discord.TextStyle.paragraph,
            default=str(job.params.get("negative_prompt") or "")[:PROMPT_MAX_LENGTH] or None,
            max_length=PROMPT_MAX_LENGTH,
            required=False,
        )
        self.add_item(self.prompt)
        self.add_item(self.negative_prompt)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        edit = _cog(interaction).edit(
            interaction, self.job_id, self.prompt.value, self.negative_prompt.value
        )
        await _guarded(interaction, self.job_id, edit)

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


DYNAMIC_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (JobButton,)


def result_view(job_id: int, locale: LocaleLike = None) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action in _ACTIONS:
        view.add_item(JobButton(action, job_id, locale))
    return view
