"""What a result's buttons ask of the ``/imagine`` feature; the imagine cog registers itself
as ``ImagineBot.imagine`` while it is loaded."""

from __future__ import annotations

from typing import Any, Protocol

import discord

from bot.credits import JobRecord

__all__ = ["ImagineActions"]


class ImagineActions(Protocol):
    """Reroll, Edit and Delete, once the button's check let the member through."""

    async def reroll(self, interaction: discord.Interaction[Any], job: JobRecord) -> None:
        """Queue ``job`` again with a new seed, billed to whoever clicked."""

    async def edit(
        self,
        interaction: discord.Interaction[Any],
        job: JobRecord,
        prompt: str,
        negative_prompt: str,
    ) -> None:
        """Queue ``job`` again with new prompts and its other parameters."""

    async def delete_result(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        """Delete the result message the button is on."""
