"""Argument checks shared by the ledger and the guild settings: whole amounts and Discord ids."""

from __future__ import annotations

from typing import Final, TypeGuard

from bot.amount_texts import AMOUNT_TEXTS, MAX_CREDITS
from bot.credit_errors import InvalidAmount

__all__ = ["is_int", "optional_snowflake", "snowflake", "whole_amount"]

MAX_SNOWFLAKE: Final = 2**63 - 1  # SQLite and PostgreSQL BIGINT hold ids up to here


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def whole_amount(value: object, *, minimum: int, what: str) -> int:
    texts = AMOUNT_TEXTS[what]
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidAmount(texts.not_whole)
    if value < minimum:
        raise InvalidAmount(texts.too_small)
    if value > MAX_CREDITS:
        raise InvalidAmount(texts.too_large)
    return value


def snowflake(value: object, what: str) -> int:
    """Ids come from Discord; a bad one is a bug in the caller, not a user error."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_SNOWFLAKE:
        return value
    raise ValueError(f"{what} must be a positive 64-bit integer, got {value!r}")


def optional_snowflake(value: object, what: str) -> int | None:
    return None if value is None else snowflake(value, what)
