"""Logging: secrets never reach output, JSON lines parse, job context is attached."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from bot.logs import configure_logging, job_context

TOKEN = "discord-token-abcdef123456"
KEY = "segmind-key-987654"


@pytest.fixture
def capture() -> Iterator[tuple[io.StringIO, str]]:
    stream = io.StringIO()
    root = logging.getLogger()
    old_level = root.level
    handler = configure_logging("DEBUG", "json", [TOKEN, KEY], stream=stream)
    yield stream, "json"
    root.removeHandler(handler)
    root.setLevel(old_level)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_parse_and_carry_job_context(capture: tuple[io.StringIO, str]) -> None:
    stream, _ = capture
    logging.getLogger("bot.test").info(
        "job done", extra=job_context(guild_id=1, user_id=2, job_id=3)
    )
    [line] = _lines(stream)
    assert line["message"] == "job done"
    assert (line["guild_id"], line["user_id"], line["job_id"]) == (1, 2, 3)
    assert line["level"] == "INFO"


def test_secrets_are_redacted_everywhere(capture: tuple[io.StringIO, str]) -> None:
    stream, _ = capture
    log = logging.getLogger("bot.test")
    log.info("token is %s", TOKEN)
    log.warning(f"header x-api-key: {KEY}")  # noqa: G004 - the secret is baked into the message
    try:
        raise RuntimeError(f"failed with {KEY}")
    except RuntimeError:
        log.exception("boom")
    output = stream.getvalue()
    assert TOKEN not in output
    assert KEY not in output
    assert output.count("[redacted]") >= 3
    assert all(isinstance(line, dict) for line in _lines(stream))


def test_text_format_appends_context() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    old_level = root.level
    handler = configure_logging("INFO", "text", [TOKEN], stream=stream)
    try:
        logging.getLogger("bot.test").info(
            "queued %s", TOKEN, extra=job_context(guild_id=9, job_id=7)
        )
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    line = stream.getvalue().strip()
    assert line.endswith("[guild_id=9 job_id=7]")
    assert TOKEN not in line
