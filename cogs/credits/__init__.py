"""``/credits``: a server's balance, ledger history, usage chart, members' limits, and
minting for owners."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._cog import CreditsCog, HistoryPageButton

if TYPE_CHECKING:
    from bot.app import ImagineBot

__all__ = ["CreditsCog", "HistoryPageButton", "setup"]


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(CreditsCog(bot))
