"""What /imagine shows: status lines, the result embed, files packed under the upload limit."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import discord

from bot.i18n import LocaleLike, ShortDuration, format_number, t, tn
from bot.image_store import HeldImage
from bot.images import fit_jpeg
from bot.jobs import JobProgress
from bot.segmind import Txt2ImgRequest
from bot.status_board import describe_eta

__all__ = [
    "PreparedFile",
    "pack_files",
    "prepare_files",
    "result_embed",
    "status_text",
]

# Room for the JSON part of a multipart upload (embed, components).
_PAYLOAD_HEADROOM = 64 * 1024
_MAX_FILES_PER_MESSAGE = 10


def status_text(progress: JobProgress, cost: int, locale: LocaleLike = None) -> str:
    """The private status line in the requester's language: place and estimate while
    queued, time running while generating."""
    if progress.state == "queued":
        parts = [
            t(locale, "#{position} in line", position=progress.position)
            if progress.position
            else t(locale, "waiting for a slot")
        ]
        if progress.eta is not None:
            parts.append(describe_eta(progress.eta).render(locale))
        parts.append(tn(locale, "{count} credit reserved", "{count} credits reserved", cost))
        return "⏳ " + " · ".join(parts)
    if progress.total == 1:
        line = t(locale, "🎨 Generating your image…")
    else:
        done, total = min(progress.done + 1, progress.total), progress.total
        line = t(locale, "🎨 Generating {done}/{total}…", done=done, total=total)
    if progress.elapsed is not None and progress.elapsed >= 10:
        running = ShortDuration(timedelta(seconds=progress.elapsed))
        line += " · " + t(locale, "{duration} so far", duration=running)
    return line


def _size(request: Txt2ImgRequest) -> str:
    return f"{request.img_width}×{request.img_height}"


def result_embed(
    *,
    job_id: int,
    request: Txt2ImgRequest,
    seeds: Sequence[int],
    cost: int,
    balance: int,
    requester_id: int,
    locale: LocaleLike = None,
) -> discord.Embed:
    """The parameters, seeds, cost and balance under the images, in ``locale`` (the server's).

    The prompt goes in the description (4,096 characters) so the full 1,000-character
    prompt is always readable; the negative prompt fits a field (1,024).
    """
    embed = discord.Embed(
        title="Kandinsky 2.1", description=request.prompt, colour=discord.Colour.blurple()
    )
    if request.negative_prompt:
        embed.add_field(
            name=t(locale, "Negative prompt"), value=request.negative_prompt, inline=False
        )
    embed.add_field(name=t(locale, "Scheduler"), value=request.scheduler.value)
    embed.add_field(
        name=t(locale, "Steps"), value=format_number(request.num_inference_steps, locale)
    )
    embed.add_field(name=t(locale, "Guidance"), value=format_number(request.guidance_scale, locale))
    embed.add_field(name=t(locale, "Size"), value=_size(request))
    embed.add_field(name=tn(locale, "Seed", "Seeds", len(seeds)), value=", ".join(map(str, seeds)))
    embed.add_field(
        name=t(locale, "Cost"), value=tn(locale, "{count} credit", "{count} credits", cost)
    )
    embed.add_field(
        name=t(locale, "Balance"),
        value=tn(locale, "{count} credit left", "{count} credits left", balance),
    )
    embed.add_field(name=t(locale, "Requested by"), value=f"<@{requester_id}>")
    embed.set_footer(text=t(locale, "Job #{job_id}", job_id=str(job_id)))
    return embed


@dataclass(frozen=True)
class PreparedFile:
    """One attachment: the held image as it is, or its re-encoded bytes."""

    filename: str
    source: HeldImage | bytes
    seed: int | None

    @property
    def size(self) -> int:
        return len(self.source) if isinstance(self.source, bytes) else self.source.size

    def to_file(self) -> discord.File:
        """For one upload (discord.py closes it after the request)."""
        if isinstance(self.source, bytes):
            return discord.File(io.BytesIO(self.source), filename=self.filename)
        return discord.File(self.source.open(), filename=self.filename)


def _extension(image_format: str) -> str:
    return "png" if image_format.upper() == "PNG" else "jpg"


async def prepare_files(images: Sequence[HeldImage], limit: int) -> list[PreparedFile]:
    """Name each image ``kandinsky-<seed>.<ext>``; re-encode (off the loop) any over the limit."""
    budget = max(limit - _PAYLOAD_HEADROOM, 64 * 1024)
    prepared: list[PreparedFile] = []
    for index, image in enumerate(images):
        stem = f"kandinsky-{image.seed}" if image.seed is not None else f"kandinsky-{index + 1}"
        if image.size <= budget:
            prepared.append(PreparedFile(f"{stem}.{_extension(image.format)}", image, image.seed))
            continue
        data = await asyncio.to_thread(fit_jpeg, await image.read(), budget)
        prepared.append(PreparedFile(f"{stem}.jpg", data, image.seed))
    # Two images with the same seed (a multi-image answer) must not share a name.
    seen: dict[str, int] = {}
    unique: list[PreparedFile] = []
    for file in prepared:
        count = seen.get(file.filename, 0)
        seen[file.filename] = count + 1
        if count:
            stem, dot, ext = file.filename.rpartition(".")
            unique.append(PreparedFile(f"{stem}-{count + 1}{dot}{ext}", file.source, file.seed))
        else:
            unique.append(file)
    return unique


def pack_files(files: Sequence[PreparedFile], limit: int) -> list[list[PreparedFile]]:
    """Group files into messages, each under ``limit`` bytes and 10 files, keeping their order."""
    budget = max(limit - _PAYLOAD_HEADROOM, 1)
    messages: list[list[PreparedFile]] = []
    current: list[PreparedFile] = []
    used = 0
    for file in files:
        size = file.size
        if current and (used + size > budget or len(current) >= _MAX_FILES_PER_MESSAGE):
            messages.append(current)
            current, used = [], 0
        current.append(file)
        used += size
    if current:
        messages.append(current)
    return messages
