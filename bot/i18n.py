"""Translations: gettext catalogs per language, one way to render a message, the command Translator.

A message is its English text (the msgid) with ``{placeholders}``: ``t(locale, msgid, **values)``
and ``tn`` (plurals) where the reader is known, ``_N``/``_NP`` where not yet (a :class:`Message`
rendered at reply time). Numbers, durations (:class:`datetime.timedelta`, :class:`ShortDuration`)
are formatted with Babel; English is the fallback. Catalogs: ``bot/locale/<lang>/LC_MESSAGES``,
kept with ``python -m bot.catalogs``. Give markers literal msgids, never nested (the extractor).
"""

from __future__ import annotations

import functools
import gettext
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import discord
from babel.lists import format_list
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.units import format_unit
from discord import app_commands

__all__ = [
    "DEFAULT_LOCALE",
    "LOCALE_DIR",
    "_N",
    "_NP",
    "CatalogTranslator",
    "Lines",
    "LocaleLike",
    "Message",
    "OneOf",
    "ShortDuration",
    "available_locales",
    "format_duration",
    "format_number",
    "format_short_duration",
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
        return format_duration(value, code)
    if isinstance(value, ShortDuration):
        return format_short_duration(value.value, code)
    if isinstance(value, OneOf):
        return format_list([str(choice) for choice in value.choices], style="or", locale=code)
    if isinstance(value, Lines):
        return "\n".join(_format_value(line, code) for line in value.lines)
    return str(value)


def format_number(value: float, locale: LocaleLike) -> str:
    """``7.5`` as ``7.5``, ``7,5`` or ``7.5``; ``1000`` as ``1,000`` or ``1.000``."""
    return format_decimal(value, locale=resolve_locale(locale))


def format_duration(value: timedelta, locale: LocaleLike) -> str:
    """ "30 seconds", "5 Minuten", "2時間": whole units rounded up, seconds below 90 s."""
    seconds = max(value.total_seconds(), 0.0)
    if seconds < 90:
        amount, unit = math.ceil(seconds), "second"
    elif seconds < 90 * 60:
        amount, unit = math.ceil(seconds / 60), "minute"
    else:
        amount, unit = math.ceil(seconds / 3600), "hour"
    return format_unit(amount, f"duration-{unit}", length="long", locale=resolve_locale(locale))


@dataclass(frozen=True)
class ShortDuration:
    """A placeholder value shown short ("2 min", "42 Sek.") in the reader's locale."""

    value: timedelta


def format_short_duration(value: timedelta, locale: LocaleLike) -> str:
    """ "42 sec", "2 Min.": whole seconds under a minute, else whole minutes, rounded down."""
    seconds = max(int(value.total_seconds()), 0)
    amount, unit = (seconds, "second") if seconds < 60 else (seconds // 60, "minute")
    return format_unit(amount, f"duration-{unit}", length="short", locale=resolve_locale(locale))


@dataclass(frozen=True)
class OneOf:
    """A placeholder value listing alternatives: "512 or 1024", "512 oder 1024"."""

    choices: tuple[object, ...]


@dataclass(frozen=True)
class Lines:
    """A placeholder value of several lines (messages or text), each in the reader's locale."""

    lines: tuple[str, ...]


class Message(str):
    """A msgid (and plural form) with its values, rendered once the reader's locale is known.

    It *is* its English text (a ``str``), so code that logs it, stores it in the ledger or
    compares it keeps working; :meth:`render` gives it in another language.
    """

    msgid: str
    params: Mapping[str, object]
    plural: str | None
    n: int | None

    def __new__(
        cls,
        msgid: str,
        params: Mapping[str, object] | None = None,
        plural: str | None = None,
        count: int | None = None,
    ) -> Message:
        params = dict(params or {})
        english = _render(msgid, params, plural, count, DEFAULT_LOCALE)
        self = super().__new__(cls, english)
        self.msgid, self.params, self.plural, self.n = msgid, params, plural, count
        return self

    def render(self, locale: LocaleLike) -> str:
        return _render(self.msgid, self.params, self.plural, self.n, resolve_locale(locale))


def _render(
    msgid: str, params: Mapping[str, object], plural: str | None, count: int | None, code: str
) -> str:
    translations = _translations(code)
    if plural is not None and count is not None:
        text = translations.ngettext(msgid, plural, count)
        params = {"count": count, **params}
    else:
        text = translations.gettext(msgid)
    return text.format(**{name: _format_value(v, code) for name, v in params.items()})


def _N(msgid: str, **params: object) -> Message:  # noqa: N802 (gettext's marker convention)
    """Mark ``msgid`` for translation; rendered later with the reader's locale."""
    return Message(msgid, params)


def _NP(singular: str, plural: str, count: int, **params: object) -> Message:  # noqa: N802
    """Like :func:`_N` with a plural form chosen by ``count`` (also available as ``{count}``)."""
    return Message(singular, params, plural, count)


def t(locale: LocaleLike, msgid: str, **params: object) -> str:
    """``msgid`` in ``locale``'s language, placeholders filled and numbers formatted."""
    return _render(msgid, params, None, None, resolve_locale(locale))


def tn(locale: LocaleLike, singular: str, plural: str, count: int, **params: object) -> str:
    """The plural form for ``count`` in ``locale``'s language (``{count}`` is filled too)."""
    return _render(singular, params, plural, count, resolve_locale(locale))


def render(locale: LocaleLike, text: str) -> str:
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
