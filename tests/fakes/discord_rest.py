"""The fake Discord's REST API.

Every request is recorded, matched to an operation of Discord's OpenAPI spec,
validated, held by an armed delay, checked against armed failures, then served
by ``op_<operationId>`` (or answered 404 and recorded as unhandled). Responses
are JSON with exactly ``Content-Type: application/json`` and Discord's
rate-limit headers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.fakes.discord_messages import EPHEMERAL, LOADING, MessageBuilder
from tests.fakes.discord_openapi import SchemaProblem
from tests.fakes.discord_records import (
    CallbackRecord,
    CommandSync,
    ConnectionDropped,
    DiscordError,
    InteractionRecord,
    ModalRecord,
    RequestRecord,
    Violation,
)
from tests.fakes.discord_state import DEFAULT_FILE_LIMIT, FakeChannel, FileRecord, StoredMessage

if TYPE_CHECKING:
    from tests.fakes.fake_discord import FakeDiscord

__all__ = ["RestApi"]

_log = logging.getLogger(__name__)

# The exact form aiohttp writes for plain names (discord.py's uploads): read with one
# match instead of aiohttp's parser, which builds its regexes afresh on every call and
# costs the benchmarks (sharing this loop with the bot) ~0.2 ms per upload.
_PLAIN_DISPOSITION = re.compile(r'form-data; name="([^"\\%]*)"(?:; filename="([^"\\%]*)")?')


def _disposition(part: Any) -> tuple[str, str | None]:
    """A multipart part's ``name`` and ``filename`` (None: not a file), as aiohttp reads them."""
    plain = _PLAIN_DISPOSITION.fullmatch(part.headers.get("Content-Disposition", ""))
    if plain is not None:
        return plain.group(1), plain.group(2)
    filename = getattr(part, "filename", None)
    return getattr(part, "name", None) or "", None if filename is None else str(filename)


_API_PREFIX = re.compile(r"^/api(?:/v\d+)?(?=/)")
_NO_AUTH = frozenset(
    {
        "create_interaction_response",
        "execute_webhook",
        "get_original_webhook_message",
        "update_original_webhook_message",
        "delete_original_webhook_message",
        "get_webhook_message",
        "update_webhook_message",
        "delete_webhook_message",
    }
)
_P_VIEW = 1 << 10
_P_SEND = 1 << 11
_P_MANAGE_MESSAGES = 1 << 13
_P_ATTACH = 1 << 15


@dataclass
class Call:
    """A request being served."""

    record: RequestRecord
    params: dict[str, str]
    query: dict[str, str]
    json: Any
    files: list[FileRecord] = field(default_factory=list)

    def param(self, name: str) -> int:
        try:
            return int(self.params[name])
        except (KeyError, ValueError):
            raise DiscordError(404, 0, "404: Not Found") from None


def _response(status: int, body: Any, headers: dict[str, str]) -> web.Response:
    if status == 204 or body is None:
        return web.Response(status=204, headers=headers)
    payload = json.dumps(body).encode()
    # Exactly "application/json": discord.py compares the header verbatim.
    return web.Response(
        status=status, body=payload, headers={**headers, "Content-Type": "application/json"}
    )


def _embed_problem(body: dict[str, Any] | None) -> SchemaProblem | None:
    """Discord's 6,000-character limit across a message's embeds (not in the schema)."""
    total = 0
    for embed in (body or {}).get("embeds") or []:
        texts = [embed.get("title"), embed.get("description")]
        texts += [(embed.get("footer") or {}).get("text"), (embed.get("author") or {}).get("name")]
        for item in embed.get("fields") or []:
            texts += [item.get("name"), item.get("value")]
        total += sum(len(text) for text in texts if isinstance(text, str))
    if total <= 6000:
        return None
    message = f"embeds: {total} characters in total exceed 6000"
    errors = {"embeds": {"_errors": [{"code": "MESSAGE_EMBED_SIZE", "message": message}]}}
    return SchemaProblem(message=message, errors=errors, count=1)


def _unknown_message() -> DiscordError:
    return DiscordError(404, 10008, "Unknown Message")


