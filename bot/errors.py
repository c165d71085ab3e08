"""The one base class for errors whose message is safe and useful to show a Discord user."""

from __future__ import annotations

from bot.i18n import _N, LocaleLike, render

__all__ = ["UserFacingError"]


class UserFacingError(Exception):
    """An expected failure with a short, friendly ``user_message``.

    Cogs show ``message(interaction.locale)`` (ephemerally: ``user_message`` in the
    member's language) and never ``str(exc)`` of anything else, so no traceback or
    internal detail reaches Discord.
    """

    user_message: str = _N("Something went wrong. Please try again.")

    def __init__(self, user_message: str | None = None, *args: object) -> None:
        if user_message is not None:
            self.user_message = user_message
        super().__init__(self.user_message, *args)

    def message(self, locale: LocaleLike) -> str:
        """``user_message`` in ``locale``'s language (English when there is no catalog)."""
        return render(locale, self.user_message)
