"""Translations: every message of the code is in every catalog with the same placeholders;
Discord locales map to catalogs; numbers, durations and plurals follow the language."""

from __future__ import annotations

import ast
from datetime import timedelta
from pathlib import Path

import discord
import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from discord import app_commands

from bot.catalogs import KEYWORDS, catalog_problems, command_messages, load_catalogs, main
from bot.i18n import (
    _N,
    _NP,
    CatalogTranslator,
    Message,
    available_locales,
    format_duration,
    resolve_locale,
    t,
    tn,
)

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = {"de", "fr", "es_ES", "pt_BR", "ja"}


def _code_messages() -> set[tuple[str | None, str | tuple[str, str]]]:
    """What bot/ and cogs/ mark for translation, read by Babel's own extractor."""
    found: set[tuple[str | None, str | tuple[str, str]]] = set()
    for directory in ("bot", "cogs"):
        for _file, _line, message, _comments, context in extract_from_dir(
            ROOT / directory, method_map=[("**.py", "python")], keywords=KEYWORDS
        ):
            found.add((context, tuple(message) if isinstance(message, tuple) else message))
    return found


def _marked_in_source() -> set[str]:
    """Every literal msgid passed to a marker, read with ``ast`` (independently of Babel)."""
    found: set[str] = set()
    for path in [*(ROOT / "bot").rglob("*.py"), *(ROOT / "cogs").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            if node.func.id not in KEYWORDS:
                continue
            position = (KEYWORDS[node.func.id] or (1,))[0] - 1
            if position < len(node.args):
                argument = node.args[position]
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                    found.add(argument.value)
    return found


def test_babel_extracts_every_marked_message() -> None:
    """A marker call Babel's extractor misreads (one nested in another) would go untranslated."""
    extracted = {m[0] if isinstance(m, tuple) else m for _context, m in _code_messages()}
    assert _marked_in_source() - extracted == set()


def test_the_required_languages_have_catalogs() -> None:
    assert set(available_locales()) >= REQUIRED


def test_the_code_marks_its_messages() -> None:
    messages = {str(m[1]) for m in _code_messages()}
    assert len(messages) > 80
    assert "The image could not be generated." in messages
    assert any("credits left; this image costs" in m for m in messages)


async def test_every_message_and_command_string_is_translated_in_every_catalog() -> None:
    entries = _code_messages() | await command_messages()
    problems = catalog_problems(entries, load_catalogs())
    assert problems == [], "\n".join(map(str, problems))


def _catalog(entries: list[tuple[str | tuple[str, str], str | tuple[str, ...]]]) -> Catalog:
    catalog = Catalog(locale="de")
    for msgid, msgstr in entries:
        catalog.add(msgid, msgstr)
    return catalog


def test_a_missing_or_untranslated_message_is_reported() -> None:
    catalog = _catalog([("Hello.", "")])
    problems = catalog_problems([(None, "Hello."), (None, "Bye.")], {"de": catalog})
    assert [(p.msgid, p.problem) for p in problems] == [
        ("Bye.", "missing"),
        ("Hello.", "untranslated or fuzzy"),
    ]


def test_a_placeholder_that_differs_is_reported() -> None:
    catalog = _catalog(
        [
            ("{balance} left.", "{guthaben} übrig."),
            (("{count} credit", "{count} credits"), ("{count} Credit", "Credits")),
        ]
    )
    entries = [(None, "{balance} left."), (None, ("{count} credit", "{count} credits"))]
    problems = catalog_problems(entries, {"de": catalog})
    assert {p.msgid for p in problems if "placeholders" in p.problem} == {
        "{balance} left.",
        "{count} credit",
    }


def test_the_catalog_check_command_passes() -> None:
    assert main(["check"]) == 0


@pytest.mark.parametrize(
    ("locale", "code"),
    [
        (discord.Locale.german, "de"),
        (discord.Locale.french, "fr"),
        (discord.Locale.spain_spanish, "es_ES"),
        (discord.Locale.latin_american_spanish, "es_ES"),
        (discord.Locale.brazil_portuguese, "pt_BR"),
        (discord.Locale.japanese, "ja"),
        (discord.Locale.american_english, "en"),
        (discord.Locale.korean, "en"),
        ("pt-BR", "pt_BR"),
        (None, "en"),
    ],
)
def test_discord_locales_map_to_catalogs(locale: discord.Locale | str | None, code: str) -> None:
    assert resolve_locale(locale) == code


def test_a_message_is_its_english_text_and_renders_in_other_languages() -> None:
    message = _NP(
        "This server has {count} credit left; this image costs {cost}.",
        "This server has {count} credits left; this image costs {cost}.",
        1234,
        cost=4,
    )
    assert isinstance(message, Message) and isinstance(message, str)
    assert message == "This server has 1,234 credits left; this image costs 4."
    assert message.render(discord.Locale.german) == (
        "Dieser Server hat noch 1.234 Credits; dieses Bild kostet 4."
    )
    assert message.render(discord.Locale.japanese) == (
        "このサーバーの残りは 1,234 クレジットです。この画像には 4 クレジットが必要です。"
    )
    assert message.render(discord.Locale.korean) == message


def test_plural_forms_follow_each_language() -> None:
    def amount(locale: str, count: int) -> str:
        return tn(locale, "{count} credit", "{count} credits", count)

    assert [amount("en", n) for n in (1, 2)] == ["1 credit", "2 credits"]
    assert [amount("de", n) for n in (1, 2)] == ["1 Credit", "2 Credits"]
    # French counts 0 and 1 as singular, and says "de" before a noun after a million.
    assert [amount("fr", n) for n in (0, 1, 2, 1_000_000)] == [
        "0 crédit",
        "1 crédit",
        "2 crédits",
        "1\u202f000\u202f000 de crédits",
    ]
    assert amount("ja", 1) == amount("ja", 5).replace("5", "1") == "1 クレジット"


def test_durations_and_numbers_are_formatted_for_the_locale() -> None:
    assert format_duration(timedelta(seconds=29.2), "en") == "30 seconds"
    assert format_duration(timedelta(minutes=5), "de") == "5 Minuten"
    assert format_duration(timedelta(hours=2), "ja") == "2 時間"
    rate_limited = _N(
        "Segmind is rate-limiting the bot right now. Try again in {wait}.",
        wait=timedelta(seconds=300),
    )
    assert rate_limited.render("fr") == (
        "Segmind limite le débit du bot en ce moment. Réessayez dans 5 minutes."
    )
    assert (
        t(
            "de",
            "Balance {balance} · page {page}/{pages} · {total} entries",
            balance=1500,
            page=1,
            pages=2,
            total=12,
        )
        == "Guthaben 1.500 · Seite 1/2 · 12 Einträge"
    )


def _context(location: app_commands.TranslationContextLocation) -> app_commands.TranslationContext:
    return app_commands.TranslationContext(location=location, data=None)  # type: ignore[arg-type]


async def test_the_translator_localises_names_and_descriptions() -> None:
    translator = CatalogTranslator()
    name = app_commands.locale_str("balance")
    description = app_commands.locale_str("How many credits this server and you have left.")
    command_name = _context(app_commands.TranslationContextLocation.command_name)
    command_description = _context(app_commands.TranslationContextLocation.command_description)
    assert await translator.translate(name, discord.Locale.german, command_name) == "guthaben"
    assert await translator.translate(name, discord.Locale.japanese, command_name) == "残高"
    assert (
        await translator.translate(description, discord.Locale.french, command_description)
        == "Les crédits qu'il reste à ce serveur et à vous."
    )
    # English, and languages without a catalog, keep the default text.
    assert await translator.translate(name, discord.Locale.british_english, command_name) is None
    assert await translator.translate(name, discord.Locale.korean, command_name) is None
