"""``/gallery``: a member's own results in this server, newest first, privately.

Each entry links to its result message and shows the prompt, seeds and cost. The
Older/Newer buttons are persistent :class:`discord.ui.DynamicItem` s carrying the member
and the page in their ``custom_id``; only that member may turn the pages.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import _N, LocaleLike, t, tn
from bot.insight import GalleryEntry, GalleryPage
from bot.replies import reply_private
from cogs._paging import page_button, pager

if TYPE_CHECKING:
    from bot.app import ImagineBot

__all__ = ["GalleryCog", "GalleryPageButton", "setup"]

PROMPT_SHOWN = 150
NOT_YOURS = _N("These pages are someone else's gallery: use /gallery to see yours.")


def _seeds(seeds: tuple[int, ...], locale: LocaleLike) -> str:
    if not seeds:
        return t(locale, "seed unknown")
    if len(seeds) == 1:
        return t(locale, "seed {seed}", seed=str(seeds[0]))
    return t(locale, "seeds {first}–{last}", first=str(seeds[0]), last=str(seeds[-1]))


def _entry_text(entry: GalleryEntry, locale: LocaleLike) -> str:
    prompt = " ".join(entry.prompt.split())
    if len(prompt) > PROMPT_SHOWN:
        prompt = prompt[: PROMPT_SHOWN - 1] + "…"
    job = t(locale, "Job #{job_id}", job_id=str(entry.job_id))
    cost = tn(locale, "{count} credit", "{count} credits", entry.cost)
    return (
        f"**[{job}]({entry.jump_url})** · <t:{entry.created_at_unix}:R> · "
        f"{_seeds(entry.seeds, locale)} · {cost}\n> {discord.utils.escape_markdown(prompt)}"
    )


def gallery_embed(page: GalleryPage, locale: LocaleLike = None) -> discord.Embed:
    """One page of the gallery, in the member's language."""
    description = "\n\n".join(_entry_text(entry, locale) for entry in page.entries) or t(
        locale, "You have no images in this server yet. Make one with /imagine."
    )
    embed = discord.Embed(
        title=t(locale, "Your images"), description=description, colour=discord.Colour.blurple()
    )
    footer = tn(
        locale,
        "Page {page}/{pages} · {count} result",
        "Page {page}/{pages} · {count} results",
        page.total,
        page=page.page + 1,
        pages=page.pages,
    )
    embed.set_footer(text=footer)
    return embed


class GalleryPageButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"gallery:(?P<user>[0-9]{1,20}):(?P<page>[0-9]{1,6}):(?P<dir>[pn])",
):
    """Newer/Older page of one member's gallery; survives restarts like the other buttons."""

    def __init__(
        self,
        user_id: int,
        page: int,
        direction: str,
        *,
        disabled: bool = False,
        locale: LocaleLike = None,
    ) -> None:
        custom_id = f"gallery:{user_id}:{page}:{direction}"
        super().__init__(page_button(custom_id, direction, disabled=disabled, locale=locale))
        self.user_id = user_id
        self.page = page

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> GalleryPageButton:
        return cls(int(match["user"]), int(match["page"]), match["dir"])

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        if interaction.user.id != self.user_id:
            await reply_private(interaction, NOT_YOURS)
            return False
        return True

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        cog = interaction.client.get_cog("Gallery")
        if not isinstance(cog, GalleryCog) or interaction.guild_id is None:
            await reply_private(interaction, _N("The gallery is not available here right now."))
            return
        embed, view = await cog.page(
            interaction.guild_id, self.user_id, self.page, interaction.locale
        )
        await interaction.response.edit_message(embed=embed, view=view)


class GalleryCog(commands.Cog, name="Gallery"):
    """The ``/gallery`` command."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(GalleryPageButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(GalleryPageButton)

    async def page(
        self, guild_id: int, user_id: int, number: int, locale: LocaleLike = None
    ) -> tuple[discord.Embed, discord.ui.View]:
        page = await self.bot.insight.gallery(guild_id, user_id, number)
        view = pager(
            lambda at, direction, off: GalleryPageButton(
                user_id, at, direction, disabled=off, locale=locale
            ),
            page.page,
            page.pages,
        )
        return gallery_embed(page, locale), view

    @app_commands.command(name="gallery", description="Your images in this server, privately.")
    @app_commands.guild_only()
    async def gallery(self, interaction: discord.Interaction[Any]) -> None:
        if interaction.guild_id is None:
            await reply_private(
                interaction, _N("Your gallery is per server: use this in a server.")
            )
            return
        await interaction.response.defer(ephemeral=True)
        embed, view = await self.page(
            interaction.guild_id, interaction.user.id, 0, interaction.locale
        )
        await interaction.followup.send(
            embed=embed, view=view, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(GalleryCog(bot))
