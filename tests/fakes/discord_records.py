"""What the fake Discord records: requests, violations, interactions, syncs."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.discord_state import (
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeUser,
    FileRecord,
    StoredMessage,
)

__all__ = [
    "CallbackRecord",
    "CommandSync",
    "DiscordError",
    "InjectedDelay",
    "InjectedFailure",
    "InteractionRecord",
    "ModalRecord",
    "RequestRecord",
    "Violation",
]

# Operations that create or edit a message (their body is a message, or a
# callback whose ``data`` is one).
MESSAGE_WRITES = frozenset(
    {
        "create_message",
        "update_message",
        "execute_webhook",
        "update_webhook_message",
        "update_original_webhook_message",
    }
)


class DiscordError(Exception):
    """A Discord error response: ``{"code": code, "message": message}``."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        errors: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            data["errors"] = self.errors
        data.update(self.extra)
        return data


class ConnectionDropped(Exception):
    """The connection is closed with no answer (armed with :meth:`FakeDiscord.drop_next`)."""


@dataclass(eq=False)
class RequestRecord:
    """One HTTP request the client made, and what the fake answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float
    operation_id: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    json: Any = None
    files: list[FileRecord] = field(default_factory=list)
    status: int = 0
    response: Any = None
    error_code: int | None = None
    injected: bool = False

    @property
    def message_body(self) -> dict[str, Any] | None:
        """The message object this request writes, if it writes one."""
        if not isinstance(self.json, dict):
            return None
        if self.operation_id == "create_interaction_response":
            if self.json.get("type") in (4, 7) and isinstance(self.json.get("data"), dict):
                return self.json["data"]
            return None
        return self.json if self.operation_id in MESSAGE_WRITES else None

    @property
    def allowed_mentions(self) -> dict[str, Any] | None:
        body = self.message_body
        return None if body is None else body.get("allowed_mentions")

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def __repr__(self) -> str:
        code = f" code={self.error_code}" if self.error_code else ""
        return f"<{self.method} {self.path} -> {self.status}{code}>"


@dataclass(eq=False)
class Violation:
    """A request body Discord would reject (answered 400 / 50035)."""

    request: RequestRecord
    operation_id: str
    message: str
    errors: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.request.method} {self.request.path} ({self.operation_id}): {self.message}"


@dataclass(eq=False)
class InjectedFailure:
    """A failure armed with :meth:`FakeDiscord.fail_next`."""

    method: str
    path_regex: re.Pattern[str]
    status: int
    code: int
    message: str
    retry_after: float | None = None
    times: int = 1
    is_global: bool = False
    #: Fail only after Discord acted on the request (the message is stored anyway).
    after: bool = False
    #: Close the connection with no answer instead (a network failure, not a Discord error).
    drop: bool = False
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (
            self.hits < self.times
            and self.method in (method, "*")
            and self.path_regex.search(path) is not None
        )

    def error(self) -> DiscordError | ConnectionDropped:
        if self.drop:
            return ConnectionDropped()
        headers: dict[str, str] = {}
        extra: dict[str, Any] = {}
        if self.status == 429:
            retry = self.retry_after if self.retry_after is not None else 1.0
            headers = {
                "Retry-After": str(max(1, round(retry + 0.4999))),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset-After": f"{retry:.3f}",
                "X-RateLimit-Scope": "shared" if not self.is_global else "global",
            }
            if self.is_global:
                headers["X-RateLimit-Global"] = "true"
            extra = {"retry_after": retry, "global": self.is_global}
        return DiscordError(self.status, self.code, self.message, headers=headers, extra=extra)


@dataclass(eq=False)
class InjectedDelay:
    """A delay armed with :meth:`FakeDiscord.delay_next`: a matching request is held,
    as if still on its way to Discord, for ``seconds`` or until :meth:`release`."""

    method: str
    path_regex: re.Pattern[str]
    seconds: float
    times: int = 1
    #: Hold the answer after Discord acted on the request (the message is stored,
    #: the bot has not heard back): a crash then is a crash after the post.
    after: bool = False
    hits: int = 0
    holding: int = 0  # requests held right now
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def matches(self, method: str, path: str) -> bool:
        return (
            self.hits < self.times
            and self.method in (method, "*")
            and self.path_regex.search(path) is not None
        )

    def release(self) -> None:
        """Let the held requests (and any later matching ones) through now."""
        self.released.set()

    async def hold(self, notify: Callable[[], None]) -> None:
        """Hold one request; ``notify`` wakes the waiters once it is held."""
        self.hits += 1
        self.holding += 1
        notify()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.released.wait(), self.seconds)
        finally:
            self.holding -= 1


@dataclass(eq=False)
class CommandSync:
    """A bulk overwrite / create / edit of application commands."""

    method: str
    guild_id: int | None
    payload: Any
    at: float


@dataclass(eq=False)
class CallbackRecord:
    """One attempt at ``POST /interactions/{id}/{token}/callback``."""

    type: int
    data: dict[str, Any] | None
    status: int
    code: int | None
    at: float
    request: RequestRecord

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(eq=False)
class InteractionRecord:
    """An interaction the fake pushed, with everything the bot did about it."""

    id: int
    token: str
    type: int
    payload: dict[str, Any]
    created_at: float
    user: FakeUser
    member: FakeMember | None
    channel: FakeChannel
    guild: FakeGuild | None
    attachment_size_limit: int
    callbacks: list[CallbackRecord] = field(default_factory=list)
    acked_at: float | None = None
    response_type: int | None = None
    ephemeral: bool = False
    original: StoredMessage | None = None
    followups: list[StoredMessage] = field(default_factory=list)
    modal: dict[str, Any] | None = None

    @property
    def acknowledged(self) -> bool:
        return self.acked_at is not None

    @property
    def ack_latency(self) -> float | None:
        """Seconds from the event to the first accepted callback (fake clock)."""
        return None if self.acked_at is None else self.acked_at - self.created_at

    @property
    def rejected_callbacks(self) -> list[CallbackRecord]:
        return [cb for cb in self.callbacks if not cb.ok]

    @property
    def deferred(self) -> bool:
        return self.response_type in (5, 6)

    @property
    def messages(self) -> list[StoredMessage]:
        """The original response (when any) then the follow-ups, deleted ones included."""
        originals = [self.original] if self.original is not None else []
        return originals + [m for m in self.followups if m is not self.original]

    @property
    def data(self) -> dict[str, Any]:
        return dict(self.payload.get("data") or {})

    def __repr__(self) -> str:
        return f"<InteractionRecord type={self.type} id={self.id} response={self.response_type}>"


@dataclass(eq=False)
class ModalRecord:
    """A modal the bot opened (callback type 9) in answer to ``interaction``."""

    interaction: InteractionRecord
    data: dict[str, Any]

    @property
    def custom_id(self) -> str:
        return str(self.data["custom_id"])

    @property
    def title(self) -> str:
        return str(self.data.get("title", ""))
