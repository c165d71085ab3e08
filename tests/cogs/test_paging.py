"""The page buttons (``/credits history``, ``/gallery``) share one base: the custom id round-trips,
and who may turn the pages is decided in ``interaction_check``, before the callback.

Discord shows these ephemeral pages to one member only, so a refused click can only come from a
forged request; the fake Discord refuses to forge one, so the check is called directly here.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from cogs.credits._cog import HISTORY_NEEDS_MANAGE_SERVER, HistoryPageButton
from cogs.gallery import NOT_YOURS, GalleryPageButton

GUILD, OTHER_GUILD = 111_111_111_111_111_111, 222_222_222_222_222_222
OWNER, OTHER = 444_444_444_444_444_444, 555_555_555_555_555_555


class _Response:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def is_done(self) -> bool:
        return bool(self.sent)

    async def send_message(self, text: str, **options: Any) -> None:
        self.sent.append((text, options))


def _interaction(
    *, user_id: int = OWNER, guild_id: int = GUILD, manage_guild: bool = False, locale: str = "de"
) -> Any:
    return SimpleNamespace(
        user=SimpleNamespace(id=user_id),
        guild_id=guild_id,
        locale=locale,
        permissions=SimpleNamespace(manage_guild=manage_guild),
        response=_Response(),
    )


async def _refused(button: Any, interaction: Any) -> str:
    assert await button.interaction_check(interaction) is False
    [(text, options)] = interaction.response.sent
    assert options["ephemeral"] is True
    return str(text)


async def test_another_member_cannot_turn_a_gallery_privately_told_in_their_language() -> None:
    text = await _refused(GalleryPageButton(OWNER, 1, "n"), _interaction(user_id=OTHER))
    assert text == NOT_YOURS.render("de") != NOT_YOURS


@pytest.mark.parametrize(
    ("guild_id", "manage_guild"), [(GUILD, False), (OTHER_GUILD, True), (OTHER_GUILD, False)]
)
async def test_history_pages_need_manage_server_in_that_server(
    guild_id: int, manage_guild: bool
) -> None:
    interaction = _interaction(guild_id=guild_id, manage_guild=manage_guild)
    text = await _refused(HistoryPageButton(GUILD, 1, "n"), interaction)
    assert text == HISTORY_NEEDS_MANAGE_SERVER.render("de") != HISTORY_NEEDS_MANAGE_SERVER


@pytest.mark.parametrize(
    ("button", "interaction"),
    [
        (GalleryPageButton(OWNER, 1, "n"), _interaction(user_id=OWNER)),
        (HistoryPageButton(GUILD, 1, "n"), _interaction(user_id=OTHER, manage_guild=True)),
    ],
)
async def test_who_may_turn_the_pages_passes(button: Any, interaction: Any) -> None:
    assert await button.interaction_check(interaction) is True
    assert interaction.response.sent == []


@pytest.mark.parametrize(
    ("button_type", "prefix"),
    [(HistoryPageButton, "credits:history"), (GalleryPageButton, "gallery")],
)
async def test_a_custom_id_round_trips_within_discords_limit_and_only_to_its_feature(
    button_type: type[HistoryPageButton] | type[GalleryPageButton], prefix: str
) -> None:
    button = button_type(2**63 - 1, 999_999, "p", disabled=True)
    custom_id = button.item.custom_id
    assert custom_id == f"{prefix}:{2**63 - 1}:999999:p"
    assert len(custom_id) <= 100
    match = button_type.__discord_ui_compiled_template__.fullmatch(custom_id)
    assert match is not None
    parsed = await button_type.from_custom_id(_interaction(), button.item, match)
    assert (type(parsed), parsed.owner_id, parsed.page) == (button_type, 2**63 - 1, 999_999)
    other = GalleryPageButton if button_type is HistoryPageButton else HistoryPageButton
    assert not other.__discord_ui_compiled_template__.fullmatch(custom_id)
