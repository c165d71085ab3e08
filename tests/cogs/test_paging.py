"""The page buttons share one base: the custom id round-trips, and who may turn the pages is
decided in ``interaction_check`` (before the callback), for the history as for the gallery."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from cogs.credits._cog import HISTORY_NEEDS_MANAGE_SERVER, HistoryPageButton
from cogs.gallery import GalleryPageButton

GUILD, OTHER_GUILD = 111_111_111_111_111_111, 222_222_222_222_222_222


class _Response:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def is_done(self) -> bool:
        return bool(self.sent)

    async def send_message(self, text: str, **options: Any) -> None:
        self.sent.append((text, options))


def _interaction(guild_id: int, *, manage_guild: bool, locale: str = "en-US") -> Any:
    return SimpleNamespace(
        user=SimpleNamespace(id=1),
        guild_id=guild_id,
        locale=locale,
        permissions=SimpleNamespace(manage_guild=manage_guild),
        response=_Response(),
    )


@pytest.mark.parametrize(
    ("guild_id", "manage_guild"), [(GUILD, False), (OTHER_GUILD, True), (OTHER_GUILD, False)]
)
async def test_history_pages_refuse_in_the_check_without_manage_server_here(
    guild_id: int, manage_guild: bool
) -> None:
    button = HistoryPageButton(GUILD, 1, "n")
    interaction = _interaction(guild_id, manage_guild=manage_guild, locale="de")
    assert await button.interaction_check(interaction) is False
    [(text, options)] = interaction.response.sent
    assert text == HISTORY_NEEDS_MANAGE_SERVER.render("de") != HISTORY_NEEDS_MANAGE_SERVER
    assert options["ephemeral"] is True


async def test_a_moderator_of_that_server_passes() -> None:
    interaction = _interaction(GUILD, manage_guild=True)
    assert await HistoryPageButton(GUILD, 1, "n").interaction_check(interaction) is True
    assert interaction.response.sent == []


@pytest.mark.parametrize("button_type", [HistoryPageButton, GalleryPageButton])
async def test_a_custom_id_round_trips_and_the_features_never_match_each_other(
    button_type: type[HistoryPageButton] | type[GalleryPageButton],
) -> None:
    button = button_type(2**63 - 1, 999_999, "p", disabled=True)
    custom_id = button.item.custom_id
    assert custom_id is not None and len(custom_id) <= 100
    match = button_type.__discord_ui_compiled_template__.fullmatch(custom_id)
    assert match is not None
    parsed = await button_type.from_custom_id(
        _interaction(GUILD, manage_guild=True), button.item, match
    )
    assert (type(parsed), parsed.owner_id, parsed.page) == (button_type, 2**63 - 1, 999_999)
    other = GalleryPageButton if button_type is HistoryPageButton else HistoryPageButton
    assert not other.__discord_ui_compiled_template__.fullmatch(custom_id)
