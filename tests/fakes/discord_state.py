"""The fake Discord's world: users, guilds, roles, channels, members and messages.

Plain dataclasses that know how to render themselves as Discord API payloads
(the shapes discord.py 2.7 parses), plus Discord's permission arithmetic.
"""

from __future__ import annotations

import datetime as dt
import mimetypes
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import discord

__all__ = [
    "ALL_PERMISSIONS",
    "BOT_DEFAULT_PERMISSIONS",
    "DEFAULT_FILE_LIMIT",
    "EVERYONE_DEFAULT_PERMISSIONS",
    "ChannelType",
    "FakeChannel",
    "FakeGuild",
    "FakeMember",
    "FakeRole",
    "FakeUser",
    "FileRecord",
    "Overwrite",
    "SnowflakeFactory",
    "StoredMessage",
    "iso",
    "walk_components",
]

DISCORD_EPOCH_MS = 1_420_070_400_000
DEFAULT_FILE_LIMIT = 10 * 1024 * 1024  # 10 MiB: tier 0/1 guilds, DMs, interactions

_P = discord.Permissions
ALL_PERMISSIONS = _P.all().value
EVERYONE_DEFAULT_PERMISSIONS = _P(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
    add_reactions=True,
    use_external_emojis=True,
    use_application_commands=True,
    create_instant_invite=True,
    change_nickname=True,
    connect=True,
    speak=True,
).value
BOT_DEFAULT_PERMISSIONS = _P(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
    add_reactions=True,
    use_external_emojis=True,
).value
_ADMINISTRATOR = _P(administrator=True).value


class ChannelType:
    TEXT = 0
    DM = 1
    CATEGORY = 4


def iso(moment: dt.datetime | None = None) -> str:
    return (moment or dt.datetime.now(dt.UTC)).isoformat()


class SnowflakeFactory:
    """Monotonic, realistic snowflakes (timestamp in the top bits).

    ``next(predicate)`` can ask for an id with a property, e.g. a guild id that
    lands on a given shard: ``(id >> 22) % shard_count == shard``.
    """

    def __init__(self) -> None:
        self._last_ms = 0
        self._counter = 0

    def next(self, predicate: Callable[[int], bool] | None = None) -> int:
        bump = False
        while True:
            now_ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
            ms = max(now_ms, self._last_ms + 1 if bump else self._last_ms)
            self._last_ms = ms
            self._counter = (self._counter + 1) & 0xFFF
            value = (ms << 22) | self._counter
            if predicate is None or predicate(value):
                return value
            bump = True


@dataclass(eq=False)
class FakeUser:
    id: int
    username: str
    global_name: str | None = None
    bot: bool = False

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
            "primary_guild": None,
        }
        if self.bot:
            data["bot"] = True
        return data

    def __repr__(self) -> str:
        return f"<FakeUser {self.username} {self.id}>"


@dataclass(eq=False)
class FakeRole:
    id: int
    name: str
    permissions: int
    position: int = 0
    managed: bool = False
    bot_id: int | None = None

    @property
    def mention(self) -> str:
        return f"<@&{self.id}>"

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": self.managed,
            "mentionable": False,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }
        if self.bot_id is not None:
            data["tags"] = {"bot_id": str(self.bot_id)}
        return data

    def __repr__(self) -> str:
        return f"<FakeRole {self.name} {self.id}>"


@dataclass
class Overwrite:
    """A channel permission overwrite: ``type`` 0 = role, 1 = member."""

    id: int
    type: int
    allow: int = 0
    deny: int = 0

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "type": self.type,
            "allow": str(self.allow),
            "deny": str(self.deny),
        }


