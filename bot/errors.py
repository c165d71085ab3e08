"""The one base class for errors whose message is safe and useful to show a Discord user."""

from __future__ import annotations

__all__ = ["UserFacingError"]


class UserFacingError(Exception):
    """An expected failure with a short, friendly ``user_message``.

    Cogs show ``user_message`` (ephemerally) and never ``str(exc)`` of anything
    else, so no traceback or internal detail reaches Discord.
    """

    user_message: str = "Something went wrong. Please try again."

    def __init__(self, user_message: str | None = None, *args: object) -> None:
        if user_message is not None:
            self.user_message = user_message
        super().__init__(self.user_message, *args)
