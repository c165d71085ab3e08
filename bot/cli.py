"""Operator command line: ``python -m bot credits GUILD_ID [--add N | --set N] ...``.

Needs only ``DATABASE_URL`` and ``DEFAULT_GUILD_CREDITS``, not the bot's secrets; safe while
the bot runs. Changes go through the ledger with the note ``cli``. Exit codes: 0 done, 1 the
database or configuration refused, 2 bad usage; errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.config import Settings
from bot.credit_errors import CreditError
from bot.credits import MAX_CREDITS, MAX_NOTE_LENGTH, CreditLedger
from bot.insight import MAX_HISTORY_PAGE, Insight
from bot.storage import StorageError, open_storage
from bot.storage.records import LedgerEntry

__all__ = ["EXIT_OK", "EXIT_RUNTIME", "EXIT_USAGE", "CliSettings", "load_cli_settings", "run"]

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

PROG = "python -m bot"
_MAX_SNOWFLAKE = 2**63 - 1
_SNOWFLAKE = re.compile(r"[1-9][0-9]{16,19}")
_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")
_NOTE_COLUMN_WIDTH = 60


class CliSettings(BaseSettings):
    """The two settings the CLI needs; defaults are the bot's own (``bot.config``)."""

    model_config = SettingsConfigDict(
        env_file=None, env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    database_url: str = Settings.model_fields["database_url"].default
    default_guild_credits: int = Field(
        default=Settings.model_fields["default_guild_credits"].default, ge=0, le=MAX_CREDITS
    )


class _ConfigError(Exception):
    pass


def load_cli_settings(env_file: str | Path | None = ".env") -> CliSettings:
    """Environment first, then ``env_file`` when it exists."""
    path = Path(env_file) if env_file is not None else None
    try:
        return CliSettings(_env_file=path if path is not None and path.is_file() else None)  # type: ignore[call-arg]
    except ValidationError as error:
        problems = []
        for problem in error.errors():
            name = str(problem["loc"][0]).upper() if problem["loc"] else "configuration"
            reason = str(problem["msg"]).removeprefix("Value error, ")
            problems.append(f"{name} is invalid: {reason}")
        raise _ConfigError("; ".join(problems) + ".") from None


# -- argument parsing -----------------------------------------------------------------


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (our own), not usage text plus exit."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


@dataclass(frozen=True)
class CreditsCommand:
    guild_id: int
    add: int | None
    set_to: int | None
    note: str
    history: bool
    limit: int


def _build_parser() -> _Parser:
    parser = _Parser(prog=PROG, description="imagine-bot operator commands.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    credits = commands.add_parser(
        "credits",
        help="show or change a guild's credit balance",
        description=(
            "Print a guild's credit balance; --add mints credits and --set sets the balance, "
            "both recorded in the ledger. A guild the bot has not seen yet is created first "
            "with the default credits, as the bot would."
        ),
    )
    credits.add_argument("guild_id", metavar="GUILD_ID", help="Discord server id (17-20 digits)")
    change = credits.add_mutually_exclusive_group()
    change.add_argument("--add", metavar="N", help="add N credits (N >= 1)")
    change.add_argument("--set", metavar="N", dest="set_to", help="set the balance to N (N >= 0)")
    credits.add_argument("--note", metavar="TEXT", help="note recorded with --add or --set")
    credits.add_argument("--history", action="store_true", help="also list recent ledger entries")
    credits.add_argument(
        "--limit", metavar="K", help="how many entries --history lists (default 10)"
    )
    return parser


def _guild_id(text: str) -> int:
    value = text.strip()
    if _SNOWFLAKE.fullmatch(value) is None:
        raise _UsageError(f"GUILD_ID must be a Discord server id (17 to 20 digits), not {text!r}")
    number = int(value)
    if number > _MAX_SNOWFLAKE:
        raise _UsageError(f"GUILD_ID {value} is larger than any Discord id")
    return number


def _whole_number(text: str, option: str, *, minimum: int, maximum: int, unit: str) -> int:
    value = text.strip()
    if _WHOLE_NUMBER.fullmatch(value) is None:
        raise _UsageError(f"{option} needs a whole number of {unit}s, not {text!r}")
    number = int(value)
    if number < minimum:
        if minimum == 0:
            raise _UsageError(f"{option} cannot be negative (got {number})")
        raise _UsageError(f"{option} must be at least {minimum} {unit} (got {number})")
    if number > maximum:
        raise _UsageError(f"{option} can be at most {maximum} {unit}s (got {number})")
    return number


def _credits_command(args: argparse.Namespace) -> CreditsCommand:
    guild_id = _guild_id(args.guild_id)
    add = (
        None
        if args.add is None
        else _whole_number(args.add, "--add", minimum=1, maximum=MAX_CREDITS, unit="credit")
    )
    set_to = (
        None
        if args.set_to is None
        else _whole_number(args.set_to, "--set", minimum=0, maximum=MAX_CREDITS, unit="credit")
    )
    if args.note is not None and add is None and set_to is None:
        raise _UsageError("--note only applies to --add or --set")
    note_text = " ".join((args.note or "").split())
    if len(note_text) > MAX_NOTE_LENGTH - len("cli: "):
        raise _UsageError(f"--note can be at most {MAX_NOTE_LENGTH - len('cli: ')} characters")
    if args.limit is not None and not args.history:
        raise _UsageError("--limit only applies to --history")
    limit = (
        10
        if args.limit is None
        else _whole_number(args.limit, "--limit", minimum=1, maximum=MAX_HISTORY_PAGE, unit="entry")
    )
    return CreditsCommand(
        guild_id=guild_id,
        add=add,
        set_to=set_to,
        note=f"cli: {note_text}" if note_text else "cli",
        history=bool(args.history),
        limit=limit,
    )


# -- output --------------------------------------------------------------------------


def _credits_word(count: int) -> str:
    return "credit" if count == 1 else "credits"


def _signed(value: int) -> str:
    return f"{value:+d}" if value else "0"


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def format_history(entries: Sequence[LedgerEntry], total: int) -> list[str]:
    """Ledger entries as an aligned table, newest first."""
    if not entries:
        return ["No ledger entries yet."]
    headers = ("ID", "Time (UTC)", "Kind", "Delta", "Balance", "Job", "User", "Actor", "Note")
    right = {0, 3, 4, 5}
    rows = [
        (
            str(entry.id),
            entry.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            entry.kind.value,
            _signed(entry.delta),
            _cell(entry.balance_after),
            _cell(entry.job_id),
            _cell(entry.user_id),
            _cell(entry.actor_id),
            _shorten(entry.note or "", _NOTE_COLUMN_WIDTH),
        )
        for entry in entries
    ]
    widths = [max(len(row[i]) for row in (headers, *rows)) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ).rstrip()

    shown = f"{len(entries)} of {total}" if total > len(entries) else f"all {total}"
    return [f"Ledger ({shown} entries, newest first):", line(headers), *map(line, rows)]


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# -- commands ------------------------------------------------------------------------


async def _run_credits(command: CreditsCommand, settings: CliSettings) -> int:
    storage = await open_storage(settings.database_url)
    try:
        ledger = CreditLedger(storage, default_credits=settings.default_guild_credits)
        guild = command.guild_id
        if command.add is not None:
            balance = await ledger.grant(guild, command.add, actor_id=None, note=command.note)
            change = f" (+{command.add} added)"
        elif command.set_to is not None:
            balance = await ledger.set_balance(
                guild, command.set_to, actor_id=None, note=command.note
            )
            change = " (set)"
        else:
            balance = await ledger.balance(guild)
            change = ""
        print(f"Guild {guild}: {balance} {_credits_word(balance)}{change}")
        if command.history:
            statement = Insight(storage)
            entries = await statement.history(guild, limit=command.limit)
            total = await statement.count_history(guild)
            print()
            print("\n".join(format_history(entries, total)))
    finally:
        await storage.close()
    return EXIT_OK


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def run(argv: list[str]) -> int:
    """Run the CLI with ``argv`` (without the program name); returns the exit code."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        command = _credits_command(args)
    except _UsageError as error:
        return _fail(f"{error} (see --help)", EXIT_USAGE)
    except SystemExit as exit_:  # --help / --version: argparse already printed
        return exit_.code if isinstance(exit_.code, int) else EXIT_OK
    try:
        settings = load_cli_settings()
        return asyncio.run(_run_credits(command, settings))
    except _ConfigError as error:
        return _fail(str(error), EXIT_RUNTIME)
    except StorageError as error:
        return _fail(str(error), EXIT_RUNTIME)
    except CreditError as error:
        return _fail(error.user_message, EXIT_RUNTIME)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except Exception as error:  # an operator tool prints one line, never a traceback
        logging.getLogger("bot.cli").debug("unexpected failure", exc_info=True)
        return _fail(f"unexpected failure: {type(error).__name__}: {error}", EXIT_RUNTIME)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    raise SystemExit(run(sys.argv[1:]))