@dataclass(eq=False)
class FakeChannel:
    id: int
    type: int
    name: str | None = None
    guild_id: int | None = None
    position: int = 0
    parent_id: int | None = None
    overwrites: list[Overwrite] = field(default_factory=list)
    topic: str | None = None
    nsfw: bool = False
    recipients: list[FakeUser] = field(default_factory=list)

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"

    @property
    def is_dm(self) -> bool:
        return self.type == ChannelType.DM

    def payload(self) -> dict[str, Any]:
        if self.is_dm:
            return {
                "id": str(self.id),
                "type": self.type,
                "recipients": [user.payload() for user in self.recipients],
                "last_message_id": None,
                "flags": 0,
            }
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "permission_overwrites": [ow.payload() for ow in self.overwrites],
            "parent_id": str(self.parent_id) if self.parent_id else None,
            "flags": 0,
        }
        if self.type == ChannelType.TEXT:
            data.update(
                topic=self.topic,
                nsfw=self.nsfw,
                rate_limit_per_user=0,
                last_message_id=None,
                default_thread_rate_limit_per_user=0,
            )
        return data

    def __repr__(self) -> str:
        return f"<FakeChannel #{self.name or 'dm'} {self.id}>"


@dataclass(eq=False)
class FakeMember:
    user: FakeUser
    guild: FakeGuild
    roles: list[int] = field(default_factory=list)
    nick: str | None = None
    joined_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    flags: int = 0

    @property
    def id(self) -> int:
        return self.user.id

    @property
    def mention(self) -> str:
        return self.user.mention

    def payload(self, *, with_user: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "roles": [str(role) for role in self.roles],
            "joined_at": iso(self.joined_at),
            "nick": self.nick,
            "flags": self.flags,
            "deaf": False,
            "mute": False,
            "pending": False,
            "avatar": None,
            "banner": None,
            "premium_since": None,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self.user.payload()
        return data

    def __repr__(self) -> str:
        return f"<FakeMember {self.user.username} in {self.guild.name}>"


@dataclass(eq=False)
class FakeGuild:
    id: int
    name: str
    owner_id: int
    roles: dict[int, FakeRole] = field(default_factory=dict)
    channels: dict[int, FakeChannel] = field(default_factory=dict)
    members: dict[int, FakeMember] = field(default_factory=dict)
    filesize_limit: int = DEFAULT_FILE_LIMIT
    premium_tier: int = 0
    features: list[str] = field(default_factory=list)
    preferred_locale: str = "en-US"
    joined_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    #: Sent to every shard's session (a test of several processes spending from one
    #: guild's budget); real Discord gives each guild to exactly one shard.
    on_every_shard: bool = False

    @property
    def everyone(self) -> FakeRole:
        return self.roles[self.id]

    def on_shard(self, shard_id: int, shard_count: int) -> bool:
        return self.on_every_shard or self.shard_id(shard_count) == shard_id

    def shard_id(self, shard_count: int) -> int:
        return (self.id >> 22) % shard_count

    def text_channels(self) -> list[FakeChannel]:
        return [ch for ch in self.channels.values() if ch.type == ChannelType.TEXT]

    def base_permissions(self, member: FakeMember) -> int:
        if member.id == self.owner_id:
            return ALL_PERMISSIONS
        value = self.everyone.permissions
        for role_id in member.roles:
            role = self.roles.get(role_id)
            if role is not None:
                value |= role.permissions
        return ALL_PERMISSIONS if value & _ADMINISTRATOR else value

    def permissions_in(self, member: FakeMember, channel: FakeChannel | None) -> int:
        """Discord's algorithm: base permissions, then @everyone, role and member overwrites."""
        value = self.base_permissions(member)
        if value == ALL_PERMISSIONS or channel is None:
            return value
        by_id = {ow.id: ow for ow in channel.overwrites}
        everyone = by_id.get(self.id)
        if everyone is not None:
            value = (value & ~everyone.deny) | everyone.allow
        allow = deny = 0
        for role_id in member.roles:
            ow = by_id.get(role_id)
            if ow is not None and ow.type == 0:
                allow |= ow.allow
                deny |= ow.deny
        value = (value & ~deny) | allow
        own = by_id.get(member.id)
        if own is not None and own.type == 1:
            value = (value & ~own.deny) | own.allow
        return value

    def payload(self, *, members: list[FakeMember] | None = None) -> dict[str, Any]:
        """A GUILD_CREATE payload (``members``: which members to include)."""
        shown = list(self.members.values()) if members is None else members
        first_text = next(iter(self.text_channels()), None)
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "region": "deprecated",
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "system_channel_id": str(first_text.id) if first_text else None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "premium_tier": self.premium_tier,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": self.preferred_locale,
            "features": list(self.features),
            "max_members": 500000,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "application_id": None,
            "widget_enabled": False,
            "nsfw": False,
            "roles": [role.payload() for role in self.roles.values()],
            "emojis": [],
            "stickers": [],
            "channels": [channel.payload() for channel in self.channels.values()],
            "threads": [],
            "members": [member.payload() for member in shown],
            "member_count": len(self.members),
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "embedded_activities": [],
            "joined_at": iso(self.joined_at),
            "large": False,
            "unavailable": False,
            "lazy": True,
            "incidents_data": None,
        }

    def partial(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "locale": self.preferred_locale,
            "features": list(self.features),
        }

    def __repr__(self) -> str:
        return f"<FakeGuild {self.name} {self.id}>"


