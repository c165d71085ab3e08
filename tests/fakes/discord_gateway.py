"""The fake gateway: a websocket speaking Discord's gateway protocol (v10, JSON).

HELLO, heartbeats, IDENTIFY (with sharding), READY + one GUILD_CREATE per
guild of the shard, RESUME with replay of what was missed, REQUEST_GUILD_MEMBERS,
and ``zlib-stream`` transport compression (one compressobj per connection,
``Z_SYNC_FLUSH`` after every message), which discord.py asks for by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from tests.fakes.fake_discord import FakeDiscord

__all__ = ["Gateway", "GatewayConnection", "GatewaySession"]

_log = logging.getLogger(__name__)

# Intents bits the fake honours.
GUILD_MEMBERS = 1 << 1
GUILD_MESSAGES = 1 << 9
DIRECT_MESSAGES = 1 << 12


@dataclass(eq=False)
class GatewaySession:
    """A gateway session (survives disconnects until invalidated)."""

    session_id: str
    token: str
    intents: int
    shard_id: int
    shard_count: int
    identify: dict[str, Any]
    seq: int = 0
    connection: GatewayConnection | None = None
    backlog: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=1000))
    invalidated: bool = False
    resumes: int = 0
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def connected(self) -> bool:
        return self.connection is not None and not self.connection.closed

    def covers(self, guild_id: int | None) -> bool:
        if guild_id is None:
            return self.shard_id == 0
        return (guild_id >> 22) % self.shard_count == self.shard_id

    def __repr__(self) -> str:
        state = "connected" if self.connected else "invalid" if self.invalidated else "detached"
        return f"<GatewaySession shard={self.shard_id}/{self.shard_count} {state} seq={self.seq}>"


class GatewayConnection:
    """One websocket; serialises sends so zlib-stream output stays in order."""

    def __init__(self, ws: web.WebSocketResponse, *, compress: bool) -> None:
        self.ws = ws
        self._compressor = zlib.compressobj() if compress else None
        self._lock = asyncio.Lock()
        self.session: GatewaySession | None = None
        self.closed = False
        self.server_closed = False

    async def send(self, payload: dict[str, Any]) -> None:
        async with self._lock:
            await self._send_locked(payload)

    async def _send_locked(self, payload: dict[str, Any]) -> None:
        if self.closed or self.ws.closed:
            raise ConnectionResetError("gateway connection closed")
        text = json.dumps(payload, separators=(",", ":"))
        if self._compressor is None:
            await self.ws.send_str(text)
        else:
            data = self._compressor.compress(text.encode()) + self._compressor.flush(
                zlib.Z_SYNC_FLUSH
            )
            await self.ws.send_bytes(data)

    async def dispatch(self, session: GatewaySession, event: str, data: dict[str, Any]) -> None:
        async with self._lock:
            session.seq += 1
            payload = {"op": 0, "t": event, "s": session.seq, "d": data}
            session.backlog.append(payload)
            session.events.append((event, data))
            await self._send_locked(payload)

    async def close(self, code: int) -> None:
        self.closed = True
        self.server_closed = True
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=b"fake discord")


class Gateway:
    """Accepts websocket connections for the fake Discord."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.sessions: list[GatewaySession] = []
        self.connections: set[GatewayConnection] = set()
        self.refuse_until: float | None = None
        self.connection_attempts = 0
        self.refused_attempts = 0
        self.identifies: list[dict[str, Any]] = []
        self.presence_updates: list[dict[str, Any]] = []

    # -- helpers -----------------------------------------------------------

    @property
    def refusing(self) -> bool:
        return self.refuse_until is not None and self.fake.now() < self.refuse_until

    def session_for(self, guild_id: int | None, shard: int | None = None) -> GatewaySession | None:
        """The newest live session whose shard serves ``guild_id`` (``None``: DMs), or
        the newest of shard ``shard`` when one is named."""
        live = [
            s
            for s in self.sessions
            if not s.invalidated and (s.covers(guild_id) if shard is None else s.shard_id == shard)
        ]
        connected = [s for s in live if s.connected]
        return (connected or live or [None])[-1]

    async def dispatch(
        self, event: str, data: dict[str, Any], *, guild_id: int | None, shard: int | None = None
    ) -> bool:
        """Send a DISPATCH to the session serving ``guild_id`` (or to shard ``shard``);
        ``False`` if there is none.

        A session that is disconnected but resumable buffers the event (replayed on RESUME).
        """
        session = self.session_for(guild_id, shard)
        if session is None:
            return False
        connection = session.connection
        if connection is not None and not connection.closed:
            try:
                await connection.dispatch(session, event, data)
            except (ConnectionResetError, RuntimeError):
                _log.debug("dispatch of %s failed: connection closing", event)
            return True
        session.seq += 1
        session.backlog.append({"op": 0, "t": event, "s": session.seq, "d": data})
        session.events.append((event, data))
        return True

    async def drop(self, code: int = 4000) -> int:
        """Close every connection as if the network failed; sessions stay resumable."""
        connections = list(self.connections)
        for connection in connections:
            await connection.close(code)
        return len(connections)

    async def close(self) -> None:
        await self.drop(1001)
        for session in self.sessions:
            session.invalidated = True

    # -- websocket handler -------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.connection_attempts += 1
        self.fake.notify()
        if self.refusing or self.fake.closing:
            self.refused_attempts += 1
            return web.Response(status=503, text="gateway unavailable (fake)")
        # zlib-stream is implemented; anything else (zstd-stream, when discord.py finds
        # zstandard installed) gets plain text frames, which discord.py accepts as is.
        compress = request.query.get("compress")
        ws = web.WebSocketResponse(timeout=2.0, max_msg_size=0, autoping=True)
        await ws.prepare(request)
        connection = GatewayConnection(ws, compress=compress == "zlib-stream")
        self.connections.add(connection)
        try:
            interval = int(self.fake.heartbeat_interval * 1000)
            await connection.send({"op": 10, "d": {"heartbeat_interval": interval}})
            async for message in ws:
                if message.type is not WSMsgType.TEXT:
                    continue
                await self._on_message(connection, json.loads(message.data))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        except Exception as error:  # a bug in the fake: make the test fail, loudly
            _log.exception("fake gateway failed")
            self.fake.internal_errors.append(f"gateway: {error!r}")
            await connection.close(4000)
        finally:
            connection.closed = True
            self.connections.discard(connection)
            session = connection.session
            if session is not None and session.connection is connection:
                session.connection = None
                # A client closing with 1000/1001 ends its session, as on Discord; a
                # connection the fake dropped stays resumable. (discord.py's close()
                # usually goes out as 4000 because its reader closes first, so a
                # closed bot's session stays resumable, as it would on Discord.)
                if (
                    not connection.server_closed
                    and ws.close_code in (1000, 1001)
                    and not self.fake.closing
                ):
                    session.invalidated = True
            self.fake.notify()
        return ws

    async def _on_message(self, connection: GatewayConnection, message: dict[str, Any]) -> None:
        op = message.get("op")
        data = message.get("d")
        if op == 1:
            await connection.send({"op": 11})
        elif op == 2:
            await self._identify(connection, data or {})
        elif op == 6:
            await self._resume(connection, data or {})
        elif op == 8:
            await self._request_members(connection, data or {})
        elif op == 3:
            self.presence_updates.append(data or {})
        else:
            _log.debug("fake gateway ignoring op %s", op)

    async def _identify(self, connection: GatewayConnection, data: dict[str, Any]) -> None:
        fake = self.fake
        self.identifies.append(data)
        if data.get("token") != fake.token:
            await connection.close(4004)
            return
        shard_id, shard_count = data.get("shard") or (0, 1)
        if not 0 <= shard_id < shard_count:
            await connection.close(4010)
            return
        session = GatewaySession(
            session_id=secrets.token_hex(16),
            token=str(data["token"]),
            intents=int(data.get("intents", 0)),
            shard_id=shard_id,
            shard_count=shard_count,
            identify=data,
        )
        session.connection = connection
        connection.session = session
        self.sessions.append(session)
        guilds = [g for g in fake.bot_guilds() if g.on_shard(shard_id, shard_count)]
        ready = {
            "v": 10,
            "user": fake.bot_user.payload(),
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": fake.gateway_url,
            "application": {"id": str(fake.application_id), "flags": fake.application_flags},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "user_settings": {},
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["fake"],
            "auth_session_id_hash": "",
            "_trace": ["fake-discord"],
        }
        if "shard" in data:
            ready["shard"] = [shard_id, shard_count]
        await connection.dispatch(session, "READY", ready)
        for guild in guilds:
            await connection.dispatch(
                session, "GUILD_CREATE", fake.guild_create_payload(guild, session)
            )
        fake.notify()

    async def _resume(self, connection: GatewayConnection, data: dict[str, Any]) -> None:
        session = next(
            (
                s
                for s in self.sessions
                if s.session_id == data.get("session_id") and not s.invalidated
            ),
            None,
        )
        if session is None or data.get("token") != session.token:
            await connection.send({"op": 9, "d": False})
            return
        old = session.connection
        if old is not None and old is not connection:
            await old.close(4000)
        session.connection = connection
        connection.session = session
        session.resumes += 1
        seq = int(data.get("seq") or 0)
        async with connection._lock:
            for payload in list(session.backlog):
                if payload["s"] > seq:
                    await connection._send_locked(payload)
        await connection.dispatch(session, "RESUMED", {"_trace": ["fake-discord"]})
        self.fake.notify()

    async def _request_members(self, connection: GatewayConnection, data: dict[str, Any]) -> None:
        session = connection.session
        guild = self.fake.guilds.get(int(data.get("guild_id", 0)))
        if session is None or guild is None:
            return
        members = list(guild.members.values())
        if data.get("user_ids"):
            wanted = {int(u) for u in data["user_ids"]}
            members = [m for m in members if m.id in wanted]
        chunk: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": [m.payload() for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        await connection.dispatch(session, "GUILD_MEMBERS_CHUNK", chunk)
