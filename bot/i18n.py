"""Translations: gettext catalogs per language, one way to render a message, the command Translator.

The catalogs are the ``.po`` files under ``bot/locale/<lang>/LC_MESSAGES/``, kept with
Babel (``python -m bot.catalogs``); they are compiled in memory when first needed, so no
binary ``.mo`` file lives in git. A message is its English text (the msgid) with named
``{placeholders}``:

* ``t(locale, "This server has {balance} credits left.", balance=3)`` when the locale is known;
* ``_N("...", **params)`` (and ``_NP`` for plurals) where it is not yet (an error raised deep
  down): the :class:`Message` keeps msgid and values and is rendered at reply time.

Numbers are formatted for the locale (``1,000`` / ``1.000``) and a :class:`datetime.timedelta`
as a duration ("2 minutes" / "2 Minuten"); ids are passed as strings, so they stay as they are.
A Discord locale without a catalog (and English) gets the English text.
"""

from __future__ import annotations

import functools
import gettext
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import discord
from babel.dates import format_timedelta
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from discord import app_commands

__all__ = [
    "DEFAULT_LOCALE",
    "LOCALE_DIR",
    "_N",
    "_NP",
    "CatalogTranslator",
    "Message",
    "available_locales",
    "render",
    "resolve_locale",
    "t",
    "tn",
]

LOCALE_DIR = Path(__file__).parent / "locale"
DEFAULT_LOCALE = "en"
#: The gettext domain: ``bot/locale/<lang>/LC_MESSAGES/messages.po``.
DOMAIN = "messages"

#: A Discord locale (``discord.Locale.german``), its value (``"de"``) or None (unknown).
LocaleLike = discord.Locale | str | None


@functools.cache
def _catalogs() -> dict[str, gettext.NullTranslations]:
    catalogs: dict[str, gettext.NullTranslations] = {}
    for po_path in sorted(LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
        code = po_path.parent.parent.name
        with po_path.open("rb") as po_file:
            catalog = read_po(po_file, locale=code, domain=DOMAIN)
        compiled = io.BytesIO()
        write_mo(compiled, catalog)
        compiled.seek(0)
        catalogs[code] = gettext.GNUTranslations(compiled)
    return catalogs


def available_locales() -> list[str]:
    """The catalogs' codes (``de``, ``es_ES``, …), English not included."""
    return sorted(_catalogs())


def resolve_locale(locale: LocaleLike) -> str:
    """The catalog for a Discord locale: exact (``pt-BR``), else same language, else English."""
    if locale is None:
        return DEFAULT_LOCALE
    code = str(locale).replace("-", "_")
    catalogs = _catalogs()
    if code in catalogs:
        return code
    language = code.split("_", 1)[0]
    return next((c for c in sorted(catalogs) if c.split("_", 1)[0] == language), DEFAULT_LOCALE)


def _translations(code: str) -> gettext.NullTranslations:
    return _catalogs().get(code) or gettext.NullTranslations()


def _format_value(value: object, code: str) -> str:
    if isinstance(value, Message):
        return value.render(code)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return format_decimal(value, locale=code)
    if isinstance(value, timedelta):
        return format_timedelta(value, locale=code, threshold=1.0)
    return str(value)


@dataclass(frozen=True)
class Message:
    """A msgid (and plural form) with its values, rendered once the reader's locale is known."""

    msgid: str
    params: Mapping[str, object] = field(default_factory=dict)
    plural: str | None = None
    count: int | None = None

    def render(self, locale: LocaleLike) -> str:
        code = resolve_locale(locale)
        translations = _translations(code)
        if self.plural is not None and self.count is not None:
            text = translations.ngettext(self.msgid, self.plural, self.count)
            params = {"count": self.count, **self.params}
        else:
            text = translations.gettext(self.msgid)
            params = dict(self.params)
        return text.format(**{name: _format_value(v, code) for name, v in params.items()})

    def __str__(self) -> str:
        return self.render(DEFAULT_LOCALE)


def _N(msgid: str, **params: object) -> Message:  # noqa: N802 (gettext's marker convention)
    """Mark ``msgid`` for translation; rendered later with the reader's locale."""
    return Message(msgid, params)


def _NP(singular: str, plural: str, count: int, **params: object) -> Message:  # noqa: N802
    """Like :func:`_N` with a plural form chosen by ``count`` (also available as ``{count}``)."""
    return Message(singular, params, plural, count)


def t(locale: LocaleLike, msgid: str, **params: object) -> str:
    """``msgid`` in ``locale``'s language, placeholders filled and numbers formatted."""
    return Message(msgid, params).render(locale)


def tn(locale: LocaleLike, singular: str, plural: str, count: int, **params: object) -> str:
    """The plural form for ``count`` in ``locale``'s language (``{count}`` is filled too)."""
    return Message(singular, params, plural, count).render(locale)


def render(locale: LocaleLike, text: str | Message) -> str:
    """``text`` for a reader in ``locale``: a Message is translated, a plain string kept."""
    return text.render(locale) if isinstance(text, Message) else text


class CatalogTranslator(app_commands.Translator):
    """Command, option and choice names and descriptions from the same catalogs.

    The msgid is the English text in the decorators; the msgctxt the place it appears
    (``command_name``, ``parameter_description``, …), so a name and a sentence never clash.
    """

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        code = resolve_locale(locale)
        if code == DEFAULT_LOCALE:
            return None
        translated = _translations(code).pgettext(context.location.name, string.message)
        return None if translated == string.message else translated
