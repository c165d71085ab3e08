"""The gallery's page buttons: only the member whose gallery it is may turn its pages.

Discord shows the (ephemeral) gallery to that member only, so another member's click can
only come from a forged request; the fake Discord refuses to forge one, so the check is
called directly here with a stand-in interaction.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from cogs.gallery import NOT_YOURS, GalleryPageButton

OWNER, OTHER = 444_444_444_444_444_444, 555_555_555_555_555_555


class _Response:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def is_done(self) -> bool:
        return bool(self.sent)

    async def send_message(self, text: str, **options: Any) -> None:
        self.sent.append((text, options))


def _interaction(user_id: int, locale: str = "en-US") -> Any:
    return SimpleNamespace(
        user=SimpleNamespace(id=user_id), guild_id=1, locale=locale, response=_Response()
    )


async def test_another_member_is_refused_privately_in_their_language() -> None:
    button = GalleryPageButton(OWNER, 1, "n")
    interaction = _interaction(OTHER, "de")
    assert await button.interaction_check(interaction) is False
    [(text, options)] = interaction.response.sent
    assert text == NOT_YOURS.render("de") != NOT_YOURS
    assert options["ephemeral"] is True


async def test_the_member_passes() -> None:
    button = GalleryPageButton(OWNER, 1, "n")
    interaction = _interaction(OWNER)
    assert await button.interaction_check(interaction) is True
    assert interaction.response.sent == []


def test_the_custom_id_carries_member_and_page_within_discords_limit() -> None:
    button = GalleryPageButton(2**63 - 1, 999_999, "p", disabled=True)
    custom_id = button.item.custom_id
    assert custom_id == f"gallery:{2**63 - 1}:999999:p"
    assert custom_id is not None and len(custom_id) <= 100
    assert GalleryPageButton.__discord_ui_compiled_template__.fullmatch(custom_id)
