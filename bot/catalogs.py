"""Keeping the translation catalogs: ``python -m bot.catalogs extract|update|init LANG|check``.

The template holds what the code marks (Babel's extractor, :mod:`bot.i18n`'s markers) and the
command tree's names and descriptions, with their place as msgctxt. ``update`` merges it into
every catalog, sorted and without locations so parallel changes merge; ``check`` lists what
is untranslated or whose placeholders differ.
"""

from __future__ import annotations

import argparse
import asyncio
import string
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import discord
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po
from discord import app_commands
from pydantic import SecretStr

from bot.app import EXTENSIONS, ImagineBot
from bot.config import Settings
from bot.i18n import DOMAIN, LOCALE_DIR

__all__ = [
    "KEYWORDS",
    "CatalogProblem",
    "build_template",
    "catalog_problems",
    "code_messages",
    "command_messages",
    "main",
    "placeholders",
]

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("bot", "cogs")
#: Babel keyword specs: which argument of each marker is the msgid (and the plural).
KEYWORDS: dict[str, tuple[int, ...] | None] = {
    "t": (2,),
    "tn": (2, 3),
    "_N": None,
    "_NP": (1, 2),
}
TEMPLATE = LOCALE_DIR / f"{DOMAIN}.pot"

#: One extracted message: (msgctxt, msgid or (singular, plural)).
Entry = tuple[str | None, str | tuple[str, str]]


def code_messages(root: Path = ROOT) -> set[Entry]:
    """Every message the code marks for translation, by Babel's Python extractor."""
    found: set[Entry] = set()
    for directory in SOURCE_DIRS:
        for _file, _line, message, _comments, context in extract_from_dir(
            root / directory, method_map=[("**.py", "python")], keywords=KEYWORDS
        ):
            key: str | tuple[str, str] = (
                (str(message[0]), str(message[1])) if isinstance(message, tuple) else message
            )
            found.add((context, key))
    return found


class _Recorder(app_commands.Translator):
    """A Translator that translates nothing and remembers what it was asked."""

    def __init__(self) -> None:
        self.seen: set[Entry] = set()

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        self.seen.add((context.location.name, string.message))
        return None


async def command_messages(extensions: Sequence[str] = EXTENSIONS) -> set[Entry]:
    """Every name and description the command tree would send Discord, with its place."""
    settings = Settings(discord_token=SecretStr("unused"), segmind_api_key=SecretStr("unused"))
    bot = ImagineBot(settings, extensions=extensions)
    recorder = _Recorder()
    try:
        for name in extensions:
            await bot.load_extension(name)
        for command in bot.tree.get_commands():
            await command.get_translated_payload(bot.tree, recorder)
    finally:
        for name in list(bot.extensions):
            await bot.unload_extension(name)
    return recorder.seen


def build_template() -> Catalog:
    template = Catalog(project="imagine-bot", domain=DOMAIN, fuzzy=False)
    entries = code_messages() | asyncio.run(command_messages())
    for context, message in sorted(entries, key=lambda e: (e[0] or "", str(e[1]))):
        template.add(message, context=context)
    return template


def _write(catalog: Catalog, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        write_po(out, catalog, width=100, no_location=True, sort_output=True, ignore_obsolete=True)


def _read(path: Path, locale: str | None = None) -> Catalog:
    with path.open("rb") as po_file:
        return read_po(po_file, locale=locale, domain=DOMAIN)


def _po_path(code: str) -> Path:
    return LOCALE_DIR / code / "LC_MESSAGES" / f"{DOMAIN}.po"


def placeholders(text: str) -> set[str]:
    """The ``{named}`` placeholders of a message."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def _texts(value: object) -> list[str]:
    """A catalog entry's id or string as a list (plural entries hold several)."""
    if isinstance(value, list | tuple):
        return [str(v or "") for v in value]
    return [str(value or "")]


@dataclass(frozen=True)
class CatalogProblem:
    locale: str
    msgid: str
    problem: str

    def __str__(self) -> str:
        return f"{self.locale}: {self.msgid!r}: {self.problem}"


def catalog_problems(
    entries: Iterable[Entry], catalogs: dict[str, Catalog]
) -> list[CatalogProblem]:
    """What is missing, untranslated, fuzzy or has other placeholders than its msgid."""
    problems: list[CatalogProblem] = []
    for code, catalog in sorted(catalogs.items()):
        # Babel's own checkers first (plural forms, %-formats).
        for checked, errors in catalog.check():
            problems.extend(CatalogProblem(code, str(checked.id), str(e)) for e in errors)
        for context, message in sorted(entries, key=lambda e: (e[0] or "", str(e[1]))):
            msgid = message[0] if isinstance(message, tuple) else message
            entry = catalog.get(msgid, context=context)
            if entry is None:
                problems.append(CatalogProblem(code, msgid, "missing"))
                continue
            strings = _texts(entry.string)
            if entry.fuzzy or not all(strings):
                problems.append(CatalogProblem(code, msgid, "untranslated or fuzzy"))
                continue
            wanted = set().union(*(placeholders(m) for m in _texts(entry.id)))
            for text in strings:
                if placeholders(text) != wanted:
                    problems.append(
                        CatalogProblem(code, msgid, f"placeholders {sorted(placeholders(text))}")
                    )
    return problems


def load_catalogs() -> dict[str, Catalog]:
    return {
        path.parent.parent.name: _read(path, path.parent.parent.name)
        for path in sorted(LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.catalogs", description=__doc__)
    commands = parser.add_subparsers(dest="action", required=True)
    commands.add_parser("extract", help=f"write {TEMPLATE.relative_to(ROOT)}")
    commands.add_parser("update", help="extract, then merge the template into every catalog")
    init = commands.add_parser("init", help="start a catalog for a new language")
    init.add_argument("locale", help="a Babel locale code matching Discord's: de, es_ES, pt_BR…")
    commands.add_parser("check", help="list untranslated messages and placeholder mismatches")
    args = parser.parse_args(argv)

    if args.action == "check":
        problems = catalog_problems(
            code_messages() | asyncio.run(command_messages()), load_catalogs()
        )
        for problem in problems:
            print(problem)
        return 1 if problems else 0
    template = build_template()
    _write(template, TEMPLATE)
    if args.action == "init":
        catalog = Catalog(locale=args.locale, domain=DOMAIN, project="imagine-bot", fuzzy=False)
        catalog.update(template, no_fuzzy_matching=True)
        _write(catalog, _po_path(args.locale))
    elif args.action == "update":
        for code, catalog in load_catalogs().items():
            created = catalog.creation_date  # the header stays put: no merge conflict there
            catalog.update(template, no_fuzzy_matching=True)
            catalog.creation_date = created
            _write(catalog, _po_path(code))
    return 0


if __name__ == "__main__":
    sys.exit(main())