class RestApi:
    """Serves ``/api/v10/...`` for a :class:`FakeDiscord`."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.messages = MessageBuilder(fake)
        # (channel, author, nonce) -> the message it created, for enforce_nonce
        self.nonces: dict[tuple[int, int, str], StoredMessage] = {}

    # -- entry point ---------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        fake = self.fake
        match = _API_PREFIX.match(request.path)
        path = request.path[match.end() :] if match else request.path
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        record = RequestRecord(
            method=request.method,
            path=path,
            query=dict(request.query),
            headers=headers,
            at=fake.now(),
        )
        extra: dict[str, str] = {}
        try:
            status, body = await self._serve(request, record)
        except DiscordError as error:
            status, body, extra = error.status, error.body(), error.headers
            record.error_code = error.code
        except ConnectionDropped:
            record.status = 0
            fake.record_request(record)
            if request.transport is not None:
                request.transport.abort()
            return web.Response()
        except Exception as error:  # a bug in the fake: fail the test, never retry-loop
            _log.exception("fake discord failed serving %s %s", record.method, record.path)
            fake.internal_errors.append(f"{record.method} {record.path}: {error!r}")
            # 400 rather than 500: discord.py retries 5xx for ~25 s before giving up.
            status, body = 400, {"code": 0, "message": f"fake discord internal error: {error!r}"}
            record.error_code = 0
        record.status = status
        record.response = body
        fake.record_request(record)
        return _response(status, body, {**self._ratelimit_headers(record), **extra})

    def _ratelimit_headers(self, record: RequestRecord) -> dict[str, str]:
        bucket = hashlib.md5(str(record.operation_id).encode(), usedforsecurity=False).hexdigest()
        return {
            "Via": "1.1 google",
            "X-RateLimit-Limit": "50",
            "X-RateLimit-Remaining": "49",
            "X-RateLimit-Reset": f"{self.fake.wall_time() + 1:.3f}",
            "X-RateLimit-Reset-After": "1.000",
            "X-RateLimit-Bucket": bucket,
        }

    async def _serve(self, request: web.Request, record: RequestRecord) -> tuple[int, Any]:
        fake = self.fake
        call = await self._parse(request, record)
        matched = fake.spec.match(record.method, record.path)
        if matched is None:
            fake.unhandled.append(record)
            raise DiscordError(404, 0, f"404: Not Found (fake discord: no route {record.path})")
        operation, params = matched
        record.operation_id = operation.operation_id
        record.params = call.params = params
        if operation.operation_id not in _NO_AUTH:
            auth = request.headers.get("Authorization")
            if auth != f"Bot {fake.token}":
                raise DiscordError(401, 0, "401: Unauthorized")
        if fake.validate and call.json is not None and operation.body_types:
            content_type = "multipart/form-data" if call.files else "application/json"
            problem = fake.spec.check(operation, call.json, content_type) or _embed_problem(
                record.message_body
            )
            if problem is not None:
                fake.violations.append(
                    Violation(record, operation.operation_id, problem.message, problem.errors)
                )
                raise DiscordError(400, 50035, "Invalid Form Body", errors=problem.errors)
        for delay in fake.delays:
            if not delay.after and delay.matches(record.method, record.path):
                await delay.hold(fake.notify)
                break
        self._inject_failure(record, after=False)
        handler = getattr(self, f"op_{operation.operation_id}", None)
        if handler is None:
            fake.unhandled.append(record)
            raise DiscordError(
                404, 0, f"404: Not Found (fake discord: {operation.operation_id} not implemented)"
            )
        result: tuple[int, Any] = await handler(call)
        for delay in fake.delays:
            if delay.after and delay.matches(record.method, record.path):
                await delay.hold(fake.notify)
                break
        self._inject_failure(record, after=True)
        return result

    def _inject_failure(self, record: RequestRecord, *, after: bool) -> None:
        for failure in self.fake.failures:
            if failure.after is after and failure.matches(record.method, record.path):
                failure.hits += 1
                record.injected = True
                raise failure.error()

    async def _parse(self, request: web.Request, record: RequestRecord) -> Call:
        call = Call(record=record, params={}, query=dict(request.query), json=None)
        if not request.body_exists:
            return call
        # The media type alone, without aiohttp's email-parser based (and, for the
        # benchmarks that share this loop with the bot, costly) header parsing.
        media_type = request.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if media_type == "multipart/form-data":
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                name, filename = _disposition(part)
                data = await part.read()  # type: ignore[union-attr]
                if name == "payload_json":
                    call.json = self._loads(bytes(data))
                elif filename is not None:
                    content_type = part.headers.get("Content-Type", "application/octet-stream")
                    call.files.append(FileRecord(name, filename, content_type, bytes(data)))
        else:
            raw = await request.read()
            if raw:
                call.json = self._loads(raw)
        record.json = call.json
        record.files = call.files
        return call

    @staticmethod
    def _loads(raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except ValueError:
            raise DiscordError(400, 50109, "The request body contains invalid JSON.") from None

    # -- users, application, gateway -------------------------------------------

    async def op_get_my_user(self, call: Call) -> tuple[int, Any]:
        data = self.fake.bot_user.payload()
        data.update(verified=True, mfa_enabled=True, email=None, locale="en-US")
        return 200, data

    async def op_get_my_oauth2_application(self, call: Call) -> tuple[int, Any]:
        return 200, self.fake.application_payload()

    async def op_get_my_application(self, call: Call) -> tuple[int, Any]:
        return 200, self.fake.application_payload()

    async def op_get_bot_gateway(self, call: Call) -> tuple[int, Any]:
        return 200, {
            "url": self.fake.gateway_url,
            "shards": self.fake.recommended_shards,
            "session_start_limit": {
                "total": 1000,
                "remaining": 999,
                "reset_after": 14_400_000,
                "max_concurrency": 1,
            },
        }

    async def op_get_gateway(self, call: Call) -> tuple[int, Any]:
        return 200, {"url": self.fake.gateway_url}

    async def op_get_user(self, call: Call) -> tuple[int, Any]:
        user = self.fake.users.get(call.param("user_id"))
        if user is None:
            raise DiscordError(404, 10013, "Unknown User")
        return 200, user.payload()

    async def op_create_dm(self, call: Call) -> tuple[int, Any]:
        user = self.fake.users.get(int((call.json or {}).get("recipient_id") or 0))
        if user is None:
            raise DiscordError(400, 50035, "Invalid Form Body")
        return 200, self.fake.dm_channel_for(user).payload()

    # -- guilds and channels -----------------------------------------------------

    def _guild(self, call: Call) -> Any:
        guild = self.fake.guilds.get(call.param("guild_id"))
        if guild is None:
            raise DiscordError(404, 10004, "Unknown Guild")
        if self.fake.bot_user.id not in guild.members:
            raise DiscordError(403, 50001, "Missing Access")
        return guild

    async def op_get_guild(self, call: Call) -> tuple[int, Any]:
        data = self._guild(call).payload(members=[])
        for key in ("channels", "members", "threads", "presences", "voice_states", "joined_at"):
            data.pop(key, None)
        return 200, data

    async def op_get_guild_member(self, call: Call) -> tuple[int, Any]:
        member = self._guild(call).members.get(call.param("user_id"))
        if member is None:
            raise DiscordError(404, 10007, "Unknown Member")
        return 200, member.payload()

    async def op_list_guild_channels(self, call: Call) -> tuple[int, Any]:
        return 200, [channel.payload() for channel in self._guild(call).channels.values()]

    async def op_list_guild_roles(self, call: Call) -> tuple[int, Any]:
        return 200, [role.payload() for role in self._guild(call).roles.values()]

    def _channel(self, call: Call) -> FakeChannel:
        fake = self.fake
        channel = fake.channels.get(call.param("channel_id"))
        if channel is None:
            raise DiscordError(404, 10003, "Unknown Channel")
        if channel.is_dm:
            return channel
        perms = fake.bot_permissions(channel)
        if not perms & _P_VIEW:
            raise DiscordError(403, 50001, "Missing Access")
        return channel

    async def op_get_channel(self, call: Call) -> tuple[int, Any]:
        return 200, self._channel(call).payload()

    async def op_trigger_typing_indicator(self, call: Call) -> tuple[int, Any]:
        self._channel(call)
        return 204, None

    def _channel_message(self, call: Call) -> StoredMessage:
        channel = self._channel(call)
        message = self.fake.messages_by_id.get(call.param("message_id"))
        if message is None or message.deleted or message.ephemeral:
            raise _unknown_message()
        if message.channel_id != channel.id:
            raise _unknown_message()
        return message

    async def op_list_messages(self, call: Call) -> tuple[int, Any]:
        """Newest first, like Discord; ``before``/``after``/``around`` are message ids
        (Discord's snowflakes, so a time works too), ``limit`` 1 to 100."""
        channel = self._channel(call)
        limit = int(call.query.get("limit", 50))
        if not 1 <= limit <= 100:
            raise DiscordError(400, 50035, "Invalid Form Body")
        oldest_first = self.fake.channel_messages(channel)
        if "around" in call.query:
            around = int(call.query["around"])
            older = [m for m in oldest_first if m.id <= around][-(limit // 2 + 1) :]
            newer = [m for m in oldest_first if m.id > around][: limit - len(older)]
            visible = (older + newer)[::-1]
        elif "after" in call.query:
            after = int(call.query["after"])
            visible = [m for m in oldest_first if m.id > after][:limit][::-1]
        else:
            before = int(call.query.get("before", 1 << 63))
            visible = [m for m in oldest_first if m.id < before][::-1][:limit]
        return 200, [m.payload for m in visible]

    async def op_get_message(self, call: Call) -> tuple[int, Any]:
        return 200, self._channel_message(call).payload

    async def op_create_message(self, call: Call) -> tuple[int, Any]:
        fake = self.fake
        channel = self._channel(call)
        if not channel.is_dm:
            perms = fake.bot_permissions(channel)
            if not perms & _P_SEND or (call.files and not perms & _P_ATTACH):
                raise DiscordError(403, 50013, "Missing Permissions")
        guild = fake.guilds.get(channel.guild_id or 0)
        self._check_upload(call, guild.filesize_limit if guild else DEFAULT_FILE_LIMIT)
        body = call.json or {}
        self._check_not_empty(body, call)
        nonce = body.get("nonce")
        key = (channel.id, fake.bot_user.id, str(nonce))
        if nonce is not None and body.get("enforce_nonce") and key in self.nonces:
            # Discord's enforce_nonce: the same nonce again returns the first message.
            return 200, {**self.nonces[key].payload, "nonce": str(nonce)}
        message = self.messages.create_message(channel, body, call.files, message_type=0)
        if body.get("message_reference"):
            message.payload["type"] = 19
        if nonce is not None:
            self.nonces[key] = message
        await fake.dispatch_message_event("MESSAGE_CREATE", message)
        # The nonce is echoed in the answer, not kept: later reads do not carry it.
        return 200, {
            **message.payload,
            "nonce": str(nonce),
        } if nonce is not None else message.payload

    async def op_update_message(self, call: Call) -> tuple[int, Any]:
        fake = self.fake
        message = self._channel_message(call)
        if int(message.payload["author"]["id"]) != fake.bot_user.id:
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        channel = fake.channels[message.channel_id]
        guild = fake.guilds.get(channel.guild_id or 0)
        self._check_upload(call, guild.filesize_limit if guild else DEFAULT_FILE_LIMIT)
        self.messages.edit_message(message, call.json or {}, call.files)
        await fake.dispatch_message_event("MESSAGE_UPDATE", message)
        return 200, message.payload

    async def op_delete_message(self, call: Call) -> tuple[int, Any]:
        fake = self.fake
        message = self._channel_message(call)
        channel = fake.channels[message.channel_id]
        own = int(message.payload["author"]["id"]) == fake.bot_user.id
        if not own and not (
            not channel.is_dm and fake.bot_permissions(channel) & _P_MANAGE_MESSAGES
        ):
            raise DiscordError(403, 50013, "Missing Permissions")
        self.messages.delete_message(message)
        await fake.dispatch_message_event("MESSAGE_DELETE", message)
        return 204, None

    # -- application commands ------------------------------------------------------

    def _check_application(self, call: Call) -> None:
        if call.param("application_id") != self.fake.application_id:
            raise DiscordError(
                403, 20012, "You are not authorized to perform this action on this application"
            )

    def _scope(self, call: Call) -> int | None:
        self._check_application(call)
        if "guild_id" not in call.params:
            return None
        return int(self._guild(call).id)

    def command_object(
        self, body: dict[str, Any], guild_id: int | None, existing: dict[str, Any] | None
    ) -> dict[str, Any]:
        fake = self.fake
        permissions = body.get("default_member_permissions")
        command: dict[str, Any] = {
            "id": existing["id"] if existing else str(fake.ids.next()),
            "application_id": str(fake.application_id),
            "version": str(fake.ids.next()),
            "type": body.get("type") or 1,
            "name": body["name"],
            "name_localizations": body.get("name_localizations"),
            "description": body.get("description") or "",
            "description_localizations": body.get("description_localizations"),
            "options": body.get("options") or [],
            "default_member_permissions": None if permissions is None else str(permissions),
            "dm_permission": body.get("dm_permission", True),
            "contexts": body.get("contexts"),
            "integration_types": body.get("integration_types") or [0],
            "nsfw": bool(body.get("nsfw", False)),
        }
        if guild_id is not None:
            command["guild_id"] = str(guild_id)
            command.pop("dm_permission")
        return command

    def _upsert(self, guild_id: int | None, body: dict[str, Any]) -> dict[str, Any]:
        commands = self.fake.commands_for(guild_id)
        kind = body.get("type") or 1
        existing = next(
            (c for c in commands if c["name"] == body["name"] and c["type"] == kind), None
        )
        command = self.command_object(body, guild_id, existing)
        if existing is not None:
            commands[commands.index(existing)] = command
        else:
            commands.append(command)
        return command

    async def _bulk(self, call: Call) -> tuple[int, Any]:
        guild_id = self._scope(call)
        body = call.json or []
        old = {(c["name"], c["type"]): c for c in self.fake.commands_for(guild_id)}
        new = [
            self.command_object(item, guild_id, old.get((item["name"], item.get("type") or 1)))
            for item in body
        ]
        self.fake.command_store[guild_id] = new
        self.fake.command_syncs.append(CommandSync("PUT", guild_id, body, self.fake.now()))
        return 200, new

    async def _list(self, call: Call) -> tuple[int, Any]:
        return 200, list(self.fake.commands_for(self._scope(call)))

    async def _create(self, call: Call) -> tuple[int, Any]:
        guild_id = self._scope(call)
        self.fake.command_syncs.append(CommandSync("POST", guild_id, call.json, self.fake.now()))
        return 201, self._upsert(guild_id, call.json or {})

    def _find_command(self, call: Call) -> tuple[int | None, dict[str, Any]]:
        guild_id = self._scope(call)
        command_id = str(call.param("command_id"))
        for command in self.fake.commands_for(guild_id):
            if command["id"] == command_id:
                return guild_id, command
        raise DiscordError(404, 10063, "Unknown application command")

    async def _get(self, call: Call) -> tuple[int, Any]:
        return 200, self._find_command(call)[1]

    async def _patch(self, call: Call) -> tuple[int, Any]:
        guild_id, command = self._find_command(call)
        self.fake.command_syncs.append(CommandSync("PATCH", guild_id, call.json, self.fake.now()))
        merged = {**command, **(call.json or {})}
        updated = self.command_object(merged, guild_id, command)
        commands = self.fake.commands_for(guild_id)
        commands[commands.index(command)] = updated
        return 200, updated

    async def _delete(self, call: Call) -> tuple[int, Any]:
        guild_id, command = self._find_command(call)
        self.fake.command_syncs.append(CommandSync("DELETE", guild_id, command, self.fake.now()))
        self.fake.commands_for(guild_id).remove(command)
        return 204, None

    op_bulk_set_application_commands = _bulk
    op_bulk_set_guild_application_commands = _bulk
    op_list_application_commands = _list
    op_list_guild_application_commands = _list
    op_create_application_command = _create
    op_create_guild_application_command = _create
    op_get_application_command = _get
    op_get_guild_application_command = _get
    op_update_application_command = _patch
    op_update_guild_application_command = _patch
    op_delete_application_command = _delete
    op_delete_guild_application_command = _delete

    async def op_list_guild_application_command_permissions(self, call: Call) -> tuple[int, Any]:
        self._scope(call)
        return 200, []

    # -- interactions ------------------------------------------------------------------

    async def op_create_interaction_response(self, call: Call) -> tuple[int, Any]:
        fake = self.fake
        interaction = fake.interactions_by_id.get(call.param("interaction_id"))
        if interaction is None or interaction.token != call.params.get("interaction_token"):
            raise DiscordError(404, 10062, "Unknown interaction")
        body = call.json or {}
        kind = int(body.get("type", 0))
        data = body.get("data")
        now = fake.now()
        try:
            result = self._callback(interaction, kind, data, call, now)
        except DiscordError as error:
            interaction.callbacks.append(
                CallbackRecord(kind, data, error.status, error.code, now, call.record)
            )
            raise
        interaction.callbacks.append(CallbackRecord(kind, data, 200, None, now, call.record))
        interaction.acked_at = now
        interaction.response_type = kind
        want = call.query.get("with_response", "").lower() in ("1", "true")
        return (200, result) if want else (204, None)

    def _callback(
        self,
        interaction: InteractionRecord,
        kind: int,
        data: dict[str, Any] | None,
        call: Call,
        now: float,
    ) -> dict[str, Any]:
        fake = self.fake
        if interaction.acked_at is not None:
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        if now - interaction.created_at > fake.ack_deadline:
            raise DiscordError(404, 10062, "Unknown interaction")
        allowed = {
            1: {4, 5, 9},  # PING is never sent by the fake; treat like a command
            2: {4, 5, 9},
            3: {4, 5, 6, 7, 9},
            4: {8},
            5: {4, 5, 6, 7},
        }[interaction.type]
        if kind not in allowed:
            raise DiscordError(
                400,
                50035,
                "Invalid Form Body",
                errors={"type": {"_errors": [{"code": "INTERACTION_CALLBACK_TYPE_INVALID"}]}},
            )
        if kind in (6, 7) and "message" not in interaction.payload:
            raise DiscordError(400, 50035, "Invalid Form Body")
        self._check_upload(call, interaction.attachment_size_limit)
        body = data or {}
        info: dict[str, Any] = {"id": str(interaction.id), "type": interaction.type}
        result: dict[str, Any] = {"interaction": info}
        message: StoredMessage | None = None
        if kind == 4:
            self._check_not_empty(body, call)
            message = self.messages.create_interaction_message(interaction, body, call.files)
            interaction.original = message
            interaction.ephemeral = message.ephemeral
        elif kind == 5:
            ephemeral = bool(int(body.get("flags") or 0) & EPHEMERAL)
            loading = {"content": "", "flags": LOADING | (EPHEMERAL if ephemeral else 0)}
            message = self.messages.create_interaction_message(
                interaction, loading, [], flags_ok=True
            )
            interaction.original = message
            interaction.ephemeral = ephemeral
        elif kind == 7:
            message = fake.messages_by_id.get(int(interaction.payload["message"]["id"]))
            if message is None or message.deleted:
                raise _unknown_message()
            self.messages.edit_message(message, body, call.files)
        elif kind == 9:
            interaction.modal = body
            fake.modals.append(ModalRecord(interaction, body))
        if message is not None:
            info["response_message_id"] = str(message.id)
            info["response_message_loading"] = kind == 5
            info["response_message_ephemeral"] = message.ephemeral
            result["resource"] = {"type": kind, "message": message.payload}
        return result

    def _interaction_for(self, call: Call) -> InteractionRecord:
        fake = self.fake
        if call.param("webhook_id") != fake.application_id:
            raise DiscordError(404, 10015, "Unknown Webhook")
        interaction = fake.interactions_by_token.get(call.params.get("webhook_token", ""))
        if interaction is None:
            raise DiscordError(401, 50027, "Invalid Webhook Token")
        if fake.now() - interaction.created_at > fake.token_lifetime:
            raise DiscordError(401, 50027, "Invalid Webhook Token")
        if interaction.acked_at is None:
            raise DiscordError(404, 10015, "Unknown Webhook")
        return interaction

    def _interaction_message(self, call: Call, interaction: InteractionRecord) -> StoredMessage:
        if "message_id" not in call.params:
            message = interaction.original
        else:
            wanted = call.param("message_id")
            message = next((m for m in interaction.messages if m.id == wanted), None)
        if message is None or message.deleted:
            raise _unknown_message()
        return message

    async def op_execute_webhook(self, call: Call) -> tuple[int, Any]:
        fake = self.fake
        interaction = self._interaction_for(call)
        self._check_upload(call, interaction.attachment_size_limit)
        body = call.json or {}
        self._check_not_empty(body, call)
        original = interaction.original
        if original is not None and original.loading and not original.deleted:
            # The first follow-up after a deferral replaces "thinking…" and keeps
            # the deferral's ephemeral flag, whatever this body asks for.
            body = {**body, "flags": int(body.get("flags") or 0) & ~EPHEMERAL}
            self.messages.edit_message(original, body, call.files, finish_loading=True)
            message = original
        else:
            message = self.messages.create_interaction_message(interaction, body, call.files)
            if original is not None:
                metadata = message.payload.get("interaction_metadata") or {}
                metadata["original_response_message_id"] = str(original.id)
        interaction.followups.append(message)
        fake.notify()
        if message.channel_id and not message.ephemeral:
            event = "MESSAGE_UPDATE" if message is original else "MESSAGE_CREATE"
            await fake.dispatch_message_event(event, message)
        wait = call.query.get("wait", "").lower() in ("1", "true")
        return (200, message.payload) if wait else (204, None)

    async def _get_interaction_message(self, call: Call) -> tuple[int, Any]:
        interaction = self._interaction_for(call)
        return 200, self._interaction_message(call, interaction).payload

    async def _edit_interaction_message(self, call: Call) -> tuple[int, Any]:
        interaction = self._interaction_for(call)
        message = self._interaction_message(call, interaction)
        self._check_upload(call, interaction.attachment_size_limit)
        self.messages.edit_message(message, call.json or {}, call.files, finish_loading=True)
        if not message.ephemeral:
            await self.fake.dispatch_message_event("MESSAGE_UPDATE", message)
        return 200, message.payload

    async def _delete_interaction_message(self, call: Call) -> tuple[int, Any]:
        interaction = self._interaction_for(call)
        message = self._interaction_message(call, interaction)
        self.messages.delete_message(message)
        if not message.ephemeral:
            await self.fake.dispatch_message_event("MESSAGE_DELETE", message)
        return 204, None

    op_get_original_webhook_message = _get_interaction_message
    op_get_webhook_message = _get_interaction_message
    op_update_original_webhook_message = _edit_interaction_message
    op_update_webhook_message = _edit_interaction_message
    op_delete_original_webhook_message = _delete_interaction_message
    op_delete_webhook_message = _delete_interaction_message

    # -- message construction ---------------------------------------------------------

    @staticmethod
    def _check_upload(call: Call, limit: int) -> None:
        total = sum(f.size for f in call.files)
        if total > limit:
            raise DiscordError(413, 40005, "Request entity too large")

    @staticmethod
    def _check_not_empty(body: dict[str, Any], call: Call) -> None:
        if not (
            body.get("content")
            or body.get("embeds")
            or body.get("components")
            or body.get("poll")
            or body.get("sticker_ids")
            or call.files
        ):
            raise DiscordError(400, 50006, "Cannot send an empty message")
