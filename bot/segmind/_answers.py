"""Reading the API's answers: error messages, Retry-After, and the images in a body."""

from __future__ import annotations

import binascii
import email.utils
import json
import math
import re
import time
from base64 import b64decode
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

import aiohttp

from bot.images import ImageInfo, InvalidImage, probe_image
from bot.segmind.errors import (
    STATUS_ERRORS,
    SegmindBadRequest,
    SegmindError,
    SegmindInvalidResponse,
    SegmindRateLimited,
    SegmindServerError,
)

_SNIPPET_CHARS: Final = 200
_REDACTED: Final = "***"


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")
_DATA_URI = re.compile(r"^data:[\w.+/-]+;base64,", re.IGNORECASE)


def redact(text: str, secret: str) -> str:
    return text.replace(secret, _REDACTED) if secret else text


def _trim(text: str) -> str:
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= _SNIPPET_CHARS else text[: _SNIPPET_CHARS - 1] + "…"


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def _api_message(content_type: str, body: bytes, secret: str) -> str | None:
    """The API's own explanation: ``{"error": …}`` or a snippet of an HTML/text page."""
    text = body.decode("utf-8", errors="replace")
    message: str | None = None
    document: object = None
    if _is_json(content_type) or text.lstrip().startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            document = None
    if isinstance(document, dict):
        for key in ("error", "message", "detail", "msg"):
            value = document.get(key)
            if isinstance(value, str) and value.strip():
                message = value
                break
            if value is not None and not isinstance(value, str):
                message = json.dumps(value, ensure_ascii=False)
                break
        if message is None:
            return None  # a JSON body without an explanation: no noise
    else:
        title = _TITLE.search(text)
        message = title.group(1) if title else _TAGS.sub(" ", text)
    message = _trim(redact(message, secret))
    return message or None


def parse_float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _parse_instant(value: str) -> float | None:
    """Epoch seconds (or milliseconds), ISO-8601 or an HTTP-date, as a POSIX time."""
    number = parse_float(value)
    if number is not None:
        return number / 1000 if number > 1e11 else number
    text = value.strip()
    moment: datetime | None = None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            moment = None
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait according to ``Retry-After`` and ``x-rate-limit-reset-at-utc``.

    ``Retry-After`` may be delay-seconds or an HTTP-date; the reset header may be
    ISO-8601 or epoch seconds. When both are present the later one wins.
    """
    now = time.time() if now is None else now
    waits: list[float] = []
    retry_after = headers.get("Retry-After")
    if retry_after is not None:
        seconds = parse_float(retry_after)
        if seconds is None:
            instant = _parse_instant(retry_after)
            seconds = None if instant is None else instant - now
        if seconds is not None:
            waits.append(seconds)
    reset_at = headers.get("x-rate-limit-reset-at-utc")
    if reset_at is not None:
        instant = _parse_instant(reset_at)
        if instant is not None:
            waits.append(instant - now)
    if not waits:
        return None
    return max(0.0, *waits)


def error_for_status(
    status: int, content_type: str, headers: Mapping[str, str], body: bytes, secret: str
) -> SegmindError:
    message = _api_message(content_type, body, secret)
    cls = STATUS_ERRORS.get(status)
    if cls is SegmindRateLimited:
        return SegmindRateLimited(
            status=status, api_message=message, retry_after=parse_retry_after(headers)
        )
    if cls is not None:
        return cls(status=status, api_message=message)
    if 400 <= status < 500:
        return SegmindBadRequest(status=status, api_message=message, kind=f"http_{status}")
    if 500 <= status < 600:
        return SegmindServerError(status=status, api_message=message)
    return SegmindInvalidResponse(
        status=status, api_message=message, kind="unexpected_status", detail="unexpected status"
    )


def decode_answer(
    status: int, content_type: str, body: bytes, secret: str
) -> list[tuple[bytes, ImageInfo]] | SegmindInvalidResponse:
    """Turn a 2xx body into checked images. Runs in a worker thread.

    Returns the error instead of raising it so that the caller raises it on the
    event loop with a clean (empty) exception context.
    """
    if content_type.startswith("text/"):
        return SegmindInvalidResponse(
            status=status,
            api_message=_api_message(content_type, body, secret),
            detail="text instead of an image",
        )
    blobs: list[bytes] = []
    if _is_json(content_type):
        problem = _json_images(body, blobs)
        if problem is not None:
            return SegmindInvalidResponse(
                status=status, api_message=_api_message(content_type, body, secret), detail=problem
            )
    else:
        blobs.append(body)
    checked: list[tuple[bytes, ImageInfo]] = []
    for number, blob in enumerate(blobs, start=1):
        try:
            info = probe_image(blob)
        except InvalidImage as error:
            problem = f"image {number}: {error}"
        else:
            checked.append((blob, info))
            continue
        return SegmindInvalidResponse(status=status, detail=problem)
    return checked


def _json_images(body: bytes, blobs: list[bytes]) -> str | None:
    """Decode ``{"image": b64}`` / ``{"images": [b64, …]}`` into ``blobs``; a problem or None."""
    try:
        document = json.loads(body)
    except ValueError:
        return "body is not valid JSON"
    if not isinstance(document, dict):
        return "JSON body is not an object"
    encoded: object = document.get("images", document.get("image"))
    if isinstance(encoded, str):
        encoded = [encoded]
    if not isinstance(encoded, list) or not encoded:
        return "JSON body has no image"
    for item in encoded:
        if not isinstance(item, str):
            return "JSON image is not a base64 string"
        text = "".join(_DATA_URI.sub("", item.strip()).split())
        try:
            blobs.append(b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            return "JSON image is not valid base64"
    return None


def describe_client_error(error: BaseException) -> str:
    # Only the type and aiohttp's short message: never the request info, which
    # includes the headers (and so the key).
    if isinstance(error, aiohttp.ClientResponseError):
        text = f"{error.status} {error.message}"
    else:
        text = str(error)
    return f"{type(error).__name__}: {_trim(text)}" if text else type(error).__name__
