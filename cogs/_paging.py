"""Newer/Older buttons for the paged private answers (``/credits history``, ``/gallery``).

Each feature subclasses :class:`PageButton` with its ``custom_id`` prefix, who may turn
its pages, and how a page is drawn; the buttons survive restarts like the image buttons.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Self

import discord

from bot.i18n import LocaleLike, t
from bot.replies import reply_private

__all__ = ["PageButton"]


#: After a subclass's prefix: whose pages (a guild or a member), the page, the direction.
_ID_TEMPLATE = r":(?P<owner>[0-9]{1,20}):(?P<page>[0-9]{1,6}):(?P<dir>[pn])"


class PageButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"(?!)"):
    """Newer (``direction`` "p") or Older ("n"): page ``page`` of ``owner_id``'s pages.

    The base matches no ``custom_id``; each subclass's template is made from its prefix.
    """

    prefix: ClassVar[str]
    #: Told, privately, to someone who may not turn these pages.
    refusal: ClassVar[str]

    def __init_subclass__(cls, *, prefix: str) -> None:
        super().__init_subclass__(template=re.escape(prefix) + _ID_TEMPLATE)
        cls.prefix = prefix

    def __init__(
        self,
        owner_id: int,
        page: int,
        direction: str,
        *,
        disabled: bool = False,
        locale: LocaleLike = None,
    ) -> None:
        newer = direction == "p"
        super().__init__(
            discord.ui.Button(
                label=t(locale, "Newer") if newer else t(locale, "Older"),
                emoji="◀️" if newer else "▶️",
                style=discord.ButtonStyle.secondary,
                custom_id=f"{self.prefix}:{owner_id}:{page}:{direction}",
                disabled=disabled,
            )
        )
        self.owner_id = owner_id
        self.page = page

    @classmethod
    def pager(cls, owner_id: int, page: int, pages: int, locale: LocaleLike) -> discord.ui.View:
        """A persistent view with Newer and Older around ``page`` of ``pages``."""
        view = discord.ui.View(timeout=None)
        view.add_item(cls(owner_id, max(page - 1, 0), "p", disabled=page == 0, locale=locale))
        view.add_item(cls(owner_id, page + 1, "n", disabled=page >= pages - 1, locale=locale))
        return view

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> Self:
        return cls(int(match["owner"]), int(match["page"]), match["dir"])

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        if self.allows(interaction):
            return True
        await reply_private(interaction, self.refusal)
        return False

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        embed, view = await self.draw(interaction)
        await interaction.response.edit_message(embed=embed, view=view)

    def allows(self, interaction: discord.Interaction[Any]) -> bool:
        """Whether whoever clicked may turn these pages."""
        raise NotImplementedError

    async def draw(
        self, interaction: discord.Interaction[Any]
    ) -> tuple[discord.Embed, discord.ui.View]:
        """The page this button leads to, with its own buttons."""
        raise NotImplementedError
