"""Details that used to stay English reach a German or Japanese member translated: why a
request is invalid, what is wrong with an amount or setting, permission names, ledger kinds."""

from __future__ import annotations

from datetime import UTC, datetime

import discord
import pytest
from discord import app_commands

from bot.checks import whole_amount
from bot.credit_errors import InvalidAmount, InvalidSetting
from bot.credits import MAX_CREDITS
from bot.guild_settings import _blocked_words
from bot.i18n import render
from bot.replies import describe_error
from bot.segmind import InvalidRequest, build_request
from bot.storage.records import LedgerEntry, LedgerKind
from cogs.credits._text import entry_line

DE = discord.Locale.german
JA = discord.Locale.japanese


def _invalid(**values: object) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        build_request(**values)
    return caught.value


def test_request_problems_are_rendered_in_the_members_language() -> None:
    error = _invalid(prompt="   ", samples=9, img_width=700, scheduler="Euler", steps=3)
    english = (
        "prompt must not be empty.\n"
        "scheduler must be DDIM or P-Sampler (got 'Euler').\n"
        "samples must be between 1 and 8 (got 9).\n"
        "img_width must be 512 or 1024 (got 700).\n"
        "steps is not a known option."
    )
    assert str(error.user_message) == english
    assert render(DE, error.user_message) == (
        "prompt darf nicht leer sein.\n"
        "scheduler muss DDIM oder P-Sampler sein (erhalten: 'Euler').\n"
        "samples muss zwischen 1 und 8 liegen (erhalten: 9).\n"
        "img_width muss 512 oder 1024 sein (erhalten: 700).\n"
        "steps ist keine bekannte Option."
    )


def test_custom_request_errors_and_seed_are_translated() -> None:
    too_long = _invalid(prompt="x" * 1001).user_message
    assert render(JA, too_long) == "prompt は1000文字以内にしてください（入力: 1001文字）。"
    boolean = _invalid(prompt="cat", samples=True).user_message
    assert render(DE, boolean) == "samples muss eine Zahl sein (erhalten: true)."
    with pytest.raises(InvalidRequest) as caught:
        build_request(prompt="cat").with_seed(-1)
    assert render(DE, caught.value.user_message) == (
        "seed muss zwischen 0 und 4294967295 liegen (erhalten: -1)."
    )


def test_amount_errors_are_whole_sentences_english_for_the_cli() -> None:
    with pytest.raises(InvalidAmount) as caught:
        whole_amount(-1, minimum=0, what="daily limit")
    assert str(caught.value) == "The daily limit cannot be negative."
    assert render(DE, caught.value.user_message) == "Das Tageslimit darf nicht negativ sein."
    with pytest.raises(InvalidAmount) as caught:
        whole_amount(MAX_CREDITS + 1, minimum=1, what="amount to add")
    assert str(caught.value) == "The amount to add can be at most 1,000,000,000,000 credits."
    assert render(DE, caught.value.user_message) == (
        "Der hinzuzufügende Betrag darf höchstens 1.000.000.000.000 Credits betragen."
    )
    with pytest.raises(InvalidSetting) as setting:
        _blocked_words(["x" * 101])
    assert render(JA, setting.value.user_message) == "ブロックする語句は100文字以内にしてください。"


def test_missing_permissions_are_named_as_discord_names_them() -> None:
    error = app_commands.MissingPermissions(["manage_guild", "manage_messages"])
    assert describe_error(error) == (
        "You need the Manage Server, Manage Messages permission to do that."
    )
    german = describe_error(error, DE)
    assert german is not None
    assert "Server verwalten, Nachrichten verwalten" in german


@pytest.mark.parametrize(
    ("kind", "english", "german"),
    [
        (LedgerKind.GRANT, "grant", "gutgeschrieben"),
        (LedgerKind.REFUND, "refund", "erstattet"),
        (LedgerKind.COMMIT, "commit", "abgerechnet"),
    ],
)
def test_history_lines_name_the_entry_kind_in_the_readers_language(
    kind: LedgerKind, english: str, german: str
) -> None:
    entry = LedgerEntry(
        id=1,
        guild_id=10**17,
        user_id=None,
        job_id=None,
        delta=5,
        kind=kind,
        actor_id=None,
        note=None,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        balance_after=5,
    )
    assert entry_line(entry).split(" · ")[0].endswith(f"` {english}")
    assert entry_line(entry, DE).split(" · ")[0].endswith(f"` {german}")
