"""How the fake Discord turns request bodies into stored messages.

Creation, edits (``attachments`` keep/replace semantics, "thinking…" completion),
attachments (ids, URLs served by the fake, image sizes) and the mentions
Discord would compute from ``content`` and ``allowed_mentions``.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tests.fakes.discord_records import InteractionRecord
from tests.fakes.discord_state import (
    FakeChannel,
    FakeUser,
    FileRecord,
    StoredMessage,
    iso,
    walk_components,
)

if TYPE_CHECKING:
    from tests.fakes.fake_discord import FakeDiscord

__all__ = ["EPHEMERAL", "LOADING", "MentionTargets", "MessageBuilder", "mention_targets"]

EPHEMERAL = 64
LOADING = 128
# Flags a sender may set on a new message / change on an edit.
_CREATE_FLAGS = 4 | EPHEMERAL | 4096 | 32768
_EDIT_FLAGS = 4 | 32768
_FILE_FIELD = re.compile(r"^files\[(\d+)\]$|^file(\d*)$")
_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")


class MessageBuilder:
    """Creates and edits :class:`StoredMessage` objects for a :class:`FakeDiscord`."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake

    def create_interaction_message(
        self,
        interaction: InteractionRecord,
        body: dict[str, Any],
        files: list[FileRecord],
        *,
        flags_ok: bool = False,
    ) -> StoredMessage:
        fake = self.fake
        kind = 20 if interaction.type == 2 else 0
        message = self.create_message(
            interaction.channel,
            body,
            files,
            message_type=kind,
            interaction=interaction,
            raw_flags=flags_ok,
        )
        data = interaction.data
        metadata: dict[str, Any] = {
            "id": str(interaction.id),
            "type": interaction.type,
            "user": interaction.user.payload(),
            "authorizing_integration_owners": interaction.payload.get(
                "authorizing_integration_owners", {}
            ),
        }
        if interaction.type == 2:
            metadata["name"] = data.get("name", "")
            metadata["command_type"] = data.get("type", 1)
        if "message" in interaction.payload:
            metadata["interacted_message_id"] = interaction.payload["message"]["id"]
        message.payload["interaction_metadata"] = metadata
        message.payload["webhook_id"] = str(fake.application_id)
        message.payload["application_id"] = str(fake.application_id)
        if message.ephemeral:
            message.recipient_id = interaction.user.id
        return message

    def create_message(
        self,
        channel: FakeChannel,
        body: dict[str, Any],
        files: list[FileRecord],
        *,
        message_type: int,
        interaction: InteractionRecord | None = None,
        raw_flags: bool = False,
        author: FakeUser | None = None,
    ) -> StoredMessage:
        fake = self.fake
        flags = int(body.get("flags") or 0)
        flags = flags if raw_flags else flags & _CREATE_FLAGS
        if interaction is None:
            flags &= ~EPHEMERAL
        payload: dict[str, Any] = {
            "id": str(fake.ids.next()),
            "type": message_type,
            "channel_id": str(channel.id),
            "author": (author or fake.bot_user).payload(),
            "content": "",
            "embeds": [],
            "components": [],
            "attachments": [],
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": bool(body.get("tts", False)),
            "timestamp": iso(),
            "edited_timestamp": None,
            "flags": flags,
        }
        if body.get("message_reference"):
            payload["message_reference"] = body["message_reference"]
        message = StoredMessage(
            payload=payload,
            channel_id=channel.id,
            ephemeral=bool(flags & EPHEMERAL),
            interaction_id=interaction.id if interaction else None,
        )
        self._apply(message, body, files, creating=True)
        fake.store_message(message)
        return message

    def edit_message(
        self,
        message: StoredMessage,
        body: dict[str, Any],
        files: list[FileRecord],
        *,
        finish_loading: bool = False,
    ) -> None:
        message.history.append(json.loads(json.dumps(message.payload)))
        flags = message.flags
        if finish_loading:
            flags &= ~LOADING
        if "flags" in body and body["flags"] is not None:
            flags = (flags & ~_EDIT_FLAGS) | (int(body["flags"]) & _EDIT_FLAGS)
        message.payload["flags"] = flags
        if not finish_loading or not message.history[-1]["flags"] & LOADING:
            message.payload["edited_timestamp"] = iso()
        self._apply(message, body, files, creating=False)
        self.fake.notify()

    def delete_message(self, message: StoredMessage) -> None:
        message.deleted = True
        self.fake.notify()

    def _apply(
        self,
        message: StoredMessage,
        body: dict[str, Any],
        files: list[FileRecord],
        *,
        creating: bool,
    ) -> None:
        fake = self.fake
        payload = message.payload
        if "content" in body:
            payload["content"] = body["content"] or ""
        if "embeds" in body:
            payload["embeds"] = [dict(e, type=e.get("type", "rich")) for e in body["embeds"] or []]
        if "components" in body:
            components = json.loads(json.dumps(body["components"] or []))
            for number, component in enumerate(walk_components(components), start=1):
                component.setdefault("id", number)
            payload["components"] = components
        if "allowed_mentions" in body or creating:
            message.allowed_mentions = body.get("allowed_mentions")
        attachments = self._attachments(message, body, files)
        if attachments is not None:
            payload["attachments"] = attachments
        by_name = {a["filename"]: a for a in payload["attachments"]}
        for embed in payload["embeds"]:
            for key in ("image", "thumbnail"):
                media = embed.get(key)
                if isinstance(media, dict) and str(media.get("url", "")).startswith(
                    "attachment://"
                ):
                    found = by_name.get(media["url"].removeprefix("attachment://"))
                    if found is not None:
                        media.update(url=found["url"], proxy_url=found["proxy_url"])
                        media.update({k: found[k] for k in ("width", "height") if k in found})
        if "content" in body or creating:
            self._mentions(message, body)
        fake.notify()

    def _attachments(
        self, message: StoredMessage, body: dict[str, Any], files: list[FileRecord]
    ) -> list[dict[str, Any]] | None:
        by_index: dict[int, FileRecord] = {}
        for position, upload in enumerate(files):
            found = _FILE_FIELD.match(upload.form_field)
            index = int(next((g for g in found.groups() if g), position)) if found else position
            by_index[index] = upload
        existing = {int(a["id"]): a for a in message.payload.get("attachments", [])}
        if "attachments" not in body or body["attachments"] is None:
            if not files:
                return None
            return list(existing.values()) + [
                self._attachment(message, upload, None) for upload in by_index.values()
            ]
        result: list[dict[str, Any]] = []
        used: set[int] = set()
        for item in body["attachments"]:
            key = int(item["id"])
            if key in existing:
                result.append(existing[key])
            elif key in by_index:
                result.append(self._attachment(message, by_index[key], item))
                used.add(key)
        result += [self._attachment(message, f, None) for i, f in by_index.items() if i not in used]
        for key in set(existing) - {int(a["id"]) for a in result}:
            message.files.pop(key, None)
        return result

    def _attachment(
        self, message: StoredMessage, upload: FileRecord, item: dict[str, Any] | None
    ) -> dict[str, Any]:
        fake = self.fake
        attachment_id = fake.ids.next()
        filename = (item or {}).get("filename") or upload.filename
        url = f"{fake.base_url}/attachments/{message.channel_id}/{attachment_id}/{filename}"
        data: dict[str, Any] = {
            "id": str(attachment_id),
            "filename": filename,
            "size": upload.size,
            "url": url,
            "proxy_url": url,
            "content_type": upload.guessed_type,
        }
        if (item or {}).get("description"):
            data["description"] = item["description"]  # type: ignore[index]
        if message.ephemeral:
            data["ephemeral"] = True
        with contextlib.suppress(Exception):
            from PIL import Image  # noqa: PLC0415 - only needed for image attachments

            with Image.open(io.BytesIO(upload.data)) as image:
                data["width"], data["height"] = image.size
        message.files[attachment_id] = upload
        fake.attachments[attachment_id] = upload
        return data

    def _mentions(self, message: StoredMessage, body: dict[str, Any]) -> None:
        """What Discord would ping, given the content and ``allowed_mentions``."""
        fake = self.fake
        targets = mention_targets(message.content, message.allowed_mentions)
        mentioned = list(targets.users)
        reference = message.payload.get("message_reference") or {}
        if targets.replied_user and reference.get("message_id"):
            target = fake.messages_by_id.get(int(reference["message_id"]))
            if target is not None:
                mentioned.append(int(target.payload["author"]["id"]))
        message.payload["mentions"] = [
            fake.users[uid].payload() for uid in dict.fromkeys(mentioned) if uid in fake.users
        ]
        channel = fake.channels.get(message.channel_id)
        guild = fake.guilds.get(channel.guild_id or 0) if channel else None
        message.payload["mention_roles"] = [
            str(rid) for rid in targets.roles if guild is not None and rid in guild.roles
        ]
        message.payload["mention_everyone"] = targets.everyone


@dataclass(frozen=True)
class MentionTargets:
    users: tuple[int, ...]
    roles: tuple[int, ...]
    everyone: bool
    replied_user: bool

    def __bool__(self) -> bool:
        return bool(self.users or self.roles or self.everyone)


def mention_targets(content: str, allowed: dict[str, Any] | None) -> MentionTargets:
    """Whom ``content`` would notify under ``allowed_mentions`` (absent: everything)."""
    if allowed is None:
        parse, users, roles, replied = {"users", "roles", "everyone"}, set(), set(), True
    else:
        parse = set(allowed.get("parse") or [])
        users = {int(u) for u in allowed.get("users") or []}
        roles = {int(r) for r in allowed.get("roles") or []}
        replied = bool(allowed.get("replied_user", False))
    return MentionTargets(
        users=tuple(
            int(uid)
            for uid in dict.fromkeys(_USER_MENTION.findall(content))
            if "users" in parse or int(uid) in users
        ),
        roles=tuple(
            int(rid)
            for rid in dict.fromkeys(_ROLE_MENTION.findall(content))
            if "roles" in parse or int(rid) in roles
        ),
        everyone="everyone" in parse and ("@everyone" in content or "@here" in content),
        replied_user=replied,
    )
