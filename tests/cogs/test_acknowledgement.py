"""/imagine's private defer (awaited before anything else is done) and the status line
that edits its response."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any, cast

import discord
import pytest

from cogs.imagine._cog import _defer
from cogs.imagine._delivery import StatusMessage

pytestmark = pytest.mark.timeout(10)


def unknown_interaction() -> discord.NotFound:
    response = SimpleNamespace(status=404, reason="Not Found")
    return discord.NotFound(cast(Any, response), {"code": 10062, "message": "Unknown interaction"})


class StubResponse:
    def __init__(self, error: BaseException | None = None, *, done: bool = False) -> None:
        self.error = error
        self.done = done
        self.defers: list[dict[str, bool]] = []

    def is_done(self) -> bool:
        return self.done

    async def defer(self, *, ephemeral: bool, thinking: bool) -> None:
        self.defers.append({"ephemeral": ephemeral, "thinking": thinking})
        await asyncio.sleep(0)
        if self.error is not None:
            raise self.error
        self.done = True


class StubInteraction:
    guild_id = 10
    user = SimpleNamespace(id=20)

    def __init__(self, response: StubResponse | None = None) -> None:
        self.response = response or StubResponse()
        self.edits: list[str] = []
        self.expired = False

    def is_expired(self) -> bool:
        return self.expired

    async def edit_original_response(self, *, content: str, **kwargs: Any) -> None:
        self.edits.append(content)


def interaction(stub: StubInteraction) -> discord.Interaction[Any]:
    return cast("discord.Interaction[Any]", stub)


async def test_defer_is_private_thinking_and_reports_success() -> None:
    stub = StubInteraction()
    assert await _defer(interaction(stub)) is True
    assert stub.response.defers == [{"ephemeral": True, "thinking": True}]


async def test_an_answered_interaction_is_not_deferred_again() -> None:
    stub = StubInteraction(StubResponse(done=True))
    assert await _defer(interaction(stub)) is True
    assert stub.response.defers == []


async def test_a_refused_defer_is_a_warning_not_an_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stub = StubInteraction(StubResponse(unknown_interaction()))
    assert await _defer(interaction(stub)) is False
    [record] = caplog.records
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "404 10062" in record.getMessage()
    assert (getattr(record, "guild_id", None), getattr(record, "user_id", None)) == (10, 20)


async def test_an_unexpected_defer_failure_reaches_the_error_handler() -> None:
    # Not a Discord refusal: the command's error handler logs it and apologises.
    stub = StubInteraction(StubResponse(RuntimeError("Session is closed")))
    with pytest.raises(RuntimeError):
        await _defer(interaction(stub))


async def test_status_line_sends_only_the_newest_text_then_the_final_one() -> None:
    stub = StubInteraction()
    status = StatusMessage(interaction(stub), min_interval=0)
    status.show("Queued: #2 in line")
    status.show("Generating 1/2…")
    for _ in range(5):
        await asyncio.sleep(0)
    assert stub.edits == ["Generating 1/2…"]
    assert await status.final("✅ Done!") is True
    assert stub.edits == ["Generating 1/2…", "✅ Done!"]


async def test_status_line_is_dead_once_the_token_expired() -> None:
    stub = StubInteraction()
    stub.expired = True
    status = StatusMessage(interaction(stub), min_interval=0)
    # False: ChannelDelivery.failed then tells the requester in the channel.
    assert await status.final("❌ Segmind failed.") is False
    assert status.alive is False and stub.edits == []


async def test_status_line_edits_at_once() -> None:
    stub = StubInteraction()
    status = StatusMessage(interaction(stub), min_interval=0)
    assert await status.final("✅ Done!") is True
    assert stub.edits == ["✅ Done!"]


async def test_status_line_stops_editing_once_the_token_has_expired() -> None:
    stub = StubInteraction()
    status = StatusMessage(interaction(stub), min_interval=0)
    assert await status.final("⏳ #3 in line · about 14 min") is True
    stub.expired = True  # 15 minutes later
    status.show("⏳ #1 in line · under a minute")
    assert await status.final("✅ Done!") is False
    assert stub.edits == ["⏳ #3 in line · about 14 min"]  # no request after the expiry
    assert status.alive is False
