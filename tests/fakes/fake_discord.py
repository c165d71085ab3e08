"""An offline Discord for tests: gateway + REST that the real discord.py client logs in to.

Usage (the ``fake_discord`` fixture patches discord.py's REST base and gateway
URL for the test only)::

    async def test_imagine(fake_discord):
        bot = make_bot()  # any discord.Client / commands.Bot / AutoShardedBot
        async with run_client(bot, fake_discord):
            call = await fake_discord.slash("imagine", {"prompt": "a cat"})
            reply = await fake_discord.wait_for_followup(call)
            assert reply.attachments

A bot started in a subprocess is pointed at ``fake.api_url`` and
``fake.gateway_url`` (settings ``DISCORD_API_URL`` / ``DISCORD_GATEWAY_URL``).

Every request body is validated against Discord's OpenAPI spec (see
``discord_openapi``); the fixture fails the test at teardown when a body was
invalid or a route unhandled, unless the test took them with
:meth:`FakeDiscord.take_violations` / ``fake.unhandled.clear()``.
"""

# Test helpers take ``timeout=`` so every wait is bounded with one argument.

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import discord
import pytest
import pytest_asyncio
import yarl
from aiohttp import web
from discord.gateway import DiscordWebSocket
from discord.http import Route

from tests.fakes.discord_gateway import DIRECT_MESSAGES, GUILD_MESSAGES, Gateway, GatewaySession
from tests.fakes.discord_interactions import (
    Actor,
    CommandUnavailableError,
    build_click,
    build_modal_submit,
    build_slash,
)
from tests.fakes.discord_openapi import OpenApiSpec, load_spec
from tests.fakes.discord_records import (
    CallbackRecord,
    CommandSync,
    InjectedDelay,
    InjectedFailure,
    InteractionRecord,
    ModalRecord,
    RequestRecord,
    Violation,
)
from tests.fakes.discord_rest import RestApi
from tests.fakes.discord_state import (
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
    FileRecord,
    Overwrite,
    StoredMessage,
    walk_components,
)
from tests.fakes.discord_world import DiscordWorld

__all__ = [
    "DEFAULT_TOKEN",
    "CallbackRecord",
    "CommandSync",
    "CommandUnavailableError",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeMember",
    "FakeRole",
    "FakeUser",
    "FileRecord",
    "GatewaySession",
    "InjectedDelay",
    "InjectedFailure",
    "InteractionRecord",
    "ModalRecord",
    "Overwrite",
    "RequestRecord",
    "StoredMessage",
    "Violation",
    "fake_discord",
    "run_client",
]

