"""Discord permissions named as Discord's own client names them, in the reader's language."""

from __future__ import annotations

from collections.abc import Iterable

from bot.i18n import _N, LocaleLike, Message, t

__all__ = ["PERMISSION_NAMES", "permission_name", "permission_names"]

#: Permission flag -> its name in Discord's client (translated like Discord translates it).
PERMISSION_NAMES: dict[str, Message] = {
    "view_channel": _N("View Channel"),
    "send_messages": _N("Send Messages"),
    "send_messages_in_threads": _N("Send Messages in Threads"),
    "attach_files": _N("Attach Files"),
    "embed_links": _N("Embed Links"),
    "manage_guild": _N("Manage Server"),
    "manage_messages": _N("Manage Messages"),
    "administrator": _N("Administrator"),
}


def permission_name(flag: str, locale: LocaleLike) -> str:
    """``manage_guild`` as "Manage Server" / "Server verwalten"; an unlisted flag title-cased."""
    name = PERMISSION_NAMES.get(flag)
    if name is None:
        return flag.replace("_", " ").replace("guild", "server").title()
    return t(locale, name)


def permission_names(flags: Iterable[str], locale: LocaleLike) -> str:
    """Several permissions, comma-separated, each as :func:`permission_name` gives it."""
    return ", ".join(permission_name(flag, locale) for flag in flags)
