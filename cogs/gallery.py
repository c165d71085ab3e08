"""``/gallery``: a member's own results in this server, newest first, privately.

Each entry links to its result message and shows the prompt, seeds and cost; only that
member may turn the pages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import _N, LocaleLike, t, tn
from bot.insight import GalleryEntry, GalleryPage
from bot.replies import defer_private, reply_private
from cogs._paging import PageButton

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


async def gallery_page(
    bot: ImagineBot, guild_id: int, user_id: int, number: int, locale: LocaleLike = None
) -> tuple[discord.Embed, discord.ui.View]:
    """Page ``number`` of the member's gallery, with its Newer/Older buttons."""
    page = await bot.insight.gallery(guild_id, user_id, number)
    view = GalleryPageButton.pager(user_id, page.page, page.pages, locale)
    return gallery_embed(page, locale), view


class GalleryPageButton(PageButton, prefix="gallery"):
    """Newer/Older in one member's gallery (``owner_id``); only that member turns its pages."""

    refusal = NOT_YOURS

    def allows(self, interaction: discord.Interaction[Any]) -> bool:
        return interaction.user.id == self.owner_id and interaction.guild_id is not None

    async def draw(
        self, interaction: discord.Interaction[Any]
    ) -> tuple[discord.Embed, discord.ui.View]:
        assert interaction.guild_id is not None  # allows() checked it
        return await gallery_page(
            interaction.client, interaction.guild_id, self.owner_id, self.page, interaction.locale
        )


class GalleryCog(commands.Cog, name="Gallery"):
    """The ``/gallery`` command."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(GalleryPageButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(GalleryPageButton)

    @app_commands.command(name="gallery", description="Your images in this server, privately.")
    @app_commands.guild_only()
    async def gallery(self, interaction: discord.Interaction[Any]) -> None:
        if interaction.guild_id is None:
            await reply_private(
                interaction, _N("Your gallery is per server: use this in a server.")
            )
            return
        await defer_private(interaction)
        embed, view = await gallery_page(
            self.bot, interaction.guild_id, interaction.user.id, 0, interaction.locale
        )
        await interaction.followup.send(
            embed=embed, view=view, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(GalleryCog(bot))
