"""Logging set-up: text or JSON lines, job context on every record, secrets redacted.

Every record passes through :class:`RedactingFilter`, so even a library that logs
a header or a URL with a token in it cannot leak ``DISCORD_TOKEN`` or
``SEGMIND_API_KEY``. Job-related code logs with ``extra=job_context(...)`` so each
line carries the guild, user and job id.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = [
    "CONTEXT_FIELDS",
    "JsonFormatter",
    "RedactingFilter",
    "TextFormatter",
    "configure_logging",
    "job_context",
]

CONTEXT_FIELDS = ("guild_id", "user_id", "job_id", "channel_id")
REDACTED = "[redacted]"


def job_context(
    *,
    guild_id: int | None = None,
    user_id: int | None = None,
    job_id: int | None = None,
    channel_id: int | None = None,
) -> dict[str, Any]:
    """The ``extra=`` mapping that tags a log record with its job's identity."""
    values = {"guild_id": guild_id, "user_id": user_id, "job_id": job_id, "channel_id": channel_id}
    return {key: value for key, value in values.items() if value is not None}


class RedactingFilter(logging.Filter):
    """Replaces every occurrence of a secret in a record's message and arguments."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Very short values would redact innocent text; real tokens are long.
        self._secrets = tuple(sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True))

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        # Render once so secrets inside %-args are caught too, then freeze the result.
        message = record.getMessage()
        scrubbed = self._scrub(message)
        if scrubbed != message or record.args:
            record.msg = scrubbed
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Format the traceback now, scrubbed, and drop the live exception.
            record.exc_text = self._scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self._scrub(record.exc_text)
        return True


def _context_suffix(record: logging.LogRecord) -> str:
    parts = [f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if hasattr(record, name)]
    return f" [{' '.join(parts)}]" if parts else ""


class TextFormatter(logging.Formatter):
    """Human-readable lines with the job context appended in brackets."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-8s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        suffix = _context_suffix(record)
        if not suffix:
            return line
        head, sep, tail = line.partition("\n")
        return f"{head}{suffix}{sep}{tail}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            if hasattr(record, name):
                payload[name] = getattr(record, name)
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exception"] = record.exc_text
        return json.dumps(payload, default=str)


def configure_logging(
    level: str,
    fmt: str,
    secrets: Iterable[str],
    *,
    stream: TextIO | None = None,
    levels: Mapping[str, str] | None = None,
) -> logging.Handler:
    """Install one handler on the root logger; returns it so callers can remove it."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_imagine_bot", False):
            root.removeHandler(old)
    handler._imagine_bot = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # discord.py's gateway chatter at DEBUG drowns the bot's own lines.
    for name, name_level in {
        "discord": "INFO",
        "discord.gateway": "WARNING",
        **(levels or {}),
    }.items():
        logging.getLogger(name).setLevel(max(logging.getLevelName(name_level), root.level))
    return handler