@dataclass(frozen=True)
class FileRecord:
    """One uploaded file exactly as it arrived (multipart field ``files[n]``)."""

    form_field: str
    filename: str
    content_type: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def guessed_type(self) -> str:
        return mimetypes.guess_type(self.filename)[0] or "application/octet-stream"


def walk_components(components: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every component, depth first (rows, containers, sections, labels)."""
    for component in components or []:
        yield component
        yield from walk_components(component.get("components") or [])
        for key in ("accessory", "component"):
            inner = component.get(key)
            if isinstance(inner, dict):
                yield from walk_components([inner])


@dataclass(eq=False)
class StoredMessage:
    """A message as the fake Discord holds it; ``payload`` is what the API returns."""

    payload: dict[str, Any]
    channel_id: int
    ephemeral: bool = False
    recipient_id: int | None = None
    interaction_id: int | None = None
    files: dict[int, FileRecord] = field(default_factory=dict)
    allowed_mentions: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    deleted: bool = False

    @property
    def id(self) -> int:
        return int(self.payload["id"])

    @property
    def content(self) -> str:
        return str(self.payload.get("content") or "")

    @property
    def embeds(self) -> list[dict[str, Any]]:
        return list(self.payload.get("embeds") or [])

    @property
    def components(self) -> list[dict[str, Any]]:
        return list(self.payload.get("components") or [])

    @property
    def attachments(self) -> list[dict[str, Any]]:
        return list(self.payload.get("attachments") or [])

    @property
    def flags(self) -> int:
        return int(self.payload.get("flags") or 0)

    @property
    def loading(self) -> bool:
        """The "Bot is thinking…" placeholder of a deferred interaction."""
        return bool(self.flags & 128)

    @property
    def mentions(self) -> list[int]:
        return [int(user["id"]) for user in self.payload.get("mentions", [])]

    @property
    def pings(self) -> bool:
        """Whether Discord would have notified anyone for this message."""
        return bool(
            self.payload.get("mentions")
            or self.payload.get("mention_roles")
            or self.payload.get("mention_everyone")
        )

    def buttons(self) -> list[dict[str, Any]]:
        return [c for c in walk_components(self.components) if c.get("type") == 2]

    def button(self, label: str | None = None, *, emoji: str | None = None) -> dict[str, Any]:
        for button in self.buttons():
            if label is not None and button.get("label") == label:
                return button
            if emoji is not None and (button.get("emoji") or {}).get("name") == emoji:
                return button
        known = [(b.get("label"), (b.get("emoji") or {}).get("name")) for b in self.buttons()]
        raise LookupError(f"no button {label or emoji!r} on message {self.id}; buttons: {known}")

    def attachment_bytes(self, which: int | str = 0) -> bytes:
        """Bytes of an attachment by position or filename."""
        attachments = self.attachments
        if isinstance(which, int):
            chosen = attachments[which]
        else:
            chosen = next(a for a in attachments if a["filename"] == which)
        return self.files[int(chosen["id"])].data

    def __repr__(self) -> str:
        kind = "ephemeral " if self.ephemeral else ""
        return f"<StoredMessage {kind}{self.id} in {self.channel_id}: {self.content[:40]!r}>"
