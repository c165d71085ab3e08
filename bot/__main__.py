"""Entry point: ``python -m bot`` runs the bot; ``python -m bot credits …`` is the operator CLI.

Settings are read here, never at import. A configuration problem ends start-up
with exit code 2 and one line per bad variable; SIGTERM and SIGINT shut down
gracefully (running jobs finish or are refunded) and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from bot import event_loop
from bot.config import ConfigError, Settings, load_settings
from bot.logs import configure_logging
from bot.memory import keep_large_blocks_mapped

__all__ = ["main"]

log = logging.getLogger("bot")

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2


async def serve(settings: Settings) -> int:
    """Run the bot until it is told to stop; return the process exit code."""
    # Imported here so that configuration errors and the CLI never load discord.py.
    import aiohttp
    import discord

    from bot.app import ImagineBot, apply_endpoints
    from bot.storage import StorageError

    apply_endpoints(settings)
    log.info("event loop: %s", event_loop.describe(settings.event_loop))
    bot = ImagineBot(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # signal handlers are POSIX-only
            loop.add_signal_handler(sig, stop.set)
    async with bot:
        runner = asyncio.create_task(bot.start(settings.discord_token.get_secret_value()))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            log.info("stop signal received")
            await bot.close()
        stopper.cancel()
        try:
            await runner
        except discord.LoginFailure:
            log.error("Discord rejected DISCORD_TOKEN: check the bot token in your .env.")
            return EXIT_CONFIG
        except discord.PrivilegedIntentsRequired:
            log.error("Discord refused the gateway intents; the bot needs none privileged.")
            return EXIT_CONFIG
        except StorageError as error:
            log.error("database problem: %s", error)
            return EXIT_RUNTIME
        except (OSError, aiohttp.ClientError, discord.HTTPException) as error:
            # Discord unreachable or failing at login: one line, the bot's supervisor retries.
            log.error("could not connect to Discord: %s", error)
            return EXIT_RUNTIME
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Console-script and ``python -m bot`` entry point."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "credits":
        from bot.cli import run

        return run(args)
    if args and args[0] in {"-h", "--help"}:
        print("usage: python -m bot            run the bot (settings from the environment / .env)")
        print("       python -m bot credits GUILD_ID [--add N | --set N] [--note TEXT] [--history]")
        return EXIT_OK
    if args:
        print(f"unknown command: {args[0]} (try --help)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        settings = load_settings()
    except ConfigError as error:
        print(
            f"Configuration error:\n{error}\nSee .env.example for every setting.", file=sys.stderr
        )
        return EXIT_CONFIG
    configure_logging(settings.log_level, settings.log_format, settings.secrets())
    keep_large_blocks_mapped()
    try:
        return event_loop.run(serve(settings), settings.event_loop)
    except KeyboardInterrupt:  # a second Ctrl+C during shutdown
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
