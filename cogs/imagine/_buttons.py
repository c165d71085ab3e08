"""Reroll, Edit and Delete: persistent buttons that keep working after restarts.

One :class:`discord.ui.DynamicItem` whose ``custom_id`` carries the action and the job id
(``imagine:reroll:42``); the job is read when a button is clicked, so old messages keep working.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import discord

from bot.credits import JobRecord
from bot.i18n import _N, LocaleLike, render, t
from bot.imagine_actions import ImagineActions
from bot.logs import job_context
from bot.replies import APOLOGY, describe_error, reply_private
from bot.segmind import PROMPT_MAX_LENGTH
from bot.storage import StorageError

if TYPE_CHECKING:
    from bot.app import ImagineBot

__all__ = ["DYNAMIC_ITEMS", "EditModal", "JobButton", "result_view"]

log = logging.getLogger(__name__)

UNKNOWN_JOB = _N(
    "I can't find the settings of that image any more (it may come from another bot "
    "or an older database). Start a new one with /imagine."
)

NOT_YOURS = {
    "delete": _N(
        "Only the member who asked for this image, or someone with Manage Messages, can delete it."
    ),
    "other": _N(
        "Only the member who asked for this image, or someone with Manage Messages, "
        "can reroll or edit it."
    ),
}


def _actions(interaction: discord.Interaction[Any]) -> ImagineActions:
    bot: ImagineBot = interaction.client
    if bot.imagine is None:
        raise RuntimeError("the imagine extension is not loaded")
    return bot.imagine


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
        log.exception("button failed", extra=_context(interaction, job_id))
        await reply_private(interaction, APOLOGY)


def _context(interaction: discord.Interaction[Any], job_id: int) -> dict[str, int]:
    return job_context(guild_id=interaction.guild_id, user_id=interaction.user.id, job_id=job_id)


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
    prompts pre-filled) or Delete, for the requester or a moderator (Manage Messages)."""

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
        self.job: JobRecord | None = None  # read by interaction_check

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> JobButton:
        return cls(match["action"], int(match["job"]))

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        """The requester and moderators pass; anyone else is told why, privately."""
        bot: ImagineBot = interaction.client
        try:
            self.job = await bot.ledger.get_job(self.job_id)
        except StorageError:  # discord.py would drop it silently
            log.exception("button check failed", extra=_context(interaction, self.job_id))
            await reply_private(interaction, APOLOGY)
            return False
        job, member = self.job, interaction.user
        if interaction.permissions.manage_messages or (
            job is not None and job.user_id == member.id
        ):
            return True
        refusal = UNKNOWN_JOB if job is None else NOT_YOURS.get(self.action, NOT_YOURS["other"])
        await reply_private(interaction, refusal)
        return False

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _guarded(interaction, self.job_id, self._act(interaction))

    async def _act(self, interaction: discord.Interaction[Any]) -> None:
        job = self.job
        if self.action == "delete":
            await _actions(interaction).delete_result(interaction, self.job_id)
        elif job is None:  # a moderator, on a job this database does not know
            await reply_private(interaction, UNKNOWN_JOB)
        elif self.action == "reroll":
            await _actions(interaction).reroll(interaction, job)
        else:
            await interaction.response.send_modal(EditModal(job, interaction.locale))


class EditModal(discord.ui.Modal, title="Edit and generate again"):
    """Prompt and negative prompt, pre-filled from the original job, in the member's language."""

    def __init__(self, job: JobRecord, locale: LocaleLike = None) -> None:
        super().__init__(title=t(locale, "Edit and generate again"), timeout=15 * 60)
        self.job = job
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
        edit = _actions(interaction).edit(
            interaction, self.job, self.prompt.value, self.negative_prompt.value
        )
        await _guarded(interaction, self.job.id, edit)

    async def on_error(  # type: ignore[override]
        self, interaction: discord.Interaction[Any], error: Exception
    ) -> None:
        log.error("edit modal failed", exc_info=error, extra=_context(interaction, self.job.id))
        await reply_private(interaction, APOLOGY)


DYNAMIC_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (JobButton,)


def result_view(job_id: int, locale: LocaleLike = None) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action in _ACTIONS:
        view.add_item(JobButton(action, job_id, locale))
    return view
