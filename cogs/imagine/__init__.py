"""The /imagine feature: the command, live status, result messages and their persistent buttons."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._cog import ImagineCog

if TYPE_CHECKING:
    from bot.app import ImagineBot

__all__ = ["ImagineCog", "setup"]


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(ImagineCog(bot))
