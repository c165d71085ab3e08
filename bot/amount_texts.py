"""What is wrong with a credit amount, one whole translatable sentence per amount and problem.

Sentences, not "The {what} must…" fragments: a fragment can't be translated well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bot.i18n import _N, Message

__all__ = ["AMOUNT_TEXTS", "MAX_CREDITS", "AmountTexts"]

MAX_CREDITS: Final = 10**12
"""Upper bound for any amount and for a balance raised by a grant or a set."""


@dataclass(frozen=True)
class AmountTexts:
    """The errors for one kind of amount: not a whole number, below its minimum, too large."""

    not_whole: Message
    too_small: Message
    too_large: Message


AMOUNT_TEXTS: Final[dict[str, AmountTexts]] = {
    "amount to add": AmountTexts(
        _N("The amount to add must be a whole number of credits."),
        _N("The amount to add must be at least 1 credit."),
        _N("The amount to add can be at most {limit} credits.", limit=MAX_CREDITS),
    ),
    "new balance": AmountTexts(
        _N("The new balance must be a whole number of credits."),
        _N("The new balance cannot be negative."),
        _N("The new balance can be at most {limit} credits.", limit=MAX_CREDITS),
    ),
    "daily limit": AmountTexts(
        _N("The daily limit must be a whole number of credits."),
        _N("The daily limit cannot be negative."),
        _N("The daily limit can be at most {limit} credits.", limit=MAX_CREDITS),
    ),
    "low-balance threshold": AmountTexts(
        _N("The low-balance threshold must be a whole number of credits."),
        _N("The low-balance threshold cannot be negative."),
        _N("The low-balance threshold can be at most {limit} credits.", limit=MAX_CREDITS),
    ),
}
