"""Newer/Older buttons for the paged private answers (``/credits history``, ``/gallery``).

Each feature keeps its own :class:`discord.ui.DynamicItem` (its ``custom_id`` says whose
pages they are); the buttons themselves and the two-button row look the same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import discord

from bot.i18n import LocaleLike, t

__all__ = ["page_button", "pager"]


def page_button(
    custom_id: str, direction: str, *, disabled: bool, locale: LocaleLike = None
) -> discord.ui.Button[Any]:
    """The Newer (``direction`` "p") or Older ("n") button, labelled in ``locale``."""
    newer = direction == "p"
    return discord.ui.Button(
        label=t(locale, "Newer") if newer else t(locale, "Older"),
        emoji="◀️" if newer else "▶️",
        style=discord.ButtonStyle.secondary,
        custom_id=custom_id,
        disabled=disabled,
    )


def pager(
    make: Callable[[int, str, bool], discord.ui.Item[Any]], page: int, pages: int
) -> discord.ui.View:
    """A persistent view with Newer and Older; ``make(page, direction, disabled)``."""
    view = discord.ui.View(timeout=None)
    view.add_item(make(max(page - 1, 0), "p", page == 0))
    view.add_item(make(page + 1, "n", page >= pages - 1))
    return view