T = TypeVar("T")
_MIB = 1024 * 1024
DEFAULT_TOKEN = "fake-bot-token.not-a-secret"
_DEFAULT_ERRORS = {
    400: "Bad Request",
    401: "401: Unauthorized",
    403: "Missing Permissions",
    404: "Unknown Message",
    413: "Request entity too large",
    429: "You are being rate limited.",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


class FakeDiscord(DiscordWorld):
    """An in-process Discord (REST + gateway) on ``127.0.0.1`` with a ready-made world
    (see :class:`~tests.fakes.discord_world.DiscordWorld` for what is in it).

    Tunables (plain attributes, change them any time): ``ack_deadline`` (3 s to
    answer an interaction), ``token_lifetime`` (15 min), ``recommended_shards``
    (what ``GET /gateway/bot`` answers), ``heartbeat_interval`` (seconds),
    ``validate`` (OpenAPI body validation), ``dm_attachment_size_limit``.
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
        validate: bool = True,
        spec_path: str | Path | None = None,
        heartbeat_interval: float = 41.25,
        recommended_shards: int = 1,
        ack_deadline: float = 3.0,
        token_lifetime: float = 15 * 60.0,
    ) -> None:
        super().__init__()
        self.token = token
        self.host = host
        self.port = port
        self.validate = validate
        self.spec: OpenApiSpec = load_spec(spec_path)
        self.heartbeat_interval = heartbeat_interval
        self.recommended_shards = recommended_shards
        self.ack_deadline = ack_deadline
        self.token_lifetime = token_lifetime
        self.rest = RestApi(self)
        self.gateway = Gateway(self)
        self.closing = False
        self._clock_offset = 0.0
        self._runner: web.AppRunner | None = None

    # -- server --------------------------------------------------------------------

    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=512 * _MIB)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/gateway/", self.gateway.handle)
        app.router.add_get("/attachments/{channel}/{attachment}/{filename}", self._attachment)
        app.router.add_route("*", "/{tail:.*}", self.rest.handle)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=2.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        """Stop serving: websockets are closed and their handlers finish; never hangs."""
        if self._runner is None:
            return
        self.closing = True
        await self.gateway.close()
        await self._runner.cleanup()
        self._runner = None
        self.notify()

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _attachment(self, request: web.Request) -> web.StreamResponse:
        upload = self.attachments.get(int(request.match_info["attachment"]))
        if upload is None:
            return web.Response(status=404)
        return web.Response(body=upload.data, headers={"Content-Type": upload.guessed_type})

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """For ``discord.http.Route.BASE`` / ``DISCORD_API_URL``."""
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        """For ``DiscordWebSocket.DEFAULT_GATEWAY`` / ``DISCORD_GATEWAY_URL``."""
        return f"ws://{self.host}:{self.port}/gateway"

    @contextlib.contextmanager
    def patch_discord(self) -> Iterator[None]:
        """Point discord.py at this fake (without pytest's monkeypatch); restores on exit."""
        old_base, old_gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
        Route.BASE = self.api_url
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield
        finally:
            Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = old_base, old_gateway

    # -- clock and notifications -----------------------------------------------------

    def now(self) -> float:
        """The fake's clock (monotonic seconds): interaction deadlines and token expiry."""
        return time.monotonic() + self._clock_offset

    def wall_time(self) -> float:
        return time.time() + self._clock_offset

    def advance(self, seconds: float) -> None:
        """Move the fake's clock forward (expire tokens without sleeping)."""
        self._clock_offset += seconds
        self.notify()

    def seed_commands(
        self, commands: list[dict[str, Any]], *, guild_id: int | None = None
    ) -> list[dict[str, Any]]:
        """Store commands as if synced in an earlier run (a bot that only syncs when its
        tree changed will not PUT them again). Not recorded in ``command_syncs``."""
        stored = [self.rest.command_object(command, guild_id, None) for command in commands]
        self.command_store[guild_id] = stored
        return stored

    @property
    def connected_sessions(self) -> list[GatewaySession]:
        return [s for s in self.gateway.sessions if s.connected]

    # -- failures and gateway control ---------------------------------------------------

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        code: int = 0,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        times: int = 1,
        is_global: bool = False,
        after: bool = False,
    ) -> InjectedFailure:
        """Answer the next ``times`` matching requests with a Discord error.

        ``after``: Discord acts on the request first (stores the message), then fails.

        ``path_regex`` is searched in the path after ``/api/v10`` (e.g.
        ``r"/channels/\\d+/messages$"``); ``method`` may be ``"*"``. A 429 carries
        ``retry_after`` in the body and ``Retry-After`` / ``X-RateLimit-*`` headers.
        """
        failure = InjectedFailure(
            method=method.upper(),
            path_regex=re.compile(path_regex),
            status=status,
            code=code,
            message=message or _DEFAULT_ERRORS.get(status, "Error"),
            retry_after=retry_after,
            times=times,
            is_global=is_global,
            after=after,
        )
        self.failures.append(failure)
        return failure

    def drop_next(
        self, method: str, path_regex: str, *, times: int = 1, after: bool = False
    ) -> InjectedFailure:
        """Close the connection of the next ``times`` matching requests with no answer
        (a network failure); ``after``: Discord acts on the request first (stores the message)."""
        failure = self.fail_next(method, path_regex, 0, times=times, after=after)
        failure.drop = True
        return failure

    def delay_next(
        self, method: str, path_regex: str, seconds: float, *, times: int = 1, after: bool = False
    ) -> InjectedDelay:
        """Hold the next ``times`` matching requests for ``seconds`` (or until
        ``.release()``) before serving them: Discord's latency on one route.

        The request is held before Discord acts on it (and before any failure armed
        with :meth:`fail_next` for it), so deadlines are checked when it is let through.
        ``after``: Discord acts on it first and only its answer is held.
        """
        delay = InjectedDelay(
            method=method.upper(),
            path_regex=re.compile(path_regex),
            seconds=seconds,
            times=times,
            after=after,
        )
        self.delays.append(delay)
        return delay

    async def drop_gateway(self, *, code: int = 4000, refuse_for: float | None = None) -> int:
        """Close every gateway connection (sessions stay resumable); optionally refuse
        reconnects for ``refuse_for`` seconds (``math.inf``: until :meth:`allow_gateway`)."""
        if refuse_for is not None:
            self.refuse_gateway(refuse_for)
        count = await self.gateway.drop(code)
        self.notify()
        return count

    def refuse_gateway(self, seconds: float = float("inf")) -> None:
        """Answer gateway connection attempts with HTTP 503 for ``seconds``."""
        self.gateway.refuse_until = self.now() + seconds

    def allow_gateway(self) -> None:
        self.gateway.refuse_until = None
        self.notify()

    async def dispatch(
        self, event: str, data: dict[str, Any], *, guild_id: int | None = None
    ) -> None:
        """Send any DISPATCH event to the session serving ``guild_id`` (None: shard 0)."""
        if not await self.gateway.dispatch(event, data, guild_id=guild_id):
            raise RuntimeError(f"no gateway session to deliver {event} (is the client running?)")

    async def dispatch_message_event(self, event: str, message: StoredMessage) -> None:
        if message.ephemeral:
            return
        channel = self.channels.get(message.channel_id)
        guild_id = channel.guild_id if channel is not None else None
        session = self.gateway.session_for(guild_id)
        intent = GUILD_MESSAGES if guild_id else DIRECT_MESSAGES
        if session is None or not session.intents & intent:
            return
        if event == "MESSAGE_DELETE":
            data: dict[str, Any] = {"id": str(message.id), "channel_id": str(message.channel_id)}
        else:
            data = dict(message.payload)
        if guild_id:
            data["guild_id"] = str(guild_id)
            author = self.guilds[guild_id].members.get(int(message.payload["author"]["id"]))
            if author is not None and event != "MESSAGE_DELETE":
                data["member"] = author.payload(with_user=False)
        await self.gateway.dispatch(event, data, guild_id=guild_id)

    async def join_guild(self, guild: FakeGuild) -> None:
        """The bot is added to ``guild``: GUILD_CREATE to its shard."""
        self._add_bot(guild)
        session = self.gateway.session_for(guild.id)
        if session is not None:
            payload = self.guild_create_payload(guild, session)
            payload["joined_at"] = discord.utils.utcnow().isoformat()
            del payload["unavailable"]  # a join, not an outage ending (guild_join event)
            await self.gateway.dispatch("GUILD_CREATE", payload, guild_id=guild.id)

    async def leave_guild(self, guild: FakeGuild) -> None:
        """The bot is removed from ``guild``: GUILD_DELETE."""
        guild.members.pop(self.bot_user.id, None)
        await self.gateway.dispatch("GUILD_DELETE", {"id": str(guild.id)}, guild_id=guild.id)

    async def user_message(self, channel: FakeChannel, user: Actor, content: str) -> StoredMessage:
        """A user posts ``content`` in ``channel`` (MESSAGE_CREATE to the bot)."""
        author = self.users[user] if isinstance(user, int) else getattr(user, "user", user)
        message = self.rest.messages.create_message(
            channel, {"content": content}, [], message_type=0, author=author
        )
        await self.dispatch_message_event("MESSAGE_CREATE", message)
        return message

    # -- interactions -----------------------------------------------------------------------

    async def _push(
        self, payload: dict[str, Any], record: InteractionRecord, shard: int | None = None
    ) -> InteractionRecord:
        guild_id = record.guild.id if record.guild is not None else None
        session = self.gateway.session_for(guild_id, shard)
        if session is None or not session.connected:
            raise RuntimeError(
                f"no connected gateway session for guild {guild_id} (is the client running?)"
            )
        self.interactions.append(record)
        self.interactions_by_id[record.id] = record
        self.interactions_by_token[record.token] = record
        record.created_at = self.now()
        await self.gateway.dispatch("INTERACTION_CREATE", payload, guild_id=guild_id, shard=shard)
        self.notify()
        return record

    async def slash(
        self,
        command: str,
        options: dict[str, Any] | None = None,
        *,
        user: Actor | None = None,
        channel: FakeChannel | None = None,
        locale: str = "en-US",
        attachment_size_limit: int | None = None,
        override_permissions: bool = False,
        shard: int | None = None,
    ) -> InteractionRecord:
        """A user runs ``/command`` (``"credits balance"`` for subcommands).

        Option types, requiredness, choices and ranges come from the commands the
        bot synced; user/role/channel options take fakes (or ids) and fill
        ``resolved``; attachment options take ``(filename, bytes, content_type)``.
        Defaults: ``user=fake.member``, ``channel=fake.channel``; a DM channel
        gives a DM interaction.
        """
        payload, record = build_slash(
            self,
            command,
            options,
            user=user,
            channel=channel,
            locale=locale,
            attachment_size_limit=attachment_size_limit,
            override_permissions=override_permissions,
        )
        return await self._push(payload, record, shard)

    async def click(
        self,
        message: StoredMessage | discord.abc.Snowflake | int,
        label: str | None = None,
        *,
        emoji: str | None = None,
        custom_id: str | None = None,
        user: Actor | None = None,
        locale: str = "en-US",
        attachment_size_limit: int | None = None,
    ) -> InteractionRecord:
        """A user clicks the button with ``label`` (or ``emoji`` / ``custom_id``) on the
        message as it currently is (default user: whoever triggered the message)."""
        payload, record = build_click(
            self,
            self.get_message(message),
            label=label,
            emoji=emoji,
            custom_id=custom_id,
            values=None,
            user=user,
            locale=locale,
            attachment_size_limit=attachment_size_limit,
        )
        return await self._push(payload, record)

    async def select(
        self,
        message: StoredMessage | discord.abc.Snowflake | int,
        values: list[str],
        *,
        custom_id: str | None = None,
        user: Actor | None = None,
        locale: str = "en-US",
    ) -> InteractionRecord:
        """A user picks ``values`` in a select menu (the first one, or ``custom_id``)."""
        stored = self.get_message(message)
        if custom_id is None:
            custom_id = next(
                (c["custom_id"] for c in _components(stored) if c.get("type") in (3, 5, 6, 7, 8)),
                None,
            )
        payload, record = build_click(
            self,
            stored,
            label=None,
            emoji=None,
            custom_id=custom_id,
            values=values,
            user=user,
            locale=locale,
            attachment_size_limit=None,
        )
        return await self._push(payload, record)

    async def submit_modal(
        self,
        source: InteractionRecord | ModalRecord,
        values: dict[str, Any],
        *,
        locale: str = "en-US",
        timeout: float = 5.0,
    ) -> InteractionRecord:
        """Submit the modal the bot opened for ``source`` (waits for it to be opened).

        ``values`` maps each field's ``custom_id`` or label to its value; the
        submission mirrors the modal's structure (action rows or labels).
        """
        if isinstance(source, InteractionRecord):
            interaction = source
            await self.wait_for(
                lambda: interaction.modal is not None,
                timeout=timeout,
                what=f"a modal in answer to {interaction!r}",
            )
            modal = next(m for m in self.modals if m.interaction is interaction)
        else:
            modal = source
        payload, record = build_modal_submit(self, modal, values, locale=locale)
        return await self._push(payload, record)

    # -- waiting --------------------------------------------------------------------------------

    async def wait_for(
        self, predicate: Callable[[], T], *, timeout: float = 5.0, what: str | None = None
    ) -> T:
        """Wait (woken by every recorded event, never polling) until ``predicate()`` is truthy.

        Returns its value; raises ``TimeoutError`` with what was recorded so far.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            tick = self._tick
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    self.report(f"timed out after {timeout}s waiting for {what or predicate}")
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tick.wait(), remaining)

    def report(self, title: str = "fake discord state") -> str:
        lines = [title, "requests (last 20):"]
        lines += [f"  {r!r}" for r in self.requests[-20:]] or ["  none"]
        if self.violations:
            lines.append("violations:")
            lines += [f"  {v}" for v in self.violations]
        if self.unhandled:
            lines.append(f"unhandled: {self.unhandled}")
        if self.internal_errors:
            lines.append(f"FAKE DISCORD INTERNAL ERRORS: {self.internal_errors}")
        lines.append(f"sessions: {self.gateway.sessions}")
        for interaction in self.interactions[-5:]:
            callbacks = [(c.type, c.status, c.code) for c in interaction.callbacks]
            lines.append(f"  {interaction!r} callbacks={callbacks} messages={interaction.messages}")
        return "\n".join(lines)

    async def wait_for_request(
        self,
        method: str,
        path_regex: str,
        *,
        predicate: Callable[[RequestRecord], bool] | None = None,
        since: int = 0,
        timeout: float = 5.0,
    ) -> RequestRecord:
        """The first request (from index ``since`` of ``fake.requests``) matching."""
        pattern = re.compile(path_regex)

        def find() -> RequestRecord | None:
            for record in self.requests[since:]:
                if (
                    record.method == method.upper()
                    and pattern.search(record.path)
                    and (predicate is None or predicate(record))
                ):
                    return record
            return None

        return await self.wait_for(find, timeout=timeout, what=f"{method} {path_regex}")

    async def wait_for_message(
        self,
        channel: FakeChannel | int,
        predicate: Callable[[StoredMessage], bool] | None = None,
        *,
        timeout: float = 5.0,
    ) -> StoredMessage:
        """The first visible (non-ephemeral, not deleted, not "thinking…") message in
        ``channel`` that matches ``predicate`` (re-checked as messages are edited)."""

        def find() -> StoredMessage | None:
            for message in self.channel_messages(channel):
                if not message.loading and (predicate is None or predicate(message)):
                    return message
            return None

        return await self.wait_for(find, timeout=timeout, what=f"a message in {channel}")

    async def wait_for_followup(
        self,
        interaction: InteractionRecord,
        predicate: Callable[[StoredMessage], bool] | None = None,
        *,
        timeout: float = 5.0,
    ) -> StoredMessage:
        """The first message of ``interaction`` (original response or follow-up, not
        "thinking…", not deleted) matching ``predicate``."""

        def find() -> StoredMessage | None:
            for message in interaction.messages:
                if (
                    not message.loading
                    and not message.deleted
                    and (predicate is None or predicate(message))
                ):
                    return message
            return None

        return await self.wait_for(find, timeout=timeout, what=f"a reply to {interaction!r}")

    async def wait_for_callback(
        self, interaction: InteractionRecord, *, timeout: float = 5.0
    ) -> CallbackRecord:
        """The first callback attempt (accepted or rejected) for ``interaction``."""
        return await self.wait_for(
            lambda: interaction.callbacks[0] if interaction.callbacks else None,
            timeout=timeout,
            what=f"a callback for {interaction!r}",
        )

    async def wait_for_modal(
        self, interaction: InteractionRecord, *, timeout: float = 5.0
    ) -> ModalRecord:
        return await self.wait_for(
            lambda: next((m for m in self.modals if m.interaction is interaction), None),
            timeout=timeout,
            what=f"a modal for {interaction!r}",
        )

    async def wait_for_sessions(
        self, count: int = 1, *, timeout: float = 5.0
    ) -> list[GatewaySession]:
        """Until ``count`` gateway sessions are connected (e.g. after a drop)."""
        return await self.wait_for(
            lambda: self.connected_sessions if len(self.connected_sessions) >= count else None,
            timeout=timeout,
            what=f"{count} connected gateway session(s)",
        )


def _components(message: StoredMessage) -> list[dict[str, Any]]:
    return list(walk_components(message.components))


# -- pytest integration ----------------------------------------------------------------------


@pytest_asyncio.fixture
async def fake_discord(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    """A started :class:`FakeDiscord`; discord.py's REST base and gateway point at it
    for this test only. At teardown: no schema violations, no unhandled routes."""
    fake = FakeDiscord()
    await fake.start()
    monkeypatch.setattr(Route, "BASE", fake.api_url)
    monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake.gateway_url))
    try:
        yield fake
    finally:
        await fake.close()
    fake.check()


async def _shutdown(client: discord.Client, task: asyncio.Task[None], timeout: float) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.close(), timeout)
    if not task.done():
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except (TimeoutError, Exception):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@contextlib.asynccontextmanager
async def run_client(
    client: discord.Client,
    fake: FakeDiscord,
    *,
    token: str | None = None,
    ready_timeout: float = 10.0,
    close_timeout: float = 10.0,
) -> AsyncIterator[discord.Client]:
    """Run ``client.start(token)`` against ``fake`` until READY; close it cleanly on exit.

    Works for any ``discord.Client`` / ``commands.Bot`` / ``AutoShardedBot``;
    use a new client instance per cycle (discord.py clients are not restartable).
    Raises the client's own exception if it fails to start, or ``TimeoutError``
    with the fake's report. If the client crashed during the block, the crash is
    raised after the client is closed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ready_timeout
    sessions_before = len(fake.gateway.sessions)
    task = asyncio.create_task(
        client.start(token or fake.token), name=f"run_client:{type(client).__name__}"
    )
    try:
        await fake.wait_for(
            lambda: task.done() or len(fake.gateway.sessions) > sessions_before,
            timeout=ready_timeout,
            what="the client to IDENTIFY",
        )
        if task.done():
            task.result()
            raise RuntimeError("client.start() returned before it was ready")
        ready = asyncio.ensure_future(client.wait_until_ready())
        done, _ = await asyncio.wait(
            {task, ready},
            timeout=max(0.0, deadline - loop.time()),
            return_when=asyncio.FIRST_COMPLETED,
        )
        if ready not in done:
            ready.cancel()
            if task in done:
                task.result()
                raise RuntimeError("client.start() returned before it was ready")
            raise TimeoutError(fake.report(f"client not ready after {ready_timeout}s"))
    except BaseException:
        await _shutdown(client, task, close_timeout)
        raise
    try:
        yield client
    finally:
        await _shutdown(client, task, close_timeout)
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise RuntimeError("the client crashed while the test ran") from task.exception()
