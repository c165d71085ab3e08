"""How the bot answers people: one private-reply helper and the command tree's error handler.

Every failure a member can cause or meet ends here as a short ephemeral message;
anything unexpected is logged with guild, user and context and answered with an
apology, never with a traceback.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import discord
from discord import app_commands

from bot.errors import UserFacingError
from bot.i18n import _N, LocaleLike, render
from bot.logs import job_context
from bot.permission_names import permission_names

__all__ = [
    "ALREADY_ACKNOWLEDGED",
    "APOLOGY",
    "ImagineTree",
    "defer_private",
    "describe_error",
    "reply_private",
]

log = logging.getLogger(__name__)

APOLOGY = _N("Sorry, something went wrong on our side. It has been logged; please try again.")
#: Discord's error code for a second first response to one interaction.
ALREADY_ACKNOWLEDGED = 40060


async def defer_private(interaction: discord.Interaction[Any], *, thinking: bool = True) -> None:
    """Defer privately. Discord may take a defer yet answer 5xx: discord.py then retries it and
    hears "already acknowledged", and the defer stands (follow-ups work, the first reply moves
    to a follow-up in :func:`reply_private`). Any other refusal is raised."""
    try:
        await interaction.response.defer(ephemeral=True, thinking=thinking)
    except discord.HTTPException as error:
        if error.code != ALREADY_ACKNOWLEDGED:
            raise
        context = job_context(guild_id=interaction.guild_id, user_id=interaction.user.id)
        log.info("interaction already acknowledged (a retried defer)", extra=context)


async def reply_private(interaction: discord.Interaction[Any], text: str) -> bool:
    """Send ``text`` only to the member, as the first response or as a follow-up.

    A :class:`bot.i18n.Message` is sent in the member's language (``interaction.locale``).

    Returns False when Discord no longer accepts anything for this interaction
    (expired token, already answered elsewhere); the caller decides what else to do.
    """
    text = render(interaction.locale, text)
    quiet = discord.AllowedMentions.none()
    try:
        if not interaction.response.is_done():
            try:
                await interaction.response.send_message(
                    text, ephemeral=True, allowed_mentions=quiet
                )
                return True
            except discord.HTTPException as error:
                # A defer discord.py did not see succeed (see defer_private): follow it up.
                if error.code != ALREADY_ACKNOWLEDGED:
                    raise
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=quiet)
    except discord.HTTPException as error:
        log.warning(
            "could not answer interaction (%s %s)",
            error.status,
            error.code,
            extra=job_context(guild_id=interaction.guild_id, user_id=interaction.user.id),
        )
        return False
    return True


def describe_error(error: BaseException, locale: LocaleLike = None) -> str | None:
    """The user-facing text for an expected error in ``locale``'s language, or None for a bug."""
    message = _error_message(error, locale)
    return None if message is None else render(locale, message)


def _error_message(error: BaseException, locale: LocaleLike) -> str | None:
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, UserFacingError):
        return error.user_message
    user_message = getattr(error, "user_message", None)
    if isinstance(user_message, str):
        return user_message
    if isinstance(error, app_commands.CommandNotFound):
        return _N(
            "That command isn't available right now (the bot may be restarting). "
            "Try again in a minute."
        )
    if isinstance(error, app_commands.NoPrivateMessage):
        return _N("This command works in servers only.")
    if isinstance(error, app_commands.MissingPermissions):
        return _N(
            "You need the {permissions} permission to do that.",
            permissions=permission_names(error.missing_permissions, locale),
        )
    if isinstance(error, app_commands.BotMissingPermissions):
        return _N(
            "I need the {permissions} permission in this channel. Ask a server admin to grant it.",
            permissions=permission_names(error.missing_permissions, locale),
        )
    if isinstance(error, app_commands.CommandOnCooldown):
        return _N(
            "Slow down a little: try again in {wait}.", wait=timedelta(seconds=error.retry_after)
        )
    if isinstance(error, app_commands.TransformerError):
        return _N("“{value}” is not a valid value for that option.", value=str(error.value))
    if isinstance(error, app_commands.CheckFailure):
        return str(error) or _N("You can't use this command here.")
    return None


class ImagineTree(app_commands.CommandTree[Any]):
    """A command tree whose one error handler maps every failure to a private message."""

    async def on_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        message = describe_error(error, interaction.locale)
        if message is None:
            original = (
                error.original if isinstance(error, app_commands.CommandInvokeError) else error
            )
            command = interaction.command.qualified_name if interaction.command else "?"
            log.error(
                "unexpected error in /%s",
                command,
                exc_info=original,
                extra=job_context(guild_id=interaction.guild_id, user_id=interaction.user.id),
            )
            message = APOLOGY
        await reply_private(interaction, message)
